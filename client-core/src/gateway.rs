//! The real-time gateway contract: JSON frames `{op, d, s?, t?}` over one WebSocket at
//! `/gateway`. See `docs/gateway.md` for the conversation, timings and close codes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{Device, User};
use crate::ids::{DeviceId, EnvelopeId, SessionId, UserId};

/// Opcodes.
pub mod op {
    /// Server → client: an event, with a sequence number `s` and a type `t`.
    pub const DISPATCH: u8 = 0;
    /// Client → server: keep-alive; `d` is the last sequence number seen (or null).
    pub const HEARTBEAT: u8 = 1;
    /// Client → server: start a session with an access token.
    pub const IDENTIFY: u8 = 2;
    /// Client → server: continue a dropped session and replay missed events.
    pub const RESUME: u8 = 6;
    /// Server → client: reconnect and resume. Reserved: the server does not send it yet; the
    /// native client already handles it like a resumable close.
    pub const RECONNECT: u8 = 7;
    /// Server → client: the session cannot be resumed; IDENTIFY again.
    pub const INVALID_SESSION: u8 = 9;
    /// Server → client: first frame, with the heartbeat interval.
    pub const HELLO: u8 = 10;
    /// Server → client: answer to a heartbeat.
    pub const HEARTBEAT_ACK: u8 = 11;
    /// Client → server: envelopes this device has processed (deletes them from its queue,
    /// like `DELETE /api/v1/messages/{id}` without a request per envelope). No answer.
    pub const ACK: u8 = 12;
    /// Client → server: join a voice channel with an SDP offer ([`crate::voice_signal::VoiceJoin`]).
    pub const VOICE_JOIN: u8 = 4;
    /// Client → server: leave voice (`d` is `{}` or null).
    pub const VOICE_LEAVE: u8 = 5;
    /// Client → server: the client's own voice state ([`crate::voice_signal::VoiceStateChange`]).
    pub const VOICE_STATE: u8 = 13;
    /// Client → server: an answer to the SFU's offer ([`crate::voice_signal::VoiceSdp`]).
    pub const VOICE_SDP: u8 = 14;
    /// Client → server: a trickled ICE candidate ([`crate::voice_signal::VoiceIce`]).
    pub const VOICE_ICE: u8 = 15;
    /// Client → server: media key shares for other participants ([`crate::voice_signal::VoiceKeys`]).
    pub const VOICE_KEYS: u8 = 16;
    /// Client → server: layer wishes for received tracks ([`crate::voice_signal::VoiceQuality`]).
    pub const VOICE_QUALITY: u8 = 17;
    /// Client → server: whether this session's user is idle ([`crate::social::Activity`]). No answer.
    pub const ACTIVITY: u8 = 3;
}

/// WebSocket close codes the gateway uses. Codes marked *resumable* keep the session alive for
/// the resume window: reconnect and send RESUME.
pub mod close {
    /// Unexpected server error. Resumable.
    pub const UNKNOWN_ERROR: u16 = 4000;
    /// The client sent an unknown opcode.
    pub const UNKNOWN_OPCODE: u16 = 4001;
    /// The client sent a frame that is not JSON, not text, or with a malformed payload.
    pub const DECODE_ERROR: u16 = 4002;
    /// The client sent something other than IDENTIFY/RESUME/HEARTBEAT before identifying.
    pub const NOT_AUTHENTICATED: u16 = 4003;
    /// The token in IDENTIFY or RESUME is invalid, expired or revoked.
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    /// The client sent IDENTIFY or RESUME on an already identified connection.
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    /// Too many IDENTIFY/RESUME (per user or per address) or ACK frames (per user). Resumable:
    /// wait a few seconds, reconnect and RESUME.
    pub const RATE_LIMITED: u16 = 4008;
    /// The client did not heartbeat (or identify) in time. Resumable.
    pub const SESSION_TIMED_OUT: u16 = 4009;
    /// The client read too slowly and its outgoing queue filled up. Resumable.
    pub const SLOW_CONSUMER: u16 = 4010;
    /// The login session was revoked (logout, revocation, password change, refresh-token reuse).
    pub const SESSION_REVOKED: u16 = 4011;
    /// The server is shutting down; connect again once it is back, and IDENTIFY.
    pub const SERVER_SHUTDOWN: u16 = 4012;
    /// The client sent a frame larger than the limit.
    pub const FRAME_TOO_LARGE: u16 = 4013;
    /// A newer IDENTIFY of the same device or user went over the cap of gateway sessions; this
    /// session was the oldest and has ended. Not resumable, and not reconnected automatically
    /// (two clients doing so would keep replacing each other).
    pub const SESSION_REPLACED: u16 = 4014;

