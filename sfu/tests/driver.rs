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

/// A refused answer leaves the SFU's offer waiting for a good one; after three, the SFU refuses
/// the answers to that offer unread, even a good one: a hostile client cannot make the SFU's
/// one task parse SDP without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_refused_answers_to_an_offer_are_the_last_read() {
    let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() };
    let (sfu, events) = driver::start(config).await.expect("sfu");
    let heard = listen(events);
    let mut peers = Vec::new();
    for pid in [1u64, 2] {
        let mut peer = VoicePeer::bind(LOCALHOST, MediaSender::fresh(pid as u32, 0).expect("key"), false).await.expect("peer");
        let joined = sfu.join(ROOM, pid, peer.offer().expect("offer")).await.expect("join");
        peer.apply_answer(joined.answer).expect("answer");
        peers.push((pid, peer, Vec::<Received>::new()));
    }
    // 1 talks: its microphone joins the room, and the SFU offers it to 2.
    let started = Instant::now();
    let mut n = 0;
    let offer = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "no offer for 2");
        if let Some(offer) = heard.lock().offers.get_mut(&2).and_then(|o| o.pop()) {
            break offer;
        }
        n += 1;
        for (pid, peer, got) in &mut peers {
            if *pid == 1 && peer.is_connected() {
                peer.send_frames(Source::Microphone, &[&frame(1, Source::Microphone, "", n)]).await.expect("sent");
            }
            peer.run_until(Instant::now() + Duration::from_millis(10), got).await;
        }
    };
    let good = peers[1].1.answer_offer(offer).expect("2 answers");
    for bad in ["v=0".to_owned(), "garbage".to_owned(), "x".repeat(70_000)] {
        let refused = sfu.answer(2, bad).await;
        assert!(matches!(&refused, Err(SfuError::InvalidSdp(why)) if !why.contains("were refused")), "{refused:?}");
    }
    let unread = sfu.answer(2, good).await;
    assert!(
        matches!(&unread, Err(SfuError::InvalidSdp(why)) if why.contains("3 answers to this offer were refused")),
        "{unread:?}"
    );
}

/// A UDP relay between one client and the SFU that polices what the SFU sends the client to
/// `limit` bits per second (0: no limit), dropping what exceeds it, as a narrow link would.
struct Relay {
    addr: std::net::SocketAddr,
    limit: Arc<std::sync::atomic::AtomicU64>,
}

async fn relay(sfu: std::net::SocketAddr) -> Relay {
    use std::sync::atomic::Ordering;
    let socket = Arc::new(tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.expect("relay"));
    let addr = socket.local_addr().expect("addr");
    let limit = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rate = limit.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut client = None;
        // A token bucket of 100 ms worth of the rate.
        let (mut tokens, mut refilled) = (0f64, Instant::now());
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if from != sfu {
                client = Some(from);
                let _ = socket.send_to(&buf[..n], sfu).await;
                continue;
            }
            let Some(to) = client else { continue };
            let bps = rate.load(Ordering::Relaxed) as f64;
            if bps > 0.0 {
                let now = Instant::now();
                tokens = (tokens + bps / 8.0 * now.duration_since(refilled).as_secs_f64()).min(bps / 80.0);
                refilled = now;
                if tokens < n as f64 {
                    continue;
                }
                tokens -= n as f64;
            }
            let _ = socket.send_to(&buf[..n], to).await;
        }
    });
    Relay { addr, limit }
}

