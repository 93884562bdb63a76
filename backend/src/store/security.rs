//! Security events, what is kept about a session's client, and platform bans.

use copains_client_core::admin::{AdminSession, BanKind, PlatformAction, PlatformBan, PlatformBans};
use copains_client_core::api::PlatformRole;
use copains_client_core::{SessionId, UserId};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::admin::{record, record_from, BELOW};
use super::{Result, Store};

/// A session's client as last seen: its address sealed, and its fingerprint.
#[derive(Debug, Clone)]
pub struct ClientSeen {
    /// The address, sealed with the key file's data key.
    pub ip_sealed: String,
    /// The keyed hash of address and user agent.
    pub fingerprint: String,
}

/// What a ban being made does.
#[derive(Debug, Clone)]
pub struct BanOrder<'a> {
    /// Staff banning.
    pub actor: UserId,
    /// Their role (the account must be below it).
    pub actor_role: PlatformRole,
    /// The account.
    pub user: UserId,
    /// Why.
    pub reason: Option<&'a str>,
    /// Until when (ms); `None`: permanent.
    pub expires_at: Option<i64>,
    /// Also the fingerprints of the account's sessions.
    pub fingerprints: bool,
    /// Ids for the bans: the account's first, then one per fingerprint (as many as needed).
    pub ids: &'a [i64],
    /// Now (ms).
    pub now: i64,
}

const BAN_COLUMNS: &str =
    "b.id, b.user_id, b.fingerprint, b.reason, b.created_by, b.created_at, b.expires_at, (SELECT u.username FROM users u WHERE u.id = b.user_id)";

fn ban(r: &AnyRow) -> Result<PlatformBan> {
    let fingerprint: Option<String> = r.try_get(2)?;
    Ok(PlatformBan {
        id: r.try_get::<i64, _>(0)?.to_string(),
        kind: if fingerprint.is_some() { BanKind::Fingerprint } else { BanKind::Account },
        user_id: r.try_get::<Option<i64>, _>(1)?.map(UserId),
        fingerprint,
        reason: r.try_get(3)?,
        created_by: r.try_get::<Option<i64>, _>(4)?.map(UserId),
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        username: r.try_get(7)?,
    })
}

impl Store {
    /// Writes a security event to the platform audit log.
    pub async fn security_event(
        &self,
        action: PlatformAction,
        target: Option<UserId>,
        details: Value,
        ip_hash: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut c = self.pool().acquire().await?;
        record_from(&mut c, None, action, target, details, ip_hash, now).await
    }

