//! Private search through the real server with real clients: what a device decrypted (DMs,
//! channel messages, edits, deletions) is found by its words and by the filters `from`, `in`,
//! `has`, `before` and `after`, from the device's own encrypted store, which holds no word
//! of it in the clear, and which finds the same after a restart.

mod common;

use std::time::Duration;

use common::{Backend, TestApp};
use copains_client_core::client::Client;
use copains_client_core::messaging::{
    ChannelDraft, ChannelEntry, EntryState, Has, HistoryQuery, HitPlace, Incoming, Messenger, SearchQuery, SearchResults,
};
use copains_client_core::servers::{ChannelKind, NewInvite};
use copains_client_core::{ChannelId, UserId};

backend_tests!(decrypted_history_is_found_by_words_and_filters_and_stored_sealed);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.messages_per_minute = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
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
    let messenger = client.enable_e2ee(app.data_dir.path().join(format!("{name}.vault")), "passphrase").await.expect("e2ee");
    Person { client, id: auth.user.id, messenger }
}

fn say(body: &str) -> ChannelDraft {
    ChannelDraft { body: body.to_owned(), ..ChannelDraft::default() }
}

/// Reads the whole channel as `m`, once every message in it could be read.
async fn read_channel(m: &Messenger, channel: ChannelId) -> Vec<ChannelEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let query = HistoryQuery { limit: Some(100), ..HistoryQuery::default() };
        let entries = m.channel_history(channel, query).await.expect("history");
        if entries.iter().all(|e| e.state == EntryState::Ok) {
            return entries;
        }
        assert!(tokio::time::Instant::now() < deadline, "entries still unread: {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bytes of the store's files (the database and its journal). The store closes as the
/// messenger's thread ends: a journal file may go meanwhile, and is then read in the database.
async fn store_files(app: &TestApp, name: &str) -> Vec<u8> {
    'again: for _ in 0..50 {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(app.data_dir.path()).expect("data dir") {
            let path = entry.expect("entry").path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(name)) {
                match std::fs::read(&path) {
                    Ok(bytes) => stored.extend(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'again;
                    }
                    Err(e) => panic!("{path:?}: {e}"),
                }
            }
        }
        return stored;
    }
    panic!("the store's files kept changing")
}

async fn find(m: &Messenger, query: SearchQuery) -> SearchResults {
    m.search(query).await.expect("search")
}

fn text(words: &str) -> SearchQuery {
    SearchQuery { text: words.to_owned(), ..SearchQuery::default() }
}

fn bodies(results: &SearchResults) -> Vec<&str> {
    results.hits.iter().map(|h| h.body.as_str()).collect()
}

