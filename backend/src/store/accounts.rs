//! Users, login sessions, refresh tokens and devices.

use copains_client_core::api::{Device, PlatformRole, PublicUser, SessionInfo, User};
use copains_client_core::{DeviceId, SessionId, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::channel_messages::{bump_views_of_user_if, BumpIf};
use super::{device_id, from_ms, DbKind, Result, Store, StoreError};

/// A user row, including what is never sent to clients.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The public part.
    pub user: User,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Set when an admin disabled the account.
    pub disabled: bool,
}

/// What [`Store::rotate_refresh_token`] found.
#[derive(Debug)]
pub enum Rotation {
    /// The token was current: a new one replaced it.
    Rotated {
        /// The session.
        session_id: SessionId,
        /// Its user.
        user: User,
        /// Its device.
        device_id: DeviceId,
        /// Whether the account is disabled.
        disabled: bool,
    },
    /// The token had already been used: the session was revoked.
    Reused {
        /// The revoked session.
        session_id: SessionId,
        /// Its user.
        user_id: UserId,
    },
    /// Unknown or expired.
    Invalid,
}

/// A new login session to create.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Session id.
    pub id: SessionId,
    /// Name of the device it creates.
    pub device_name: &'a str,
    /// SHA-256 of the first refresh token (hex).
    pub refresh_hash: &'a str,
    /// Refresh token expiry (ms).
    pub expires_at: i64,
    /// Now (ms).
    pub now: i64,
}

const PUBLIC_USER_COLUMNS: &str = "id, username, display_name, status_text";

const USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.status_text, u.platform_role, u.created_at, u.password_hash, \
     u.disabled_at, u.guest_expires_at";

/// Ends every session of `user` but `keep` on `c` (inside a transaction): their devices go,
/// and with them the sessions and refresh tokens (cascade), as at a logout. Returns the
/// sessions ended.
pub(crate) async fn end_sessions(
    c: &mut sqlx::AnyConnection,
    kind: super::DbKind,
    user: UserId,
    keep: Option<SessionId>,
) -> Result<Vec<SessionId>> {
    let keep = keep.map_or(i64::MIN, |k| k.0);
    let ended: Vec<SessionId> = sqlx::query("SELECT id FROM sessions WHERE user_id = $1 AND id <> $2")
        .bind(user.0)
        .bind(keep)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0).map(SessionId))
        .collect::<Result<_, _>>()?;
    if !ended.is_empty() {
        // Before the devices go (see `bump_views_of_user`): their channels get a new view.
        super::channel_messages::bump_views_of_user(&mut *c, kind, user).await?;
        sqlx::query(
            "DELETE FROM devices WHERE user_id = $1 AND id IN (SELECT device_id FROM sessions WHERE user_id = $1 AND id <> $2)",
        )
        .bind(user.0)
        .bind(keep)
        .execute(&mut *c)
        .await?;
    }
    Ok(ended)
}

impl Store {
    /// Creates a user and its first device, session and refresh token, all or nothing.
    pub async fn create_user(
        &self,
        id: UserId,
        username: &str,
        username_lower: &str,
        password_hash: &str,
        session: &NewSession<'_>,
    ) -> Result<(User, DeviceId)> {
        self.insert_user(id, username, username_lower, password_hash, None, None, session).await
    }

