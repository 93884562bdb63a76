//! Device linking: time from the code entered on a linked device to the first message readable
//! on the new device, and the cost a contact pays to verify a signed list of 10 devices.

use std::time::{Duration, Instant};

use anyhow::Context;
use copains_client_core::client::Client;
use copains_client_core::crypto::account::{verify_list, AccountKey};
use copains_client_core::devices::{DeviceList, ListedDevice};
use copains_client_core::messaging::Incoming;
use copains_client_core::{DeviceId, UserId};

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

pub async fn run(url: &str, rounds: usize) -> anyhow::Result<()> {
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    // Verifying a list of 10 devices (signature + decoding), as a contact does on each fetch.
    let account = AccountKey::generate();
    let list = DeviceList {
        user: UserId(42),
        version: 3,
        devices: (1..=10).map(|d| ListedDevice { device_id: DeviceId(d), identity_key: account.public() }).collect(),
    };
    let signed = account.sign(&list);
    let mut verify = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        let checked = verify_list(&signed, UserId(42))?;
        verify.push(t.elapsed());
        anyhow::ensure!(checked.devices.len() == 10);
    }
    println!("verify a signed list of 10 devices ({} bytes): median {:.3} ms", signed.list.0.len(), median_ms(verify));

    let dir = std::env::temp_dir().join(format!("copains-bench-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("ln{:x}", std::process::id());
    let mut link = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let (alice, bob) = (Client::new(url), Client::new(url));
        let name = format!("{prefix}a{i}");
        alice.register(&name, "benchmark-password", Some("first")).await?;
        bob.register(&format!("{prefix}b{i}"), "benchmark-password", Some("bench")).await?;
        let a1 = alice.enable_e2ee(dir.join(format!("a{i}-1.vault")), "bench").await?;
        let bm = bob.enable_e2ee(dir.join(format!("b{i}.vault")), "bench").await?;
        let second = Client::new(url);
        let alice_id = second.login(&name, "benchmark-password", Some("second")).await?.user.id;
        let mut a2 = second.enable_e2ee(dir.join(format!("a{i}-2.vault")), "bench").await?;
        let code = a2.begin_link().await?;
        let device = second.device_id().await.context("device")?;
        // Code entered on the linked device → the new device reads a message sent to Alice.
        let t = Instant::now();
        a1.approve_link(device, &code).await?;
        loop {
            if let Incoming::Linked = a2.next().await.context("messenger open")? {
                break;
            }
        }
        bm.send_dm(alice_id, "welcome").await?;
        let got = a2.next_message().await.context("message")?;
        link.push(t.elapsed());
        anyhow::ensure!(got.body == "welcome");
        for m in [a1, a2, bm] {
            m.close().await;
        }
    }
    println!("link a device (code entered → first message readable), {rounds} rounds: median {:.1} ms", median_ms(link));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
