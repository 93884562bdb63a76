//! `/api/v1/admin/`: platform administration. Without a token every route answers 401; an
//! account that is neither moderator nor admin gets 403. Moderators reach the account routes
//! (search, view, disable, enable, end sessions) and act on members only; admins reach every
//! route and act on members and moderators. Nobody acts on a role at or above their own, nor
//! on themselves.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use copains_client_core::admin::{
    AdminServer, AdminServers, AdminSessions, AdminUser, AdminUsers, BanKind, BansCreated, NewPlatformBan, NodeHealth,
    PlatformAction, PlatformAuditLog, PlatformBans, PlatformStats, SetPlatformRole, Severity, TakeDown, UserDeleted,
    ADMIN_SERVERS_PAGE_MAX, ADMIN_USERS_PAGE_MAX, BAN_REASON_MAX_CHARS, PLATFORM_AUDIT_PAGE_MAX, PLATFORM_BANS_PAGE_MAX,
};
use copains_client_core::api::PlatformRole;
use copains_client_core::servers::Removed;
use copains_client_core::{ApiErrorBody, ServerId, UserId};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::bus::{BusEvent, Topic};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::auth::announce_revocation;
use crate::routes::servers::{page_limit, parse_id, publish_to};
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::security::BanOrder;
use copains_client_core::gateway::event_name;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/users", get(users))
        .route("/api/v1/admin/users/{user_id}", get(user).delete(delete_user))
        .route("/api/v1/admin/users/{user_id}/disable", post(disable))
        .route("/api/v1/admin/users/{user_id}/enable", post(enable))
        .route("/api/v1/admin/users/{user_id}/logout", post(logout))
        .route("/api/v1/admin/users/{user_id}/role", put(set_role))
        .route("/api/v1/admin/users/{user_id}/sessions", get(user_sessions))
        .route("/api/v1/admin/bans", get(bans).post(create_ban))
        .route("/api/v1/admin/bans/{ban_id}", axum::routing::delete(lift_ban))
        .route("/api/v1/admin/servers", get(servers))
        .route("/api/v1/admin/servers/{server_id}", get(server))
        .route("/api/v1/admin/servers/{server_id}/take-down", post(take_down))
        .route("/api/v1/admin/servers/{server_id}/restore", post(restore))
        .route("/api/v1/admin/stats", get(stats))
        .route("/api/v1/admin/audit-log", get(audit_log))
}

fn rank(role: PlatformRole) -> u8 {
    match role {
        PlatformRole::Member => 0,
        PlatformRole::Moderator => 1,
        PlatformRole::Admin => 2,
    }
}

/// The caller, if platform staff (moderator or admin).
fn staff(auth: &Authenticated) -> ApiResult<PlatformRole> {
    match auth.user.platform_role {
        PlatformRole::Member => Err(ApiError::Forbidden("platform moderators and admins only")),
        role => Ok(role),
    }
}

/// The caller, if a platform admin.
fn admin(auth: &Authenticated) -> ApiResult<()> {
    match auth.user.platform_role {
        PlatformRole::Admin => Ok(()),
        _ => Err(ApiError::Forbidden("platform admins only")),
    }
}

/// The account `raw` names, if the caller (staff) may act on it: someone else, below them.
async fn target(state: &AppState, auth: &Authenticated, raw: &str) -> ApiResult<AdminUser> {
    let role = staff(auth)?;
    let id: UserId = parse_id(raw, "user id")?;
    let user = state.store.admin_user(id).await?.ok_or(ApiError::NotFound("no such user"))?;
    if id == auth.user.id {
        return Err(ApiError::Forbidden("not on your own account"));
    }
    if rank(user.platform_role) >= rank(role) {
        return Err(ApiError::Forbidden("that account's role is at or above yours"));
    }
    Ok(user)
}

/// A list's search text: at most 64 characters, trimmed (absent: everything).
fn search_query(raw: Option<String>) -> ApiResult<String> {
    let query = raw.unwrap_or_default();
    if query.chars().count() > 64 {
        return Err(ApiError::Malformed("query must be at most 64 characters".into()));
    }
    Ok(query.trim().to_owned())
}

/// Cuts a page read with one extra row back to `limit`; the cursor of the next page, if that
/// extra row was there.
fn next_cursor<T>(page: &mut Vec<T>, limit: u32, id: impl Fn(&T) -> String) -> Option<String> {
    if page.len() <= limit as usize {
        return None;
    }
    page.truncate(limit as usize);
    page.last().map(id)
}

