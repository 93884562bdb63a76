//! End-to-end encrypted direct messages through the real server with real clients: PQXDH
//! session setup, Double Ratchet, every linked device of both users, offline queues, device
//! changes, account identity changes, the retry path that repairs a broken session (and
//! answers only the devices a message was sent to), and one-time prekeys handed out once.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestApp};
use copains_client_core::client::Client;
use copains_client_core::crypto::account::{new_link_code, AccountKey, PendingLink};
use copains_client_core::crypto::{Decrypted, E2eeDevice, MemoryBackend, Vault};
use copains_client_core::devices::{
    DeviceList, ListedDevice, NewLinkRequest, OwnLinkRequest, PublishDeviceList, SignedDeviceList,
};
use copains_client_core::engine::{Answer, Engine, Transport};
use copains_client_core::keys::{DeviceBundle, UploadKeys, UserBundles};
use copains_client_core::messages::{Envelope, Queue, SendMessage, SendReceipt};
use copains_client_core::messaging::{
    Clock, DirectMessage, HistoryEntry, Incoming, LinkState, MessagingError, Messenger, RetryRefusal,
};
use copains_client_core::{DeviceId, EnvelopeId, UserId};
use rand::seq::SliceRandom;
use reqwest::Method;

backend_tests!(
    first_messages_and_replies,
    a_thousand_messages_each_way_interleaved,
    an_offline_device_gets_the_burst_in_order,
    three_devices_see_every_message,
    a_device_added_mid_conversation_gets_later_messages,
    a_removed_device_gets_nothing_more,
    a_corrupted_session_heals_through_the_retry_path,
    a_forged_retry_request_gets_nothing_and_a_real_one_is_answered,
    a_restarted_sender_answers_a_retry_request,
    a_message_past_the_resend_window_is_not_sent_again,
    a_device_relinked_with_the_recovery_key_keeps_the_safety_number,
    a_verified_contact_with_new_keys_is_received_and_announced,
    nothing_is_sent_to_a_verified_device_with_new_keys_until_accepted,
    a_peer_sending_junk_gets_a_few_retry_requests_not_one_each,
    concurrent_bundle_fetches_never_share_a_one_time_prekey,
    history_is_kept_in_the_encrypted_store_across_restarts,
    a_device_signed_in_with_the_password_alone_gets_nothing_and_is_not_believed,
    clients_never_encrypt_to_a_device_the_server_slips_in,
    a_replayed_or_forged_device_list_is_refused,
    a_wrong_link_code_opens_nothing_and_the_right_one_links,
    the_recovery_key_links_a_device_after_every_old_one_is_gone,
    the_safety_number_is_the_same_on_every_device_of_both_users,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.messages_per_minute = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
        c.api.rate_limits.bundle_fetches_per_minute = 1_000_000;
        c.api.rate_limits.bundle_fetches_burst = 1_000_000;
    })
    .await
}

struct Person {
    client: Client,
    id: UserId,
    messenger: Messenger,
}

async fn register(app: &TestApp, name: &str) -> Person {
    let client = app.client();
    let auth = client.register(name, "a-long-password", Some("first")).await.expect("register");
    let store = app.data_dir.path().join(format!("{name}-1.vault"));
    let messenger = client.enable_e2ee(store, "vault passphrase").await.expect("e2ee");
    Person { client, id: auth.user.id, messenger }
}

/// A device signed in with the password: pending until linked.
async fn sign_in(app: &TestApp, name: &str, n: u32) -> Person {
    let client = app.client();
    let auth = client.login(name, "a-long-password", Some("another")).await.expect("login");
    let store = app.data_dir.path().join(format!("{name}-{n}.vault"));
    let messenger = client.enable_e2ee(store, "vault passphrase").await.expect("e2ee");
    assert_eq!(messenger.link_state().await.expect("state"), LinkState::Pending);
    Person { client, id: auth.user.id, messenger }
}

/// Another device of `name`, linked by `approver` with the code it shows.
async fn add_device(app: &TestApp, name: &str, n: u32, approver: &Person) -> Person {
    let mut person = sign_in(app, name, n).await;
    let code = person.messenger.begin_link().await.expect("code");
    let device = person.client.device_id().await.expect("device");
    approver.messenger.approve_link(device, &code).await.expect("approve");
    notice(&mut person.messenger, |n| matches!(n, Incoming::Linked)).await;
    person
}

/// A message each way, so that both sides hold an established session.
async fn exchange(a: &mut Messenger, a_id: UserId, b: &mut Messenger, b_id: UserId) {
    a.send_dm(b_id, "one").await.expect("send");
    assert_eq!(next_message(b).await.body, "one");
    b.send_dm(a_id, "two").await.expect("send");
    assert_eq!(next_message(a).await.body, "two");
}

/// The next message, with the notices that came before it.
async fn next_message_and_notices(m: &mut Messenger) -> (DirectMessage, Vec<Incoming>) {
    let mut notices = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), m.next()).await.expect("in time").expect("open") {
            Incoming::Message(message) => return (message, notices),
            other => notices.push(other),
        }
    }
}

async fn next_message(m: &mut Messenger) -> DirectMessage {
    tokio::time::timeout(Duration::from_secs(20), m.next_message()).await.expect("message in time").expect("messenger open")
}

