//! The driver of one WebSocket: HELLO, IDENTIFY or RESUME, then heartbeats in and events out.
//! The state it keeps is in [`crate::hub`] and [`crate::session`]; this is only the I/O.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use copains_backend::auth::Authenticated;
use copains_backend::bus::Topic;
use copains_backend::ApiError;
use copains_client_core::gateway::{close, event_name, op, server_frame_text, ClientMessage, Hello, InvalidSession, Ready};
use copains_client_core::limits::GATEWAY_FRAME_MAX_BYTES;
use copains_client_core::servers::{ChannelKind, Permissions};
use copains_client_core::voice_signal::{code, VoiceJoin};
use rand::RngCore;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::hub::{Attachment, CloseSignal, Owner, ResumeOutcome};
use crate::session::HeartbeatClock;
use crate::voice::{Caller, JoinGrant, Refusal};
use crate::Gateway;

/// How a connection ended.
enum End {
    /// The server closes with this code.
    Close(u16),
    /// The client sent a close frame with this code (or none).
    ClientClosed(Option<u16>),
    /// The socket failed or hit EOF without a close frame.
    Dropped,
}

/// What handling one client frame asks of the loop.
enum Step {
    Continue,
    Close(u16),
}

struct Conn {
    gw: Gateway,
    socket: WebSocket,
    conn_id: u64,
    queue_tx: mpsc::Sender<Arc<str>>,
    close: Arc<CloseSignal>,
    heartbeat: HeartbeatClock,
    /// The gateway session, once identified or resumed.
    session: Option<Arc<str>>,
    /// Who is connected, once identified or resumed.
    owner: Option<Owner>,
    /// The client's address (for rate limits and logs).
    ip: IpAddr,
}

/// Runs one gateway connection to its end.
pub(crate) async fn run(gw: Gateway, socket: WebSocket, ip: IpAddr) {
    let _open = gw.connection_opened();
    let (queue_tx, mut queue_rx) = mpsc::channel::<Arc<str>>(gw.config().outgoing_queue.max(1));
    let mut shutdown = gw.shutdown_signal();
    let interval = Duration::from_millis(gw.config().heartbeat_interval_ms);
    let mut conn = Conn {
        conn_id: gw.hub().next_conn_id(),
        heartbeat: HeartbeatClock::new(interval, Instant::now().into_std()),
        gw,
        socket,
        queue_tx,
        close: Arc::new(CloseSignal::default()),
        session: None,
        owner: None,
        ip,
    };
    let hello = Hello {
        heartbeat_interval_ms: conn.gw.config().heartbeat_interval_ms,
        resume_window_ms: conn.gw.config().resume_window_ms,
    };
    let end = if conn.write(server_frame_text(op::HELLO, &hello).into()).await.is_err() {
        End::Dropped
    } else {
        conn.drive(&mut queue_rx, &mut shutdown).await
    };
    conn.finish(end, &mut queue_rx).await;
}

