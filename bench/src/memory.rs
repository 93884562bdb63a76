//! Memory footprint: the server's RSS, sampled every 250 ms while the benchmark runs its
//! phases (idle; sign-ups; logins; members online with DMs flowing), with the resting figure
//! at the end of each phase, a CSV of the samples and an SVG plot of them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use copains_client_core::gateway::ClientMessage;

use crate::{open_identified, rss_kib, unique_name};

/// What to run.
pub struct Options {
    pub url: String,
    pub pid: u32,
    pub accounts: usize,
    pub concurrency: usize,
    pub dm_pairs: usize,
    pub dm_rate: u64,
    pub dm_seconds: u64,
    /// Seconds to wait after each phase before reading its resting RSS.
    pub settle_secs: u64,
    pub svg: PathBuf,
    pub csv: Option<PathBuf>,
}

/// The phases, in order, with the goal for the RSS at their end (MB).
const PHASES: [(&str, f64); 4] = [
    ("idle after start", 20.0),
    ("after 1,000 sign-ups (concurrency 50)", 64.0),
    ("after 1,000 logins (concurrency 50)", 64.0),
    ("1,000 online, 100 DMs/s for 60 s", 128.0),
];
const SHORT: [&str; 4] = ["idle", "sign-ups", "logins", "online + DMs"];

#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    kib: u64,
    phase: usize,
}

struct Recorder {
    pid: u32,
    started: Instant,
    phase: AtomicUsize,
    samples: Mutex<Vec<Sample>>,
}

impl Recorder {
    async fn sample(&self) -> anyhow::Result<u64> {
        let kib = rss_kib(self.pid)?;
        let phase = self.phase.load(Ordering::Relaxed);
        self.samples.lock().await.push(Sample { secs: self.started.elapsed().as_secs_f64(), kib, phase });
        Ok(kib)
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    anyhow::ensure!(o.accounts >= 1 && o.concurrency >= 1, "--accounts and --concurrency must be at least 1");
    let rec =
        Arc::new(Recorder { pid: o.pid, started: Instant::now(), phase: AtomicUsize::new(0), samples: Mutex::new(Vec::new()) });
    let sampler = {
        let rec = rec.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if rec.sample().await.is_err() {
                    return;
                }
            }
        })
    };
    let settle = Duration::from_secs(o.settle_secs);
    let mut resting = Vec::new();
    let mut notes = Vec::new();

    // Idle.
    tokio::time::sleep(settle).await;
    resting.push(rec.sample().await?);

    // Sign-ups.
    rec.phase.store(1, Ordering::Relaxed);
    let http = reqwest::Client::new();
    let prefix = unique_name("mem");
    let names: Vec<String> = (0..o.accounts).map(|i| format!("{prefix}_{i}")).collect();
    let (lat, _) = auth_burst(&http, &o.url, "register", &names, o.concurrency).await?;
    notes.push(format!("sign-ups: {}", latency_line(&lat)));
    tokio::time::sleep(settle).await;
    resting.push(rec.sample().await?);

    // Logins.
    rec.phase.store(2, Ordering::Relaxed);
    let (lat, tokens) = auth_burst(&http, &o.url, "login", &names, o.concurrency).await?;
    notes.push(format!("logins: {}", latency_line(&lat)));
    tokio::time::sleep(settle).await;
    resting.push(rec.sample().await?);

    // Members online, DMs flowing.
    rec.phase.store(3, Ordering::Relaxed);
    let ws_url = format!("{}/gateway", o.url.replacen("http", "ws", 1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut holders = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let ws = open_identified(&ws_url, token).await.with_context(|| format!("connection {i}"))?;
        holders.push(tokio::spawn(hold(ws, stop_rx.clone())));
    }
    eprintln!("{} gateway connections online; DMs next", holders.len());
    crate::dm::run(&o.url, o.pid, o.dm_pairs, o.dm_rate, o.dm_seconds).await?;
    resting.push(rec.sample().await?);
    let _ = stop_tx.send(true);
    let mut alive = 0;
    for h in holders {
        if h.await.unwrap_or(false) {
            alive += 1;
        }
    }
    if alive != tokens.len() {
        bail!("only {alive} of {} gateway connections stayed open", tokens.len());
    }
    sampler.abort();

    let samples = rec.samples.lock().await.clone();
    println!("server RSS (VmRSS; 1 MB = 10^6 bytes), sampled every 250 ms:");
    println!("| phase | RSS at the end | peak during the phase | goal |");
    println!("| --- | --- | --- | --- |");
    for (i, ((name, goal), end)) in PHASES.iter().zip(&resting).enumerate() {
        let peak = samples.iter().filter(|s| s.phase == i).map(|s| s.kib).max().unwrap_or(*end);
        let verdict = if mb(*end) <= *goal { "met" } else { "NOT met" };
        println!("| {name} | {:.1} MB | {:.1} MB | ≤ {goal:.0} MB ({verdict}) |", mb(*end), mb(peak));
    }
    for n in notes {
        println!("{n}");
    }
    std::fs::write(&o.svg, svg(&samples, &resting)).with_context(|| format!("write {}", o.svg.display()))?;
    println!("plot: {}", o.svg.display());
    if let Some(csv) = &o.csv {
        let mut text = String::from("seconds,rss_kib,phase\n");
        for s in &samples {
            let _ = writeln!(text, "{:.2},{},{}", s.secs, s.kib, SHORT[s.phase]);
        }
        std::fs::write(csv, text).with_context(|| format!("write {}", csv.display()))?;
        println!("samples: {}", csv.display());
    }
    Ok(())
}

