//! Signed device lists, recovery backups and link requests (see
//! `copains_client_core::devices`).
//!
//! The store keeps each user's latest list exactly as it was signed, and marks in
//! `device_keys.linked` which devices the list names with the identity key they uploaded. Once
//! a user has a list, only those linked devices receive (see `receives!` in the parent module);
//! the others are pending until a linked device, or the recovery key, vouches for them. The
//! API checks the list's signature and encoding before it calls the store; the store checks the
//! rest against what it holds (version, account key, the devices and their keys), in the same
//! transaction as the write.

use std::collections::BTreeMap;

use copains_client_core::devices::{DeviceList, LinkAnswer, LinkRequest, OwnLinkRequest, SignedDeviceList};
use copains_client_core::{DeviceId, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{device_id, DbKind, Result, Store, StoreError};

/// A list as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeviceList {
    /// The account key it verifies under.
    pub account_key: Vec<u8>,
    /// The signed bytes.
    pub list: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// Its version.
    pub version: u64,
}

impl StoredDeviceList {
    /// As served.
    pub fn signed(&self) -> SignedDeviceList {
        SignedDeviceList {
            account_key: self.account_key.clone().into(),
            list: self.list.clone().into(),
            signature: self.signature.clone().into(),
        }
    }
}

/// Why a list was not stored (nothing of it was).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The user has a list under another account key, and replacing it was not allowed.
    #[error("the account key differs from the one of the current device list")]
    AccountKeyDiffers,
    /// The version is not above the stored one.
    #[error("stale device list: version {given} is not above the current version {stored}")]
    Stale {
        /// The new list's.
        given: u64,
        /// The stored list's.
        stored: u64,
    },
    /// The version does not fit the database (above `i64::MAX`).
    #[error("device list version {0} is too large")]
    VersionTooLarge(u64),
    /// A listed device does not exist or has no keys.
    #[error("device {0} is not a device of this user with keys")]
    UnknownDevice(DeviceId),
    /// A listed device has another identity key.
    #[error("device {0} has another identity key than the list says")]
    WrongKey(DeviceId),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PublishError {
    fn from(e: sqlx::Error) -> Self {
        PublishError::Store(StoreError::Database(e))
    }
}

/// Why a link request operation was refused (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The device asking to be linked already is.
    #[error("this device is already linked")]
    AlreadyLinked,
    /// The user has no device list: there is nothing to link to.
    #[error("this account has no device list yet: there is no linked device to link to")]
    NoList,
    /// The device asking to be linked has not uploaded its keys.
    #[error("this device has not uploaded its keys yet")]
    NoKeys,
    /// Only a linked device may do this.
    #[error("only a linked device may do this")]
    NotLinked,
    /// No open request of that device.
    #[error("no open link request of this device")]
    NotFound,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LinkError {
    fn from(e: sqlx::Error) -> Self {
        LinkError::Store(StoreError::Database(e))
    }
}

const LINK_REQUEST_COLUMNS: &str = "r.device_id, d.name, k.identity_key, r.pake, r.created_at, r.expires_at, \
     r.answer_device, r.answer_pake, r.answer_sealed \
     FROM link_requests r \
     JOIN devices d ON d.user_id = r.user_id AND d.id = r.device_id \
     JOIN device_keys k ON k.user_id = r.user_id AND k.device_id = r.device_id";

