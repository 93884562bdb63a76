//! The LesCopains real-time gateway: one WebSocket per client session at `/gateway`.
//!
//! HELLO → IDENTIFY → READY, then DISPATCH events with per-session sequence numbers,
//! heartbeats, RESUME after a drop (replaying missed events from a per-session buffer), a
//! bounded outgoing queue per connection (a slow reader is closed with a resumable code), and
//! documented close codes. Events come from the [`copains_backend::bus::EventBus`]; this
//! node's [`hub::Hub`] is the bus's sink.
#![forbid(unsafe_code)]

mod connection;
pub mod hub;
pub mod session;
pub mod voice;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRef, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use copains_backend::bus::Topic;
use copains_backend::extract::ClientIp;
use copains_backend::{ApiError, AppState};
use copains_client_core::gateway::close;
use copains_client_core::voice_signal::VOICE_FRAME_MAX_BYTES;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::hub::{Hub, HubLimits};

/// Gateway timings and sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Clients must heartbeat this often; a connection silent for 1.5× this is closed (4009).
    pub heartbeat_interval_ms: u64,
    /// How long a dropped session can be resumed.
    pub resume_window_ms: u64,
    /// Events kept per session for replay on RESUME.
    pub replay_buffer: usize,
    /// Bytes of frames kept per session for replay (past it the oldest go first; a RESUME
    /// that needs them gets INVALID_SESSION).
    pub replay_buffer_bytes: usize,
    /// Gateway sessions (connected or resumable) one device may hold on a node; a new
    /// IDENTIFY past it ends the device's oldest session with 4014.
    pub max_sessions_per_device: usize,
    /// Gateway sessions one user may hold on a node, all devices together; a new IDENTIFY past
    /// it ends the user's oldest session with 4014.
    pub max_sessions_per_user: usize,
    /// Frames queued per connection before it is closed as a slow consumer (4010).
    pub outgoing_queue: usize,
    /// A write that takes longer than this ends the connection (resumable).
    pub write_timeout_ms: u64,
    /// Voice channels: the SFU and its signalling.
    pub voice: voice::VoiceConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 30_000,
            resume_window_ms: 120_000,
            replay_buffer: 1024,
            replay_buffer_bytes: 1024 * 1024,
            max_sessions_per_device: 5,
            max_sessions_per_user: 20,
            outgoing_queue: 256,
            write_timeout_ms: 10_000,
            voice: voice::VoiceConfig::default(),
        }
    }
}

/// The gateway of one node. Cheap to clone.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

struct Inner {
    config: GatewayConfig,
    state: AppState,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    draining: AtomicBool,
    open: AtomicUsize,
    all_closed: Notify,
    voice: std::sync::OnceLock<voice::Voice>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("open", &self.0.open.load(Ordering::Relaxed)).finish()
    }
}

/// Decrements the open-connection count when a connection task ends.
pub(crate) struct OpenGuard(Gateway);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0 .0.state.metrics.gateway_connections.dec();
        if self.0 .0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.all_closed.notify_waiters();
        }
    }
}

impl Gateway {
    /// Builds the gateway and attaches its hub to the backend's event bus.
    pub fn new(config: GatewayConfig, state: AppState) -> Self {
        let limits = HubLimits {
            replay_events: config.replay_buffer,
            replay_bytes: config.replay_buffer_bytes,
            sessions_per_device: config.max_sessions_per_device,
            sessions_per_user: config.max_sessions_per_user,
        };
        let hub = Arc::new(Hub::new(state.metrics.clone(), limits, state.presence.clone()));
        state.bus.attach(hub.clone());
        let (shutdown, _) = watch::channel(false);
        Self(Arc::new(Inner {
            config,
            state,
            hub,
            shutdown,
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
            voice: std::sync::OnceLock::new(),
        }))
    }

    /// Starts voice (binds the SFU's UDP port) if the configuration enables it. Without it,
    /// voice ops are refused with 4110.
    pub async fn start_voice(&self) -> std::io::Result<Option<voice::Voice>> {
        if !self.0.config.voice.enabled {
            return Ok(None);
        }
        if let Some(v) = self.0.voice.get() {
            return Ok(Some(v.clone()));
        }
        let v = voice::Voice::start(self.0.config.voice.clone(), self.0.state.clone(), self.0.hub.clone()).await?;
        let _ = self.0.voice.set(v.clone());
        Ok(Some(v))
    }

    /// Voice, if started.
    pub fn voice(&self) -> Option<&voice::Voice> {
        self.0.voice.get()
    }

    /// `GET /gateway`.
    pub fn router(&self) -> Router {
        Router::new().route("/gateway", get(upgrade)).with_state(self.clone())
    }

    /// Forgets sessions whose resume window passed. Runs until `shutdown` resolves.
    pub async fn run_reaper(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let window = Duration::from_millis(self.0.config.resume_window_ms);
        let mut tick = tokio::time::interval((window / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let emptied = self.0.hub.expire(window, tokio::time::Instant::now().into_std());
            self.unsubscribe(emptied).await;
        }
    }

    /// Sends the presence changes gathered since the last flush, every
    /// `presence.flush_ms`. Runs until `shutdown` resolves.
    pub async fn run_presence(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let every = Duration::from_millis(self.0.state.presence.config().flush_ms.max(50));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            copains_backend::routes::social::flush_presence(&self.0.state).await;
        }
    }

    /// Closes every connection with 4012 and waits (up to `grace`) for them to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.0.draining.store(true, Ordering::SeqCst);
        let _ = self.0.shutdown.send(true);
        self.0.hub.close_all(close::SERVER_SHUTDOWN);
        let wait = async {
            loop {
                let notified = self.0.all_closed.notified();
                if self.0.open.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(open = self.0.open.load(Ordering::SeqCst), "gateway connections still open after grace");
        }
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    pub(crate) fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    pub(crate) fn state(&self) -> &AppState {
        &self.0.state
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.0.hub
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }

    pub(crate) fn connection_opened(&self) -> OpenGuard {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        self.0.state.metrics.gateway_connections.inc();
        OpenGuard(self.clone())
    }

    pub(crate) async fn subscribe(&self, topics: Vec<Topic>) {
        for topic in topics {
            if let Err(e) = self.0.state.bus.subscribe(&topic).await {
                tracing::warn!(error = %e, %topic, "bus subscribe failed");
            }
        }
    }

    pub(crate) async fn unsubscribe(&self, topics: Vec<Topic>) {
        for topic in topics {
            if let Err(e) = self.0.state.bus.unsubscribe(&topic).await {
                tracing::warn!(error = %e, %topic, "bus unsubscribe failed");
            }
        }
    }
}

/// Lets backend extractors that need the API state ([`ClientIp`]) run on gateway routes.
impl FromRef<Gateway> for AppState {
    fn from_ref(gw: &Gateway) -> AppState {
        gw.0.state.clone()
    }
}

async fn upgrade(
    State(gw): State<Gateway>,
    ClientIp(ip): ClientIp,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if gw.0.draining.load(Ordering::SeqCst) {
        return ApiError::Unavailable("server shutting down").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::Malformed(format!("/gateway needs a WebSocket upgrade: {}", rejection.body_text())).into_response()
        }
    };
    // The ops carrying SDP or key shares may be this large; the others are held to 16 KiB
    // once parsed (connection.rs).
    ws.max_message_size(VOICE_FRAME_MAX_BYTES)
        .max_frame_size(VOICE_FRAME_MAX_BYTES)
        // Small buffers: most connections are idle, and memory per connection is what
        // bounds how many one node holds.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection::run(gw, socket, ip))
}
