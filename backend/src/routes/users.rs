//! `/api/v1/users/@me`: profile, password, sessions and devices of the caller; and the public
//! profile of another user, found by exact username or by id.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use copains_client_core::api::{ChangePassword, Device, Patch, PublicUser, RenameDevice, SessionInfo, UpdateProfile, User};
use copains_client_core::gateway::event_name;
use copains_client_core::{ApiErrorBody, SessionId, UserId};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::domain::{device_name, display_name, status_text, Password, Username};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::auth::announce_revocation;
use crate::state::AppState;
use crate::store::now_ms;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    // The static segments (`@me`, `lookup`) take precedence over `{user_id}` in axum's router,
    // whatever the order of these lines.
    Router::new()
        .route("/api/v1/users/lookup", get(lookup))
        .route("/api/v1/users/{user_id}", get(user_by_id))
        .route("/api/v1/users/@me", get(me).patch(update_me))
        .route("/api/v1/users/@me/password", post(change_password))
        .route("/api/v1/users/@me/sessions", get(sessions))
        .route("/api/v1/users/@me/sessions/{session_id}", delete(revoke_session))
        .route("/api/v1/users/@me/devices", get(devices))
        .route("/api/v1/users/@me/devices/{device_id}", delete(remove_device).patch(rename_device))
}

/// The current user.
#[utoipa::path(get, path = "/api/v1/users/@me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ApiErrorBody)))]
pub async fn me(auth: Authenticated) -> Json<User> {
    Json(auth.user)
}

