//! `/api/v1/channels/{channel_id}/…`: end-to-end encrypted channel messages (server channels
//! and group DMs) — recipients, send, history, edit, delete, reactions and pins.
//!
//! A message is one sender-key ciphertext stored once; the server never parses it. Every write
//! of a ciphertext names the view of the channel's recipient devices it was encrypted for and
//! is refused with 409 `view_stale` (details: the current recipients) when the view moved on.
//! Key distributions ride the write and are queued as envelopes in its transaction; they are
//! pushed to their devices before the message event goes to the readers.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use copains_client_core::channel_messages::{
    ChannelMessage, ChannelRecipients, ClaimBundles, ClaimedBundles, DeviceLists, Distribution, EditChannelMessage,
    MemberDeviceList, Mentions, MessageDeleted, MessagesDeleted, NewReaction, PinUpdate, Reaction, ReactionRemoved,
    ReadDeviceLists, SendChannelMessage, SendSenderKeys, SenderKeysSent, CIPHERTEXT_MAX_BYTES, CLAIM_MAX, DISTRIBUTIONS_MAX,
    HISTORY_PAGE_MAX, MENTION_ROLES_MAX, MENTION_USERS_MAX, MESSAGES_DELETED_MAX, PINS_MAX,
};
use copains_client_core::gateway::event_name;
use copains_client_core::keys::UserBundles;
use copains_client_core::messages::{kind, Envelope, ENVELOPE_MAX_BYTES};
use copains_client_core::servers::{AuditAction, ChannelKind, Permissions};
use copains_client_core::{ApiErrorBody, ChannelId, DeviceId, EnvelopeId, MessageId, ReactionId, UserId};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::channel_messages::{ChannelView, HistoryQuery, NewChannelMessage, PinOutcome, Reader};
use crate::store::{
    now_ms, AuditRecord, ChannelWrite, ChannelWriteError, ChannelWriteKind, NewEnvelope, QueueLimits, StoredBundle,
};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/channels/{channel_id}/recipients", get(recipients))
        .route("/api/v1/channels/{channel_id}/messages", post(send).get(history))
        .route("/api/v1/channels/{channel_id}/sender-keys", post(send_sender_keys))
        .route("/api/v1/channels/{channel_id}/bundles", post(claim_bundles))
        .route("/api/v1/channels/{channel_id}/device-lists", post(device_lists))
        .route("/api/v1/channels/{channel_id}/messages/{message_id}", get(message).patch(edit).delete(remove))
        .route("/api/v1/channels/{channel_id}/messages/{message_id}/reactions", post(react))
        .route("/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{reaction_id}", delete(unreact))
        .route("/api/v1/channels/{channel_id}/pins", get(pins))
        .route("/api/v1/channels/{channel_id}/pins/{message_id}", put(pin).delete(unpin))
}

const NO_CHANNEL: &str = "no such channel";
const NO_MESSAGE: &str = "no such message";
/// The answer to a timed-out member's send, edit, key distribution or reaction (the member's
/// `timeout_until` says until when).
const TIMED_OUT: &str = "you are timed out in this server: no sending, editing or reacting until the timeout ends";

fn parse_id<T: FromStr>(raw: &str, what: &str) -> ApiResult<T> {
    raw.parse().map_err(|_| ApiError::Malformed(format!("{what} must be a decimal id")))
}

/// The channel now, and the caller's standing in it: 404 if it does not exist or they may not
/// read it (the same answer).
async fn current(state: &AppState, channel: ChannelId, user: UserId) -> ApiResult<(Arc<ChannelView>, Reader)> {
    let view = state.store.channel_view(channel).await?.ok_or(ApiError::NotFound(NO_CHANNEL))?;
    let reader = view.reader(user).ok_or(ApiError::NotFound(NO_CHANNEL))?;
    Ok((view, reader))
}

/// 409 `view_stale` with the channel's current recipients (404 if it is gone or no longer
/// readable by `user`).
async fn stale(state: &AppState, channel: ChannelId, user: UserId) -> ApiError {
    match current(state, channel, user).await {
        Ok((view, _)) => ApiError::ViewStale(Box::new(view.recipients.clone())),
        Err(e) => e,
    }
}

fn check_ciphertext(ciphertext: &[u8]) -> ApiResult<()> {
    if ciphertext.is_empty() {
        return Err(ApiError::Malformed("empty ciphertext".into()));
    }
    if ciphertext.len() > CIPHERTEXT_MAX_BYTES {
        return Err(ApiError::TooLarge(CIPHERTEXT_MAX_BYTES));
    }
    Ok(())
}

