//! Private full-text search over this device's decrypted history, kept in the vault.
//!
//! The server never sees a query: the index is built here, from the plaintexts this device
//! decrypted, and lives in the same encrypted store as the history. It is an inverted index
//! of a plain kind, laid out so that the store's blinding still hides it:
//!
//! - Every indexed message is a *document* with a number given in order. The *document table*
//!   holds, per number, where the message is (a DM conversation or a channel), its author, its
//!   time, what it has (a link, a mention, a reply), and whether it is still current; it is
//!   kept in records of [`CHUNK`] documents and read whole into memory on the first search,
//!   so that filters (`from`, `in`, `has`, `before`, `after`) cost no store reads.
//! - Every word (lower-cased, accents folded, see [`words`]) has *postings*: the numbers of
//!   the documents that hold it, in blocks of [`BLOCK`] numbers, as varint deltas, with a
//!   small record listing the blocks the word has. A new message appends to the last block.
//! - Words of three characters or more are also listed in a *dictionary* bucket by their first
//!   two characters, so the last word of a query also finds the words it begins.
//!
//! Record names go through the vault's keyed hash like every other record, and values are
//! sealed: the store file shows neither the words, nor which records belong to the index.
//! An edit or a deletion marks the old document not current (its postings stay and are
//! skipped), so the index never rewrites old blocks.

use std::collections::{BTreeSet, HashSet};

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::vault::{Vault, VaultError};
use crate::ids::{ChannelId, MessageId, UserId};

const NS: &str = "search";
/// Documents per record of the document table.
pub const CHUNK: u32 = 256;
/// Document numbers per postings block.
pub const BLOCK: u32 = 4096;
/// Longer words are cut to this many characters (in the index and in queries alike).
pub const WORD_MAX_CHARS: usize = 40;
/// Distinct words indexed per message at most (the rest of a very long one is not).
pub const WORDS_PER_DOC_MAX: usize = 500;
/// Words new to the index that one message adds to the dictionary at most (the others are
/// found whole, not by their beginning): a message of junk words costs a bounded rewrite.
pub const NEW_WORDS_LISTED_MAX: usize = 64;
/// Words one dictionary bucket (two first characters) lists at most.
pub const BUCKET_MAX: usize = 4096;
/// Words the last word of a query may stand for as a beginning.
pub const PREFIX_EXPANSION_MAX: usize = 64;
const DOC_BYTES: usize = 34;

/// Replies of one thread noted at most (to retire them with the thread's first message).
pub const THREAD_REPLIES_MAX: usize = 10_000;

/// What the index holds of a channel message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelDoc {
    /// The document of its current version.
    pub number: u32,
    /// Which version: its edit time, `i64::MIN` for the original.
    pub version: i64,
    /// It was deleted (its document is retired, and it is not indexed again).
    pub deleted: bool,
}

/// What a message has, as bits of [`Doc::flags`].
pub mod has {
    /// A link (`http://` or `https://`).
    pub const LINK: u8 = 1;
    /// A mention of a user, a role or everyone.
    pub const MENTION: u8 = 2;
    /// It answers another message.
    pub const REPLY: u8 = 4;
}

/// Where a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// The direct conversation with this user.
    Dm(UserId),
    /// A channel, a thread's channel or a group DM.
    Channel(ChannelId),
}

/// One indexed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    /// Where it is.
    pub place: Place,
    /// Who wrote it.
    pub author: UserId,
    /// When it was sent (Unix milliseconds).
    pub at: i64,
    /// Which message: its position in the DM history, or the channel message's id.
    pub reference: u64,
    /// What it has ([`has`]).
    pub flags: u8,
    /// The current text of the message (not an edited-away version or a deleted message).
    pub live: bool,
}

