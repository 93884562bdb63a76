//! The selective forwarding unit's decisions, as plain state (sans-IO): who is in a room, which
//! tracks they publish, which layer of each track every other participant receives, how the
//! forwarded packets are renumbered when a layer changes, and who is speaking. Nothing here
//! reads a socket or a clock: a driver (WebRTC) feeds packets' clear metadata and the time in,
//! and carries the decisions out. The SFU never sees media: it forwards end-to-end encrypted
//! frames (SFrame) and reads only what stays in the clear (RTP headers, the audio-level header
//! extension, the VP8 payload descriptor). See docs/voice-design.md.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bwe;
pub mod driver;
#[doc(hidden)]
pub mod fuzz;
pub mod loudest;
pub mod munger;
pub mod room;
pub mod rtp;
pub mod speaker;
pub mod vp8;

pub use room::{Forward, Output, Quality, Room, RoomError, RoomLimits, TrackKind};
pub use rtp::RtpMeta;