/// Filters of the account list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersParams {
    /// Only accounts whose username or display name contains this (case-insensitive; at most
    /// 64 characters).
    #[param(max_length = 64)]
    pub query: Option<String>,
    /// At most this many (1–200; default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// After this account (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
}

/// Accounts, by id, a page at a time (moderators and admins).
#[utoipa::path(get, path = "/api/v1/admin/users", operation_id = "admin_users", tag = "admin", security(("bearer" = [])),
    params(UsersParams),
    responses(
        (status = 200, body = AdminUsers),
        (status = 400, body = ApiErrorBody, description = "a limit out of 1–200, a query over 64 characters, a cursor that is not an id"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff"),
    ))]
pub async fn users(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<UsersParams>, QueryRejection>,
) -> ApiResult<Json<AdminUsers>> {
    staff(&auth)?;
    let Query(p) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = page_limit(p.limit, 50, ADMIN_USERS_PAGE_MAX)?;
    let query = search_query(p.query)?;
    let cursor = p.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| parse_id::<UserId>(c, "cursor")).transpose()?;
    let mut users = state.store.admin_users(&query, limit + 1, cursor).await?;
    let next_cursor = next_cursor(&mut users, limit, |u| u.id.to_string());
    Ok(Json(AdminUsers { users, next_cursor }))
}

/// One account (moderators and admins).
#[utoipa::path(get, path = "/api/v1/admin/users/{user_id}", operation_id = "admin_user", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 200, body = AdminUser),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff"),
        (status = 404, body = ApiErrorBody),
    ))]
pub async fn user(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<Json<AdminUser>> {
    staff(&auth)?;
    let id: UserId = parse_id(&raw, "user id")?;
    Ok(Json(state.store.admin_user(id).await?.ok_or(ApiError::NotFound("no such user"))?))
}

/// An account's signed-in sessions, with the fingerprint of each one's client (staff) and the
/// address it was last seen from (admins; kept for `security.ip_retention_secs`).
#[utoipa::path(get, path = "/api/v1/admin/users/{user_id}/sessions", operation_id = "admin_user_sessions", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 200, body = AdminSessions),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff, or the account's role is at or above the caller's"),
        (status = 404, body = ApiErrorBody),
    ))]
