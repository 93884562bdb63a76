//! The REST boundary error: every failure becomes a status and the JSON error body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use copains_client_core::{ApiErrorBody, ErrorCode};

use crate::store::StoreError;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// An error answered to a REST client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed body.
    #[error("{0}")]
    Malformed(String),
    /// 422: a field breaks a rule.
    #[error("{0}")]
    Validation(String),
    /// 413.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 401: wrong username or password.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// 401: missing or bad access token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 401: bad refresh token.
    #[error("{0}")]
    InvalidRefreshToken(&'static str),
    /// 403: account disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("{0}")]
    Banned(&'static str, Option<i64>),
    /// 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 400: keys that fail verification.
    #[error("{0}")]
    InvalidKeys(String),
    /// 409: a send that does not cover exactly the current devices.
    #[error("the message does not cover exactly the current devices; see details")]
    DeviceMismatch(Box<copains_client_core::messages::SendMismatch>),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 409: a channel write made for an older view of the channel's recipient devices; the
    /// details are the current ones.
    #[error("the channel's members or their devices changed; see details for the current recipients")]
    ViewStale(Box<copains_client_core::channel_messages::ChannelRecipients>),
    /// 409.
    #[error("this username is taken")]
    UsernameTaken,
    /// 409.
    #[error("this account already has the maximum number of devices; sign out of one first")]
    TooManyDevices,
    /// 409: target device queues are full; nothing of the send was queued.
    #[error("a recipient device has too many undelivered messages; nothing was sent, try again later")]
    QueueFull(Vec<crate::store::QueueRef>),
    /// 429.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// 404 for unknown routes.
    #[error("no such route")]
    UnknownRoute,
    /// 405.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 503.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 503: a bounded queue (password hashing) is full; retry after the given seconds.
    #[error("the server is busy; retry in {0} s")]
    Overloaded(u64),
    /// 500: never shown to the client beyond a generic message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Wraps an unexpected failure.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        use ApiError::*;
        match self {
            Malformed(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest),
            Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            InvalidCredentials => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            InvalidRefreshToken(_) => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidRefreshToken),
            AccountDisabled => (StatusCode::FORBIDDEN, ErrorCode::AccountDisabled),
            Banned(..) => (StatusCode::FORBIDDEN, ErrorCode::Banned),
            Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            InvalidKeys(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidKeys),
            DeviceMismatch(_) => (StatusCode::CONFLICT, ErrorCode::DeviceMismatch),
            Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ViewStale(_) => (StatusCode::CONFLICT, ErrorCode::ViewStale),
            UsernameTaken => (StatusCode::CONFLICT, ErrorCode::UsernameTaken),
            TooManyDevices => (StatusCode::CONFLICT, ErrorCode::TooManyDevices),
            QueueFull(_) => (StatusCode::CONFLICT, ErrorCode::QueueFull),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            UnknownRoute => (StatusCode::NOT_FOUND, ErrorCode::UnknownRoute),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::UnknownRoute),
            Unavailable(_) | Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => ApiError::UsernameTaken,
            StoreError::TooManyDevices => ApiError::TooManyDevices,
            StoreError::OwnsTakenDownServer => ApiError::Conflict(
                "the account owns a taken-down server; restore it (and let its owner delete it) or keep the account".into(),
            ),
            StoreError::Database(e) => ApiError::Internal(e.into()),
            StoreError::Corrupt(m) | StoreError::Sqlite(m) => ApiError::Internal(anyhow::anyhow!(m)),
        }
    }
}

impl From<crate::auth::PasswordError> for ApiError {
    fn from(e: crate::auth::PasswordError) -> Self {
        match e {
            crate::auth::PasswordError::Busy { retry_after } => ApiError::Overloaded(retry_after.as_secs().max(1)),
            e => ApiError::Internal(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error while handling a request");
        }
        let mut body = ApiErrorBody::new(code, self.to_string());
        match &self {
            ApiError::DeviceMismatch(m) => body.error.details = serde_json::to_value(m).ok(),
            ApiError::ViewStale(recipients) => body.error.details = serde_json::to_value(recipients).ok(),
            ApiError::Banned(_, Some(until)) => body.error.details = Some(serde_json::json!({ "until": until })),
            ApiError::QueueFull(full) => {
                let devices: Vec<_> =
                    full.iter().map(|q| serde_json::json!({ "user_id": q.user.to_string(), "device_id": q.device.0 })).collect();
                body.error.details = Some(serde_json::json!({ "devices": devices }));
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited(secs) | ApiError::Overloaded(secs) = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
