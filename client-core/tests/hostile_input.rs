//! Hostile input, the way a fuzzer sends it: seeded walks of changes to real gateway frames
//! (both ways) and to sealed media frames, through the entry points libFuzzer runs in `fuzz/`.
//! Nothing may panic, a frame that is read must read back the same, and no changed media
//! frame may open. The walks are fixed (the same seed, the same inputs) so a failure repeats.

use std::path::PathBuf;

use copains_client_core::fuzz::{self, Mutator};

/// Bytes a hand-written or hostile frame is made of.
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e400",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"op\":",
    b"\"d\":",
    b"\"t\":",
    b"\"s\":",
    b"\"READY\"",
    b"\"ENVELOPE\"",
    b"{\"op\":16,\"d\":",
    b"\"keys\":[]",
    b"\"ids\":[]",
    b"\"sdp\":\"v=0\"",
    b"\"\xf0\x9f\x92\xa9\"",
    b"\"voice_session_id\":",
];

fn seeds(dir: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("the seeds").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).expect("a seed")).collect()
}

/// Runs `walk` over `n` changed inputs; returns how many it took (read, applied, opened).
fn walk(seeds: &[Vec<u8>], n: usize, seed: u64, mut take: impl FnMut(&[u8]) -> bool) -> usize {
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut mutator = Mutator::new(seed);
    (0..n).filter(|_| take(&mutator.mutate(&seeds, JSON_TOKENS))).count()
}

#[test]
fn client_frames_are_refused_or_read_back_the_same() {
    let seeds = seeds("client_frame");
    assert!(seeds.len() >= 10, "a seed per client op");
    for seed in &seeds {
        assert!(fuzz::client_frame(seed), "seed {} is a valid frame", String::from_utf8_lossy(seed));
    }
    let n = 50_000;
    let read = walk(&seeds, n, 0x00c0_ffee, fuzz::client_frame);
    // Both outcomes are reached: the walk goes past the JSON parser into every op's checks.
    assert!(read > n / 100 && read < n - n / 100, "{read} of {n} read");
}

#[test]
fn server_frames_never_panic_a_client() {
    let seeds = seeds("server_frame");
    for seed in &seeds {
        assert!(fuzz::server_frame(seed), "seed {} is a valid frame", String::from_utf8_lossy(seed));
    }
    let n = 50_000;
    let read = walk(&seeds, n, 0x0bad_cafe, fuzz::server_frame);
    assert!(read > n / 100 && read < n - n / 100, "{read} of {n} read");
}

#[cfg(feature = "voice")]
#[test]
fn no_changed_media_frame_opens() {
    let mut mutator = Mutator::new(0x5f4a_3e00);
    for i in 0..20_000u32 {
        // Mostly one to four changed bytes (a flipped bit in the header, the clear bytes, the
        // tag), sometimes a long run or a cut.
        let len = if i % 10 == 0 { (mutator.next_u64() % 200) as usize } else { 1 + (mutator.next_u64() % 4) as usize };
        let mut data: Vec<u8> = (0..=len).map(|_| mutator.next_u64() as u8).collect();
        if i % 50 == 0 {
            // Nothing changed at all: the untouched frame must open.
            data[0] &= !2;
            data[1..].fill(0);
            assert!(fuzz::sframe_open(&data), "the untouched frame opens");
        }
        // A changed frame that opened would fail inside (the frame, its slot and its clear
        // bytes are compared with what was sealed).
        fuzz::sframe_open(&data);
    }
}
