//! End-to-end encrypted channel messages (server channels and group DMs): the readers and
//! recipient devices of a channel at each view number (cached), messages stored once, their
//! reactions and pins, and the sender-key distributions queued as envelopes beside them.
//!
//! **Views.** `channels.view` grows in the same transaction as anything that may change who
//! reads a channel or with which devices (membership, roles, overwrites, a member's devices:
//! see [`bump_views_of_user`]). Every write of a ciphertext names the view it was encrypted
//! for and checks it against `channels.view` inside its transaction: a write that commits was
//! made for exactly the devices that may read the channel. The readers and devices of a
//! `(channel, view)` therefore never change, which makes them safe to cache ([`ViewCache`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use copains_client_core::channel_messages::{ChannelMessage, ChannelRecipients, Reaction, RecipientDevice};
use copains_client_core::servers::{ChannelKind, Permissions};
use copains_client_core::{ChannelId, DeviceId, MessageId, ReactionId, ServerId, UserId};
use parking_lot::Mutex;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::access::{channel_kind, GROUP_DM_PERMISSIONS};
use super::envelopes::queue_envelopes;
use super::{u32_of, DbKind, EnqueueError, NewEnvelope, QueueLimits, QueueRef, Result, Store, StoreError};
use crate::bus::Topic;

/// What one reader may do in a channel, at one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// Their permissions in the channel as granted (always with `VIEW_CHANNEL`, which a
    /// timeout leaves): read them through [`Reader::permissions`].
    pub granted: Permissions,
    /// When they joined the server or the group DM: they read messages from then on.
    pub joined_at: i64,
    /// The end of a timeout that may hold them (it is checked at each use: a view outlives it).
    pub timeout_until: Option<i64>,
}

impl Reader {
    /// Their permissions in the channel now (a running timeout leaves only viewing and
    /// listening).
    pub fn permissions(&self) -> Permissions {
        super::access::under_timeout(self.granted, self.timeout_until, super::now_ms())
    }

    /// Whether a timeout holds them now.
    pub fn timed_out(&self) -> bool {
        self.timeout_until.is_some_and(|t| t > super::now_ms())
    }
}

/// Who reads a channel, with which devices, at one view number. Immutable: a change of either
/// makes a new view.
#[derive(Debug)]
pub struct ChannelView {
    /// The channel.
    pub channel_id: ChannelId,
    /// Its server (`None`: a group DM).
    pub server_id: Option<ServerId>,
    /// Its kind.
    pub kind: ChannelKind,
    /// The view number.
    pub view: i64,
    /// Every device that may read the channel (the `recipients` route and `view_stale`).
    pub recipients: ChannelRecipients,
    readers: HashMap<UserId, Reader>,
    /// The readers' `user:` topics with their join times, sorted by user.
    topics: Vec<(i64, Topic)>,
    devices: HashMap<(UserId, DeviceId), u32>,
}

impl ChannelView {
    /// The standing of `user`; `None` if they may not read the channel.
    pub fn reader(&self, user: UserId) -> Option<Reader> {
        self.readers.get(&user).copied()
    }

    /// The users who may read a message created at `created_at`.
    pub fn readers_at(&self, created_at: i64) -> impl Iterator<Item = UserId> + '_ {
        self.readers.iter().filter(move |(_, r)| r.joined_at <= created_at).map(|(u, _)| *u)
    }

    /// How many users read the channel.
    pub fn reader_count(&self) -> usize {
        self.readers.len()
    }

    /// The `user:` topics of the readers who may read a message created at `created_at` (those
    /// who joined at or before it).
    pub fn topics_for(&self, created_at: i64) -> impl Iterator<Item = &Topic> {
        self.topics.iter().filter(move |(joined, _)| *joined <= created_at).map(|(_, t)| t)
    }

    /// The registration id of a recipient device; `None` if the device does not read the
    /// channel.
    pub fn registration_id(&self, user: UserId, device: DeviceId) -> Option<u32> {
        self.devices.get(&(user, device)).copied()
    }

    fn new(
        channel_id: ChannelId,
        server_id: Option<ServerId>,
        kind: ChannelKind,
        view: i64,
        readers: HashMap<UserId, Reader>,
        devices: Vec<RecipientDevice>,
    ) -> Self {
        let mut topics: Vec<(UserId, i64)> = readers.iter().map(|(u, r)| (*u, r.joined_at)).collect();
        topics.sort();
        let topics = topics.into_iter().map(|(u, joined)| (joined, Topic::user(u))).collect();
        let by_device = devices.iter().map(|d| ((d.user_id, d.device_id), d.registration_id)).collect();
        Self {
            channel_id,
            server_id,
            kind,
            view,
            recipients: ChannelRecipients { channel_id, view, devices },
            readers,
            topics,
            devices: by_device,
        }
    }
}

