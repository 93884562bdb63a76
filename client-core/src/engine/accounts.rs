//! Account identities in the engine: this user's account key and device list, contacts'
//! verified device lists, device linking and the recovery key ([`crate::devices`],
//! [`crate::crypto::account`]).
//!
//! Who this device encrypts to, and whom it accepts messages from, comes from device lists
//! that verify under the account key this device knows for their owner (trusted on first use,
//! then pinned): a device the server adds on its own is in no signed list, so it gets nothing
//! and what it sends is dropped. A list whose version went backwards is refused; a new account
//! key for a known user is an identity change, kept in the conversation and announced.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Engine, HistoryEntry, Incoming, MessagingError, Transport};
use crate::bytes::Base64Bytes;
use crate::crypto::account::{self, answer_link, verify_list, AccountError, AccountKey, PendingLink, RecoveryKey};
use crate::crypto::store::Trust;
use crate::crypto::{History, VaultError};
use crate::devices::{
    DeviceList, DeviceListUpdate, LinkAnswer, LinkRequest, ListedDevice, NewLinkAnswer, NewLinkRequest, OwnLinkRequest,
    PublishDeviceList, RecoveryBackup, SignedDeviceList,
};
use crate::ids::{DeviceId, UserId};

/// Vault namespace of the account keys and device lists known per user (shared by the
/// devices of this machine's store, like contacts' identities).
pub(super) const ACCOUNTS_NS: &str = "accounts";
/// This device's own records (device-scoped namespace).
const OWN_NS: &str = "own";
const ACCOUNT_KEY: &[u8] = b"account_key";
const UNCONFIRMED_RECOVERY: &[u8] = b"recovery_unconfirmed";
const RECOVERY_NOT_UPLOADED: &[u8] = b"recovery_not_uploaded";
/// Link answers that did not open, per [`LINK_FAILURE_WINDOW_MS`], before new codes are refused.
const LINK_FAILURES_MAX: usize = 5;
const LINK_FAILURE_WINDOW_MS: i64 = 3_600_000;

/// Where this device stands in its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// In the account's signed list, holding the account key.
    Linked,
    /// Not vouched for yet: it receives nothing until a linked device or the recovery key
    /// approves it.
    Pending,
    /// It was linked, and is no longer in the list (removed, or the account key was replaced).
    Removed,
}

/// What this device knows of a user's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct KnownAccount {
    /// The account key (serialized public key).
    pub account_key: Base64Bytes,
    /// The newest verified list.
    pub list: SignedDeviceList,
    /// Its version.
    pub version: u64,
    /// The devices it names, with their identity keys.
    pub devices: Vec<(DeviceId, Base64Bytes)>,
    /// The user's trust in this account key.
    #[serde(default)]
    pub trust: Trust,
}

impl KnownAccount {
    fn new(signed: SignedDeviceList, list: &DeviceList, trust: Trust) -> Self {
        Self {
            account_key: signed.account_key.clone(),
            version: list.version,
            devices: list.devices.iter().map(|d| (d.device_id, d.identity_key.clone().into())).collect(),
            list: signed,
            trust,
        }
    }

    /// The identity key listed for a device.
    pub fn key_of(&self, device: DeviceId) -> Option<&[u8]> {
        self.devices.iter().find(|(d, _)| *d == device).map(|(_, k)| k.as_slice())
    }

    fn to_list(&self, user: UserId) -> DeviceList {
        DeviceList {
            user,
            version: self.version,
            devices: self.devices.iter().map(|(d, k)| ListedDevice { device_id: *d, identity_key: k.0.clone() }).collect(),
        }
    }
}

/// The safety number with a contact, one for the whole account on either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyNumber {
    /// 60 digits.
    pub number: String,
    /// Marked verified by this user.
    pub verified: bool,
    /// It was verified and the contact's account key changed since: nothing is sent to them
    /// until the user accepts the new number ([`Engine::set_verified`] with `false`) or
    /// verifies it.
    pub changed: bool,
}

