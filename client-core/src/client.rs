//! The native client: REST calls with automatic access-token refresh, and a gateway
//! connection that heartbeats, reconnects and resumes on its own.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{AuthResponse, ChangePassword, Credentials, Device, RefreshRequest, SessionInfo, Tokens, UpdateProfile, User};
use crate::channel_messages::{ChannelMessage, ChannelRecipients};
use crate::error::ApiErrorBody;
use crate::gateway::{close, ClientMessage, Event, Identify, Resume, ServerMessage};
use crate::ids::{ChannelId, DeviceId, MessageId, RoleId, ServerId, SessionId, UserId};
use crate::servers::{
    Ban, Channel, EditChannel, EditRole, EditServer, Invite, InvitePreview, Member, NewBan, NewChannel, NewGroupDm, NewInvite,
    NewServer, Role, Server, ServerState, SetMemberRoles,
};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport failure.
    #[error("network error: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error body.
    #[error("server answered {status}: {body:?}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The error body (a generic one if the server sent none).
        body: ApiErrorBody,
    },
    /// Not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// Gateway failure.
    #[error("gateway: {0}")]
    Gateway(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Clone)]
struct Login {
    tokens: Tokens,
    /// When to refresh: a little before the access token expires.
    refresh_at: Instant,
    user: User,
    device_id: DeviceId,
    session_id: SessionId,
}