/// Channel views already computed, by channel: only the newest view of each is kept, for at
/// most [`ViewCache::CHANNELS`] channels and [`ViewCache::WEIGHT`] readers and devices in all
/// (channels are dropped to make room). A dropped view is read again when needed.
pub struct ViewCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Each view with the stamp of its last use.
    entries: HashMap<ChannelId, (u64, Arc<ChannelView>)>,
    /// Channels by the stamp of their last use: the least recently used goes first.
    order: BTreeMap<u64, ChannelId>,
    next: u64,
    weight: usize,
}

impl CacheInner {
    fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn remove(&mut self, channel: ChannelId) {
        if let Some((stamp, gone)) = self.entries.remove(&channel) {
            self.order.remove(&stamp);
            self.weight -= weight_of(&gone);
        }
    }
}

fn weight_of(view: &ChannelView) -> usize {
    1 + view.readers.len() + view.devices.len()
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("ViewCache").field("channels", &inner.entries.len()).field("weight", &inner.weight).finish()
    }
}

impl Default for ViewCache {
    fn default() -> Self {
        Self { inner: Mutex::new(CacheInner::default()) }
    }
}

impl ViewCache {
    /// Most channels kept.
    pub const CHANNELS: usize = 4096;
    /// Most readers and devices kept, all channels together (about 200 bytes each).
    pub const WEIGHT: usize = 1_000_000;

    fn get(&self, channel: ChannelId, view: i64) -> Option<Arc<ChannelView>> {
        let mut inner = self.inner.lock();
        let stamp = inner.stamp();
        let (used, found) = inner.entries.get_mut(&channel).filter(|(_, v)| v.view == view)?;
        let (before, found) = (std::mem::replace(used, stamp), found.clone());
        inner.order.remove(&before);
        inner.order.insert(stamp, channel);
        Some(found)
    }

