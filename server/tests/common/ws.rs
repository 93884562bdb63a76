//! Raw WebSocket helpers for tests that speak the gateway protocol frame by frame.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A client WebSocket to the test server.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON (panics on a close or after 10 s).
pub async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("frame in time");
        match msg.expect("open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("close in time");
        match msg {
            Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends a JSON text frame.
pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

/// Connects to the gateway and identifies with `token`; gives the socket and READY.
pub async fn identified(ws_url: &str, token: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connect");
    let hello = recv_json(&mut ws).await;
    assert_eq!(hello["op"], copains_client_core::gateway::op::HELLO);
    send(&mut ws, serde_json::json!({"op": copains_client_core::gateway::op::IDENTIFY, "d": {"token": token}})).await;
    let ready = recv_json(&mut ws).await;
    assert_eq!(ready["t"], copains_client_core::gateway::event_name::READY);
    (ws, ready)
}

/// The payload (`d`) of the next dispatched event named `name`, skipping other frames.
pub async fn next_event(ws: &mut Ws, name: &str) -> Value {
    loop {
        let frame = recv_json(ws).await;
        if frame["t"] == name {
            return frame["d"].clone();
        }
    }
}
