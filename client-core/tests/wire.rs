//! Snapshots of the wire contract: any change to what travels shows up in review. Every
//! serialized type of `client-core` is snapshotted here, and each one is read back to check
//! that what a peer sends is what it meant.

use std::fmt::Debug;

use copains_client_core::api::*;
use copains_client_core::bytes::Base64Bytes;
use copains_client_core::gateway::*;
use copains_client_core::keys::*;
use copains_client_core::messages::*;
use copains_client_core::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::macros::datetime;

/// Serializes `value`, reads it back, and checks nothing changed on the way.
#[track_caller]
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).expect("serialize");
    let back: T = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(&back, value, "{json} reads back as something else");
}

/// A JSON snapshot of `value`, and its round trip (`value` is built twice: it is plain data).
macro_rules! wire {
    ($name:literal, $value:expr) => {{
        insta::assert_json_snapshot!($name, $value);
        round_trip(&$value);
    }};
}

/// A server frame's exact text, and that it parses back to `expected`.
#[track_caller]
fn server_frame(name: &str, text: String, expected: ServerMessage) {
    insta::assert_snapshot!(name, text);
    assert_eq!(ServerMessage::parse(&text).expect("parse"), expected, "{text}");
}

/// A client frame's exact text, and that the server parses it back to the same message.
#[track_caller]
fn client_frame(name: &str, message: ClientMessage) {
    let text = message.to_text();
    insta::assert_snapshot!(name, text);
    assert_eq!(ClientMessage::parse(&text).expect("parse"), message, "{text}");
}

fn user() -> User {
    User {
        id: UserId(117_632_502_289_399_808),
        username: "Alice".into(),
        display_name: Some("Alice A.".into()),
        status_text: None,
        platform_role: PlatformRole::Member,
        created_at: datetime!(2026-11-21 14:29:34.052 UTC),
        guest_expires_at: None,
    }
}

fn public_user() -> PublicUser {
    PublicUser {
        id: UserId(117_632_502_289_399_808),
        username: "Alice".into(),
        display_name: Some("Alice A.".into()),
        status_text: None,
    }
}