impl Doc {
    fn encode(&self, out: &mut [u8]) {
        let (kind, place) = match self.place {
            Place::Dm(u) => (1u8, u.get()),
            Place::Channel(c) => (2u8, c.get()),
        };
        out[0] = kind | if self.live { 0 } else { 0x80 };
        out[1] = self.flags;
        out[2..10].copy_from_slice(&place.to_le_bytes());
        out[10..18].copy_from_slice(&self.author.get().to_le_bytes());
        out[18..26].copy_from_slice(&self.at.to_le_bytes());
        out[26..34].copy_from_slice(&self.reference.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Result<Self, VaultError> {
        let int = |r: std::ops::Range<usize>| i64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        let place = match b[0] & 0x7f {
            1 => Place::Dm(UserId(int(2..10))),
            2 => Place::Channel(ChannelId(int(2..10))),
            _ => return Err(VaultError::Corrupt),
        };
        Ok(Self {
            place,
            author: UserId(int(10..18)),
            at: int(18..26),
            reference: int(26..34) as u64,
            flags: b[1],
            live: b[0] & 0x80 == 0,
        })
    }
}

/// Which documents a search keeps, besides its words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Written by one of these users (any author when `None`).
    pub authors: Option<Vec<UserId>>,
    /// In one of these DM conversations (every one when `None`, none when empty).
    pub dms: Option<Vec<UserId>>,
    /// In one of these channels (every one when `None`, none when empty).
    pub channels: Option<Vec<ChannelId>>,
    /// Has all of these ([`has`] bits).
    pub flags: u8,
    /// Sent before this time (Unix milliseconds).
    pub before: Option<i64>,
    /// Sent at or after this time.
    pub after: Option<i64>,
}

impl Filter {
    fn keeps(&self, d: &Doc) -> bool {
        d.live
            && d.flags & self.flags == self.flags
            && self.authors.as_ref().is_none_or(|a| a.contains(&d.author))
            && match d.place {
                Place::Dm(u) => self.dms.as_ref().is_none_or(|l| l.contains(&u)),
                Place::Channel(c) => self.channels.as_ref().is_none_or(|l| l.contains(&c)),
            }
            && self.before.is_none_or(|b| d.at < b)
            && self.after.is_none_or(|a| d.at >= a)
    }
}

/// The words of `text` as the index knows them, in order (with repeats): runs of letters and
/// digits, lower-cased, with accents and other combining marks removed after compatibility
/// decomposition (so `Café`, `CAFE` and `café` are one word, and so are `ﬁle` and `file`).
/// Han, Hiragana and Katakana characters, written without spaces, are one word each, kept as
/// they are.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = 0;
    let flush = |current: &mut String, chars: &mut usize, out: &mut Vec<String>| {
        if !current.is_empty() {
            out.push(std::mem::take(current));
        }
        *chars = 0;
    };
    // Kana and ideographs as they are (a voiced kana keeps its mark: で is not て); the rest
    // decomposed, marks dropped, lower-cased.
    let folded = text.chars().flat_map(|c| {
        let kept = is_unspaced(c).then_some(c);
        let decomposed =
            kept.is_none().then(|| std::iter::once(c).nfkd().filter(|d| !is_combining_mark(*d)).flat_map(char::to_lowercase));
        kept.into_iter().chain(decomposed.into_iter().flatten())
    });
    for c in folded {
        if is_unspaced(c) {
            flush(&mut current, &mut chars, &mut out);
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            if chars < WORD_MAX_CHARS {
                current.push(c);
                chars += 1;
            }
        } else {
            flush(&mut current, &mut chars, &mut out);
        }
    }
    flush(&mut current, &mut chars, &mut out);
    out
}

/// Scripts written without spaces between words: each character is indexed alone.
fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff // Hiragana, Katakana
        | 0x3400..=0x4dbf // CJK extension A
        | 0x4e00..=0x9fff // CJK unified ideographs
        | 0xf900..=0xfaff // CJK compatibility ideographs
        | 0x20000..=0x3134f) // CJK extensions B to G
}