    /// Whether a close with `code` keeps the session resumable.
    pub fn is_resumable(code: u16) -> bool {
        matches!(code, UNKNOWN_ERROR | RATE_LIMITED | SESSION_TIMED_OUT | SLOW_CONSUMER)
    }

    /// Whether the client should reconnect at all after `code` (false: fix the client or log in).
    pub fn should_reconnect(code: u16) -> bool {
        !matches!(
            code,
            UNKNOWN_OPCODE | DECODE_ERROR | AUTHENTICATION_FAILED | SESSION_REVOKED | FRAME_TOO_LARGE | SESSION_REPLACED
        )
    }
}

/// Event type names (`t` of DISPATCH frames).
pub mod event_name {
    /// First dispatch after IDENTIFY.
    pub const READY: &str = "READY";
    /// After a successful RESUME, once every missed event was replayed.
    pub const RESUMED: &str = "RESUMED";
    /// The current user's profile changed.
    pub const USER_UPDATE: &str = "USER_UPDATE";
    /// One of the current user's login sessions was revoked.
    pub const SESSION_REVOKED: &str = "SESSION_REVOKED";
    /// An encrypted envelope for this device (acknowledge it once processed).
    pub const ENVELOPE: &str = "ENVELOPE";
    /// This device runs low on one-time prekeys: upload more.
    pub const PREKEYS_LOW: &str = "PREKEYS_LOW";
    /// A pending device of the current user asks to be linked ([`crate::devices::LinkRequest`]).
    pub const LINK_REQUEST: &str = "LINK_REQUEST";
    /// A linked device answered this pending device's link request ([`crate::devices::LinkAnswer`]).
    pub const LINK_ANSWER: &str = "LINK_ANSWER";
    /// The current user's device list has a new version ([`crate::devices::DeviceListUpdate`]).
    pub const DEVICE_LIST_UPDATE: &str = "DEVICE_LIST_UPDATE";
    /// The user joined (or created) a server ([`crate::servers::ServerState`]).
    pub const SERVER_CREATE: &str = "SERVER_CREATE";
    /// A server's name or owner changed ([`crate::servers::Server`]).
    pub const SERVER_UPDATE: &str = "SERVER_UPDATE";
    /// The user left, was removed from, or lost a server that was deleted
    /// ([`crate::servers::Removed`]).
    pub const SERVER_DELETE: &str = "SERVER_DELETE";
    /// A channel the user may view appeared, or became viewable ([`crate::servers::Channel`]).
    pub const CHANNEL_CREATE: &str = "CHANNEL_CREATE";
    /// A channel the user may view changed ([`crate::servers::Channel`]).
    pub const CHANNEL_UPDATE: &str = "CHANNEL_UPDATE";
    /// A channel was deleted, or the user may no longer view it ([`crate::servers::Removed`]).
    pub const CHANNEL_DELETE: &str = "CHANNEL_DELETE";
    /// A role was created ([`crate::servers::Role`]).
    pub const ROLE_CREATE: &str = "ROLE_CREATE";
    /// A role changed ([`crate::servers::Role`]).
    pub const ROLE_UPDATE: &str = "ROLE_UPDATE";
    /// A role was deleted ([`crate::servers::Removed`]).
    pub const ROLE_DELETE: &str = "ROLE_DELETE";
    /// Someone joined a server of the user ([`crate::servers::Member`]).
    pub const MEMBER_ADD: &str = "MEMBER_ADD";
    /// A member's roles changed ([`crate::servers::Member`]).
    pub const MEMBER_UPDATE: &str = "MEMBER_UPDATE";
    /// A member left, was kicked or banned ([`crate::servers::MemberRemoved`]).
    pub const MEMBER_REMOVE: &str = "MEMBER_REMOVE";
    /// A message in a channel the user may read ([`crate::channel_messages::ChannelMessage`]).
    pub const MESSAGE_CREATE: &str = "MESSAGE_CREATE";
    /// A message was edited ([`crate::channel_messages::ChannelMessage`]).
    pub const MESSAGE_UPDATE: &str = "MESSAGE_UPDATE";
    /// A message was deleted ([`crate::channel_messages::MessageDeleted`]).
    pub const MESSAGE_DELETE: &str = "MESSAGE_DELETE";
    /// Messages of one channel were deleted at once: a moderator's purge, an account's
    /// deletion ([`crate::channel_messages::MessagesDeleted`]).
    pub const MESSAGE_DELETE_BULK: &str = "MESSAGE_DELETE_BULK";
    /// A reaction was added ([`crate::channel_messages::Reaction`]).
    pub const REACTION_ADD: &str = "REACTION_ADD";
    /// A reaction was removed ([`crate::channel_messages::ReactionRemoved`]).
    pub const REACTION_REMOVE: &str = "REACTION_REMOVE";
    /// A message was pinned or unpinned ([`crate::channel_messages::PinUpdate`]).
    pub const PINS_UPDATE: &str = "PINS_UPDATE";
    /// This session joined a voice channel ([`crate::voice_signal::VoiceReady`]).
    pub const VOICE_READY: &str = "VOICE_READY";
    /// The SFU offers new subscriptions ([`crate::voice_signal::VoiceOffer`]).
    pub const VOICE_SDP: &str = "VOICE_SDP";
    /// The room's participants changed: re-key ([`crate::voice_signal::VoiceEpoch`]).
    pub const VOICE_EPOCH: &str = "VOICE_EPOCH";
    /// A media key share from another participant ([`crate::voice_signal::VoiceKey`]).
    pub const VOICE_KEY: &str = "VOICE_KEY";
    /// Someone's voice state in a channel the user may view ([`crate::voice_signal::VoiceState`]).
    pub const VOICE_STATE_UPDATE: &str = "VOICE_STATE_UPDATE";
    /// Someone in the room started or stopped speaking ([`crate::voice_signal::VoiceSpeaking`]).
    pub const VOICE_SPEAKING: &str = "VOICE_SPEAKING";
    /// A voice op was refused ([`crate::voice_signal::VoiceError`]).
    pub const VOICE_ERROR: &str = "VOICE_ERROR";
    /// The server ended this session's voice session ([`crate::voice_signal::VoiceDisconnect`]).
    pub const VOICE_DISCONNECT: &str = "VOICE_DISCONNECT";
    /// A relationship of the user appeared or changed kind ([`crate::social::Relationship`]).
    pub const RELATIONSHIP_ADD: &str = "RELATIONSHIP_ADD";
    /// A relationship of the user ended ([`crate::social::RelationshipRemoved`]).
    pub const RELATIONSHIP_REMOVE: &str = "RELATIONSHIP_REMOVE";
    /// Presences the user may see changed, coalesced ([`crate::social::PresenceUpdate`]).
    pub const PRESENCE_UPDATE: &str = "PRESENCE_UPDATE";
    /// The user chose another status or custom status on one of their devices
    /// ([`crate::social::PresenceSettings`]).
    pub const PRESENCE_SETTINGS_UPDATE: &str = "PRESENCE_SETTINGS_UPDATE";
    /// Someone types in a channel the user reads or in a DM with them ([`crate::social::TypingStart`]).
    pub const TYPING_START: &str = "TYPING_START";
    /// The user read a channel further on one of their devices ([`crate::social::ReadState`]).
    pub const CHANNEL_READ: &str = "CHANNEL_READ";
    /// The user read a DM further on one of their devices ([`crate::social::DmReadState`]).
    pub const DM_READ: &str = "DM_READ";
    /// The user changed their notification settings of a server or channel
    /// ([`crate::social::NotificationSettings`]).
    pub const NOTIFICATION_SETTINGS_UPDATE: &str = "NOTIFICATION_SETTINGS_UPDATE";
}

