//! SFU forwarding cost: one publisher sending Opus-sized frames at 50 packets per second to N
//! subscribers through the real SFU driver, every participant a native voice peer (DTLS-SRTP,
//! SFrame on every frame). The SFU runs on a thread of its own, so its CPU time is read from
//! /proc for that thread alone; the peers run on the other core.
//!
//! Figures per N: the SFU's CPU time per forwarded packet, the loss (frames not decrypted by a
//! subscriber within the window), and the latency from the publisher's send to the
//! subscriber's decryption (two SFrame operations, two SRTP ones and the loopback hops on top
//! of what the SFU adds: an upper bound for the SFU's part).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use copains_client_core::voice::MediaSender;
use copains_client_core::voice_native::{Received, Source, VoicePeer};
use copains_sfu::driver::{self, SfuConfig, SfuEvent, SfuHandle};
use parking_lot::Mutex;
use tokio::sync::mpsc;

const ROOM: u64 = 1;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The SFU on a thread of its own (a current-thread runtime): its handle, its events, its
/// thread id.
fn sfu_thread() -> anyhow::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("sfu".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let tid = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let limits = copains_sfu::RoomLimits { max_participants: 1000, ..Default::default() };
            let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), limits, ..SfuConfig::default() };
            match (driver::start(config).await, tid) {
                (Ok((handle, events)), Some(tid)) => {
                    let _ = tx.send(Ok((handle, events, tid)));
                    std::future::pending::<()>().await;
                }
                (Err(e), _) => {
                    let _ = tx.send(Err(anyhow::anyhow!("SFU: {e}")));
                }
                (_, None) => {
                    let _ = tx.send(Err(anyhow::anyhow!("no /proc/thread-self")));
                }
            }
        });
    })?;
    rx.recv().context("SFU thread")?
}

/// CPU time (user + system) of one thread of this process.
fn thread_cpu(tid: &str) -> anyhow::Result<Duration> {
    cpu_time(&format!("/proc/self/task/{tid}/stat"))
}

/// CPU time (user + system) from a `/proc` `stat` file (a process's or a thread's).
pub fn cpu_time(stat_path: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    // Clock ticks: 100 per second on Linux.
    Ok(Duration::from_millis((utime + stime) * 10))
}

struct Shared {
    start: Instant,
    measuring: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    ice: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// Runs the figure for each subscriber count.
pub async fn fanout(sizes: &[usize], seconds: u64) -> anyhow::Result<()> {
    println!("sfu-fanout: 1 publisher, Opus-sized frames at 50/s, {seconds} s measured per size");
    for &n in sizes {
        run_one(n, seconds).await?;
    }
    Ok(())
}

async fn run_one(n: usize, seconds: u64) -> anyhow::Result<()> {
    let (sfu, mut events, tid) = sfu_thread()?;
    let offers: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>> = Arc::default();
    let routes = offers.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SfuEvent::Offer { pid, sdp, .. } = event {
                if let Some(tx) = routes.lock().get(&pid) {
                    let _ = tx.send(sdp);
                }
            }
        }
    });
    let shared = Arc::new(Shared {
        start: Instant::now(),
        measuring: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        ice: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let publisher_media = MediaSender::fresh(1, 0)?;
    let share = publisher_media.share();
    let mut publisher = VoicePeer::bind_with(LOCALHOST, publisher_media, false, &[Source::Microphone]).await?;
    let joined = sfu.join(ROOM, 1, publisher.offer()?).await.map_err(|e| anyhow::anyhow!("join: {e}"))?;
    publisher.apply_answer(joined.answer)?;

    let connected = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The publisher runs from now on (its connection must come up while the others join).
    // A 60-byte frame every 20 ms (TOC byte, sequence, send time, padding).
    let publishing = {
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seq: u64 = 0;
            let mut next = Instant::now();
            let mut sink = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                next += Duration::from_millis(20);
                let mut frame = vec![0xf8];
                frame.extend_from_slice(&seq.to_be_bytes());
                frame.extend_from_slice(&(shared.start.elapsed().as_micros() as u64).to_be_bytes());
                frame.resize(60, 0);
                if publisher.is_connected()
                    && publisher.send_frames(Source::Microphone, &[&frame]).await.is_ok()
                    && shared.measuring.load(Ordering::Relaxed)
                {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                seq += 1;
                publisher.run_until(next, &mut sink).await;
                sink.clear();
            }
        })
    };

    let mut tasks = Vec::new();
    for i in 0..n {
        let pid = 2 + i as u64;
        // Listeners: they publish nothing (a room of N where everyone publishes is N² streams).
        let mut peer = VoicePeer::bind_with(LOCALHOST, MediaSender::fresh(pid as u32, 0)?, false, &[]).await?;
        peer.keys.add(&share)?;
        let joined = sfu.join(ROOM, pid, peer.offer()?).await.map_err(|e| anyhow::anyhow!("join: {e}"))?;
        peer.apply_answer(joined.answer)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        offers.lock().insert(pid, tx);
        let (sfu, shared, connected, stop) = (sfu.clone(), shared.clone(), connected.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<Received> = Vec::new();
            let mut counted = false;
            let mut ice = false;
            while !stop.load(Ordering::Relaxed) {
                while let Ok(offer) = rx.try_recv() {
                    if let Ok(answer) = peer.answer_offer(offer) {
                        let _ = sfu.answer(pid, answer).await;
                    }
                }
                peer.run_until(Instant::now() + Duration::from_millis(20), &mut got).await;
                if peer.is_connected() && !ice {
                    ice = true;
                    shared.ice.fetch_add(1, Ordering::Relaxed);
                }
                for r in got.drain(..) {
                    if r.frame.is_err() {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    let now_us = r.at.saturating_duration_since(shared.start).as_micros() as u64;
                    let Ok((_, frame)) = r.frame else { continue };
                    if !counted {
                        counted = true;
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                    if frame.len() < 17 || !shared.measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    let sent_us = u64::from_be_bytes(frame[9..17].try_into().unwrap_or_default());
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    shared.latencies_us.lock().push(now_us.saturating_sub(sent_us));
                }
            }
            peer.close().await;
        }));
    }

    // Everyone receives before the window opens (or 30 s pass).
    let warm = Instant::now();
    while (connected.load(Ordering::Relaxed) as usize) < n && warm.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = thread_cpu(&tid)?;
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let cpu = thread_cpu(&tid)? - cpu0;
    // Frames in flight when the window closed still arrive: a moment to take them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;
    for t in tasks {
        let _ = t.await;
    }
    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let expected = sent * n as u64;
    let loss = if expected == 0 { 1.0 } else { 1.0 - received as f64 / expected as f64 };
    let us_per_packet = if received == 0 { f64::NAN } else { cpu.as_micros() as f64 / received as f64 };
    let mut lat = std::mem::take(&mut *shared.latencies_us.lock());
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "N={n:>4}: ICE {} decrypting {}/{n} (failed frames {}), sent {sent}, forwarded and decrypted {received}, loss {:.2} %, SFU CPU {} ms = {us_per_packet:.1} µs per forwarded packet, send→decrypted p50 {:.2} ms p99 {:.2} ms",
        shared.ice.load(Ordering::Relaxed),
        connected.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed),
        loss.max(0.0) * 100.0,
        cpu.as_millis(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
    );
    Ok(())
}
