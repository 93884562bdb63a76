//! Server moderation: timeouts and the audit log. Kicks and bans are in [`super::servers`],
//! voice moderation in [`super::voice`]; each writes its audit entry too.
//!
//! A timed-out member keeps viewing the channels and may listen in voice; the server refuses
//! their sends and reactions (403) and mutes them in voice until the timeout ends, though it
//! cannot read what they would have said.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{
    AuditAction, AuditLog, Member, MessagesPurged, NewTimeout, PURGE_MAX_SECS, REASON_MAX_CHARS, TIMEOUT_MAX_SECS,
};
use copains_client_core::{ApiErrorBody, ServerId, UserId};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::servers::{display_text, page_limit, parse_id, publish_to};
use crate::state::AppState;
use crate::store::audit::AUDIT_PAGE_MAX;
use crate::store::{now_ms, AuditQuery};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/servers/{server_id}/members/{user_id}/timeout", put(timeout).delete(lift_timeout))
        .route("/api/v1/servers/{server_id}/members/{user_id}/messages", axum::routing::delete(purge_messages))
        .route("/api/v1/servers/{server_id}/audit-log", get(audit_log))
}

/// Time a member out (moderate members; a member whose highest role is below the caller's,
/// not an administrator): until it ends they may not send, react, speak or share video in
/// the server, and a moderator's timeout replaces any running. `MEMBER_UPDATE` (with
/// `timeout_until`) goes to every member, and again when it ends.
#[utoipa::path(put, path = "/api/v1/servers/{server_id}/members/{user_id}/timeout", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    request_body = NewTimeout,
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no time out members permission; the member is at or above the caller, an administrator, or the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), or no such member"),
        (status = 422, body = ApiErrorBody, description = "duration 0 or over 28 days; reason over 512 characters"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn timeout(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewTimeout>,
) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    if !(1..=TIMEOUT_MAX_SECS).contains(&body.duration_secs) {
        return Err(ApiError::Validation(format!("duration_secs must be 1 to {TIMEOUT_MAX_SECS} (28 days)")));
    }
    let reason = match body.reason.as_deref() {
        Some(r) => display_text(r, "reason", 0, REASON_MAX_CHARS).map_err(ApiError::Validation)?,
        None => String::new(),
    };
    // A repeat offender's timeout doubles with each one given before, up to the longest.
    let secs = if body.escalate {
        let before = state.store.timeouts_given(server, user).await?;
        body.duration_secs.saturating_mul(1u64.checked_shl(before.min(32)).unwrap_or(u64::MAX)).min(TIMEOUT_MAX_SECS)
    } else {
        body.duration_secs
    };
    let now = now_ms();
    let ends_at = now + secs as i64 * 1000;
    let (member, given) = state
        .store
        .set_timeout(server, auth.user.id, user, ends_at, Some(reason.as_str()).filter(|r| !r.is_empty()), now)
        .await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, secs, given, "member timed out");
    announce_member(&state, server, &member).await;
    announce_end(state, server, user, ends_at);
    Ok(StatusCode::NO_CONTENT)
}

/// When the timeout ending at `ends_at` ends, the member (and voice, which checks again on
/// `MEMBER_UPDATE`) learns it. The timer runs to just past the end, so that the end reads as
/// passed on the clock.
fn announce_end(state: AppState, server: ServerId, user: UserId, ends_at: i64) {
    tokio::spawn(async move {
        let wait = u64::try_from(ends_at.saturating_sub(now_ms())).unwrap_or(0) + 1;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match state.store.member_for(server, user, user).await {
            // Still timed out: a later timeout replaced this one and has its own timer.
            Ok(m) if m.timeout_until.is_some() => {}
            Ok(m) => announce_member(&state, server, &m).await,
            // Gone from the server meanwhile: nothing to say.
            Err(_) => {}
        }
    });
}

