//! Configuration of the API (filled by the `copains` binary from defaults, `copains.toml` and
//! `COPAINS_*` variables).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the backend needs to know that is not a dependency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Access and refresh token lifetimes.
    pub auth: AuthConfig,
    /// Argon2id cost.
    pub password_hashing: PasswordHashing,
    /// Request limits.
    pub limits: Limits,
    /// Rate limits.
    pub rate_limits: RateLimits,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            password_hashing: PasswordHashing::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
        }
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
    /// How many hashes may run at once (each holds `memory_kib`); 0 means one per CPU.
    pub max_concurrent: usize,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1, max_concurrent: 0 }
    }
}

/// Input limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (routes may set less).
    pub body_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { body_max_bytes: copains_client_core::limits::BODY_MAX_BYTES }
    }
}

/// Rate limits. Each is a burst plus a sustained rate per minute, per client IP (auth routes)
/// or per user (authenticated writes).
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
        }
    }
}