impl Conn {
    async fn drive(&mut self, queue_rx: &mut mpsc::Receiver<Arc<str>>, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> End {
        if *shutdown.borrow() {
            return End::Close(close::SERVER_SHUTDOWN);
        }
        loop {
            let close = self.close.clone();
            let deadline = Instant::from_std(self.heartbeat.deadline());
            tokio::select! {
                biased;
                code = close.requested() => return End::Close(code),
                _ = shutdown.changed() => return End::Close(close::SERVER_SHUTDOWN),
                _ = sleep_until(deadline) => return End::Close(close::SESSION_TIMED_OUT),
                frame = queue_rx.recv(), if self.session.is_some() => match frame {
                    Some(frame) => {
                        if self.write(frame).await.is_err() {
                            return End::Dropped;
                        }
                    }
                    None => return End::Dropped,
                },
                msg = self.socket.recv() => match msg {
                    None => return End::Dropped,
                    Some(Err(e)) => return read_error(&e),
                    Some(Ok(Message::Text(text))) => match self.on_text(text.as_str()).await {
                        Step::Continue => {}
                        Step::Close(code) => return End::Close(code),
                    },
                    Some(Ok(Message::Binary(_))) => return End::Close(close::DECODE_ERROR),
                    Some(Ok(Message::Close(frame))) => return End::ClientClosed(frame.map(|f| f.code)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                },
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Step {
        if text.len() > GATEWAY_FRAME_MAX_BYTES {
            // Only the ops carrying SDP or key shares may be larger.
            #[derive(serde::Deserialize)]
            struct OpOnly {
                op: u8,
            }
            let op = serde_json::from_str::<OpOnly>(text).map(|f| f.op).ok();
            if !matches!(op, Some(op::VOICE_JOIN | op::VOICE_SDP | op::VOICE_KEYS)) {
                return Step::Close(close::FRAME_TOO_LARGE);
            }
        }
        let msg = match ClientMessage::parse(text) {
            Ok(msg) => msg,
            Err(e) => return Step::Close(e.close_code()),
        };
        if text.len() > msg.frame_limit() {
            return Step::Close(close::FRAME_TOO_LARGE);
        }
        match msg {
            ClientMessage::Heartbeat(seq) => {
                self.heartbeat.beat(Instant::now().into_std());
                if let (Some(seq), Some(id)) = (seq, &self.session) {
                    self.gw.hub().acknowledge(id, seq);
                }
                let ack = server_frame_text(op::HEARTBEAT_ACK, &serde_json::Value::Null);
                self.write_or_close(ack.into()).await
            }
            ClientMessage::Identify(_) | ClientMessage::Resume(_) if self.session.is_some() => {
                Step::Close(close::ALREADY_AUTHENTICATED)
            }
            ClientMessage::Identify(identify) => self.identify(&identify.token).await,
            ClientMessage::Resume(resume) => self.resume(&resume.token, &resume.session_id, resume.seq).await,
            ClientMessage::Ack(ack) => {
                let Some(owner) = self.owner else { return Step::Close(close::NOT_AUTHENTICATED) };
                // Each frame is a DELETE in the database: bound how fast a user can ask for them.
                if self.gw.state().limiters.gateway_ack(owner.user).is_err() {
                    tracing::info!(user = %owner.user, ip = %self.ip, "gateway ACK frames rate-limited");
                    return Step::Close(close::RATE_LIMITED);
                }
                match self.gw.state().store.ack_many(owner.user, owner.device, &ack.ids).await {
                    Ok(_) => Step::Continue,
                    Err(e) => {
                        // The envelopes stay queued; the client gets them again and drops the
                        // duplicates. The connection itself is fine.
                        tracing::warn!(error = %e, "gateway ACK failed");
                        Step::Continue
                    }
                }
            }
            ClientMessage::Activity(activity) => {
                let (Some(owner), Some(id)) = (self.owner, &self.session) else { return Step::Close(close::NOT_AUTHENTICATED) };
                if self.gw.state().limiters.presence(owner.user).is_err() {
                    tracing::info!(user = %owner.user, ip = %self.ip, "gateway ACTIVITY frames rate-limited");
                    return Step::Close(close::RATE_LIMITED);
                }
                self.gw.state().presence.activity(owner.user, id, activity.idle);
                Step::Continue
            }
            ClientMessage::VoiceJoin(join) => self.voice(op::VOICE_JOIN, None, |c| c.voice_join(join)).await,
            ClientMessage::VoiceLeave => {
                let (Some(_), Some(id)) = (self.owner, self.session.clone()) else {
                    return Step::Close(close::NOT_AUTHENTICATED);
                };
                if let Some(v) = self.gw.voice() {
                    v.leave(id);
                }
                Step::Continue
            }
            ClientMessage::VoiceState(change) => {
                self.voice(op::VOICE_STATE, None, |c| async move {
                    let (voice, caller) = c.voice_op()?;
                    voice.state(caller.gateway_session, change).await
                })
                .await
            }
            ClientMessage::VoiceSdp(sdp) => {
                let id = Some(sdp.voice_session_id.clone());
                self.voice(op::VOICE_SDP, id, |c| async move {
                    // An answer counts with the other voice ops, not against the join budget:
                    // the SFU's offers bound the answers (one out at a time, changes within
                    // 100 ms in one), and a room that fills fast brings each member more than
                    // ten in a minute. One not asked for is refused before any parsing.
                    let (voice, caller) = c.voice_op()?;
                    voice.answer(caller.gateway_session, sdp).await
                })
                .await
            }
            ClientMessage::VoiceIce(ice) => {
                let id = Some(ice.voice_session_id.clone());
                self.voice(op::VOICE_ICE, id, |c| async move {
                    // The SFU is ICE-lite and learns addresses from the checks: a candidate
                    // only needs to name this connection's voice session.
                    let (voice, caller) = c.voice_op()?;
                    voice.check(caller.gateway_session, ice.voice_session_id).await
                })
                .await
            }
            ClientMessage::VoiceKeys(keys) => {
                let id = Some(keys.voice_session_id.clone());
                self.voice(op::VOICE_KEYS, id, |c| async move {
                    let (voice, caller) = c.voice_op()?;
                    voice.keys(caller, keys).await
                })
                .await
            }
            ClientMessage::VoiceQuality(quality) => {
                let id = Some(quality.voice_session_id.clone());
                self.voice(op::VOICE_QUALITY, id, |c| async move {
                    let (voice, caller) = c.voice_op()?;
                    voice.quality(caller.gateway_session, quality).await
                })
                .await
            }
        }
    }

    /// Runs a voice op; a refusal becomes a `VOICE_ERROR` for this session (the connection
    /// stays open).
    async fn voice<'a, F, Fut>(&'a mut self, op: u8, voice_session: Option<String>, f: F) -> Step
    where
        F: FnOnce(&'a mut Conn) -> Fut,
        Fut: std::future::Future<Output = Result<(), Refusal>> + 'a,
    {
        let Some(id) = self.session.clone() else { return Step::Close(close::NOT_AUTHENTICATED) };
        let hub = self.gw.clone();
        if let Err(refusal) = f(self).await {
            let payload = refusal.payload(op, voice_session);
            match serde_json::to_string(&payload) {
                Ok(payload) => hub.hub().dispatch_to(&id, event_name::VOICE_ERROR, &payload, Instant::now().into_std()),
                Err(e) => tracing::warn!(error = %e, "cannot encode VOICE_ERROR"),
            }
        }
        Step::Continue
    }

    fn voice_caller(&self) -> Result<(crate::voice::Voice, Caller), Refusal> {
        let voice =
            self.gw.voice().cloned().ok_or_else(|| Refusal::new(code::SFU_UNAVAILABLE, "voice is not enabled on this server"))?;
        let (Some(owner), Some(id)) = (self.owner, self.session.clone()) else {
            return Err(Refusal::new(code::UNKNOWN_SESSION, "identify first"));
        };
        Ok((voice, Caller { gateway_session: id, owner }))
    }

    /// A join, within the user's budget.
    fn voice_rate(&mut self) -> Result<(), Refusal> {
        let (voice, caller) = self.voice_caller()?;
        voice.allow_sdp(caller.owner.user)
    }

    /// Another voice op, within the user's budget.
    fn voice_op(&self) -> Result<(crate::voice::Voice, Caller), Refusal> {
        let (voice, caller) = self.voice_caller()?;
        voice.allow_op(caller.owner.user)?;
        Ok((voice, caller))
    }

    async fn voice_join(&mut self, join: VoiceJoin) -> Result<(), Refusal> {
        self.voice_rate()?;
        let (voice, caller) = self.voice_caller()?;
        let access = self.gw.state().store.channel_access(join.channel_id, caller.owner.user).await.map_err(|e| {
            tracing::warn!(error = %e, "voice: cannot check channel access");
            Refusal::new(code::SFU_UNAVAILABLE, "cannot check the channel now; try again")
        })?;
        let Some(access) = access else {
            return Err(Refusal::new(code::NO_PERMISSION, "no such channel, or no permission to connect"));
        };
        if access.kind != ChannelKind::Voice {
            return Err(Refusal::new(code::NOT_VOICE_CHANNEL, "not a voice channel"));
        }
        if !access.permissions.contains(Permissions::CONNECT) {
            return Err(Refusal::new(code::NO_PERMISSION, "no permission to connect to this channel"));
        }
        let user_limit = self.gw.state().store.voice_user_limit(join.channel_id).await.map_err(|e| {
            tracing::warn!(error = %e, "voice: cannot read a channel's user limit");
            Refusal::new(code::SFU_UNAVAILABLE, "cannot check the channel now; try again")
        })?;
        let grant = JoinGrant { server: access.server_id, permissions: access.permissions, user_limit };
        voice.join(caller, grant, join).await
    }

    fn attachment(&self) -> Attachment {
        Attachment { conn_id: self.conn_id, queue: self.queue_tx.clone(), close: self.close.clone() }
    }

    async fn identify(&mut self, token: &str) -> Step {
        let auth = match authenticate_limited(self.gw.clone(), self.ip, token).await {
            Ok(auth) => auth,
            Err(code) => return Step::Close(code),
        };
        let state = self.gw.state().clone();
        let now = copains_backend::store::now_ms();
        if let Err(e) = state.store.touch_device(auth.user.id, auth.device_id, now).await {
            tracing::warn!(error = %e, "could not record device activity");
        }
        let devices = match state.store.devices(auth.user.id).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot load devices for READY");
                return Step::Close(close::UNKNOWN_ERROR);
            }
        };
        let (mut servers, group_dms) = match state.store.communities_of(auth.user.id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot load servers for READY");
                return Step::Close(close::UNKNOWN_ERROR);
            }
        };
        if let Some(voice) = self.gw.voice() {
            let mut states = voice.states(servers.iter().map(|s| s.server.id).collect()).await;
            for s in &mut servers {
                let visible: std::collections::HashSet<_> = s.channels.iter().map(|c| c.id).collect();
                s.voice_states = states
                    .remove(&s.server.id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|v| v.channel_id.is_some_and(|c| visible.contains(&c)))
                    .collect();
            }
        }
        let social = match copains_backend::routes::social::ready_part(&state, auth.user.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot load relationships and presences for READY");
                return Step::Close(close::UNKNOWN_ERROR);
            }
        };
        let settings = social.presence.clone();
        let id = new_session_id();
        let ready = Ready {
            session_id: id.to_string(),
            user: auth.user.clone(),
            device_id: auth.device_id,
            login_session_id: auth.session_id,
            devices,
            servers,
            group_dms,
            social,
        };
        let Ok(payload) = serde_json::to_string(&ready) else { return Step::Close(close::UNKNOWN_ERROR) };
        let owner = Owner { user: auth.user.id, device: auth.device_id, login_session: auth.session_id };
        let topics = [Topic::user(auth.user.id), Topic::device(auth.user.id, auth.device_id), Topic::session(auth.session_id)];
        let created = self.gw.hub().create(id.clone(), owner, &topics, self.attachment(), &payload);
        state.presence.connected(auth.user.id, id.clone(), settings);
        self.session = Some(id);
        self.owner = Some(owner);
        self.gw.subscribe(created.subscribe).await;
        self.gw.unsubscribe(created.unsubscribe).await;
        // The session may have been revoked between the token check and registration.
        match state.store.session_user(auth.session_id, auth.user.id).await {
            Ok(Some(_)) => {}
            Ok(None) => return Step::Close(close::SESSION_REVOKED),
            Err(_) => return Step::Close(close::UNKNOWN_ERROR),
        }
        tracing::debug!(user = %auth.user.id, device = %auth.device_id, ip = %self.ip, "gateway session identified");
        self.write_or_close(created.ready).await
    }

    async fn resume(&mut self, token: &str, session_id: &str, seq: u64) -> Step {
        let auth = match authenticate_limited(self.gw.clone(), self.ip, token).await {
            Ok(auth) => auth,
            Err(code) => return Step::Close(code),
        };
        let owner = Owner { user: auth.user.id, device: auth.device_id, login_session: auth.session_id };
        match self.gw.hub().resume(session_id, owner, seq, self.attachment()) {
            ResumeOutcome::Resumed(frames) => {
                let presence = &self.gw.state().presence;
                if !presence.resumed(owner.user, session_id) {
                    // Dropped for longer than the presence grace: connected again.
                    let now = copains_backend::store::now_ms();
                    match self.gw.state().store.presence_settings(owner.user, now).await {
                        Ok(settings) => presence.connected(owner.user, session_id.into(), settings),
                        Err(e) => tracing::warn!(error = %e, "cannot read a presence choice on RESUME"),
                    }
                }
                self.session = Some(session_id.into());
                self.owner = Some(owner);
                for frame in frames {
                    if let Step::Close(code) = self.write_or_close(frame).await {
                        return Step::Close(code);
                    }
                }
                Step::Continue
            }
            ResumeOutcome::Invalid => {
                let invalid = server_frame_text(op::INVALID_SESSION, &InvalidSession { resumable: false });
                self.write_or_close(invalid.into()).await
            }
        }
    }

    async fn write(&mut self, frame: Arc<str>) -> Result<(), ()> {
        let limit = Duration::from_millis(self.gw.config().write_timeout_ms);
        match timeout(limit, self.socket.send(Message::Text(frame.as_ref().into()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn write_or_close(&mut self, frame: Arc<str>) -> Step {
        match self.write(frame).await {
            Ok(()) => Step::Continue,
            // A socket that cannot take a frame is gone; the session stays resumable.
            Err(()) => Step::Close(close::UNKNOWN_ERROR),
        }
    }

    async fn finish(mut self, end: End, queue_rx: &mut mpsc::Receiver<Arc<str>>) {
        let resumable = match end {
            End::Close(code) => {
                // Events queued before the close (e.g. SESSION_REVOKED itself) still go out,
                // unless the close is for reading too slowly.
                if code != close::SLOW_CONSUMER && self.session.is_some() {
                    while let Ok(frame) = queue_rx.try_recv() {
                        if self.write(frame).await.is_err() {
                            break;
                        }
                    }
                }
                let frame = CloseFrame { code, reason: close_reason(code).into() };
                let limit = Duration::from_millis(self.gw.config().write_timeout_ms.min(2_000));
                let _ = timeout(limit, self.socket.send(Message::Close(Some(frame)))).await;
                close::is_resumable(code)
            }
            // A deliberate client close (1000 normal, 1001 going away) ends the session.
            End::ClientClosed(code) => !matches!(code, Some(1000 | 1001)),
            End::Dropped => true,
        };
        if let Some(id) = self.session.take() {
            let emptied = self.gw.hub().detach(&id, self.conn_id, resumable, Instant::now().into_std());
            self.gw.unsubscribe(emptied).await;
            // A connection that RESUMEd elsewhere meanwhile holds the session: its voice stays.
            if let Some(voice) = self.gw.voice().filter(|_| !self.gw.hub().is_attached(&id)) {
                voice.gateway_gone(id, resumable);
            }
        }
    }
}

/// Checks the token of IDENTIFY or RESUME. (A free function: the future must not borrow the
/// connection, whose socket is not `Sync`.)
async fn authenticate(gw: Gateway, token: &str) -> Result<Authenticated, u16> {
    match Authenticated::from_token(gw.state(), token).await {
        Ok(auth) => Ok(auth),
        Err(ApiError::Internal(e)) => {
            tracing::error!(error = ?e, "gateway authentication failed on the server side");
            Err(close::UNKNOWN_ERROR)
        }
        Err(_) => Err(close::AUTHENTICATION_FAILED),
    }
}

/// [`authenticate`] within the rate limits of IDENTIFY and RESUME: per address before the
/// token is verified (so that a flood of bad tokens costs little), then per user.
async fn authenticate_limited(gw: Gateway, ip: IpAddr, token: &str) -> Result<Authenticated, u16> {
    if gw.state().limiters.identify_from(ip).is_err() {
        tracing::info!(%ip, "gateway IDENTIFY/RESUME rate-limited (address)");
        return Err(close::RATE_LIMITED);
    }
    let auth = authenticate(gw.clone(), token).await?;
    if gw.state().limiters.identify(auth.user.id).is_err() {
        tracing::info!(user = %auth.user.id, %ip, "gateway IDENTIFY/RESUME rate-limited (user)");
        return Err(close::RATE_LIMITED);
    }
    Ok(auth)
}

fn read_error(e: &axum::Error) -> End {
    // tungstenite reports an oversized message as a capacity error.
    let text = e.to_string();
    if text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Message too big") {
        End::Close(close::FRAME_TOO_LARGE)
    } else {
        End::Dropped
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::UNKNOWN_OPCODE => "unknown opcode",
        close::DECODE_ERROR => "cannot decode frame",
        close::NOT_AUTHENTICATED => "identify first",
        close::AUTHENTICATION_FAILED => "authentication failed",
        close::ALREADY_AUTHENTICATED => "already identified",
        close::RATE_LIMITED => "rate limited; wait, then reconnect",
        close::SESSION_TIMED_OUT => "heartbeat missed",
        close::SLOW_CONSUMER => "too slow reading; resume",
        close::SESSION_REVOKED => "session revoked",
        close::SERVER_SHUTDOWN => "server shutting down",
        close::FRAME_TOO_LARGE => "frame too large",
        close::SESSION_REPLACED => "too many sessions; this oldest one was ended",
        _ => "error; resume",
    }
}

fn new_session_id() -> Arc<str> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}
