//! The browser bindings: the [`Engine`] for the web app, over the page's REST client and
//! IndexedDB (both provided by the page as JavaScript objects).
//!
//! The page moves opaque bytes and JSON only: every key, every ratchet step, the local store's
//! encryption and the safety numbers are computed here, by the same code the native client
//! runs. Results cross the boundary as JSON text; errors as `Error`s whose message starts with
//! a stable code (`wrong_passphrase:`, `store:`, `http:`, `crypto:`, `send:`,
//! `untrusted_identity:`, `not_linked:`, `wrong_code:`, `wrong_recovery_key:`, `identity:`).

use async_trait::async_trait;
use js_sys::{Array, Promise, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::crypto::account::AccountError;
use crate::crypto::{VaultBackend, VaultError};
use crate::devices::LinkRequest;
use crate::engine::{
    Answer, ChannelDraft, ChannelEntry, Engine as CoreEngine, HistoryEntry, HistoryQuery, Incoming, MessagingError, SearchQuery,
    Transport,
};
use crate::ids::{ChannelId, DeviceId, MessageId, SessionId, UserId};
use crate::messages::Envelope;

#[wasm_bindgen(typescript_custom_section)]
const TS_INTERFACES: &str = r#"
export interface VaultStore {
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  writeBatch(putKeys: Uint8Array[], putValues: Uint8Array[], deletes: Uint8Array[]): Promise<void>;
}
export interface Http {
  request(method: string, path: string, body: string | undefined): Promise<{ status: number; body: string }>;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The page's IndexedDB store of sealed records.
    #[wasm_bindgen(typescript_type = "VaultStore")]
    pub type JsVaultStore;
    #[wasm_bindgen(method, catch, js_name = get)]
    fn get(this: &JsVaultStore, key: Uint8Array) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch, js_name = writeBatch)]
    fn write_batch(this: &JsVaultStore, put_keys: Array, put_values: Array, deletes: Array) -> Result<Promise, JsValue>;

    /// The page's authenticated REST client.
    #[wasm_bindgen(typescript_type = "Http")]
    pub type JsHttp;
    #[wasm_bindgen(method, catch, js_name = request)]
    fn request(this: &JsHttp, method: &str, path: &str, body: Option<String>) -> Result<Promise, JsValue>;
}

fn js_text(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| "unknown error".to_owned())
}

async fn settle(p: Result<Promise, JsValue>) -> Result<JsValue, String> {
    JsFuture::from(p.map_err(|e| js_text(&e))?).await.map_err(|e| js_text(&e))
}

struct IdbBackend(JsVaultStore);

#[async_trait(?Send)]
impl VaultBackend for IdbBackend {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let value = settle(self.0.get(Uint8Array::from(key))).await.map_err(VaultError::Backend)?;
        if value.is_undefined() || value.is_null() {
            return Ok(None);
        }
        let bytes = value.dyn_into::<Uint8Array>().map_err(|_| VaultError::Backend("a record is not bytes".into()))?;
        Ok(Some(bytes.to_vec()))
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        self.write_batch(&[(key.to_vec(), value.to_vec())], &[]).await
    }
    async fn delete(&self, key: &[u8]) -> Result<(), VaultError> {
        self.write_batch(&[], &[key.to_vec()]).await
    }
    async fn put_many(&self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), VaultError> {
        self.write_batch(records, &[]).await
    }
    async fn write_batch(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), VaultError> {
        let (keys, values, gone) = (Array::new(), Array::new(), Array::new());
        for (k, v) in puts {
            keys.push(&Uint8Array::from(k.as_slice()));
            values.push(&Uint8Array::from(v.as_slice()));
        }
        for k in deletes {
            gone.push(&Uint8Array::from(k.as_slice()));
        }
        settle(self.0.write_batch(keys, values, gone)).await.map(drop).map_err(VaultError::Backend)
    }
}

struct FetchTransport(JsHttp);

#[async_trait(?Send)]
impl Transport for FetchTransport {
    async fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, String> {
        let answer = settle(self.0.request(method, path, body)).await?;
        let status = js_sys::Reflect::get(&answer, &"status".into()).ok().and_then(|s| s.as_f64()).ok_or("no status")?;
        let body = js_sys::Reflect::get(&answer, &"body".into()).ok().and_then(|b| b.as_string()).unwrap_or_default();
        Ok(Answer { status: status as u16, body: body.into_bytes() })
    }
}