async fn decrypted_history_is_found_by_words_and_filters_and_stored_sealed(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let mut bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let server = alice.client.create_server("les copains").await.expect("server");
    let state = alice.client.server_state(server.id).await.expect("state");
    let general = state.channels.iter().find(|c| c.kind == ChannelKind::Text).expect("general").id;
    let random = alice
        .client
        .create_channel(
            server.id,
            &copains_client_core::servers::NewChannel {
                name: "random".into(),
                kind: ChannelKind::Text,
                parent_id: None,
                topic: None,
                position: None,
                overwrites: None,
                user_limit: None,
            },
        )
        .await
        .expect("channel")
        .id;
    let invite = alice.client.create_invite(server.id, &NewInvite::default()).await.expect("invite");
    for p in [&bob, &carol] {
        p.client.join(&invite.code).await.expect("join");
    }

    let plan = alice.messenger.channel_send(general, say("Picnic at the lake on Saturday")).await.expect("send");
    let link = carol
        .messenger
        .channel_send(general, say("I'll bring the Pétanque set: https://boules.example/set"))
        .await
        .expect("send");
    let ask = bob.messenger.channel_send(random, say("Who has the picnic blanket?")).await.expect("send");
    let draft = ChannelDraft { reply_to: Some(ask.id), ..say(&format!("<@{}> I have the blanket", bob.id)) };
    let answer = alice.messenger.channel_send(random, draft).await.expect("send");
    alice.messenger.send_dm(bob.id, "Secret: the surprise cake is lemon").await.expect("dm");
    let got = tokio::time::timeout(Duration::from_secs(20), bob.messenger.next_message()).await.expect("in time").expect("dm");
    assert_eq!(got.body, "Secret: the surprise cake is lemon");
    bob.messenger.send_dm(alice.id, "Lemon is perfect").await.expect("dm");
    read_channel(&bob.messenger, general).await;
    read_channel(&bob.messenger, random).await;

    // By words: whole words anywhere, accents folded, the last word as a beginning too.
    let picnic = find(&bob.messenger, text("picnic")).await;
    assert_eq!(bodies(&picnic), ["Who has the picnic blanket?", "Picnic at the lake on Saturday"], "newest first");
    assert_eq!(picnic.total, 2);
    assert!(
        matches!(picnic.hits[1].place, HitPlace::Channel { channel_id, message_id, .. } if channel_id == general && message_id == plan.id)
    );
    assert_eq!(picnic.hits[1].author_id, alice.id);
    assert_eq!(bodies(&find(&bob.messenger, text("PETANQUE")).await), [link.body.as_str()]);
    let lemon = find(&bob.messenger, text("lem")).await;
    assert_eq!(bodies(&lemon), ["Lemon is perfect", "Secret: the surprise cake is lemon"]);
    assert!(lemon.hits.iter().all(|h| matches!(h.place, HitPlace::Dm { user_id, .. } if user_id == alice.id)));
    assert_eq!(bodies(&find(&bob.messenger, text("lake saturday")).await), [plan.body.as_str()]);
    assert!(find(&bob.messenger, text("volleyball")).await.hits.is_empty());

    // By filters, alone or with words.
    let from_alice = SearchQuery { from: vec![alice.id], ..SearchQuery::default() };
    assert_eq!(
        bodies(&find(&bob.messenger, from_alice.clone()).await),
        [got.body.as_str(), answer.body.as_str(), plan.body.as_str()]
    );
    let in_random = SearchQuery { dms: Some(vec![]), channels: Some(vec![random]), ..text("blanket") };
    assert_eq!(bodies(&find(&bob.messenger, in_random).await), [answer.body.as_str(), ask.body.as_str()]);
    let in_dm = SearchQuery { dms: Some(vec![alice.id]), channels: Some(vec![]), ..SearchQuery::default() };
    assert_eq!(find(&bob.messenger, in_dm).await.total, 2);
    let links = SearchQuery { has: vec![Has::Link], ..SearchQuery::default() };
    assert_eq!(bodies(&find(&bob.messenger, links).await), [link.body.as_str()]);
    let mentions = SearchQuery { has: vec![Has::Mention, Has::Reply], ..SearchQuery::default() };
    assert_eq!(bodies(&find(&bob.messenger, mentions).await), [answer.body.as_str()]);
    let window = SearchQuery { after: Some(link.created_at), before: Some(answer.created_at), ..SearchQuery::default() };
    assert_eq!(bodies(&find(&bob.messenger, window).await), [ask.body.as_str(), link.body.as_str()]);
    let paged = find(&bob.messenger, SearchQuery { offset: 1, limit: Some(1), ..from_alice }).await;
    assert_eq!((paged.total, bodies(&paged)), (3, vec![answer.body.as_str()]));

    // An edit replaces what is found; a deletion removes it.
    alice.messenger.channel_edit(general, plan.id, "Barbecue at the lake on Sunday").await.expect("edit");
    carol.messenger.channel_delete(general, link.id).await.expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (mut edited, mut deleted) = (false, false);
    while !(edited && deleted) {
        match tokio::time::timeout_at(deadline, bob.messenger.next()).await.expect("edit and deletion in time").expect("open") {
            Incoming::ChannelEntry(e) if e.id == plan.id && e.edited_at.is_some() => edited = true,
            Incoming::ChannelMessageDeleted { id, .. } if id == link.id => deleted = true,
            _ => {}
        }
    }
    assert_eq!(bodies(&find(&bob.messenger, text("picnic")).await), [ask.body.as_str()]);
    assert_eq!(bodies(&find(&bob.messenger, text("barbecue")).await), ["Barbecue at the lake on Sunday"]);
    assert!(find(&bob.messenger, text("petanque")).await.hits.is_empty());
    assert_eq!(find(&bob.messenger, SearchQuery::default()).await.total, 5, "every current message, once");

    // The store holds no word in the clear, and finds the same after a restart.
    bob.messenger.close().await;
    let stored = store_files(&app, "bob.vault").await;
    assert!(stored.len() > 10_000, "the store was read ({} bytes)", stored.len());
    for word in ["picnic", "Picnic", "barbecue", "Barbecue", "lemon", "blanket", "petanque", "boules"] {
        assert!(!stored.windows(word.len()).any(|w| w == word.as_bytes()), "the store shows {word:?}");
    }
    // Meanwhile, while Bob is away: a message, and a reply in a thread.
    let news = alice.messenger.channel_send(random, say("Offline news: the regatta moved")).await.expect("send");
    let draft = ChannelDraft { thread_id: Some(plan.id), thread_name: Some("Logistics".into()), ..say("Tent for the regatta") };
    let reply = carol.messenger.channel_send(general, draft).await.expect("send");

    bob.messenger = bob.client.enable_e2ee(app.data_dir.path().join("bob.vault"), "passphrase").await.expect("reopen");
    assert_eq!(bodies(&find(&bob.messenger, text("barbecue sunday")).await), ["Barbecue at the lake on Sunday"]);
    assert_eq!(find(&bob.messenger, text("lemon")).await.total, 2);

    // What came while away is found once the history is read for search, threads included.
    assert!(find(&bob.messenger, text("regatta")).await.hits.is_empty(), "not read yet");
    for channel in [general, random] {
        let mut pages = 0;
        while !bob.messenger.search_crawl(channel, pages == 0).await.expect("crawl") {
            pages += 1;
            assert!(pages < 10, "the crawl of {channel} ends");
        }
    }
    let regatta = find(&bob.messenger, text("regatta")).await;
    assert_eq!(bodies(&regatta), [reply.body.as_str(), news.body.as_str()]);
    assert!(matches!(regatta.hits[0].place, HitPlace::Channel { thread_id: Some(t), .. } if t == plan.id));
    assert_eq!(bodies(&find(&bob.messenger, text("logistics")).await), [reply.body.as_str()], "a thread's name");
    assert_eq!(find(&bob.messenger, SearchQuery::default()).await.total, 7, "nothing read twice");

    for p in [alice, bob, carol] {
        p.messenger.close().await;
    }
    app.shutdown().await;
}