/// One of this user's devices, as the device list settings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnDevice {
    /// The device.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// In the signed list this device verified.
    pub linked: bool,
    /// This very device.
    pub current: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last activity (RFC 3339).
    pub last_seen_at: String,
}

fn account_error(e: AccountError) -> MessagingError {
    MessagingError::Account(e)
}

impl<T: Transport> Engine<T> {
    /// Where this device stands.
    pub fn link_state(&self) -> LinkState {
        self.state
    }

    /// The recovery key made at sign-up (or at an identity reset), until
    /// [`Engine::confirm_recovery_key`]; kept in the store meanwhile, so a reload shows it again.
    pub fn unconfirmed_recovery_key(&self) -> Option<String> {
        self.recovery_unconfirmed.clone()
    }

    /// The user wrote the recovery key down: it is forgotten here.
    pub async fn confirm_recovery_key(&mut self) -> Result<(), MessagingError> {
        self.device.vault().delete(OWN_NS, UNCONFIRMED_RECOVERY).await?;
        self.recovery_unconfirmed = None;
        Ok(())
    }

    pub(super) async fn load_account_key(&mut self) -> Result<(), MessagingError> {
        let raw = self.device.vault().get(OWN_NS, UNCONFIRMED_RECOVERY).await?;
        self.recovery_unconfirmed = raw.map(|r| String::from_utf8_lossy(&r).into_owned());
        self.account = match self.device.vault().get(OWN_NS, ACCOUNT_KEY).await? {
            Some(raw) => Some(AccountKey::from_bytes(&raw).map_err(|_| VaultError::Corrupt)?),
            None => None,
        };
        Ok(())
    }

    fn my_listing(&self) -> ListedDevice {
        ListedDevice { device_id: self.my_device, identity_key: self.device.identity_key().serialize().to_vec() }
    }

    /// Works out where this device stands from the account's list on the server: creates the
    /// account identity when the account has none yet (the first device), finishes what an
    /// interrupted start left undone, and notices a removal or a replaced account key.
    pub(super) async fn sync_own_account(&mut self) -> Result<(), MessagingError> {
        self.load_account_key().await?;
        let fetched = self.fetch_list(self.me).await?;
        let Some((signed, list)) = fetched else {
            // A list this store knew cannot vanish: refused (the server would otherwise get a
            // genuine version 1 signed, or a new identity made, whenever it likes).
            if self.stored_account(self.me).await?.is_some() {
                return Err(MessagingError::DeviceList("the server no longer has this account's device list; refused".into()));
            }
            // No list yet: this is the account's first device (or an interrupted start that
            // made the key and did not publish). It creates the account identity.
            let account = match &self.account {
                Some(a) => a.clone(),
                None => {
                    let account = AccountKey::generate();
                    let recovery = RecoveryKey::generate();
                    let vault = self.device.vault();
                    vault.begin_batch();
                    vault.put(OWN_NS, ACCOUNT_KEY, &account.to_bytes()).await?;
                    vault.put(OWN_NS, UNCONFIRMED_RECOVERY, recovery.display().as_bytes()).await?;
                    vault.put(OWN_NS, RECOVERY_NOT_UPLOADED, &recovery.seal(self.me, &account)).await?;
                    vault.commit_batch().await?;
                    self.recovery_unconfirmed = Some(recovery.display());
                    self.account = Some(account.clone());
                    account
                }
            };
            let list = DeviceList { user: self.me, version: 1, devices: vec![self.my_listing()] };
            self.publish(&account, &list, None).await?;
            self.state = LinkState::Linked;
            self.upload_pending_recovery().await?;
            return Ok(());
        };
        if self.account.as_ref().is_some_and(|a| a.public() != signed.account_key.0) {
            // A list signed by another key: the identity was reset on another device, or the
            // server says so falsely. This device cannot tell which: it keeps its key, takes
            // nothing the other key signed, stops acting for the account, and says so.
            if self.state != LinkState::Removed {
                self.events.push((Incoming::AccountReplaced, None));
            }
            self.state = LinkState::Removed;
            return Ok(());
        }
        // The state follows only a list that was accepted (not older than the one known).
        let accepted = self.accept_list(self.me, signed, &list).await?;
        let mine = self.my_listing();
        self.state = match &self.account {
            Some(_) if accepted.key_of(self.my_device) == Some(mine.identity_key.as_slice()) => LinkState::Linked,
            Some(_) => LinkState::Removed,
            None => LinkState::Pending,
        };
        if self.state == LinkState::Linked {
            self.upload_pending_recovery().await?;
        }
        Ok(())
    }

