//! Invites: made by members who may (`POST /api/v1/servers/{id}/invites`), previewed and
//! followed by anyone signed in (`/api/v1/invites/{code}`).
//!
//! A code is 12 URL-safe characters drawn from the operating system's CSPRNG (72 bits): not
//! guessable, and following one is rate-limited per user. Unknown, expired and used-up codes
//! all answer the same 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use copains_client_core::admin::PlatformAction;
use copains_client_core::api::{AuthResponse, PlatformRole};
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{
    GuestInvite, GuestJoin, Invite, InvitePreview, NewInvite, Server, GUEST_TTL_SECS, INVITE_MAX_AGE_SECS, INVITE_MAX_USES,
};
use copains_client_core::{ApiErrorBody, ServerId, SessionId, UserId};
use ring::rand::SecureRandom;

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::servers::{parse_id, publish_to};
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::servers::Joined;

/// An invite's lifetime when the request does not say (seconds): 7 days.
pub const INVITE_DEFAULT_AGE_SECS: u64 = 7 * 24 * 3600;
/// Longest code accepted in a path (longer ones cannot exist).
const CODE_MAX_CHARS: usize = 64;

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/servers/{server_id}/invites", post(create_invite).get(invites))
        .route("/api/v1/invites/{code}", get(preview).post(join).delete(revoke))
        .route("/api/v1/invites/{code}/guest", get(guest_preview).post(guest_join))
}

fn new_code() -> ApiResult<String> {
    let mut bytes = [0u8; 9];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| ApiError::internal(anyhow::anyhow!("no randomness")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn check_code(code: &str) -> ApiResult<()> {
    if code.is_empty()
        || code.len() > CODE_MAX_CHARS
        || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::NotFound("no such invite (unknown, expired or used up)"));
    }
    Ok(())
}

/// Create an invite (create invites). `max_uses`: 1 to 10,000 (absent: unlimited);
/// `max_age_secs`: 1 to 30 days (absent: 7 days; `null`: never expires).
#[utoipa::path(post, path = "/api/v1/servers/{server_id}/invites", tag = "invites", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    request_body = NewInvite,
    responses(
        (status = 201, body = Invite),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no create invites permission"),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
        (status = 422, body = ApiErrorBody, description = "max_uses or max_age_secs out of range"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn create_invite(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<NewInvite>,
) -> ApiResult<(StatusCode, Json<Invite>)> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw, "server id")?;
    if body.max_uses.is_some_and(|m| !(1..=INVITE_MAX_USES).contains(&m)) {
        return Err(ApiError::Validation(format!("max_uses must be 1 to {INVITE_MAX_USES} (absent: unlimited)")));
    }
    let age = match body.max_age_secs {
        None => Some(INVITE_DEFAULT_AGE_SECS),
        Some(age) => age,
    };
    if age.is_some_and(|a| !(1..=INVITE_MAX_AGE_SECS).contains(&a)) {
        return Err(ApiError::Validation(format!(
            "max_age_secs must be 1 to {INVITE_MAX_AGE_SECS} (absent: 7 days; null: never expires)"
        )));
    }
    if body.guest_ttl_secs.is_some_and(|t| !GUEST_TTL_SECS.contains(&t)) {
        return Err(ApiError::Validation("guest_ttl_secs must be 3600 (an hour) to 2592000 (30 days)".into()));
    }
    let guest = body.guest_ttl_secs.map(|t| (t, auth.user.platform_role == PlatformRole::Admin));
    let now = now_ms();
    let expires_at = age.map(|a| now + a as i64 * 1000);
    // 72 random bits: a collision is next to impossible, but a taken code is simply redrawn.
    for _ in 0..3 {
        let code = new_code()?;
        if let Some(invite) =
            state.store.create_invite(server, auth.user.id, &code, body.max_uses, expires_at, guest, now).await?
        {
            tracing::info!(user = %auth.user.id, server = %server, "invite created");
            return Ok((StatusCode::CREATED, Json(invite)));
        }
    }
    Err(ApiError::internal(anyhow::anyhow!("could not draw a free invite code")))
}

/// The usable invites of a server: all of them with manage server, otherwise the caller's
/// own. Newest first.
#[utoipa::path(get, path = "/api/v1/servers/{server_id}/invites", tag = "invites", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id")),
    responses(
        (status = 200, body = Vec<Invite>),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "no such server, or the caller is not a member"),
    ))]
