//! Devices the server cannot forge: signed device lists, the recovery backup, and the link
//! requests through which a pending device is vouched for by a linked one (the wire types and
//! the list's encoding are in `copains_client_core::devices`).
//!
//! The server checks what it can (the list's signature under its account key, its encoding,
//! its version, that its devices are the user's with the identity keys they uploaded) and
//! routes by it: once a user has a list, only the devices it names receive envelopes and hand
//! out prekey bundles. Clients check the signature themselves against the account key they
//! know; the server only relays the linking exchange and the sealed payloads, which it cannot
//! open.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use copains_client_core::devices::{
    DeviceList, DeviceListUpdate, LinkAnswer, LinkRequest, NewLinkAnswer, NewLinkRequest, OwnLinkRequest, PublishDeviceList,
    RecoveryBackup, SignedDeviceList, KEY_BYTES, LINK_REQUEST_TTL_MS, PAKE_MAX_BYTES, SEALED_MAX_BYTES,
};
use copains_client_core::gateway::event_name;
use copains_client_core::{ApiErrorBody, DeviceId, UserId};
use libsignal_protocol::IdentityKey;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::users::parse_device_id;
use crate::state::AppState;
use crate::store::{now_ms, LinkError, PublishError};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    // Static `@me` segments take precedence over `{user_id}` and `{device_id}`; a static path
    // answers only its own methods, hence GET on both device-list paths.
    Router::new()
        .route("/api/v1/users/{user_id}/device-list", get(device_list))
        .route("/api/v1/users/@me/device-list", get(own_device_list).put(publish_device_list))
        .route("/api/v1/users/@me/recovery", get(recovery).put(put_recovery))
        .route("/api/v1/users/@me/link-requests", get(link_requests).post(open_link_request))
        .route("/api/v1/users/@me/link-requests/@me", get(own_link_request).delete(withdraw_link_request))
        .route("/api/v1/users/@me/link-requests/{device_id}", delete(decline_link_request))
        .route("/api/v1/users/@me/link-requests/{device_id}/answer", post(answer_link_request))
}

/// A user's current signed device list, exactly as it was published. Any signed-in user may
/// read it; clients verify the signature with the account key they know for that user.
#[utoipa::path(get, path = "/api/v1/users/{user_id}/device-list", tag = "devices", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id, or `@me`")),
    responses(
        (status = 200, body = SignedDeviceList),
        (status = 400, body = ApiErrorBody, description = "not a user id"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such user, or no device list"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn device_list(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<SignedDeviceList>> {
    let user = if raw == "@me" {
        auth.user.id
    } else {
        raw.parse::<UserId>().map_err(|_| ApiError::Malformed("user id must be a decimal id or @me".into()))?
    };
    read_device_list(&state, &auth, user).await
}

/// `GET /api/v1/users/@me/device-list` (documented with `{user_id}`).
pub async fn own_device_list(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<SignedDeviceList>> {
    let user = auth.user.id;
    read_device_list(&state, &auth, user).await
}

async fn read_device_list(state: &AppState, auth: &Authenticated, user: UserId) -> ApiResult<Json<SignedDeviceList>> {
    // Read with the keys of the user's devices: the bundle fetches' budget.
    state.limiters.bundle_fetch(auth.user.id)?;
    let stored = state.store.device_list(user).await?.ok_or(ApiError::NotFound("no such user, or no device list"))?;
    Ok(Json(stored.signed()))
}

/// Publish a new version of the caller's device list, signed by the account key. The devices
/// it names (each with the identity key it uploaded) become linked and all others pending:
/// from then on only linked devices receive messages and hand out prekey bundles.
/// `DEVICE_LIST_UPDATE` goes to every device of the user.
#[utoipa::path(put, path = "/api/v1/users/@me/device-list", tag = "devices", security(("bearer" = [])),
    request_body = PublishDeviceList,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody, description = "invalid_keys: bad account key or signature; malformed_request: \
            not a canonical device list, or another user's"),
        (status = 401, body = ApiErrorBody, description = "invalid_credentials: wrong reset_password"),
        (status = 409, body = ApiErrorBody, description = "conflict: the account key differs (without reset_password), \
            or the version is not above the current one (stale)"),
        (status = 422, body = ApiErrorBody, description = "a listed device is not the user's, has no keys or has another \
            identity key"),
        (status = 429, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody, description = "password hashing saturated (reset_password); see Retry-After"),
    ))]
