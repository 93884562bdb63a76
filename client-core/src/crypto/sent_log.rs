//! The sent-message log: what this device sent, to exactly which devices, kept for a while so
//! that a recipient device that could not decrypt a message can ask for it again (a libsignal
//! `DecryptionErrorMessage` names only the message's timestamp).
//!
//! A retry request can come from anyone, and the server knows every timestamp: answering by
//! timestamp alone would re-encrypt any message to whoever asks. So, as in Signal, an entry is
//! found by (recipient user, recipient device, timestamp): only a device the message was
//! encrypted to at the time can get it again, and only while its identity key is the one the
//! message was first encrypted to. Entries live in the vault (encrypted at rest, kept across
//! restarts) and expire after [`RESEND_WINDOW_MS`].
//!
//! Records: `msg/{id}` holds the content and its recipients; `to/{user}/{device}/{ts}` lists
//! the ids sent to that device at that timestamp; `seq/{n}` is the n-th message logged, a
//! queue from `tail` to `head` in the order of sending, so that expiry pops from the tail
//! without scanning the vault (whose record names are blinded). Each send costs a constant
//! number of records, however many messages the log holds.

use serde::{Deserialize, Serialize};

use super::vault::{Vault, VaultError};
use crate::bytes::Base64Bytes;
use crate::ids::{DeviceId, UserId};

/// How long a sent message can be asked for again (Signal keeps its resend log one day).
pub const RESEND_WINDOW_MS: i64 = 24 * 3600 * 1000;

const NS: &str = "sent";

/// One device a message was encrypted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentTo {
    /// The user.
    pub user: UserId,
    /// Their device.
    pub device: DeviceId,
    /// The identity key (serialized) the message was encrypted to; a re-send goes only to
    /// this identity.
    pub identity: Base64Bytes,
}

/// A message kept for re-sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentEntry {
    /// Message id (unique per sender).
    pub message_id: String,
    /// Server timestamp of the send (Unix milliseconds): what a retry request names.
    pub sent_at: i64,
    /// This device's clock when it logged the send (Unix milliseconds): the resend window
    /// runs from here, so a server that stamps receipts in the future cannot stretch it.
    pub logged_at: i64,
    /// The plaintext that was encrypted.
    pub content: Base64Bytes,
    /// Every device it was encrypted to.
    pub recipients: Vec<SentTo>,
}

/// What a retry request may get back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resendable {
    /// The plaintext to encrypt again.
    pub content: Vec<u8>,
    /// The identity key the requesting device had when the message was sent.
    pub identity: Vec<u8>,
}

/// Why a retry request gets nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No message at that timestamp was sent to the requesting device (it was not a
    /// recipient, or the timestamp is made up).
    NotARecipient,
    /// The message is older than the resend window.
    Expired,
}

/// The log of one device, over its vault.
#[derive(Debug, Clone, Copy)]
pub struct SentLog<'a> {
    vault: &'a Vault,
}

