//! End-to-end encrypted channel messages through the real server with real clients: Sender
//! Keys handed over the pairwise sessions, one ciphertext per message for the whole channel,
//! edits, replies, threads and reactions inside it; a kicked member reads nothing sent after
//! the kick (the others' keys were replaced), a newcomer nothing from before joining, a new
//! linked device what comes after it, and a device the server slips in never gets a key.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, TestApp};
use copains_client_core::channel_messages::{ChannelMessage, ChannelRecipients, RecipientDevice, SendChannelMessage};
use copains_client_core::client::Client;
use copains_client_core::crypto::{E2eeDevice, MemoryBackend, Vault};
use copains_client_core::engine::{Answer, Engine, Transport};
use copains_client_core::keys::{DeviceBundle, UploadKeys, UserBundles};
use copains_client_core::messaging::{ChannelDraft, ChannelEntry, EntryState, HistoryQuery, Incoming, LinkState, Messenger};
use copains_client_core::servers::{ChannelKind, NewChannel, NewInvite};
use copains_client_core::{ChannelId, DeviceId, MessageId, ServerId, UserId};
use reqwest::Method;

backend_tests!(
    five_members_chat_in_three_channels_with_edits_replies_threads_and_reactions,
    a_kicked_member_reads_nothing_sent_after_the_kick,
    a_newcomer_reads_nothing_from_before_joining,
    a_second_device_reads_new_messages,
    a_device_the_server_slips_in_never_gets_a_sender_key,
    a_group_dm_member_who_is_removed_reads_nothing_more,
    a_key_distribution_that_does_not_decrypt_is_sent_again,
    a_first_message_to_many_devices_goes_in_batches,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.messages_per_minute = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
        c.api.rate_limits.bundle_fetches_per_minute = 1_000_000;
        c.api.rate_limits.bundle_fetches_burst = 1_000_000;
        c.api.rate_limits.queue_reads_per_minute = 1_000_000;
        c.api.rate_limits.queue_reads_burst = 1_000_000;
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

/// Another device of `name`, linked by `approver` with the code it shows.
async fn add_device(app: &TestApp, name: &str, n: u32, approver: &Person) -> Person {
    let client = app.client();
    let auth = client.login(name, "a-long-password", Some("another")).await.expect("login");
    let store = app.data_dir.path().join(format!("{name}-{n}.vault"));
    let mut messenger = client.enable_e2ee(store, "vault passphrase").await.expect("e2ee");
    assert_eq!(messenger.link_state().await.expect("state"), LinkState::Pending);
    let code = messenger.begin_link().await.expect("code");
    let device = client.device_id().await.expect("device");
    approver.messenger.approve_link(device, &code).await.expect("approve");
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), messenger.next()).await.expect("linked in time").expect("open");
        if matches!(n, Incoming::Linked) {
            break;
        }
    }
    Person { client, id: auth.user.id, messenger }
}

/// A server of `owner`'s with its `general` channel and `extra` more text channels, joined by
/// `members` with an invite. Returns the server and its text channels.
async fn community(owner: &Person, members: &[&Person], extra: &[&str]) -> (ServerId, Vec<ChannelId>) {
    let server = owner.client.create_server("les copains").await.expect("server");
    let state = owner.client.server_state(server.id).await.expect("state");
    let mut channels: Vec<ChannelId> = state.channels.iter().filter(|c| c.kind == ChannelKind::Text).map(|c| c.id).collect();
    for name in extra {
        let new = NewChannel {
            name: (*name).to_owned(),
            kind: ChannelKind::Text,
            parent_id: None,
            topic: None,
            position: None,
            overwrites: None,
            user_limit: None,
        };
        channels.push(owner.client.create_channel(server.id, &new).await.expect("channel").id);
    }
    let invite = owner.client.create_invite(server.id, &NewInvite::default()).await.expect("invite");
    for m in members {
        m.client.join(&invite.code).await.expect("join");
    }
    (server.id, channels)
}

fn say(body: &str) -> ChannelDraft {
    ChannelDraft { body: body.to_owned(), ..ChannelDraft::default() }
}

fn all() -> HistoryQuery {
    HistoryQuery { limit: Some(100), ..HistoryQuery::default() }
}

