//! Voice signalling over the gateway: joining and leaving a voice channel, the SDP exchange
//! with the SFU, media-key relay, and the voice states everyone sees. See `docs/voice.md`.
//!
//! The wire types only; the media keys themselves are in `voice` (feature `voice`).

use serde::{Deserialize, Serialize};

use crate::bytes::Base64Bytes;
use crate::ids::{ChannelId, DeviceId, ServerId, UserId};

/// Largest SDP (offer or answer) a client may send.
pub const SDP_MAX_BYTES: usize = 64 * 1024;
/// Largest gateway frame of the ops that carry SDP or key shares (the others keep
/// [`crate::limits::GATEWAY_FRAME_MAX_BYTES`]).
pub const VOICE_FRAME_MAX_BYTES: usize = 72 * 1024;
/// Key shares in one VOICE_KEYS frame (a bigger room sends several frames).
pub const KEYS_PER_FRAME_MAX: usize = 100;
/// Largest key share (a Signal message holding a media key, with a PQXDH prekey header).
pub const KEY_CIPHERTEXT_MAX_BYTES: usize = 8 * 1024;
/// Tracks named in one VOICE_QUALITY frame.
pub const QUALITY_TRACKS_MAX: usize = 300;

/// Error codes of `VOICE_ERROR`. A voice error never closes the gateway connection.
pub mod code {
    /// The channel is not a voice channel.
    pub const NOT_VOICE_CHANNEL: u16 = 4100;
    /// No such channel, or no permission to view it or to connect to it.
    pub const NO_PERMISSION: u16 = 4101;
    /// The room is full (the channel's user limit, or the SFU's cap).
    pub const ROOM_FULL: u16 = 4102;
    /// Banned from the server (or no longer a member).
    pub const BANNED: u16 = 4103;
    /// Timed out in this server.
    pub const TIMED_OUT: u16 = 4104;
    /// The voice session named is not this connection's (it ended, or never was).
    pub const UNKNOWN_SESSION: u16 = 4105;
    /// The SDP was refused (unparseable, too large, too many m-lines, no Opus or VP8).
    pub const INVALID_SDP: u16 = 4106;
    /// An offer while the SFU's own is out, or an answer with no offer out.
    pub const NEGOTIATION_CONFLICT: u16 = 4107;
    /// The offer publishes more tracks than a participant may.
    pub const TOO_MANY_TRACKS: u16 = 4108;
    /// Too many voice requests; wait a little.
    pub const RATE_LIMITED: u16 = 4109;
    /// No SFU can take the room now.
    pub const SFU_UNAVAILABLE: u16 = 4110;
    /// Not in a voice channel (for ops that need one).
    pub const NOT_CONNECTED: u16 = 4111;
}

/// Op 4 `VOICE_JOIN`: join a voice channel (or move to another: the old voice session ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceJoin {
    /// The voice channel.
    pub channel_id: ChannelId,
    /// The client's offer: one audio m-line (the microphone), then up to two video m-lines
    /// (camera, screen), all `sendonly`, BUNDLEd.
    pub sdp: String,
    /// Join muted.
    #[serde(default)]
    pub self_mute: bool,
    /// Join deafened.
    #[serde(default)]
    pub self_deaf: bool,
}

/// Op 13 `VOICE_STATE`: the client's own state changes (only the fields given change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceStateChange {
    /// Microphone muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_mute: Option<bool>,
    /// Hears nothing (and is muted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_deaf: Option<bool>,
    /// Camera on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_video: Option<bool>,
    /// Sharing a screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_stream: Option<bool>,
}

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// Op 14 `VOICE_SDP` (client → server): the answer to the SFU's offer of that revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSdp {
    /// The voice session (from `VOICE_READY`).
    pub voice_session_id: String,
    /// `answer` (a client `offer` after joining is refused with 4107: only the SFU offers).
    #[serde(rename = "type")]
    pub kind: SdpKind,
    /// The SDP.
    pub sdp: String,
    /// The revision of the SFU offer it answers.
    pub revision: u64,
}