    async fn upload_pending_recovery(&mut self) -> Result<(), MessagingError> {
        if let Some(sealed) = self.device.vault().get(OWN_NS, RECOVERY_NOT_UPLOADED).await? {
            self.call("PUT", "/api/v1/users/@me/recovery", Some(&RecoveryBackup { sealed: sealed.into() })).await?;
            self.device.vault().delete(OWN_NS, RECOVERY_NOT_UPLOADED).await?;
        }
        Ok(())
    }

    /// Signs and publishes a list of this account.
    async fn publish(
        &mut self,
        account: &AccountKey,
        list: &DeviceList,
        reset_password: Option<&str>,
    ) -> Result<(), MessagingError> {
        let signed = account.sign(list);
        let body = PublishDeviceList { signed: signed.clone(), reset_password: reset_password.map(str::to_owned) };
        self.call("PUT", "/api/v1/users/@me/device-list", Some(&body)).await?;
        let known = KnownAccount::new(signed, list, Trust::Default);
        self.store_account(self.me, &known).await?;
        self.checked_targets.clear();
        self.accounts.insert(self.me, known);
        Ok(())
    }

    /// Fetches `user`'s signed list and checks its signature; `None` when there is none.
    async fn fetch_list(&mut self, user: UserId) -> Result<Option<(SignedDeviceList, DeviceList)>, MessagingError> {
        let path = if user == self.me {
            "/api/v1/users/@me/device-list".to_owned()
        } else {
            format!("/api/v1/users/{user}/device-list")
        };
        let signed: SignedDeviceList = match self.api("GET", &path, None::<&()>).await {
            Ok(s) => s,
            Err(MessagingError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let list = verify_list(&signed, user).map_err(account_error)?;
        Ok(Some((signed, list)))
    }

    async fn stored_account(&self, user: UserId) -> Result<Option<KnownAccount>, MessagingError> {
        Ok(match self.device.vault().get(ACCOUNTS_NS, user.to_string().as_bytes()).await? {
            Some(raw) => Some(serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?),
            None => None,
        })
    }

    async fn store_account(&self, user: UserId, known: &KnownAccount) -> Result<(), MessagingError> {
        let raw = serde_json::to_vec(known).map_err(|e| VaultError::Backend(e.to_string()))?;
        Ok(self.device.vault().put(ACCOUNTS_NS, user.to_string().as_bytes(), &raw).await?)
    }

    /// Takes a verified list of `user` against what this device knew: refuses one older than
    /// the known version (or the same version with other devices), and reports a new account
    /// key as an identity change. Sessions with devices that left or changed key are dropped.
    pub(super) async fn accept_list(
        &mut self,
        user: UserId,
        signed: SignedDeviceList,
        list: &DeviceList,
    ) -> Result<KnownAccount, MessagingError> {
        if user == self.me && self.account.as_ref().is_some_and(|a| a.public() != signed.account_key.0) {
            // Never taken on the side (a refresh during a send, an unknown sender, a removal):
            // a linked device would otherwise sign on top of a list another key made.
            return Err(MessagingError::DeviceList(
                "the server gave a device list of this account signed by another key; refused".into(),
            ));
        }
        let known = self.stored_account(user).await?;
        let next = match known {
            None => KnownAccount::new(signed, list, Trust::Default),
            Some(k) if k.account_key == signed.account_key => {
                if list.version < k.version || (list.version == k.version && k.list.list != signed.list) {
                    return Err(MessagingError::DeviceList(format!(
                        "the server gave an older device list of user {user} (version {} after {}); refused",
                        list.version, k.version
                    )));
                }
                let next = KnownAccount::new(signed, list, k.trust);
                self.after_list_change(user, &k, &next).await?;
                next
            }
            Some(k) => {
                // A new account key: never taken in silence.
                let trust = match k.trust {
                    Trust::Default => Trust::Default,
                    Trust::Verified | Trust::Unverified => Trust::Unverified,
                };
                let next = KnownAccount::new(signed, list, trust);
                self.after_list_change(user, &k, &next).await?;
                // (This user's own new key reaches here only on a device joining the account
                // anew: `sync_own_account` reports a replacement seen by a linked device.)
                if user != self.me {
                    self.report_identity_change(user).await;
                }
                next
            }
        };
        self.store_account(user, &next).await?;
        self.refused.retain(|(u, _, _)| *u != user);
        self.checked_targets.clear();
        self.accounts.insert(user, next.clone());
        Ok(next)
    }

    async fn after_list_change(&mut self, user: UserId, old: &KnownAccount, new: &KnownAccount) -> Result<(), MessagingError> {
        for (device, key) in &old.devices {
            if new.key_of(*device) != Some(key.as_slice()) {
                self.forget_session(user, *device).await?;
            }
        }
        if user == self.me {
            // By device and key: a device number the server gives again, to a new device with a
            // new key, is a removal and an addition.
            let entries = |k: &KnownAccount| k.devices.iter().map(|(d, key)| (*d, key.0.clone())).collect::<BTreeSet<_>>();
            let (old_entries, new_entries) = (entries(old), entries(new));
            let added: Vec<DeviceId> = new_entries.difference(&old_entries).map(|(d, _)| *d).collect();
            let removed: Vec<DeviceId> = old_entries.difference(&new_entries).map(|(d, _)| *d).collect();
            if !added.is_empty() || !removed.is_empty() {
                for d in &added {
                    self.link_requests.remove(d);
                }
                self.events.push((Incoming::OwnDevicesChanged { added, removed }, None));
            }
        }
        Ok(())
    }

    async fn report_identity_change(&mut self, user: UserId) {
        if user == self.me {
            self.events.push((Incoming::AccountReplaced, None));
            return;
        }
        let entry = HistoryEntry::IdentityChanged { conversation: user, sent_at: self.now };
        let id = format!("identity/{}", self.now);
        let position = match History::new(self.device.vault()).append(&user.to_string(), &id, &entry).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not keep an identity change in history");
                None
            }
        };
        self.events.push((Incoming::IdentityChanged { user }, position));
    }

