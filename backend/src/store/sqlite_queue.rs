//! The SQLite writer of the envelope queue: one thread, one connection, group commit.
//!
//! Every delivered DM is an insert when it is sent and a delete when it is acknowledged, each
//! with its queue's counters. Through the pool, each of those is a transaction of four
//! statements, each statement a round trip to one of sqlx's SQLite worker threads, and the
//! pooled connections take turns at SQLite's single write lock. Here one thread owns one
//! connection with its statements prepared once, takes every queue write that is waiting,
//! runs them in one transaction (each in a savepoint of its own, so that one send refused for
//! a full queue leaves the others), commits once, and only then answers each caller. Under
//! load, hundreds of sends and acknowledgements share a commit and a thread wake-up.
//!
//! Channel message writes (a message, an edit or a reaction, checked against the channel's
//! view, with the key distributions queued beside it) go the same way: each is one such
//! savepoint, and under load hundreds share a commit instead of queueing for the write lock
//! (whose busy handler sleeps, which made the slowest writes wait over 100 ms).
//!
//! PostgreSQL does not need this: it has row locks and many writers, and the same writes run
//! through the pool there (see `envelopes.rs` and `channel_messages.rs`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use copains_client_core::{DeviceId, EnvelopeId, UserId};
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use super::channel_messages::{ChannelWrite, ChannelWriteError, ChannelWriteKind};
use super::envelopes::{added_per_queue, split_devices, EnqueueError, NewEnvelope, QueueLimits, QueueRef, Send};
use super::{Result, StoreError};

/// `envelopes::RECEIVING_DEVICES` with SQLite's own parameter marks.
const RECEIVING_DEVICES_SQLITE: &str = concat!(
    "SELECT k.user_id, k.device_id, k.registration_id FROM device_keys k WHERE k.user_id IN (?1, ?2) AND ",
    receives!(),
    " ORDER BY k.user_id, k.device_id"
);

/// Writes waiting beyond this are left for the next transaction (bounds one commit's size).
const BATCH_MAX: usize = 512;

enum Job {
    Send { send: Send, limits: QueueLimits, now: i64, reply: oneshot::Sender<Result<Send, EnqueueError>> },
    Ack { user: UserId, device: DeviceId, ids: Vec<EnvelopeId>, reply: oneshot::Sender<Result<u64>> },
    Channel { write: Box<ChannelWrite>, limits: QueueLimits, reply: oneshot::Sender<Result<ChannelWrite, ChannelWriteError>> },
}

/// A handle to the writer thread; the thread stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    jobs: mpsc::Sender<Job>,
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e.to_string())
}

fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// The file of a `sqlite:` URL (`sqlite://path?mode=rwc`, `sqlite:path`).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

