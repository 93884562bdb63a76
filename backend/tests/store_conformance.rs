//! One conformance suite for the store, run on both engines: every test is an
//! `async fn(Store)` run once on SQLite (a temporary file) and once on PostgreSQL (a fresh
//! database made from `COPAINS_TEST_DATABASE_URL` and dropped after; skipped without it).
//!
//! The two engines do not run the same code everywhere: on SQLite the envelope queue's
//! writes (`send`, `ack_many`) go through a writer thread that commits in groups, on
//! PostgreSQL through the pool. These tests call the store's public API and hold both to
//! the same observable behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};

use copains_backend::store::{
    EnqueueError, LinkError, NewEnvelope, NewSession, PublishError, QueueLimits, QueueRef, Rotation, Send as StoreSend,
    StoreError, StoredDeviceList, UploadError, VerifiedUpload,
};
use copains_backend::Store;
use copains_client_core::devices::{DeviceList, ListedDevice, SignedDeviceList};
use copains_client_core::keys::PreKeyCount;
use copains_client_core::messages::{kind, DeviceMismatch, Envelope, SendMismatch};
use copains_client_core::{DeviceId, EnvelopeId, SessionId, UserId};
use sqlx::{Connection, Row};

/// Stamps out each listed `async fn name(store: Store)` as a SQLite and a PostgreSQL test.
macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else {
                        eprintln!("COPAINS_TEST_DATABASE_URL is not set: PostgreSQL variant skipped");
                        return;
                    };
                    super::$name(db.store.clone()).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

conformance_tests!(
    duplicate_username_is_refused_and_writes_nothing,
    devices_take_the_smallest_free_id,
    concurrent_logins_get_distinct_devices,
    refresh_tokens_rotate_and_reuse_revokes_the_session,
    concurrent_uses_of_one_refresh_token_rotate_once,
    revoke_session_ends_the_session_and_its_device,
    purge_expired_removes_expired_sessions,
    change_password_ends_the_other_sessions,
    first_upload_must_be_complete,
    identity_change_is_refused,
    refused_uploads_change_nothing,
    each_one_time_prekey_is_handed_out_once,
    concurrent_fetches_never_share_a_prekey,
    fetch_except_own_device_leaves_its_prekeys,
    matching_send_is_queued_and_pages_in_order,
    send_not_matching_the_devices_is_refused_whole,
    partial_sends_skip_the_missing_check,
    recipient_without_devices_is_refused,
    full_queues_refuse_the_whole_send,
    ack_many_deletes_only_the_callers_envelopes,
    purge_deletes_only_older_envelopes,
    concurrent_sends_and_acks_keep_queue_sizes_exact,
    send_racing_a_device_removal_leaves_nothing_behind,
    a_device_list_links_exactly_its_devices_and_routes_to_them,
    refused_device_lists_change_nothing,
    a_new_account_key_must_be_allowed_and_drops_the_recovery_backup,
    only_linked_devices_store_the_recovery_backup,
    link_requests_open_answer_expire_and_go,
);

// ---- databases -------------------------------------------------------------------------

/// A store on a fresh database, and what removes that database.
struct TestDb {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        let store = Store::connect(&url, 4).await.expect("connect to SQLite");
        Self { store, _dir: Some(dir), _pg: None }
    }

    async fn postgres() -> Option<Self> {
        let admin_url = std::env::var("COPAINS_TEST_DATABASE_URL").ok()?;
        let name = format!("copains_conf_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        conn.close().await.ok();
        let pg = PgDatabase { url: replace_db_name(&admin_url, &name), admin_url, name };
        let store = Store::connect(&pg.url, 4).await.expect("connect to PostgreSQL");
        Some(Self { store, _dir: None, _pg: Some(pg) })
    }
}

/// A PostgreSQL database made for one test, dropped with it (even when the test panics).
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: the async work gets a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

// ---- fixtures --------------------------------------------------------------------------

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;
const MAX_ONE_TIME: u32 = 100;
const ROOMY: QueueLimits = QueueLimits { max_envelopes: 1_000_000, max_bytes: 1 << 40 };

/// Ids unique in the process and increasing, so that envelopes sent later sort later.
fn next_id() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(1_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A signed-in device.
#[derive(Debug, Clone)]
struct Login {
    user: UserId,
    device: DeviceId,
    session: SessionId,
    refresh: String,
}

fn new_session(refresh_hash: &str, expires_at: i64) -> NewSession<'_> {
    NewSession { id: SessionId(next_id()), device_name: "phone", refresh_hash, expires_at, now: NOW }
}

async fn sign_up(store: &Store, username: &str) -> Login {
    let user = UserId(next_id());
    let refresh = format!("refresh-{}", next_id());
    let session = new_session(&refresh, NOW + 30 * DAY);
    let (created, device) =
        store.create_user(user, username, &username.to_lowercase(), "hash", &session).await.expect("create_user");
    assert_eq!((created.id, created.username.as_str()), (user, username));
    Login { user, device, session: session.id, refresh }
}

async fn log_in(store: &Store, user: UserId) -> Login {
    log_in_until(store, user, NOW + 30 * DAY).await
}

async fn log_in_until(store: &Store, user: UserId, expires_at: i64) -> Login {
    let refresh = format!("refresh-{}", next_id());
    let session = new_session(&refresh, expires_at);
    let device = store.create_session(user, &session).await.expect("create_session");
    Login { user, device, session: session.id, refresh }
}

/// Counts rows with one SQL text for both engines (`COUNT(*)` is 64-bit on both).
async fn count(store: &Store, sql: &str, binds: &[i64]) -> i64 {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    query.fetch_one(store.pool()).await.expect(sql).try_get::<i64, _>(0).expect("count")
}

/// Rows of every account table, to show that a refused call wrote nothing.
async fn account_rows(store: &Store) -> [i64; 4] {
    [
        count(store, "SELECT COUNT(*) FROM users", &[]).await,
        count(store, "SELECT COUNT(*) FROM devices", &[]).await,
        count(store, "SELECT COUNT(*) FROM sessions", &[]).await,
        count(store, "SELECT COUNT(*) FROM refresh_tokens", &[]).await,
    ]
}

// Public keys are opaque bytes to the store (the API verifies them before it calls the
// store), so distinct dummy bytes stand in for them.

fn identity(registration_id: u32) -> Vec<u8> {
    let mut key = vec![0x05; 33];
    key[1..5].copy_from_slice(&registration_id.to_be_bytes());
    key
}

fn key_bytes(tag: u8, id: u32) -> Vec<u8> {
    let mut key = vec![tag; 33];
    key[1..5].copy_from_slice(&id.to_be_bytes());
    key
}

const SIGNED_ID: u32 = 7;
const LAST_RESORT_ID: u32 = 9_000;

/// A complete first upload, without one-time prekeys.
fn first_upload(registration_id: u32) -> VerifiedUpload {
    VerifiedUpload {
        identity_key: Some(identity(registration_id)),
        registration_id: Some(registration_id),
        signed: Some((SIGNED_ID, key_bytes(0x05, SIGNED_ID), vec![0xA1; 64])),
        kyber_last_resort: Some((LAST_RESORT_ID, key_bytes(0x08, LAST_RESORT_ID), vec![0xA2; 64])),
        pre_keys: Vec::new(),
        pq_pre_keys: Vec::new(),
    }
}

fn ec_keys(ids: impl IntoIterator<Item = u32>) -> Vec<(u32, Vec<u8>)> {
    ids.into_iter().map(|id| (id, key_bytes(0x05, id))).collect()
}

fn pq_keys(ids: impl IntoIterator<Item = u32>) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    ids.into_iter().map(|id| (id, key_bytes(0x08, id), vec![0xA3; 64])).collect()
}

fn one_time(pre: impl IntoIterator<Item = u32>, pq: impl IntoIterator<Item = u32>) -> VerifiedUpload {
    VerifiedUpload { pre_keys: ec_keys(pre), pq_pre_keys: pq_keys(pq), ..VerifiedUpload::default() }
}

fn counts(pre_keys: u32, pq_pre_keys: u32) -> PreKeyCount {
    PreKeyCount { pre_keys, pq_pre_keys }
}

/// A device able to receive: it has uploaded its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dev {
    user: UserId,
    device: DeviceId,
    registration_id: u32,
}

async fn with_keys(store: &Store, login: &Login, registration_id: u32) -> Dev {
    store.upload_keys(login.user, login.device, &first_upload(registration_id), MAX_ONE_TIME, NOW).await.expect("upload_keys");
    Dev { user: login.user, device: login.device, registration_id }
}

/// Alice (devices 1 and 2) and Bob (devices 1 and 2), all with keys; Alice's device 1 sends.
#[derive(Debug, Clone, Copy)]
struct World {
    alice1: Dev,
    alice2: Dev,
    bob1: Dev,
    bob2: Dev,
}

