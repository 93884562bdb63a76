//! Friends, requests and blocks; presence choices; read states.
//!
//! A relationship is one row per direction (`relationships`): `friend` on both sides, a request
//! `outgoing` for the asker and `incoming` for the asked, a block `blocked` for the blocker
//! alone. Every change of a pair happens in one transaction that starts with a write.

use copains_client_core::social::{
    CustomStatus, DmReadState, NotificationLevel, NotificationSettings, PresenceSettings, PresenceStatus, ReadState,
    Relationship, RelationshipKind, SetNotificationSettings, BLOCKS_MAX, INCOMING_REQUESTS_MAX, OUTGOING_REQUESTS_MAX,
    RELATIONSHIPS_MAX,
};
use copains_client_core::{ChannelId, MessageId, UserId};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::servers::public_user_at;
use super::{u32_of, Result, Store, StoreError};

/// Why a friend request or an acceptance was refused.
#[derive(Debug, thiserror::Error)]
pub enum RelationshipError {
    /// One of the two blocked the other.
    #[error("blocked")]
    Blocked,
    /// The current user blocked the other.
    #[error("you blocked this user")]
    YouBlocked,
    /// Already friends.
    #[error("already friends")]
    AlreadyFriends,
    /// No request from that user to accept.
    #[error("no such request")]
    NoRequest,
    /// One side holds [`RELATIONSHIPS_MAX`] friends and requests, or the asker
    /// [`OUTGOING_REQUESTS_MAX`] pending requests, or the blocker [`BLOCKS_MAX`] blocks.
    #[error("too many relationships")]
    TooMany,
    /// The asked user holds [`INCOMING_REQUESTS_MAX`] requests waiting for an answer.
    #[error("too many incoming requests")]
    TooManyIncoming,
    /// A database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RelationshipError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// What a friend request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new request is pending.
    Sent,
    /// The request was already pending: nothing changed.
    AlreadySent,
    /// The other had asked first: now friends.
    Accepted,
}

/// What removing a relationship ended, seen from each side: the caller's former kind and the
/// other's (`None` where that side held no row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The caller's row that went.
    pub mine: Option<RelationshipKind>,
    /// The other's row that went.
    pub theirs: Option<RelationshipKind>,
}

/// What a block did: the other's row about the blocker that went (a friendship or request
/// ended on their side), if any, and the blocker's former kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// The blocker's row before.
    pub mine_before: Option<RelationshipKind>,
    /// The blocked user's row about the blocker that was removed.
    pub theirs_removed: Option<RelationshipKind>,
}

fn relationship(r: &AnyRow) -> Result<Relationship> {
    let kind: String = r.try_get(0)?;
    Ok(Relationship { kind: kind_of(&kind)?, since: r.try_get(1)?, user: public_user_at(r, 2)? })
}

fn kind_of(raw: &str) -> Result<RelationshipKind> {
    RelationshipKind::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("relationship kind {raw:?}")))
}

async fn row_kind(tx: &mut Transaction<'_, Any>, user: UserId, other: UserId) -> Result<Option<RelationshipKind>> {
    let raw: Option<String> = sqlx::query_scalar("SELECT kind FROM relationships WHERE user_id = $1 AND other_id = $2")
        .bind(user.0)
        .bind(other.0)
        .fetch_optional(&mut **tx)
        .await?;
    raw.as_deref().map(kind_of).transpose()
}

