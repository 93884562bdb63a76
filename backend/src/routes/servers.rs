//! `/api/v1/servers`: servers (guilds), their members, bans and roles. Channels are in
//! [`super::channels`], invites in [`super::invites`].
//!
//! Someone who is not a member of a server gets the same 404 for it as for a server that does
//! not exist; a member without the permission gets 403. Every change is checked and written
//! in one transaction by the store, then announced on the gateway: server-level events to
//! every member, channel events only to the members who may view the channel.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{
    Ban, ChannelKind, EditRole, EditServer, Member, MemberRemoved, NewBan, NewServer, Removed, Role, Server, ServerState,
    SetMemberRoles, BAN_MAX_SECS, NAME_MAX_CHARS, REASON_MAX_CHARS,
};
use copains_client_core::{ApiErrorBody, ChannelId, RoleId, ServerId, UserId};
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::servers::{CommunityError, MemberRemoval, NewServerIds, RoleChange, Visibility};

/// Members listed per page by default, and at most.
pub const MEMBERS_PAGE_MAX: u32 = 1000;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/servers", post(create_server).get(list_servers))
        .route("/api/v1/servers/{server_id}", get(get_server).patch(edit_server).delete(delete_server))
        .route("/api/v1/servers/{server_id}/state", get(server_state))
        .route("/api/v1/servers/{server_id}/leave", post(leave_server))
        .route("/api/v1/users/@me/servers/{server_id}", delete(leave_server))
        .route("/api/v1/servers/{server_id}/members", get(members))
        .route("/api/v1/servers/{server_id}/members/{user_id}", get(member).delete(kick))
        .route("/api/v1/servers/{server_id}/members/{user_id}/roles", put(set_member_roles))
        .route("/api/v1/servers/{server_id}/bans", get(bans))
        .route("/api/v1/servers/{server_id}/bans/{user_id}", put(ban).delete(unban))
        .route("/api/v1/servers/{server_id}/roles", get(roles).post(create_role))
        .route("/api/v1/servers/{server_id}/roles/{role_id}", axum::routing::patch(edit_role).delete(delete_role))
}

// ---- shared by the community routes ------------------------------------------------------

impl From<CommunityError> for ApiError {
    fn from(e: CommunityError) -> Self {
        match e {
            CommunityError::NotFound(m) => ApiError::NotFound(m),
            CommunityError::Forbidden(m) => ApiError::Forbidden(m),
            CommunityError::Invalid(m) => ApiError::Validation(m),
            CommunityError::Conflict(m) => ApiError::Conflict(m),
            CommunityError::Store(e) => e.into(),
        }
    }
}

/// A snowflake id from a path segment (400 if it is not one).
pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> ApiResult<T> {
    raw.parse().map_err(|_| ApiError::Malformed(format!("{what} must be a decimal id")))
}

/// A page size from a query: `given`, or `default` when absent; 400 outside 1 to `max`.
pub(crate) fn page_limit(given: Option<u32>, default: u32, max: u32) -> ApiResult<u32> {
    let limit = given.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be 1 to {max}")));
    }
    Ok(limit)
}

