//! The native vault backend: one SQLite file holding sealed records.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::vault::{VaultBackend, VaultError};

/// Sealed records in a SQLite file (`records(k BLOB PRIMARY KEY, v BLOB)`).
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
}

fn backend(e: sqlx::Error) -> VaultError {
    VaultError::Backend(e.to_string())
}

impl SqliteBackend {
    /// Opens or creates the file.
    pub async fn open(path: &Path) -> Result<Self, VaultError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // No fsync per write (Android's default for WAL databases too): an app crash loses
            // nothing, a power cut or OS crash can lose the last writes. A session rolled back
            // that way is repaired by the retry path when the peer cannot decrypt; messages
            // that reused a rolled-back counter are taken by the peer as duplicates (see
            // docs/e2ee.md).
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(backend)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS records (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
            .execute(&pool)
            .await
            .map_err(backend)?;
        Ok(Self { pool })
    }
}

#[async_trait(?Send)]
impl VaultBackend for SqliteBackend {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let row = sqlx::query("SELECT v FROM records WHERE k = ?").bind(key).fetch_optional(&self.pool).await.map_err(backend)?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0).map_err(backend)).transpose()
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        sqlx::query("INSERT INTO records (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
    async fn put_many(&self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), VaultError> {
        if records.is_empty() {
            return Ok(());
        }
        // One statement: atomic, and one trip to the database.
        let mut sql = String::from("INSERT INTO records (k, v) VALUES ");
        for i in 0..records.len() {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        sql.push_str(" ON CONFLICT (k) DO UPDATE SET v = excluded.v");
        let mut query = sqlx::query(&sql);
        for (k, v) in records {
            query = query.bind(k.as_slice()).bind(v.as_slice());
        }
        query.execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }
    async fn write_batch(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for chunk in puts.chunks(400) {
            let mut sql = String::from("INSERT INTO records (k, v) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
            }
            sql.push_str(" ON CONFLICT (k) DO UPDATE SET v = excluded.v");
            let mut query = sqlx::query(&sql);
            for (k, v) in chunk {
                query = query.bind(k.as_slice()).bind(v.as_slice());
            }
            query.execute(&mut *tx).await.map_err(backend)?;
        }
        for k in deletes {
            sqlx::query("DELETE FROM records WHERE k = ?").bind(k.as_slice()).execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }
    async fn delete(&self, key: &[u8]) -> Result<(), VaultError> {
        sqlx::query("DELETE FROM records WHERE k = ?").bind(key).execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }
}
