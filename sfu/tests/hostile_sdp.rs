//! Hostile SDP, the way a fuzzer sends it: seeded walks of changes to real offers and answers
//! (Chromium's and the native client's) through everything the SFU does with a join offer and
//! with an answer to its own offer: the entry points libFuzzer runs in `fuzz/`. Nothing may
//! panic, and an offer that is taken publishes no more than a client may. The walks are fixed
//! (the same seed, the same inputs) so a failure repeats.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use copains_client_core::fuzz::Mutator;
use copains_client_core::voice::MediaSender;
use copains_client_core::voice_native::VoicePeer;
use copains_sfu::driver::accept_offer;
use copains_sfu::fuzz;

const CHROMIUM_OFFER: &str = include_str!("../../fuzz/seeds/sdp_offer/chromium-mic-camera-screen.sdp");
const CHROMIUM_ANSWER: &str = include_str!("../../fuzz/seeds/sdp_answer/chromium-answer.sdp");

/// Lines and words SDP is made of, hostile ones among them.
const SDP_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"a=",
    b"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    b"m=audio 0 UDP/TLS/RTP/SAVPF 111\r\n",
    b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    b"a=simulcast:send ",
    b"a=simulcast:recv q;h;f\r\n",
    b"a=rid:",
    b" send",
    b";",
    b",",
    b"~",
    b"a=mid:",
    b"a=ssrc:",
    b"a=ssrc-group:FID 1 2\r\n",
    b"a=extmap:",
    b"a=extmap:15 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
    b"a=rtpmap:",
    b"a=rtpmap:96 VP8/90000\r\n",
    b"a=fmtp:",
    b"a=rtcp-fb:96 nack pli\r\n",
    b"a=group:BUNDLE ",
    b"4294967295",
    b"18446744073709551616",
    b"-1",
    b"0",
    b"\0",
    b"a=sendonly\r\n",
    b"a=recvonly\r\n",
    b"a=sendrecv\r\n",
    b"a=inactive\r\n",
    b"c=IN IP6 ::\r\n",
    b"a=setup:actpass\r\n",
    b"a=setup:",
    b"a=fingerprint:sha-256 ",
    b"a=ice-ufrag:",
    b"a=ice-pwd:",
    b"a=candidate:",
    b"a=msid:",
    b"a=rtcp-mux\r\n",
    b"a=ice-lite\r\n",
    b"\xf0\x9f\x92\xa9",
];

/// The native client's join offer, and its answer to the SFU's first offer.
async fn native_offer_and_answer() -> (String, String) {
    let mut peer =
        VoicePeer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), MediaSender::fresh(1, 0).expect("key"), true).await.expect("peer");
    let offer = peer.offer().expect("offer");
    let accepted = accept_offer(&offer, SocketAddr::from(([127, 0, 0, 1], 50_000)), Instant::now()).expect("taken");
    peer.apply_answer(accepted.answer).expect("the client takes the answer");
    let (_, ours) = fuzz::renegotiating(&offer);
    let answer = peer.answer_offer(ours).expect("the client answers");
    (offer, answer)
}

/// Runs `take` over `n` changed inputs; returns how many it took.
fn walk(seeds: &[&str], n: usize, seed: u64, mut take: impl FnMut(&[u8]) -> bool) -> usize {
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_bytes()).collect();
    let mut mutator = Mutator::new(seed);
    (0..n).filter(|_| take(&mutator.mutate(&seeds, SDP_TOKENS))).count()
}

#[tokio::test]
async fn changed_join_offers_are_refused_or_kept_within_a_clients_bounds() {
    let (native, _) = native_offer_and_answer().await;
    let seeds = [CHROMIUM_OFFER, native.as_str()];
    for seed in seeds {
        assert!(fuzz::sdp_offer(seed.as_bytes()), "the seed is taken:\n{seed}");
    }
    let n = 3_000;
    let taken = walk(&seeds, n, 0x0ff3_12ed, fuzz::sdp_offer);
    // Both outcomes are reached: the walk goes past the parser into the PeerConnection.
    assert!(taken > n / 50 && taken < n - n / 50, "{taken} of {n} taken");
}

#[tokio::test]
async fn changed_answers_are_refused_or_applied_without_a_panic() {
    let (_, native) = native_offer_and_answer().await;
    let seeds = [CHROMIUM_ANSWER, native.as_str()];
    for seed in seeds {
        assert!(fuzz::sdp_answer(CHROMIUM_OFFER, seed.as_bytes()), "the seed is applied:\n{seed}");
    }
    let n = 2_000;
    let applied = walk(&seeds, n, 0x0a25_3e12, |data| fuzz::sdp_answer(CHROMIUM_OFFER, data));
    assert!(applied > n / 50 && applied < n - n / 50, "{applied} of {n} applied");
}
