//! The `Authenticated` extractor: a valid access token of a live session.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use copains_client_core::api::User;
use copains_client_core::{DeviceId, SessionId};

use crate::auth::{CachedUser, TokenError};
use crate::error::ApiError;
use crate::state::AppState;

/// The caller: a user, through one device and login session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user, as stored now.
    pub user: User,
    /// The device of the token.
    pub device_id: DeviceId,
    /// The login session of the token.
    pub session_id: SessionId,
}

impl Authenticated {
    /// Checks a bearer token: signature, expiry, and that its session still exists (so a
    /// revoked session's tokens stop working at once, not when they expire). Live sessions
    /// come from the [`crate::auth::SessionCache`], which revocations empty.
    pub async fn from_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let claims = state.tokens.verify(token).map_err(|e| match e {
            TokenError::Expired => ApiError::Unauthorized("access token expired; refresh it"),
            TokenError::Invalid => ApiError::Unauthorized("access token invalid"),
        })?;
        let user_id = claims.user_id().map_err(|_| ApiError::Unauthorized("access token invalid"))?;
        let session_id = claims.session_id().map_err(|_| ApiError::Unauthorized("access token invalid"))?;
        let record = match state.sessions.get(session_id, user_id) {
            Some(cached) => cached,
            None => {
                let epoch = state.sessions.epoch();
                let record = state
                    .store
                    .session_user(session_id, user_id)
                    .await?
                    .ok_or(ApiError::Unauthorized("session ended; log in again"))?;
                let cached = CachedUser { user: record.user, disabled: record.disabled };
                state.sessions.insert(session_id, cached.clone(), epoch);
                cached
            }
        };
        if record.disabled {
            return Err(ApiError::AccountDisabled);
        }
        Ok(Self { user: record.user, device_id: claims.device_id(), session_id })
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or(ApiError::Unauthorized("missing Authorization header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("Authorization must be 'Bearer <access token>'"))?;
        Self::from_token(state, token).await
    }
}
