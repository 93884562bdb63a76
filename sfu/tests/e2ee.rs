//! End-to-end encrypted media through the SFU, with the native voice peer of client-core:
//! every frame is SFrame-encrypted before it leaves a peer, the SFU forwards what it cannot
//! read, receivers decrypt and check the content, a leaver cannot read what is sent after the
//! re-key, a newcomer cannot read what was sent before it joined, and a screen share turned off
//! and on twenty times never fails to decrypt.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use copains_client_core::voice::{FrameError, MediaReceiver, MediaSender};
use copains_client_core::voice_native::{Received, Source, VoicePeer};
use copains_sfu::driver::{self, SfuConfig, SfuEvent, SfuHandle};
use copains_sfu::RoomLimits;
use tokio::sync::mpsc;

const ROOM: u64 = 42;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The plaintext frames of `pid`'s `source` at tick `n`: an Opus TOC byte or a VP8 keyframe
/// tag, then words that must never be seen on the wire.
fn frame(pid: u64, source: Source, n: u32) -> Vec<u8> {
    let mut f = match source {
        Source::Microphone => vec![0xf8],
        _ => vec![0x00; 10],
    };
    f.extend_from_slice(format!("secret {source:?} of {pid} #{n}").as_bytes());
    f
}

/// A peer and what it received.
struct Member {
    pid: u64,
    peer: VoicePeer,
    got: Vec<Received>,
    offers: mpsc::UnboundedReceiver<String>,
}

/// Runs every member for `span`, each sending a frame on its microphone and camera every
/// 20 ms, and on its screen when `screen(pid, tick)` says so; the SFU's offers are answered.
async fn run(sfu: &SfuHandle, members: &mut [Member], span: Duration, tick0: &mut u32, screen: impl Fn(u64, u32) -> bool) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        *tick0 += 1;
        let n = *tick0;
        for m in members.iter_mut() {
            while let Ok(offer) = m.offers.try_recv() {
                let answer = m.peer.answer_offer(offer).expect("answer the SFU");
                sfu.answer(m.pid, answer).await.expect("answer taken");
            }
            if m.peer.is_connected() {
                for source in [Source::Microphone, Source::Camera] {
                    m.peer.send_frames(source, &[&frame(m.pid, source, n)]).await.expect("sent");
                }
                if screen(m.pid, n) {
                    m.peer.send_frames(Source::Screen, &[&frame(m.pid, Source::Screen, n)]).await.expect("sent");
                }
            }
        }
        // Each member's connection runs for its share of the 20 ms tick.
        let share = Duration::from_millis(20) / members.len() as u32;
        for m in members.iter_mut() {
            m.peer.run_until(Instant::now() + share, &mut m.got).await;
        }
    }
}

async fn join(sfu: &SfuHandle, pid: u64, media: MediaSender, offers: &mut HashMap<u64, mpsc::UnboundedSender<String>>) -> Member {
    let mut peer = VoicePeer::bind(LOCALHOST, media, false).await.expect("peer");
    let joined = sfu.join(ROOM, pid, peer.offer().expect("offer")).await.expect("join");
    peer.apply_answer(joined.answer).expect("answer");
    let (tx, rx) = mpsc::unbounded_channel();
    offers.insert(pid, tx);
    Member { pid, peer, got: Vec::new(), offers: rx }
}

/// Hands each member's key to the others (over the pairwise Signal sessions in the product;
/// directly here).
fn hand_out_keys(members: &mut [Member]) {
    let shares: Vec<_> = members.iter().map(|m| (m.pid, m.peer.media.share())).collect();
    for m in members.iter_mut() {
        for (pid, share) in &shares {
            if *pid != m.pid {
                m.peer.keys.add(share).expect("key");
            }
        }
    }
}

/// The SFU's offers go to their member's queue.
fn dispatch(
    mut events: mpsc::UnboundedReceiver<SfuEvent>,
    offers: std::sync::Arc<parking_lot::Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>>,
) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SfuEvent::Offer { pid, sdp, .. } = event {
                if let Some(tx) = offers.lock().get(&pid) {
                    let _ = tx.send(sdp);
                }
            }
        }
    });
}

fn text(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame).into_owned()
}

