//! The two migration trees (migrations/sqlite and migrations/postgres) must define the same
//! schema: the same tables, columns (type family, nullability), primary keys, foreign keys
//! and indexes. A migration added to one tree and forgotten in the other, or written with
//! another column, fails here. Needs `COPAINS_TEST_DATABASE_URL` for the PostgreSQL side.

use std::collections::BTreeSet;

use copains_backend::Store;
use sqlx::{Connection, Row};

/// One fact of a schema, comparable across engines.
type Facts = BTreeSet<String>;

fn family(sql_type: &str) -> String {
    let t = sql_type.to_ascii_lowercase();
    match t.as_str() {
        "integer" | "bigint" | "int" | "int8" | "int4" | "smallint" => "int".into(),
        "blob" | "bytea" => "bytes".into(),
        "text" | "character varying" | "varchar" => "text".into(),
        "boolean" | "bool" => "bool".into(),
        other => format!("other:{other}"),
    }
}

async fn sqlite_facts(store: &Store) -> Facts {
    let pool = store.pool();
    let mut facts = Facts::new();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.try_get::<String, _>(0).expect("name"))
    .collect();
    for t in &tables {
        facts.insert(format!("table {t}"));
        let cols = sqlx::query(&format!("SELECT name, type, \"notnull\", pk FROM pragma_table_info('{t}')"))
            .fetch_all(pool)
            .await
            .expect("columns");
        let mut pk: Vec<(i64, String)> = Vec::new();
        for c in &cols {
            let name: String = c.try_get(0).expect("name");
            let ty: String = c.try_get(1).expect("type");
            let notnull: i64 = c.try_get(2).expect("notnull");
            let pk_pos: i64 = c.try_get(3).expect("pk");
            // A primary-key column is never null, whatever the pragma says of INTEGER PRIMARY KEY.
            let nullable = notnull == 0 && pk_pos == 0;
            facts.insert(format!("column {t}.{name} {} {}", family(&ty), if nullable { "null" } else { "not null" }));
            if pk_pos > 0 {
                pk.push((pk_pos, name));
            }
        }
        pk.sort();
        facts.insert(format!("primary key {t} ({})", pk.into_iter().map(|(_, n)| n).collect::<Vec<_>>().join(", ")));
        let fks = sqlx::query(&format!(
            "SELECT id, seq, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list('{t}') ORDER BY id, seq"
        ))
        .fetch_all(pool)
        .await
        .expect("foreign keys");
        let mut by_id: std::collections::BTreeMap<i64, (String, Vec<String>, Vec<String>, String)> = Default::default();
        for f in &fks {
            let id: i64 = f.try_get(0).expect("id");
            let e = by_id.entry(id).or_insert_with(|| {
                (f.try_get::<String, _>(2).expect("table"), Vec::new(), Vec::new(), f.try_get::<String, _>(5).expect("on_delete"))
            });
            e.1.push(f.try_get(3).expect("from"));
            e.2.push(f.try_get(4).expect("to"));
        }
        for (to_table, from, to, on_delete) in by_id.into_values() {
            facts.insert(format!(
                "foreign key {t} ({}) -> {to_table} ({}) on delete {}",
                from.join(", "),
                to.join(", "),
                on_delete.to_ascii_lowercase()
            ));
        }
        let indexes = sqlx::query(&format!("SELECT name, \"unique\", origin FROM pragma_index_list('{t}')"))
            .fetch_all(pool)
            .await
            .expect("indexes");
        for i in &indexes {
            let name: String = i.try_get(0).expect("name");
            let unique: i64 = i.try_get(1).expect("unique");
            let origin: String = i.try_get(2).expect("origin");
            if origin == "pk" {
                continue;
            }
            let cols: Vec<String> = sqlx::query(&format!("SELECT name FROM pragma_index_info('{name}') ORDER BY seqno"))
                .fetch_all(pool)
                .await
                .expect("index columns")
                .iter()
                .map(|r| r.try_get::<String, _>(0).expect("column"))
                .collect();
            facts.insert(format!("{}index {t} ({})", if unique != 0 { "unique " } else { "" }, cols.join(", ")));
        }
    }
    facts
}