    fn put(&self, view: Arc<ChannelView>) {
        let weight = weight_of(&view);
        if weight > Self::WEIGHT {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some((_, old)) = inner.entries.get(&view.channel_id) {
            if old.view >= view.view {
                return;
            }
            inner.remove(view.channel_id);
        }
        // The least recently used make room.
        while inner.entries.len() >= Self::CHANNELS || inner.weight + weight > Self::WEIGHT {
            let Some((_, victim)) = inner.order.first_key_value().map(|(s, c)| (*s, *c)) else { break };
            inner.remove(victim);
        }
        let stamp = inner.stamp();
        inner.weight += weight;
        inner.order.insert(stamp, view.channel_id);
        inner.entries.insert(view.channel_id, (stamp, view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(channel: i64, view: i64, readers: usize) -> Arc<ChannelView> {
        let readers = (0..readers as i64)
            .map(|u| (UserId(u), Reader { granted: Permissions::VIEW_CHANNEL, joined_at: 0, timeout_until: None }))
            .collect();
        Arc::new(ChannelView::new(ChannelId(channel), None, ChannelKind::GroupDm, view, readers, Vec::new()))
    }

    #[test]
    fn the_cache_keeps_the_newest_view_within_its_bounds() {
        let cache = ViewCache::default();
        cache.put(view(1, 5, 3));
        assert!(cache.get(ChannelId(1), 5).is_some());
        assert!(cache.get(ChannelId(1), 4).is_none(), "only the view it was read at");
        cache.put(view(1, 4, 3));
        assert!(cache.get(ChannelId(1), 5).is_some(), "an older reading does not replace a newer one");
        cache.put(view(1, 6, 2));
        assert!(cache.get(ChannelId(1), 6).is_some() && cache.get(ChannelId(1), 5).is_none());
        assert_eq!(cache.inner.lock().weight, 3);
        // Over the weight: the least recently used channels make room.
        cache.put(view(2, 1, ViewCache::WEIGHT - 2));
        assert!(cache.get(ChannelId(2), 1).is_some());
        assert!(cache.get(ChannelId(1), 6).is_none());
        assert!(cache.inner.lock().weight <= ViewCache::WEIGHT);
        cache.put(view(3, 1, ViewCache::WEIGHT + 1));
        assert!(cache.get(ChannelId(3), 1).is_none(), "too big to keep");
        for c in 10..10 + ViewCache::CHANNELS as i64 + 5 {
            cache.put(view(c, 1, 0));
        }
        assert_eq!(cache.inner.lock().entries.len(), ViewCache::CHANNELS);
        assert_eq!(cache.inner.lock().order.len(), ViewCache::CHANNELS);
    }

    #[test]
    fn the_least_recently_used_view_goes_first() {
        let cache = ViewCache::default();
        cache.put(view(1, 1, 0));
        cache.put(view(2, 1, 0));
        assert!(cache.get(ChannelId(1), 1).is_some(), "1 is used again");
        // Room for one more light channel only: 2, the least recently used, goes.
        cache.put(view(3, 1, ViewCache::WEIGHT - 2));
        assert!(cache.get(ChannelId(1), 1).is_some());
        assert!(cache.get(ChannelId(2), 1).is_none());
        assert!(cache.get(ChannelId(3), 1).is_some());
        assert_eq!(cache.inner.lock().weight, ViewCache::WEIGHT);
    }
}

/// A new message.
#[derive(Debug, Clone)]
pub struct NewChannelMessage {
    /// Id.
    pub id: MessageId,
    /// Author.
    pub author: UserId,
    /// The author's device.
    pub author_device: DeviceId,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The thread (its first message), if any.
    pub thread_id: Option<MessageId>,
    /// What its author declared it mentions.
    pub mentions: copains_client_core::channel_messages::Mentions,
    /// The readers it notifies (the declaration expanded: users, role members, everyone).
    pub mentioned: Vec<UserId>,
}

/// Declared mentions as stored (`NULL` for none).
pub(crate) fn mentions_json(mentions: &copains_client_core::channel_messages::Mentions) -> Option<String> {
    (!mentions.is_empty()).then(|| serde_json::to_string(mentions).ok()).flatten()
}

/// The ciphertext a [`ChannelWrite`] stores.
#[derive(Debug, Clone)]
pub enum ChannelWriteKind {
    /// Key distributions alone (what does not fit in the request of the write they precede).
    Keys,
    /// A new message.
    Create(NewChannelMessage),
    /// A new ciphertext for a message of `author` (from `device`, whose sender key made it).
    Edit {
        /// The message.
        id: MessageId,
        /// Its author (only they may edit it).
        author: UserId,
        /// The editing device.
        device: DeviceId,
        /// The new ciphertext.
        ciphertext: Vec<u8>,
        /// Who the new text mentions (replaces the send's declaration).
        mentions: copains_client_core::channel_messages::Mentions,
        /// The readers it notifies now.
        mentioned: Vec<UserId>,
    },
    /// A reaction.
    React {
        /// Id.
        id: ReactionId,
        /// The message.
        message: MessageId,
        /// Who reacts.
        user: UserId,
        /// From which device.
        device: DeviceId,
        /// The encrypted reaction.
        ciphertext: Vec<u8>,
    },
}

/// A write of a ciphertext to a channel, checked against the channel's view, with the key
/// distributions that ride it: all of it is stored, or none.
#[derive(Debug, Clone)]
pub struct ChannelWrite {
    /// The channel.
    pub channel: ChannelId,
    /// The view the sender encrypted for.
    pub view: i64,
    /// Who writes.
    pub sender: UserId,
    /// From which device.
    pub sender_device: DeviceId,
    /// What is written.
    pub kind: ChannelWriteKind,
    /// Envelopes for devices (sender key distributions), queued like any envelope.
    pub distributions: Vec<NewEnvelope>,
    /// Now (Unix milliseconds).
    pub now: i64,
}

/// Why a channel write was refused (nothing of it was stored).
#[derive(Debug, thiserror::Error)]
pub enum ChannelWriteError {
    /// `view` is not the channel's current view.
    #[error("the channel's view changed")]
    ViewStale,
    /// No such channel (any more).
    #[error("no such channel")]
    ChannelGone,
    /// The message written to (edited, reacted to, the thread replied in) is gone.
    #[error("no such message")]
    MessageGone,
    /// The message has [`copains_client_core::channel_messages::REACTIONS_PER_MESSAGE_MAX`]
    /// reactions.
    #[error("too many reactions")]
    TooManyReactions,
    /// These device queues are full.
    #[error("{} device queue(s) full", .0.len())]
    QueueFull(Vec<QueueRef>),
    /// A target device vanished (its removal also changed the view).
    #[error("a device is gone")]
    DeviceGone,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ChannelWriteError {
    fn from(e: sqlx::Error) -> Self {
        ChannelWriteError::Store(StoreError::Database(e))
    }
}

impl From<EnqueueError> for ChannelWriteError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::QueueFull(full) => ChannelWriteError::QueueFull(full),
            EnqueueError::DeviceGone | EnqueueError::NoDevices => ChannelWriteError::DeviceGone,
            EnqueueError::Store(e) => ChannelWriteError::Store(e),
            e @ (EnqueueError::Misaddressed | EnqueueError::Mismatch(_)) => {
                ChannelWriteError::Store(StoreError::Corrupt(e.to_string()))
            }
        }
    }
}

/// A page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// At most this many messages.
    pub limit: usize,
    /// Only older than this one.
    pub before: Option<MessageId>,
    /// Only newer than this one.
    pub after: Option<MessageId>,
    /// Around this one: `limit / 2` older, it, and newer ones.
    pub around: Option<MessageId>,
    /// The messages of this thread (otherwise the channel's top-level messages).
    pub thread: Option<MessageId>,
    /// Only messages created at or after this time (the reader's join).
    pub since: i64,
}

/// What a pin or an unpin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// The message's pin changed.
    Changed,
    /// It already was so.
    Unchanged,
    /// No such message in the channel (since the given time).
    NotFound,
    /// The channel has [`copains_client_core::channel_messages::PINS_MAX`] pins.
    Full,
}