async fn first_messages_and_replies(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;

    let sent = alice.messenger.send_dm(bob.id, "bonjour Bob").await.expect("send");
    assert!(sent.outgoing);
    let got = next_message(&mut bob.messenger).await;
    assert_eq!((got.body.as_str(), got.author, got.conversation, got.outgoing), ("bonjour Bob", alice.id, alice.id, false));
    assert_eq!(got.message_id, sent.message_id);

    bob.messenger.send_dm(alice.id, "salut Alice").await.expect("reply");
    let got = next_message(&mut alice.messenger).await;
    assert_eq!((got.body.as_str(), got.author), ("salut Alice", bob.id));
    alice.messenger.send_dm(bob.id, "ça va ?").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "ça va ?");

    // Both see the same safety number.
    let a = alice.messenger.safety_number(bob.id).await.expect("number");
    let b = bob.messenger.safety_number(alice.id).await.expect("number");
    assert_eq!(a.number.len(), 60, "60 digits");
    assert_eq!(a.number, b.number);
    // Queues empty out: everything is acknowledged (over the gateway, asynchronously).
    common::eventually(Duration::from_secs(10), "queues acknowledged", || async { app.count("envelopes").await == 0 }).await;
    alice.messenger.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn a_thousand_messages_each_way_interleaved(backend: Backend) {
    const N: usize = 1000;
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    let mut order: Vec<bool> = (0..2 * N).map(|i| i < N).collect();
    order.shuffle(&mut rand::rng());
    let (mut a_sent, mut b_sent) = (0, 0);
    for from_alice in order {
        if from_alice {
            alice.messenger.send_dm(bob.id, &format!("a{a_sent}")).await.expect("send");
            a_sent += 1;
        } else {
            bob.messenger.send_dm(alice.id, &format!("b{b_sent}")).await.expect("send");
            b_sent += 1;
        }
    }
    for i in 0..N {
        assert_eq!(next_message(&mut bob.messenger).await.body, format!("a{i}"), "bob's view, in order");
        assert_eq!(next_message(&mut alice.messenger).await.body, format!("b{i}"), "alice's view, in order");
    }
    alice.messenger.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn an_offline_device_gets_the_burst_in_order(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    alice.messenger.send_dm(bob.id, "first").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "first");

    bob.messenger.go_offline();
    // Commands run in order: once this answers, the connection is down.
    bob.messenger.conversations().await.expect("offline");
    // More than two pages of the queue (200 each).
    const BURST: usize = 450;
    for i in 0..BURST {
        alice.messenger.send_dm(bob.id, &format!("burst {i}")).await.expect("send");
    }
    bob.messenger.reconnect();
    for i in 0..BURST {
        assert_eq!(next_message(&mut bob.messenger).await.body, format!("burst {i}"));
    }
    common::eventually(Duration::from_secs(10), "queue acknowledged", || async { app.count("envelopes").await == 0 }).await;

    // A messenger restarted from its store (a new process) also gets what came meanwhile.
    bob.messenger.close().await;
    alice.messenger.send_dm(bob.id, "while closed").await.expect("send");
    let store = app.data_dir.path().join("bob-1.vault");
    let mut again = bob.client.enable_e2ee(store, "vault passphrase").await.expect("reopen");
    assert_eq!(next_message(&mut again).await.body, "while closed");
    assert!(bob.client.enable_e2ee(app.data_dir.path().join("bob-1.vault"), "wrong").await.is_err(), "wrong passphrase");
    again.close().await;
    alice.messenger.close().await;
    app.shutdown().await;
}

