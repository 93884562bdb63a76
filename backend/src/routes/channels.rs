//! Channels: a server's categories, text and voice channels (`/api/v1/servers/{id}/channels`,
//! `/api/v1/channels/{id}`), and group DMs (`POST /api/v1/channels`, their recipients).
//!
//! A channel the caller may not view answers 404, as one that does not exist. Channel events
//! go only to the members who may view the channel; when a change makes a channel visible or
//! invisible to someone, they get `CHANNEL_CREATE` or `CHANNEL_DELETE`.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{
    Channel, ChannelKind, EditChannel, NewChannel, NewGroupDm, Removed, GROUP_DM_MAX_MEMBERS, NAME_MAX_CHARS, TOPIC_MAX_CHARS,
};
use copains_client_core::{ApiErrorBody, ChannelId, ServerId, UserId};

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::servers::{
    announce_channel_updates, announce_visibility, channel_name, display_text, parse_id, publish_to, visibility,
};
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::servers::{ChannelChange, ChannelDraft, GroupDmChange};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/servers/{server_id}/channels", post(create_channel).get(server_channels))
        .route("/api/v1/channels", post(create_group_dm))
        .route("/api/v1/users/@me/channels", get(group_dms))
        .route("/api/v1/channels/{channel_id}", get(channel).patch(edit_channel).delete(delete_channel))
        .route("/api/v1/channels/{channel_id}/recipients/{user_id}", put(add_recipient).delete(remove_recipient))
}