/// A name shown to others: trimmed, 1–[`NAME_MAX_CHARS`] characters, no control characters.
pub(crate) fn display_text(raw: &str, what: &str, min: usize, max: usize) -> Result<String, String> {
    let text = raw.trim();
    let len = text.chars().count();
    if len < min || len > max {
        return Err(format!("{what} must be {min} to {max} characters long"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{what} may not contain control characters"));
    }
    Ok(text.to_owned())
}

/// A server, role or category name.
pub(crate) fn name(raw: &str, what: &str) -> ApiResult<String> {
    display_text(raw, what, 1, NAME_MAX_CHARS).map_err(ApiError::Validation)
}

/// A channel name for its kind: text and voice channel names are lowercased with runs of
/// spaces turned into one `-` (as `general-chat`); category names are kept as typed.
pub(crate) fn channel_name(raw: &str, kind: ChannelKind) -> Result<String, String> {
    let name = display_text(raw, "channel name", 1, NAME_MAX_CHARS)?;
    Ok(match kind {
        ChannelKind::Text | ChannelKind::Voice => {
            let lowered = name.to_lowercase();
            let mut out = String::with_capacity(lowered.len());
            for word in lowered.split(|c: char| c.is_whitespace() || c == '-').filter(|w| !w.is_empty()) {
                if !out.is_empty() {
                    out.push('-');
                }
                out.push_str(word);
            }
            if out.is_empty() {
                return Err("channel name must hold a letter or digit".into());
            }
            out
        }
        ChannelKind::Category | ChannelKind::GroupDm => name,
    })
}

/// Publishes one event to the `user:` topic of each of `users` (serialized once).
pub(crate) async fn publish_to(state: &AppState, users: impl IntoIterator<Item = UserId>, name: &str, payload: &impl Serialize) {
    let event = match BusEvent::new(Topic::user(UserId(0)), name, payload) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "event not published");
            return;
        }
    };
    for user in users {
        state.publish(Ok(BusEvent { topic: Topic::user(user), ..event.clone() })).await;
    }
}

/// The channel events a change of who-sees-what calls for, per member present before and
/// after it: `CHANNEL_CREATE` for a channel that became visible, `CHANNEL_DELETE` for one that
/// no longer is, `CHANNEL_UPDATE` for one still visible that changed.
pub(crate) async fn announce_visibility(state: &AppState, server: ServerId, before: &Visibility, after: &Visibility) {
    for (user, now_seen) in &after.seen {
        let Some(was_seen) = before.seen.get(user) else { continue };
        for id in now_seen {
            let Some(channel) = after.channels.get(id) else { continue };
            if !was_seen.contains(id) {
                publish_to(state, [*user], event_name::CHANNEL_CREATE, channel).await;
            } else if before.channels.get(id) != Some(channel) {
                publish_to(state, [*user], event_name::CHANNEL_UPDATE, channel).await;
            }
        }
        for id in was_seen.difference(now_seen) {
            let removed = Removed { id: id.to_string(), server_id: Some(server) };
            publish_to(state, [*user], event_name::CHANNEL_DELETE, &removed).await;
        }
    }
}

/// Who sees which channel, for [`announce_visibility`] (empty if it cannot be read: the
/// change stands, clients catch up from REST).
pub(crate) async fn visibility(state: &AppState, server: ServerId) -> Visibility {
    match state.store.visibility(server).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read channel visibility for events");
            Visibility::default()
        }
    }
}

async fn member_ids(state: &AppState, server: ServerId) -> Vec<UserId> {
    match state.store.member_ids(server).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read members for events");
            Vec::new()
        }
    }
}

/// After a member left, was kicked or banned: `SERVER_DELETE` to them, `MEMBER_REMOVE` to the
/// others, `CHANNEL_UPDATE` for the channels that lost an overwrite for them.
pub(crate) async fn announce_removal(state: &AppState, server: ServerId, user: UserId, removal: &MemberRemoval) {
    if !removal.was_member {
        return;
    }
    publish_to(state, [user], event_name::SERVER_DELETE, &Removed { id: server.to_string(), server_id: None }).await;
    let others = member_ids(state, server).await;
    publish_to(state, others.clone(), event_name::MEMBER_REMOVE, &MemberRemoved { server_id: server, user_id: user }).await;
    crate::routes::social::exchange_presences_with(state, user, &others).await;
    announce_channel_updates(state, &removal.touched_channels).await;
}

/// `CHANNEL_UPDATE` for each channel to its readers.
pub(crate) async fn announce_channel_updates(state: &AppState, channels: &[ChannelId]) {
    for id in channels {
        let (Ok(Some(channel)), Ok(readers)) = (state.store.channel(*id).await, state.store.channel_readers(*id).await) else {
            continue;
        };
        publish_to(state, readers, event_name::CHANNEL_UPDATE, &channel).await;
    }
}

// ---- servers -----------------------------------------------------------------------------

