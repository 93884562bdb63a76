//! What the REST API asks of voice, which the gateway runs: the moderators' actions on members
//! in voice. The gateway registers its implementation in [`crate::AppState::voice`].

use async_trait::async_trait;
use copains_client_core::voice_signal::{IceServers, VoiceModeration, VoiceState};
use copains_client_core::{ChannelId, ServerId, UserId};

/// Why a moderation action on a member in voice did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceControlError {
    /// The member is not in a voice channel of that server.
    #[error("that member is not in a voice channel of this server")]
    NotInVoice,
    /// Voice is not running on this node.
    #[error("voice is not available")]
    Unavailable,
}

/// Voice as the API sees it.
#[async_trait]
pub trait VoiceControl: Send + Sync + 'static {
    /// Applies a moderator's mute, deafen, move (`channel_id: Some(Some(_))`, already checked
    /// to be a voice channel of `server` the target may connect to) or disconnect
    /// (`channel_id: Some(None)`). Returns the member's voice state after it.
    async fn moderate(&self, server: ServerId, target: UserId, change: VoiceModeration) -> Result<VoiceState, VoiceControlError>;

    /// The STUN and TURN servers for `user`'s `RTCPeerConnection` (TURN credentials made now).
    fn ice_servers(&self, user: UserId) -> IceServers;

    /// The channel `user` is in, in `server`, if any.
    async fn channel_of(&self, server: ServerId, user: UserId) -> Option<ChannelId>;

    /// Voice rooms with someone in them, and participants, on this node.
    fn counts(&self) -> (usize, usize);
}
