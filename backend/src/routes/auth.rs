//! `/api/v1/auth`: register, login, refresh, logout.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use copains_client_core::admin::PlatformAction;
use copains_client_core::api::{AuthResponse, Credentials, RefreshRequest, Tokens};
use copains_client_core::gateway::{event_name, SessionRevoked};
use copains_client_core::{ApiErrorBody, DeviceId, SessionId, UserId};

use crate::auth::Authenticated;
use crate::auth::{hash_refresh_token, new_refresh_token};
use crate::bus::{BusEvent, Topic};
use crate::domain::{device_name, Password, Username};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::store::security::ClientSeen;
use crate::store::{from_ms, now_ms, NewSession, Rotation};
use serde_json::{json, Value};

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
}

/// Create an account, its first device and session.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Credentials,
    responses(
        (status = 201, body = AuthResponse),
        (status = 400, body = ApiErrorBody, description = "malformed JSON"),
        (status = 403, body = ApiErrorBody, description = "sign-ups from this client are banned (`banned`)"),
        (status = 409, body = ApiErrorBody, description = "username taken"),
        (status = 422, body = ApiErrorBody, description = "username, password or device name breaks a rule"),
        (status = 429, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody, description = "password hashing saturated; see Retry-After"),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<AuthResponse>)> {
    state.limiters.auth(ip)?;
    let client = Client::of(&state, ip, &headers);
    client.refuse_if_banned(&state, None, false, "register").await?;
    let username = Username::parse(&body.username).map_err(|e| ApiError::Validation(e.0))?;
    let password = Password::parse(&body.password).map_err(|e| ApiError::Validation(e.0))?;
    let device = device_name(body.device_name.as_deref()).map_err(|e| ApiError::Validation(e.0))?;
    // Fail fast on a taken name before spending a hash on it (the insert still decides).
    if state.store.user_by_username(username.folded()).await?.is_some() {
        return Err(ApiError::UsernameTaken);
    }
    let hash = state.passwords.hash(&password).await?;
    let user_id = UserId(state.ids.next_id());
    let session_id = SessionId(state.ids.next_id());
    let (refresh, refresh_hash) = new_refresh_token();
    let now = now_ms();
    let expires_at = now + ttl_ms(state.config.auth.refresh_ttl());
    let new = NewSession { id: session_id, device_name: &device, refresh_hash: &refresh_hash, expires_at, now };
    let (user, device_id) = state.store.create_user(user_id, username.as_str(), username.folded(), &hash, &new).await?;
    client.seen(&state, session_id, now).await;
    tracing::info!(user = %user.id, device = %device_id, session = %session_id, "account registered");
    let tokens = tokens(&state, user.id, device_id, session_id, user.platform_role, refresh, expires_at, now)?;
    Ok((StatusCode::CREATED, Json(AuthResponse { user, device_id, session_id, tokens })))
}

