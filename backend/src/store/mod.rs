//! Storage over sqlx: one SQL text for SQLite and PostgreSQL (both accept `$n` parameters),
//! through sqlx's `Any` driver. Times are Unix milliseconds, ids are snowflakes.
//!
//! Every transaction that writes starts with a write: SQLite (WAL) refuses to upgrade a read
//! transaction to a write one once another connection has written ("database is locked",
//! not retried by the busy timeout), while a first write simply waits for the lock.

//!
//! Split by concern: [`accounts`] (users, login sessions, refresh tokens, devices), [`keys`]
//! (device keys and prekey bundles), [`envelopes`] (the per-device envelope queue),
//! [`device_lists`] (signed device lists, recovery backups, link requests). One
//! `Store` serves them all; where the two engines need different code, the split is inside
//! the concern (the envelope queue's writes on SQLite go through [`sqlite_queue`]). The same
//! conformance tests run on both engines (`backend/tests/store_conformance.rs`).

/// The SQL condition (on `device_keys k`) of a device that receives: a user without a signed
/// device list receives on every device with keys; a user with one, on its linked devices
/// only. Sends are checked against these devices and bundles are handed out for them alone.
macro_rules! receives {
    () => {
        "(k.linked = 1 OR NOT EXISTS (SELECT 1 FROM account_identities a WHERE a.user_id = k.user_id))"
    };
}

pub mod access;
pub mod accounts;
pub mod admin;
pub mod audit;
pub mod channel_messages;
pub mod device_lists;
pub mod envelopes;
pub mod keys;
pub mod security;
pub mod servers;
pub mod social;
pub mod sqlite_queue;

use std::sync::Arc;
use std::time::Duration;

use copains_client_core::DeviceId;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use time::OffsetDateTime;

pub use access::{ChannelAccess, ServerAccess};
pub use accounts::{NewSession, Rotation, UserRecord};
pub use audit::{AuditQuery, AuditRecord};
pub use channel_messages::{ChannelView, ChannelWrite, ChannelWriteError, ChannelWriteKind};
pub use device_lists::{LinkError, PublishError, StoredDeviceList};
pub use envelopes::{EnqueueError, NewEnvelope, QueueLimits, QueueRef, Send};
pub use keys::{StoredBundle, UploadError, VerifiedUpload};
use sqlite_queue::{sqlite_path, QueueWriter};

/// Errors of the store that callers handle.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `users.username_lower` is taken.
    #[error("username taken")]
    UsernameTaken,
    /// The user already has [`DeviceId::MAX`] devices.
    #[error("too many devices")]
    TooManyDevices,
    /// The account owns a taken-down server: deleting it would delete the evidence with it.
    #[error("owns a taken-down server")]
    OwnsTakenDownServer,
    /// A row holds a value the code cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Anything else from the database.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The SQLite queue writer failed (see [`sqlite_queue`]).
    #[error("sqlite: {0}")]
    Sqlite(String),
}

/// Result of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// SQLite (embedded default).
    Sqlite,
    /// PostgreSQL (scale-out).
    Postgres,
}

impl DbKind {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
    /// On SQLite, the envelope queue's writes go through one writer thread that commits them
    /// in groups; on PostgreSQL they go through the pool.
    queue_writer: Option<QueueWriter>,
    /// The readers and devices of channels, by view (see [`channel_messages`]).
    views: Arc<channel_messages::ViewCache>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "database URL must start with sqlite: or postgres:".into(),
            )));
        };
        let mut options = AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(10));
        if kind == DbKind::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; NORMAL is durable at WAL
                    // checkpoints and is the usual pairing with WAL.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let mut store = Self { pool, kind, queue_writer: None, views: Arc::default() };
        store.migrate().await?;
        if kind == DbKind::Sqlite {
            // A file, not an in-memory database: the writer opens its own connection to it.
            let path = sqlite_path(url).ok_or_else(|| {
                StoreError::Database(sqlx::Error::Configuration("a SQLite URL must name a file (sqlite://path)".into()))
            })?;
            store.queue_writer = Some(QueueWriter::start(&path)?);
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let migrator = match self.kind {
            DbKind::Sqlite => &SQLITE_MIGRATIONS,
            DbKind::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await.map_err(|e| StoreError::Database(e.into()))
    }

    /// The engine.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The SQLite queue writer, when there is one.
    pub(crate) fn queue_writer(&self) -> Option<&QueueWriter> {
        self.queue_writer.as_ref()
    }

    /// The cache of channel views.
    pub(crate) fn views(&self) -> &channel_messages::ViewCache {
        &self.views
    }

    /// The pool, for tests and maintenance.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The database's size on disk (bytes): its pages (SQLite) or `pg_database_size`.
    pub async fn database_bytes(&self) -> Result<u64> {
        let sql = match self.kind() {
            DbKind::Sqlite => "SELECT p.page_count * s.page_size FROM pragma_page_count() p, pragma_page_size() s",
            DbKind::Postgres => "SELECT pg_database_size(current_database())",
        };
        let bytes: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Closes the pool (waits for connections in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn device_id(raw: i64) -> Result<DeviceId> {
    u32::try_from(raw).map(DeviceId).map_err(|_| StoreError::Corrupt(format!("device id {raw}")))
}

/// Unix milliseconds to a timestamp.
pub fn from_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {ms}")))
}

/// Now in Unix milliseconds: the system's clock, moved by as much as the runtime's clock is
/// off the real one. Outside tests the two are the same; on tokio's paused clock (tests) the
/// server's time stands still but for `advance`, so that timed rules (timeouts, expiries) are
/// tested without waiting.
pub fn now_ms() -> i64 {
    let runtime = tokio::time::Instant::now().into_std();
    let real = std::time::Instant::now();
    let wall = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let skew = if runtime >= real { (runtime - real).as_nanos() as i128 } else { -((real - runtime).as_nanos() as i128) };
    ((wall + skew) / 1_000_000) as i64
}

pub(crate) fn u32_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}