impl Store {
    /// A user's current device list, if it has one.
    pub async fn device_list(&self, user: UserId) -> Result<Option<StoredDeviceList>> {
        let row = sqlx::query("SELECT account_key, list, signature, version FROM account_identities WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            Ok(StoredDeviceList {
                account_key: r.try_get(0)?,
                list: r.try_get(1)?,
                signature: r.try_get(2)?,
                version: u64_of(r.try_get(3)?)?,
            })
        })
        .transpose()
    }

    /// The device lists of `users` (those that have one), in one query.
    pub async fn device_lists(&self, users: &[UserId]) -> Result<Vec<(UserId, StoredDeviceList)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=users.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT user_id, account_key, list, signature, version FROM account_identities WHERE user_id IN ({}) \
             ORDER BY user_id",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for u in users {
            query = query.bind(u.0);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserId(r.try_get(0)?),
                    StoredDeviceList {
                        account_key: r.try_get(1)?,
                        list: r.try_get(2)?,
                        signature: r.try_get(3)?,
                        version: u64_of(r.try_get(4)?)?,
                    },
                ))
            })
            .collect()
    }

    /// Stores a new version of `user`'s device list (`signed`, whose bytes decode to `list`;
    /// the caller verified the signature and that the list is this user's), and links exactly
    /// the devices it names: all or nothing. Refused when the version is not above the stored
    /// one, when a listed device does not exist with that identity key, and when the account
    /// key differs from the stored one unless `replace_account_key` (the password was given):
    /// a new account key also drops the recovery backup, sealed for the old one.
    pub async fn publish_device_list(
        &self,
        user: UserId,
        signed: &SignedDeviceList,
        list: &DeviceList,
        replace_account_key: bool,
        now: i64,
    ) -> Result<(), PublishError> {
        let version = i64::try_from(list.version).map_err(|_| PublishError::VersionTooLarge(list.version))?;
        let mut tx = self.pool().begin().await?;
        // One publish of a user at a time. SQLite: a first write takes the write lock at once.
        // PostgreSQL: the user's row (a lock foreign keys do not wait for), then the user's
        // device keys in device order, as bundle fetches lock them.
        if self.kind() == DbKind::Postgres {
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE").bind(user.0).execute(&mut *tx).await?;
            sqlx::query("SELECT device_id FROM device_keys WHERE user_id = $1 ORDER BY device_id FOR NO KEY UPDATE")
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE account_identities SET version = version WHERE user_id = $1")
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
        }
        let stored = sqlx::query("SELECT account_key, version FROM account_identities WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        let mut new_key = false;
        if let Some(row) = stored {
            let key: Vec<u8> = row.try_get(0)?;
            let stored_version = u64_of(row.try_get(1)?)?;
            if key != signed.account_key.as_slice() {
                if !replace_account_key {
                    return Err(PublishError::AccountKeyDiffers);
                }
                new_key = true;
            }
            if list.version <= stored_version {
                return Err(PublishError::Stale { given: list.version, stored: stored_version });
            }
        }
        let keys: BTreeMap<i64, Vec<u8>> = sqlx::query("SELECT device_id, identity_key FROM device_keys WHERE user_id = $1")
            .bind(user.0)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for d in &list.devices {
            match keys.get(&i64::from(d.device_id.0)) {
                None => return Err(PublishError::UnknownDevice(d.device_id)),
                Some(key) if *key != d.identity_key => return Err(PublishError::WrongKey(d.device_id)),
                Some(_) => {}
            }
        }
        sqlx::query(
            "INSERT INTO account_identities (user_id, account_key, list, signature, version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET account_key = excluded.account_key, list = excluded.list, \
             signature = excluded.signature, version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(user.0)
        .bind(signed.account_key.as_slice())
        .bind(signed.list.as_slice())
        .bind(signed.signature.as_slice())
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if new_key {
            sqlx::query("DELETE FROM recovery_backups WHERE user_id = $1").bind(user.0).execute(&mut *tx).await?;
        }
        // Device ids are 1..=127 and the list holds each once: the list itself is the SQL.
        let ids: Vec<String> = list.devices.iter().map(|d| d.device_id.0.to_string()).collect();
        let listed = if ids.is_empty() { "0".to_owned() } else { ids.join(", ") };
        sqlx::query(&format!(
            "UPDATE device_keys SET linked = CASE WHEN device_id IN ({listed}) THEN 1 ELSE 0 END WHERE user_id = $1"
        ))
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        // A device the list links needs its link request no more.
        sqlx::query(&format!("DELETE FROM link_requests WHERE user_id = $1 AND device_id IN ({listed})"))
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        // The devices that receive changed: every channel the user reads has a new view.
        super::channel_messages::bump_views_of_user(&mut tx, self.kind(), user).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a device is linked: in its user's current list, with its identity key.
    pub async fn is_linked(&self, user: UserId, device: DeviceId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM device_keys WHERE user_id = $1 AND device_id = $2 AND linked = 1")
            .bind(user.0)
            .bind(i64::from(device.0))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    // ---- recovery backup ---------------------------------------------------------------

    /// A user's recovery backup, if any.
    pub async fn recovery_backup(&self, user: UserId) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT sealed FROM recovery_backups WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| r.try_get(0).map_err(StoreError::from)).transpose()
    }

    /// Stores (or replaces) a user's recovery backup, if `device` is linked. Returns whether
    /// it was stored.
    pub async fn put_recovery_backup(&self, user: UserId, device: DeviceId, sealed: &[u8], now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO recovery_backups (user_id, sealed, updated_at) \
             SELECT $1, $2, $3 WHERE EXISTS \
               (SELECT 1 FROM device_keys WHERE user_id = $1 AND device_id = $4 AND linked = 1) \
             ON CONFLICT (user_id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .bind(user.0)
        .bind(sealed)
        .bind(now)
        .bind(i64::from(device.0))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- link requests -----------------------------------------------------------------

    /// Opens a link request for a pending `device` of `user` (replacing its earlier one and
    /// that one's answer). Refused if the device is linked, if the user has no list, or if the
    /// device has no keys.
    pub async fn open_link_request(
        &self,
        user: UserId,
        device: DeviceId,
        pake: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<LinkRequest, LinkError> {
        // Two requests of one device racing on PostgreSQL: the later insert hits the primary
        // key, and tries again (its delete then waits for the earlier one's commit).
        for _ in 0..3 {
            match self.try_open_link_request(user, device, pake, now, expires_at).await {
                Err(LinkError::Store(StoreError::Database(sqlx::Error::Database(e)))) if e.is_unique_violation() => continue,
                other => return other,
            }
        }
        Err(LinkError::Store(StoreError::Database(sqlx::Error::PoolTimedOut)))
    }

    async fn try_open_link_request(
        &self,
        user: UserId,
        device: DeviceId,
        pake: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<LinkRequest, LinkError> {
        let mut tx = self.pool().begin().await?;
        // Write first (SQLite takes the write lock at once): the earlier request goes.
        sqlx::query("DELETE FROM link_requests WHERE user_id = $1 AND device_id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT d.name, k.identity_key, k.linked FROM devices d \
             LEFT JOIN device_keys k ON k.user_id = d.user_id AND k.device_id = d.id \
             WHERE d.user_id = $1 AND d.id = $2",
        )
        .bind(user.0)
        .bind(i64::from(device.0))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(LinkError::NoKeys) };
        let name: String = row.try_get(0)?;
        let identity_key: Option<Vec<u8>> = row.try_get(1)?;
        let linked: Option<i64> = row.try_get(2)?;
        if linked == Some(1) {
            return Err(LinkError::AlreadyLinked);
        }
        let has_list = sqlx::query("SELECT 1 FROM account_identities WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !has_list {
            return Err(LinkError::NoList);
        }
        let Some(identity_key) = identity_key else { return Err(LinkError::NoKeys) };
        sqlx::query("INSERT INTO link_requests (user_id, device_id, pake, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(user.0)
            .bind(i64::from(device.0))
            .bind(pake)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(LinkRequest {
            device_id: device,
            device_name: name,
            identity_key: identity_key.into(),
            pake: pake.to_vec().into(),
            created_at: now,
            expires_at,
        })
    }

    /// The open (unexpired) link requests of a user's devices, by device, without answers.
    pub async fn link_requests(&self, user: UserId, now: i64) -> Result<Vec<LinkRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {LINK_REQUEST_COLUMNS} WHERE r.user_id = $1 AND r.expires_at > $2 ORDER BY r.device_id"
        ))
        .bind(user.0)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| link_request_of(r).map(|(request, _)| request)).collect()
    }

    /// A device's own open link request, with its answer once one came.
    pub async fn own_link_request(&self, user: UserId, device: DeviceId, now: i64) -> Result<Option<OwnLinkRequest>> {
        let row = sqlx::query(&format!(
            "SELECT {LINK_REQUEST_COLUMNS} WHERE r.user_id = $1 AND r.device_id = $2 AND r.expires_at > $3"
        ))
        .bind(user.0)
        .bind(i64::from(device.0))
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| link_request_of(&r).map(|(request, answer)| OwnLinkRequest { request, answer })).transpose()
    }

    /// Records the answer of linked device `from` to the open request of `to` (replacing an
    /// earlier answer). Refused if `from` is not linked, or `to` has no open request.
    pub async fn answer_link_request(
        &self,
        user: UserId,
        from: DeviceId,
        to: DeviceId,
        pake: &[u8],
        sealed: &[u8],
        now: i64,
    ) -> Result<(), LinkError> {
        let done = sqlx::query(
            "UPDATE link_requests SET answer_device = $3, answer_pake = $4, answer_sealed = $5 \
             WHERE user_id = $1 AND device_id = $2 AND expires_at > $6 \
               AND EXISTS (SELECT 1 FROM device_keys WHERE user_id = $1 AND device_id = $3 AND linked = 1)",
        )
        .bind(user.0)
        .bind(i64::from(to.0))
        .bind(i64::from(from.0))
        .bind(pake)
        .bind(sealed)
        .bind(now)
        .execute(self.pool())
        .await?;
        if done.rows_affected() > 0 {
            Ok(())
        } else if !self.is_linked(user, from).await? {
            Err(LinkError::NotLinked)
        } else {
            Err(LinkError::NotFound)
        }
    }

    /// Deletes the link request of a device (declined, or withdrawn). Returns whether there
    /// was an open one.
    pub async fn delete_link_request(&self, user: UserId, device: DeviceId, now: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM link_requests WHERE user_id = $1 AND device_id = $2 RETURNING expires_at")
            .bind(user.0)
            .bind(i64::from(device.0))
            .fetch_optional(self.pool())
            .await?;
        Ok(match done {
            Some(r) => r.try_get::<i64, _>(0)? > now,
            None => false,
        })
    }

    /// Deletes link requests expired at `now`; returns how many.
    pub async fn purge_link_requests(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM link_requests WHERE expires_at <= $1").bind(now).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }
}

/// A request and its answer from [`LINK_REQUEST_COLUMNS`].
fn link_request_of(r: &AnyRow) -> Result<(LinkRequest, Option<LinkAnswer>)> {
    let request = LinkRequest {
        device_id: device_id(r.try_get(0)?)?,
        device_name: r.try_get(1)?,
        identity_key: r.try_get::<Vec<u8>, _>(2)?.into(),
        pake: r.try_get::<Vec<u8>, _>(3)?.into(),
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
    };
    let answer = match (r.try_get::<Option<i64>, _>(6)?, r.try_get::<Option<Vec<u8>>, _>(7)?, r.try_get::<Option<Vec<u8>>, _>(8)?)
    {
        (Some(from), Some(pake), Some(sealed)) => {
            Some(LinkAnswer { from_device: device_id(from)?, pake: pake.into(), sealed: sealed.into() })
        }
        _ => None,
    };
    Ok((request, answer))
}

fn u64_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative device list version {v}")))
}