/// Checks the shape of distributions (before any database read).
fn check_distributions(distributions: &[Distribution], sender: UserId, sender_device: DeviceId) -> ApiResult<()> {
    if distributions.len() > DISTRIBUTIONS_MAX {
        return Err(ApiError::Malformed(format!("at most {DISTRIBUTIONS_MAX} distributions")));
    }
    let mut seen = BTreeSet::new();
    for d in distributions {
        if !kind::is_valid(d.kind) || d.kind == kind::PLAINTEXT {
            return Err(ApiError::Malformed(format!("envelope kind {} cannot carry a distribution", d.kind)));
        }
        if d.content.as_slice().is_empty() {
            return Err(ApiError::Malformed("empty distribution content".into()));
        }
        if d.content.as_slice().len() > ENVELOPE_MAX_BYTES {
            return Err(ApiError::TooLarge(ENVELOPE_MAX_BYTES));
        }
        if d.user_id == sender && d.device_id == sender_device {
            return Err(ApiError::Malformed("a distribution to the sending device itself".into()));
        }
        if !seen.insert((d.user_id, d.device_id)) {
            return Err(ApiError::Malformed(format!("two distributions for device {} of user {}", d.device_id, d.user_id)));
        }
    }
    Ok(())
}

/// Whether a write made on `view` with `distributions` still matches the channel: the view is
/// current (as far as this node knows; the transaction checks again) and every distribution
/// goes to a recipient device with its registration id.
fn matches_view(view: &ChannelView, given: i64, distributions: &[Distribution]) -> bool {
    view.view == given && distributions.iter().all(|d| view.registration_id(d.user_id, d.device_id) == Some(d.registration_id))
}

fn envelopes_of(state: &AppState, distributions: Vec<Distribution>) -> Vec<NewEnvelope> {
    distributions
        .into_iter()
        .map(|d| NewEnvelope {
            id: EnvelopeId(state.ids.next_id()),
            user: d.user_id,
            device: d.device_id,
            kind: d.kind,
            content: d.content.0,
            registration_id: d.registration_id,
        })
        .collect()
}

/// Stores a write; maps its refusals to API errors.
async fn write(state: &AppState, write: ChannelWrite, not_found: &'static str) -> ApiResult<ChannelWrite> {
    let limits =
        QueueLimits { max_envelopes: state.config.limits.queue_max_envelopes, max_bytes: state.config.limits.queue_max_bytes };
    let (channel, user) = (write.channel, write.sender);
    match state.store.write_channel(write, limits).await {
        Ok(done) => Ok(done),
        Err(ChannelWriteError::ViewStale | ChannelWriteError::DeviceGone) => Err(stale(state, channel, user).await),
        Err(ChannelWriteError::ChannelGone) => Err(ApiError::NotFound(NO_CHANNEL)),
        Err(ChannelWriteError::MessageGone) => Err(ApiError::NotFound(not_found)),
        Err(ChannelWriteError::TooManyReactions) => Err(ApiError::Conflict(format!(
            "this message has the maximum of {} reactions",
            copains_client_core::channel_messages::REACTIONS_PER_MESSAGE_MAX
        ))),
        Err(ChannelWriteError::QueueFull(full)) => Err(ApiError::QueueFull(full)),
        Err(ChannelWriteError::Store(e)) => Err(e.into()),
    }
}

/// Pushes a committed write's distributions to their devices (before its own event).
async fn push_distributions(state: &AppState, write: &ChannelWrite) {
    if write.distributions.is_empty() {
        return;
    }
    let mut events = Vec::with_capacity(write.distributions.len());
    for e in &write.distributions {
        let pushed = Envelope {
            id: e.id,
            sender: write.sender,
            sender_device: write.sender_device,
            kind: e.kind,
            content: e.content.clone().into(),
            server_timestamp: write.now,
        };
        match BusEvent::new(Topic::device(e.user, e.device), event_name::ENVELOPE, &pushed) {
            Ok(event) => events.push(event),
            Err(err) => tracing::warn!(error = %err, "event not published"),
        }
    }
    publish_all(state, events).await;
}

async fn publish_all(state: &AppState, events: Vec<BusEvent>) {
    if let Err(e) = state.bus.publish_all(events).await {
        tracing::warn!(error = %e, "event not published");
    }
}

/// Publishes one event to every reader of `view` who may read a message created at
/// `created_at`, serialized once.
/// `MESSAGE_DELETE` for messages already deleted (an account's, deleted with it), to each
/// channel's readers now.
pub(crate) async fn announce_deleted(state: &AppState, messages: &[(ChannelId, MessageId, i64)]) {
    if let [(channel, id, created_at)] = *messages {
        // One message: the usual event.
        if let Some(view) = view_to_announce(state, channel).await {
            to_readers(state, &view, created_at, event_name::MESSAGE_DELETE, &MessageDeleted { id, channel_id: channel }).await;
        }
        return;
    }
    // Several: per channel, each reader is told at once of the ones it could read.
    let mut by_channel: std::collections::BTreeMap<ChannelId, Vec<(MessageId, i64)>> = std::collections::BTreeMap::new();
    for &(channel, id, created_at) in messages {
        by_channel.entry(channel).or_default().push((id, created_at));
    }
    for (channel, gone) in by_channel {
        let Some(view) = view_to_announce(state, channel).await else { continue };
        let mut per_reader: std::collections::HashMap<&Topic, Vec<MessageId>> = std::collections::HashMap::new();
        for &(id, created_at) in &gone {
            for topic in view.topics_for(created_at) {
                per_reader.entry(topic).or_default().push(id);
            }
        }
        let mut events = Vec::new();
        for (topic, ids) in per_reader {
            for chunk in ids.chunks(MESSAGES_DELETED_MAX) {
                let payload = MessagesDeleted { ids: chunk.to_vec(), channel_id: channel };
                match BusEvent::new(topic.clone(), event_name::MESSAGE_DELETE_BULK, &payload) {
                    Ok(event) => events.push(event),
                    Err(e) => tracing::warn!(error = %e, "event not published"),
                }
            }
        }
        publish_all(state, events).await;
    }
}

