//! Argon2id password hashing with bounded, reused memory.
//!
//! Each hash needs `memory_kib` (19 MiB by default). Allocating that block per hash is what
//! made a burst of sign-ups grow the process by hundreds of MiB: glibc raises its mmap
//! threshold after the first 19 MiB block is freed, so later blocks come from its heaps,
//! which keep them (and, with the 64-byte alignment of argon2's blocks, fragment so that a
//! new heap is often needed). Here a fixed pool of `max_concurrent` worker threads each
//! allocates its block once, on its first hash, and hashes into it for the life of the
//! process (`Argon2::hash_password_into_with_memory`): argon2's memory is at most
//! `max_concurrent × memory_kib`, whatever the load.
//!
//! Requests wait in a bounded queue: at most `max_concurrent + max_queued` hashes are admitted
//! at once (a semaphore); beyond that [`PasswordError::Busy`] answers at once with an estimate
//! of when to retry, so a burst of logins can neither hang the server nor grow its memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
use rand::RngCore;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::PasswordHashing;
use crate::domain::Password;

/// OWASP's floor for argon2id: 19 MiB, 2 passes.
const MIN_MEMORY_KIB: u32 = 19 * 1024;
const MIN_ITERATIONS: u32 = 2;
/// Bytes of salt of a new hash.
const SALT_LEN: usize = 16;
/// Bytes of output of a new hash (argon2's default).
const OUTPUT_LEN: usize = 32;
/// Largest memory a stored hash may ask for when verified (4 GiB would be absurd; this is
/// 16 × the OWASP figure), so that a tampered row cannot make a worker allocate without bound.
const MAX_VERIFY_MEMORY_KIB: u32 = 16 * MIN_MEMORY_KIB;
/// Most passes a stored hash may ask for when verified (the same reason, in time: far above
/// any sensible setting, yet a bound).
const MAX_VERIFY_ITERATIONS: u32 = 256;

/// Failures of hashing.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Parameters below the floor or out of range.
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
    /// The stored hash cannot be parsed (or asks for more memory than allowed).
    #[error("stored password hash is malformed")]
    BadStoredHash,
    /// Every worker is busy and the queue is full; retry after the given time.
    #[error("password hashing is saturated; retry in {} s", .retry_after.as_secs())]
    Busy {
        /// An estimate of when a slot frees up (at least one second).
        retry_after: Duration,
    },
    /// The hashing pool is gone (the server is shutting down).
    #[error("hashing task failed")]
    Task,
}

/// What the hashing pool is doing, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingStats {
    /// Worker threads: the most hashes that ever run at once.
    pub workers: usize,
    /// Hashes running now.
    pub in_flight: usize,
    /// The most hashes seen running at once since start.
    pub max_in_flight: usize,
    /// Requests admitted and waiting for a worker.
    pub queued: usize,
    /// Requests answered "busy" because the queue was full.
    pub rejected: u64,
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    jobs: mpsc::Sender<Job>,
    /// `workers + max_queued` permits: one per admitted request, running or waiting.
    admission: Arc<Semaphore>,
    gauges: Arc<Gauges>,
    workers: usize,
    /// A well-formed hash with the current parameters that no password matches (random
    /// salt and output), verified against when the username is unknown so that "no such
    /// user" takes as long as "wrong password".
    decoy: Arc<str>,
}

#[derive(Default)]
struct Gauges {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    queued: AtomicUsize,
    rejected: AtomicU64,
    /// Moving average of a hash's duration in microseconds (0 until the first one).
    mean_hash_us: AtomicU64,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", &self.params).field("workers", &self.workers).finish_non_exhaustive()
    }
}

/// One request to a worker.
struct Job {
    work: Work,
    /// Held until the job is done, so that admission counts it.
    _permit: OwnedSemaphorePermit,
}

enum Work {
    Hash { password: Vec<u8>, reply: oneshot::Sender<Result<String, PasswordError>> },
    Verify { password: Vec<u8>, stored: Arc<str>, reply: oneshot::Sender<Result<bool, PasswordError>> },
}

enum Answer {
    Hash(Result<String, PasswordError>, oneshot::Sender<Result<String, PasswordError>>),
    Verify(Result<bool, PasswordError>, oneshot::Sender<Result<bool, PasswordError>>),
}

impl Work {
    /// True when nobody waits for the answer any more (the request was dropped).
    fn abandoned(&self) -> bool {
        match self {
            Work::Hash { reply, .. } => reply.is_closed(),
            Work::Verify { reply, .. } => reply.is_closed(),
        }
    }
}