async fn world(store: &Store) -> World {
    let alice = sign_up(store, "Alice").await;
    let alice1 = with_keys(store, &alice, 101).await;
    let alice2 = with_keys(store, &log_in(store, alice.user).await, 102).await;
    let bob = sign_up(store, "Bob").await;
    let bob1 = with_keys(store, &bob, 201).await;
    let bob2 = with_keys(store, &log_in(store, bob.user).await, 202).await;
    assert_eq!([alice1.device, alice2.device, bob1.device, bob2.device], [DeviceId(1), DeviceId(2), DeviceId(1), DeviceId(2)]);
    World { alice1, alice2, bob1, bob2 }
}

fn envelope(to: Dev, content: &[u8]) -> NewEnvelope {
    NewEnvelope {
        id: EnvelopeId(next_id()),
        user: to.user,
        device: to.device,
        kind: kind::WHISPER,
        content: content.to_vec(),
        registration_id: to.registration_id,
    }
}

fn sending(from: Dev, recipient: UserId, messages: Vec<NewEnvelope>, sync_messages: Vec<NewEnvelope>) -> StoreSend {
    StoreSend { sender: from.user, sender_device: from.device, recipient, partial: false, messages, sync_messages }
}

impl World {
    /// Alice's device 1 to Bob: both of Bob's devices, and Alice's device 2.
    fn full_send(&self, content: &[u8]) -> StoreSend {
        sending(
            self.alice1,
            self.bob1.user,
            vec![envelope(self.bob1, content), envelope(self.bob2, content)],
            vec![envelope(self.alice2, content)],
        )
    }

    /// Alice's device 1 to some of Bob's devices only.
    fn partial_send(&self, to: &[Dev], content: &[u8]) -> StoreSend {
        let mut send = sending(self.alice1, self.bob1.user, to.iter().map(|d| envelope(*d, content)).collect(), Vec::new());
        send.partial = true;
        send
    }

    fn devices(&self) -> [Dev; 4] {
        [self.alice1, self.alice2, self.bob1, self.bob2]
    }
}

/// The id of the envelope of `send` addressed to `dev`.
fn id_for(send: &StoreSend, dev: Dev) -> EnvelopeId {
    send.envelopes().find(|e| e.user == dev.user && e.device == dev.device).expect("an envelope for the device").id
}

/// Everything queued for a device, oldest first.
async fn queued(store: &Store, dev: Dev) -> Vec<Envelope> {
    let (envelopes, more) = store.queue(dev.user, dev.device, None, 1_000_000, u64::MAX).await.expect("queue");
    assert!(!more);
    envelopes
}

/// `queue_size` agrees with what `queue` returns; gives that size.
async fn exact_size(store: &Store, dev: Dev) -> (u64, u64) {
    let envelopes = queued(store, dev).await;
    let real = (envelopes.len() as u64, envelopes.iter().map(|e| e.content.0.len() as u64).sum::<u64>());
    let counted = store.queue_size(dev.user, dev.device).await.expect("queue_size");
    assert_eq!(counted, real, "queue_size of {dev:?} disagrees with its queue");
    real
}

async fn envelope_rows(store: &Store) -> i64 {
    count(store, "SELECT COUNT(*) FROM envelopes", &[]).await
}

fn mismatch(recipient: DeviceMismatch, own: DeviceMismatch) -> SendMismatch {
    SendMismatch { recipient, own }
}

fn devices(missing: &[u32], extra: &[u32], stale: &[u32]) -> DeviceMismatch {
    let ids = |l: &[u32]| l.iter().copied().map(DeviceId).collect();
    DeviceMismatch { missing_devices: ids(missing), extra_devices: ids(extra), stale_devices: ids(stale) }
}

async fn expect_mismatch(store: &Store, send: StoreSend, expected: SendMismatch) {
    match store.send(send, ROOMY, NOW).await {
        Err(EnqueueError::Mismatch(found)) => assert_eq!(*found, expected),
        other => panic!("expected a device mismatch {expected:?}, got {other:?}"),
    }
}

async fn expect_full(store: &Store, send: StoreSend, limits: QueueLimits, full: &[Dev]) {
    let expected: BTreeSet<QueueRef> = full.iter().map(|d| QueueRef { user: d.user, device: d.device }).collect();
    match store.send(send, limits, NOW).await {
        Err(EnqueueError::QueueFull(found)) => {
            assert_eq!(found.len(), expected.len(), "each full queue listed once: {found:?}");
            assert_eq!(found.into_iter().collect::<BTreeSet<_>>(), expected);
        }
        other => panic!("expected full queues {expected:?}, got {other:?}"),
    }
}

// ---- accounts --------------------------------------------------------------------------

async fn duplicate_username_is_refused_and_writes_nothing(store: Store) {
    let alice = sign_up(&store, "Alice").await;
    let before = account_rows(&store).await;

    for taken in ["Alice", "ALICE", "alice"] {
        let other = UserId(next_id());
        let refresh = format!("refresh-{}", next_id());
        let refused = store.create_user(other, taken, &taken.to_lowercase(), "hash", &new_session(&refresh, NOW + DAY)).await;
        assert!(matches!(refused, Err(StoreError::UsernameTaken)), "{taken}: {refused:?}");
        assert!(store.user(other).await.expect("user").is_none());
        // The refused sign-up's refresh token was not stored either.
        assert!(matches!(store.rotate_refresh_token(&refresh, "x", NOW, NOW + DAY).await.expect("rotate"), Rotation::Invalid));
    }
    assert_eq!(account_rows(&store).await, before, "a refused sign-up wrote rows");

    let found = store.user_by_username("alice").await.expect("lookup").expect("alice exists");
    assert_eq!((found.user.id, found.user.username.as_str()), (alice.user, "Alice"));
    assert_eq!(store.devices(alice.user).await.expect("devices").len(), 1);
}

async fn devices_take_the_smallest_free_id(store: Store) {
    let first = sign_up(&store, "Dana").await;
    assert_eq!(first.device, DeviceId(1));
    let second = log_in(&store, first.user).await;
    let third = log_in(&store, first.user).await;
    assert_eq!((second.device, third.device), (DeviceId(2), DeviceId(3)));

    assert_eq!(store.remove_device(first.user, DeviceId(2)).await.expect("remove"), Some(Some(second.session)));
    assert_eq!(store.remove_device(first.user, DeviceId(2)).await.expect("remove again"), None);
    assert!(store.session_user(second.session, first.user).await.expect("session_user").is_none());
    assert_eq!(log_in(&store, first.user).await.device, DeviceId(2), "the smallest free id is reused");
    assert_eq!(log_in(&store, first.user).await.device, DeviceId(4));
    let ids: Vec<u32> = store.devices(first.user).await.expect("devices").iter().map(|d| d.id.0).collect();
    assert_eq!(ids, [1, 2, 3, 4]);

    // Device ids are 1..=127 (a Signal protocol device id).
    for expected in 5..=DeviceId::MAX {
        assert_eq!(log_in(&store, first.user).await.device, DeviceId(expected));
    }
    let before = account_rows(&store).await;
    let refresh = format!("refresh-{}", next_id());
    let refused = store.create_session(first.user, &new_session(&refresh, NOW + DAY)).await;
    assert!(matches!(refused, Err(StoreError::TooManyDevices)), "{refused:?}");
    assert_eq!(account_rows(&store).await, before);
    // Another user's devices are numbered on their own.
    assert_eq!(sign_up(&store, "Eve").await.device, DeviceId(1));
}