pub async fn user_sessions(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<AdminSessions>> {
    let role = staff(&auth)?;
    let id: UserId = parse_id(&raw, "user id")?;
    let user = state.store.admin_user(id).await?.ok_or(ApiError::NotFound("no such user"))?;
    if id != auth.user.id && rank(user.platform_role) >= rank(role) {
        return Err(ApiError::Forbidden("that account's role is at or above yours"));
    }
    let sessions = state
        .store
        .session_clients(id)
        .await?
        .into_iter()
        .map(|(mut session, sealed)| {
            if role == PlatformRole::Admin {
                session.ip = sealed.and_then(|s| match state.secrets.open(&crate::secrets::session_ip(session.id), &s) {
                    Ok(ip) => String::from_utf8(ip).ok(),
                    Err(e) => {
                        tracing::warn!(error = %e, "a session's sealed address does not open");
                        None
                    }
                });
            }
            session
        })
        .collect();
    Ok(Json(AdminSessions { sessions }))
}

/// Ends `ended` sessions everywhere at once: their tokens stop working and their gateway
/// connections close (the pages show the sign-in screen).
pub(crate) async fn end_sessions(state: &AppState, user: UserId, ended: Vec<copains_client_core::SessionId>) {
    for session in ended {
        announce_revocation(state, user, session).await;
    }
}

/// After a change to an account (role, disabled or not): `USER_UPDATE` to its devices, which
/// also makes every node's session cache read the account anew at its next request.
async fn announce_account(state: &AppState, user: UserId) {
    state.sessions.forget_user(user);
    match state.store.user(user).await {
        Ok(Some(record)) => {
            state.publish(BusEvent::new(Topic::user(user), event_name::USER_UPDATE, &record.user)).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read an account to announce its change"),
    }
}

/// The account changed since the caller looked (another staff action won the race).
const CHANGED: &str = "that account changed meanwhile; look again";

/// Disable an account: it cannot sign in, and every session of it ends at once (staff, on an
/// account below them).
#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/disable", operation_id = "admin_disable_user", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff; the account is the caller's, or its role is at or above the caller's"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "disabled already, or the account changed meanwhile"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn disable(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let user = target(&state, &auth, &raw).await?;
    if user.disabled_at.is_some() {
        return Err(ApiError::Conflict("that account is disabled already".into()));
    }
    let ended = state
        .store
        .staff_action(auth.user.id, auth.user.platform_role, user.id, PlatformAction::UserDisable, Some(true), now_ms())
        .await?
        .ok_or_else(|| ApiError::Conflict(CHANGED.into()))?;
    tracing::warn!(actor = %auth.user.id, target = %user.id, sessions = ended.len(), "account disabled");
    announce_account(&state, user.id).await;
    end_sessions(&state, user.id, ended).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Enable a disabled account again (staff, on an account below them).
#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/enable", operation_id = "admin_enable_user", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff; the account is the caller's, or its role is at or above the caller's"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "not disabled, or the account changed meanwhile"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn enable(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let user = target(&state, &auth, &raw).await?;
    if user.disabled_at.is_none() {
        return Err(ApiError::Conflict("that account is not disabled".into()));
    }
    state
        .store
        .staff_action(auth.user.id, auth.user.platform_role, user.id, PlatformAction::UserEnable, Some(false), now_ms())
        .await?
        .ok_or_else(|| ApiError::Conflict(CHANGED.into()))?;
    announce_account(&state, user.id).await;
    tracing::warn!(actor = %auth.user.id, target = %user.id, "account enabled");
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of an account at once (staff, on an account below them): each of its
/// devices is signed out, as at a logout.
#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/logout", operation_id = "admin_logout_user", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff; the account is the caller's, or its role is at or above the caller's"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "the account changed meanwhile"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn logout(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let user = target(&state, &auth, &raw).await?;
    let ended = state
        .store
        .staff_action(auth.user.id, auth.user.platform_role, user.id, PlatformAction::UserLogout, None, now_ms())
        .await?
        .ok_or_else(|| ApiError::Conflict(CHANGED.into()))?;
    tracing::warn!(actor = %auth.user.id, target = %user.id, sessions = ended.len(), "account signed out by staff");
    end_sessions(&state, user.id, ended).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Change an account's platform role (admins, on an account below them; any role up to
/// admin).
#[utoipa::path(put, path = "/api/v1/admin/users/{user_id}/role", operation_id = "admin_set_role", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    request_body = SetPlatformRole,
    responses(
        (status = 200, body = AdminUser),
        (status = 400, body = ApiErrorBody, description = "not a role"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin; the account is the caller's, or an admin"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "the account changed meanwhile"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn set_role(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<SetPlatformRole>,
) -> ApiResult<Json<AdminUser>> {
    state.limiters.user_write(auth.user.id)?;
    admin(&auth)?;
    let user = target(&state, &auth, &raw).await?;
    state
        .store
        .set_platform_role(auth.user.id, auth.user.platform_role, user.id, body.role, now_ms())
        .await?
        .ok_or_else(|| ApiError::Conflict(CHANGED.into()))?;
    // Requests read the role from the session cache, on every node: the next one reads it anew.
    announce_account(&state, user.id).await;
    tracing::warn!(actor = %auth.user.id, target = %user.id, role = body.role.as_str(), "platform role changed");
    Ok(Json(state.store.admin_user(user.id).await?.ok_or(ApiError::NotFound("no such user"))?))
}

/// Live figures of this node, with the last hour a sample a minute (admins).
#[utoipa::path(get, path = "/api/v1/admin/stats", operation_id = "admin_stats", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, body = PlatformStats),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin"),
    ))]
