//! Spawns the real platform on port 0 with a fresh database: SQLite always, PostgreSQL when
//! `COPAINS_TEST_DATABASE_URL` is set.
#![allow(dead_code)]

pub mod ws;

use std::time::Duration;

use copains::{Config, Running};
use sqlx::Connection;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// PostgreSQL runs only when its URL is set.
    pub fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => std::env::var("COPAINS_TEST_DATABASE_URL").is_ok(),
        }
    }
}

/// Runs each listed `async fn name(backend: Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !super::common::Backend::Postgres.available() {
                        eprintln!("COPAINS_TEST_DATABASE_URL is not set: PostgreSQL variant not run");
                        return;
                    }
                    super::$name(super::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A running platform and what it needs to be torn down.
pub struct TestApp {
    pub running: Option<Running>,
    pub base: String,
    pub ws_url: String,
    pub data_dir: tempfile::TempDir,
    /// The configuration it runs with (for the command line's functions, run beside it).
    pub config: Config,
    pg: Option<PgDatabase>,
}

impl TestApp {
    /// Defaults suited to tests: generous rate limits, everything else as shipped.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], with configuration changes.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            bind: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data_dir.path().to_path_buf(),
            shutdown_grace_secs: 5,
            ..Config::default()
        };
        config.api.rate_limits.auth_per_minute = 100_000;
        config.api.rate_limits.auth_burst = 100_000;
        config.api.rate_limits.user_writes_per_minute = 100_000;
        config.api.rate_limits.user_writes_burst = 100_000;
        // The SFU on a free loopback port: tests run side by side.
        config.gateway.voice.udp_bind = "127.0.0.1:0".parse().expect("addr");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = PgDatabase::create().await;
                config.database_url = Some(db.url.clone());
                config.database_max_connections = 8;
                Some(db)
            }
        };
        tweak(&mut config);
        let running = copains::start(config.clone()).await.expect("platform starts");
        let addr = running.local_addr();
        Self {
            running: Some(running),
            base: format!("http://{addr}"),
            ws_url: format!("ws://{addr}/gateway"),
            data_dir,
            config,
            pg,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn client(&self) -> copains_client_core::client::Client {
        copains_client_core::client::Client::new(&self.base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Counts rows of `table` (to prove that failed requests wrote nothing).
    pub async fn count(&self, table: &str) -> i64 {
        use sqlx::Row;
        let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.running().state().store.pool())
            .await
            .expect("count");
        row.try_get::<i64, _>(0).expect("count value")
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A PostgreSQL database made for one test and dropped after it.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("COPAINS_TEST_DATABASE_URL").expect("COPAINS_TEST_DATABASE_URL");
        let name = format!("copains_t_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        conn.close().await.ok();
        let url = replace_db_name(&admin_url, &name);
        Self { admin_url, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Keeps a paused clock still until dropped. Tokio moves a paused clock forward on its own
/// whenever the runtime has nothing to run, which is the case while a test waits for a socket
/// or for the database's thread; it does not while a blocking task runs. So this parks one
/// blocking task, and only `tokio::time::advance` moves time.
pub struct ClockHold(Option<std::sync::mpsc::Sender<()>>);

impl ClockHold {
    pub fn new() -> Self {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = wait.recv();
        });
        Self(Some(release))
    }
}

impl Drop for ClockHold {
    fn drop(&mut self) {
        // The blocking task returns, and the runtime can shut down.
        self.0.take();
    }
}

/// Waits for `cond` to hold, polling; panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
