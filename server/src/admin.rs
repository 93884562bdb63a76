//! `copains admin`: platform administration from the server's own command line.

use std::io::Read;

use anyhow::Context;
use copains_backend::auth::PasswordHasher;
use copains_backend::domain::{Password, Username};
use copains_backend::ids::Snowflakes;
use copains_backend::store::admin::AdminOutcome;
use copains_backend::store::{now_ms, Store, StoreError};
use copains_client_core::api::PlatformRole;
use copains_client_core::UserId;

use crate::{config, Config};

/// Makes `username` a platform admin: promotes the account, or creates it with the password
/// `read_password` gives (asked only when the account does not exist yet). There is no
/// default password anywhere.
pub async fn create_admin(
    config: &Config,
    username: &str,
    read_password: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<AdminOutcome> {
    let username = Username::parse(username).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::connect(&url, 2).await.with_context(|| format!("cannot open database {}", config::redact_url(&url)))?;
    let hash = if store.username_exists(username.folded()).await? {
        None
    } else {
        let password = Password::parse(&read_password()?).map_err(|e| anyhow::anyhow!("{e}"))?;
        let hasher = PasswordHasher::new(&config.api.password_hashing).context("invalid password hashing settings")?;
        Some(hasher.hash(&password).await.context("cannot hash the password")?)
    };
    let id = UserId(Snowflakes::new(config.node_id).next_id());
    match store.ensure_admin(id, username.as_str(), username.folded(), hash.as_deref(), now_ms()).await {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => anyhow::bail!("the account went away meanwhile; run the command again"),
        Err(StoreError::UsernameTaken) => anyhow::bail!("the account was created meanwhile; run the command again to promote it"),
        Err(e) => Err(e.into()),
    }
}

/// Sets `username`'s platform role from the command line (admins included: this is how an
/// admin is demoted). A server running meanwhile applies it within
/// [`copains_backend::auth::USER_TTL`] (its session cache reads the account again). Returns the
/// role before.
pub async fn set_role(config: &Config, username: &str, role: PlatformRole) -> anyhow::Result<PlatformRole> {
    let username = Username::parse(username).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = config.database_url();
    let store = Store::connect(&url, 2).await.with_context(|| format!("cannot open database {}", config::redact_url(&url)))?;
    match store.set_role_by_name(username.folded(), role, now_ms()).await? {
        Some((_, before)) => Ok(before),
        None => anyhow::bail!("no account named {}", username.as_str()),
    }
}

/// The password: asked at the terminal without echoing it when standard input is one,
/// otherwise the first line of standard input, without the line ending.
pub fn password_from_stdin() -> anyhow::Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password at the terminal")?;
        let again = rpassword::prompt_password("Password again: ").context("cannot read the password at the terminal")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        anyhow::ensure!(!first.is_empty(), "no password given");
        return Ok(first);
    }
    let mut text = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut text).context("cannot read the password on standard input")?;
    let line = text.lines().next().unwrap_or("").to_owned();
    anyhow::ensure!(
        !line.is_empty(),
        "no password on standard input (e.g. `printf '%s' \"$PASSWORD\" | copains admin create-admin alice`)"
    );
    Ok(line)
}

/// What `copains admin rotate-key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The new data key, which seals from now on.
    pub new_key: u32,
    /// Values sealed again under it.
    pub resealed: u64,
    /// Values that opened under no key (erased).
    pub erased: u64,
    /// Keys removed from the key file (nothing was sealed under them any more).
    pub dropped: Vec<u32>,
}