/// Frames `m` decrypted from `from`'s `source`.
fn opened(m: &Member, from: u64, source: Source) -> usize {
    let marker = format!("secret {source:?} of {from} #");
    m.got.iter().filter(|r| matches!(&r.frame, Ok((slot, f)) if u64::from(*slot) == from && text(f).contains(&marker))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_media_is_read_by_the_room_only() {
    let (sfu, events) =
        driver::start(SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() }).await.expect("sfu");
    let queues = std::sync::Arc::new(parking_lot::Mutex::new(HashMap::new()));
    dispatch(events, queues.clone());

    // Three members, each with its own key (slot = its id), handed to the others (over the
    // pairwise Signal sessions in the product; directly here).
    let mut members = Vec::new();
    for pid in [1u64, 2, 3] {
        let media = MediaSender::fresh(pid as u32, 0).expect("key");
        let mut local = HashMap::new();
        let member = join(&sfu, pid, media, &mut local).await;
        queues.lock().extend(local);
        members.push(member);
    }
    hand_out_keys(&mut members);
    // Screens: member 1 turns its screen on and off every 5 ticks, twenty times over.
    let mut tick = 0;
    run(&sfu, &mut members, Duration::from_secs(5), &mut tick, |pid, n| pid == 1 && (n / 5) % 2 == 0 && n < 200).await;

    for m in &members {
        for other in members.iter().filter(|o| o.pid != m.pid) {
            for source in [Source::Microphone, Source::Camera] {
                let n = opened(m, other.pid, source);
                assert!(n >= 30, "{} opened {n} {source:?} frames of {}", m.pid, other.pid);
            }
        }
        if m.pid != 1 {
            assert!(opened(m, 1, Source::Screen) >= 30, "{} sees 1's screen", m.pid);
        }
        // The tap: nothing the SFU forwarded holds a plaintext, and everything forwarded opened.
        assert!(!m.got.is_empty());
        for r in &m.got {
            assert!(!text(&r.payload).contains("secret"), "plaintext on the wire: {:?}", text(&r.payload));
            assert!(r.frame.is_ok(), "{} could not open a frame: {:?}", m.pid, r.frame);
        }
    }

    // Member 3 leaves; 1 and 2 draw fresh keys (generation 1) and hand them to each other only.
    let mut leaver = members.pop().expect("3");
    sfu.leave(leaver.pid);
    leaver.peer.close().await;
    for m in &mut members {
        m.peer.media = MediaSender::fresh(m.pid as u32, 1).expect("fresh key");
        m.got.clear();
    }
    hand_out_keys(&mut members);
    run(&sfu, &mut members, Duration::from_secs(2), &mut tick, |_, _| false).await;
    let after_leave: Vec<Vec<u8>> = members[0].got.iter().filter(|r| r.audio).map(|r| r.payload.clone()).collect();
    assert!(after_leave.len() >= 30);
    assert!(opened(&members[0], 2, Source::Microphone) >= 30, "the two who stay read each other");
    // The leaver's keys open none of it.
    for payload in &after_leave {
        assert!(matches!(leaver.peer.keys.decrypt(payload, 1), Err(FrameError::NoKey)), "the leaver reads nothing new");
    }

    // Member 4 joins: 1 and 2 ratchet their keys one step and hand 4 that step only; 4 hands
    // them its own.
    let before_join = after_leave;
    let mut local = HashMap::new();
    let newcomer = join(&sfu, 4, MediaSender::fresh(4, 0).expect("key"), &mut local).await;
    queues.lock().extend(local);
    members.push(newcomer);
    let mut to_newcomer = Vec::new();
    for m in members.iter_mut().take(2) {
        to_newcomer.push(m.peer.media.ratchet().expect("ratchet"));
        m.got.clear();
    }
    let newcomer_share = members[2].peer.media.share();
    for share in to_newcomer {
        members[2].peer.keys.add(&share).expect("key");
    }
    for m in members.iter_mut().take(2) {
        m.peer.keys.add(&newcomer_share).expect("key");
    }
    run(&sfu, &mut members, Duration::from_secs(3), &mut tick, |_, _| false).await;
    for from in [1, 2] {
        assert!(opened(&members[2], from, Source::Microphone) >= 30, "the newcomer reads {from} from now on");
        assert!(opened(&members[2], from, Source::Camera) >= 30);
    }
    assert!(opened(&members[0], 4, Source::Microphone) >= 30, "and is read");
    // What was sent before it joined stays closed to it.
    let mut fresh = MediaReceiver::default();
    std::mem::swap(&mut fresh, &mut members[2].peer.keys);
    for payload in &before_join {
        assert!(fresh.decrypt(payload, 1).is_err(), "the newcomer cannot read earlier frames");
    }
}

/// Everyone in a room of 30 offers a microphone, a camera and a screen, as the browser does,
/// and only talks: a track joins the room at its first packet, so the SFU's offers carry the
/// 29 others' microphones and nothing else, every answer stays small, and everyone opens
/// everyone else's audio. All 30 talk at once, equally loud: the bound on forwarded microphones
/// is lifted (`loudest_audio: 0`) so that every one of them is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_thirty_who_only_talk_negotiates_only_their_microphones() {
    const N: u64 = 30;
    let config = SfuConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        limits: RoomLimits { loudest_audio: 0, ..RoomLimits::default() },
        ..SfuConfig::default()
    };
    let (sfu, mut events) = driver::start(config).await.expect("sfu");
    let queues: std::sync::Arc<parking_lot::Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>> = Default::default();
    let offered: std::sync::Arc<parking_lot::Mutex<Vec<(u64, usize, bool)>>> = Default::default();
    {
        let (queues, offered) = (queues.clone(), offered.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let SfuEvent::Offer { pid, sdp, tracks, .. } = event {
                    let audio_only = tracks.iter().all(|t| t.kind == copains_sfu::TrackKind::Audio);
                    offered.lock().push((pid, sdp.len(), audio_only));
                    if let Some(tx) = queues.lock().get(&pid) {
                        let _ = tx.send(sdp);
                    }
                }
            }
        });
    }
    let mut members = Vec::new();
    for pid in 1..=N {
        let mut local = HashMap::new();
        members.push(join(&sfu, pid, MediaSender::fresh(pid as u32, 0).expect("key"), &mut local).await);
        queues.lock().extend(local);
    }
    hand_out_keys(&mut members);
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let everyone_heard = |members: &[Member]| {
        members.iter().all(|m| members.iter().filter(|o| o.pid != m.pid).all(|o| opened(m, o.pid, Source::Microphone) > 0))
    };
    while Instant::now() < end && !everyone_heard(&members) {
        n += 1;
        for m in members.iter_mut() {
            while let Ok(offer) = m.offers.try_recv() {
                let answer = m.peer.answer_offer(offer).expect("answer the SFU");
                sfu.answer(m.pid, answer).await.expect("answer taken");
            }
            if m.peer.is_connected() {
                m.peer.send_frames(Source::Microphone, &[&frame(m.pid, Source::Microphone, n)]).await.expect("sent");
            }
            m.peer.run_until(Instant::now() + Duration::from_millis(1), &mut m.got).await;
        }
    }
    assert!(everyone_heard(&members), "each of the {N} opens the other {}'s audio", N - 1);
    let offered = offered.lock();
    assert!(offered.iter().all(|(_, _, audio_only)| *audio_only), "no idle camera or screen is ever offered");
    let largest = offered.iter().map(|(_, len, _)| *len).max().unwrap_or(0);
    assert!(largest < driver::SDP_MAX_BYTES / 2, "the largest SFU offer is {largest} bytes");
    for m in &members {
        assert!(m.got.iter().all(|r| r.audio && r.frame.is_ok()), "only audio arrives, and all of it opens");
    }
}

