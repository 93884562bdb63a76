//! What Sender Keys cost the clients, through the real server with real end-to-end encryption:
//! a device's first message into a big channel (the members' signed device lists, their
//! bundles, a PQXDH session and a key distribution for every member device, then the message),
//! and the key rotation after a kick.

use std::time::{Duration, Instant};

use anyhow::Context;
use copains_client_core::client::Client;
use copains_client_core::messaging::{ChannelEntry, EntryState, Messenger};
use copains_client_core::MessageId;
use futures_util::StreamExt;

use crate::channels::{gather, register};
use crate::unique_name;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map(|d| ms(*d)).unwrap_or(f64::NAN)
}

/// Opens the encrypted store of each client (new keys, uploaded; a signed device list), 8 at
/// a time.
async fn enable(clients: &[Client], dir: &std::path::Path, tag: &str) -> anyhow::Result<Vec<Messenger>> {
    let mut out: Vec<(usize, Messenger)> = futures_util::stream::iter(clients.iter().enumerate().map(|(i, c)| {
        let path = dir.join(format!("{tag}{i}.vault"));
        async move { anyhow::Ok((i, c.enable_e2ee(path, "bench").await?)) }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<anyhow::Result<_>>()?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

/// Waits until `reader` has message `id` decrypted.
async fn read_by(reader: &mut Messenger, id: MessageId, body: &str) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entry: ChannelEntry = tokio::time::timeout_at(deadline, reader.next_channel_entry())
            .await
            .context("the reader never decrypted the message")?
            .context("reader closed")?;
        if entry.id == id && entry.state == EntryState::Ok {
            anyhow::ensure!(entry.body == body, "the reader decrypted another text");
            return Ok(Instant::now());
        }
    }
}

/// First message of a device into a channel of `members`: each round a new member joins, opens
/// a new device and sends; timed from the call to the server's answer, and to a member reading
/// it.
pub async fn first_message(url: &str, members: usize, rounds: usize) -> anyhow::Result<()> {
    anyhow::ensure!(members >= 2 && rounds >= 1, "--members must be at least 2 and --rounds at least 1");
    let dir = std::env::temp_dir().join(unique_name("copains-keys"));
    std::fs::create_dir_all(&dir)?;
    let prefix = unique_name("key");
    eprintln!("registering {members} members and opening their encrypted stores…");
    let clients = register(url, members, &prefix).await?;
    let community = gather(clients, "first message").await?;
    let mut messengers = enable(&community.clients, &dir, "m").await?;
    // One member reads; the others' devices only need their keys on the server.
    let mut reader = messengers.remove(1);
    for m in messengers {
        m.close().await;
    }
    let newcomers = register(url, rounds, &format!("{prefix}new")).await?;
    let (mut sent, mut read) = (Vec::new(), Vec::new());
    for (i, c) in newcomers.iter().enumerate() {
        c.join(&community.invite).await.context("join")?;
        let m = c.enable_e2ee(dir.join(format!("new{i}.vault")), "bench").await?;
        let body = format!("hello from newcomer {i}");
        let t0 = Instant::now();
        let entry = m.channel_say(community.channel, &body).await.context("first send")?;
        sent.push(t0.elapsed());
        let at = read_by(&mut reader, entry.id, &body).await?;
        read.push(at.duration_since(t0));
        m.close().await;
        eprintln!("  round {}: sent in {:.0} ms, read in {:.0} ms", i + 1, ms(sent[i]), ms(read[i]));
    }
    reader.close().await;
    println!(
        "first message of a new device into a channel of {} member devices (lists, bundles, PQXDH and a distribution for each), {rounds} rounds: send answered median {:.0} ms (max {:.0}); read by a member median {:.0} ms",
        members,
        median(sent.clone()),
        sent.iter().max().map(|d| ms(*d)).unwrap_or(f64::NAN),
        median(read),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Rotation after a kick in a channel of `members`: a member has sent (every session made);
/// each round the owner kicks someone and the member sends again, on a new key for the others.
/// Timed from the send call (the kick answered) to the answer, and to a member reading it; the
/// same for a send with no one gone, for comparison.
pub async fn rotation(url: &str, members: usize, rounds: usize) -> anyhow::Result<()> {
    anyhow::ensure!(members >= rounds + 3, "--members must be at least --rounds + 3");
    let dir = std::env::temp_dir().join(unique_name("copains-rot"));
    std::fs::create_dir_all(&dir)?;
    let prefix = unique_name("rot");
    eprintln!("registering {members} members and opening their encrypted stores…");
    let clients = register(url, members, &prefix).await?;
    let community = gather(clients, "rotation").await?;
    let mut messengers = enable(&community.clients, &dir, "m").await?;
    let mut reader = messengers.remove(2);
    let sender = messengers.remove(1);
    let owner = &community.clients[0];
    let kicked: Vec<_> = community.clients[3..3 + rounds].iter().map(|c| async move { c.user().await }).collect();
    let mut kicked_ids = Vec::new();
    for k in kicked {
        kicked_ids.push(k.await.context("member")?.id);
    }
    for m in messengers {
        m.close().await;
    }
    // Every session made, the key handed to everyone.
    let entry = sender.channel_say(community.channel, "warm-up").await?;
    read_by(&mut reader, entry.id, "warm-up").await?;
    let (mut steady, mut steady_read, mut rotated, mut rotated_read) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, user) in kicked_ids.iter().enumerate() {
        let body = format!("steady {i}");
        let t0 = Instant::now();
        let e = sender.channel_say(community.channel, &body).await?;
        steady.push(t0.elapsed());
        steady_read.push(read_by(&mut reader, e.id, &body).await?.duration_since(t0));

        owner.kick(community.server, *user).await.context("kick")?;
        let body = format!("after kick {i}");
        let t0 = Instant::now();
        let e = sender.channel_say(community.channel, &body).await?;
        rotated.push(t0.elapsed());
        rotated_read.push(read_by(&mut reader, e.id, &body).await?.duration_since(t0));
        eprintln!("  round {}: steady {:.0} ms, after the kick {:.0} ms", i + 1, ms(steady[i]), ms(rotated[i]));
    }
    sender.close().await;
    reader.close().await;
    println!(
        "rotation after a kick in a channel of {members} members ({rounds} kicks): send on a new key answered median {:.1} ms, read by a member median {:.1} ms; a send with no one gone: {:.1} ms, read {:.1} ms",
        median(rotated),
        median(rotated_read),
        median(steady),
        median(steady_read),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
