//! `/api/v1/keys`: Signal protocol keys of devices. The server checks every key it is given
//! (type, length, and the identity key's signature over each signed prekey) and hands out each
//! one-time prekey once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::keys::{DeviceBundle, PreKey, PreKeyCount, PreKeysLow, SignedPreKey, UploadKeys, UserBundles};
use copains_client_core::{ApiErrorBody, UserId};
use libsignal_protocol::{kem, IdentityKey, PublicKey};

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::{StoredBundle, UploadError, VerifiedUpload};

/// One-time prekeys of each kind in one upload.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 100;
/// One-time prekeys of each kind a device may hold.
pub const MAX_PREKEYS_STORED: u32 = 500;
/// Below this many one-time prekeys of a kind, the device is told to upload more.
pub const PREKEYS_LOW_WATERMARK: u32 = 10;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keys", put(upload))
        .route("/api/v1/keys/count", get(count))
        .route("/api/v1/keys/{user_id}", get(bundles))
        .route("/api/v1/keys/{user_id}/{device_id}", get(device_bundle))
}

/// Upload the calling device's keys: the full set the first time, then more one-time prekeys
/// or a rotated signed prekey.
#[utoipa::path(put, path = "/api/v1/keys", tag = "keys", security(("bearer" = [])), request_body = UploadKeys,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody, description = "malformed body, or keys that fail verification (invalid_keys)"),
        (status = 401, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "identity key differs from the device's, or a one-time prekey id was already uploaded"),
        (status = 422, body = ApiErrorBody, description = "incomplete first upload, batch too large, too many stored"),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<UploadKeys>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let verified = verify_upload(&state, &auth, &body).await?;
    match state.store.upload_keys(auth.user.id, auth.device_id, &verified, MAX_PREKEYS_STORED, now_ms()).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(UploadError::Incomplete) => Err(ApiError::Validation(UploadError::Incomplete.to_string())),
        Err(e @ UploadError::TooMany(_)) => Err(ApiError::Validation(e.to_string())),
        Err(e @ (UploadError::IdentityChanged | UploadError::DuplicateId)) => Err(ApiError::Conflict(e.to_string())),
        Err(UploadError::Store(e)) => Err(e.into()),
    }
}

async fn verify_upload(state: &AppState, auth: &Authenticated, body: &UploadKeys) -> ApiResult<VerifiedUpload> {
    if body.pre_keys.len() > MAX_PREKEYS_PER_UPLOAD || body.pq_pre_keys.len() > MAX_PREKEYS_PER_UPLOAD {
        return Err(ApiError::Validation(format!("at most {MAX_PREKEYS_PER_UPLOAD} one-time prekeys of each kind per upload")));
    }
    if let Some(reg) = body.registration_id {
        if !(1..=16380).contains(&reg) {
            return Err(ApiError::Validation("registration_id must be in 1..=16380".into()));
        }
    }
    for ids in [body.pre_keys.iter().map(|k| k.key_id).collect::<Vec<_>>(), body.pq_pre_keys.iter().map(|k| k.key_id).collect()] {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != ids.len() {
            return Err(ApiError::InvalidKeys("duplicate one-time prekey id in the batch".into()));
        }
    }
    // Signatures are checked against the identity key in the body, or the one on record.
    let identity = match &body.identity_key {
        Some(raw) => IdentityKey::decode(raw.as_slice())
            .map_err(|_| ApiError::InvalidKeys("identity_key is not a serialized Curve25519 public key".into()))?,
        None => {
            let stored = state.store.identity_key_of(auth.user.id, auth.device_id).await?;
            let raw = match stored {
                Some(raw) => raw,
                None if body.signed_pre_key.is_none()
                    && body.pq_last_resort_pre_key.is_none()
                    && body.pq_pre_keys.is_empty()
                    && body.pre_keys.is_empty() =>
                {
                    return Err(ApiError::Validation("nothing to upload".into()));
                }
                None => return Err(ApiError::Validation(UploadError::Incomplete.to_string())),
            };
            IdentityKey::decode(&raw).map_err(|_| ApiError::internal(anyhow::anyhow!("stored identity key unreadable")))?
        }
    };
    let check_ec = |what: &str, k: &[u8]| -> ApiResult<()> {
        PublicKey::deserialize(k)
            .map(drop)
            .map_err(|_| ApiError::InvalidKeys(format!("{what}: not a serialized Curve25519 public key")))
    };
    let check_kyber = |what: &str, k: &[u8]| -> ApiResult<()> {
        let key = kem::PublicKey::deserialize(k)
            .map_err(|_| ApiError::InvalidKeys(format!("{what}: not a serialized Kyber public key")))?;
        if key.key_type() != kem::KeyType::Kyber1024 {
            return Err(ApiError::InvalidKeys(format!("{what}: must be a Kyber-1024 key")));
        }
        Ok(())
    };
    let check_sig = |what: &str, k: &SignedPreKey| -> ApiResult<()> {
        if !identity.public_key().verify_signature(k.public_key.as_slice(), k.signature.as_slice()) {
            return Err(ApiError::InvalidKeys(format!("{what}: signature does not verify with the identity key")));
        }
        Ok(())
    };
    let mut out = VerifiedUpload {
        identity_key: body.identity_key.as_ref().map(|k| k.0.clone()),
        registration_id: body.registration_id,
        ..VerifiedUpload::default()
    };
    if let Some(k) = &body.signed_pre_key {
        check_ec("signed_pre_key", k.public_key.as_slice())?;
        check_sig("signed_pre_key", k)?;
        out.signed = Some((k.key_id, k.public_key.0.clone(), k.signature.0.clone()));
    }
    if let Some(k) = &body.pq_last_resort_pre_key {
        check_kyber("pq_last_resort_pre_key", k.public_key.as_slice())?;
        check_sig("pq_last_resort_pre_key", k)?;
        out.kyber_last_resort = Some((k.key_id, k.public_key.0.clone(), k.signature.0.clone()));
    }
    for k in &body.pre_keys {
        check_ec("pre_keys", k.public_key.as_slice())?;
        out.pre_keys.push((k.key_id, k.public_key.0.clone()));
    }
    for k in &body.pq_pre_keys {
        check_kyber("pq_pre_keys", k.public_key.as_slice())?;
        check_sig("pq_pre_keys", k)?;
        out.pq_pre_keys.push((k.key_id, k.public_key.0.clone(), k.signature.0.clone()));
    }
    Ok(out)
}

