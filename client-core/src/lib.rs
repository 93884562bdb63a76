//! The LesCopains wire contract, shared by the server and every client.
//!
//! The default build holds only data: REST request and response types ([`api`]), gateway
//! frames, opcodes, events and close codes ([`gateway`]), identifiers ([`ids`]) and the error
//! body ([`error`]). The networked client lives behind the `native` feature ([`client`]).
#![cfg_attr(not(feature = "wasm"), forbid(unsafe_code))]

pub mod admin;
pub mod api;
pub mod bytes;
pub mod channel_messages;
pub mod devices;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod gateway;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod servers;
pub mod social;
pub mod voice_signal;

#[cfg(feature = "native")]
pub mod client;
#[cfg(feature = "crypto")]
pub mod crypto;
#[cfg(feature = "crypto")]
pub mod engine;
#[cfg(feature = "native")]
pub mod messaging;
#[cfg(feature = "voice")]
pub mod voice;
#[cfg(feature = "voice-native")]
pub mod voice_native;
#[cfg(feature = "wasm")]
pub mod wasm;

pub use error::{ApiErrorBody, ErrorCode, ErrorDetail};
pub use ids::{ChannelId, DeviceId, EnvelopeId, MessageId, ReactionId, RoleId, ServerId, SessionId, UserId};