/// Create a server. The caller becomes its owner and first member; it starts with the
/// `@everyone` role and a `general` text channel and a `general` voice channel, each in a
/// category. `SERVER_CREATE` goes to the caller.
#[utoipa::path(post, path = "/api/v1/servers", tag = "servers", security(("bearer" = [])), request_body = NewServer,
    responses(
        (status = 201, body = Server),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "a guest account"),
        (status = 409, body = ApiErrorBody, description = "the caller is in the maximum number of servers"),
        (status = 422, body = ApiErrorBody, description = "name empty or over 100 characters"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn create_server(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewServer>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    state.limiters.user_write(auth.user.id)?;
    not_guest(&auth, "a guest account cannot create servers")?;
    let name = name(&body.name, "server name")?;
    let ids = NewServerIds {
        server: ServerId(state.ids.next_id()),
        text_category: ChannelId(state.ids.next_id()),
        text: ChannelId(state.ids.next_id()),
        voice_category: ChannelId(state.ids.next_id()),
        voice: ChannelId(state.ids.next_id()),
    };
    let created = state.store.create_server(ids, auth.user.id, &name, now_ms()).await?;
    tracing::info!(user = %auth.user.id, server = %created.server.id, "server created");
    publish_to(&state, [auth.user.id], event_name::SERVER_CREATE, &created).await;
    Ok((StatusCode::CREATED, Json(created.server)))
}

/// The servers the caller is a member of.
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers", security(("bearer" = [])),
    responses((status = 200, body = Vec<Server>), (status = 401, body = ApiErrorBody)))]
pub async fn list_servers(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Vec<Server>>> {
    Ok(Json(state.store.servers_of(auth.user.id).await?))
}

/// A server the caller is a member of.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = Server),
        (status = 400, body = ApiErrorBody, description = "not a server id"),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn get_server(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<Json<Server>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    let info = state.store.server_for(server, auth.user.id).await?.ok_or(ApiError::NotFound("no such server"))?;
    Ok(Json(info))
}

/// Everything the caller sees of a server: the server, every role, the channels the caller
/// may view, and the caller as a member (what READY and `SERVER_CREATE` carry).
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/state", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = ServerState),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn server_state(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<ServerState>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    let found = state.store.server_state(server, auth.user.id).await?.ok_or(ApiError::NotFound("no such server"))?;
    Ok(Json(found))
}

/// Rename a server (manage server) or transfer it to another member (`owner_id`, owner only).
/// `SERVER_UPDATE` goes to every member.
#[utoipa::path(patch, path = "/api/v1/servers/{server_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    request_body = EditServer,
    responses(
        (status = 200, body = Server),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "renaming without manage server; transferring without being the owner"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 422, body = ApiErrorBody, description = "bad name; the new owner is not a member, or is a guest"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn edit_server(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<EditServer>,
) -> ApiResult<Json<Server>> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw, "server id")?;
    let new_name = body.name.as_deref().map(|n| name(n, "server name")).transpose()?;
    let before = match body.owner_id {
        Some(_) => Some(visibility(&state, server).await),
        None => None,
    };
    let edited = state.store.edit_server(server, auth.user.id, new_name.as_deref(), body.owner_id).await?;
    tracing::info!(user = %auth.user.id, server = %server, transfer = body.owner_id.is_some(), "server edited");
    let members = member_ids(&state, server).await;
    publish_to(&state, members, event_name::SERVER_UPDATE, &edited).await;
    if let Some(before) = before {
        let after = visibility(&state, server).await;
        announce_visibility(&state, server, &before, &after).await;
    }
    Ok(Json(edited))
}

