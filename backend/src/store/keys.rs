//! Device keys: identity, signed prekeys, one-time prekeys, and the bundles made of them.

use copains_client_core::keys::{PreKeyCount, SignedPreKey};
use copains_client_core::{DeviceId, UserId};
use sqlx::Row;

use super::{u32_of, DbKind, Result, Store, StoreError};

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

fn spk(id: i64, key: Vec<u8>, sig: Vec<u8>) -> Result<SignedPreKey> {
    Ok(SignedPreKey { key_id: u32_of(id)?, public_key: key.into(), signature: sig.into() })
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
            // A user without a signed device list receives on every device with keys: this
            // one now reads the user's channels, which get a new view.
            let listed =
                sqlx::query("SELECT 1 FROM account_identities WHERE user_id = $1").bind(user.0).fetch_optional(&mut *tx).await?;
            if listed.is_none() {
                super::channel_messages::bump_views_of_user(&mut tx, self.kind(), user).await?;
            }
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

    /// The bundles of every device of `user` that receives (has keys and, once the user has a
    /// signed device list, is linked: see `receives!`), each consuming one one-time EC and
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
        let mut tx = self.pool().begin().await?;
        let bundles = self.take_in(&mut tx, user, only, except).await?;
        tx.commit().await?;
        Ok(bundles)
    }

    /// The bundles of many devices at once (each `(user, device)` as [`Self::take_bundles`]
    /// with `only`), in one transaction: what a device claims before handing its sender key to
    /// a channel's devices. Devices that do not receive are left out.
    pub async fn take_device_bundles(&self, devices: &[(UserId, DeviceId)]) -> Result<Vec<(UserId, StoredBundle)>> {
        let mut wanted: Vec<(UserId, DeviceId)> = devices.to_vec();
        // Users in id order: two claims lock the same users' rows in the same order.
        wanted.sort();
        wanted.dedup();
        let mut tx = self.pool().begin().await?;
        let mut out = Vec::with_capacity(wanted.len());
        for (user, device) in wanted {
            for b in self.take_in(&mut tx, user, Some(device), None).await? {
                out.push((user, b));
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn take_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
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
        // Write first: on SQLite a transaction that reads and then writes fails with "database
        // is locked" when another writer got in between; a first write takes the lock at once.
        // PostgreSQL locks the user's device rows in device order instead: an UPDATE would lock
        // them in heap order, which every UPDATE changes, and two fetches would deadlock.
        let first = if self.kind() == DbKind::Postgres {
            "SELECT device_id FROM device_keys WHERE user_id = $1 ORDER BY device_id FOR NO KEY UPDATE"
        } else {
            "UPDATE device_keys SET updated_at = updated_at WHERE user_id = $1"
        };
        sqlx::query(first).bind(user.0).execute(&mut **tx).await?;
        let rows = sqlx::query(concat!(
            "SELECT k.device_id, k.registration_id, k.identity_key, k.signed_id, k.signed_key, k.signed_sig, \
             k.kyber_id, k.kyber_key, k.kyber_sig \
             FROM device_keys k WHERE k.user_id = $1 AND ($2 = 0 OR k.device_id = $2) AND k.device_id <> $3 AND ",
            receives!(),
            " ORDER BY k.device_id"
        ))
        .bind(user.0)
        .bind(only.map(|d| i64::from(d.0)).unwrap_or(0))
        // Device ids start at 1: 0 excludes nothing.
        .bind(except.map(|d| i64::from(d.0)).unwrap_or(0))
        .fetch_all(&mut **tx)
        .await?;
        let mut bundles = Vec::with_capacity(rows.len());
        for row in rows {
            let device_raw: i64 = row.try_get(0)?;
            let device = DeviceId(u32_of(device_raw)?);
            let ec = sqlx::query(&take).bind(user.0).bind(device_raw).bind(EC).fetch_optional(&mut **tx).await?;
            let pq = sqlx::query(&take).bind(user.0).bind(device_raw).bind(KYBER).fetch_optional(&mut **tx).await?;
            let pre_key = match ec {
                Some(r) => Some((u32_of(r.try_get(0)?)?, r.try_get::<Vec<u8>, _>(1)?)),
                None => None,
            };
            let pq = match pq {
                Some(r) => spk(r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<Vec<u8>>, _>(2)?.unwrap_or_default())?,
                None => spk(row.try_get(6)?, row.try_get(7)?, row.try_get(8)?)?,
            };
            let remaining = counts_in(tx, user, device).await?;
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
        Ok(bundles)
    }
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
