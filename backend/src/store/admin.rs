//! Platform administration: admin accounts from the command line, accounts as staff see them
//! (search, disable, enable, end sessions, platform role), and the platform audit log. Each
//! change and its audit entry are written in one transaction.

use copains_client_core::admin::{AdminServer, AdminUser, PlatformAction, PlatformAuditEntry, PlatformAuditLog, Severity};
use copains_client_core::api::PlatformRole;
use copains_client_core::{ChannelId, MessageId, ServerId};
use copains_client_core::{SessionId, UserId};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{u32_of, Result, Store, StoreError};

/// What a database holds (`copains admin stats`, `backup`, `restore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// Accounts.
    pub users: i64,
    /// Servers.
    pub servers: i64,
    /// Channels (server channels and group DMs).
    pub channels: i64,
    /// Channel messages (ciphertexts).
    pub messages: i64,
    /// Envelopes waiting in device queues.
    pub envelopes: i64,
    /// Login sessions.
    pub sessions: i64,
    /// The database's size in bytes.
    pub bytes: i64,
}

/// What went with a deleted account, for the events that tell its contacts.
#[derive(Debug, Clone, Default)]
pub struct AccountRemoval {
    /// Its username.
    pub username: String,
    /// Servers it owned (deleted), with who were their members.
    pub servers: Vec<(ServerId, Vec<UserId>)>,
    /// Messages deleted (channel, id, when sent).
    pub messages: Vec<(ChannelId, MessageId, i64)>,
    /// Sessions ended.
    pub sessions: Vec<SessionId>,
}

/// What `copains admin create-admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    /// A new account, admin from the start.
    Created(UserId),
    /// An existing account, now admin.
    Promoted(UserId),
    /// The account was an admin already.
    AlreadyAdmin(UserId),
}

/// Writes a platform audit entry on `c` (inside the change's transaction).
pub(crate) async fn record(
    c: &mut AnyConnection,
    actor: Option<UserId>,
    action: PlatformAction,
    target: Option<UserId>,
    details: Value,
    now: i64,
) -> Result<()> {
    record_from(c, actor, action, target, details, None, now).await
}