async fn concurrent_logins_get_distinct_devices(store: Store) {
    let first = sign_up(&store, "Fay").await;
    let logins: Vec<_> = (0..5)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let refresh = format!("refresh-{}", next_id());
                store.create_session(first.user, &new_session(&refresh, NOW + DAY)).await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for login in logins {
        let device = login.await.expect("task").expect("concurrent login of one user");
        assert!(ids.insert(device.0), "device {device} given twice");
    }
    assert_eq!(ids, (2..=6).collect::<BTreeSet<u32>>());
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_session(store: Store) {
    let login = sign_up(&store, "Gus").await;
    let other = log_in(&store, login.user).await;

    match store.rotate_refresh_token(&login.refresh, "second", NOW + 1, NOW + 2 * DAY).await.expect("rotate") {
        Rotation::Rotated { session_id, user, device_id, disabled } => {
            assert_eq!((session_id, user.id, device_id, disabled), (login.session, login.user, login.device, false));
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
    assert!(matches!(
        store.rotate_refresh_token("second", "third", NOW + 2, NOW + 2 * DAY).await.expect("rotate"),
        Rotation::Rotated { .. }
    ));
    assert!(matches!(store.rotate_refresh_token("never-issued", "x", NOW, NOW + DAY).await.expect("rotate"), Rotation::Invalid));

    // The first token again: reuse, which ends the session and removes its device.
    match store.rotate_refresh_token(&login.refresh, "stolen", NOW + 3, NOW + 2 * DAY).await.expect("rotate") {
        Rotation::Reused { session_id, user_id } => assert_eq!((session_id, user_id), (login.session, login.user)),
        other => panic!("expected reuse, got {other:?}"),
    }
    assert!(store.session_user(login.session, login.user).await.expect("session_user").is_none());
    let left: Vec<DeviceId> = store.devices(login.user).await.expect("devices").iter().map(|d| d.id).collect();
    assert_eq!(left, [other.device], "reuse removes the device of the session, and only it");
    assert!(matches!(store.rotate_refresh_token("third", "x", NOW + 4, NOW + DAY).await.expect("rotate"), Rotation::Invalid));
    assert!(matches!(store.rotate_refresh_token("stolen", "x", NOW + 4, NOW + DAY).await.expect("rotate"), Rotation::Invalid));
    assert!(store.session_user(other.session, other.user).await.expect("session_user").is_some());

    // A token past its expiry does not rotate.
    let short = log_in_until(&store, login.user, NOW + 10).await;
    assert!(matches!(
        store.rotate_refresh_token(&short.refresh, "x", NOW + 10, NOW + DAY).await.expect("rotate"),
        Rotation::Invalid
    ));
    assert!(matches!(
        store.rotate_refresh_token(&short.refresh, "y", NOW + 9, NOW + DAY).await.expect("rotate"),
        Rotation::Rotated { .. }
    ));
}

async fn concurrent_uses_of_one_refresh_token_rotate_once(store: Store) {
    let login = sign_up(&store, "Hal").await;
    let uses: Vec<_> = (0..4)
        .map(|i| {
            let (store, old) = (store.clone(), login.refresh.clone());
            tokio::spawn(async move { store.rotate_refresh_token(&old, &format!("new-{i}"), NOW + 1, NOW + DAY).await })
        })
        .collect();
    let (mut rotated, mut reused) = (0, 0);
    for used in uses {
        match used.await.expect("task").expect("rotate") {
            Rotation::Rotated { .. } => rotated += 1,
            Rotation::Reused { .. } => reused += 1,
            Rotation::Invalid => {}
        }
    }
    assert_eq!(rotated, 1, "one token rotated more than once");
    assert!(reused >= 1, "a second use of a token must count as reuse");
    assert!(store.session_user(login.session, login.user).await.expect("session_user").is_none());
    assert_eq!(account_rows(&store).await[1..], [0, 0, 0]);
}

async fn revoke_session_ends_the_session_and_its_device(store: Store) {
    let first = sign_up(&store, "Ida").await;
    let second = log_in(&store, first.user).await;
    let stranger = sign_up(&store, "Jon").await;

    assert!(!store.revoke_session(stranger.user, first.session).await.expect("revoke"), "a session of someone else");
    assert!(store.session_user(first.session, first.user).await.expect("session_user").is_some());

    assert!(store.revoke_session(first.user, second.session).await.expect("revoke"));
    assert!(!store.revoke_session(first.user, second.session).await.expect("revoke again"));
    assert!(store.session_user(second.session, first.user).await.expect("session_user").is_none());
    assert!(matches!(store.rotate_refresh_token(&second.refresh, "x", NOW, NOW + DAY).await.expect("rotate"), Rotation::Invalid));

    let sessions = store.sessions(first.user, first.session).await.expect("sessions");
    assert_eq!(sessions.len(), 1);
    assert_eq!((sessions[0].id, sessions[0].device.id, sessions[0].current), (first.session, first.device, true));
    let devices: Vec<DeviceId> = store.devices(first.user).await.expect("devices").iter().map(|d| d.id).collect();
    assert_eq!(devices, [first.device]);
}

async fn purge_expired_removes_expired_sessions(store: Store) {
    let long = sign_up(&store, "Kim").await; // expires NOW + 30 days
    let short = log_in_until(&store, long.user, NOW + 1_000).await;
    let other = sign_up(&store, "Lea").await;
    let other_short = log_in_until(&store, other.user, NOW + 2_000).await;

    assert_eq!(store.purge_expired(NOW + 999).await.expect("purge"), []);
    assert_eq!(store.purge_expired(NOW + 1_000).await.expect("purge"), [(long.user, short.session)]);
    assert!(store.session_user(short.session, long.user).await.expect("session_user").is_none());
    let devices: Vec<DeviceId> = store.devices(long.user).await.expect("devices").iter().map(|d| d.id).collect();
    assert_eq!(devices, [long.device]);

    let mut ended = store.purge_expired(NOW + 31 * DAY).await.expect("purge");
    ended.sort();
    let mut expected = vec![(long.user, long.session), (other.user, other.session), (other.user, other_short.session)];
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(account_rows(&store).await[1..], [0, 0, 0], "devices, sessions and tokens all gone");
    assert_eq!(store.purge_expired(NOW + 31 * DAY).await.expect("purge"), []);
}

async fn change_password_ends_the_other_sessions(store: Store) {
    let one = sign_up(&store, "Max").await;
    let two = log_in(&store, one.user).await;
    let three = log_in(&store, one.user).await;
    let stranger = sign_up(&store, "Ned").await;

    let mut ended = store.change_password(one.user, "new-hash", two.session, NOW + 5).await.expect("change_password");
    ended.sort();
    assert_eq!(ended, [one.session, three.session]);
    assert_eq!(store.user(one.user).await.expect("user").expect("exists").password_hash, "new-hash");
    let sessions: Vec<SessionId> = store.sessions(one.user, two.session).await.expect("sessions").iter().map(|s| s.id).collect();
    assert_eq!(sessions, [two.session]);
    let devices: Vec<DeviceId> = store.devices(one.user).await.expect("devices").iter().map(|d| d.id).collect();
    assert_eq!(devices, [two.device]);
    assert!(matches!(
        store.rotate_refresh_token(&one.refresh, "x", NOW + 6, NOW + DAY).await.expect("rotate"),
        Rotation::Invalid
    ));
    assert!(matches!(
        store.rotate_refresh_token(&two.refresh, "y", NOW + 6, NOW + DAY).await.expect("rotate"),
        Rotation::Rotated { .. }
    ));
    assert!(store.session_user(stranger.session, stranger.user).await.expect("session_user").is_some());
    assert_eq!(store.user(stranger.user).await.expect("user").expect("exists").password_hash, "hash");
}

// ---- keys ------------------------------------------------------------------------------

async fn first_upload_must_be_complete(store: Store) {
    let login = sign_up(&store, "Ola").await;
    let full = VerifiedUpload { pre_keys: ec_keys(1..=3), pq_pre_keys: pq_keys(1..=3), ..first_upload(5) };
    let lacking = [
        VerifiedUpload { identity_key: None, ..full.clone() },
        VerifiedUpload { registration_id: None, ..full.clone() },
        VerifiedUpload { signed: None, ..full.clone() },
        VerifiedUpload { kyber_last_resort: None, ..full.clone() },
        one_time(1..=3, 1..=3),
    ];
    for upload in &lacking {
        let refused = store.upload_keys(login.user, login.device, upload, MAX_ONE_TIME, NOW).await;
        assert!(matches!(refused, Err(UploadError::Incomplete)), "{refused:?}");
        assert!(!store.has_keys(login.user, login.device).await.expect("has_keys"));
        assert_eq!(store.prekey_counts(login.user, login.device).await.expect("counts"), counts(0, 0));
    }
    store.upload_keys(login.user, login.device, &full, MAX_ONE_TIME, NOW).await.expect("complete upload");
    assert!(store.has_keys(login.user, login.device).await.expect("has_keys"));
    assert_eq!(store.identity_key_of(login.user, login.device).await.expect("identity"), Some(identity(5)));
    assert_eq!(store.prekey_counts(login.user, login.device).await.expect("counts"), counts(3, 3));
    // Later uploads may carry only one-time prekeys.
    store.upload_keys(login.user, login.device, &one_time(4..=5, []), MAX_ONE_TIME, NOW).await.expect("top-up");
    assert_eq!(store.prekey_counts(login.user, login.device).await.expect("counts"), counts(5, 3));
}

async fn identity_change_is_refused(store: Store) {
    let login = sign_up(&store, "Pia").await;
    store.upload_keys(login.user, login.device, &first_upload(5), MAX_ONE_TIME, NOW).await.expect("first upload");

    let new_identity = VerifiedUpload { identity_key: Some(identity(6)), ..one_time(1..=2, 1..=2) };
    let new_registration = VerifiedUpload { registration_id: Some(6), ..one_time(1..=2, 1..=2) };
    for upload in [new_identity, new_registration, first_upload(6)] {
        let refused = store.upload_keys(login.user, login.device, &upload, MAX_ONE_TIME, NOW).await;
        assert!(matches!(refused, Err(UploadError::IdentityChanged)), "{refused:?}");
        assert_eq!(store.prekey_counts(login.user, login.device).await.expect("counts"), counts(0, 0));
    }
    assert_eq!(store.identity_key_of(login.user, login.device).await.expect("identity"), Some(identity(5)));

    // The same identity may come again, with a new signed prekey and last-resort key.
    let rotate = VerifiedUpload {
        signed: Some((8, key_bytes(0x05, 8), vec![0xB1; 64])),
        kyber_last_resort: Some((9_001, key_bytes(0x08, 9_001), vec![0xB2; 64])),
        ..first_upload(5)
    };
    store.upload_keys(login.user, login.device, &rotate, MAX_ONE_TIME, NOW).await.expect("same identity");
    let bundles = store.take_bundles(login.user, None, None).await.expect("take");
    assert_eq!(bundles.len(), 1);
    assert_eq!((bundles[0].registration_id, bundles[0].identity_key.clone()), (5, identity(5)));
    assert_eq!((bundles[0].signed.key_id, bundles[0].signed.public_key.0.clone()), (8, key_bytes(0x05, 8)));
    assert_eq!(bundles[0].pq.key_id, 9_001);
}

async fn refused_uploads_change_nothing(store: Store) {
    let login = sign_up(&store, "Quin").await;
    let (user, device) = (login.user, login.device);
    let first = VerifiedUpload { pre_keys: ec_keys(1..=5), pq_pre_keys: pq_keys(1..=5), ..first_upload(5) };
    store.upload_keys(user, device, &first, 10, NOW).await.expect("first upload");

    // A new signed prekey in the same upload as a refused one-time prekey is not kept either.
    let new_signed = Some((8, key_bytes(0x05, 8), vec![0xB1; 64]));
    let refused_uploads = [
        // An EC id already on the server, after a fresh one.
        (VerifiedUpload { signed: new_signed.clone(), ..one_time([6, 3], []) }, "duplicate"),
        // A Kyber id already on the server.
        (one_time([6], [6, 5]), "duplicate"),
        // Twice the same id in one upload.
        (one_time([7, 7], []), "duplicate"),
        // Over the cap, of either kind.
        (VerifiedUpload { signed: new_signed.clone(), ..one_time(6..=11, []) }, "too many"),
        (one_time([], 6..=11), "too many"),
    ];
    for (upload, why) in &refused_uploads {
        let refused = store.upload_keys(user, device, upload, 10, NOW).await;
        match (*why, &refused) {
            ("duplicate", Err(UploadError::DuplicateId)) | ("too many", Err(UploadError::TooMany(10))) => {}
            _ => panic!("expected {why}, got {refused:?}"),
        }
        assert_eq!(store.prekey_counts(user, device).await.expect("counts"), counts(5, 5), "after a refused {why}");
    }
    // An EC and a Kyber prekey may share an id; up to the cap is fine.
    store.upload_keys(user, device, &one_time(6..=10, 6..=10), 10, NOW).await.expect("up to the cap");
    assert_eq!(store.prekey_counts(user, device).await.expect("counts"), counts(10, 10));
    // The same ids on another device are another device's.
    let other = log_in(&store, user).await;
    let upload = VerifiedUpload { pre_keys: ec_keys(1..=5), pq_pre_keys: pq_keys(1..=5), ..first_upload(6) };
    store.upload_keys(user, other.device, &upload, 10, NOW).await.expect("other device");

    let bundle = store.take_bundles(user, Some(device), None).await.expect("take").pop().expect("a bundle");
    assert_eq!(bundle.signed.key_id, SIGNED_ID, "a refused upload replaced the signed prekey");
    assert_eq!(bundle.pre_key.map(|(id, _)| id), Some(1));
}

async fn each_one_time_prekey_is_handed_out_once(store: Store) {
    let login = sign_up(&store, "Ray").await;
    let (user, device) = (login.user, login.device);
    let upload = VerifiedUpload { pre_keys: ec_keys([30, 10, 20]), pq_pre_keys: pq_keys([200, 100]), ..first_upload(5) };
    store.upload_keys(user, device, &upload, MAX_ONE_TIME, NOW).await.expect("upload");

    let expected = [
        (Some(10), 100, counts(2, 1)),
        (Some(20), 200, counts(1, 0)),
        (Some(30), LAST_RESORT_ID, counts(0, 0)),
        (None, LAST_RESORT_ID, counts(0, 0)),
        (None, LAST_RESORT_ID, counts(0, 0)),
    ];
    for (pre_key, pq, remaining) in expected {
        let mut bundles = store.take_bundles(user, None, None).await.expect("take");
        assert_eq!(bundles.len(), 1);
        let bundle = bundles.pop().expect("a bundle");
        assert_eq!((bundle.device_id, bundle.registration_id, bundle.identity_key), (device, 5, identity(5)));
        assert_eq!(bundle.signed.key_id, SIGNED_ID);
        assert_eq!(bundle.pre_key.as_ref().map(|(id, _)| *id), pre_key);
        if let Some((id, key)) = &bundle.pre_key {
            assert_eq!(*key, key_bytes(0x05, *id));
        }
        assert_eq!((bundle.pq.key_id, bundle.pq.public_key.0.clone()), (pq, key_bytes(0x08, pq)));
        assert_eq!(bundle.pq.signature.0.len(), 64);
        assert_eq!(bundle.remaining, remaining);
        assert_eq!(store.prekey_counts(user, device).await.expect("counts"), remaining);
    }
}

async fn concurrent_fetches_never_share_a_prekey(store: Store) {
    let login = sign_up(&store, "Sam").await;
    let second = log_in(&store, login.user).await;
    for (l, reg) in [(&login, 5), (&second, 6)] {
        let upload = VerifiedUpload { pre_keys: ec_keys(1..=30), pq_pre_keys: pq_keys(1..=30), ..first_upload(reg) };
        store.upload_keys(l.user, l.device, &upload, MAX_ONE_TIME, NOW).await.expect("upload");
    }
    let user = login.user;
    let fetches: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_bundles(user, None, None).await })
        })
        .collect();
    let mut taken: BTreeMap<(DeviceId, &str), Vec<u32>> = BTreeMap::new();
    let mut last_resort = 0;
    for fetch in fetches {
        let bundles = fetch.await.expect("task").expect("concurrent take_bundles of one user's bundles failed");
        assert_eq!(bundles.len(), 2);
        for b in bundles {
            if let Some((id, _)) = b.pre_key {
                taken.entry((b.device_id, "ec")).or_default().push(id);
            }
            if b.pq.key_id == LAST_RESORT_ID {
                last_resort += 1;
            } else {
                taken.entry((b.device_id, "pq")).or_default().push(b.pq.key_id);
            }
        }
    }
    for (which, mut ids) in taken.clone() {
        ids.sort_unstable();
        assert_eq!(ids, (1..=30).collect::<Vec<_>>(), "{which:?}: each one-time prekey exactly once");
    }
    assert_eq!(taken.len(), 4);
    assert_eq!(last_resort, 2 * 10, "the last-resort key stands in once the Kyber prekeys are gone");
    for l in [&login, &second] {
        assert_eq!(store.prekey_counts(l.user, l.device).await.expect("counts"), counts(0, 0));
    }
}

