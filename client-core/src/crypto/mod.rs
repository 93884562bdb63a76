//! End-to-end encryption of direct messages with the Signal protocol (libsignal): the
//! device's keys and sessions ([`device`]), kept in an encrypted local store ([`vault`],
//! [`store`]), with the decrypted history beside them ([`history`]).

pub mod device;
pub mod history;
pub mod store;
pub mod vault;

#[cfg(feature = "native")]
pub mod sqlite;

pub use device::{CryptoError, Decrypted, E2eeDevice};
pub use history::History;
pub use vault::{MemoryBackend, Vault, VaultBackend, VaultError};
