//! Decrypted message history, kept in the vault (so it is encrypted at rest like the keys).
//!
//! Each conversation is an append-only list: a length record and one record per message,
//! numbered from 0 in the order this device saw them. A record per message id makes appends
//! idempotent, so a message delivered twice (a re-send after a retry request, a redelivery
//! after a crash before the acknowledgement) is shown once. The vault blinds record names,
//! so the file shows neither the conversations nor their lengths.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::vault::{Vault, VaultError};

const NS: &str = "history";

/// The history of one device, over its vault.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    vault: &'a Vault,
}

impl<'a> History<'a> {
    /// History records in `vault`.
    pub fn new(vault: &'a Vault) -> Self {
        Self { vault }
    }

    /// Number of messages in a conversation.
    pub async fn len(&self, conversation: &str) -> Result<u64, VaultError> {
        Ok(match self.vault.get(NS, format!("len/{conversation}").as_bytes()).await? {
            Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(|_| VaultError::Corrupt)?),
            None => 0,
        })
    }

    /// Appends a message with a unique `id` to a conversation and returns its position, or
    /// `None` (storing nothing) when a message with this id is already there.
    pub async fn append<T: Serialize>(&self, conversation: &str, id: &str, message: &T) -> Result<Option<u64>, VaultError> {
        let id_key = format!("id/{conversation}/{id}");
        if self.vault.get(NS, id_key.as_bytes()).await?.is_some() {
            return Ok(None);
        }
        let n = self.len(conversation).await?;
        let value = serde_json::to_vec(message).map_err(|e| VaultError::Backend(e.to_string()))?;
        let msg_key = format!("msg/{conversation}/{n}");
        let len_key = format!("len/{conversation}");
        let (position, len) = (n.to_le_bytes(), (n + 1).to_le_bytes());
        let mut records: Vec<(&[u8], &[u8])> =
            vec![(msg_key.as_bytes(), &value), (id_key.as_bytes(), &position), (len_key.as_bytes(), &len)];
        let list;
        if n == 0 {
            let mut all = self.conversations().await?;
            all.push(conversation.to_owned());
            list = serde_json::to_vec(&all).map_err(|e| VaultError::Backend(e.to_string()))?;
            records.push((b"conversations", &list));
        }
        // Together: a crash leaves the message either fully recorded or not at all.
        self.vault.put_many(NS, &records).await?;
        Ok(Some(n))
    }

    /// Rewrites the entry at `position` (which must exist).
    pub async fn replace<T: Serialize>(&self, conversation: &str, position: u64, message: &T) -> Result<(), VaultError> {
        if position >= self.len(conversation).await? {
            return Err(VaultError::Corrupt);
        }
        let value = serde_json::to_vec(message).map_err(|e| VaultError::Backend(e.to_string()))?;
        self.vault.put(NS, format!("msg/{conversation}/{position}").as_bytes(), &value).await
    }

    /// Up to `limit` messages of a conversation before position `before` (the end when
    /// `None`), oldest first, with their positions.
    pub async fn page<T: DeserializeOwned>(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, T)>, VaultError> {
        let len = self.len(conversation).await?;
        let end = before.map_or(len, |b| b.min(len));
        let start = end.saturating_sub(limit as u64);
        let mut out = Vec::with_capacity((end - start) as usize);
        for n in start..end {
            let Some(raw) = self.vault.get(NS, format!("msg/{conversation}/{n}").as_bytes()).await? else {
                return Err(VaultError::Corrupt);
            };
            out.push((n, serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?));
        }
        Ok(out)
    }

    /// Conversations with at least one message, in the order they started.
    pub async fn conversations(&self) -> Result<Vec<String>, VaultError> {
        match self.vault.get(NS, b"conversations").await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::vault::MemoryBackend;

    #[test]
    fn appends_once_per_id_and_pages_from_the_end() {
        tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(async {
            let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
            let h = History::new(&vault);
            for i in 0..25 {
                assert_eq!(h.append("7", &format!("m{i}"), &format!("body {i}")).await.expect("append"), Some(i));
            }
            assert_eq!(h.append("7", "m3", &"again".to_owned()).await.expect("append"), None, "same id twice");
            assert_eq!(h.append("9", "m3", &"other chat".to_owned()).await.expect("append"), Some(0), "ids are per conversation");
            assert_eq!(h.len("7").await.expect("len"), 25);

            let last: Vec<(u64, String)> = h.page("7", None, 10).await.expect("page");
            assert_eq!(last.first().map(|m| m.0), Some(15));
            assert_eq!(last.last().map(|m| m.1.as_str()), Some("body 24"));
            let earlier: Vec<(u64, String)> = h.page("7", Some(15), 10).await.expect("page");
            assert_eq!(earlier.iter().map(|m| m.0).collect::<Vec<_>>(), (5..15).collect::<Vec<_>>());
            let first: Vec<(u64, String)> = h.page("7", Some(5), 10).await.expect("page");
            assert_eq!(first.len(), 5);
            assert_eq!(first[3].1, "body 3", "the duplicate did not overwrite");
            assert!(h.page::<String>("8", None, 10).await.expect("page").is_empty());
            assert_eq!(h.conversations().await.expect("list"), vec!["7".to_owned(), "9".to_owned()]);
        });
    }
}