pub async fn stats(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<PlatformStats>> {
    admin(&auth)?;
    let (users, disabled, servers, messages) = {
        let now = now_ms();
        state.store.platform_counts(now - 60_000, now + 1).await?
    };
    let (rooms, participants) = state.voice.get().map_or((0, 0), |v| v.counts());
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let health = node_health(&state).await;
    let last_hour = state.last_hour.lock().iter().copied().collect();
    Ok(Json(PlatformStats {
        users: count(users),
        disabled_users: count(disabled),
        servers: count(servers),
        gateway_sessions: count(state.metrics.gateway_sessions.get()),
        online_users: count(state.metrics.gateway_users.get()),
        voice_rooms: rooms as u64,
        voice_participants: participants as u64,
        messages_last_minute: count(messages),
        resident_memory_bytes: crate::metrics::resident_memory_bytes(),
        last_hour,
        health: Some(health),
    }))
}

/// This node's health, read now.
async fn node_health(state: &AppState) -> NodeHealth {
    // A database that does not answer is reported, not waited on.
    const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    let database_ok = tokio::time::timeout(WAIT, state.store.ping()).await.unwrap_or(false);
    let latency = started.elapsed();
    let database_bytes = match database_ok {
        true => tokio::time::timeout(WAIT, state.store.database_bytes()).await.ok().and_then(Result::ok),
        false => None,
    };
    let disk = state.data_dir.get().and_then(|dir| rustix::fs::statvfs(dir).ok());
    NodeHealth {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: state.started_at,
        accepting: state.accepting.load(std::sync::atomic::Ordering::SeqCst),
        database: state.store.kind().name().to_owned(),
        database_ok,
        database_latency_us: database_ok.then(|| u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)),
        database_bytes,
        disk_free_bytes: disk.as_ref().map(|d| d.f_bavail.saturating_mul(d.f_frsize)),
        disk_total_bytes: disk.as_ref().map(|d| d.f_blocks.saturating_mul(d.f_frsize)),
        open_files: std::fs::read_dir("/proc/self/fd").ok().map(|fds| fds.count() as u64),
        cpus: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
    }
}

/// Filters of the platform audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlatformAuditParams {
    /// At most this many (1–100; default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Entries before this one (the `next_before` of the previous page).
    pub before: Option<String>,
    /// Of this action only (`user_disable`, `role_change`…).
    #[param(value_type = Option<PlatformAction>)]
    pub action: Option<String>,
    /// At or above this severity only (`info`, `warning`, `critical`).
    #[param(value_type = Option<Severity>)]
    pub severity: Option<String>,
    /// By this account only.
    pub actor_id: Option<String>,
    /// On this account only.
    pub target_id: Option<String>,
}

/// The platform audit log, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/audit-log", operation_id = "admin_audit_log", tag = "admin", security(("bearer" = [])),
    params(PlatformAuditParams),
    responses(
        (status = 200, body = PlatformAuditLog),
        (status = 400, body = ApiErrorBody, description = "an unknown action or severity, a filter that is not an id, or a limit out of 1–100"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin"),
    ))]
pub async fn audit_log(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<PlatformAuditParams>, QueryRejection>,
) -> ApiResult<Json<PlatformAuditLog>> {
    admin(&auth)?;
    let Query(p) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = page_limit(p.limit, 50, PLATFORM_AUDIT_PAGE_MAX)?;
    let action = match p.action.as_deref() {
        None | Some("") => None,
        Some(a) => Some(PlatformAction::parse(a).ok_or_else(|| ApiError::Malformed(format!("unknown action {a:?}")))?),
    };
    let id = |v: Option<&str>, what: &str| v.filter(|v| !v.is_empty()).map(|v| parse_id::<i64>(v, what)).transpose();
    let before = id(p.before.as_deref(), "before")?;
    let actor = id(p.actor_id.as_deref(), "actor_id")?.map(UserId);
    let target = id(p.target_id.as_deref(), "target_id")?.map(UserId);
    let severity = match p.severity.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Severity::parse(s).ok_or_else(|| ApiError::Malformed(format!("unknown severity {s:?}")))?),
    };
    Ok(Json(state.store.platform_audit(limit, before, action, actor, target, severity).await?))
}

/// The shortest and longest timed ban, in seconds (a minute; a year).
const BAN_SECS: std::ops::RangeInclusive<u64> = 60..=31_536_000;