/// The channel's history as `m` reads it, once every entry in it is read (a message whose
/// key is still on its way is pending for a moment).
async fn read_all(m: &Messenger, channel: ChannelId, query: HistoryQuery) -> Vec<ChannelEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = m.channel_history(channel, query.clone()).await.expect("history");
        if entries.iter().all(|e| e.state == EntryState::Ok) {
            return entries;
        }
        assert!(tokio::time::Instant::now() < deadline, "entries still unread: {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bodies(entries: &[ChannelEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.body.as_str()).collect()
}

/// The stored message `id` of `channel`, as `reader` fetches it (ciphertext and all).
async fn stored(reader: &Client, channel: ChannelId, id: MessageId) -> ChannelMessage {
    let page = reader.channel_messages(channel, &format!("around={id}&limit=1")).await.expect("history");
    page.into_iter().find(|m| m.id == id).expect("stored message")
}

/// Fails if a channel entry for `id` reaches `m` within `wait`.
async fn never_delivered(m: &mut Messenger, id: MessageId, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(n)) = tokio::time::timeout_at(deadline, m.next()).await {
        if let Incoming::ChannelEntry(e) = n {
            assert_ne!(e.id, id, "the server delivered {e:?}");
        }
    }
}

async fn five_members_chat_in_three_channels_with_edits_replies_threads_and_reactions(backend: Backend) {
    let app = spawn(backend).await;
    let mut people = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        people.push(register(&app, name).await);
    }
    let members: Vec<&Person> = people[1..].iter().collect();
    let (_, channels) = community(&people[0], &members, &["random", "projets"]).await;
    assert_eq!(channels.len(), 3);

    // Everyone speaks in every channel, in turn.
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 3];
    let mut first_ids = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        for p in &people {
            let body = format!("{} says hello in channel {c}", p.client.user().await.expect("user").username);
            let entry = p.messenger.channel_send(*channel, say(&body)).await.expect("send");
            assert_eq!((entry.state, entry.body.as_str(), entry.author_id), (EntryState::Ok, body.as_str(), p.id));
            if p.id == people[0].id {
                first_ids.push(entry.id);
            }
            expected[c].push(body);
        }
    }
    // A live reader gets it as it comes.
    let live = people[0].messenger.channel_send(channels[0], say("live from alice")).await.expect("send");
    expected[0].push("live from alice".into());
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = people[4].messenger.next_channel_entry().await.expect("open");
            if e.id == live.id && e.state == EntryState::Ok {
                return e;
            }
        }
    })
    .await
    .expect("live entry");
    assert_eq!(got.body, "live from alice");

    // A reply, quoted inside the ciphertext.
    let reply = ChannelDraft { reply_to: Some(first_ids[1]), ..say("bob answers alice") };
    let reply = people[1].messenger.channel_send(channels[1], reply).await.expect("reply");
    expected[1].push("bob answers alice".into());
    let quoted = reply.reply_to.clone().expect("quote");
    assert_eq!(
        (quoted.id, quoted.author_id, quoted.excerpt.as_str()),
        (first_ids[1], people[0].id, "alice says hello in channel 1")
    );

    // A thread on Alice's first message of channel 2, named by its first message.
    let root = first_ids[2];
    let opening = ChannelDraft { thread_id: Some(root), thread_name: Some("Le planning".into()), ..say("carol opens a thread") };
    people[2].messenger.channel_send(channels[2], opening).await.expect("thread");
    let more = ChannelDraft { thread_id: Some(root), ..say("dave follows in the thread") };
    people[3].messenger.channel_send(channels[2], more).await.expect("thread");

    // An edit.
    let dave_msg = people[3].messenger.channel_send(channels[0], say("dave writes a tpyo")).await.expect("send");
    let edited = people[3].messenger.channel_edit(channels[0], dave_msg.id, "dave fixed the typo").await.expect("edit");
    assert!(edited.edited_at.is_some());
    assert_eq!(edited.body, "dave fixed the typo");
    expected[0].push("dave fixed the typo".into());

    // Reactions on Alice's first message of channel 0.
    let target = first_ids[0];
    people[4].messenger.channel_react(channels[0], target, "👍").await.expect("react");
    people[1].messenger.channel_react(channels[0], target, "👍").await.expect("react");
    people[2].messenger.channel_react(channels[0], target, "🎉").await.expect("react");
    people[1].messenger.channel_react(channels[0], target, "🎉").await.expect("react");
    let after = people[1].messenger.channel_unreact(channels[0], target, "🎉").await.expect("unreact");
    let party = after.reactions.iter().find(|r| r.emoji == "🎉").expect("🎉");
    assert_eq!((party.count, party.mine), (1, false), "{after:?}");

    // Everyone reads everything.
    for p in &people {
        for (c, channel) in channels.iter().enumerate() {
            let entries = read_all(&p.messenger, *channel, all()).await;
            assert_eq!(bodies(&entries), expected[c], "what {} reads in channel {c}", p.id);
        }
        let channel0 = read_all(&p.messenger, channels[0], all()).await;
        let reacted = channel0.iter().find(|e| e.id == target).expect("target");
        let thumbs = reacted.reactions.iter().find(|r| r.emoji == "👍").expect("👍");
        assert_eq!(thumbs.users.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([people[4].id, people[1].id]));
        assert_eq!(thumbs.mine, p.id == people[4].id || p.id == people[1].id);
        let party = reacted.reactions.iter().find(|r| r.emoji == "🎉").expect("🎉");
        assert_eq!(party.users, vec![people[2].id]);
        let fixed = channel0.iter().find(|e| e.id == dave_msg.id).expect("edited");
        assert!(fixed.edited_at.is_some());

        let channel1 = read_all(&p.messenger, channels[1], all()).await;
        let answer = channel1.iter().find(|e| e.id == reply.id).expect("reply");
        assert_eq!(answer.reply_to.as_ref().map(|q| q.excerpt.as_str()), Some("alice says hello in channel 1"));

        let thread = read_all(&p.messenger, channels[2], HistoryQuery { thread_id: Some(root), ..all() }).await;
        assert_eq!(bodies(&thread), ["carol opens a thread", "dave follows in the thread"]);
        assert_eq!(thread[0].thread_name.as_deref(), Some("Le planning"));
        let top = read_all(&p.messenger, channels[2], all()).await;
        assert_eq!(top.iter().find(|e| e.id == root).expect("root").thread_count, 2);
    }

    // A deleted message goes from every reader.
    people[3].messenger.channel_delete(channels[0], dave_msg.id).await.expect("delete");
    for p in &people {
        let entries = read_all(&p.messenger, channels[0], all()).await;
        assert!(entries.iter().all(|e| e.id != dave_msg.id));
    }
    for p in people {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_kicked_member_reads_nothing_sent_after_the_kick(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let mut carol = register(&app, "carol").await;
    let (server, channels) = community(&alice, &[&bob, &carol], &[]).await;
    let channel = channels[0];
    for p in [&alice, &bob, &carol] {
        p.messenger.channel_send(channel, say("before the kick")).await.expect("send");
    }
    for p in [&alice, &bob, &carol] {
        assert_eq!(read_all(&p.messenger, channel, all()).await.len(), 3);
    }
    let alice_key = alice.messenger.channel_distribution(channel).await.expect("key").expect("one");
    let bob_key = bob.messenger.channel_distribution(channel).await.expect("key").expect("one");

    alice.client.kick(server, carol.id).await.expect("kick");
    let from_bob = bob.messenger.channel_send(channel, say("carol is gone")).await.expect("send");
    let from_alice = alice.messenger.channel_send(channel, say("indeed")).await.expect("send");
    // Both replaced their key before sending.
    assert_ne!(bob.messenger.channel_distribution(channel).await.expect("key").expect("one"), bob_key);
    assert_ne!(alice.messenger.channel_distribution(channel).await.expect("key").expect("one"), alice_key);
    // The remaining members read on.
    for p in [&alice, &bob] {
        let entries = read_all(&p.messenger, channel, all()).await;
        assert_eq!(bodies(&entries[3..]), ["carol is gone", "indeed"]);
    }

    // The server no longer delivers to Carol: no event, no history.
    never_delivered(&mut carol.messenger, from_bob.id, Duration::from_secs(1)).await;
    let refused = carol.client.channel_messages(channel, "limit=50").await.expect_err("no history");
    assert_eq!(refused.status(), Some(reqwest::StatusCode::NOT_FOUND));
    // Handed the ciphertexts anyway, Carol's device cannot read them.
    for id in [from_bob.id, from_alice.id] {
        let m = stored(&alice.client, channel, id).await;
        assert_eq!(carol.messenger.try_decrypt_channel_message(m).await.expect("try"), None);
    }
    // (She read everything before the kick: `read_all` above.)
    for p in [alice, bob, carol] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_newcomer_reads_nothing_from_before_joining(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (server, channels) = community(&alice, &[&bob], &[]).await;
    let channel = channels[0];
    let early = alice.messenger.channel_send(channel, say("before dave came")).await.expect("send");
    bob.messenger.channel_send(channel, say("bob too, before")).await.expect("send");
    assert_eq!(read_all(&bob.messenger, channel, all()).await.len(), 2);

    let dave = register(&app, "dave").await;
    let invite = alice.client.create_invite(server, &NewInvite::default()).await.expect("invite");
    dave.client.join(&invite.code).await.expect("join");
    assert!(dave.messenger.channel_history(channel, all()).await.expect("history").is_empty(), "the server serves nothing older");
    let raw = dave.client.channel_messages(channel, "limit=100").await.expect("history");
    assert!(raw.is_empty(), "not even the ciphertexts");

    let welcome = alice.messenger.channel_send(channel, say("welcome dave")).await.expect("send");
    let entries = read_all(&dave.messenger, channel, all()).await;
    assert_eq!(bodies(&entries), ["welcome dave"]);
    assert_eq!(entries[0].id, welcome.id);
    // Dave now holds Alice's key, from where it stood: the earlier message, handed over
    // directly, still does not decrypt.
    let m = stored(&alice.client, channel, early.id).await;
    assert_eq!(dave.messenger.try_decrypt_channel_message(m).await.expect("try"), None);
    for p in [alice, bob, dave] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_second_device_reads_new_messages(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (_, channels) = community(&alice, &[&bob], &[]).await;
    let channel = channels[0];
    alice.messenger.channel_send(channel, say("one")).await.expect("send");
    bob.messenger.channel_send(channel, say("two")).await.expect("send");
    assert_eq!(bodies(&read_all(&bob.messenger, channel, all()).await), ["one", "two"]);

    let bob2 = add_device(&app, "bob", 2, &bob).await;
    let three = alice.messenger.channel_send(channel, say("three")).await.expect("send");
    let four = bob2.messenger.channel_send(channel, say("four, from bob's new device")).await.expect("send");
    let five = bob.messenger.channel_send(channel, say("five, from bob's first device")).await.expect("send");
    let new_ones = HistoryQuery { after: Some(three.id), ..all() };
    let seen = read_all(&bob2.messenger, channel, HistoryQuery { after: Some(MessageId(three.id.0 - 1)), ..all() }).await;
    assert_eq!(bodies(&seen), ["three", "four, from bob's new device", "five, from bob's first device"]);
    for p in [&alice, &bob] {
        let entries = read_all(&p.messenger, channel, new_ones.clone()).await;
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [four.id, five.id]);
        assert_eq!(entries[0].author_device, bob2.client.device_id().await.expect("device"));
    }
    for p in [alice, bob, bob2] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

/// A transport that passes requests to the real server, lets the test rewrite answers (as a
/// malicious server would), and records the distributions of every channel send.
type Rewrite = Box<dyn FnMut(&str, &str, &mut Answer) + Send>;

struct Tampering {
    client: Client,
    rewrite: std::sync::Mutex<Rewrite>,
    distributed_to: std::sync::Mutex<Vec<(UserId, DeviceId)>>,
}

#[async_trait::async_trait(?Send)]
impl Transport for Tampering {
    async fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, String> {
        if method == "POST" && path.starts_with("/api/v1/channels/") && path.ends_with("/messages") {
            let send: SendChannelMessage = serde_json::from_str(body.as_deref().unwrap_or("{}")).map_err(|e| e.to_string())?;
            self.distributed_to.lock().expect("lock").extend(send.distributions.iter().map(|d| (d.user_id, d.device_id)));
        }
        let mut answer = self.client.request(method, path, body).await?;
        (self.rewrite.lock().expect("lock"))(method, path, &mut answer);
        Ok(answer)
    }
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

async fn a_device_the_server_slips_in_never_gets_a_sender_key(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    // A device signed in with Alice's password alone: in no signed list.
    let forged_client = app.client();
    forged_client.login("alice", "a-long-password", Some("forged")).await.expect("login");
    let forged_id = forged_client.device_id().await.expect("device");
    let vault = Vault::open(Box::new(MemoryBackend::default()), "raw").await.expect("vault");
    let (_forged, keys) = E2eeDevice::open(vault, alice.id).await.expect("device");
    let keys = keys.expect("new device");
    forged_client.put_keys(&keys).await.expect("upload keys");
    let forged_bundle = bundle_of(forged_id, &keys);
    let forged =
        RecipientDevice { user_id: alice.id, device_id: forged_id, registration_id: bundle_of(forged_id, &keys).registration_id };
    let alice_id = alice.id;

    // Bob's server adds the forged device to the channel's recipients and to Alice's bundles.
    let bob_client = app.client();
    let auth = bob_client.register("bob", "a-long-password", Some("tampered")).await.expect("register");
    let session = bob_client.session_id().await.expect("session");
    let slip_in = move |method: &str, path: &str, answer: &mut Answer| {
        if method == "GET" && path.ends_with("/recipients") && answer.status == 200 {
            let mut r: ChannelRecipients = serde_json::from_slice(&answer.body).expect("recipients");
            r.devices.push(forged);
            r.devices.sort();
            answer.body = serde_json::to_vec(&r).expect("json");
        }
        if method == "GET" && path.starts_with(&format!("/api/v1/keys/{alice_id}")) && answer.status == 200 {
            let mut bundles: UserBundles = serde_json::from_slice(&answer.body).expect("bundles");
            bundles.devices.push(forged_bundle.clone());
            answer.body = serde_json::to_vec(&bundles).expect("json");
        }
    };
    let transport = Tampering {
        client: bob_client.clone(),
        rewrite: std::sync::Mutex::new(Box::new(slip_in)),
        distributed_to: Default::default(),
    };
    let now = copains_client_core::crypto::device::now_ms;
    let mut bob = Engine::open(transport, Box::new(MemoryBackend::default()), "p", auth.user.id, DeviceId(1), session, now())
        .await
        .expect("open");
    bob.start(now()).await.expect("start");

    let server = alice.client.create_server("les copains").await.expect("server");
    let state = alice.client.server_state(server.id).await.expect("state");
    let channel = state.channels.iter().find(|c| c.kind == ChannelKind::Text).expect("general").id;
    let invite = alice.client.create_invite(server.id, &NewInvite::default()).await.expect("invite");
    bob_client.join(&invite.code).await.expect("join");

    let sent = bob.channel_send(channel, say("for alice's real devices"), now()).await.expect("send");
    bob.channel_send(channel, say("and again"), now()).await.expect("send");
    let to = bob.transport().distributed_to.lock().expect("lock").clone();
    assert_eq!(to, vec![(alice.id, DeviceId(1))], "the key went to Alice's listed device only");
    let queued: copains_client_core::messages::Queue =
        forged_client.api(Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    assert!(queued.envelopes.is_empty(), "nothing reached the forged device");
    // Alice's real device reads it.
    let entries = read_all(&alice.messenger, channel, all()).await;
    assert_eq!(bodies(&entries), ["for alice's real devices", "and again"]);
    assert_eq!(entries[0].id, sent.id);
    alice.messenger.close().await;
    app.shutdown().await;
}

async fn a_group_dm_member_who_is_removed_reads_nothing_more(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let group = alice.client.create_group_dm(vec![bob.id, carol.id], Some("trio")).await.expect("group DM");
    for p in [&alice, &bob, &carol] {
        p.messenger.channel_send(group.id, say("hello trio")).await.expect("send");
    }
    for p in [&alice, &bob, &carol] {
        assert_eq!(bodies(&read_all(&p.messenger, group.id, all()).await), ["hello trio"; 3]);
    }
    let key = bob.messenger.channel_distribution(group.id).await.expect("key").expect("one");
    alice.client.remove_from_group_dm(group.id, carol.id).await.expect("remove");
    let after = bob.messenger.channel_send(group.id, say("just us two")).await.expect("send");
    assert_ne!(bob.messenger.channel_distribution(group.id).await.expect("key").expect("one"), key, "rotated");
    assert_eq!(bodies(&read_all(&alice.messenger, group.id, all()).await)[3], "just us two");
    let m = stored(&alice.client, group.id, after.id).await;
    assert_eq!(carol.messenger.try_decrypt_channel_message(m).await.expect("try"), None);
    for p in [alice, bob, carol] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

async fn a_key_distribution_that_does_not_decrypt_is_sent_again(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (_, channels) = community(&alice, &[&bob], &[]).await;
    let channel = channels[0];
    // Alice's key reaches Bob (their pairwise session starts), then Alice's copy of the
    // session breaks: Bob's key, when it comes over it, does not decrypt.
    alice.messenger.channel_send(channel, say("hello bob")).await.expect("send");
    assert_eq!(bodies(&read_all(&bob.messenger, channel, all()).await), ["hello bob"]);
    alice.messenger.corrupt_session(bob.id, DeviceId(1)).await.expect("corrupt");
    let sent = bob.messenger.channel_send(channel, say("can you read me?")).await.expect("send");
    // Alice asks for it again; Bob's device answers from its log, over a fresh session, and
    // the message that waited for the key is read.
    let entries = read_all(&alice.messenger, channel, all()).await;
    assert_eq!(bodies(&entries), ["hello bob", "can you read me?"]);
    assert_eq!(entries[1].id, sent.id);
    for p in [alice, bob] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}

/// The count of a route's answers with `status` in the server's metrics.
async fn answered(app: &TestApp, method: &str, route: &str, status: u16) -> u64 {
    let metrics = reqwest::get(app.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let line = format!(r#"copains_http_requests_total{{method="{method}",route="{route}",status="{status}"}} "#);
    metrics.lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |n| n.trim().parse().expect("count"))
}

async fn a_first_message_to_many_devices_goes_in_batches(backend: Backend) {
    // The per-user bundle fetches are held to two: sessions with a channel's devices are
    // made from bundles claimed through the channel, many per request.
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.messages_per_minute = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
        c.api.rate_limits.queue_reads_per_minute = 1_000_000;
        c.api.rate_limits.queue_reads_burst = 1_000_000;
        c.api.rate_limits.bundle_fetches_per_minute = 1;
        c.api.rate_limits.bundle_fetches_burst = 2;
    })
    .await;
    let mut people = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        people.push(register(&app, name).await);
    }
    let (alice, others) = people.split_first().expect("people");
    let members: Vec<&Person> = others.iter().collect();
    let (_, channels) = community(alice, &members, &[]).await;
    let general = channels[0];
    // A first distribution (a PQXDH PreKey message) is about 2 KB: one per request, as in a
    // channel of hundreds of devices with the real budget.
    alice.messenger.set_distribution_bytes_per_request(2500).await.expect("budget");
    let first = alice.messenger.channel_say(general, "hello all").await.expect("first message");
    assert_eq!(answered(&app, "POST", "/api/v1/channels/{channel_id}/sender-keys", 200).await, 4, "four went first");
    assert!(answered(&app, "POST", "/api/v1/channels/{channel_id}/bundles", 200).await >= 1);
    assert!(answered(&app, "POST", "/api/v1/channels/{channel_id}/device-lists", 200).await >= 1);
    let second = alice.messenger.channel_say(general, "and again").await.expect("second message");
    assert_eq!(answered(&app, "POST", "/api/v1/channels/{channel_id}/sender-keys", 200).await, 4, "nothing more to hand out");
    for p in others.iter() {
        let entries = read_all(&p.messenger, general, all()).await;
        let ids: Vec<MessageId> = entries.iter().map(|e| e.id).collect();
        assert!(ids.contains(&first.id) && ids.contains(&second.id), "{entries:?}");
        assert_eq!(bodies(&entries)[..2], ["hello all", "and again"]);
    }
    app.shutdown().await;
}