/// Op 15 `VOICE_ICE`: a trickled ICE candidate. The SFU is ICE-lite and learns the client's
/// addresses from its connectivity checks, so candidates are checked and then not needed;
/// clients may skip sending them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceIce {
    /// The voice session.
    pub voice_session_id: String,
    /// `RTCIceCandidateInit`, or null at the end of gathering.
    pub candidate: Option<serde_json::Value>,
}

/// One key share in `VOICE_KEYS`: a Signal message for one device of a participant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyShareOut {
    /// To whom.
    pub user_id: UserId,
    /// To which device.
    pub device_id: DeviceId,
    /// The Signal ciphertext (a media key share, never readable by the server).
    pub ciphertext: Base64Bytes,
}

impl std::fmt::Debug for KeyShareOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShareOut").field("user_id", &self.user_id).field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// Op 16 `VOICE_KEYS`: the sender's media key for an epoch, to other participants' devices.
/// Relayed live to the devices that are in the same room, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceKeys {
    /// The voice session.
    pub voice_session_id: String,
    /// The epoch the keys are for.
    pub epoch: u64,
    /// 1 to [`KEYS_PER_FRAME_MAX`] shares.
    pub keys: Vec<KeyShareOut>,
}

impl VoiceKeys {
    /// `keys` split into frames the server takes: at most [`KEYS_PER_FRAME_MAX`] shares, and
    /// well under [`VOICE_FRAME_MAX_BYTES`] of text (a share that starts a Signal session
    /// carries a post-quantum key: about 2.5 KB of base64, some 28 to a frame).
    pub fn frames(voice_session_id: &str, epoch: u64, keys: Vec<KeyShareOut>) -> Vec<VoiceKeys> {
        const ENVELOPE: usize = 256;
        let mut frames = Vec::new();
        let mut chunk: Vec<KeyShareOut> = Vec::new();
        let mut bytes = ENVELOPE + voice_session_id.len();
        for key in keys {
            // The ids as text and the JSON around them.
            let size = key.ciphertext.0.len().div_ceil(3) * 4 + 96;
            if !chunk.is_empty() && (chunk.len() == KEYS_PER_FRAME_MAX || bytes + size > VOICE_FRAME_MAX_BYTES) {
                frames.push(VoiceKeys { voice_session_id: voice_session_id.to_owned(), epoch, keys: std::mem::take(&mut chunk) });
                bytes = ENVELOPE + voice_session_id.len();
            }
            bytes += size;
            chunk.push(key);
        }
        if !chunk.is_empty() {
            frames.push(VoiceKeys { voice_session_id: voice_session_id.to_owned(), epoch, keys: chunk });
        }
        frames
    }
}

/// A subscriber's wish for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackQuality {
    /// Nothing (a hidden tile).
    Off,
    /// The lowest simulcast layer.
    Low,
    /// The middle layer.
    Medium,
    /// The best the publisher sends.
    High,
}

/// One track's wish in `VOICE_QUALITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackWish {
    /// The track (from `VOICE_SDP`'s tracks).
    pub track_id: u64,
    /// The quality.
    pub quality: TrackQuality,
}

/// Op 17 `VOICE_QUALITY`: which layer the client wants of the tracks it receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceQuality {
    /// The voice session.
    pub voice_session_id: String,
    /// 1 to [`QUALITY_TRACKS_MAX`] wishes.
    pub tracks: Vec<TrackWish>,
}

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// The microphone (Opus).
    Audio,
    /// The camera (VP8, simulcast).
    Camera,
    /// A screen share (VP8).
    Screen,
}

/// Someone in a voice room, as the SFU knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceParticipant {
    /// The user.
    pub user_id: UserId,
    /// The device that joined.
    pub device_id: DeviceId,
    /// Their slot in the room (in their media keys' ids; unique while they are present).
    pub slot: u32,
}

/// A track the client publishes (in `VOICE_READY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTrack {
    /// The m-line of the client's offer.
    pub mid: String,
    /// The track's id (others see it in their `VOICE_SDP`).
    pub track_id: u64,
    /// What it carries.
    pub kind: MediaKind,
}

