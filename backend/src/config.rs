//! Configuration of the API (filled by the `copains` binary from defaults, `copains.toml` and
//! `COPAINS_*` variables).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client_ip::IpBlock;

/// Everything the backend needs to know that is not a dependency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Access and refresh token lifetimes.
    pub auth: AuthConfig,
    /// Argon2id cost.
    pub password_hashing: PasswordHashing,
    /// Input and storage limits (bodies, envelope queues).
    pub limits: Limits,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Reverse proxies (IPs or CIDR blocks) whose `X-Forwarded-For` is believed. A request
    /// from one of them is attributed to the right-most address of that header that is not
    /// itself a trusted proxy; any other request to its socket address. Empty by default: the
    /// header is ignored, so a client cannot pick the address its rate limits count against.
    pub trusted_proxies: Vec<IpBlock>,
    /// Abuse controls and what is kept about clients: login throttling, CORS, retention.
    pub security: SecurityConfig,
    /// Presence timings.
    pub presence: crate::presence::PresenceConfig,
}

/// Abuse controls and retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Login throttling (per account and address, then per account).
    pub login_throttle: crate::auth::LoginThrottleConfig,
    /// Origins (`https://chat.example.org`) whose pages may call the API from a browser
    /// (CORS). Empty by default: only the web client this server serves itself, which needs
    /// none.
    pub cors_origins: Vec<String>,
    /// The platform audit log (staff actions and security events) keeps entries this many
    /// days; the housekeeping job deletes older ones. Default 180.
    pub audit_retention_days: u64,
    /// A session's last IP address is kept (sealed with the key file's data key, for staff
    /// looking into abuse) this many seconds after it was seen, then erased; only its keyed
    /// hash stays. Default 604 800 (7 days).
    pub ip_retention_secs: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            login_throttle: crate::auth::LoginThrottleConfig::default(),
            cors_origins: Vec::new(),
            audit_retention_days: 180,
            ip_retention_secs: 7 * 24 * 3600,
        }
    }
}

impl SecurityConfig {
    /// The CORS origins as header values; an entry that is not `scheme://host[:port]` is an
    /// error naming it.
    pub fn parsed_cors_origins(&self) -> Result<Vec<http::HeaderValue>, String> {
        self.cors_origins
            .iter()
            .map(|o| {
                // As a browser writes an `Origin`: lowercase, no path, no user, no default port.
                let ok = (o.starts_with("https://") || o.starts_with("http://"))
                    && !o.ends_with('/')
                    && !o.ends_with(":443")
                    && !o.ends_with(":80")
                    && !o.chars().any(|c| c.is_ascii_uppercase())
                    && o.split_once("://").is_some_and(|(_, host)| !host.is_empty() && !host.contains(['/', '?', '#', ' ', '@']));
                ok.then(|| http::HeaderValue::from_str(o).ok())
                    .flatten()
                    .ok_or_else(|| format!("security.cors_origins: {o:?} is not an origin like https://chat.example.org"))
            })
            .collect()
    }

    /// Audit entries older than this many milliseconds are deleted.
    pub fn audit_retention_ms(&self) -> i64 {
        i64::try_from(self.audit_retention_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX)
    }

    /// Sealed IP addresses older than this many milliseconds are erased.
    pub fn ip_retention_ms(&self) -> i64 {
        i64::try_from(self.ip_retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// Token lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Access token (JWT) lifetime in seconds. Default 900 (15 minutes).
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime in seconds, renewed at each refresh. Default 604800 (7 days).
    pub refresh_token_ttl_secs: u64,
    /// The `iss` claim of access tokens.
    pub issuer: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { access_token_ttl_secs: 900, refresh_token_ttl_secs: 7 * 24 * 3600, issuer: "copains".into() }
    }
}

impl AuthConfig {
    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }
    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }
}

/// Argon2id parameters. The defaults are OWASP's (19 MiB, 2 passes, 1 lane); lower values are
/// refused at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashing {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
    /// How many hashes may run at once; 0 means one per CPU. Each of these workers keeps a
    /// block of `memory_kib` once it has hashed, so argon2 never holds more than
    /// `max_concurrent × memory_kib`.
    pub max_concurrent: usize,
    /// How many requests may wait for a worker; beyond that, register, login and password
    /// changes answer 503 with `Retry-After` at once. Default 256.
    pub max_queued: usize,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1, max_concurrent: 0, max_queued: 256 }
    }
}

/// Input and storage limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (routes may set less).
    pub body_max_bytes: usize,
    /// Envelopes one device's queue may hold (undelivered or unacknowledged). A send that
    /// would go over is refused whole (`409 queue_full`). Default 10 000.
    pub queue_max_envelopes: u64,
    /// Bytes of ciphertext one device's queue may hold. Default 64 MiB (a thousand envelopes
    /// of the largest size; tens of thousands of ordinary messages).
    pub queue_max_bytes: u64,
    /// Envelopes older than this are deleted by the housekeeping job, acknowledged or not.
    /// Default 2 592 000 (30 days).
    pub envelope_ttl_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_max_bytes: copains_client_core::limits::BODY_MAX_BYTES,
            queue_max_envelopes: 10_000,
            queue_max_bytes: 64 * 1024 * 1024,
            envelope_ttl_secs: 30 * 24 * 3600,
        }
    }
}

