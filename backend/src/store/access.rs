//! Who may do what in a server or a channel: the members, their roles and the channels'
//! overwrites, read from the database and put through the one permission function
//! ([`copains_client_core::servers::permissions`]).

use std::collections::HashMap;

use copains_client_core::servers::{permissions, ChannelKind, MemberContext, Overwrite, OverwriteKind, Permissions};
use copains_client_core::{ChannelId, RoleId, ServerId, UserId};
use sqlx::Row;

use super::{Result, Store, StoreError};

/// What `granted` leaves at `now` under a timeout ending at `timeout_until`.
pub fn under_timeout(granted: Permissions, timeout_until: Option<i64>, now: i64) -> Permissions {
    if timeout_until.is_some_and(|t| t > now) {
        granted & TIMEOUT_KEEPS
    } else {
        granted
    }
}

/// A member's standing in a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAccess {
    /// The server.
    pub server_id: ServerId,
    /// Its owner.
    pub owner_id: UserId,
    /// The member.
    pub user: UserId,
    /// When they joined (Unix milliseconds).
    pub joined_at: i64,
    /// `@everyone`'s permissions.
    pub everyone: Permissions,
    /// Their roles: id, permissions, position.
    pub roles: Vec<(RoleId, Permissions, i32)>,
    /// When their last timeout ends (Unix milliseconds), if they were ever timed out here.
    pub timeout_until: Option<i64>,
}

/// What a timed-out member keeps: they see the channels and may listen in voice, nothing more
/// (no sending, reacting, speaking, streaming, or moderating).
pub const TIMEOUT_KEEPS: Permissions = Permissions(Permissions::VIEW_CHANNEL.0 | Permissions::CONNECT.0);

impl ServerAccess {
    /// Whether the member owns the server.
    pub fn is_owner(&self) -> bool {
        self.owner_id == self.user
    }

    /// Position of their highest role (`@everyone` is 0; the owner outranks every role).
    pub fn top(&self) -> i32 {
        if self.is_owner() {
            i32::MAX
        } else {
            self.roles.iter().map(|r| r.2).max().unwrap_or(0)
        }
    }

    fn roles_only(&self) -> Vec<(RoleId, Permissions)> {
        self.roles.iter().map(|r| (r.0, r.1)).collect()
    }

    /// Server-wide permissions (as a timeout leaves them, while one runs).
    pub fn permissions(&self) -> Permissions {
        let roles = self.roles_only();
        self.timed(permissions(self.server_id, self.context(&roles), None))
    }

    /// Permissions in a channel with these overwrites (as a timeout leaves them).
    pub fn channel_permissions(&self, overwrites: &[Overwrite]) -> Permissions {
        let roles = self.roles_only();
        self.timed(permissions(self.server_id, self.context(&roles), Some(overwrites)))
    }

    /// Whether a timeout holds the member now. The owner and administrators are above timeouts.
    pub fn timed_out(&self) -> bool {
        self.timeout_binding().is_some_and(|t| t > super::now_ms())
    }

    /// The end of the member's timeout if one may hold them (never for the owner or an
    /// administrator), whether or not it has passed.
    pub fn timeout_binding(&self) -> Option<i64> {
        self.timeout_until.filter(|_| !self.is_owner() && !self.is_admin())
    }

    /// Permissions in a channel with these overwrites, as granted, a timeout notwithstanding
    /// (for what is kept and checked later against the time, as channel views are).
    pub fn granted_channel_permissions(&self, overwrites: &[Overwrite]) -> Permissions {
        let roles = self.roles_only();
        permissions(self.server_id, self.context(&roles), Some(overwrites))
    }

    /// Whether the member is an administrator (by `@everyone` or a role).
    pub fn is_admin(&self) -> bool {
        self.everyone.contains(Permissions::ADMINISTRATOR) || self.roles.iter().any(|r| r.1.contains(Permissions::ADMINISTRATOR))
    }

    fn timed(&self, p: Permissions) -> Permissions {
        under_timeout(p, self.timeout_binding(), super::now_ms())
    }

    fn context<'a>(&self, roles: &'a [(RoleId, Permissions)]) -> MemberContext<'a> {
        MemberContext { user: self.user, is_owner: self.is_owner(), everyone: self.everyone, roles }
    }

    /// Whether the member may act on another member (kick, ban, set roles): the owner may on
    /// anyone else; others on members whose highest role is below their own, never the owner.
    pub fn outranks(&self, other: &ServerAccess) -> bool {
        other.user != self.user && !other.is_owner() && (self.is_owner() || self.top() > other.top())
    }
}