/// One-time prekeys the calling device has left.
#[utoipa::path(get, path = "/api/v1/keys/count", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = PreKeyCount), (status = 401, body = ApiErrorBody)))]
pub async fn count(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<PreKeyCount>> {
    Ok(Json(state.store.prekey_counts(auth.user.id, auth.device_id).await?))
}

/// Prekey bundles of every device of a user; each fetch consumes one one-time EC and one
/// one-time Kyber prekey per device (the Kyber last-resort key when none is left).
#[utoipa::path(get, path = "/api/v1/keys/{user_id}", tag = "keys", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 200, body = UserBundles),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such user, or no device with keys"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn bundles(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<UserBundles>> {
    let user: UserId = raw.parse().map_err(|_| ApiError::Malformed("user id must be a decimal id".into()))?;
    fetch(&state, &auth, user, None).await
}

/// The prekey bundle of one device of a user (consumes its one-time prekeys as above).
#[utoipa::path(get, path = "/api/v1/keys/{user_id}/{device_id}", tag = "keys", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id"), ("device_id" = u32, Path, description = "device id")),
    responses(
        (status = 200, body = UserBundles),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn device_bundle(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_user, raw_device)): Path<(String, String)>,
) -> ApiResult<Json<UserBundles>> {
    let user: UserId = raw_user.parse().map_err(|_| ApiError::Malformed("user id must be a decimal id".into()))?;
    let device = raw_device
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=copains_client_core::DeviceId::MAX).contains(d))
        .map(copains_client_core::DeviceId)
        .ok_or_else(|| ApiError::Malformed("device id must be a number from 1 to 127".into()))?;
    fetch(&state, &auth, user, Some(device)).await
}

async fn fetch(
    state: &AppState,
    auth: &Authenticated,
    user: UserId,
    device: Option<copains_client_core::DeviceId>,
) -> ApiResult<Json<UserBundles>> {
    state.limiters.bundle_fetch(auth.user.id)?;
    if user == auth.user.id && device == Some(auth.device_id) {
        return Err(ApiError::Malformed("a device does not fetch its own bundle".into()));
    }
    // A device never needs a session with itself: leave it out before anything is taken, or
    // each fetch of its own user's bundles would use up one of its one-time prekeys.
    let own = (user == auth.user.id).then_some(auth.device_id);
    let taken = state.store.take_bundles(user, device, own).await?;
    if taken.is_empty() {
        return Err(ApiError::NotFound("no such user, or none of its devices has keys"));
    }
    let devices = hand_out(state, user, taken).await;
    Ok(Json(UserBundles { user_id: user, devices }))
}

/// Bundles taken for `user`'s devices, as the API gives them; `PREKEYS_LOW` goes to those that
/// run low.
pub(crate) async fn hand_out(state: &AppState, user: UserId, taken: Vec<StoredBundle>) -> Vec<DeviceBundle> {
    for b in
        taken.iter().filter(|b| b.remaining.pre_keys < PREKEYS_LOW_WATERMARK || b.remaining.pq_pre_keys < PREKEYS_LOW_WATERMARK)
    {
        let low = PreKeysLow { device_id: b.device_id, count: b.remaining };
        state.publish(BusEvent::new(Topic::device(user, b.device_id), event_name::PREKEYS_LOW, &low)).await;
    }
    taken
        .into_iter()
        .map(|b| DeviceBundle {
            device_id: b.device_id,
            registration_id: b.registration_id,
            identity_key: b.identity_key.into(),
            signed_pre_key: b.signed,
            pre_key: b.pre_key.map(|(key_id, k)| PreKey { key_id, public_key: k.into() }),
            pq_pre_key: b.pq,
        })
        .collect()
}
