//! Signed device lists, device linking and the recovery backup through the real server: what
//! it accepts and refuses (storing nothing then), and how it routes once a user has a list:
//! only linked devices receive envelopes and hand out prekey bundles; a pending device asks
//! to be linked over the gateway and a linked device answers it.

mod common;

use common::ws::{identified, next_event};
use common::{Backend, TestApp};
use copains_client_core::api::{Device, SessionInfo};
use copains_client_core::bytes::Base64Bytes;
use copains_client_core::client::Client;
use copains_client_core::crypto::account::AccountKey;
use copains_client_core::crypto::{E2eeDevice, MemoryBackend, Vault};
use copains_client_core::devices::{
    DeviceList, DeviceListUpdate, LinkAnswer, LinkRequest, ListedDevice, OwnLinkRequest, RecoveryBackup, SignedDeviceList,
    LINK_REQUEST_TTL_MS, PAKE_MAX_BYTES, SEALED_MAX_BYTES,
};
use copains_client_core::gateway::event_name;
use copains_client_core::keys::UserBundles;
use copains_client_core::messages::{kind, SendMismatch};
use copains_client_core::{ApiErrorBody, DeviceId, ErrorCode, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_published_list_is_served_exactly_as_signed,
    bad_lists_are_refused_and_store_nothing,
    stale_lists_and_other_account_keys_are_refused,
    pending_devices_get_no_bundle_and_no_envelope,
    a_pending_device_is_linked_over_the_gateway,
    link_requests_are_declined_or_withdrawn,
    only_linked_devices_store_the_recovery_backup,
);

const PASSWORD: &str = "a-long-password";

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.bundle_fetches_burst = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
    })
    .await
}

/// A signed-in device of a user, with its keys uploaded (unless made `without_keys`).
#[derive(Clone)]
struct Dev {
    client: Client,
    user: UserId,
    device: DeviceId,
    identity_key: Vec<u8>,
    registration_id: u32,
}

impl Dev {
    fn listed(&self) -> ListedDevice {
        ListedDevice { device_id: self.device, identity_key: self.identity_key.clone() }
    }
}

/// Registers `name` (device 1, keys uploaded).
async fn register(app: &TestApp, name: &str) -> Dev {
    let client = app.client();
    client.register(name, PASSWORD, Some("first")).await.expect("register");
    with_keys(client).await
}

/// Another device of `name`, logged in with the password alone (keys uploaded).
async fn log_in(app: &TestApp, name: &str, device_name: &str) -> Dev {
    let client = app.client();
    client.login(name, PASSWORD, Some(device_name)).await.expect("login");
    with_keys(client).await
}

async fn with_keys(client: Client) -> Dev {
    let user = client.user().await.expect("user").id;
    let device = client.device_id().await.expect("device");
    let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
    let (_e2ee, upload) = E2eeDevice::open(vault, user).await.expect("device");
    let upload = upload.expect("new device keys");
    client.put_keys(&upload).await.expect("keys");
    Dev {
        client,
        user,
        device,
        identity_key: upload.identity_key.expect("identity key").0,
        registration_id: upload.registration_id.expect("registration id"),
    }
}

fn list(user: UserId, version: u64, devices: &[&Dev]) -> DeviceList {
    DeviceList { user, version, devices: devices.iter().map(|d| d.listed()).collect() }
}