async fn three_devices_see_every_message(backend: Backend) {
    let app = spawn(backend).await;
    let mut a1 = register(&app, "alice").await;
    let mut a2 = add_device(&app, "alice", 2, &a1).await;
    let mut a3 = add_device(&app, "alice", 3, &a2).await;
    let mut bob = register(&app, "bob").await;

    a1.messenger.send_dm(bob.id, "from the laptop").await.expect("send");
    let got = next_message(&mut bob.messenger).await;
    assert_eq!(got.body, "from the laptop");
    for other in [&mut a2, &mut a3] {
        let copy = next_message(&mut other.messenger).await;
        assert_eq!((copy.body.as_str(), copy.outgoing, copy.conversation), ("from the laptop", true, bob.id));
    }
    bob.messenger.send_dm(a1.id, "to all of you").await.expect("reply");
    for d in [&mut a1, &mut a2, &mut a3] {
        assert_eq!(next_message(&mut d.messenger).await.body, "to all of you");
    }
    a3.messenger.send_dm(bob.id, "from the phone").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "from the phone");
    assert_eq!(next_message(&mut a1.messenger).await.body, "from the phone");
    assert_eq!(next_message(&mut a2.messenger).await.body, "from the phone");
    for p in [a1, a2, a3, bob] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_device_added_mid_conversation_gets_later_messages(backend: Backend) {
    let app = spawn(backend).await;
    let mut a1 = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    bob.messenger.send_dm(a1.id, "before").await.expect("send");
    assert_eq!(next_message(&mut a1.messenger).await.body, "before");

    let mut a2 = add_device(&app, "alice", 2, &a1).await;
    // Alice's first device, which approved it, is told once it is in the signed list.
    let linked = notice(&mut a1.messenger, |n| matches!(n, Incoming::OwnDevicesChanged { .. })).await;
    assert_eq!(linked, Incoming::OwnDevicesChanged { added: vec![DeviceId(2)], removed: vec![] });
    bob.messenger.send_dm(a1.id, "after").await.expect("send: bob learns of the new device");
    // Alice's account vouches for it: her safety number, and Bob's view of her, do not change.
    let bob_notices = drain_notices(&mut bob.messenger).await;
    assert!(!bob_notices.iter().any(|n| matches!(n, Incoming::IdentityChanged { .. })), "{bob_notices:?}");
    assert_eq!(next_message(&mut a1.messenger).await.body, "after");
    a1.messenger.send_dm(bob.id, "seen").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "seen");
    assert_eq!(next_message(&mut a2.messenger).await.body, "after", "the new device reads from the point it joined");
    assert_eq!(next_message(&mut a2.messenger).await.body, "seen");
    a1.messenger.send_dm(bob.id, "hello from 1").await.expect("send");
    let copy = next_message(&mut a2.messenger).await;
    assert_eq!((copy.body.as_str(), copy.outgoing), ("hello from 1", true));
    assert_eq!(next_message(&mut bob.messenger).await.body, "hello from 1");
    for p in [a1, a2, bob] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_removed_device_gets_nothing_more(backend: Backend) {
    let app = spawn(backend).await;
    let mut a1 = register(&app, "alice").await;
    let mut a2 = add_device(&app, "alice", 2, &a1).await;
    let bob = register(&app, "bob").await;
    bob.messenger.send_dm(a1.id, "both").await.expect("send");
    assert_eq!(next_message(&mut a1.messenger).await.body, "both");
    assert_eq!(next_message(&mut a2.messenger).await.body, "both");

    // Out of the signed list, then off the server.
    a1.messenger.remove_device(DeviceId(2)).await.expect("remove");
    bob.messenger.send_dm(a1.id, "only one").await.expect("send after removal");
    assert_eq!(next_message(&mut a1.messenger).await.body, "only one");
    // The removed device's session is revoked: its messenger stops, having received nothing.
    let mut after_removal = Vec::new();
    while let Some(n) = tokio::time::timeout(Duration::from_secs(20), a2.messenger.next()).await.expect("stops in time") {
        after_removal.push(n);
    }
    assert!(!after_removal.iter().any(|n| matches!(n, Incoming::Message(_))), "{after_removal:?}");
    common::eventually(Duration::from_secs(10), "nothing queued: the removed device has no queue", || async {
        app.count("envelopes").await == 0
    })
    .await;
    assert_eq!(a2.client.me().await.expect_err("its session ended").status(), Some(reqwest::StatusCode::UNAUTHORIZED));
    for p in [a1, bob] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_corrupted_session_heals_through_the_retry_path(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    exchange(&mut alice.messenger, alice.id, &mut bob.messenger, bob.id).await;

    bob.messenger.corrupt_session(alice.id, DeviceId(1)).await.expect("corrupt");
    alice.messenger.send_dm(bob.id, "three").await.expect("send");
    // Bob cannot read it with the broken session, asks for a retry, and then reads it.
    let (healed, notices) = next_message_and_notices(&mut bob.messenger).await;
    assert_eq!(healed.body, "three", "the user sees the message");
    assert!(
        notices.iter().any(|n| matches!(n, Incoming::RetryRequested { user, device: DeviceId(1), .. } if *user == alice.id)),
        "{notices:?}"
    );
    // And the conversation goes on both ways.
    bob.messenger.send_dm(alice.id, "four").await.expect("send");
    assert_eq!(next_message(&mut alice.messenger).await.body, "four");
    alice.messenger.send_dm(bob.id, "five").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "five");
    let history = bob.messenger.history(alice.id, None, 10).await.expect("history");
    let bodies: Vec<&str> = history.iter().map(|(_, m)| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two", "three", "four", "five"], "the healed message is in history once");
    // The envelope that failed is kept where it arrived, marked repaired, right before the
    // message that came again: never silently dropped.
    let entries = bob.messenger.entries(alice.id, None, 10).await.expect("entries");
    let kinds: Vec<String> = entries
        .iter()
        .map(|(_, e)| match e {
            HistoryEntry::Message(m) => m.body.clone(),
            HistoryEntry::Undecryptable { repaired, author, .. } => {
                format!("undecryptable from {} repaired={repaired}", author == &alice.id)
            }
            HistoryEntry::IdentityChanged { .. } => "identity changed".to_owned(),
        })
        .collect();
    assert_eq!(kinds, ["one", "two", "undecryptable from true repaired=true", "three", "four", "five"]);
    alice.messenger.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn a_device_relinked_with_the_recovery_key_keeps_the_safety_number(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let recovery = bob.messenger.unconfirmed_recovery_key().await.expect("state").expect("shown at sign-up");
    bob.messenger.send_dm(alice.id, "hi").await.expect("send");
    assert_eq!(next_message(&mut alice.messenger).await.body, "hi");
    let before = alice.messenger.safety_number(bob.id).await.expect("number");

    // Bob's only device goes away; his next sign-in gets device id 1 again, with new keys,
    // pending until his recovery key vouches for it.
    bob.messenger.close().await;
    bob.client.logout().await.expect("logout");
    let mut bob2 = sign_in(&app, "bob", 9).await;
    assert_eq!(bob2.client.device_id().await, Some(DeviceId(1)));
    bob2.messenger.link_with_recovery_key(&recovery.to_lowercase()).await.expect("recovered");
    assert_eq!(bob2.messenger.link_state().await.expect("state"), LinkState::Linked);

    alice.messenger.send_dm(bob.id, "are you there?").await.expect("send: the new device's keys come from the new list");
    assert_eq!(next_message(&mut bob2.messenger).await.body, "are you there?");
    let notices = drain_notices(&mut alice.messenger).await;
    assert!(!notices.iter().any(|n| matches!(n, Incoming::IdentityChanged { .. })), "same account: {notices:?}");
    assert_eq!(alice.messenger.safety_number(bob.id).await.expect("number"), before, "one safety number per person");
    bob2.messenger.send_dm(alice.id, "yes").await.expect("reply");
    assert_eq!(next_message(&mut alice.messenger).await.body, "yes");
    alice.messenger.close().await;
    bob2.messenger.close().await;
    app.shutdown().await;
}

/// Alice has verified Bob; Bob loses his only device and his recovery key: his new device
/// starts a new account identity.
async fn verified_then_replaced(app: &TestApp) -> (Person, UserId, Person, String) {
    let mut alice = register(app, "alice").await;
    let bob = register(app, "bob").await;
    bob.messenger.send_dm(alice.id, "hi").await.expect("send");
    assert_eq!(next_message(&mut alice.messenger).await.body, "hi");
    let before = alice.messenger.safety_number(bob.id).await.expect("number");
    alice.messenger.verify(bob.id).await.expect("verify");
    assert!(alice.messenger.safety_number(bob.id).await.expect("number").verified);
    bob.messenger.close().await;
    bob.client.logout().await.expect("logout");
    let bob2 = sign_in(app, "bob", 9).await;
    assert_eq!(bob2.client.device_id().await, Some(DeviceId(1)));
    assert!(bob2.messenger.reset_identity("a wrong password").await.is_err(), "the password is checked");
    bob2.messenger.reset_identity("a-long-password").await.expect("new identity");
    (alice, bob.id, bob2, before.number)
}

async fn drain_notices(m: &mut Messenger) -> Vec<Incoming> {
    let mut out = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(300), m.next()).await {
        out.push(n);
    }
    out
}

async fn a_verified_contact_with_new_keys_is_received_and_announced(backend: Backend) {
    let app = spawn(backend).await;
    let (mut alice, bob_id, bob2, before) = verified_then_replaced(&app).await;
    // A message from the new keys is read (as Signal does), and the change is loud.
    bob2.messenger.send_dm(alice.id, "new keys, same person").await.expect("send");
    let (got, notices) = next_message_and_notices(&mut alice.messenger).await;
    assert_eq!(got.body, "new keys, same person");
    let notices = [notices, drain_notices(&mut alice.messenger).await].concat();
    assert!(notices.contains(&Incoming::IdentityChanged { user: bob_id }), "{notices:?}");
    assert!(!notices.iter().any(|n| matches!(n, Incoming::RetryRequested { .. })), "read at once: {notices:?}");
    let entries = alice.messenger.entries(bob_id, None, 10).await.expect("entries");
    let kinds: Vec<&str> = entries
        .iter()
        .map(|(_, e)| match e {
            HistoryEntry::Message(m) => m.body.as_str(),
            HistoryEntry::IdentityChanged { .. } => "identity changed",
            HistoryEntry::Undecryptable { .. } => "undecryptable",
        })
        .collect();
    assert_eq!(kinds, ["hi", "identity changed", "new keys, same person"], "kept where it happened");
    let after = alice.messenger.safety_number(bob_id).await.expect("number");
    assert_ne!(before, after.number, "the safety number changed");
    assert!(after.changed && !after.verified, "{after:?}");
    // Verified before, "unverified" now: no reply goes to the new key until Alice accepts it
    // (a forged message from the server cannot lift her verification by itself).
    let err = alice.messenger.send_dm(bob_id, "welcome back").await.expect_err("refused until accepted");
    assert!(matches!(err, MessagingError::UntrustedIdentity { .. }), "{err:?}");
    alice.messenger.set_verified(bob_id, false).await.expect("accept");
    alice.messenger.send_dm(bob_id, "welcome back").await.expect("reply");
    let mut bob2 = bob2;
    assert_eq!(next_message(&mut bob2.messenger).await.body, "welcome back");
    alice.messenger.close().await;
    bob2.messenger.close().await;
    app.shutdown().await;
}

async fn nothing_is_sent_to_a_verified_device_with_new_keys_until_accepted(backend: Backend) {
    let app = spawn(backend).await;
    let (mut alice, bob_id, mut bob2, before) = verified_then_replaced(&app).await;
    // Alice writes first: her device finds new keys on a device she verified, and stops.
    let err = alice.messenger.send_dm(bob_id, "are you there?").await.expect_err("refused");
    assert!(matches!(err, MessagingError::UntrustedIdentity { user } if user == bob_id), "{err:?}");
    let notices = drain_notices(&mut alice.messenger).await;
    assert!(notices.contains(&Incoming::IdentityChanged { user: bob_id }), "{notices:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bob2.messenger.next_message()).await.is_err(),
        "nothing reached the new keys"
    );
    // She sees the new safety number; sending again is still refused until she accepts it.
    let after = alice.messenger.safety_number(bob_id).await.expect("number");
    assert_ne!(before, after.number, "the new safety number is shown");
    let err = alice.messenger.send_dm(bob_id, "are you there?").await.expect_err("still refused");
    assert!(matches!(err, MessagingError::UntrustedIdentity { .. }), "{err:?}");
    alice.messenger.set_verified(bob_id, false).await.expect("accept");
    alice.messenger.send_dm(bob_id, "are you there?").await.expect("sent after accepting");
    assert_eq!(next_message(&mut bob2.messenger).await.body, "are you there?");
    alice.messenger.close().await;
    bob2.messenger.close().await;
    app.shutdown().await;
}

async fn a_peer_sending_junk_gets_a_few_retry_requests_not_one_each(backend: Backend) {
    let app = spawn(backend).await;
    let (alice_id, mut alice, skew) = alice_with_skewed_clock(&app).await;
    let mut mallory = RawDevice::register(&app, "mallory").await;
    // A real session first, so that Mallory's junk is well-formed: genuine ciphertexts with a
    // broken authentication tag, which Alice cannot decrypt and would ask to have again.
    alice.send_dm(mallory.id, "hi Mallory").await.expect("send");
    let hello = mallory.queue().await.pop().expect("alice's message");
    assert_eq!(mallory.read(&hello).await, "hi Mallory");
    mallory.ack(hello.id).await;
    async fn junk(alice: &mut Messenger, alice_id: UserId, mallory: &mut RawDevice, n: usize) {
        for i in 0..n {
            let mut junk = mallory.device.encrypt(alice_id, DeviceId(1), format!("junk {i}").as_bytes()).await.expect("encrypt");
            let last = junk.content.0.len() - 1;
            junk.content.0[last] ^= 1;
            let send = SendMessage { recipient: alice_id, messages: vec![junk], sync_messages: Vec::new(), partial: false };
            let _: SendReceipt = mallory.client.api(Method::POST, "/api/v1/messages", Some(&send)).await.expect("post junk");
        }
        // Alice shows each as undecryptable.
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(20), alice.next()).await.expect("in time").expect("open") {
                Incoming::RetryRequested { user, .. } if user == mallory.id => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    junk(&mut alice, alice_id, &mut mallory, 20).await;
    let entries = alice.entries(mallory.id, None, 50).await.expect("entries");
    assert_eq!(entries.iter().filter(|(_, e)| matches!(e, HistoryEntry::Undecryptable { .. })).count(), 20);
    let requests = mallory.queue().await;
    assert_eq!(requests.len(), 5, "twenty undecryptable, five retry requests: {requests:?}");
    assert!(requests.iter().all(|e| e.kind == copains_client_core::messages::kind::PLAINTEXT), "{requests:?}");
    // A minute later (on Alice's clock), she may ask again.
    skew.store(61_000, Ordering::SeqCst);
    junk(&mut alice, alice_id, &mut mallory, 2).await;
    assert_eq!(mallory.queue().await.len(), 7, "a new minute, new requests");
    alice.close().await;
    app.shutdown().await;
}

async fn concurrent_bundle_fetches_never_share_a_one_time_prekey(backend: Backend) {
    let app = spawn(backend).await;
    let bob = register(&app, "bob").await;
    let mut fetchers = Vec::new();
    for i in 0..8 {
        let c = app.client();
        c.register(&format!("fetcher{i}"), "a-long-password", None).await.expect("register");
        fetchers.push(c);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for c in fetchers {
        let bob_id = bob.id;
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..10 {
                let b: copains_client_core::keys::UserBundles =
                    c.api(reqwest::Method::GET, &format!("/api/v1/keys/{bob_id}"), None::<&()>).await.expect("bundle");
                let d = &b.devices[0];
                ids.push((d.pre_key.as_ref().map(|k| k.key_id), d.pq_pre_key.key_id));
            }
            ids
        });
    }
    let mut ec = Vec::new();
    let mut pq = Vec::new();
    while let Some(r) = tasks.join_next().await {
        for (e, p) in r.expect("task") {
            ec.push(e.expect("80 fetches of 100 one-time EC prekeys: none runs out"));
            pq.push(p);
        }
    }
    let (n_ec, n_pq) = (ec.len(), pq.len());
    ec.sort_unstable();
    ec.dedup();
    pq.sort_unstable();
    pq.dedup();
    assert_eq!((ec.len(), pq.len()), (n_ec, n_pq), "every fetch got its own one-time prekeys");
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn history_is_kept_in_the_encrypted_store_across_restarts(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    for body in ["alice-message-1", "alice-message-2", "alice-message-3"] {
        alice.messenger.send_dm(bob.id, body).await.expect("send");
    }
    for _ in 0..3 {
        next_message(&mut bob.messenger).await;
    }
    for body in ["bob-message-1", "bob-message-2"] {
        bob.messenger.send_dm(alice.id, body).await.expect("send");
    }
    let seen = |h: &[(u64, DirectMessage)]| h.iter().map(|(_, m)| (m.body.clone(), m.outgoing)).collect::<Vec<_>>();
    let expected = |extra: &[&str]| {
        let mut v: Vec<(String, bool)> = [
            ("alice-message-1", false),
            ("alice-message-2", false),
            ("alice-message-3", false),
            ("bob-message-1", true),
            ("bob-message-2", true),
        ]
        .iter()
        .map(|(b, o)| (b.to_string(), *o))
        .collect();
        v.extend(extra.iter().map(|b| (b.to_string(), false)));
        v
    };
    assert_eq!(seen(&bob.messenger.history(alice.id, None, 50).await.expect("history")), expected(&[]));

    // Bob's app stops; Alice writes meanwhile; Bob's app starts again from its store.
    bob.messenger.close().await;
    alice.messenger.send_dm(bob.id, "while you were away").await.expect("send");
    let store = app.data_dir.path().join("bob-1.vault");
    let wrong = bob.client.enable_e2ee(&store, "not the passphrase").await;
    assert!(wrong.is_err(), "a wrong passphrase does not open the store");
    let mut reopened = bob.client.enable_e2ee(&store, "vault passphrase").await.expect("reopen");
    assert_eq!(next_message(&mut reopened).await.body, "while you were away");
    let history = reopened.history(alice.id, None, 50).await.expect("history");
    assert_eq!(seen(&history), expected(&["while you were away"]), "kept across the restart, in order");
    assert_eq!(history.iter().map(|(n, _)| *n).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
    let older = reopened.history(alice.id, Some(2), 50).await.expect("page");
    assert_eq!(seen(&older), expected(&[])[..2].to_vec(), "paging back");
    assert_eq!(reopened.conversations().await.expect("list"), vec![alice.id]);

    // The store is sealed: no message text in its file (nor in its write-ahead log).
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(app.data_dir.path()).expect("dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("bob-1.vault") {
            raw.extend(std::fs::read(entry.path()).expect("store file"));
        }
    }
    assert!(!raw.is_empty());
    for body in ["alice-message-1", "bob-message-2", "while you were away"] {
        assert!(!raw.windows(body.len()).any(|w| w == body.as_bytes()), "{body} found in the store file");
    }
    alice.messenger.close().await;
    reopened.close().await;
    app.shutdown().await;
}

/// Alice, whose messenger reads the system clock plus a skew the test sets (milliseconds).
async fn alice_with_skewed_clock(app: &TestApp) -> (UserId, Messenger, Arc<AtomicI64>) {
    let client = app.client();
    let alice_id = client.register("alice", "a-long-password", Some("first")).await.expect("register").user.id;
    let skew = Arc::new(AtomicI64::new(0));
    let clock = {
        let skew = skew.clone();
        Clock::from_fn(move || copains_client_core::crypto::device::now_ms() + skew.load(Ordering::SeqCst))
    };
    let alice =
        client.enable_e2ee_with_clock(app.data_dir.path().join("alice-1.vault"), "vault passphrase", clock).await.expect("e2ee");
    (alice_id, alice, skew)
}

/// A device driven by the test itself rather than by a messenger: it sees raw envelopes and
/// can send whatever it likes (as a malicious client would).
struct RawDevice {
    client: Client,
    id: UserId,
    device: E2eeDevice,
}

impl RawDevice {
    /// A new account whose only device this is (it publishes the account's signed list).
    async fn register(app: &TestApp, name: &str) -> Self {
        let client = app.client();
        let id = client.register(name, "a-long-password", Some("raw")).await.expect("register").user.id;
        let raw = Self::with_keys(client, id).await;
        let account = AccountKey::generate();
        let list = DeviceList { user: id, version: 1, devices: vec![raw.listing().await] };
        raw.publish(account.sign(&list)).await;
        raw
    }

    /// Another device of `name`, linked by `approver` (run here by hand, as the engine does).
    async fn linked_by(app: &TestApp, name: &str, approver: &Messenger) -> Self {
        let client = app.client();
        let id = client.login(name, "a-long-password", Some("raw")).await.expect("login").user.id;
        let raw = Self::with_keys(client, id).await;
        let me = raw.listing().await;
        let code = new_link_code();
        let (pending, pake) = PendingLink::start(&code, id, me.device_id, &me.identity_key).expect("link");
        let answer = raw
            .client
            .raw(Method::POST, "/api/v1/users/@me/link-requests", Some(json(&NewLinkRequest { pake: pake.into() })))
            .await
            .expect("request");
        assert_eq!(answer.status, 201);
        approver.approve_link(me.device_id, &code).await.expect("approve");
        let own: OwnLinkRequest =
            raw.client.api(Method::GET, "/api/v1/users/@me/link-requests/@me", None::<&()>).await.expect("answer");
        let answer = own.answer.expect("answered");
        let (account, _) = pending.finish(answer.pake.as_slice(), answer.sealed.as_slice()).expect("opens with the code");
        let current: SignedDeviceList =
            raw.client.api(Method::GET, "/api/v1/users/@me/device-list", None::<&()>).await.expect("list");
        let mut list = DeviceList::decode(current.list.as_slice()).expect("list");
        list.devices.push(me);
        list.version += 1;
        raw.publish(account.sign(&list)).await;
        raw
    }

    async fn listing(&self) -> ListedDevice {
        ListedDevice {
            device_id: self.client.device_id().await.expect("device"),
            identity_key: self.device.identity_key().serialize().to_vec(),
        }
    }

    async fn publish(&self, signed: SignedDeviceList) {
        let body = json(&PublishDeviceList { signed, reset_password: None });
        let answer = self.client.raw(Method::PUT, "/api/v1/users/@me/device-list", Some(body)).await.expect("publish");
        assert_eq!(answer.status, 204, "{}", String::from_utf8_lossy(&answer.body));
    }

    async fn with_keys(client: Client, id: UserId) -> Self {
        let vault = Vault::open(Box::new(MemoryBackend::default()), "raw").await.expect("vault");
        let (device, upload) = E2eeDevice::open(vault, id).await.expect("device");
        client.put_keys(&upload.expect("new device")).await.expect("upload keys");
        Self { client, id, device }
    }

    async fn queue(&self) -> Vec<Envelope> {
        let q: Queue = self.client.api(Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
        q.envelopes
    }

    async fn ack(&self, id: EnvelopeId) {
        self.client.ack(id).await.expect("ack");
    }

    /// Asks `to`'s device 1 to re-send what it sent at `timestamp`, with a request built on a
    /// genuine envelope (`carrier`) so that it is well-formed.
    async fn ask_again(&self, to: UserId, carrier: &Envelope, timestamp: i64) {
        let mut named = carrier.clone();
        named.server_timestamp = timestamp;
        let request = E2eeDevice::retry_request(&named).expect("retry request");
        let send = SendMessage { recipient: to, messages: vec![request], sync_messages: Vec::new(), partial: true };
        let _: SendReceipt = self.client.api(Method::POST, "/api/v1/messages", Some(&send)).await.expect("post retry request");
    }

    /// Decrypts a DM envelope and returns its text.
    async fn read(&mut self, e: &Envelope) -> String {
        match self.device.decrypt(e).await.expect("decrypt") {
            Decrypted::Message(plaintext) => {
                let v: serde_json::Value = serde_json::from_slice(&plaintext).expect("content");
                v["body"].as_str().expect("body").to_owned()
            }
            other => panic!("not a message: {other:?}"),
        }
    }
}

/// Waits for a notice matching `want`, skipping others.
async fn notice(m: &mut Messenger, want: impl Fn(&Incoming) -> bool) -> Incoming {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), m.next()).await.expect("notice in time").expect("messenger open");
        if want(&n) {
            return n;
        }
    }
}