    /// `user`'s account as this device knows it now, fetched (and checked) once per run of the
    /// engine or when `refresh`. `None` when the user has no signed list.
    pub(super) async fn account_of(&mut self, user: UserId, refresh: bool) -> Result<Option<KnownAccount>, MessagingError> {
        if !refresh {
            if let Some(k) = self.accounts.get(&user) {
                return Ok(Some(k.clone()));
            }
        }
        match self.fetch_list(user).await? {
            Some((signed, list)) => Ok(Some(self.accept_list(user, signed, &list).await?)),
            None => {
                if self.stored_account(user).await?.is_some() {
                    return Err(MessagingError::DeviceList(format!(
                        "the server no longer has a device list of user {user}; refused"
                    )));
                }
                Ok(None)
            }
        }
    }

    /// Whether `user`'s signed list names `device` (with the identity key `claimed`, when
    /// given). A combination the known list does not vouch for makes one fetch of the list;
    /// refused again, it is remembered, so a stream of forged envelopes costs one fetch.
    pub(super) async fn is_vouched(
        &mut self,
        user: UserId,
        device: DeviceId,
        claimed: Option<&[u8]>,
    ) -> Result<bool, MessagingError> {
        let vouches = |k: &KnownAccount| k.key_of(device).is_some_and(|key| claimed.is_none_or(|c| c == key));
        if self.account_of(user, false).await?.as_ref().is_some_and(vouches) {
            return Ok(true);
        }
        let probe = (user, device, claimed.map(<[u8]>::to_vec));
        if self.refused.contains(&probe) {
            return Ok(false);
        }
        if self.account_of(user, true).await?.as_ref().is_some_and(vouches) {
            return Ok(true);
        }
        if self.refused.len() > 1_000 {
            self.refused.clear();
        }
        self.refused.insert(probe);
        Ok(false)
    }

