//! `/api/v1/messages`: store-and-forward of encrypted envelopes, one per device.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::messages::{
    kind, DeviceMismatch, Envelope, OutgoingEnvelope, Queue, SendMessage, SendMismatch, SendReceipt, ENVELOPE_MAX_BYTES,
};
use copains_client_core::{ApiErrorBody, DeviceId, EnvelopeId};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::store::{EnqueueError, NewEnvelope, QueueLimits};
use crate::state::AppState;
use crate::store::now_ms;

/// Largest queue page.
pub const QUEUE_PAGE_MAX: usize = 500;
/// Content bytes past which a queue page stops early (`more` is then true): 500 envelopes of
/// the largest size would make a 40 MiB answer.
pub const QUEUE_PAGE_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/messages", post(send).get(queue)).route("/api/v1/messages/{envelope_id}", delete(ack))
}

/// Send one message: an envelope for every device of the recipient and for every other device
/// of the sender. Envelopes are queued per device and pushed to connected devices as
/// `ENVELOPE` gateway events.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", security(("bearer" = [])), request_body = SendMessage,
    responses(
        (status = 200, body = SendReceipt),
        (status = 400, body = ApiErrorBody, description = "malformed body or base64, unknown kind, to oneself"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such recipient"),
        (status = 409, body = ApiErrorBody, description = "device_mismatch: details lists missing, extra and stale devices; \
            queue_full: a target device holds too many undelivered envelopes (details lists them), nothing was queued"),
        (status = 413, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<SendMessage>,
) -> ApiResult<Json<SendReceipt>> {
    state.limiters.message(auth.user.id)?;
    if body.recipient == auth.user.id && !body.partial {
        return Err(ApiError::Malformed("recipient is yourself: put your own devices in sync_messages".into()));
    }
    if body.messages.is_empty() {
        return Err(ApiError::Malformed("messages must hold one envelope per recipient device".into()));
    }
    if body.partial && !body.sync_messages.is_empty() {
        return Err(ApiError::Malformed("a partial send has no sync_messages".into()));
    }
    for e in body.messages.iter().chain(&body.sync_messages) {
        if !kind::is_valid(e.kind) {
            return Err(ApiError::Malformed(format!("unknown envelope kind {}", e.kind)));
        }
        if e.content.as_slice().is_empty() {
            return Err(ApiError::Malformed("empty envelope content".into()));
        }
        if e.content.as_slice().len() > ENVELOPE_MAX_BYTES {
            return Err(ApiError::TooLarge(ENVELOPE_MAX_BYTES));
        }
    }
    let (mut recipient_devices, mut own_devices) = state.store.receiving_devices_of(body.recipient, auth.user.id).await?;
    if recipient_devices.is_empty() {
        if state.store.user(body.recipient).await?.is_none() {
            return Err(ApiError::NotFound("no such recipient"));
        }
        return Err(ApiError::NotFound("the recipient has no device that can receive messages"));
    }
    own_devices.retain(|(d, _)| *d != auth.device_id);
    if body.recipient == auth.user.id {
        recipient_devices.retain(|(d, _)| *d != auth.device_id);
    }
    let mut mismatch = SendMismatch {
        recipient: compare(&recipient_devices, &body.messages)?,
        own: compare(&own_devices, &body.sync_messages)?,
    };
    if body.partial {
        mismatch.recipient.missing_devices.clear();
        mismatch.own.missing_devices.clear();
    }
    if !mismatch.recipient.is_empty() || !mismatch.own.is_empty() {
        return Err(ApiError::DeviceMismatch(Box::new(mismatch)));
    }
    let now = now_ms();
    let envelopes: Vec<NewEnvelope> = body
        .messages
        .iter()
        .map(|e| (body.recipient, e))
        .chain(body.sync_messages.iter().map(|e| (auth.user.id, e)))
        .map(|(user, e)| NewEnvelope {
            id: EnvelopeId(state.ids.next_id()),
            user,
            device: e.device_id,
            kind: e.kind,
            content: e.content.0.clone(),
        })
        .collect();
    let limits =
        QueueLimits { max_envelopes: state.config.limits.queue_max_envelopes, max_bytes: state.config.limits.queue_max_bytes };
    match state.store.enqueue(auth.user.id, auth.device_id, &envelopes, limits, now).await {
        Ok(()) => {}
        Err(EnqueueError::DeviceGone) => {
            // A device disappeared between the check and the insert: tell the sender to look again.
            return Err(ApiError::Conflict("the recipient's devices changed; fetch them and retry".into()));
        }
        Err(EnqueueError::QueueFull(full)) => return Err(ApiError::QueueFull(full)),
        Err(EnqueueError::Store(e)) => return Err(e.into()),
    }
    for e in envelopes {
        let pushed = Envelope {
            id: e.id,
            sender: auth.user.id,
            sender_device: auth.device_id,
            kind: e.kind,
            content: e.content.into(),
            server_timestamp: now,
        };
        state.publish(BusEvent::new(Topic::device(e.user, e.device), event_name::ENVELOPE, &pushed)).await;
    }
    Ok(Json(SendReceipt { server_timestamp: now }))
}

/// Compares the envelopes of a send with the devices that exist.
fn compare(devices: &[(DeviceId, u32)], envelopes: &[OutgoingEnvelope]) -> ApiResult<DeviceMismatch> {
    let mut given: BTreeMap<DeviceId, u32> = BTreeMap::new();
    for e in envelopes {
        if given.insert(e.device_id, e.registration_id).is_some() {
            return Err(ApiError::Malformed(format!("two envelopes for device {}", e.device_id)));
        }
    }
    let existing: BTreeMap<DeviceId, u32> = devices.iter().copied().collect();
    Ok(DeviceMismatch {
        missing_devices: existing.keys().filter(|d| !given.contains_key(d)).copied().collect(),
        extra_devices: given.keys().filter(|d| !existing.contains_key(d)).copied().collect(),
        stale_devices: envelopes
            .iter()
            // A retry request goes out when the session is broken: its registration id is unknown.
            .filter(|e| e.kind != kind::PLAINTEXT)
            .filter(|e| existing.get(&e.device_id).is_some_and(|r| *r != e.registration_id))
            .map(|e| e.device_id)
            .collect(),
    })
}

/// Page size of `GET /api/v1/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct QueueParams {
    /// At most this many envelopes (1–500, default 100).
    pub limit: Option<usize>,
    /// Only envelopes after this one (the last id of the previous page).
    pub after: Option<String>,
}

/// The oldest envelopes queued for the calling device: up to `limit`, and no more than 4 MiB of
/// content (then `more` is true and the next page continues after the last one).
#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", security(("bearer" = [])), params(QueueParams),
    responses((status = 200, body = Queue), (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody)))]
pub async fn queue(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<QueueParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Queue>> {
    state.limiters.queue_read(auth.user.id)?;
    let Query(params) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=QUEUE_PAGE_MAX).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {QUEUE_PAGE_MAX}")));
    }
    let after = match params.after.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<EnvelopeId>().map_err(|_| ApiError::Malformed("after must be an envelope id".into()))?),
    };
    let (envelopes, more) = state.store.queue(auth.user.id, auth.device_id, after, limit, QUEUE_PAGE_MAX_BYTES).await?;
    Ok(Json(Queue { envelopes, more }))
}

/// Acknowledge (delete) an envelope of the calling device once it is processed.
#[utoipa::path(delete, path = "/api/v1/messages/{envelope_id}", tag = "messages", security(("bearer" = [])),
    params(("envelope_id" = String, Path, description = "envelope id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such envelope for this device (already acknowledged, or another's)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn ack(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let id: EnvelopeId = raw.parse().map_err(|_| ApiError::Malformed("envelope id must be a decimal id".into()))?;
    if state.store.ack(auth.user.id, auth.device_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such envelope for this device"))
    }
}
