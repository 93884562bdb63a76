//! Private search over N local messages: the index built in the client's encrypted store
//! (SQLite, as the native client keeps it), its size on disk, and query times.
//!
//! The messages are made up: words drawn from a vocabulary of 20,000 with Zipf frequencies
//! (as words of real text are), 4 to 30 words each, in 50 channels and 100 DMs by 200 authors
//! over a year, one in twenty with a link. They are indexed 50 at a time (one store write per
//! history page, as the engine does when it reads one). Each kind of query is then timed on
//! a warm index (the document table and the store's cache of opened records in memory) and
//! on a cold store (a store opened afresh for every query, with only the document table kept,
//! as the engine keeps it).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use copains_client_core::crypto::search::{has, text_flags, Doc, DocTable, Filter, Place, SearchIndex};
use copains_client_core::crypto::sqlite::SqliteBackend;
use copains_client_core::crypto::Vault;
use copains_client_core::{ChannelId, UserId};

const VOCABULARY: usize = 20_000;
const CHANNELS: i64 = 50;
const DMS: i64 = 100;
const AUTHORS: i64 = 200;
const PER_WRITE: usize = 50;
const RUNS: usize = 25;
const PASSPHRASE: &str = "benchmark passphrase";

/// xorshift64*: the same messages on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A pronounceable word for a vocabulary rank (distinct for distinct ranks).
fn word(rank: usize) -> String {
    const CONSONANTS: &[u8] = b"bcdfglmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    let mut n = rank + 1;
    let mut out = String::new();
    while n > 0 {
        out.push(CONSONANTS[n % CONSONANTS.len()] as char);
        n /= CONSONANTS.len();
        out.push(VOWELS[n % VOWELS.len()] as char);
        n /= VOWELS.len();
    }
    out
}

/// Zipf ranks by inverse transform over the cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut cumulative = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / rank as f64;
            cumulative.push(total);
        }
        Self(cumulative.into_iter().map(|c| c / total).collect())
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|c| *c < u).min(self.0.len() - 1)
    }
}

fn message(rng: &mut Rng, zipf: &Zipf, i: usize) -> (Doc, String) {
    let words = 4 + rng.below(27) as usize;
    let mut text: Vec<String> = (0..words).map(|_| word(zipf.sample(rng))).collect();
    if i.is_multiple_of(20) {
        text.push(format!("https://example.org/{}", word(rng.below(VOCABULARY as u64) as usize)));
    }
    let text = text.join(" ");
    let place = if rng.below(3) == 0 {
        Place::Dm(UserId(1_000 + rng.below(DMS as u64) as i64))
    } else {
        Place::Channel(ChannelId(1 + rng.below(CHANNELS as u64) as i64))
    };
    let year_ms = 365 * 24 * 3_600_000i64;
    let doc = Doc {
        place,
        author: UserId(10_000 + rng.below(AUTHORS as u64) as i64),
        at: 1_700_000_000_000 + (i as i64) * (year_ms / 100_000),
        reference: i as u64,
        flags: text_flags(&text),
        live: true,
    };
    (doc, text)
}

fn store_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the benchmark (on a thread of its own: the store is not `Send`).
pub fn run(messages: usize) -> anyhow::Result<()> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?.block_on(bench(messages))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
}

async fn open(path: &Path) -> anyhow::Result<Vault> {
    let backend = SqliteBackend::open(path).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Vault::open(Box::new(backend), PASSPHRASE).await.map_err(|e| anyhow::anyhow!("{e}"))
}

