//! Channel message transport: fan-out latency to every connected member, and sustained
//! channel messages per second. The ciphertexts are random bytes of a realistic size (the
//! server never parses them), so these figures are the server's alone; what the clients' Sender
//! Keys cost is measured in `channel_keys`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use copains_client_core::channel_messages::{ChannelMessage, ChannelRecipients, SendChannelMessage};
use copains_client_core::client::Client;
use copains_client_core::servers::{Channel, ChannelKind, Invite, NewInvite, NewServer, Server};
use copains_client_core::{ChannelId, MessageId, ServerId};
use futures_util::StreamExt;
use reqwest::Method;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::{open_identified, unique_name};

/// The members of a new server (the first one owns it) and its first text channel.
pub struct Community {
    pub clients: Vec<Client>,
    pub server: ServerId,
    pub channel: ChannelId,
    pub invite: String,
}

/// Registers `n` accounts, 8 at a time.
pub async fn register(url: &str, n: usize, prefix: &str) -> anyhow::Result<Vec<Client>> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let url = url.to_owned();
        let name = format!("{prefix}_{i}");
        tasks.spawn(async move {
            let c = Client::new(&url);
            c.register(&name, "benchmark-password", Some("bench")).await?;
            anyhow::Ok((i, c))
        });
        while tasks.len() >= 8 {
            if let Some(t) = tasks.join_next().await {
                out.push(t??);
            }
        }
        if (i + 1) % 250 == 0 {
            eprintln!("  {} accounts", i + 1);
        }
    }
    while let Some(t) = tasks.join_next().await {
        out.push(t??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// `clients[0]` creates a server; the others join it by one invite.
pub async fn gather(clients: Vec<Client>, name: &str) -> anyhow::Result<Community> {
    let owner = &clients[0];
    let server: Server =
        owner.api(Method::POST, "/api/v1/servers", Some(&NewServer { name: name.to_owned() })).await.context("create server")?;
    let invite: Invite = owner
        .api(Method::POST, &format!("/api/v1/servers/{}/invites", server.id), Some(&NewInvite::default()))
        .await
        .context("create invite")?;
    let mut joined = futures_util::stream::iter(clients.iter().skip(1).map(|c| {
        let path = format!("/api/v1/invites/{}", invite.code);
        async move { c.api::<Server>(Method::POST, &path, None::<&()>).await }
    }))
    .buffer_unordered(8);
    while let Some(r) = joined.next().await {
        r.context("join")?;
    }
    drop(joined);
    let channels: Vec<Channel> =
        owner.api(Method::GET, &format!("/api/v1/servers/{}/channels", server.id), None::<&()>).await.context("channels")?;
    let channel = channels.iter().find(|c| c.kind == ChannelKind::Text).context("no text channel")?.id;
    Ok(Community { clients, server: server.id, channel, invite: invite.code })
}

async fn view(c: &Client, channel: ChannelId) -> anyhow::Result<i64> {
    let r: ChannelRecipients =
        c.api(Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None::<&()>).await.context("recipients")?;
    Ok(r.view)
}

fn ciphertext(n: usize) -> Vec<u8> {
    // What a SenderKeyMessage of a short text weighs; random so nothing compresses it.
    (0..n).map(|i| (i as u8).wrapping_mul(151).wrapping_add(rand_byte())).collect()
}

fn rand_byte() -> u8 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7) & 0xff) as u8
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Fan-out: for each size, a server of that many members, each with one gateway session; one
/// member sends `messages` messages one after the other; for each, the time from the send until
/// the last session has it.
pub async fn fanout(url: &str, sizes: &[usize], messages: usize) -> anyhow::Result<()> {
    let biggest = sizes.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(biggest >= 2, "sizes must be at least 2");
    let prefix = unique_name("fan");
    // Each size gets members of its own.
    let total: usize = sizes.iter().sum();
    eprintln!("registering {total} accounts…");
    let mut pool = register(url, total, &prefix).await?;
    let ws_url = format!("{}/gateway", url.replacen("http", "ws", 1));
    for &size in sizes {
        let clients: Vec<Client> = pool.drain(..size).collect();
        let community = gather(clients, &format!("fan-out {size}")).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(MessageId, Instant)>();
        let mut readers = Vec::with_capacity(size);
        for c in &community.clients {
            let mut ws = open_identified(&ws_url, &c.access_token().await?).await?;
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                while let Some(Ok(frame)) = ws.next().await {
                    if let Message::Text(t) = frame {
                        let t = t.as_str();
                        if !t.contains("\"MESSAGE_CREATE\"") {
                            continue;
                        }
                        let at = Instant::now();
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(t) {
                            if let Some(id) = v["d"]["id"].as_str().and_then(|s| s.parse().ok()) {
                                let _ = tx.send((MessageId(id), at));
                            }
                        }
                    }
                }
            }));
        }
        drop(tx);
        let sender = &community.clients[0];
        let view = view(sender, community.channel).await?;
        let path = format!("/api/v1/channels/{}/messages", community.channel);
        let mut last = Vec::with_capacity(messages + 3);
        let mut each: Vec<Vec<Duration>> = Vec::with_capacity(messages + 3);
        for _ in 0..messages + 3 {
            let body = SendChannelMessage {
                ciphertext: ciphertext(180).into(),
                view,
                thread_id: None,
                distributions: Vec::new(),
                mentions: Default::default(),
            };
            let t0 = Instant::now();
            let sent: ChannelMessage = sender.api(Method::POST, &path, Some(&body)).await.context("send")?;
            let mut arrived: Vec<Instant> = Vec::with_capacity(size);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while arrived.len() < size {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((id, at))) if id == sent.id => {
                        arrived.push(at);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => anyhow::bail!("only {} of {size} sessions got the message", arrived.len()),
                }
            }
            let per: Vec<Duration> = arrived.iter().map(|a| a.duration_since(t0)).collect();
            last.push(*per.iter().max().expect("sessions"));
            each.push(per);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first three rounds are warm-up (caches, connections).
        last.drain(..3);
        let mut each: Vec<Duration> = each.into_iter().skip(3).flatten().collect();
        last.sort();
        each.sort();
        println!(
            "fan-out to {size} sessions, {} messages: last session p50 {:.2} ms, p99 {:.2} ms; any session p50 {:.2} ms, p99 {:.2} ms",
            last.len(),
            percentile(&last, 0.5),
            percentile(&last, 0.99),
            percentile(&each, 0.5),
            percentile(&each, 0.99),
        );
        for r in readers {
            r.abort();
        }
    }
    Ok(())
}

