//! DM benchmark: real clients with real encryption, against a real server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use copains_client_core::client::Client;

pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

pub async fn run(url: &str, pid: u32, pairs: usize, rate: u64, seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(pairs >= 1 && rate >= 1 && seconds >= 1, "--pairs, --rate and --seconds must be at least 1");
    let dir = tempfile_dir()?;
    let prefix = format!("dm{:x}", std::process::id());
    eprintln!("setting up {pairs} pairs ({} accounts, each with its own encrypted store)…", pairs * 2);
    let mut senders = Vec::with_capacity(pairs);
    let mut receivers = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let a = Client::new(url);
        a.register(&format!("{prefix}a{i}"), "benchmark-password", Some("bench")).await?;
        let b = Client::new(url);
        let b_auth = b.register(&format!("{prefix}b{i}"), "benchmark-password", Some("bench")).await?;
        let am = a.enable_e2ee(dir.join(format!("a{i}.vault")), "bench").await?;
        let bm = b.enable_e2ee(dir.join(format!("b{i}.vault")), "bench").await?;
        senders.push((am, b_auth.user.id));
        receivers.push(bm);
    }

    // Session setup: bundle fetch + PQXDH + first message, timed at the sender.
    let mut setup = Vec::with_capacity(pairs);
    for (i, (am, to)) in senders.iter().enumerate() {
        let t = Instant::now();
        am.send_dm(*to, "hello").await?;
        setup.push(t.elapsed());
        let first = receivers[i].next_message().await.context("first message")?;
        anyhow::ensure!(first.body == "hello");
    }
    setup.sort();
    println!(
        "session setup (bundle fetch + PQXDH + first message), {pairs} sessions: p50 {:.2} ms, p90 {:.2} ms",
        pct(&setup, 0.5),
        pct(&setup, 0.9)
    );

    // Steady load: `rate` messages per second spread over the pairs, one direction a → b.
    let started = Arc::new(Instant::now());
    let per_pair_interval = Duration::from_secs_f64(pairs as f64 / rate as f64);
    let total_per_pair = (seconds as f64 / per_pair_interval.as_secs_f64()).round() as usize;
    let cpu_before = cpu_ticks(pid)?;
    let wall = Instant::now();
    let mut recv_tasks = Vec::new();
    for mut bm in receivers {
        let started = started.clone();
        recv_tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total_per_pair);
            for _ in 0..total_per_pair {
                // A sender that failed stops its receiver too, instead of leaving it waiting.
                let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), bm.next_message()).await else {
                    eprintln!("a receiver got nothing for 30 s: stopping it");
                    break;
                };
                let sent_at_us: u64 = m.body.parse().unwrap_or(0);
                let now_us = started.elapsed().as_micros() as u64;
                lat.push(Duration::from_micros(now_us.saturating_sub(sent_at_us)));
            }
            (lat, bm)
        }));
    }
    let mut send_tasks = Vec::new();
    for (i, (am, to)) in senders.into_iter().enumerate() {
        let started = started.clone();
        send_tasks.push(tokio::spawn(async move {
            // Spread the pairs' ticks over the interval.
            let offset = per_pair_interval.mul_f64(i as f64 / pairs as f64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, per_pair_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for _ in 0..total_per_pair {
                tick.tick().await;
                let stamp = started.elapsed().as_micros().to_string();
                if let Err(e) = am.send_dm(to, &stamp).await {
                    eprintln!("a sender stopped: {e}");
                    break;
                }
            }
            am
        }));
    }
    // Messengers are closed only after the run: closing one (and checkpointing its store)
    // while others still receive would show up as latency of theirs.
    let mut open = Vec::new();
    for t in send_tasks {
        open.push(t.await?);
    }
    let mut lat = Vec::new();
    for t in recv_tasks {
        let (l, bm) = t.await?;
        lat.extend(l);
        open.push(bm);
    }
    let elapsed = wall.elapsed();
    let cpu_after = cpu_ticks(pid)?;
    for m in open {
        m.close().await;
    }
    lat.sort();
    let delivered = lat.len();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_secs = (cpu_after - cpu_before) as f64 / ticks_per_sec;
    println!(
        "DM latency send_dm → peer's decrypted message, {pairs} pairs, {rate} msg/s target, {:.0} msg/s achieved over {:.1} s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms ({delivered} messages)",
        delivered as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99)
    );
    // Each message is one envelope (the recipient has one device, the sender no other).
    println!(
        "server CPU: {cpu_secs:.2} s for {delivered} envelopes = {:.0} µs per delivered envelope (send + store + push + ack)",
        cpu_secs * 1e6 / delivered.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("copains-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
