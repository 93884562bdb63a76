//! `copains admin backup`, `restore`, `prune` and `stats` against a real server: a backup taken
//! while the server runs and is written to holds exactly the data of that moment; restored
//! (the server stopped), the server starts on it with that data and nothing written after; a
//! running server's database is never replaced; PostgreSQL is pointed to pg_dump.

mod common;

use common::{Backend, TestApp};
use copains_client_core::client::Client;
use reqwest::StatusCode;

async fn signed_up(app: &TestApp, name: &str) -> Client {
    let client = app.client();
    client.register(name, "a-long-password", None).await.expect("register");
    client
}

async fn login_status(base: &str, name: &str) -> Option<StatusCode> {
    match Client::new(base).login(name, "a-long-password", None).await {
        Ok(_) => Some(StatusCode::OK),
        Err(e) => e.status(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_server_runs_restores_that_moment() {
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    let ann = signed_up(&app, "ann").await;
    signed_up(&app, "ben").await;
    let server = ann.create_server("Before the backup").await.expect("server");
    let before = app.running().state().store.contents().await.expect("contents");

    // Taken while the server runs (and keeps being written to right after).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("copains-backup.db");
    let held = copains::admin::backup(&app.config, &file).await.expect("backup");
    assert_eq!(held.users, 2);
    assert_eq!((held.servers, held.sessions), (before.servers, before.sessions));
    assert!(held.bytes > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("backup").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "password hashes in it: the owner's alone");
    }
    let again = copains::admin::backup(&app.config, &file).await.expect_err("never over a file");
    assert!(format!("{again:#}").contains("exists already"), "{again:#}");
    signed_up(&app, "cy").await;
    ann.create_server("After the backup").await.expect("server");

    // A running server's database is not replaced.
    let refused = copains::admin::restore(&app.config, &file).await.expect_err("server running");
    assert!(format!("{refused:#}").contains("stop the server"), "{refused:#}");

    // Stopped, restored, started again: the moment of the backup, nothing after.
    app.running.take().expect("running").shutdown().await.expect("shutdown");
    let restored = copains::admin::restore(&app.config, &file).await.expect("restore");
    assert_eq!(restored, held);
    assert!(app.config.data_dir.join("copains.db.before-restore").exists(), "the replaced database is kept");
    let running = copains::start(app.config.clone()).await.expect("starts on the restored database");
    let base = format!("http://{}", running.local_addr());
    assert_eq!(login_status(&base, "ann").await, Some(StatusCode::OK));
    assert_eq!(login_status(&base, "ben").await, Some(StatusCode::OK));
    assert_eq!(login_status(&base, "cy").await, Some(StatusCode::UNAUTHORIZED), "written after the backup");
    let ann_again = Client::new(&base);
    ann_again.login("ann", "a-long-password", None).await.expect("login");
    let servers = ann_again.servers().await.expect("servers");
    assert_eq!(servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["Before the backup"]);
    assert_eq!(servers[0].id, server.id);
    let stats = copains::admin::stats(&app.config).await.expect("stats");
    assert_eq!(stats.servers, 1);

    // Prune with nothing expired removes nothing.
    let pruned = copains::admin::prune(&app.config).await.expect("prune");
    assert_eq!(pruned.sessions, 0);
    running.shutdown().await.expect("shutdown");

    // A file that is not a database is refused, and the database stays.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all").expect("write");
    let err = copains::admin::restore(&app.config, &junk).await.expect_err("not a database");
    assert!(format!("{err:#}").contains("not a SQLite database"), "{err:#}");
    assert_eq!(copains::admin::stats(&app.config).await.expect("stats").users, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_is_pointed_to_pg_dump() {
    if !Backend::Postgres.available() {
        eprintln!("COPAINS_TEST_DATABASE_URL is not set: PostgreSQL variant not run");
        return;
    }
    let app = TestApp::spawn(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let err = copains::admin::backup(&app.config, &dir.path().join("b.db")).await.expect_err("refused");
    assert!(format!("{err:#}").contains("pg_dump"), "{err:#}");
    let stats = copains::admin::stats(&app.config).await.expect("stats on PostgreSQL");
    assert_eq!(stats.users, 0);
    assert!(stats.bytes > 0);
    app.shutdown().await;
}