async fn bench(messages: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("copains-search-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("store.vault");
    let result = measure(&dir, &path, messages).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn measure(dir: &Path, path: &Path, messages: usize) -> anyhow::Result<()> {
    let zipf = Zipf::new(VOCABULARY);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let empty = {
        let _vault = open(path).await?;
        store_bytes(dir)?
    };

    let vault = open(path).await?;
    let mut table: Option<DocTable> = None;
    let mut text_bytes = 0usize;
    let started = Instant::now();
    let mut i = 0;
    while i < messages {
        vault.begin_batch();
        let mut index = SearchIndex::new(&vault, &mut table);
        for _ in 0..PER_WRITE.min(messages - i) {
            let (doc, text) = message(&mut rng, &zipf, i);
            text_bytes += text.len();
            index.add(doc, &text).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            i += 1;
        }
        vault.commit_batch().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let build = started.elapsed();
    drop(vault);
    let size = store_bytes(dir)?.saturating_sub(empty);
    println!(
        "indexed {messages} messages ({:.1} MB of text) in {:.1} s: {:.0} µs per message, {PER_WRITE} per store write",
        text_bytes as f64 / 1e6,
        build.as_secs_f64(),
        build.as_secs_f64() * 1e6 / messages as f64
    );
    println!(
        "index on disk: {:.1} MB ({:.0} bytes per message, {:.2}× the text)",
        size as f64 / 1e6,
        size as f64 / messages as f64,
        size as f64 / text_bytes as f64
    );

    let some_channel = ChannelId(7);
    let some_author = UserId(10_042);
    let queries: Vec<(&str, String, Filter)> = vec![
        ("a common word (rank 5)", word(4), Filter::default()),
        ("a middling word (rank 500)", word(499), Filter::default()),
        ("a rare word (rank 15,000)", word(14_999), Filter::default()),
        ("two words (ranks 50 and 300)", format!("{} {}", word(49), word(299)), Filter::default()),
        ("the beginning of words (3 letters)", word(299).chars().take(3).collect(), Filter::default()),
        (
            "filters alone (from + in)",
            String::new(),
            Filter {
                authors: Some(vec![some_author]),
                channels: Some(vec![some_channel]),
                dms: Some(vec![]),
                ..Filter::default()
            },
        ),
        (
            "a word + has:link + after",
            word(9),
            Filter { flags: has::LINK, after: Some(1_700_000_000_000 + 100 * 24 * 3_600_000), ..Filter::default() },
        ),
    ];

    // The first search reads the document table.
    let vault = open(path).await?;
    let mut table: Option<DocTable> = None;
    let started = Instant::now();
    let (found, _) = SearchIndex::new(&vault, &mut table)
        .search(&queries[0].1, &queries[0].2, 0, 25)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "first search (reads the document table of {messages}): {:.1} ms, {found} found",
        started.elapsed().as_secs_f64() * 1e3
    );

    println!("query times over {RUNS} runs each, 25 results asked (ms):");
    println!("{:<38} {:>8} {:>10} {:>10} {:>12}", "query", "found", "warm p50", "warm p95", "cold p50");
    let mut all_warm = Vec::new();
    let mut all_cold = Vec::new();
    for (label, text, filter) in &queries {
        let mut warm = Vec::with_capacity(RUNS);
        let mut found = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            found = SearchIndex::new(&vault, &mut table).search(text, filter, 0, 25).await.map_err(|e| anyhow::anyhow!("{e}"))?.0;
            warm.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let mut cold = Vec::with_capacity(RUNS / 5);
        for _ in 0..RUNS / 5 {
            // A store opened afresh (nothing of it cached), the document table kept.
            let fresh = open(path).await?;
            let started = Instant::now();
            SearchIndex::new(&fresh, &mut table).search(text, filter, 0, 25).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            cold.push(started.elapsed().as_secs_f64() * 1e3);
        }
        warm.sort_by(f64::total_cmp);
        cold.sort_by(f64::total_cmp);
        println!(
            "{label:<38} {found:>8} {:>10.2} {:>10.2} {:>12.2}",
            percentile(&warm, 0.5),
            percentile(&warm, 0.95),
            percentile(&cold, 0.5)
        );
        all_warm.extend(warm);
        all_cold.extend(cold);
    }
    all_warm.sort_by(f64::total_cmp);
    all_cold.sort_by(f64::total_cmp);
    println!(
        "all queries: warm p50 {:.2} ms, p95 {:.2} ms; cold store p50 {:.2} ms, p95 {:.2} ms (goal: p50 ≤ 50 ms)",
        percentile(&all_warm, 0.5),
        percentile(&all_warm, 0.95),
        percentile(&all_cold, 0.5),
        percentile(&all_cold, 0.95)
    );
    Ok(())
}