/// The has-bits of a message's text (a mention or a reply are told by the caller).
pub fn text_flags(text: &str) -> u8 {
    let lower = text.to_ascii_lowercase();
    if lower.contains("http://") || lower.contains("https://") {
        has::LINK
    } else {
        0
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varints(bytes: &[u8]) -> Result<Vec<u32>, VaultError> {
    let mut out = Vec::new();
    let (mut v, mut shift) = (0u32, 0u32);
    for &b in bytes {
        if shift > 28 {
            return Err(VaultError::Corrupt);
        }
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            out.push(v);
            (v, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return Err(VaultError::Corrupt);
    }
    Ok(out)
}

/// The documents of a postings block (deltas from the block's first number).
fn decode_block(block: u32, bytes: &[u8]) -> Result<Vec<u32>, VaultError> {
    let mut at = block.checked_mul(BLOCK).ok_or(VaultError::Corrupt)?;
    let mut out = Vec::new();
    for (i, d) in varints(bytes)?.into_iter().enumerate() {
        at = if i == 0 { at.checked_add(d) } else { at.checked_add(d).filter(|_| d > 0) }.ok_or(VaultError::Corrupt)?;
        out.push(at);
    }
    Ok(out)
}

fn bucket_of(word: &str) -> Option<String> {
    let mut it = word.chars();
    let two: String = it.by_ref().take(2).collect();
    // Only words of three characters or more: shorter ones are found by their postings.
    it.next().map(|_| two)
}

/// The document table, as read on a first search and kept up to date after.
pub type DocTable = Vec<Doc>;

/// The search index of one store.
pub struct SearchIndex<'a> {
    vault: &'a Vault,
    /// The document table when it has been read (kept in step with writes).
    docs: &'a mut Option<DocTable>,
}

impl std::fmt::Debug for SearchIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SearchIndex")
    }
}

impl<'a> SearchIndex<'a> {
    /// The index in `vault`; `docs` is where its document table is kept once read.
    pub fn new(vault: &'a Vault, docs: &'a mut Option<DocTable>) -> Self {
        Self { vault, docs }
    }

    async fn get_u64(&self, key: &str) -> Result<Option<u64>, VaultError> {
        match self.vault.get(NS, key.as_bytes()).await? {
            None => Ok(None),
            Some(b) => Ok(Some(u64::from_le_bytes(b.as_slice().try_into().map_err(|_| VaultError::Corrupt)?))),
        }
    }

    /// Documents numbered so far.
    pub async fn count(&self) -> Result<u32, VaultError> {
        self.get_u64("n").await?.unwrap_or(0).try_into().map_err(|_| VaultError::Corrupt)
    }

