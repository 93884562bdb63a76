//! The SFU driver with real WebRTC peers: three native voice peers (client-core's `rtc`
//! PeerConnections on their own localhost UDP sockets) join one room through one SFU port,
//! publish audio, a three-layer simulcast camera and a screen, and each receives exactly the
//! frames the other two sent.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copains_client_core::voice::MediaSender;
use copains_client_core::voice_native::{Received, Source, VoicePeer, CAMERA_RIDS};
use copains_sfu::driver::{self, RemoveReason, SfuConfig, SfuError, SfuEvent};
use copains_sfu::{Quality, RoomLimits, TrackKind};
use parking_lot::Mutex;
use tokio::sync::mpsc;

const ROOM: u64 = 7;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What the SFU said, gathered by a task.
#[derive(Default)]
struct Heard {
    offers: HashMap<u64, Vec<String>>,
    epochs: Vec<u64>,
    connected: HashSet<u64>,
    speaking: HashSet<u64>,
    /// Client 1's camera as client 2 receives it.
    camera_of_1: Option<u64>,
}

fn listen(mut events: mpsc::UnboundedReceiver<SfuEvent>) -> Arc<Mutex<Heard>> {
    let heard = Arc::new(Mutex::new(Heard::default()));
    let h = heard.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let mut h = h.lock();
            match event {
                SfuEvent::Offer { pid, sdp, tracks, .. } => {
                    assert!(tracks.iter().all(|t| t.publisher != pid), "nobody receives their own tracks");
                    if pid == 2 {
                        h.camera_of_1 = tracks.iter().find(|t| t.publisher == 1 && t.kind == TrackKind::Camera).map(|t| t.track);
                    }
                    h.offers.entry(pid).or_default().push(sdp);
                }
                SfuEvent::Epoch { epoch, .. } => h.epochs.push(epoch),
                SfuEvent::Connected { pid } => {
                    h.connected.insert(pid);
                }
                SfuEvent::Speaking { pid, speaking: true, .. } => {
                    h.speaking.insert(pid);
                }
                SfuEvent::Removed { .. } | SfuEvent::Speaking { .. } => {}
            }
        }
    });
    heard
}

/// The frame of `pid`'s `source` (camera: `layer`) at tick `n`.
fn frame(pid: u64, source: Source, layer: &str, n: u32) -> Vec<u8> {
    let mut f = match source {
        Source::Microphone => vec![0xf8],
        _ => vec![0x00; 10],
    };
    f.extend_from_slice(format!("from {pid} {source:?} layer {layer} #{n}").as_bytes());
    f
}

