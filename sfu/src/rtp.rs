//! What the SFU reads of an RTP packet: its header fields and the extensions that stay in the
//! clear. The payload is an SFrame ciphertext (its first bytes, the codec's payload descriptor,
//! stay clear so that keyframes can be told).

/// A participant (one voice session of one device).
pub type Pid = u64;
/// A published track.
pub type TrackId = u64;

/// The clear metadata of one incoming RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMeta {
    /// The publishing participant.
    pub pid: Pid,
    /// The track it belongs to.
    pub track: TrackId,
    /// Its simulcast layer (0 = lowest; audio and single-layer video: 0).
    pub layer: u8,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The audio level (RFC 6464: 0 = loudest, 127 = silence), audio only.
    pub audio_level: Option<u8>,
    /// Whether the packet starts a keyframe (video; see [`crate::vp8`]).
    pub keyframe_start: bool,
    /// Size in bytes (header and payload).
    pub len: usize,
}

/// Whether sequence number `a` comes after `b`, modulo 2^16 (RFC 3550).
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Whether timestamp `a` comes after `b`, modulo 2^32.
pub fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_across_the_wrap() {
        assert!(seq_newer(1, 0));
        assert!(seq_newer(0, 65535));
        assert!(!seq_newer(65535, 0));
        assert!(!seq_newer(5, 5));
        assert!(seq_newer(0x7fff, 0));
        assert!(!seq_newer(0x8000, 0));
        assert!(ts_newer(0, u32::MAX));
        assert!(!ts_newer(u32::MAX, 0));
    }
}