impl QueueWriter {
    /// Opens its own connection to the database file (already migrated) and starts the thread.
    pub fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(sqlite_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(sqlite_error)?;
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-queue-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Sqlite(format!("cannot start the queue writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// See [`crate::Store::send`].
    pub async fn send(&self, send: Send, limits: QueueLimits, now: i64) -> Result<Send, EnqueueError> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Send { send, limits, now, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// See [`crate::Store::write_channel`].
    pub async fn channel(&self, write: ChannelWrite, limits: QueueLimits) -> Result<ChannelWrite, ChannelWriteError> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Channel { write: Box::new(write), limits, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// See [`crate::Store::ack_many`].
    pub async fn ack(&self, user: UserId, device: DeviceId, ids: Vec<EnvelopeId>) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Ack { user, device, ids, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Sqlite("the queue writer stopped".into())
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, batch);
    }
}

/// What a job will answer once the batch is committed.
enum Outcome {
    Send(oneshot::Sender<Result<Send, EnqueueError>>, Result<Send, EnqueueError>),
    Ack(oneshot::Sender<Result<u64>>, Result<u64>),
    Channel(oneshot::Sender<Result<ChannelWrite, ChannelWriteError>>, Result<ChannelWrite, ChannelWriteError>),
}

fn commit_batch(conn: &mut Connection, batch: Vec<Job>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let committed = (|| -> rusqlite::Result<()> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in batch {
            let mut sp = tx.savepoint()?;
            match job {
                Job::Send { send, limits, now, reply } => {
                    let result = enqueue(&sp, &send, limits, now).map(|()| send);
                    if result.is_ok() {
                        sp.commit()?;
                    } else {
                        sp.rollback()?;
                    }
                    outcomes.push(Outcome::Send(reply, result));
                }
                Job::Ack { user, device, ids, reply } => {
                    let result = ack(&sp, user, device, &ids);
                    if result.is_ok() {
                        sp.commit()?;
                    } else {
                        sp.rollback()?;
                    }
                    outcomes.push(Outcome::Ack(reply, result));
                }
                Job::Channel { write, limits, reply } => {
                    let result = channel_write(&sp, &write, limits).map(|()| *write);
                    if result.is_ok() {
                        sp.commit()?;
                    } else {
                        sp.rollback()?;
                    }
                    outcomes.push(Outcome::Channel(reply, result));
                }
            }
        }
        tx.commit()
    })();
    // Nobody is told of a write before it is committed.
    for outcome in outcomes {
        match (outcome, &committed) {
            (Outcome::Send(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Outcome::Ack(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Outcome::Channel(reply, result), Ok(())) => {
                let _ = reply.send(result);
            }
            (Outcome::Send(reply, _), Err(e)) => {
                let _ = reply.send(Err(EnqueueError::Store(StoreError::Sqlite(e.to_string()))));
            }
            (Outcome::Ack(reply, _), Err(e)) => {
                let _ = reply.send(Err(StoreError::Sqlite(e.to_string())));
            }
            (Outcome::Channel(reply, _), Err(e)) => {
                let _ = reply.send(Err(ChannelWriteError::Store(StoreError::Sqlite(e.to_string()))));
            }
        }
    }
    if let Err(e) = committed {
        tracing::error!(error = %e, "queue writer: a batch failed to commit");
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn enqueue(conn: &Connection, send: &Send, limits: QueueLimits, now: i64) -> Result<(), EnqueueError> {
    // The device check reads inside the write transaction: nothing can change in between.
    let mut devices = conn.prepare_cached(RECEIVING_DEVICES_SQLITE).map_err(sqlite_error)?;
    let rows = devices
        .query_map(params![send.recipient.0, send.sender.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(i64, i64, i64)>>>())
        .map_err(sqlite_error)?;
    let (recipient_devices, own_devices) = split_devices(rows, send.recipient, send.sender)?;
    send.check(recipient_devices, own_devices)?;
    store_envelopes(conn, send.sender, send.sender_device, send.envelopes(), limits, now)
}

/// Counts `envelopes` against their queues' caps and inserts them (see
/// `envelopes::queue_envelopes`).
fn store_envelopes<'a>(
    conn: &Connection,
    sender: UserId,
    sender_device: DeviceId,
    envelopes: impl IntoIterator<Item = &'a NewEnvelope>,
    limits: QueueLimits,
    now: i64,
) -> Result<(), EnqueueError> {
    let envelopes: Vec<&NewEnvelope> = envelopes.into_iter().collect();
    let (added, mut full) = added_per_queue(envelopes.iter().copied(), limits);
    let mut count_stmt = conn
        .prepare_cached(
            "INSERT INTO envelope_queues (user_id, device_id, envelopes, bytes) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (user_id, device_id) DO UPDATE \
             SET envelopes = envelope_queues.envelopes + excluded.envelopes, bytes = envelope_queues.bytes + excluded.bytes \
             WHERE envelope_queues.envelopes + excluded.envelopes <= ?5 AND envelope_queues.bytes + excluded.bytes <= ?6",
        )
        .map_err(sqlite_error)?;
    for (&QueueRef { user, device }, &(count, bytes)) in &added {
        if full.contains(&QueueRef { user, device }) {
            continue;
        }
        let counted = count_stmt.execute(params![
            user.0,
            i64::from(device.0),
            i64_of(count),
            i64_of(bytes),
            i64_of(limits.max_envelopes),
            i64_of(limits.max_bytes)
        ]);
        match counted {
            Ok(0) => full.push(QueueRef { user, device }),
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => return Err(EnqueueError::DeviceGone),
            Err(e) => return Err(sqlite_error(e).into()),
        }
    }
    if !full.is_empty() {
        full.sort();
        return Err(EnqueueError::QueueFull(full));
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO envelopes (id, user_id, device_id, sender_user_id, sender_device_id, kind, content, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(sqlite_error)?;
    for e in envelopes {
        let inserted = insert.execute(params![
            e.id.0,
            e.user.0,
            i64::from(e.device.0),
            sender.0,
            i64::from(sender_device.0),
            i64::from(e.kind),
            e.content,
            now
        ]);
        match inserted {
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => return Err(EnqueueError::DeviceGone),
            Err(e) => return Err(sqlite_error(e).into()),
        }
    }
    Ok(())
}

fn channel_error(e: rusqlite::Error) -> ChannelWriteError {
    ChannelWriteError::Store(sqlite_error(e))
}

/// See [`crate::Store::write_channel`]: the same statements, on the writer's connection.
fn channel_write(conn: &Connection, w: &ChannelWrite, limits: QueueLimits) -> Result<(), ChannelWriteError> {
    let checked = conn
        .prepare_cached("SELECT 1 FROM channels WHERE id = ?1 AND view = ?2")
        .and_then(|mut s| s.exists(params![w.channel.0, w.view]))
        .map_err(channel_error)?;
    if !checked {
        let exists = conn
            .prepare_cached("SELECT 1 FROM channels WHERE id = ?1")
            .and_then(|mut s| s.exists(params![w.channel.0]))
            .map_err(channel_error)?;
        return Err(if exists { ChannelWriteError::ViewStale } else { ChannelWriteError::ChannelGone });
    }
    match &w.kind {
        ChannelWriteKind::Keys => {}
        ChannelWriteKind::Create(m) => {
            if let Some(thread) = m.thread_id {
                let counted = conn
                    .prepare_cached(
                        "UPDATE channel_messages SET thread_count = thread_count + 1 \
                         WHERE id = ?1 AND channel_id = ?2 AND thread_id IS NULL",
                    )
                    .and_then(|mut s| s.execute(params![thread.0, w.channel.0]))
                    .map_err(channel_error)?;
                if counted == 0 {
                    return Err(ChannelWriteError::MessageGone);
                }
            }
            conn.prepare_cached(
                "INSERT INTO channel_messages (id, channel_id, author_id, author_device, ciphertext, created_at, thread_id, mentions) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    m.id.0,
                    w.channel.0,
                    m.author.0,
                    i64::from(m.author_device.0),
                    m.ciphertext,
                    w.now,
                    m.thread_id.map(|t| t.0),
                    super::channel_messages::mentions_json(&m.mentions)
                ])
            })
            .map_err(channel_error)?;
            for user in &m.mentioned {
                conn.prepare_cached("INSERT INTO message_mentions (user_id, channel_id, message_id) VALUES (?1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![user.0, w.channel.0, m.id.0]))
                    .map_err(channel_error)?;
            }
        }
        ChannelWriteKind::Edit { id, author, device, ciphertext, mentions, mentioned } => {
            let declared = super::channel_messages::mentions_json(mentions);
            let edited = conn
                .prepare_cached(
                    "UPDATE channel_messages SET ciphertext = ?4, author_device = ?5, edited_at = ?6, mentions = ?7 \
                     WHERE id = ?1 AND channel_id = ?2 AND author_id = ?3",
                )
                .and_then(|mut s| {
                    s.execute(params![id.0, w.channel.0, author.0, ciphertext, i64::from(device.0), w.now, declared])
                })
                .map_err(channel_error)?;
            if edited == 0 {
                return Err(ChannelWriteError::MessageGone);
            }
            conn.prepare_cached("DELETE FROM message_mentions WHERE message_id = ?1")
                .and_then(|mut s| s.execute(params![id.0]))
                .map_err(channel_error)?;
            for user in mentioned {
                conn.prepare_cached("INSERT INTO message_mentions (user_id, channel_id, message_id) VALUES (?1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![user.0, w.channel.0, id.0]))
                    .map_err(channel_error)?;
            }
        }
        ChannelWriteKind::React { id, message, user, device, ciphertext } => {
            let exists = conn
                .prepare_cached("SELECT 1 FROM channel_messages WHERE id = ?1 AND channel_id = ?2")
                .and_then(|mut s| s.exists(params![message.0, w.channel.0]))
                .map_err(channel_error)?;
            if !exists {
                return Err(ChannelWriteError::MessageGone);
            }
            let count: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM reactions WHERE message_id = ?1")
                .and_then(|mut s| s.query_row(params![message.0], |r| r.get(0)))
                .map_err(channel_error)?;
            if count >= copains_client_core::channel_messages::REACTIONS_PER_MESSAGE_MAX as i64 {
                return Err(ChannelWriteError::TooManyReactions);
            }
            conn.prepare_cached(
                "INSERT INTO reactions (id, message_id, channel_id, user_id, device_id, ciphertext, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| s.execute(params![id.0, message.0, w.channel.0, user.0, i64::from(device.0), ciphertext, w.now]))
            .map_err(channel_error)?;
        }
    }
    if !w.distributions.is_empty() {
        store_envelopes(conn, w.sender, w.sender_device, &w.distributions, limits, w.now)?;
    }
    Ok(())
}

fn ack(conn: &Connection, user: UserId, device: DeviceId, ids: &[EnvelopeId]) -> Result<u64> {
    let mut delete = conn
        .prepare_cached("DELETE FROM envelopes WHERE user_id = ?1 AND device_id = ?2 AND id = ?3 RETURNING LENGTH(content)")
        .map_err(sqlite_error)?;
    let (mut count, mut bytes) = (0i64, 0i64);
    for id in ids {
        let mut rows = delete.query(params![user.0, i64::from(device.0), id.0]).map_err(sqlite_error)?;
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            count += 1;
            bytes += row.get::<_, i64>(0).map_err(sqlite_error)?;
        }
    }
    if count > 0 {
        conn.prepare_cached(
            "UPDATE envelope_queues SET envelopes = envelopes - ?3, bytes = bytes - ?4 WHERE user_id = ?1 AND device_id = ?2",
        )
        .and_then(|mut s| s.execute(params![user.0, i64::from(device.0), count, bytes]))
        .map_err(sqlite_error)?;
    }
    Ok(u64::try_from(count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite://./data/copains.db?mode=rwc"), Some(PathBuf::from("./data/copains.db")));
        assert_eq!(sqlite_path("sqlite:/tmp/x.db"), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