/// A room of eight with open microphones: two talk, six hear their rooms' background noise.
/// The SFU forwards the loudest five microphones: everyone opens the two talkers' audio, every
/// frame of it, and the three louder noises, never the three quieter ones. When the quietest
/// starts talking, everyone opens its audio at once (it takes the slot of the quietest noise
/// forwarded, which stops), every frame opening after the gap in its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_loudest_open_microphones_are_forwarded() {
    const N: u64 = 8;
    let (sfu, events) =
        driver::start(SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() }).await.expect("sfu");
    assert_eq!(RoomLimits::default().loudest_audio, 5);
    let queues = std::sync::Arc::new(parking_lot::Mutex::new(HashMap::new()));
    dispatch(events, queues.clone());
    let mut members = Vec::new();
    for pid in 1..=N {
        let mut local = HashMap::new();
        let mut m = join(&sfu, pid, MediaSender::fresh(pid as u32, 0).expect("key"), &mut local).await;
        // 1 and 2 talk; 3 to 5 are noise, 6 to 8 a noise quieter by 10 dB and more (whatever
        // order their media connects in, 3 to 5 end up holding the slots).
        m.peer.set_audio_level(match pid {
            1 => 10,
            2 => 15,
            p @ 3..=5 => 44 + p as u8 * 2,
            p => 52 + p as u8 * 2,
        });
        queues.lock().extend(local);
        members.push(m);
    }
    hand_out_keys(&mut members);
    // Everyone's media connects, and the room settles on its loudest five.
    let mut n = 0;
    talk(&sfu, &mut members, Duration::from_secs(3), &mut n).await;
    for m in &mut members {
        m.got.clear();
    }
    let n0 = n;
    talk(&sfu, &mut members, Duration::from_secs(2), &mut n).await;
    let sent = (n - n0) as usize;
    let heard = |m: &Member| -> Vec<u64> { (1..=N).filter(|o| *o != m.pid && opened(m, *o, Source::Microphone) > 0).collect() };
    for m in &members {
        let h = heard(m);
        let loudest: Vec<u64> = (1..=5).filter(|o| *o != m.pid).collect();
        assert_eq!(h, loudest, "{} hears the talkers and the louder noise only", m.pid);
        for talker in [1, 2].into_iter().filter(|t| *t != m.pid) {
            // Every frame, but for those still in flight at either end of the window.
            let got = opened(m, talker, Source::Microphone);
            assert!(got + 3 >= sent, "{} opened {got} of {talker}'s {sent} frames", m.pid);
        }
        assert!(m.got.iter().all(|r| r.frame.is_ok()), "every frame forwarded opens");
    }
    // 8, the quietest, starts talking.
    for m in &mut members {
        m.got.clear();
        if m.pid == 8 {
            m.peer.set_audio_level(5);
        }
    }
    let n0 = n;
    talk(&sfu, &mut members, Duration::from_secs(2), &mut n).await;
    let sent = (n - n0) as usize;
    for m in members.iter().filter(|m| m.pid != 8) {
        let h = heard(m);
        let got = opened(m, 8, Source::Microphone);
        assert!(got + 5 >= sent, "{} opened {got} of 8's {sent} frames once it talks", m.pid);
        assert!(!h.contains(&6) && !h.contains(&7), "{} never hears the quieter noise: {h:?}", m.pid);
        if m.pid != 5 {
            let five = opened(m, 5, Source::Microphone);
            assert!(five < 5, "{}: the quietest noise forwarded gave its slot to 8 at once ({five} frames)", m.pid);
        }
        assert!(m.got.iter().all(|r| r.frame.is_ok()), "every frame forwarded opens");
    }
}