fn error(e: MessagingError) -> JsValue {
    let code = match &e {
        MessagingError::Vault(VaultError::WrongPassphrase) => "wrong_passphrase",
        MessagingError::Vault(_) => "store",
        MessagingError::Api { .. } | MessagingError::Transport(_) => "http",
        MessagingError::Crypto(_) => "crypto",
        MessagingError::Send(_) | MessagingError::Stopped => "send",
        MessagingError::UntrustedIdentity { .. } => "untrusted_identity",
        MessagingError::NotLinked => "not_linked",
        MessagingError::Account(AccountError::WrongCode) => "wrong_code",
        MessagingError::Account(AccountError::WrongRecoveryKey) => "wrong_recovery_key",
        MessagingError::Account(_) | MessagingError::DeviceList(_) => "identity",
    };
    js_sys::Error::new(&format!("{code}: {e}")).into()
}

fn parse_id<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, JsValue> {
    s.parse().map_err(|_| JsValue::from(js_sys::Error::new(&format!("invalid: {what}"))))
}

fn json<T: Serialize>(v: &T) -> Result<String, JsValue> {
    serde_json::to_string(v).map_err(|e| JsValue::from(js_sys::Error::new(&e.to_string())))
}

#[derive(Serialize)]
struct Positioned<'a> {
    pos: u64,
    #[serde(flatten)]
    entry: &'a HistoryEntry,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum JsEvent<'a> {
    Message { entry: Positioned<'a> },
    Undecryptable { entry: Positioned<'a> },
    Repaired { conversation: String, pos: u64 },
    IdentityChanged { user: String, entry: Option<Positioned<'a>> },
    Linked,
    LinkFailed { reason: &'a str },
    LinkRequested { request: &'a LinkRequest },
    OwnDevicesChanged { added: Vec<u32>, removed: Vec<u32> },
    AccountReplaced,
    DeviceRemoved,
    RetryRefused { user: String, device: u32, reason: crate::engine::RetryRefusal },
    ChannelEntry { entry: &'a ChannelEntry },
    ChannelMessageDeleted { channel_id: ChannelId, id: MessageId },
}

/// A link request as the page shows it (without the exchange's message).
#[derive(Serialize)]
struct RequestSummary {
    device_id: u32,
    device_name: String,
    created_at: i64,
    expires_at: i64,
}

impl From<&LinkRequest> for RequestSummary {
    fn from(r: &LinkRequest) -> Self {
        Self { device_id: r.device_id.0, device_name: r.device_name.clone(), created_at: r.created_at, expires_at: r.expires_at }
    }
}

/// The engine of this browser's device.
#[wasm_bindgen]
pub struct Engine {
    inner: CoreEngine<FetchTransport>,
}

#[wasm_bindgen]
impl Engine {
    /// Opens (or creates) the device's encrypted store with `passphrase`.
    #[wasm_bindgen(js_name = open)]
    pub async fn open(
        store: JsVaultStore,
        http: JsHttp,
        passphrase: String,
        user_id: String,
        device_id: u32,
        session_id: String,
        now: f64,
    ) -> Result<Engine, JsValue> {
        let me: UserId = parse_id(&user_id, "user id")?;
        let session: SessionId = parse_id(&session_id, "session id")?;
        let inner = CoreEngine::open(
            FetchTransport(http),
            Box::new(IdbBackend(store)),
            &passphrase,
            me,
            DeviceId(device_id),
            session,
            now as i64,
        )
        .await
        .map_err(error)?;
        Ok(Engine { inner })
    }

    /// Publishes a new device's keys and tops up prekeys. JSON `Event[]`.
    pub async fn start(&mut self, now: f64) -> Result<String, JsValue> {
        self.inner.start(now as i64).await.map_err(error)?;
        self.events()
    }

    /// Fetches and decrypts the offline queue. JSON `Event[]`.
    #[wasm_bindgen(js_name = drainQueue)]
    pub async fn drain_queue(&mut self, now: f64) -> Result<String, JsValue> {
        self.inner.drain_queue(now as i64).await.map_err(error)?;
        self.events()
    }

    /// Processes the `d` of an `ENVELOPE` dispatch (JSON text). JSON `Event[]`.
    #[wasm_bindgen(js_name = handleEnvelope)]
    pub async fn handle_envelope(&mut self, envelope_json: String, now: f64) -> Result<String, JsValue> {
        let envelope: Envelope = serde_json::from_str(&envelope_json)
            .map_err(|e| JsValue::from(js_sys::Error::new(&format!("invalid: envelope: {e}"))))?;
        self.inner.handle_envelope(envelope, now as i64).await;
        self.events()
    }

    /// Envelope ids to acknowledge over the gateway (JSON `string[]`).
    #[wasm_bindgen(js_name = takeAcks)]
    pub fn take_acks(&mut self) -> Result<String, JsValue> {
        json(&self.inner.take_acks())
    }

    /// Prekey top-up and signed prekey rotation.
    pub async fn maintain(&mut self, now: f64) -> Result<(), JsValue> {
        self.inner.maintain(now as i64).await.map_err(error)
    }

    /// Sends a direct message. JSON history entry.
    #[wasm_bindgen(js_name = sendDm)]
    pub async fn send_dm(&mut self, to: String, body: String, now: f64) -> Result<String, JsValue> {
        let to: UserId = parse_id(&to, "user id")?;
        let (message, pos) = self.inner.send_dm_positioned(to, &body, now as i64).await.map_err(error)?;
        json(&Positioned { pos: pos.unwrap_or(0), entry: &HistoryEntry::Message(message) })
    }

    /// Events raised outside `start`, `drainQueue` and `handleEnvelope` (by a send: a
    /// contact's changed safety number). JSON `Event[]`.
    #[wasm_bindgen(js_name = takeEvents)]
    pub fn take_events(&mut self) -> Result<String, JsValue> {
        self.events()
    }

    /// Entries of a conversation before position `before` (the newest when absent), oldest
    /// first. JSON `HistoryEntry[]`.
    pub async fn history(&self, conversation: String, before: Option<f64>, limit: u32) -> Result<String, JsValue> {
        let conversation: UserId = parse_id(&conversation, "user id")?;
        let page = self.inner.history(conversation, before.map(|b| b as u64), limit.min(500) as usize).await.map_err(error)?;
        json(&page.iter().map(|(pos, entry)| Positioned { pos: *pos, entry }).collect::<Vec<_>>())
    }

    /// The conversations, most recent first. JSON `Conversation[]`.
    pub async fn conversations(&self) -> Result<String, JsValue> {
        #[derive(Serialize)]
        struct Summary<'a> {
            user: String,
            last: Option<Positioned<'a>>,
            unread: u64,
        }
        let list = self.inner.conversations().await.map_err(error)?;
        let out: Vec<Summary<'_>> = list
            .iter()
            .map(|c| Summary {
                user: c.user.to_string(),
                last: c.last.as_ref().map(|(pos, entry)| Positioned { pos: *pos, entry }),
                unread: c.unread,
            })
            .collect();
        json(&out)
    }

    /// Marks a conversation read.
    #[wasm_bindgen(js_name = markRead)]
    pub async fn mark_read(&self, conversation: String) -> Result<(), JsValue> {
        let conversation: UserId = parse_id(&conversation, "user id")?;
        self.inner.mark_read(conversation).await.map_err(error)
    }

    /// The safety number with `user` (one per account). JSON `{number, verified, changed}`.
    #[wasm_bindgen(js_name = safetyNumber)]
    pub async fn safety_number(&mut self, user: String, now: f64) -> Result<String, JsValue> {
        let user: UserId = parse_id(&user, "user id")?;
        let number = self.inner.safety_number(user, now as i64).await.map_err(error)?;
        json(&number)
    }

    /// Marks a contact verified, or not (`false` also accepts a changed safety number).
    #[wasm_bindgen(js_name = setVerified)]
    pub async fn set_verified(&mut self, user: String, verified: bool) -> Result<(), JsValue> {
        let user: UserId = parse_id(&user, "user id")?;
        self.inner.set_verified(user, verified).await.map_err(error)
    }

    /// Where this device stands. JSON `{state: "linked"|"pending"|"removed",
    /// unconfirmed_recovery_key: string|null}`.
    #[wasm_bindgen(js_name = accountState)]
    pub fn account_state(&self) -> Result<String, JsValue> {
        #[derive(Serialize)]
        struct State {
            state: crate::engine::LinkState,
            unconfirmed_recovery_key: Option<String>,
        }
        let unconfirmed_recovery_key = self.inner.unconfirmed_recovery_key();
        json(&State { state: self.inner.link_state(), unconfirmed_recovery_key })
    }

    /// The user wrote the recovery key down.
    #[wasm_bindgen(js_name = confirmRecoveryKey)]
    pub async fn confirm_recovery_key(&mut self) -> Result<(), JsValue> {
        self.inner.confirm_recovery_key().await.map_err(error)
    }

    /// Asks to be linked; returns the code to show (`1234-5678`).
    #[wasm_bindgen(js_name = beginLink)]
    pub async fn begin_link(&mut self, now: f64) -> Result<String, JsValue> {
        self.inner.begin_link(now as i64).await.map_err(error)
    }

    /// Looks for a link answer that came while offline. JSON `Event[]`.
    #[wasm_bindgen(js_name = pollLink)]
    pub async fn poll_link(&mut self, now: f64) -> Result<String, JsValue> {
        self.inner.poll_link(now as i64).await.map_err(error)?;
        self.events()
    }

    /// Handles a dispatch (its `d` as JSON text): `LINK_REQUEST`, `LINK_ANSWER`,
    /// `DEVICE_LIST_UPDATE`, the channel message events (`MESSAGE_*`, `REACTION_*`,
    /// `PINS_UPDATE`: `channel_entry` and `channel_message_deleted` events come out) and the
    /// membership and channel changes (the next channel send fetches the recipients again).
    /// JSON `Event[]`.
    #[wasm_bindgen(js_name = handleEvent)]
    pub async fn handle_event(&mut self, name: String, payload_json: String, now: f64) -> Result<String, JsValue> {
        let data: serde_json::Value = serde_json::from_str(&payload_json)
            .map_err(|e| JsValue::from(js_sys::Error::new(&format!("invalid: event: {e}"))))?;
        self.inner.handle_event(&name, data, now as i64).await.map_err(error)?;
        self.events()
    }

    /// Links this device with the recovery key. JSON `Event[]`.
    #[wasm_bindgen(js_name = linkWithRecoveryKey)]
    pub async fn link_with_recovery_key(&mut self, key: String, now: f64) -> Result<String, JsValue> {
        self.inner.link_with_recovery_key(&key, now as i64).await.map_err(error)?;
        self.events()
    }

    /// Starts a new account identity with this device alone. Returns the new recovery key.
    #[wasm_bindgen(js_name = resetIdentity)]
    pub async fn reset_identity(&mut self, password: String, now: f64) -> Result<String, JsValue> {
        self.inner.reset_identity(&password, now as i64).await.map_err(error)
    }

    /// Open link requests. JSON `{device_id, device_name, created_at, expires_at}[]`.
    #[wasm_bindgen(js_name = linkRequests)]
    pub async fn link_requests(&mut self, now: f64) -> Result<String, JsValue> {
        let requests = self.inner.link_requests(now as i64).await.map_err(error)?;
        json(&requests.iter().map(RequestSummary::from).collect::<Vec<_>>())
    }

    /// Approves a pending device with the code it shows.
    #[wasm_bindgen(js_name = approveLink)]
    pub async fn approve_link(&mut self, device: u32, code: String, now: f64) -> Result<(), JsValue> {
        self.inner.approve_link(DeviceId(device), &code, now as i64).await.map_err(error)
    }

    /// Declines a link request.
    #[wasm_bindgen(js_name = declineLink)]
    pub async fn decline_link(&mut self, device: u32) -> Result<(), JsValue> {
        self.inner.decline_link(DeviceId(device)).await.map_err(error)
    }

    /// This user's devices. JSON `{id, name, linked, current, created_at, last_seen_at}[]`.
    #[wasm_bindgen(js_name = ownDevices)]
    pub async fn own_devices(&mut self, now: f64) -> Result<String, JsValue> {
        json(&self.inner.own_devices(now as i64).await.map_err(error)?)
    }

    /// Removes a device (out of the signed list, then off the server).
    #[wasm_bindgen(js_name = removeDevice)]
    pub async fn remove_device(&mut self, device: u32, now: f64) -> Result<(), JsValue> {
        self.inner.remove_device(DeviceId(device), now as i64).await.map_err(error)
    }

    /// A new recovery key (the old one stops working).
    #[wasm_bindgen(js_name = newRecoveryKey)]
    pub async fn new_recovery_key(&mut self, now: f64) -> Result<String, JsValue> {
        self.inner.new_recovery_key(now as i64).await.map_err(error)
    }

    // ---- channels (server channels and group DMs) ------------------------------------------

    /// Sends a channel message. `draft_json`: `{body, reply_to?, thread_id?, thread_name?}`.
    /// JSON `ChannelEntry`.
    #[wasm_bindgen(js_name = channelSend)]
    pub async fn channel_send(&mut self, channel: String, draft_json: String, now: f64) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let draft: ChannelDraft =
            serde_json::from_str(&draft_json).map_err(|e| JsValue::from(js_sys::Error::new(&format!("invalid: draft: {e}"))))?;
        json(&self.inner.channel_send(channel, draft, now as i64).await.map_err(error)?)
    }

    /// Edits one of this user's channel messages. JSON `ChannelEntry`.
    #[wasm_bindgen(js_name = channelEdit)]
    pub async fn channel_edit(&mut self, channel: String, message: String, body: String, now: f64) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let message: MessageId = parse_id(&message, "message id")?;
        json(&self.inner.channel_edit(channel, message, &body, now as i64).await.map_err(error)?)
    }

    /// Deletes a channel message (the `MESSAGE_DELETE` event follows).
    #[wasm_bindgen(js_name = channelDelete)]
    pub async fn channel_delete(&mut self, channel: String, message: String, now: f64) -> Result<(), JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let message: MessageId = parse_id(&message, "message id")?;
        self.inner.channel_delete(channel, message, now as i64).await.map_err(error)
    }

    /// Reacts to a channel message. JSON `ChannelEntry` (the message with its reactions).
    #[wasm_bindgen(js_name = channelReact)]
    pub async fn channel_react(&mut self, channel: String, message: String, emoji: String, now: f64) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let message: MessageId = parse_id(&message, "message id")?;
        json(&self.inner.channel_react(channel, message, &emoji, now as i64).await.map_err(error)?)
    }

    /// Takes back this user's reactions with `emoji`. JSON `ChannelEntry`.
    #[wasm_bindgen(js_name = channelUnreact)]
    pub async fn channel_unreact(
        &mut self,
        channel: String,
        message: String,
        emoji: String,
        now: f64,
    ) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let message: MessageId = parse_id(&message, "message id")?;
        json(&self.inner.channel_unreact(channel, message, &emoji, now as i64).await.map_err(error)?)
    }

    /// A page of a channel's history, oldest first. `query_json`: `{before?, after?, around?,
    /// thread_id?, limit?}`. JSON `ChannelEntry[]`.
    #[wasm_bindgen(js_name = channelHistory)]
    pub async fn channel_history(&mut self, channel: String, query_json: String, now: f64) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let query: HistoryQuery =
            serde_json::from_str(&query_json).map_err(|e| JsValue::from(js_sys::Error::new(&format!("invalid: query: {e}"))))?;
        json(&self.inner.channel_history(channel, query, now as i64).await.map_err(error)?)
    }

    /// The pinned messages of a channel. JSON `ChannelEntry[]`.
    #[wasm_bindgen(js_name = channelPins)]
    pub async fn channel_pins(&mut self, channel: String, now: f64) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        json(&self.inner.channel_pins(channel, now as i64).await.map_err(error)?)
    }

    /// Searches this device's history; the query never leaves the device. `query_json`: a
    /// `SearchQuery` (`{text, from?, dms?, channels?, has?, before?, after?, offset?,
    /// limit?}`). JSON `SearchResults`.
    pub async fn search(&mut self, query_json: String) -> Result<String, JsValue> {
        let query: SearchQuery =
            serde_json::from_str(&query_json).map_err(|e| JsValue::from(js_sys::Error::new(&format!("invalid: query: {e}"))))?;
        json(&self.inner.search(&query).await.map_err(error)?)
    }

    /// Reads one more page of a channel's history for search (see the engine's
    /// `search_crawl`). `true` when the whole channel is read.
    #[wasm_bindgen(js_name = searchCrawl)]
    pub async fn search_crawl(&mut self, channel: String, fresh: bool, now: f64) -> Result<bool, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        self.inner.search_crawl(channel, fresh, now as i64).await.map_err(error)
    }

    // ---- voice --------------------------------------------------------------------------

    /// Seals this device's media key share (`share_json`, from the media worker) for the
    /// devices among `participants_json` (`VoiceParticipant[]`, from VOICE_READY or
    /// VOICE_EPOCH) that the channel's signed device lists name. JSON `{keys: KeyShareOut[],
    /// devices: [[user, device, identity]]}`: send `keys` in VOICE_KEYS frames of at most 100.
    #[cfg(feature = "voice")]
    #[wasm_bindgen(js_name = sealVoiceKeys)]
    pub async fn seal_voice_keys(
        &mut self,
        channel: String,
        epoch: f64,
        participants_json: String,
        share_json: String,
        now: f64,
    ) -> Result<String, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let invalid = |what: &str, e: serde_json::Error| JsValue::from(js_sys::Error::new(&format!("invalid: {what}: {e}")));
        let participants: Vec<crate::voice_signal::VoiceParticipant> =
            serde_json::from_str(&participants_json).map_err(|e| invalid("participants", e))?;
        let share: crate::voice::MediaKeyShare = serde_json::from_str(&share_json).map_err(|e| invalid("share", e))?;
        let sealed = self.inner.seal_voice_keys(channel, epoch as u64, &participants, &share, now as i64).await.map_err(error)?;
        let devices: Vec<(String, u32, crate::bytes::Base64Bytes)> =
            sealed.devices.into_iter().map(|(u, d, k)| (u.to_string(), d.0, k.into())).collect();
        json(&serde_json::json!({ "keys": sealed.keys, "devices": devices }))
    }

    /// Opens a `VOICE_KEY` event's payload (`key_json`), against the room as the page knows
    /// it (`participants_json`, from the latest VOICE_READY or VOICE_EPOCH). JSON
    /// `{from_user, from_device, epoch, share}`: hand `share` to the media worker; frames its
    /// slot opens are `from_user`'s.
    #[cfg(feature = "voice")]
    #[wasm_bindgen(js_name = openVoiceKey)]
    pub async fn open_voice_key(&mut self, key_json: String, participants_json: String, now: f64) -> Result<String, JsValue> {
        let invalid = |what: &str, e: serde_json::Error| JsValue::from(js_sys::Error::new(&format!("invalid: {what}: {e}")));
        let key: crate::voice_signal::VoiceKey = serde_json::from_str(&key_json).map_err(|e| invalid("voice key", e))?;
        let participants: Vec<crate::voice_signal::VoiceParticipant> =
            serde_json::from_str(&participants_json).map_err(|e| invalid("participants", e))?;
        let opened = self.inner.open_voice_key(&key, &participants, now as i64).await.map_err(error)?;
        json(&serde_json::json!({
            "from_user": opened.from_user.to_string(),
            "from_device": opened.from_device.0,
            "epoch": opened.epoch,
            "share": opened.share,
        }))
    }

    /// The voice privacy code of a room (`participants_json`: everyone in it, this device
    /// included), or `undefined` when a participant is a device no signed list names.
    #[cfg(feature = "voice")]
    #[wasm_bindgen(js_name = voicePrivacyCode)]
    pub async fn voice_privacy_code(
        &mut self,
        channel: String,
        epoch: f64,
        participants_json: String,
        now: f64,
    ) -> Result<Option<String>, JsValue> {
        let channel: ChannelId = parse_id(&channel, "channel id")?;
        let participants: Vec<crate::voice_signal::VoiceParticipant> = serde_json::from_str(&participants_json)
            .map_err(|e| JsValue::from(js_sys::Error::new(&format!("invalid: participants: {e}"))))?;
        self.inner.voice_privacy_code(channel, epoch as u64, &participants, now as i64).await.map_err(error)
    }

    /// Seals the local store's key under a new passphrase.
    #[wasm_bindgen(js_name = changePassphrase)]
    pub async fn change_passphrase(&self, old_passphrase: String, new_passphrase: String) -> Result<(), JsValue> {
        self.inner.change_passphrase(&old_passphrase, &new_passphrase).await.map_err(error)
    }

    /// Events produced since the last call, as JSON.
    fn events(&mut self) -> Result<String, JsValue> {
        let events = self.inner.take_events_positioned();
        // The history entry each event shows, built first so that the JSON can borrow it.
        let shown: Vec<Option<HistoryEntry>> = events
            .iter()
            .map(|(event, _)| match event {
                Incoming::Message(m) => Some(HistoryEntry::Message(m.clone())),
                Incoming::RetryRequested { user, device, sent_at, .. } => Some(HistoryEntry::Undecryptable {
                    conversation: *user,
                    author: *user,
                    author_device: *device,
                    sent_at: *sent_at,
                    repaired: false,
                }),
                Incoming::IdentityChanged { user } => {
                    Some(HistoryEntry::IdentityChanged { conversation: *user, sent_at: self.inner.now() })
                }
                _ => None,
            })
            .collect();
        let out: Vec<JsEvent<'_>> = events
            .iter()
            .zip(&shown)
            .filter_map(|((event, position), entry)| {
                Some(match (event, entry) {
                    (Incoming::Message(_), Some(entry)) => {
                        JsEvent::Message { entry: Positioned { pos: position.unwrap_or(0), entry } }
                    }
                    // Only an entry kept in history is shown (not a copy from an own device).
                    (Incoming::RetryRequested { .. }, Some(entry)) => {
                        JsEvent::Undecryptable { entry: Positioned { pos: (*position)?, entry } }
                    }
                    (Incoming::Repaired { conversation, position }, _) => {
                        JsEvent::Repaired { conversation: conversation.to_string(), pos: *position }
                    }
                    (Incoming::IdentityChanged { user }, entry) => JsEvent::IdentityChanged {
                        user: user.to_string(),
                        // The entry kept in the conversation, when there is one.
                        entry: position.zip(entry.as_ref()).map(|(pos, entry)| Positioned { pos, entry }),
                    },
                    (Incoming::Linked, _) => JsEvent::Linked,
                    (Incoming::LinkFailed { reason }, _) => JsEvent::LinkFailed { reason },
                    (Incoming::LinkRequested(request), _) => JsEvent::LinkRequested { request },
                    (Incoming::OwnDevicesChanged { added, removed }, _) => JsEvent::OwnDevicesChanged {
                        added: added.iter().map(|d| d.0).collect(),
                        removed: removed.iter().map(|d| d.0).collect(),
                    },
                    (Incoming::AccountReplaced, _) => JsEvent::AccountReplaced,
                    (Incoming::DeviceRemoved, _) => JsEvent::DeviceRemoved,
                    (Incoming::RetryRefused { user, device, reason, .. }, _) => {
                        JsEvent::RetryRefused { user: user.to_string(), device: device.0, reason: *reason }
                    }
                    (Incoming::ChannelEntry(entry), _) => JsEvent::ChannelEntry { entry },
                    (Incoming::ChannelMessageDeleted { channel, id }, _) => {
                        JsEvent::ChannelMessageDeleted { channel_id: *channel, id: *id }
                    }
                    _ => return None,
                })
            })
            .collect();
        json(&out)
    }
}