    /// Creates a guest account (its name shown, its end) with its first device and session,
    /// all or nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_guest(
        &self,
        id: UserId,
        username: &str,
        username_lower: &str,
        password_hash: &str,
        display_name: Option<&str>,
        expires_at: i64,
        session: &NewSession<'_>,
    ) -> Result<(User, DeviceId)> {
        self.insert_user(id, username, username_lower, password_hash, display_name, Some(expires_at), session).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_user(
        &self,
        id: UserId,
        username: &str,
        username_lower: &str,
        password_hash: &str,
        display_name: Option<&str>,
        guest_expires_at: Option<i64>,
        session: &NewSession<'_>,
    ) -> Result<(User, DeviceId)> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, username_lower, password_hash, display_name, platform_role, created_at, updated_at, \
             guest_expires_at) VALUES ($1, $2, $3, $4, $5, 'member', $6, $6, $7)",
        )
        .bind(id.0)
        .bind(username)
        .bind(username_lower)
        .bind(password_hash)
        .bind(display_name)
        .bind(session.now)
        .bind(guest_expires_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::UsernameTaken),
            other => other?,
        };
        let device_id = insert_session(&mut tx, id, session).await?;
        tx.commit().await?;
        let user = User {
            id,
            username: username.to_owned(),
            display_name: display_name.map(str::to_owned),
            status_text: None,
            platform_role: PlatformRole::Member,
            created_at: from_ms(session.now)?,
            guest_expires_at,
        };
        Ok((user, device_id))
    }

    /// Guest accounts whose end is at or before `now`.
    pub async fn expired_guests(&self, now: i64) -> Result<Vec<UserId>> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE guest_expires_at IS NOT NULL AND guest_expires_at <= $1 ORDER BY id")
                .bind(now)
                .fetch_all(self.pool())
                .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    /// Finds a user by case-folded username.
    pub async fn user_by_username(&self, username_lower: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username_lower = $1"))
            .bind(username_lower)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_record(&r)).transpose()
    }

    /// Finds a user by id.
    pub async fn user(&self, id: UserId) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_record(&r)).transpose()
    }

    /// The public profile of the enabled user whose case-folded username is exactly
    /// `username_lower` (no prefix or pattern matching: `LIKE` is never used).
    pub async fn public_user_by_username(&self, username_lower: &str) -> Result<Option<PublicUser>> {
        let row =
            sqlx::query(&format!("SELECT {PUBLIC_USER_COLUMNS} FROM users WHERE username_lower = $1 AND disabled_at IS NULL"))
                .bind(username_lower)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| public_user(&r)).transpose()
    }

    /// The public profile of an enabled user.
    pub async fn public_user(&self, id: UserId) -> Result<Option<PublicUser>> {
        let row = sqlx::query(&format!("SELECT {PUBLIC_USER_COLUMNS} FROM users WHERE id = $1 AND disabled_at IS NULL"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| public_user(&r)).transpose()
    }

    /// The user behind a live login session, if the session exists and belongs to `user`.
    /// This is the per-request check that makes revocation immediate.
    pub async fn session_user(&self, session: SessionId, user: UserId) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND s.user_id = $2"
        ))
        .bind(session.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_record(&r)).transpose()
    }

    /// Applies a profile change; `None` leaves a field, `Some(None)` clears it.
    pub async fn update_profile(
        &self,
        id: UserId,
        display_name: Option<Option<&str>>,
        status_text: Option<Option<&str>>,
        now: i64,
    ) -> Result<Option<User>> {
        // One statement: a flag per field says whether to take the new value.
        let row = sqlx::query(
            "UPDATE users SET \
               display_name = CASE WHEN $2 = 1 THEN $3 ELSE display_name END, \
               status_text  = CASE WHEN $4 = 1 THEN $5 ELSE status_text END, \
               updated_at = $6 \
             WHERE id = $1 \
             RETURNING id, username, display_name, status_text, platform_role, created_at, password_hash, disabled_at, guest_expires_at",
        )
        .bind(id.0)
        .bind(i32::from(display_name.is_some()))
        .bind(display_name.flatten())
        .bind(i32::from(status_text.is_some()))
        .bind(status_text.flatten())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_record(&r).map(|u| u.user)).transpose()
    }

    /// Sets a new password hash and ends every session of the user but `keep`. Returns the
    /// ended sessions.
    pub async fn change_password(&self, id: UserId, new_hash: &str, keep: SessionId, now: i64) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id.0)
            .bind(new_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let ended = end_sessions(&mut tx, self.kind(), id, Some(keep)).await?;
        tx.commit().await?;
        Ok(ended)
    }

    // ---- sessions and devices ----------------------------------------------------------

    /// Creates a device, its login session and first refresh token for an existing user.
    pub async fn create_session(&self, user: UserId, session: &NewSession<'_>) -> Result<DeviceId> {
        // PostgreSQL may pick the same free device id for two concurrent logins of one user;
        // the loser hits the primary key and tries again.
        for _ in 0..5 {
            let mut tx = self.pool.begin().await?;
            match insert_session(&mut tx, user, session).await {
                Ok(device) => {
                    tx.commit().await?;
                    return Ok(device);
                }
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Database(sqlx::Error::PoolTimedOut))
    }

    /// Consumes refresh token `old_hash` and stores `new_hash` in its place, detecting reuse.
    pub async fn rotate_refresh_token(&self, old_hash: &str, new_hash: &str, now: i64, expires_at: i64) -> Result<Rotation> {
        let mut tx = self.pool.begin().await?;
        if self.kind() == DbKind::Postgres {
            // Concurrent uses of one token take the session's row first, then the tokens':
            // one order for all, so a rotation and the reuses that follow it (whose device
            // deletions cascade through the tokens) wait for each other instead of
            // deadlocking.
            sqlx::query(
                "SELECT s.id FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id WHERE t.hash = $1 FOR UPDATE OF s",
            )
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?;
        }
        // Write first: on SQLite this takes the write lock at once (no read-to-write upgrade),
        // and on both engines two concurrent uses of one token cannot both succeed.
        let consumed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING session_id",
        )
        .bind(old_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(consumed) = consumed else {
            let known = sqlx::query(
                "SELECT t.session_id, s.user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                 WHERE t.hash = $1 AND t.used_at IS NOT NULL",
            )
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let outcome = match known {
                Some(row) => {
                    let session_id = SessionId(row.try_get(0)?);
                    let user_id = UserId(row.try_get(1)?);
                    delete_session_device(&mut tx, self.kind(), user_id, session_id).await?;
                    Rotation::Reused { session_id, user_id }
                }
                None => Rotation::Invalid,
            };
            tx.commit().await?;
            return Ok(outcome);
        };
        let session_id = SessionId(consumed.try_get(0)?);
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(new_hash)
            .bind(session_id.0)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        let row =
            sqlx::query("UPDATE sessions SET last_used_at = $2, expires_at = $3 WHERE id = $1 RETURNING user_id, device_id")
                .bind(session_id.0)
                .bind(now)
                .bind(expires_at)
                .fetch_one(&mut *tx)
                .await?;
        let user_id = UserId(row.try_get(0)?);
        let device_id = device_id(row.try_get(1)?)?;
        sqlx::query("UPDATE devices SET last_seen_at = $3 WHERE user_id = $1 AND id = $2")
            .bind(user_id.0)
            .bind(i64::from(device_id.0))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let user = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"))
            .bind(user_id.0)
            .fetch_one(&mut *tx)
            .await?;
        let record = user_record(&user)?;
        tx.commit().await?;
        Ok(Rotation::Rotated { session_id, user: record.user, device_id, disabled: record.disabled })
    }

    /// Ends a session of `user` (and removes its device). Returns whether it existed.
    pub async fn revoke_session(&self, user: UserId, session: SessionId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let existed = delete_session_device(&mut tx, self.kind(), user, session).await?;
        tx.commit().await?;
        Ok(existed)
    }

    /// The sessions of a user with their devices, newest first.
    pub async fn sessions(&self, user: UserId, current: SessionId) -> Result<Vec<SessionInfo>> {
        let rows = sqlx::query(
            "SELECT s.id, s.created_at, s.expires_at, d.id, d.name, d.created_at, d.last_seen_at, COALESCE(k.linked, 0) \
             FROM sessions s JOIN devices d ON d.user_id = s.user_id AND d.id = s.device_id \
             LEFT JOIN device_keys k ON k.user_id = d.user_id AND k.device_id = d.id \
             WHERE s.user_id = $1 ORDER BY s.id DESC",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id = SessionId(r.try_get(0)?);
                Ok(SessionInfo {
                    id,
                    created_at: from_ms(r.try_get(1)?)?,
                    expires_at: from_ms(r.try_get(2)?)?,
                    device: Device {
                        id: device_id(r.try_get(3)?)?,
                        name: r.try_get(4)?,
                        created_at: from_ms(r.try_get(5)?)?,
                        last_seen_at: from_ms(r.try_get(6)?)?,
                        linked: r.try_get::<i64, _>(7)? == 1,
                    },
                    current: id == current,
                })
            })
            .collect()
    }

    /// The devices of a user, by id.
    pub async fn devices(&self, user: UserId) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT d.id, d.name, d.created_at, d.last_seen_at, COALESCE(k.linked, 0) FROM devices d \
             LEFT JOIN device_keys k ON k.user_id = d.user_id AND k.device_id = d.id \
             WHERE d.user_id = $1 ORDER BY d.id",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_of).collect()
    }

    /// Renames a device of `user`. Returns the device, or `None` if it does not exist.
    pub async fn rename_device(&self, user: UserId, device: DeviceId, name: &str) -> Result<Option<Device>> {
        let row = sqlx::query(
            "UPDATE devices SET name = $3 WHERE user_id = $1 AND id = $2 \
             RETURNING id, name, created_at, last_seen_at, \
             COALESCE((SELECT k.linked FROM device_keys k WHERE k.user_id = devices.user_id AND k.device_id = devices.id), 0)",
        )
        .bind(user.0)
        .bind(i64::from(device.0))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_of).transpose()
    }

    /// Records that a device was seen (gateway connection).
    pub async fn touch_device(&self, user: UserId, device: DeviceId, now: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen_at = $3 WHERE user_id = $1 AND id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes sessions whose refresh token expired (with their devices), and used refresh
    /// tokens past their expiry. Returns the removed sessions.
    pub async fn purge_expired(&self, now: i64) -> Result<Vec<(UserId, SessionId)>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 RETURNING user_id, id, device_id")
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        let mut ended = Vec::with_capacity(rows.len());
        let mut bumped = std::collections::BTreeSet::new();
        for row in &rows {
            let user = UserId(row.try_get(0)?);
            ended.push((user, SessionId(row.try_get(1)?)));
            if bumped.insert(user) {
                // Before the device goes (see `bump_views_of_user`).
                super::channel_messages::bump_views_of_user(&mut tx, self.kind(), user).await?;
            }
            sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
                .bind(user.0)
                .bind(row.try_get::<i64, _>(2)?)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ended)
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
        bump_views_of_user_if(&mut tx, self.kind(), user, BumpIf::DeviceKeyed(device)).await?;
        let deleted = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND id = $2")
            .bind(user.0)
            .bind(i64::from(device.0))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((deleted.rows_affected() > 0).then_some(session))
    }
}