    /// Handles a gateway event about accounts (`LINK_REQUEST`, `LINK_ANSWER`,
    /// `DEVICE_LIST_UPDATE`) or channels (messages, reactions, pins, and the membership and
    /// channel changes that may change who reads a channel); other names are ignored.
    pub async fn handle_event(&mut self, name: &str, data: serde_json::Value, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        let invalid = |e: serde_json::Error| MessagingError::Transport(format!("unreadable {name} event: {e}"));
        match name {
            crate::gateway::event_name::LINK_REQUEST => {
                let request: LinkRequest = serde_json::from_value(data).map_err(invalid)?;
                let stale = self.removed_here.contains(&(request.device_id, request.identity_key.0.clone()))
                    || self.accounts.get(&self.me).and_then(|k| k.key_of(request.device_id))
                        == Some(request.identity_key.0.as_slice());
                if self.state == LinkState::Linked && request.device_id != self.my_device && !stale {
                    self.link_requests.insert(request.device_id, request.clone());
                    self.events.push((Incoming::LinkRequested(request), None));
                }
            }
            crate::gateway::event_name::LINK_ANSWER => {
                let answer: LinkAnswer = serde_json::from_value(data).map_err(invalid)?;
                self.take_link_answer(&answer).await?;
            }
            crate::gateway::event_name::DEVICE_LIST_UPDATE => {
                let update: DeviceListUpdate = serde_json::from_value(data).map_err(invalid)?;
                if update.user_id == self.me {
                    let before = self.state;
                    self.sync_own_account().await?;
                    let replaced = self.events.iter().any(|(e, _)| *e == Incoming::AccountReplaced);
                    if before == LinkState::Linked && self.state == LinkState::Removed && !replaced {
                        self.events.push((Incoming::DeviceRemoved, None));
                    }
                }
            }
            // Channel messages and what changes who reads a channel.
            other => self.channel_event(other, data).await?,
        }
        Ok(())
    }

    // ---- linking, the new device's side -------------------------------------------------

    /// Asks to be linked: returns the code to show (`1234-5678`). The request lasts ten
    /// minutes; asking again replaces it with a new code.
    pub async fn begin_link(&mut self, now: i64) -> Result<String, MessagingError> {
        self.tick(now);
        if self.state == LinkState::Linked {
            return Err(MessagingError::Send("this device is already linked".into()));
        }
        // Each answer that did not open was one guess at the code: a few an hour, no more (a
        // server answering with guesses in a loop would otherwise keep asking for new codes).
        self.link_failures.retain(|t| self.now - t < LINK_FAILURE_WINDOW_MS);
        if self.link_failures.len() >= LINK_FAILURES_MAX {
            return Err(MessagingError::Send("too many answers with a wrong code in the last hour; try again later".into()));
        }
        let code = account::new_link_code();
        let identity = self.device.identity_key().serialize();
        let (pending, pake) = PendingLink::start(&code, self.me, self.my_device, &identity).map_err(account_error)?;
        let _: LinkRequest =
            self.api("POST", "/api/v1/users/@me/link-requests", Some(&NewLinkRequest { pake: pake.into() })).await?;
        self.pending_link = Some(pending);
        Ok(code)
    }

