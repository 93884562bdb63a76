//! Friends and blocks (`/api/v1/users/@me/relationships`), the presence a user chooses
//! (`/api/v1/users/@me/presence`), typing indicators and read markers, and the publishing of
//! presence changes the gateway gathers.
//!
//! Visibility: a user's presence is seen by their friends and by the members of the servers
//! and group DMs they share, never by anyone blocked either way. A blocked user cannot DM the
//! blocker, ask them to be friends, add them to a group DM, or tell them they type.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{ChannelKind, Permissions};
use copains_client_core::social::{
    DmReadState, FriendRequest, MarkDmRead, MarkRead, NotificationSettings, Presence, PresenceSettings, PresenceStatus,
    PresenceUpdate, ReadState, Relationship, RelationshipKind, RelationshipRemoved, SetNotificationSettings, SetRelationship,
    SetRelationshipKind, TypingStart, CUSTOM_STATUS_MAX_CHARS, DM_READ_STATES_MAX, NOTIFICATION_SETTINGS_MAX,
};
use copains_client_core::{ApiErrorBody, ChannelId, UserId};
use serde::Serialize;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::domain::Username;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::social::{RelationshipError, RequestOutcome};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/@me/relationships", get(relationships).post(request_friend))
        .route("/api/v1/users/@me/relationships/{user_id}", put(set_relationship).delete(remove_relationship))
        .route("/api/v1/users/@me/presence", get(presence_settings).put(set_presence))
        .route("/api/v1/channels/{channel_id}/typing", post(channel_typing))
        .route("/api/v1/users/{user_id}/typing", post(dm_typing))
        .route("/api/v1/channels/{channel_id}/read", put(mark_channel_read))
        .route("/api/v1/users/{user_id}/read", put(mark_dm_read))
        .route("/api/v1/users/@me/notification-settings/{target_id}", put(set_notification_settings))
}

/// Answer to a request that a block forbids: the same whichever side blocked, so that it does
/// not tell a blocked user they are blocked.
pub(crate) const NOT_ACCEPTED: &str = "this user does not accept that from you";

/// 403 if a block stands between `me` and `other`: the caller's own block named as such,
/// the other's not.
pub(crate) async fn not_blocked(state: &AppState, me: UserId, other: UserId) -> ApiResult<()> {
    match state.store.blocks(me, other).await? {
        (true, _) => Err(ApiError::Forbidden("you blocked this user: unblock them first")),
        (false, true) => Err(ApiError::Forbidden(NOT_ACCEPTED)),
        (false, false) => Ok(()),
    }
}
/// Longest a custom status or a mute may be set for (ms): a year.
const CUSTOM_STATUS_MAX_MS: i64 = 365 * 24 * 3600 * 1000;