async fn fetch_except_own_device_leaves_its_prekeys(store: Store) {
    let own = sign_up(&store, "Tia").await;
    let other = log_in(&store, own.user).await;
    let without_keys = log_in(&store, own.user).await;
    for (l, reg) in [(&own, 5), (&other, 6)] {
        let upload = VerifiedUpload { pre_keys: ec_keys(1..=3), pq_pre_keys: pq_keys(1..=3), ..first_upload(reg) };
        store.upload_keys(l.user, l.device, &upload, MAX_ONE_TIME, NOW).await.expect("upload");
    }
    let listed = |bundles: &[copains_backend::store::StoredBundle]| bundles.iter().map(|b| b.device_id).collect::<Vec<_>>();

    let bundles = store.take_bundles(own.user, None, Some(own.device)).await.expect("take");
    assert_eq!(listed(&bundles), [other.device]);
    assert_eq!(store.prekey_counts(own.user, own.device).await.expect("counts"), counts(3, 3), "own prekeys consumed");
    assert_eq!(store.prekey_counts(own.user, other.device).await.expect("counts"), counts(2, 2));

    let bundles = store.take_bundles(own.user, Some(own.device), Some(own.device)).await.expect("take");
    assert!(bundles.is_empty());
    assert_eq!(store.prekey_counts(own.user, own.device).await.expect("counts"), counts(3, 3));

    let bundles = store.take_bundles(own.user, Some(other.device), None).await.expect("take");
    assert_eq!(listed(&bundles), [other.device]);
    assert_eq!(store.prekey_counts(own.user, own.device).await.expect("counts"), counts(3, 3));
    assert_eq!(store.prekey_counts(own.user, other.device).await.expect("counts"), counts(1, 1));

    // A device without keys has no bundle.
    let bundles = store.take_bundles(own.user, None, None).await.expect("take");
    assert_eq!(listed(&bundles), [own.device, other.device]);
    assert!(store.take_bundles(own.user, Some(without_keys.device), None).await.expect("take").is_empty());
    assert_eq!(store.prekey_counts(own.user, own.device).await.expect("counts"), counts(2, 2));
}

// ---- envelopes -------------------------------------------------------------------------