/// Delete a server with its channels, roles, invites and messages (owner only).
/// `SERVER_DELETE` goes to every member.
#[utoipa::path(delete, path = "/api/v1/servers/{server_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not the owner"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn delete_server(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let server: ServerId = parse_id(&raw, "server id")?;
    let members = state.store.delete_server(server, auth.user.id).await?;
    tracing::info!(user = %auth.user.id, server = %server, "server deleted");
    publish_to(&state, members, event_name::SERVER_DELETE, &Removed { id: server.to_string(), server_id: None }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Leave a server (also `DELETE /api/v1/users/@me/servers/{server_id}`). The owner cannot:
/// they transfer the server or delete it first (409). `SERVER_DELETE` goes to the caller,
/// `MEMBER_REMOVE` to the other members.
#[utoipa::path(post, path = "/api/v1/servers/{server_id}/leave", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 409, body = ApiErrorBody, description = "the owner cannot leave"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn leave_server(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw, "server id")?;
    let removal = state.store.leave_server(server, auth.user.id).await?;
    tracing::info!(user = %auth.user.id, server = %server, "left server");
    announce_removal(&state, server, auth.user.id, &removal).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- members -----------------------------------------------------------------------------

/// `GET /api/v1/servers/{server_id}/members` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersParams {
    /// At most this many (1–1000; default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only members whose user id is above this one (the last id of the previous page).
    pub after: Option<String>,
}

/// The members of a server, by user id, a page at a time.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/members", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), MembersParams),
    responses(
        (status = 200, body = Vec<Member>),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn members(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    params: Result<Query<MembersParams>, QueryRejection>,
) -> ApiResult<Json<Vec<Member>>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    let Query(params) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = page_limit(params.limit, MEMBERS_PAGE_MAX, MEMBERS_PAGE_MAX)?;
    let after = params.after.as_deref().map(|a| parse_id::<UserId>(a, "after")).transpose()?;
    Ok(Json(state.store.members_for(server, auth.user.id, limit, after).await?))
}

/// One member of a server.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/members/{user_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    responses(
        (status = 200, body = Member),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such member"),
    ))]
pub async fn member(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
) -> ApiResult<Json<Member>> {
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    Ok(Json(state.store.member_for(server, auth.user.id, user).await?))
}

/// Why a member is kicked.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KickParams {
    /// Why (kept in the audit log; at most 512 characters).
    #[param(max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub reason: Option<String>,
}

/// Kick a member (kick members; only a member whose highest role is below the caller's, never
/// the owner). They may come back with an invite. `SERVER_DELETE` goes to them,
/// `MEMBER_REMOVE` to the others.
#[utoipa::path(delete, path = "/api/v1/servers/{server_id}/members/{user_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id"), KickParams),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no kick members permission, or the member is at or above the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such member"),
        (status = 422, body = ApiErrorBody, description = "reason over 512 characters"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn kick(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
    params: Result<Query<KickParams>, QueryRejection>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    let Query(params) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let reason = match params.reason.as_deref() {
        Some(r) => display_text(r, "reason", 0, REASON_MAX_CHARS).map_err(ApiError::Validation)?,
        None => String::new(),
    };
    let removal = state.store.kick(server, auth.user.id, user, Some(reason.as_str()).filter(|r| !r.is_empty())).await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, "member kicked");
    announce_removal(&state, server, user, &removal).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a member's roles, all of them (manage roles). Every role added or removed must be below
/// the caller's highest role and carry only permissions the caller holds; `@everyone` is not
/// listed. `MEMBER_UPDATE` goes to every member.
#[utoipa::path(put, path = "/api/v1/servers/{server_id}/members/{user_id}/roles", tag = "servers",
    security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    request_body = SetMemberRoles,
    responses(
        (status = 200, body = Member),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage roles permission; a role or the member at or above the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such member"),
        (status = 422, body = ApiErrorBody, description = "a role of another server, @everyone, or a role twice"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn set_member_roles(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetMemberRoles>,
) -> ApiResult<Json<Member>> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    let before = visibility(&state, server).await;
    let member = state.store.set_member_roles(server, auth.user.id, user, &body.roles).await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, "member roles set");
    let members = member_ids(&state, server).await;
    publish_to(&state, members, event_name::MEMBER_UPDATE, &member).await;
    let after = visibility(&state, server).await;
    announce_visibility(&state, server, &before, &after).await;
    Ok(Json(member))
}

// ---- bans --------------------------------------------------------------------------------

/// The bans in force (ban members), newest first.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/bans", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = Vec<Ban>),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no ban members permission"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn bans(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<Json<Vec<Ban>>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    Ok(Json(state.store.bans_for(server, auth.user.id, now_ms()).await?))
}

