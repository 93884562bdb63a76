//! The vault store conformance suite on the native backends (the browser's IndexedDB runs the
//! same suite from the web app's browser tests).
#![cfg(feature = "native")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use async_trait::async_trait;
use copains_client_core::crypto::conformance;
use copains_client_core::crypto::sqlite::SqliteBackend;
use copains_client_core::crypto::{MemoryBackend, VaultBackend, VaultError};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = block_on(conformance::run(|name: &str| {
        let path = dir.path().join(format!("{name}.db"));
        async move { Ok(Box::new(SqliteBackend::open(&path).await?) as Box<dyn VaultBackend>) }
    }))
    .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(ran, ["records", "batches", "durability", "vault", "history"]);
}

/// Memory stores by name, shared between handles.
#[derive(Clone, Default)]
struct Named(Rc<MemoryBackend>);

#[async_trait(?Send)]
impl VaultBackend for Named {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        self.0.get(key).await
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        self.0.put(key, value).await
    }
    async fn delete(&self, key: &[u8]) -> Result<(), VaultError> {
        self.0.delete(key).await
    }
}

#[test]
fn memory_store_conforms() {
    let stores: RefCell<HashMap<String, Named>> = RefCell::default();
    let ran = block_on(conformance::run(|name: &str| {
        let store = stores.borrow_mut().entry(name.to_owned()).or_default().clone();
        async move { Ok(Box::new(store) as Box<dyn VaultBackend>) }
    }))
    .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(ran.len(), 5);
}