/// A frame as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Opcode, see [`op`].
    pub op: u8,
    /// Payload.
    #[serde(default)]
    pub d: Value,
    /// Sequence number (DISPATCH only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<u64>,
    /// Event name (DISPATCH only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<String>,
}

/// HELLO payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Send a HEARTBEAT at least this often (milliseconds).
    pub heartbeat_interval_ms: u64,
    /// How long a dropped session stays resumable (milliseconds).
    pub resume_window_ms: u64,
}

/// IDENTIFY payload.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identify {
    /// An access token.
    pub token: String,
}

impl std::fmt::Debug for Identify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identify { token: <redacted> }")
    }
}

/// RESUME payload.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// An access token of the same login session.
    pub token: String,
    /// The gateway session id from READY.
    pub session_id: String,
    /// The last sequence number the client processed.
    pub seq: u64,
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resume")
            .field("token", &"<redacted>")
            .field("session_id", &self.session_id)
            .field("seq", &self.seq)
            .finish()
    }
}

/// INVALID_SESSION payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidSession {
    /// Always false today: the client must IDENTIFY again and refetch its state.
    pub resumable: bool,
}

/// READY payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Gateway session id, for RESUME.
    pub session_id: String,
    /// The current user.
    pub user: User,
    /// The device this connection belongs to.
    pub device_id: DeviceId,
    /// The login session this connection belongs to.
    pub login_session_id: SessionId,
    /// Every device of the current user.
    pub devices: Vec<Device>,
    /// The servers the user is a member of, with their roles and the channels the user may
    /// view.
    #[serde(default)]
    pub servers: Vec<crate::servers::ServerState>,
    /// The user's group DMs.
    #[serde(default)]
    pub group_dms: Vec<crate::servers::Channel>,
    /// Relationships, presences the user may see, their own presence choice, read states.
    #[serde(flatten)]
    pub social: crate::social::SocialReady,
}