/// Ban a user (ban members): a member is removed as by a kick (and must be below the caller);
/// a non-member can be banned too. Until the ban ends (`duration_secs`, at most a year; none:
/// until lifted) no invite lets them in. Banning again replaces the ban.
#[utoipa::path(put, path = "/api/v1/servers/{server_id}/bans/{user_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    request_body = NewBan,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no ban members permission; the member is at or above the caller; oneself"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such user"),
        (status = 422, body = ApiErrorBody, description = "reason over 512 characters; duration 0 or over a year"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn ban(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    // The body is optional: no body bans for good, without a reason.
    let body: NewBan =
        if body.iter().all(u8::is_ascii_whitespace) { NewBan::default() } else { crate::extract::json_body(&body)? };
    let reason = match body.reason.as_deref() {
        Some(r) => display_text(r, "reason", 0, REASON_MAX_CHARS).map_err(ApiError::Validation)?,
        None => String::new(),
    };
    let now = now_ms();
    let expires_at = match body.duration_secs {
        None => None,
        Some(secs) if (1..=BAN_MAX_SECS).contains(&secs) => Some(now + secs as i64 * 1000),
        Some(_) => return Err(ApiError::Validation(format!("duration_secs must be 1 to {BAN_MAX_SECS}"))),
    };
    let reason = (!reason.is_empty()).then_some(reason);
    let purge = match body.delete_message_secs {
        None | Some(0) => None,
        Some(secs) if secs <= copains_client_core::servers::PURGE_MAX_SECS => Some(secs),
        Some(_) => return Err(ApiError::Validation("delete_message_secs must be at most 604800 (7 days)".into())),
    };
    let removal = state.store.ban(server, auth.user.id, user, reason.as_deref(), expires_at, now).await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, timed = expires_at.is_some(), "user banned");
    announce_removal(&state, server, user, &removal).await;
    if let Some(secs) = purge {
        let since = now - i64::try_from(secs).unwrap_or(0) * 1000;
        let deleted = state.store.purge_messages(server, auth.user.id, user, since, secs, true).await?;
        crate::routes::channel_messages::announce_deleted(&state, &deleted).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Lift a ban (ban members).
#[utoipa::path(delete, path = "/api/v1/servers/{server_id}/bans/{user_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no ban members permission"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such ban"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn unban(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    state.store.unban(server, auth.user.id, user).await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, "ban lifted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- roles -------------------------------------------------------------------------------

fn role_change(body: &EditRole) -> ApiResult<RoleChange> {
    if let Some(p) = body.permissions {
        if !p.is_valid() {
            return Err(ApiError::Validation("permissions holds unknown bits".into()));
        }
    }
    if body.color.is_some_and(|c| c > 0xFF_FFFF) {
        return Err(ApiError::Validation("color must be an RGB value (0 to 16777215)".into()));
    }
    Ok(RoleChange {
        name: body.name.as_deref().map(|n| name(n, "role name")).transpose()?,
        color: body.color,
        permissions: body.permissions,
        position: body.position,
        hoist: body.hoist,
    })
}

/// The roles of a server, lowest first (`@everyone`, position 0, first).
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/roles", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = Vec<Role>),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn roles(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<Json<Vec<Role>>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    Ok(Json(state.store.roles_for(server, auth.user.id).await?))
}

/// Create a role (manage roles): named "new role" at position 1 unless told otherwise; its
/// position must be below the caller's highest role and its permissions ones the caller
/// holds. `ROLE_CREATE` goes to every member.
#[utoipa::path(post, path = "/api/v1/servers/{server_id}/roles", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    request_body = EditRole,
    responses(
        (status = 201, body = Role),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage roles permission; position or permissions beyond the caller's"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 409, body = ApiErrorBody, description = "the server has the maximum number of roles"),
        (status = 422, body = ApiErrorBody, description = "bad name, colour, permission bits or position"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn create_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<EditRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw, "server id")?;
    let change = role_change(&body)?;
    let role = state.store.create_role(server, auth.user.id, RoleId(state.ids.next_id()), &change).await?;
    tracing::info!(user = %auth.user.id, server = %server, role = %role.id, "role created");
    let members = member_ids(&state, server).await;
    publish_to(&state, members, event_name::ROLE_CREATE, &role).await;
    Ok((StatusCode::CREATED, Json(role)))
}

/// Edit a role below the caller's highest (manage roles). Permissions may only gain or lose
/// bits the caller holds. `@everyone`'s permissions, colour and hoist may change, not its
/// name or position. `ROLE_UPDATE` goes to every member; channels that become visible or
/// invisible to someone are announced to them.
#[utoipa::path(patch, path = "/api/v1/servers/{server_id}/roles/{role_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("role_id" = String, Path, description = "role id")),
    request_body = EditRole,
    responses(
        (status = 200, body = Role),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage roles permission; the role at or above the caller; \
            permissions or position beyond the caller's"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such role in it"),
        (status = 422, body = ApiErrorBody, description = "bad name, colour, bits or position; renaming or moving @everyone"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn edit_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_role)): Path<(String, String)>,
    ApiJson(body): ApiJson<EditRole>,
) -> ApiResult<Json<Role>> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let role: RoleId = parse_id(&raw_role, "role id")?;
    let change = role_change(&body)?;
    let before = visibility(&state, server).await;
    let edited = state.store.edit_role(server, auth.user.id, role, &change).await?;
    tracing::info!(user = %auth.user.id, server = %server, role = %role, "role edited");
    let members = member_ids(&state, server).await;
    publish_to(&state, members, event_name::ROLE_UPDATE, &edited).await;
    let after = visibility(&state, server).await;
    announce_visibility(&state, server, &before, &after).await;
    Ok(Json(edited))
}

