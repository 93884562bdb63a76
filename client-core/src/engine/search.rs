//! Private search over this device's history: the engine feeds the index
//! ([`crate::crypto::search`]) with what it decrypts, and answers queries from it. Nothing of
//! a query leaves the device.
//!
//! Channel messages (and group DMs) are indexed as they are read, each version once: an edit
//! retires the version before it, a deletion the message. DM conversations are indexed from
//! the history before each search, from where the last one stopped, so every way a DM reaches
//! the history (received, sent here, copied from another device of the user) is covered, and
//! a store from before the index existed is indexed on its first search.

use serde::{Deserialize, Serialize};

use super::{Engine, HistoryEntry, MessagingError, Transport};
use crate::channel_messages::{ChannelMessage, Mentions, HISTORY_PAGE_MAX};
use crate::crypto::search::{has, text_flags, words, ChannelDoc, Doc, Filter, Place, SearchIndex};
use crate::crypto::History;
use crate::crypto::VaultError;
use crate::ids::{ChannelId, MessageId, UserId};

/// Results per page by default, and at most.
pub const SEARCH_PAGE: u32 = 25;
/// Results per page at most.
pub const SEARCH_PAGE_MAX: u32 = 100;
/// A query's text is cut to this many characters.
pub const QUERY_MAX_CHARS: usize = 500;
/// DM history entries indexed per store write.
const DM_ENTRIES_PER_WRITE: usize = 200;
/// How far each channel's history was read for search (shared by the store's devices, like
/// the index).
const CRAWL_NS: &str = "search_crawl";

/// How far a channel's history was read for search: from `oldest` to `newest`, and whether
/// `oldest` is the channel's first message.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Crawl {
    newest: Option<MessageId>,
    oldest: Option<MessageId>,
    complete: bool,
    /// Messages read that start threads, whose replies are still to read.
    #[serde(default)]
    threads: Vec<MessageId>,
}

/// Threads whose replies one crawl step reads.
const THREADS_PER_STEP: usize = 5;
/// Threads waiting to be read, per channel, at most.
const THREADS_QUEUED_MAX: usize = 1_000;

/// What a message must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Has {
    /// A link.
    Link,
    /// A mention of a user, a role or everyone.
    Mention,
    /// It answers another message.
    Reply,
}

/// A search of this device's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Words to find (all of them; the last one may be the beginning of a word). Empty: any
    /// message the filters keep.
    #[serde(default)]
    pub text: String,
    /// Written by one of these users (anyone when empty).
    #[serde(default)]
    pub from: Vec<UserId>,
    /// In these DM conversations (every one when absent, none when empty).
    #[serde(default)]
    pub dms: Option<Vec<UserId>>,
    /// In these channels or group DMs (every one when absent, none when empty).
    #[serde(default)]
    pub channels: Option<Vec<ChannelId>>,
    /// Has all of these.
    #[serde(default)]
    pub has: Vec<Has>,
    /// Sent before this time (Unix milliseconds).
    #[serde(default)]
    pub before: Option<i64>,
    /// Sent at or after this time (Unix milliseconds).
    #[serde(default)]
    pub after: Option<i64>,
    /// Results to skip (the newest first).
    #[serde(default)]
    pub offset: u32,
    /// Results to return ([`SEARCH_PAGE`] by default, at most [`SEARCH_PAGE_MAX`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Where a result is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HitPlace {
    /// A direct conversation.
    Dm {
        /// The other participant.
        user_id: UserId,
        /// The message's position in the conversation's history.
        position: u64,
    },
    /// A channel or a group DM.
    Channel {
        /// The channel.
        channel_id: ChannelId,
        /// The message.
        message_id: MessageId,
        /// The thread it is in.
        thread_id: Option<MessageId>,
    },
}

/// One message found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// Where it is.
    #[serde(flatten)]
    pub place: HitPlace,
    /// Who wrote it.
    pub author_id: UserId,
    /// When it was sent (Unix milliseconds).
    pub sent_at: i64,
    /// Its text (as it is now).
    pub body: String,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResults {
    /// Messages found in all.
    pub total: u32,
    /// The page asked for, the newest first.
    pub hits: Vec<SearchHit>,
    /// The query's words as they were looked for (to highlight them).
    pub words: Vec<String>,
    /// The `offset` of the next page (results whose message is gone are skipped, so this is
    /// not always `offset + hits.len()`).
    pub next_offset: u32,
}