/// RESUMED payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// How many events were replayed before this one.
    pub replayed: u64,
}

/// SESSION_REVOKED payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevoked {
    /// The revoked login session.
    pub session_id: SessionId,
    /// Its user.
    pub user_id: UserId,
}

/// A typed DISPATCH event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `READY`.
    Ready(Box<Ready>),
    /// `RESUMED`.
    Resumed(Resumed),
    /// `USER_UPDATE`.
    UserUpdate(User),
    /// `SESSION_REVOKED`.
    SessionRevoked(SessionRevoked),
    /// `ENVELOPE`.
    Envelope(crate::messages::Envelope),
    /// `PREKEYS_LOW`.
    PreKeysLow(crate::keys::PreKeysLow),
    /// An event this version of the contract does not know.
    Unknown {
        /// Its name.
        name: String,
        /// Its payload.
        data: Value,
    },
}

impl Event {
    /// Parses a DISPATCH frame's `t` and `d`.
    pub fn parse(name: &str, data: Value) -> Result<Self, serde_json::Error> {
        Ok(match name {
            event_name::READY => Event::Ready(Box::new(serde_json::from_value(data)?)),
            event_name::RESUMED => Event::Resumed(serde_json::from_value(data)?),
            event_name::USER_UPDATE => Event::UserUpdate(serde_json::from_value(data)?),
            event_name::SESSION_REVOKED => Event::SessionRevoked(serde_json::from_value(data)?),
            event_name::ENVELOPE => Event::Envelope(serde_json::from_value(data)?),
            event_name::PREKEYS_LOW => Event::PreKeysLow(serde_json::from_value(data)?),
            _ => Event::Unknown { name: name.to_owned(), data },
        })
    }

    /// The `t` of this event.
    pub fn name(&self) -> &str {
        match self {
            Event::Ready(_) => event_name::READY,
            Event::Resumed(_) => event_name::RESUMED,
            Event::UserUpdate(_) => event_name::USER_UPDATE,
            Event::SessionRevoked(_) => event_name::SESSION_REVOKED,
            Event::Envelope(_) => event_name::ENVELOPE,
            Event::PreKeysLow(_) => event_name::PREKEYS_LOW,
            Event::Unknown { name, .. } => name,
        }
    }
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// HEARTBEAT with the last sequence number seen.
    Heartbeat(Option<u64>),
    /// IDENTIFY.
    Identify(Identify),
    /// RESUME.
    Resume(Resume),
    /// ACK of processed envelopes.
    Ack(Ack),
    /// VOICE_JOIN.
    VoiceJoin(crate::voice_signal::VoiceJoin),
    /// VOICE_LEAVE.
    VoiceLeave,
    /// VOICE_STATE.
    VoiceState(crate::voice_signal::VoiceStateChange),
    /// VOICE_SDP.
    VoiceSdp(crate::voice_signal::VoiceSdp),
    /// VOICE_ICE.
    VoiceIce(crate::voice_signal::VoiceIce),
    /// VOICE_KEYS.
    VoiceKeys(crate::voice_signal::VoiceKeys),
    /// VOICE_QUALITY.
    VoiceQuality(crate::voice_signal::VoiceQuality),
    /// ACTIVITY.
    Activity(crate::social::Activity),
}