/// Ban an account from the platform (staff, on an account below them): it cannot sign in,
/// every session of it ends at once, and by default the clients it was last seen from (their
/// fingerprints) can neither sign in nor register. Permanent, or for `duration_secs`.
#[utoipa::path(post, path = "/api/v1/admin/bans", operation_id = "admin_create_ban", tag = "admin", security(("bearer" = [])),
    request_body = NewPlatformBan,
    responses(
        (status = 201, body = BansCreated),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff; the account is the caller's, or its role is at or above the caller's"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "banned already, or the account changed meanwhile"),
        (status = 422, body = ApiErrorBody, description = "a reason over 512 characters, or a duration out of 60 s to a year"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn create_ban(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewPlatformBan>,
) -> ApiResult<(StatusCode, Json<BansCreated>)> {
    state.limiters.user_write(auth.user.id)?;
    let user = target(&state, &auth, &body.user_id.to_string()).await?;
    let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > BAN_REASON_MAX_CHARS) {
        return Err(ApiError::Validation(format!("a reason is at most {BAN_REASON_MAX_CHARS} characters")));
    }
    if body.duration_secs.is_some_and(|d| !BAN_SECS.contains(&d)) {
        return Err(ApiError::Validation("a ban lasts from 60 seconds to a year (31536000), or has no duration".into()));
    }
    let now = now_ms();
    if state.store.ban_in_force(Some(user.id), "", now).await?.is_some() {
        return Err(ApiError::Conflict("that account is banned already".into()));
    }
    // One id for the account's ban, one per session's fingerprint at most (and a spare for a
    // sign-in that lands meanwhile).
    let ids: Vec<i64> = (0..user.sessions as usize + 2).map(|_| state.ids.next_id()).collect();
    let order = BanOrder {
        actor: auth.user.id,
        actor_role: auth.user.platform_role,
        user: user.id,
        reason,
        expires_at: body.duration_secs.map(|d| now + i64::try_from(d).unwrap_or(0) * 1000),
        fingerprints: body.fingerprints,
        ids: &ids,
        now,
    };
    let (bans, ended) = state.store.ban_account(&order).await?.ok_or_else(|| ApiError::Conflict(CHANGED.into()))?;
    tracing::warn!(actor = %auth.user.id, target = %user.id, bans = bans.len(), sessions = ended.len(), "account banned");
    end_sessions(&state, user.id, ended).await;
    Ok((StatusCode::CREATED, Json(BansCreated { bans })))
}

/// Filters of the ban list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BansParams {
    /// At most this many (1–200; default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Bans before this one (the `next_before` of the previous page).
    pub before: Option<String>,
}

/// Bans in force, newest first (staff).
#[utoipa::path(get, path = "/api/v1/admin/bans", operation_id = "admin_bans", tag = "admin", security(("bearer" = [])),
    params(BansParams),
    responses(
        (status = 200, body = PlatformBans),
        (status = 400, body = ApiErrorBody, description = "a limit out of 1–200, or a `before` that is not an id"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff"),
    ))]
pub async fn bans(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<BansParams>, QueryRejection>,
) -> ApiResult<Json<PlatformBans>> {
    staff(&auth)?;
    let Query(p) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = page_limit(p.limit, 50, PLATFORM_BANS_PAGE_MAX)?;
    let before = p.before.as_deref().filter(|b| !b.is_empty()).map(|b| parse_id::<i64>(b, "before")).transpose()?;
    Ok(Json(state.store.platform_bans(limit, before, now_ms()).await?))
}

/// Lift a ban (staff; a moderator only a ban of a member's account or client).
#[utoipa::path(delete, path = "/api/v1/admin/bans/{ban_id}", operation_id = "admin_lift_ban", tag = "admin", security(("bearer" = [])),
    params(("ban_id" = String, Path, description = "ban id")),
    responses(
        (status = 204),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not platform staff, or a moderator and the banned account is not a member or an admin made the ban"),
        (status = 404, body = ApiErrorBody),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn lift_ban(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.user_write(auth.user.id)?;
    let role = staff(&auth)?;
    let id: i64 = parse_id(&raw, "ban id")?;
    let now = now_ms();
    if role != PlatformRole::Admin {
        // A moderator lifts bans of members that no one above them made.
        let page = state.store.platform_bans(1, Some(id.saturating_add(1)), now).await?;
        let ban = page.bans.into_iter().find(|b| b.id == id.to_string()).ok_or(ApiError::NotFound("no such ban"))?;
        // (account, whether it may be at the caller's own rank): the banned one must be below,
        // the one who banned not above.
        for (who, same_rank_ok) in [(ban.user_id, false), (ban.created_by, true)] {
            let Some(who) = who else { continue };
            let Some(account) = state.store.admin_user(who).await? else { continue };
            let (theirs, mine) = (rank(account.platform_role), rank(role));
            if theirs > mine || (theirs == mine && !same_rank_ok) {
                return Err(ApiError::Forbidden("that ban is of an account at or above your role, or made by an admin"));
            }
        }
    }
    let lifted = state.store.lift_ban(auth.user.id, id, now).await?.ok_or(ApiError::NotFound("no such ban"))?;
    tracing::warn!(actor = %auth.user.id, ban = %lifted.id, account = lifted.kind == BanKind::Account, "ban lifted");
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the server list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServersParams {
    /// Only servers whose name contains this (case-insensitive; at most 64 characters).
    #[param(max_length = 64)]
    pub query: Option<String>,
    /// At most this many (1–200; default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// After this server (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
    /// Only servers this account owns (what deleting it would delete).
    pub owner_id: Option<String>,
}

/// Every server, taken down or not, by id (admins): names and sizes, nothing said in them.
#[utoipa::path(get, path = "/api/v1/admin/servers", operation_id = "admin_servers", tag = "admin", security(("bearer" = [])),
    params(ServersParams),
    responses(
        (status = 200, body = AdminServers),
        (status = 400, body = ApiErrorBody, description = "a limit out of 1–200, a query over 64 characters, a cursor or owner that is not an id"),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin"),
    ))]