async fn postgres_facts(url: &str) -> Facts {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let mut facts = Facts::new();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.try_get::<String, _>(0).expect("name"))
    .collect();
    for t in &tables {
        facts.insert(format!("table {t}"));
        for c in sqlx::query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(t)
        .fetch_all(&mut conn)
        .await
        .expect("columns")
        {
            let name: String = c.try_get(0).expect("name");
            let ty: String = c.try_get(1).expect("type");
            let nullable = c.try_get::<String, _>(2).expect("nullable") == "YES";
            facts.insert(format!("column {t}.{name} {} {}", family(&ty), if nullable { "null" } else { "not null" }));
        }
        // Constraints and indexes from the catalogue, columns in key order.
        for r in sqlx::query(
            "SELECT c.contype::text, \
                    (SELECT string_agg(a.attname, ', ' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(n, ord) \
                       JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n), \
                    (SELECT relname::text FROM pg_class WHERE oid = c.confrelid), \
                    (SELECT string_agg(a.attname, ', ' ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(n, ord) \
                       JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n), \
                    c.confdeltype::text \
             FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
             WHERE t.relname = $1 AND c.contype IN ('p', 'f', 'u')",
        )
        .bind(t)
        .fetch_all(&mut conn)
        .await
        .expect("constraints")
        {
            let kind: String = r.try_get(0).expect("kind");
            let cols: String = r.try_get(1).expect("columns");
            match kind.as_str() {
                "p" => {
                    facts.insert(format!("primary key {t} ({cols})"));
                }
                "u" => {
                    facts.insert(format!("unique index {t} ({cols})"));
                }
                _ => {
                    let to_table: String = r.try_get(2).expect("table");
                    let to: String = r.try_get(3).expect("to");
                    let on_delete = match r.try_get::<String, _>(4).expect("on delete").as_str() {
                        "c" => "cascade",
                        "n" => "set null",
                        "r" => "restrict",
                        "d" => "set default",
                        _ => "no action",
                    };
                    facts.insert(format!("foreign key {t} ({cols}) -> {to_table} ({to}) on delete {on_delete}"));
                }
            }
        }
        for r in sqlx::query(
            "SELECT ix.indisunique, \
                    (SELECT string_agg(a.attname, ', ' ORDER BY k.ord) FROM unnest(ix.indkey) WITH ORDINALITY k(n, ord) \
                       JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.n) \
             FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid \
             WHERE t.relname = $1 AND NOT ix.indisprimary \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid AND c.contype = 'u')",
        )
        .bind(t)
        .fetch_all(&mut conn)
        .await
        .expect("indexes")
        {
            let unique: bool = r.try_get(0).expect("unique");
            let cols: String = r.try_get(1).expect("columns");
            facts.insert(format!("{}index {t} ({cols})", if unique { "unique " } else { "" }));
        }
    }
    conn.close().await.ok();
    facts
}

#[tokio::test]
async fn both_migration_trees_define_the_same_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display()), 2).await.expect("sqlite");
    let lite = sqlite_facts(&sqlite).await;
    assert!(lite.contains("table envelopes") && lite.iter().any(|f| f.starts_with("foreign key")), "{lite:#?}");

    let Ok(admin) = std::env::var("COPAINS_TEST_DATABASE_URL") else {
        eprintln!("COPAINS_TEST_DATABASE_URL is not set: the PostgreSQL side is not compared");
        return;
    };
    let name = format!("copains_schema_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("COPAINS_TEST_DATABASE_URL has no database name"),
    };
    let pg = Store::connect(&url, 2).await.expect("postgres");
    let post = postgres_facts(&url).await;
    pg.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok();

    let only_sqlite: Vec<_> = lite.difference(&post).collect();
    let only_postgres: Vec<_> = post.difference(&lite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migration trees disagree.\nonly in migrations/sqlite: {only_sqlite:#?}\nonly in migrations/postgres: {only_postgres:#?}"
    );
}
