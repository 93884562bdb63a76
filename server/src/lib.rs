//! The `copains` binary's library: configuration, the key file, and the composition of the
//! API, the gateway and the web client into one running platform.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod keyfile;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use copains_backend::auth::TokenService;
use copains_backend::bus::InProcessBus;
use copains_backend::metrics::Metrics;
use copains_backend::secrets::Secrets;
use copains_backend::{AppState, Store};
use copains_signaling::Gateway;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

pub use config::{Config, LogFormat};
pub use web::WebConfig;

/// A platform serving on a socket.
pub struct Running {
    addr: SocketAddr,
    state: AppState,
    gateway: Gateway,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
    /// Held while the server runs: `copains admin restore` refuses to replace its database.
    _lock: std::fs::File,
}

/// The lock file in a data directory: held by a running server.
pub fn lock_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("copains.lock")
}

/// Takes the data directory's lock, or says that a server holds it.
pub fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = lock_file(data_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("a copains server is running on {} (it holds {})", data_dir.display(), path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Starts API, gateway and web client in this process on `config.bind` (port 0 picks a free port).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let lock = lock_data_dir(&config.data_dir)?;
    let keys = keyfile::load_or_create(&config.key_file())?;
    let url = config.database_url();
    let store = Store::connect(&url, config.database_max_connections)
        .await
        .with_context(|| format!("cannot open database {}", config::redact_url(&url)))?;
    let tokens = TokenService::new(keys.signing, keys.retired, &config.api.auth.issuer, config.api.auth.access_ttl());
    let metrics = Arc::new(Metrics::new());
    let bus = Arc::new(InProcessBus::new());
    let secrets = Secrets::new(
        keys.fingerprint_key,
        &keys.data_keys,
        Some(Secrets::reload_from(config.key_file(), keyfile::read_data_keys)),
    );
    config.api.security.parsed_cors_origins().map_err(anyhow::Error::msg)?;
    let state = AppState::new(config.api.clone(), store, bus, tokens, secrets, metrics, config.node_id)
        .context("invalid password hashing settings")?;
    let _ = state.data_dir.set(config.data_dir.clone());
    let gateway = Gateway::new(config.gateway.clone(), state.clone());
    gateway.start_voice().await.with_context(|| {
        format!(
            "cannot start voice on UDP {} (set gateway.voice.udp_bind, or COPAINS_GATEWAY__VOICE__UDP_BIND, to a free address; or gateway.voice.enabled = false)",
            config.gateway.voice.udp_bind
        )
    })?;

    let web = web::WebClient::new(&config.web.dir);
    if web.is_built() {
        tracing::info!(dir = %web.dir().display(), "serving the web client");
    } else {
        tracing::warn!(
            dir = %web.dir().display(),
            "the web client is not built (no index.html there): / answers 503 until it is; run scripts/serve or scripts/build-web, or set web.dir"
        );
    }
    // What no route matched goes to the web client, which keeps the API's JSON 404 for
    // unknown paths under the platform's prefixes (this replaces the API router's fallback).
    let app = copains_backend::router(state.clone()).merge(gateway.router()).fallback(move |req: axum::extract::Request| {
        let web = web.clone();
        async move { web.respond(req).await }
    });
    let trusted = config.api.trusted_proxies.clone();
    // Each request's span carries the client address as the rate limits see it.
    let trace = TraceLayer::new_for_http().make_span_with(move |req: &axum::extract::Request| {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let client = copains_backend::client_ip::resolve(peer, req.headers(), &trusted);
        tracing::debug_span!("request", method = %req.method(), uri = %req.uri().path(), client_ip = %client)
    });
    let app = copains_backend::outer_layers(app, state.clone()).layer(trace);

    let listener = TcpListener::bind(config.bind).await.with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(wait_stop(stopped.clone()));
    let server = tokio::spawn(async move { serve.await });
    let background = vec![
        tokio::spawn(copains_backend::run_maintenance(state.clone(), Duration::from_secs(60), wait_stop(stopped.clone()))),
        tokio::spawn({
            let gateway = gateway.clone();
            let stopped = stopped.clone();
            async move { gateway.run_reaper(wait_stop(stopped)).await }
        }),
        tokio::spawn({
            let gateway = gateway.clone();
            let stopped = stopped.clone();
            async move { gateway.run_presence(wait_stop(stopped)).await }
        }),
    ];
    tracing::info!(%addr, database = %store_kind(&state), "LesCopains is listening");
    Ok(Running {
        addr,
        state,
        gateway,
        stop,
        server,
        background,
        grace: Duration::from_secs(config.shutdown_grace_secs),
        _lock: lock,
    })
}

fn store_kind(state: &AppState) -> &'static str {
    state.store.kind().name()
}

impl Running {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API state (for tests and tools).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The gateway (for tests and tools).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Graceful shutdown: readiness turns 503, gateway connections are told (4012) and closed,
    /// in-flight requests finish, then the database closes.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.stop_accepting();
        self.gateway.shutdown(self.grace).await;
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.grace, self.server).await {
            Ok(joined) => joined.context("server task failed")?.context("server failed")?,
            Err(_) => tracing::warn!("in-flight requests did not finish within the grace period"),
        }
        for task in self.background {
            let _ = task.await;
        }
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