pub async fn servers(
    State(state): State<AppState>,
    auth: Authenticated,
    params: Result<Query<ServersParams>, QueryRejection>,
) -> ApiResult<Json<AdminServers>> {
    admin(&auth)?;
    let Query(p) = params.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = page_limit(p.limit, 50, ADMIN_SERVERS_PAGE_MAX)?;
    let query = search_query(p.query)?;
    let cursor = p.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| parse_id::<ServerId>(c, "cursor")).transpose()?;
    let owner = p.owner_id.as_deref().map(|o| parse_id::<UserId>(o, "owner id")).transpose()?;
    let mut servers = state.store.admin_servers(&query, owner, limit + 1, cursor).await?;
    let next_cursor = next_cursor(&mut servers, limit, |s| s.id.to_string());
    Ok(Json(AdminServers { servers, next_cursor }))
}

/// One server (admins).
#[utoipa::path(get, path = "/api/v1/admin/servers/{server_id}", operation_id = "admin_server", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = AdminServer),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin"),
        (status = 404, body = ApiErrorBody),
    ))]
pub async fn server(State(state): State<AppState>, auth: Authenticated, Path(raw): Path<String>) -> ApiResult<Json<AdminServer>> {
    admin(&auth)?;
    let id: ServerId = parse_id(&raw, "server id")?;
    Ok(Json(state.store.admin_server(id).await?.ok_or(ApiError::NotFound("no such server"))?))
}

/// Take a server down (admins): to its members it is gone at once (`SERVER_DELETE`, everyone in
/// its voice channels disconnected; its routes answer 404, its invites lead nowhere), but
/// nothing of it is deleted, and it can be restored.
#[utoipa::path(post, path = "/api/v1/admin/servers/{server_id}/take-down", operation_id = "admin_take_down_server", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    request_body = TakeDown,
    responses(
        (status = 200, body = AdminServer),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "taken down already"),
        (status = 422, body = ApiErrorBody, description = "a reason over 512 characters"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn take_down(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<TakeDown>,
) -> ApiResult<Json<AdminServer>> {
    state.limiters.user_write(auth.user.id)?;
    admin(&auth)?;
    let id: ServerId = parse_id(&raw, "server id")?;
    let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > BAN_REASON_MAX_CHARS) {
        return Err(ApiError::Validation(format!("a reason is at most {BAN_REASON_MAX_CHARS} characters")));
    }
    let server = state.store.admin_server(id).await?.ok_or(ApiError::NotFound("no such server"))?;
    let members = state
        .store
        .set_taken_down(auth.user.id, &server, Some(reason), now_ms())
        .await?
        .ok_or_else(|| ApiError::Conflict("that server is taken down already".into()))?;
    tracing::warn!(actor = %auth.user.id, server = %id, members = members.len(), "server taken down");
    if let Some(voice) = state.voice.get() {
        let out = copains_client_core::voice_signal::VoiceModeration { mute: None, deaf: None, channel_id: Some(None) };
        for &member in &members {
            if voice.channel_of(id, member).await.is_some() {
                let _ = voice.moderate(id, member, out.clone()).await;
            }
        }
    }
    publish_to(&state, members, event_name::SERVER_DELETE, &Removed { id: id.to_string(), server_id: None }).await;
    Ok(Json(state.store.admin_server(id).await?.ok_or(ApiError::NotFound("no such server"))?))
}

