//! Voice signalling: who is in which voice channel, the SDP exchange between each client and
//! the SFU, media-key relay between participants, voice states for everyone who may view a
//! channel, and removal of participants whose gateway session died or who lost the right to
//! be there.
//!
//! One task ([`Actor`]) owns the voice state of this node and the handle of its SFU: gateway
//! connections, the SFU's events, the bus (kicks, bans, permission changes) and the REST API
//! (moderation) send it commands, so every change is applied and announced in one order.
//! Permission checks that need the database run before a command is sent, in the connection's
//! task. The SFU never sees content and neither does this: key shares are Signal ciphertexts
//! relayed only to the devices in the sender's room.
//!
//! Scale-out: rooms live on the node whose SFU hosts them. Events travel by bus topic
//! (`voice:<voice session>` for one participant's, `user:<id>` for voice states), so a node
//! other than the room's can carry them once the bus spans nodes; routing a join to the room's
//! node is for the multi-node bus.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use copains_backend::bus::{BusEvent, EventSink, Topic};
use copains_backend::voice::{VoiceControl, VoiceControlError};
use copains_backend::AppState;
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{Channel, ChannelKind, MemberRemoved, Permissions, Removed, ServerState};
use copains_client_core::voice_signal::{
    code, DisconnectReason, EpochCause, IceServer, IceServers, LocalTrack, MediaKind, RemoteTrack, SdpKind, TrackQuality,
    VoiceDisconnect, VoiceEpoch, VoiceError, VoiceJoin, VoiceKey, VoiceKeys, VoiceModeration, VoiceOffer, VoiceParticipant,
    VoiceQuality, VoiceReady, VoiceSdp, VoiceSpeaking, VoiceState, VoiceStateChange,
};
use copains_client_core::{ChannelId, DeviceId, ServerId, UserId};
use copains_sfu::driver::{MediaRules, OfferTrack, RemoveReason, SfuConfig, SfuError, SfuEvent, SfuHandle};
use copains_sfu::rtp::Pid;
use copains_sfu::{Quality, RoomLimits, TrackKind};
use governor::{DefaultKeyedRateLimiter, Quota};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::hub::{Hub, Owner};

/// Voice settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// Whether this node runs an SFU.
    pub enabled: bool,
    /// The one UDP address every participant's media goes through.
    pub udp_bind: SocketAddr,
    /// The address clients are told to send media to, when it is not the bound one (the
    /// public IP of a 1:1 NAT, or a LAN address when binding 0.0.0.0).
    pub announce_ip: Option<IpAddr>,
    /// Participants in one room at most (a channel's own user limit may be lower).
    pub max_participants: usize,
    /// Microphones of one room forwarded at once: the loudest (0 forwards every one). The
    /// others' packets are dropped at the SFU, so an open microphone in silence costs no one
    /// anything (docs/voice.md §2.3).
    pub loudest_audio: usize,
    /// A participant whose media does not connect this long after joining is removed.
    pub connect_timeout_ms: u64,
    /// A participant whose gateway connection dropped and was not resumed this long after is
    /// removed.
    pub gateway_grace_ms: u64,
    /// Joins one user may send per minute.
    pub sdp_per_minute: u32,
    /// Other voice ops (state, SDP answers, keys, quality, ICE) one user may send per minute.
    pub ops_per_minute: u32,
    /// STUN servers handed to clients (`stun:host:port`). None by default: the SFU's own
    /// address is all a client on a reachable network needs.
    pub stun_urls: Vec<String>,
    /// TURN servers handed to clients behind networks that block UDP to the SFU
    /// (`turn:host:3478?transport=udp`, `turns:host:5349?transport=tcp`): coturn with
    /// `use-auth-secret`, see docs/voice.md.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`: each client gets a user name `<expiry>:<user id>` and its
    /// HMAC-SHA1 under this secret. Never printed by `copains config`.
    pub turn_secret: Option<String>,
    /// How long TURN credentials stay valid.
    pub turn_ttl_secs: u64,
}

impl VoiceConfig {
    /// The ICE servers for `user` at `now_secs` (Unix seconds): STUN as configured, and TURN
    /// with time-limited credentials when a secret is set.
    pub fn ice_servers(&self, user: UserId, now_secs: u64) -> IceServers {
        let mut ice_servers = Vec::new();
        if !self.stun_urls.is_empty() {
            ice_servers.push(IceServer { urls: self.stun_urls.clone(), username: None, credential: None });
        }
        let mut expires_at = 0;
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), self.turn_secret.as_deref()) {
            expires_at = now_secs.saturating_add(self.turn_ttl_secs.max(60));
            let username = format!("{expires_at}:{user}");
            let credential = turn_credential(secret, &username);
            ice_servers.push(IceServer { urls: self.turn_urls.clone(), username: Some(username), credential: Some(credential) });
        }
        IceServers { ice_servers, expires_at }
    }
}

/// The TURN REST credential for `username` (coturn `use-auth-secret`, the TURN REST API
/// draft): base64 of HMAC-SHA1 of the user name under the shared secret.
pub fn turn_credential(secret: &str, username: &str) -> String {
    use base64::Engine as _;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()).as_ref())
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 50_000)),
            announce_ip: None,
            max_participants: 100,
            loudest_audio: 5,
            connect_timeout_ms: 15_000,
            gateway_grace_ms: 5_000,
            sdp_per_minute: 10,
            ops_per_minute: 600,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: 24 * 3600,
        }
    }
}

/// A voice op refused: its `VOICE_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: u16,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn unknown_session() -> Self {
        Self::new(code::UNKNOWN_SESSION, "no such voice session on this connection")
    }

    fn unavailable() -> Self {
        Self::new(code::SFU_UNAVAILABLE, "voice is not available now")
    }

    /// The `VOICE_ERROR` payload.
    pub(crate) fn payload(&self, op: u8, voice_session_id: Option<String>) -> VoiceError {
        VoiceError { op, code: self.code, message: self.message.clone(), voice_session_id }
    }
}

/// A gateway session asking.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub gateway_session: Arc<str>,
    pub owner: Owner,
}

/// What the connection checked before a join.
#[derive(Debug, Clone)]
pub(crate) struct JoinGrant {
    pub server: Option<ServerId>,
    pub permissions: Permissions,
    pub user_limit: u32,
}

type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