#[wasm_bindgen]
extern "C" {
    /// Opens the page's store of a given name (the same store for the same name).
    #[wasm_bindgen(typescript_type = "(name: string) => Promise<VaultStore>")]
    pub type JsStoreFactory;
}

/// Runs the store conformance suite (the one the native SQLite store passes) on the page's
/// IndexedDB store: `open(name)` opens a store of that name. Resolves with the JSON list of
/// the checks that passed; rejects with the first failure.
#[wasm_bindgen(js_name = storeConformance)]
pub async fn store_conformance(open: JsStoreFactory) -> Result<String, JsValue> {
    let open: js_sys::Function = open.unchecked_into();
    let ran = crate::crypto::conformance::run(|name: &str| {
        let promise = open.call1(&JsValue::NULL, &JsValue::from_str(name));
        async move {
            let store = JsFuture::from(Promise::from(promise.map_err(|e| VaultError::Backend(js_text(&e)))?))
                .await
                .map_err(|e| VaultError::Backend(js_text(&e)))?;
            Ok(Box::new(IdbBackend(store.unchecked_into())) as Box<dyn VaultBackend>)
        }
    })
    .await
    .map_err(|f| JsValue::from(js_sys::Error::new(&format!("conformance: {f}"))))?;
    json(&ran)
}
