//! Snapshots of the wire contract: any change to what travels shows up in review.

use copains_client_core::api::*;
use copains_client_core::gateway::*;
use copains_client_core::*;
use time::macros::datetime;

fn user() -> User {
    User {
        id: UserId(117_632_502_289_399_808),
        username: "Alice".into(),
        display_name: Some("Alice A.".into()),
        status_text: None,
        platform_role: PlatformRole::Member,
        created_at: datetime!(2026-11-21 14:29:34.052 UTC),
    }
}

fn device() -> Device {
    Device {
        id: DeviceId(1),
        name: "Laptop".into(),
        created_at: datetime!(2026-11-21 14:29:34 UTC),
        last_seen_at: datetime!(2026-11-21 15:00:00 UTC),
    }
}

#[test]
fn rest_bodies() {
    insta::assert_json_snapshot!(
        "credentials",
        Credentials { username: "alice".into(), password: "correct horse".into(), device_name: Some("Laptop".into()) }
    );
    insta::assert_json_snapshot!(
        "auth_response",
        AuthResponse {
            user: user(),
            device_id: DeviceId(1),
            session_id: SessionId(117_632_502_289_399_809),
            tokens: Tokens {
                access_token: "eyJ.x.y".into(),
                access_token_expires_in: 900,
                refresh_token: "8M0vyzMejLN3Ldi_MF3t5cWniqGyuxQnNC2WvLAbXRA".into(),
                refresh_token_expires_at: datetime!(2026-11-28 14:29:34.052 UTC),
            },
        }
    );
    insta::assert_json_snapshot!(
        "session_info",
        SessionInfo {
            id: SessionId(5),
            device: device(),
            created_at: datetime!(2026-11-21 14:29:34 UTC),
            expires_at: datetime!(2026-11-28 14:29:34 UTC),
            current: true,
        }
    );
    insta::assert_json_snapshot!("error_body", ApiErrorBody::new(ErrorCode::UsernameTaken, "this username is taken"));
    insta::assert_json_snapshot!("rename_device", copains_client_core::api::RenameDevice { name: "Work laptop".into() });
    insta::assert_json_snapshot!(
        "update_profile",
        UpdateProfile { display_name: Patch::Set("Alice".into()), status_text: Patch::Clear }
    );
}

#[test]
fn patch_fields_distinguish_absent_null_and_value() {
    let p: UpdateProfile = serde_json::from_str(r#"{"status_text": null}"#).expect("parse");
    assert_eq!(p.display_name, Patch::Keep);
    assert_eq!(p.status_text, Patch::Clear);
    let p: UpdateProfile = serde_json::from_str(r#"{"display_name": "A"}"#).expect("parse");
    assert_eq!(p.display_name, Patch::Set("A".into()));
    assert!(serde_json::from_str::<UpdateProfile>(r#"{"avatar": "x"}"#).is_err(), "unknown fields refused");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let c = Credentials { username: "a".into(), password: "hunter2hunter2".into(), device_name: None };
    assert!(!format!("{c:?}").contains("hunter2"));
    let i = Identify { token: "secret-token".into() };
    assert!(!format!("{i:?}").contains("secret-token"));
}

#[test]
fn gateway_frames() {
    insta::assert_snapshot!(
        "hello",
        server_frame_text(op::HELLO, &Hello { heartbeat_interval_ms: 30_000, resume_window_ms: 120_000 })
    );
    insta::assert_snapshot!("identify", ClientMessage::Identify(Identify { token: "T".into() }).to_text());
    insta::assert_snapshot!(
        "resume",
        ClientMessage::Resume(Resume { token: "T".into(), session_id: "abc".into(), seq: 7 }).to_text()
    );
    insta::assert_snapshot!("heartbeat", ClientMessage::Heartbeat(Some(3)).to_text());
    let ready = Ready {
        session_id: "0123456789abcdef0123456789abcdef".into(),
        user: user(),
        device_id: DeviceId(1),
        login_session_id: SessionId(9),
        devices: vec![device()],
    };
    let text = dispatch_text(1, event_name::READY, &serde_json::to_string(&ready).expect("json"));
    insta::assert_snapshot!("ready", text);
    let parsed = ServerMessage::parse(&text).expect("parse");
    assert_eq!(parsed, ServerMessage::Dispatch { seq: 1, event: Event::Ready(Box::new(ready)) });
    insta::assert_snapshot!("invalid_session", server_frame_text(op::INVALID_SESSION, &InvalidSession { resumable: false }));
}

#[test]
fn client_frames_are_checked() {
    assert!(matches!(ClientMessage::parse("nope"), Err(FrameError::Decode(_))));
    assert!(matches!(ClientMessage::parse(r#"{"op":99}"#), Err(FrameError::UnknownOpcode(99))));
    assert!(matches!(ClientMessage::parse(r#"{"op":2,"d":{}}"#), Err(FrameError::Decode(_))));
    assert_eq!(ClientMessage::parse(r#"{"op":1,"d":null}"#).expect("heartbeat"), ClientMessage::Heartbeat(None));
    assert_eq!(
        ClientMessage::parse(r#"{"op":6,"d":{"token":"t","session_id":"s","seq":4}}"#).expect("resume"),
        ClientMessage::Resume(Resume { token: "t".into(), session_id: "s".into(), seq: 4 })
    );
    let unknown = ServerMessage::parse(r#"{"op":0,"s":5,"t":"FUTURE_EVENT","d":{"x":1}}"#).expect("parse");
    assert!(matches!(unknown, ServerMessage::Dispatch { seq: 5, event: Event::Unknown { .. } }));
}
