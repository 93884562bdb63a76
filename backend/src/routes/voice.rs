//! Voice moderation: a moderator's mute, deafen, move or disconnect of a member in voice.

use axum::extract::{Path, State};
use axum::routing::{get, patch};
use axum::{Json, Router};
use copains_client_core::servers::{AuditAction, ChannelKind, Permissions};
use copains_client_core::voice_signal::{IceServers, VoiceModeration, VoiceState};
use copains_client_core::{ApiErrorBody, ServerId, UserId};

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::routes::servers::parse_id;
use crate::state::AppState;
use crate::store::AuditRecord;
use crate::voice::VoiceControlError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/servers/{server_id}/members/{user_id}/voice", patch(moderate))
        .route("/api/v1/voice/ice-servers", get(ice_servers))
}

/// The STUN and TURN servers to give the `RTCPeerConnection` before joining voice, with TURN
/// credentials valid until `expires_at` (coturn `use-auth-secret`). Empty when the platform
/// hands out none (the SFU's own address is reachable).
#[utoipa::path(get, path = "/api/v1/voice/ice-servers", tag = "voice", security(("bearer" = [])),
    responses(
        (status = 200, body = IceServers),
        (status = 401, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody, description = "voice is not running"),
    ))]
pub async fn ice_servers(State(state): State<AppState>, auth: Authenticated) -> ApiResult<Json<IceServers>> {
    let voice = state.voice.get().ok_or(ApiError::Unavailable("voice is not running"))?;
    Ok(Json(voice.ice_servers(auth.user.id)))
}

/// Mute, deafen, move or disconnect a member who is in a voice channel of the server (moderate
/// members; only a member whose highest role is below the caller's, or the caller). A move
/// needs a voice channel of this server the member may connect to; `channel_id: null`
/// disconnects. The member's `VOICE_STATE_UPDATE` goes to everyone who may view the channel;
/// a moved or disconnected member gets `VOICE_DISCONNECT` (with `move_to` for a move).
#[utoipa::path(patch, path = "/api/v1/servers/{server_id}/members/{user_id}/voice", tag = "voice", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "server id"), ("user_id" = String, Path, description = "user id")),
    request_body = VoiceModeration,
    responses(
        (status = 200, body = VoiceState, description = "the member's voice state after the change (`channel_id` null once disconnected or moved)"),
        (status = 400, body = ApiErrorBody),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody, description = "no moderate members permission, or the member is at or above the caller"),
        (status = 404, body = ApiErrorBody, description = "no such server (or not a member), no such member, or the member is not in voice there"),
        (status = 422, body = ApiErrorBody, description = "the channel to move to is not a voice channel of this server the member may connect to"),
        (status = 429, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody, description = "voice is not running"),
    ))]
pub async fn moderate(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((raw_server, raw_user)): Path<(String, String)>,
    ApiJson(body): ApiJson<VoiceModeration>,
) -> ApiResult<Json<VoiceState>> {
    state.limiters.user_write(auth.user.id)?;
    let server: ServerId = parse_id(&raw_server, "server id")?;
    let target: UserId = parse_id(&raw_user, "user id")?;
    let actor = state.store.server_access(server, auth.user.id).await?.ok_or(ApiError::NotFound("no such server"))?;
    if !actor.permissions().contains(Permissions::MODERATE_MEMBERS) {
        return Err(ApiError::Forbidden("moderating voice needs the moderate members permission"));
    }
    let member = state.store.server_access(server, target).await?.ok_or(ApiError::NotFound("no such member"))?;
    if target != auth.user.id && !actor.outranks(&member) {
        return Err(ApiError::Forbidden("that member is at or above you"));
    }
    let voice = state.voice.get().ok_or(ApiError::Unavailable("voice is not running"))?;
    // Only in a channel the moderator may view: nothing is told of the others.
    let here = voice
        .channel_of(server, target)
        .await
        .ok_or(ApiError::NotFound("that member is not in a voice channel of this server"))?;
    if state.store.channel_access(here, auth.user.id).await?.is_none() {
        return Err(ApiError::NotFound("that member is not in a voice channel of this server"));
    }
    if let Some(Some(to)) = body.channel_id {
        if state.store.channel_access(to, auth.user.id).await?.is_none() {
            return Err(ApiError::Validation("no such voice channel".into()));
        }
        let access = state.store.channel_access(to, target).await?;
        let fits = access.is_some_and(|a| {
            a.kind == ChannelKind::Voice && a.server_id == Some(server) && a.permissions.contains(Permissions::CONNECT)
        });
        if !fits {
            return Err(ApiError::Validation(
                "channel_id must be a voice channel of this server that the member may connect to".into(),
            ));
        }
    }
    let (action, details) = match body.channel_id {
        Some(None) => (AuditAction::MemberVoiceDisconnect, serde_json::json!({"channel_id": here})),
        Some(Some(to)) => (AuditAction::MemberVoiceMove, serde_json::json!({"channel_id": here, "to": to})),
        None => (AuditAction::MemberVoiceUpdate, serde_json::json!({"channel_id": here, "mute": body.mute, "deaf": body.deaf})),
    };
    let after = voice.moderate(server, target, body).await.map_err(|e| match e {
        VoiceControlError::NotInVoice => ApiError::NotFound("that member is not in a voice channel of this server"),
        VoiceControlError::Unavailable => ApiError::Unavailable("voice is not running"),
    })?;
    tracing::info!(user = %auth.user.id, server = %server, target = %target, "voice moderation");
    // The change is made already: a log that cannot be written does not undo it.
    if let Err(e) = state.store.record_audit(AuditRecord::new(server, auth.user.id, action).target(target).details(details)).await
    {
        tracing::error!(error = %e, "audit entry not written: voice moderation");
    }
    Ok(Json(after))
}
