//! The conformance suite every [`VaultBackend`] passes: native SQLite (`cargo test`), the
//! browser's IndexedDB (the web app's browser tests call it through the WebAssembly build),
//! and the in-memory one. It drives the backend directly and through a [`Vault`] and the
//! engine's history, so what the app relies on is what is checked.

use super::history::History;
use super::vault::{Vault, VaultBackend, VaultError};

/// One failed check.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($msg)+)));
        }
    };
}

fn backend_err(what: &str) -> impl Fn(VaultError) -> Failure + '_ {
    move |e| Failure(format!("{what}: {e}"))
}

/// Runs every check. `open` returns the same store each time it is called with the same
/// name (a reopened file or database), and an empty one for a new name. Returns the names
/// of the checks that ran.
pub async fn run<F, Fut>(open: F) -> Result<Vec<&'static str>, Failure>
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<Output = Result<Box<dyn VaultBackend>, VaultError>>,
{
    let mut ran = Vec::new();

    // Raw records: absent, written, overwritten, deleted, binary-safe.
    let b = open("raw").await.map_err(backend_err("open"))?;
    check!(b.get(b"k1").await.map_err(backend_err("get"))?.is_none(), "an empty store has no record");
    b.put(b"k1", &[0, 1, 2, 255]).await.map_err(backend_err("put"))?;
    check!(b.get(b"k1").await.map_err(backend_err("get"))?.as_deref() == Some(&[0, 1, 2, 255][..]), "a record reads back");
    b.put(b"k1", b"second").await.map_err(backend_err("put"))?;
    check!(b.get(b"k1").await.map_err(backend_err("get"))?.as_deref() == Some(&b"second"[..]), "a put overwrites");
    b.delete(b"k1").await.map_err(backend_err("delete"))?;
    check!(b.get(b"k1").await.map_err(backend_err("get"))?.is_none(), "a deleted record is gone");
    b.delete(b"never there").await.map_err(backend_err("delete of an absent record"))?;
    let big = vec![7u8; 256 * 1024];
    b.put(&[0u8; 32], &big).await.map_err(backend_err("put"))?;
    check!(b.get(&[0u8; 32]).await.map_err(backend_err("get"))?.as_deref() == Some(&big[..]), "a 256 KiB record reads back");
    ran.push("records");

    // Batches: puts and deletes land together.
    b.put(b"old", b"x").await.map_err(backend_err("put"))?;
    let puts: Vec<(Vec<u8>, Vec<u8>)> = (0..200u32).map(|i| (i.to_be_bytes().to_vec(), format!("v{i}").into_bytes())).collect();
    b.write_batch(&puts, &[b"old".to_vec()]).await.map_err(backend_err("write_batch"))?;
    check!(
        b.get(&199u32.to_be_bytes()).await.map_err(backend_err("get"))?.as_deref() == Some(&b"v199"[..]),
        "a batch's last put"
    );
    check!(b.get(b"old").await.map_err(backend_err("get"))?.is_none(), "a batch's delete");
    b.write_batch(&[], &[]).await.map_err(backend_err("empty batch"))?;
    ran.push("batches");

    // Durable: another handle on the same store sees it all.
    drop(b);
    let again = open("raw").await.map_err(backend_err("reopen"))?;
    check!(
        again.get(&0u32.to_be_bytes()).await.map_err(backend_err("get"))?.as_deref() == Some(&b"v0"[..]),
        "records survive a reopen"
    );
    check!(
        open("other").await.map_err(backend_err("open"))?.get(&0u32.to_be_bytes()).await.map_err(backend_err("get"))?.is_none(),
        "stores are separate"
    );
    ran.push("durability");

    // A vault over it: sealed, bound to the passphrase, batch semantics, passphrase change.
    let vault =
        Vault::open(open("vault").await.map_err(backend_err("open"))?, "correct horse").await.map_err(backend_err("vault"))?;
    vault.put("session", b"bob.1", b"ratchet").await.map_err(backend_err("vault put"))?;
    vault.begin_batch();
    vault.put("session", b"bob.1", b"ratchet 2").await.map_err(backend_err("vault put"))?;
    vault.put("history", b"m", b"hello").await.map_err(backend_err("vault put"))?;
    vault.commit_batch().await.map_err(backend_err("commit"))?;
    drop(vault);
    match Vault::open(open("vault").await.map_err(backend_err("open"))?, "wrong horse").await {
        Err(VaultError::WrongPassphrase) => {}
        other => return Err(Failure(format!("a wrong passphrase is refused, got {:?}", other.map(|_| ())))),
    }
    let vault = Vault::open(open("vault").await.map_err(backend_err("open"))?, "correct horse")
        .await
        .map_err(backend_err("reopen vault"))?;
    check!(
        vault.get("session", b"bob.1").await.map_err(backend_err("vault get"))?.as_deref() == Some(&b"ratchet 2"[..]),
        "a committed batch is kept"
    );
    vault.change_passphrase("correct horse", "battery staple").await.map_err(backend_err("change passphrase"))?;
    drop(vault);
    let vault = Vault::open(open("vault").await.map_err(backend_err("open"))?, "battery staple")
        .await
        .map_err(backend_err("new passphrase"))?;
    check!(
        vault.get("history", b"m").await.map_err(backend_err("vault get"))?.as_deref() == Some(&b"hello"[..]),
        "records survive a passphrase change"
    );
    ran.push("vault");

    // History paging over it.
    let history = History::new(&vault);
    for i in 0..120u64 {
        let at = history.append("42", &format!("m{i}"), &format!("text {i}")).await.map_err(backend_err("append"))?;
        check!(at == Some(i), "append {i} lands at its position, got {at:?}");
    }
    check!(history.append("42", "m7", &"again").await.map_err(backend_err("append"))?.is_none(), "a message id is kept once");
    let page: Vec<(u64, String)> = history.page("42", Some(100), 50).await.map_err(backend_err("page"))?;
    check!(page.first().map(|p| p.0) == Some(50) && page.last().map(|p| p.1.as_str()) == Some("text 99"), "a page before 100");
    ran.push("history");
    Ok(ran)
}