impl PasswordHasher {
    /// Checks the parameters and starts the workers (their memory is taken on first use).
    pub fn new(cfg: &PasswordHashing) -> Result<Self, PasswordError> {
        if cfg.memory_kib < MIN_MEMORY_KIB || cfg.iterations < MIN_ITERATIONS {
            return Err(PasswordError::Params(format!(
                "memory_kib must be >= {MIN_MEMORY_KIB} and iterations >= {MIN_ITERATIONS}"
            )));
        }
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, Some(OUTPUT_LEN))
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let workers = match cfg.max_concurrent {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        };
        let decoy = decoy_hash(&params)?;
        let gauges = Arc::new(Gauges::default());
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            let gauges = gauges.clone();
            let params = params.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&rx, &gauges, &params))
                .map_err(|e| PasswordError::Params(format!("cannot start hashing threads: {e}")))?;
        }
        let admission = Arc::new(Semaphore::new(workers.saturating_add(cfg.max_queued)));
        Ok(Self { params, jobs: tx, admission, gauges, workers, decoy: decoy.into() })
    }

    /// What the pool is doing now.
    pub fn stats(&self) -> HashingStats {
        HashingStats {
            workers: self.workers,
            in_flight: self.gauges.in_flight.load(Ordering::Relaxed),
            max_in_flight: self.gauges.max_in_flight.load(Ordering::Relaxed),
            queued: self.gauges.queued.load(Ordering::Relaxed),
            rejected: self.gauges.rejected.load(Ordering::Relaxed),
        }
    }

    /// Admits a request or answers busy with an estimate of the wait.
    fn admit(&self) -> Result<OwnedSemaphorePermit, PasswordError> {
        self.admission.clone().try_acquire_owned().map_err(|_| {
            self.gauges.rejected.fetch_add(1, Ordering::Relaxed);
            PasswordError::Busy { retry_after: self.retry_after() }
        })
    }

    /// How long the queue ahead takes to drain: waiting hashes × mean duration / workers,
    /// rounded up to whole seconds, between 1 and 60.
    fn retry_after(&self) -> Duration {
        let queued = self.gauges.queued.load(Ordering::Relaxed) as u64 + 1;
        let mean_us = self.gauges.mean_hash_us.load(Ordering::Relaxed);
        let wait_us = queued.saturating_mul(mean_us) / self.workers.max(1) as u64;
        Duration::from_secs(wait_us.div_ceil(1_000_000).clamp(1, 60))
    }

    fn submit(&self, work: Work) -> Result<(), PasswordError> {
        let permit = self.admit()?;
        self.gauges.queued.fetch_add(1, Ordering::Relaxed);
        self.jobs.send(Job { work, _permit: permit }).map_err(|_| {
            self.gauges.queued.fetch_sub(1, Ordering::Relaxed);
            PasswordError::Task
        })
    }

    /// Hashes a new password (PHC string with a fresh salt).
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Work::Hash { password: password.expose().as_bytes().to_vec(), reply })?;
        answer.await.map_err(|_| PasswordError::Task)?
    }

    /// Verifies `password` against `stored`; with `None` (unknown user) it verifies against
    /// the decoy and answers false, taking the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let stored: Arc<str> = stored.map(Arc::from).unwrap_or_else(|| self.decoy.clone());
        let (reply, answer) = oneshot::channel();
        self.submit(Work::Verify { password: password.as_bytes().to_vec(), stored, reply })?;
        let ok = answer.await.map_err(|_| PasswordError::Task)??;
        Ok(known && ok)
    }
}

/// A worker: takes jobs until the hasher is dropped, hashing into its own memory block.
fn worker(rx: &Mutex<mpsc::Receiver<Job>>, gauges: &Gauges, params: &Params) {
    // Allocated on the first job and kept: the point of the pool is that this memory is
    // reused, never returned to the allocator and asked for again.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only to take the next job; the pool ends with the sender.
        let job = rx.lock().recv();
        let Ok(job) = job else { return };
        gauges.queued.fetch_sub(1, Ordering::Relaxed);
        if job.work.abandoned() {
            continue;
        }
        let running = gauges.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        gauges.max_in_flight.fetch_max(running, Ordering::SeqCst);
        let started = Instant::now();
        let Job { work, _permit: permit } = job;
        let answer = match work {
            Work::Hash { password, reply } => Answer::Hash(hash_with(&mut memory, params, &password), reply),
            Work::Verify { password, stored, reply } => {
                Answer::Verify(verify_with(&mut memory, params.block_count(), &password, &stored), reply)
            }
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mean = gauges.mean_hash_us.load(Ordering::Relaxed);
        let next = if mean == 0 { took } else { (mean * 7 + took) / 8 };
        gauges.mean_hash_us.store(next, Ordering::Relaxed);
        // The slot is free before the caller hears back, so a caller that retries at once
        // (or reads the stats) sees it free.
        gauges.in_flight.fetch_sub(1, Ordering::SeqCst);
        drop(permit);
        match answer {
            Answer::Hash(result, reply) => {
                let _ = reply.send(result);
            }
            Answer::Verify(result, reply) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// The worker's block, grown (never shrunk) to `params`' size.
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::new());
    }
    &mut memory[..needed]
}