enum Command {
    Join {
        caller: Caller,
        grant: JoinGrant,
        join: VoiceJoin,
        reply: Reply<()>,
    },
    Leave {
        gateway_session: Arc<str>,
    },
    State {
        gateway_session: Arc<str>,
        change: VoiceStateChange,
        reply: Reply<()>,
    },
    Answer {
        gateway_session: Arc<str>,
        sdp: VoiceSdp,
        reply: Reply<()>,
    },
    Check {
        gateway_session: Arc<str>,
        voice_session: String,
        reply: Reply<()>,
    },
    Keys {
        caller: Caller,
        keys: VoiceKeys,
        reply: Reply<()>,
    },
    Quality {
        gateway_session: Arc<str>,
        quality: VoiceQuality,
        reply: Reply<()>,
    },
    GatewayGone {
        gateway_session: Arc<str>,
        resumable: bool,
    },
    GatewayCheck {
        gateway_session: Arc<str>,
    },
    Bus(BusEvent),
    Revalidated {
        server: ServerId,
        results: Vec<(Arc<str>, Option<Permissions>)>,
    },
    States {
        servers: Vec<ServerId>,
        reply: oneshot::Sender<HashMap<ServerId, Vec<VoiceState>>>,
    },
    Moderate {
        server: ServerId,
        target: UserId,
        change: VoiceModeration,
        reply: oneshot::Sender<Result<VoiceState, VoiceControlError>>,
    },
    ChannelOf {
        server: ServerId,
        user: UserId,
        reply: oneshot::Sender<Option<ChannelId>>,
    },
}

/// The voice of one node. Cheap to clone.
#[derive(Clone)]
pub struct Voice {
    commands: mpsc::UnboundedSender<Command>,
    participants: Arc<AtomicUsize>,
    rooms: Arc<AtomicUsize>,
    limits: Arc<Limits>,
    config: Arc<VoiceConfig>,
    /// The address clients send media to.
    pub media_addr: SocketAddr,
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice").field("media_addr", &self.media_addr).finish_non_exhaustive()
    }
}

impl Voice {
    /// Starts the SFU and the voice task; attaches to the bus.
    pub(crate) async fn start(config: VoiceConfig, state: AppState, hub: Arc<Hub>) -> std::io::Result<Self> {
        let announce = match config.announce_ip {
            Some(ip) => Some(ip),
            // Bound to every interface: tell clients the address of the one with the default
            // route (what another machine on the network reaches), or loopback without one.
            None if config.udp_bind.ip().is_unspecified() => Some(default_route_ip()),
            None => None,
        };
        let sfu_config = SfuConfig {
            bind: config.udp_bind,
            announce: announce.map(|ip| SocketAddr::new(ip, 0)),
            limits: RoomLimits {
                max_participants: config.max_participants.max(1),
                loudest_audio: config.loudest_audio,
                ..RoomLimits::default()
            },
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            ..SfuConfig::default()
        };
        let (voice_config_sdp, voice_config_ops) = (config.sdp_per_minute, config.ops_per_minute);
        let (sfu, sfu_events) = copains_sfu::driver::start(sfu_config).await?;
        let media_addr = sfu.media_addr;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let participants = Arc::new(AtomicUsize::new(0));
        let rooms = Arc::new(AtomicUsize::new(0));
        let (fanout, fanout_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_fanout(state.clone(), fanout_rx));
        let actor_config = config.clone();
        let actor = Actor {
            config,
            sfu,
            state: state.clone(),
            hub,
            commands: commands.downgrade(),
            participants: participants.clone(),
            room_count: rooms.clone(),
            fanout,
            parts: HashMap::new(),
            by_pid: HashMap::new(),
            by_gateway: HashMap::new(),
            by_user: HashMap::new(),
            rooms: HashMap::new(),
            departed: HashMap::new(),
            lost: HashMap::new(),
            revalidating: HashMap::new(),
            moderated: HashMap::new(),
            next_pid: 1,
        };
        tokio::spawn(actor.run(command_rx, sfu_events));
        let limits = Arc::new(Limits {
            sdp: DefaultKeyedRateLimiter::keyed(quota(voice_config_sdp)),
            ops: DefaultKeyedRateLimiter::keyed(quota(voice_config_ops)),
        });
        let voice = Self { commands, participants, rooms, limits, config: Arc::new(actor_config), media_addr };
        state.bus.attach(Arc::new(VoiceSink { commands: voice.commands.clone(), participants: voice.participants.clone() }));
        let _ = state.voice.set(Arc::new(voice.clone()));
        tracing::info!(%media_addr, "voice: SFU listening");
        Ok(voice)
    }

    /// Counts a join of `user` (4109 past the budget).
    pub(crate) fn allow_sdp(&self, user: UserId) -> Result<(), Refusal> {
        Limits::check(&self.limits.sdp, user)
    }

    /// Counts another voice op of `user` (4109 past the budget).
    pub(crate) fn allow_op(&self, user: UserId) -> Result<(), Refusal> {
        Limits::check(&self.limits.ops, user)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Refusal> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(make(reply)).map_err(|_| Refusal::unavailable())?;
        rx.await.map_err(|_| Refusal::unavailable())?
    }

    pub(crate) async fn join(&self, caller: Caller, grant: JoinGrant, join: VoiceJoin) -> Result<(), Refusal> {
        self.ask(|reply| Command::Join { caller, grant, join, reply }).await
    }

    pub(crate) fn leave(&self, gateway_session: Arc<str>) {
        let _ = self.commands.send(Command::Leave { gateway_session });
    }

    pub(crate) async fn state(&self, gateway_session: Arc<str>, change: VoiceStateChange) -> Result<(), Refusal> {
        self.ask(|reply| Command::State { gateway_session, change, reply }).await
    }

    pub(crate) async fn answer(&self, gateway_session: Arc<str>, sdp: VoiceSdp) -> Result<(), Refusal> {
        self.ask(|reply| Command::Answer { gateway_session, sdp, reply }).await
    }

    pub(crate) async fn check(&self, gateway_session: Arc<str>, voice_session: String) -> Result<(), Refusal> {
        self.ask(|reply| Command::Check { gateway_session, voice_session, reply }).await
    }

    pub(crate) async fn keys(&self, caller: Caller, keys: VoiceKeys) -> Result<(), Refusal> {
        self.ask(|reply| Command::Keys { caller, keys, reply }).await
    }