/// Direction and invisible format characters (which could make a status read otherwise than it
/// is written): the bidirectional embeddings, overrides and isolates, and the zero-width ones.
fn is_format_control(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> ApiResult<T> {
    raw.parse().map_err(|_| ApiError::Malformed(format!("{what} must be a decimal id")))
}

fn refusal(e: RelationshipError) -> ApiError {
    match e {
        RelationshipError::Blocked => ApiError::Forbidden(NOT_ACCEPTED),
        RelationshipError::YouBlocked => ApiError::Forbidden("you blocked this user: unblock them first"),
        RelationshipError::AlreadyFriends => ApiError::Conflict("you are already friends".into()),
        RelationshipError::NoRequest => ApiError::NotFound("no friend request from this user"),
        RelationshipError::TooMany => ApiError::Conflict(format!(
            "too many friends and requests, or blocks (at most {} friends and requests, {} of them sent, {} blocks)",
            copains_client_core::social::RELATIONSHIPS_MAX,
            copains_client_core::social::OUTGOING_REQUESTS_MAX,
            copains_client_core::social::BLOCKS_MAX
        )),
        RelationshipError::TooManyIncoming => {
            ApiError::Conflict("this user has too many friend requests waiting; try again later".into())
        }
        RelationshipError::Store(e) => e.into(),
    }
}

async fn to_user(state: &AppState, user: UserId, name: &str, payload: &impl Serialize) {
    state.publish(BusEvent::new(Topic::user(user), name, payload)).await;
}

/// Tells `user` of their relationship with `other` as it now stands (added or changed, or
/// gone).
async fn announce_relationship(state: &AppState, user: UserId, other: UserId) -> ApiResult<Option<Relationship>> {
    let now = state.store.relationship(user, other).await?;
    match &now {
        Some(r) => to_user(state, user, event_name::RELATIONSHIP_ADD, r).await,
        None => to_user(state, user, event_name::RELATIONSHIP_REMOVE, &RelationshipRemoved { user_id: other }).await,
    }
    Ok(now)
}

/// After a change between `a` and `b` that may let them see each other's presence or not any
/// more: each is told the other's presence as they may now see it (offline if not at all).
async fn exchange_presences(state: &AppState, a: UserId, b: UserId) -> ApiResult<()> {
    let visible = state.store.sees_presence(a, b).await?;
    tell_presences(state, a, &[b], |_| visible).await;
    Ok(())
}

/// After `user` joined a server or group DM of `others`, or left one: each connected one of them
/// hears `user`'s presence as they may now see it (offline if not any more), and `user` hears
/// theirs, in one event.
pub(crate) async fn exchange_presences_with(state: &AppState, user: UserId, others: &[UserId]) {
    let audience: std::collections::HashSet<UserId> = match state.store.presence_audience(user).await {
        Ok(a) => a.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read who sees a presence; not exchanged");
            return;
        }
    };
    tell_presences(state, user, others, |other| audience.contains(&other)).await;
}

/// Tells each connected one of `others` how they now see `user` (`sees`, or offline), and
/// `user` how they see those others, in one event. Those not connected are offline to everyone
/// already: nothing to tell either way.
async fn tell_presences(state: &AppState, user: UserId, others: &[UserId], sees: impl Fn(UserId) -> bool) {
    let now = now_ms();
    let offline = |of: UserId| Presence { user_id: of, status: PresenceStatus::Offline, custom_status: None };
    let mine = state.presence.presence(user, now);
    let mut theirs = Vec::new();
    let mut events = Vec::new();
    for &other in others.iter().filter(|o| **o != user && state.presence.is_connected(**o)) {
        let visible = sees(other);
        let shown = if visible { mine.clone() } else { offline(user) };
        if let Ok(e) = BusEvent::new(Topic::user(other), event_name::PRESENCE_UPDATE, &PresenceUpdate { presences: vec![shown] })
        {
            events.push(e);
        }
        theirs.push(if visible { state.presence.presence(other, now) } else { offline(other) });
    }
    if state.presence.is_connected(user) && !theirs.is_empty() {
        if let Ok(e) = BusEvent::new(Topic::user(user), event_name::PRESENCE_UPDATE, &PresenceUpdate { presences: theirs }) {
            events.push(e);
        }
    }
    if let Err(e) = state.bus.publish_all(events).await {
        tracing::warn!(error = %e, "presence events not published");
    }
}

/// The caller's friends, pending requests (both ways) and blocks.
#[utoipa::path(get, path = "/api/v1/users/@me/relationships", tag = "social", security(("bearer" = [])),
    responses((status = 200, body = Vec<Relationship>), (status = 401, body = ApiErrorBody), (status = 429, body = ApiErrorBody)))]