/// A track the SFU sends the client (in the SFU's `VOICE_SDP` offers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTrack {
    /// The m-line of the SFU's offer.
    pub mid: String,
    /// The track.
    pub track_id: u64,
    /// Its publisher, as the server claims it: the media key that opens its frames is what
    /// proves who sent them.
    pub user_id: UserId,
    /// The publisher's device.
    pub device_id: DeviceId,
    /// The publisher's slot.
    pub slot: u32,
    /// What it carries.
    pub kind: MediaKind,
}

/// A TURN or STUN server for the client's `RTCPeerConnection`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    /// `turn:host:port?transport=udp`, `turns:…`, `stun:…`.
    pub urls: Vec<String>,
    /// Time-limited TURN user name (`<expiry>:<user id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its credential (HMAC of the user name with the TURN server's shared secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer").field("urls", &self.urls).field("username", &self.username).finish_non_exhaustive()
    }
}

/// `GET /api/v1/voice/ice-servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServers {
    /// The servers (empty when the SFU is reachable directly).
    pub ice_servers: Vec<IceServer>,
    /// When the TURN credentials expire (Unix seconds; 0 without TURN).
    pub expires_at: u64,
}

/// `VOICE_READY`: the join went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceReady {
    /// The voice session (name it in the other ops).
    pub voice_session_id: String,
    /// The channel.
    pub channel_id: ChannelId,
    /// Its server (`None` for a group DM call).
    pub server_id: Option<ServerId>,
    /// The client's slot in the room.
    pub slot: u32,
    /// The room's media epoch now.
    pub epoch: u64,
    /// The SFU's answer to the client's offer.
    pub sdp: String,
    /// What the client publishes, by m-line.
    pub tracks: Vec<LocalTrack>,
    /// Everyone in the room, the client included.
    pub participants: Vec<VoiceParticipant>,
}

/// `VOICE_SDP` (server → client): an SFU offer (subscriptions changed). Answer it with op 14
/// and the same revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceOffer {
    /// The voice session.
    pub voice_session_id: String,
    /// Always `offer`.
    #[serde(rename = "type")]
    pub kind: SdpKind,
    /// The SDP.
    pub sdp: String,
    /// Its revision (increasing; ignore an older one).
    pub revision: u64,
    /// What each m-line it adds carries.
    pub tracks: Vec<RemoteTrack>,
}

/// Why the media epoch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochCause {
    /// Someone joined: ratchet your key one step and hand the step to the newcomer.
    Join,
    /// Someone left: draw a fresh key and hand it to everyone who stays.
    Leave,
}

/// `VOICE_EPOCH`: the room's participants changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceEpoch {
    /// The voice session of the receiver.
    pub voice_session_id: String,
    /// The channel.
    pub channel_id: ChannelId,
    /// The new epoch.
    pub epoch: u64,
    /// Why.
    pub cause: EpochCause,
    /// Who joined or left.
    pub subject: VoiceParticipant,
    /// Everyone in the room now.
    pub participants: Vec<VoiceParticipant>,
}

/// `VOICE_KEY`: a media key share from another participant (live only, never queued).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceKey {
    /// The voice session of the receiver.
    pub voice_session_id: String,
    /// The channel.
    pub channel_id: ChannelId,
    /// The epoch the sender meant it for.
    pub epoch: u64,
    /// The sender.
    pub from_user: UserId,
    /// The sender's device (decrypt with the pairwise session of this device).
    pub from_device: DeviceId,
    /// The Signal ciphertext.
    pub ciphertext: Base64Bytes,
}

impl std::fmt::Debug for VoiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceKey")
            .field("channel_id", &self.channel_id)
            .field("epoch", &self.epoch)
            .field("from_user", &self.from_user)
            .field("from_device", &self.from_device)
            .finish_non_exhaustive()
    }
}