async fn a_forged_retry_request_gets_nothing_and_a_real_one_is_answered(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    let mut mallory = RawDevice::register(&app, "mallory").await;

    let secret = alice.messenger.send_dm(bob.id, "for Bob's eyes only").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "for Bob's eyes only");

    // Mallory knows the timestamp (as the server does) and asks Alice for that message, with a
    // well-formed request built on a message Alice really sent her.
    alice.messenger.send_dm(mallory.id, "hi Mallory").await.expect("send");
    let from_alice = mallory.queue().await;
    assert_eq!(from_alice.len(), 1);
    assert_eq!(mallory.read(&from_alice[0]).await, "hi Mallory");
    mallory.ack(from_alice[0].id).await;
    mallory.ask_again(alice.id, &from_alice[0], secret.sent_at).await;
    let refused = notice(&mut alice.messenger, |n| matches!(n, Incoming::RetryRefused { .. })).await;
    assert_eq!(
        refused,
        Incoming::RetryRefused {
            user: mallory.id,
            device: DeviceId(1),
            timestamp: secret.sent_at,
            reason: RetryRefusal::NotARecipient
        }
    );
    // Positive control: what Alice sends next reaches Mallory, and it is the only envelope
    // there: the secret was not re-sent to her.
    alice.messenger.send_dm(mallory.id, "control").await.expect("send");
    let queued = mallory.queue().await;
    assert_eq!(queued.len(), 1, "only the control message");
    assert_eq!(mallory.read(&queued[0]).await, "control");
    mallory.ack(queued[0].id).await;

    // A device Bob adds later was not a recipient of the secret either.
    let mut bob2 = RawDevice::linked_by(&app, "bob", &bob.messenger).await;
    let later = alice.messenger.send_dm(bob.id, "to both of Bob's devices").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "to both of Bob's devices");
    let q = bob2.queue().await;
    assert_eq!(q.len(), 1);
    bob2.ask_again(alice.id, &q[0], secret.sent_at).await;
    let refused = notice(&mut alice.messenger, |n| matches!(n, Incoming::RetryRefused { .. })).await;
    assert_eq!(
        refused,
        Incoming::RetryRefused {
            user: bob.id,
            device: DeviceId(2),
            timestamp: secret.sent_at,
            reason: RetryRefusal::NotARecipient
        }
    );
    // But it may ask again for what it was sent, and it gets a copy it can read.
    bob2.ask_again(alice.id, &q[0], later.sent_at).await;
    bob2.ack(q[0].id).await;
    common::eventually(Duration::from_secs(20), "the re-sent envelope", || async { !bob2.queue().await.is_empty() }).await;
    let resent = bob2.queue().await.remove(0);
    assert_eq!(resent.sender, alice.id);
    assert_eq!(bob2.read(&resent).await, "to both of Bob's devices");
    bob2.ack(resent.id).await;
    assert!(bob2.queue().await.is_empty(), "nothing else: not the secret");

    alice.messenger.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn a_restarted_sender_answers_a_retry_request(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    exchange(&mut alice.messenger, alice.id, &mut bob.messenger, bob.id).await;

    // Bob is offline with a broken session; Alice writes, then her app stops.
    bob.messenger.go_offline();
    bob.messenger.corrupt_session(alice.id, DeviceId(1)).await.expect("corrupt");
    alice.messenger.send_dm(bob.id, "sent before a restart").await.expect("send");
    alice.messenger.close().await;

    // Alice's app starts again from its store; Bob comes back and cannot decrypt: his retry
    // request is answered from the log in Alice's store.
    let mut alice_again =
        alice.client.enable_e2ee(app.data_dir.path().join("alice-1.vault"), "vault passphrase").await.expect("reopen");
    bob.messenger.reconnect();
    let (healed, notices) = next_message_and_notices(&mut bob.messenger).await;
    assert_eq!(healed.body, "sent before a restart");
    assert!(
        notices.iter().any(|n| matches!(n, Incoming::RetryRequested { user, device: DeviceId(1), .. } if *user == alice.id)),
        "{notices:?}"
    );
    bob.messenger.send_dm(alice.id, "got it").await.expect("send");
    assert_eq!(next_message(&mut alice_again).await.body, "got it");
    alice_again.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn a_message_past_the_resend_window_is_not_sent_again(backend: Backend) {
    let app = spawn(backend).await;
    let (alice_id, mut alice, skew) = alice_with_skewed_clock(&app).await;
    let mut bob = register(&app, "bob").await;
    exchange(&mut alice, alice_id, &mut bob.messenger, bob.id).await;

    bob.messenger.go_offline();
    bob.messenger.corrupt_session(alice_id, DeviceId(1)).await.expect("corrupt");
    let stale = alice.send_dm(bob.id, "stale by the time it is asked for").await.expect("send");
    // A day and a minute pass on Alice's side before Bob comes back.
    skew.store(24 * 3600 * 1000 + 60_000, Ordering::SeqCst);
    bob.messenger.reconnect();
    let refused = notice(&mut alice, |n| matches!(n, Incoming::RetryRefused { .. })).await;
    assert_eq!(
        refused,
        Incoming::RetryRefused { user: bob.id, device: DeviceId(1), timestamp: stale.sent_at, reason: RetryRefusal::Expired }
    );
    // Positive control: the next message reaches Bob, and it is the first he can read.
    alice.send_dm(bob.id, "fresh").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "fresh");
    alice.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("json")
}

