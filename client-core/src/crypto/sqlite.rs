//! The native vault backend: one SQLite file holding sealed records.
//!
//! One rusqlite connection, used in place: a record read is a B-tree lookup in the calling
//! thread (a few microseconds), where a pooled async driver sends every statement to a worker
//! thread and back — the messenger reads a record per session, identity and search-index
//! lookup, so those round trips were most of the time it spent indexing a page of history.
//! The messenger owns the engine on a thread of its own, so nothing else waits on the lock.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::vault::{VaultBackend, VaultError};

/// Sealed records in a SQLite file (`records(k BLOB PRIMARY KEY, v BLOB)`).
#[derive(Debug)]
pub struct SqliteBackend {
    db: Mutex<Connection>,
}

fn backend(e: rusqlite::Error) -> VaultError {
    VaultError::Backend(e.to_string())
}

impl SqliteBackend {
    /// Opens or creates the file.
    pub async fn open(path: &Path) -> Result<Self, VaultError> {
        let db = Connection::open(path).map_err(backend)?;
        // WAL, and no fsync per write (Android's default for WAL databases too): an app crash
        // loses nothing, a power cut or OS crash can lose the last writes. A session rolled
        // back that way is repaired by the retry path when the peer cannot decrypt; messages
        // that reused a rolled-back counter are taken by the peer as duplicates (see
        // docs/e2ee.md).
        db.pragma_update(None, "journal_mode", "wal").map_err(backend)?;
        db.pragma_update(None, "synchronous", "normal").map_err(backend)?;
        db.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        db.execute("CREATE TABLE IF NOT EXISTS records (k BLOB PRIMARY KEY, v BLOB NOT NULL)", []).map_err(backend)?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, VaultError> {
        self.db.lock().map_err(|_| VaultError::Backend("the store's connection was poisoned".into()))
    }
}

const UPSERT: &str = "INSERT INTO records (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";

#[async_trait(?Send)]
impl VaultBackend for SqliteBackend {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let db = self.db()?;
        let mut statement = db.prepare_cached("SELECT v FROM records WHERE k = ?1").map_err(backend)?;
        statement.query_row(params![key], |row| row.get::<_, Vec<u8>>(0)).optional().map_err(backend)
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        let db = self.db()?;
        db.prepare_cached(UPSERT).map_err(backend)?.execute(params![key, value]).map_err(backend)?;
        Ok(())
    }
    async fn put_many(&self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), VaultError> {
        self.write_batch(records, &[]).await
    }
    async fn write_batch(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), VaultError> {
        let mut db = self.db()?;
        // One transaction: all or none.
        let tx = db.transaction().map_err(backend)?;
        {
            let mut upsert = tx.prepare_cached(UPSERT).map_err(backend)?;
            for (k, v) in puts {
                upsert.execute(params![k, v]).map_err(backend)?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM records WHERE k = ?1").map_err(backend)?;
            for k in deletes {
                delete.execute(params![k]).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }
    async fn delete(&self, key: &[u8]) -> Result<(), VaultError> {
        let db = self.db()?;
        db.prepare_cached("DELETE FROM records WHERE k = ?1").map_err(backend)?.execute(params![key]).map_err(backend)?;
        Ok(())
    }
}