/// Log in: creates a new device and session.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, body = AuthResponse),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody, description = "wrong username or password"),
        (status = 403, body = ApiErrorBody, description = "account disabled (`account_disabled`), or the account or this client banned (`banned`)"),
        (status = 409, body = ApiErrorBody, description = "too many devices"),
        (status = 422, body = ApiErrorBody, description = "the device name breaks a rule"),
        (status = 429, body = ApiErrorBody, description = "too many attempts from this address, or too many failed sign-ins on this account (login throttling); see Retry-After"),
        (status = 503, body = ApiErrorBody, description = "password hashing saturated; see Retry-After"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Json<AuthResponse>> {
    state.limiters.auth(ip)?;
    let device = device_name(body.device_name.as_deref()).map_err(|e| ApiError::Validation(e.0))?;
    let client = Client::of(&state, ip, &headers);
    // Throttled by the name asked for, whether or not such an account exists (so the wait
    // tells nothing), before any password is checked.
    // A name that cannot be an account's is not counted (it keeps the throttle's memory for
    // real names).
    let parsed = Username::parse(&body.username).ok();
    let account_key = parsed.as_ref().map(|u| u.folded().to_owned());
    if let Some(key) = &account_key {
        if let Err(wait) = state.throttle.check(key, ip) {
            return Err(ApiError::RateLimited(wait.secs()));
        }
    }
    // A name that cannot exist or an oversized password is a wrong credential, not a hint.
    let record = match &parsed {
        Some(username) if body.password.len() <= copains_client_core::limits::PASSWORD_MAX_BYTES => {
            state.store.user_by_username(username.folded()).await?
        }
        _ => None,
    };
    let password =
        if body.password.len() <= copains_client_core::limits::PASSWORD_MAX_BYTES { body.password.as_str() } else { "" };
    let ok = state.passwords.verify(password, record.as_ref().map(|r| r.password_hash.as_str())).await?;
    // A guest account whose time is up is as good as gone (the job removes it within minutes).
    let record = record.filter(|r| r.user.guest_expires_at.is_none_or(|end| end > now_ms()));
    let record = match record {
        Some(record) if ok => record,
        record => {
            let target = record.map(|r| r.user.id);
            // Recorded: each failure on an account, and each wait that starts (any name); a
            // wrong name alone is not worth a row.
            let wait = account_key.as_deref().and_then(|key| state.throttle.failed(key, ip));
            match wait {
                Some(wait) => {
                    client.event(&state, PlatformAction::LoginThrottled, target, json!({"wait_secs": wait.as_secs()})).await
                }
                None if target.is_some() => client.event(&state, PlatformAction::LoginFailed, target, json!({})).await,
                None => {}
            }
            return Err(ApiError::InvalidCredentials);
        }
    };
    if let Some(key) = &account_key {
        state.throttle.succeeded(key, ip);
    }
    if record.disabled {
        return Err(ApiError::AccountDisabled);
    }
    let staff = record.user.platform_role != copains_client_core::api::PlatformRole::Member;
    client.refuse_if_banned(&state, Some(record.user.id), staff, "login").await?;
    let user = record.user;
    let session_id = SessionId(state.ids.next_id());
    let (refresh, refresh_hash) = new_refresh_token();
    let now = now_ms();
    let expires_at = now + ttl_ms(state.config.auth.refresh_ttl());
    let new = NewSession { id: session_id, device_name: &device, refresh_hash: &refresh_hash, expires_at, now };
    let device_id = state.store.create_session(user.id, &new).await?;
    // A ban made while this sign-in ran ended the sessions it found, not this one.
    if let Err(banned) = client.refuse_if_banned(&state, Some(user.id), staff, "login").await {
        if state.store.revoke_session(user.id, session_id).await? {
            announce_revocation(&state, user.id, session_id).await;
        }
        return Err(banned);
    }
    client.seen(&state, session_id, now).await;
    tracing::info!(user = %user.id, device = %device_id, session = %session_id, "logged in");
    let tokens = tokens(&state, user.id, device_id, session_id, user.platform_role, refresh, expires_at, now)?;
    Ok(Json(AuthResponse { user, device_id, session_id, tokens }))
}

/// Trade a refresh token for a new pair. A refresh token works once: presenting a used one
/// again revokes its whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, body = Tokens),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody, description = "unknown, expired or reused refresh token"),
        (status = 403, body = ApiErrorBody, description = "account disabled"),
        (status = 429, body = ApiErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<Tokens>> {
    state.limiters.auth(ip)?;
    if body.refresh_token.len() > 128 {
        return Err(ApiError::InvalidRefreshToken("refresh token invalid"));
    }
    let (refresh, new_hash) = new_refresh_token();
    let now = now_ms();
    let expires_at = now + ttl_ms(state.config.auth.refresh_ttl());
    let old_hash = hash_refresh_token(&body.refresh_token);
    match state.store.rotate_refresh_token(&old_hash, &new_hash, now, expires_at).await? {
        Rotation::Rotated { session_id, user, device_id, disabled } => {
            if disabled {
                return Err(ApiError::AccountDisabled);
            }
            // A guest whose time is up keeps nothing, even before the job removes it.
            if user.guest_expires_at.is_some_and(|end| end <= now) {
                if state.store.revoke_session(user.id, session_id).await? {
                    announce_revocation(&state, user.id, session_id).await;
                }
                return Err(ApiError::InvalidRefreshToken("this guest account has ended"));
            }
            let client = Client::of(&state, ip, &headers);
            let staff = user.platform_role != copains_client_core::api::PlatformRole::Member;
            if let Err(banned) = client.refuse_if_banned(&state, Some(user.id), staff, "refresh").await {
                if state.store.revoke_session(user.id, session_id).await? {
                    announce_revocation(&state, user.id, session_id).await;
                }
                return Err(banned);
            }
            client.seen(&state, session_id, now).await;
            let tokens = tokens(&state, user.id, device_id, session_id, user.platform_role, refresh, expires_at, now)?;
            Ok(Json(tokens))
        }
        Rotation::Reused { session_id, user_id } => {
            tracing::warn!(user = %user_id, session = %session_id, "refresh token reused: session revoked");
            announce_revocation(&state, user_id, session_id).await;
            let client = Client::of(&state, ip, &headers);
            client.event(&state, PlatformAction::RefreshTokenReuse, Some(user_id), json!({"session_id": session_id})).await;
            Err(ApiError::InvalidRefreshToken("refresh token was already used; the session is revoked"))
        }
        Rotation::Invalid => Err(ApiError::InvalidRefreshToken("refresh token invalid or expired")),
    }
}

/// End the current session (its device is removed).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ApiErrorBody)))]
pub async fn logout(State(state): State<AppState>, auth: Authenticated) -> ApiResult<StatusCode> {
    if state.store.revoke_session(auth.user.id, auth.session_id).await? {
        tracing::info!(user = %auth.user.id, session = %auth.session_id, "logged out");
        announce_revocation(&state, auth.user.id, auth.session_id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Tells the user's other devices, and closes the revoked session's gateway connections.
pub(crate) async fn announce_revocation(state: &AppState, user: UserId, session: SessionId) {
    // This node's cache at once, not only when the event comes back through the bus (a
    // request in between, or a bus that failed to publish, must not find it alive).
    state.sessions.forget_session(session);
    let payload = SessionRevoked { session_id: session, user_id: user };
    state.publish(BusEvent::new(Topic::user(user), event_name::SESSION_REVOKED, &payload)).await;
    state.publish(BusEvent::new(Topic::session(session), event_name::SESSION_REVOKED, &payload)).await;
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn tokens(
    state: &AppState,
    user: UserId,
    device: DeviceId,
    session: SessionId,
    role: copains_client_core::api::PlatformRole,
    refresh_token: String,
    refresh_expires_at: i64,
    now_ms: i64,
) -> ApiResult<Tokens> {
    let now_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
    let access_token = state.tokens.issue(user, device, session, role, now_secs).map_err(ApiError::internal)?;
    Ok(Tokens {
        access_token,
        access_token_expires_in: state.tokens.access_ttl().as_secs(),
        refresh_token,
        refresh_token_expires_at: from_ms(refresh_expires_at)?,
    })
}

pub(crate) fn ttl_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The client of a sign-in, register or refresh: its address's keyed hash and its
/// fingerprint (never the address itself, but sealed).
struct Client {
    ip: IpAddr,
    ip_hash: String,
    fingerprint: String,
}

/// The longest user agent taken into a fingerprint.
const USER_AGENT_MAX: usize = 512;

impl Client {
    fn of(state: &AppState, ip: IpAddr, headers: &HeaderMap) -> Self {
        let agent = headers.get(header::USER_AGENT).map(|v| v.as_bytes()).unwrap_or_default();
        let agent = String::from_utf8_lossy(&agent[..agent.len().min(USER_AGENT_MAX)]);
        Self { ip, ip_hash: state.secrets.ip_hash(ip), fingerprint: state.secrets.fingerprint(ip, &agent) }
    }

    /// A security event from this client (a failure to write it is logged, not returned).
    async fn event(&self, state: &AppState, action: PlatformAction, target: Option<UserId>, details: Value) {
        if let Err(e) = state.store.security_event(action, target, details, Some(&self.ip_hash), now_ms()).await {
            tracing::warn!(error = %e, action = action.as_str(), "cannot write a security event");
        }
    }

    /// Refuses a banned account or client (403 `banned`), audited. A client's ban does not
    /// keep platform staff out (an address shared with a banned member, as behind a carrier's
    /// NAT, must not lock out those who lift bans).
    async fn refuse_if_banned(&self, state: &AppState, user: Option<UserId>, staff: bool, on: &str) -> ApiResult<()> {
        let fingerprint = if staff { "" } else { self.fingerprint.as_str() };
        let Some(ban) = state.store.ban_in_force(user, fingerprint, now_ms()).await? else {
            return Ok(());
        };
        let kind = ban.kind;
        self.event(state, PlatformAction::BannedAttempt, user, json!({"on": on, "ban_id": ban.id, "kind": kind})).await;
        Err(ApiError::Banned(
            match kind {
                copains_client_core::admin::BanKind::Account => "this account is banned from this platform",
                copains_client_core::admin::BanKind::Fingerprint => "sign-ins and sign-ups from this client are banned",
            },
            ban.expires_at,
        ))
    }

    /// Notes this client on the session (address sealed, fingerprint).
    async fn seen(&self, state: &AppState, session: SessionId, now: i64) {
        let sealed = state.secrets.seal(&crate::secrets::session_ip(session), self.ip.to_string().as_bytes());
        let seen = ClientSeen { ip_sealed: sealed, fingerprint: self.fingerprint.clone() };
        if let Err(e) = state.store.session_client(session, &seen, now).await {
            tracing::warn!(error = %e, "cannot note a session's client");
        }
    }
}

/// For another way in (a guest invite): refuses a banned client (403 `banned`), audited.
pub(crate) async fn refuse_banned_client(state: &AppState, ip: IpAddr, headers: &HeaderMap, on: &str) -> ApiResult<()> {
    Client::of(state, ip, headers).refuse_if_banned(state, None, false, on).await
}

/// For another way in: notes the new session's client, and writes `action` about `user`.
pub(crate) async fn note_client(
    state: &AppState,
    ip: IpAddr,
    headers: &HeaderMap,
    session: SessionId,
    user: UserId,
    action: PlatformAction,
    details: Value,
) {
    let client = Client::of(state, ip, headers);
    client.seen(state, session, now_ms()).await;
    client.event(state, action, Some(user), details).await;
}

/// The fingerprint of a request's client (as bans name it).
pub(crate) fn client_fingerprint(state: &AppState, ip: IpAddr, headers: &HeaderMap) -> String {
    Client::of(state, ip, headers).fingerprint
}