/// Delete a role below the caller's highest (manage roles; never `@everyone`), with the
/// overwrites that named it. `ROLE_DELETE` goes to every member.
#[utoipa::path(delete, path = "/api/v1/servers/{server_id}/roles/{role_id}", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("role_id" = String, Path, description = "role id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage roles permission; the role at or above the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such role in it"),
        (status = 422, body = ApiErrorBody, description = "@everyone cannot be deleted"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn delete_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let role: RoleId = parse_id(&raw_role, "role id")?;
    let before = visibility(&state, server).await;
    state.store.delete_role(server, auth.user.id, role).await?;
    tracing::info!(user = %auth.user.id, server = %server, role = %role, "role deleted");
    let members = member_ids(&state, server).await;
    publish_to(&state, members, event_name::ROLE_DELETE, &Removed { id: role.to_string(), server_id: Some(server) }).await;
    let after = visibility(&state, server).await;
    announce_visibility(&state, server, &before, &after).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a guest account (403 with `why`): a guest is a visitor of the one server it was
/// invited to, for a while; it makes no servers and joins no others.
pub(crate) fn not_guest(auth: &Authenticated, why: &'static str) -> ApiResult<()> {
    if auth.user.guest_expires_at.is_some() {
        return Err(ApiError::Forbidden(why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_normalised_for_text_and_voice() {
        assert_eq!(channel_name("  General Chat ", ChannelKind::Text), Ok("general-chat".into()));
        assert_eq!(channel_name("Lounge  --  Two", ChannelKind::Voice), Ok("lounge-two".into()));
        assert_eq!(channel_name("Text Channels", ChannelKind::Category), Ok("Text Channels".into()));
        assert!(channel_name("   ", ChannelKind::Text).is_err());
        assert!(channel_name("---", ChannelKind::Text).is_err());
        assert!(channel_name(&"x".repeat(101), ChannelKind::Text).is_err());
        assert!(channel_name("a\u{7}b", ChannelKind::Category).is_err());
    }
}