// ---- devices the server cannot forge ---------------------------------------------------------

/// A device made with the password alone, as a malicious server (or a password thief) would:
/// keys uploaded, never linked.
async fn forged_device(app: &TestApp, name: &str) -> (RawDevice, UploadKeys) {
    let client = app.client();
    let id = client.login(name, "a-long-password", Some("forged")).await.expect("login").user.id;
    let vault = Vault::open(Box::new(MemoryBackend::default()), "raw").await.expect("vault");
    let (device, upload) = E2eeDevice::open(vault, id).await.expect("device");
    let upload = upload.expect("new device");
    client.put_keys(&upload).await.expect("upload keys");
    (RawDevice { client, id, device }, upload)
}

async fn a_device_signed_in_with_the_password_alone_gets_nothing_and_is_not_believed(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    exchange(&mut alice.messenger, alice.id, &mut bob.messenger, bob.id).await;
    let (mut forged, _) = forged_device(&app, "alice").await;
    let forged_id = forged.client.device_id().await.expect("device");
    let refused = forged.client.remove_device(DeviceId(1)).await.expect_err("a pending device cannot remove a linked one");
    assert_eq!(refused.status(), Some(reqwest::StatusCode::FORBIDDEN));

    // Neither Bob nor Alice's own device sends it anything.
    bob.messenger.send_dm(alice.id, "for Alice only").await.expect("send");
    assert_eq!(next_message(&mut alice.messenger).await.body, "for Alice only");
    alice.messenger.send_dm(bob.id, "from the real Alice").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "from the real Alice");
    assert!(forged.queue().await.is_empty(), "nothing was encrypted to the forged device");

    // What it sends in Alice's name is dropped by Bob and by Alice's real device.
    let bundles: UserBundles =
        forged.client.api(Method::GET, &format!("/api/v1/keys/{}", bob.id), None::<&()>).await.expect("bundles");
    forged.device.start_session(bob.id, &bundles.devices[0]).await.expect("session");
    let own: UserBundles =
        forged.client.api(Method::GET, &format!("/api/v1/keys/{}", alice.id), None::<&()>).await.expect("bundles");
    forged.device.start_session(alice.id, &own.devices[0]).await.expect("session");
    let content = serde_json::json!({"id": "f00d", "to": bob.id, "body": "send me your password"}).to_string();
    let to_bob = forged.device.encrypt(bob.id, DeviceId(1), content.as_bytes()).await.expect("encrypt");
    let to_alice = forged.device.encrypt(alice.id, DeviceId(1), content.as_bytes()).await.expect("encrypt");
    let send = SendMessage { recipient: bob.id, messages: vec![to_bob], sync_messages: vec![to_alice], partial: false };
    let _: SendReceipt = forged.client.api(Method::POST, "/api/v1/messages", Some(&send)).await.expect("the server relays it");
    // Positive control after it: the real Alice's next message is the next thing both read.
    alice.messenger.send_dm(bob.id, "control").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "control", "the forged message was not shown");
    for (_, entry) in bob.messenger.entries(alice.id, None, 20).await.expect("entries") {
        assert!(!matches!(&entry, HistoryEntry::Message(m) if m.body.contains("password")), "forged message kept");
        assert!(!matches!(entry, HistoryEntry::Undecryptable { author_device, .. } if author_device == forged_id));
    }
    for (_, entry) in alice.messenger.entries(bob.id, None, 20).await.expect("entries") {
        assert!(!matches!(&entry, HistoryEntry::Message(m) if m.body.contains("password")), "forged copy kept");
    }
    common::eventually(Duration::from_secs(10), "the forged envelopes are acknowledged (dropped)", || async {
        app.count("envelopes").await == 0
    })
    .await;
    forged.queue().await;
    alice.messenger.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