async fn view_to_announce(state: &AppState, channel: ChannelId) -> Option<Arc<ChannelView>> {
    state.store.channel_view(channel).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read a channel to announce deleted messages");
        None
    })
}

async fn to_readers(state: &AppState, view: &ChannelView, created_at: i64, name: &str, payload: &impl serde::Serialize) {
    match BusEvent::fan_out(view.topics_for(created_at), name, payload) {
        Ok(events) => publish_all(state, events).await,
        Err(e) => tracing::warn!(error = %e, "event not published"),
    }
}

/// Every device that may read the channel now, with the view number that sends must name.
#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/recipients", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    responses(
        (status = 200, body = ChannelRecipients),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not read it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn recipients(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
) -> ApiResult<Json<ChannelRecipients>> {
    state.limiters.queue_read(auth.user.id)?;
    let channel: ChannelId = parse_id(&channel, "channel id")?;
    let (view, _) = current(&state, channel, auth.user.id).await?;
    Ok(Json(view.recipients.clone()))
}

/// Sends a message: one sender-key ciphertext, stored once, for the view of the recipient
/// devices the sender encrypted for, with key distributions for devices that lack the
/// sender's key (queued as envelopes in the same transaction). The distributions are pushed
/// as `ENVELOPE` events, then `MESSAGE_CREATE` goes to every reader.
#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/messages", operation_id = "send_channel_message", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    request_body = SendChannelMessage,
    responses(
        (status = 201, body = ChannelMessage),
        (status = 400, body = ApiErrorBody, description = "malformed body or base64, empty ciphertext, bad distribution, a category, \
            too many mentions, a mentioned role not of this server"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no SEND_MESSAGES permission in the channel, or mentions of @everyone \
            or roles without MENTION_EVERYONE"),
        (status = 404, body = ApiErrorBody, description = "no such channel (or not readable by the caller), or no such thread"),
        (status = 409, body = ApiErrorBody, description = "view_stale: the view is not the current one or a distribution does not go to a \
            current recipient device with its registration id; details are the current ChannelRecipients. \
            queue_full: a distribution's device queue is full. Nothing was stored"),
        (status = 413, body = ApiErrorBody, description = "ciphertext or a distribution too large"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn send(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
    ApiJson(body): ApiJson<SendChannelMessage>,
) -> ApiResult<(StatusCode, Json<ChannelMessage>)> {
    state.limiters.message(auth.user.id)?;
    let channel: ChannelId = parse_id(&channel, "channel id")?;
    let user = auth.user.id;
    check_ciphertext(body.ciphertext.as_slice())?;
    check_distributions(&body.distributions, user, auth.device_id)?;
    let view = state.store.channel_view_at(channel, body.view).await?.ok_or(ApiError::NotFound(NO_CHANNEL))?;
    let reader = view.reader(user).ok_or(ApiError::NotFound(NO_CHANNEL))?;
    if view.kind == ChannelKind::Category {
        return Err(ApiError::Malformed("a category holds no messages".into()));
    }
    if !reader.permissions().contains(Permissions::SEND_MESSAGES) {
        if reader.timed_out() {
            return Err(ApiError::Forbidden(TIMED_OUT));
        }
        return Err(ApiError::Forbidden("you may not send messages in this channel"));
    }
    if !matches_view(&view, body.view, &body.distributions) {
        return Err(ApiError::ViewStale(Box::new(view.recipients.clone())));
    }
    if let Some(thread) = body.thread_id {
        match state.store.channel_message(channel, thread, reader.joined_at).await? {
            Some(root) if root.thread_id.is_none() => {}
            _ => return Err(ApiError::NotFound("no such thread")),
        }
    }
    let now = now_ms();
    let mentions = body.mentions.normalized();
    let mentioned = mentioned(&state, &view, reader.permissions(), user, &mentions, now).await?;
    let message = NewChannelMessage {
        id: MessageId(state.ids.next_id()),
        author: user,
        author_device: auth.device_id,
        ciphertext: body.ciphertext.0,
        thread_id: body.thread_id,
        mentions: mentions.clone(),
        mentioned,
    };
    let done = write(
        &state,
        ChannelWrite {
            channel,
            view: body.view,
            sender: user,
            sender_device: auth.device_id,
            kind: ChannelWriteKind::Create(message),
            distributions: envelopes_of(&state, body.distributions),
            now,
        },
        "no such thread",
    )
    .await?;
    push_distributions(&state, &done).await;
    let ChannelWriteKind::Create(m) = done.kind else { return Err(ApiError::internal(anyhow::anyhow!("write kind changed"))) };
    let message = ChannelMessage {
        id: m.id,
        channel_id: channel,
        author_id: user,
        author_device: auth.device_id,
        ciphertext: m.ciphertext.into(),
        created_at: now,
        edited_at: None,
        thread_id: m.thread_id,
        pinned: false,
        thread_count: 0,
        mentions,
        reactions: Vec::new(),
    };
    // The view the message was checked against in its transaction: exactly its readers.
    to_readers(&state, &view, now, event_name::MESSAGE_CREATE, &message).await;
    Ok((StatusCode::CREATED, Json(message)))
}

/// The readers a message's declared mentions notify (its author aside), once the declaration is
/// checked: within the bounds, `@everyone` and roles only with `MENTION_EVERYONE` in a server,
/// roles of the channel's server only. Users who may not read a message created at
/// `created_at`, and those who blocked its author, are not notified.
async fn mentioned(
    state: &AppState,
    view: &ChannelView,
    permissions: Permissions,
    author: UserId,
    mentions: &Mentions,
    created_at: i64,
) -> ApiResult<Vec<UserId>> {
    if mentions.users.len() > MENTION_USERS_MAX || mentions.roles.len() > MENTION_ROLES_MAX {
        return Err(ApiError::Malformed(format!(
            "a message mentions at most {MENTION_USERS_MAX} users and {MENTION_ROLES_MAX} roles"
        )));
    }
    let readers: BTreeSet<UserId> = view.readers_at(created_at).collect();
    let mut notified = BTreeSet::new();
    if let Some(server) = view.server_id {
        if (mentions.everyone || !mentions.roles.is_empty()) && !permissions.contains(Permissions::MENTION_EVERYONE) {
            return Err(ApiError::Forbidden("you may not mention @everyone or roles in this channel"));
        }
        if !mentions.roles.is_empty() {
            let members = state
                .store
                .role_members(server, &mentions.roles)
                .await?
                .ok_or_else(|| ApiError::Malformed("a mentioned role is not a role of this server".into()))?;
            notified.extend(members.into_iter().filter(|u| readers.contains(u)));
        }
    } else if !mentions.roles.is_empty() {
        return Err(ApiError::Malformed("a group DM has no roles to mention".into()));
    }
    if mentions.everyone {
        notified.extend(readers.iter().copied());
    }
    notified.extend(mentions.users.iter().copied().filter(|u| readers.contains(u)));
    notified.remove(&author);
    if !notified.is_empty() {
        for blocker in state.store.blockers_of(author).await? {
            notified.remove(&blocker);
        }
    }
    Ok(notified.into_iter().collect())
}

/// Key distributions alone, for the view they were made on: what does not fit in the request
/// of the write they precede. Checked and queued as a send's distributions are; nothing is
/// stored but the envelopes.
#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/sender-keys", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    request_body = SendSenderKeys,
    responses(
        (status = 200, body = SenderKeysSent),
        (status = 400, body = ApiErrorBody, description = "malformed body, no distribution, a bad distribution, a category"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not read it"),
        (status = 409, body = ApiErrorBody, description = "view_stale (details: the current ChannelRecipients) or queue_full; nothing was queued"),
        (status = 413, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn send_sender_keys(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
    ApiJson(body): ApiJson<SendSenderKeys>,
) -> ApiResult<Json<SenderKeysSent>> {
    state.limiters.message(auth.user.id)?;
    let channel: ChannelId = parse_id(&channel, "channel id")?;
    let user = auth.user.id;
    if body.distributions.is_empty() {
        return Err(ApiError::Malformed("no distribution".into()));
    }
    check_distributions(&body.distributions, user, auth.device_id)?;
    let view = state.store.channel_view_at(channel, body.view).await?.ok_or(ApiError::NotFound(NO_CHANNEL))?;
    let reader = view.reader(user).ok_or(ApiError::NotFound(NO_CHANNEL))?;
    if view.kind == ChannelKind::Category {
        return Err(ApiError::Malformed("a category holds no messages".into()));
    }
    // Nothing to distribute keys for while nothing may be sent (and no channel to others).
    if reader.timed_out() {
        return Err(ApiError::Forbidden(TIMED_OUT));
    }
    if !matches_view(&view, body.view, &body.distributions) {
        return Err(ApiError::ViewStale(Box::new(view.recipients.clone())));
    }
    let done = write(
        &state,
        ChannelWrite {
            channel,
            view: body.view,
            sender: user,
            sender_device: auth.device_id,
            kind: ChannelWriteKind::Keys,
            distributions: envelopes_of(&state, body.distributions),
            now: now_ms(),
        },
        NO_CHANNEL,
    )
    .await?;
    push_distributions(&state, &done).await;
    Ok(Json(SenderKeysSent { sent_at: done.now }))
}

/// The channel of a batch request as it stands (404 if the caller may not read it), once the
/// batch holds 1 to [`CLAIM_MAX`] `what`.
async fn batch_view(state: &AppState, auth: &Authenticated, raw: &str, len: usize, what: &str) -> ApiResult<Arc<ChannelView>> {
    let channel: ChannelId = parse_id(raw, "channel id")?;
    if len == 0 || len > CLAIM_MAX {
        return Err(ApiError::Malformed(format!("from 1 to {CLAIM_MAX} {what}")));
    }
    Ok(current(state, channel, auth.user.id).await?.0)
}

/// Claims prekey bundles for recipient devices of the channel, to start the pairwise sessions
/// a key distribution rides: one request for up to 1,000 devices where `GET
/// /api/v1/keys/{user_id}` serves one user. Each device named that is a recipient of the
/// channel now (and not the caller's own) gets one bundle, taking one one-time prekey of each
/// kind; the others are left out. Rate-limited by devices claimed (`channel_key_claims_*`).
#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/bundles", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    request_body = ClaimBundles,
    responses(
        (status = 200, body = ClaimedBundles),
        (status = 400, body = ApiErrorBody, description = "malformed body, no device or more than 1,000"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not read it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn claim_bundles(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
    ApiJson(body): ApiJson<ClaimBundles>,
) -> ApiResult<Json<ClaimedBundles>> {
    let view = batch_view(&state, &auth, &channel, body.devices.len(), "devices").await?;
    let wanted: Vec<(UserId, DeviceId)> = body
        .devices
        .iter()
        .map(|d| (d.user_id, d.device_id))
        .filter(|&(u, d)| (u, d) != (auth.user.id, auth.device_id) && view.registration_id(u, d).is_some())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if wanted.is_empty() {
        return Ok(Json(ClaimedBundles { users: Vec::new() }));
    }
    state.limiters.channel_keys(auth.user.id, wanted.len())?;
    let taken = state.store.take_device_bundles(&wanted).await?;
    let mut by_user: BTreeMap<UserId, Vec<StoredBundle>> = BTreeMap::new();
    for (user, bundle) in taken {
        by_user.entry(user).or_default().push(bundle);
    }
    let mut users = Vec::with_capacity(by_user.len());
    for (user_id, bundles) in by_user {
        users.push(UserBundles { user_id, devices: super::keys::hand_out(&state, user_id, bundles).await });
    }
    Ok(Json(ClaimedBundles { users }))
}

/// The signed device lists of readers of the channel (up to 1,000 users in one request; the
/// ones who do not read it or have no list are left out). The caller checks each list's
/// signature against the account key it trusts, as with `GET /api/v1/users/{id}/device-list`.
#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/device-lists", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    request_body = ReadDeviceLists,
    responses(
        (status = 200, body = DeviceLists),
        (status = 400, body = ApiErrorBody, description = "malformed body, no user or more than 1,000"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not read it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn device_lists(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
    ApiJson(body): ApiJson<ReadDeviceLists>,
) -> ApiResult<Json<DeviceLists>> {
    let view = batch_view(&state, &auth, &channel, body.users.len(), "users").await?;
    let users: Vec<UserId> =
        body.users.iter().copied().filter(|u| view.reader(*u).is_some()).collect::<BTreeSet<_>>().into_iter().collect();
    state.limiters.channel_keys(auth.user.id, users.len().div_ceil(10))?;
    let lists = state.store.device_lists(&users).await?;
    Ok(Json(DeviceLists {
        lists: lists.into_iter().map(|(user_id, stored)| MemberDeviceList { user_id, signed: stored.signed() }).collect(),
    }))
}

/// Which page of history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// At most this many messages (1–100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// Only messages older than this one.
    pub before: Option<String>,
    /// Only messages newer than this one (alone: the page right after it).
    pub after: Option<String>,
    /// The page around this message: `limit / 2` older ones, it, and newer ones (not with
    /// `before` or `after`).
    pub around: Option<String>,
    /// The messages of this thread (the id of its first message); otherwise the channel's
    /// top-level messages.
    pub thread_id: Option<String>,
}

/// A page of history, newest first, with reactions: only messages created since the caller
/// joined the server (or the group DM).
#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/messages", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), HistoryParams),
    responses(
        (status = 200, body = [ChannelMessage]),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel (or not readable by the caller), or no such thread"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn history(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<ChannelMessage>>> {
    state.limiters.queue_read(auth.user.id)?;
    let channel: ChannelId = parse_id(&channel, "channel id")?;
    let Query(params) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=HISTORY_PAGE_MAX).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {HISTORY_PAGE_MAX}")));
    }
    let id = |raw: &Option<String>, what: &str| raw.as_deref().map(|r| parse_id::<MessageId>(r, what)).transpose();
    let before = id(&params.before, "before")?;
    let after = id(&params.after, "after")?;
    let around = id(&params.around, "around")?;
    let thread = id(&params.thread_id, "thread_id")?;
    if around.is_some() && (before.is_some() || after.is_some()) {
        return Err(ApiError::Malformed("around goes alone, without before or after".into()));
    }
    let (_, reader) = current(&state, channel, auth.user.id).await?;
    if let Some(thread) = thread {
        match state.store.channel_message(channel, thread, reader.joined_at).await? {
            Some(root) if root.thread_id.is_none() => {}
            _ => return Err(ApiError::NotFound("no such thread")),
        }
    }
    let query = HistoryQuery { limit, before, after, around, thread, since: reader.joined_at };
    Ok(Json(state.store.channel_messages(channel, query).await?))
}

fn message_params(raw: (String, String)) -> ApiResult<(ChannelId, MessageId)> {
    Ok((parse_id(&raw.0, "channel id")?, parse_id(&raw.1, "message id")?))
}

/// One message (in the channel or in one of its threads), with its reactions.
#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/messages/{message_id}", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id")),
    responses(
        (status = 200, body = ChannelMessage),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel (or not readable by the caller), or no such message in it \
            since the caller joined"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn message(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<(String, String)>,
) -> ApiResult<Json<ChannelMessage>> {
    state.limiters.queue_read(auth.user.id)?;
    let (channel, id) = message_params(raw)?;
    let (_, reader) = current(&state, channel, auth.user.id).await?;
    let m = state.store.channel_message(channel, id, reader.joined_at).await?.ok_or(ApiError::NotFound(NO_MESSAGE))?;
    Ok(Json(m))
}

/// Replaces the ciphertext of one's own message (encrypted with the editing device's sender
/// key, which becomes `author_device`); same view and distribution rules as a send.
/// `MESSAGE_UPDATE` goes to the readers.
#[utoipa::path(patch, path = "/api/v1/channels/{channel_id}/messages/{message_id}", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id")),
    request_body = EditChannelMessage,
    responses(
        (status = 200, body = ChannelMessage),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not the author"),
        (status = 404, body = ApiErrorBody, description = "no such channel or message (for the caller)"),
        (status = 409, body = ApiErrorBody, description = "view_stale (details: current ChannelRecipients) or queue_full"),
        (status = 413, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn edit(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<(String, String)>,
    ApiJson(body): ApiJson<EditChannelMessage>,
) -> ApiResult<Json<ChannelMessage>> {
    state.limiters.message(auth.user.id)?;
    let (channel, id) = message_params(raw)?;
    let user = auth.user.id;
    check_ciphertext(body.ciphertext.as_slice())?;
    check_distributions(&body.distributions, user, auth.device_id)?;
    let view = state.store.channel_view_at(channel, body.view).await?.ok_or(ApiError::NotFound(NO_CHANNEL))?;
    let reader = view.reader(user).ok_or(ApiError::NotFound(NO_CHANNEL))?;
    let message = state.store.channel_message(channel, id, reader.joined_at).await?.ok_or(ApiError::NotFound(NO_MESSAGE))?;
    if message.author_id != user {
        return Err(ApiError::Forbidden("only its author may edit a message"));
    }
    // A new text for an old message is a message: not while timed out.
    if reader.timed_out() {
        return Err(ApiError::Forbidden(TIMED_OUT));
    }
    if !matches_view(&view, body.view, &body.distributions) {
        return Err(ApiError::ViewStale(Box::new(view.recipients.clone())));
    }
    let now = now_ms();
    let mentions = body.mentions.normalized();
    // Those who may read the message: who joined by the time it was sent.
    let mentioned = mentioned(&state, &view, reader.permissions(), user, &mentions, message.created_at).await?;
    let done = write(
        &state,
        ChannelWrite {
            channel,
            view: body.view,
            sender: user,
            sender_device: auth.device_id,
            kind: ChannelWriteKind::Edit {
                id,
                author: user,
                device: auth.device_id,
                ciphertext: body.ciphertext.0,
                mentions: mentions.clone(),
                mentioned,
            },
            distributions: envelopes_of(&state, body.distributions),
            now,
        },
        NO_MESSAGE,
    )
    .await?;
    push_distributions(&state, &done).await;
    let ChannelWriteKind::Edit { ciphertext, .. } = done.kind else {
        return Err(ApiError::internal(anyhow::anyhow!("write kind changed")));
    };
    let edited = ChannelMessage {
        ciphertext: ciphertext.into(),
        author_device: auth.device_id,
        edited_at: Some(now),
        mentions,
        ..message
    };
    to_readers(&state, &view, edited.created_at, event_name::MESSAGE_UPDATE, &edited).await;
    Ok(Json(edited))
}

/// Deletes a message (its author, or a member with MANAGE_MESSAGES), with its reactions and,
/// for the first message of a thread, the thread's messages. `MESSAGE_DELETE` goes to the
/// readers.
#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/messages/{message_id}", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not the author and no MANAGE_MESSAGES"),
        (status = 404, body = ApiErrorBody, description = "no such channel or message (for the caller)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let (channel, id) = message_params(raw)?;
    let (view, reader) = current(&state, channel, auth.user.id).await?;
    let message = state.store.channel_message(channel, id, reader.joined_at).await?.ok_or(ApiError::NotFound(NO_MESSAGE))?;
    if message.author_id != auth.user.id && !reader.permissions().contains(Permissions::MANAGE_MESSAGES) {
        return Err(ApiError::Forbidden("only its author or a member with MANAGE_MESSAGES may delete a message"));
    }
    if !state.store.delete_channel_message(channel, id).await? {
        return Err(ApiError::NotFound(NO_MESSAGE));
    }
    if let (Some(server), true) = (view.server_id, message.author_id != auth.user.id) {
        let details = serde_json::json!({"channel_id": channel, "author_id": message.author_id});
        audit_after(&state, AuditRecord::new(server, auth.user.id, AuditAction::MessageDelete).target(id).details(details)).await;
    }
    to_readers(&state, &view, message.created_at, event_name::MESSAGE_DELETE, &MessageDeleted { id, channel_id: channel }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a reaction (the emoji is inside the ciphertext; ADD_REACTIONS); same view and
/// distribution rules as a send. `REACTION_ADD` goes to the readers.
#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/messages/{message_id}/reactions", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id")),
    request_body = NewReaction,
    responses(
        (status = 201, body = Reaction),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no ADD_REACTIONS permission"),
        (status = 404, body = ApiErrorBody, description = "no such channel or message (deleted, or before the caller joined)"),
        (status = 409, body = ApiErrorBody, description = "view_stale (details: current ChannelRecipients), queue_full, or the message \
            has the maximum number of reactions"),
        (status = 413, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn react(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<(String, String)>,
    ApiJson(body): ApiJson<NewReaction>,
) -> ApiResult<(StatusCode, Json<Reaction>)> {
    state.limiters.user_write(auth.user.id)?;
    let (channel, message_id) = message_params(raw)?;
    let user = auth.user.id;
    check_ciphertext(body.ciphertext.as_slice())?;
    check_distributions(&body.distributions, user, auth.device_id)?;
    let view = state.store.channel_view_at(channel, body.view).await?.ok_or(ApiError::NotFound(NO_CHANNEL))?;
    let reader = view.reader(user).ok_or(ApiError::NotFound(NO_CHANNEL))?;
    if !reader.permissions().contains(Permissions::ADD_REACTIONS) {
        if reader.timed_out() {
            return Err(ApiError::Forbidden(TIMED_OUT));
        }
        return Err(ApiError::Forbidden("you may not add reactions in this channel"));
    }
    let message =
        state.store.channel_message(channel, message_id, reader.joined_at).await?.ok_or(ApiError::NotFound(NO_MESSAGE))?;
    if !matches_view(&view, body.view, &body.distributions) {
        return Err(ApiError::ViewStale(Box::new(view.recipients.clone())));
    }
    let now = now_ms();
    let id = ReactionId(state.ids.next_id());
    let done = write(
        &state,
        ChannelWrite {
            channel,
            view: body.view,
            sender: user,
            sender_device: auth.device_id,
            kind: ChannelWriteKind::React {
                id,
                message: message_id,
                user,
                device: auth.device_id,
                ciphertext: body.ciphertext.0,
            },
            distributions: envelopes_of(&state, body.distributions),
            now,
        },
        NO_MESSAGE,
    )
    .await?;
    push_distributions(&state, &done).await;
    let ChannelWriteKind::React { ciphertext, .. } = done.kind else {
        return Err(ApiError::internal(anyhow::anyhow!("write kind changed")));
    };
    let reaction = Reaction {
        id,
        message_id,
        channel_id: channel,
        user_id: user,
        device_id: auth.device_id,
        ciphertext: ciphertext.into(),
        created_at: now,
    };
    to_readers(&state, &view, message.created_at, event_name::REACTION_ADD, &reaction).await;
    Ok((StatusCode::CREATED, Json(reaction)))
}

/// Removes a reaction (one's own, or any with MANAGE_MESSAGES). `REACTION_REMOVE` goes to the
/// readers.
#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{reaction_id}", tag = "channel messages",
    security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id"),
        ("reaction_id" = String, Path, description = "reaction id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "another's reaction, without MANAGE_MESSAGES"),
        (status = 404, body = ApiErrorBody, description = "no such channel, message or reaction (for the caller)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn unreact(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let (channel, message_id) = message_params((raw.0, raw.1))?;
    let reaction_id: ReactionId = parse_id(&raw.2, "reaction id")?;
    let (view, reader) = current(&state, channel, auth.user.id).await?;
    let message =
        state.store.channel_message(channel, message_id, reader.joined_at).await?.ok_or(ApiError::NotFound(NO_MESSAGE))?;
    let reaction = state.store.reaction(channel, message_id, reaction_id).await?.ok_or(ApiError::NotFound("no such reaction"))?;
    if reaction.user_id != auth.user.id && !reader.permissions().contains(Permissions::MANAGE_MESSAGES) {
        return Err(ApiError::Forbidden("only its author or a member with MANAGE_MESSAGES may remove a reaction"));
    }
    if !state.store.delete_reaction(channel, message_id, reaction_id).await? {
        return Err(ApiError::NotFound("no such reaction"));
    }
    if let (Some(server), true) = (view.server_id, reaction.user_id != auth.user.id) {
        let details = serde_json::json!({"channel_id": channel, "message_id": message_id});
        let entry = AuditRecord::new(server, auth.user.id, AuditAction::ReactionRemove).target(reaction.user_id).details(details);
        audit_after(&state, entry).await;
    }
    let removed = ReactionRemoved { id: reaction_id, message_id, channel_id: channel };
    to_readers(&state, &view, message.created_at, event_name::REACTION_REMOVE, &removed).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The pinned messages of the channel (those since the caller joined), newest first.
#[utoipa::path(get, path = "/api/v1/channels/{channel_id}/pins", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    responses(
        (status = 200, body = [ChannelMessage]),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not read it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn pins(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(channel): Path<String>,
) -> ApiResult<Json<Vec<ChannelMessage>>> {
    state.limiters.queue_read(auth.user.id)?;
    let channel: ChannelId = parse_id(&channel, "channel id")?;
    let (_, reader) = current(&state, channel, auth.user.id).await?;
    Ok(Json(state.store.pins(channel, reader.joined_at).await?))
}

async fn set_pin(state: &AppState, auth: &Authenticated, raw: (String, String), pinned: bool) -> ApiResult<StatusCode> {
    let (channel, message_id) = message_params(raw)?;
    let (view, reader) = current(state, channel, auth.user.id).await?;
    if !reader.permissions().contains(Permissions::MANAGE_MESSAGES) {
        return Err(ApiError::Forbidden("pinning needs the MANAGE_MESSAGES permission"));
    }
    let message =
        state.store.channel_message(channel, message_id, reader.joined_at).await?.ok_or(ApiError::NotFound(NO_MESSAGE))?;
    match state.store.set_pinned(channel, message_id, pinned, reader.joined_at).await? {
        PinOutcome::Changed => {
            if let Some(server) = view.server_id {
                let action = if pinned { AuditAction::MessagePin } else { AuditAction::MessageUnpin };
                let details = serde_json::json!({"channel_id": channel, "author_id": message.author_id});
                audit_after(state, AuditRecord::new(server, auth.user.id, action).target(message_id).details(details)).await;
            }
            let update = PinUpdate { channel_id: channel, message_id, pinned };
            to_readers(state, &view, message.created_at, event_name::PINS_UPDATE, &update).await;
            Ok(StatusCode::NO_CONTENT)
        }
        PinOutcome::Unchanged => Ok(StatusCode::NO_CONTENT),
        PinOutcome::NotFound => Err(ApiError::NotFound(NO_MESSAGE)),
        PinOutcome::Full => Err(ApiError::Conflict(format!("this channel has the maximum of {PINS_MAX} pins"))),
    }
}

/// Pins a message (MANAGE_MESSAGES; at most 250 per channel). `PINS_UPDATE` goes to the
/// readers.
#[utoipa::path(put, path = "/api/v1/channels/{channel_id}/pins/{message_id}", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id")),
    responses(
        (status = 204, description = "pinned (or already was)"),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no MANAGE_MESSAGES permission"),
        (status = 404, body = ApiErrorBody, description = "no such channel or message (for the caller)"),
        (status = 409, body = ApiErrorBody, description = "the channel has the maximum number of pins"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn pin(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<(String, String)>) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    set_pin(&state, &auth, raw, true).await
}

/// Unpins a message (MANAGE_MESSAGES). `PINS_UPDATE` goes to the readers.
#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/pins/{message_id}", tag = "channel messages", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id"), ("message_id" = String, Path, description = "message id")),
    responses(
        (status = 204, description = "unpinned (or was not pinned)"),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no MANAGE_MESSAGES permission"),
        (status = 404, body = ApiErrorBody, description = "no such channel or message (for the caller)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn unpin(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    set_pin(&state, &auth, raw, false).await
}

/// Writes an audit entry for a change already made: a log that cannot be written does not
/// undo it (it is logged as an error).
async fn audit_after(state: &AppState, entry: AuditRecord<'_>) {
    let action = entry.action.as_str();
    if let Err(e) = state.store.record_audit(entry).await {
        tracing::error!(error = %e, action, "audit entry not written");
    }
}
