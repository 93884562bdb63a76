//! Presence fan-out: a server of N members, all connected but one; that one comes online, and
//! every other member must hear it. How many `PRESENCE_UPDATE` events the server sends, how
//! long until the first and the last member has it, and the server's CPU time for it. Then a
//! crowd arriving together: how the changes of one flush are coalesced into one event per
//! member.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::channels::{gather, register};
use crate::{open_identified, unique_name};

/// A presence event a member heard: when, and how many presences it carried.
struct Heard {
    at: Instant,
    presences: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the measure on a server of `members` members, `rounds` arrivals, then a crowd of `crowd`.
pub async fn run(url: &str, members: usize, rounds: usize, crowd: usize, server_pid: Option<u32>) -> anyhow::Result<()> {
    anyhow::ensure!(members >= 3 && crowd < members, "need at least 3 members, and a crowd smaller than the server");
    let prefix = unique_name("pres");
    eprintln!("registering {members} accounts…");
    let clients = register(url, members, &prefix).await?;
    let community = gather(clients, "presence").await?;
    let ws_url = format!("{}/gateway", url.replacen("http", "ws", 1));
    let (tx, mut rx) = mpsc::unbounded_channel::<Heard>();
    // Everyone but the last `crowd` (who arrive together at the end) and the arriving one.
    let watchers = members - 1 - crowd;
    eprintln!("connecting {watchers} members…");
    let mut tasks = Vec::with_capacity(watchers);
    for c in community.clients.iter().take(watchers) {
        let mut ws = open_identified(&ws_url, &c.access_token().await?).await?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(t) = frame {
                    let t = t.as_str();
                    if !t.contains("\"PRESENCE_UPDATE\"") {
                        continue;
                    }
                    let at = Instant::now();
                    let presences = serde_json::from_str::<serde_json::Value>(t)
                        .ok()
                        .and_then(|v| v["d"]["presences"].as_array().map(Vec::len))
                        .unwrap_or(0);
                    let _ = tx.send(Heard { at, presences });
                }
            }
        }));
    }
    // The watchers' own arrivals reach each other: let those flushes pass.
    drain_quiet(&mut rx, Duration::from_secs(3)).await;
    let arriving = &community.clients[watchers];
    let token = arriving.access_token().await?;
    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    let mut cpu = Vec::new();
    let mut events_per_round = Vec::new();
    for round in 0..rounds {
        // Arrivals at every phase of the server's flush (once a second): the wait for it is
        // part of what a member sees.
        tokio::time::sleep(Duration::from_millis(((round * 1000 + 500) / rounds.max(1)) as u64 % 1000)).await;
        let cpu_before = server_pid.map(crate::dm::cpu_ticks).transpose()?;
        let start = Instant::now();
        let ws = open_identified(&ws_url, &token).await?;
        let heard = collect(&mut rx, watchers, Duration::from_secs(10)).await;
        let cpu_after = server_pid.map(crate::dm::cpu_ticks).transpose()?;
        anyhow::ensure!(heard.len() == watchers, "round {round}: {} of {watchers} members heard the arrival", heard.len());
        let first = heard.iter().map(|h| h.at).min().context("none")?;
        let last = heard.iter().map(|h| h.at).max().context("none")?;
        firsts.push(ms(first - start));
        lasts.push(ms(last - start));
        events_per_round.push(heard.len());
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            cpu.push((b - a) as f64 * 10.0);
        }
        // Leave as a closed tab does (close code 1001: offline at once) and let that flush pass.
        let mut ws = ws;
        let frame = CloseFrame { code: CloseCode::Away, reason: "".into() };
        ws.send(Message::Close(Some(frame))).await.ok();
        drop(ws);
        let gone = collect(&mut rx, watchers, Duration::from_secs(10)).await;
        anyhow::ensure!(gone.len() == watchers, "round {round}: {} of {watchers} members heard the leave", gone.len());
    }
    println!("presence fan-out, a server of {members} members, {watchers} of them connected, {rounds} arrivals:");
    println!(
        "  PRESENCE_UPDATE events per arrival: {} (one per connected member)",
        median(events_per_round.iter().map(|&n| n as f64).collect())
    );
    println!(
        "  from IDENTIFY to the first member told: median {:.0} ms; to the last: median {:.0} ms (the spread is the fan-out itself: {:.1} ms)",
        median(firsts.clone()),
        median(lasts.clone()),
        median(lasts.iter().zip(&firsts).map(|(l, f)| l - f).collect())
    );
    if !cpu.is_empty() {
        println!("  server CPU per arrival (IDENTIFY, READY with the presences, fan-out): median {:.0} ms", median(cpu));
    }
    // A crowd arrives at once: within a flush, each member hears one event for all of them.
    let mut crowd_ws = Vec::with_capacity(crowd);
    let crowd_start = Instant::now();
    let mut joins = futures_util::stream::iter(community.clients.iter().skip(watchers + 1).map(|c| {
        let ws_url = ws_url.clone();
        async move { open_identified(&ws_url, &c.access_token().await?).await }
    }))
    .buffer_unordered(32);
    while let Some(ws) = joins.next().await {
        crowd_ws.push(ws?);
    }
    drop(joins);
    let arrived_in = crowd_start.elapsed();
    let mut heard = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let total: usize = heard.iter().map(|h: &Heard| h.presences).sum();
        if total >= watchers * crowd || Instant::now() > deadline {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Some(h)) => heard.push(h),
            _ => break,
        }
    }
    let presences: usize = heard.iter().map(|h| h.presences).sum();
    println!(
        "  a crowd of {crowd} arriving together ({:.1} s to identify them all): {} events to the {watchers} members carried {presences} presences ({:.1} events per member instead of {crowd})",
        arrived_in.as_secs_f64(),
        heard.len(),
        heard.len() as f64 / watchers as f64
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Gathers up to `n` events, until none came for a second or `limit` passed.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Heard>, n: usize, limit: Duration) -> Vec<Heard> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + limit;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(h)) => out.push(h),
            _ => break,
        }
    }
    out
}

/// Drops events until none came for `quiet`.
async fn drain_quiet(rx: &mut mpsc::UnboundedReceiver<Heard>, quiet: Duration) {
    while let Ok(Some(_)) = tokio::time::timeout(quiet, rx.recv()).await {}
}
