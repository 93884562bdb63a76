//! Argon2id password hashing on a small pool of dedicated threads.
//!
//! Each hash needs `memory_kib` (19 MiB by default). Running them on tokio's blocking pool
//! would spread them over many threads, each with its own malloc arena that keeps its 19 MiB
//! after the hash: hundreds of MiB of resident memory after a burst of logins. A fixed pool
//! of `max_concurrent` threads bounds both the concurrency and that memory.

use std::sync::{mpsc, Arc};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use rand::RngCore;
use tokio::sync::oneshot;

use crate::config::PasswordHashing;
use crate::domain::Password;

/// OWASP's floor for argon2id: 19 MiB, 2 passes.
const MIN_MEMORY_KIB: u32 = 19 * 1024;
const MIN_ITERATIONS: u32 = 2;

/// Failures of hashing.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Parameters below the floor or out of range.
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
    /// The stored hash cannot be parsed.
    #[error("stored password hash is malformed")]
    BadStoredHash,
    /// The hashing task died.
    #[error("hashing task failed")]
    Task,
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    jobs: mpsc::Sender<Job>,
    /// A hash of a random password, verified against when the username is unknown so that
    /// "no such user" takes as long as "wrong password".
    decoy: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", &self.params).finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Checks the parameters and prepares the decoy hash.
    pub fn new(cfg: &PasswordHashing) -> Result<Self, PasswordError> {
        if cfg.memory_kib < MIN_MEMORY_KIB || cfg.iterations < MIN_ITERATIONS {
            return Err(PasswordError::Params(format!(
                "memory_kib must be >= {MIN_MEMORY_KIB} and iterations >= {MIN_ITERATIONS}"
            )));
        }
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let threads = match cfg.max_concurrent {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        };
        let mut decoy_password = [0u8; 32];
        rand::rng().fill_bytes(&mut decoy_password);
        let decoy = hash_blocking(&params, &decoy_password)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job; the pool ends with the sender.
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .map_err(|e| PasswordError::Params(format!("cannot start hashing threads: {e}")))?;
        }
        Ok(Self { params, jobs: tx, decoy: decoy.into() })
    }

    /// Runs `work` on the hashing pool.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.send(job).map_err(|_| PasswordError::Task)?;
        result.await.map_err(|_| PasswordError::Task)
    }

    /// Hashes a new password (PHC string with a fresh salt).
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        let params = self.params.clone();
        let password = password.expose().as_bytes().to_vec();
        self.run(move || hash_blocking(&params, &password)).await?
    }

    /// Verifies `password` against `stored`; with `None` (unknown user) it verifies against
    /// the decoy and answers false, taking the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let stored = stored.map(str::to_owned).unwrap_or_else(|| self.decoy.to_string());
        let password = password.as_bytes().to_vec();
        let ok = self
            .run(move || {
                let parsed = PasswordHash::new(&stored).map_err(|_| PasswordError::BadStoredHash)?;
                Ok::<_, PasswordError>(Argon2::default().verify_password(&password, &parsed).is_ok())
            })
            .await??;
        Ok(known && ok)
    }
}

type Job = Box<dyn FnOnce() + Send>;

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Params(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Params(e.to_string()))
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

    #[test]
    fn weak_parameters_are_refused() {
        let weak = PasswordHashing { memory_kib: 1024, ..PasswordHashing::default() };
        assert!(PasswordHasher::new(&weak).is_err());
    }
}
