//! The server never sees content: after a conversation, neither the database (every file of
//! it, or every row of every table on PostgreSQL) nor the server's log holds any of the
//! plaintexts that were sent: direct messages, channel message bodies, reply quotes, thread
//! names and reaction emoji. Nor do they hold the credentials that went through: passwords,
//! access tokens and refresh tokens.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Backend;
use copains_client_core::messaging::{ChannelDraft, EntryState, HistoryQuery};
use copains_client_core::servers::{ChannelKind, NewInvite};
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_copains");

backend_tests!(database_and_logs_hold_no_plaintext);

async fn database_and_logs_hold_no_plaintext(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("COPAINS_") {
            cmd.env_remove(key);
        }
    }
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let admin = std::env::var("COPAINS_TEST_DATABASE_URL").expect("url");
            let name = format!("copains_t_{:016x}", rand::random::<u64>());
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create");
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).expect("url with a database");
            cmd.env("COPAINS_DATABASE_URL", format!("{base}/{name}"));
            let url = format!("{base}/{name}");
            Some((admin, name, url))
        }
    };
    let mut child = cmd
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        // The SFU on a free port too: tests run side by side.
        .env("COPAINS_GATEWAY__VOICE__UDP_BIND", "127.0.0.1:0")
        .arg(&data)
        // As verbose as it gets: even debug logs must not carry content.
        .env("COPAINS_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    // Only the readers send from now on: the channel ends when the server's output does.
    drop(tx);
    let mut log = Vec::new();
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("server starts");
        log.push(line.clone());
        if let Some(rest) = line.strip_prefix("LesCopains is running on http://") {
            break rest.trim().to_owned();
        }
    };
    let base = format!("http://{addr}");
    let secrets: Vec<String> = (0..20).map(|i| format!("SECRET-PLAINTEXT-{i:02}-{:x}", rand::random::<u64>())).collect();
    let channel_secrets: Vec<String> =
        (0..6).map(|i| format!("SECRET-CHANNEL-BODY-{i:02}-{:x}", rand::random::<u64>())).collect();
    let thread_name = format!("SECRET-THREAD-{:x}", rand::random::<u64>());
    let emoji = format!("SECRET-EMOJI-{:x}", rand::random::<u64>());
    let password = format!("password-{:x}", rand::random::<u64>());
    let mut credentials = vec![password.clone()];
    {
        let alice = copains_client_core::client::Client::new(&base);
        let a = alice.register("alice", &password, None).await.expect("register");
        let bob = copains_client_core::client::Client::new(&base);
        let b = bob.register("bob", &password, None).await.expect("register");
        let mut am = alice.enable_e2ee(dir.path().join("alice.vault"), "pass").await.expect("e2ee");
        let mut bm = bob.enable_e2ee(dir.path().join("bob.vault"), "pass").await.expect("e2ee");
        for (i, s) in secrets.iter().enumerate() {
            if i % 2 == 0 {
                am.send_dm(b.user.id, s).await.expect("send");
                assert_eq!(&bm.next_message().await.expect("message").body, s);
            } else {
                bm.send_dm(a.user.id, s).await.expect("send");
                assert_eq!(&am.next_message().await.expect("message").body, s);
            }
        }
        // A server channel: message bodies, a reply quoting one, a thread name and a reaction's
        // emoji, all inside the sender-key ciphertexts.
        let server = alice.create_server("plaintext check").await.expect("server");
        let state = alice.server_state(server.id).await.expect("state");
        let channel = state.channels.iter().find(|c| c.kind == ChannelKind::Text).expect("text channel").id;
        let invite = alice.create_invite(server.id, &NewInvite::default()).await.expect("invite");
        bob.join(&invite.code).await.expect("join");
        let mut first = None;
        for (i, s) in channel_secrets[..4].iter().enumerate() {
            let draft = ChannelDraft { body: s.clone(), ..ChannelDraft::default() };
            let entry = if i % 2 == 0 { am.channel_send(channel, draft).await } else { bm.channel_send(channel, draft).await };
            first.get_or_insert(entry.expect("channel send").id);
        }
        let first = first.expect("a message");
        // Bob answers and reacts once his device has read Alice's messages (their key comes over
        // the gateway).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !bm
            .channel_history(channel, HistoryQuery::default())
            .await
            .expect("history")
            .iter()
            .all(|e| e.state == EntryState::Ok)
        {
            assert!(tokio::time::Instant::now() < deadline, "Bob did not read the channel");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let reply = ChannelDraft { body: channel_secrets[4].clone(), reply_to: Some(first), ..ChannelDraft::default() };
        bm.channel_send(channel, reply).await.expect("reply");
        let thread = ChannelDraft {
            body: channel_secrets[5].clone(),
            thread_id: Some(first),
            thread_name: Some(thread_name.clone()),
            ..ChannelDraft::default()
        };
        am.channel_send(channel, thread).await.expect("thread");
        bm.channel_react(channel, first, &emoji).await.expect("react");
        // Alice's device reads them all (so they are real messages, not something unreadable).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let top = am.channel_history(channel, HistoryQuery::default()).await.expect("history");
            let in_thread = am
                .channel_history(channel, HistoryQuery { thread_id: Some(first), ..HistoryQuery::default() })
                .await
                .expect("thread");
            let ok = top.iter().chain(&in_thread).all(|e| e.state == EntryState::Ok);
            if ok && top.len() == 5 && in_thread.len() == 1 {
                assert_eq!(top[0].reactions.first().map(|r| r.emoji.as_str()), Some(emoji.as_str()));
                assert!(top[4].reply_to.as_ref().is_some_and(|q| q.excerpt == channel_secrets[0]));
                assert_eq!(in_thread[0].thread_name.as_deref(), Some(thread_name.as_str()));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "channel messages unread: {top:?} {in_thread:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Leave some envelopes queued (Bob offline), so ciphertext sits in the database.
        bm.close().await;
        for s in &secrets[..5] {
            am.send_dm(b.user.id, s).await.expect("send");
        }
        am.close().await;
        for client in [&alice, &bob] {
            credentials.push(client.access_token().await.expect("access token"));
            credentials.push(client.refresh_token().await.expect("refresh token"));
        }
        credentials.extend([a.tokens.access_token, a.tokens.refresh_token, b.tokens.access_token, b.tokens.refresh_token]);
        credentials.sort();
        credentials.dedup();
    }

    // What the database holds: the files themselves, or every row of every table.
    let mut haystack: Vec<u8> = Vec::new();
    match &pg {
        None => {
            for entry in std::fs::read_dir(&data).expect("data dir") {
                let path = entry.expect("entry").path();
                haystack.extend(std::fs::read(&path).expect("read"));
            }
        }
        Some((_, _, url)) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await
                .expect("tables");
            assert!(tables.contains(&"envelopes".to_owned()));
            for t in tables {
                let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {t} t"))
                    .fetch_all(&mut conn)
                    .await
                    .expect("rows");
                for r in rows {
                    haystack.extend(r.into_bytes());
                }
            }
            let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes").fetch_one(&mut conn).await.expect("count");
            assert_eq!(queued, 5, "ciphertext is in the database");
        }
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let _ = child.wait();
    // Everything the server wrote, to its last line: the readers stop at the end of its output.
    log.extend(rx.iter());
    let log = log.join("\n");
    assert!(haystack.windows(5).any(|w| w == b"alice"), "the scan reads the real data (usernames are stored in the clear)");
    assert!(log.contains("POST") || log.contains("messages"), "the debug log did record the traffic");
    let everything: Vec<&String> = secrets.iter().chain(&channel_secrets).chain([&thread_name, &emoji]).collect();
    for s in everything {
        let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!haystack.windows(s.len()).any(|w| w == s.as_bytes()), "plaintext {s} found in the database");
        assert!(!haystack.windows(hex.len()).any(|w| w == hex.as_bytes()), "plaintext {s} found hex-encoded in the database");
        assert!(!log.contains(s.as_str()), "plaintext {s} found in the server log");
        assert!(!log.contains(&s[..16]), "a piece of plaintext found in the server log");
    }
    assert!(log.contains("stopped"), "the log was read to its last line, written after SIGTERM");
    for c in &credentials {
        assert!(!haystack.windows(c.len()).any(|w| w == c.as_bytes()), "a password or token found in the database");
        assert!(!log.contains(c.as_str()), "a password or token found in the server log");
    }
    if let Some((admin, name, _)) = pg {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
}
