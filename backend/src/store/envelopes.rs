//! The per-device envelope queue: store and forward of encrypted envelopes, with caps per
//! device and an expiry. On SQLite its writes go through [`super::sqlite_queue`].

use std::collections::BTreeMap;

use copains_client_core::messages::{kind, DeviceMismatch, Envelope, SendMismatch};
use copains_client_core::{DeviceId, EnvelopeId, UserId};
use sqlx::Row;

use super::{u32_of, Result, Store, StoreError};

/// A new envelope for one device.
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    /// Id.
    pub id: EnvelopeId,
    /// Recipient user.
    pub user: UserId,
    /// Recipient device.
    pub device: DeviceId,
    /// Kind.
    pub kind: u8,
    /// Ciphertext.
    pub content: Vec<u8>,
    /// The registration id the sender encrypted for (checked against the device's).
    pub registration_id: u32,
}

/// One send: an envelope for each device of the recipient and for each other device of the
/// sender. It is checked against the devices that exist and queued in one transaction, so no
/// device is skipped by a send that raced a device change.
#[derive(Debug, Clone)]
pub struct Send {
    /// Who sends.
    pub sender: UserId,
    /// From which device.
    pub sender_device: DeviceId,
    /// To whom.
    pub recipient: UserId,
    /// Some devices only (a retry request, a re-send): missing devices are not refused.
    pub partial: bool,
    /// For the recipient's devices (at most one per device).
    pub messages: Vec<NewEnvelope>,
    /// For the sender's other devices (at most one per device).
    pub sync_messages: Vec<NewEnvelope>,
}

impl Send {
    /// Every envelope of the send.
    pub fn envelopes(&self) -> impl Iterator<Item = &NewEnvelope> {
        self.messages.iter().chain(&self.sync_messages)
    }

    /// What the send adds to each device queue: (envelopes, bytes), sorted by queue (so that
    /// concurrent sends lock queue rows in one order), and the queues that one send alone
    /// would take over `limits`.
    pub fn added_per_queue(&self, limits: QueueLimits) -> (BTreeMap<QueueRef, (u64, u64)>, Vec<QueueRef>) {
        added_per_queue(self.envelopes(), limits)
    }

    /// Checks the send against the devices that can receive, of the recipient and of the
    /// sender: missing, extra and stale devices refuse it (as Signal-Server does).
    pub fn check(
        &self,
        mut recipient_devices: Vec<(DeviceId, u32)>,
        mut own_devices: Vec<(DeviceId, u32)>,
    ) -> Result<(), EnqueueError> {
        if self.messages.iter().any(|e| e.user != self.recipient) || self.sync_messages.iter().any(|e| e.user != self.sender) {
            return Err(EnqueueError::Misaddressed);
        }
        if recipient_devices.is_empty() {
            return Err(EnqueueError::NoDevices);
        }
        own_devices.retain(|(d, _)| *d != self.sender_device);
        if self.recipient == self.sender {
            recipient_devices.retain(|(d, _)| *d != self.sender_device);
        }
        let mut mismatch = SendMismatch {
            recipient: compare(&recipient_devices, &self.messages),
            own: compare(&own_devices, &self.sync_messages),
        };
        if self.partial {
            mismatch.recipient.missing_devices.clear();
            mismatch.own.missing_devices.clear();
        }
        if mismatch.recipient.is_empty() && mismatch.own.is_empty() {
            Ok(())
        } else {
            Err(EnqueueError::Mismatch(Box::new(mismatch)))
        }
    }
}

/// What `envelopes` add to each device queue: (envelopes, bytes), sorted by queue (so that
/// concurrent writers lock queue rows in one order), and the queues that they alone would take
/// over `limits`.
pub fn added_per_queue<'a>(
    envelopes: impl IntoIterator<Item = &'a NewEnvelope>,
    limits: QueueLimits,
) -> (BTreeMap<QueueRef, (u64, u64)>, Vec<QueueRef>) {
    let mut added: BTreeMap<QueueRef, (u64, u64)> = BTreeMap::new();
    for e in envelopes {
        let entry = added.entry(QueueRef { user: e.user, device: e.device }).or_default();
        entry.0 += 1;
        entry.1 += e.content.len() as u64;
    }
    let over = added
        .iter()
        .filter(|(_, (count, bytes))| *count > limits.max_envelopes || *bytes > limits.max_bytes)
        .map(|(q, _)| *q)
        .collect();
    (added, over)
}