pub async fn invites(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<Vec<Invite>>> {
    let server: ServerId = parse_id(&raw, "server id")?;
    Ok(Json(state.store.invites_for(server, auth.user.id, now_ms()).await?))
}

/// What an invite leads to (the server's name and size, who invites), for anyone signed in.
#[utoipa::path(get, path = "/api/v1/invites/{code}", tag = "invites", security(("bearer" = [])),
    params(("code" = String, Path, description = "invite code")),
    responses(
        (status = 200, body = InvitePreview),
        (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody, description = "unknown, expired or used up"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn preview(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(code): Path<String>,
) -> ApiResult<Json<InvitePreview>> {
    state.limiters.user_lookup(auth.user.id)?;
    check_code(&code)?;
    Ok(Json(state.store.invite_preview(&code, now_ms()).await?))
}

/// Join a server by invite; answers the server. A member already in gets it without using the
/// invite. `SERVER_CREATE` goes to the newcomer, `MEMBER_ADD` to every member.
#[utoipa::path(post, path = "/api/v1/invites/{code}", tag = "invites", security(("bearer" = [])),
    params(("code" = String, Path, description = "invite code")),
    responses(
        (status = 200, body = Server),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "the caller is banned from this server, or a guest account"),
        (status = 404, body = ApiErrorBody, description = "unknown, expired or used up"),
        (status = 409, body = ApiErrorBody, description = "the caller is in the maximum number of servers"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn join(State(state): State<AppState>, auth: Authenticated, Path(code): Path<String>) -> ApiResult<Json<Server>> {
    state.limiters.user_write(auth.user.id)?;
    check_code(&code)?;
    crate::routes::servers::not_guest(&auth, "a guest account stays in the server it was invited to")?;
    match state.store.join_by_invite(&code, auth.user.id, now_ms()).await? {
        Joined::AlreadyMember(server) => Ok(Json(server)),
        Joined::Joined(server, member) => {
            tracing::info!(user = %auth.user.id, server = %server.id, "joined server by invite");
            if let Ok(Some(joined)) = state.store.server_state(server.id, auth.user.id).await {
                publish_to(&state, [auth.user.id], event_name::SERVER_CREATE, &joined).await;
            }
            let members = state.store.member_ids(server.id).await.unwrap_or_default();
            publish_to(&state, members.clone(), event_name::MEMBER_ADD, &member).await;
            crate::routes::social::exchange_presences_with(&state, auth.user.id, &members).await;
            Ok(Json(server))
        }
    }
}

/// Revoke an invite: its creator, or a member with manage server.
#[utoipa::path(delete, path = "/api/v1/invites/{code}", tag = "invites", security(("bearer" = [])),
    params(("code" = String, Path, description = "invite code")),
    responses(
        (status = 204),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "neither its creator nor manage server"),
        (status = 404, body = ApiErrorBody, description = "unknown, or of a server the caller is not in"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn revoke(State(state): State<AppState>, auth: Authenticated, Path(code): Path<String>) -> ApiResult<StatusCode> {
    state.limiters.delete(auth.user.id)?;
    check_code(&code)?;
    let server = state.store.delete_invite(&code, auth.user.id).await?;
    tracing::info!(user = %auth.user.id, server = %server, "invite revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// A guest invite, for anyone, signed in or not (what the guest join page shows). Any other
/// invite, like an unknown one, answers 404: only guest invites are told to strangers.
#[utoipa::path(get, path = "/api/v1/invites/{code}/guest", operation_id = "guest_invite", tag = "invites",
    params(("code" = String, Path, description = "invite code")),
    responses(
        (status = 200, body = GuestInvite),
        (status = 404, body = ApiErrorBody, description = "unknown, expired, used up, or not a guest invite"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn guest_preview(
    State(state): State<AppState>,
    crate::extract::ClientIp(ip): crate::extract::ClientIp,
    Path(code): Path<String>,
) -> ApiResult<Json<GuestInvite>> {
    state.limiters.auth(ip)?;
    check_code(&code)?;
    let invite = state.store.guest_invite(&code, now_ms()).await?;
    Ok(Json(invite.ok_or(ApiError::NotFound("no such invite (unknown, expired or used up)"))?))
}

/// Join by a guest invite without an account: the server makes a guest account (named
/// `guest-…`, with the display name and password given) that lasts the invite's
/// `guest_ttl_secs`, joins it to the server, and answers as `register` does. When the time is
/// up the account is removed with its data. Rate-limited per address like `register`; a
/// banned client is refused.
#[utoipa::path(post, path = "/api/v1/invites/{code}/guest", operation_id = "guest_join", tag = "invites",
    params(("code" = String, Path, description = "invite code")),
    request_body = GuestJoin,
    responses(
        (status = 201, body = AuthResponse),
        (status = 400, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "this client is banned from the platform (`banned`) or from the server"),
        (status = 404, body = ApiErrorBody, description = "unknown, expired, used up, or not a guest invite"),
        (status = 422, body = ApiErrorBody, description = "password, display name or device name breaks a rule"),
        (status = 429, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody, description = "password hashing saturated; see Retry-After"),
    ))]
pub async fn guest_join(
    State(state): State<AppState>,
    crate::extract::ClientIp(ip): crate::extract::ClientIp,
    headers: axum::http::HeaderMap,
    Path(code): Path<String>,
    ApiJson(body): ApiJson<GuestJoin>,
) -> ApiResult<(StatusCode, Json<AuthResponse>)> {
    use crate::domain::{device_name, display_name, Password, Username};
    state.limiters.auth(ip)?;
    check_code(&code)?;
    let password = Password::parse(&body.password).map_err(|e| ApiError::Validation(e.0))?;
    let device = device_name(body.device_name.as_deref()).map_err(|e| ApiError::Validation(e.0))?;
    let shown =
        body.display_name.as_deref().map(|d| display_name(d.trim())).transpose().map_err(|e| ApiError::Validation(e.0))?;
    crate::routes::auth::refuse_banned_client(&state, ip, &headers, "guest").await?;
    let now = now_ms();
    let invite =
        state.store.guest_invite(&code, now).await?.ok_or(ApiError::NotFound("no such invite (unknown, expired or used up)"))?;
    // A guest banned from the server does not come back as a new guest from the same client.
    let fingerprint = crate::routes::auth::client_fingerprint(&state, ip, &headers);
    if state.store.banned_client_in_invite_server(&code, &fingerprint, now).await? {
        return Err(ApiError::Forbidden("this device is banned from that server"));
    }
    let hash = state.passwords.hash(&password).await?;
    let ends = now + i64::try_from(invite.guest_ttl_secs).unwrap_or(0) * 1000;
    let (refresh, refresh_hash) = crate::auth::new_refresh_token();
    // The session ends with the account at the latest.
    let refresh_expires = (now + crate::routes::auth::ttl_ms(state.config.auth.refresh_ttl())).min(ends);
    let mut made = None;
    for _ in 0..3 {
        let name = format!("guest-{}", new_code()?.to_lowercase().replace(['-', '_'], "x"));
        let username = Username::parse(&name).map_err(|e| ApiError::internal(anyhow::anyhow!(e.0)))?;
        let (user_id, session_id) = (UserId(state.ids.next_id()), SessionId(state.ids.next_id()));
        let new = crate::store::NewSession {
            id: session_id,
            device_name: &device,
            refresh_hash: &refresh_hash,
            expires_at: refresh_expires,
            now,
        };
        match state.store.create_guest(user_id, username.as_str(), username.folded(), &hash, shown.as_deref(), ends, &new).await {
            Ok((user, device_id)) => {
                made = Some((user, device_id, session_id));
                break;
            }
            Err(crate::store::StoreError::UsernameTaken) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let (user, device_id, session_id) = made.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no free guest name")))?;
    // Into the server; if the invite went meanwhile, the account goes too (nothing is left).
    let joined = match state.store.join_by_invite(&code, user.id, now).await {
        Ok(Joined::Joined(server, member)) => {
            let members = state.store.member_ids(server.id).await.unwrap_or_default();
            publish_to(&state, members, event_name::MEMBER_ADD, &member).await;
            server
        }
        Ok(Joined::AlreadyMember(server)) => server,
        Err(e) => {
            let _ = state.store.delete_account(None, PlatformRole::Admin, user.id, PlatformAction::UserDelete, now).await;
            return Err(e.into());
        }
    };
    let details =
        serde_json::json!({"server_id": joined.id, "invite": crate::store::audit::invite_hint(&code), "expires_at": ends});
    crate::routes::auth::note_client(&state, ip, &headers, session_id, user.id, PlatformAction::GuestCreated, details).await;
    tracing::info!(user = %user.id, server = %joined.id, "guest account made");
    let tokens =
        crate::routes::auth::tokens(&state, user.id, device_id, session_id, user.platform_role, refresh, refresh_expires, now)?;
    Ok((StatusCode::CREATED, Json(AuthResponse { user, device_id, session_id, tokens })))
}

/// Removes the guest accounts whose time is up, each with its data and an audit entry
/// (`guest_expired`), with the events a deletion sends. The housekeeping loop runs it every
/// five minutes.
pub async fn expire_guests(state: &AppState, now: i64) {
    let expired = match state.store.expired_guests(now).await {
        Ok(expired) => expired,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the guest accounts that ended");
            return;
        }
    };
    for user in expired {
        if state.store.owns_taken_down_server(user).await.unwrap_or(false) {
            // Kept with the taken-down server it owns, until that is judged; signed out.
            match state.store.end_all_sessions(user).await {
                Ok(ended) if !ended.is_empty() => crate::routes::admin::end_sessions(state, user, ended).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(user = %user, error = %e, "an ended guest could not be signed out"),
            }
            continue;
        }
        match crate::routes::admin::remove_account(state, None, PlatformRole::Admin, user, PlatformAction::GuestExpired).await {
            Ok(_) => tracing::info!(user = %user, "guest account ended and removed"),
            Err(e) => tracing::warn!(user = %user, error = %e, "a guest account could not be removed"),
        }
    }
}