/// Inserts a device (smallest free id), its session and first refresh token.
async fn insert_session(tx: &mut sqlx::Transaction<'_, sqlx::Any>, user: UserId, s: &NewSession<'_>) -> Result<DeviceId> {
    // Smallest free id in 1..=127, chosen and inserted in one statement.
    let row = sqlx::query(
        "INSERT INTO devices (user_id, id, name, created_at, last_seen_at) \
         SELECT $1, c.n, $2, $3, $3 FROM \
           (SELECT 1 AS n UNION ALL SELECT id + 1 AS n FROM devices WHERE user_id = $1) c \
         WHERE c.n <= $4 AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.id = c.n) \
         ORDER BY c.n LIMIT 1 \
         RETURNING id",
    )
    .bind(user.0)
    .bind(s.device_name)
    .bind(s.now)
    .bind(i64::from(DeviceId::MAX))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Err(StoreError::TooManyDevices) };
    let device = device_id(row.try_get(0)?)?;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, device_id, created_at, last_used_at, expires_at) \
         VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(s.id.0)
    .bind(user.0)
    .bind(i64::from(device.0))
    .bind(s.now)
    .bind(s.expires_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(s.refresh_hash)
        .bind(s.id.0)
        .bind(s.now)
        .bind(s.expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(device)
}

async fn delete_session_device(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: DbKind,
    user: UserId,
    session: SessionId,
) -> Result<bool> {
    // Before the device goes (a write first, too: see the store's notes on SQLite).
    bump_views_of_user_if(tx, kind, user, BumpIf::SessionKeyed(session)).await?;
    let deleted = sqlx::query(
        "DELETE FROM devices WHERE user_id = $1 AND id = (SELECT device_id FROM sessions WHERE id = $2 AND user_id = $1)",
    )
    .bind(user.0)
    .bind(session.0)
    .execute(&mut **tx)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

fn public_user(r: &AnyRow) -> Result<PublicUser> {
    Ok(PublicUser { id: UserId(r.try_get(0)?), username: r.try_get(1)?, display_name: r.try_get(2)?, status_text: r.try_get(3)? })
}

fn user_record(r: &AnyRow) -> Result<UserRecord> {
    let role: String = r.try_get(4)?;
    Ok(UserRecord {
        user: User {
            id: UserId(r.try_get(0)?),
            username: r.try_get(1)?,
            display_name: r.try_get(2)?,
            status_text: r.try_get(3)?,
            platform_role: PlatformRole::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown platform role {role:?}")))?,
            created_at: from_ms(r.try_get(5)?)?,
            guest_expires_at: r.try_get(8)?,
        },
        password_hash: r.try_get(6)?,
        disabled: r.try_get::<Option<i64>, _>(7)?.is_some(),
    })
}

/// A device from `id, name, created_at, last_seen_at, linked`.
fn device_of(r: &AnyRow) -> Result<Device> {
    Ok(Device {
        id: device_id(r.try_get(0)?)?,
        name: r.try_get(1)?,
        created_at: from_ms(r.try_get(2)?)?,
        last_seen_at: from_ms(r.try_get(3)?)?,
        linked: r.try_get::<i64, _>(4)? == 1,
    })
}
