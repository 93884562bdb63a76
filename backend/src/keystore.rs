//! Storage of device keys (identity, signed prekeys, one-time prekeys) and of the per-device
//! envelope queue.

use std::collections::BTreeMap;

use copains_client_core::keys::{PreKeyCount, SignedPreKey};
use copains_client_core::messages::Envelope;
use copains_client_core::{DeviceId, EnvelopeId, SessionId, UserId};
use sqlx::Row;

use crate::store::{DbKind, Result, Store, StoreError};

/// One-time prekey kinds as stored.
const EC: i64 = 0;
const KYBER: i64 = 1;

/// Keys of a device as checked by the API (all public keys parsed, signatures verified).
#[derive(Debug, Clone, Default)]
pub struct VerifiedUpload {
    /// Identity key (serialized), if given.
    pub identity_key: Option<Vec<u8>>,
    /// Registration id, if given.
    pub registration_id: Option<u32>,
    /// (id, public key, signature).
    pub signed: Option<(u32, Vec<u8>, Vec<u8>)>,
    /// (id, public key, signature).
    pub kyber_last_resort: Option<(u32, Vec<u8>, Vec<u8>)>,
    /// (id, public key).
    pub pre_keys: Vec<(u32, Vec<u8>)>,
    /// (id, public key, signature).
    pub pq_pre_keys: Vec<(u32, Vec<u8>, Vec<u8>)>,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// First upload without the full set.
    #[error("the first upload of a device must carry identity_key, registration_id, signed_pre_key and pq_last_resort_pre_key")]
    Incomplete,
    /// A different identity key than the one on record.
    #[error("this device already has another identity key; a new identity needs a new device")]
    IdentityChanged,
    /// A one-time prekey id already on the server.
    #[error("one-time prekey id already uploaded")]
    DuplicateId,
    /// The device would hold too many one-time prekeys.
    #[error("a device may hold at most {0} one-time prekeys of each kind")]
    TooMany(u32),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for UploadError {
    fn from(e: sqlx::Error) -> Self {
        UploadError::Store(StoreError::Database(e))
    }
}

/// A device's bundle as stored, with the one-time prekeys taken for this fetch.
#[derive(Debug, Clone)]
pub struct StoredBundle {
    /// Device.
    pub device_id: DeviceId,
    /// Registration id.
    pub registration_id: u32,
    /// Identity key.
    pub identity_key: Vec<u8>,
    /// Signed EC prekey.
    pub signed: SignedPreKey,
    /// One-time EC prekey taken, if any.
    pub pre_key: Option<(u32, Vec<u8>)>,
    /// One-time Kyber prekey taken, or the last-resort one.
    pub pq: SignedPreKey,
    /// What the device has left after this fetch.
    pub remaining: PreKeyCount,
}

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

fn spk(id: i64, key: Vec<u8>, sig: Vec<u8>) -> Result<SignedPreKey> {
    Ok(SignedPreKey { key_id: u32_of(id)?, public_key: key.into(), signature: sig.into() })
}

fn u32_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

impl Store {
    /// Stores a device's keys; all or nothing.
    pub async fn upload_keys(
        &self,
        user: UserId,
        device: DeviceId,
        keys: &VerifiedUpload,
        max_one_time: u32,
        now: i64,
    ) -> Result<(), UploadError> {
        let mut tx = self.pool().begin().await?;
        // Write first (SQLite takes the write lock at once); tells whether keys exist.
        let touched = sqlx::query("UPDATE device_keys SET updated_at = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if touched == 0 {
            let (Some(identity), Some(reg), Some((sid, skey, ssig)), Some((kid, kkey, ksig))) =
                (&keys.identity_key, keys.registration_id, &keys.signed, &keys.kyber_last_resort)
            else {
                return Err(UploadError::Incomplete);
            };
            sqlx::query(
                "INSERT INTO device_keys (user_id, device_id, registration_id, identity_key, signed_id, signed_key, \
                 signed_sig, kyber_id, kyber_key, kyber_sig, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(user.0)
            .bind(i64::from(device.0))
            .bind(i64::from(reg))
            .bind(identity.clone())
            .bind(i64::from(*sid))
            .bind(skey.clone())
            .bind(ssig.clone())
            .bind(i64::from(*kid))
            .bind(kkey.clone())
            .bind(ksig.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        } else {
            let row = sqlx::query("SELECT identity_key, registration_id FROM device_keys WHERE user_id = $1 AND device_id = $2")
                .bind(user.0)
                .bind(i64::from(device.0))
                .fetch_one(&mut *tx)
                .await?;
            let stored: Vec<u8> = row.try_get(0)?;
            let stored_reg: i64 = row.try_get(1)?;
            if keys.identity_key.as_ref().is_some_and(|k| *k != stored)
                || keys.registration_id.is_some_and(|r| i64::from(r) != stored_reg)
            {
                return Err(UploadError::IdentityChanged);
            }
            if let Some((id, key, sig)) = &keys.signed {
                sqlx::query("UPDATE device_keys SET signed_id = $3, signed_key = $4, signed_sig = $5 WHERE user_id = $1 AND device_id = $2")
                    .bind(user.0)
                    .bind(i64::from(device.0))
                    .bind(i64::from(*id))
                    .bind(key.clone())
                    .bind(sig.clone())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((id, key, sig)) = &keys.kyber_last_resort {
                sqlx::query(
                    "UPDATE device_keys SET kyber_id = $3, kyber_key = $4, kyber_sig = $5 WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user.0)
                .bind(i64::from(device.0))
                .bind(i64::from(*id))
                .bind(key.clone())
                .bind(sig.clone())
                .execute(&mut *tx)
                .await?;
            }
        }
        let one_time = keys
            .pre_keys
            .iter()
            .map(|(id, key)| (EC, *id, key, None))
            .chain(keys.pq_pre_keys.iter().map(|(id, key, sig)| (KYBER, *id, key, Some(sig))));
        for (kind, id, key, sig) in one_time {
            let inserted = sqlx::query(
                "INSERT INTO one_time_prekeys (user_id, device_id, kind, key_id, public_key, signature) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.0)
            .bind(i64::from(device.0))
            .bind(kind)
            .bind(i64::from(id))
            .bind(key.clone())
            .bind(sig.cloned())
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(UploadError::DuplicateId),
                other => {
                    other?;
                }
            }
        }
        let counts = counts_in(&mut tx, user, device).await?;
        if counts.pre_keys > max_one_time || counts.pq_pre_keys > max_one_time {
            return Err(UploadError::TooMany(max_one_time));
        }
        tx.commit().await?;
        Ok(())
    }

    /// One-time prekeys a device has left.
    pub async fn prekey_counts(&self, user: UserId, device: DeviceId) -> Result<PreKeyCount> {
        let mut conn = self.pool().acquire().await?;
        counts_in(&mut conn, user, device).await
    }

    /// The identity key a device uploaded, if any.
    pub async fn identity_key_of(&self, user: UserId, device: DeviceId) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT identity_key FROM device_keys WHERE user_id = $1 AND device_id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| r.try_get(0).map_err(StoreError::from)).transpose()
    }

    /// Whether the device has uploaded its keys.
    pub async fn has_keys(&self, user: UserId, device: DeviceId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM device_keys WHERE user_id = $1 AND device_id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// The bundles of every device of `user` that has keys, each consuming one one-time EC and
    /// one one-time Kyber prekey (the Kyber last-resort key stands in when none is left).
    /// Concurrent fetches never receive the same one-time prekey. `only` restricts the fetch to
    /// one device; `except` leaves one out before anything is taken (a device fetching its own
    /// user's bundles must not use up its own one-time prekeys).
    pub async fn take_bundles(
        &self,
        user: UserId,
        only: Option<DeviceId>,
        except: Option<DeviceId>,
    ) -> Result<Vec<StoredBundle>> {
        // PostgreSQL: concurrent fetches skip each other's rows instead of colliding.
        // SQLite serializes writers, so each DELETE sees the previous one's result.
        let lock = if self.kind() == DbKind::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let take = format!(
            "DELETE FROM one_time_prekeys WHERE (user_id, device_id, kind, key_id) IN \
             (SELECT user_id, device_id, kind, key_id FROM one_time_prekeys \
              WHERE user_id = $1 AND device_id = $2 AND kind = $3 ORDER BY key_id LIMIT 1{lock}) \
             RETURNING key_id, public_key, signature"
        );
        let mut tx = self.pool().begin().await?;
        // Write first: on SQLite a transaction that reads and then writes fails with "database
        // is locked" when another writer got in between; a first write takes the lock at once.
        sqlx::query("UPDATE device_keys SET updated_at = updated_at WHERE user_id = $1").bind(user.0).execute(&mut *tx).await?;
        let rows = sqlx::query(
            "SELECT device_id, registration_id, identity_key, signed_id, signed_key, signed_sig, kyber_id, kyber_key, kyber_sig \
             FROM device_keys WHERE user_id = $1 AND ($2 = 0 OR device_id = $2) AND device_id <> $3 ORDER BY device_id",
        )
        .bind(user.0)
        .bind(only.map(|d| i64::from(d.0)).unwrap_or(0))
        // Device ids start at 1: 0 excludes nothing.
        .bind(except.map(|d| i64::from(d.0)).unwrap_or(0))
        .fetch_all(&mut *tx)
        .await?;
        let mut bundles = Vec::with_capacity(rows.len());
        for row in rows {
            let device_raw: i64 = row.try_get(0)?;
            let device = DeviceId(u32_of(device_raw)?);
            let ec = sqlx::query(&take).bind(user.0).bind(device_raw).bind(EC).fetch_optional(&mut *tx).await?;
            let pq = sqlx::query(&take).bind(user.0).bind(device_raw).bind(KYBER).fetch_optional(&mut *tx).await?;
            let pre_key = match ec {
                Some(r) => Some((u32_of(r.try_get(0)?)?, r.try_get::<Vec<u8>, _>(1)?)),
                None => None,
            };
            let pq = match pq {
                Some(r) => spk(r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<Vec<u8>>, _>(2)?.unwrap_or_default())?,
                None => spk(row.try_get(6)?, row.try_get(7)?, row.try_get(8)?)?,
            };
            let remaining = counts_in(&mut tx, user, device).await?;
            bundles.push(StoredBundle {
                device_id: device,
                registration_id: u32_of(row.try_get(1)?)?,
                identity_key: row.try_get(2)?,
                signed: spk(row.try_get(3)?, row.try_get(4)?, row.try_get(5)?)?,
                pre_key,
                pq,
                remaining,
            });
        }
        tx.commit().await?;
        Ok(bundles)
    }

    /// Devices able to receive of two users (the recipient and the sender of a send), in one
    /// query.
    pub async fn receiving_devices_of(&self, a: UserId, b: UserId) -> Result<(Vec<(DeviceId, u32)>, Vec<(DeviceId, u32)>)> {
        let rows = sqlx::query(
            "SELECT user_id, device_id, registration_id FROM device_keys WHERE user_id IN ($1, $2) ORDER BY user_id, device_id",
        )
        .bind(a.0)
        .bind(b.0)
        .fetch_all(self.pool())
        .await?;
        let (mut of_a, mut of_b) = (Vec::new(), Vec::new());
        for r in &rows {
            let user: i64 = r.try_get(0)?;
            let device = (DeviceId(u32_of(r.try_get(1)?)?), u32_of(r.try_get(2)?)?);
            if user == a.0 {
                of_a.push(device);
            }
            if user == b.0 {
                of_b.push(device);
            }
        }
        Ok((of_a, of_b))
    }

    /// Queues envelopes, all or nothing: if a recipient device vanished meanwhile, or its
    /// queue would go over `limits`, nothing of the send is stored.
    pub async fn enqueue(
        &self,
        sender: UserId,
        sender_device: DeviceId,
        envelopes: &[NewEnvelope],
        limits: QueueLimits,
        now: i64,
    ) -> Result<(), EnqueueError> {
        // What the send adds to each queue. Sorted, so that concurrent sends lock the queue
        // rows in the same order (PostgreSQL would otherwise be free to deadlock).
        let mut added: BTreeMap<(UserId, DeviceId), (u64, u64)> = BTreeMap::new();
        for e in envelopes {
            let entry = added.entry((e.user, e.device)).or_default();
            entry.0 += 1;
            entry.1 += e.content.len() as u64;
        }
        let mut full = Vec::new();
        let mut tx = self.pool().begin().await?;
        for (&(user, device), &(count, bytes)) in &added {
            if count > limits.max_envelopes || bytes > limits.max_bytes {
                full.push(QueueRef { user, device });
                continue;
            }
            // Check and count in one statement: the row is locked (PostgreSQL) or the
            // database is (SQLite) until commit, so concurrent sends cannot both pass the cap.
            // This also takes SQLite's write lock first (see store.rs).
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
            .execute(&mut *tx)
            .await;
            match counted {
                Ok(done) if done.rows_affected() == 0 => full.push(QueueRef { user, device }),
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(EnqueueError::DeviceGone),
                Err(e) => return Err(e.into()),
            }
        }
        if !full.is_empty() {
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
            .bind(e.content.clone())
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(EnqueueError::DeviceGone),
                other => {
                    other?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
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

    /// Removes a device with its keys, queue and login session. `None` if there was no such
    /// device; otherwise the login session that ended with it.
    pub async fn remove_device(&self, user: UserId, device: DeviceId) -> Result<Option<Option<SessionId>>> {
        let mut tx = self.pool().begin().await?;
        let session = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND device_id = $2 RETURNING id")
            .bind(user.0)
            .bind(i64::from(device.0))
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>(0).map(SessionId))
            .transpose()?;
        let deleted = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((deleted.rows_affected() > 0).then_some(session))
    }
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

async fn counts_in(conn: &mut sqlx::AnyConnection, user: UserId, device: DeviceId) -> Result<PreKeyCount> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = 0), \
                (SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND kind = 1)",
    )
    .bind(user.0)
    .bind(i64::from(device.0))
    .fetch_one(&mut *conn)
    .await?;
    Ok(PreKeyCount { pre_keys: u32_of(row.try_get(0)?)?, pq_pre_keys: u32_of(row.try_get(1)?)? })
}