/// Rewrites an answer: (method, path, answer).
type Rewrite = Box<dyn FnMut(&str, &str, &mut Answer) + Send>;

/// A transport that passes requests to the real server, lets the test rewrite answers (as a
/// malicious server would), and records every envelope sent.
struct Tampering {
    client: Client,
    rewrite: std::sync::Mutex<Rewrite>,
    sent_to: std::sync::Mutex<Vec<(UserId, DeviceId)>>,
}

#[async_trait::async_trait(?Send)]
impl Transport for Tampering {
    async fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, String> {
        if method == "POST" && path == "/api/v1/messages" {
            let send: SendMessage = serde_json::from_str(body.as_deref().unwrap_or("{}")).map_err(|e| e.to_string())?;
            let me = self.client.user().await.expect("user").id;
            let mut sent = self.sent_to.lock().expect("lock");
            sent.extend(send.messages.iter().map(|e| (send.recipient, e.device_id)));
            sent.extend(send.sync_messages.iter().map(|e| (me, e.device_id)));
        }
        let mut answer = self.client.request(method, path, body).await?;
        (self.rewrite.lock().expect("lock"))(method, path, &mut answer);
        Ok(answer)
    }
}

async fn tampered_engine(
    app: &TestApp,
    name: &str,
    rewrite: impl FnMut(&str, &str, &mut Answer) + Send + 'static,
) -> Engine<Tampering> {
    let client = app.client();
    let auth = client.register(name, "a-long-password", Some("tampered")).await.expect("register");
    let session = client.session_id().await.expect("session");
    let transport = Tampering { client, rewrite: std::sync::Mutex::new(Box::new(rewrite)), sent_to: Default::default() };
    let now = copains_client_core::crypto::device::now_ms();
    let mut engine = Engine::open(transport, Box::new(MemoryBackend::default()), "p", auth.user.id, DeviceId(1), session, now)
        .await
        .expect("open");
    engine.start(now).await.expect("start");
    engine
}