/// ACK payload: 1 to [`crate::limits::ACK_IDS_MAX`] envelope ids of the connected device.
/// Ids that are not (or no longer) in its queue are ignored: acknowledging is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The envelopes.
    pub ids: Vec<EnvelopeId>,
}

/// Why a client frame could not be understood; each maps to a close code.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or a payload of the wrong shape.
    #[error("cannot decode frame: {0}")]
    Decode(String),
    /// An opcode clients may not send.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
}

impl FrameError {
    /// The close code for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Decode(_) => close::DECODE_ERROR,
            FrameError::UnknownOpcode(_) => close::UNKNOWN_OPCODE,
        }
    }
}

impl ClientMessage {
    /// Parses a text frame from a client.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let frame: Frame = serde_json::from_str(text).map_err(|e| FrameError::Decode(e.to_string()))?;
        let decode = |e: serde_json::Error| FrameError::Decode(e.to_string());
        match frame.op {
            op::HEARTBEAT => Ok(ClientMessage::Heartbeat(serde_json::from_value(frame.d).map_err(decode)?)),
            op::IDENTIFY => Ok(ClientMessage::Identify(serde_json::from_value(frame.d).map_err(decode)?)),
            op::RESUME => Ok(ClientMessage::Resume(serde_json::from_value(frame.d).map_err(decode)?)),
            op::ACK => {
                let ack: Ack = serde_json::from_value(frame.d).map_err(decode)?;
                if ack.ids.is_empty() || ack.ids.len() > crate::limits::ACK_IDS_MAX {
                    return Err(FrameError::Decode(format!("ACK carries 1 to {} ids", crate::limits::ACK_IDS_MAX)));
                }
                Ok(ClientMessage::Ack(ack))
            }
            op::VOICE_JOIN => Ok(ClientMessage::VoiceJoin(serde_json::from_value(frame.d).map_err(decode)?)),
            op::VOICE_LEAVE => match frame.d {
                Value::Null => Ok(ClientMessage::VoiceLeave),
                Value::Object(o) if o.is_empty() => Ok(ClientMessage::VoiceLeave),
                _ => Err(FrameError::Decode("VOICE_LEAVE carries {} or null".into())),
            },
            op::VOICE_STATE => Ok(ClientMessage::VoiceState(serde_json::from_value(frame.d).map_err(decode)?)),
            op::VOICE_SDP => Ok(ClientMessage::VoiceSdp(serde_json::from_value(frame.d).map_err(decode)?)),
            op::VOICE_ICE => Ok(ClientMessage::VoiceIce(serde_json::from_value(frame.d).map_err(decode)?)),
            op::VOICE_KEYS => {
                let keys: crate::voice_signal::VoiceKeys = serde_json::from_value(frame.d).map_err(decode)?;
                let max = crate::voice_signal::KEYS_PER_FRAME_MAX;
                if keys.keys.is_empty() || keys.keys.len() > max {
                    return Err(FrameError::Decode(format!("VOICE_KEYS carries 1 to {max} keys")));
                }
                if keys
                    .keys
                    .iter()
                    .any(|k| k.ciphertext.0.is_empty() || k.ciphertext.0.len() > crate::voice_signal::KEY_CIPHERTEXT_MAX_BYTES)
                {
                    return Err(FrameError::Decode("a VOICE_KEYS ciphertext is empty or too large".into()));
                }
                Ok(ClientMessage::VoiceKeys(keys))
            }
            op::VOICE_QUALITY => {
                let q: crate::voice_signal::VoiceQuality = serde_json::from_value(frame.d).map_err(decode)?;
                let max = crate::voice_signal::QUALITY_TRACKS_MAX;
                if q.tracks.is_empty() || q.tracks.len() > max {
                    return Err(FrameError::Decode(format!("VOICE_QUALITY names 1 to {max} tracks")));
                }
                Ok(ClientMessage::VoiceQuality(q))
            }
            op::ACTIVITY => Ok(ClientMessage::Activity(serde_json::from_value(frame.d).map_err(decode)?)),
            other => Err(FrameError::UnknownOpcode(other)),
        }
    }

    /// The largest frame this message may come in: the ops carrying SDP or key shares get
    /// [`crate::voice_signal::VOICE_FRAME_MAX_BYTES`], the others
    /// [`crate::limits::GATEWAY_FRAME_MAX_BYTES`].
    pub fn frame_limit(&self) -> usize {
        match self {
            ClientMessage::VoiceJoin(_) | ClientMessage::VoiceSdp(_) | ClientMessage::VoiceKeys(_) => {
                crate::voice_signal::VOICE_FRAME_MAX_BYTES
            }
            _ => crate::limits::GATEWAY_FRAME_MAX_BYTES,
        }
    }

    /// Serializes to the frame text.
    pub fn to_text(&self) -> String {
        let (op, d) = match self {
            ClientMessage::Heartbeat(s) => (op::HEARTBEAT, serde_json::json!(s)),
            ClientMessage::Identify(i) => (op::IDENTIFY, serde_json::json!({ "token": i.token })),
            ClientMessage::Resume(r) => {
                (op::RESUME, serde_json::json!({ "token": r.token, "session_id": r.session_id, "seq": r.seq }))
            }
            ClientMessage::Ack(a) => (op::ACK, serde_json::json!(a)),
            ClientMessage::VoiceJoin(v) => (op::VOICE_JOIN, serde_json::json!(v)),
            ClientMessage::VoiceLeave => (op::VOICE_LEAVE, serde_json::json!({})),
            ClientMessage::VoiceState(v) => (op::VOICE_STATE, serde_json::json!(v)),
            ClientMessage::VoiceSdp(v) => (op::VOICE_SDP, serde_json::json!(v)),
            ClientMessage::VoiceIce(v) => (op::VOICE_ICE, serde_json::json!(v)),
            ClientMessage::VoiceKeys(v) => (op::VOICE_KEYS, serde_json::json!(v)),
            ClientMessage::VoiceQuality(v) => (op::VOICE_QUALITY, serde_json::json!(v)),
            ClientMessage::Activity(a) => (op::ACTIVITY, serde_json::json!(a)),
        };
        serde_json::json!({ "op": op, "d": d }).to_string()
    }
}