/// A LesCopains account signed in on one device.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    login: Arc<Mutex<Option<Login>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_else(|_| reqwest::Client::new());
        Self { http, base: base_url.trim_end_matches('/').into(), login: Arc::new(Mutex::new(None)) }
    }

    /// Creates an account and signs in on a new device.
    pub async fn register(&self, username: &str, password: &str, device_name: Option<&str>) -> Result<AuthResponse> {
        let body = Credentials { username: username.into(), password: password.into(), device_name: device_name.map(Into::into) };
        let auth: AuthResponse = self.send(Method::POST, "/api/v1/auth/register", None, Some(&body)).await?;
        self.store_login(&auth).await;
        Ok(auth)
    }

    /// Signs in on a new device.
    pub async fn login(&self, username: &str, password: &str, device_name: Option<&str>) -> Result<AuthResponse> {
        let body = Credentials { username: username.into(), password: password.into(), device_name: device_name.map(Into::into) };
        let auth: AuthResponse = self.send(Method::POST, "/api/v1/auth/login", None, Some(&body)).await?;
        self.store_login(&auth).await;
        Ok(auth)
    }

    async fn store_login(&self, auth: &AuthResponse) {
        *self.login.lock().await = Some(Login {
            refresh_at: refresh_deadline(&auth.tokens),
            tokens: auth.tokens.clone(),
            user: auth.user.clone(),
            device_id: auth.device_id,
            session_id: auth.session_id,
        });
    }

    /// Trades the refresh token for a new pair now.
    pub async fn refresh(&self) -> Result<()> {
        let mut guard = self.login.lock().await;
        let login = guard.as_mut().ok_or(ClientError::NotLoggedIn)?;
        self.refresh_locked(login).await
    }

    async fn refresh_locked(&self, login: &mut Login) -> Result<()> {
        let body = RefreshRequest { refresh_token: login.tokens.refresh_token.clone() };
        let tokens: Tokens = self.send(Method::POST, "/api/v1/auth/refresh", None, Some(&body)).await?;
        login.refresh_at = refresh_deadline(&tokens);
        login.tokens = tokens;
        Ok(())
    }

    /// A valid access token, refreshed first if it is about to expire.
    pub async fn access_token(&self) -> Result<String> {
        let mut guard = self.login.lock().await;
        let login = guard.as_mut().ok_or(ClientError::NotLoggedIn)?;
        if Instant::now() >= login.refresh_at {
            self.refresh_locked(login).await?;
        }
        Ok(login.tokens.access_token.clone())
    }

    /// The current refresh token (for tests and for saving the login).
    pub async fn refresh_token(&self) -> Option<String> {
        self.login.lock().await.as_ref().map(|l| l.tokens.refresh_token.clone())
    }

    /// The signed-in user as of the last login.
    pub async fn user(&self) -> Option<User> {
        self.login.lock().await.as_ref().map(|l| l.user.clone())
    }

    /// This device.
    pub async fn device_id(&self) -> Option<DeviceId> {
        self.login.lock().await.as_ref().map(|l| l.device_id)
    }

    /// This login session.
    pub async fn session_id(&self) -> Option<SessionId> {
        self.login.lock().await.as_ref().map(|l| l.session_id)
    }

    /// Ends this session on the server and forgets it here.
    pub async fn logout(&self) -> Result<()> {
        let token = self.access_token().await?;
        self.send_no_content(Method::POST, "/api/v1/auth/logout", Some(&token), None::<&()>).await?;
        *self.login.lock().await = None;
        Ok(())
    }

    /// `GET /api/v1/users/@me`.
    pub async fn me(&self) -> Result<User> {
        let token = self.access_token().await?;
        self.send(Method::GET, "/api/v1/users/@me", Some(&token), None::<&()>).await
    }

    /// `PATCH /api/v1/users/@me`.
    pub async fn update_profile(&self, change: &UpdateProfile) -> Result<User> {
        let token = self.access_token().await?;
        self.send(Method::PATCH, "/api/v1/users/@me", Some(&token), Some(change)).await
    }

    /// Changes the password; every other session ends.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<()> {
        let token = self.access_token().await?;
        let body = ChangePassword { current_password: current.into(), new_password: new.into() };
        self.send_no_content(Method::POST, "/api/v1/users/@me/password", Some(&token), Some(&body)).await
    }

    /// The login sessions of this account.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>> {
        let token = self.access_token().await?;
        self.send(Method::GET, "/api/v1/users/@me/sessions", Some(&token), None::<&()>).await
    }

    /// Ends another session of this account (its device is removed).
    pub async fn revoke_session(&self, id: SessionId) -> Result<()> {
        let token = self.access_token().await?;
        let path = format!("/api/v1/users/@me/sessions/{id}");
        self.send_no_content(Method::DELETE, &path, Some(&token), None::<&()>).await
    }

    /// The devices of this account.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        let token = self.access_token().await?;
        self.send(Method::GET, "/api/v1/users/@me/devices", Some(&token), None::<&()>).await
    }

    /// An authenticated call returning JSON (for the messenger and tools).
    pub async fn api<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let token = self.access_token().await?;
        self.send(method, path, Some(&token), body).await
    }

    /// An authenticated call with a JSON body given as text, answered with the status and the
    /// raw body whatever the status (the engine's [`crate::engine::Transport`]).
    pub async fn raw(&self, method: Method, path: &str, body: Option<String>) -> Result<crate::engine::Answer> {
        let token = self.access_token().await?;
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok(crate::engine::Answer { status, body: resp.bytes().await?.to_vec() })
    }

    /// `PUT /api/v1/keys`.
    pub async fn put_keys(&self, keys: &crate::keys::UploadKeys) -> Result<()> {
        let token = self.access_token().await?;
        self.send_no_content(Method::PUT, "/api/v1/keys", Some(&token), Some(keys)).await
    }

    /// Acknowledges (deletes) an envelope of this device.
    pub async fn ack(&self, id: crate::ids::EnvelopeId) -> Result<()> {
        let token = self.access_token().await?;
        self.send_no_content(Method::DELETE, &format!("/api/v1/messages/{id}"), Some(&token), None::<&()>).await
    }

    /// Removes one of this account's devices (its keys, queue and session go with it).
    pub async fn remove_device(&self, device: DeviceId) -> Result<()> {
        let token = self.access_token().await?;
        self.send_no_content(Method::DELETE, &format!("/api/v1/users/@me/devices/{device}"), Some(&token), None::<&()>).await
    }

    /// Renames one of this account's devices.
    pub async fn rename_device(&self, device: DeviceId, name: &str) -> Result<Device> {
        self.api(
            Method::PATCH,
            &format!("/api/v1/users/@me/devices/{device}"),
            Some(&crate::api::RenameDevice { name: name.to_owned() }),
        )
        .await
    }

    // ---- servers, channels, roles, invites, group DMs ---------------------------------------

    /// Creates a server (this user is its owner and first member).
    pub async fn create_server(&self, name: &str) -> Result<Server> {
        self.api(Method::POST, "/api/v1/servers", Some(&NewServer { name: name.to_owned() })).await
    }

    /// The servers this user is a member of.
    pub async fn servers(&self) -> Result<Vec<Server>> {
        self.api(Method::GET, "/api/v1/servers", None::<&()>).await
    }

    /// A server this user is a member of.
    pub async fn server(&self, server: ServerId) -> Result<Server> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}"), None::<&()>).await
    }

    /// A server with its roles, the channels this member may view, and this member.
    pub async fn server_state(&self, server: ServerId) -> Result<ServerState> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}/state"), None::<&()>).await
    }

    /// Renames a server or transfers it.
    pub async fn edit_server(&self, server: ServerId, change: &EditServer) -> Result<Server> {
        self.api(Method::PATCH, &format!("/api/v1/servers/{server}"), Some(change)).await
    }

    /// Deletes a server (its owner).
    pub async fn delete_server(&self, server: ServerId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/servers/{server}"), None::<&()>).await
    }

    /// Leaves a server.
    pub async fn leave_server(&self, server: ServerId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/users/@me/servers/{server}"), None::<&()>).await
    }

    /// The members of a server.
    pub async fn members(&self, server: ServerId) -> Result<Vec<Member>> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}/members"), None::<&()>).await
    }

    /// Removes a member from a server (they may join again with an invite).
    pub async fn kick(&self, server: ServerId, user: UserId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/servers/{server}/members/{user}"), None::<&()>).await
    }

    /// Bans a member (removing them) or anyone else from a server.
    pub async fn ban(&self, server: ServerId, user: UserId, ban: &NewBan) -> Result<()> {
        self.no_content(Method::PUT, &format!("/api/v1/servers/{server}/bans/{user}"), Some(ban)).await
    }

    /// Lifts a ban.
    pub async fn unban(&self, server: ServerId, user: UserId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/servers/{server}/bans/{user}"), None::<&()>).await
    }

    /// The bans of a server.
    pub async fn bans(&self, server: ServerId) -> Result<Vec<Ban>> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}/bans"), None::<&()>).await
    }

    /// The roles of a server.
    pub async fn roles(&self, server: ServerId) -> Result<Vec<Role>> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}/roles"), None::<&()>).await
    }

    /// Creates a role.
    pub async fn create_role(&self, server: ServerId, role: &EditRole) -> Result<Role> {
        self.api(Method::POST, &format!("/api/v1/servers/{server}/roles"), Some(role)).await
    }

    /// Changes a role.
    pub async fn edit_role(&self, server: ServerId, role: RoleId, change: &EditRole) -> Result<Role> {
        self.api(Method::PATCH, &format!("/api/v1/servers/{server}/roles/{role}"), Some(change)).await
    }

    /// Deletes a role.
    pub async fn delete_role(&self, server: ServerId, role: RoleId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/servers/{server}/roles/{role}"), None::<&()>).await
    }

    /// Sets a member's roles (all of them).
    pub async fn set_member_roles(&self, server: ServerId, user: UserId, roles: Vec<RoleId>) -> Result<Member> {
        let path = format!("/api/v1/servers/{server}/members/{user}/roles");
        self.api(Method::PUT, &path, Some(&SetMemberRoles { roles })).await
    }

    /// Creates a channel.
    pub async fn create_channel(&self, server: ServerId, channel: &NewChannel) -> Result<Channel> {
        self.api(Method::POST, &format!("/api/v1/servers/{server}/channels"), Some(channel)).await
    }

    /// The channels of a server this member may view.
    pub async fn server_channels(&self, server: ServerId) -> Result<Vec<Channel>> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}/channels"), None::<&()>).await
    }

    /// A channel (or group DM).
    pub async fn channel(&self, channel: ChannelId) -> Result<Channel> {
        self.api(Method::GET, &format!("/api/v1/channels/{channel}"), None::<&()>).await
    }

    /// Changes a channel (renames a group DM).
    pub async fn edit_channel(&self, channel: ChannelId, change: &EditChannel) -> Result<Channel> {
        self.api(Method::PATCH, &format!("/api/v1/channels/{channel}"), Some(change)).await
    }

    /// Deletes a channel.
    pub async fn delete_channel(&self, channel: ChannelId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/channels/{channel}"), None::<&()>).await
    }

    /// Makes an invite to a server.
    pub async fn create_invite(&self, server: ServerId, invite: &NewInvite) -> Result<Invite> {
        self.api(Method::POST, &format!("/api/v1/servers/{server}/invites"), Some(invite)).await
    }

    /// The invites of a server.
    pub async fn invites(&self, server: ServerId) -> Result<Vec<Invite>> {
        self.api(Method::GET, &format!("/api/v1/servers/{server}/invites"), None::<&()>).await
    }

    /// What an invite leads to.
    pub async fn invite_preview(&self, code: &str) -> Result<InvitePreview> {
        self.api(Method::GET, &format!("/api/v1/invites/{code}"), None::<&()>).await
    }

    /// Joins the server an invite leads to.
    pub async fn join(&self, code: &str) -> Result<Server> {
        self.api(Method::POST, &format!("/api/v1/invites/{code}"), None::<&()>).await
    }

    /// Revokes an invite.
    pub async fn revoke_invite(&self, code: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/invites/{code}"), None::<&()>).await
    }

    /// Creates a group DM with `recipients` (this user is its owner).
    pub async fn create_group_dm(&self, recipients: Vec<UserId>, name: Option<&str>) -> Result<Channel> {
        let body = NewGroupDm { recipients, name: name.map(str::to_owned) };
        self.api(Method::POST, "/api/v1/channels", Some(&body)).await
    }

    /// This user's group DMs.
    pub async fn group_dms(&self) -> Result<Vec<Channel>> {
        self.api(Method::GET, "/api/v1/users/@me/channels", None::<&()>).await
    }

    /// Adds someone to a group DM.
    pub async fn add_to_group_dm(&self, channel: ChannelId, user: UserId) -> Result<()> {
        self.no_content(Method::PUT, &format!("/api/v1/channels/{channel}/recipients/{user}"), None::<&()>).await
    }

    /// Removes someone from a group DM (its owner), or leaves it (oneself).
    pub async fn remove_from_group_dm(&self, channel: ChannelId, user: UserId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/channels/{channel}/recipients/{user}"), None::<&()>).await
    }

    /// The devices that may read a channel now, with the view number.
    pub async fn channel_recipients(&self, channel: ChannelId) -> Result<ChannelRecipients> {
        self.api(Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None::<&()>).await
    }

    /// A page of a channel's stored messages (ciphertexts), newest first. `query` is the
    /// query string without `?` (`limit=50&before=…`).
    pub async fn channel_messages(&self, channel: ChannelId, query: &str) -> Result<Vec<ChannelMessage>> {
        self.api(Method::GET, &format!("/api/v1/channels/{channel}/messages?{query}"), None::<&()>).await
    }

    /// Pins a message.
    pub async fn pin(&self, channel: ChannelId, message: MessageId) -> Result<()> {
        self.no_content(Method::PUT, &format!("/api/v1/channels/{channel}/pins/{message}"), None::<&()>).await
    }

    /// Unpins a message.
    pub async fn unpin(&self, channel: ChannelId, message: MessageId) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/api/v1/channels/{channel}/pins/{message}"), None::<&()>).await
    }

    async fn no_content(&self, method: Method, path: &str, body: Option<&(impl Serialize + ?Sized)>) -> Result<()> {
        let token = self.access_token().await?;
        self.send_no_content(method, path, Some(&token), body).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.json::<ApiErrorBody>().await.unwrap_or_else(|_| {
            ApiErrorBody::new(crate::error::ErrorCode::Internal, format!("HTTP {status} without an error body"))
        });
        Err(ClientError::Api { status, body })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        Ok(self.request(method, path, token, body).await?.json().await?)
    }

    async fn send_no_content(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<()> {
        self.request(method, path, token, body).await.map(drop)
    }

    /// Opens the gateway: connects, identifies, then keeps the connection alive, reconnecting
    /// and resuming after drops, until [`GatewayHandle::close`] or a fatal close code.
    pub async fn connect_gateway(&self) -> Result<GatewayHandle> {
        if self.login.lock().await.is_none() {
            return Err(ClientError::NotLoggedIn);
        }
        let url = format!("{}/gateway", self.base.replacen("http", "ws", 1));
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_gateway(self.clone(), url, updates_tx, control_rx));
        Ok(GatewayHandle { updates, control, task })
    }
}