fn bundle_of(device: DeviceId, keys: &UploadKeys) -> DeviceBundle {
    DeviceBundle {
        device_id: device,
        registration_id: keys.registration_id.expect("registration id"),
        identity_key: keys.identity_key.clone().expect("identity"),
        signed_pre_key: keys.signed_pre_key.clone().expect("signed prekey"),
        pre_key: keys.pre_keys.first().cloned(),
        pq_pre_key: keys.pq_last_resort_pre_key.clone().expect("last resort"),
    }
}

async fn clients_never_encrypt_to_a_device_the_server_slips_in(backend: Backend) {
    let app = spawn(backend).await;
    let mut alice = register(&app, "alice").await;
    let (forged, keys) = forged_device(&app, "alice").await;
    let forged_id = forged.client.device_id().await.expect("device");
    let alice_id = alice.id;
    let forged_bundle = bundle_of(forged_id, &keys);
    // The server hands Bob the forged device's bundle with Alice's, and says a send that
    // leaves it out misses a device.
    let mut bob = tampered_engine(&app, "bob", move |method, path, answer| {
        if method == "GET" && path.starts_with(&format!("/api/v1/keys/{alice_id}")) && answer.status == 200 {
            let mut bundles: UserBundles = serde_json::from_slice(&answer.body).expect("bundles");
            bundles.devices.push(forged_bundle.clone());
            answer.body = serde_json::to_vec(&bundles).expect("json");
        }
        if method == "POST" && path == "/api/v1/messages" && answer.status == 200 {
            answer.status = 409;
            answer.body = serde_json::to_vec(&serde_json::json!({"error": {"code": "device_mismatch", "message": "stale",
                "details": {"recipient": {"missing_devices": [forged_id.0], "extra_devices": [], "stale_devices": []},
                            "own": {"missing_devices": [], "extra_devices": [], "stale_devices": []}}}}))
            .expect("json");
        }
    })
    .await;
    let now = copains_client_core::crypto::device::now_ms();
    let err = bob.send_dm(alice_id, "secret", now).await.expect_err("refused");
    assert!(matches!(err, MessagingError::DeviceList(_)), "{err:?}");
    let sent = bob.transport().sent_to.lock().expect("lock").clone();
    assert!(!sent.is_empty(), "envelopes went to Alice's listed device");
    assert!(sent.iter().all(|(u, d)| (*u, *d) != (alice_id, forged_id)), "never to the forged device: {sent:?}");
    // The honest server delivered the first attempt to Alice's real device only.
    assert_eq!(next_message(&mut alice.messenger).await.body, "secret");
    assert!(forged.queue().await.is_empty());
    alice.messenger.close().await;
    app.shutdown().await;
}

