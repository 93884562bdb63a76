//! Communities: servers, their members, roles, bans and invites, their channels, and group
//! DMs (see `copains_client_core::servers`).
//!
//! Every change is one transaction that first locks what it changes (the server's row, or the
//! group DM's), then checks the actor's standing inside that same transaction, so that two
//! concurrent changes never both pass a check the other invalidates (two joiners on the last
//! use of an invite, a role change racing a kick). Whatever may change who can read a channel
//! (membership, roles, overwrites, ownership) bumps the `view` of the channels concerned in the
//! same transaction: channel message sends carry the view they were made for.

use std::collections::{BTreeSet, HashMap, HashSet};

use copains_client_core::api::PublicUser;
use copains_client_core::servers::{
    AuditAction, Ban, Channel, ChannelKind, GuestInvite, Invite, InvitePreview, Member, Overwrite, OverwriteKind, Permissions,
    Role, Server, ServerState, CHANNELS_MAX, GROUP_DM_MAX_MEMBERS, OVERWRITES_MAX, ROLES_MAX, SERVERS_PER_USER_MAX,
};
use copains_client_core::{ChannelId, MessageId, RoleId, ServerId, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::access::{channel_kind, channel_kind_name, overwrite_kind, overwrite_kind_name};
use super::audit::{self, AuditRecord};
use super::{Result, ServerAccess, Store, StoreError};

/// Why a change to a community was refused (nothing of it was written).
#[derive(Debug, thiserror::Error)]
pub enum CommunityError {
    /// No such thing, or the caller may not see it (the same answer: no existence leak).
    #[error("{0}")]
    NotFound(&'static str),
    /// The caller sees it but lacks the permission, or acts on someone at or above them.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with the current state (a limit reached, the owner leaving).
    #[error("{0}")]
    Conflict(String),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CommunityError {
    fn from(e: sqlx::Error) -> Self {
        CommunityError::Store(StoreError::Database(e))
    }
}

type CResult<T> = std::result::Result<T, CommunityError>;

const NO_SERVER: CommunityError = CommunityError::NotFound("no such server");
const NO_CHANNEL: CommunityError = CommunityError::NotFound("no such channel");
const NO_ROLE: CommunityError = CommunityError::NotFound("no such role");
const NO_MEMBER: CommunityError = CommunityError::NotFound("no such member");
const NO_INVITE: CommunityError = CommunityError::NotFound("no such invite (unknown, expired or used up)");

/// The ids a new server needs: its own (also `@everyone`'s) and its four default channels.
#[derive(Debug, Clone, Copy)]
pub struct NewServerIds {
    /// The server.
    pub server: ServerId,
    /// The "Text channels" category.
    pub text_category: ChannelId,
    /// `general`.
    pub text: ChannelId,
    /// The "Voice channels" category.
    pub voice_category: ChannelId,
    /// The voice channel.
    pub voice: ChannelId,
}

/// A role to create or the changes to one, checked for form by the caller.
#[derive(Debug, Clone, Default)]
pub struct RoleChange {
    /// Name.
    pub name: Option<String>,
    /// Colour.
    pub color: Option<u32>,
    /// Permissions (valid bits only).
    pub permissions: Option<Permissions>,
    /// Position.
    pub position: Option<i32>,
    /// Hoisted.
    pub hoist: Option<bool>,
}

/// A server channel to create, checked for form by the caller.
#[derive(Debug, Clone)]
pub struct ChannelDraft {
    /// Its id.
    pub id: ChannelId,
    /// Normalised name.
    pub name: String,
    /// Text, voice or category.
    pub kind: ChannelKind,
    /// Its category.
    pub parent_id: Option<ChannelId>,
    /// Topic (trimmed; `None`: none).
    pub topic: Option<String>,
    /// Position (`None`: after its last sibling).
    pub position: Option<i32>,
    /// Overwrites (`None`: the category's).
    pub overwrites: Option<Vec<Overwrite>>,
    /// A voice channel's cap on participants (0: none).
    pub user_limit: u32,
}

/// Changes to a server channel, checked for form by the caller (a name is normalised for the
/// channel's kind by the store, which knows it).
#[derive(Debug, Clone, Default)]
pub struct ChannelChange {
    /// New name, as given.
    pub name: Option<String>,
    /// New topic (`Some(None)` clears it).
    pub topic: Option<Option<String>>,
    /// New position.
    pub position: Option<i32>,
    /// New category (`Some(None)`: none).
    pub parent_id: Option<Option<ChannelId>>,
    /// Every overwrite, replacing the current ones.
    pub overwrites: Option<Vec<Overwrite>>,
    /// A voice channel's new cap on participants.
    pub user_limit: Option<u32>,
}

/// What an edit of a server channel did.
#[derive(Debug, Clone)]
pub struct ChannelEdit {
    /// The channel as it was.
    pub before: Channel,
    /// The channel as it is.
    pub after: Channel,
}

/// What deleting a server channel did.
#[derive(Debug, Clone)]
pub struct ChannelRemoval {
    /// The channel as it was.
    pub channel: Channel,
    /// Its readers when it was deleted.
    pub readers: Vec<UserId>,
    /// The channels a deleted category held, now out of any category.
    pub orphans: Vec<ChannelId>,
}

/// What removing a member (leave, kick, ban) did.
#[derive(Debug, Clone, Default)]
pub struct MemberRemoval {
    /// Whether they were a member (a ban may hit a non-member).
    pub was_member: bool,
    /// The channels whose overwrites for them went with them.
    pub touched_channels: Vec<ChannelId>,
}

/// The result of following an invite.
#[derive(Debug, Clone)]
pub enum Joined {
    /// The user joined: the server (with the new member count) and them as a member.
    Joined(Server, Member),
    /// The user already was a member; the invite was not used.
    AlreadyMember(Server),
}

/// Who sees which channel of a server (see [`Store::visibility`]).
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    /// Every channel of the server.
    pub channels: HashMap<ChannelId, Channel>,
    /// For every member, the channels they may view.
    pub seen: HashMap<UserId, HashSet<ChannelId>>,
}

/// What changed in a group DM's membership.
#[derive(Debug, Clone)]
pub struct GroupDmChange {
    /// The group DM as it is now (`None`: it was deleted, its last member gone).
    pub channel: Option<Channel>,
    /// Whether anything changed (adding a member already in changes nothing).
    pub changed: bool,
}

// ---- rows ------------------------------------------------------------------------------

const CHANNEL_COLUMNS: &str = "c.id, c.server_id, c.name, c.kind, c.parent_id, c.position, c.topic, c.owner_id, \
     (SELECT MAX(m.id) FROM channel_messages m WHERE m.channel_id = c.id), c.user_limit";
const ROLE_COLUMNS: &str = "id, server_id, name, color, position, permissions, hoist";
const INVITE_COLUMNS: &str = "code, server_id, inviter_id, uses, max_uses, expires_at, created_at, guest_ttl_secs";

fn perms(raw: i64) -> Permissions {
    Permissions(raw as u64) & Permissions::ALL
}

fn i32_of(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

fn channel_row(r: &AnyRow) -> Result<Channel> {
    Ok(Channel {
        id: ChannelId(r.try_get(0)?),
        server_id: r.try_get::<Option<i64>, _>(1)?.map(ServerId),
        name: r.try_get(2)?,
        kind: channel_kind(&r.try_get::<String, _>(3)?)?,
        parent_id: r.try_get::<Option<i64>, _>(4)?.map(ChannelId),
        position: i32_of(r.try_get(5)?),
        topic: r.try_get(6)?,
        overwrites: Vec::new(),
        recipients: Vec::new(),
        owner_id: r.try_get::<Option<i64>, _>(7)?.map(UserId),
        last_message_id: r.try_get::<Option<i64>, _>(8)?.map(MessageId),
        user_limit: r.try_get::<i64, _>(9)?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

fn role_row(r: &AnyRow) -> Result<Role> {
    Ok(Role {
        id: RoleId(r.try_get(0)?),
        server_id: ServerId(r.try_get(1)?),
        name: r.try_get(2)?,
        color: u32::try_from(r.try_get::<i64, _>(3)?).unwrap_or(0),
        position: i32_of(r.try_get(4)?),
        permissions: perms(r.try_get(5)?),
        hoist: r.try_get::<i64, _>(6)? != 0,
    })
}

fn invite_row(r: &AnyRow) -> Result<Invite> {
    Ok(Invite {
        code: r.try_get(0)?,
        server_id: ServerId(r.try_get(1)?),
        inviter_id: UserId(r.try_get(2)?),
        uses: u32::try_from(r.try_get::<i64, _>(3)?).unwrap_or(u32::MAX),
        max_uses: r.try_get::<Option<i64>, _>(4)?.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        expires_at: r.try_get(5)?,
        created_at: r.try_get(6)?,
        guest_ttl_secs: r.try_get::<Option<i64>, _>(7)?.and_then(|v| u64::try_from(v).ok()),
    })
}

pub(crate) fn public_user_at(r: &AnyRow, at: usize) -> Result<PublicUser> {
    Ok(PublicUser {
        id: UserId(r.try_get(at)?),
        username: r.try_get(at + 1)?,
        display_name: r.try_get(at + 2)?,
        status_text: r.try_get(at + 3)?,
    })
}

/// `a, b, c` of integer ids, for an `IN (…)` list (ids are integers: the list is the SQL).
fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let list: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if list.is_empty() {
        "NULL".to_owned()
    } else {
        list.join(", ")
    }
}

/// Whether `access` may view a channel with these overwrites.
pub fn may_view(access: &ServerAccess, overwrites: &[Overwrite]) -> bool {
    access.channel_permissions(overwrites).contains(Permissions::VIEW_CHANNEL)
}

// ---- reads over one connection (a pooled one, or a transaction's) -----------------------

async fn server_of(c: &mut AnyConnection, server: ServerId) -> Result<Option<Server>> {
    let row = sqlx::query(
        "SELECT s.id, s.name, s.owner_id, s.created_at, (SELECT COUNT(*) FROM members m WHERE m.server_id = s.id) \
         FROM servers s WHERE s.id = $1",
    )
    .bind(server.0)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| server_row(&r)).transpose()
}

fn server_row(r: &AnyRow) -> Result<Server> {
    Ok(Server {
        id: ServerId(r.try_get(0)?),
        name: r.try_get(1)?,
        owner_id: UserId(r.try_get(2)?),
        created_at: r.try_get(3)?,
        member_count: u64::try_from(r.try_get::<i64, _>(4)?).unwrap_or(0),
    })
}

/// A member's standing, read inside the caller's transaction (see
/// [`Store::server_access`] for the same over the pool).
async fn access_in(c: &mut AnyConnection, server: ServerId, user: UserId) -> Result<Option<ServerAccess>> {
    let Some(row) = sqlx::query(
        "SELECT s.owner_id, m.joined_at, r.permissions, t.ends_at FROM servers s \
         JOIN members m ON m.server_id = s.id AND m.user_id = $2 \
         JOIN roles r ON r.id = s.id \
         LEFT JOIN member_timeouts t ON t.server_id = s.id AND t.user_id = $2 WHERE s.id = $1 AND s.taken_down_at IS NULL",
    )
    .bind(server.0)
    .bind(user.0)
    .fetch_optional(&mut *c)
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
    .fetch_all(&mut *c)
    .await?;
    Ok(Some(ServerAccess {
        server_id: server,
        owner_id: UserId(row.try_get(0)?),
        user,
        joined_at: row.try_get(1)?,
        everyone: perms(row.try_get(2)?),
        roles: roles
            .iter()
            .map(|r| Ok((RoleId(r.try_get(0)?), perms(r.try_get(1)?), i32_of(r.try_get(2)?))))
            .collect::<Result<_>>()?,
        timeout_until: row.try_get(3)?,
    }))
}

async fn roles_of(c: &mut AnyConnection, server: ServerId) -> Result<Vec<Role>> {
    let rows = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE server_id = $1 ORDER BY position, id"))
        .bind(server.0)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(role_row).collect()
}

async fn role_of(c: &mut AnyConnection, server: ServerId, role: RoleId) -> Result<Option<Role>> {
    let row = sqlx::query(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE id = $1 AND server_id = $2"))
        .bind(role.0)
        .bind(server.0)
        .fetch_optional(&mut *c)
        .await?;
    row.map(|r| role_row(&r)).transpose()
}

/// Every channel of a server with its overwrites, by position.
async fn channels_of(c: &mut AnyConnection, server: ServerId) -> Result<Vec<Channel>> {
    let rows = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.server_id = $1 ORDER BY c.position, c.id"))
        .bind(server.0)
        .fetch_all(&mut *c)
        .await?;
    let mut channels = rows.iter().map(channel_row).collect::<Result<Vec<_>>>()?;
    let mut overwrites: HashMap<i64, Vec<Overwrite>> = HashMap::new();
    for r in sqlx::query(
        "SELECT o.channel_id, o.target_id, o.kind, o.allow_bits, o.deny_bits FROM overwrites o \
         JOIN channels c ON c.id = o.channel_id WHERE c.server_id = $1 ORDER BY o.kind, o.target_id",
    )
    .bind(server.0)
    .fetch_all(&mut *c)
    .await?
    {
        overwrites.entry(r.try_get(0)?).or_default().push(overwrite_row(&r, 1)?);
    }
    for channel in &mut channels {
        channel.overwrites = overwrites.remove(&channel.id.0).unwrap_or_default();
    }
    Ok(channels)
}

fn overwrite_row(r: &AnyRow, at: usize) -> Result<Overwrite> {
    Ok(Overwrite {
        id: r.try_get(at)?,
        kind: overwrite_kind(&r.try_get::<String, _>(at + 1)?)?,
        allow: perms(r.try_get(at + 2)?),
        deny: perms(r.try_get(at + 3)?),
    })
}

/// One channel (server channel with its overwrites, or group DM with its members).
async fn channel_of(c: &mut AnyConnection, channel: ChannelId) -> Result<Option<Channel>> {
    let Some(row) = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = $1"))
        .bind(channel.0)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(None);
    };
    let mut ch = channel_row(&row)?;
    if ch.server_id.is_some() {
        let rows = sqlx::query(
            "SELECT target_id, kind, allow_bits, deny_bits FROM overwrites WHERE channel_id = $1 ORDER BY kind, target_id",
        )
        .bind(channel.0)
        .fetch_all(&mut *c)
        .await?;
        ch.overwrites = rows.iter().map(|r| overwrite_row(r, 0)).collect::<Result<_>>()?;
    } else {
        ch.recipients = recipients_of(c, channel).await?;
    }
    Ok(Some(ch))
}

/// The members of a group DM, oldest first.
async fn recipients_of(c: &mut AnyConnection, channel: ChannelId) -> Result<Vec<PublicUser>> {
    let rows = sqlx::query(
        "SELECT u.id, u.username, u.display_name, u.status_text FROM channel_members cm \
         JOIN users u ON u.id = cm.user_id WHERE cm.channel_id = $1 ORDER BY cm.joined_at, u.id",
    )
    .bind(channel.0)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(|r| public_user_at(r, 0)).collect()
}

async fn member_of(c: &mut AnyConnection, server: ServerId, user: UserId) -> Result<Option<Member>> {
    let Some(row) = sqlx::query(
        "SELECT m.joined_at, u.id, u.username, u.display_name, u.status_text, t.ends_at FROM members m \
         JOIN users u ON u.id = m.user_id \
         LEFT JOIN member_timeouts t ON t.server_id = m.server_id AND t.user_id = m.user_id AND t.ends_at > $3 \
         WHERE m.server_id = $1 AND m.user_id = $2",
    )
    .bind(server.0)
    .bind(user.0)
    .bind(super::now_ms())
    .fetch_optional(&mut *c)
    .await?
    else {
        return Ok(None);
    };
    let roles: Vec<i64> =
        sqlx::query_scalar("SELECT role_id FROM member_roles WHERE server_id = $1 AND user_id = $2 ORDER BY role_id")
            .bind(server.0)
            .bind(user.0)
            .fetch_all(&mut *c)
            .await?;
    Ok(Some(Member {
        user: public_user_at(&row, 1)?,
        server_id: server,
        roles: roles.into_iter().map(RoleId).collect(),
        joined_at: row.try_get(0)?,
        timeout_until: row.try_get(5)?,
    }))
}

async fn member_ids_of(c: &mut AnyConnection, server: ServerId) -> Result<Vec<UserId>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM members WHERE server_id = $1 ORDER BY user_id")
        .bind(server.0)
        .fetch_all(&mut *c)
        .await?;
    Ok(ids.into_iter().map(UserId).collect())
}

async fn server_state_of(c: &mut AnyConnection, server: ServerId, user: UserId) -> Result<Option<ServerState>> {
    let Some(access) = access_in(c, server, user).await? else { return Ok(None) };
    let Some(info) = server_of(c, server).await? else { return Ok(None) };
    let roles = roles_of(c, server).await?;
    let channels = channels_of(c, server).await?.into_iter().filter(|ch| may_view(&access, &ch.overwrites)).collect();
    let Some(me) = member_of(c, server, user).await? else { return Ok(None) };
    Ok(Some(ServerState { server: info, roles, channels, me, voice_states: Vec::new() }))
}

/// Takes the server's row lock (and, on SQLite, the write lock): the first statement of every
/// change to a server. `false`: no such server.
async fn lock_server(c: &mut AnyConnection, server: ServerId) -> Result<bool> {
    let done = sqlx::query("UPDATE servers SET owner_id = owner_id WHERE id = $1").bind(server.0).execute(&mut *c).await?;
    Ok(done.rows_affected() > 0)
}

/// The server a channel belongs to, locked (see [`lock_server`]). `None`: no such server
/// channel (it may be a group DM).
async fn lock_server_of_channel(c: &mut AnyConnection, channel: ChannelId) -> Result<Option<ServerId>> {
    let done = sqlx::query("UPDATE servers SET owner_id = owner_id WHERE id = (SELECT server_id FROM channels WHERE id = $1)")
        .bind(channel.0)
        .execute(&mut *c)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let server: Option<Option<i64>> =
        sqlx::query_scalar("SELECT server_id FROM channels WHERE id = $1").bind(channel.0).fetch_optional(&mut *c).await?;
    Ok(server.flatten().map(ServerId))
}

/// The member's standing, or the 404 of a server they are not in.
pub(crate) async fn member_access(c: &mut AnyConnection, server: ServerId, user: UserId) -> CResult<ServerAccess> {
    access_in(c, server, user).await?.ok_or(NO_SERVER)
}

fn require(access: &ServerAccess, needed: Permissions, refusal: &'static str) -> CResult<()> {
    if access.permissions().contains(needed) {
        Ok(())
    } else {
        Err(CommunityError::Forbidden(refusal))
    }
}

/// Deletes `author`'s messages sent since `since` in `server`'s channels (`None`: in every
/// channel), with the replies in threads they started and the reactions on them; thread counts
/// are made right. Returns what was deleted (channel, id, when sent).
pub(crate) async fn delete_messages_of(
    c: &mut AnyConnection,
    author: UserId,
    server: Option<ServerId>,
    since: i64,
) -> Result<Vec<(ChannelId, MessageId, i64)>> {
    // `$1` 0: every channel (group DMs included).
    const THEIRS: &str = "SELECT m.id FROM channel_messages m JOIN channels ch ON ch.id = m.channel_id \
         WHERE ($1 = 0 OR ch.server_id = $1) AND m.author_id = $2 AND m.created_at >= $3";
    let server = server.map_or(0, |s| s.0);
    let rows = sqlx::query(&format!(
        "SELECT channel_id, id, created_at FROM channel_messages WHERE id IN ({THEIRS}) OR thread_id IN ({THEIRS}) ORDER BY id"
    ))
    .bind(server)
    .bind(author.0)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    let mut deleted = Vec::with_capacity(rows.len());
    for r in &rows {
        deleted.push((ChannelId(r.try_get(0)?), MessageId(r.try_get(1)?), r.try_get(2)?));
    }
    if deleted.is_empty() {
        return Ok(deleted);
    }
    let roots: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT thread_id FROM channel_messages WHERE id IN ({THEIRS}) AND thread_id IS NOT NULL"
    ))
    .bind(server)
    .bind(author.0)
    .bind(since)
    .fetch_all(&mut *c)
    .await?;
    // Set-based: the replies (and their reactions) first, then the messages themselves.
    for sql in [
        format!(
            "DELETE FROM reactions WHERE message_id IN ({THEIRS}) OR message_id IN \
                 (SELECT id FROM channel_messages WHERE thread_id IN ({THEIRS}))"
        ),
        format!("DELETE FROM channel_messages WHERE thread_id IN ({THEIRS})"),
        format!("DELETE FROM channel_messages WHERE id IN ({THEIRS})"),
    ] {
        sqlx::query(&sql).bind(server).bind(author.0).bind(since).execute(&mut *c).await?;
    }
    for root in roots {
        sqlx::query(
            "UPDATE channel_messages SET thread_count = (SELECT COUNT(*) FROM channel_messages r WHERE r.thread_id = $1) WHERE id = $1",
        )
        .bind(root)
        .execute(&mut *c)
        .await?;
    }
    Ok(deleted)
}

/// A new view for every channel of `server`. On PostgreSQL the channels are locked in id order
/// first, as every other multi-channel view bump does, so that two of them cannot deadlock.
pub(crate) async fn bump_server_views(c: &mut AnyConnection, server: ServerId) -> Result<()> {
    let sql = if c.backend_name().eq_ignore_ascii_case("postgresql") {
        "UPDATE channels SET view = view + 1 WHERE id IN \
         (SELECT id FROM channels WHERE server_id = $1 ORDER BY id FOR NO KEY UPDATE)"
    } else {
        "UPDATE channels SET view = view + 1 WHERE server_id = $1"
    };
    sqlx::query(sql).bind(server.0).execute(&mut *c).await?;
    Ok(())
}

async fn bump_channel_view(c: &mut AnyConnection, channel: ChannelId) -> Result<()> {
    sqlx::query("UPDATE channels SET view = view + 1 WHERE id = $1").bind(channel.0).execute(&mut *c).await?;
    Ok(())
}

/// Checks overwrites for a channel of `server`: valid bits, at most [`OVERWRITES_MAX`], one per
/// target, each target a role of the server or a member of it.
async fn check_overwrites(c: &mut AnyConnection, server: ServerId, overwrites: &[Overwrite]) -> CResult<()> {
    if overwrites.len() > OVERWRITES_MAX {
        return Err(CommunityError::Invalid(format!("a channel holds at most {OVERWRITES_MAX} overwrites")));
    }
    let mut seen = HashSet::new();
    for o in overwrites {
        if !o.allow.is_valid() || !o.deny.is_valid() {
            return Err(CommunityError::Invalid(format!("overwrite for {}: unknown permission bits", o.id)));
        }
        if !seen.insert((o.kind, o.id)) {
            return Err(CommunityError::Invalid(format!("two overwrites for {}", o.id)));
        }
    }
    let roles: HashSet<i64> = sqlx::query_scalar::<_, i64>("SELECT id FROM roles WHERE server_id = $1")
        .bind(server.0)
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .collect();
    let wanted_members: Vec<i64> = overwrites.iter().filter(|o| o.kind == OverwriteKind::Member).map(|o| o.id).collect();
    let members: HashSet<i64> = if wanted_members.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT user_id FROM members WHERE server_id = $1 AND user_id IN ({})",
            id_list(wanted_members.iter().copied())
        ))
        .bind(server.0)
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .collect()
    };
    for o in overwrites {
        let known = match o.kind {
            OverwriteKind::Role => roles.contains(&o.id),
            OverwriteKind::Member => members.contains(&o.id),
        };
        if !known {
            let what = match o.kind {
                OverwriteKind::Role => "a role of this server",
                OverwriteKind::Member => "a member of this server",
            };
            return Err(CommunityError::Invalid(format!("overwrite target {} is not {what}", o.id)));
        }
    }
    Ok(())
}