/// An SDP of the SFU's with its host candidate moved to `to`.
fn via(sdp: String, sfu: std::net::SocketAddr, to: std::net::SocketAddr) -> String {
    sdp.replace(&format!(" {} {} typ host", sfu.ip(), sfu.port()), &format!(" {} {} typ host", to.ip(), to.port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_a_narrow_link_gets_a_lower_layer_and_the_best_again_when_it_widens() {
    let config =
        SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), probe_after: Duration::from_secs(1), ..SfuConfig::default() };
    let (sfu, events) = driver::start(config).await.expect("sfu");
    let heard = listen(events);
    // Client 2 reaches the SFU through a relay; client 3 directly.
    let link = relay(sfu.media_addr).await;
    let mut peers = Vec::new();
    for pid in [1u64, 2, 3] {
        let mut peer = VoicePeer::bind(LOCALHOST, MediaSender::fresh(pid as u32, 0).expect("key"), true).await.expect("peer");
        let joined = sfu.join(ROOM, pid, peer.offer().expect("offer")).await.expect("join");
        let answer = if pid == 2 { via(joined.answer, sfu.media_addr, link.addr) } else { joined.answer };
        assert!(pid != 2 || answer.contains(&format!(" {} typ host", link.addr.port())), "client 2 is sent to the relay");
        peer.apply_answer(answer).expect("answer");
        peers.push((pid, peer, Vec::<Received>::new()));
    }
    let share = peers[0].1.media.share();
    for (_, peer, _) in &mut peers[1..] {
        peer.keys.add(&share).expect("key");
    }
    // Client 1's camera: about 25, 140 and 470 kb/s for its three layers (50 frames a second).
    let camera = |n: u32| -> Vec<Vec<u8>> {
        [("q", 20), ("h", 300), ("f", 1100)]
            .iter()
            .map(|(rid, size)| {
                let mut f = frame(1, Source::Camera, rid, n);
                f.resize(*size, b'.');
                f
            })
            .collect()
    };
    let layer_of = |r: &Received| text(r).split("layer ").nth(1).and_then(|l| l.split(' ').next()).unwrap_or_default().to_owned();
    let started = Instant::now();
    let mut n = 0;
    // The link narrows to 250 kb/s from 3 s to 9 s, then widens; the run ends once client 2
    // has the best layer again (20 s at most).
    loop {
        let elapsed = started.elapsed();
        let limit = if (Duration::from_secs(3)..Duration::from_secs(9)).contains(&elapsed) { 250_000 } else { 0 };
        link.limit.store(limit, std::sync::atomic::Ordering::Relaxed);
        if elapsed > Duration::from_secs(10) {
            let tail: Vec<String> = peers[1].2.iter().rev().take(25).map(layer_of).collect();
            if tail.len() == 25 && tail.iter().all(|l| l == "f") {
                break;
            }
        }
        assert!(elapsed < Duration::from_secs(20), "client 2 never got the best layer back");
        n += 1;
        for (pid, peer, got) in &mut peers {
            let offers = heard.lock().offers.remove(pid).unwrap_or_default();
            for offer in offers {
                let offer = if *pid == 2 { via(offer, sfu.media_addr, link.addr) } else { offer };
                let answer = peer.answer_offer(offer).expect("answer the SFU");
                sfu.answer(*pid, answer).await.expect("answer taken");
            }
            if *pid == 1 && peer.is_connected() {
                let layers = camera(n);
                peer.send_frames(Source::Camera, &layers.iter().map(Vec::as_slice).collect::<Vec<_>>()).await.expect("camera");
            }
            peer.run_until(Instant::now() + Duration::from_millis(6), got).await;
        }
    }
    // The layers each got, in the order of the publisher's frames (a retransmission of a
    // frame of the layer before a switch can arrive after it).
    let number = |r: &Received| -> u32 {
        text(r).split('#').nth(1).and_then(|n| n.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let layers = |sub: usize| -> Vec<String> {
        let mut got: Vec<&Received> = peers[sub].2.iter().collect();
        got.sort_by_key(|r| number(r));
        let mut runs: Vec<String> = Vec::new();
        for r in got {
            let l = layer_of(r);
            if runs.last() != Some(&l) {
                runs.push(l);
            }
        }
        runs
    };
    let two = layers(1);
    assert_eq!(two.first().map(String::as_str), Some("f"), "the best layer while the link is wide: {two:?}");
    assert!(two.iter().any(|l| l == "h"), "a smaller layer while it is narrow: {two:?}");
    assert_eq!(two.last().map(String::as_str), Some("f"), "the best again once it widens: {two:?}");
    assert_eq!(layers(2), vec!["f".to_owned()], "client 3's link never narrowed");
    // Gaps (what the link dropped) and retransmissions out of order, but no jump: the layers
    // are renumbered into one sequence.
    for pair in peers[1].2.windows(2) {
        let step = pair[1].seq.wrapping_sub(pair[0].seq) as i16;
        assert!(step.unsigned_abs() < 1000, "one sequence across the switches: {} then {}", pair[0].seq, pair[1].seq);
    }
}

/// What a lossy relay saw of the video it carried.
#[derive(Default)]
struct Losses {
    /// (SSRC, sequence number) of the VP8 packets it dropped, each once.
    dropped: HashSet<(u32, u16)>,
    /// VP8 packets seen more than once (a plain retransmission).
    repeated: usize,
    /// Retransmission (RTX) packets passed on.
    rtx: usize,
    /// Whether it still drops (the last losses must have packets after them, or nothing
    /// tells the receiver they are lost).
    dropping: bool,
}

/// A UDP relay between one client and the SFU that drops, once each, the VP8 packets whose
/// sequence number is 3 modulo 7 (one in seven) going one way (`uplink`: from the client),
/// and counts what comes back.
async fn lossy_relay(sfu: std::net::SocketAddr, uplink: bool) -> (std::net::SocketAddr, Arc<Mutex<Losses>>) {
    let socket = Arc::new(tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.expect("relay"));
    let addr = socket.local_addr().expect("addr");
    let losses = Arc::new(Mutex::new(Losses { dropping: true, ..Losses::default() }));
    let seen = losses.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut client = None;
        let mut passed = HashSet::new();
        let mut counts: HashMap<u32, u32> = HashMap::new();
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let to = if from == sfu {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                sfu
            };
            // An SRTP packet's header is in the clear: version 2, then the payload type.
            let p = &buf[..n];
            if (from != sfu) == uplink && n > 12 && p[0] >> 6 == 2 && !(200..=206).contains(&p[1]) {
                let pt = p[1] & 0x7f;
                let seq = u16::from_be_bytes([p[2], p[3]]);
                let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                let mut l = seen.lock();
                if pt == copains_sfu::driver::VP8_PT {
                    // Nothing before a stream's tenth packet: a stream begins where it is first
                    // seen, so what it lost before is never asked for.
                    let count = counts.entry(ssrc).or_default();
                    *count += 1;
                    if !passed.insert((ssrc, seq)) {
                        l.repeated += 1;
                    } else if l.dropping && *count > 10 && seq % 7 == 3 && l.dropped.insert((ssrc, seq)) {
                        passed.remove(&(ssrc, seq));
                        continue;
                    }
                } else if pt == copains_sfu::driver::VP8_RTX_PT {
                    l.rtx += 1;
                }
            }
            let _ = socket.send_to(p, to).await;
        }
    });
    (addr, losses)
}