impl Limits {
    /// How long an envelope is kept, in milliseconds.
    pub fn envelope_ttl_ms(&self) -> i64 {
        i64::try_from(self.envelope_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// Rate limits. Each is a burst plus a sustained rate per minute, per client IP (auth routes,
/// gateway IDENTIFY/RESUME) or per user (everything authenticated).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// `register`, `login`, `refresh` per IP: sustained per minute.
    pub auth_per_minute: u32,
    /// `register`, `login`, `refresh` per IP: burst.
    pub auth_burst: u32,
    /// Authenticated writes per user: sustained per minute.
    pub user_writes_per_minute: u32,
    /// Authenticated writes per user: burst.
    pub user_writes_burst: u32,
    /// Messages sent per user: sustained per minute.
    pub messages_per_minute: u32,
    /// Messages sent per user: burst.
    pub messages_burst: u32,
    /// Prekey bundle fetches per user: sustained per minute.
    pub bundle_fetches_per_minute: u32,
    /// Prekey bundle fetches per user: burst.
    pub bundle_fetches_burst: u32,
    /// Devices whose bundles a user claims through a channel (`POST
    /// /api/v1/channels/{id}/bundles`, each device counts; a device-list read of ten users
    /// counts one): sustained per minute. Larger than `bundle_fetches_*`, as a first message
    /// into a big channel needs a session with every member device; only recipient devices of
    /// a channel the caller reads can be claimed.
    pub channel_key_claims_per_minute: u32,
    /// Channel key claims per user: burst.
    pub channel_key_claims_burst: u32,
    /// Queue pages (`GET /api/v1/messages`) per user: sustained per minute.
    pub queue_reads_per_minute: u32,
    /// Queue pages per user: burst.
    pub queue_reads_burst: u32,
    /// `DELETE` requests (acknowledging an envelope, ending a session, removing a device) per
    /// user: sustained per minute.
    pub deletes_per_minute: u32,
    /// `DELETE` requests per user: burst.
    pub deletes_burst: u32,
    /// User lookups (`GET /api/v1/users/lookup`, `GET /api/v1/users/{user_id}`) per user:
    /// sustained per minute. Bounds how fast one account can probe for usernames.
    pub user_lookups_per_minute: u32,
    /// User lookups per user: burst.
    pub user_lookups_burst: u32,
    /// Gateway `ACK` frames (up to 100 ids each) per user: sustained per minute.
    pub gateway_acks_per_minute: u32,
    /// Gateway `ACK` frames per user: burst.
    pub gateway_acks_burst: u32,
    /// Gateway IDENTIFY and RESUME per user: sustained per minute.
    pub identify_per_minute: u32,
    /// Gateway IDENTIFY and RESUME per user: burst (at least the sessions a user may hold, so
    /// that all of them can come back after a restart).
    pub identify_burst: u32,
    /// Gateway IDENTIFY and RESUME per client IP, checked before the token: sustained per
    /// minute.
    pub identify_per_ip_per_minute: u32,
    /// Gateway IDENTIFY and RESUME per client IP: burst.
    pub identify_per_ip_burst: u32,
    /// Typing indicators (`POST …/typing`) per user: sustained per minute (clients send one
    /// every 8 s while their user types).
    pub typing_per_minute: u32,
    /// Typing indicators per user: burst.
    pub typing_burst: u32,
    /// Read marks (`PUT …/read`) per user: sustained per minute.
    pub read_marks_per_minute: u32,
    /// Read marks per user: burst.
    pub read_marks_burst: u32,
    /// Presence changes per user (gateway `ACTIVITY` frames and `PUT /users/@me/presence`):
    /// sustained per minute.
    pub presence_per_minute: u32,
    /// Presence changes per user: burst.
    pub presence_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            auth_per_minute: 30,
            auth_burst: 10,
            user_writes_per_minute: 120,
            user_writes_burst: 30,
            messages_per_minute: 600,
            messages_burst: 120,
            bundle_fetches_per_minute: 120,
            bundle_fetches_burst: 60,
            channel_key_claims_per_minute: 1000,
            channel_key_claims_burst: 2500,
            queue_reads_per_minute: 600,
            queue_reads_burst: 120,
            deletes_per_minute: 1200,
            deletes_burst: 300,
            user_lookups_per_minute: 120,
            user_lookups_burst: 30,
            gateway_acks_per_minute: 3000,
            gateway_acks_burst: 600,
            identify_per_minute: 60,
            identify_burst: 30,
            identify_per_ip_per_minute: 300,
            identify_per_ip_burst: 100,
            typing_per_minute: 30,
            typing_burst: 10,
            read_marks_per_minute: 300,
            read_marks_burst: 60,
            presence_per_minute: 30,
            presence_burst: 10,
        }
    }
}