fn device() -> Device {
    Device {
        id: DeviceId(1),
        name: "Laptop".into(),
        created_at: datetime!(2026-11-21 14:29:34 UTC),
        last_seen_at: datetime!(2026-11-21 15:00:00 UTC),
        linked: true,
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
    let r = Resume { token: "secret-token".into(), session_id: "abc".into(), seq: 7 };
    assert!(!format!("{r:?}").contains("secret-token"));
    let t = tokens();
    assert!(!format!("{t:?}").contains(&t.access_token) && !format!("{t:?}").contains(&t.refresh_token));
    assert!(!format!("{:?}", auth_response()).contains(&t.refresh_token));
    let r = RefreshRequest { refresh_token: t.refresh_token.clone() };
    assert!(!format!("{r:?}").contains(&t.refresh_token));
    let p = ChangePassword { current_password: "hunter2hunter2".into(), new_password: "swordfish-swordfish".into() };
    assert!(!format!("{p:?}").contains("hunter2") && !format!("{p:?}").contains("swordfish"));
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
        servers: Vec::new(),
        group_dms: Vec::new(),
        social: copains_client_core::social::SocialReady {
            relationships: vec![copains_client_core::social::Relationship {
                user: copains_client_core::api::PublicUser {
                    id: UserId(5),
                    username: "ben".into(),
                    display_name: None,
                    status_text: None,
                },
                kind: copains_client_core::social::RelationshipKind::Friend,
                since: 1_700_000_000_000,
            }],
            presence: copains_client_core::social::PresenceSettings {
                status: copains_client_core::social::PresenceStatus::Dnd,
                custom_status: Some(copains_client_core::social::CustomStatus {
                    text: "focusing".into(),
                    expires_at: Some(1_700_000_600_000),
                }),
            },
            presences: vec![copains_client_core::social::Presence {
                user_id: UserId(5),
                status: copains_client_core::social::PresenceStatus::Idle,
                custom_status: None,
            }],
            read_states: vec![copains_client_core::social::ReadState {
                channel_id: copains_client_core::ChannelId(7),
                last_read_id: copains_client_core::MessageId(8),
                mention_count: 2,
            }],
            dm_read_states: vec![copains_client_core::social::DmReadState {
                user_id: UserId(5),
                last_read_at: 1_700_000_000_500,
            }],
            notification_settings: vec![copains_client_core::social::NotificationSettings {
                target_id: "7".into(),
                settings: copains_client_core::social::SetNotificationSettings {
                    level: Some(copains_client_core::social::NotificationLevel::Mentions),
                    muted: true,
                    muted_until: Some(1_700_003_600_000),
                },
            }],
        },
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

#[test]
fn existing_snapshots_read_back() {
    round_trip(&Credentials { username: "alice".into(), password: "correct horse".into(), device_name: Some("Laptop".into()) });
    round_trip(&Credentials { username: "alice".into(), password: "correct horse".into(), device_name: None });
    round_trip(&SessionInfo {
        id: SessionId(5),
        device: device(),
        created_at: datetime!(2026-11-21 14:29:34 UTC),
        expires_at: datetime!(2026-11-28 14:29:34 UTC),
        current: true,
    });
    round_trip(&ApiErrorBody::new(ErrorCode::UsernameTaken, "this username is taken"));
    round_trip(&RenameDevice { name: "Work laptop".into() });
    round_trip(&UpdateProfile { display_name: Patch::Set("Alice".into()), status_text: Patch::Clear });
    round_trip(&UpdateProfile { display_name: Patch::Keep, status_text: Patch::Set("away".into()) });
    round_trip(&auth_response());
    assert_eq!(ServerMessage::parse(&server_frame_text(op::HELLO, &hello())).expect("hello"), ServerMessage::Hello(hello()));
    assert_eq!(
        ServerMessage::parse(&server_frame_text(op::INVALID_SESSION, &InvalidSession { resumable: false })).expect("parse"),
        ServerMessage::InvalidSession(InvalidSession { resumable: false })
    );
    for message in [
        ClientMessage::Identify(Identify { token: "T".into() }),
        ClientMessage::Resume(Resume { token: "T".into(), session_id: "abc".into(), seq: 7 }),
        ClientMessage::Heartbeat(Some(3)),
        ClientMessage::Heartbeat(None),
    ] {
        assert_eq!(ClientMessage::parse(&message.to_text()).expect("parse"), message);
    }
}

fn hello() -> Hello {
    Hello { heartbeat_interval_ms: 30_000, resume_window_ms: 120_000 }
}

fn tokens() -> Tokens {
    Tokens {
        access_token: "eyJ.x.y".into(),
        access_token_expires_in: 900,
        refresh_token: "8M0vyzMejLN3Ldi_MF3t5cWniqGyuxQnNC2WvLAbXRA".into(),
        refresh_token_expires_at: datetime!(2026-11-28 14:29:34.052 UTC),
    }
}

fn auth_response() -> AuthResponse {
    AuthResponse { user: user(), device_id: DeviceId(1), session_id: SessionId(117_632_502_289_399_809), tokens: tokens() }
}

#[test]
fn account_bodies() {
    wire!("user", user());
    wire!(
        "user_roles",
        [PlatformRole::Member, PlatformRole::Moderator, PlatformRole::Admin].map(|platform_role| User {
            platform_role,
            display_name: None,
            ..user()
        })
    );
    wire!("public_user", public_user());
    assert_eq!(PublicUser::from(user()), public_user(), "a user's public part");
    wire!("tokens", tokens());
    wire!("refresh_request", RefreshRequest { refresh_token: "8M0vyzMejLN3Ldi_MF3t5cWniqGyuxQnNC2WvLAbXRA".into() });
    wire!("change_password", ChangePassword { current_password: "correct horse".into(), new_password: "battery staple".into() });
    wire!("device", device());
    wire!("readiness", Readiness { status: "ready".into(), database: true });
    wire!("error_body_with_details", {
        let mut body = ApiErrorBody::new(ErrorCode::DeviceMismatch, "the send does not cover the current devices");
        body.error.details = Some(serde_json::to_value(mismatch()).expect("details"));
        body
    });
}

/// 33 bytes: a Curve25519 public key in libsignal's serialization (type byte 0x05).
fn ec_key(fill: u8) -> Base64Bytes {
    let mut key = vec![fill; 33];
    key[0] = 0x05;
    Base64Bytes(key)
}

fn signed(key_id: u32, fill: u8) -> SignedPreKey {
    SignedPreKey { key_id, public_key: ec_key(fill), signature: Base64Bytes(vec![fill ^ 0xff; 64]) }
}

fn bundle() -> DeviceBundle {
    DeviceBundle {
        device_id: DeviceId(2),
        registration_id: 4242,
        identity_key: ec_key(3),
        signed_pre_key: signed(1, 4),
        pre_key: Some(PreKey { key_id: 1, public_key: ec_key(6) }),
        pq_pre_key: signed(1, 8),
    }
}

#[test]
fn key_bodies() {
    wire!("pre_key", PreKey { key_id: 7, public_key: ec_key(1) });
    wire!("signed_pre_key", signed(1, 2));
    wire!(
        "upload_keys_first",
        UploadKeys {
            identity_key: Some(ec_key(3)),
            registration_id: Some(4242),
            signed_pre_key: Some(signed(1, 4)),
            pq_last_resort_pre_key: Some(signed(16_777_215, 5)),
            pre_keys: vec![PreKey { key_id: 1, public_key: ec_key(6) }, PreKey { key_id: 2, public_key: ec_key(7) }],
            pq_pre_keys: vec![signed(1, 8)],
        }
    );
    wire!(
        "upload_keys_refill",
        UploadKeys { pre_keys: vec![PreKey { key_id: 101, public_key: ec_key(9) }], ..UploadKeys::default() }
    );
    wire!("pre_key_count", PreKeyCount { pre_keys: 12, pq_pre_keys: 0 });
    wire!("device_bundle", bundle());
    wire!(
        "user_bundles",
        UserBundles {
            user_id: UserId(117_632_502_289_399_808),
            devices: vec![bundle(), DeviceBundle { device_id: DeviceId(3), pre_key: None, ..bundle() }],
        }
    );
    wire!("pre_keys_low", PreKeysLow { device_id: DeviceId(2), count: PreKeyCount { pre_keys: 9, pq_pre_keys: 3 } });
}

fn envelope() -> Envelope {
    Envelope {
        id: EnvelopeId(117_632_502_289_399_810),
        sender: UserId(117_632_502_289_399_808),
        sender_device: DeviceId(1),
        kind: kind::PREKEY,
        content: Base64Bytes(vec![0x33, 0x0a, 0x21, 0x05, 0xff]),
        server_timestamp: 1_795_271_374_052,
    }
}

fn outgoing(device: u32, kind: u8) -> OutgoingEnvelope {
    OutgoingEnvelope { device_id: DeviceId(device), registration_id: 4242, kind, content: Base64Bytes(vec![0x22, 0x08, 0x01]) }
}

fn mismatch() -> SendMismatch {
    SendMismatch {
        recipient: DeviceMismatch {
            missing_devices: vec![DeviceId(3)],
            extra_devices: vec![DeviceId(4)],
            stale_devices: vec![DeviceId(2)],
        },
        own: DeviceMismatch { missing_devices: vec![DeviceId(2)], ..DeviceMismatch::default() },
    }
}

#[test]
fn message_bodies() {
    wire!("outgoing_envelope", outgoing(1, kind::WHISPER));
    wire!(
        "send_message",
        SendMessage {
            recipient: UserId(117_632_502_289_399_811),
            messages: vec![outgoing(1, kind::WHISPER), outgoing(2, kind::PREKEY)],
            sync_messages: vec![outgoing(2, kind::WHISPER)],
            partial: false,
        }
    );
    wire!(
        "send_message_partial",
        SendMessage {
            recipient: UserId(117_632_502_289_399_811),
            messages: vec![outgoing(2, kind::PLAINTEXT)],
            sync_messages: vec![],
            partial: true,
        }
    );
    wire!("send_receipt", SendReceipt { server_timestamp: 1_795_271_374_052 });
    wire!("device_mismatch", mismatch().recipient);
    wire!("send_mismatch", mismatch());
    wire!("envelope", envelope());
    wire!(
        "queue",
        Queue {
            envelopes: vec![envelope(), Envelope { id: EnvelopeId(117_632_502_289_399_812), kind: kind::WHISPER, ..envelope() }],
            more: true,
        }
    );
    // What older clients send: no `sync_messages`, no `partial`.
    let minimal: SendMessage =
        serde_json::from_str(r#"{"recipient":"5","messages":[{"device_id":1,"registration_id":7,"kind":2,"content":"AAE="}]}"#)
            .expect("minimal send");
    assert_eq!((minimal.sync_messages.len(), minimal.partial), (0, false));
    assert!(
        serde_json::from_str::<SendMessage>(r#"{"recipient":"5","messages":[],"extra":1}"#).is_err(),
        "unknown fields refused"
    );
}

#[test]
fn gateway_events_and_client_ops() {
    client_frame("ack", ClientMessage::Ack(Ack { ids: vec![EnvelopeId(117_632_502_289_399_810), EnvelopeId(2)] }));
    wire!("ack_payload", Ack { ids: vec![EnvelopeId(117_632_502_289_399_810)] });
    server_frame("heartbeat_ack", server_frame_text(op::HEARTBEAT_ACK, &serde_json::Value::Null), ServerMessage::HeartbeatAck);
    server_frame("reconnect", server_frame_text(op::RECONNECT, &serde_json::Value::Null), ServerMessage::Reconnect);

    let low = PreKeysLow { device_id: DeviceId(2), count: PreKeyCount { pre_keys: 9, pq_pre_keys: 3 } };
    let events: Vec<(&str, u64, &str, String, Event)> = vec![
        (
            "event_prekeys_low",
            7,
            event_name::PREKEYS_LOW,
            serde_json::to_string(&low).expect("json"),
            Event::PreKeysLow(low.clone()),
        ),
        (
            "event_envelope",
            8,
            event_name::ENVELOPE,
            serde_json::to_string(&envelope()).expect("json"),
            Event::Envelope(envelope()),
        ),
        (
            "event_resumed",
            9,
            event_name::RESUMED,
            serde_json::to_string(&Resumed { replayed: 3 }).expect("json"),
            Event::Resumed(Resumed { replayed: 3 }),
        ),
        (
            "event_user_update",
            10,
            event_name::USER_UPDATE,
            serde_json::to_string(&user()).expect("json"),
            Event::UserUpdate(user()),
        ),
        (
            "event_session_revoked",
            11,
            event_name::SESSION_REVOKED,
            serde_json::to_string(&SessionRevoked { session_id: SessionId(9), user_id: UserId(117_632_502_289_399_808) })
                .expect("json"),
            Event::SessionRevoked(SessionRevoked { session_id: SessionId(9), user_id: UserId(117_632_502_289_399_808) }),
        ),
    ];
    for (snapshot, seq, name, payload, event) in events {
        assert_eq!(event.name(), name);
        server_frame(snapshot, dispatch_text(seq, name, &payload), ServerMessage::Dispatch { seq, event });
    }
    wire!("resumed", Resumed { replayed: 3 });
    wire!("session_revoked", SessionRevoked { session_id: SessionId(9), user_id: UserId(117_632_502_289_399_808) });
    wire!("hello_payload", hello());
    wire!("invalid_session_payload", InvalidSession { resumable: false });
    wire!(
        "frame",
        Frame { op: op::DISPATCH, d: serde_json::json!({"replayed": 0}), s: Some(4), t: Some(event_name::RESUMED.into()) }
    );
    wire!("frame_without_sequence", Frame { op: op::HEARTBEAT, d: serde_json::json!(3), s: None, t: None });
}

/// The decrypted message as the client's history stores it (in its encrypted vault).
#[cfg(feature = "native")]
#[test]
fn history_record() {
    wire!(
        "direct_message",
        copains_client_core::messaging::DirectMessage {
            message_id: "01JD3ZK6Q9R1V7M2W4X8Y0A5BC".into(),
            conversation: UserId(117_632_502_289_399_811),
            author: UserId(117_632_502_289_399_808),
            author_device: DeviceId(1),
            outgoing: true,
            body: "salut les copains".into(),
            sent_at: 1_795_271_374_052,
        }
    );
    use copains_client_core::engine::HistoryEntry;
    wire!(
        "history_entry_message",
        HistoryEntry::Message(copains_client_core::messaging::DirectMessage {
            message_id: "01JD3ZK6Q9R1V7M2W4X8Y0A5BC".into(),
            conversation: UserId(117_632_502_289_399_811),
            author: UserId(117_632_502_289_399_811),
            author_device: DeviceId(2),
            outgoing: false,
            body: "ça roule".into(),
            sent_at: 1_795_271_374_052,
        })
    );
    wire!(
        "history_entry_undecryptable",
        HistoryEntry::Undecryptable {
            conversation: UserId(117_632_502_289_399_811),
            author: UserId(117_632_502_289_399_811),
            author_device: DeviceId(2),
            sent_at: 1_795_271_374_052,
            repaired: true,
        }
    );
    wire!(
        "history_entry_identity_changed",
        HistoryEntry::IdentityChanged { conversation: UserId(117_632_502_289_399_811), sent_at: 1_795_271_374_052 }
    );
}

/// Every error code, in the order of the enum. The match makes a new code a compile error
/// here until it is added to the list (and so to the snapshot).
#[test]
fn error_codes() {
    use ErrorCode::*;
    let codes = [
        MalformedRequest,
        ValidationFailed,
        PayloadTooLarge,
        InvalidCredentials,
        Unauthorized,
        InvalidRefreshToken,
        Forbidden,
        AccountDisabled,
        Banned,
        NotFound,
        UsernameTaken,
        TooManyDevices,
        Conflict,
        DeviceMismatch,
        ViewStale,
        InvalidKeys,
        RateLimited,
        QueueFull,
        UnknownRoute,
        Internal,
        Unavailable,
    ];
    for code in codes {
        match code {
            MalformedRequest | ValidationFailed | PayloadTooLarge | InvalidCredentials | Unauthorized | InvalidRefreshToken
            | Forbidden | AccountDisabled | Banned | NotFound | UsernameTaken | TooManyDevices | Conflict | DeviceMismatch
            | ViewStale | InvalidKeys | RateLimited | QueueFull | UnknownRoute | Internal | Unavailable => {}
        }
    }
    wire!("error_codes", codes);
}

/// A sent message as the client's resend log keeps it (in its encrypted vault), for answering
/// a retry request from one of its recipients.
#[cfg(feature = "crypto")]
#[test]
fn sent_log_record() {
    use copains_client_core::crypto::{SentEntry, SentTo};
    wire!(
        "sent_entry",
        SentEntry {
            message_id: "01JD3ZK6Q9R1V7M2W4X8Y0A5BC".into(),
            sent_at: 1_795_271_374_052,
            logged_at: 1_795_271_374_049,
            content: b"{\"id\":\"01JD\"}".to_vec().into(),
            recipients: vec![
                SentTo { user: UserId(117_632_502_289_399_811), device: DeviceId(1), identity: vec![0x05, 0x01, 0x02].into() },
                SentTo { user: UserId(117_632_502_289_399_808), device: DeviceId(2), identity: vec![0x05, 0x03, 0x04].into() },
            ],
        }
    );
}

#[test]
fn device_list_bodies() {
    use copains_client_core::devices::{
        DeviceList, DeviceListUpdate, LinkAnswer, LinkRequest, ListedDevice, NewLinkAnswer, NewLinkRequest, OwnLinkRequest,
        PublishDeviceList, RecoveryBackup, SignedDeviceList,
    };
    let list = DeviceList {
        user: UserId(117_632_502_289_399_808),
        version: 3,
        devices: vec![
            ListedDevice { device_id: DeviceId(1), identity_key: ec_key(1).0 },
            ListedDevice { device_id: DeviceId(2), identity_key: ec_key(2).0 },
        ],
    };
    // The signed bytes themselves: a change of the encoding breaks every signature.
    insta::assert_snapshot!("device_list_encoding", list.encode().iter().map(|b| format!("{b:02x}")).collect::<String>());
    let signed = SignedDeviceList { account_key: ec_key(9), list: list.encode().into(), signature: vec![7; 64].into() };
    wire!("signed_device_list", signed.clone());
    wire!("publish_device_list", PublishDeviceList { signed: signed.clone(), reset_password: None });
    wire!("recovery_backup", RecoveryBackup { sealed: vec![1, 2, 3].into() });
    wire!("new_link_request", NewLinkRequest { pake: vec![4; 33].into() });
    let request = LinkRequest {
        device_id: DeviceId(2),
        device_name: "Chrome on Linux".into(),
        identity_key: ec_key(2),
        pake: vec![4; 33].into(),
        created_at: 1_795_271_374_052,
        expires_at: 1_795_271_974_052,
    };
    wire!("link_request", request.clone());
    wire!("new_link_answer", NewLinkAnswer { pake: vec![5; 33].into(), sealed: vec![6; 8].into() });
    let answer = LinkAnswer { from_device: DeviceId(1), pake: vec![5; 33].into(), sealed: vec![6; 8].into() };
    wire!("link_answer", answer.clone());
    wire!("own_link_request", OwnLinkRequest { request: request.clone(), answer: Some(answer.clone()) });
    wire!("device_list_update", DeviceListUpdate { user_id: UserId(117_632_502_289_399_808), version: 3 });
}

#[test]
fn channel_message_bodies() {
    use copains_client_core::channel_messages::{
        ChannelMessage, ChannelRecipients, ClaimBundles, ClaimedBundles, DeviceAddress, DeviceLists, Distribution,
        MemberDeviceList, Reaction, ReadDeviceLists, RecipientDevice, SendChannelMessage, SendSenderKeys, SenderKeysSent,
    };
    use copains_client_core::devices::SignedDeviceList;
    let (user, channel) = (UserId(117_632_502_289_399_808), ChannelId(117_632_502_289_399_900));
    let device = RecipientDevice { user_id: user, device_id: DeviceId(2), registration_id: 4242 };
    wire!("channel_recipients", ChannelRecipients { channel_id: channel, view: 7, devices: vec![device] });
    let distribution = Distribution {
        user_id: user,
        device_id: DeviceId(2),
        registration_id: 4242,
        kind: kind::PREKEY,
        content: vec![3; 12].into(),
    };
    wire!(
        "send_channel_message",
        SendChannelMessage {
            ciphertext: vec![9; 16].into(),
            view: 7,
            thread_id: Some(MessageId(117_632_502_289_400_000)),
            distributions: vec![distribution.clone()],
            mentions: copains_client_core::channel_messages::Mentions {
                users: vec![user],
                roles: vec![RoleId(117_632_502_289_400_009)],
                everyone: true,
            },
        }
    );
    wire!("send_sender_keys", SendSenderKeys { view: 7, distributions: vec![distribution.clone()] });
    wire!("sender_keys_sent", SenderKeysSent { sent_at: 1_795_271_374_052 });
    wire!("claim_bundles", ClaimBundles { devices: vec![DeviceAddress { user_id: user, device_id: DeviceId(2) }] });
    wire!("claimed_bundles", ClaimedBundles { users: vec![UserBundles { user_id: user, devices: vec![bundle()] }] });
    wire!("read_device_lists", ReadDeviceLists { users: vec![user] });
    let signed = SignedDeviceList { account_key: ec_key(9), list: vec![1, 2, 3].into(), signature: vec![7; 64].into() };
    wire!("device_lists", DeviceLists { lists: vec![MemberDeviceList { user_id: user, signed: signed.clone() }] });
    let message_id = MessageId(117_632_502_289_400_001);
    wire!(
        "channel_message",
        ChannelMessage {
            id: message_id,
            channel_id: channel,
            author_id: user,
            author_device: DeviceId(2),
            ciphertext: vec![9; 16].into(),
            created_at: 1_795_271_374_052,
            edited_at: Some(1_795_271_379_000),
            thread_id: None,
            pinned: true,
            thread_count: 2,
            mentions: copains_client_core::channel_messages::Mentions { users: vec![user], ..Default::default() },
            reactions: vec![Reaction {
                id: ReactionId(117_632_502_289_400_002),
                message_id,
                channel_id: channel,
                user_id: user,
                device_id: DeviceId(2),
                ciphertext: vec![8; 16].into(),
                created_at: 1_795_271_375_000,
            }],
        }
    );
}

#[test]
fn community_bodies() {
    use copains_client_core::servers::*;
    let (owner, server_id) = (UserId(117_632_502_289_399_808), ServerId(117_632_502_289_399_850));
    let server =
        Server { id: server_id, name: "Les Copains".into(), owner_id: owner, created_at: 1_795_271_374_052, member_count: 3 };
    wire!("server", server.clone());
    let role = Role {
        id: RoleId(117_632_502_289_399_860),
        server_id,
        name: "Mods".into(),
        color: 0x1abc9c,
        position: 1,
        permissions: Permissions::EVERYONE_DEFAULT | Permissions::MANAGE_MESSAGES,
        hoist: true,
    };
    wire!("role", role.clone());
    let overwrites = vec![
        Overwrite { id: server_id.0, kind: OverwriteKind::Role, allow: Permissions(0), deny: Permissions::VIEW_CHANNEL },
        Overwrite { id: owner.0, kind: OverwriteKind::Member, allow: Permissions::VIEW_CHANNEL, deny: Permissions(0) },
    ];
    let channel = Channel {
        id: ChannelId(117_632_502_289_399_900),
        server_id: Some(server_id),
        name: "staff".into(),
        kind: ChannelKind::Text,
        parent_id: Some(ChannelId(117_632_502_289_399_870)),
        position: 2,
        topic: Some("mods only".into()),
        overwrites: overwrites.clone(),
        recipients: Vec::new(),
        owner_id: None,
        last_message_id: Some(MessageId(117_632_502_289_400_001)),
        user_limit: 0,
    };
    wire!("channel", channel.clone());
    let group = Channel {
        id: ChannelId(117_632_502_289_399_901),
        server_id: None,
        name: "Trip".into(),
        kind: ChannelKind::GroupDm,
        parent_id: None,
        position: 0,
        topic: None,
        overwrites: Vec::new(),
        recipients: vec![public_user()],
        owner_id: Some(owner),
        last_message_id: None,
        user_limit: 0,
    };
    wire!("group_dm", group.clone());
    let member =
        Member { user: public_user(), server_id, roles: vec![role.id], joined_at: 1_795_271_374_052, timeout_until: None };
    wire!("member", member.clone());
    let state = ServerState { server, roles: vec![role], channels: vec![channel], me: member, voice_states: Vec::new() };
    wire!("server_state", state.clone());
    wire!("new_server", NewServer { name: "Les Copains".into() });
    wire!("edit_server", EditServer { name: None, owner_id: Some(owner) });
    wire!(
        "new_channel",
        NewChannel {
            name: "staff".into(),
            kind: ChannelKind::Voice,
            parent_id: None,
            topic: None,
            position: Some(3),
            overwrites: Some(overwrites.clone()),
            user_limit: Some(10),
        }
    );
    // A parent set to null (out of its category) is not a parent left as it is.
    wire!("edit_channel_out_of_category", EditChannel { parent_id: Some(None), ..EditChannel::default() });
    wire!("edit_channel_name", EditChannel { name: Some("general".into()), ..EditChannel::default() });
    wire!("edit_role", EditRole { permissions: Some(Permissions::ADMINISTRATOR), hoist: Some(false), ..EditRole::default() });
    wire!("set_member_roles", SetMemberRoles { roles: vec![RoleId(117_632_502_289_399_860)] });
    wire!("new_invite_never_expires", NewInvite { max_uses: Some(5), max_age_secs: Some(None), guest_ttl_secs: None });
    wire!(
        "invite",
        Invite {
            code: "aB3dE5fG7hJ9".into(),
            server_id,
            inviter_id: owner,
            uses: 1,
            max_uses: Some(5),
            expires_at: None,
            created_at: 1_795_271_374_052,
            guest_ttl_secs: None,
        }
    );
    wire!(
        "invite_preview",
        InvitePreview {
            code: "aB3dE5fG7hJ9".into(),
            server_id,
            server_name: "Les Copains".into(),
            member_count: 3,
            inviter: public_user(),
            expires_at: Some(1_795_875_374_052),
        }
    );
    wire!("new_ban", NewBan { reason: Some("spam".into()), duration_secs: Some(86_400), delete_message_secs: None });
    wire!(
        "ban",
        Ban {
            user: public_user(),
            reason: Some("spam".into()),
            moderator_id: owner,
            created_at: 1_795_271_374_052,
            expires_at: Some(1_795_357_774_052),
        }
    );
    wire!("new_group_dm", NewGroupDm { recipients: vec![owner], name: Some("Trip".into()) });
    wire!("removed", Removed { id: "117632502289399900".into(), server_id: Some(server_id) });
    wire!("member_removed", MemberRemoved { server_id, user_id: owner });
}