/// Restore a server taken down (admins): its members have it back as it was
/// (`SERVER_CREATE`, each with what they may see).
#[utoipa::path(post, path = "/api/v1/admin/servers/{server_id}/restore", operation_id = "admin_restore_server", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = AdminServer),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "not taken down"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn restore(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<AdminServer>> {
    state.limiters.user_write(auth.user.id)?;
    admin(&auth)?;
    let id: ServerId = parse_id(&raw, "server id")?;
    let server = state.store.admin_server(id).await?.ok_or(ApiError::NotFound("no such server"))?;
    let members = state
        .store
        .set_taken_down(auth.user.id, &server, None, now_ms())
        .await?
        .ok_or_else(|| ApiError::Conflict("that server is not taken down".into()))?;
    tracing::warn!(actor = %auth.user.id, server = %id, "server restored");
    for member in members {
        match state.store.server_state(id, member).await {
            Ok(Some(view)) => publish_to(&state, [member], event_name::SERVER_CREATE, &view).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read a server for a member"),
        }
    }
    Ok(Json(state.store.admin_server(id).await?.ok_or(ApiError::NotFound("no such server"))?))
}

/// Delete an account with its data (admins, on an account below them; not undone): every
/// session ends at once; the servers it owns are deleted with everything in them
/// (`SERVER_DELETE` to their members); it leaves the others and its group DMs (the usual
/// events); its channel messages, and the replies in threads it started, are deleted
/// (`MESSAGE_DELETE`); its keys, queue and reactions go. Its username is free again.
#[utoipa::path(delete, path = "/api/v1/admin/users/{user_id}", operation_id = "admin_delete_user", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "user id")),
    responses(
        (status = 200, body = UserDeleted),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "not a platform admin; the account is the caller's, or an admin"),
        (status = 404, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody, description = "the account changed meanwhile, or owns a taken-down server"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn delete_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<UserDeleted>> {
    state.limiters.delete(auth.user.id)?;
    admin(&auth)?;
    let user = target(&state, &auth, &raw).await?;
    let removal = remove_account(&state, Some(auth.user.id), auth.user.platform_role, user.id, PlatformAction::UserDelete)
        .await?
        .ok_or_else(|| ApiError::Conflict(CHANGED.into()))?;
    tracing::warn!(actor = %auth.user.id, target = %user.id, messages = removal.messages_deleted, "account deleted");
    Ok(Json(removal))
}

/// Deletes an account with its data and tells everyone concerned (see [`delete_user`]); also
/// the guest expiry job's. `None` when it is not below `actor_role` any more.
pub(crate) async fn remove_account(
    state: &AppState,
    actor: Option<UserId>,
    actor_role: PlatformRole,
    user: UserId,
    action: PlatformAction,
) -> ApiResult<Option<UserDeleted>> {
    // Checked again in the deletion's transaction; here so that it leaves nothing first.
    if state.store.owns_taken_down_server(user).await? {
        return Err(crate::store::StoreError::OwnsTakenDownServer.into());
    }
    // It leaves what it does not own first, each with its usual events.
    let (servers, dms) = state.store.memberships(user).await?;
    for server in servers {
        if let Ok(removal) = state.store.leave_server(server, user).await {
            crate::routes::servers::announce_removal(state, server, user, &removal).await;
        }
    }
    for dm in dms {
        if let Ok(change) = state.store.remove_recipient(dm, user, user).await {
            crate::routes::channels::announce_group_dm_removal(state, dm, user, &change).await;
        }
    }
    let Some(removal) = state.store.delete_account(actor, actor_role, user, action, now_ms()).await? else {
        return Ok(None);
    };
    end_sessions(state, user, removal.sessions.clone()).await;
    state.sessions.forget_user(user);
    for (server, members) in &removal.servers {
        publish_to(
            state,
            members.iter().copied(),
            event_name::SERVER_DELETE,
            &Removed { id: server.to_string(), server_id: None },
        )
        .await;
    }
    crate::routes::channel_messages::announce_deleted(state, &removal.messages).await;
    Ok(Some(UserDeleted {
        servers_deleted: removal.servers.len() as u64,
        messages_deleted: removal.messages.len() as u64,
        sessions_ended: removal.sessions.len() as u64,
    }))
}