/// Change display name and status text. `USER_UPDATE` goes to every device of the user.
#[utoipa::path(patch, path = "/api/v1/users/@me", tag = "users", security(("bearer" = [])),
    request_body = UpdateProfile,
    responses(
        (status = 200, body = User),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn update_me(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<UpdateProfile>,
) -> ApiResult<Json<User>> {
    state.limiters.user_write(auth.user.id)?;
    let display = match &body.display_name {
        Patch::Keep => None,
        Patch::Clear => Some(None),
        Patch::Set(v) => Some(Some(display_name(v).map_err(|e| ApiError::Validation(e.0))?)),
    };
    let status = match &body.status_text {
        Patch::Keep => None,
        Patch::Clear => Some(None),
        Patch::Set(v) => Some(status_text(v).map_err(|e| ApiError::Validation(e.0))?),
    };
    if display.is_none() && status.is_none() {
        return Ok(Json(auth.user));
    }
    let user = state
        .store
        .update_profile(auth.user.id, display.as_ref().map(|d| d.as_deref()), status.as_ref().map(|s| s.as_deref()), now_ms())
        .await?
        .ok_or(ApiError::NotFound("user not found"))?;
    state.publish(BusEvent::new(Topic::user(user.id), event_name::USER_UPDATE, &user)).await;
    Ok(Json(user))
}

/// Change the password; every other session of the user ends.
#[utoipa::path(post, path = "/api/v1/users/@me/password", tag = "users", security(("bearer" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody, description = "bad token or wrong current password"),
        (status = 422, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody, description = "password hashing saturated; see Retry-After"),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<ChangePassword>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let new = Password::parse(&body.new_password).map_err(|e| ApiError::Validation(e.0))?;
    let record = state.store.user(auth.user.id).await?.ok_or(ApiError::NotFound("user not found"))?;
    let current_ok = body.current_password.len() <= copains_client_core::limits::PASSWORD_MAX_BYTES
        && state.passwords.verify(&body.current_password, Some(&record.password_hash)).await?;
    if !current_ok {
        return Err(ApiError::InvalidCredentials);
    }
    let hash = state.passwords.hash(&new).await?;
    let ended = state.store.change_password(auth.user.id, &hash, auth.session_id, now_ms()).await?;
    tracing::info!(user = %auth.user.id, ended = ended.len(), "password changed");
    for session in ended {
        announce_revocation(&state, auth.user.id, session).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's login sessions, newest first.
#[utoipa::path(get, path = "/api/v1/users/@me/sessions", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<SessionInfo>), (status = 401, body = ApiErrorBody)))]
pub async fn sessions(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Vec<SessionInfo>>> {
    Ok(Json(state.store.sessions(auth.user.id, auth.session_id).await?))
}

/// End one of the caller's sessions (its device is removed and its connections closed).
#[utoipa::path(delete, path = "/api/v1/users/@me/sessions/{session_id}", tag = "users",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "session id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody, description = "not a session id"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn revoke_session(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let session: SessionId = raw.parse().map_err(|_| ApiError::Malformed("session id must be a decimal id".into()))?;
    if !state.store.revoke_session(auth.user.id, session).await? {
        return Err(ApiError::NotFound("no such session"));
    }
    tracing::info!(user = %auth.user.id, session = %session, "session revoked");
    announce_revocation(&state, auth.user.id, session).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's devices.
#[utoipa::path(get, path = "/api/v1/users/@me/devices", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<Device>), (status = 401, body = ApiErrorBody)))]
pub async fn devices(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(state.store.devices(auth.user.id).await?))
}

/// Remove one of the caller's devices: its keys, its queued envelopes and its session go with
/// it, and its connections are closed. Senders learn of it through `device_mismatch`. A
/// pending device may remove itself, not a linked one.
#[utoipa::path(delete, path = "/api/v1/users/@me/devices/{device_id}", tag = "users",
    security(("bearer" = [])),
    params(("device_id" = u32, Path, description = "device id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "a pending device tried to remove a linked one"),
        (status = 404, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn remove_device(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let device = parse_device_id(&raw)?;
    // A pending device (signed in with the password, not approved) may leave, but not remove
    // the account's linked devices.
    if device != auth.device_id
        && state.store.is_linked(auth.user.id, device).await?
        && !state.store.is_linked(auth.user.id, auth.device_id).await?
    {
        return Err(ApiError::Forbidden("only a linked device can remove a linked device"));
    }
    let Some(session) = state.store.remove_device(auth.user.id, device).await? else {
        return Err(ApiError::NotFound("no such device"));
    };
    tracing::info!(user = %auth.user.id, device = %device, "device removed");
    if let Some(session) = session {
        announce_revocation(&state, auth.user.id, session).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Rename one of the caller's devices. `USER_UPDATE` is not sent: device names are private to
/// the account; other devices see the change in `GET /api/v1/users/@me/devices`.
#[utoipa::path(patch, path = "/api/v1/users/@me/devices/{device_id}", tag = "users",
    security(("bearer" = [])),
    params(("device_id" = u32, Path, description = "device id")),
    request_body = RenameDevice,
    responses(
        (status = 200, body = Device),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn rename_device(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<RenameDevice>,
) -> ApiResult<Json<Device>> {
    state.limiters.user_write(auth.user.id)?;
    let device = parse_device_id(&raw)?;
    let name = device_name(Some(&body.name)).map_err(|e| ApiError::Validation(e.0))?;
    let renamed = state.store.rename_device(auth.user.id, device, &name).await?.ok_or(ApiError::NotFound("no such device"))?;
    Ok(Json(renamed))
}

pub(crate) fn parse_device_id(raw: &str) -> ApiResult<copains_client_core::DeviceId> {
    raw.parse::<u32>()
        .ok()
        .filter(|d| (1..=copains_client_core::DeviceId::MAX).contains(d))
        .map(copains_client_core::DeviceId)
        .ok_or_else(|| {
            ApiError::Malformed(format!("device id must be a number from 1 to {}", copains_client_core::DeviceId::MAX))
        })
}

/// `GET /api/v1/users/lookup` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    /// The whole username, in any case (`Alice` finds `alice`); never a prefix or a pattern.
    #[param(min_length = 2, max_length = 32, pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*[A-Za-z0-9_]$")]
    pub username: String,
}

/// Find a user by exact username (compared case-insensitively, as at login). There is no
/// prefix, partial or pattern matching and no listing: one must know a name to find it.
/// Disabled accounts are not found.
#[utoipa::path(get, path = "/api/v1/users/lookup", tag = "users", security(("bearer" = [])), params(LookupParams),
    responses(
        (status = 200, body = PublicUser),
        (status = 400, body = ApiErrorBody, description = "no username parameter"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no enabled user has this username"),
        (status = 422, body = ApiErrorBody, description = "not a possible username (length or characters)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn lookup(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<LookupParams>, QueryRejection>,
) -> ApiResult<Json<PublicUser>> {
    state.limiters.user_lookup(auth.user.id)?;
    let Query(params) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let username = Username::parse(&params.username).map_err(|e| ApiError::Validation(e.0))?;
    let user = state.store.public_user_by_username(username.folded()).await?.ok_or(ApiError::NotFound("no such user"))?;
    Ok(Json(user))
}

/// The public profile of a user. Disabled accounts are not found.
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "users", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 200, body = PublicUser),
        (status = 400, body = ApiErrorBody, description = "not a user id"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such user, or disabled"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn user_by_id(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<PublicUser>> {
    state.limiters.user_lookup(auth.user.id)?;
    let id: UserId = raw.parse().map_err(|_| ApiError::Malformed("user id must be a decimal id".into()))?;
    let user = state.store.public_user(id).await?.ok_or(ApiError::NotFound("no such user"))?;
    Ok(Json(user))
}