/// Compares the envelopes of a send with the devices that exist.
fn compare(devices: &[(DeviceId, u32)], envelopes: &[NewEnvelope]) -> DeviceMismatch {
    let given: BTreeMap<DeviceId, u32> = envelopes.iter().map(|e| (e.device, e.registration_id)).collect();
    let existing: BTreeMap<DeviceId, u32> = devices.iter().copied().collect();
    DeviceMismatch {
        missing_devices: existing.keys().filter(|d| !given.contains_key(d)).copied().collect(),
        extra_devices: given.keys().filter(|d| !existing.contains_key(d)).copied().collect(),
        stale_devices: envelopes
            .iter()
            // A retry request goes out when the session is broken: its registration id is unknown.
            .filter(|e| e.kind != kind::PLAINTEXT)
            .filter(|e| existing.get(&e.device).is_some_and(|r| *r != e.registration_id))
            .map(|e| e.device)
            .collect(),
    }
}

/// The SQL that reads the devices able to receive of a send's recipient and sender (see
/// `receives!`).
pub(super) const RECEIVING_DEVICES: &str = concat!(
    "SELECT k.user_id, k.device_id, k.registration_id FROM device_keys k WHERE k.user_id IN ($1, $2) AND ",
    receives!(),
    " ORDER BY k.user_id, k.device_id"
);

/// Devices that receive, with their registration ids.
pub(super) type ReceivingDevices = Vec<(DeviceId, u32)>;

/// Splits `(user, device, registration id)` rows into the recipient's and the sender's.
pub(super) fn split_devices(
    rows: impl IntoIterator<Item = (i64, i64, i64)>,
    recipient: UserId,
    sender: UserId,
) -> Result<(ReceivingDevices, ReceivingDevices)> {
    let (mut of_recipient, mut of_sender) = (Vec::new(), Vec::new());
    for (user, device, registration) in rows {
        let device = (DeviceId(u32_of(device)?), u32_of(registration)?);
        if user == recipient.0 {
            of_recipient.push(device);
        }
        if user == sender.0 {
            of_sender.push(device);
        }
    }
    Ok((of_recipient, of_sender))
}

/// The caps of one device's envelope queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Envelopes.
    pub max_envelopes: u64,
    /// Bytes of content.
    pub max_bytes: u64,
}

/// One device's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueRef {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
}

/// Why a send was not queued (nothing of it was).
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The recipient has no device that can receive (none with keys).
    #[error("the recipient has no device that can receive")]
    NoDevices,
    /// An envelope of `messages` is not for the recipient, or one of `sync_messages` not for
    /// the sender (a caller's mistake: the lists are checked against those two users only).
    #[error("an envelope is addressed to another user than its list's")]
    Misaddressed,
    /// The send does not match the devices that exist.
    #[error("the send does not match the devices that exist")]
    Mismatch(Box<SendMismatch>),
    /// A recipient device was removed between the device check and the insert.
    #[error("a recipient device no longer exists")]
    DeviceGone,
    /// These queues would go over their caps.
    #[error("{} device queue(s) full", .0.len())]
    QueueFull(Vec<QueueRef>),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EnqueueError {
    fn from(e: sqlx::Error) -> Self {
        EnqueueError::Store(StoreError::Database(e))
    }
}

impl Store {
    /// Checks a send against the devices that exist ([`Send::check`]) and queues its
    /// envelopes, all in one transaction: if it does not match, if a recipient device vanished
    /// meanwhile, or if a queue would go over `limits`, nothing of it is stored. Gives the send
    /// back (to publish its envelopes).
    pub async fn send(&self, send: Send, limits: QueueLimits, now: i64) -> Result<Send, EnqueueError> {
        if let Some(writer) = self.queue_writer() {
            return writer.send(send, limits, now).await;
        }
        let mut tx = self.pool().begin().await?;
        // (PostgreSQL: SQLite sends go through its writer.) Hold both users' devices, in key
        // order, until commit: a device removal then waits for the send, or the send sees the
        // device gone. Otherwise the removal locks the device, its cascade waits for this
        // send's queue row, and this send's envelope insert (foreign key) waits for the device.
        sqlx::query("SELECT id FROM devices WHERE user_id IN ($1, $2) ORDER BY user_id, id FOR KEY SHARE")
            .bind(send.recipient.0)
            .bind(send.sender.0)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(RECEIVING_DEVICES).bind(send.recipient.0).bind(send.sender.0).fetch_all(&mut *tx).await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let (recipient_devices, own_devices) = split_devices(rows, send.recipient, send.sender)?;
        send.check(recipient_devices, own_devices)?;
        queue_envelopes(&mut tx, send.sender, send.sender_device, send.envelopes(), limits, now).await?;
        tx.commit().await?;
        Ok(send)
    }