async fn call(app: &TestApp, dev: &Dev, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req =
        reqwest::Client::new().request(method, app.url(path)).bearer_auth(dev.client.access_token().await.expect("token"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("request")
}

async fn publish(app: &TestApp, dev: &Dev, signed: &SignedDeviceList, reset_password: Option<&str>) -> reqwest::Response {
    let mut body = json!({ "signed": signed });
    if let Some(p) = reset_password {
        body["reset_password"] = json!(p);
    }
    call(app, dev, Method::PUT, "/api/v1/users/@me/device-list", Some(body)).await
}

async fn code(resp: reqwest::Response) -> (StatusCode, ErrorCode, String) {
    let status = resp.status();
    let body: ApiErrorBody = resp.json().await.expect("error body");
    (status, body.error.code, body.error.message)
}

async fn status_and_code(resp: reqwest::Response) -> (StatusCode, ErrorCode) {
    let (status, code, _) = code(resp).await;
    (status, code)
}

async fn json_of<T: serde::de::DeserializeOwned>(resp: reqwest::Response, expected: StatusCode) -> T {
    assert_eq!(resp.status(), expected);
    resp.json().await.expect("json body")
}

async fn get_list(app: &TestApp, dev: &Dev, user: &str) -> reqwest::Response {
    call(app, dev, Method::GET, &format!("/api/v1/users/{user}/device-list"), None).await
}

/// `(id, linked)` of each of the user's devices, as `GET /users/@me/devices` and the sessions
/// list both say.
async fn linked(dev: &Dev) -> Vec<(u32, bool)> {
    let devices: Vec<Device> = dev.client.devices().await.expect("devices");
    let from_devices: Vec<(u32, bool)> = devices.iter().map(|d| (d.id.0, d.linked)).collect();
    let sessions: Vec<SessionInfo> = dev.client.sessions().await.expect("sessions");
    let mut from_sessions: Vec<(u32, bool)> = sessions.iter().map(|s| (s.device.id.0, s.device.linked)).collect();
    from_sessions.sort();
    assert_eq!(from_devices, from_sessions, "devices and sessions agree");
    from_devices
}

async fn a_published_list_is_served_exactly_as_signed(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    assert_eq!(
        status_and_code(get_list(&app, &bob, &alice.user.to_string()).await).await,
        (StatusCode::NOT_FOUND, ErrorCode::NotFound),
        "no list yet"
    );
    assert_eq!(status_and_code(get_list(&app, &bob, "424242").await).await, (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    assert_eq!(status_and_code(get_list(&app, &bob, "abc").await).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest));
    assert_eq!(linked(&alice).await, [(1, false)], "without a list nothing is linked");

    let (mut ws, _) = identified(&app.ws_url, &alice.client.access_token().await.expect("token")).await;
    let account = AccountKey::generate();
    let signed = account.sign(&list(alice.user, 1, &[&alice]));
    assert_eq!(publish(&app, &alice, &signed, None).await.status(), StatusCode::NO_CONTENT);
    let update: DeviceListUpdate =
        serde_json::from_value(next_event(&mut ws, event_name::DEVICE_LIST_UPDATE).await).expect("update");
    assert_eq!(update, DeviceListUpdate { user_id: alice.user, version: 1 });

    let read: SignedDeviceList = json_of(get_list(&app, &bob, &alice.user.to_string()).await, StatusCode::OK).await;
    assert_eq!(read, signed, "byte for byte as signed");
    let own: SignedDeviceList = json_of(get_list(&app, &alice, "@me").await, StatusCode::OK).await;
    assert_eq!(own, signed);
    assert_eq!(linked(&alice).await, [(1, true)]);

    let doc: Value = reqwest::get(app.url("/api/v1/openapi.json")).await.expect("req").json().await.expect("json");
    for path in [
        "/api/v1/users/{user_id}/device-list",
        "/api/v1/users/@me/device-list",
        "/api/v1/users/@me/recovery",
        "/api/v1/users/@me/link-requests",
        "/api/v1/users/@me/link-requests/@me",
        "/api/v1/users/@me/link-requests/{device_id}",
        "/api/v1/users/@me/link-requests/{device_id}/answer",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is in the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["SignedDeviceList"].is_object());
    app.shutdown().await;
}

async fn bad_lists_are_refused_and_store_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let alice2 = log_in(&app, "alice", "second").await;
    let bob = register(&app, "bob").await;
    let account = AccountKey::generate();
    let good = account.sign(&list(alice.user, 1, &[&alice, &alice2]));
    let refused = |signed: SignedDeviceList| {
        let (app, alice) = (&app, &alice);
        async move { code(publish(app, alice, &signed, None).await).await }
    };

    let mut bad = good.clone();
    bad.signature.0[10] ^= 1;
    assert_eq!(refused(bad).await.1, ErrorCode::InvalidKeys, "wrong signature");
    let mut bad = good.clone();
    bad.list.0.push(0);
    assert_eq!(refused(bad).await.1, ErrorCode::InvalidKeys, "bytes other than the signed ones");
    let mut bad = good.clone();
    bad.account_key = Base64Bytes(bad.account_key.0[..32].to_vec());
    assert_eq!(refused(bad).await.1, ErrorCode::InvalidKeys, "short account key");
    let mut bad = good.clone();
    bad.account_key = AccountKey::generate().public().into();
    assert_eq!(refused(bad).await.1, ErrorCode::InvalidKeys, "signed by another key");

    // Signed, but not a canonical list: a 32-byte identity key, a user id of 0.
    let short_key = ListedDevice { device_id: alice.device, identity_key: alice.identity_key[..32].to_vec() };
    let bad = account.sign(&DeviceList { user: alice.user, version: 1, devices: vec![short_key] });
    assert_eq!(refused(bad).await.0, StatusCode::BAD_REQUEST, "key length");
    let bad = account.sign(&DeviceList { user: UserId(0), version: 1, devices: vec![alice.listed()] });
    assert_eq!(refused(bad).await.0, StatusCode::BAD_REQUEST, "user 0");

    let (status, code_, message) = refused(account.sign(&list(bob.user, 1, &[&bob]))).await;
    assert_eq!((status, code_), (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "another user's list: {message}");

    let ghost = Dev { device: DeviceId(9), ..alice2.clone() };
    let (status, code_, message) = refused(account.sign(&list(alice.user, 1, &[&alice, &ghost]))).await;
    assert_eq!((status, code_), (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed));
    assert!(message.contains("device 9"), "{message}");
    let wrong_key = Dev { identity_key: bob.identity_key.clone(), ..alice2.clone() };
    let (status, code_, message) = refused(account.sign(&list(alice.user, 1, &[&alice, &wrong_key]))).await;
    assert_eq!((status, code_), (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed));
    assert!(message.contains("device 2"), "{message}");
    let no_keys = app.client();
    no_keys.login("alice", PASSWORD, None).await.expect("login");
    let no_keys = Dev { device: no_keys.device_id().await.expect("device"), ..alice2.clone() };
    assert_eq!(no_keys.device, DeviceId(3));
    let (status, _, message) = refused(account.sign(&list(alice.user, 1, &[&alice, &no_keys]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a device without keys: {message}");

    // Not JSON of the right shape.
    let resp = call(&app, &alice, Method::PUT, "/api/v1/users/@me/device-list", Some(json!({"signed": {"list": "AAAA"}}))).await;
    assert_eq!(status_and_code(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest));
    let resp =
        call(&app, &alice, Method::PUT, "/api/v1/users/@me/device-list", Some(json!({"signed": good, "extra": true}))).await;
    assert_eq!(status_and_code(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest));
    let resp =
        call(&app, &alice, Method::PUT, &format!("/api/v1/users/{}/device-list", alice.user), Some(json!({"signed": good})))
            .await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "one publishes one's own list only");

    assert_eq!(app.count("account_identities").await, 0, "refused lists stored nothing");
    assert_eq!(linked(&alice).await, [(1, false), (2, false), (3, false)]);
    assert_eq!(status_and_code(get_list(&app, &bob, &alice.user.to_string()).await).await.0, StatusCode::NOT_FOUND);

    assert_eq!(publish(&app, &alice, &good, None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(linked(&alice).await, [(1, true), (2, true), (3, false)]);
    app.shutdown().await;
}

async fn stale_lists_and_other_account_keys_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let alice2 = log_in(&app, "alice", "second").await;
    let bob = register(&app, "bob").await;
    let account = AccountKey::generate();
    let v3 = account.sign(&list(alice.user, 3, &[&alice]));
    assert_eq!(publish(&app, &alice, &v3, None).await.status(), StatusCode::NO_CONTENT);
    let backup = json!({"sealed": Base64Bytes(vec![7; 100])});
    assert_eq!(
        call(&app, &alice, Method::PUT, "/api/v1/users/@me/recovery", Some(backup)).await.status(),
        StatusCode::NO_CONTENT
    );

    for version in [3, 2, 0] {
        let (status, code_, message) =
            code(publish(&app, &alice, &account.sign(&list(alice.user, version, &[&alice, &alice2])), None).await).await;
        assert_eq!((status, code_), (StatusCode::CONFLICT, ErrorCode::Conflict), "version {version}");
        assert!(message.contains("stale"), "{message}");
    }
    // Another account key: refused without the password, and with a wrong one.
    let other = AccountKey::generate();
    let v4 = other.sign(&list(alice.user, 4, &[&alice2]));
    let (status, code_, message) = code(publish(&app, &alice2, &v4, None).await).await;
    assert_eq!((status, code_), (StatusCode::CONFLICT, ErrorCode::Conflict));
    assert!(message.contains("account key differs"), "{message}");
    assert_eq!(
        status_and_code(publish(&app, &alice2, &v4, Some("not-the-password")).await).await,
        (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials)
    );
    let read: SignedDeviceList = json_of(get_list(&app, &bob, &alice.user.to_string()).await, StatusCode::OK).await;
    assert_eq!(read, v3, "refused lists changed nothing");
    assert_eq!(linked(&alice).await, [(1, true), (2, false)]);

    // With the password, a new account key: stale versions are still refused.
    let stale = other.sign(&list(alice.user, 3, &[&alice2]));
    assert_eq!(status_and_code(publish(&app, &alice2, &stale, Some(PASSWORD)).await).await.0, StatusCode::CONFLICT);
    assert_eq!(publish(&app, &alice2, &v4, Some(PASSWORD)).await.status(), StatusCode::NO_CONTENT);
    let read: SignedDeviceList = json_of(get_list(&app, &bob, &alice.user.to_string()).await, StatusCode::OK).await;
    assert_eq!(read, v4);
    assert_eq!(linked(&alice).await, [(1, false), (2, true)]);
    let resp = call(&app, &alice2, Method::GET, "/api/v1/users/@me/recovery", None).await;
    assert_eq!(status_and_code(resp).await.0, StatusCode::NOT_FOUND, "the backup sealed the old account key");
    // The old key no longer publishes.
    let old = account.sign(&list(alice.user, 5, &[&alice, &alice2]));
    assert_eq!(status_and_code(publish(&app, &alice, &old, None).await).await.0, StatusCode::CONFLICT);
    app.shutdown().await;
}

/// An envelope for `to`.
fn envelope(to: &Dev) -> Value {
    json!({"device_id": to.device.0, "registration_id": to.registration_id, "kind": kind::WHISPER, "content": "AAECAw=="})
}

async fn pending_devices_get_no_bundle_and_no_envelope(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let account = AccountKey::generate();
    assert_eq!(publish(&app, &bob, &account.sign(&list(bob.user, 1, &[&bob])), None).await.status(), StatusCode::NO_CONTENT);
    // A device logged in with the password alone is pending.
    let bob2 = log_in(&app, "bob", "new phone").await;
    assert_eq!(linked(&bob2).await, [(1, true), (2, false)]);

    let bundles: UserBundles =
        json_of(call(&app, &alice, Method::GET, &format!("/api/v1/keys/{}", bob.user), None).await, StatusCode::OK).await;
    assert_eq!(bundles.devices.iter().map(|d| d.device_id.0).collect::<Vec<_>>(), [1], "no bundle of the pending device");
    let resp = call(&app, &alice, Method::GET, &format!("/api/v1/keys/{}/2", bob.user), None).await;
    assert_eq!(status_and_code(resp).await, (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    // Its own user's other devices do not hand it one either.
    let resp = call(&app, &bob, Method::GET, &format!("/api/v1/keys/{}", bob.user), None).await;
    assert_eq!(status_and_code(resp).await.0, StatusCode::NOT_FOUND);

    let send = |body: Value| {
        let (app, alice) = (&app, &alice);
        async move { call(app, alice, Method::POST, "/api/v1/messages", Some(body)).await }
    };
    let resp = send(json!({"recipient": bob.user, "messages": [envelope(&bob), envelope(&bob2)]})).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: ApiErrorBody = resp.json().await.expect("body");
    assert_eq!(body.error.code, ErrorCode::DeviceMismatch);
    let details: SendMismatch = serde_json::from_value(body.error.details.expect("details")).expect("mismatch");
    assert_eq!(details.recipient.extra_devices, [DeviceId(2)]);
    assert!(details.recipient.missing_devices.is_empty() && details.recipient.stale_devices.is_empty());
    assert_eq!(app.count("envelopes").await, 0);
    let resp = send(json!({"recipient": bob.user, "messages": [envelope(&bob)]})).await;
    assert_eq!(resp.status(), StatusCode::OK, "a send to the linked devices needs no envelope for the pending one");
    let queue = |dev: &Dev| {
        let dev = dev.clone();
        async move {
            dev.client
                .api::<copains_client_core::messages::Queue>(Method::GET, "/api/v1/messages", None::<&()>)
                .await
                .expect("queue")
        }
    };
    assert_eq!(queue(&bob).await.envelopes.len(), 1);
    assert!(queue(&bob2).await.envelopes.is_empty());

    // Once a new version lists it, it receives.
    let v2 = account.sign(&list(bob.user, 2, &[&bob, &bob2]));
    assert_eq!(publish(&app, &bob2, &v2, None).await.status(), StatusCode::NO_CONTENT);
    let resp = send(json!({"recipient": bob.user, "messages": [envelope(&bob)]})).await;
    let body: ApiErrorBody = resp.json().await.expect("body");
    let details: SendMismatch = serde_json::from_value(body.error.details.expect("details")).expect("mismatch");
    assert_eq!(details.recipient.missing_devices, [DeviceId(2)]);
    assert_eq!(
        send(json!({"recipient": bob.user, "messages": [envelope(&bob), envelope(&bob2)]})).await.status(),
        StatusCode::OK
    );
    assert_eq!(queue(&bob2).await.envelopes.len(), 1);
    app.shutdown().await;
}

async fn a_pending_device_is_linked_over_the_gateway(backend: Backend) {
    let app = spawn(backend).await;
    let bob = register(&app, "bob").await;
    let bob2 = log_in(&app, "bob", "new phone").await;
    let open = |dev: &Dev, pake: Vec<u8>| {
        let (app, dev) = (&app, dev.clone());
        async move { call(app, &dev, Method::POST, "/api/v1/users/@me/link-requests", Some(json!({"pake": Base64Bytes(pake)}))).await }
    };
    let (status, _, message) = code(open(&bob2, vec![1; 32]).await).await;
    assert_eq!(status, StatusCode::CONFLICT, "no list, nothing to link to: {message}");

    let account = AccountKey::generate();
    assert_eq!(publish(&app, &bob, &account.sign(&list(bob.user, 1, &[&bob])), None).await.status(), StatusCode::NO_CONTENT);
    let (mut linked_ws, _) = identified(&app.ws_url, &bob.client.access_token().await.expect("token")).await;
    let (mut pending_ws, _) = identified(&app.ws_url, &bob2.client.access_token().await.expect("token")).await;

    assert_eq!(status_and_code(open(&bob, vec![1; 32]).await).await.0, StatusCode::CONFLICT, "already linked");
    assert_eq!(status_and_code(open(&bob2, vec![1; PAKE_MAX_BYTES + 1]).await).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(status_and_code(open(&bob2, Vec::new()).await).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let no_keys = app.client();
    no_keys.login("bob", PASSWORD, None).await.expect("login");
    let no_keys = Dev { client: no_keys, ..bob2.clone() };
    assert_eq!(status_and_code(open(&no_keys, vec![1; 32]).await).await.0, StatusCode::CONFLICT, "no keys yet");
    let own = call(&app, &bob2, Method::GET, "/api/v1/users/@me/link-requests/@me", None).await;
    assert_eq!(status_and_code(own).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.count("link_requests").await, 0);

    let request: LinkRequest = json_of(open(&bob2, vec![1; PAKE_MAX_BYTES]).await, StatusCode::CREATED).await;
    assert_eq!(
        (request.device_id, request.device_name.as_str(), request.identity_key.0.clone(), request.pake.0.clone()),
        (bob2.device, "new phone", bob2.identity_key.clone(), vec![1; PAKE_MAX_BYTES])
    );
    assert_eq!(request.expires_at - request.created_at, LINK_REQUEST_TTL_MS);
    let seen: LinkRequest = serde_json::from_value(next_event(&mut linked_ws, event_name::LINK_REQUEST).await).expect("request");
    assert_eq!(seen, request, "the linked device hears of it");
    let listed: Vec<LinkRequest> =
        json_of(call(&app, &bob, Method::GET, "/api/v1/users/@me/link-requests", None).await, StatusCode::OK).await;
    assert_eq!(listed, std::slice::from_ref(&request));
    let resp = call(&app, &bob2, Method::GET, "/api/v1/users/@me/link-requests", None).await;
    assert_eq!(status_and_code(resp).await, (StatusCode::FORBIDDEN, ErrorCode::Forbidden), "pending devices do not list them");

    let answer = |dev: &Dev, to: u32, pake: Vec<u8>, sealed: Vec<u8>| {
        let (app, dev) = (&app, dev.clone());
        async move {
            let body = json!({"pake": Base64Bytes(pake), "sealed": Base64Bytes(sealed)});
            call(app, &dev, Method::POST, &format!("/api/v1/users/@me/link-requests/{to}/answer"), Some(body)).await
        }
    };
    assert_eq!(
        status_and_code(answer(&bob2, 2, vec![2; 32], vec![3; 100]).await).await,
        (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
        "a pending device does not answer"
    );
    assert_eq!(
        status_and_code(answer(&bob, 2, vec![2; PAKE_MAX_BYTES + 1], vec![3; 100]).await).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        status_and_code(answer(&bob, 2, vec![2; 32], vec![3; SEALED_MAX_BYTES + 1]).await).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(status_and_code(answer(&bob, 2, vec![2; 32], Vec::new()).await).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(status_and_code(answer(&bob, 9, vec![2; 32], vec![3; 100]).await).await.0, StatusCode::NOT_FOUND);
    assert_eq!(status_and_code(answer(&bob, 200, vec![2; 32], vec![3; 100]).await).await.0, StatusCode::BAD_REQUEST);
    let own: OwnLinkRequest =
        json_of(call(&app, &bob2, Method::GET, "/api/v1/users/@me/link-requests/@me", None).await, StatusCode::OK).await;
    assert_eq!((own.request, own.answer), (request.clone(), None), "refused answers stored nothing");

    assert_eq!(answer(&bob, 2, vec![2; 32], vec![3; 100]).await.status(), StatusCode::NO_CONTENT);
    let got: LinkAnswer = serde_json::from_value(next_event(&mut pending_ws, event_name::LINK_ANSWER).await).expect("answer");
    let expected = LinkAnswer { from_device: bob.device, pake: vec![2; 32].into(), sealed: vec![3; 100].into() };
    assert_eq!(got, expected, "the pending device receives the answer");
    let own: OwnLinkRequest =
        json_of(call(&app, &bob2, Method::GET, "/api/v1/users/@me/link-requests/@me", None).await, StatusCode::OK).await;
    assert_eq!((own.request, own.answer), (request.clone(), Some(expected)));
    let listed: Vec<LinkRequest> =
        json_of(call(&app, &bob, Method::GET, "/api/v1/users/@me/link-requests", None).await, StatusCode::OK).await;
    assert_eq!(listed, [request], "answers are for the pending device only");

    // The new device, holding the account key now, adds itself to the list: linked.
    let v2 = account.sign(&list(bob.user, 2, &[&bob, &bob2]));
    assert_eq!(publish(&app, &bob2, &v2, None).await.status(), StatusCode::NO_CONTENT);
    let update: DeviceListUpdate =
        serde_json::from_value(next_event(&mut linked_ws, event_name::DEVICE_LIST_UPDATE).await).expect("update");
    assert_eq!(update, DeviceListUpdate { user_id: bob.user, version: 2 });
    assert_eq!(linked(&bob).await, [(1, true), (2, true), (3, false)]);
    let own = call(&app, &bob2, Method::GET, "/api/v1/users/@me/link-requests/@me", None).await;
    assert_eq!(status_and_code(own).await.0, StatusCode::NOT_FOUND, "a linked device's request is closed");
    assert_eq!(app.count("link_requests").await, 0);
    app.shutdown().await;
}

async fn link_requests_are_declined_or_withdrawn(backend: Backend) {
    let app = spawn(backend).await;
    let bob = register(&app, "bob").await;
    let account = AccountKey::generate();
    assert_eq!(publish(&app, &bob, &account.sign(&list(bob.user, 1, &[&bob])), None).await.status(), StatusCode::NO_CONTENT);
    let bob2 = log_in(&app, "bob", "second").await;
    let bob3 = log_in(&app, "bob", "third").await;
    let open = |dev: &Dev| {
        let (app, dev) = (&app, dev.clone());
        async move {
            let resp = call(app, &dev, Method::POST, "/api/v1/users/@me/link-requests", Some(json!({"pake": "AAAA"}))).await;
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
    };
    let delete = |dev: &Dev, which: &str| {
        let (app, dev, path) = (&app, dev.clone(), format!("/api/v1/users/@me/link-requests/{which}"));
        async move { call(app, &dev, Method::DELETE, &path, None).await.status() }
    };
    open(&bob2).await;
    open(&bob3).await;
    assert_eq!(delete(&bob3, "2").await, StatusCode::FORBIDDEN, "a pending device declines only its own");
    assert_eq!(delete(&bob, "2").await, StatusCode::NO_CONTENT, "declined by a linked device");
    assert_eq!(delete(&bob, "2").await, StatusCode::NOT_FOUND);
    assert_eq!(delete(&bob3, "@me").await, StatusCode::NO_CONTENT, "withdrawn");
    open(&bob3).await;
    assert_eq!(delete(&bob3, "3").await, StatusCode::NO_CONTENT, "withdrawn by id");
    assert_eq!(delete(&bob, "abc").await, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("link_requests").await, 0);

    // A new request replaces the earlier one and its answer.
    open(&bob2).await;
    let body = json!({"pake": "AQID", "sealed": "BAUG"});
    let resp = call(&app, &bob, Method::POST, "/api/v1/users/@me/link-requests/2/answer", Some(body)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    open(&bob2).await;
    let own: OwnLinkRequest =
        json_of(call(&app, &bob2, Method::GET, "/api/v1/users/@me/link-requests/@me", None).await, StatusCode::OK).await;
    assert_eq!(own.answer, None);
    assert_eq!(app.count("link_requests").await, 1);
    // Removing the device closes its request.
    bob.client.remove_device(bob2.device).await.expect("remove");
    assert_eq!(app.count("link_requests").await, 0);
    app.shutdown().await;
}

async fn only_linked_devices_store_the_recovery_backup(backend: Backend) {
    let app = spawn(backend).await;
    let bob = register(&app, "bob").await;
    let put = |dev: &Dev, sealed: Vec<u8>| {
        let (app, dev) = (&app, dev.clone());
        async move { call(app, &dev, Method::PUT, "/api/v1/users/@me/recovery", Some(json!({"sealed": Base64Bytes(sealed)}))).await }
    };
    let get = |dev: &Dev| {
        let (app, dev) = (&app, dev.clone());
        async move { call(app, &dev, Method::GET, "/api/v1/users/@me/recovery", None).await }
    };
    assert_eq!(status_and_code(put(&bob, vec![1; 64]).await).await, (StatusCode::FORBIDDEN, ErrorCode::Forbidden), "no list yet");
    let account = AccountKey::generate();
    assert_eq!(publish(&app, &bob, &account.sign(&list(bob.user, 1, &[&bob])), None).await.status(), StatusCode::NO_CONTENT);
    let bob2 = log_in(&app, "bob", "pending").await;
    assert_eq!(status_and_code(put(&bob2, vec![1; 64]).await).await, (StatusCode::FORBIDDEN, ErrorCode::Forbidden));
    assert_eq!(status_and_code(get(&bob).await).await, (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    assert_eq!(status_and_code(put(&bob, Vec::new()).await).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(status_and_code(put(&bob, vec![1; SEALED_MAX_BYTES + 1]).await).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.count("recovery_backups").await, 0);

    assert_eq!(put(&bob, vec![1; SEALED_MAX_BYTES]).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(put(&bob, vec![2; 80]).await.status(), StatusCode::NO_CONTENT, "replaced");
    // A pending device reads it (it recovers with it).
    let read: RecoveryBackup = json_of(get(&bob2).await, StatusCode::OK).await;
    assert_eq!(read.sealed.0, vec![2; 80]);
    let other = register(&app, "carol").await;
    assert_eq!(status_and_code(get(&other).await).await.0, StatusCode::NOT_FOUND, "one's own backup only");
    app.shutdown().await;
}