/// Someone's voice state (`VOICE_STATE_UPDATE`, and in READY's servers). A user with
/// `channel_id: null` left voice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoiceState {
    /// The server (`None` for a group DM call).
    pub server_id: Option<ServerId>,
    /// The voice channel, or `None` once they left.
    pub channel_id: Option<ChannelId>,
    /// The user.
    pub user_id: UserId,
    /// The device they joined from.
    pub device_id: DeviceId,
    /// Muted by themselves.
    pub self_mute: bool,
    /// Deafened by themselves.
    pub self_deaf: bool,
    /// Muted by a moderator (or without the permission to speak).
    pub mute: bool,
    /// Deafened by a moderator.
    pub deaf: bool,
    /// Camera on.
    pub self_video: bool,
    /// Sharing a screen.
    pub self_stream: bool,
    /// When they joined (Unix milliseconds).
    pub joined_at: i64,
}

/// `VOICE_SPEAKING`: someone in the client's room started or stopped speaking (from the
/// audio level the SFU sees, never from the media).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceSpeaking {
    /// The channel.
    pub channel_id: ChannelId,
    /// Who.
    pub user_id: UserId,
    /// Their device.
    pub device_id: DeviceId,
    /// Speaking or not.
    pub speaking: bool,
}

/// `VOICE_ERROR`: a voice op was refused (the connection stays open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceError {
    /// The op refused.
    pub op: u8,
    /// See [`code`].
    pub code: u16,
    /// What went wrong, for people.
    pub message: String,
    /// The voice session it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_session_id: Option<String>,
}

/// Why the server ended a voice session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The client left (or joined elsewhere).
    Left,
    /// A moderator disconnected them.
    Disconnected,
    /// A moderator moved them: join `move_to`.
    Moved,
    /// No longer a member of the server (left, kicked or banned), or the server is gone.
    Kicked,
    /// They may no longer connect to the channel (or view it), or it was deleted.
    PermissionLost,
    /// The same user joined voice from another device or tab.
    Replaced,
    /// Their media connection failed or never came up.
    MediaFailed,
    /// Their gateway session ended.
    GatewayLost,
    /// The server is shutting down.
    Shutdown,
}

/// `VOICE_DISCONNECT`: the voice session ended for a reason other than the client's leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoiceDisconnect {
    /// The voice session.
    pub voice_session_id: String,
    /// The channel it was in.
    pub channel_id: ChannelId,
    /// Why.
    pub reason: DisconnectReason,
    /// For `moved`: the channel to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to: Option<ChannelId>,
}

/// `PATCH /api/v1/servers/{server_id}/members/{user_id}/voice`: a moderator's action on a
/// member in voice (the fields given change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VoiceModeration {
    /// Server mute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mute: Option<bool>,
    /// Server deafen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deaf: Option<bool>,
    /// Move to this voice channel; `null` disconnects. Absent: stays.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::servers::double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ChannelId>))]
    pub channel_id: Option<Option<ChannelId>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ClientMessage;

    fn shares(n: usize, bytes: usize) -> Vec<KeyShareOut> {
        (0..n)
            .map(|i| KeyShareOut {
                user_id: UserId(117_632_502_289_399_808 + i as i64),
                device_id: DeviceId(i as u32 + 1),
                ciphertext: vec![0xa5; bytes].into(),
            })
            .collect()
    }

    #[test]
    fn key_shares_are_split_into_frames_the_server_takes() {
        for (n, bytes, frames) in [(150, 120, 2), (99, 1_900, 4), (99, 8 * 1024, 17), (1, 10, 1)] {
            let keys = shares(n, bytes);
            let split = VoiceKeys::frames("a-voice-session-id-of-some-length", 7, keys.clone());
            assert_eq!(split.len(), frames, "{n} shares of {bytes} bytes");
            for frame in &split {
                let text = ClientMessage::VoiceKeys(frame.clone()).to_text();
                assert!(text.len() <= VOICE_FRAME_MAX_BYTES, "{} bytes", text.len());
                let parsed = ClientMessage::parse(&text).expect("the server reads it");
                assert!(text.len() <= parsed.frame_limit());
            }
            let rejoined: Vec<KeyShareOut> = split.into_iter().flat_map(|f| f.keys).collect();
            assert_eq!(rejoined, keys, "every share, in order");
        }
    }
}