    /// How many envelopes and bytes wait in a device's queue.
    pub async fn queue_size(&self, user: UserId, device: DeviceId) -> Result<(u64, u64)> {
        let row = sqlx::query("SELECT envelopes, bytes FROM envelope_queues WHERE user_id = $1 AND device_id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .fetch_optional(self.pool())
            .await?;
        match row {
            None => Ok((0, 0)),
            Some(r) => Ok((u64_of(r.try_get(0)?)?, u64_of(r.try_get(1)?)?)),
        }
    }

    /// Deletes envelopes created at or before `cutoff` (Unix ms), delivered or not, in batches;
    /// returns how many.
    pub async fn purge_envelopes_before(&self, cutoff: i64) -> Result<u64> {
        const BATCH: i64 = 1000;
        let mut total = 0;
        loop {
            let mut tx = self.pool().begin().await?;
            let rows = sqlx::query(
                "DELETE FROM envelopes WHERE id IN \
                 (SELECT id FROM envelopes WHERE created_at <= $1 ORDER BY created_at LIMIT $2) \
                 RETURNING user_id, device_id, LENGTH(content)",
            )
            .bind(cutoff)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let mut removed: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
            for r in &rows {
                let entry = removed.entry((r.try_get(0)?, r.try_get(1)?)).or_default();
                entry.0 += 1;
                entry.1 += r.try_get::<i64, _>(2)?;
            }
            for ((user, device), (count, bytes)) in removed {
                uncount(&mut tx, user, device, count, bytes).await?;
            }
            tx.commit().await?;
            total += rows.len() as u64;
            if (rows.len() as i64) < BATCH {
                return Ok(total);
            }
        }
    }

    /// The oldest envelopes queued for a device (after envelope `after`, when given: the next
    /// page while earlier ones are not yet acknowledged), and whether more wait. A page holds
    /// at most `limit` envelopes and `max_bytes` bytes of content, but always the first
    /// envelope, so that a page is never empty while the queue is not.
    pub async fn queue(
        &self,
        user: UserId,
        device: DeviceId,
        after: Option<EnvelopeId>,
        limit: usize,
        max_bytes: u64,
    ) -> Result<(Vec<Envelope>, bool)> {
        // The byte cap is applied by the database, which sends only the rows that fit: the
        // `limit + 1` rows of a page of large envelopes never all come into this process.
        let rows = sqlx::query(
            "SELECT id, sender_user_id, sender_device_id, kind, content, created_at, total FROM ( \
               SELECT id, sender_user_id, sender_device_id, kind, content, created_at, \
                      SUM(LENGTH(content)) OVER (ORDER BY id) AS upto, \
                      ROW_NUMBER() OVER (ORDER BY id) AS n, \
                      COUNT(*) OVER () AS total \
               FROM (SELECT id, sender_user_id, sender_device_id, kind, content, created_at FROM envelopes \
                     WHERE user_id = $1 AND device_id = $2 AND id > $4 ORDER BY id LIMIT $3) page \
             ) sized WHERE upto <= $5 OR n = 1 ORDER BY id",
        )
        .bind(user.0)
        .bind(i64::from(device.0))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .bind(after.map_or(i64::MIN, |a| a.0))
        .bind(i64_of(max_bytes))
        .fetch_all(self.pool())
        .await?;
        let total: i64 = match rows.first() {
            Some(r) => r.try_get(6)?,
            None => 0,
        };
        let envelopes = rows
            .iter()
            .take(limit)
            .map(|r| {
                Ok(Envelope {
                    id: EnvelopeId(r.try_get(0)?),
                    sender: UserId(r.try_get(1)?),
                    sender_device: DeviceId(u32_of(r.try_get(2)?)?),
                    kind: u8::try_from(r.try_get::<i64, _>(3)?).map_err(|_| StoreError::Corrupt("kind".into()))?,
                    content: r.try_get::<Vec<u8>, _>(4)?.into(),
                    server_timestamp: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let more = total > envelopes.len() as i64;
        Ok((envelopes, more))
    }

    /// Deletes an envelope of this device. False if there is none (already acknowledged, or
    /// someone else's).
    pub async fn ack(&self, user: UserId, device: DeviceId, id: EnvelopeId) -> Result<bool> {
        Ok(self.ack_many(user, device, &[id]).await? > 0)
    }

    /// Acknowledges several envelopes of a device at once; ids not in its queue are ignored.
    /// Returns how many were deleted.
    pub async fn ack_many(&self, user: UserId, device: DeviceId, ids: &[EnvelopeId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        if let Some(writer) = self.queue_writer() {
            return writer.ack(user, device, ids.to_vec()).await;
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "DELETE FROM envelopes WHERE user_id = $1 AND device_id = $2 AND id IN ({}) RETURNING LENGTH(content)",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(user.0).bind(i64::from(device.0));
        for id in ids {
            query = query.bind(id.0);
        }
        let mut tx = self.pool().begin().await?;
        let rows = query.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut bytes = 0i64;
        for r in &rows {
            bytes += r.try_get::<i64, _>(0)?;
        }
        uncount(&mut tx, user.0, i64::from(device.0), rows.len() as i64, bytes).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}

/// Counts `envelopes` (from `sender`'s `sender_device`) against their queues' caps and queues
/// them, in the caller's transaction (PostgreSQL; on SQLite the queue writer does the same).
/// On an error the caller drops the transaction: nothing of it stays.
pub(super) async fn queue_envelopes<'a>(
    conn: &mut sqlx::AnyConnection,
    sender: UserId,
    sender_device: DeviceId,
    envelopes: impl IntoIterator<Item = &'a NewEnvelope>,
    limits: QueueLimits,
    now: i64,
) -> Result<(), EnqueueError> {
    // In queue order: PostgreSQL would otherwise be free to deadlock concurrent sends.
    let envelopes: Vec<&NewEnvelope> = envelopes.into_iter().collect();
    let (added, mut full) = added_per_queue(envelopes.iter().copied(), limits);
    for (&QueueRef { user, device }, &(count, bytes)) in &added {
        if full.contains(&QueueRef { user, device }) {
            continue;
        }
        // Check and count in one statement: the row stays locked until commit, so
        // concurrent sends cannot both pass the cap.
        let counted = sqlx::query(
            "INSERT INTO envelope_queues (user_id, device_id, envelopes, bytes) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO UPDATE \
             SET envelopes = envelope_queues.envelopes + excluded.envelopes, bytes = envelope_queues.bytes + excluded.bytes \
             WHERE envelope_queues.envelopes + excluded.envelopes <= $5 AND envelope_queues.bytes + excluded.bytes <= $6",
        )
        .bind(user.0)
        .bind(i64::from(device.0))
        .bind(i64_of(count))
        .bind(i64_of(bytes))
        .bind(i64_of(limits.max_envelopes))
        .bind(i64_of(limits.max_bytes))
        .execute(&mut *conn)
        .await;
        match counted {
            Ok(done) if done.rows_affected() == 0 => full.push(QueueRef { user, device }),
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(EnqueueError::DeviceGone),
            Err(e) => return Err(e.into()),
        }
    }
    if !full.is_empty() {
        full.sort();
        // Dropping the transaction rolls back the counts already added.
        return Err(EnqueueError::QueueFull(full));
    }
    for e in envelopes {
        let inserted = sqlx::query(
            "INSERT INTO envelopes (id, user_id, device_id, sender_user_id, sender_device_id, kind, content, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.id.0)
        .bind(e.user.0)
        .bind(i64::from(e.device.0))
        .bind(sender.0)
        .bind(i64::from(sender_device.0))
        .bind(i64::from(e.kind))
        .bind(e.content.as_slice())
        .bind(now)
        .execute(&mut *conn)
        .await;
        match inserted {
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(EnqueueError::DeviceGone),
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Takes deleted envelopes off a queue's counts (in the transaction that deleted them).
async fn uncount(conn: &mut sqlx::AnyConnection, user: i64, device: i64, count: i64, bytes: i64) -> Result<()> {
    sqlx::query(
        "UPDATE envelope_queues SET envelopes = envelopes - $3, bytes = bytes - $4 WHERE user_id = $1 AND device_id = $2",
    )
    .bind(user)
    .bind(device)
    .bind(count)
    .bind(bytes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative queue count {v}")))
}