/// [`record`], with the keyed hash of the client's address (security events).
pub(crate) async fn record_from(
    c: &mut AnyConnection,
    actor: Option<UserId>,
    action: PlatformAction,
    target: Option<UserId>,
    details: Value,
    ip_hash: Option<&str>,
    now: i64,
) -> Result<()> {
    let details = match &details {
        Value::Object(m) if m.is_empty() => None,
        d => Some(d.to_string()),
    };
    sqlx::query(
        "INSERT INTO platform_audit (actor_id, action, target_id, details, severity, ip_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(actor.map(|a| a.0))
    .bind(action.as_str())
    .bind(target.map(|t| t.0))
    .bind(details)
    .bind(action.severity().as_str())
    .bind(ip_hash)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Sets `user`'s role on `c` (inside a transaction), audited when it changes; returns the role
/// before.
async fn apply_role(
    c: &mut AnyConnection,
    actor: Option<UserId>,
    user: UserId,
    role: PlatformRole,
    now: i64,
) -> Result<PlatformRole> {
    let before: String =
        sqlx::query_scalar("SELECT platform_role FROM users WHERE id = $1").bind(user.0).fetch_one(&mut *c).await?;
    let before = PlatformRole::parse(&before).ok_or_else(|| StoreError::Corrupt(format!("platform role {before}")))?;
    if before != role {
        sqlx::query("UPDATE users SET platform_role = $2 WHERE id = $1")
            .bind(user.0)
            .bind(role.as_str())
            .execute(&mut *c)
            .await?;
        let details = serde_json::json!({"old": before.as_str(), "new": role.as_str()});
        record(c, actor, PlatformAction::RoleChange, Some(user), details, now).await?;
    }
    Ok(before)
}

/// The SQL condition (on `users`, the actor's role bound as `$3`) of an account below the
/// actor: a member for a moderator; a member or a moderator for an admin.
pub(crate) const BELOW: &str = "(platform_role = 'member' OR ($3 = 'admin' AND platform_role = 'moderator'))";

const ADMIN_USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.platform_role, u.created_at, u.disabled_at, \
     (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id)";

const ADMIN_SERVER_COLUMNS: &str = "s.id, s.name, s.owner_id, (SELECT u.username FROM users u WHERE u.id = s.owner_id), \
     (SELECT COUNT(*) FROM members m WHERE m.server_id = s.id), (SELECT COUNT(*) FROM channels c WHERE c.server_id = s.id), \
     s.created_at, s.taken_down_at, s.taken_down_reason";

fn admin_server(r: &AnyRow) -> Result<AdminServer> {
    let count = |i: usize| -> Result<u64> { Ok(u64::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0)) };
    Ok(AdminServer {
        id: ServerId(r.try_get(0)?),
        name: r.try_get(1)?,
        owner_id: UserId(r.try_get(2)?),
        owner_username: r.try_get(3)?,
        member_count: count(4)?,
        channel_count: count(5)?,
        created_at: r.try_get(6)?,
        taken_down_at: r.try_get(7)?,
        taken_down_reason: r.try_get(8)?,
    })
}

/// A `LIKE` pattern of text containing `query` (lowercased, its wildcards escaped with `\`).
fn contains_pattern(query: &str) -> String {
    format!("%{}%", query.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

fn admin_user(r: &AnyRow) -> Result<AdminUser> {
    let role: String = r.try_get(3)?;
    Ok(AdminUser {
        id: UserId(r.try_get(0)?),
        username: r.try_get(1)?,
        display_name: r.try_get(2)?,
        platform_role: PlatformRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("platform role {role}")))?,
        created_at: r.try_get(4)?,
        disabled_at: r.try_get(5)?,
        sessions: u32_of(r.try_get(6)?)?,
    })
}

impl Store {
    /// Makes `username` a platform admin, audited, by nobody (the command line). With
    /// `password_hash`, a new account is created (its id `id`), and an account of that name
    /// already there is an error ([`StoreError::UsernameTaken`]): a name someone registered
    /// meanwhile is never promoted in place of the one meant. Without, the existing account is
    /// promoted (its password stays); `None` when there is no such account.
    pub async fn ensure_admin(
        &self,
        id: UserId,
        username: &str,
        username_lower: &str,
        password_hash: Option<&str>,
        now: i64,
    ) -> Result<Option<AdminOutcome>> {
        let mut tx = self.pool().begin().await?;
        let outcome = if let Some(hash) = password_hash {
            let inserted = sqlx::query(
                "INSERT INTO users (id, username, username_lower, password_hash, platform_role, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'admin', $5, $5)",
            )
            .bind(id.0)
            .bind(username)
            .bind(username_lower)
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::UsernameTaken),
                other => other?,
            };
            AdminOutcome::Created(id)
        } else {
            // A write first (see the module of `Store`).
            let promoted = sqlx::query(
                "UPDATE users SET platform_role = 'admin', updated_at = $2 WHERE username_lower = $1 \
                 AND platform_role <> 'admin' RETURNING id",
            )
            .bind(username_lower)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            match promoted {
                Some(row) => AdminOutcome::Promoted(UserId(row.try_get(0)?)),
                None => {
                    let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username_lower = $1")
                        .bind(username_lower)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Ok(existing.map(|u| AdminOutcome::AlreadyAdmin(UserId(u))));
                }
            }
        };
        let (target, created) = match outcome {
            AdminOutcome::Created(u) => (u, true),
            AdminOutcome::Promoted(u) | AdminOutcome::AlreadyAdmin(u) => (u, false),
        };
        record(&mut tx, None, PlatformAction::AdminCreated, Some(target), serde_json::json!({"created": created}), now).await?;
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Sets the platform role of the account `username_lower` from the command line (any
    /// account, admins included: this is how an admin is demoted), audited by nobody. Returns
    /// its id and the role before; `None` when there is no such account.
    pub async fn set_role_by_name(
        &self,
        username_lower: &str,
        role: PlatformRole,
        now: i64,
    ) -> Result<Option<(UserId, PlatformRole)>> {
        let mut tx = self.pool().begin().await?;
        // A write first (see the module of `Store`).
        let Some(row) = sqlx::query("UPDATE users SET updated_at = $2 WHERE username_lower = $1 RETURNING id")
            .bind(username_lower)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let user = UserId(row.try_get(0)?);
        let before = apply_role(&mut tx, None, user, role, now).await?;
        tx.commit().await?;
        Ok(Some((user, before)))
    }

    /// Whether an account of that (case-folded) username exists.
    pub async fn username_exists(&self, username_lower: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username_lower = $1")
            .bind(username_lower)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.is_some())
    }

    /// Accounts by id after `cursor`, whose username or display name contains `query`
    /// (case-insensitive; empty: all).
    pub async fn admin_users(&self, query: &str, limit: u32, cursor: Option<UserId>) -> Result<Vec<AdminUser>> {
        let pattern = contains_pattern(query);
        let rows = sqlx::query(&format!(
            "SELECT {ADMIN_USER_COLUMNS} FROM users u WHERE u.id > $1 \
             AND (u.username_lower LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(u.display_name, '')) LIKE $2 ESCAPE '\\') \
             ORDER BY u.id LIMIT $3"
        ))
        .bind(cursor.map_or(i64::MIN, |c| c.0))
        .bind(pattern)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(admin_user).collect()
    }

    /// Servers by id after `cursor` whose name contains `query` (case-insensitive; empty:
    /// all), taken down or not.
    pub async fn admin_servers(
        &self,
        query: &str,
        owner: Option<UserId>,
        limit: u32,
        cursor: Option<ServerId>,
    ) -> Result<Vec<AdminServer>> {
        let rows = sqlx::query(&format!(
            "SELECT {ADMIN_SERVER_COLUMNS} FROM servers s WHERE s.id > $1 AND LOWER(s.name) LIKE $2 ESCAPE '\\' \
             AND ($4 IS NULL OR s.owner_id = $4) ORDER BY s.id LIMIT $3"
        ))
        .bind(cursor.map_or(i64::MIN, |c| c.0))
        .bind(contains_pattern(query))
        .bind(i64::from(limit))
        .bind(owner.map(|o| o.0))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(admin_server).collect()
    }

    /// One server as platform admins see it.
    pub async fn admin_server(&self, id: ServerId) -> Result<Option<AdminServer>> {
        let row = sqlx::query(&format!("SELECT {ADMIN_SERVER_COLUMNS} FROM servers s WHERE s.id = $1"))
            .bind(id.0)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(admin_server).transpose()
    }

    /// Takes a server down (`Some(reason)`) or restores it (`None`), audited. `None` when it is
    /// so already; otherwise its members, as of the change (read in its transaction, so nobody
    /// who joined just before is left out of the events).
    pub async fn set_taken_down(
        &self,
        actor: UserId,
        server: &AdminServer,
        reason: Option<Option<&str>>,
        now: i64,
    ) -> Result<Option<Vec<UserId>>> {
        let mut tx = self.pool().begin().await?;
        let done = match reason {
            Some(reason) => {
                sqlx::query(
                    "UPDATE servers SET taken_down_at = $2, taken_down_reason = $3 WHERE id = $1 AND taken_down_at IS NULL",
                )
                .bind(server.id.0)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?
            }
            None => sqlx::query(
                "UPDATE servers SET taken_down_at = NULL, taken_down_reason = NULL WHERE id = $1 AND taken_down_at IS NOT NULL",
            )
            .bind(server.id.0)
            .execute(&mut *tx)
            .await?,
        };
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let members: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM members WHERE server_id = $1 ORDER BY user_id")
            .bind(server.id.0)
            .fetch_all(&mut *tx)
            .await?;
        // Its channels' readers change (to nobody, or back): cached views are not reused.
        super::servers::bump_server_views(&mut tx, server.id).await?;
        let (action, details) = match reason {
            Some(reason) => (
                PlatformAction::ServerTakeDown,
                serde_json::json!({"server_id": server.id, "name": server.name, "members": server.member_count, "reason": reason}),
            ),
            None => (PlatformAction::ServerRestore, serde_json::json!({"server_id": server.id, "name": server.name})),
        };
        record(&mut tx, Some(actor), action, Some(server.owner_id), details, now).await?;
        tx.commit().await?;
        Ok(Some(members.into_iter().map(UserId).collect()))
    }

    /// One account as staff see it.
    pub async fn admin_user(&self, id: UserId) -> Result<Option<AdminUser>> {
        let row = sqlx::query(&format!("SELECT {ADMIN_USER_COLUMNS} FROM users u WHERE u.id = $1"))
            .bind(id.0)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(admin_user).transpose()
    }

    /// Ends every session of `user` (their devices go, as at a logout), audited as `action`
    /// by `actor`, whose role is `actor_role`; with `disable`, the account is disabled first
    /// (or enabled again with `Some(false)`, ending nothing). The account must still be below
    /// `actor_role` and, to disable or enable, not be so already: `Ok(None)` when it changed
    /// meanwhile (nothing is done). Returns the sessions ended.
    pub async fn staff_action(
        &self,
        actor: UserId,
        actor_role: PlatformRole,
        user: UserId,
        action: PlatformAction,
        disable: Option<bool>,
        now: i64,
    ) -> Result<Option<Vec<SessionId>>> {
        let mut tx = self.pool().begin().await?;
        // The checks and the change in one statement (a write first): a role or a state that
        // changed since the caller looked is not acted on.
        let (set, state) = match disable {
            Some(true) => ("disabled_at = $2, ", " AND disabled_at IS NULL"),
            Some(false) => ("disabled_at = NULL, ", " AND disabled_at IS NOT NULL"),
            None => ("", ""),
        };
        let done = sqlx::query(&format!("UPDATE users SET {set}updated_at = $2 WHERE id = $1 AND {BELOW}{state}"))
            .bind(user.0)
            .bind(now)
            .bind(actor_role.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let ended = if disable == Some(false) {
            Vec::new()
        } else {
            super::accounts::end_sessions(&mut tx, self.kind(), user, None).await?
        };
        let details = serde_json::json!({"sessions_ended": ended.len()});
        record(&mut tx, Some(actor), action, Some(user), details, now).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    /// Sets `user`'s platform role, audited, if the account is still below `actor_role`.
    /// Returns the role before (`None`: no such account below the actor any more).
    pub async fn set_platform_role(
        &self,
        actor: UserId,
        actor_role: PlatformRole,
        user: UserId,
        role: PlatformRole,
        now: i64,
    ) -> Result<Option<PlatformRole>> {
        let mut tx = self.pool().begin().await?;
        // A write first (see the module of `Store`), with the check.
        let touched = sqlx::query(&format!("UPDATE users SET updated_at = $2 WHERE id = $1 AND {BELOW}"))
            .bind(user.0)
            .bind(now)
            .bind(actor_role.as_str())
            .execute(&mut *tx)
            .await?;
        if touched.rows_affected() == 0 {
            return Ok(None);
        }
        let before = apply_role(&mut tx, Some(actor), user, role, now).await?;
        tx.commit().await?;
        Ok(Some(before))
    }

    /// The servers `user` is a member of without owning them, and the group DMs they are in
    /// (what they leave, with the usual events, before their account is deleted).
    pub async fn memberships(&self, user: UserId) -> Result<(Vec<ServerId>, Vec<ChannelId>)> {
        let servers: Vec<i64> = sqlx::query_scalar(
            "SELECT m.server_id FROM members m JOIN servers s ON s.id = m.server_id WHERE m.user_id = $1 AND s.owner_id <> $1 \
             ORDER BY m.server_id",
        )
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        let dms: Vec<i64> = sqlx::query_scalar("SELECT channel_id FROM channel_members WHERE user_id = $1 ORDER BY channel_id")
            .bind(user.0)
            .fetch_all(self.pool())
            .await?;
        Ok((servers.into_iter().map(ServerId).collect(), dms.into_iter().map(ChannelId).collect()))
    }

    /// Ends every session of `user` (its devices stay); the sessions ended.
    pub async fn end_all_sessions(&self, user: UserId) -> Result<Vec<SessionId>> {
        let mut tx = self.pool().begin().await?;
        let ended = super::accounts::end_sessions(&mut tx, self.kind(), user, None).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Whether `user` owns a taken-down server (which deleting it would delete: see
    /// [`Store::delete_account`]).
    pub async fn owns_taken_down_server(&self, user: UserId) -> Result<bool> {
        owns_taken_down(&mut *self.pool().acquire().await?, user).await
    }

    /// Deletes an account with its data, in one transaction, audited as `action` by `actor`
    /// (`None`: the server itself, as for an expired guest): the servers it owns with
    /// everything in them, its channel messages and the replies in threads it started, its
    /// reactions, overwrites, roles, devices, keys, sessions, queue, link requests and its
    /// account bans (its clients' bans stay). `None` when it is not (any more) below
    /// `actor_role`; [`StoreError::OwnsTakenDownServer`] when it owns a taken-down server, kept
    /// whole for whoever judges it.
    pub async fn delete_account(
        &self,
        actor: Option<UserId>,
        actor_role: PlatformRole,
        user: UserId,
        action: PlatformAction,
        now: i64,
    ) -> Result<Option<AccountRemoval>> {
        let mut tx = self.pool().begin().await?;
        if self.kind() == super::DbKind::Postgres {
            // A key lock: rows that would name the account (a server it creates, a message it
            // sends) wait for this transaction, then fail on the missing account.
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(user.0).execute(&mut *tx).await?;
        }
        let Some(username) = sqlx::query_scalar::<_, String>(&format!(
            "UPDATE users SET updated_at = $2 WHERE id = $1 AND {BELOW} RETURNING username"
        ))
        .bind(user.0)
        .bind(now)
        .bind(actor_role.as_str())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        // Its servers' rows first: a take-down of one of them waits for this transaction, or
        // this one sees it (a server taken down meanwhile is never deleted).
        sqlx::query("UPDATE servers SET owner_id = owner_id WHERE owner_id = $1").bind(user.0).execute(&mut *tx).await?;
        if owns_taken_down(&mut tx, user).await? {
            return Err(StoreError::OwnsTakenDownServer);
        }
        let mut removal = AccountRemoval { username, ..AccountRemoval::default() };
        // Its devices and sessions first (the channels it reads get a new view on the way).
        removal.sessions = super::accounts::end_sessions(&mut tx, self.kind(), user, None).await?;
        let owned: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM servers WHERE owner_id = $1 ORDER BY id").bind(user.0).fetch_all(&mut *tx).await?;
        for server in owned {
            let members: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM members WHERE server_id = $1 AND user_id <> $2")
                .bind(server)
                .bind(user.0)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM member_roles WHERE server_id = $1").bind(server).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM servers WHERE id = $1").bind(server).execute(&mut *tx).await?;
            removal.servers.push((ServerId(server), members.into_iter().map(UserId).collect()));
        }
        // Its messages, and the replies in threads it started (as deleting one message does),
        // then its reactions elsewhere.
        removal.messages = super::servers::delete_messages_of(&mut tx, user, None, i64::MIN).await?;
        sqlx::query("DELETE FROM reactions WHERE user_id = $1").bind(user.0).execute(&mut *tx).await?;
        for sql in [
            "DELETE FROM overwrites WHERE kind = 'member' AND target_id = $1",
            "DELETE FROM member_roles WHERE user_id = $1",
            "DELETE FROM one_time_prekeys WHERE user_id = $1",
            "DELETE FROM device_keys WHERE user_id = $1",
            "DELETE FROM envelopes WHERE user_id = $1",
            "DELETE FROM envelope_queues WHERE user_id = $1",
            "DELETE FROM link_requests WHERE user_id = $1",
            "DELETE FROM platform_bans WHERE user_id = $1 AND fingerprint IS NULL",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(sql).bind(user.0).execute(&mut *tx).await?;
        }
        let details = serde_json::json!({
            "username": removal.username,
            "servers_deleted": removal.servers.len(),
            "messages_deleted": removal.messages.len(),
            "sessions_ended": removal.sessions.len(),
        });
        record(&mut tx, actor, action, Some(user), details, now).await?;
        tx.commit().await?;
        Ok(Some(removal))
    }

    /// What the database holds.
    pub async fn contents(&self) -> Result<Contents> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM servers), (SELECT COUNT(*) FROM channels), \
             (SELECT COUNT(*) FROM channel_messages), (SELECT COUNT(*) FROM envelopes), (SELECT COUNT(*) FROM sessions)",
        )
        .fetch_one(self.pool())
        .await?;
        let bytes: i64 = match self.kind() {
            super::DbKind::Sqlite => {
                sqlx::query_scalar("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
                    .fetch_one(self.pool())
                    .await?
            }
            super::DbKind::Postgres => {
                sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(self.pool()).await?
            }
        };
        Ok(Contents {
            users: row.try_get(0)?,
            servers: row.try_get(1)?,
            channels: row.try_get(2)?,
            messages: row.try_get(3)?,
            envelopes: row.try_get(4)?,
            sessions: row.try_get(5)?,
            bytes,
        })
    }

    /// A consistent copy of a SQLite database into the new file `path` (`VACUUM INTO`: one
    /// read transaction, while writers go on).
    pub async fn snapshot_into(&self, path: &str) -> Result<()> {
        sqlx::query("VACUUM INTO $1").bind(path).execute(self.pool()).await?;
        Ok(())
    }

    /// SQLite's `PRAGMA integrity_check` (`ok` when sound).
    pub async fn integrity_check(&self) -> Result<String> {
        Ok(sqlx::query_scalar("PRAGMA integrity_check").fetch_one(self.pool()).await?)
    }

    /// Accounts, disabled accounts, servers, and channel messages sent in `[since, until)`.
    pub async fn platform_counts(&self, since: i64, until: i64) -> Result<(i64, i64, i64, i64)> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM users WHERE disabled_at IS NOT NULL), \
             (SELECT COUNT(*) FROM servers), (SELECT COUNT(*) FROM channel_messages WHERE created_at >= $1 AND created_at < $2)",
        )
        .bind(since)
        .bind(until)
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
    }

    /// A page of the platform audit log, newest first.
    pub async fn platform_audit(
        &self,
        limit: u32,
        before: Option<i64>,
        action: Option<PlatformAction>,
        actor: Option<UserId>,
        target: Option<UserId>,
        min_severity: Option<Severity>,
    ) -> Result<PlatformAuditLog> {
        // The severities at or above the one asked for (all of them when none is).
        let severities: Vec<&str> =
            Severity::ALL.into_iter().filter(|s| min_severity.is_none_or(|m| *s >= m)).map(Severity::as_str).collect();
        let rows = sqlx::query(
            "SELECT id, action, actor_id, target_id, details, created_at, severity, ip_hash FROM platform_audit \
             WHERE id < $1 AND ($2 = '' OR action = $2) AND ($3 = 0 OR actor_id = $3) AND ($4 = 0 OR target_id = $4) \
             AND severity IN ($6, $7, $8) ORDER BY id DESC LIMIT $5",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(action.map_or("", PlatformAction::as_str))
        .bind(actor.map_or(0, |a| a.0))
        .bind(target.map_or(0, |t| t.0))
        .bind(i64::from(limit) + 1)
        .bind(severities.first().copied().unwrap_or(""))
        .bind(severities.get(1).copied().unwrap_or(""))
        .bind(severities.get(2).copied().unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() > limit as usize;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            let action: String = r.try_get(1)?;
            let details: Option<String> = r.try_get(4)?;
            entries.push(PlatformAuditEntry {
                id: r.try_get::<i64, _>(0)?.to_string(),
                action: PlatformAction::parse(&action).ok_or_else(|| StoreError::Corrupt(format!("platform action {action}")))?,
                actor_id: r.try_get::<Option<i64>, _>(2)?.map(UserId),
                target_id: r.try_get::<Option<i64>, _>(3)?.map(UserId),
                details: match details {
                    Some(d) => serde_json::from_str(&d).map_err(|_| StoreError::Corrupt("platform audit details".into()))?,
                    None => Value::Object(Map::new()),
                },
                severity: {
                    let s: String = r.try_get(6)?;
                    Severity::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("severity {s}")))?
                },
                ip_hash: r.try_get(7)?,
                created_at: r.try_get(5)?,
            });
        }
        let next_before = if more { entries.last().map(|e| e.id.clone()) } else { None };
        Ok(PlatformAuditLog { entries, next_before })
    }
}

async fn owns_taken_down(c: &mut AnyConnection, user: UserId) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE owner_id = $1 AND taken_down_at IS NOT NULL")
        .bind(user.0)
        .fetch_one(&mut *c)
        .await?;
    Ok(n > 0)
}