/// What a user may do in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAccess {
    /// The channel.
    pub channel_id: ChannelId,
    /// Its server (`None`: a group DM).
    pub server_id: Option<ServerId>,
    /// Its kind.
    pub kind: ChannelKind,
    /// Its current view number (see `copains_client_core::channel_messages`).
    pub view: i64,
    /// The user's permissions there (never empty: a channel one may not view is not found).
    pub permissions: Permissions,
    /// When the user joined the server (or the group DM): history starts there.
    pub joined_at: i64,
    /// The user's standing in the server (`None` in a group DM).
    pub server: Option<ServerAccess>,
}

/// What members of a group DM may do.
pub const GROUP_DM_PERMISSIONS: Permissions = Permissions(
    Permissions::VIEW_CHANNEL.0
        | Permissions::SEND_MESSAGES.0
        | Permissions::ADD_REACTIONS.0
        | Permissions::CONNECT.0
        | Permissions::SPEAK.0
        | Permissions::STREAM.0,
);

pub(crate) fn channel_kind(raw: &str) -> Result<ChannelKind> {
    Ok(match raw {
        "text" => ChannelKind::Text,
        "voice" => ChannelKind::Voice,
        "category" => ChannelKind::Category,
        "group_dm" => ChannelKind::GroupDm,
        other => return Err(StoreError::Corrupt(format!("channel kind {other}"))),
    })
}

/// The stored name of a channel kind.
pub fn channel_kind_name(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Text => "text",
        ChannelKind::Voice => "voice",
        ChannelKind::Category => "category",
        ChannelKind::GroupDm => "group_dm",
    }
}

pub(crate) fn overwrite_kind(raw: &str) -> Result<OverwriteKind> {
    match raw {
        "role" => Ok(OverwriteKind::Role),
        "member" => Ok(OverwriteKind::Member),
        other => Err(StoreError::Corrupt(format!("overwrite kind {other}"))),
    }
}

/// The stored name of an overwrite kind.
pub fn overwrite_kind_name(kind: OverwriteKind) -> &'static str {
    match kind {
        OverwriteKind::Role => "role",
        OverwriteKind::Member => "member",
    }
}

fn perms(raw: i64) -> Permissions {
    Permissions(raw as u64) & Permissions::ALL
}

impl Store {
    /// A member's standing in a server; `None` if the server does not exist, was taken down, or
    /// they are not a member (the same to callers: no existence leak).
    pub async fn server_access(&self, server: ServerId, user: UserId) -> Result<Option<ServerAccess>> {
        let Some(row) = sqlx::query(
            "SELECT s.owner_id, m.joined_at, r.permissions, t.ends_at FROM servers s \
             JOIN members m ON m.server_id = s.id AND m.user_id = $2 \
             JOIN roles r ON r.id = s.id \
             LEFT JOIN member_timeouts t ON t.server_id = s.id AND t.user_id = $2 WHERE s.id = $1 AND s.taken_down_at IS NULL",
        )
        .bind(server.0)
        .bind(user.0)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let roles = sqlx::query(
            "SELECT r.id, r.permissions, r.position FROM member_roles mr JOIN roles r ON r.id = mr.role_id \
             WHERE mr.server_id = $1 AND mr.user_id = $2",
        )
        .bind(server.0)
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        Ok(Some(ServerAccess {
            server_id: server,
            owner_id: UserId(row.try_get(0)?),
            user,
            joined_at: row.try_get(1)?,
            everyone: perms(row.try_get(2)?),
            roles: roles
                .iter()
                .map(|r| Ok((RoleId(r.try_get(0)?), perms(r.try_get(1)?), r.try_get::<i64, _>(2)? as i32)))
                .collect::<Result<_>>()?,
            timeout_until: row.try_get(3)?,
        }))
    }