    pub(crate) async fn quality(&self, gateway_session: Arc<str>, quality: VoiceQuality) -> Result<(), Refusal> {
        self.ask(|reply| Command::Quality { gateway_session, quality, reply }).await
    }

    /// A gateway connection ended; with `resumable`, its session may come back within the
    /// grace period.
    pub(crate) fn gateway_gone(&self, gateway_session: Arc<str>, resumable: bool) {
        if self.participants.load(Ordering::Relaxed) > 0 {
            let _ = self.commands.send(Command::GatewayGone { gateway_session, resumable });
        }
    }

    /// Who is in voice in these servers (for READY).
    pub(crate) async fn states(&self, servers: Vec<ServerId>) -> HashMap<ServerId, Vec<VoiceState>> {
        if self.participants.load(Ordering::Relaxed) == 0 {
            return HashMap::new();
        }
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::States { servers, reply }).is_err() {
            return HashMap::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Participants on this node.
    pub fn participants(&self) -> usize {
        self.participants.load(Ordering::Relaxed)
    }

    /// Voice rooms with someone in them on this node.
    pub fn rooms(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl VoiceControl for Voice {
    async fn moderate(&self, server: ServerId, target: UserId, change: VoiceModeration) -> Result<VoiceState, VoiceControlError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Moderate { server, target, change, reply }).map_err(|_| VoiceControlError::Unavailable)?;
        rx.await.map_err(|_| VoiceControlError::Unavailable)?
    }

    fn ice_servers(&self, user: UserId) -> IceServers {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.config.ice_servers(user, now)
    }

    async fn channel_of(&self, server: ServerId, user: UserId) -> Option<ChannelId> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::ChannelOf { server, user, reply }).ok()?;
        rx.await.ok().flatten()
    }

    fn counts(&self) -> (usize, usize) {
        (self.rooms(), self.participants())
    }
}

/// Per-user budgets of voice ops (whichever connection they come from).
struct Limits {
    sdp: DefaultKeyedRateLimiter<UserId>,
    ops: DefaultKeyedRateLimiter<UserId>,
}

fn quota(per_minute: u32) -> Quota {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n).allow_burst(n)
}

impl Limits {
    fn check(limiter: &DefaultKeyedRateLimiter<UserId>, user: UserId) -> Result<(), Refusal> {
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&user).map_err(|_| Refusal::new(code::RATE_LIMITED, "too many voice requests; wait a little"))
    }
}

/// Hears the bus for what ends or changes someone's right to be in voice.
struct VoiceSink {
    commands: mpsc::UnboundedSender<Command>,
    participants: Arc<AtomicUsize>,
}

impl EventSink for VoiceSink {
    fn deliver(&self, event: &BusEvent) {
        if self.participants.load(Ordering::Relaxed) == 0 {
            return;
        }
        let relevant = matches!(
            &*event.name,
            event_name::MEMBER_REMOVE
                | event_name::SERVER_DELETE
                | event_name::CHANNEL_DELETE
                | event_name::CHANNEL_UPDATE
                | event_name::ROLE_UPDATE
                | event_name::ROLE_DELETE
                | event_name::MEMBER_UPDATE
                | event_name::SERVER_CREATE
                | event_name::CHANNEL_CREATE
        );
        if relevant && event.topic.as_user().is_some() {
            let _ = self.commands.send(Command::Bus(event.clone()));
        }
    }
}

/// A voice-state change to announce to everyone who may view its channel.
struct StateAnnouncement {
    channel: ChannelId,
    state: VoiceState,
}

/// Announces voice states in order, one at a time (the readers of a channel come from the
/// database; the voice task does not wait for it).
async fn run_fanout(state: AppState, mut rx: mpsc::UnboundedReceiver<StateAnnouncement>) {
    while let Some(a) = rx.recv().await {
        let readers = match state.store.channel_readers(a.channel).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "voice: cannot load a channel's readers");
                continue;
            }
        };
        let topics: Vec<Topic> = readers.into_iter().map(Topic::user).collect();
        match BusEvent::fan_out(&topics, event_name::VOICE_STATE_UPDATE, &a.state) {
            Ok(events) => {
                if let Err(e) = state.bus.publish_all(events).await {
                    tracing::warn!(error = %e, "voice: cannot publish a voice state");
                }
            }
            Err(e) => tracing::warn!(error = %e, "voice: cannot encode a voice state"),
        }
    }
}

struct Participant {
    voice_session: Arc<str>,
    pid: Pid,
    gateway_session: Arc<str>,
    user: UserId,
    device: DeviceId,
    channel: ChannelId,
    server: Option<ServerId>,
    slot: u32,
    permissions: Permissions,
    self_mute: bool,
    self_deaf: bool,
    self_video: bool,
    self_stream: bool,
    server_mute: bool,
    server_deaf: bool,
    joined_at: i64,
    /// `VOICE_READY` went out. (The SFU's offers for a participant come as events after its
    /// join returns, and this task handles them only after `VOICE_READY`: they never wait.)
    ready: bool,
    /// The revision of the SFU's last offer.
    last_offer: Option<u64>,
    /// Tracks it publishes.
    tracks: Vec<(u64, TrackKind)>,
    /// Speaking now, as the SFU last said (a newcomer is told who already is).
    speaking: bool,
}

impl Participant {
    fn public(&self) -> VoiceParticipant {
        VoiceParticipant { user_id: self.user, device_id: self.device, slot: self.slot }
    }

    fn state(&self) -> VoiceState {
        VoiceState {
            server_id: self.server,
            channel_id: Some(self.channel),
            user_id: self.user,
            device_id: self.device,
            self_mute: self.self_mute,
            self_deaf: self.self_deaf,
            mute: self.server_mute || !self.permissions.contains(Permissions::SPEAK),
            deaf: self.server_deaf,
            self_video: self.self_video,
            self_stream: self.self_stream,
            joined_at: self.joined_at,
        }
    }

    fn rules(&self) -> MediaRules {
        MediaRules {
            audio: self.permissions.contains(Permissions::SPEAK) && !self.server_mute,
            video: self.permissions.contains(Permissions::STREAM),
            hear: !self.server_deaf,
        }
    }

    fn topic(&self) -> Topic {
        Topic::voice(&self.voice_session)
    }
}