/// Rotates the key file's data key while the server may run: adds a new key (which a running
/// server picks up at its next housekeeping pass, or at once when it meets a value sealed
/// under it), seals every stored value again under it, then drops the keys older than the
/// one before (kept: a running server may still seal under it until it reads the file).
/// `progress(done, total)` after each value.
pub async fn rotate_key(config: &Config, progress: impl Fn(u64, u64)) -> anyhow::Result<KeyRotation> {
    use copains_backend::secrets::{session_ip, Secrets};
    let path = config.key_file();
    let keys = crate::keyfile::load_or_create(&path)?;
    let url = config.database_url();
    let store = Store::connect(&url, 2).await.with_context(|| format!("cannot open database {}", config::redact_url(&url)))?;
    let new_key = crate::keyfile::add_data_key(&path)?;
    let all = crate::keyfile::read_data_keys(&path)?;
    anyhow::ensure!(
        all.first().map(|k| k.id) == Some(new_key),
        "another rotation changed the key file meanwhile; run one at a time, then run this again"
    );
    let secrets = Secrets::new(keys.fingerprint_key, &all, None);
    let total = u64::try_from(store.sealed_count().await?).unwrap_or(0);
    let (mut resealed, mut erased) = (0u64, 0u64);
    loop {
        let batch = store.sealed_not_under(new_key, 500).await?;
        if batch.is_empty() {
            break;
        }
        for (session, old) in batch {
            let purpose = session_ip(copains_client_core::SessionId(session));
            let replaced = match secrets.open(&purpose, &old) {
                Ok(plain) => {
                    let done = store.reseal(session, &old, Some(&secrets.seal(&purpose, &plain))).await?;
                    resealed += u64::from(done);
                    done
                }
                Err(e) => {
                    tracing::warn!(session, error = %e, "a sealed address opens under no key: erased");
                    let done = store.reseal(session, &old, None).await?;
                    erased += u64::from(done);
                    done
                }
            };
            if replaced {
                progress(resealed + erased, total.max(resealed + erased));
            }
        }
    }
    let keep: Vec<u32> = all.iter().take(2).map(|k| k.id).collect();
    let dropped: Vec<u32> = all.iter().map(|k| k.id).filter(|id| !keep.contains(id)).collect();
    crate::keyfile::retain_data_keys(&path, &keep)?;
    let details = serde_json::json!({"new_key": new_key, "resealed": resealed, "erased": erased, "dropped": dropped});
    store.record_key_rotation(details, now_ms()).await?;
    Ok(KeyRotation { new_key, resealed, erased, dropped })
}

pub use copains_backend::store::admin::Contents;

async fn open(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    Store::connect(&url, 2).await.with_context(|| format!("cannot open database {}", config::redact_url(&url)))
}

fn sqlite_only(config: &Config, what: &str) -> anyhow::Result<()> {
    if config.database_url().starts_with("postgres") {
        anyhow::bail!(
            "{what} works on the SQLite database; for PostgreSQL use pg_dump and pg_restore (docs/operations.md, Backups)"
        );
    }
    Ok(())
}

/// The database's figures (`copains admin stats`).
pub async fn stats(config: &Config) -> anyhow::Result<Contents> {
    Ok(open(config).await?.contents().await?)
}

/// A consistent snapshot of the SQLite database into `dest` (a new file), taken while the
/// server may run (`VACUUM INTO`: one read transaction, so nothing half-written is in it).
/// Returns what it holds, read back from the copy.
pub async fn backup(config: &Config, dest: &std::path::Path) -> anyhow::Result<Contents> {
    sqlite_only(config, "backup")?;
    anyhow::ensure!(!dest.exists(), "{} exists already; pick a new file", dest.display());
    let target = dest.to_str().context("the backup path is not valid UTF-8")?;
    // It holds password hashes: readable by the owner alone, from the start (SQLite writes
    // into an empty file).
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let store = open(config).await?;
    store.snapshot_into(target).await.context("the snapshot failed")?;
    store.close().await;
    let copy = Store::connect(&format!("sqlite://{target}"), 1).await.context("the snapshot does not open")?;
    check_integrity(&copy).await?;
    let held = copy.contents().await?;
    copy.close().await;
    Ok(held)
}

async fn check_integrity(store: &Store) -> anyhow::Result<()> {
    let check = store.integrity_check().await?;
    anyhow::ensure!(check == "ok", "the database fails its integrity check: {check}");
    Ok(())
}