    /// Looks for an answer that came while this device was not connected.
    pub async fn poll_link(&mut self, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        if self.pending_link.is_none() {
            return Ok(());
        }
        let own: OwnLinkRequest = match self.api("GET", "/api/v1/users/@me/link-requests/@me", None::<&()>).await {
            Ok(r) => r,
            Err(MessagingError::Api { status: 404, .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(answer) = own.answer {
            self.take_link_answer(&answer).await?;
        }
        Ok(())
    }

    async fn take_link_answer(&mut self, answer: &LinkAnswer) -> Result<(), MessagingError> {
        let Some(pending) = self.pending_link.take() else { return Ok(()) };
        match pending.finish(answer.pake.as_slice(), answer.sealed.as_slice()) {
            Ok((account, their_list)) => {
                let floor = verify_list(&their_list, self.me).map_err(account_error)?.version;
                self.join_account(account, floor).await
            }
            Err(e) => {
                self.link_failures.push(self.now);
                tracing::warn!(error = %e, "a link answer did not open");
                self.events.push((Incoming::LinkFailed { reason: e.to_string() }, None));
                Ok(())
            }
        }
    }

    /// Adds this device to the account's list with the account key it was handed, and keeps
    /// the key: the device is linked.
    /// `floor`: the version the approving device knew (the list fetched now must not be older).
    async fn join_account(&mut self, account: AccountKey, floor: u64) -> Result<(), MessagingError> {
        // A device whose old key was replaced joins with the account's key now; its own copy
        // of the old key goes once the new one is kept.
        self.account = None;
        for _attempt in 0..3 {
            let Some((signed, current)) = self.fetch_list(self.me).await? else {
                return Err(MessagingError::DeviceList("the account has no device list to join".into()));
            };
            if signed.account_key.0 != account.public() {
                return Err(MessagingError::DeviceList("the account key received is not the account's".into()));
            }
            if current.version < floor {
                return Err(MessagingError::DeviceList(
                    "the server gave an older device list than the approving device's; refused".into(),
                ));
            }
            // Checked against what this store knew of the account too (versions only grow).
            let accepted = self.accept_list(self.me, signed, &current).await?;
            let version = accepted
                .version
                .checked_add(1)
                .ok_or_else(|| MessagingError::DeviceList("device list version overflow".into()))?;
            let mut devices: Vec<ListedDevice> = current.devices.into_iter().filter(|d| d.device_id != self.my_device).collect();
            devices.push(self.my_listing());
            let list = DeviceList { user: self.me, version, devices };
            match self.publish(&account, &list, None).await {
                Ok(()) => {
                    self.device.vault().put(OWN_NS, ACCOUNT_KEY, &account.to_bytes()).await?;
                    self.account = Some(account);
                    self.state = LinkState::Linked;
                    self.pending_link = None;
                    self.events.push((Incoming::Linked, None));
                    return Ok(());
                }
                // Another device changed the list meanwhile: start again from the new one.
                Err(MessagingError::Api { status: 409, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(MessagingError::DeviceList("the device list kept changing; try again".into()))
    }

    /// Links this device with the recovery key (when no linked device is left).
    pub async fn link_with_recovery_key(&mut self, typed: &str, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        let key = RecoveryKey::parse(typed).map_err(account_error)?;
        let backup: RecoveryBackup = match self.api("GET", "/api/v1/users/@me/recovery", None::<&()>).await {
            Ok(b) => b,
            Err(MessagingError::Api { status: 404, .. }) => return Err(account_error(AccountError::WrongRecoveryKey)),
            Err(e) => return Err(e),
        };
        let account = key.open(self.me, backup.sealed.as_slice()).map_err(account_error)?;
        self.join_account(account, 0).await
    }

    /// Starts a new account identity (every device and the recovery key are lost): a new
    /// account key lists this device alone. Contacts see a changed safety number. Returns the
    /// new recovery key.
    pub async fn reset_identity(&mut self, password: &str, now: i64) -> Result<String, MessagingError> {
        self.tick(now);
        let version = self.fetch_list(self.me).await?.map_or(0, |(_, l)| l.version);
        let version = version.checked_add(1).ok_or_else(|| MessagingError::DeviceList("device list version overflow".into()))?;
        let account = AccountKey::generate();
        let recovery = RecoveryKey::generate();
        let list = DeviceList { user: self.me, version, devices: vec![self.my_listing()] };
        self.publish(&account, &list, Some(password)).await?;
        let vault = self.device.vault();
        vault.put(OWN_NS, ACCOUNT_KEY, &account.to_bytes()).await?;
        vault.put(OWN_NS, UNCONFIRMED_RECOVERY, recovery.display().as_bytes()).await?;
        vault.put(OWN_NS, RECOVERY_NOT_UPLOADED, &recovery.seal(self.me, &account)).await?;
        self.account = Some(account);
        self.recovery_unconfirmed = Some(recovery.display());
        self.state = LinkState::Linked;
        self.pending_link = None;
        self.upload_pending_recovery().await?;
        self.events.push((Incoming::Linked, None));
        Ok(recovery.display())
    }

    // ---- linking, the linked device's side -----------------------------------------------

    fn linked_account(&self) -> Result<AccountKey, MessagingError> {
        match (&self.account, self.state) {
            (Some(a), LinkState::Linked) => Ok(a.clone()),
            _ => Err(MessagingError::NotLinked),
        }
    }

    /// Open link requests of pending devices.
    pub async fn link_requests(&mut self, now: i64) -> Result<Vec<LinkRequest>, MessagingError> {
        self.tick(now);
        self.linked_account()?;
        let requests: Vec<LinkRequest> = self.api("GET", "/api/v1/users/@me/link-requests", None::<&()>).await?;
        self.link_requests = requests.iter().map(|r| (r.device_id, r.clone())).collect();
        Ok(requests)
    }

    /// Approves a pending device with the code it shows: hands it the account key over the
    /// exchange keyed by the code. The device then adds itself to the list (an
    /// [`Incoming::OwnDevicesChanged`] follows); with a wrong code nothing opens on its side.
    pub async fn approve_link(&mut self, device: DeviceId, code: &str, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        let account = self.linked_account()?;
        if account::normalize_code(code).is_none() {
            return Err(account_error(AccountError::WrongCode));
        }
        // The device's request as the server holds it now, never one remembered from an event:
        // a device that asked again (after a wrong code) has a new request, and the event of
        // its earlier one may come late.
        self.link_requests(now).await?;
        let request =
            self.link_requests.get(&device).filter(|r| r.expires_at > self.now).cloned().ok_or(MessagingError::Api {
                status: 404,
                body: crate::ApiErrorBody::new(crate::ErrorCode::NotFound, "no open link request of that device"),
            })?;
        let known = self.account_of(self.me, true).await?.ok_or(MessagingError::NotLinked)?;
        let (pake, sealed) = answer_link(code, self.me, &request, &account, &known.list).map_err(account_error)?;
        self.call(
            "POST",
            &format!("/api/v1/users/@me/link-requests/{device}/answer"),
            Some(&NewLinkAnswer { pake: pake.into(), sealed: sealed.into() }),
        )
        .await?;
        self.link_requests.remove(&device);
        Ok(())
    }

    /// Declines a link request (the device stays pending).
    pub async fn decline_link(&mut self, device: DeviceId) -> Result<(), MessagingError> {
        self.link_requests.remove(&device);
        self.call("DELETE", &format!("/api/v1/users/@me/link-requests/{device}"), None::<&()>).await.map(drop)
    }

    /// This user's devices: linked (in the list this device verified) or pending.
    pub async fn own_devices(&mut self, now: i64) -> Result<Vec<OwnDevice>, MessagingError> {
        self.tick(now);
        let devices: Vec<crate::api::Device> = self.api("GET", "/api/v1/users/@me/devices", None::<&()>).await?;
        let known = self.account_of(self.me, true).await?;
        let rfc3339 = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Ok(devices
            .into_iter()
            .map(|d| OwnDevice {
                // In the verified list, and (the server's word, which knows the keys of pending
                // devices) with the key the list gives that number: a number given again to a
                // new, pending device is not shown as linked.
                linked: d.linked && known.as_ref().is_some_and(|k| k.key_of(d.id).is_some()),
                current: d.id == self.my_device,
                id: d.id,
                name: d.name,
                created_at: rfc3339(d.created_at),
                last_seen_at: rfc3339(d.last_seen_at),
            })
            .collect())
    }

    /// Removes a device: out of the signed list first (so nothing more is encrypted to it),
    /// then off the server. Removing this device signs it out.
    pub async fn remove_device(&mut self, device: DeviceId, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        let mut unlisted = None;
        if let Ok(account) = self.linked_account() {
            for _attempt in 0..3 {
                let known = self.account_of(self.me, true).await?.ok_or(MessagingError::NotLinked)?;
                if known.account_key.0 != account.public() {
                    return Err(MessagingError::DeviceList("the device list is not this account key's; refused".into()));
                }
                let Some(key) = known.key_of(device).map(<[u8]>::to_vec) else {
                    break;
                };
                let mut list = known.to_list(self.me);
                list.devices.retain(|d| d.device_id != device);
                list.version = list
                    .version
                    .checked_add(1)
                    .ok_or_else(|| MessagingError::DeviceList("device list version overflow".into()))?;
                match self.publish(&account, &list, None).await {
                    Ok(()) => {
                        unlisted = Some(key);
                        break;
                    }
                    Err(MessagingError::Api { status: 409, .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        } else if device != self.my_device {
            return Err(MessagingError::NotLinked);
        }
        match self.call("DELETE", &format!("/api/v1/users/@me/devices/{device}"), None::<&()>).await {
            Ok(_) | Err(MessagingError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        // Once unlisted, the removed device may ask to be linked again before the deletion
        // reaches it; that request is not offered here, nor one remembered from before.
        self.link_requests.remove(&device);
        if let Some(key) = unlisted {
            if self.removed_here.len() >= 1_000 {
                self.removed_here.clear();
            }
            self.removed_here.insert((device, key));
            self.events.push((Incoming::OwnDevicesChanged { added: vec![], removed: vec![device] }, None));
        }
        Ok(())
    }

    /// Makes a new recovery key (the old one stops opening the backup kept by the server).
    pub async fn new_recovery_key(&mut self, now: i64) -> Result<String, MessagingError> {
        self.tick(now);
        let account = self.linked_account()?;
        let recovery = RecoveryKey::generate();
        self.call("PUT", "/api/v1/users/@me/recovery", Some(&RecoveryBackup { sealed: recovery.seal(self.me, &account).into() }))
            .await?;
        Ok(recovery.display())
    }

    // ---- verification ----------------------------------------------------------------------

    /// The safety number with `user`: the same on every device of either account.
    pub async fn safety_number(&mut self, user: UserId, now: i64) -> Result<SafetyNumber, MessagingError> {
        self.tick(now);
        let mine = self.account_of(self.me, false).await?.ok_or(MessagingError::NotLinked)?;
        let theirs = self
            .account_of(user, false)
            .await?
            .ok_or_else(|| MessagingError::DeviceList(format!("user {user} has no signed device list yet")))?;
        let number = account::safety_number(self.me, mine.account_key.as_slice(), user, theirs.account_key.as_slice())
            .map_err(account_error)?;
        Ok(SafetyNumber { number, verified: theirs.trust == Trust::Verified, changed: theirs.trust == Trust::Unverified })
    }

    /// Marks a contact verified (after comparing safety numbers), or not: `false` also accepts
    /// a changed account key of a verified contact.
    pub async fn set_verified(&mut self, user: UserId, verified: bool) -> Result<(), MessagingError> {
        let mut known = match self.stored_account(user).await? {
            Some(k) => k,
            None => self
                .account_of(user, true)
                .await?
                .ok_or_else(|| MessagingError::DeviceList(format!("user {user} has no signed device list yet")))?,
        };
        known.trust = if verified { Trust::Verified } else { Trust::Default };
        self.store_account(user, &known).await?;
        self.checked_targets.clear();
        self.accounts.insert(user, known);
        Ok(())
    }
}