struct Actor {
    config: VoiceConfig,
    sfu: SfuHandle,
    state: AppState,
    hub: Arc<Hub>,
    commands: mpsc::WeakUnboundedSender<Command>,
    participants: Arc<AtomicUsize>,
    /// How many rooms have someone in them (for the admin figures).
    room_count: Arc<AtomicUsize>,
    fanout: mpsc::UnboundedSender<StateAnnouncement>,
    parts: HashMap<Arc<str>, Participant>,
    by_pid: HashMap<Pid, Arc<str>>,
    by_gateway: HashMap<Arc<str>, Arc<str>>,
    by_user: HashMap<UserId, Arc<str>>,
    /// Each room's participants by slot.
    rooms: HashMap<ChannelId, BTreeMap<u32, Arc<str>>>,
    /// Who left, until the SFU's epoch for their leave comes.
    departed: HashMap<Pid, (ChannelId, VoiceParticipant)>,
    /// Gateway sessions whose connection dropped, and when.
    lost: HashMap<Arc<str>, Instant>,
    /// Servers whose participants' permissions are being checked again (true: check once
    /// more when done, something changed meanwhile).
    revalidating: HashMap<ServerId, bool>,
    /// Server mutes and deafens of members, kept across leaving and joining again.
    moderated: HashMap<(ServerId, UserId), (bool, bool)>,
    next_pid: Pid,
}

/// The local address of the interface with the default route (no packet is sent), or
/// loopback.
fn default_route_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        // TEST-NET-1 (RFC 5737): only the route is looked up.
        socket.connect("192.0.2.1:9")?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

fn kind_of(kind: TrackKind) -> MediaKind {
    match kind {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Camera => MediaKind::Camera,
        TrackKind::Screen => MediaKind::Screen,
    }
}

fn new_voice_session_id() -> Arc<str> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}