async fn matching_send_is_queued_and_pages_in_order(store: Store) {
    let w = world(&store).await;
    let mut sent = Vec::new();
    for i in 0..5u8 {
        let send = w.full_send(&[i; 100]);
        let back = store.send(send.clone(), ROOMY, NOW + i64::from(i)).await.expect("send");
        assert_eq!(back.envelopes().map(|e| e.id).collect::<Vec<_>>(), send.envelopes().map(|e| e.id).collect::<Vec<_>>());
        sent.push(send);
    }
    let queue = queued(&store, w.bob1).await;
    assert_eq!(queue.iter().map(|e| e.id).collect::<Vec<_>>(), sent.iter().map(|s| id_for(s, w.bob1)).collect::<Vec<_>>());
    for (i, e) in queue.iter().enumerate() {
        assert_eq!((e.sender, e.sender_device, e.kind), (w.alice1.user, w.alice1.device, kind::WHISPER));
        assert_eq!((e.content.0.clone(), e.server_timestamp), (vec![i as u8; 100], NOW + i as i64));
    }
    assert_eq!(exact_size(&store, w.bob1).await, (5, 500));
    assert_eq!(exact_size(&store, w.bob2).await, (5, 500));
    assert_eq!(exact_size(&store, w.alice2).await, (5, 500));
    assert_eq!(exact_size(&store, w.alice1).await, (0, 0), "the sending device gets nothing");

    // Pages by count, each after the last one's final envelope.
    let ids: Vec<EnvelopeId> = queue.iter().map(|e| e.id).collect();
    let bob1 = w.bob1;
    let page = |after: Option<EnvelopeId>, limit: usize, max_bytes: u64| {
        let store = store.clone();
        async move {
            let (envelopes, more) = store.queue(bob1.user, bob1.device, after, limit, max_bytes).await.expect("queue");
            (envelopes.iter().map(|e| e.id).collect::<Vec<_>>(), more)
        }
    };
    assert_eq!(page(None, 2, u64::MAX).await, (ids[0..2].to_vec(), true));
    assert_eq!(page(Some(ids[1]), 2, u64::MAX).await, (ids[2..4].to_vec(), true));
    assert_eq!(page(Some(ids[3]), 2, u64::MAX).await, (ids[4..5].to_vec(), false));
    assert_eq!(page(Some(ids[4]), 2, u64::MAX).await, (Vec::new(), false));
    assert_eq!(page(None, 5, u64::MAX).await, (ids.clone(), false));
    // Pages by bytes: as many whole envelopes as fit, but never an empty page.
    assert_eq!(page(None, 10, 250).await, (ids[0..2].to_vec(), true));
    assert_eq!(page(None, 10, 300).await, (ids[0..3].to_vec(), true));
    assert_eq!(page(None, 10, 50).await, (ids[0..1].to_vec(), true));
    assert_eq!(page(Some(ids[3]), 10, 50).await, (ids[4..5].to_vec(), false));
    assert_eq!(page(None, 10, 500).await, (ids.clone(), false));
    // Reading does not consume.
    assert_eq!(exact_size(&store, w.bob1).await, (5, 500));
}

async fn send_not_matching_the_devices_is_refused_whole(store: Store) {
    let w = world(&store).await;
    let bob3_without_keys = log_in(&store, w.bob1.user).await;
    let gone = Dev { device: DeviceId(3), ..w.bob1 };
    let stale = |d: Dev| Dev { registration_id: d.registration_id + 1, ..d };
    let to_bob = |devs: &[Dev]| devs.iter().map(|d| envelope(*d, b"hi")).collect::<Vec<_>>();
    let sync = |devs: &[Dev]| devs.iter().map(|d| envelope(*d, b"me")).collect::<Vec<_>>();
    let none = devices(&[], &[], &[]);
    assert_eq!(bob3_without_keys.device, DeviceId(3), "a device without keys cannot receive");

    let cases = [
        (to_bob(&[w.bob1]), sync(&[w.alice2]), mismatch(devices(&[2], &[], &[]), none.clone())),
        (to_bob(&[w.bob1, w.bob2, gone]), sync(&[w.alice2]), mismatch(devices(&[], &[3], &[]), none.clone())),
        (to_bob(&[stale(w.bob1), w.bob2]), sync(&[w.alice2]), mismatch(devices(&[], &[], &[1]), none.clone())),
        (to_bob(&[w.bob1, w.bob2]), sync(&[]), mismatch(none.clone(), devices(&[2], &[], &[]))),
        (
            to_bob(&[w.bob1, w.bob2]),
            sync(&[w.alice2, Dev { device: DeviceId(3), ..w.alice2 }]),
            mismatch(none.clone(), devices(&[], &[3], &[])),
        ),
        // The sending device is not one of the "other" devices.
        (to_bob(&[w.bob1, w.bob2]), sync(&[w.alice1, w.alice2]), mismatch(none.clone(), devices(&[], &[1], &[]))),
        (to_bob(&[w.bob1, w.bob2]), sync(&[stale(w.alice2)]), mismatch(none.clone(), devices(&[], &[], &[2]))),
        (to_bob(&[stale(w.bob2), gone]), sync(&[]), mismatch(devices(&[1], &[3], &[2]), devices(&[2], &[], &[]))),
    ];
    for (messages, sync_messages, expected) in cases {
        expect_mismatch(&store, sending(w.alice1, w.bob1.user, messages, sync_messages), expected).await;
        assert_eq!(envelope_rows(&store).await, 0, "a refused send queued envelopes");
        for d in w.devices() {
            assert_eq!(exact_size(&store, d).await, (0, 0));
        }
    }

    // A retry request (plaintext) goes out while the session is broken: no stale check.
    let mut retry = w.full_send(b"retry");
    retry.messages[0] = NewEnvelope { kind: kind::PLAINTEXT, ..envelope(stale(w.bob1), b"retry") };
    store.send(retry, ROOMY, NOW).await.expect("a plaintext envelope is never stale");
    assert_eq!(exact_size(&store, w.bob1).await, (1, 5));
}