/// Sustained channel messages: `senders` members (each with a gateway session that reads
/// everything) send as fast as the server answers, one request in flight each, for `seconds`.
pub async fn throughput(url: &str, senders: usize, seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(senders >= 2, "--senders must be at least 2");
    let prefix = unique_name("thr");
    let clients = register(url, senders, &prefix).await?;
    let community = Arc::new(gather(clients, "throughput").await?);
    let ws_url = format!("{}/gateway", url.replacen("http", "ws", 1));
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for c in &community.clients {
        let mut ws = open_identified(&ws_url, &c.access_token().await?).await?;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(t) = frame {
                    if t.as_str().contains("\"MESSAGE_CREATE\"") {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let view = view(&community.clients[0], community.channel).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..senders {
        let community = community.clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let c = &community.clients[i];
            let path = format!("/api/v1/channels/{}/messages", community.channel);
            while Instant::now() < stop {
                let body = SendChannelMessage {
                    ciphertext: ciphertext(180).into(),
                    view,
                    thread_id: None,
                    distributions: Vec::new(),
                    mentions: Default::default(),
                };
                c.api::<ChannelMessage>(Method::POST, &path, Some(&body)).await.context("send")?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(t) = tasks.join_next().await {
        t??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "channel messages, {senders} senders in one channel of {senders} connected members, {seconds} s: {:.0} msg/s accepted; {} of {} deliveries reached the sessions",
        sent as f64 / elapsed,
        received.load(Ordering::Relaxed),
        sent * senders as u64,
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}