/// Puts the SQLite database of a backup in place of the data directory's (the server must be
/// stopped: its lock is checked). The backup is checked first and brought up to this
/// version's schema; the database it replaces is kept beside it as
/// `copains.db.before-restore`. Returns what the restored database holds.
pub async fn restore(config: &Config, src: &std::path::Path) -> anyhow::Result<Contents> {
    sqlite_only(config, "restore")?;
    anyhow::ensure!(config.database_url.is_none(), "restore replaces <data_dir>/copains.db; unset database_url");
    anyhow::ensure!(src.is_file(), "no backup at {}", src.display());
    let mut magic = [0u8; 16];
    let read = std::fs::File::open(src).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    anyhow::ensure!(read.is_ok() && &magic == b"SQLite format 3\0", "{} is not a SQLite database", src.display());
    std::fs::create_dir_all(&config.data_dir)?;
    let _lock = crate::lock_data_dir(&config.data_dir).context("stop the server before restoring")?;
    let live = config.data_dir.join("copains.db");
    let staged = config.data_dir.join("copains.db.restoring");
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(src, &staged).with_context(|| format!("cannot copy {}", src.display()))?;
    let store = Store::connect(&format!("sqlite://{}", staged.display()), 1).await.context("the backup does not open")?;
    check_integrity(&store).await?;
    let held = store.contents().await?;
    store.close().await;
    if live.exists() {
        // Kept whole, with its write-ahead log (what an unclean stop left only there).
        for suffix in ["", "-wal", "-shm"] {
            let from = config.data_dir.join(format!("copains.db{suffix}"));
            if from.exists() {
                let to = config.data_dir.join(format!("copains.db.before-restore{suffix}"));
                std::fs::rename(&from, &to).context("cannot set the current database aside")?;
            }
        }
    }
    std::fs::rename(&staged, &live).context("cannot put the restored database in place")?;
    Ok(held)
}

/// What `copains admin prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Sessions past their expiry (with their devices).
    pub sessions: usize,
    /// Envelopes past `envelope_ttl_secs`.
    pub envelopes: u64,
    /// Link requests past their expiry.
    pub link_requests: u64,
    /// Audit entries past `audit_retention_days`.
    pub audit_entries: u64,
    /// Sealed addresses past `ip_retention_secs`.
    pub addresses: u64,
    /// Bans that ended.
    pub bans: u64,
    /// Guest accounts whose time was up, removed with their data.
    pub guests: usize,
}

/// The housekeeping job's purge, once, from the command line (a running server does the same
/// every minute; this is for a stopped one, or at once).
pub async fn prune(config: &Config) -> anyhow::Result<Pruned> {
    let store = open(config).await?;
    let now = now_ms();
    let sessions = store.purge_expired(now).await?.len();
    let envelopes = store.purge_envelopes_before(now.saturating_sub(config.api.limits.envelope_ttl_ms())).await?;
    let link_requests = store.purge_link_requests(now).await?;
    let security = &config.api.security;
    let (audit_entries, addresses, bans) = store
        .purge_security(now.saturating_sub(security.audit_retention_ms()), now.saturating_sub(security.ip_retention_ms()), now)
        .await?;
    // Guests whose time is up, as the running server's job removes them (without events: a
    // server running meanwhile tells nobody, and its clients catch up at their next start).
    let mut guests = 0;
    for user in store.expired_guests(now).await? {
        // One that owns a taken-down server stays, signed out, until that is judged.
        match store
            .delete_account(None, PlatformRole::Admin, user, copains_client_core::admin::PlatformAction::GuestExpired, now)
            .await
        {
            Ok(removed) => guests += usize::from(removed.is_some()),
            Err(StoreError::OwnsTakenDownServer) => {
                store.end_all_sessions(user).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    store.close().await;
    Ok(Pruned { sessions, envelopes, link_requests, audit_entries, addresses, bans, guests })
}