async fn partial_sends_skip_the_missing_check(store: Store) {
    let w = world(&store).await;
    let send = w.partial_send(&[w.bob2], b"again");
    let id = id_for(&send, w.bob2);
    store.send(send, ROOMY, NOW).await.expect("partial send");
    assert_eq!(queued(&store, w.bob2).await.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    for d in [w.alice1, w.alice2, w.bob1] {
        assert_eq!(exact_size(&store, d).await, (0, 0));
    }

    // Extra and stale devices are still refused.
    let gone = Dev { device: DeviceId(9), ..w.bob1 };
    expect_mismatch(&store, w.partial_send(&[w.bob1, gone], b"x"), mismatch(devices(&[], &[9], &[]), devices(&[], &[], &[])))
        .await;
    let stale = Dev { registration_id: 1, ..w.bob1 };
    expect_mismatch(&store, w.partial_send(&[stale], b"x"), mismatch(devices(&[], &[], &[1]), devices(&[], &[], &[]))).await;
    assert_eq!(envelope_rows(&store).await, 1);

    // A partial send may go to the sender's own other devices.
    let mut own = sending(w.alice1, w.alice1.user, vec![envelope(w.alice2, b"own")], Vec::new());
    own.partial = true;
    store.send(own, ROOMY, NOW).await.expect("partial send to an own device");
    assert_eq!(exact_size(&store, w.alice2).await, (1, 3));
    assert_eq!(exact_size(&store, w.alice1).await, (0, 0));
}

async fn recipient_without_devices_is_refused(store: Store) {
    let w = world(&store).await;
    let carol = sign_up(&store, "Carol").await; // a device, but no keys
    let carol1 = Dev { user: carol.user, device: carol.device, registration_id: 1 };
    let nobody = Dev { user: UserId(next_id()), device: DeviceId(1), registration_id: 1 };
    for (to, partial) in [(carol1, false), (carol1, true), (nobody, false)] {
        let mut send = sending(w.alice1, to.user, vec![envelope(to, b"hi")], vec![envelope(w.alice2, b"hi")]);
        send.partial = partial;
        let refused = store.send(send, ROOMY, NOW).await;
        assert!(matches!(refused, Err(EnqueueError::NoDevices)), "{refused:?}");
    }
    assert_eq!(envelope_rows(&store).await, 0);
    assert_eq!(exact_size(&store, w.alice2).await, (0, 0));
}

async fn full_queues_refuse_the_whole_send(store: Store) {
    let w = world(&store).await;
    let by_count = QueueLimits { max_envelopes: 2, max_bytes: 1_000 };
    for _ in 0..2 {
        store.send(w.partial_send(&[w.bob1], &[1; 10]), by_count, NOW).await.expect("within the cap");
    }
    // Bob's device 1 is full; 2 and Alice's device 2 are not, and get nothing either.
    expect_full(&store, w.full_send(&[2; 10]), by_count, &[w.bob1]).await;
    assert_eq!(exact_size(&store, w.bob1).await, (2, 20));
    assert_eq!(exact_size(&store, w.bob2).await, (0, 0));
    assert_eq!(exact_size(&store, w.alice2).await, (0, 0));

    for _ in 0..2 {
        store.send(w.partial_send(&[w.bob2], &[3; 10]), by_count, NOW).await.expect("within the cap");
    }
    expect_full(&store, w.full_send(&[4; 10]), by_count, &[w.bob1, w.bob2]).await;
    assert_eq!(exact_size(&store, w.alice2).await, (0, 0));
    assert_eq!(envelope_rows(&store).await, 4);

    // Room again once acknowledged.
    let first = queued(&store, w.bob1).await[0].id;
    let first2 = queued(&store, w.bob2).await[0].id;
    assert!(store.ack(w.bob1.user, w.bob1.device, first).await.expect("ack"));
    assert!(store.ack(w.bob2.user, w.bob2.device, first2).await.expect("ack"));
    store.send(w.full_send(&[5; 10]), by_count, NOW).await.expect("room after the acks");
    assert_eq!(exact_size(&store, w.bob1).await, (2, 20));
    assert_eq!(exact_size(&store, w.alice2).await, (1, 10));

    // By bytes, exactly up to the cap.
    let by_bytes = QueueLimits { max_envelopes: 100, max_bytes: 250 };
    expect_full(&store, w.full_send(&[7; 240]), by_bytes, &[w.bob1, w.bob2]).await;
    expect_full(&store, w.partial_send(&[w.bob1], &[7; 231]), by_bytes, &[w.bob1]).await;
    store.send(w.partial_send(&[w.bob1], &[7; 230]), by_bytes, NOW).await.expect("exactly at the cap");
    assert_eq!(exact_size(&store, w.bob1).await, (3, 250));
    expect_full(&store, w.full_send(&[8; 1]), by_bytes, &[w.bob1]).await;
    assert_eq!(exact_size(&store, w.bob2).await, (2, 20));
    assert_eq!(exact_size(&store, w.alice2).await, (1, 10));

    // One envelope alone over the cap, even on an empty queue.
    let bob2_ids: Vec<EnvelopeId> = queued(&store, w.bob2).await.iter().map(|e| e.id).collect();
    assert_eq!(store.ack_many(w.bob2.user, w.bob2.device, &bob2_ids).await.expect("ack_many"), 2);
    expect_full(&store, w.partial_send(&[w.bob2], &[9; 251]), by_bytes, &[w.bob2]).await;
    assert_eq!(exact_size(&store, w.bob2).await, (0, 0));
}

async fn ack_many_deletes_only_the_callers_envelopes(store: Store) {
    let w = world(&store).await;
    let mut sends = Vec::new();
    for i in 0..4u8 {
        let send = w.full_send(&vec![i; 10 + usize::from(i)]);
        sends.push(store.send(send, ROOMY, NOW).await.expect("send"));
    }
    let b1: Vec<EnvelopeId> = sends.iter().map(|s| id_for(s, w.bob1)).collect();
    let b2: Vec<EnvelopeId> = sends.iter().map(|s| id_for(s, w.bob2)).collect();
    let a2: Vec<EnvelopeId> = sends.iter().map(|s| id_for(s, w.alice2)).collect();
    let unknown = EnvelopeId(next_id());

    // Another device's envelopes, another user's, and unknown ids are ignored.
    let deleted = store.ack_many(w.bob1.user, w.bob1.device, &[b1[0], b2[0], a2[0], unknown]).await.expect("ack_many");
    assert_eq!(deleted, 1);
    assert_eq!(exact_size(&store, w.bob1).await, (3, 11 + 12 + 13));
    assert_eq!(exact_size(&store, w.bob2).await, (4, 46));
    assert_eq!(exact_size(&store, w.alice2).await, (4, 46));
    assert_eq!(store.ack_many(w.alice1.user, w.alice1.device, &[b1[1], b2[1], a2[1]]).await.expect("ack_many"), 0);
    assert!(!store.ack(w.bob1.user, w.bob1.device, b1[0]).await.expect("ack"), "already acknowledged");
    assert!(!store.ack(w.bob2.user, w.bob2.device, b1[1]).await.expect("ack"), "another device's");
    assert_eq!(store.ack_many(w.bob1.user, w.bob1.device, &[]).await.expect("ack_many"), 0);

    // The same id twice counts once.
    assert_eq!(store.ack_many(w.bob1.user, w.bob1.device, &[b1[2], b1[2], b1[1]]).await.expect("ack_many"), 2);
    assert_eq!(exact_size(&store, w.bob1).await, (1, 13));
    assert_eq!(queued(&store, w.bob1).await.iter().map(|e| e.id).collect::<Vec<_>>(), [b1[3]]);
    assert!(store.ack(w.bob1.user, w.bob1.device, b1[3]).await.expect("ack"));
    assert_eq!(exact_size(&store, w.bob1).await, (0, 0));
    assert_eq!(store.ack_many(w.bob2.user, w.bob2.device, &b2).await.expect("ack_many"), 4);
    assert_eq!(exact_size(&store, w.bob2).await, (0, 0));
    assert_eq!(exact_size(&store, w.alice2).await, (4, 46));
}

async fn purge_deletes_only_older_envelopes(store: Store) {
    let w = world(&store).await;
    // Over a thousand old envelopes: the purge works in batches.
    for _ in 0..350 {
        store.send(w.full_send(&[1; 4]), ROOMY, NOW - DAY).await.expect("old send");
    }
    let mut recent = Vec::new();
    for i in 0..3 {
        recent.push(store.send(w.full_send(&[2; 7]), ROOMY, NOW + i).await.expect("recent send"));
    }
    assert_eq!(store.purge_envelopes_before(NOW - DAY - 1).await.expect("purge"), 0);
    assert_eq!(exact_size(&store, w.bob1).await, (353, 350 * 4 + 3 * 7));

    assert_eq!(store.purge_envelopes_before(NOW - 1).await.expect("purge"), 3 * 350);
    for d in [w.bob1, w.bob2, w.alice2] {
        assert_eq!(exact_size(&store, d).await, (3, 21));
        let ids: Vec<EnvelopeId> = queued(&store, d).await.iter().map(|e| e.id).collect();
        assert_eq!(ids, recent.iter().map(|s| id_for(s, d)).collect::<Vec<_>>());
    }
    // The cutoff is inclusive.
    assert_eq!(store.purge_envelopes_before(NOW).await.expect("purge"), 3);
    assert_eq!(exact_size(&store, w.bob1).await, (2, 14));
    assert_eq!(store.purge_envelopes_before(NOW + 10).await.expect("purge"), 6);
    for d in w.devices() {
        assert_eq!(exact_size(&store, d).await, (0, 0));
    }
    // The counters are still right for what comes next.
    store.send(w.full_send(&[3; 5]), QueueLimits { max_envelopes: 1, max_bytes: 5 }, NOW).await.expect("send");
    assert_eq!(exact_size(&store, w.bob2).await, (1, 5));
}

async fn concurrent_sends_and_acks_keep_queue_sizes_exact(store: Store) {
    const TASKS: usize = 20;
    const SENDS: usize = 50;
    let w = world(&store).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                // Envelopes this task sent and Bob has not acknowledged yet, and what was.
                let mut pending = Vec::new();
                let (mut acked1, mut acked2) = ((0u64, 0u64), (0u64, 0u64));
                for i in 0..SENDS {
                    let size = 1 + (t * SENDS + i) % 37;
                    let send = store.send(w.full_send(&vec![7; size]), ROOMY, NOW).await.expect("concurrent send");
                    pending.push((id_for(&send, w.bob1), id_for(&send, w.bob2), size as u64));
                    if i % 5 == 4 {
                        // Bob's device 1 acknowledges a batch, device 2 one envelope at a time.
                        let batch: Vec<_> = pending.iter().map(|p| p.0).collect();
                        let bytes: u64 = pending.iter().map(|p| p.2).sum();
                        assert_eq!(
                            store.ack_many(w.bob1.user, w.bob1.device, &batch).await.expect("ack_many"),
                            batch.len() as u64
                        );
                        acked1 = (acked1.0 + batch.len() as u64, acked1.1 + bytes);
                        let (_, id, size) = pending[0];
                        assert!(store.ack(w.bob2.user, w.bob2.device, id).await.expect("ack"));
                        acked2 = (acked2.0 + 1, acked2.1 + size);
                        pending.clear();
                    }
                }
                (acked1, acked2)
            })
        })
        .collect();
    let (mut acked1, mut acked2) = ((0, 0), (0, 0));
    for task in tasks {
        let (a1, a2) = task.await.expect("task");
        acked1 = (acked1.0 + a1.0, acked1.1 + a1.1);
        acked2 = (acked2.0 + a2.0, acked2.1 + a2.1);
    }
    let sent = (TASKS as u64 * SENDS as u64, (0..TASKS * SENDS).map(|n| 1 + (n % 37) as u64).sum::<u64>());
    assert_eq!(acked1, sent, "device 1 acknowledged everything");
    assert_eq!(exact_size(&store, w.alice2).await, sent);
    assert_eq!(exact_size(&store, w.bob1).await, (0, 0));
    assert_eq!(exact_size(&store, w.bob2).await, (sent.0 - acked2.0, sent.1 - acked2.1));
    assert_eq!(envelope_rows(&store).await as u64, 2 * sent.0 - acked2.0);
}