async fn put_row(tx: &mut Transaction<'_, Any>, user: UserId, other: UserId, kind: RelationshipKind, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO relationships (user_id, other_id, kind, since) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, other_id) DO UPDATE SET kind = excluded.kind, since = excluded.since",
    )
    .bind(user.0)
    .bind(other.0)
    .bind(kind.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn delete_row(tx: &mut Transaction<'_, Any>, user: UserId, other: UserId) -> Result<()> {
    sqlx::query("DELETE FROM relationships WHERE user_id = $1 AND other_id = $2")
        .bind(user.0)
        .bind(other.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn count(tx: &mut Transaction<'_, Any>, user: UserId, kind: Option<RelationshipKind>) -> Result<usize> {
    let n: i64 = match kind {
        Some(kind) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM relationships WHERE user_id = $1 AND kind = $2")
                .bind(user.0)
                .bind(kind.as_str())
                .fetch_one(&mut **tx)
                .await?
        }
        None => {
            sqlx::query_scalar("SELECT COUNT(*) FROM relationships WHERE user_id = $1").bind(user.0).fetch_one(&mut **tx).await?
        }
    };
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Starts a transaction on the pair with a write to both users' rows, smaller id first: SQLite
/// takes its write lock at once (see the module docs of `store`), PostgreSQL locks the two rows
/// in one order for everyone, so two changes of a pair (or of one user's counts) run one after
/// the other instead of deadlocking or both passing a cap.
async fn begin_pair(store: &Store, user: UserId, other: UserId) -> Result<Transaction<'static, Any>> {
    let mut tx = store.pool().begin().await?;
    let (first, second) = if user.0 <= other.0 { (user, other) } else { (other, user) };
    for id in [first, second] {
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
    }
    Ok(tx)
}

const AUDIENCE: &str = "SELECT other_id FROM relationships WHERE user_id = $1 AND kind = 'friend' \
     UNION SELECT m2.user_id FROM members m1 JOIN members m2 ON m2.server_id = m1.server_id \
       WHERE m1.user_id = $1 AND m2.user_id <> $1 \
     UNION SELECT c2.user_id FROM channel_members c1 JOIN channel_members c2 ON c2.channel_id = c1.channel_id \
       WHERE c1.user_id = $1 AND c2.user_id <> $1 \
     EXCEPT SELECT other_id FROM relationships WHERE user_id = $1 AND kind = 'blocked' \
     EXCEPT SELECT user_id FROM relationships WHERE other_id = $1 AND kind = 'blocked'";

impl Store {
    /// The user's relationships, the other user with each, oldest first.
    pub async fn relationships(&self, user: UserId) -> Result<Vec<Relationship>> {
        let rows = sqlx::query(
            "SELECT r.kind, r.since, u.id, u.username, u.display_name, u.status_text FROM relationships r \
             JOIN users u ON u.id = r.other_id WHERE r.user_id = $1 ORDER BY r.since, r.other_id",
        )
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(relationship).collect()
    }

    /// One relationship of the user, with the other user.
    pub async fn relationship(&self, user: UserId, other: UserId) -> Result<Option<Relationship>> {
        let row = sqlx::query(
            "SELECT r.kind, r.since, u.id, u.username, u.display_name, u.status_text FROM relationships r \
             JOIN users u ON u.id = r.other_id WHERE r.user_id = $1 AND r.other_id = $2",
        )
        .bind(user.0)
        .bind(other.0)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(relationship).transpose()
    }

    /// Whether `a` blocked `b`, and whether `b` blocked `a`.
    pub async fn blocks(&self, a: UserId, b: UserId) -> Result<(bool, bool)> {
        let blockers: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM relationships WHERE kind = 'blocked' AND \
             ((user_id = $1 AND other_id = $2) OR (user_id = $2 AND other_id = $1))",
        )
        .bind(a.0)
        .bind(b.0)
        .fetch_all(self.pool())
        .await?;
        Ok((blockers.contains(&a.0), blockers.contains(&b.0)))
    }

    /// The users who blocked `user`.
    pub async fn blockers_of(&self, user: UserId) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM relationships WHERE other_id = $1 AND kind = 'blocked'")
            .bind(user.0)
            .fetch_all(self.pool())
            .await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    /// `user` asks `other` to be friends (or accepts, if `other` asked first).
    pub async fn request_friend(
        &self,
        user: UserId,
        other: UserId,
        now: i64,
    ) -> std::result::Result<RequestOutcome, RelationshipError> {
        let mut tx = begin_pair(self, user, other).await?;
        let mine = row_kind(&mut tx, user, other).await?;
        let theirs = row_kind(&mut tx, other, user).await?;
        let outcome = match (mine, theirs) {
            (Some(RelationshipKind::Blocked), _) => return Err(RelationshipError::YouBlocked),
            (_, Some(RelationshipKind::Blocked)) => return Err(RelationshipError::Blocked),
            (Some(RelationshipKind::Friend), _) => return Err(RelationshipError::AlreadyFriends),
            (Some(RelationshipKind::Outgoing), _) => RequestOutcome::AlreadySent,
            (Some(RelationshipKind::Incoming), _) => {
                put_row(&mut tx, user, other, RelationshipKind::Friend, now).await?;
                put_row(&mut tx, other, user, RelationshipKind::Friend, now).await?;
                RequestOutcome::Accepted
            }
            (None, _) => {
                if count(&mut tx, user, Some(RelationshipKind::Outgoing)).await? >= OUTGOING_REQUESTS_MAX
                    || count(&mut tx, user, None).await? >= RELATIONSHIPS_MAX
                {
                    return Err(RelationshipError::TooMany);
                }
                // Strangers cannot fill someone's list: requests waiting for them have a cap of
                // their own, and blocks are never counted with friends.
                if count(&mut tx, other, Some(RelationshipKind::Incoming)).await? >= INCOMING_REQUESTS_MAX
                    || count(&mut tx, other, None).await? >= RELATIONSHIPS_MAX
                {
                    return Err(RelationshipError::TooManyIncoming);
                }
                put_row(&mut tx, user, other, RelationshipKind::Outgoing, now).await?;
                put_row(&mut tx, other, user, RelationshipKind::Incoming, now).await?;
                RequestOutcome::Sent
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// `user` accepts `other`'s request. Accepting a friend again is a no-op (`Ok(false)`).
    pub async fn accept_friend(&self, user: UserId, other: UserId, now: i64) -> std::result::Result<bool, RelationshipError> {
        let mut tx = begin_pair(self, user, other).await?;
        match row_kind(&mut tx, user, other).await? {
            Some(RelationshipKind::Incoming) => {}
            Some(RelationshipKind::Friend) => return Ok(false),
            Some(RelationshipKind::Blocked) => return Err(RelationshipError::YouBlocked),
            _ => return Err(RelationshipError::NoRequest),
        }
        put_row(&mut tx, user, other, RelationshipKind::Friend, now).await?;
        put_row(&mut tx, other, user, RelationshipKind::Friend, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `user` blocks `other`: whatever `user` had with them becomes a block, and `other`'s
    /// friendship or request with `user` ends (a block of their own stays). Blocks have their own
    /// cap, [`BLOCKS_MAX`], so that a full list of friends never stops one.
    pub async fn block(&self, user: UserId, other: UserId, now: i64) -> std::result::Result<Blocked, RelationshipError> {
        let mut tx = begin_pair(self, user, other).await?;
        let mine_before = row_kind(&mut tx, user, other).await?;
        let theirs = row_kind(&mut tx, other, user).await?;
        if mine_before != Some(RelationshipKind::Blocked)
            && count(&mut tx, user, Some(RelationshipKind::Blocked)).await? >= BLOCKS_MAX
        {
            return Err(RelationshipError::TooMany);
        }
        if mine_before != Some(RelationshipKind::Blocked) {
            put_row(&mut tx, user, other, RelationshipKind::Blocked, now).await?;
        }
        let theirs_removed = match theirs {
            Some(RelationshipKind::Blocked) | None => None,
            Some(kind) => {
                delete_row(&mut tx, other, user).await?;
                Some(kind)
            }
        };
        tx.commit().await?;
        Ok(Blocked { mine_before, theirs_removed })
    }

    /// Ends `user`'s relationship with `other`: a friendship (both sides), a request either way
    /// (both sides), or `user`'s block (their side alone).
    pub async fn remove_relationship(&self, user: UserId, other: UserId) -> Result<Removed> {
        let mut tx = begin_pair(self, user, other).await?;
        let mine = row_kind(&mut tx, user, other).await?;
        let theirs = row_kind(&mut tx, other, user).await?;
        let mut removed = Removed { mine: None, theirs: None };
        if let Some(kind) = mine {
            delete_row(&mut tx, user, other).await?;
            removed.mine = Some(kind);
            // The other side of a friendship or a request goes with it; their block stays.
            if kind != RelationshipKind::Blocked && theirs.is_some_and(|t| t != RelationshipKind::Blocked) {
                delete_row(&mut tx, other, user).await?;
                removed.theirs = theirs;
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Everyone who may see `user`'s presence, which is also everyone whose presence `user`
    /// may see: friends, members of a server or group DM shared with them, less anyone
    /// blocked either way.
    pub async fn presence_audience(&self, user: UserId) -> Result<Vec<UserId>> {
        let ids: Vec<i64> = sqlx::query_scalar(AUDIENCE).bind(user.0).fetch_all(self.pool()).await?;
        Ok(ids.into_iter().map(UserId).collect())
    }

    /// The members of the given roles of `server`; `None` if one of them is not a role of it.
    pub async fn role_members(
        &self,
        server: copains_client_core::ServerId,
        roles: &[copains_client_core::RoleId],
    ) -> Result<Option<Vec<UserId>>> {
        let mut members = Vec::new();
        for role in roles {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM roles WHERE id = $1 AND server_id = $2")
                .bind(role.0)
                .bind(server.0)
                .fetch_optional(self.pool())
                .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let ids: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM member_roles WHERE server_id = $1 AND role_id = $2")
                .bind(server.0)
                .bind(role.0)
                .fetch_all(self.pool())
                .await?;
            members.extend(ids.into_iter().map(UserId));
        }
        Ok(Some(members))
    }

    /// Whether `a` and `b` may see each other's presence: friends, or sharing a server or a
    /// group DM, and no block either way.
    pub async fn sees_presence(&self, a: UserId, b: UserId) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM relationships WHERE kind = 'blocked' AND \
               ((user_id = $1 AND other_id = $2) OR (user_id = $2 AND other_id = $1))) THEN 0 \
             WHEN EXISTS (SELECT 1 FROM relationships WHERE user_id = $1 AND other_id = $2 AND kind = 'friend') \
               OR EXISTS (SELECT 1 FROM members m1 JOIN members m2 ON m2.server_id = m1.server_id \
                 WHERE m1.user_id = $1 AND m2.user_id = $2) \
               OR EXISTS (SELECT 1 FROM channel_members c1 JOIN channel_members c2 ON c2.channel_id = c1.channel_id \
                 WHERE c1.user_id = $1 AND c2.user_id = $2) THEN 1 ELSE 0 END",
        )
        .bind(a.0)
        .bind(b.0)
        .fetch_one(self.pool())
        .await?;
        Ok(n == 1)
    }

    /// What `user` chose to be seen as (no row: online, no custom status). A custom status
    /// that ended by `now` is left out.
    pub async fn presence_settings(&self, user: UserId, now: i64) -> Result<PresenceSettings> {
        let row = sqlx::query("SELECT status, custom_text, custom_expires_at FROM presence_settings WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(self.pool())
            .await?;
        let Some(r) = row else { return Ok(PresenceSettings::default()) };
        let raw: String = r.try_get(0)?;
        let status = PresenceStatus::parse(&raw)
            .filter(|s| *s != PresenceStatus::Offline)
            .ok_or_else(|| StoreError::Corrupt(format!("presence status {raw:?}")))?;
        let text: Option<String> = r.try_get(1)?;
        let expires_at: Option<i64> = r.try_get(2)?;
        let custom_status = text.map(|text| CustomStatus { text, expires_at }).filter(|c| c.expires_at.is_none_or(|e| e > now));
        Ok(PresenceSettings { status, custom_status })
    }

    /// Saves what `user` chose to be seen as.
    pub async fn set_presence_settings(&self, user: UserId, settings: &PresenceSettings) -> Result<()> {
        let custom = settings.custom_status.as_ref();
        sqlx::query(
            "INSERT INTO presence_settings (user_id, status, custom_text, custom_expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, custom_text = excluded.custom_text, \
             custom_expires_at = excluded.custom_expires_at",
        )
        .bind(user.0)
        .bind(settings.status.as_str())
        .bind(custom.map(|c| c.text.clone()))
        .bind(custom.and_then(|c| c.expires_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Moves `user`'s read marker in `channel` forward to `message` (never back); returns the
    /// marker as it now stands.
    pub async fn mark_read(&self, user: UserId, channel: ChannelId, message: MessageId, now: i64) -> Result<ReadState> {
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO read_states (user_id, channel_id, last_read_id, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, channel_id) DO UPDATE SET \
               last_read_id = CASE WHEN excluded.last_read_id > read_states.last_read_id \
                 THEN excluded.last_read_id ELSE read_states.last_read_id END, \
               updated_at = excluded.updated_at \
             RETURNING last_read_id",
        )
        .bind(user.0)
        .bind(channel.0)
        .bind(message.0)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        let mentions: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM message_mentions WHERE user_id = $1 AND channel_id = $2 AND message_id > $3",
        )
        .bind(user.0)
        .bind(channel.0)
        .bind(last)
        .fetch_one(self.pool())
        .await?;
        Ok(ReadState { channel_id: channel, last_read_id: MessageId(last), mention_count: u32_of(mentions)? })
    }

    /// `user`'s read markers and waiting mentions in channels they may still read: every
    /// channel with a marker or a mention of them.
    pub async fn read_states(&self, user: UserId) -> Result<Vec<ReadState>> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT k.channel_id, COALESCE(r.last_read_id, 0), \
               (SELECT COUNT(*) FROM message_mentions mm WHERE mm.user_id = $1 AND mm.channel_id = k.channel_id \
                  AND mm.message_id > COALESCE(r.last_read_id, 0)) \
             FROM (SELECT channel_id FROM read_states WHERE user_id = $1 \
                   UNION SELECT channel_id FROM message_mentions WHERE user_id = $1) k \
             LEFT JOIN read_states r ON r.user_id = $1 AND r.channel_id = k.channel_id \
             WHERE EXISTS (SELECT 1 FROM channels c JOIN members m ON m.server_id = c.server_id \
                       WHERE c.id = k.channel_id AND m.user_id = $1) \
               OR EXISTS (SELECT 1 FROM channel_members cm WHERE cm.channel_id = k.channel_id AND cm.user_id = $1) \
             ORDER BY k.channel_id",
        )
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(c, m, n)| Ok(ReadState { channel_id: ChannelId(c), last_read_id: MessageId(m), mention_count: u32_of(n)? }))
            .collect()
    }

    /// Moves `user`'s read marker in the DM with `peer` forward to `at` (never back); `None`
    /// when it would be a new marker past `cap` of them.
    pub async fn mark_dm_read(&self, user: UserId, peer: UserId, at: i64, cap: usize) -> Result<Option<DmReadState>> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(user.0).execute(&mut *tx).await?;
        let (kept, exists): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN peer_id = $2 THEN 1 ELSE 0 END), 0) FROM dm_read_states WHERE user_id = $1",
        )
        .bind(user.0)
        .bind(peer.0)
        .fetch_one(&mut *tx)
        .await?;
        if exists == 0 && usize::try_from(kept).unwrap_or(usize::MAX) >= cap {
            return Ok(None);
        }
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO dm_read_states (user_id, peer_id, last_read_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, peer_id) DO UPDATE SET \
               last_read_at = CASE WHEN excluded.last_read_at > dm_read_states.last_read_at \
                 THEN excluded.last_read_at ELSE dm_read_states.last_read_at END \
             RETURNING last_read_at",
        )
        .bind(user.0)
        .bind(peer.0)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(DmReadState { user_id: peer, last_read_at: last }))
    }

    /// `user`'s read markers in DMs.
    pub async fn dm_read_states(&self, user: UserId) -> Result<Vec<DmReadState>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT peer_id, last_read_at FROM dm_read_states WHERE user_id = $1 ORDER BY peer_id")
                .bind(user.0)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(p, at)| DmReadState { user_id: UserId(p), last_read_at: at }).collect())
    }

    /// `user`'s notification settings that differ from the defaults (a mute that ended counts as
    /// none).
    pub async fn notification_settings(&self, user: UserId, now: i64) -> Result<Vec<NotificationSettings>> {
        let rows: Vec<(i64, Option<String>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT target_id, level, muted, muted_until FROM notification_settings WHERE user_id = $1 ORDER BY target_id",
        )
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for (target, level, muted, until) in rows {
            let level = match level {
                Some(raw) => Some(
                    NotificationLevel::parse(&raw).ok_or_else(|| StoreError::Corrupt(format!("notification level {raw:?}")))?,
                ),
                None => None,
            };
            let muted = muted != 0 && until.is_none_or(|u| u > now);
            let settings = SetNotificationSettings { level, muted, muted_until: if muted { until } else { None } };
            if settings != SetNotificationSettings::default() {
                out.push(NotificationSettings { target_id: target.to_string(), settings });
            }
        }
        Ok(out)
    }

    /// Saves `user`'s settings of a server or channel (the defaults remove the row); false when
    /// it would be a new row past `cap` of them.
    pub async fn set_notification_settings(
        &self,
        user: UserId,
        target: i64,
        settings: &SetNotificationSettings,
        cap: usize,
    ) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        if *settings == SetNotificationSettings::default() {
            sqlx::query("DELETE FROM notification_settings WHERE user_id = $1 AND target_id = $2")
                .bind(user.0)
                .bind(target)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(true);
        }
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(user.0).execute(&mut *tx).await?;
        let (kept, exists): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN target_id = $2 THEN 1 ELSE 0 END), 0) FROM notification_settings \
             WHERE user_id = $1",
        )
        .bind(user.0)
        .bind(target)
        .fetch_one(&mut *tx)
        .await?;
        if exists == 0 && usize::try_from(kept).unwrap_or(usize::MAX) >= cap {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO notification_settings (user_id, target_id, level, muted, muted_until) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, target_id) DO UPDATE SET level = excluded.level, muted = excluded.muted, \
             muted_until = excluded.muted_until",
        )
        .bind(user.0)
        .bind(target)
        .bind(settings.level.map(NotificationLevel::as_str))
        .bind(i64::from(settings.muted))
        .bind(settings.muted_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether `user` is a member of the server `id`.
    pub async fn is_member(&self, server: i64, user: UserId) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE server_id = $1 AND user_id = $2")
            .bind(server)
            .bind(user.0)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }
}