/// Overwrites may only allow or deny what the actor holds (administrators and the owner hold
/// everything).
fn check_overwrite_grants(actor: &ServerAccess, overwrites: &[Overwrite]) -> CResult<()> {
    let held = actor.permissions();
    if overwrites.iter().all(|o| held.contains(o.allow | o.deny)) {
        Ok(())
    } else {
        Err(CommunityError::Forbidden("overwrites may only allow or deny permissions you hold"))
    }
}

async fn write_overwrites(c: &mut AnyConnection, channel: ChannelId, overwrites: &[Overwrite]) -> Result<()> {
    sqlx::query("DELETE FROM overwrites WHERE channel_id = $1").bind(channel.0).execute(&mut *c).await?;
    for o in overwrites {
        sqlx::query("INSERT INTO overwrites (channel_id, target_id, kind, allow_bits, deny_bits) VALUES ($1, $2, $3, $4, $5)")
            .bind(channel.0)
            .bind(o.id)
            .bind(overwrite_kind_name(o.kind))
            .bind(o.allow.0 as i64)
            .bind(o.deny.0 as i64)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// The position after the last sibling in `parent`.
async fn next_position(c: &mut AnyConnection, server: ServerId, parent: Option<ChannelId>) -> Result<i32> {
    let max: Option<i64> = match parent {
        Some(p) => {
            sqlx::query_scalar("SELECT MAX(position) FROM channels WHERE server_id = $1 AND parent_id = $2")
                .bind(server.0)
                .bind(p.0)
                .fetch_one(&mut *c)
                .await?
        }
        None => {
            sqlx::query_scalar("SELECT MAX(position) FROM channels WHERE server_id = $1 AND parent_id IS NULL")
                .bind(server.0)
                .fetch_one(&mut *c)
                .await?
        }
    };
    Ok(max.map_or(0, |m| i32_of(m.saturating_add(1))))
}

/// Checks that `parent` is a category of `server`.
async fn check_parent(c: &mut AnyConnection, server: ServerId, parent: ChannelId) -> CResult<Channel> {
    match channel_of(c, parent).await? {
        Some(p) if p.server_id == Some(server) && p.kind == ChannelKind::Category => Ok(p),
        _ => Err(CommunityError::Invalid("parent_id must be a category of this server".into())),
    }
}

/// Removes `user` from `server` (leave, kick, ban): their roles, their member overwrites,
/// and a new view for every channel of the server.
async fn remove_member_in(c: &mut AnyConnection, server: ServerId, user: UserId) -> Result<MemberRemoval> {
    let touched: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM overwrites WHERE kind = 'member' AND target_id = $2 \
         AND channel_id IN (SELECT id FROM channels WHERE server_id = $1) RETURNING channel_id",
    )
    .bind(server.0)
    .bind(user.0)
    .fetch_all(&mut *c)
    .await?;
    sqlx::query("DELETE FROM member_roles WHERE server_id = $1 AND user_id = $2")
        .bind(server.0)
        .bind(user.0)
        .execute(&mut *c)
        .await?;
    let done = sqlx::query("DELETE FROM members WHERE server_id = $1 AND user_id = $2")
        .bind(server.0)
        .bind(user.0)
        .execute(&mut *c)
        .await?;
    bump_server_views(c, server).await?;
    Ok(MemberRemoval { was_member: done.rows_affected() > 0, touched_channels: touched.into_iter().map(ChannelId).collect() })
}

async fn server_count_of(c: &mut AnyConnection, user: UserId) -> Result<usize> {
    // A server taken down does not count (its members cannot leave it meanwhile).
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM members m JOIN servers s ON s.id = m.server_id WHERE m.user_id = $1 AND s.taken_down_at IS NULL",
    )
    .bind(user.0)
    .fetch_one(&mut *c)
    .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn too_many_servers() -> CommunityError {
    CommunityError::Conflict(format!("you are in {SERVERS_PER_USER_MAX} servers already; leave one first"))
}

impl Store {
    // ---- reads ---------------------------------------------------------------------------

    /// A server, if `user` is a member of it (otherwise `None`, as for no server at all).
    pub async fn server_for(&self, server: ServerId, user: UserId) -> Result<Option<Server>> {
        let mut c = self.pool().acquire().await?;
        if access_in(&mut c, server, user).await?.is_none() {
            return Ok(None);
        }
        server_of(&mut c, server).await
    }

    /// The servers `user` is a member of, by id.
    pub async fn servers_of(&self, user: UserId) -> Result<Vec<Server>> {
        let rows = sqlx::query(
            "SELECT s.id, s.name, s.owner_id, s.created_at, (SELECT COUNT(*) FROM members c WHERE c.server_id = s.id) \
             FROM servers s JOIN members m ON m.server_id = s.id WHERE m.user_id = $1 AND s.taken_down_at IS NULL ORDER BY s.id",
        )
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(server_row).collect()
    }

    /// Everything `user` sees of `server` (`None` if not a member).
    pub async fn server_state(&self, server: ServerId, user: UserId) -> Result<Option<ServerState>> {
        let mut c = self.pool().acquire().await?;
        server_state_of(&mut c, server, user).await
    }

    /// What READY carries for `user`: each server they are in (with the channels they may
    /// view), and their group DMs.
    pub async fn communities_of(&self, user: UserId) -> Result<(Vec<ServerState>, Vec<Channel>)> {
        let mut c = self.pool().acquire().await?;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT server_id FROM members WHERE user_id = $1 ORDER BY server_id")
            .bind(user.0)
            .fetch_all(&mut *c)
            .await?;
        let mut servers = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(state) = server_state_of(&mut c, ServerId(id), user).await? {
                servers.push(state);
            }
        }
        drop(c);
        Ok((servers, self.group_dms(user).await?))
    }

    /// The roles of a server `user` is in.
    pub async fn roles_for(&self, server: ServerId, user: UserId) -> CResult<Vec<Role>> {
        let mut c = self.pool().acquire().await?;
        member_access(&mut c, server, user).await?;
        Ok(roles_of(&mut c, server).await?)
    }

    /// The channels of a server `user` may view.
    pub async fn channels_for(&self, server: ServerId, user: UserId) -> CResult<Vec<Channel>> {
        let mut c = self.pool().acquire().await?;
        let access = member_access(&mut c, server, user).await?;
        Ok(channels_of(&mut c, server).await?.into_iter().filter(|ch| may_view(&access, &ch.overwrites)).collect())
    }

    /// A channel `user` may view (a server channel, or a group DM they are in).
    pub async fn channel_for(&self, channel: ChannelId, user: UserId) -> CResult<Channel> {
        let mut c = self.pool().acquire().await?;
        let ch = channel_of(&mut c, channel).await?.ok_or(NO_CHANNEL)?;
        match ch.server_id {
            Some(server) => {
                let access = access_in(&mut c, server, user).await?.ok_or(NO_CHANNEL)?;
                if !may_view(&access, &ch.overwrites) {
                    return Err(NO_CHANNEL);
                }
            }
            None => {
                if !ch.recipients.iter().any(|u| u.id == user) {
                    return Err(NO_CHANNEL);
                }
            }
        }
        Ok(ch)
    }

    /// A voice channel's cap on participants (0: none; also 0 for no such channel).
    pub async fn voice_user_limit(&self, channel: ChannelId) -> Result<u32> {
        let limit: Option<i64> = sqlx::query_scalar("SELECT user_limit FROM channels WHERE id = $1")
            .bind(channel.0)
            .fetch_optional(self.pool())
            .await?;
        Ok(limit.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// One channel as stored, whoever may see it (for fan-out after a change).
    pub async fn channel(&self, channel: ChannelId) -> Result<Option<Channel>> {
        let mut c = self.pool().acquire().await?;
        channel_of(&mut c, channel).await
    }

    /// The members of a server `user` is in, by user id: at most `limit`, after `after`.
    pub async fn members_for(&self, server: ServerId, user: UserId, limit: u32, after: Option<UserId>) -> CResult<Vec<Member>> {
        let mut c = self.pool().acquire().await?;
        member_access(&mut c, server, user).await?;
        let after = after.map_or(i64::MIN, |u| u.0);
        let rows = sqlx::query(
            "SELECT m.joined_at, u.id, u.username, u.display_name, u.status_text, t.ends_at FROM members m \
             JOIN users u ON u.id = m.user_id \
             LEFT JOIN member_timeouts t ON t.server_id = m.server_id AND t.user_id = m.user_id AND t.ends_at > $4 \
             WHERE m.server_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
        )
        .bind(server.0)
        .bind(after)
        .bind(i64::from(limit))
        .bind(super::now_ms())
        .fetch_all(&mut *c)
        .await?;
        let mut members = rows
            .iter()
            .map(|r| {
                Ok(Member {
                    user: public_user_at(r, 1)?,
                    server_id: server,
                    roles: Vec::new(),
                    joined_at: r.try_get(0)?,
                    timeout_until: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(last) = members.last().map(|m| m.user.id) {
            let mut roles: HashMap<i64, Vec<RoleId>> = HashMap::new();
            for r in sqlx::query(
                "SELECT user_id, role_id FROM member_roles WHERE server_id = $1 AND user_id > $2 AND user_id <= $3 \
                 ORDER BY role_id",
            )
            .bind(server.0)
            .bind(after)
            .bind(last.0)
            .fetch_all(&mut *c)
            .await?
            {
                roles.entry(r.try_get(0)?).or_default().push(RoleId(r.try_get(1)?));
            }
            for m in &mut members {
                m.roles = roles.remove(&m.user.id.0).unwrap_or_default();
            }
        }
        Ok(members)
    }

    /// One member of a server `user` is in.
    pub async fn member_for(&self, server: ServerId, user: UserId, target: UserId) -> CResult<Member> {
        let mut c = self.pool().acquire().await?;
        member_access(&mut c, server, user).await?;
        member_of(&mut c, server, target).await?.ok_or(NO_MEMBER)
    }

    /// The members of a server, by user id.
    pub async fn member_ids(&self, server: ServerId) -> Result<Vec<UserId>> {
        let mut c = self.pool().acquire().await?;
        member_ids_of(&mut c, server).await
    }

    /// Who sees which channel of `server` now.
    pub async fn visibility(&self, server: ServerId) -> Result<Visibility> {
        let access = self.all_server_access(server).await?;
        let mut c = self.pool().acquire().await?;
        let channels = channels_of(&mut c, server).await?;
        let seen = access
            .iter()
            .map(|a| (a.user, channels.iter().filter(|ch| may_view(a, &ch.overwrites)).map(|ch| ch.id).collect()))
            .collect();
        Ok(Visibility { channels: channels.into_iter().map(|ch| (ch.id, ch)).collect(), seen })
    }

    // ---- servers -------------------------------------------------------------------------

    /// Creates a server owned by `owner`, its `@everyone` role and its default channels
    /// (`general` under "Text channels", `general` under "Voice channels").
    pub async fn create_server(&self, ids: NewServerIds, owner: UserId, name: &str, now: i64) -> CResult<ServerState> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("INSERT INTO servers (id, name, owner_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(ids.server.0)
            .bind(name)
            .bind(owner.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if server_count_of(&mut tx, owner).await? >= SERVERS_PER_USER_MAX {
            return Err(too_many_servers());
        }
        sqlx::query("INSERT INTO roles (id, server_id, name, color, position, permissions, hoist) VALUES ($1, $1, '@everyone', 0, 0, $2, 0)")
            .bind(ids.server.0)
            .bind(Permissions::EVERYONE_DEFAULT.0 as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO members (server_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(ids.server.0)
            .bind(owner.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let defaults = [
            (ids.text_category, "Text channels", ChannelKind::Category, None, 0),
            (ids.text, "general", ChannelKind::Text, Some(ids.text_category), 0),
            (ids.voice_category, "Voice channels", ChannelKind::Category, None, 1),
            (ids.voice, "general", ChannelKind::Voice, Some(ids.voice_category), 0),
        ];
        for (id, name, kind, parent, position) in defaults {
            sqlx::query(
                "INSERT INTO channels (id, server_id, name, kind, parent_id, position, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.0)
            .bind(ids.server.0)
            .bind(name)
            .bind(channel_kind_name(kind))
            .bind(parent.map(|p: ChannelId| p.0))
            .bind(position)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let state = server_state_of(&mut tx, ids.server, owner).await?.ok_or(NO_SERVER)?;
        tx.commit().await?;
        Ok(state)
    }

    /// Renames a server (manage server) and/or hands it to another member (owner only).
    /// Returns the server as it now is.
    pub async fn edit_server(
        &self,
        server: ServerId,
        actor: UserId,
        name: Option<&str>,
        new_owner: Option<UserId>,
    ) -> CResult<Server> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        let before = server_of(&mut tx, server).await?.ok_or(NO_SERVER)?;
        if let Some(name) = name {
            require(&access, Permissions::MANAGE_SERVER, "renaming the server needs the manage server permission")?;
            sqlx::query("UPDATE servers SET name = $2 WHERE id = $1").bind(server.0).bind(name).execute(&mut *tx).await?;
        }
        if let Some(to) = new_owner {
            if !access.is_owner() {
                return Err(CommunityError::Forbidden("only the owner may transfer the server"));
            }
            if to != actor {
                if access_in(&mut tx, server, to).await?.is_none() {
                    return Err(CommunityError::Invalid("the new owner must be a member of the server".into()));
                }
                let guest: Option<i64> = sqlx::query_scalar("SELECT guest_expires_at FROM users WHERE id = $1")
                    .bind(to.0)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
                if guest.is_some() {
                    return Err(CommunityError::Invalid("a guest account cannot own a server".into()));
                }
                sqlx::query("UPDATE servers SET owner_id = $2 WHERE id = $1").bind(server.0).bind(to.0).execute(&mut *tx).await?;
                bump_server_views(&mut tx, server).await?;
            }
        }
        let info = server_of(&mut tx, server).await?.ok_or(NO_SERVER)?;
        if info != before {
            let entry =
                AuditRecord::new(server, actor, AuditAction::ServerUpdate).target(server).details(audit::changes(&before, &info));
            audit::record(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(info)
    }

    /// Deletes a server (owner only) with everything in it. Returns who were its members.
    pub async fn delete_server(&self, server: ServerId, actor: UserId) -> CResult<Vec<UserId>> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        if !access.is_owner() {
            return Err(CommunityError::Forbidden("only the owner may delete the server"));
        }
        let members = member_ids_of(&mut tx, server).await?;
        // Children first: the schema's cascades do the same, this does not rely on them.
        sqlx::query("DELETE FROM member_roles WHERE server_id = $1").bind(server.0).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM servers WHERE id = $1").bind(server.0).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(members)
    }

    /// `user` leaves `server` (the owner may not: they transfer it or delete it first).
    pub async fn leave_server(&self, server: ServerId, user: UserId) -> CResult<MemberRemoval> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, user).await?;
        if access.is_owner() {
            return Err(CommunityError::Conflict(
                "the owner cannot leave the server; transfer ownership first, or delete the server".into(),
            ));
        }
        let removal = remove_member_in(&mut tx, server, user).await?;
        tx.commit().await?;
        Ok(removal)
    }

    // ---- members -------------------------------------------------------------------------

    /// Kicks `target` (kick members, and only someone below the actor).
    pub async fn kick(&self, server: ServerId, actor: UserId, target: UserId, reason: Option<&str>) -> CResult<MemberRemoval> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::KICK_MEMBERS, "kicking needs the kick members permission")?;
        let target_access = access_in(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        if !access.outranks(&target_access) {
            return Err(CommunityError::Forbidden("you may only kick members whose highest role is below yours"));
        }
        let removal = remove_member_in(&mut tx, server, target).await?;
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::MemberKick).target(target).reason(reason)).await?;
        tx.commit().await?;
        Ok(removal)
    }

    /// Sets every role of `target` (manage roles; each role added or removed must be below
    /// the actor's highest, and may not carry permissions the actor lacks). Returns the member.
    pub async fn set_member_roles(&self, server: ServerId, actor: UserId, target: UserId, roles: &[RoleId]) -> CResult<Member> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MANAGE_ROLES, "assigning roles needs the manage roles permission")?;
        let target_access = access_in(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        if target != actor && !access.outranks(&target_access) {
            return Err(CommunityError::Forbidden("you may only change the roles of members below you"));
        }
        let all: HashMap<RoleId, Role> = roles_of(&mut tx, server).await?.into_iter().map(|r| (r.id, r)).collect();
        let wanted: BTreeSet<RoleId> = roles.iter().copied().collect();
        if wanted.len() != roles.len() {
            return Err(CommunityError::Invalid("a role is listed twice".into()));
        }
        for id in &wanted {
            if id.0 == server.0 {
                return Err(CommunityError::Invalid("@everyone is every member's role; it is not assigned".into()));
            }
            if !all.contains_key(id) {
                return Err(CommunityError::Invalid(format!("{id} is not a role of this server")));
            }
        }
        let current: BTreeSet<RoleId> = target_access.roles.iter().map(|r| r.0).collect();
        let held = access.permissions();
        for id in wanted.symmetric_difference(&current) {
            let Some(role) = all.get(id) else { continue };
            if role.position >= access.top() {
                return Err(CommunityError::Forbidden("you may only assign or remove roles below your highest role"));
            }
            if wanted.contains(id) && !held.contains(role.permissions) {
                return Err(CommunityError::Forbidden("you may not assign a role with permissions you do not hold"));
            }
        }
        if wanted != current {
            sqlx::query("DELETE FROM member_roles WHERE server_id = $1 AND user_id = $2")
                .bind(server.0)
                .bind(target.0)
                .execute(&mut *tx)
                .await?;
            for id in &wanted {
                sqlx::query("INSERT INTO member_roles (server_id, user_id, role_id) VALUES ($1, $2, $3)")
                    .bind(server.0)
                    .bind(target.0)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            bump_server_views(&mut tx, server).await?;
            let names = |ids: Vec<&RoleId>| -> Vec<serde_json::Value> {
                ids.into_iter()
                    .filter_map(|id| all.get(id))
                    .map(|r| serde_json::json!({"id": r.id.to_string(), "name": r.name}))
                    .collect()
            };
            let details = serde_json::json!({
                "added": names(wanted.difference(&current).collect()),
                "removed": names(current.difference(&wanted).collect()),
            });
            let entry = AuditRecord::new(server, actor, AuditAction::MemberRolesUpdate).target(target).details(details);
            audit::record(&mut tx, entry).await?;
        }
        let member = member_of(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        tx.commit().await?;
        Ok(member)
    }

    // ---- bans ----------------------------------------------------------------------------

    /// Bans `target` (ban members; a member must be below the actor), and removes them if
    /// they are a member. `expires_at: None` lasts until lifted. Banning again replaces the
    /// ban.
    pub async fn ban(
        &self,
        server: ServerId,
        actor: UserId,
        target: UserId,
        reason: Option<&str>,
        expires_at: Option<i64>,
        now: i64,
    ) -> CResult<MemberRemoval> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::BAN_MEMBERS, "banning needs the ban members permission")?;
        if target == actor {
            return Err(CommunityError::Forbidden("you cannot ban yourself"));
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(target.0).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(CommunityError::NotFound("no such user"));
        }
        if let Some(target_access) = access_in(&mut tx, server, target).await? {
            if !access.outranks(&target_access) {
                return Err(CommunityError::Forbidden("you may only ban members whose highest role is below yours"));
            }
        }
        sqlx::query(
            "INSERT INTO bans (server_id, user_id, reason, moderator_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (server_id, user_id) DO UPDATE SET reason = excluded.reason, moderator_id = excluded.moderator_id, \
             created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(server.0)
        .bind(target.0)
        .bind(reason)
        .bind(actor.0)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let removal = remove_member_in(&mut tx, server, target).await?;
        let details = match expires_at {
            Some(at) => serde_json::json!({"duration_secs": (at - now) / 1000, "expires_at": at}),
            None => serde_json::json!({}),
        };
        let entry = AuditRecord::new(server, actor, AuditAction::MemberBan).target(target).reason(reason).details(details);
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(removal)
    }

    /// Lifts a ban (ban members).
    pub async fn unban(&self, server: ServerId, actor: UserId, target: UserId) -> CResult<()> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::BAN_MEMBERS, "unbanning needs the ban members permission")?;
        let done = sqlx::query("DELETE FROM bans WHERE server_id = $1 AND user_id = $2")
            .bind(server.0)
            .bind(target.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(CommunityError::NotFound("no such ban"));
        }
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::MemberUnban).target(target)).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- timeouts ------------------------------------------------------------------------

    /// Times `target` out until `ends_at` (moderate members; a member below the actor, not an
    /// administrator). A timeout running is replaced. Returns the member and how many
    /// timeouts they were given here, this one included.
    /// How many timeouts `user` was given in `server` (kept when one ends or is lifted).
    pub async fn timeouts_given(&self, server: ServerId, user: UserId) -> Result<u32> {
        let given: Option<i64> = sqlx::query_scalar("SELECT given FROM member_timeouts WHERE server_id = $1 AND user_id = $2")
            .bind(server.0)
            .bind(user.0)
            .fetch_optional(self.pool())
            .await?;
        Ok(given.map_or(0, |g| u32::try_from(g).unwrap_or(u32::MAX)))
    }

    pub async fn set_timeout(
        &self,
        server: ServerId,
        actor: UserId,
        target: UserId,
        ends_at: i64,
        reason: Option<&str>,
        now: i64,
    ) -> CResult<(Member, i64)> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MODERATE_MEMBERS, "timing members out needs the time out members permission")?;
        if target == actor {
            return Err(CommunityError::Forbidden("you cannot time yourself out"));
        }
        let target_access = access_in(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        if !access.outranks(&target_access) {
            return Err(CommunityError::Forbidden("you may only time out members whose highest role is below yours"));
        }
        if target_access.is_admin() {
            return Err(CommunityError::Forbidden("administrators cannot be timed out"));
        }
        sqlx::query(
            "INSERT INTO member_timeouts (server_id, user_id, ends_at, given) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (server_id, user_id) DO UPDATE SET ends_at = excluded.ends_at, given = member_timeouts.given + 1",
        )
        .bind(server.0)
        .bind(target.0)
        .bind(ends_at)
        .execute(&mut *tx)
        .await?;
        // Channel views keep each reader's timeout: new ones carry this one.
        bump_server_views(&mut tx, server).await?;
        let given: i64 = sqlx::query_scalar("SELECT given FROM member_timeouts WHERE server_id = $1 AND user_id = $2")
            .bind(server.0)
            .bind(target.0)
            .fetch_one(&mut *tx)
            .await?;
        let details = serde_json::json!({"duration_secs": (ends_at - now) / 1000, "ends_at": ends_at, "count": given});
        let entry = AuditRecord::new(server, actor, AuditAction::MemberTimeout).target(target).reason(reason).details(details);
        audit::record(&mut tx, entry).await?;
        let member = member_of(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        tx.commit().await?;
        Ok((member, given))
    }

    /// The timeouts running at `now`: server, member, end.
    pub async fn running_timeouts(&self, now: i64) -> Result<Vec<(ServerId, UserId, i64)>> {
        let rows = sqlx::query("SELECT server_id, user_id, ends_at FROM member_timeouts WHERE ends_at > $1")
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((ServerId(r.try_get(0)?), UserId(r.try_get(1)?), r.try_get(2)?))).collect()
    }

    /// Lifts `target`'s timeout before its end (moderate members; a member below the actor).
    pub async fn clear_timeout(&self, server: ServerId, actor: UserId, target: UserId, now: i64) -> CResult<Member> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MODERATE_MEMBERS, "lifting timeouts needs the time out members permission")?;
        let target_access = access_in(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        if !access.outranks(&target_access) {
            return Err(CommunityError::Forbidden("you may only lift the timeouts of members below you"));
        }
        // The count stays: a later timeout may be longer.
        let done = sqlx::query("UPDATE member_timeouts SET ends_at = $3 WHERE server_id = $1 AND user_id = $2 AND ends_at > $3")
            .bind(server.0)
            .bind(target.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(CommunityError::NotFound("no timeout runs for this member"));
        }
        bump_server_views(&mut tx, server).await?;
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::MemberTimeoutRemove).target(target)).await?;
        let member = member_of(&mut tx, server, target).await?.ok_or(NO_MEMBER)?;
        tx.commit().await?;
        Ok(member)
    }

    /// The bans in force (ban members), newest first.
    /// Deletes `target`'s messages in `server`'s channels sent since `since` (and the replies
    /// in threads they started), audited; `actor` needs manage messages and, if `target` is
    /// still a member, to outrank them (`with_ban`: ban members, the ban having checked the
    /// ranks). Returns what was deleted (channel, id, when sent).
    pub async fn purge_messages(
        &self,
        server: ServerId,
        actor: UserId,
        target: UserId,
        since: i64,
        within_secs: u64,
        with_ban: bool,
    ) -> CResult<Vec<(ChannelId, MessageId, i64)>> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        if with_ban {
            // Part of a ban the actor just made (which checked ban members and the ranks).
            require(&access, Permissions::BAN_MEMBERS, "banning needs the ban members permission")?;
            require(&access, Permissions::MANAGE_MESSAGES, "deleting members' messages needs the manage messages permission")?;
        } else {
            require(&access, Permissions::MANAGE_MESSAGES, "deleting members' messages needs the manage messages permission")?;
            if let Some(target_access) = access_in(&mut tx, server, target).await? {
                if target != actor && !access.outranks(&target_access) {
                    return Err(CommunityError::Forbidden("you may only purge members whose highest role is below yours"));
                }
            }
        }
        let deleted = delete_messages_of(&mut tx, target, Some(server), since).await?;
        let details = serde_json::json!({"deleted": deleted.len(), "within_secs": within_secs});
        let entry = AuditRecord::new(server, actor, AuditAction::MessagesPurge).target(target).details(details);
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    pub async fn bans_for(&self, server: ServerId, actor: UserId, now: i64) -> CResult<Vec<Ban>> {
        let mut c = self.pool().acquire().await?;
        let access = member_access(&mut c, server, actor).await?;
        require(&access, Permissions::BAN_MEMBERS, "the ban list needs the ban members permission")?;
        let rows = sqlx::query(
            "SELECT b.reason, b.moderator_id, b.created_at, b.expires_at, u.id, u.username, u.display_name, u.status_text \
             FROM bans b JOIN users u ON u.id = b.user_id \
             WHERE b.server_id = $1 AND (b.expires_at IS NULL OR b.expires_at > $2) ORDER BY b.created_at DESC, u.id",
        )
        .bind(server.0)
        .bind(now)
        .fetch_all(&mut *c)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(Ban {
                    user: public_user_at(r, 4)?,
                    reason: r.try_get(0)?,
                    moderator_id: UserId(r.try_get(1)?),
                    created_at: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                })
            })
            .collect::<Result<_>>()?)
    }

    // ---- roles ---------------------------------------------------------------------------

    /// Creates a role (manage roles; below the actor's highest role, with only permissions
    /// the actor holds).
    pub async fn create_role(&self, server: ServerId, actor: UserId, id: RoleId, role: &RoleChange) -> CResult<Role> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MANAGE_ROLES, "creating roles needs the manage roles permission")?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM roles WHERE server_id = $1").bind(server.0).fetch_one(&mut *tx).await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= ROLES_MAX {
            return Err(CommunityError::Conflict(format!("a server holds at most {ROLES_MAX} roles")));
        }
        let permissions = role.permissions.unwrap_or(Permissions::NONE);
        if !access.permissions().contains(permissions) {
            return Err(CommunityError::Forbidden("a role may only carry permissions you hold"));
        }
        let position = role.position.unwrap_or(1);
        check_position(&access, position)?;
        sqlx::query(
            "INSERT INTO roles (id, server_id, name, color, position, permissions, hoist) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.0)
        .bind(server.0)
        .bind(role.name.as_deref().unwrap_or("new role"))
        .bind(i64::from(role.color.unwrap_or(0)))
        .bind(i64::from(position))
        .bind(permissions.0 as i64)
        .bind(i64::from(role.hoist.unwrap_or(false)))
        .execute(&mut *tx)
        .await?;
        bump_server_views(&mut tx, server).await?;
        let created = role_of(&mut tx, server, id).await?.ok_or(NO_ROLE)?;
        let details = serde_json::json!({"name": created.name, "permissions": created.permissions});
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::RoleCreate).target(id).details(details)).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Edits a role (manage roles; only a role below the actor's highest; `@everyone`'s
    /// permissions, colour and hoist may change, not its name or position).
    pub async fn edit_role(&self, server: ServerId, actor: UserId, id: RoleId, change: &RoleChange) -> CResult<Role> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MANAGE_ROLES, "editing roles needs the manage roles permission")?;
        let role = role_of(&mut tx, server, id).await?.ok_or(NO_ROLE)?;
        let everyone = id.0 == server.0;
        if !access.is_owner() && role.position >= access.top() {
            return Err(CommunityError::Forbidden("you may only edit roles below your highest role"));
        }
        if everyone && (change.name.is_some() || change.position.is_some()) {
            return Err(CommunityError::Invalid("@everyone cannot be renamed or moved".into()));
        }
        if let Some(position) = change.position {
            check_position(&access, position)?;
        }
        let permissions = change.permissions.unwrap_or(role.permissions);
        let changed_bits = Permissions(permissions.0 ^ role.permissions.0);
        if !access.permissions().contains(changed_bits) {
            return Err(CommunityError::Forbidden("you may only grant or take away permissions you hold"));
        }
        sqlx::query("UPDATE roles SET name = $3, color = $4, position = $5, permissions = $6, hoist = $7 WHERE id = $1 AND server_id = $2")
            .bind(id.0)
            .bind(server.0)
            .bind(change.name.as_deref().unwrap_or(&role.name))
            .bind(i64::from(change.color.unwrap_or(role.color)))
            .bind(i64::from(change.position.unwrap_or(role.position)))
            .bind(permissions.0 as i64)
            .bind(i64::from(change.hoist.unwrap_or(role.hoist)))
            .execute(&mut *tx)
            .await?;
        if permissions != role.permissions || change.position.is_some_and(|p| p != role.position) {
            bump_server_views(&mut tx, server).await?;
        }
        let edited = role_of(&mut tx, server, id).await?.ok_or(NO_ROLE)?;
        if edited != role {
            let entry =
                AuditRecord::new(server, actor, AuditAction::RoleUpdate).target(id).details(audit::changes(&role, &edited));
            audit::record(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(edited)
    }

    /// Deletes a role (manage roles; below the actor's highest; never `@everyone`), and the
    /// overwrites that named it.
    pub async fn delete_role(&self, server: ServerId, actor: UserId, id: RoleId) -> CResult<()> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MANAGE_ROLES, "deleting roles needs the manage roles permission")?;
        let role = role_of(&mut tx, server, id).await?.ok_or(NO_ROLE)?;
        if id.0 == server.0 {
            return Err(CommunityError::Invalid("@everyone cannot be deleted".into()));
        }
        if !access.is_owner() && role.position >= access.top() {
            return Err(CommunityError::Forbidden("you may only delete roles below your highest role"));
        }
        sqlx::query(
            "DELETE FROM overwrites WHERE kind = 'role' AND target_id = $2 \
             AND channel_id IN (SELECT id FROM channels WHERE server_id = $1)",
        )
        .bind(server.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM member_roles WHERE server_id = $1 AND role_id = $2")
            .bind(server.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM roles WHERE id = $1 AND server_id = $2").bind(id.0).bind(server.0).execute(&mut *tx).await?;
        bump_server_views(&mut tx, server).await?;
        let details = serde_json::json!({"name": role.name});
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::RoleDelete).target(id).details(details)).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- channels ------------------------------------------------------------------------

    /// Creates a server channel (manage channels).
    pub async fn create_channel(&self, server: ServerId, actor: UserId, draft: &ChannelDraft, now: i64) -> CResult<Channel> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::MANAGE_CHANNELS, "creating channels needs the manage channels permission")?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM channels WHERE server_id = $1").bind(server.0).fetch_one(&mut *tx).await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= CHANNELS_MAX {
            return Err(CommunityError::Conflict(format!("a server holds at most {CHANNELS_MAX} channels")));
        }
        let parent = match draft.parent_id {
            Some(p) => {
                if draft.kind == ChannelKind::Category {
                    return Err(CommunityError::Invalid("a category cannot sit in another category".into()));
                }
                Some(check_parent(&mut tx, server, p).await?)
            }
            None => None,
        };
        let overwrites = match &draft.overwrites {
            Some(list) => {
                check_overwrites(&mut tx, server, list).await?;
                check_overwrite_grants(&access, list)?;
                list.clone()
            }
            None => parent.as_ref().map(|p| p.overwrites.clone()).unwrap_or_default(),
        };
        let position = match draft.position {
            Some(p) => p,
            None => next_position(&mut tx, server, draft.parent_id).await?,
        };
        sqlx::query(
            "INSERT INTO channels (id, server_id, name, kind, parent_id, position, topic, created_at, user_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(draft.id.0)
        .bind(server.0)
        .bind(&draft.name)
        .bind(channel_kind_name(draft.kind))
        .bind(draft.parent_id.map(|p| p.0))
        .bind(i64::from(position))
        .bind(draft.topic.as_deref())
        .bind(now)
        .bind(i64::from(draft.user_limit))
        .execute(&mut *tx)
        .await?;
        write_overwrites(&mut tx, draft.id, &overwrites).await?;
        let channel = channel_of(&mut tx, draft.id).await?.ok_or(NO_CHANNEL)?;
        let details = serde_json::json!({"name": channel.name, "kind": channel.kind});
        let entry = AuditRecord::new(server, actor, AuditAction::ChannelCreate).target(draft.id).details(details);
        audit::record(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(channel)
    }

    /// Edits a server channel the actor may view (manage channels there). `normalise` turns
    /// a new name into the stored form for the channel's kind.
    pub async fn edit_channel(
        &self,
        channel: ChannelId,
        actor: UserId,
        change: &ChannelChange,
        normalise: impl Fn(&str, ChannelKind) -> std::result::Result<String, String>,
    ) -> CResult<ChannelEdit> {
        let mut tx = self.pool().begin().await?;
        let server = lock_server_of_channel(&mut tx, channel).await?.ok_or(NO_CHANNEL)?;
        let access = access_in(&mut tx, server, actor).await?.ok_or(NO_CHANNEL)?;
        let before = channel_of(&mut tx, channel).await?.ok_or(NO_CHANNEL)?;
        let here = access.channel_permissions(&before.overwrites);
        if !here.contains(Permissions::VIEW_CHANNEL) {
            return Err(NO_CHANNEL);
        }
        if !here.contains(Permissions::MANAGE_CHANNELS) {
            return Err(CommunityError::Forbidden("editing channels needs the manage channels permission"));
        }
        let mut bump = false;
        if let Some(name) = &change.name {
            let name = normalise(name, before.kind).map_err(CommunityError::Invalid)?;
            sqlx::query("UPDATE channels SET name = $2 WHERE id = $1").bind(channel.0).bind(name).execute(&mut *tx).await?;
        }
        if let Some(topic) = &change.topic {
            sqlx::query("UPDATE channels SET topic = $2 WHERE id = $1")
                .bind(channel.0)
                .bind(topic.as_deref())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(limit) = change.user_limit {
            if before.kind != ChannelKind::Voice {
                return Err(CommunityError::Invalid("only a voice channel has a user limit".into()));
            }
            sqlx::query("UPDATE channels SET user_limit = $2 WHERE id = $1")
                .bind(channel.0)
                .bind(i64::from(limit))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(position) = change.position {
            sqlx::query("UPDATE channels SET position = $2 WHERE id = $1")
                .bind(channel.0)
                .bind(i64::from(position))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(parent) = change.parent_id {
            if let Some(p) = parent {
                if before.kind == ChannelKind::Category {
                    return Err(CommunityError::Invalid("a category cannot sit in another category".into()));
                }
                check_parent(&mut tx, server, p).await?;
            }
            if parent != before.parent_id {
                sqlx::query("UPDATE channels SET parent_id = $2 WHERE id = $1")
                    .bind(channel.0)
                    .bind(parent.map(|p| p.0))
                    .execute(&mut *tx)
                    .await?;
                bump = true;
            }
        }
        if let Some(list) = &change.overwrites {
            check_overwrites(&mut tx, server, list).await?;
            // Only what changes needs to be within the actor's permissions.
            let changed: Vec<Overwrite> = list.iter().filter(|o| !before.overwrites.contains(o)).copied().collect();
            let removed: Vec<Overwrite> = before.overwrites.iter().filter(|o| !list.contains(o)).copied().collect();
            check_overwrite_grants(&access, &changed)?;
            check_overwrite_grants(&access, &removed)?;
            write_overwrites(&mut tx, channel, list).await?;
            bump = true;
        }
        if bump {
            bump_channel_view(&mut tx, channel).await?;
        }
        let after = channel_of(&mut tx, channel).await?.ok_or(NO_CHANNEL)?;
        if after != before {
            let entry = AuditRecord::new(server, actor, AuditAction::ChannelUpdate)
                .target(channel)
                .details(audit::changes(&before, &after));
            audit::record(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(ChannelEdit { before, after })
    }

    /// Deletes a server channel the actor may view (manage channels there), with its
    /// messages; a category's channels move out of it.
    pub async fn delete_channel(&self, channel: ChannelId, actor: UserId) -> CResult<ChannelRemoval> {
        let mut tx = self.pool().begin().await?;
        let server = lock_server_of_channel(&mut tx, channel).await?.ok_or(NO_CHANNEL)?;
        let access = access_in(&mut tx, server, actor).await?.ok_or(NO_CHANNEL)?;
        let ch = channel_of(&mut tx, channel).await?.ok_or(NO_CHANNEL)?;
        let here = access.channel_permissions(&ch.overwrites);
        if !here.contains(Permissions::VIEW_CHANNEL) {
            return Err(NO_CHANNEL);
        }
        if !here.contains(Permissions::MANAGE_CHANNELS) {
            return Err(CommunityError::Forbidden("deleting channels needs the manage channels permission"));
        }
        let orphans: Vec<i64> = sqlx::query_scalar("UPDATE channels SET parent_id = NULL WHERE parent_id = $1 RETURNING id")
            .bind(channel.0)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM channels WHERE id = $1").bind(channel.0).execute(&mut *tx).await?;
        let details = serde_json::json!({"name": ch.name, "kind": ch.kind});
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::ChannelDelete).target(channel).details(details))
            .await?;
        tx.commit().await?;
        let readers = self.readers_of(server, &ch.overwrites).await?;
        Ok(ChannelRemoval { channel: ch, readers, orphans: orphans.into_iter().map(ChannelId).collect() })
    }

    async fn readers_of(&self, server: ServerId, overwrites: &[Overwrite]) -> Result<Vec<UserId>> {
        Ok(self.all_server_access(server).await?.iter().filter(|a| may_view(a, overwrites)).map(|a| a.user).collect())
    }

    // ---- invites -------------------------------------------------------------------------

    /// Creates an invite (create invites). `Ok(None)`: the code is taken (the caller draws
    /// another).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_invite(
        &self,
        server: ServerId,
        actor: UserId,
        code: &str,
        max_uses: Option<u32>,
        expires_at: Option<i64>,
        guest: Option<(u64, bool)>,
        now: i64,
    ) -> CResult<Option<Invite>> {
        let mut tx = self.pool().begin().await?;
        if !lock_server(&mut tx, server).await? {
            return Err(NO_SERVER);
        }
        let access = member_access(&mut tx, server, actor).await?;
        require(&access, Permissions::CREATE_INVITES, "creating invites needs the create invites permission")?;
        // `guest`: (the accounts' life, whether the actor is a platform admin).
        let guest_ttl = match guest {
            Some((_, platform_admin)) if !platform_admin && !access.is_owner() => {
                return Err(CommunityError::Forbidden("only the server's owner or a platform admin makes guest invites"));
            }
            Some((ttl, _)) => Some(i64::try_from(ttl).unwrap_or(i64::MAX)),
            None => None,
        };
        let taken: Option<String> =
            sqlx::query_scalar("SELECT code FROM invites WHERE code = $1").bind(code).fetch_optional(&mut *tx).await?;
        if taken.is_some() {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO invites (code, server_id, inviter_id, uses, max_uses, expires_at, created_at, guest_ttl_secs) \
             VALUES ($1, $2, $3, 0, $4, $5, $6, $7)",
        )
        .bind(code)
        .bind(server.0)
        .bind(actor.0)
        .bind(max_uses.map(i64::from))
        .bind(expires_at)
        .bind(now)
        .bind(guest_ttl)
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({
            "invite": audit::invite_hint(code), "max_uses": max_uses, "expires_at": expires_at, "guest_ttl_secs": guest_ttl,
        });
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::InviteCreate).details(details)).await?;
        tx.commit().await?;
        Ok(Some(Invite {
            code: code.to_owned(),
            server_id: server,
            inviter_id: actor,
            uses: 0,
            max_uses,
            expires_at,
            created_at: now,
            guest_ttl_secs: guest.map(|g| g.0),
        }))
    }

    /// Whether the server of invite `code` bans an account one of whose sessions was last seen
    /// from the client `fingerprint` (a banned guest asking again as a new one).
    pub async fn banned_client_in_invite_server(&self, code: &str, fingerprint: &str, now: i64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT b.user_id FROM invites i JOIN bans b ON b.server_id = i.server_id \
             JOIN sessions s ON s.user_id = b.user_id \
             WHERE i.code = $1 AND s.fingerprint = $2 AND (b.expires_at IS NULL OR b.expires_at > $3) LIMIT 1",
        )
        .bind(code)
        .bind(fingerprint)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(found.is_some())
    }

    /// A usable guest invite, as anyone sees it (`None`: no such invite, not a guest one,
    /// expired, used up, or its server taken down).
    pub async fn guest_invite(&self, code: &str, now: i64) -> Result<Option<GuestInvite>> {
        let row = sqlx::query(
            "SELECT i.code, s.name, (SELECT COUNT(*) FROM members m WHERE m.server_id = s.id), i.guest_ttl_secs \
             FROM invites i JOIN servers s ON s.id = i.server_id \
             WHERE i.code = $1 AND i.guest_ttl_secs IS NOT NULL AND (i.expires_at IS NULL OR i.expires_at > $2) \
             AND (i.max_uses IS NULL OR i.uses < i.max_uses) AND s.taken_down_at IS NULL",
        )
        .bind(code)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(GuestInvite {
                code: r.try_get(0)?,
                server_name: r.try_get(1)?,
                member_count: u64::try_from(r.try_get::<i64, _>(2)?).unwrap_or(0),
                guest_ttl_secs: u64::try_from(r.try_get::<i64, _>(3)?).unwrap_or(0),
            })
        })
        .transpose()
    }

    /// The invites of a server still usable: every one with manage server, otherwise the
    /// caller's own. Newest first.
    pub async fn invites_for(&self, server: ServerId, actor: UserId, now: i64) -> CResult<Vec<Invite>> {
        let mut c = self.pool().acquire().await?;
        let access = member_access(&mut c, server, actor).await?;
        let all = access.permissions().contains(Permissions::MANAGE_SERVER);
        let rows = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE server_id = $1 AND ($2 = 1 OR inviter_id = $3) \
             AND (expires_at IS NULL OR expires_at > $4) AND (max_uses IS NULL OR uses < max_uses) \
             ORDER BY created_at DESC, code"
        ))
        .bind(server.0)
        .bind(i64::from(all))
        .bind(actor.0)
        .bind(now)
        .fetch_all(&mut *c)
        .await?;
        Ok(rows.iter().map(invite_row).collect::<Result<_>>()?)
    }

    /// What a usable invite leads to.
    pub async fn invite_preview(&self, code: &str, now: i64) -> CResult<InvitePreview> {
        let row = sqlx::query(
            "SELECT i.code, i.server_id, s.name, (SELECT COUNT(*) FROM members m WHERE m.server_id = s.id), i.expires_at, \
             u.id, u.username, u.display_name, u.status_text \
             FROM invites i JOIN servers s ON s.id = i.server_id JOIN users u ON u.id = i.inviter_id \
             WHERE i.code = $1 AND (i.expires_at IS NULL OR i.expires_at > $2) AND (i.max_uses IS NULL OR i.uses < i.max_uses) \
             AND s.taken_down_at IS NULL",
        )
        .bind(code)
        .bind(now)
        .fetch_optional(self.pool())
        .await?
        .ok_or(NO_INVITE)?;
        Ok(InvitePreview {
            code: row.try_get(0)?,
            server_id: ServerId(row.try_get(1)?),
            server_name: row.try_get(2)?,
            member_count: u64::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
            expires_at: row.try_get(4)?,
            inviter: public_user_at(&row, 5)?,
        })
    }

    /// Revokes an invite: its creator, or a member with manage server. Returns its server.
    pub async fn delete_invite(&self, code: &str, actor: UserId) -> CResult<ServerId> {
        let mut tx = self.pool().begin().await?;
        let done =
            sqlx::query("UPDATE servers SET owner_id = owner_id WHERE id = (SELECT server_id FROM invites WHERE code = $1)")
                .bind(code)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(NO_INVITE);
        }
        let row = sqlx::query("SELECT server_id, inviter_id FROM invites WHERE code = $1")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(NO_INVITE)?;
        let server = ServerId(row.try_get(0)?);
        let inviter = UserId(row.try_get(1)?);
        // Someone outside the server learns nothing of its invites.
        let access = access_in(&mut tx, server, actor).await?.ok_or(NO_INVITE)?;
        if inviter != actor && !access.permissions().contains(Permissions::MANAGE_SERVER) {
            return Err(CommunityError::Forbidden("only its creator, or the manage server permission, revokes an invite"));
        }
        sqlx::query("DELETE FROM invites WHERE code = $1").bind(code).execute(&mut *tx).await?;
        let details = serde_json::json!({"invite": audit::invite_hint(code), "inviter_id": inviter});
        audit::record(&mut tx, AuditRecord::new(server, actor, AuditAction::InviteDelete).details(details)).await?;
        tx.commit().await?;
        Ok(server)
    }

    /// Follows an invite: `user` joins its server, using it once; all in one transaction so
    /// that an invite with one use left admits exactly one of two concurrent joiners. Refused
    /// (404) if unknown, expired or used up; (403) if the user is banned there. A member is
    /// told so without using the invite.
    pub async fn join_by_invite(&self, code: &str, user: UserId, now: i64) -> CResult<Joined> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE servers SET owner_id = owner_id WHERE id = (SELECT server_id FROM invites WHERE code = $1) \
                 AND taken_down_at IS NULL",
        )
        .bind(code)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(NO_INVITE);
        }
        let invite = sqlx::query(&format!("SELECT {INVITE_COLUMNS} FROM invites WHERE code = $1"))
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(NO_INVITE)?;
        let invite = invite_row(&invite)?;
        let usable = invite.expires_at.is_none_or(|t| t > now) && invite.max_uses.is_none_or(|max| invite.uses < max);
        if !usable {
            return Err(NO_INVITE);
        }
        let server = invite.server_id;
        sqlx::query("DELETE FROM bans WHERE server_id = $1 AND user_id = $2 AND expires_at IS NOT NULL AND expires_at <= $3")
            .bind(server.0)
            .bind(user.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let banned: Option<i64> = sqlx::query_scalar("SELECT user_id FROM bans WHERE server_id = $1 AND user_id = $2")
            .bind(server.0)
            .bind(user.0)
            .fetch_optional(&mut *tx)
            .await?;
        if banned.is_some() {
            // The expired ban's removal goes with the refusal: nothing is written.
            return Err(CommunityError::Forbidden("you are banned from this server"));
        }
        if access_in(&mut tx, server, user).await?.is_some() {
            let info = server_of(&mut tx, server).await?.ok_or(NO_INVITE)?;
            tx.commit().await?;
            return Ok(Joined::AlreadyMember(info));
        }
        if server_count_of(&mut tx, user).await? >= SERVERS_PER_USER_MAX {
            return Err(too_many_servers());
        }
        let used = sqlx::query("UPDATE invites SET uses = uses + 1 WHERE code = $1 AND (max_uses IS NULL OR uses < max_uses)")
            .bind(code)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() == 0 {
            return Err(NO_INVITE);
        }
        sqlx::query("INSERT INTO members (server_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(server.0)
            .bind(user.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        bump_server_views(&mut tx, server).await?;
        let info = server_of(&mut tx, server).await?.ok_or(NO_INVITE)?;
        let member = member_of(&mut tx, server, user).await?.ok_or(NO_MEMBER)?;
        tx.commit().await?;
        Ok(Joined::Joined(info, member))
    }

    // ---- group DMs -----------------------------------------------------------------------

    /// The group DMs `user` is in, by id.
    pub async fn group_dms(&self, user: UserId) -> Result<Vec<Channel>> {
        let mut c = self.pool().acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels c JOIN channel_members cm ON cm.channel_id = c.id \
             WHERE cm.user_id = $1 AND c.server_id IS NULL ORDER BY c.id"
        ))
        .bind(user.0)
        .fetch_all(&mut *c)
        .await?;
        let mut channels = rows.iter().map(channel_row).collect::<Result<Vec<_>>>()?;
        for ch in &mut channels {
            ch.recipients = recipients_of(&mut c, ch.id).await?;
        }
        Ok(channels)
    }

    /// Creates a group DM of `creator` (its owner) and `others` (distinct, not the creator;
    /// each must be an enabled user).
    pub async fn create_group_dm(
        &self,
        id: ChannelId,
        creator: UserId,
        others: &[UserId],
        name: &str,
        now: i64,
    ) -> CResult<Channel> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO channels (id, server_id, name, kind, parent_id, position, topic, owner_id, created_at) \
             VALUES ($1, NULL, $2, 'group_dm', NULL, 0, NULL, $3, $4)",
        )
        .bind(id.0)
        .bind(name)
        .bind(creator.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let found: HashSet<i64> = sqlx::query_scalar::<_, i64>(&format!(
            "SELECT id FROM users WHERE disabled_at IS NULL AND id IN ({})",
            id_list(others.iter().map(|u| u.0))
        ))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        if let Some(missing) = others.iter().find(|u| !found.contains(&u.0)) {
            return Err(CommunityError::Invalid(format!("recipient {missing} is not a user")));
        }
        for (i, user) in std::iter::once(&creator).chain(others).enumerate() {
            // Joined in the order given: the creator first, so ownership passes on in order.
            sqlx::query("INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES ($1, $2, $3)")
                .bind(id.0)
                .bind(user.0)
                .bind(now + i64::try_from(i).unwrap_or(0))
                .execute(&mut *tx)
                .await?;
        }
        let channel = channel_of(&mut tx, id).await?.ok_or(NO_CHANNEL)?;
        tx.commit().await?;
        Ok(channel)
    }

    /// Adds `target` to a group DM `actor` is in (at most [`GROUP_DM_MAX_MEMBERS`]).
    pub async fn add_recipient(&self, channel: ChannelId, actor: UserId, target: UserId, now: i64) -> CResult<GroupDmChange> {
        let mut tx = self.pool().begin().await?;
        // The lock, and the new view if the change goes through.
        let done = sqlx::query("UPDATE channels SET view = view + 1 WHERE id = $1 AND server_id IS NULL")
            .bind(channel.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(NO_CHANNEL);
        }
        let members: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM channel_members WHERE channel_id = $1")
            .bind(channel.0)
            .fetch_all(&mut *tx)
            .await?;
        if !members.contains(&actor.0) {
            return Err(NO_CHANNEL);
        }
        if members.contains(&target.0) {
            // Nothing changes; the view bump is rolled back with the transaction.
            drop(tx);
            return Ok(GroupDmChange { channel: self.channel(channel).await?, changed: false });
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND disabled_at IS NULL")
            .bind(target.0)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(CommunityError::NotFound("no such user"));
        }
        if members.len() >= GROUP_DM_MAX_MEMBERS {
            return Err(CommunityError::Conflict(format!("a group DM holds at most {GROUP_DM_MAX_MEMBERS} members")));
        }
        sqlx::query("INSERT INTO channel_members (channel_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(channel.0)
            .bind(target.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let after = channel_of(&mut tx, channel).await?;
        tx.commit().await?;
        Ok(GroupDmChange { channel: after, changed: true })
    }

    /// Removes `target` from a group DM: its owner removes anyone, anyone removes themself
    /// (leaves). An owner who leaves hands the group DM to its oldest member; the last one
    /// out deletes it.
    pub async fn remove_recipient(&self, channel: ChannelId, actor: UserId, target: UserId) -> CResult<GroupDmChange> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE channels SET view = view + 1 WHERE id = $1 AND server_id IS NULL")
            .bind(channel.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(NO_CHANNEL);
        }
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT owner_id FROM channels WHERE id = $1").bind(channel.0).fetch_one(&mut *tx).await?;
        let members: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM channel_members WHERE channel_id = $1")
            .bind(channel.0)
            .fetch_all(&mut *tx)
            .await?;
        if !members.contains(&actor.0) {
            return Err(NO_CHANNEL);
        }
        if !members.contains(&target.0) {
            return Err(CommunityError::NotFound("no such member of this group DM"));
        }
        if target != actor && owner != Some(actor.0) {
            return Err(CommunityError::Forbidden("only the owner of a group DM removes others"));
        }
        sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2")
            .bind(channel.0)
            .bind(target.0)
            .execute(&mut *tx)
            .await?;
        let next: Option<i64> =
            sqlx::query_scalar("SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY joined_at, user_id LIMIT 1")
                .bind(channel.0)
                .fetch_optional(&mut *tx)
                .await?;
        let after = match next {
            None => {
                sqlx::query("DELETE FROM channels WHERE id = $1").bind(channel.0).execute(&mut *tx).await?;
                None
            }
            Some(next) => {
                if owner == Some(target.0) {
                    sqlx::query("UPDATE channels SET owner_id = $2 WHERE id = $1")
                        .bind(channel.0)
                        .bind(next)
                        .execute(&mut *tx)
                        .await?;
                }
                channel_of(&mut tx, channel).await?
            }
        };
        tx.commit().await?;
        Ok(GroupDmChange { channel: after, changed: true })
    }

    /// Renames a group DM `actor` is in (an empty name clears it).
    pub async fn rename_group_dm(&self, channel: ChannelId, actor: UserId, name: &str) -> CResult<Channel> {
        let done = sqlx::query(
            "UPDATE channels SET name = $2 WHERE id = $1 AND server_id IS NULL \
             AND EXISTS (SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $3)",
        )
        .bind(channel.0)
        .bind(name)
        .bind(actor.0)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(NO_CHANNEL);
        }
        self.channel(channel).await?.ok_or(NO_CHANNEL)
    }
}

/// A role's position: above `@everyone`, below the actor's highest role (the owner places
/// anywhere above `@everyone`).
fn check_position(actor: &ServerAccess, position: i32) -> CResult<()> {
    if position < 1 {
        return Err(CommunityError::Invalid("a role's position is 1 or more (0 is @everyone's)".into()));
    }
    if !actor.is_owner() && position >= actor.top() {
        return Err(CommunityError::Forbidden("a role must sit below your highest role"));
    }
    Ok(())
}