impl<T: Transport> Engine<T> {
    /// Searches this device's history. The query never leaves the device.
    pub async fn search(&mut self, query: &SearchQuery) -> Result<SearchResults, MessagingError> {
        self.index_dms().await?;
        let text: String = query.text.chars().take(QUERY_MAX_CHARS).collect();
        let flags = query.has.iter().fold(0, |f, h| {
            f | match h {
                Has::Link => has::LINK,
                Has::Mention => has::MENTION,
                Has::Reply => has::REPLY,
            }
        });
        let filter = Filter {
            authors: (!query.from.is_empty()).then(|| query.from.clone()),
            dms: query.dms.clone(),
            channels: query.channels.clone(),
            flags,
            before: query.before,
            after: query.after,
        };
        let limit = query.limit.unwrap_or(SEARCH_PAGE).clamp(1, SEARCH_PAGE_MAX) as usize;
        let (total, docs) = SearchIndex::new(self.device.vault(), &mut self.search_docs)
            .search(&text, &filter, query.offset as usize, limit)
            .await?;
        let next_offset = query.offset.saturating_add(docs.len() as u32);
        let mut hits = Vec::with_capacity(docs.len());
        for (_, doc) in docs {
            if let Some(hit) = self.hit(&doc).await? {
                hits.push(hit);
            }
        }
        let mut found = words(&text);
        let mut seen = std::collections::HashSet::new();
        found.retain(|w| seen.insert(w.clone()));
        Ok(SearchResults { total: total.try_into().unwrap_or(u32::MAX), hits, words: found, next_offset })
    }

    /// A document as a result, with its message's text as it is now (`None` if it is gone).
    async fn hit(&mut self, doc: &Doc) -> Result<Option<SearchHit>, MessagingError> {
        Ok(match doc.place {
            Place::Dm(user) => {
                let page: Vec<(u64, HistoryEntry)> =
                    History::new(self.device.vault()).page(&user.to_string(), Some(doc.reference.saturating_add(1)), 1).await?;
                match page.into_iter().next() {
                    Some((position, HistoryEntry::Message(m))) if position == doc.reference => Some(SearchHit {
                        place: HitPlace::Dm { user_id: user, position },
                        author_id: m.author,
                        sent_at: m.sent_at,
                        body: m.body,
                    }),
                    _ => None,
                }
            }
            Place::Channel(channel) => {
                let id = MessageId(doc.reference as i64);
                self.channel_text(channel, id).await?.map(|(m, body)| SearchHit {
                    place: HitPlace::Channel { channel_id: channel, message_id: id, thread_id: m.thread_id },
                    author_id: m.author_id,
                    sent_at: m.created_at,
                    body,
                })
            }
        })
    }

    /// Indexes what the DM histories gained since the last search.
    async fn index_dms(&mut self) -> Result<(), MessagingError> {
        let vault = self.device.vault();
        let history = History::new(vault);
        for conversation in history.conversations().await? {
            let Ok(user) = conversation.parse::<UserId>() else { continue };
            let len = history.len(&conversation).await?;
            let mut index = SearchIndex::new(vault, &mut self.search_docs);
            let mut from = index.dm_indexed(user).await?;
            while from < len {
                let to = (from + DM_ENTRIES_PER_WRITE as u64).min(len);
                let page: Vec<(u64, HistoryEntry)> = history.page(&conversation, Some(to), DM_ENTRIES_PER_WRITE).await?;
                // The entries and how far they go are written together: none is indexed twice.
                vault.begin_batch();
                let written = async {
                    for (position, entry) in page.iter().filter(|(p, _)| *p >= from) {
                        if let HistoryEntry::Message(m) = entry {
                            let doc = Doc {
                                place: Place::Dm(user),
                                author: m.author,
                                at: m.sent_at,
                                reference: *position,
                                flags: text_flags(&m.body),
                                live: true,
                            };
                            index.add(doc, &m.body).await?;
                        }
                    }
                    index.set_dm_indexed(user, to).await
                }
                .await;
                match written {
                    Ok(()) => vault.commit_batch().await?,
                    Err(e) => {
                        vault.abort_batch();
                        // The table in memory may hold documents that were not written.
                        self.search_docs = None;
                        return Err(e.into());
                    }
                }
                from = to;
            }
        }
        Ok(())
    }

    /// Indexes a channel message's version as read (once; a later version retires it). An
    /// index that cannot be written does not keep the message from being read: it is only
    /// missing from the results.
    pub(super) async fn index_channel_message(&mut self, m: &ChannelMessage, body: &str, thread_name: Option<&str>, reply: bool) {
        if let Err(e) = self.try_index_channel_message(m, body, thread_name, reply).await {
            tracing::warn!(error = %e, message = %m.id, "a message could not be added to the search index");
            self.search_docs = None;
        }
    }

    async fn try_index_channel_message(
        &mut self,
        m: &ChannelMessage,
        body: &str,
        thread_name: Option<&str>,
        reply: bool,
    ) -> Result<(), VaultError> {
        let version = m.edited_at.unwrap_or(i64::MIN);
        let mut index = SearchIndex::new(self.device.vault(), &mut self.search_docs);
        let known = index.channel_doc(m.id).await?;
        if known.is_some_and(|k| k.deleted || k.version >= version) {
            return Ok(());
        }
        if let Some(old) = known {
            index.retire(old.number).await?;
        }
        let mut flags = text_flags(body);
        if !Mentions::in_text(body).is_empty() {
            flags |= has::MENTION;
        }
        if reply {
            flags |= has::REPLY;
        }
        let text = match thread_name {
            Some(name) => format!("{name}\n{body}"),
            None => body.to_owned(),
        };
        let doc = Doc {
            place: Place::Channel(m.channel_id),
            author: m.author_id,
            at: m.created_at,
            reference: m.id.get() as u64,
            flags,
            live: true,
        };
        let number = index.add(doc, &text).await?;
        index.set_channel_doc(m.id, ChannelDoc { number, version, deleted: false }).await?;
        if let (Some(thread), None) = (m.thread_id, known) {
            index.add_thread_reply(thread, m.id).await?;
        }
        Ok(())
    }