/// Every member sends a microphone frame each 20 ms for `span`; the SFU's offers are answered.
async fn talk(sfu: &SfuHandle, members: &mut [Member], span: Duration, n: &mut u32) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        *n += 1;
        for m in members.iter_mut() {
            while let Ok(offer) = m.offers.try_recv() {
                let answer = m.peer.answer_offer(offer).expect("answer the SFU");
                sfu.answer(m.pid, answer).await.expect("answer taken");
            }
            if m.peer.is_connected() {
                m.peer.send_frames(Source::Microphone, &[&frame(m.pid, Source::Microphone, *n)]).await.expect("sent");
            }
        }
        let share = Duration::from_millis(20) / members.len() as u32;
        for m in members.iter_mut() {
            m.peer.run_until(Instant::now() + share, &mut m.got).await;
        }
    }
}

/// One member stays while eight others in turn join, talk and leave (the next at once or half a
/// second later): the stayer's m-lines are reused, so its offers do not grow with the churn,
/// and it opens every newcomer's audio on the m-line a leaver freed, its SSRC's numbering
/// going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_lines_freed_by_leavers_carry_the_newcomers() {
    let (sfu, mut events) =
        driver::start(SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() }).await.expect("sfu");
    let queues: std::sync::Arc<parking_lot::Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>> = Default::default();
    let stayer_offers: std::sync::Arc<parking_lot::Mutex<Vec<String>>> = Default::default();
    {
        let (queues, stayer_offers) = (queues.clone(), stayer_offers.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let SfuEvent::Offer { pid, sdp, .. } = event {
                    if pid == 1 {
                        stayer_offers.lock().push(sdp.clone());
                    }
                    if let Some(tx) = queues.lock().get(&pid) {
                        let _ = tx.send(sdp);
                    }
                }
            }
        });
    }
    let mut local = HashMap::new();
    let mut stayer = join(&sfu, 1, MediaSender::fresh(1, 0).expect("key"), &mut local).await;
    queues.lock().extend(local);
    let mut tick = 0;
    for i in 0..8u64 {
        let pid = 10 + i;
        let mut local = HashMap::new();
        let mut newcomer = join(&sfu, pid, MediaSender::fresh(pid as u32, 0).expect("key"), &mut local).await;
        queues.lock().extend(local);
        stayer.peer.keys.add(&newcomer.peer.media.share()).expect("key");
        newcomer.peer.keys.add(&stayer.peer.media.share()).expect("key");
        let mut pair = [stayer, newcomer];
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end
            && (opened(&pair[0], pid, Source::Microphone) < 10 || opened(&pair[1], 1, Source::Microphone) < 10)
        {
            tick += 1;
            for m in pair.iter_mut() {
                while let Ok(offer) = m.offers.try_recv() {
                    let answer = m.peer.answer_offer(offer).expect("answer the SFU");
                    sfu.answer(m.pid, answer).await.expect("answer taken");
                }
                if m.peer.is_connected() {
                    m.peer.send_frames(Source::Microphone, &[&frame(m.pid, Source::Microphone, tick)]).await.expect("sent");
                }
                m.peer.run_until(Instant::now() + Duration::from_millis(10), &mut m.got).await;
            }
        }
        let [s, mut newcomer] = pair;
        stayer = s;
        assert!(opened(&stayer, pid, Source::Microphone) >= 10, "the stayer opens newcomer {pid}'s audio");
        assert!(opened(&newcomer, 1, Source::Microphone) >= 10, "newcomer {pid} opens the stayer's audio");
        sfu.leave(pid);
        newcomer.peer.close().await;
        queues.lock().remove(&pid);
        // Every other newcomer comes half a second later; the others at once.
        if i % 2 == 1 {
            let end = Instant::now() + Duration::from_millis(500);
            while Instant::now() < end {
                while let Ok(offer) = stayer.offers.try_recv() {
                    let answer = stayer.peer.answer_offer(offer).expect("answer the SFU");
                    sfu.answer(1, answer).await.expect("answer taken");
                }
                stayer.peer.run_until(Instant::now() + Duration::from_millis(10), &mut stayer.got).await;
            }
        }
    }
    let offers = stayer_offers.lock();
    // The stayer's own microphone is one audio m-line of the SFU's offers; one more serves the
    // eight newcomers. (A newcomer's track joins the room at its first packet, once its
    // connection is up: by then the stayer has answered the offer that freed the m-line.)
    let largest = offers.iter().map(|sdp| sdp.matches("m=audio").count()).max().unwrap_or(0);
    assert_eq!(largest, 2, "one audio m-line serves eight newcomers ({} offers)", offers.len());
    // On it, one SSRC's numbering goes on from newcomer to newcomer: a restart would be refused
    // by the stayer's SRTP replay window.
    let received: Vec<u16> = stayer.got.iter().filter(|r| r.audio).map(|r| r.seq).collect();
    assert!(received.len() >= 80);
    for pair in received.windows(2) {
        let step = pair[1].wrapping_sub(pair[0]) as i16;
        assert!((1..100).contains(&step), "one continuous sequence: {} then {}", pair[0], pair[1]);
    }
    assert!(stayer.got.iter().all(|r| r.frame.is_ok()), "everything the stayer received opens");
}