/// What a server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// HELLO.
    Hello(Hello),
    /// DISPATCH with its sequence number.
    Dispatch {
        /// Sequence number.
        seq: u64,
        /// The event.
        event: Event,
    },
    /// HEARTBEAT_ACK.
    HeartbeatAck,
    /// INVALID_SESSION.
    InvalidSession(InvalidSession),
    /// RECONNECT.
    Reconnect,
}

impl ServerMessage {
    /// Parses a text frame from the server.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let frame: Frame = serde_json::from_str(text).map_err(|e| FrameError::Decode(e.to_string()))?;
        let decode = |e: serde_json::Error| FrameError::Decode(e.to_string());
        match frame.op {
            op::HELLO => Ok(ServerMessage::Hello(serde_json::from_value(frame.d).map_err(decode)?)),
            op::DISPATCH => {
                let seq = frame.s.ok_or_else(|| FrameError::Decode("DISPATCH without s".into()))?;
                let name = frame.t.ok_or_else(|| FrameError::Decode("DISPATCH without t".into()))?;
                Ok(ServerMessage::Dispatch { seq, event: Event::parse(&name, frame.d).map_err(decode)? })
            }
            op::HEARTBEAT_ACK => Ok(ServerMessage::HeartbeatAck),
            op::INVALID_SESSION => Ok(ServerMessage::InvalidSession(serde_json::from_value(frame.d).map_err(decode)?)),
            op::RECONNECT => Ok(ServerMessage::Reconnect),
            other => Err(FrameError::UnknownOpcode(other)),
        }
    }
}

/// Builds the text of a server frame without a payload round-trip through `Value`.
pub fn server_frame_text(op: u8, d: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Out<'a, T> {
        op: u8,
        d: &'a T,
    }
    // Serializing plain data structures into a String cannot fail.
    serde_json::to_string(&Out { op, d }).unwrap_or_else(|_| format!("{{\"op\":{op},\"d\":null}}"))
}

/// Builds the text of a DISPATCH frame around an already serialized payload.
pub fn dispatch_text(seq: u64, name: &str, raw_payload: &str) -> String {
    // `name` is one of our own constant event names: no escaping needed, but be safe.
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
    format!("{{\"op\":0,\"s\":{seq},\"t\":{name},\"d\":{raw_payload}}}")
}