const MESSAGE_COLUMNS: &str =
    "m.id, m.channel_id, m.author_id, m.author_device, m.ciphertext, m.created_at, m.edited_at, m.thread_id, m.pinned, m.thread_count, m.mentions";

fn message_of(r: &AnyRow) -> Result<ChannelMessage> {
    Ok(ChannelMessage {
        id: MessageId(r.try_get(0)?),
        channel_id: ChannelId(r.try_get(1)?),
        author_id: UserId(r.try_get(2)?),
        author_device: DeviceId(u32_of(r.try_get(3)?)?),
        ciphertext: r.try_get::<Vec<u8>, _>(4)?.into(),
        created_at: r.try_get(5)?,
        edited_at: r.try_get(6)?,
        thread_id: r.try_get::<Option<i64>, _>(7)?.map(MessageId),
        pinned: r.try_get::<i64, _>(8)? != 0,
        thread_count: u32_of(r.try_get(9)?)?,
        mentions: match r.try_get::<Option<String>, _>(10)? {
            Some(raw) => serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("mentions: {e}")))?,
            None => Default::default(),
        },
        reactions: Vec::new(),
    })
}

fn reaction_of(r: &AnyRow) -> Result<Reaction> {
    Ok(Reaction {
        id: ReactionId(r.try_get(0)?),
        message_id: MessageId(r.try_get(1)?),
        channel_id: ChannelId(r.try_get(2)?),
        user_id: UserId(r.try_get(3)?),
        device_id: DeviceId(u32_of(r.try_get(4)?)?),
        ciphertext: r.try_get::<Vec<u8>, _>(5)?.into(),
        created_at: r.try_get(6)?,
    })
}

const REACTION_COLUMNS: &str = "id, message_id, channel_id, user_id, device_id, ciphertext, created_at";

/// When [`bump_views_of_user_if`] bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BumpIf {
    /// Always.
    Always,
    /// If this device of the user has keys (it may receive).
    DeviceKeyed(DeviceId),
    /// If the device of this login session of the user has keys.
    SessionKeyed(copains_client_core::SessionId),
}

/// Bumps the view of every channel `user` may read through a membership (every channel of
/// every server they are in, every group DM they are in), in the caller's transaction: their
/// devices are changing. Call it before deleting a device: on PostgreSQL the channels are
/// locked (in id order, so that two of these cannot deadlock) before the device, as every
/// channel write locks its channel before its envelopes reach a device: a write in flight
/// finishes first, or sees the new view. One statement, a write (SQLite takes its write lock
/// at once).
pub(crate) async fn bump_views_of_user(conn: &mut sqlx::AnyConnection, kind: DbKind, user: UserId) -> Result<()> {
    bump_views_of_user_if(conn, kind, user, BumpIf::Always).await
}