pub async fn publish_device_list(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<PublishDeviceList>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let signed = &body.signed;
    if signed.account_key.as_slice().len() != KEY_BYTES {
        return Err(ApiError::InvalidKeys(format!("account_key must be a serialized Curve25519 public key ({KEY_BYTES} bytes)")));
    }
    let account_key = IdentityKey::decode(signed.account_key.as_slice())
        .map_err(|_| ApiError::InvalidKeys("account_key is not a serialized Curve25519 public key".into()))?;
    if !account_key.public_key().verify_signature(signed.list.as_slice(), signed.signature.as_slice()) {
        return Err(ApiError::InvalidKeys("signature does not verify with account_key".into()));
    }
    let list = DeviceList::decode(signed.list.as_slice()).map_err(|e| ApiError::Malformed(format!("list: {e}")))?;
    if list.user != auth.user.id {
        return Err(ApiError::Malformed("list: it is another user's device list".into()));
    }
    let mut replace_account_key = false;
    if let Some(current) = state.store.device_list(auth.user.id).await? {
        if current.account_key != signed.account_key.as_slice() {
            let Some(password) = &body.reset_password else {
                return Err(ApiError::Conflict(
                    "the account key differs from the current device list's; replacing it needs reset_password".into(),
                ));
            };
            let record = state.store.user(auth.user.id).await?.ok_or(ApiError::NotFound("user not found"))?;
            let ok = password.len() <= copains_client_core::limits::PASSWORD_MAX_BYTES
                && state.passwords.verify(password, Some(&record.password_hash)).await?;
            if !ok {
                return Err(ApiError::InvalidCredentials);
            }
            replace_account_key = true;
        }
    }
    match state.store.publish_device_list(auth.user.id, signed, &list, replace_account_key, now_ms()).await {
        Ok(()) => {}
        Err(e @ (PublishError::AccountKeyDiffers | PublishError::Stale { .. })) => return Err(ApiError::Conflict(e.to_string())),
        Err(e @ (PublishError::UnknownDevice(_) | PublishError::WrongKey(_) | PublishError::VersionTooLarge(_))) => {
            return Err(ApiError::Validation(e.to_string()));
        }
        Err(PublishError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(user = %auth.user.id, version = list.version, devices = list.devices.len(), new_account_key = replace_account_key,
        "device list published");
    let update = DeviceListUpdate { user_id: auth.user.id, version: list.version };
    state.publish(BusEvent::new(Topic::user(auth.user.id), event_name::DEVICE_LIST_UPDATE, &update)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's recovery backup (the account key sealed under the recovery key). Any device of
/// the user may read it: a pending device recovers with it.
#[utoipa::path(get, path = "/api/v1/users/@me/recovery", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 200, body = RecoveryBackup),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no recovery backup"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn recovery(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<RecoveryBackup>> {
    state.limiters.queue_read(auth.user.id)?;
    let sealed = state.store.recovery_backup(auth.user.id).await?.ok_or(ApiError::NotFound("no recovery backup"))?;
    Ok(Json(RecoveryBackup { sealed: sealed.into() }))
}

/// Store (or replace) the caller's recovery backup; only a linked device may.
#[utoipa::path(put, path = "/api/v1/users/@me/recovery", tag = "devices", security(("bearer" = [])),
    request_body = RecoveryBackup,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "the calling device is not linked"),
        (status = 422, body = ApiErrorBody, description = "sealed is empty or over 16 KiB"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn put_recovery(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<RecoveryBackup>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    check_size("sealed", body.sealed.as_slice(), SEALED_MAX_BYTES)?;
    if !state.store.put_recovery_backup(auth.user.id, auth.device_id, body.sealed.as_slice(), now_ms()).await? {
        return Err(ApiError::Forbidden("only a linked device may store the recovery backup"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ask to be linked: the calling (pending) device opens a link request with its SPAKE2
/// message, replacing its earlier one. `LINK_REQUEST` goes to every device of the user; a
/// linked device answers within 10 minutes.
#[utoipa::path(post, path = "/api/v1/users/@me/link-requests", tag = "devices", security(("bearer" = [])),
    request_body = NewLinkRequest,
    responses(
        (status = 201, body = LinkRequest),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "the device is already linked, the account has no device list, \
            or the device has not uploaded its keys"),
        (status = 422, body = ApiErrorBody, description = "pake is empty or over 64 bytes"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn open_link_request(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewLinkRequest>,
) -> ApiResult<(StatusCode, Json<LinkRequest>)> {
    state.limiters.user_write(auth.user.id)?;
    check_size("pake", body.pake.as_slice(), PAKE_MAX_BYTES)?;
    let now = now_ms();
    let request = state
        .store
        .open_link_request(auth.user.id, auth.device_id, body.pake.as_slice(), now, now + LINK_REQUEST_TTL_MS)
        .await
        .map_err(link_error)?;
    tracing::info!(user = %auth.user.id, device = %auth.device_id, "link request opened");
    state.publish(BusEvent::new(Topic::user(auth.user.id), event_name::LINK_REQUEST, &request)).await;
    Ok((StatusCode::CREATED, Json(request)))
}

/// The open link requests of the caller's pending devices (without answers); for linked
/// devices only.
#[utoipa::path(get, path = "/api/v1/users/@me/link-requests", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<LinkRequest>),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "the calling device is not linked"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn link_requests(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Vec<LinkRequest>>> {
    state.limiters.queue_read(auth.user.id)?;
    if !state.store.is_linked(auth.user.id, auth.device_id).await? {
        return Err(ApiError::Forbidden("only a linked device sees link requests"));
    }
    Ok(Json(state.store.link_requests(auth.user.id, now_ms()).await?))
}

/// The calling device's own open link request, with the answer once a linked device gave one.
#[utoipa::path(get, path = "/api/v1/users/@me/link-requests/@me", tag = "devices", security(("bearer" = [])),
    responses(
        (status = 200, body = OwnLinkRequest),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no open request (none, or expired)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn own_link_request(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<OwnLinkRequest>> {
    state.limiters.queue_read(auth.user.id)?;
    let own = state
        .store
        .own_link_request(auth.user.id, auth.device_id, now_ms())
        .await?
        .ok_or(ApiError::NotFound("no open link request for this device"))?;
    Ok(Json(own))
}

/// Answer a pending device's link request (linked devices only): the answer is kept on the
/// request and sent to that device as `LINK_ANSWER`.
#[utoipa::path(post, path = "/api/v1/users/@me/link-requests/{device_id}/answer", tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = u32, Path, description = "the pending device")),
    request_body = NewLinkAnswer,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "the calling device is not linked"),
        (status = 404, body = ApiErrorBody, description = "no open request of that device"),
        (status = 422, body = ApiErrorBody, description = "pake empty or over 64 bytes, sealed empty or over 16 KiB"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn answer_link_request(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<NewLinkAnswer>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let to = parse_device_id(&raw)?;
    check_size("pake", body.pake.as_slice(), PAKE_MAX_BYTES)?;
    check_size("sealed", body.sealed.as_slice(), SEALED_MAX_BYTES)?;
    state
        .store
        .answer_link_request(auth.user.id, auth.device_id, to, body.pake.as_slice(), body.sealed.as_slice(), now_ms())
        .await
        .map_err(link_error)?;
    tracing::info!(user = %auth.user.id, device = %to, by = %auth.device_id, "link request answered");
    let answer = LinkAnswer { from_device: auth.device_id, pake: body.pake, sealed: body.sealed };
    state.publish(BusEvent::new(Topic::device(auth.user.id, to), event_name::LINK_ANSWER, &answer)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Decline a pending device's link request: from a linked device, or the requesting device
/// itself (which may also say `@me`).
#[utoipa::path(delete, path = "/api/v1/users/@me/link-requests/{device_id}", tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = String, Path, description = "the pending device, or `@me`")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "neither linked nor the requesting device"),
        (status = 404, body = ApiErrorBody, description = "no open request of that device"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn decline_link_request(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let device = if raw == "@me" { auth.device_id } else { parse_device_id(&raw)? };
    delete_link_request(&state, &auth, device).await
}

/// `DELETE /api/v1/users/@me/link-requests/@me` (documented with `{device_id}`).
pub async fn withdraw_link_request(State(state): State<AppState>, auth: Authenticated) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let device = auth.device_id;
    delete_link_request(&state, &auth, device).await
}

async fn delete_link_request(state: &AppState, auth: &Authenticated, device: DeviceId) -> ApiResult<StatusCode> {
    if device != auth.device_id && !state.store.is_linked(auth.user.id, auth.device_id).await? {
        return Err(ApiError::Forbidden("only a linked device, or the requesting device, may decline a link request"));
    }
    if !state.store.delete_link_request(auth.user.id, device, now_ms()).await? {
        return Err(ApiError::NotFound("no open link request of this device"));
    }
    tracing::info!(user = %auth.user.id, device = %device, by = %auth.device_id, "link request deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn check_size(what: &str, bytes: &[u8], max: usize) -> ApiResult<()> {
    if bytes.is_empty() || bytes.len() > max {
        return Err(ApiError::Validation(format!("{what} must be 1 to {max} bytes")));
    }
    Ok(())
}

fn link_error(e: LinkError) -> ApiError {
    match e {
        LinkError::AlreadyLinked | LinkError::NoList | LinkError::NoKeys => ApiError::Conflict(e.to_string()),
        LinkError::NotLinked => ApiError::Forbidden("only a linked device may answer a link request"),
        LinkError::NotFound => ApiError::NotFound("no open link request of this device"),
        LinkError::Store(e) => e.into(),
    }
}