    /// Adds a message with its text and returns its document number. Everything the
    /// document changes is read first and written together, so a failed read leaves the
    /// index as it was.
    pub async fn add(&mut self, doc: Doc, text: &str) -> Result<u32, VaultError> {
        let number = self.count().await?;
        let next = number.checked_add(1).ok_or_else(|| VaultError::Backend("the search index is full".into()))?;
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        writes.push(self.doc_write(number, &doc).await?);
        let mut seen = HashSet::new();
        let mut new_words: Vec<String> = Vec::new();
        for word in words(text) {
            if seen.len() >= WORDS_PER_DOC_MAX {
                break;
            }
            if seen.insert(word.clone()) {
                let (head, block, first) = self.post_writes(&word, number).await?;
                writes.extend(head);
                writes.extend(block);
                if first && new_words.len() < NEW_WORDS_LISTED_MAX {
                    new_words.push(word);
                }
            }
        }
        writes.extend(self.dictionary_writes(&new_words).await?);
        writes.push(("n".to_owned(), u64::from(next).to_le_bytes().to_vec()));
        let records: Vec<(&[u8], &[u8])> = writes.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())).collect();
        self.vault.put_many(NS, &records).await?;
        if let Some(docs) = self.docs.as_mut() {
            if docs.len() == number as usize {
                docs.push(doc);
            } else {
                *self.docs = None;
            }
        }
        Ok(number)
    }

    /// Marks a document as no longer current (an edited-away version, a deleted message).
    pub async fn retire(&mut self, number: u32) -> Result<(), VaultError> {
        let key = format!("d/{}", number / CHUNK);
        let Some(mut chunk) = self.vault.get(NS, key.as_bytes()).await? else { return Err(VaultError::Corrupt) };
        let at = (number % CHUNK) as usize * DOC_BYTES;
        if chunk.len() < at + DOC_BYTES {
            return Err(VaultError::Corrupt);
        }
        chunk[at] |= 0x80;
        self.vault.put(NS, key.as_bytes(), &chunk).await?;
        if let Some(d) = self.docs.as_mut().and_then(|docs| docs.get_mut(number as usize)) {
            d.live = false;
        }
        Ok(())
    }

    /// The document table's record with `doc` at `number` (the next one).
    async fn doc_write(&self, number: u32, doc: &Doc) -> Result<(String, Vec<u8>), VaultError> {
        let key = format!("d/{}", number / CHUNK);
        let mut chunk = self.vault.get(NS, key.as_bytes()).await?.unwrap_or_default();
        let at = (number % CHUNK) as usize * DOC_BYTES;
        if chunk.len() != at {
            return Err(VaultError::Corrupt);
        }
        chunk.resize(at + DOC_BYTES, 0);
        doc.encode(&mut chunk[at..]);
        Ok((key, chunk))
    }

    /// The records that put document `number` in `word`'s postings (its list of blocks when
    /// a block starts, and the block), and whether the word is new to the index.
    async fn post_writes(
        &self,
        word: &str,
        number: u32,
    ) -> Result<(Option<(String, Vec<u8>)>, Option<(String, Vec<u8>)>, bool), VaultError> {
        let block = number / BLOCK;
        let head_key = format!("h/{word}");
        let mut blocks = match self.vault.get(NS, head_key.as_bytes()).await? {
            Some(raw) => varints(&raw)?,
            None => Vec::new(),
        };
        let first = blocks.is_empty();
        let head = if blocks.last() != Some(&block) {
            blocks.push(block);
            let mut raw = Vec::with_capacity(blocks.len() * 2);
            blocks.iter().for_each(|b| put_varint(&mut raw, *b));
            Some((head_key, raw))
        } else {
            None
        };
        let block_key = format!("p/{word}/{block}");
        let mut raw = self.vault.get(NS, block_key.as_bytes()).await?.unwrap_or_default();
        let delta = match decode_block(block, &raw)?.last().copied() {
            None => number - block * BLOCK,
            Some(l) if l < number => number - l,
            // Already there (the same document twice): nothing to add.
            Some(_) => return Ok((head, None, first)),
        };
        put_varint(&mut raw, delta);
        Ok((head, Some((block_key, raw)), first))
    }

    /// The dictionary buckets with `new` words listed (each bucket written once; a full one
    /// takes no more: its words are still found whole, not by their beginning).
    async fn dictionary_writes(&self, new: &[String]) -> Result<Vec<(String, Vec<u8>)>, VaultError> {
        let mut buckets: std::collections::BTreeMap<String, Vec<&str>> = std::collections::BTreeMap::new();
        for word in new {
            if let Some(bucket) = bucket_of(word) {
                buckets.entry(bucket).or_default().push(word);
            }
        }
        let mut out = Vec::with_capacity(buckets.len());
        for (bucket, words) in buckets {
            let key = format!("w/{bucket}");
            let raw = self.vault.get(NS, key.as_bytes()).await?.unwrap_or_default();
            let text = String::from_utf8(raw).map_err(|_| VaultError::Corrupt)?;
            let mut list: BTreeSet<&str> = text.split('\n').filter(|w| !w.is_empty()).collect();
            let before = list.len();
            for w in words {
                if list.len() >= BUCKET_MAX {
                    break;
                }
                list.insert(w);
            }
            if list.len() != before {
                out.push((key, list.into_iter().collect::<Vec<_>>().join("\n").into_bytes()));
            }
        }
        Ok(out)
    }

    /// The documents holding `word`, in order.
    async fn postings(&self, word: &str) -> Result<Vec<u32>, VaultError> {
        let Some(head) = self.vault.get(NS, format!("h/{word}").as_bytes()).await? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for block in varints(&head)? {
            if let Some(raw) = self.vault.get(NS, format!("p/{word}/{block}").as_bytes()).await? {
                out.extend(decode_block(block, &raw)?);
            }
        }
        Ok(out)
    }

    /// The documents holding `word` or a word it begins (up to [`PREFIX_EXPANSION_MAX`]).
    async fn postings_from(&self, word: &str) -> Result<Vec<u32>, VaultError> {
        let mut all = self.postings(word).await?;
        if let Some(bucket) = word.chars().nth(1).map(|_| word.chars().take(2).collect::<String>()) {
            if let Some(raw) = self.vault.get(NS, format!("w/{bucket}").as_bytes()).await? {
                let text = String::from_utf8(raw).map_err(|_| VaultError::Corrupt)?;
                // The closest completions first (the shortest words).
                let mut longer: Vec<&str> = text.split('\n').filter(|w| w.len() > word.len() && w.starts_with(word)).collect();
                longer.sort_by_key(|w| (w.len(), *w));
                for other in longer.into_iter().take(PREFIX_EXPANSION_MAX) {
                    all.extend(self.postings(other).await?);
                }
                all.sort_unstable();
                all.dedup();
            }
        }
        Ok(all)
    }

    /// Reads the document table (once: it is kept, and kept in step, after).
    pub async fn load(&mut self) -> Result<(), VaultError> {
        if self.docs.is_some() {
            return Ok(());
        }
        let count = self.count().await?;
        let mut docs = Vec::with_capacity(count as usize);
        for chunk in 0..count.div_ceil(CHUNK) {
            let raw = self.vault.get(NS, format!("d/{chunk}").as_bytes()).await?.ok_or(VaultError::Corrupt)?;
            if raw.len() % DOC_BYTES != 0 {
                return Err(VaultError::Corrupt);
            }
            for b in raw.chunks_exact(DOC_BYTES) {
                docs.push(Doc::decode(b)?);
            }
        }
        if docs.len() != count as usize {
            return Err(VaultError::Corrupt);
        }
        *self.docs = Some(docs);
        Ok(())
    }

    /// The current documents that hold every word of `text` (the last one also as the
    /// beginning of a longer word) and pass `filter`, the newest first: how many there are,
    /// and those from `offset` on, up to `limit`.
    pub async fn search(
        &mut self,
        text: &str,
        filter: &Filter,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<(u32, Doc)>), VaultError> {
        self.load().await?;
        let mut terms = words(text);
        if terms.is_empty() && !text.trim().is_empty() {
            // Only punctuation: no word to look for.
            return Ok((0, Vec::new()));
        }
        // Unless the text ends with a space, its last word may be the beginning of one.
        let prefix = terms.last().cloned().filter(|_| !text.ends_with(char::is_whitespace));
        let mut seen = HashSet::new();
        terms.retain(|t| seen.insert(t.clone()));
        let mut lists = Vec::with_capacity(terms.len());
        for term in &terms {
            let list = if prefix.as_ref() == Some(term) { self.postings_from(term).await? } else { self.postings(term).await? };
            if list.is_empty() {
                return Ok((0, Vec::new()));
            }
            lists.push(list);
        }
        let docs = self.docs.as_ref().ok_or(VaultError::Corrupt)?;
        let mut found: Vec<(u32, Doc)> = if lists.is_empty() {
            docs.iter().enumerate().filter(|(_, d)| filter.keeps(d)).map(|(n, d)| (n as u32, *d)).collect()
        } else {
            lists.sort_by_key(Vec::len);
            let mut hits = lists[0].clone();
            for other in &lists[1..] {
                hits = intersect(&hits, other);
            }
            hits.into_iter().filter_map(|n| docs.get(n as usize).map(|d| (n, *d))).filter(|(_, d)| filter.keeps(d)).collect()
        };
        found.sort_unstable_by_key(|(n, d)| std::cmp::Reverse((d.at, *n)));
        let total = found.len();
        Ok((total, found.into_iter().skip(offset).take(limit).collect()))
    }

    async fn small(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        self.vault.get(NS, key.as_bytes()).await
    }

    /// What the index holds of a channel message: its document and version, or that it was
    /// deleted.
    pub async fn channel_doc(&self, message: MessageId) -> Result<Option<ChannelDoc>, VaultError> {
        let Some(raw) = self.small(&format!("c/{message}")).await? else { return Ok(None) };
        if raw.len() != 13 {
            return Err(VaultError::Corrupt);
        }
        Ok(Some(ChannelDoc {
            number: u32::from_le_bytes(raw[..4].try_into().expect("4 bytes")),
            version: i64::from_le_bytes(raw[4..12].try_into().expect("8 bytes")),
            deleted: raw[12] != 0,
        }))
    }

    /// Notes what the index holds of a channel message.
    pub async fn set_channel_doc(&self, message: MessageId, doc: ChannelDoc) -> Result<(), VaultError> {
        let mut raw = doc.number.to_le_bytes().to_vec();
        raw.extend_from_slice(&doc.version.to_le_bytes());
        raw.push(u8::from(doc.deleted));
        self.vault.put(NS, format!("c/{message}").as_bytes(), &raw).await
    }

    /// The replies indexed in the thread `thread` starts (up to [`THREAD_REPLIES_MAX`]).
    pub async fn thread_replies(&self, thread: MessageId) -> Result<Vec<MessageId>, VaultError> {
        let Some(raw) = self.small(&format!("t/{thread}")).await? else { return Ok(Vec::new()) };
        if raw.len() % 8 != 0 {
            return Err(VaultError::Corrupt);
        }
        Ok(raw.chunks_exact(8).map(|c| MessageId(i64::from_le_bytes(c.try_into().expect("8 bytes")))).collect())
    }

    /// Notes a reply of the thread `thread` starts (its deletion deletes the replies).
    pub async fn add_thread_reply(&self, thread: MessageId, reply: MessageId) -> Result<(), VaultError> {
        let key = format!("t/{thread}");
        let mut raw = self.small(&key).await?.unwrap_or_default();
        if raw.len() / 8 >= THREAD_REPLIES_MAX {
            return Ok(());
        }
        raw.extend_from_slice(&reply.get().to_le_bytes());
        self.vault.put(NS, key.as_bytes(), &raw).await
    }

    /// How far the history of a DM conversation is indexed (entries before this position).
    pub async fn dm_indexed(&self, conversation: UserId) -> Result<u64, VaultError> {
        Ok(self.get_u64(&format!("m/{conversation}")).await?.unwrap_or(0))
    }

    /// Notes how far the history of a DM conversation is indexed.
    pub async fn set_dm_indexed(&self, conversation: UserId, position: u64) -> Result<(), VaultError> {
        self.vault.put(NS, format!("m/{conversation}").as_bytes(), &position.to_le_bytes()).await
    }
}