async fn send_racing_a_device_removal_leaves_nothing_behind(store: Store) {
    let w = world(&store).await;
    let rows_of = |d: Dev| {
        let store = store.clone();
        async move {
            let binds = [d.user.0, i64::from(d.device.0)];
            (
                count(&store, "SELECT COUNT(*) FROM envelopes WHERE user_id = $1 AND device_id = $2", &binds).await,
                count(&store, "SELECT COUNT(*) FROM envelope_queues WHERE user_id = $1 AND device_id = $2", &binds).await,
            )
        }
    };

    // Removed before the send: the send names a device that no longer exists.
    store.send(w.full_send(b"before"), ROOMY, NOW).await.expect("send");
    assert_eq!(store.remove_device(w.bob2.user, w.bob2.device).await.expect("remove").map(|s| s.is_some()), Some(true));
    assert_eq!(rows_of(w.bob2).await, (0, 0), "removing a device removes its queue");
    expect_mismatch(&store, w.full_send(b"after"), mismatch(devices(&[], &[2], &[]), devices(&[], &[], &[]))).await;
    assert_eq!(rows_of(w.bob2).await, (0, 0));

    // Removed while sends are under way, over and over (the new device takes id 2 again).
    for round in 0..8u32 {
        let login = log_in(&store, w.bob1.user).await;
        let bob2 = with_keys(&store, &login, 300 + round).await;
        assert_eq!(bob2.device, DeviceId(2));
        let senders: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                let send = World { bob2, ..w };
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for _ in 0..10 {
                        outcomes.push(match store.send(send.full_send(b"racing"), ROOMY, NOW).await {
                            Ok(_) => "queued",
                            Err(EnqueueError::Mismatch(m)) => {
                                assert_eq!(*m, mismatch(devices(&[], &[2], &[]), devices(&[], &[], &[])));
                                "refused"
                            }
                            Err(EnqueueError::DeviceGone) => "device gone",
                            Err(e) => panic!("a send racing a device removal failed: {e:?}"),
                        });
                    }
                    outcomes
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let removed = store.remove_device(bob2.user, bob2.device).await;
        assert!(matches!(removed, Ok(Some(Some(_)))), "removing a device while sends go to it failed: {removed:?}");
        for sender in senders {
            sender.await.expect("sender");
        }
        assert_eq!(rows_of(bob2).await, (0, 0), "round {round}: rows left for a removed device");
        exact_size(&store, w.bob1).await;
        exact_size(&store, w.alice2).await;
    }
}

// ---- device lists ----------------------------------------------------------------------

// The store does not verify signatures (the API does before it calls it): dummy account keys
// and signatures stand in.

const ACCOUNT_KEY: [u8; 33] = [0x05; 33];
const OTHER_ACCOUNT_KEY: [u8; 33] = [0x06; 33];

/// `devs`' list at `version`, "signed" by `account_key`.
fn device_list(user: UserId, version: u64, devs: &[Dev], account_key: &[u8]) -> (SignedDeviceList, DeviceList) {
    let list = DeviceList {
        user,
        version,
        devices: devs.iter().map(|d| ListedDevice { device_id: d.device, identity_key: identity(d.registration_id) }).collect(),
    };
    let signed = SignedDeviceList {
        account_key: account_key.to_vec().into(),
        list: list.encode().into(),
        signature: vec![0x5A; 64].into(),
    };
    (signed, list)
}

async fn publish(store: &Store, user: UserId, version: u64, devs: &[Dev]) -> Result<(), PublishError> {
    let (signed, list) = device_list(user, version, devs, &ACCOUNT_KEY);
    store.publish_device_list(user, &signed, &list, false, NOW).await
}

/// Which devices of `user` are linked, by id.
async fn linked(store: &Store, user: UserId) -> Vec<(u32, bool)> {
    store.devices(user).await.expect("devices").iter().map(|d| (d.id.0, d.linked)).collect()
}

fn bundle_ids(bundles: &[copains_backend::store::StoredBundle]) -> Vec<u32> {
    bundles.iter().map(|b| b.device_id.0).collect()
}

async fn a_device_list_links_exactly_its_devices_and_routes_to_them(store: Store) {
    let w = world(&store).await;
    let bob = w.bob1.user;
    assert_eq!(store.device_list(bob).await.expect("list"), None);
    assert_eq!(linked(&store, bob).await, [(1, false), (2, false)], "no list: nothing is linked");
    // Without a list, every device with keys receives.
    assert_eq!(bundle_ids(&store.take_bundles(bob, None, None).await.expect("take")), [1, 2]);

    publish(&store, bob, 1, &[w.bob1]).await.expect("publish");
    let (signed, _) = device_list(bob, 1, &[w.bob1], &ACCOUNT_KEY);
    let stored = store.device_list(bob).await.expect("list").expect("a list");
    assert_eq!(
        stored,
        StoredDeviceList {
            account_key: ACCOUNT_KEY.to_vec(),
            list: signed.list.0.clone(),
            signature: signed.signature.0.clone(),
            version: 1
        }
    );
    assert_eq!(stored.signed(), signed, "served exactly as published");
    assert_eq!(linked(&store, bob).await, [(1, true), (2, false)]);
    assert!(store.is_linked(bob, w.bob1.device).await.expect("linked"));
    assert!(!store.is_linked(bob, w.bob2.device).await.expect("linked"));
    let sessions = store.sessions(bob, SessionId(0)).await.expect("sessions");
    let mut in_sessions: Vec<(u32, bool)> = sessions.iter().map(|s| (s.device.id.0, s.device.linked)).collect();
    in_sessions.sort();
    assert_eq!(in_sessions, [(1, true), (2, false)]);
    let renamed = store.rename_device(bob, w.bob1.device, "laptop").await.expect("rename").expect("device");
    assert!(renamed.linked);

    // The pending device hands out no bundle and receives nothing.
    assert_eq!(bundle_ids(&store.take_bundles(bob, None, None).await.expect("take")), [1]);
    assert!(store.take_bundles(bob, Some(w.bob2.device), None).await.expect("take").is_empty());
    let to_both = sending(w.alice1, bob, vec![envelope(w.bob1, b"hi"), envelope(w.bob2, b"hi")], vec![envelope(w.alice2, b"hi")]);
    expect_mismatch(&store, to_both, mismatch(devices(&[], &[2], &[]), devices(&[], &[], &[]))).await;
    let to_linked = sending(w.alice1, bob, vec![envelope(w.bob1, b"hi")], vec![envelope(w.alice2, b"hi")]);
    store.send(to_linked, ROOMY, NOW).await.expect("a send to the linked devices only");
    assert_eq!(exact_size(&store, w.bob1).await, (1, 2));
    assert_eq!(exact_size(&store, w.bob2).await, (0, 0));

    // The sender's own pending devices get no copy either.
    publish(&store, w.alice1.user, 1, &[w.alice1]).await.expect("alice's list");
    let with_sync = sending(w.alice1, bob, vec![envelope(w.bob1, b"hi")], vec![envelope(w.alice2, b"hi")]);
    expect_mismatch(&store, with_sync, mismatch(devices(&[], &[], &[]), devices(&[], &[2], &[]))).await;
    store.send(sending(w.alice1, bob, vec![envelope(w.bob1, b"hi")], Vec::new()), ROOMY, NOW).await.expect("send");

    // A new version links both; a later one unlinks device 1 again.
    publish(&store, bob, 2, &[w.bob1, w.bob2]).await.expect("v2");
    assert_eq!(linked(&store, bob).await, [(1, true), (2, true)]);
    assert_eq!(bundle_ids(&store.take_bundles(bob, None, None).await.expect("take")), [1, 2]);
    publish(&store, bob, 7, &[w.bob2]).await.expect("v7");
    assert_eq!(linked(&store, bob).await, [(1, false), (2, true)]);
    assert_eq!(store.device_list(bob).await.expect("list").expect("list").version, 7);
    // A device logged in after the list is pending, and so is a device that took the id of
    // a removed linked one.
    let bob3 = with_keys(&store, &log_in(&store, bob).await, 203).await;
    assert_eq!(linked(&store, bob).await, [(1, false), (2, true), (3, false)]);
    store.remove_device(bob, w.bob2.device).await.expect("remove").expect("removed");
    let again = with_keys(&store, &log_in(&store, bob).await, 222).await;
    assert_eq!(again.device, w.bob2.device);
    assert_eq!(linked(&store, bob).await, [(1, false), (2, false), (3, false)]);
    assert!(store.take_bundles(bob, None, None).await.expect("take").is_empty());
    let refused = store.send(sending(w.alice1, bob, vec![envelope(bob3, b"hi")], Vec::new()), ROOMY, NOW).await;
    assert!(matches!(refused, Err(EnqueueError::NoDevices)), "{refused:?}");
}