fn to_key(user: UserId, device: DeviceId, ts: i64) -> String {
    format!("to/{user}/{device}/{ts}")
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, VaultError> {
    serde_json::to_vec(v).map_err(|e| VaultError::Backend(e.to_string()))
}

impl<'a> SentLog<'a> {
    /// The log in `vault`.
    pub fn new(vault: &'a Vault) -> Self {
        Self { vault }
    }

    async fn ids(&self, key: &str) -> Result<Vec<String>, VaultError> {
        match self.vault.get(NS, key.as_bytes()).await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt),
            None => Ok(Vec::new()),
        }
    }

    async fn counter(&self, name: &[u8]) -> Result<u64, VaultError> {
        Ok(match self.vault.get(NS, name).await? {
            Some(raw) => u64::from_be_bytes(raw.as_slice().try_into().map_err(|_| VaultError::Corrupt)?),
            None => 0,
        })
    }

    /// Records a sent message (all its records in one write), then drops what expired by `now_ms`.
    pub async fn record(&self, entry: &SentEntry, now_ms: i64) -> Result<(), VaultError> {
        let head = self.counter(b"head").await?;
        let mut keys = vec![format!("msg/{}", entry.message_id), format!("seq/{head}"), "head".to_owned()];
        let mut values = vec![json(entry)?, entry.message_id.clone().into_bytes(), (head + 1).to_be_bytes().to_vec()];
        for r in &entry.recipients {
            let key = to_key(r.user, r.device, entry.sent_at);
            let mut ids = self.ids(&key).await?;
            if !ids.contains(&entry.message_id) {
                ids.push(entry.message_id.clone());
            }
            values.push(json(&ids)?);
            keys.push(key);
        }
        let records: Vec<(&[u8], &[u8])> = keys.iter().map(|k| k.as_bytes()).zip(values.iter().map(Vec::as_slice)).collect();
        self.vault.put_many(NS, &records).await?;
        self.purge(now_ms).await
    }

    /// The messages sent at `timestamp` to `device` of `user`, if that device was one of their
    /// recipients and they are within the resend window at `now_ms`.
    pub async fn find(&self, user: UserId, device: DeviceId, timestamp: i64, now_ms: i64) -> Result<Vec<Resendable>, Refusal> {
        let mut expired = false;
        let lookup = async {
            let mut out = Vec::new();
            for id in self.ids(&to_key(user, device, timestamp)).await? {
                let Some(raw) = self.vault.get(NS, format!("msg/{id}").as_bytes()).await? else { continue };
                let entry: SentEntry = serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?;
                // The index and the entry must agree: the entry is the authority.
                if entry.sent_at != timestamp {
                    continue;
                }
                if let Some(r) = entry.recipients.iter().find(|r| r.user == user && r.device == device) {
                    if now_ms.saturating_sub(entry.logged_at) > RESEND_WINDOW_MS {
                        expired = true;
                        continue;
                    }
                    out.push(Resendable { content: entry.content.0.clone(), identity: r.identity.0.clone() });
                }
            }
            Ok::<_, VaultError>(out)
        };
        let found = lookup.await;
        match found {
            Ok(found) if !found.is_empty() => Ok(found),
            Ok(_) if expired => Err(Refusal::Expired),
            // An unreadable log answers nothing: refusing is the safe side.
            _ => Err(Refusal::NotARecipient),
        }
    }

    /// Deletes the entries that left the resend window by `now_ms`, oldest first.
    pub async fn purge(&self, now_ms: i64) -> Result<(), VaultError> {
        let (mut tail, head) = (self.counter(b"tail").await?, self.counter(b"head").await?);
        let start = tail;
        while tail < head {
            let seq_key = format!("seq/{tail}");
            if let Some(id) = self.vault.get(NS, seq_key.as_bytes()).await? {
                let msg_key = [b"msg/".as_slice(), &id].concat();
                if let Some(raw) = self.vault.get(NS, &msg_key).await? {
                    let entry: SentEntry = serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?;
                    // Entries are queued in the order they were logged: the first one still
                    // inside the window ends the purge.
                    if now_ms.saturating_sub(entry.logged_at) <= RESEND_WINDOW_MS {
                        break;
                    }
                    for r in &entry.recipients {
                        self.vault.delete(NS, to_key(r.user, r.device, entry.sent_at).as_bytes()).await?;
                    }
                    self.vault.delete(NS, &msg_key).await?;
                }
                self.vault.delete(NS, seq_key.as_bytes()).await?;
            }
            tail += 1;
        }
        if tail != start {
            self.vault.put(NS, b"tail", &tail.to_be_bytes()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::vault::MemoryBackend;

    const T0: i64 = 1_790_000_000_000;

    fn entry(id: &str, sent_at: i64, to: &[(i64, u32)]) -> SentEntry {
        SentEntry {
            message_id: id.into(),
            sent_at,
            logged_at: sent_at,
            content: format!("content of {id}").into_bytes().into(),
            recipients: to
                .iter()
                .map(|&(u, d)| SentTo { user: UserId(u), device: DeviceId(d), identity: vec![u as u8, d as u8].into() })
                .collect(),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(f)
    }

    #[test]
    fn only_a_recipient_device_gets_a_message_again() {
        block_on(async {
            let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
            let log = SentLog::new(&vault);
            // To Bob's devices 1 and 2, and a sync copy to the sender's own device 3.
            log.record(&entry("m1", T0, &[(2, 1), (2, 2), (1, 3)]), T0).await.expect("record");
            log.record(&entry("m2", T0 + 5, &[(3, 1)]), T0 + 5).await.expect("record");

            let got = log.find(UserId(2), DeviceId(2), T0, T0 + 10).await.expect("bob's device 2");
            assert_eq!(got, vec![Resendable { content: b"content of m1".to_vec(), identity: vec![2, 2] }]);
            assert!(log.find(UserId(1), DeviceId(3), T0, T0 + 10).await.is_ok(), "own other device (sync copy)");
            for (user, device, ts) in [(3, 1, T0), (2, 3, T0), (2, 1, T0 + 5), (2, 1, T0 + 1), (1, 1, T0)] {
                assert_eq!(
                    log.find(UserId(user), DeviceId(device), ts, T0 + 10).await,
                    Err(Refusal::NotARecipient),
                    "user {user} device {device} at {ts}"
                );
            }
            assert_eq!(log.find(UserId(3), DeviceId(1), T0 + 5, T0 + 10).await.expect("carol").len(), 1);
        });
    }

    #[test]
    fn two_messages_at_the_same_millisecond_are_both_found() {
        block_on(async {
            let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
            let log = SentLog::new(&vault);
            log.record(&entry("a", T0, &[(2, 1)]), T0).await.expect("record");
            log.record(&entry("b", T0, &[(2, 1), (4, 1)]), T0).await.expect("record");
            assert_eq!(log.find(UserId(2), DeviceId(1), T0, T0).await.expect("both").len(), 2);
            assert_eq!(log.find(UserId(4), DeviceId(1), T0, T0).await.expect("only b")[0].content, b"content of b");
        });
    }

    #[test]
    fn entries_expire_after_the_resend_window_and_are_deleted() {
        block_on(async {
            let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
            let log = SentLog::new(&vault);
            log.record(&entry("old", T0, &[(2, 1)]), T0).await.expect("record");
            assert!(log.find(UserId(2), DeviceId(1), T0, T0 + RESEND_WINDOW_MS).await.is_ok(), "still inside the window");
            assert_eq!(log.find(UserId(2), DeviceId(1), T0, T0 + RESEND_WINDOW_MS + 1).await, Err(Refusal::Expired));

            // A later send purges what left the window: the records are gone.
            let later = T0 + RESEND_WINDOW_MS + 1;
            log.record(&entry("new", later, &[(2, 1)]), later).await.expect("record");
            assert_eq!(vault.get(NS, b"msg/old").await.expect("get"), None);
            assert_eq!(vault.get(NS, to_key(UserId(2), DeviceId(1), T0).as_bytes()).await.expect("get"), None);
            assert!(vault.get(NS, b"msg/new").await.expect("get").is_some());
            // Even with a clock set back, the purged entry cannot be found.
            assert_eq!(log.find(UserId(2), DeviceId(1), T0, T0 + 1).await, Err(Refusal::NotARecipient));
            assert!(log.find(UserId(2), DeviceId(1), later, later).await.is_ok());
        });
    }

    #[test]
    fn a_receipt_stamped_in_the_future_does_not_stretch_the_window() {
        block_on(async {
            let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
            let log = SentLog::new(&vault);
            // The server said the send happened ten days from now; this device logged it at T0.
            let future = T0 + 10 * RESEND_WINDOW_MS;
            let mut e = entry("m", future, &[(2, 1)]);
            e.logged_at = T0;
            log.record(&e, T0).await.expect("record");
            assert!(log.find(UserId(2), DeviceId(1), future, T0 + 1).await.is_ok());
            let after = T0 + RESEND_WINDOW_MS + 1;
            assert_eq!(log.find(UserId(2), DeviceId(1), future, after).await, Err(Refusal::Expired));
            log.purge(after).await.expect("purge");
            assert_eq!(vault.get(NS, b"msg/m").await.expect("get"), None, "purged by the local clock");
        });
    }
}