/// The numbers in both sorted lists.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::vault::tests::{block_on, Shared};
    use crate::crypto::vault::MemoryBackend;

    fn doc(place: Place, author: i64, at: i64, flags: u8) -> Doc {
        Doc { place, author: UserId(author), at, reference: at as u64, flags, live: true }
    }

    #[test]
    fn words_are_folded_and_cut() {
        assert_eq!(words("Café, CAFE! naïve-coöperation ﬁle"), ["cafe", "cafe", "naive", "cooperation", "file"]);
        assert_eq!(words("東京で会う"), ["東", "京", "で", "会", "う"]);
        assert_eq!(words("ÉTÉ 2026 — l'été"), ["ete", "2026", "l", "ete"]);
        let long = "x".repeat(100);
        assert_eq!(words(&long), ["x".repeat(WORD_MAX_CHARS)]);
        assert!(words(" ,.;!? ").is_empty());
    }

    #[test]
    fn varints_round_trip_and_refuse_garbage() {
        let mut raw = Vec::new();
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            put_varint(&mut raw, v);
        }
        assert_eq!(varints(&raw).expect("decode"), [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX]);
        assert!(varints(&[0x80]).is_err(), "cut short");
        assert!(varints(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err(), "too long");
    }

    #[test]
    fn finds_by_words_prefix_and_filters_and_forgets_retired_versions() {
        block_on(async {
            let shared = Shared::default();
            let vault = Vault::open(Box::new(shared.clone()), "pw").await.expect("open");
            let mut table = None;
            let mut index = SearchIndex::new(&vault, &mut table);
            let (alice, bob) = (1, 2);
            let general = Place::Channel(ChannelId(10));
            let dm = Place::Dm(UserId(bob));
            let picnic = index.add(doc(general, alice, 1_000, 0), "Picnic on Saturday at the lake").await.expect("add");
            index.add(doc(general, bob, 2_000, has::LINK), "the map: https://maps.example/lake").await.expect("add");
            index.add(doc(dm, bob, 3_000, 0), "Bring the pétanque balls to the picnic").await.expect("add");
            index.add(doc(dm, alice, 4_000, has::REPLY), "Saturday works").await.expect("add");

            let everywhere = Filter::default();
            let at = |found: &[(u32, Doc)]| found.iter().map(|(_, d)| d.at).collect::<Vec<_>>();
            let (total, found) = index.search("picnic", &everywhere, 0, 10).await.expect("search");
            assert_eq!((total, at(&found)), (2, vec![3_000, 1_000]), "newest first");
            assert_eq!(at(&index.search("PETANQUE", &everywhere, 0, 10).await.expect("search").1), [3_000], "folded");
            assert_eq!(at(&index.search("lake saturday", &everywhere, 0, 10).await.expect("search").1), [1_000], "every word");
            assert_eq!(
                at(&index.search("satur", &everywhere, 0, 10).await.expect("search").1),
                [4_000, 1_000],
                "last word begins one"
            );
            assert!(index.search("satur ", &everywhere, 0, 10).await.expect("search").1.is_empty(), "a finished word is whole");
            assert!(index.search("volleyball", &everywhere, 0, 10).await.expect("search").1.is_empty());
            assert!(index.search("?!", &everywhere, 0, 10).await.expect("search").1.is_empty());

            let from_bob = Filter { authors: Some(vec![UserId(bob)]), ..Filter::default() };
            assert_eq!(at(&index.search("the", &from_bob, 0, 10).await.expect("search").1), [3_000, 2_000]);
            let in_general = Filter { dms: Some(vec![]), channels: Some(vec![ChannelId(10)]), ..Filter::default() };
            assert_eq!(at(&index.search("the", &in_general, 0, 10).await.expect("search").1), [2_000, 1_000]);
            let links = Filter { flags: has::LINK, ..Filter::default() };
            assert_eq!(at(&index.search("", &links, 0, 10).await.expect("search").1), [2_000], "filters alone");
            let window = Filter { after: Some(2_000), before: Some(4_000), ..Filter::default() };
            assert_eq!(at(&index.search("", &window, 0, 10).await.expect("search").1), [3_000, 2_000]);
            let (total, page) = index.search("", &everywhere, 1, 2).await.expect("search");
            assert_eq!((total, at(&page)), (4, vec![3_000, 2_000]), "paged");

            // An edit: the old version is retired, the new one added.
            index.retire(picnic).await.expect("retire");
            index.add(doc(general, alice, 1_000, 0), "Barbecue on Sunday at the lake").await.expect("add");
            assert_eq!(at(&index.search("picnic", &everywhere, 0, 10).await.expect("search").1), [3_000]);
            assert_eq!(at(&index.search("barbecue", &everywhere, 0, 10).await.expect("search").1), [1_000]);

            // Kept: a fresh read of the store finds the same, and the store shows no word.
            let reopened = Vault::open(Box::new(shared.clone()), "pw").await.expect("reopen");
            let mut fresh = None;
            let mut again = SearchIndex::new(&reopened, &mut fresh);
            assert_eq!(at(&again.search("barbecue lake", &everywhere, 0, 10).await.expect("search").1), [1_000]);
            assert_eq!(again.count().await.expect("count"), 5);
            for (k, v) in shared.0 .0.borrow().iter() {
                for needle in [&b"picnic"[..], b"barbecue", b"lake", b"maps.example", b"search"] {
                    assert!(!k.windows(needle.len()).any(|w| w == needle), "a record name shows {needle:?}");
                    assert!(!v.windows(needle.len()).any(|w| w == needle), "a record shows {needle:?}");
                }
            }
        });
    }

    #[test]
    fn blocks_and_chunks_carry_over() {
        block_on(async {
            let vault = Vault::open(Box::new(MemoryBackend::default()), "pw").await.expect("open");
            let mut table = None;
            let mut index = SearchIndex::new(&vault, &mut table);
            let n = BLOCK + CHUNK + 3;
            vault.begin_batch();
            for i in 0..n {
                let text = if i % 1000 == 7 { "rare common" } else { "common" };
                index.add(doc(Place::Dm(UserId(5)), 5, i64::from(i), 0), text).await.expect("add");
            }
            vault.commit_batch().await.expect("commit");
            let (total, _) = index.search("common", &Filter::default(), 0, 1).await.expect("search");
            assert_eq!(total, n as usize);
            let mut cold = None;
            let mut reread = SearchIndex::new(&vault, &mut cold);
            let (total, found) = reread.search("rare", &Filter::default(), 0, 100).await.expect("search");
            assert_eq!(total, 5);
            assert_eq!(found.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [4007, 3007, 2007, 1007, 7]);
        });
    }
}