    /// A channel's overwrites.
    pub async fn overwrites(&self, channel: ChannelId) -> Result<Vec<Overwrite>> {
        let rows = sqlx::query(
            "SELECT target_id, kind, allow_bits, deny_bits FROM overwrites WHERE channel_id = $1 ORDER BY kind, target_id",
        )
        .bind(channel.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Overwrite {
                    id: r.try_get(0)?,
                    kind: overwrite_kind(&r.try_get::<String, _>(1)?)?,
                    allow: perms(r.try_get(2)?),
                    deny: perms(r.try_get(3)?),
                })
            })
            .collect()
    }

    /// What `user` may do in `channel`; `None` if it does not exist or they may not view it
    /// (the same answer: no existence leak).
    pub async fn channel_access(&self, channel: ChannelId, user: UserId) -> Result<Option<ChannelAccess>> {
        let Some(row) = sqlx::query("SELECT server_id, kind, view FROM channels WHERE id = $1")
            .bind(channel.0)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let server: Option<i64> = row.try_get(0)?;
        let kind = channel_kind(&row.try_get::<String, _>(1)?)?;
        let view: i64 = row.try_get(2)?;
        match server {
            None => {
                let joined: Option<i64> =
                    sqlx::query_scalar("SELECT joined_at FROM channel_members WHERE channel_id = $1 AND user_id = $2")
                        .bind(channel.0)
                        .bind(user.0)
                        .fetch_optional(self.pool())
                        .await?;
                Ok(joined.map(|joined_at| ChannelAccess {
                    channel_id: channel,
                    server_id: None,
                    kind,
                    view,
                    permissions: GROUP_DM_PERMISSIONS,
                    joined_at,
                    server: None,
                }))
            }
            Some(server) => {
                let Some(access) = self.server_access(ServerId(server), user).await? else { return Ok(None) };
                let permissions = access.channel_permissions(&self.overwrites(channel).await?);
                if !permissions.contains(Permissions::VIEW_CHANNEL) {
                    return Ok(None);
                }
                Ok(Some(ChannelAccess {
                    channel_id: channel,
                    server_id: Some(ServerId(server)),
                    kind,
                    view,
                    permissions,
                    joined_at: access.joined_at,
                    server: Some(access),
                }))
            }
        }
    }

    /// The users who may read `channel` now (members who may view it, or the members of a
    /// group DM), sorted.
    pub async fn channel_readers(&self, channel: ChannelId) -> Result<Vec<UserId>> {
        let Some(server) = sqlx::query_scalar::<_, Option<i64>>("SELECT server_id FROM channels WHERE id = $1")
            .bind(channel.0)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(Vec::new());
        };
        let Some(server) = server else {
            let users: Vec<i64> =
                sqlx::query_scalar("SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id")
                    .bind(channel.0)
                    .fetch_all(self.pool())
                    .await?;
            return Ok(users.into_iter().map(UserId).collect());
        };
        let server = ServerId(server);
        let overwrites = self.overwrites(channel).await?;
        let mut readers = Vec::new();
        for access in self.all_server_access(server).await? {
            if access.channel_permissions(&overwrites).contains(Permissions::VIEW_CHANNEL) {
                readers.push(access.user);
            }
        }
        readers.sort();
        Ok(readers)
    }

    /// Every member's standing in `server`, sorted by user (three queries, whatever the size).
    pub async fn all_server_access(&self, server: ServerId) -> Result<Vec<ServerAccess>> {
        let Some(head) =
            sqlx::query(
                "SELECT s.owner_id, r.permissions FROM servers s JOIN roles r ON r.id = s.id WHERE s.id = $1 AND s.taken_down_at IS NULL",
            )
                .bind(server.0)
                .fetch_optional(self.pool())
                .await?
        else {
            return Ok(Vec::new());
        };
        let owner = UserId(head.try_get(0)?);
        let everyone = perms(head.try_get(1)?);
        let mut roles: HashMap<i64, Vec<(RoleId, Permissions, i32)>> = HashMap::new();
        for r in sqlx::query(
            "SELECT mr.user_id, r.id, r.permissions, r.position FROM member_roles mr JOIN roles r ON r.id = mr.role_id \
             WHERE mr.server_id = $1",
        )
        .bind(server.0)
        .fetch_all(self.pool())
        .await?
        {
            roles.entry(r.try_get(0)?).or_default().push((
                RoleId(r.try_get(1)?),
                perms(r.try_get(2)?),
                r.try_get::<i64, _>(3)? as i32,
            ));
        }
        let mut timeouts: HashMap<i64, i64> = HashMap::new();
        for t in sqlx::query("SELECT user_id, ends_at FROM member_timeouts WHERE server_id = $1 AND ends_at > $2")
            .bind(server.0)
            .bind(super::now_ms())
            .fetch_all(self.pool())
            .await?
        {
            timeouts.insert(t.try_get(0)?, t.try_get(1)?);
        }
        let members = sqlx::query("SELECT user_id, joined_at FROM members WHERE server_id = $1 ORDER BY user_id")
            .bind(server.0)
            .fetch_all(self.pool())
            .await?;
        members
            .iter()
            .map(|m| {
                let user: i64 = m.try_get(0)?;
                Ok(ServerAccess {
                    server_id: server,
                    owner_id: owner,
                    user: UserId(user),
                    joined_at: m.try_get(1)?,
                    everyone,
                    roles: roles.remove(&user).unwrap_or_default(),
                    timeout_until: timeouts.remove(&user),
                })
            })
            .collect()
    }
}