pub async fn relationships(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Vec<Relationship>>> {
    state.limiters.queue_read(auth.user.id)?;
    Ok(Json(state.store.relationships(auth.user.id).await?))
}

/// Asks a user to be friends, by username. If they had asked first, this accepts. Both get
/// `RELATIONSHIP_ADD`.
#[utoipa::path(post, path = "/api/v1/users/@me/relationships", tag = "social", security(("bearer" = [])),
    request_body = FriendRequest,
    responses(
        (status = 200, body = Relationship, description = "the caller's relationship now: `outgoing`, or `friend` if they had asked"),
        (status = 400, body = ApiErrorBody, description = "malformed body, or the caller's own username"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "a block stands between the two"),
        (status = 404, body = ApiErrorBody, description = "no such user"),
        (status = 409, body = ApiErrorBody, description = "already friends, or too many relationships or pending requests"),
        (status = 422, body = ApiErrorBody, description = "not a valid username"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn request_friend(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<FriendRequest>,
) -> ApiResult<Json<Relationship>> {
    state.limiters.user_write(auth.user.id)?;
    state.limiters.user_lookup(auth.user.id)?;
    let username = Username::parse(body.username.trim()).map_err(|e| ApiError::Validation(e.0))?;
    let other = state.store.public_user_by_username(username.folded()).await?.ok_or(ApiError::NotFound("no such user"))?;
    let me = auth.user.id;
    if other.id == me {
        return Err(ApiError::Malformed("you cannot be your own friend".into()));
    }
    let outcome = state.store.request_friend(me, other.id, now_ms()).await.map_err(refusal)?;
    let mine = announce_relationship(&state, me, other.id).await?;
    if outcome != RequestOutcome::AlreadySent {
        announce_relationship(&state, other.id, me).await?;
    }
    if outcome == RequestOutcome::Accepted {
        exchange_presences(&state, me, other.id).await?;
    }
    mine.map(Json).ok_or_else(|| ApiError::Conflict("the relationship changed meanwhile; look again".into()))
}

/// Accepts a user's friend request (`friend`) or blocks them (`blocked`). Blocking ends a
/// friendship or a request between the two; the blocked user is told only that the friendship
/// or request ended.
#[utoipa::path(put, path = "/api/v1/users/@me/relationships/{user_id}", tag = "social", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "the other user's id")),
    request_body = SetRelationship,
    responses(
        (status = 200, body = Relationship),
        (status = 400, body = ApiErrorBody, description = "malformed, or the caller"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "accepting someone the caller blocked"),
        (status = 404, body = ApiErrorBody, description = "no such user, or (accepting) no request from them"),
        (status = 409, body = ApiErrorBody, description = "too many relationships"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn set_relationship(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<SetRelationship>,
) -> ApiResult<Json<Relationship>> {
    state.limiters.user_write(auth.user.id)?;
    let other: UserId = parse_id(&raw, "user id")?;
    let me = auth.user.id;
    if other == me {
        return Err(ApiError::Malformed("that is you".into()));
    }
    if state.store.public_user(other).await?.is_none() {
        return Err(ApiError::NotFound("no such user"));
    }
    match body.kind {
        SetRelationshipKind::Friend => {
            if state.store.accept_friend(me, other, now_ms()).await.map_err(refusal)? {
                announce_relationship(&state, other, me).await?;
                announce_relationship(&state, me, other).await?;
                exchange_presences(&state, me, other).await?;
            }
        }
        SetRelationshipKind::Blocked => {
            let blocked = state.store.block(me, other, now_ms()).await.map_err(refusal)?;
            if blocked.theirs_removed.is_some() {
                announce_relationship(&state, other, me).await?;
            }
            if blocked.mine_before != Some(RelationshipKind::Blocked) {
                announce_relationship(&state, me, other).await?;
                exchange_presences(&state, me, other).await?;
            }
            tracing::info!(user = %me, blocked = %other, "user blocked");
        }
    }
    let now = state.store.relationship(me, other).await?;
    now.map(Json).ok_or_else(|| ApiError::Conflict("the relationship changed meanwhile; look again".into()))
}

/// Ends the caller's relationship with a user: removes a friend, declines their request,
/// cancels the caller's own, or lifts a block. Both sides of a friendship or a request get
/// `RELATIONSHIP_REMOVE`.
#[utoipa::path(delete, path = "/api/v1/users/@me/relationships/{user_id}", tag = "social", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "the other user's id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no relationship with this user"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn remove_relationship(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let other: UserId = parse_id(&raw, "user id")?;
    let me = auth.user.id;
    let removed = state.store.remove_relationship(me, other).await?;
    let Some(mine) = removed.mine else { return Err(ApiError::NotFound("no relationship with this user")) };
    to_user(&state, me, event_name::RELATIONSHIP_REMOVE, &RelationshipRemoved { user_id: other }).await;
    if removed.theirs.is_some() {
        to_user(&state, other, event_name::RELATIONSHIP_REMOVE, &RelationshipRemoved { user_id: me }).await;
    }
    if matches!(mine, RelationshipKind::Friend | RelationshipKind::Blocked) {
        exchange_presences(&state, me, other).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// What the caller chose to be seen as.
#[utoipa::path(get, path = "/api/v1/users/@me/presence", tag = "social", security(("bearer" = [])),
    responses((status = 200, body = PresenceSettings), (status = 401, body = ApiErrorBody)))]
pub async fn presence_settings(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<PresenceSettings>> {
    Ok(Json(state.store.presence_settings(auth.user.id, now_ms()).await?))
}

/// Chooses a status (`online`, `idle`, `dnd`, `invisible`) and a custom status. Kept across
/// sessions; the user's other devices get `PRESENCE_SETTINGS_UPDATE`, and those who may see
/// the user a `PRESENCE_UPDATE` with the next flush.
#[utoipa::path(put, path = "/api/v1/users/@me/presence", tag = "social", security(("bearer" = [])),
    request_body = PresenceSettings,
    responses(
        (status = 200, body = PresenceSettings),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 422, body = ApiErrorBody, description = "status offline, an empty or too long custom status, or an end in \
            the past or more than a year away"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn set_presence(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(mut body): ApiJson<PresenceSettings>,
) -> ApiResult<Json<PresenceSettings>> {
    state.limiters.presence(auth.user.id)?;
    if body.status == PresenceStatus::Offline {
        return Err(ApiError::Validation("status is online, idle, dnd or invisible (invisible looks offline)".into()));
    }
    let now = now_ms();
    if let Some(custom) = &mut body.custom_status {
        custom.text = custom.text.trim().to_owned();
        let chars = custom.text.chars().count();
        if chars == 0 || chars > CUSTOM_STATUS_MAX_CHARS {
            return Err(ApiError::Validation(format!("a custom status holds 1 to {CUSTOM_STATUS_MAX_CHARS} characters")));
        }
        if custom.text.chars().any(|c| c.is_control() || is_format_control(c)) {
            return Err(ApiError::Validation("a custom status is one line of plain text".into()));
        }
        if let Some(end) = custom.expires_at {
            if end <= now || end - now > CUSTOM_STATUS_MAX_MS {
                return Err(ApiError::Validation("a custom status ends in the future, within a year".into()));
            }
        }
    }
    state.store.set_presence_settings(auth.user.id, &body).await?;
    state.presence.settings_changed(auth.user.id, body.clone());
    to_user(&state, auth.user.id, event_name::PRESENCE_SETTINGS_UPDATE, &body).await;
    Ok(Json(body))
}

/// Tells a channel's or group DM's readers that the caller types (rate-limited). Clients show
/// it for 10 s, or until the caller's message arrives.
#[utoipa::path(post, path = "/api/v1/channels/{channel_id}/typing", tag = "social", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody, description = "malformed id, or a category"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no permission to send messages there"),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not read it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn channel_typing(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    state.limiters.typing(auth.user.id)?;
    let channel: ChannelId = parse_id(&raw, "channel id")?;
    let view = state.store.channel_view(channel).await?.ok_or(ApiError::NotFound("no such channel"))?;
    let reader = view.reader(auth.user.id).ok_or(ApiError::NotFound("no such channel"))?;
    if view.kind == ChannelKind::Category {
        return Err(ApiError::Malformed("a category holds no messages".into()));
    }
    if !reader.permissions().contains(Permissions::SEND_MESSAGES) {
        return Err(ApiError::Forbidden("you may not send messages in this channel"));
    }
    let now = now_ms();
    let typing = TypingStart { user_id: auth.user.id, channel_id: Some(channel), at: now };
    let me = Topic::user(auth.user.id);
    match BusEvent::fan_out(view.topics_for(now).filter(|t| **t != me), event_name::TYPING_START, &typing) {
        Ok(events) => {
            if let Err(e) = state.bus.publish_all(events).await {
                tracing::warn!(error = %e, "event not published");
            }
        }
        Err(e) => tracing::warn!(error = %e, "event not published"),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Tells a user that the caller types in their DM (rate-limited). Refused across a block.
#[utoipa::path(post, path = "/api/v1/users/{user_id}/typing", tag = "social", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "the other user's id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody, description = "malformed id, or the caller"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "a block stands between the two"),
        (status = 404, body = ApiErrorBody, description = "no such user"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn dm_typing(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.typing(auth.user.id)?;
    let other: UserId = parse_id(&raw, "user id")?;
    if other == auth.user.id {
        return Err(ApiError::Malformed("that is you".into()));
    }
    if state.store.public_user(other).await?.is_none() {
        return Err(ApiError::NotFound("no such user"));
    }
    not_blocked(&state, auth.user.id, other).await?;
    let typing = TypingStart { user_id: auth.user.id, channel_id: None, at: now_ms() };
    to_user(&state, other, event_name::TYPING_START, &typing).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks a channel or group DM read up to a message (a marker never moves back). The caller's
/// other devices get `CHANNEL_READ`.
#[utoipa::path(put, path = "/api/v1/channels/{channel_id}/read", tag = "social", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    request_body = MarkRead,
    responses(
        (status = 200, body = ReadState, description = "the marker as it now stands"),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel or message, or not readable by the caller"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn mark_channel_read(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<MarkRead>,
) -> ApiResult<Json<ReadState>> {
    state.limiters.read_mark(auth.user.id)?;
    let channel: ChannelId = parse_id(&raw, "channel id")?;
    let view = state.store.channel_view(channel).await?.ok_or(ApiError::NotFound("no such channel"))?;
    let reader = view.reader(auth.user.id).ok_or(ApiError::NotFound("no such channel"))?;
    if state.store.channel_message(channel, body.message_id, reader.joined_at).await?.is_none() {
        return Err(ApiError::NotFound("no such message"));
    }
    let marker = state.store.mark_read(auth.user.id, channel, body.message_id, now_ms()).await?;
    to_user(&state, auth.user.id, event_name::CHANNEL_READ, &marker).await;
    Ok(Json(marker))
}

/// Marks the DM with a user read up to a server timestamp (a marker never moves back). The
/// caller's other devices get `DM_READ`.
#[utoipa::path(put, path = "/api/v1/users/{user_id}/read", tag = "social", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "the other user's id")),
    request_body = MarkDmRead,
    responses(
        (status = 200, body = DmReadState, description = "the marker as it now stands"),
        (status = 400, body = ApiErrorBody, description = "malformed, the caller, or a time in the future"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such user"),
        (status = 409, body = ApiErrorBody, description = "markers kept for too many DMs already"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn mark_dm_read(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<MarkDmRead>,
) -> ApiResult<Json<DmReadState>> {
    state.limiters.read_mark(auth.user.id)?;
    let other: UserId = parse_id(&raw, "user id")?;
    if other == auth.user.id {
        return Err(ApiError::Malformed("that is you".into()));
    }
    if body.at < 0 || body.at > now_ms() + 60_000 {
        return Err(ApiError::Malformed("at is the server timestamp of a message received".into()));
    }
    if state.store.public_user(other).await?.is_none() {
        return Err(ApiError::NotFound("no such user"));
    }
    let marker = state
        .store
        .mark_dm_read(auth.user.id, other, body.at, DM_READ_STATES_MAX)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("read markers are kept for at most {DM_READ_STATES_MAX} DMs")))?;
    to_user(&state, auth.user.id, event_name::DM_READ, &marker).await;
    Ok(Json(marker))
}

/// Sets what the caller wants to be notified of in a server they are in or a channel they may
/// read (every field absent: back to the defaults). Their devices get
/// `NOTIFICATION_SETTINGS_UPDATE`.
#[utoipa::path(put, path = "/api/v1/users/@me/notification-settings/{target_id}", tag = "social", security(("bearer" = [])),
    params(("target_id" = String, Path, description = "a server or channel id")),
    request_body = SetNotificationSettings,
    responses(
        (status = 200, body = NotificationSettings),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no server the caller is in, nor channel they may read, by that id"),
        (status = 409, body = ApiErrorBody, description = "settings kept for too many servers and channels already"),
        (status = 422, body = ApiErrorBody, description = "an end of mute without a mute, in the past, or more than a year away"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn set_notification_settings(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<SetNotificationSettings>,
) -> ApiResult<Json<NotificationSettings>> {
    state.limiters.user_write(auth.user.id)?;
    let target: i64 = parse_id(&raw, "target id")?;
    if body.muted_until.is_some() && !body.muted {
        return Err(ApiError::Validation("muted_until goes with muted".into()));
    }
    if let Some(end) = body.muted_until {
        let now = now_ms();
        if end <= now || end - now > CUSTOM_STATUS_MAX_MS {
            return Err(ApiError::Validation("a mute ends in the future, within a year (or give no end)".into()));
        }
    }
    let readable = match state.store.channel_view(ChannelId(target)).await? {
        Some(view) => view.reader(auth.user.id).is_some(),
        None => false,
    };
    if !readable && !state.store.is_member(target, auth.user.id).await? {
        return Err(ApiError::NotFound("no such server or channel"));
    }
    if !state.store.set_notification_settings(auth.user.id, target, &body, NOTIFICATION_SETTINGS_MAX).await? {
        return Err(ApiError::Conflict(format!(
            "at most {NOTIFICATION_SETTINGS_MAX} servers and channels with settings of their own; reset some first"
        )));
    }
    let saved = NotificationSettings { target_id: target.to_string(), settings: body };
    to_user(&state, auth.user.id, event_name::NOTIFICATION_SETTINGS_UPDATE, &saved).await;
    Ok(Json(saved))
}

/// What READY carries: relationships, the user's choice, the presences they may see (not
/// offline), read markers.
pub async fn ready_part(state: &AppState, user: UserId) -> crate::store::Result<copains_client_core::social::SocialReady> {
    let now = now_ms();
    let audience = state.store.presence_audience(user).await?;
    let presences = audience
        .into_iter()
        .filter(|u| state.presence.is_connected(*u))
        .map(|u| state.presence.presence(u, now))
        .filter(|p| p.status != PresenceStatus::Offline)
        .collect();
    Ok(copains_client_core::social::SocialReady {
        relationships: state.store.relationships(user).await?,
        presence: state.store.presence_settings(user, now).await?,
        presences,
        read_states: state.store.read_states(user).await?,
        dm_read_states: state.store.dm_read_states(user).await?,
        notification_settings: state.store.notification_settings(user, now).await?,
    })
}

/// Gathers the presence changes since the last flush and sends each connected recipient one
/// `PRESENCE_UPDATE` with all the changes they may see.
pub async fn flush_presence(state: &AppState) {
    let changes = state.presence.tick(now_ms());
    if changes.is_empty() {
        return;
    }
    let mut per_recipient: HashMap<UserId, Vec<Presence>> = HashMap::new();
    for change in &changes {
        let audience = match state.store.presence_audience(change.user_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read who sees a presence; change not sent");
                continue;
            }
        };
        for recipient in audience.into_iter().filter(|u| state.presence.is_connected(*u)) {
            per_recipient.entry(recipient).or_default().push(change.clone());
        }
    }
    let events: Vec<BusEvent> = per_recipient
        .into_iter()
        .filter_map(|(to, presences)| {
            BusEvent::new(Topic::user(to), event_name::PRESENCE_UPDATE, &PresenceUpdate { presences }).ok()
        })
        .collect();
    if let Err(e) = state.bus.publish_all(events).await {
        tracing::warn!(error = %e, "presence events not published");
    }
}