fn refresh_deadline(tokens: &Tokens) -> Instant {
    // Refresh when 80% of the lifetime has passed (at least 5 s before expiry).
    let ttl = Duration::from_secs(tokens.access_token_expires_in);
    let margin = (ttl / 5).max(Duration::from_secs(5)).min(ttl);
    Instant::now() + (ttl - margin)
}

/// What the gateway connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayUpdate {
    /// An event, in order, with its sequence number.
    Event {
        /// Sequence number within the gateway session.
        seq: u64,
        /// The event.
        event: Event,
    },
    /// Connected, reported when the server confirms it: just before the READY event of a new
    /// session, or after the replayed events and just before the RESUMED event of a resumed one.
    Connected {
        /// True when the previous session was resumed.
        resumed: bool,
    },
    /// The connection dropped or was closed; it will reconnect.
    Disconnected {
        /// Close code, if the server sent one.
        code: Option<u16>,
    },
    /// The server closed for good (revoked session, bad token…); no more reconnects.
    Closed {
        /// Close code.
        code: Option<u16>,
    },
}

enum Control {
    /// Drop the socket without a close frame (as a network failure would) and stay
    /// disconnected until `Reconnect`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Drop,
    /// Reconnect after a `Drop`.
    Reconnect,
    /// Close for good.
    Close,
    /// Send a frame if identified (dropped otherwise).
    Send(ClientMessage),
}