/// Client 1 publishes a screen (`simulcast`: a three-layer camera) and client 2 receives it,
/// with one in seven of its VP8 packets lost once on the way (`uplink`: between client 1 and
/// the SFU; otherwise between the SFU and client 2). Every lost packet must come back over
/// RTX, about once, and client 2 must open every frame.
async fn lost_packets_come_back_over_rtx(uplink: bool, simulcast: bool) {
    let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() };
    let (sfu, events) = driver::start(config).await.expect("sfu");
    let heard = listen(events);
    let (relay, losses) = lossy_relay(sfu.media_addr, uplink).await;
    let source = if simulcast { Source::Camera } else { Source::Screen };
    let lossy = if uplink { 1 } else { 2 };
    let mut peers = Vec::new();
    for (pid, sources) in [(1u64, &[source][..]), (2, &[][..])] {
        let mut peer = VoicePeer::bind_with(LOCALHOST, MediaSender::fresh(pid as u32, 0).expect("key"), simulcast, sources)
            .await
            .expect("peer");
        let joined = sfu.join(ROOM, pid, peer.offer().expect("offer")).await.expect("join");
        let answer = if pid == lossy { via(joined.answer, sfu.media_addr, relay) } else { joined.answer };
        peer.apply_answer(answer).expect("answer");
        peers.push((pid, peer, Vec::<Received>::new()));
    }
    let share = peers[0].1.media.share();
    peers[1].1.keys.add(&share).expect("key");
    let started = Instant::now();
    let mut sent = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(5) {
        n += 1;
        for (pid, peer, got) in &mut peers {
            let offers = heard.lock().offers.remove(pid).unwrap_or_default();
            for offer in offers {
                let offer = if *pid == lossy { via(offer, sfu.media_addr, relay) } else { offer };
                let answer = peer.answer_offer(offer).expect("answer the SFU");
                sfu.answer(*pid, answer).await.expect("answer taken");
            }
            if started.elapsed() > Duration::from_millis(3500) {
                losses.lock().dropping = false;
            }
            if *pid == 1 && peer.is_connected() && started.elapsed() < Duration::from_secs(4) {
                let layers: Vec<Vec<u8>> = if simulcast { CAMERA_RIDS.to_vec() } else { vec![""] }
                    .into_iter()
                    .map(|rid| {
                        let mut f = frame(1, source, rid, n);
                        f.resize(600, b'.');
                        f
                    })
                    .collect();
                peer.send_frames(source, &layers.iter().map(Vec::as_slice).collect::<Vec<_>>()).await.expect("video");
                sent.push(n);
            }
            peer.run_until(Instant::now() + Duration::from_millis(9), got).await;
        }
    }
    let losses = losses.lock();
    let (dropped, rtx) = (losses.dropped.len(), losses.rtx);
    assert!(dropped >= 20, "the relay dropped {dropped} packets");
    assert_eq!(losses.repeated, 0, "nothing is retransmitted as a plain copy once RTX is negotiated");
    // Every dropped packet comes back over RTX, and is not asked for again once it has.
    assert!(rtx >= dropped, "{rtx} retransmissions for {dropped} losses");
    assert!(rtx <= dropped * 3 / 2, "{rtx} retransmissions for {dropped} losses");
    // And client 2 opened every frame client 1 sent once its subscription was up.
    let got: HashSet<u32> = peers[1]
        .2
        .iter()
        .filter_map(|r| text(r).split('#').nth(1).and_then(|n| n.split('.').next()).and_then(|n| n.parse().ok()))
        .collect();
    let first = *got.iter().min().expect("client 2 received the video");
    let missing: Vec<u32> = sent.iter().copied().filter(|n| *n >= first && !got.contains(n)).collect();
    assert!(missing.is_empty(), "frames never recovered: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_sfu_forwards_and_loses_comes_back_over_rtx_once() {
    lost_packets_come_back_over_rtx(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_publisher_sends_and_loses_comes_back_over_rtx_once() {
    lost_packets_come_back_over_rtx(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_simulcast_layer_loses_comes_back_over_rtx_once() {
    lost_packets_come_back_over_rtx(true, true).await;
}