fn hash_with(memory: &mut Vec<Block>, params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, blocks(memory, params))
        .map_err(|e| PasswordError::Params(e.to_string()))?;
    phc_string(params, &salt, &out)
}

fn verify_with(memory: &mut Vec<Block>, kept: usize, password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::BadStoredHash)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| PasswordError::BadStoredHash)?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|_| PasswordError::BadStoredHash)?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|_| PasswordError::BadStoredHash)?;
    if params.m_cost() > MAX_VERIFY_MEMORY_KIB || params.t_cost() > MAX_VERIFY_ITERATIONS {
        return Err(PasswordError::BadStoredHash);
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(PasswordError::BadStoredHash);
    };
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(|_| PasswordError::BadStoredHash)?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out.get_mut(..expected.len()).ok_or(PasswordError::BadStoredHash)?;
    // A hash stored with more memory than the configured parameters (older, stronger ones)
    // gets a block of its own for this one check: the worker's kept block does not grow.
    let mut own = Vec::new();
    let memory = if params.block_count() > kept { &mut own } else { memory };
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, out, blocks(memory, &params))
        .map_err(|_| PasswordError::BadStoredHash)?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(out).map_err(|_| PasswordError::BadStoredHash)? == expected)
}

fn phc_string(params: &Params, salt: &[u8], output: &[u8]) -> Result<String, PasswordError> {
    let err = |e: argon2::password_hash::Error| PasswordError::Params(e.to_string());
    let salt = SaltString::encode_b64(salt).map_err(err)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(err)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(output).map_err(err)?),
    };
    Ok(hash.to_string())
}

/// A hash with `params`, a random salt and a random output: verifying against it costs a
/// full hash and fails for every password (a match would need a 256-bit preimage).
fn decoy_hash(params: &Params) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    let mut output = [0u8; OUTPUT_LEN];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut output);
    phc_string(params, &salt, &output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(&PasswordHashing::default()).expect("hasher");
        let pw = Password::parse("correct horse battery").expect("valid");
        let phc = hasher.hash(&pw).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse battery", Some(&phc)).await.expect("verify"));
        assert!(!hasher.verify("wrong horse battery", Some(&phc)).await.expect("verify"));
        assert!(!hasher.verify("correct horse battery", None).await.expect("decoy"));
    }

    #[tokio::test]
    async fn hashes_of_the_argon2_crate_still_verify() {
        use argon2::password_hash::PasswordHasher as _;
        // What earlier versions stored: the crate's own PHC output, allocated per hash.
        let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        let phc = Argon2::default().hash_password(b"correct horse battery", &salt).expect("hash").to_string();
        let hasher = PasswordHasher::new(&PasswordHashing::default()).expect("hasher");
        assert!(hasher.verify("correct horse battery", Some(&phc)).await.expect("verify"));
        assert!(!hasher.verify("correct horse batterY", Some(&phc)).await.expect("verify"));
        // And ours verify with the crate's verifier.
        let ours = hasher.hash(&Password::parse("correct horse battery").expect("valid")).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("parse");
        use argon2::password_hash::PasswordVerifier as _;
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
    }

    #[tokio::test]
    async fn malformed_stored_hashes_are_errors() {
        let hasher = PasswordHasher::new(&PasswordHashing::default()).expect("hasher");
        for bad in [
            "",
            "nonsense",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$argon2id$v=19$m=9999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(matches!(hasher.verify("pw", Some(bad)).await, Err(PasswordError::BadStoredHash)), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let cfg = PasswordHashing { max_concurrent: 1, max_queued: 1, ..PasswordHashing::default() };
        let hasher = PasswordHasher::new(&cfg).expect("hasher");
        let pw = Password::parse("correct horse battery").expect("valid");
        // Room for two (one running, one waiting): take both places, as two requests would.
        let first = hasher.admit().expect("first place");
        let second = hasher.admit().expect("second place");
        match hasher.hash(&pw).await {
            Err(PasswordError::Busy { retry_after }) => assert!(retry_after >= Duration::from_secs(1)),
            other => panic!("expected busy, got {other:?}"),
        }
        assert!(matches!(hasher.verify("correct horse battery", None).await, Err(PasswordError::Busy { .. })));
        assert_eq!(hasher.stats().rejected, 2);
        // A place frees up: the next request goes through.
        drop(first);
        assert!(hasher.hash(&pw).await.is_ok());
        drop(second);
        let stats = hasher.stats();
        assert_eq!((stats.rejected, stats.max_in_flight, stats.in_flight, stats.queued), (2, 1, 0, 0));
    }

    #[test]
    fn weak_parameters_are_refused() {
        let weak = PasswordHashing { memory_kib: 1024, ..PasswordHashing::default() };
        assert!(PasswordHasher::new(&weak).is_err());
    }
}