async fn refused_device_lists_change_nothing(store: Store) {
    let w = world(&store).await;
    let bob = w.bob1.user;
    publish(&store, bob, 5, &[w.bob1]).await.expect("v5");
    let before = store.device_list(bob).await.expect("list");
    let refused = |r: Result<(), PublishError>| r.expect_err("refused");

    assert!(matches!(refused(publish(&store, bob, 5, &[w.bob1, w.bob2]).await), PublishError::Stale { given: 5, stored: 5 }));
    assert!(matches!(refused(publish(&store, bob, 4, &[w.bob1, w.bob2]).await), PublishError::Stale { given: 4, stored: 5 }));
    let unknown = Dev { device: DeviceId(9), ..w.bob2 };
    assert!(matches!(refused(publish(&store, bob, 6, &[w.bob1, unknown]).await), PublishError::UnknownDevice(DeviceId(9))));
    let wrong_key = Dev { registration_id: 999, ..w.bob2 };
    assert!(matches!(refused(publish(&store, bob, 6, &[w.bob1, wrong_key]).await), PublishError::WrongKey(DeviceId(2))));
    let without_keys = log_in(&store, bob).await;
    let without_keys = Dev { user: bob, device: without_keys.device, registration_id: 1 };
    assert!(matches!(refused(publish(&store, bob, 6, &[without_keys]).await), PublishError::UnknownDevice(_)));
    // Alice's device is not one of Bob's.
    assert!(matches!(refused(publish(&store, bob, 6, &[w.alice1]).await), PublishError::WrongKey(DeviceId(1))));
    assert!(matches!(refused(publish(&store, bob, u64::MAX, &[w.bob2]).await), PublishError::VersionTooLarge(u64::MAX)));
    let (signed, list) = device_list(bob, 6, &[w.bob2], &OTHER_ACCOUNT_KEY);
    assert!(matches!(store.publish_device_list(bob, &signed, &list, false, NOW).await, Err(PublishError::AccountKeyDiffers)));

    assert_eq!(store.device_list(bob).await.expect("list"), before, "the stored list is unchanged");
    assert_eq!(linked(&store, bob).await, [(1, true), (2, false), (3, false)]);
    // Refused first lists store nothing either.
    let alice = w.alice1.user;
    assert!(matches!(refused(publish(&store, alice, 1, &[w.alice1, w.bob2]).await), PublishError::WrongKey(DeviceId(2))));
    assert_eq!(store.device_list(alice).await.expect("list"), None);
    assert_eq!(linked(&store, alice).await, [(1, false), (2, false)]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM account_identities", &[]).await, 1);
}

async fn a_new_account_key_must_be_allowed_and_drops_the_recovery_backup(store: Store) {
    let w = world(&store).await;
    let bob = w.bob1.user;
    publish(&store, bob, 3, &[w.bob1, w.bob2]).await.expect("v3");
    assert!(store.put_recovery_backup(bob, w.bob1.device, b"sealed", NOW).await.expect("backup"));
    let (signed, list) = device_list(bob, 3, &[w.bob2], &OTHER_ACCOUNT_KEY);
    assert!(
        matches!(store.publish_device_list(bob, &signed, &list, true, NOW).await, Err(PublishError::Stale { .. })),
        "a new account key still needs a newer version"
    );
    assert_eq!(store.recovery_backup(bob).await.expect("backup"), Some(b"sealed".to_vec()));
    let (signed, list) = device_list(bob, 4, &[w.bob2], &OTHER_ACCOUNT_KEY);
    store.publish_device_list(bob, &signed, &list, true, NOW).await.expect("new account key");
    let stored = store.device_list(bob).await.expect("list").expect("list");
    assert_eq!((stored.account_key, stored.version), (OTHER_ACCOUNT_KEY.to_vec(), 4));
    assert_eq!(linked(&store, bob).await, [(1, false), (2, true)]);
    assert_eq!(store.recovery_backup(bob).await.expect("backup"), None, "sealed for the old account key");
    // The same key again needs no permission.
    let (signed, list) = device_list(bob, 5, &[w.bob1, w.bob2], &OTHER_ACCOUNT_KEY);
    store.publish_device_list(bob, &signed, &list, false, NOW).await.expect("the same key");
    assert_eq!(linked(&store, bob).await, [(1, true), (2, true)]);
}

async fn only_linked_devices_store_the_recovery_backup(store: Store) {
    let w = world(&store).await;
    let bob = w.bob1.user;
    assert!(!store.put_recovery_backup(bob, w.bob1.device, b"x", NOW).await.expect("put"), "no list: nobody is linked");
    publish(&store, bob, 1, &[w.bob1]).await.expect("v1");
    assert!(!store.put_recovery_backup(bob, w.bob2.device, b"pending", NOW).await.expect("put"));
    assert_eq!(store.recovery_backup(bob).await.expect("get"), None);
    assert!(store.put_recovery_backup(bob, w.bob1.device, b"first", NOW).await.expect("put"));
    assert!(store.put_recovery_backup(bob, w.bob1.device, b"second", NOW + 1).await.expect("put"));
    assert!(!store.put_recovery_backup(bob, w.bob2.device, b"pending", NOW).await.expect("put"));
    assert_eq!(store.recovery_backup(bob).await.expect("get"), Some(b"second".to_vec()));
    assert_eq!(store.recovery_backup(w.alice1.user).await.expect("get"), None);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM recovery_backups", &[]).await, 1);
}

async fn link_requests_open_answer_expire_and_go(store: Store) {
    let w = world(&store).await;
    let bob = w.bob1.user;
    let ttl = 600_000;
    let open = |device: DeviceId, pake: &'static [u8], now: i64| {
        let store = store.clone();
        async move { store.open_link_request(bob, device, pake, now, now + ttl).await }
    };
    assert!(matches!(open(w.bob2.device, b"p", NOW).await, Err(LinkError::NoList)));
    publish(&store, bob, 1, &[w.bob1]).await.expect("v1");
    assert!(matches!(open(w.bob1.device, b"p", NOW).await, Err(LinkError::AlreadyLinked)));
    let bob3 = log_in(&store, bob).await;
    assert!(matches!(open(bob3.device, b"p", NOW).await, Err(LinkError::NoKeys)));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM link_requests", &[]).await, 0);

    let first = open(w.bob2.device, b"first", NOW).await.expect("open");
    assert_eq!(
        (first.device_id, first.device_name.as_str(), first.identity_key.0.clone(), first.pake.0.clone()),
        (w.bob2.device, "phone", identity(w.bob2.registration_id), b"first".to_vec())
    );
    assert_eq!((first.created_at, first.expires_at), (NOW, NOW + ttl));
    store.answer_link_request(bob, w.bob1.device, w.bob2.device, b"ans", b"sealed", NOW).await.expect("answer");
    // A new request replaces the earlier one and its answer.
    let second = open(w.bob2.device, b"second", NOW + 1).await.expect("reopen");
    assert_eq!(store.link_requests(bob, NOW + 1).await.expect("list"), vec![second.clone()]);
    let own = store.own_link_request(bob, w.bob2.device, NOW + 1).await.expect("own").expect("open");
    assert_eq!((own.request, own.answer), (second.clone(), None));
    assert_eq!(store.own_link_request(bob, w.bob1.device, NOW).await.expect("own"), None);

    // Only a linked device answers, and only an open request.
    assert!(matches!(
        store.answer_link_request(bob, w.bob2.device, w.bob2.device, b"a", b"s", NOW + 2).await,
        Err(LinkError::NotLinked)
    ));
    assert!(matches!(
        store.answer_link_request(bob, w.bob1.device, DeviceId(3), b"a", b"s", NOW + 2).await,
        Err(LinkError::NotFound)
    ));
    assert!(matches!(
        store.answer_link_request(w.alice1.user, w.alice1.device, w.bob2.device, b"a", b"s", NOW + 2).await,
        Err(LinkError::NotLinked)
    ));
    store.answer_link_request(bob, w.bob1.device, w.bob2.device, b"a1", b"s1", NOW + 2).await.expect("answer");
    let own = store.own_link_request(bob, w.bob2.device, NOW + 2).await.expect("own").expect("open");
    let answer = own.answer.expect("answered");
    assert_eq!((answer.from_device, answer.pake.0, answer.sealed.0), (w.bob1.device, b"a1".to_vec(), b"s1".to_vec()));
    assert_eq!(store.link_requests(bob, NOW + 2).await.expect("list"), vec![second.clone()], "answers are not listed");

    // Expired: invisible, not answerable, then purged.
    let late = second.expires_at;
    assert!(store.link_requests(bob, late).await.expect("list").is_empty());
    assert_eq!(store.own_link_request(bob, w.bob2.device, late).await.expect("own"), None);
    assert!(matches!(
        store.answer_link_request(bob, w.bob1.device, w.bob2.device, b"a", b"s", late).await,
        Err(LinkError::NotFound)
    ));
    assert_eq!(store.purge_link_requests(late - 1).await.expect("purge"), 0);
    assert_eq!(store.purge_link_requests(late).await.expect("purge"), 1);

    // Declined; and linked by a new list, which closes the request.
    open(w.bob2.device, b"third", NOW).await.expect("open");
    assert!(store.delete_link_request(bob, w.bob2.device, NOW).await.expect("delete"));
    assert!(!store.delete_link_request(bob, w.bob2.device, NOW).await.expect("delete"), "already gone");
    open(w.bob2.device, b"fourth", NOW).await.expect("open");
    publish(&store, bob, 2, &[w.bob1, w.bob2]).await.expect("v2");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM link_requests", &[]).await, 0);
    // A removed device's request goes with it.
    let bob3 = with_keys(&store, &bob3, 303).await;
    open(bob3.device, b"fifth", NOW).await.expect("open");
    store.remove_device(bob, bob3.device).await.expect("remove").expect("removed");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM link_requests", &[]).await, 0);
}