/// A running gateway connection.
pub struct GatewayHandle {
    updates: mpsc::UnboundedReceiver<GatewayUpdate>,
    control: mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayHandle")
    }
}

impl GatewayHandle {
    /// The next update; `None` once the connection is closed for good.
    pub async fn next(&mut self) -> Option<GatewayUpdate> {
        self.updates.recv().await
    }

    /// The next event (skipping connection updates); `None` once closed.
    pub async fn next_event(&mut self) -> Option<(u64, Event)> {
        loop {
            match self.updates.recv().await? {
                GatewayUpdate::Event { seq, event } => return Some((seq, event)),
                GatewayUpdate::Closed { .. } => return None,
                _ => {}
            }
        }
    }

    /// Drops the network connection abruptly and stays offline until [`Self::reconnect`].
    #[cfg(feature = "testing")]
    pub fn simulate_network_drop(&self) {
        let _ = self.control.send(Control::Drop);
    }

    /// Reconnects (and resumes) after a dropped connection.
    pub fn reconnect(&self) {
        let _ = self.control.send(Control::Reconnect);
    }

    /// Sends a frame (such as an `ACK`) on the current connection once it is identified. A
    /// frame given while disconnected is dropped: only idempotent frames belong here.
    pub fn send(&self, message: ClientMessage) {
        let _ = self.control.send(Control::Send(message));
    }