/// At start: the timers of the timeouts still running (those of the last run ended with it).
pub async fn schedule_running_timeouts(state: &AppState) {
    match state.store.running_timeouts(now_ms()).await {
        Ok(running) => {
            for (server, user, ends_at) in running {
                announce_end(state.clone(), server, user, ends_at);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the timeouts running"),
    }
}

/// Lift a member's timeout before it ends (moderate members; a member below the caller).
/// `MEMBER_UPDATE` goes to every member.
#[utoipa::path(delete, path = "/api/v1/servers/{server_id}/members/{user_id}/timeout", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no time out members permission; the member is at or above the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), no such member, or no timeout runs"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn lift_timeout(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    let member = state.store.clear_timeout(server, auth.user.id, user, now_ms()).await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, "timeout lifted");
    announce_member(&state, server, &member).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn announce_member(state: &AppState, server: ServerId, member: &Member) {
    let members = match state.store.member_ids(server).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read members for events");
            return;
        }
    };
    publish_to(state, members, event_name::MEMBER_UPDATE, member).await;
}

/// The filters of the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// At most this many (1–100; default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Entries before this one (the `next_before` of the previous page).
    pub before: Option<String>,
    /// Of this action only (`member_ban`, `member_timeout`, `channel_update`…).
    #[param(value_type = Option<AuditAction>)]
    pub action: Option<String>,
    /// By this user only.
    pub actor_id: Option<String>,
    /// On this user, channel, role or message only.
    pub target_id: Option<String>,
}

/// The server's audit log, newest first (view audit log): every moderation and settings
/// change, who made it, on what, why, and what changed. Never what anyone wrote.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/audit-log", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), AuditParams),
    responses(
        (status = 200, body = AuditLog),
        (status = 400, body = ApiErrorBody, description = "a filter that is not an id, an unknown action, or a limit out of 1–100"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no view audit log permission"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn audit_log(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult<Json<AuditLog>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    let Query(p) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = page_limit(p.limit, 50, AUDIT_PAGE_MAX)?;
    let action = match p.action.as_deref() {
        None | Some("") => None,
        Some(a) => Some(AuditAction::parse(a).ok_or_else(|| ApiError::Malformed(format!("unknown action {a:?}")))?),
    };
    let before = p.before.as_deref().map(|b| parse_id::<i64>(b, "before")).transpose()?;
    let actor = p.actor_id.as_deref().filter(|a| !a.is_empty()).map(|a| parse_id::<UserId>(a, "actor_id")).transpose()?;
    let target = match p.target_id.as_deref() {
        None | Some("") => None,
        Some(t) => Some(parse_id::<i64>(t, "target_id")?.to_string()),
    };
    let q = AuditQuery { limit, before, action, actor, target };
    Ok(Json(state.store.audit_log(server, auth.user.id, &q).await?))
}

/// How far back a purge goes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeParams {
    /// Messages of the last this many seconds (1 to 604 800, 7 days; default 3600).
    #[param(minimum = 1, maximum = 604_800)]
    pub within_secs: Option<u64>,
}

/// Delete a member's (or a former member's) recent messages in every channel of the server,
/// with the replies in threads they started (manage messages; a member must be below the
/// caller). `MESSAGE_DELETE` goes to each channel's readers; one audit entry.
#[utoipa::path(delete, path = "/api/v1/servers/{server_id}/members/{user_id}/messages", operation_id = "purge_member_messages", tag = "servers", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id"), PurgeParams),
    responses(
        (status = 200, body = MessagesPurged),
        (status = 400, body = ApiErrorBody, description = "within_secs is not a number"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no manage messages permission; the member is at or above the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member)"),
        (status = 422, body = ApiErrorBody, description = "within_secs 0 or over 7 days"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn purge_messages(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
    params: Result<Query<PurgeParams>, QueryRejection>,
) -> ApiResult<Json<MessagesPurged>> {
    state.limiters.delete(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let user: UserId = parse_id(&raw_user, "user id")?;
    let Query(p) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let secs = p.within_secs.unwrap_or(3600);
    if !(1..=PURGE_MAX_SECS).contains(&secs) {
        return Err(ApiError::Validation(format!("within_secs must be 1 to {PURGE_MAX_SECS}")));
    }
    let since = now_ms() - i64::try_from(secs).unwrap_or(0) * 1000;
    let deleted = state.store.purge_messages(server, auth.user.id, user, since, secs, false).await?;
    tracing::info!(user = %auth.user.id, server = %server, target = %user, deleted = deleted.len(), "messages purged");
    crate::routes::channel_messages::announce_deleted(&state, &deleted).await;
    Ok(Json(MessagesPurged { deleted: deleted.len() as u64 }))
}