fn text(r: &Received) -> String {
    r.frame.as_ref().map(|(_, f)| String::from_utf8_lossy(f).into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_each_receive_exactly_what_the_other_two_send() {
    let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() };
    let (sfu, events) = driver::start(config).await.expect("sfu");
    let heard = listen(events);
    let pids = [1u64, 2, 3];
    let mut peers = Vec::new();
    for pid in pids {
        let mut peer = VoicePeer::bind(LOCALHOST, MediaSender::fresh(pid as u32, 0).expect("key"), true).await.expect("peer");
        let joined = sfu.join(ROOM, pid, peer.offer().expect("offer")).await.expect("join");
        assert_eq!(
            joined.tracks.iter().map(|t| t.2).collect::<Vec<_>>(),
            vec![TrackKind::Audio, TrackKind::Camera, TrackKind::Screen]
        );
        peer.apply_answer(joined.answer).expect("answer");
        peers.push((pid, peer, Vec::<Received>::new()));
    }
    let shares: Vec<_> = peers.iter().map(|(pid, p, _)| (*pid, p.media.share())).collect();
    for (pid, peer, _) in &mut peers {
        for (other, share) in &shares {
            if other != pid {
                peer.keys.add(share).expect("key");
            }
        }
    }
    // Every 20 ms each peer sends a frame on its microphone, each camera layer and its screen.
    // Client 2 asks for the lowest layer of client 1's camera after 3 s, and for the best again
    // after 4.5 s; client 3 never asks.
    let started = Instant::now();
    let mut asked = 0;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(6) {
        n += 1;
        if (asked == 0 && started.elapsed() > Duration::from_secs(3))
            || (asked == 1 && started.elapsed() > Duration::from_millis(4500))
        {
            let track = heard.lock().camera_of_1.expect("client 2 receives client 1's camera");
            sfu.quality(2, track, if asked == 0 { Quality::Low } else { Quality::High });
            asked += 1;
        }
        for (pid, peer, got) in &mut peers {
            let offers = heard.lock().offers.remove(pid).unwrap_or_default();
            for offer in offers {
                let answer = peer.answer_offer(offer).expect("answer the SFU");
                sfu.answer(*pid, answer).await.expect("answer taken");
            }
            if peer.is_connected() {
                peer.send_frames(Source::Microphone, &[&frame(*pid, Source::Microphone, "", n)]).await.expect("mic");
                let layers: Vec<Vec<u8>> = CAMERA_RIDS.iter().map(|rid| frame(*pid, Source::Camera, rid, n)).collect();
                peer.send_frames(Source::Camera, &layers.iter().map(Vec::as_slice).collect::<Vec<_>>()).await.expect("camera");
                peer.send_frames(Source::Screen, &[&frame(*pid, Source::Screen, "", n)]).await.expect("screen");
            }
            peer.run_until(Instant::now() + Duration::from_millis(7), got).await;
        }
    }
    assert_eq!(asked, 2);
    let heard = heard.lock();
    assert_eq!(heard.connected, pids.into_iter().collect::<HashSet<_>>(), "every PC connected");
    assert_eq!(&heard.epochs[..3], &[1, 2, 3], "each join starts an epoch");
    assert_eq!(heard.speaking, pids.into_iter().collect::<HashSet<_>>(), "everyone's audio level says they speak");
    for (pid, _, got) in &peers {
        for r in got {
            let (slot, _) = r.frame.as_ref().expect("every frame opens");
            let from: u64 = r.stream.parse().expect("the stream names the publisher");
            assert_eq!(u64::from(*slot), from, "the key that opened it is the publisher's");
            assert!(text(r).contains(&format!("from {from} ")), "the frame is the publisher's");
            assert_ne!(from, *pid, "nobody receives their own media");
        }
        for other in pids.iter().filter(|p| *p != pid) {
            for source in [Source::Microphone, Source::Camera, Source::Screen] {
                let count = got.iter().filter(|r| text(r).contains(&format!("from {other} {source:?} "))).count();
                assert!(count >= 20, "client {pid} got {count} {source:?} frames from {other}");
            }
        }
    }
    // The camera of client 1 as clients 2 and 3 received it: layer by layer, renumbered.
    let camera = |sub: u64| -> Vec<(String, u16)> {
        peers[(sub - 1) as usize]
            .2
            .iter()
            .filter(|r| text(r).contains("from 1 Camera "))
            .map(|r| (text(r).split("layer ").nth(1).and_then(|l| l.split(' ').next()).unwrap_or_default().to_owned(), r.seq))
            .collect()
    };
    let switched = camera(2);
    let layers: Vec<&str> = switched.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(layers.first(), Some(&"f"), "the best layer by default");
    let low = layers.iter().position(|l| *l == "q").expect("client 2 moved to the lowest layer");
    assert!(layers[low..].contains(&"f"), "and back to the best");
    assert_eq!(layers.last(), Some(&"f"));
    assert!(!layers.contains(&"h"), "never the middle layer");
    for pair in switched.windows(2) {
        assert_eq!(pair[1].1, pair[0].1.wrapping_add(1), "one continuous sequence across the switches");
    }
    assert!(camera(3).iter().all(|(l, _)| l == "f"), "client 3 keeps the best layer");
}

#[tokio::test(start_paused = true)]
async fn bad_signalling_is_refused_and_a_peer_that_never_connects_is_removed() {
    let limits = RoomLimits { max_participants: 1, ..RoomLimits::default() };
    let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), limits, ..SfuConfig::default() };
    let (sfu, mut events) = driver::start(config).await.expect("sfu");
    assert!(matches!(sfu.join(ROOM, 1, "garbage".into()).await, Err(SfuError::InvalidSdp(_))));
    assert_eq!(sfu.answer(9, "v=0".into()).await, Err(SfuError::UnknownParticipant));
    let mut one = VoicePeer::bind(LOCALHOST, MediaSender::fresh(1, 0).expect("key"), false).await.expect("peer");
    let joined = sfu.join(ROOM, 1, one.offer().expect("offer")).await.expect("join");
    assert!(joined.answer.contains("a=ice-lite"), "the SFU is ICE-lite");
    assert!(joined.answer.contains(&format!("{} {}", sfu.media_addr.ip(), sfu.media_addr.port())), "its one host candidate");
    assert_eq!(
        joined.tracks.iter().map(|t| t.2).collect::<Vec<_>>(),
        vec![TrackKind::Audio, TrackKind::Camera, TrackKind::Screen]
    );
    assert_eq!(sfu.join(ROOM, 1, one.offer().expect("offer")).await.err(), Some(SfuError::AlreadyIn));
    let mut two = VoicePeer::bind(LOCALHOST, MediaSender::fresh(2, 0).expect("key"), false).await.expect("peer");
    assert_eq!(sfu.join(ROOM, 2, two.offer().expect("offer")).await.err(), Some(SfuError::RoomFull));
    assert_eq!(sfu.answer(1, joined.answer.clone()).await, Err(SfuError::NegotiationConflict), "no offer is out");

    // Client 1's PC is never run: once the connect timeout passes, the SFU removes it.
    let removed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let SfuEvent::Removed { pid, reason, .. } = events.recv().await.expect("sfu running") {
                return (pid, reason);
            }
        }
    })
    .await
    .expect("removed");
    assert_eq!(removed, (1, RemoveReason::ConnectTimeout));
    // The room has room again.
    assert!(sfu.join(ROOM, 2, two.offer().expect("offer")).await.is_ok());
}