    /// Closes the connection normally (the server forgets the session).
    pub async fn close(self) {
        let _ = self.control.send(Control::Close);
        let _ = self.task.await;
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one connection ended.
enum Ended {
    Closed(Option<u16>),
    Dropped,
    UserClose,
    UserDrop,
}

#[derive(Default)]
struct Resumable {
    session_id: Option<String>,
    seq: u64,
}

async fn run_gateway(
    client: Client,
    url: String,
    updates: mpsc::UnboundedSender<GatewayUpdate>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut resumable = Resumable::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let ended = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => {
                backoff = Duration::from_millis(100);
                run_connection(&client, socket, &mut resumable, &updates, &mut control).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "gateway connect failed");
                Ended::Dropped
            }
        };
        match ended {
            Ended::UserClose => return,
            Ended::UserDrop => {
                let _ = updates.send(GatewayUpdate::Disconnected { code: None });
                // Offline until told to reconnect.
                loop {
                    match control.recv().await {
                        Some(Control::Reconnect) => break,
                        Some(Control::Close) | None => return,
                        Some(Control::Drop | Control::Send(_)) => {}
                    }
                }
                continue;
            }
            Ended::Closed(code) => {
                let fatal = code.is_some_and(|c| !close::should_reconnect(c));
                if fatal {
                    let _ = updates.send(GatewayUpdate::Closed { code });
                    return;
                }
                if !code.is_some_and(close::is_resumable) {
                    resumable = Resumable::default();
                }
                let _ = updates.send(GatewayUpdate::Disconnected { code });
            }
            Ended::Dropped => {
                let _ = updates.send(GatewayUpdate::Disconnected { code: None });
            }
        }
        let jitter = Duration::from_millis(rand::rng().random_range(0..50));
        let wake = Instant::now() + backoff + jitter;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                c = control.recv() => match c {
                    Some(Control::Close) | None => return,
                    // Frames for the server cannot go out while disconnected.
                    Some(Control::Send(_)) => {}
                    Some(Control::Drop | Control::Reconnect) => break,
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn run_connection(
    client: &Client,
    mut socket: Socket,
    resumable: &mut Resumable,
    updates: &mpsc::UnboundedSender<GatewayUpdate>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Ended {
    // HELLO first.
    let hello = match read_message(&mut socket).await {
        Ok(ServerMessage::Hello(h)) => h,
        Ok(_) => return Ended::Closed(Some(close::DECODE_ERROR)),
        Err(ended) => return ended,
    };
    let Ok(token) = client.access_token().await else {
        let _ = socket.close(None).await;
        return Ended::Closed(Some(close::AUTHENTICATION_FAILED));
    };
    let first = match &resumable.session_id {
        Some(id) => ClientMessage::Resume(Resume { token: token.clone(), session_id: id.clone(), seq: resumable.seq }),
        None => ClientMessage::Identify(Identify { token: token.clone() }),
    };
    if socket.send(Message::Text(first.to_text().into())).await.is_err() {
        return Ended::Dropped;
    }
    let interval = Duration::from_millis(hello.heartbeat_interval_ms.max(10));
    // The first beat comes after a random fraction of the interval, so that clients
    // reconnecting together after an outage do not beat in lockstep.
    let first_beat = interval.mul_f64(rand::rng().random_range(0.1..1.0));
    let mut next_beat = Instant::now() + first_beat;
    let mut awaiting_ack = false;
    let mut announced = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {
                if awaiting_ack {
                    // No ACK for a whole interval: the connection is a zombie.
                    return Ended::Dropped;
                }
                let beat = ClientMessage::Heartbeat(Some(resumable.seq));
                if socket.send(Message::Text(beat.to_text().into())).await.is_err() {
                    return Ended::Dropped;
                }
                awaiting_ack = true;
                next_beat = Instant::now() + interval;
            }
            c = control.recv() => match c {
                Some(Control::Drop) => return Ended::UserDrop,
                Some(Control::Reconnect) => {}
                Some(Control::Send(message)) => {
                    if announced && socket.send(Message::Text(message.to_text().into())).await.is_err() {
                        return Ended::Dropped;
                    }
                }
                Some(Control::Close) | None => {
                    let _ = socket.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: CloseCode::Normal,
                        reason: "bye".into(),
                    })).await;
                    return Ended::UserClose;
                }
            },
            msg = read_message(&mut socket) => match msg {
                Err(ended) => return ended,
                Ok(ServerMessage::HeartbeatAck) => awaiting_ack = false,
                Ok(ServerMessage::Dispatch { seq, event }) => {
                    resumable.seq = seq;
                    match &event {
                        Event::Ready(ready) => {
                            resumable.session_id = Some(ready.session_id.clone());
                            announce(updates, &mut announced, false);
                        }
                        Event::Resumed(_) => announce(updates, &mut announced, true),
                        _ => {}
                    }
                    let _ = updates.send(GatewayUpdate::Event { seq, event });
                }
                Ok(ServerMessage::InvalidSession(_)) => {
                    *resumable = Resumable::default();
                    let Ok(token) = client.access_token().await else {
                        return Ended::Closed(Some(close::AUTHENTICATION_FAILED));
                    };
                    let identify = ClientMessage::Identify(Identify { token });
                    if socket.send(Message::Text(identify.to_text().into())).await.is_err() {
                        return Ended::Dropped;
                    }
                }
                Ok(ServerMessage::Reconnect) => return Ended::Closed(Some(close::UNKNOWN_ERROR)),
                Ok(ServerMessage::Hello(_)) => {}
            },
        }
    }
}

fn announce(updates: &mpsc::UnboundedSender<GatewayUpdate>, announced: &mut bool, resumed: bool) {
    if !*announced {
        *announced = true;
        let _ = updates.send(GatewayUpdate::Connected { resumed });
    }
}

async fn read_message(socket: &mut Socket) -> std::result::Result<ServerMessage, Ended> {
    loop {
        match socket.next().await {
            None => return Err(Ended::Dropped),
            Some(Err(_)) => return Err(Ended::Dropped),
            Some(Ok(Message::Text(text))) => {
                return ServerMessage::parse(text.as_str()).map_err(|_| Ended::Closed(Some(close::DECODE_ERROR)))
            }
            Some(Ok(Message::Close(frame))) => return Err(Ended::Closed(frame.map(|f| u16::from(f.code)))),
            Some(Ok(_)) => {}
        }
    }
}
