//! The JSON error body every REST error carries: `{"error":{"code","message"}}`.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. New codes may be added; clients must treat an
/// unknown code by its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON, or a field has the wrong type or is missing.
    MalformedRequest,
    /// A field is well-formed but breaks a rule (length, characters…).
    ValidationFailed,
    /// The body is larger than the route accepts.
    PayloadTooLarge,
    /// Wrong username or password.
    InvalidCredentials,
    /// No token, or a token that is invalid, expired, forged or revoked.
    Unauthorized,
    /// A refresh token that is unknown, expired, or was already used (which revokes its session).
    InvalidRefreshToken,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The account is disabled.
    AccountDisabled,
    /// The account, or the client it comes from, is banned from the platform (`details`:
    /// `{"until": ms}` for a ban that ends).
    Banned,
    /// No such resource.
    NotFound,
    /// The username is taken.
    UsernameTaken,
    /// A user may not hold more devices.
    TooManyDevices,
    /// Generic conflict with the current state.
    Conflict,
    /// A send did not cover exactly the current devices; see `details`.
    DeviceMismatch,
    /// A channel send was made on an older view of the channel's recipient devices; `details`
    /// is the current one ([`crate::channel_messages::ChannelRecipients`]).
    ViewStale,
    /// Keys that fail verification (bad signature, wrong length or type).
    InvalidKeys,
    /// Too many requests; see `Retry-After`.
    RateLimited,
    /// A recipient device's queue of undelivered envelopes is full (count or bytes); nothing
    /// of the send was queued. `details` lists the full devices. Retry later.
    QueueFull,
    /// The route or method does not exist.
    UnknownRoute,
    /// The server failed; the request may be retried.
    Internal,
    /// The server is not ready (starting or shutting down).
    Unavailable,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The content of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation, safe to show to the user.
    pub message: String,
    /// Machine-readable details for some codes (`device_mismatch`: a
    /// [`crate::messages::SendMismatch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

impl ApiErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, message: message.into(), details: None } }
    }
}