fn refusal_of(e: SfuError) -> Refusal {
    match e {
        SfuError::RoomFull => Refusal::new(code::ROOM_FULL, "the voice channel is full"),
        SfuError::AlreadyIn => Refusal::new(code::NEGOTIATION_CONFLICT, "already in voice"),
        SfuError::UnknownParticipant => Refusal::unknown_session(),
        SfuError::InvalidSdp(why) => Refusal::new(code::INVALID_SDP, format!("invalid SDP: {why}")),
        SfuError::NegotiationConflict => Refusal::new(code::NEGOTIATION_CONFLICT, "no offer is waiting for an answer"),
        SfuError::TooManyTracks => Refusal::new(code::TOO_MANY_TRACKS, "the offer publishes too many tracks"),
        SfuError::Unavailable => Refusal::unavailable(),
    }
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut sfu: mpsc::UnboundedReceiver<SfuEvent>) {
        loop {
            tokio::select! {
                biased;
                event = sfu.recv() => match event {
                    Some(event) => self.on_sfu(event).await,
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
            }
        }
    }

    fn sync_count(&self) {
        self.participants.store(self.parts.len(), Ordering::Relaxed);
        self.room_count.store(self.rooms.len(), Ordering::Relaxed);
    }

    async fn publish(&self, topic: Topic, name: &str, payload: &impl Serialize) {
        match BusEvent::new(topic, name, payload) {
            Ok(event) => {
                if let Err(e) = self.state.bus.publish(event).await {
                    tracing::warn!(error = %e, "voice: cannot publish {name}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "voice: cannot encode {name}"),
        }
    }

    fn announce(&self, channel: ChannelId, state: VoiceState) {
        let _ = self.fanout.send(StateAnnouncement { channel, state });
    }

    fn room_participants(&self, channel: ChannelId) -> Vec<VoiceParticipant> {
        self.rooms
            .get(&channel)
            .map(|r| r.values().filter_map(|v| self.parts.get(v)).map(Participant::public).collect())
            .unwrap_or_default()
    }

    fn session_of(&self, gateway_session: &str) -> Option<&Participant> {
        self.by_gateway.get(gateway_session).and_then(|v| self.parts.get(v))
    }

    fn own(&self, gateway_session: &str, voice_session: &str) -> Result<&Participant, Refusal> {
        self.session_of(gateway_session).filter(|p| &*p.voice_session == voice_session).ok_or_else(Refusal::unknown_session)
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { caller, grant, join, reply } => {
                let result = self.join(caller, grant, join).await;
                let _ = reply.send(result);
            }
            Command::Leave { gateway_session } => {
                if let Some(v) = self.by_gateway.get(&gateway_session).cloned() {
                    self.remove(&v, None).await;
                }
            }
            Command::State { gateway_session, change, reply } => {
                let _ = reply.send(self.change_state(&gateway_session, change));
            }
            Command::Answer { gateway_session, sdp, reply } => {
                let result = self.answer(&gateway_session, sdp).await;
                let _ = reply.send(result);
            }
            Command::Check { gateway_session, voice_session, reply } => {
                let _ = reply.send(self.own(&gateway_session, &voice_session).map(|_| ()));
            }
            Command::Keys { caller, keys, reply } => {
                let result = self.relay_keys(&caller, keys).await;
                let _ = reply.send(result);
            }
            Command::Quality { gateway_session, quality, reply } => {
                let _ = reply.send(self.quality(&gateway_session, quality));
            }
            Command::GatewayGone { gateway_session, resumable } => {
                let Some(v) = self.by_gateway.get(&gateway_session).cloned() else { return };
                if !resumable {
                    self.remove(&v, Some(DisconnectReason::GatewayLost)).await;
                    return;
                }
                self.lost.insert(gateway_session.clone(), Instant::now());
                let grace = Duration::from_millis(self.config.gateway_grace_ms);
                if let Some(commands) = self.commands.upgrade() {
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        let _ = commands.send(Command::GatewayCheck { gateway_session });
                    });
                }
            }
            Command::GatewayCheck { gateway_session } => {
                let grace = Duration::from_millis(self.config.gateway_grace_ms);
                let Some(since) = self.lost.get(&gateway_session).copied() else { return };
                if self.hub.is_attached(&gateway_session) {
                    self.lost.remove(&gateway_session);
                    return;
                }
                if since.elapsed() < grace {
                    return; // dropped again since: a later check decides
                }
                self.lost.remove(&gateway_session);
                if let Some(v) = self.by_gateway.get(&gateway_session).cloned() {
                    self.remove(&v, Some(DisconnectReason::GatewayLost)).await;
                }
            }
            Command::Bus(event) => self.on_bus(event).await,
            Command::Revalidated { server, results } => self.revalidated(server, results).await,
            Command::States { servers, reply } => {
                let mut out: HashMap<ServerId, Vec<VoiceState>> = HashMap::new();
                for p in self.parts.values().filter(|p| p.ready) {
                    if let Some(s) = p.server.filter(|s| servers.contains(s)) {
                        out.entry(s).or_default().push(p.state());
                    }
                }
                let _ = reply.send(out);
            }
            Command::Moderate { server, target, change, reply } => {
                let result = self.moderate(server, target, change).await;
                let _ = reply.send(result);
            }
            Command::ChannelOf { server, user, reply } => {
                let channel = self
                    .by_user
                    .get(&user)
                    .and_then(|v| self.parts.get(v))
                    .filter(|p| p.server == Some(server))
                    .map(|p| p.channel);
                let _ = reply.send(channel);
            }
        }
    }

    async fn join(&mut self, caller: Caller, grant: JoinGrant, join: VoiceJoin) -> Result<(), Refusal> {
        let channel = join.channel_id;
        // Room for one more (this user's own place there counts as free: a join again).
        let mine = self.by_user.get(&caller.owner.user).and_then(|v| self.parts.get(v)).filter(|p| p.channel == channel);
        let present = self.rooms.get(&channel).map_or(0, BTreeMap::len) - usize::from(mine.is_some());
        let limit = match grant.user_limit {
            0 => self.config.max_participants,
            n => (n as usize).min(self.config.max_participants),
        };
        if present >= limit {
            return Err(Refusal::new(code::ROOM_FULL, "the voice channel is full"));
        }
        // One voice session per user: this connection's earlier one ends quietly (it moves),
        // another device's is replaced.
        if let Some(v) = self.by_user.get(&caller.owner.user).cloned() {
            let same = self.parts.get(&v).is_some_and(|p| p.gateway_session == caller.gateway_session);
            self.remove(&v, (!same).then_some(DisconnectReason::Replaced)).await;
        }
        if let Some(v) = self.by_gateway.get(&caller.gateway_session).cloned() {
            self.remove(&v, None).await;
        }
        let slot = {
            let room = self.rooms.get(&channel);
            (1..).find(|s| room.is_none_or(|r| !r.contains_key(s))).unwrap_or(u32::MAX)
        };
        let pid = self.next_pid;
        self.next_pid += 1;
        let voice_session = new_voice_session_id();
        let participant = Participant {
            voice_session: voice_session.clone(),
            pid,
            gateway_session: caller.gateway_session.clone(),
            user: caller.owner.user,
            device: caller.owner.device,
            channel,
            server: grant.server,
            slot,
            permissions: grant.permissions,
            self_mute: join.self_mute || join.self_deaf,
            self_deaf: join.self_deaf,
            self_video: false,
            self_stream: false,
            server_mute: grant.server.and_then(|s| self.moderated.get(&(s, caller.owner.user))).is_some_and(|m| m.0),
            server_deaf: grant.server.and_then(|s| self.moderated.get(&(s, caller.owner.user))).is_some_and(|m| m.1),
            joined_at: copains_backend::store::now_ms(),
            ready: false,
            last_offer: None,
            speaking: false,
            tracks: Vec::new(),
        };
        let rules = participant.rules();
        let topic = participant.topic();
        self.insert(participant);
        if self.hub.listen(&caller.gateway_session, &topic) {
            if let Err(e) = self.state.bus.subscribe(&topic).await {
                tracing::warn!(error = %e, "voice: bus subscribe failed");
            }
        }
        let joined = match self.sfu.join_with(channel.0 as u64, pid, join.sdp, rules).await {
            Ok(j) => j,
            Err(e) => {
                self.forget(&voice_session);
                self.unlisten(&caller.gateway_session, &topic).await;
                return Err(refusal_of(e));
            }
        };
        let participants = self.room_participants(channel);
        let Some(p) = self.parts.get_mut(&voice_session) else { return Err(Refusal::unavailable()) };
        p.ready = true;
        p.tracks = joined.tracks.iter().map(|(_, t, k)| (*t, *k)).collect();
        let ready = VoiceReady {
            voice_session_id: voice_session.to_string(),
            channel_id: channel,
            server_id: grant.server,
            slot,
            epoch: joined.epoch,
            sdp: joined.answer,
            tracks: joined
                .tracks
                .iter()
                .map(|(mid, t, k)| LocalTrack { mid: mid.clone(), track_id: *t, kind: kind_of(*k) })
                .collect(),
            participants,
        };
        let state = p.state();
        self.publish(topic.clone(), event_name::VOICE_READY, &ready).await;
        // VOICE_SPEAKING comes on changes only: the newcomer learns who is speaking already.
        let speaking: Vec<VoiceSpeaking> = self
            .rooms
            .get(&channel)
            .into_iter()
            .flat_map(|r| r.values())
            .filter_map(|v| self.parts.get(v))
            .filter(|o| o.speaking && o.voice_session != voice_session)
            .map(|o| VoiceSpeaking { channel_id: channel, user_id: o.user, device_id: o.device, speaking: true })
            .collect();
        for s in speaking {
            self.publish(topic.clone(), event_name::VOICE_SPEAKING, &s).await;
        }
        self.announce(channel, state);
        // The permissions were read before this join was queued: a kick or a role change in
        // between is caught by checking them once more.
        if let Some(server) = grant.server {
            self.revalidate(server);
        }
        tracing::debug!(user = %caller.owner.user, %channel, pid, "voice: joined");
        Ok(())
    }

    fn insert(&mut self, p: Participant) {
        let v = p.voice_session.clone();
        self.by_pid.insert(p.pid, v.clone());
        self.by_gateway.insert(p.gateway_session.clone(), v.clone());
        self.by_user.insert(p.user, v.clone());
        self.rooms.entry(p.channel).or_default().insert(p.slot, v.clone());
        self.parts.insert(v, p);
        self.sync_count();
    }

    /// Drops a participant from every index; returns it.
    fn forget(&mut self, voice_session: &str) -> Option<Participant> {
        let p = self.parts.remove(voice_session)?;
        self.by_pid.remove(&p.pid);
        if self.by_gateway.get(&p.gateway_session).is_some_and(|v| &**v == voice_session) {
            self.by_gateway.remove(&p.gateway_session);
        }
        if self.by_user.get(&p.user).is_some_and(|v| &**v == voice_session) {
            self.by_user.remove(&p.user);
        }
        if let Some(room) = self.rooms.get_mut(&p.channel) {
            room.remove(&p.slot);
            if room.is_empty() {
                self.rooms.remove(&p.channel);
            }
        }
        self.sync_count();
        Some(p)
    }

    async fn unlisten(&self, gateway_session: &str, topic: &Topic) {
        if self.hub.unlisten(gateway_session, topic) {
            if let Err(e) = self.state.bus.unsubscribe(topic).await {
                tracing::warn!(error = %e, "voice: bus unsubscribe failed");
            }
        }
    }

    /// Ends a voice session: out of the SFU, `VOICE_DISCONNECT` with `reason` (none when the
    /// client asked), and everyone who may view the channel hears it left.
    async fn remove(&mut self, voice_session: &str, reason: Option<DisconnectReason>) {
        self.remove_moving(voice_session, reason, None).await;
    }

    async fn remove_moving(&mut self, voice_session: &str, reason: Option<DisconnectReason>, move_to: Option<ChannelId>) {
        let Some(p) = self.forget(voice_session) else { return };
        self.sfu.leave(p.pid);
        if self.departed.len() >= 4096 {
            // Epochs for these never came (an SFU that stopped): nothing waits for them.
            self.departed.clear();
        }
        self.departed.insert(p.pid, (p.channel, p.public()));
        let topic = p.topic();
        if let Some(reason) = reason {
            let bye = VoiceDisconnect { voice_session_id: p.voice_session.to_string(), channel_id: p.channel, reason, move_to };
            self.publish(topic.clone(), event_name::VOICE_DISCONNECT, &bye).await;
        }
        self.unlisten(&p.gateway_session, &topic).await;
        self.lost.remove(&p.gateway_session);
        if p.ready {
            let mut state = p.state();
            state.channel_id = None;
            self.announce(p.channel, state);
        }
        tracing::debug!(user = %p.user, channel = %p.channel, ?reason, "voice: left");
    }

    fn change_state(&mut self, gateway_session: &str, change: VoiceStateChange) -> Result<(), Refusal> {
        let v = self
            .by_gateway
            .get(gateway_session)
            .cloned()
            .ok_or_else(|| Refusal::new(code::NOT_CONNECTED, "not in a voice channel"))?;
        let Some(p) = self.parts.get_mut(&v) else { return Err(Refusal::unknown_session()) };
        let wants_video = change.self_video == Some(true) || change.self_stream == Some(true);
        if wants_video && !p.permissions.contains(Permissions::STREAM) {
            return Err(Refusal::new(code::NO_PERMISSION, "no permission to share video in this channel"));
        }
        let before = p.state();
        if let Some(deaf) = change.self_deaf {
            p.self_deaf = deaf;
        }
        if let Some(mute) = change.self_mute {
            p.self_mute = mute;
        }
        if p.self_deaf {
            p.self_mute = true;
        }
        if let Some(video) = change.self_video {
            p.self_video = video;
        }
        if let Some(stream) = change.self_stream {
            p.self_stream = stream;
        }
        let after = p.state();
        let channel = p.channel;
        if after != before && p.ready {
            self.announce(channel, after);
        }
        Ok(())
    }

    async fn answer(&mut self, gateway_session: &str, sdp: VoiceSdp) -> Result<(), Refusal> {
        let p = self.own(gateway_session, &sdp.voice_session_id)?;
        if sdp.kind == SdpKind::Offer {
            return Err(Refusal::new(code::NEGOTIATION_CONFLICT, "only the SFU offers once joined: answer its offer"));
        }
        if p.last_offer != Some(sdp.revision) {
            return Err(Refusal::new(code::NEGOTIATION_CONFLICT, "that revision is not the offer waiting for an answer"));
        }
        let pid = p.pid;
        self.sfu.answer(pid, sdp.sdp).await.map_err(refusal_of)
    }

    async fn relay_keys(&mut self, caller: &Caller, keys: VoiceKeys) -> Result<(), Refusal> {
        let from = self.own(&caller.gateway_session, &keys.voice_session_id)?;
        let channel = from.channel;
        let mut events = Vec::with_capacity(keys.keys.len());
        let mut seen = HashSet::new();
        for share in keys.keys {
            // Only to a device in the same room, once per frame: the server never hands a
            // key to someone who is not there.
            let Some(to) = self.by_user.get(&share.user_id).and_then(|v| self.parts.get(v)) else { continue };
            if to.channel != channel || to.device != share.device_id || to.user == caller.owner.user || !seen.insert(to.pid) {
                continue;
            }
            let key = VoiceKey {
                voice_session_id: to.voice_session.to_string(),
                channel_id: channel,
                epoch: keys.epoch,
                from_user: caller.owner.user,
                from_device: caller.owner.device,
                ciphertext: share.ciphertext,
            };
            match BusEvent::new(to.topic(), event_name::VOICE_KEY, &key) {
                Ok(e) => events.push(e),
                Err(e) => tracing::warn!(error = %e, "voice: cannot encode a key share"),
            }
        }
        if let Err(e) = self.state.bus.publish_all(events).await {
            tracing::warn!(error = %e, "voice: cannot relay key shares");
        }
        Ok(())
    }

    fn quality(&mut self, gateway_session: &str, q: VoiceQuality) -> Result<(), Refusal> {
        let p = self.own(gateway_session, &q.voice_session_id)?;
        for wish in q.tracks {
            let quality = match wish.quality {
                TrackQuality::Off => Quality::Off,
                TrackQuality::Low => Quality::Low,
                TrackQuality::Medium => Quality::Medium,
                TrackQuality::High => Quality::High,
            };
            self.sfu.quality(p.pid, wish.track_id, quality);
        }
        Ok(())
    }

    async fn on_sfu(&mut self, event: SfuEvent) {
        match event {
            SfuEvent::Offer { pid, sdp, revision, tracks } => {
                let Some(v) = self.by_pid.get(&pid).cloned() else { return };
                let remote = self.remote_tracks(&tracks);
                let Some(p) = self.parts.get_mut(&v) else { return };
                p.last_offer = Some(revision);
                let offer = VoiceOffer { voice_session_id: v.to_string(), kind: SdpKind::Offer, sdp, revision, tracks: remote };
                let topic = p.topic();
                self.publish(topic, event_name::VOICE_SDP, &offer).await;
            }
            SfuEvent::Connected { pid } => {
                tracing::debug!(pid, "voice: media connected");
            }
            SfuEvent::Removed { pid, reason, .. } => {
                if reason == RemoveReason::Left {
                    return;
                }
                if let Some(v) = self.by_pid.get(&pid).cloned() {
                    self.remove(&v, Some(DisconnectReason::MediaFailed)).await;
                }
            }
            SfuEvent::Epoch { room, epoch, joined, left } => {
                let channel = ChannelId(room as i64);
                let (cause, subject, subject_pid) = if let Some(pid) = joined {
                    match self.by_pid.get(&pid).and_then(|v| self.parts.get(v)) {
                        Some(p) => (EpochCause::Join, p.public(), pid),
                        None => return,
                    }
                } else if let Some(pid) = left {
                    if let Some(v) = self.by_pid.get(&pid).cloned() {
                        // The SFU dropped it (media failed or never connected): out of the
                        // room here too before the others re-key without it.
                        self.remove(&v, Some(DisconnectReason::MediaFailed)).await;
                    }
                    match self.departed.remove(&pid) {
                        Some((_, p)) => (EpochCause::Leave, p, pid),
                        None => return,
                    }
                } else {
                    return;
                };
                let participants = self.room_participants(channel);
                let mut events = Vec::new();
                for v in self.rooms.get(&channel).into_iter().flat_map(|r| r.values()) {
                    let Some(p) = self.parts.get(v) else { continue };
                    if !p.ready || p.pid == subject_pid {
                        continue;
                    }
                    let e = VoiceEpoch {
                        voice_session_id: p.voice_session.to_string(),
                        channel_id: channel,
                        epoch,
                        cause,
                        subject,
                        participants: participants.clone(),
                    };
                    if let Ok(e) = BusEvent::new(p.topic(), event_name::VOICE_EPOCH, &e) {
                        events.push(e);
                    }
                }
                if let Err(e) = self.state.bus.publish_all(events).await {
                    tracing::warn!(error = %e, "voice: cannot publish an epoch");
                }
            }
            SfuEvent::Speaking { room, pid, speaking } => {
                let channel = ChannelId(room as i64);
                let Some(who) = self.by_pid.get(&pid).cloned().and_then(|v| self.parts.get_mut(&v)) else { return };
                who.speaking = speaking;
                let who = &*who;
                let payload = VoiceSpeaking { channel_id: channel, user_id: who.user, device_id: who.device, speaking };
                let topics: Vec<Topic> = self
                    .rooms
                    .get(&channel)
                    .into_iter()
                    .flat_map(|r| r.values())
                    .filter_map(|v| self.parts.get(v))
                    .filter(|p| p.ready)
                    .map(Participant::topic)
                    .collect();
                if let Ok(events) = BusEvent::fan_out(&topics, event_name::VOICE_SPEAKING, &payload) {
                    if let Err(e) = self.state.bus.publish_all(events).await {
                        tracing::warn!(error = %e, "voice: cannot publish speaking");
                    }
                }
            }
        }
    }

    fn remote_tracks(&self, tracks: &[OfferTrack]) -> Vec<RemoteTrack> {
        tracks
            .iter()
            .filter_map(|t| {
                let p = self.by_pid.get(&t.publisher).and_then(|v| self.parts.get(v))?;
                Some(RemoteTrack {
                    mid: t.mid.clone(),
                    track_id: t.track,
                    user_id: p.user,
                    device_id: p.device,
                    slot: p.slot,
                    kind: kind_of(t.kind),
                })
            })
            .collect()
    }

    async fn on_bus(&mut self, event: BusEvent) {
        let Some(user) = event.topic.as_user() else { return };
        match &*event.name {
            event_name::MEMBER_REMOVE => {
                let Ok(m) = serde_json::from_str::<MemberRemoved>(&event.payload) else { return };
                self.moderated.remove(&(m.server_id, m.user_id));
                if let Some(v) = self.voice_of(m.user_id, Some(m.server_id)) {
                    self.remove(&v, Some(DisconnectReason::Kicked)).await;
                }
            }
            event_name::SERVER_DELETE => {
                let Ok(r) = serde_json::from_str::<Removed>(&event.payload) else { return };
                let Ok(server) = r.id.parse::<i64>().map(ServerId) else { return };
                if let Some(v) = self.voice_of(user, Some(server)) {
                    self.remove(&v, Some(DisconnectReason::Kicked)).await;
                }
            }
            event_name::CHANNEL_DELETE => {
                let Ok(r) = serde_json::from_str::<Removed>(&event.payload) else { return };
                let Ok(channel) = r.id.parse::<i64>().map(ChannelId) else { return };
                let v = self.by_user.get(&user).cloned().filter(|v| self.parts.get(v).is_some_and(|p| p.channel == channel));
                if let Some(v) = v {
                    self.remove(&v, Some(DisconnectReason::PermissionLost)).await;
                }
            }
            event_name::CHANNEL_UPDATE | event_name::ROLE_UPDATE | event_name::ROLE_DELETE | event_name::MEMBER_UPDATE => {
                let server = match &*event.name {
                    event_name::CHANNEL_UPDATE => serde_json::from_str::<Channel>(&event.payload).ok().and_then(|c| c.server_id),
                    event_name::ROLE_DELETE => serde_json::from_str::<Removed>(&event.payload).ok().and_then(|r| r.server_id),
                    _ => serde_json::from_str::<serde_json::Value>(&event.payload)
                        .ok()
                        .and_then(|v| v.get("server_id").and_then(|s| s.as_str().and_then(|s| s.parse().ok())))
                        .map(ServerId),
                };
                if let Some(server) = server {
                    self.revalidate(server);
                }
            }
            event_name::SERVER_CREATE => {
                let Ok(s) = serde_json::from_str::<ServerState>(&event.payload) else { return };
                self.tell_states(user, &s.channels).await;
            }
            event_name::CHANNEL_CREATE => {
                let Ok(c) = serde_json::from_str::<Channel>(&event.payload) else { return };
                self.tell_states(user, std::slice::from_ref(&c)).await;
            }
            _ => {}
        }
    }

    fn voice_of(&self, user: UserId, server: Option<ServerId>) -> Option<Arc<str>> {
        self.by_user.get(&user).cloned().filter(|v| self.parts.get(v).is_some_and(|p| p.server == server))
    }

    /// A user now sees these channels: tell them who is in voice there.
    async fn tell_states(&self, user: UserId, channels: &[Channel]) {
        let mut events = Vec::new();
        for c in channels.iter().filter(|c| c.kind == ChannelKind::Voice) {
            for v in self.rooms.get(&c.id).into_iter().flat_map(|r| r.values()) {
                if let Some(p) = self.parts.get(v).filter(|p| p.ready) {
                    if let Ok(e) = BusEvent::new(Topic::user(user), event_name::VOICE_STATE_UPDATE, &p.state()) {
                        events.push(e);
                    }
                }
            }
        }
        if !events.is_empty() {
            if let Err(e) = self.state.bus.publish_all(events).await {
                tracing::warn!(error = %e, "voice: cannot publish voice states");
            }
        }
    }

    /// Checks again what every participant in `server` may do (roles, overwrites changed).
    fn revalidate(&mut self, server: ServerId) {
        if let Some(again) = self.revalidating.get_mut(&server) {
            *again = true;
            return;
        }
        let who: Vec<(Arc<str>, ChannelId, UserId)> = self
            .parts
            .values()
            .filter(|p| p.server == Some(server))
            .map(|p| (p.voice_session.clone(), p.channel, p.user))
            .collect();
        if who.is_empty() {
            return;
        }
        let Some(commands) = self.commands.upgrade() else { return };
        self.revalidating.insert(server, false);
        let store = self.state.store.clone();
        tokio::spawn(async move {
            let mut results = Vec::with_capacity(who.len());
            for (v, channel, user) in who {
                match store.channel_access(channel, user).await {
                    Ok(access) => results.push((v, access.map(|a| a.permissions))),
                    Err(e) => tracing::warn!(error = %e, "voice: cannot check a participant's permissions"),
                }
            }
            let _ = commands.send(Command::Revalidated { server, results });
        });
    }

    async fn revalidated(&mut self, server: ServerId, results: Vec<(Arc<str>, Option<Permissions>)>) {
        for (v, permissions) in results {
            match permissions.filter(|p| p.contains(Permissions::CONNECT)) {
                None => self.remove(&v, Some(DisconnectReason::PermissionLost)).await,
                Some(permissions) => {
                    let Some(p) = self.parts.get_mut(&v) else { continue };
                    if p.permissions == permissions {
                        continue;
                    }
                    let before = p.state();
                    p.permissions = permissions;
                    if !permissions.contains(Permissions::STREAM) {
                        p.self_video = false;
                        p.self_stream = false;
                    }
                    self.sfu.rules(p.pid, p.rules());
                    let (after, channel) = (p.state(), p.channel);
                    if after != before {
                        self.announce(channel, after);
                    }
                }
            }
        }
        if self.revalidating.remove(&server) == Some(true) {
            self.revalidate(server);
        }
    }

    async fn moderate(
        &mut self,
        server: ServerId,
        target: UserId,
        change: VoiceModeration,
    ) -> Result<VoiceState, VoiceControlError> {
        let v = self.voice_of(target, Some(server)).ok_or(VoiceControlError::NotInVoice)?;
        match change.channel_id {
            Some(None) => {
                let state = self.parts.get(&v).map(|p| VoiceState { channel_id: None, ..p.state() });
                self.remove(&v, Some(DisconnectReason::Disconnected)).await;
                return state.ok_or(VoiceControlError::NotInVoice);
            }
            Some(Some(to)) if self.parts.get(&v).is_some_and(|p| p.channel != to) => {
                let state = self.parts.get(&v).map(|p| VoiceState { channel_id: None, ..p.state() });
                self.remove_moving(&v, Some(DisconnectReason::Moved), Some(to)).await;
                return state.ok_or(VoiceControlError::NotInVoice);
            }
            _ => {}
        }
        let p = self.parts.get_mut(&v).ok_or(VoiceControlError::NotInVoice)?;
        let before = p.state();
        if let Some(mute) = change.mute {
            p.server_mute = mute;
        }
        if let Some(deaf) = change.deaf {
            p.server_deaf = deaf;
        }
        self.sfu.rules(p.pid, p.rules());
        let (after, channel, moderated) = (p.state(), p.channel, (p.server_mute, p.server_deaf));
        if moderated.0 || moderated.1 {
            self.moderated.insert((server, target), moderated);
        } else {
            self.moderated.remove(&(server, target));
        }
        if after != before {
            self.announce(channel, after.clone());
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_are_coturns_hmac_of_an_expiring_user_name() {
        // Computed with Python's hmac module: base64(HMAC-SHA1(secret, username)).
        assert_eq!(turn_credential("north wind", "1700086400:117632502289399808"), "8/SZKJpDilhAM+b4rpnqliK3DGA=");
        let config = VoiceConfig {
            stun_urls: vec!["stun:turn.example.org:3478".into()],
            turn_urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            turn_secret: Some("north wind".into()),
            ..VoiceConfig::default()
        };
        let servers = config.ice_servers(UserId(117_632_502_289_399_808), 1_700_000_000);
        assert_eq!(servers.expires_at, 1_700_086_400);
        assert_eq!(servers.ice_servers.len(), 2);
        assert_eq!(servers.ice_servers[1].username.as_deref(), Some("1700086400:117632502289399808"));
        assert_eq!(servers.ice_servers[1].credential.as_deref(), Some("8/SZKJpDilhAM+b4rpnqliK3DGA="));
        let none = VoiceConfig::default().ice_servers(UserId(1), 1_700_000_000);
        assert!(none.ice_servers.is_empty() && none.expires_at == 0, "nothing configured, nothing handed out");
        let no_secret = VoiceConfig { turn_urls: config.turn_urls.clone(), ..VoiceConfig::default() };
        assert!(no_secret.ice_servers(UserId(1), 0).ice_servers.is_empty(), "TURN without its secret is not handed out");
    }
}
