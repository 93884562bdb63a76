//! A HEARTBEAT's sequence number acknowledges the events up to it: the server lets them go
//! from the session's replay buffer (so a connected member costs about one heartbeat interval
//! of events, not the buffer's cap), and a RESUME still replays everything after it.

mod common;

use std::time::Duration;

use common::ws::{recv_json, send, Ws};
use common::{Backend, TestApp};
use copains_client_core::api::{Patch, UpdateProfile};
use copains_client_core::gateway::{event_name, op};
use serde_json::json;

backend_tests!(acknowledged_events_leave_the_replay_buffer_and_later_ones_are_replayed);

async fn connect(app: &TestApp) -> Ws {
    let mut ws = tokio_tungstenite::connect_async(app.ws_url.as_str()).await.expect("connect").0;
    assert_eq!(recv_json(&mut ws).await["op"], op::HELLO);
    ws
}

async fn acknowledged_events_leave_the_replay_buffer_and_later_ones_are_replayed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let auth = app.client().register("hazel", "password-hazel", None).await.expect("register");
    let token = auth.tokens.access_token;
    let other_device = app.client();
    other_device.login("hazel", "password-hazel", None).await.expect("login");

    let mut ws = connect(&app).await;
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    let ready = recv_json(&mut ws).await;
    assert_eq!(ready["t"], event_name::READY);
    let session_id = ready["d"]["session_id"].as_str().expect("session id").to_owned();
    for i in 0..5 {
        let change = UpdateProfile { display_name: Patch::Set(format!("name {i}")), status_text: Patch::Keep };
        other_device.update_profile(&change).await.expect("update");
        let event = recv_json(&mut ws).await;
        assert_eq!((event["t"].as_str(), event["s"].as_u64()), (Some(event_name::USER_UPDATE), Some(2 + i)));
    }
    // The client has processed up to 4; 5 and 6 are still to be confirmed.
    send(&mut ws, json!({"op": op::HEARTBEAT, "d": 4})).await;
    assert_eq!(recv_json(&mut ws).await["op"], op::HEARTBEAT_ACK);
    drop(ws);
    let gateway = app.running().gateway().clone();
    common::eventually(Duration::from_secs(5), "server sees the drop", || {
        let gateway = gateway.clone();
        async move { gateway.open_connections() == 0 }
    })
    .await;

    // Events up to 4 are gone: a RESUME from 3 cannot be served.
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": 3}})).await;
    assert_eq!(recv_json(&mut ws).await["op"], op::INVALID_SESSION);
    drop(ws);
    // From 4, the unconfirmed events come back, then RESUMED.
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": 4}})).await;
    for seq in [5, 6] {
        let event = recv_json(&mut ws).await;
        assert_eq!((event["t"].as_str(), event["s"].as_u64()), (Some(event_name::USER_UPDATE), Some(seq)));
    }
    let resumed = recv_json(&mut ws).await;
    assert_eq!((resumed["t"].as_str(), resumed["d"]["replayed"].as_u64()), (Some(event_name::RESUMED), Some(2)));
    app.shutdown().await;
}