    /// Notes where a session's client was last seen (at sign-in and at each refresh).
    pub async fn session_client(&self, session: SessionId, client: &ClientSeen, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET ip_sealed = $2, ip_seen_at = $3, fingerprint = $4 WHERE id = $1")
            .bind(session.0)
            .bind(&client.ip_sealed)
            .bind(now)
            .bind(&client.fingerprint)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The ban in force on the account or the fingerprint, if any (the account's first, then the
    /// longest-lasting).
    pub async fn ban_in_force(&self, user: Option<UserId>, fingerprint: &str, now: i64) -> Result<Option<PlatformBan>> {
        let row = sqlx::query(&format!(
            "SELECT {BAN_COLUMNS} FROM platform_bans b WHERE (b.user_id = $1 AND b.fingerprint IS NULL OR b.fingerprint = $2) \
             AND (b.expires_at IS NULL OR b.expires_at > $3) ORDER BY b.fingerprint IS NULL DESC, b.expires_at IS NULL DESC, b.expires_at DESC LIMIT 1"
        ))
        .bind(user.map_or(0, |u| u.0))
        .bind(fingerprint)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(ban).transpose()
    }

    /// Bans an account (and the fingerprints its sessions were last seen from), ends its
    /// sessions, audited; all in one transaction. `None` when the account is not (any more)
    /// below the actor. Returns the bans and the sessions ended.
    pub async fn ban_account(&self, order: &BanOrder<'_>) -> Result<Option<(Vec<PlatformBan>, Vec<SessionId>)>> {
        let mut tx = self.pool().begin().await?;
        let below = sqlx::query(&format!("UPDATE users SET updated_at = $2 WHERE id = $1 AND {BELOW}"))
            .bind(order.user.0)
            .bind(order.now)
            .bind(order.actor_role.as_str())
            .execute(&mut *tx)
            .await?;
        if below.rows_affected() == 0 {
            return Ok(None);
        }
        let fingerprints: Vec<String> = if order.fingerprints {
            sqlx::query_scalar(
                "SELECT DISTINCT fingerprint FROM sessions WHERE user_id = $1 AND fingerprint IS NOT NULL ORDER BY fingerprint",
            )
            .bind(order.user.0)
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
        let mut ids = order.ids.iter().copied();
        let mut made = Vec::new();
        for fingerprint in std::iter::once(None).chain(fingerprints.iter().map(Some)) {
            let Some(id) = ids.next() else { break };
            sqlx::query(
                "INSERT INTO platform_bans (id, user_id, fingerprint, reason, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(order.user.0)
            .bind(fingerprint)
            .bind(order.reason)
            .bind(order.actor.0)
            .bind(order.now)
            .bind(order.expires_at)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(&format!("SELECT {BAN_COLUMNS} FROM platform_bans b WHERE b.id = $1"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            made.push(ban(&row)?);
        }
        let ended = super::accounts::end_sessions(&mut tx, self.kind(), order.user, None).await?;
        let details = serde_json::json!({
            "reason": order.reason,
            "expires_at": order.expires_at,
            "fingerprints": made.len().saturating_sub(1),
            "sessions_ended": ended.len(),
        });
        record(&mut tx, Some(order.actor), PlatformAction::BanCreated, Some(order.user), details, order.now).await?;
        tx.commit().await?;
        Ok(Some((made, ended)))
    }

    /// Lifts a ban, audited. `None` when there is no such ban.
    pub async fn lift_ban(&self, actor: UserId, id: i64, now: i64) -> Result<Option<PlatformBan>> {
        let mut tx = self.pool().begin().await?;
        let Some(row) = sqlx::query(&format!("SELECT {BAN_COLUMNS} FROM platform_bans b WHERE b.id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let lifted = ban(&row)?;
        sqlx::query("DELETE FROM platform_bans WHERE id = $1").bind(id).execute(&mut *tx).await?;
        let details = serde_json::json!({"ban_id": lifted.id, "kind": lifted.kind, "fingerprint": lifted.fingerprint});
        record(&mut tx, Some(actor), PlatformAction::BanLifted, lifted.user_id, details, now).await?;
        tx.commit().await?;
        Ok(Some(lifted))
    }

    /// Bans in force, newest first, a page at a time (`before`: a ban id).
    pub async fn platform_bans(&self, limit: u32, before: Option<i64>, now: i64) -> Result<PlatformBans> {
        let rows = sqlx::query(&format!(
            "SELECT {BAN_COLUMNS} FROM platform_bans b WHERE b.id < $1 AND (b.expires_at IS NULL OR b.expires_at > $2) \
             ORDER BY b.id DESC LIMIT $3"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(now)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() > limit as usize;
        let bans = rows.iter().take(limit as usize).map(ban).collect::<Result<Vec<_>>>()?;
        let next_before = if more { bans.last().map(|b| b.id.clone()) } else { None };
        Ok(PlatformBans { bans, next_before })
    }

    /// `user`'s sessions with what is kept of their clients (the address still sealed: the
    /// caller opens it for admins).
    pub async fn session_clients(&self, user: UserId) -> Result<Vec<(AdminSession, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT s.id, s.device_id, d.name, s.created_at, s.last_used_at, s.ip_sealed, s.ip_seen_at, s.fingerprint \
             FROM sessions s JOIN devices d ON d.user_id = s.user_id AND d.id = s.device_id WHERE s.user_id = $1 ORDER BY s.id",
        )
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let sealed: Option<String> = r.try_get(5)?;
                let session = AdminSession {
                    id: SessionId(r.try_get(0)?),
                    device_id: super::u32_of(r.try_get(1)?)?,
                    device_name: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    last_used_at: r.try_get(4)?,
                    ip: None,
                    ip_seen_at: if sealed.is_some() { r.try_get(6)? } else { None },
                    fingerprint: r.try_get(7)?,
                };
                Ok((session, sealed))
            })
            .collect()
    }

    /// Retention: deletes audit entries written before `audit_before`, erases sealed addresses
    /// seen before `ip_before`, and removes bans that ended. Returns (entries, addresses, bans).
    pub async fn purge_security(&self, audit_before: i64, ip_before: i64, now: i64) -> Result<(u64, u64, u64)> {
        let entries =
            sqlx::query("DELETE FROM platform_audit WHERE created_at < $1").bind(audit_before).execute(self.pool()).await?;
        let addresses = sqlx::query("UPDATE sessions SET ip_sealed = NULL WHERE ip_sealed IS NOT NULL AND ip_seen_at < $1")
            .bind(ip_before)
            .execute(self.pool())
            .await?;
        let bans = sqlx::query("DELETE FROM platform_bans WHERE expires_at IS NOT NULL AND expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok((entries.rows_affected(), addresses.rows_affected(), bans.rows_affected()))
    }

    /// Up to `limit` sealed values not under key `current` (`rotate-key` seals them again), as
    /// (session, sealed).
    pub async fn sealed_not_under(&self, current: u32, limit: u32) -> Result<Vec<(i64, String)>> {
        let prefix = format!("k{current}.%");
        let rows = sqlx::query(
            "SELECT id, ip_sealed FROM sessions WHERE ip_sealed IS NOT NULL AND ip_sealed NOT LIKE $1 ORDER BY id LIMIT $2",
        )
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Replaces one sealed value (`None`: erases it, as one that opens under no key), if it is
    /// still `old` (a server may have sealed a newer one meanwhile, which is kept). Returns
    /// whether it was replaced.
    pub async fn reseal(&self, session: i64, old: &str, new: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE sessions SET ip_sealed = $3 WHERE id = $1 AND ip_sealed = $2")
            .bind(session)
            .bind(old)
            .bind(new)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sealed values in the database in all (the progress of `rotate-key`).
    pub async fn sealed_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE ip_sealed IS NOT NULL").fetch_one(self.pool()).await?)
    }

    /// Audits a rotation of the data key by the command line.
    pub async fn record_key_rotation(&self, details: Value, now: i64) -> Result<()> {
        let mut c = self.pool().acquire().await?;
        record(&mut c, None, PlatformAction::KeyRotation, None, details, now).await
    }
}
