//! Authentication: password hashing, access and refresh tokens, and the request extractor.

mod extract;
mod password;
mod sessions;
mod throttle;
mod tokens;

pub use extract::Authenticated;
pub use password::{HashingStats, PasswordError, PasswordHasher};
pub use sessions::{CachedUser, SessionCache, USER_TTL};
pub use throttle::{LoginThrottle, LoginThrottleConfig, Throttled};
pub use tokens::{hash_refresh_token, new_refresh_token, AccessClaims, JwtKeyPair, TokenError, TokenService};