/// [`bump_views_of_user`] under a condition checked in the same statement.
pub(crate) async fn bump_views_of_user_if(
    conn: &mut sqlx::AnyConnection,
    kind: DbKind,
    user: UserId,
    condition: BumpIf,
) -> Result<()> {
    const CHANNELS: &str = "(server_id IN (SELECT server_id FROM members WHERE user_id = $1) \
         OR id IN (SELECT channel_id FROM channel_members WHERE user_id = $1))";
    let (extra, arg) = match condition {
        BumpIf::Always => ("", None),
        BumpIf::DeviceKeyed(device) => {
            (" AND EXISTS (SELECT 1 FROM device_keys k WHERE k.user_id = $1 AND k.device_id = $2)", Some(i64::from(device.0)))
        }
        BumpIf::SessionKeyed(session) => (
            " AND EXISTS (SELECT 1 FROM sessions s JOIN device_keys k ON k.user_id = s.user_id AND k.device_id = s.device_id \
             WHERE s.id = $2 AND s.user_id = $1)",
            Some(session.0),
        ),
    };
    let sql = if kind == DbKind::Postgres {
        format!(
            "UPDATE channels SET view = view + 1 WHERE id IN \
             (SELECT id FROM channels WHERE {CHANNELS}{extra} ORDER BY id FOR NO KEY UPDATE)"
        )
    } else {
        format!("UPDATE channels SET view = view + 1 WHERE {CHANNELS}{extra}")
    };
    let mut query = sqlx::query(&sql).bind(user.0);
    if let Some(arg) = arg {
        query = query.bind(arg);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

impl Store {
    /// A channel's server, kind and current view; `None` if there is no such channel.
    pub async fn channel_head(&self, channel: ChannelId) -> Result<Option<(Option<ServerId>, ChannelKind, i64)>> {
        let Some(row) = sqlx::query("SELECT server_id, kind, view FROM channels WHERE id = $1")
            .bind(channel.0)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((row.try_get::<Option<i64>, _>(0)?.map(ServerId), channel_kind(&row.try_get::<String, _>(1)?)?, row.try_get(2)?)))
    }

    /// The readers and devices of `channel` now; `None` if there is no such channel.
    pub async fn channel_view(&self, channel: ChannelId) -> Result<Option<Arc<ChannelView>>> {
        let mut last = None;
        for _ in 0..4 {
            let Some((server, kind, view)) = self.channel_head(channel).await? else { return Ok(None) };
            if let Some(cached) = self.views().get(channel, view) {
                return Ok(Some(cached));
            }
            let built = Arc::new(self.build_view(channel, server, kind, view).await?);
            // Only a view whose number did not move while it was read is the view of that
            // number (every change moves it in the same transaction).
            match self.channel_head(channel).await? {
                None => return Ok(None),
                Some((_, _, again)) if again == view => {
                    self.views().put(built.clone());
                    return Ok(Some(built));
                }
                Some(_) => last = Some(built),
            }
        }
        // The channel keeps changing: answer with the last reading, uncached. A write made on
        // it is still checked against the view in its transaction.
        Ok(last)
    }

    /// The view `view` of `channel` if it is known, else the current one (a send on the
    /// current view skips every read).
    pub async fn channel_view_at(&self, channel: ChannelId, view: i64) -> Result<Option<Arc<ChannelView>>> {
        if let Some(cached) = self.views().get(channel, view) {
            return Ok(Some(cached));
        }
        self.channel_view(channel).await
    }

    async fn build_view(
        &self,
        channel: ChannelId,
        server: Option<ServerId>,
        kind: ChannelKind,
        view: i64,
    ) -> Result<ChannelView> {
        let mut readers = HashMap::new();
        let device_rows = match server {
            Some(server) => {
                let overwrites = self.overwrites(channel).await?;
                for access in self.all_server_access(server).await? {
                    let granted = access.granted_channel_permissions(&overwrites);
                    if granted.contains(Permissions::VIEW_CHANNEL) {
                        let timeout_until = access.timeout_binding();
                        readers.insert(access.user, Reader { granted, joined_at: access.joined_at, timeout_until });
                    }
                }
                sqlx::query(concat!(
                    "SELECT k.user_id, k.device_id, k.registration_id FROM device_keys k ",
                    "JOIN members m ON m.user_id = k.user_id AND m.server_id = $1 WHERE ",
                    receives!(),
                    " ORDER BY k.user_id, k.device_id"
                ))
                .bind(server.0)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                for r in sqlx::query("SELECT user_id, joined_at FROM channel_members WHERE channel_id = $1")
                    .bind(channel.0)
                    .fetch_all(self.pool())
                    .await?
                {
                    readers.insert(
                        UserId(r.try_get(0)?),
                        Reader { granted: GROUP_DM_PERMISSIONS, joined_at: r.try_get(1)?, timeout_until: None },
                    );
                }
                sqlx::query(concat!(
                    "SELECT k.user_id, k.device_id, k.registration_id FROM device_keys k ",
                    "JOIN channel_members m ON m.user_id = k.user_id AND m.channel_id = $1 WHERE ",
                    receives!(),
                    " ORDER BY k.user_id, k.device_id"
                ))
                .bind(channel.0)
                .fetch_all(self.pool())
                .await?
            }
        };
        let mut devices = Vec::with_capacity(device_rows.len());
        for r in &device_rows {
            let user_id = UserId(r.try_get(0)?);
            if readers.contains_key(&user_id) {
                devices.push(RecipientDevice {
                    user_id,
                    device_id: DeviceId(u32_of(r.try_get(1)?)?),
                    registration_id: u32_of(r.try_get(2)?)?,
                });
            }
        }
        devices.sort();
        Ok(ChannelView::new(channel, server, kind, view, readers, devices))
    }

    /// Stores a channel write ([`ChannelWrite`]) after checking its view, in one transaction
    /// with its distributions. Gives the write back (to publish its distributions).
    pub async fn write_channel(&self, write: ChannelWrite, limits: QueueLimits) -> Result<ChannelWrite, ChannelWriteError> {
        if let Some(writer) = self.queue_writer() {
            // SQLite: the envelope queue's writer, which commits waiting writes together.
            return writer.channel(write, limits).await;
        }
        let mut tx = self.pool().begin().await?;
        // First the channel's row, checked against the view (SQLite's writes go through the
        // queue writer; this path is PostgreSQL's). A view change updates the row: it waits for
        // the writes that hold it, and they for it. Messages, edits and key distributions hold
        // it shared, so they do not wait on each other; a reaction holds it alone, which keeps
        // a message's reaction count exact.
        let shared = self.kind() == DbKind::Postgres && !matches!(write.kind, ChannelWriteKind::React { .. });
        let checked = if shared {
            sqlx::query("SELECT 1 FROM channels WHERE id = $1 AND view = $2 FOR SHARE")
                .bind(write.channel.0)
                .bind(write.view)
                .fetch_optional(&mut *tx)
                .await?
                .is_some()
        } else {
            sqlx::query("UPDATE channels SET view = view WHERE id = $1 AND view = $2")
                .bind(write.channel.0)
                .bind(write.view)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0
        };
        if !checked {
            let exists =
                sqlx::query("SELECT 1 FROM channels WHERE id = $1").bind(write.channel.0).fetch_optional(&mut *tx).await?;
            return Err(if exists.is_some() { ChannelWriteError::ViewStale } else { ChannelWriteError::ChannelGone });
        }
        match &write.kind {
            ChannelWriteKind::Keys => {}
            ChannelWriteKind::Create(m) => {
                if let Some(thread) = m.thread_id {
                    let counted = sqlx::query(
                        "UPDATE channel_messages SET thread_count = thread_count + 1 \
                         WHERE id = $1 AND channel_id = $2 AND thread_id IS NULL",
                    )
                    .bind(thread.0)
                    .bind(write.channel.0)
                    .execute(&mut *tx)
                    .await?;
                    if counted.rows_affected() == 0 {
                        return Err(ChannelWriteError::MessageGone);
                    }
                }
                sqlx::query(
                    "INSERT INTO channel_messages (id, channel_id, author_id, author_device, ciphertext, created_at, thread_id, mentions) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(m.id.0)
                .bind(write.channel.0)
                .bind(m.author.0)
                .bind(i64::from(m.author_device.0))
                .bind(m.ciphertext.as_slice())
                .bind(write.now)
                .bind(m.thread_id.map(|t| t.0))
                .bind(mentions_json(&m.mentions))
                .execute(&mut *tx)
                .await?;
                for user in &m.mentioned {
                    sqlx::query("INSERT INTO message_mentions (user_id, channel_id, message_id) VALUES ($1, $2, $3)")
                        .bind(user.0)
                        .bind(write.channel.0)
                        .bind(m.id.0)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            ChannelWriteKind::Edit { id, author, device, ciphertext, mentions, mentioned } => {
                let edited = sqlx::query(
                    "UPDATE channel_messages SET ciphertext = $4, author_device = $5, edited_at = $6, mentions = $7 \
                     WHERE id = $1 AND channel_id = $2 AND author_id = $3",
                )
                .bind(id.0)
                .bind(write.channel.0)
                .bind(author.0)
                .bind(ciphertext.as_slice())
                .bind(i64::from(device.0))
                .bind(write.now)
                .bind(mentions_json(mentions))
                .execute(&mut *tx)
                .await?;
                if edited.rows_affected() == 0 {
                    return Err(ChannelWriteError::MessageGone);
                }
                sqlx::query("DELETE FROM message_mentions WHERE message_id = $1").bind(id.0).execute(&mut *tx).await?;
                for user in mentioned.iter() {
                    sqlx::query("INSERT INTO message_mentions (user_id, channel_id, message_id) VALUES ($1, $2, $3)")
                        .bind(user.0)
                        .bind(write.channel.0)
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            ChannelWriteKind::React { id, message, user, device, ciphertext } => {
                let exists = sqlx::query("SELECT 1 FROM channel_messages WHERE id = $1 AND channel_id = $2")
                    .bind(message.0)
                    .bind(write.channel.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(ChannelWriteError::MessageGone);
                }
                // Writes of one channel hold its row until they commit: the count is exact.
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reactions WHERE message_id = $1")
                    .bind(message.0)
                    .fetch_one(&mut *tx)
                    .await?;
                if count >= copains_client_core::channel_messages::REACTIONS_PER_MESSAGE_MAX as i64 {
                    return Err(ChannelWriteError::TooManyReactions);
                }
                sqlx::query(
                    "INSERT INTO reactions (id, message_id, channel_id, user_id, device_id, ciphertext, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id.0)
                .bind(message.0)
                .bind(write.channel.0)
                .bind(user.0)
                .bind(i64::from(device.0))
                .bind(ciphertext.as_slice())
                .bind(write.now)
                .execute(&mut *tx)
                .await?;
            }
        }
        if !write.distributions.is_empty() {
            queue_envelopes(&mut tx, write.sender, write.sender_device, &write.distributions, limits, write.now).await?;
        }
        tx.commit().await?;
        Ok(write)
    }

    /// One message of `channel` created at or after `since`, with its reactions.
    pub async fn channel_message(&self, channel: ChannelId, id: MessageId, since: i64) -> Result<Option<ChannelMessage>> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM channel_messages m WHERE m.id = $1 AND m.channel_id = $2 AND m.created_at >= $3"
        ))
        .bind(id.0)
        .bind(channel.0)
        .bind(since)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut messages = vec![message_of(&row)?];
        self.attach_reactions(&mut messages).await?;
        Ok(messages.pop())
    }

    /// A page of history, newest first (see [`HistoryQuery`]).
    pub async fn channel_messages(&self, channel: ChannelId, q: HistoryQuery) -> Result<Vec<ChannelMessage>> {
        let scope = if q.thread.is_some() { "m.thread_id = $2" } else { "m.thread_id IS NULL" };
        let base = format!(
            "SELECT {MESSAGE_COLUMNS} FROM channel_messages m WHERE m.channel_id = $1 AND {scope} AND m.created_at >= $3"
        );
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let thread = q.thread.map_or(0, |t| t.0);
        let page = |sql: String, a: i64, b: i64, n: i64| async move {
            sqlx::query(&sql)
                .bind(channel.0)
                .bind(thread)
                .bind(q.since)
                .bind(a)
                .bind(b)
                .bind(n)
                .fetch_all(self.pool())
                .await?
                .iter()
                .map(message_of)
                .collect::<Result<Vec<_>>>()
        };
        let mut messages = if let Some(around) = q.around {
            let older_n = limit / 2;
            let newer_n = limit - older_n - 1;
            let mut newer =
                page(format!("{base} AND m.id > $4 AND m.id <> $5 ORDER BY m.id ASC LIMIT $6"), around.0, around.0, newer_n)
                    .await?;
            newer.reverse();
            let at = page(format!("{base} AND m.id = $4 AND m.id = $5 LIMIT $6"), around.0, around.0, 1).await?;
            let older =
                page(format!("{base} AND m.id < $4 AND m.id <> $5 ORDER BY m.id DESC LIMIT $6"), around.0, around.0, older_n)
                    .await?;
            newer.into_iter().chain(at).chain(older).collect()
        } else {
            let before = q.before.map_or(i64::MAX, |b| b.0);
            let after = q.after.map_or(i64::MIN, |a| a.0);
            if q.after.is_some() && q.before.is_none() {
                // The page right after `after`, given newest first.
                let mut page =
                    page(format!("{base} AND m.id > $4 AND m.id < $5 ORDER BY m.id ASC LIMIT $6"), after, before, limit).await?;
                page.reverse();
                page
            } else {
                page(format!("{base} AND m.id > $4 AND m.id < $5 ORDER BY m.id DESC LIMIT $6"), after, before, limit).await?
            }
        };
        self.attach_reactions(&mut messages).await?;
        Ok(messages)
    }

    /// The pinned messages of `channel` created at or after `since`, newest first.
    pub async fn pins(&self, channel: ChannelId, since: i64) -> Result<Vec<ChannelMessage>> {
        let mut messages = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM channel_messages m WHERE m.channel_id = $1 AND m.pinned = 1 AND m.created_at >= $2 \
             ORDER BY m.id DESC LIMIT $3"
        ))
        .bind(channel.0)
        .bind(since)
        .bind(copains_client_core::channel_messages::PINS_MAX as i64)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(message_of)
        .collect::<Result<Vec<_>>>()?;
        self.attach_reactions(&mut messages).await?;
        Ok(messages)
    }

    async fn attach_reactions(&self, messages: &mut [ChannelMessage]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        // Ids are numbers: the list is the SQL (at most a page of them).
        let ids: Vec<String> = messages.iter().map(|m| m.id.0.to_string()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {REACTION_COLUMNS} FROM reactions WHERE message_id IN ({}) ORDER BY id",
            ids.join(", ")
        ))
        .fetch_all(self.pool())
        .await?;
        let index: HashMap<MessageId, usize> = messages.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        for r in &rows {
            let reaction = reaction_of(r)?;
            if let Some(&i) = index.get(&reaction.message_id) {
                messages[i].reactions.push(reaction);
            }
        }
        Ok(())
    }

    /// Deletes a message of `channel` (with its reactions, and its thread's messages if it
    /// starts one). `false` if there is no such message.
    pub async fn delete_channel_message(&self, channel: ChannelId, id: MessageId) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let Some(row) = sqlx::query("DELETE FROM channel_messages WHERE id = $1 AND channel_id = $2 RETURNING thread_id")
            .bind(id.0)
            .bind(channel.0)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        match row.try_get::<Option<i64>, _>(0)? {
            Some(thread) => {
                sqlx::query(
                    "UPDATE channel_messages SET thread_count = thread_count - 1 WHERE id = $1 AND channel_id = $2 AND thread_count > 0",
                )
                .bind(thread)
                .bind(channel.0)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM channel_messages WHERE thread_id = $1 AND channel_id = $2")
                    .bind(id.0)
                    .bind(channel.0)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A reaction to message `message` of `channel`.
    pub async fn reaction(&self, channel: ChannelId, message: MessageId, id: ReactionId) -> Result<Option<Reaction>> {
        let row = sqlx::query(&format!(
            "SELECT {REACTION_COLUMNS} FROM reactions WHERE id = $1 AND message_id = $2 AND channel_id = $3"
        ))
        .bind(id.0)
        .bind(message.0)
        .bind(channel.0)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(reaction_of).transpose()
    }

    /// Removes a reaction; `false` if there was none.
    pub async fn delete_reaction(&self, channel: ChannelId, message: MessageId, id: ReactionId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM reactions WHERE id = $1 AND message_id = $2 AND channel_id = $3")
            .bind(id.0)
            .bind(message.0)
            .bind(channel.0)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Pins or unpins a message of `channel` created at or after `since`.
    pub async fn set_pinned(&self, channel: ChannelId, message: MessageId, pinned: bool, since: i64) -> Result<PinOutcome> {
        let mut tx = self.pool().begin().await?;
        // The channel's row first (as every channel write): two pins cannot both pass the cap.
        let locked = sqlx::query("UPDATE channels SET view = view WHERE id = $1").bind(channel.0).execute(&mut *tx).await?;
        if locked.rows_affected() == 0 {
            return Ok(PinOutcome::NotFound);
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT pinned FROM channel_messages WHERE id = $1 AND channel_id = $2 AND created_at >= $3")
                .bind(message.0)
                .bind(channel.0)
                .bind(since)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else { return Ok(PinOutcome::NotFound) };
        if (current != 0) == pinned {
            return Ok(PinOutcome::Unchanged);
        }
        if pinned {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM channel_messages WHERE channel_id = $1 AND pinned = 1")
                .bind(channel.0)
                .fetch_one(&mut *tx)
                .await?;
            if count >= copains_client_core::channel_messages::PINS_MAX as i64 {
                return Ok(PinOutcome::Full);
            }
        }
        sqlx::query("UPDATE channel_messages SET pinned = $3 WHERE id = $1 AND channel_id = $2")
            .bind(message.0)
            .bind(channel.0)
            .bind(i64::from(pinned))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PinOutcome::Changed)
    }
}