/// Keeps a gateway connection open (heartbeats) until told to stop; true if it stayed open.
pub(crate) async fn hold(ws: crate::Ws, mut stop: tokio::sync::watch::Receiver<bool>) -> bool {
    let (mut sink, mut stream) = ws.split();
    let mut beat = tokio::time::interval(Duration::from_secs(20));
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let hb = ClientMessage::Heartbeat(None).to_text();
                if sink.send(Message::Text(hb.into())).await.is_err() { return false; }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
                _ => {}
            },
            _ = stop.changed() => return true,
        }
    }
}

/// `names.len()` register or login requests, `concurrency` at a time; a 503 (hashing queue
/// full) is retried after its `Retry-After`. Returns the latencies and the access tokens.
async fn auth_burst(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<String>)> {
    let endpoint = format!("{url}/api/v1/auth/{what}");
    let results = futures_util::stream::iter(names.iter().cloned())
        .map(|name| {
            let (http, endpoint) = (http.clone(), endpoint.clone());
            async move {
                let started = Instant::now();
                loop {
                    let resp =
                        http.post(&endpoint).json(&json!({ "username": name, "password": "benchmark-password" })).send().await?;
                    let status = resp.status();
                    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        let wait = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(1);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                        continue;
                    }
                    if !status.is_success() {
                        bail!("{what} of {name}: {status}: {}", resp.text().await.unwrap_or_default());
                    }
                    let body: serde_json::Value = resp.json().await?;
                    let token = body["access_token"].as_str().context("access_token")?.to_owned();
                    return Ok::<_, anyhow::Error>((started.elapsed(), token));
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let mut lat = Vec::with_capacity(results.len());
    let mut tokens = Vec::with_capacity(results.len());
    for r in results {
        let (l, t) = r?;
        lat.push(l);
        tokens.push(t);
    }
    lat.sort();
    Ok((lat, tokens))
}

fn latency_line(sorted: &[Duration]) -> String {
    let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    format!("{} requests, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms", sorted.len(), pct(0.5), pct(0.9), pct(0.99))
}

/// A line plot of the samples: phases as bands, each phase's goal as a dashed line over it.
fn svg(samples: &[Sample], resting: &[u64]) -> String {
    let (w, h) = (760.0, 380.0);
    let (left, right, top, bottom) = (56.0, 16.0, 40.0, 44.0);
    let t_max = samples.last().map(|s| s.secs).unwrap_or(1.0).max(1.0);
    let peak = samples.iter().map(|s| mb(s.kib)).fold(0.0, f64::max);
    let y_max = (peak.max(140.0) / 20.0).ceil() * 20.0;
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / y_max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="16" text-anchor="middle" font-size="13">copains serve: resident memory (MB) over time (s)</text>"#,
        w / 2.0
    );
    // Where each phase starts and ends on the time axis.
    let spans: Vec<Option<(f64, f64)>> = (0..PHASES.len())
        .map(|i| {
            let first = samples.iter().find(|s| s.phase == i)?;
            let last = samples.iter().rev().find(|s| s.phase == i)?;
            let start = if i == 0 { 0.0 } else { first.secs };
            let end = samples.iter().find(|s| s.phase > i).map(|s| s.secs).unwrap_or(last.secs);
            Some((start, end))
        })
        .collect();
    // Bands first, so that no band covers a label drawn for the one before it.
    for (i, span) in spans.iter().enumerate() {
        let Some((start, end)) = *span else { continue };
        let fill = if i % 2 == 0 { "#f2f2f2" } else { "#e6eef7" };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
            x(start),
            (x(end) - x(start)).max(1.0),
            h - top - bottom
        );
    }
    for (i, (_, goal)) in PHASES.iter().enumerate() {
        let Some((start, end)) = spans[i] else { continue };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            (x(start) + x(end)) / 2.0,
            top - 6.0,
            SHORT[i]
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="5,4"/>"##,
            x(start),
            y(*goal),
            x(end),
            y(*goal)
        );
        let _ =
            writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#c0392b">goal {goal:.0}</text>"##, x(start) + 3.0, y(*goal) - 3.0);
        if let Some(r) = resting.get(i) {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1f4e79"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#1f4e79">{:.0}</text>"##,
                x(end),
                y(mb(*r)),
                x(end) - 4.0,
                y(mb(*r)) + 14.0,
                mb(*r)
            );
        }
    }
    // Axes and ticks.
    let _ = writeln!(s, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, h - bottom, w - right, h - bottom);
    let _ = writeln!(s, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#, h - bottom);
    let mut v = 0.0;
    while v <= y_max {
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{:.1}" x2="{left}" y2="{:.1}" stroke="black"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            left - 4.0,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        );
        v += 20.0;
    }
    let step = if t_max > 120.0 { 30.0 } else { 10.0 };
    let mut t = 0.0;
    while t <= t_max {
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{}" x2="{:.1}" y2="{}" stroke="black"/><text x="{:.1}" y="{}" text-anchor="middle">{t:.0}</text>"#,
            x(t),
            h - bottom,
            x(t),
            h - bottom + 4.0,
            x(t),
            h - bottom + 16.0
        );
        t += step;
    }
    let _ =
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">seconds since start of the benchmark</text>"#, w / 2.0, h - 8.0);
    // The samples.
    let mut points = String::new();
    for smp in samples {
        let _ = write!(points, "{:.1},{:.1} ", x(smp.secs), y(mb(smp.kib)));
    }
    let _ = writeln!(s, r##"<polyline points="{}" fill="none" stroke="#1f4e79" stroke-width="1.5"/>"##, points.trim_end());
    s.push_str("</svg>\n");
    s
}
