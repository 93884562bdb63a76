//! `/api/v1/messages`: store-and-forward of encrypted envelopes, one per device.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::messages::{kind, Envelope, OutgoingEnvelope, Queue, SendMessage, SendReceipt, ENVELOPE_MAX_BYTES};
use copains_client_core::{ApiErrorBody, EnvelopeId};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::{EnqueueError, NewEnvelope, QueueLimits, Send};

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
        (status = 403, body = ApiErrorBody, description = "a block stands between sender and recipient"),
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
    for list in [&body.messages, &body.sync_messages] {
        let mut seen = BTreeSet::new();
        for e in list {
            if !kind::is_valid(e.kind) {
                return Err(ApiError::Malformed(format!("unknown envelope kind {}", e.kind)));
            }
            if e.content.as_slice().is_empty() {
                return Err(ApiError::Malformed("empty envelope content".into()));
            }
            if e.content.as_slice().len() > ENVELOPE_MAX_BYTES {
                return Err(ApiError::TooLarge(ENVELOPE_MAX_BYTES));
            }
            if !seen.insert(e.device_id) {
                return Err(ApiError::Malformed(format!("two envelopes for device {}", e.device_id)));
            }
        }
    }
    if body.recipient != auth.user.id {
        crate::routes::social::not_blocked(&state, auth.user.id, body.recipient).await?;
    }
    let now = now_ms();
    let envelope = |user, e: OutgoingEnvelope| NewEnvelope {
        id: EnvelopeId(state.ids.next_id()),
        user,
        device: e.device_id,
        kind: e.kind,
        content: e.content.0,
        registration_id: e.registration_id,
    };
    let send = Send {
        sender: auth.user.id,
        sender_device: auth.device_id,
        recipient: body.recipient,
        partial: body.partial,
        messages: body.messages.into_iter().map(|e| envelope(body.recipient, e)).collect(),
        sync_messages: body.sync_messages.into_iter().map(|e| envelope(auth.user.id, e)).collect(),
    };
    let limits =
        QueueLimits { max_envelopes: state.config.limits.queue_max_envelopes, max_bytes: state.config.limits.queue_max_bytes };
    let send = match state.store.send(send, limits, now).await {
        Ok(send) => send,
        Err(EnqueueError::NoDevices) => {
            if state.store.user(body.recipient).await?.is_none() {
                return Err(ApiError::NotFound("no such recipient"));
            }
            return Err(ApiError::NotFound("the recipient has no device that can receive messages"));
        }
        Err(EnqueueError::Mismatch(mismatch)) => return Err(ApiError::DeviceMismatch(mismatch)),
        Err(EnqueueError::DeviceGone) => {
            // A device disappeared between the check and the insert: tell the sender to look again.
            return Err(ApiError::Conflict("the recipient's devices changed; fetch them and retry".into()));
        }
        Err(EnqueueError::QueueFull(full)) => return Err(ApiError::QueueFull(full)),
        Err(EnqueueError::Store(e)) => return Err(e.into()),
        Err(e @ EnqueueError::Misaddressed) => return Err(ApiError::internal(e)),
    };
    for e in send.messages.into_iter().chain(send.sync_messages) {
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

/// Page size of `GET /api/v1/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueParams {
    /// At most this many envelopes (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
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