    /// Reads one more page of a channel's history for search, so that what was sent while
    /// this device was away, or before it first opened the channel, can be found: first the
    /// messages newer than those read so far (until this run of the engine has caught up),
    /// then older ones, back to the beginning, with the newest replies of the threads they
    /// start. `fresh`: look for newer messages again (after a reconnection: what came while
    /// away). Returns whether the whole channel is read. Nothing of a query is involved: the
    /// pages are those any scrolling asks for.
    pub async fn search_crawl(&mut self, channel: ChannelId, fresh: bool, now: i64) -> Result<bool, MessagingError> {
        self.tick(now);
        if fresh {
            self.search_caught_up.remove(&channel);
        }
        let key = format!("k/{channel}");
        let vault = self.device.vault();
        let mut crawl: Crawl = match vault.get(CRAWL_NS, key.as_bytes()).await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?,
            None => Crawl::default(),
        };
        let limit = HISTORY_PAGE_MAX;
        // Threads first, a few per step: the newest replies of each.
        if !crawl.threads.is_empty() {
            let take = crawl.threads.len().min(THREADS_PER_STEP);
            for starter in crawl.threads.drain(..take).collect::<Vec<_>>() {
                let path = format!("/api/v1/channels/{channel}/messages?limit={limit}&thread_id={starter}");
                let mut replies: Vec<ChannelMessage> = self.api("GET", &path, None::<&()>).await?;
                replies.retain(|m| m.channel_id == channel && m.thread_id == Some(starter));
                replies.sort_by_key(|m| m.id);
                self.read_batch(&replies).await?;
            }
            self.keep_crawl(&key, &crawl).await?;
            return Ok(false);
        }
        let forward = !self.search_caught_up.contains(&channel);
        let path = match (crawl.newest, crawl.oldest) {
            (None, _) => format!("/api/v1/channels/{channel}/messages?limit={limit}"),
            (Some(newest), _) if forward => format!("/api/v1/channels/{channel}/messages?limit={limit}&after={newest}"),
            (_, Some(oldest)) if !crawl.complete => format!("/api/v1/channels/{channel}/messages?limit={limit}&before={oldest}"),
            _ => return Ok(true),
        };
        let mut page: Vec<ChannelMessage> = self.api("GET", &path, None::<&()>).await?;
        // Only what lies beyond the cursor: a server that serves the same page again ends
        // the walk instead of keeping it going.
        page.retain(|m| {
            m.channel_id == channel
                && m.thread_id.is_none()
                && match (crawl.newest, crawl.oldest) {
                    (None, _) => true,
                    (Some(newest), _) if forward => m.id > newest,
                    (_, Some(oldest)) => m.id < oldest,
                    _ => false,
                }
        });
        page.sort_by_key(|m| m.id);
        page.dedup_by_key(|m| m.id);
        let short = page.len() < limit;
        self.read_batch(&page).await?;
        for starter in page.iter().filter(|m| m.thread_count > 0) {
            if crawl.threads.len() < THREADS_QUEUED_MAX {
                crawl.threads.push(starter.id);
            }
        }
        let (first, last) = (page.first().map(|m| m.id), page.last().map(|m| m.id));
        match (crawl.newest, forward) {
            (None, _) => {
                (crawl.newest, crawl.oldest, crawl.complete) = (last, first, short);
                if short {
                    self.search_caught_up.insert(channel);
                }
            }
            (Some(_), true) => {
                crawl.newest = last.or(crawl.newest);
                if short {
                    self.search_caught_up.insert(channel);
                }
            }
            (Some(_), false) => {
                crawl.oldest = first.or(crawl.oldest);
                crawl.complete = short;
            }
        }
        self.keep_crawl(&key, &crawl).await?;
        Ok(crawl.complete && crawl.threads.is_empty() && self.search_caught_up.contains(&channel))
    }

    async fn keep_crawl(&self, key: &str, crawl: &Crawl) -> Result<(), MessagingError> {
        let raw = serde_json::to_vec(crawl).map_err(|e| MessagingError::Transport(e.to_string()))?;
        self.device.vault().put(CRAWL_NS, key.as_bytes(), &raw).await?;
        Ok(())
    }

    /// A deleted channel message leaves the results (with the replies of the thread it
    /// starts, which go with it), and is not indexed again.
    pub(super) async fn unindex_channel_message(&mut self, id: MessageId) -> Result<(), MessagingError> {
        let mut index = SearchIndex::new(self.device.vault(), &mut self.search_docs);
        let replies = index.thread_replies(id).await?;
        for message in std::iter::once(id).chain(replies) {
            if let Some(known) = index.channel_doc(message).await?.filter(|k| !k.deleted) {
                index.retire(known.number).await?;
                index.set_channel_doc(message, ChannelDoc { deleted: true, ..known }).await?;
            }
        }
        Ok(())
    }
}
