//! Benchmark drivers for LesCopains. Each talks to a running server over loopback and prints
//! figures; `bench/run.sh` starts a release server and runs them all (see docs/benchmarks.md).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use copains_client_core::client::Client;
use copains_client_core::gateway::{op, ClientMessage, Identify};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod channel_keys;
mod channels;
mod dm;
mod link;
mod memory;
mod presence;
mod search;
mod sfu;
mod voice_room;

#[derive(Parser)]
#[command(name = "copains-bench")]
struct Cli {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Memory per idle gateway connection: opens N identified connections that only heartbeat,
    /// and reads the server's RSS before and after.
    GatewayIdle {
        /// Server process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Accounts to spread them over (each account's connections share its topics).
        #[arg(long, default_value_t = 1_000)]
        accounts: usize,
    },
    /// Memory footprint: samples the server's RSS while it goes through idle, a burst of
    /// sign-ups, a burst of logins, then members online with DMs flowing; prints the RSS at
    /// the end of each phase and writes an SVG plot (and optionally a CSV) of the samples.
    Memory {
        /// Server process id (its RSS is read from /proc); start it fresh for the idle figure.
        #[arg(long)]
        pid: u32,
        /// Accounts signed up, then logged in (each login's token opens one gateway connection).
        #[arg(long, default_value_t = 1_000)]
        accounts: usize,
        /// Sign-ups and logins in flight at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Pairs of DM clients (real Messengers, in this process) during the online phase.
        #[arg(long, default_value_t = 50)]
        dm_pairs: usize,
        /// DMs per second, all pairs together.
        #[arg(long, default_value_t = 100)]
        dm_rate: u64,
        /// Seconds of DMs.
        #[arg(long, default_value_t = 60)]
        dm_seconds: u64,
        /// Seconds to wait after a phase before reading its resting RSS.
        #[arg(long, default_value_t = 5)]
        settle: u64,
        /// Where to write the plot.
        #[arg(long, default_value = "docs/memory-footprint.svg")]
        svg: std::path::PathBuf,
        /// Where to write the samples (seconds, RSS in KiB, phase).
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
    },
    /// SFU forwarding: one publisher (Opus-sized frames, 50/s) to N subscribers through the SFU
    /// driver in this process, on a thread of its own: CPU µs per forwarded packet, loss and
    /// send→decrypted latency (needs no server).
    SfuFanout {
        /// Subscriber counts to run, one after the other.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        subscribers: Vec<usize>,
        /// Seconds measured per count.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// A big E2EE voice room through the real server: everyone a full client (engine,
    /// gateway, voice peer); server CPU and loss while some talk and share a screen, and the
    /// time until everyone is re-keyed after a leave and after a join.
    VoiceRoom {
        /// People in the room.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// How many of them talk.
        #[arg(long, default_value_t = 5)]
        speakers: usize,
        /// How many of them share a screen.
        #[arg(long, default_value_t = 2)]
        screens: usize,
        /// How many of them have an open microphone in a quiet room (background noise, 50 dB
        /// below the talkers): sent, but not among the loudest the SFU forwards.
        #[arg(long, default_value_t = 0)]
        open_mics: usize,
        /// Seconds measured while the room talks.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process id, to read its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Presence fan-out: a server of N members, all connected but one, which comes online
    /// (then goes) `rounds` times; events sent, time to the first and last member told, server
    /// CPU; then `crowd` members arriving together, coalesced.
    Presence {
        /// Members of the server.
        #[arg(long, default_value_t = 1_000)]
        members: usize,
        /// Arrivals measured.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Members arriving together at the end.
        #[arg(long, default_value_t = 100)]
        crowd: usize,
        /// The server's process id, to read its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Private search over N messages in a client's local store (no server): the index's
    /// size on disk, the time to build it, and query times.
    Search {
        /// Messages indexed.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
    },
    /// Registers an account and prints an access token (for wrk).
    Token,
    /// Login (argon2id) latency: sequential logins, each followed by a logout.
    Login {
        /// Logins to time.
        #[arg(long, default_value_t = 60)]
        n: usize,
    },
    /// End-to-end encrypted DMs: session setup time, then latency from `send_dm` to the
    /// peer's decrypted message under a steady total rate, and server CPU per envelope.
    Dm {
        /// Server process id (its CPU time is read from /proc).
        #[arg(long)]
        pid: u32,
        /// Pairs of users.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages per second, all pairs together.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Channel fan-out: for each size, a server of that many members each with a gateway
    /// session; the time from a send until the last session has the message (p50, p99).
    ChannelFanout {
        /// Server sizes (members = connected sessions), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
        sizes: Vec<usize>,
        /// Messages timed per size.
        #[arg(long, default_value_t = 100)]
        messages: usize,
    },
    /// Sustained channel messages per second: senders in one channel, one request in flight
    /// each.
    ChannelThroughput {
        /// Members sending (each also reads over the gateway).
        #[arg(long, default_value_t = 32)]
        senders: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// First message of a new device into a channel (device lists, bundles, PQXDH and a key
    /// distribution for every member device), with real end-to-end encryption.
    ChannelFirstMessage {
        /// Members of the channel (each with one device).
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// New devices timed (one new member each).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Sender-key rotation after a kick, with real end-to-end encryption.
    ChannelRotation {
        /// Members of the channel.
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Kicks timed.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Device linking: code entered → first message readable on the new device, and the cost
    /// of verifying a signed list of 10 devices.
    Link {
        /// Devices to link (one new account each).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::ChannelFanout { sizes, messages } => channels::fanout(&cli.url, &sizes, messages).await,
        Cmd::ChannelThroughput { senders, seconds } => channels::throughput(&cli.url, senders, seconds).await,
        Cmd::ChannelFirstMessage { members, rounds } => channel_keys::first_message(&cli.url, members, rounds).await,
        Cmd::ChannelRotation { members, rounds } => channel_keys::rotation(&cli.url, members, rounds).await,
        Cmd::Link { rounds } => link::run(&cli.url, rounds).await,
        Cmd::GatewayIdle { pid, connections, accounts } => gateway_idle(&cli.url, pid, connections, accounts).await,
        Cmd::Memory { pid, accounts, concurrency, dm_pairs, dm_rate, dm_seconds, settle, svg, csv } => {
            memory::run(memory::Options {
                url: cli.url.clone(),
                pid,
                accounts,
                concurrency,
                dm_pairs,
                dm_rate,
                dm_seconds,
                settle_secs: settle,
                svg,
                csv,
            })
            .await
        }
        Cmd::Presence { members, rounds, crowd, server_pid } => presence::run(&cli.url, members, rounds, crowd, server_pid).await,
        Cmd::Search { messages } => search::run(messages),
        Cmd::SfuFanout { subscribers, seconds } => sfu::fanout(&subscribers, seconds).await,
        Cmd::VoiceRoom { size, speakers, screens, open_mics, seconds, server_pid } => {
            voice_room::run(&cli.url, size, speakers, screens, open_mics, seconds, server_pid).await
        }
        Cmd::Token => {
            let c = Client::new(&cli.url);
            c.register(&unique_name("wrk"), "benchmark-password", Some("bench")).await?;
            println!("{}", c.access_token().await?);
            Ok(())
        }
        Cmd::Login { n } => login_latency(&cli.url, n).await,
        Cmd::Dm { pid, pairs, rate, seconds } => dm::run(&cli.url, pid, pairs, rate, seconds).await,
    }
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}{:x}", rand_suffix())
}

fn rand_suffix() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc/<pid>/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

async fn gateway_idle(url: &str, pid: u32, connections: usize, accounts: usize) -> anyhow::Result<()> {
    let accounts = accounts.clamp(1, connections.max(1));
    eprintln!("registering {accounts} accounts…");
    let mut tokens = Vec::with_capacity(accounts);
    let prefix = unique_name("idle");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..accounts {
        let url = url.to_owned();
        let name = format!("{prefix}_{i}");
        tasks.spawn(async move {
            let c = Client::new(&url);
            c.register(&name, "benchmark-password", Some("bench")).await?;
            c.access_token().await.map_err(anyhow::Error::from)
        });
        while tasks.len() >= 4 {
            if let Some(t) = tasks.join_next().await {
                tokens.push(t??);
            }
        }
    }
    while let Some(t) = tasks.join_next().await {
        tokens.push(t??);
    }
    let ws_url = format!("{}/gateway", url.replacen("http", "ws", 1));
    // Warm up: one connection through the whole path, so lazily built state is in the baseline.
    let warm = open_identified(&ws_url, &tokens[0]).await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    eprintln!("server RSS before: {before} KiB; opening {connections} connections…");
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut holders = Vec::with_capacity(connections);
    for i in 0..connections {
        let ws = open_identified(&ws_url, &tokens[i % tokens.len()]).await.with_context(|| format!("connection {i}"))?;
        holders.push(tokio::spawn(memory::hold(ws, stop_rx.clone())));
        if (i + 1) % 2000 == 0 {
            eprintln!("  {} open", i + 1);
        }
    }
    let open_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid)?;
    let _ = stop_tx.send(true);
    let mut alive = 0;
    for h in holders {
        if h.await.unwrap_or(false) {
            alive += 1;
        }
    }
    if alive != connections {
        bail!("only {alive} of {connections} connections stayed open");
    }
    let delta = after.saturating_sub(before);
    println!("connections: {connections} (over {accounts} accounts), opened in {:.1} s", open_time.as_secs_f64());
    println!("server RSS: before {before} KiB, after {after} KiB, delta {delta} KiB");
    println!("memory per idle connection: {:.2} KB", delta as f64 * 1024.0 / 1000.0 / connections as f64);
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_identified(ws_url: &str, token: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let _hello = ws.next().await.context("no HELLO")??;
    let identify = ClientMessage::Identify(Identify { token: token.to_owned() }).to_text();
    ws.send(Message::Text(identify.into())).await?;
    loop {
        match ws.next().await.context("closed before READY")?? {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                if v["op"] == op::DISPATCH && v["t"] == "READY" {
                    return Ok(ws);
                }
            }
            Message::Close(c) => bail!("closed before READY: {c:?}"),
            _ => {}
        }
    }
}

async fn login_latency(url: &str, n: usize) -> anyhow::Result<()> {
    let name = unique_name("login");
    Client::new(url).register(&name, "benchmark-password", None).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let c = Client::new(url);
        let t = Instant::now();
        c.login(&name, "benchmark-password", None).await?;
        samples.push(t.elapsed());
        c.logout().await?;
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "login latency over {n} sequential logins: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, min {:.1} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3
    );
    Ok(())
}