async fn a_replayed_or_forged_device_list_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let a1 = register(&app, "alice").await;
    let alice_id = a1.id;
    let replay: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Default::default();
    let flip_signature = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (replay2, flip2) = (replay.clone(), flip_signature.clone());
    let list_path = format!("/api/v1/users/{alice_id}/device-list");
    let mut bob = tampered_engine(&app, "bob", move |method, path, answer| {
        if method == "GET" && path == list_path && answer.status == 200 {
            if let Some(old) = replay2.lock().expect("lock").clone() {
                answer.body = old;
            }
            if flip2.load(Ordering::SeqCst) {
                let mut signed: SignedDeviceList = serde_json::from_slice(&answer.body).expect("list");
                signed.signature.0[10] ^= 1;
                answer.body = serde_json::to_vec(&signed).expect("json");
            }
        }
    })
    .await;
    let now = copains_client_core::crypto::device::now_ms;
    bob.send_dm(alice_id, "v1", now()).await.expect("send with version 1");
    let v1 = a1.client.raw(Method::GET, &format!("/api/v1/users/{alice_id}/device-list"), None).await.expect("list").body;
    // Alice links a second device: version 2, which Bob learns from the server's 409.
    let a2 = add_device(&app, "alice", 2, &a1).await;
    bob.send_dm(alice_id, "v2", now()).await.expect("send with version 2");
    // The server now serves version 1 again: Bob refuses it (and sends nothing).
    *replay.lock().expect("lock") = Some(v1);
    // Alice links a third device (version 3): Bob's next send learns of it and fetches the list.
    let a3 = add_device(&app, "alice", 3, &a1).await;
    let err = bob.send_dm(alice_id, "after the replay", now()).await.expect_err("refused");
    assert!(matches!(&err, MessagingError::DeviceList(m) if m.contains("older")), "{err:?}");
    // A list whose signature does not verify is refused too.
    *replay.lock().expect("lock") = None;
    flip_signature.store(true, Ordering::SeqCst);
    let err = bob.send_dm(alice_id, "forged signature", now()).await.expect_err("refused");
    assert!(matches!(err, MessagingError::Account(copains_client_core::crypto::account::AccountError::BadSignature)), "{err:?}");
    // Positive control: the genuine list is taken.
    flip_signature.store(false, Ordering::SeqCst);
    bob.send_dm(alice_id, "genuine", now()).await.expect("send");
    for p in [a1, a2, a3] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_wrong_link_code_opens_nothing_and_the_right_one_links(backend: Backend) {
    let app = spawn(backend).await;
    let a1 = register(&app, "alice").await;
    let mut a2 = sign_in(&app, "alice", 2).await;
    let code = a2.messenger.begin_link().await.expect("code");
    let wrong = if code.starts_with('1') { "2222-2222" } else { "1111-1111" };
    a1.messenger.approve_link(DeviceId(2), wrong).await.expect("answer sent");
    let failed = notice(&mut a2.messenger, |n| matches!(n, Incoming::LinkFailed { .. } | Incoming::Linked)).await;
    assert!(matches!(failed, Incoming::LinkFailed { .. }), "{failed:?}");
    assert_eq!(a2.messenger.link_state().await.expect("state"), LinkState::Pending);
    let err = a2.messenger.send_dm(a1.id, "hi").await.expect_err("a pending device cannot send");
    assert!(matches!(err, MessagingError::NotLinked), "{err:?}");
    // A new code, the right one: linked.
    let code = a2.messenger.begin_link().await.expect("code");
    a1.messenger.approve_link(DeviceId(2), &code).await.expect("approve");
    notice(&mut a2.messenger, |n| matches!(n, Incoming::Linked)).await;
    let devices = a1.messenger.own_devices().await.expect("devices");
    assert!(devices.iter().all(|d| d.linked), "{devices:?}");
    a1.messenger.close().await;
    a2.messenger.close().await;
    app.shutdown().await;
}

async fn the_recovery_key_links_a_device_after_every_old_one_is_gone(backend: Backend) {
    let app = spawn(backend).await;
    let a1 = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    let recovery = a1.messenger.unconfirmed_recovery_key().await.expect("state").expect("key");
    a1.messenger.send_dm(bob.id, "before").await.expect("send");
    assert_eq!(next_message(&mut bob.messenger).await.body, "before");
    // Alice's only device leaves (out of the list, signed out).
    a1.messenger.remove_device(DeviceId(1)).await.expect("leave");
    let mut a2 = sign_in(&app, "alice", 2).await;
    let err = a2.messenger.link_with_recovery_key("AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH").await.expect_err("wrong key");
    assert!(matches!(err, MessagingError::Account(_)), "{err:?}");
    a2.messenger.link_with_recovery_key(&recovery).await.expect("recovered");
    bob.messenger.send_dm(a2.id, "after").await.expect("send");
    assert_eq!(next_message(&mut a2.messenger).await.body, "after");
    let notices = drain_notices(&mut bob.messenger).await;
    assert!(!notices.iter().any(|n| matches!(n, Incoming::IdentityChanged { .. })), "same account: {notices:?}");
    a2.messenger.close().await;
    bob.messenger.close().await;
    app.shutdown().await;
}

async fn the_safety_number_is_the_same_on_every_device_of_both_users(backend: Backend) {
    let app = spawn(backend).await;
    let a1 = register(&app, "alice").await;
    let b1 = register(&app, "bob").await;
    let a2 = add_device(&app, "alice", 2, &a1).await;
    let b2 = add_device(&app, "bob", 2, &b1).await;
    let mut numbers = Vec::new();
    for (viewer, other) in [(&a1, b1.id), (&a2, b1.id), (&b1, a1.id), (&b2, a1.id)] {
        numbers.push(viewer.messenger.safety_number(other).await.expect("number").number);
    }
    assert!(numbers.iter().all(|n| n == &numbers[0] && n.len() == 60), "{numbers:?}");
    for p in [a1, a2, b1, b2] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}
