//! Entry points for fuzzing (the targets in `fuzz/`) and for the seeded walks the tests run on
//! every build: each takes any bytes, drives what a hostile client reaches with them, and
//! panics only when an invariant breaks.

use std::net::SocketAddr;
use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::RTCPeerConnection;

use crate::driver::{accept_offer, add_subscription, CLIENT_MLINES_MAX};
use crate::room::TrackKind;

const HOST: ([u8; 4], u16) = ([127, 0, 0, 1], 50_000);

/// A join offer: refused, or taken by a fresh PC whose answer the SFU can read back, and which
/// publishes what a client may publish (one microphone, one camera, one screen, three layers
/// at most). Returns whether it was taken.
pub fn sdp_offer(data: &[u8]) -> bool {
    let Ok(sdp) = std::str::from_utf8(data) else { return false };
    let Ok(accepted) = accept_offer(sdp, SocketAddr::from(HOST), Instant::now()) else { return false };
    let tracks = &accepted.offered;
    assert!(tracks.len() <= CLIENT_MLINES_MAX);
    for kind in [TrackKind::Audio, TrackKind::Camera, TrackKind::Screen] {
        assert!(tracks.iter().filter(|t| t.kind == kind).count() <= 1, "two {kind:?} tracks published");
    }
    assert!(tracks.iter().all(|t| t.rids.len() <= 3), "more than three layers");
    RTCSessionDescription::answer(accepted.answer).expect("the SFU reads its own answer");
    true
}

/// A PC that took `offer` (a valid join offer) and then offered three subscriptions
/// (someone's microphone, camera and screen), with the SDP of that offer.
pub fn renegotiating(offer: &str) -> (RTCPeerConnection, String) {
    let now = Instant::now();
    let mut pc = accept_offer(offer, SocketAddr::from(HOST), now).expect("the seed offer is valid").pc;
    for (track, kind) in [(16, TrackKind::Audio), (17, TrackKind::Camera), (18, TrackKind::Screen)] {
        let rtx = (kind != TrackKind::Audio).then_some(2000 + track as u32);
        add_subscription(&mut pc, 2, track, kind, (1000 + track as u32, rtx), None).expect("a subscription");
    }
    let ours = pc.create_offer(None).expect("the SFU offers");
    pc.set_local_description(now, ours.clone()).expect("the SFU applies its offer");
    (pc, ours.sdp)
}

/// A client's answer to the SFU's renegotiation offer: refused, or applied, on a PC from
/// [`renegotiating`]. Returns whether it was applied.
pub fn sdp_answer(offer: &str, data: &[u8]) -> bool {
    let Ok(sdp) = std::str::from_utf8(data) else { return false };
    let (mut pc, _) = renegotiating(offer);
    let Ok(answer) = RTCSessionDescription::answer(sdp.to_owned()) else { return false };
    pc.set_remote_description(Instant::now(), answer).is_ok()
}
