//! The VP8 payload descriptor (RFC 7741 §4.2) and the first byte of the VP8 payload header,
//! which an SFrame-encrypting sender leaves in the clear: enough to tell a keyframe's first
//! packet. Every read is bounds-checked; a truncated or odd packet is "not a keyframe".

/// Whether an RTP payload is the first packet of a VP8 keyframe.
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else { return false };
        at += 1;
        let (i, l, t, k) = (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
        if i {
            let Some(&pid) = payload.get(at) else { return false };
            // M bit: a 15-bit picture id.
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if l {
            at += 1;
        }
        if t || k {
            at += 1;
        }
    }
    // The payload header's first byte: P (inverse key frame flag) is its lowest bit.
    payload.get(at).is_some_and(|h| h & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_starts_are_told_from_the_clear_bytes() {
        // S=1, PID=0, no extension; payload header with P=0.
        assert!(is_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same with P=1: an interframe.
        assert!(!is_keyframe_start(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!is_keyframe_start(&[0x00, 0x00]));
        // Start of partition 1, not 0.
        assert!(!is_keyframe_start(&[0x11, 0x00]));
        // Extended: I with a 15-bit picture id, L, T/K.
        assert!(is_keyframe_start(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00]));
        assert!(!is_keyframe_start(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01]));
        // 7-bit picture id.
        assert!(is_keyframe_start(&[0x90, 0x80, 0x05, 0x00]));
    }

    #[test]
    fn truncated_descriptors_are_not_keyframes_and_never_panic() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x10]));
        assert!(!is_keyframe_start(&[0x90]));
        assert!(!is_keyframe_start(&[0x90, 0x80]));
        assert!(!is_keyframe_start(&[0x90, 0xe0, 0x80, 0x01, 0x05]));
        let mut x: u32 = 0x1234_5678;
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = is_keyframe_start(&bytes);
            }
        }
    }
}
