//! End-to-end encryption of direct messages with the Signal protocol (libsignal): the
//! device's keys and sessions ([`device`]), kept in an encrypted local store ([`vault`],
//! [`store`]), with the decrypted history beside them ([`history`]) and its search index
//! ([`search`]) and the log of sent messages that
//! answers retry requests ([`sent_log`]).

pub mod account;
pub mod conformance;
pub mod device;
pub mod history;
pub mod search;
pub mod sent_log;
pub mod store;
pub mod vault;

#[cfg(feature = "native")]
pub mod sqlite;

pub use device::{CryptoError, Decrypted, E2eeDevice, GroupDecrypted};
pub use history::History;
pub use sent_log::{Refusal, SentEntry, SentLog, SentTo};
pub use vault::{MemoryBackend, Vault, VaultBackend, VaultError};