/// A topic: trimmed, at most [`TOPIC_MAX_CHARS`]; empty clears it. Line breaks are allowed.
fn topic(raw: &str) -> ApiResult<Option<String>> {
    let text = raw.trim();
    if text.chars().count() > TOPIC_MAX_CHARS {
        return Err(ApiError::Validation(format!("topic must be at most {TOPIC_MAX_CHARS} characters long")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::Validation("topic may not contain control characters".into()));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn group_dm_name(raw: Option<&str>) -> ApiResult<String> {
    raw.map_or(Ok(String::new()), |n| display_text(n, "group DM name", 0, NAME_MAX_CHARS).map_err(ApiError::Validation))
}

// ---- server channels ---------------------------------------------------------------------

/// Create a channel in a server (manage channels). Text and voice channel names are lowercased
/// with spaces turned into `-`. A channel may sit in a category of the same server (a category
/// in none); without overwrites it takes its category's. `CHANNEL_CREATE` goes to the members
/// who may view it.
#[utoipa::path(post, path = "/api/v1/servers/{server_id}/channels", tag = "channels", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    request_body = NewChannel,
    responses(
        (status = 201, body = Channel),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage channels permission; overwrites granting what the caller lacks"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 409, body = ApiErrorBody, description = "the server has the maximum number of channels"),
        (status = 422, body = ApiErrorBody, description = "bad name or topic; kind group_dm; parent not a category of this \
            server; a category with a parent; invalid overwrites (unknown bits, unknown target, duplicates, over 100)"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn create_channel(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<NewChannel>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw, "server id")?;
    if body.kind == ChannelKind::GroupDm {
        return Err(ApiError::Validation(
            "a server channel is text, voice or category; group DMs are made with POST /api/v1/channels".into(),
        ));
    }
    let draft = ChannelDraft {
        id: ChannelId(state.ids.next_id()),
        name: channel_name(&body.name, body.kind).map_err(ApiError::Validation)?,
        kind: body.kind,
        parent_id: body.parent_id,
        topic: body.topic.as_deref().map(topic).transpose()?.flatten(),
        position: body.position,
        overwrites: body.overwrites,
        user_limit: user_limit(body.user_limit, body.kind)?.unwrap_or(0),
    };
    let created = state.store.create_channel(server, auth.user.id, &draft, now_ms()).await?;
    tracing::info!(user = %auth.user.id, server = %server, channel = %created.id, "channel created");
    let readers = state.store.channel_readers(created.id).await.unwrap_or_default();
    publish_to(&state, readers, event_name::CHANNEL_CREATE, &created).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The channels of a server the caller may view, by position.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/channels", tag = "channels", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = Vec<Channel>),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn server_channels(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<Vec<Channel>>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    Ok(Json(state.store.channels_for(server, auth.user.id).await?))
}

/// A channel the caller may view: a server channel (with its overwrites) or a group DM they
/// are in (with its members).
#[utoipa::path(get, path = "/api/v1/channels/{channel_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    responses(
        (status = 200, body = Channel),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not view it"),
    ))]
pub async fn channel(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<Json<Channel>> {
    let channel: ChannelId = parse_id(&raw, "channel id")?;
    Ok(Json(state.store.channel_for(channel, auth.user.id).await?))
}

/// Edit a channel. A server channel: manage channels there; `parent_id: null` takes it out of
/// its category; `overwrites` replaces them all (only bits the caller holds may change). A
/// group DM: any member renames it (only `name`; empty clears it). `CHANNEL_UPDATE` goes to
/// those who may view it; a channel that becomes visible or invisible to a member is created
/// or deleted for them.
#[utoipa::path(patch, path = "/api/v1/channels/{channel_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    request_body = EditChannel,
    responses(
        (status = 200, body = Channel),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage channels permission there; overwrites beyond the caller's"),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not view it"),
        (status = 422, body = ApiErrorBody, description = "bad name or topic; parent not a category of this server; a \
            category into a category; invalid overwrites; a field other than name for a group DM"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn edit_channel(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<EditChannel>,
) -> ApiResult<Json<Channel>> {
    state.limiters.user_write(auth.user.id)?;
    let id: ChannelId = parse_id(&raw, "channel id")?;
    let current = state.store.channel_for(id, auth.user.id).await?;
    let Some(server) = current.server_id else {
        if body.topic.is_some()
            || body.position.is_some()
            || body.parent_id.is_some()
            || body.overwrites.is_some()
            || body.user_limit.is_some()
        {
            return Err(ApiError::Validation("a group DM has only a name to change".into()));
        }
        let Some(name) = body.name.as_deref() else { return Ok(Json(current)) };
        let renamed = state.store.rename_group_dm(id, auth.user.id, &group_dm_name(Some(name))?).await?;
        let members: Vec<UserId> = renamed.recipients.iter().map(|u| u.id).collect();
        publish_to(&state, members, event_name::CHANNEL_UPDATE, &renamed).await;
        return Ok(Json(renamed));
    };
    if let Some(name) = body.name.as_deref() {
        // Checked for form here, normalised for the kind by the store.
        display_text(name, "channel name", 1, NAME_MAX_CHARS).map_err(ApiError::Validation)?;
    }
    let change = ChannelChange {
        name: body.name.clone(),
        topic: body.topic.as_deref().map(topic).transpose()?,
        position: body.position,
        parent_id: body.parent_id,
        overwrites: body.overwrites.clone(),
        user_limit: body.user_limit.map(|l| user_limit(Some(l), ChannelKind::Voice)).transpose()?.flatten(),
    };
    let before = visibility(&state, server).await;
    let edit = state.store.edit_channel(id, auth.user.id, &change, channel_name).await?;
    tracing::info!(user = %auth.user.id, server = %server, channel = %id, "channel edited");
    let after = visibility(&state, server).await;
    announce_visibility(&state, server, &before, &after).await;
    Ok(Json(edit.after))
}

/// Delete a channel. A server channel: manage channels there; its messages go with it, and a
/// category's channels move out of it. A group DM: the caller leaves it (as removing
/// themself). `CHANNEL_DELETE` goes to those who could view it.
#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "channel id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage channels permission there"),
        (status = 404, body = ApiErrorBody, description = "no such channel, or the caller may not view it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn delete_channel(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let id: ChannelId = parse_id(&raw, "channel id")?;
    let current = state.store.channel_for(id, auth.user.id).await?;
    if current.server_id.is_none() {
        let change = state.store.remove_recipient(id, auth.user.id, auth.user.id).await?;
        announce_group_dm_removal(&state, id, auth.user.id, &change).await;
        return Ok(StatusCode::NO_CONTENT);
    }
    let removal = state.store.delete_channel(id, auth.user.id).await?;
    tracing::info!(user = %auth.user.id, channel = %id, "channel deleted");
    let removed = Removed { id: id.to_string(), server_id: removal.channel.server_id };
    publish_to(&state, removal.readers, event_name::CHANNEL_DELETE, &removed).await;
    announce_channel_updates(&state, &removal.orphans).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- group DMs ---------------------------------------------------------------------------

/// Create a group DM with 1 to 24 other users (enabled accounts, each once, not the caller);
/// the caller owns it. `CHANNEL_CREATE` goes to every member.
#[utoipa::path(post, path = "/api/v1/channels", tag = "channels", security(("bearer" = [])), request_body = NewGroupDm,
    responses(
        (status = 201, body = Channel),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "a guest account, or a block stands between the caller and a recipient"),
        (status = 422, body = ApiErrorBody, description = "no recipient, over 24, twice the same, the caller, an unknown or \
            disabled user, or a bad name"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn create_group_dm(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewGroupDm>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    state.limiters.user_write(auth.user.id)?;
    crate::routes::servers::not_guest(&auth, "a guest account starts no group DM")?;
    let others = body.recipients;
    if others.is_empty() || others.len() >= GROUP_DM_MAX_MEMBERS {
        return Err(ApiError::Validation(format!(
            "a group DM has 2 to {GROUP_DM_MAX_MEMBERS} members: give 1 to {} recipients besides yourself",
            GROUP_DM_MAX_MEMBERS - 1
        )));
    }
    if others.contains(&auth.user.id) {
        return Err(ApiError::Validation("recipients are the other members; you are in it already".into()));
    }
    if others.iter().collect::<HashSet<_>>().len() != others.len() {
        return Err(ApiError::Validation("a recipient is listed twice".into()));
    }
    let name = group_dm_name(body.name.as_deref())?;
    for other in &others {
        crate::routes::social::not_blocked(&state, auth.user.id, *other).await?;
    }
    let created = state.store.create_group_dm(ChannelId(state.ids.next_id()), auth.user.id, &others, &name, now_ms()).await?;
    tracing::info!(user = %auth.user.id, channel = %created.id, members = created.recipients.len(), "group DM created");
    let members: Vec<UserId> = created.recipients.iter().map(|u| u.id).collect();
    publish_to(&state, members, event_name::CHANNEL_CREATE, &created).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller's group DMs.
#[utoipa::path(get, path = "/api/v1/users/@me/channels", tag = "channels", security(("bearer" = [])),
    responses((status = 200, body = Vec<Channel>), (status = 401, body = ApiErrorBody)))]
pub async fn group_dms(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<Vec<Channel>>> {
    Ok(Json(state.store.group_dms(auth.user.id).await?))
}

/// Add someone to a group DM the caller is in (any member may; at most 25 members). Adding a
/// member already in changes nothing. `CHANNEL_CREATE` goes to the newcomer,
/// `CHANNEL_UPDATE` to the others.
#[utoipa::path(put, path = "/api/v1/channels/{channel_id}/recipients/{user_id}", tag = "channels", security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "group DM id"), ("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "a guest account, or a block stands between the caller and that user"),
        (status = 404, body = ApiErrorBody, description = "no such group DM (or the caller is not in it), or no such user"),
        (status = 409, body = ApiErrorBody, description = "the group DM is full"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn add_recipient(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_channel, raw_user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    crate::routes::servers::not_guest(&auth, "a guest account adds nobody to a group DM")?;
    let id: ChannelId = parse_id(&raw_channel, "channel id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    if user != auth.user.id {
        crate::routes::social::not_blocked(&state, auth.user.id, user).await?;
    }
    let change = state.store.add_recipient(id, auth.user.id, user, now_ms()).await?;
    if let (true, Some(channel)) = (change.changed, &change.channel) {
        tracing::info!(user = %auth.user.id, channel = %id, added = %user, "group DM member added");
        publish_to(&state, [user], event_name::CHANNEL_CREATE, channel).await;
        let others: Vec<UserId> = channel.recipients.iter().map(|u| u.id).filter(|u| *u != user).collect();
        publish_to(&state, others, event_name::CHANNEL_UPDATE, channel).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Remove someone from a group DM: its owner removes anyone; anyone removes themself (leaves).
/// When the owner leaves, the oldest member owns it; when the last member leaves, it is
/// deleted. `CHANNEL_DELETE` goes to the one removed, `CHANNEL_UPDATE` to the others.
#[utoipa::path(delete, path = "/api/v1/channels/{channel_id}/recipients/{user_id}", tag = "channels",
    security(("bearer" = [])),
    params(("channel_id" = String, Path, description = "group DM id"), ("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "removing someone else without owning the group DM"),
        (status = 404, body = ApiErrorBody, description = "no such group DM (or the caller is not in it), or that user is not in it"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn remove_recipient(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_channel, raw_user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let id: ChannelId = parse_id(&raw_channel, "channel id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    let change = state.store.remove_recipient(id, auth.user.id, user).await?;
    announce_group_dm_removal(&state, id, user, &change).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn announce_group_dm_removal(state: &AppState, id: ChannelId, removed: UserId, change: &GroupDmChange) {
    tracing::info!(channel = %id, removed = %removed, "group DM member removed");
    publish_to(state, [removed], event_name::CHANNEL_DELETE, &Removed { id: id.to_string(), server_id: None }).await;
    if let Some(channel) = &change.channel {
        let others: Vec<UserId> = channel.recipients.iter().map(|u| u.id).collect();
        publish_to(state, others, event_name::CHANNEL_UPDATE, channel).await;
    }
}

/// Checks a voice channel's user limit (only voice channels have one).
fn user_limit(limit: Option<u32>, kind: ChannelKind) -> ApiResult<Option<u32>> {
    match limit {
        None | Some(0) => Ok(limit),
        Some(_) if kind != ChannelKind::Voice => Err(ApiError::Validation("only a voice channel has a user limit".into())),
        Some(l) if l > copains_client_core::servers::USER_LIMIT_MAX => {
            Err(ApiError::Validation(format!("user_limit is 0 (none) to {}", copains_client_core::servers::USER_LIMIT_MAX)))
        }
        Some(l) => Ok(Some(l)),
    }
}
