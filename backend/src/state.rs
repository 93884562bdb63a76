//! Shared state of the API handlers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::auth::{LoginThrottle, PasswordHasher, SessionCache, TokenService};
use crate::bus::{BusEvent, EventBus};
use crate::config::BackendConfig;
use crate::ids::{NodeId, Snowflakes};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiters;
use crate::secrets::Secrets;
use crate::store::Store;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// Configuration.
    pub config: BackendConfig,
    /// Database.
    pub store: Store,
    /// Event bus.
    pub bus: Arc<dyn EventBus>,
    /// Token issuing and checking.
    pub tokens: TokenService,
    /// Live sessions and their users, so that authenticated requests skip the database.
    pub sessions: Arc<SessionCache>,
    /// Password hashing.
    pub passwords: PasswordHasher,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Id generator.
    pub ids: Snowflakes,
    /// Rate limiters.
    pub limiters: RateLimiters,
    /// Login throttling (per account and address).
    pub throttle: LoginThrottle,
    /// Keyed hashes of client addresses and sealing of what is kept about them.
    pub secrets: Secrets,
    /// False once shutdown began (readiness fails so load balancers drain the node).
    pub accepting: AtomicBool,
    /// The last hour of live figures, a sample a minute (the housekeeping job takes them).
    pub last_hour: parking_lot::Mutex<std::collections::VecDeque<copains_client_core::admin::StatsSample>>,
    /// Voice, once the gateway started it (moderation routes reach it here).
    pub voice: std::sync::OnceLock<Arc<dyn crate::voice::VoiceControl>>,
    /// The data directory, where there is one (node health reports its free space).
    pub data_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// When this node started (Unix milliseconds).
    pub started_at: i64,
    /// Who is connected to this node, and how each is seen.
    pub presence: Arc<crate::presence::PresenceTracker>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        config: BackendConfig,
        store: Store,
        bus: Arc<dyn EventBus>,
        tokens: TokenService,
        secrets: Secrets,
        metrics: Arc<Metrics>,
        node_id: NodeId,
    ) -> Result<Self, crate::auth::PasswordError> {
        let passwords = PasswordHasher::new(&config.password_hashing)?;
        let limiters = RateLimiters::new(&config.rate_limits);
        let throttle = LoginThrottle::new(config.security.login_throttle.clone());
        let sessions = Arc::new(SessionCache::new());
        bus.attach(sessions.clone());
        let presence_config = config.presence.clone();
        Ok(Self(Arc::new(Inner {
            presence: Arc::new(crate::presence::PresenceTracker::new(presence_config)),
            config,
            store,
            bus,
            tokens,
            sessions,
            passwords,
            metrics,
            ids: Snowflakes::new(node_id),
            limiters,
            throttle,
            secrets,
            accepting: AtomicBool::new(true),
            last_hour: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(60)),
            voice: std::sync::OnceLock::new(),
            data_dir: std::sync::OnceLock::new(),
            started_at: crate::store::now_ms(),
        })))
    }

    /// Publishes an event after a committed change. The change stands even if the bus
    /// fails; the failure is logged and clients catch up from REST.
    pub async fn publish(&self, event: Result<BusEvent, crate::bus::BusError>) {
        let result = match event {
            Ok(event) => self.bus.publish(event).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "event not published");
        }
    }

    /// Marks the node as draining.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }
}
