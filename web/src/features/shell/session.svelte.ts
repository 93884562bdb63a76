/**
 * The signed-in app's state and the loop that feeds it: the gateway's events go through the
 * engine (one call at a time, in order), the engine's events update the conversation list
 * and the open conversations, and the envelope ids it processed are acknowledged on the
 * gateway. It also knows whether this device is linked to the account: a pending one shows
 * the link screen (its code kept fresh here) and drains nothing until it is linked; a linked
 * one prompts when a pending device asks to be approved. Components read this state and call
 * its actions; none of them talks to the network directly.
 */

import type { ApiClient } from '../../lib/api/client';
import { CommunityApi } from '../../lib/api/communities';
import type { Channel, DmReadState, PinUpdate, PublicUser, ReadState, ServerState, User } from '../../lib/api/types';
import type { Engine, Step } from '../../lib/engine/engine';
import {
  engineErrorKind,
  type ChannelEntry,
  type Conversation,
  type EngineEvent,
  type HistoryEntry,
  type LinkState,
  type RetryRefusal,
} from '../../lib/engine/types';
import { displayName } from '../../lib/format';
import { Gateway, type ConnectionState, type GatewayEnd, type ReadyPayload, type SocketFactory } from '../../lib/gateway/gateway';
import type { StoredSession } from '../../lib/storage';
import { ChatView } from '../dm/chat-view.svelte';
import { Contacts } from '../dm/contacts.svelte';
import { applyEntry, markListRead, unreadConversations } from '../dm/timeline';
import { Approvals, PendingLink } from '../devices/link.svelte';
import { ChannelView } from '../channels/channel-view.svelte';
import { Communities } from '../servers/communities.svelte';
import { defaultChannel, groupName } from '../servers/layout';
import { parseRoute, routePath, sameRoute, type Route } from './route';
import { Voice, type VoiceState } from '../voice/voice.svelte';
import { Social, type SocialReady } from '../social/social.svelte';
import { dmPlace } from '../social/typing';
import { mentionsInText, mentionsMe, plainMentions, type Mentions } from '../social/mentions';
import { notifies } from '../social/notify';
import { Search, type NamedPerson, type NamedPlace, type SearchScope } from '../search/search.svelte';
import type { SearchHit } from '../../lib/engine/types';
import { Crawler } from '../search/crawler';
import { P, channelPermissions, has } from '../servers/permissions';

export type SettingsTab = 'profile' | 'password' | 'devices' | 'privacy' | 'admin';
export type ServerSettingsTab = 'overview' | 'channels' | 'roles' | 'invites' | 'members' | 'bans' | 'audit';

/** The gateway's community events that update the server lists directly. */
const COMMUNITY_EVENTS = new Set([
  'SERVER_CREATE',
  'SERVER_UPDATE',
  'SERVER_DELETE',
  'CHANNEL_CREATE',
  'CHANNEL_UPDATE',
  'CHANNEL_DELETE',
  'ROLE_CREATE',
  'ROLE_UPDATE',
  'ROLE_DELETE',
  'MEMBER_ADD',
  'MEMBER_UPDATE',
  'MEMBER_REMOVE',
]);
/** The encrypted ones: the engine decrypts them and reports `channel_entry` events. */
const CHANNEL_MESSAGE_EVENTS = new Set(['MESSAGE_CREATE', 'MESSAGE_UPDATE', 'MESSAGE_DELETE', 'MESSAGE_DELETE_BULK', 'REACTION_ADD', 'REACTION_REMOVE']);

/** What the main pane shows, from the route and what is known. */
export type Place =
  | { kind: 'home' }
  | { kind: 'friends' }
  | { kind: 'dm'; user: string }
  | { kind: 'channel'; state: ServerState; channel: Channel }
  | { kind: 'group'; channel: Channel }
  | { kind: 'server-empty'; state: ServerState }
  | { kind: 'invite'; code: string }
  /** Not known yet (before READY) or not there (left, deleted, never a member). */
  | { kind: 'loading' }
  | { kind: 'missing' };

/** Envelope ids remembered as processed, to skip a live copy of one the queue drain already took. */
const RECENT_ACKS = 2000;
const MAINTAIN_EVERY_MS = 60 * 60_000;
const LIST_REFRESH_DELAY_MS = 250;
const EXPIRE_REQUESTS_EVERY_MS = 30_000;
/** How long signing out waits for this device to leave the account's list. */
const LEAVE_TIMEOUT_MS = 10_000;

/** Whether this device is linked ('loading' until the engine said). */
export type AccountMode = 'loading' | LinkState;

export interface ChatSessionOptions {
  api: ApiClient;
  engine: Engine;
  session: StoredSession;
  /** The login session is over: back to sign-in. */
  onEnded(why: 'revoked' | 'expired'): void;
  onSignOut(): void;
  gatewayUrl?: string;
  socket?: SocketFactory;
  /** Where the app opens (default: the page's path). */
  initialPath?: string;
  /** The browser's history (null: the URL is not kept). */
  history?: Pick<History, 'pushState' | 'replaceState'> | null;
}

export interface RefusalNotice {
  id: number;
  text: string;
}

export function refusalText(name: string, device: number, reason: RetryRefusal | string): string {
  const why: Record<string, string> = {
    not_a_recipient: 'it was not sent to this device',
    expired: 'it is too old to be sent again',
    identity_changed: 'this device’s keys changed since it was sent',
    answered_already: 'it was already sent again',
  };
  return `A message from ${name} (device ${device}) could not be recovered: ${why[reason] ?? reason}.`;
}

function defaultGatewayUrl(): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/gateway`;
}

export class ChatSession {
  readonly api: ApiClient;
  readonly engine: Engine;
  readonly session: StoredSession;
  readonly contacts: Contacts;

  connection = $state<ConnectionState>('connecting');
  /** Why the gateway stopped without ending the login session (4014, a protocol error). */
  connectionProblem = $state<GatewayEnd | null>(null);
  me = $state.raw<User | null>(null);
  conversations = $state.raw<Conversation[]>([]);
  conversationsLoaded = $state(false);
  /** The conversation on screen (a user id). */
  active = $state<string | null>(null);
  /** Contacts whose safety number changed, until acknowledged or verified. */
  identityAlerts = $state<Record<string, true>>({});
  /** Whether a contact's safety number is marked verified. */
  verified = $state<Record<string, boolean>>({});
  /** Messages that could not be recovered, per conversation. */
  refusals = $state<Record<string, RefusalNotice[]>>({});
  /** Whether this device is linked to the account (pending and removed ones show the link screen). */
  account = $state<AccountMode>('loading');
  /** Why a device that was linked is on the link screen again. */
  unlinked = $state<'removed' | 'replaced' | null>(null);
  /** The recovery key still to be written down (after sign-up or a reset), until confirmed. */
  recoveryKey = $state<string | null>(null);
  /** Devices linked to the account elsewhere since this device last looked. */
  newOwnDevices = $state<number[]>([]);
  /** Bumped when the account's devices changed (the devices screen reloads). */
  devicesChanged = $state(0);
  /** Text for the screen reader's live region. */
  announcement = $state('');
  /** Whether the page is visible (a conversation on screen is read only then). */
  visible = $state(true);
  /** Bumped when the account's sessions changed elsewhere (the devices screen reloads). */
  sessionsChanged = $state(0);
  /** Interface state shared by the shell's parts. */
  ui = $state({
    settings: null as SettingsTab | null,
    /** The contact whose safety numbers the privacy screen shows. */
    safetyUser: null as string | null,
    newMessage: false,
    /** Phone layout: the navigation drawer is open. */
    drawer: false,
    /** The profile pane is shown. */
    profile: true,
    /** The member list is shown (servers and group DMs). */
    members: true,
    /** "Add a server": create or join. */
    addServer: null as 'create' | 'join' | null,
    /** The server settings, open at a tab. */
    serverSettings: null as { server: string; tab: ServerSettingsTab } | null,
    /** "Invite people" for a server. */
    invite: null as string | null,
    /** "Create channel" in a server (in a category). */
    createChannel: null as { server: string; parent: string | null; kind: 'text' | 'voice' | 'category' } | null,
    /** "New group" (a group DM). */
    newGroup: false,
    /** A voice channel shows its text chat instead of the call. */
    voiceChat: false,
    /** The thread shown beside a channel. */
    thread: null as { channel: string; id: string } | null,
    /** Notification settings of a server or channel. */
    notifications: null as { id: string; name: string; server: string | null; kind: 'server' | 'channel' } | null,
  });
  /** Where the app is (the URL's path). */
  route = $state.raw<Route>({ name: 'home' });
  /** The servers and group DMs. */
  readonly communities: Communities;
  /** Who is in voice, and this page's call. */
  readonly voice: Voice;
  /** Friends, blocks, presence and typing. */
  readonly social: Social;
  /** The search panel (answered on this device). */
  readonly search: Search;
  /** Reads the history of every channel in the background, for search. */
  readonly #crawler: Crawler;
  /** Bumped when a channel's pins changed (the pins popover reloads). */
  pinsChanged = $state<Record<string, number>>({});

  /** The link screen's code (pending devices). */
  readonly link: PendingLink;
  /** Pending devices asking to be approved, and the approval dialog (linked devices). */
  readonly approvals: Approvals;

  readonly #views = new Map<string, ChatView>();
  readonly #channelViews = new Map<string, ChannelView>();
  readonly #history: Pick<History, 'pushState' | 'replaceState'> | null;
  readonly #gateway: Gateway;
  readonly #onEnded: (why: 'revoked' | 'expired') => void;
  readonly #onSignOut: () => void;
  readonly #recentAcks = new Set<string>();
  #needsStart = false;
  #listTimer: ReturnType<typeof setTimeout> | null = null;
  #maintainTimer: ReturnType<typeof setInterval> | null = null;
  #expireTimer: ReturnType<typeof setInterval> | null = null;
  #announceSeq = 0;
  #stopped = false;
  #cleanup: Array<() => void> = [];
  #nextNotice = 0;

  constructor(options: ChatSessionOptions) {
    this.api = options.api;
    this.engine = options.engine;
    this.engine.onEvents = (events) => {
      for (const event of events) this.#event(event);
      this.#scheduleListRefresh();
    };
    this.session = options.session;
    this.#onEnded = options.onEnded;
    this.#onSignOut = options.onSignOut;
    this.contacts = new Contacts(options.api);
    this.communities = new Communities(new CommunityApi(options.api), options.session.userId);
    this.voice = new Voice({
      me: options.session.userId,
      deviceId: options.session.deviceId,
      engine: this.engine,
      send: (op, d) => this.#gateway.send(op, d),
      iceServers: async () => (await this.api.json<{ ice_servers: RTCIceServer[] }>('GET', '/api/v1/voice/ice-servers')).ice_servers,
      announce: (text) => this.#announce(text),
    });
    this.social = new Social({ api: options.api, me: options.session.userId, send: (op, d) => this.#gateway.send(op, d) });
    this.search = new Search(this.engine, {
      people: (scope) => this.#searchPeople(scope),
      places: (scope) => this.#searchPlaces(scope),
    });
    this.#crawler = new Crawler(this.engine, () => this.#crawlChannels());
    this.#history = options.history !== undefined ? options.history : typeof history === 'undefined' ? null : history;
    const path = options.initialPath ?? (typeof location === 'undefined' ? '/' : location.pathname);
    this.route = parseRoute(path);
    this.link = new PendingLink({ beginLink: () => this.engine.beginLink() });
    this.approvals = new Approvals({
      approveLink: (id, code) => this.engine.approveLink(id, code),
      declineLink: (id) => this.engine.declineLink(id),
    });
    this.#gateway = new Gateway({
      url: options.gatewayUrl ?? defaultGatewayUrl(),
      token: (force) => (force ? this.api.refresh() : this.api.accessToken()),
      socket: options.socket,
      handlers: {
        state: (state) => {
          this.connection = state;
          if (state === 'online') this.connectionProblem = null;
          this.#announce(
            state === 'online' ? 'Connected.' : state === 'reconnecting' ? 'Connection lost. Reconnecting…' : state === 'offline' ? 'Offline.' : '',
          );
        },
        ready: (d) => this.#ready(d),
        resumed: () => {
          this.social.resumed();
          if (this.linked) this.#scheduleListRefresh();
          else void this.#pendingOnline();
        },
        dispatch: (t, d) => this.#dispatch(t, d),
        ended: (why) => this.#gatewayEnded(why),
      },
    });
  }

  /**
   * Starts: the local list at once, the device's keys, whether it is linked (a pending one
   * gets its link code), then the gateway.
   */
  async start(): Promise<void> {
    this.#watchPage();
    this.#applyRoute(true);
    void this.refreshConversations();
    void this.#loadMe();
    this.#apply(await this.engine.start().catch((error: unknown) => ({ events: [], acks: [], error })), 'start');
    if (this.#stopped) return;
    await this.#readAccount();
    if (this.#stopped) return;
    if (this.linked) void this.#loadLinkRequests();
    else void this.link.start();
    this.#gateway.start();
    this.social.start();
    this.#maintainTimer = setInterval(() => void this.engine.maintain().catch(() => undefined), MAINTAIN_EVERY_MS);
    this.#expireTimer = setInterval(() => this.approvals.expire(), EXPIRE_REQUESTS_EVERY_MS);
  }

  /** Linked to the account: the chat is shown (pending and removed devices get the link screen). */
  get linked(): boolean {
    return this.account === 'linked';
  }

  /** Stops the gateway (ending its gateway session) and closes the engine. */
  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#crawler.stop();
    this.voice.stop();
    this.social.stop();
    this.#gateway.stop();
    if (this.#listTimer) clearTimeout(this.#listTimer);
    if (this.#maintainTimer) clearInterval(this.#maintainTimer);
    if (this.#expireTimer) clearInterval(this.#expireTimer);
    this.link.stop();
    for (const undo of this.#cleanup) undo();
    this.#cleanup = [];
    await this.engine.close();
  }

  signOut(): void {
    this.#onSignOut();
  }

  /**
   * Before signing out: a linked device takes itself out of the account's signed list (and
   * off the server), so nothing more is encrypted to it and its number is not left vouched for.
   * Offline, the sign-out goes on without it.
   */
  async leave(timeoutMs = LEAVE_TIMEOUT_MS): Promise<void> {
    if (!this.linked || this.#stopped) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    try {
      await Promise.race([this.engine.removeDevice(this.session.deviceId).catch(() => undefined), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  reconnect(): void {
    this.connectionProblem = null;
    this.#gateway.reconnectNow();
  }

  get myName(): string {
    return displayName(this.me, this.session.username);
  }

  /** The list as shown: the open conversation first if it has no entry yet, unread badges cleared for what is on screen. */
  get listed(): Conversation[] {
    const list = this.conversations;
    const active = this.active;
    if (active && !list.some((c) => c.user === active)) return [{ user: active, last: null, unread: 0 }, ...list];
    return list;
  }

  get unreadCount(): number {
    return unreadConversations(this.conversations);
  }

  view(user: string): ChatView {
    let view = this.#views.get(user);
    if (!view) {
      view = new ChatView(this.engine, user, {
        onSent: (entry) => {
          this.conversations = applyEntry(this.conversations, entry, this.#onScreen());
          this.#scheduleListRefresh();
        },
      });
      this.#views.set(user, view);
    }
    return view;
  }

  /** Opens a conversation with `user` (from the list, or a new one). */
  openConversation(user: string): void {
    this.#go({ name: 'me', id: user });
    this.#openDm(user);
  }

  #openDm(user: string): void {
    const unread = this.conversations.find((c) => c.user === user)?.unread ?? 0;
    this.active = user;
    this.ui.drawer = false;
    this.contacts.ensure(user);
    const view = this.view(user);
    void view.load(unread);
    this.#markRead(user);
    void this.refreshVerified(user);
  }

  closeConversation(): void {
    this.navigate({ name: 'home' });
  }

  // ---- where the app is ------------------------------------------------------------------

  /** Goes to `route` (a new history entry unless `replace`). */
  navigate(route: Route, replace = false): void {
    this.#go(route, replace);
    this.#applyRoute(false);
  }

  #go(route: Route, replace = false): void {
    const same = sameRoute(route, this.route);
    this.route = route;
    this.ui.drawer = false;
    if (same && !replace) return;
    try {
      const path = routePath(route);
      if (replace) this.#history?.replaceState(null, '', path);
      else this.#history?.pushState(null, '', path);
    } catch {
      // A sandboxed page: the route lives without the URL.
    }
  }

  /** Opens a server at its last or first channel. */
  openServer(server: string): void {
    this.navigate({ name: 'server', server, channel: this.#lastChannel.get(server) ?? null });
  }

  openChannel(server: string, channel: string): void {
    this.navigate({ name: 'server', server, channel });
  }

  openGroup(channel: string): void {
    this.navigate({ name: 'me', id: channel });
  }

  readonly #lastChannel = new Map<string, string>();
  /** The channel whose history was last loaded for the screen. */
  #shownChannel: string | null = null;

  /** What the main pane shows. */
  get place(): Place {
    const route = this.route;
    switch (route.name) {
      case 'home':
        return { kind: 'home' };
      case 'friends':
        return { kind: 'friends' };
      case 'invite':
        return { kind: 'invite', code: route.code };
      case 'me': {
        const group = this.communities.groupDm(route.id);
        if (group) return { kind: 'group', channel: group };
        if (!this.communities.loaded && this.active !== route.id) return { kind: 'loading' };
        return { kind: 'dm', user: route.id };
      }
      case 'server': {
        const state = this.communities.state(route.server);
        if (!state) return this.communities.loaded ? { kind: 'missing' } : { kind: 'loading' };
        const channel = route.channel ? state.channels.find((c) => c.id === route.channel && c.kind !== 'category') : undefined;
        if (channel) return { kind: 'channel', state, channel };
        const fallback = defaultChannel(state.channels);
        return fallback ? { kind: 'channel', state, channel: fallback } : { kind: 'server-empty', state };
      }
    }
  }

  /** The channel on screen (a server's or a group DM), if any. */
  get activeChannel(): string | null {
    const place = this.place;
    return place.kind === 'channel' || place.kind === 'group' ? place.channel.id : null;
  }

  /** The server whose channels are listed (the route's), if any. */
  get activeServer(): string | null {
    return this.route.name === 'server' ? this.route.server : null;
  }

  /** Brings the state in line with the route (after a navigation, READY, or a change of lists). */
  #applyRoute(initial: boolean): void {
    const route = this.route;
    if (route.name !== 'me' || this.communities.groupDm(route.id)) this.active = null;
    if (route.name === 'me' && !this.communities.groupDm(route.id) && (this.communities.loaded || !initial)) {
      if (this.active !== route.id) this.#openDm(route.id);
    }
    if (route.name === 'server') {
      const state = this.communities.state(route.server);
      if (state) {
        const place = this.place;
        if (place.kind === 'channel') {
          if (route.channel !== place.channel.id) this.#go({ ...route, channel: place.channel.id }, true);
          this.#lastChannel.set(route.server, place.channel.id);
        }
        void this.communities.loadMembers(route.server);
      }
    }
    if (this.ui.thread && this.ui.thread.channel !== this.activeChannel) this.ui.thread = null;
    // Another server (or the direct messages after a server): its search is another one.
    if (this.search.open && JSON.stringify(this.#searchScope()) !== JSON.stringify(this.search.scope)) this.search.close();
    const channel = this.activeChannel;
    if (channel) {
      // Open views follow the events; a channel (re)opened reads its newest page again.
      const view = this.channelView(channel);
      if (channel !== this.#shownChannel || !view.loaded) void view.load();
      this.#markChannelRead();
    }
    this.#shownChannel = channel;
  }

  #markChannelRead(): void {
    const channel = this.activeChannel;
    if (channel && this.visible) this.communities.markRead(channel);
  }

  /** The view of a channel, or of one of its threads. */
  channelView(channel: string, thread: string | null = null): ChannelView {
    const key = thread ? `${channel}:${thread}` : channel;
    let view = this.#channelViews.get(key);
    if (!view) {
      view = new ChannelView(this.engine, channel, {
        threadId: thread,
        me: this.session.userId,
        onSent: (entry) => this.communities.messageArrived(entry.channel_id, entry.id, this.session.userId, true),
      });
      this.#channelViews.set(key, view);
    }
    return view;
  }

  /** Opens the thread that `message` starts (beside the channel). */
  openThread(channel: string, message: string): void {
    this.ui.thread = { channel, id: message };
    void this.channelView(channel, message).load();
  }

  closeThread(): void {
    this.ui.thread = null;
  }

  /** The people a search's `from:` can name: a server's members, or the people of the DMs and groups. */
  #searchPeople(scope: SearchScope): NamedPerson[] {
    if (scope.kind === 'server') return (this.communities.members[scope.server] ?? []).map((m) => m.user);
    const me = this.me ?? { id: this.session.userId, username: this.session.username };
    const others = [...this.conversations.map((c) => c.user), ...this.communities.groupDms.flatMap((g) => (g.recipients ?? []).map((r) => r.id))];
    const known = [...new Set(others)].flatMap((id) => (this.contacts.byId[id] ? [this.contacts.byId[id]!] : []));
    const recipients = this.communities.groupDms.flatMap((g) => g.recipients ?? []);
    return [me, ...known, ...recipients];
  }

  /** The places a search's `in:` can name: a server's channels, or the DMs and groups. */
  #searchPlaces(scope: SearchScope): NamedPlace[] {
    if (scope.kind === 'server') {
      const state = this.communities.state(scope.server);
      if (!state) return [];
      return state.channels
        .filter((c) => c.kind !== 'category' && has(channelPermissions(state, c), P.VIEW_CHANNEL))
        .map((c) => ({ name: c.name, channel: c.id }));
    }
    const dms = this.conversations.flatMap((c) => {
      const user = this.contacts.byId[c.user];
      return user ? [{ name: user.username, dm: c.user }, ...(user.display_name ? [{ name: user.display_name, dm: c.user }] : [])] : [];
    });
    return [...dms, ...this.communities.groupDms.map((g) => ({ name: this.groupName(g), channel: g.id }))];
  }

  /** A user's name from what this page knows already (nothing is fetched). */
  knownName(user: string): string {
    if (user === this.session.userId) return this.myName;
    const known = this.contacts.byId[user] ?? this.communities.knownUser(user);
    return known ? displayName(known) : 'Someone';
  }

  /** Where a search from here looks: the server on screen, or the direct messages. */
  #searchScope(): SearchScope {
    const server = this.activeServer;
    const state = server ? this.communities.state(server) : undefined;
    return state ? { kind: 'server', server: state.server.id, name: state.server.name } : { kind: 'dms' };
  }

  /** Opens the search panel where the user is. */
  openSearch(): void {
    this.search.show(this.#searchScope());
  }

  /** Shows a search result where it is: its conversation, channel or thread, the message marked. */
  async showHit(hit: SearchHit): Promise<boolean> {
    if (hit.kind === 'dm') {
      this.openConversation(hit.user_id);
      return this.view(hit.user_id).jumpTo(hit.position);
    }
    const found = this.communities.channel(hit.channel_id);
    if (!found) return false;
    if (found.state) this.openChannel(found.state.server.id, hit.channel_id);
    else this.openGroup(hit.channel_id);
    if (hit.thread_id) {
      this.search.close();
      this.openThread(hit.channel_id, hit.thread_id);
    }
    const view = this.channelView(hit.channel_id, hit.thread_id);
    await view.load();
    return view.jumpTo(hit.message_id);
  }

  /** The name shown for a group DM. */
  groupName(channel: Channel): string {
    return groupName(channel, this.session.userId);
  }

  /** After a server was created or joined: go there. */
  enterServer(server: string): void {
    this.ui.addServer = null;
    this.navigate({ name: 'server', server, channel: null });
  }

  /** Opens the privacy screen at a contact's safety numbers. */
  showSafetyNumbers(user: string): void {
    this.ui.safetyUser = user;
    this.ui.settings = 'privacy';
  }

  acknowledgeIdentityChange(user: string): void {
    const { [user]: _, ...rest } = this.identityAlerts;
    this.identityAlerts = rest;
  }

  dismissNewOwnDevices(): void {
    this.newOwnDevices = [];
  }

  dismissRefusal(user: string, id: number): void {
    this.refusals = { ...this.refusals, [user]: (this.refusals[user] ?? []).filter((n) => n.id !== id) };
  }

  async refreshVerified(user: string): Promise<void> {
    try {
      const n = await this.engine.safetyNumber(user);
      this.verified = { ...this.verified, [user]: n.verified };
      // A verified number that changed stays announced (across reloads) until accepted.
      if (n.changed) this.identityAlerts = { ...this.identityAlerts, [user]: true };
    } catch {
      // Offline at first contact: the mark stays unknown.
    }
  }

  async setVerified(user: string, verified: boolean): Promise<void> {
    await this.engine.setVerified(user, verified);
    // Verified again, or the new number accepted: the warning is done with.
    this.acknowledgeIdentityChange(user);
    await this.refreshVerified(user);
  }

  // ---- the account's devices -------------------------------------------------------------

  /** The recovery key was written down: the engine forgets it, the app opens. */
  async confirmRecoveryKey(): Promise<void> {
    await this.engine.confirmRecoveryKey();
    this.recoveryKey = null;
  }

  /** A new recovery key from the settings; the written-down check then calls `recoveryKeySaved`. */
  newRecoveryKey(): Promise<string> {
    return this.engine.newRecoveryKey();
  }

  /** After the settings' written-down check: confirms it if the engine holds it as unconfirmed. */
  async recoveryKeySaved(): Promise<void> {
    const state = await this.engine.accountState();
    if (state.unconfirmed_recovery_key) await this.engine.confirmRecoveryKey();
    this.recoveryKey = null;
  }

  /** Links this pending device with the recovery key (throws `wrong_recovery_key:` and the like). */
  async linkWithRecoveryKey(key: string): Promise<void> {
    const events = await this.engine.linkWithRecoveryKey(key.trim());
    for (const event of events) this.#event(event);
    if (!this.linked) {
      const state = await this.engine.accountState();
      if (state.state === 'linked') await this.#becameLinked();
    }
  }

  /**
   * Every device and the recovery key are lost: a new identity for the account (contacts see a
   * changed safety number). The new recovery key is then shown to be written down.
   */
  async resetIdentity(password: string): Promise<void> {
    const key = await this.engine.resetIdentity(password);
    this.recoveryKey = key;
    await this.#becameLinked();
  }

  /** Removes one of this account's devices (from the signed list, then from the server). */
  async removeDevice(deviceId: number): Promise<void> {
    await this.engine.removeDevice(deviceId);
    // A request it made while being removed is closed now, not when the engine's event comes.
    this.approvals.devicesChanged([], [deviceId]);
    this.newOwnDevices = this.newOwnDevices.filter((d) => d !== deviceId);
    this.devicesChanged += 1;
  }

  async #readAccount(): Promise<void> {
    try {
      const state = await this.engine.accountState();
      if (state.unconfirmed_recovery_key) this.recoveryKey = state.unconfirmed_recovery_key;
      this.account = state.state;
      if (state.state === 'removed' && !this.unlinked) this.unlinked = 'removed';
    } catch {
      // The engine is closing: what it refuses to do is refused there anyway.
      if (this.account === 'loading') this.account = 'linked';
    }
  }

  async #loadLinkRequests(): Promise<void> {
    try {
      this.approvals.load(await this.engine.linkRequests());
    } catch {
      // Offline: the gateway's LINK_REQUEST brings new ones.
    }
  }

  /** This device was just linked: out of the link screen, then what a start does (keys, queue). */
  async #becameLinked(): Promise<void> {
    if (this.linked) return;
    this.account = 'linked';
    this.unlinked = null;
    this.link.stop();
    this.#announce('This browser is now linked to your account.');
    const state = await this.engine.accountState().catch(() => null);
    if (state?.unconfirmed_recovery_key) this.recoveryKey = state.unconfirmed_recovery_key;
    this.#apply(await this.engine.start().catch((error: unknown) => ({ events: [], acks: [], error })), 'start');
    if (this.#stopped) return;
    this.#drain();
    void this.#loadLinkRequests();
    void this.refreshConversations();
    this.devicesChanged += 1;
  }

  /** No longer linked (removed from the list, or the account's identity was reset elsewhere). */
  #unlink(why: 'removed' | 'replaced'): void {
    // A replaced account key also takes this device out of the list: the reset is the news.
    if (!this.linked && this.unlinked === 'replaced') return;
    this.account = 'removed';
    this.unlinked = why;
    this.approvals.clear();
    this.newOwnDevices = [];
    this.ui.settings = null;
    this.ui.newMessage = false;
    void this.link.start();
    this.#announce(
      why === 'replaced'
        ? "Your account's identity was reset on another device. Link this browser again."
        : 'This browser was removed from your account. Link it again to use it.',
    );
  }

  /** A pending device's gateway (re)connected: an answer may have come meanwhile; the code must be valid. */
  async #pendingOnline(): Promise<void> {
    try {
      if (this.#needsStart) {
        this.#needsStart = false;
        this.#apply(await this.engine.start(), 'start');
      }
      this.#apply(await this.engine.pollLink(), 'event');
    } catch {
      // The engine is closing.
    }
    if (!this.linked && !this.#stopped) void this.link.online();
  }

  async refreshConversations(): Promise<void> {
    try {
      const list = await this.engine.conversations();
      const onScreen = this.#onScreen();
      this.conversations = onScreen ? markListRead(list, onScreen) : list;
      this.#applyDmReads();
      for (const c of list.slice(0, 50)) this.contacts.ensure(c.user);
    } catch {
      // The engine is closing, or the store failed: the list keeps what it had.
    } finally {
      this.conversationsLoaded = true;
    }
  }

  /** The profile, after the settings changed it or an USER_UPDATE came. */
  setMe(user: User): void {
    this.me = user;
  }

  async #loadMe(): Promise<void> {
    try {
      this.me = await this.api.json<User>('GET', '/api/v1/users/@me');
    } catch {
      // READY brings it too.
    }
  }

  #watchPage(): void {
    if (typeof document === 'undefined' || typeof window === 'undefined') return;
    const onVisibility = () => {
      this.visible = document.visibilityState === 'visible';
      if (this.visible && this.active) this.#markRead(this.active);
      if (this.visible) this.#markChannelRead();
    };
    const onOnline = () => this.#gateway.networkChanged(true);
    const onOffline = () => this.#gateway.networkChanged(false);
    document.addEventListener('visibilitychange', onVisibility);
    window.addEventListener('online', onOnline);
    window.addEventListener('offline', onOffline);
    this.visible = document.visibilityState === 'visible';
    const onPopState = () => {
      this.route = parseRoute(location.pathname);
      this.#applyRoute(false);
    };
    window.addEventListener('popstate', onPopState);
    // Any input means the person is here (idle after five quiet minutes).
    const onInput = () => this.social.input();
    const inputs = ['pointerdown', 'pointermove', 'wheel', 'focus'] as const;
    for (const name of inputs) window.addEventListener(name, onInput, { passive: true });
    this.#cleanup.push(() => {
      for (const name of inputs) window.removeEventListener(name, onInput);
    });
    const onKeyDown = (e: KeyboardEvent) => {
      this.social.input();
      this.voice.key(e, true);
    };
    const onKeyUp = (e: KeyboardEvent) => this.voice.key(e, false);
    // Push-to-talk lets go when the page loses focus (the key-up would never come).
    const onBlur = () => this.voice.call?.setTalking(false);
    window.addEventListener('keydown', onKeyDown);
    window.addEventListener('keyup', onKeyUp);
    window.addEventListener('blur', onBlur);
    this.#cleanup.push(
      () => window.removeEventListener('keydown', onKeyDown),
      () => window.removeEventListener('keyup', onKeyUp),
      () => window.removeEventListener('blur', onBlur),
      () => window.removeEventListener('popstate', onPopState),
      () => document.removeEventListener('visibilitychange', onVisibility),
      () => window.removeEventListener('online', onOnline),
      () => window.removeEventListener('offline', onOffline),
    );
  }

  #onScreen(): string | null {
    return this.visible ? this.active : null;
  }

  #markRead(user: string): void {
    if (!this.visible) return;
    const conversation = this.conversations.find((c) => c.user === user);
    this.conversations = markListRead(this.conversations, user);
    void this.engine.markRead(user).catch(() => undefined);
    // The user's other devices learn it through the server (DM_READ).
    const at = conversation?.last?.sent_at;
    if (at !== undefined && (this.#dmRead.get(user) ?? -1) < at) {
      this.#dmRead.set(user, at);
      void this.api.json('PUT', `/api/v1/users/${encodeURIComponent(user)}/read`, { at }).catch(() => undefined);
    }
  }

  /** How far each DM was read, on any device of this user (server timestamps). */
  readonly #dmRead = new Map<string, number>();

  /** Another device (or READY) says the DM with `user` was read up to `at`. */
  #dmReadElsewhere(user: string, at: number): void {
    if ((this.#dmRead.get(user) ?? -1) < at) this.#dmRead.set(user, at);
    this.#applyDmReads();
  }

  /** Clears the unread count of conversations read elsewhere up to their last entry. */
  #applyDmReads(): void {
    for (const c of this.conversations) {
      const at = this.#dmRead.get(c.user);
      if (c.unread > 0 && at !== undefined && c.last && c.last.sent_at <= at) {
        this.conversations = markListRead(this.conversations, c.user);
        void this.engine.markRead(c.user).catch(() => undefined);
      }
    }
  }

  #ready(d: ReadyPayload): void {
    if (d.user && typeof d.user === 'object') this.me = d.user as User;
    const extra = d as ReadyPayload & { servers?: ServerState[]; group_dms?: Channel[] };
    // A new gateway session: events may have been missed, so the views read their pages again.
    this.#shownChannel = null;
    for (const [key, view] of this.#channelViews) if (view.channel !== this.activeChannel) this.#channelViews.delete(key);
    const social = d as ReadyPayload & SocialReady & { read_states?: ReadState[]; dm_read_states?: DmReadState[] };
    this.communities.ready(extra.servers, extra.group_dms, social.read_states ?? []);
    this.social.ready(social);
    for (const r of social.relationships ?? []) this.contacts.put(r.user);
    for (const r of social.dm_read_states ?? []) this.#dmReadElsewhere(r.user_id, r.last_read_at);
    this.voice.ready((extra.servers ?? []) as Array<{ voice_states?: VoiceState[] }>);
    for (const group of this.communities.groupDms) for (const user of group.recipients ?? []) this.contacts.put(user);
    this.#applyRoute(false);
    if (this.linked) {
      this.#drain();
      void this.#crawler.connected();
    } else void this.#pendingOnline();
  }

  /** The channels and groups whose history search may read: the one on screen first. */
  #crawlChannels(): string[] {
    if (!this.linked) return [];
    const readable = this.communities.servers.flatMap((s) =>
      s.channels.filter((c) => c.kind !== 'category' && has(channelPermissions(s, c), P.VIEW_CHANNEL)).map((c) => c.id),
    );
    const all = [...readable, ...this.communities.groupDms.map((g) => g.id)];
    const shown = this.activeChannel;
    return shown && all.includes(shown) ? [shown, ...all.filter((c) => c !== shown)] : all;
  }

  #drain(): void {
    // Envelopes that arrive while the queue drains wait behind it in the engine's queue.
    void this.engine
      .drainQueue()
      .then((step) => {
        this.#apply(step, 'drain');
        if (this.#needsStart) {
          this.#needsStart = false;
          return this.engine.start().then((s) => this.#apply(s, 'start'));
        }
        return undefined;
      })
      .catch(() => undefined);
  }

  #dispatch(t: string, d: unknown): void {
    if (t.startsWith('VOICE_') && this.voice.dispatch(t, d)) return;
    if (t !== 'RELATIONSHIP_ADD' && this.social.dispatch(t, d)) return;
    switch (t) {
      case 'ENVELOPE': {
        const id = (d as { id?: unknown }).id;
        if (typeof id === 'string' && this.#recentAcks.has(id)) return;
        void this.engine
          .handleEnvelope(d)
          .then((step) => this.#apply(step, 'envelope'))
          .catch(() => undefined);
        break;
      }
      case 'PREKEYS_LOW':
        void this.engine.maintain().catch(() => undefined);
        break;
      case 'USER_UPDATE': {
        const user = d as PublicUser;
        if (user.id === this.session.userId) this.me = { ...(this.me ?? {}), ...(d as User) };
        else this.contacts.put(user);
        break;
      }
      case 'SESSION_REVOKED':
        this.sessionsChanged += 1;
        break;
      case 'CHANNEL_READ': {
        const r = d as ReadState;
        this.communities.readElsewhere(r.channel_id, r.last_read_id, r.mention_count);
        break;
      }
      case 'DM_READ': {
        const r = d as DmReadState;
        this.#dmReadElsewhere(r.user_id, r.last_read_at);
        break;
      }
      case 'RELATIONSHIP_ADD':
        this.contacts.put((d as { user: PublicUser }).user);
        this.social.dispatch(t, d);
        break;
      case 'PINS_UPDATE': {
        const pin = d as PinUpdate;
        for (const view of this.#viewsOf(pin.channel_id)) view.setPinned(pin.message_id, pin.pinned);
        this.pinsChanged = { ...this.pinsChanged, [pin.channel_id]: (this.pinsChanged[pin.channel_id] ?? 0) + 1 };
        this.#toEngine(t, d);
        break;
      }
      case 'LINK_REQUEST':
      case 'LINK_ANSWER':
      case 'DEVICE_LIST_UPDATE':
        void this.engine
          .handleEvent(t, d)
          .then((step) => this.#apply(step, 'event'))
          .catch(() => undefined);
        break;
      default:
        if (COMMUNITY_EVENTS.has(t)) {
          this.#community(t, d);
          // Who reads a channel may have changed: the engine asks again before its next send.
          this.#toEngine(t, d);
          // A channel joined or made readable: its history, for search.
          if (this.linked) void this.#crawler.kick();
        } else if (CHANNEL_MESSAGE_EVENTS.has(t)) {
          if (t === 'MESSAGE_CREATE') {
            const m = d as { id?: string; channel_id?: string; author_id?: string; thread_id?: string | null; mentions?: Mentions };
            if (m.channel_id && m.author_id) this.social.messageFrom(m.channel_id, m.author_id);
            if (m.id && m.channel_id && m.author_id && !m.thread_id) {
              const mentioned =
                !this.social.isBlocked(m.author_id) && mentionsMe(m.mentions, this.session.userId, this.communities.myRoles(m.channel_id));
              this.communities.messageArrived(m.channel_id, m.id, m.author_id, this.visible && this.activeChannel === m.channel_id, mentioned);
            }
          }
          this.#toEngine(t, d);
        }
        // Events of later versions are ignored.
        break;
    }
  }

  #toEngine(t: string, d: unknown): void {
    if (!this.linked) return;
    void this.engine
      .handleEvent(t, d)
      .then((step) => this.#apply(step, 'event'))
      .catch(() => undefined);
  }

  /** The name of the thread `parent` starts, as far as this page has seen it. */
  threadName(channel: string, parent: string): string | null {
    const thread = this.#channelViews.get(`${channel}:${parent}`);
    const named = thread?.entries.find((e) => e.thread_name)?.thread_name ?? thread?.pending.find((p) => p.thread_name)?.thread_name;
    return named ?? this.#channelViews.get(channel)?.threadNames[parent] ?? null;
  }

  #community(t: string, d: unknown): void {
    const before = this.activeServer ? this.communities.state(this.activeServer) : undefined;
    this.communities.apply(t, d);
    if (t === 'CHANNEL_CREATE' || t === 'CHANNEL_UPDATE') {
      for (const user of (d as Channel).recipients ?? []) this.contacts.put(user);
    }
    if (t === 'MEMBER_ADD' || t === 'MEMBER_UPDATE') this.contacts.put((d as { user: PublicUser }).user);
    // The server on screen went away (left, kicked, banned, deleted): back home, and say so.
    if (before && !this.communities.state(before.server.id)) {
      this.#announce(`You are no longer in ${before.server.name}.`);
      if (this.ui.serverSettings?.server === before.server.id) this.ui.serverSettings = null;
      this.navigate({ name: 'home' }, true);
      return;
    }
    if (this.route.name === 'me' && t === 'CHANNEL_DELETE' && (d as { id: string }).id === this.route.id) {
      this.navigate({ name: 'home' }, true);
      return;
    }
    this.#applyRoute(false);
  }

  *#viewsOf(channel: string): Iterable<ChannelView> {
    for (const view of this.#channelViews.values()) if (view.channel === channel) yield view;
  }

  #gatewayEnded(why: GatewayEnd): void {
    if (why === 'revoked' || why === 'expired') {
      this.#onEnded(why);
      return;
    }
    this.connectionProblem = why;
  }

  #apply(step: Step, what: 'start' | 'drain' | 'envelope' | 'event'): void {
    // A pending device may not do all of a start: it does it again once linked.
    if (step.error !== undefined && what === 'start' && engineErrorKind(step.error) !== 'not_linked') this.#needsStart = true;
    if (step.acks.length > 0) {
      this.#gateway.ack(step.acks);
      for (const id of step.acks) this.#recentAcks.add(id);
      if (this.#recentAcks.size > RECENT_ACKS) {
        const extra = this.#recentAcks.size - RECENT_ACKS;
        let i = 0;
        for (const id of this.#recentAcks) {
          if (i++ >= extra) break;
          this.#recentAcks.delete(id);
        }
      }
    }
    for (const event of step.events) this.#event(event);
    if (step.events.length > 0) this.#scheduleListRefresh();
  }

  #event(event: EngineEvent): void {
    switch (event.type) {
      case 'channel_entry':
        this.#channelEntry(event.entry);
        break;
      case 'channel_message_deleted':
        for (const view of this.#viewsOf(event.channel_id)) view.remove(event.id);
        if (this.ui.thread?.channel === event.channel_id && this.ui.thread.id === event.id) this.ui.thread = null;
        break;
      case 'message':
      case 'undecryptable':
        this.#entry(event.entry);
        break;
      case 'repaired':
        this.#views.get(event.conversation)?.repaired(event.pos);
        break;
      case 'identity_changed': {
        if (event.entry) {
          // Kept in the conversation's history: shown where it happened.
          this.conversations = applyEntry(this.conversations, event.entry, this.#onScreen());
          this.#views.get(event.entry.conversation)?.add(event.entry);
        }
        this.identityAlerts = { ...this.identityAlerts, [event.user]: true };
        this.verified = { ...this.verified, [event.user]: false };
        this.#announce(`Warning: ${this.contacts.name(event.user)}'s safety number changed.`);
        break;
      }
      case 'retry_refused': {
        const notice = { id: this.#nextNotice++, text: refusalText(this.contacts.name(event.user), event.device, event.reason) };
        this.refusals = { ...this.refusals, [event.user]: [...(this.refusals[event.user] ?? []), notice] };
        break;
      }
      case 'linked':
        void this.#becameLinked();
        break;
      case 'link_failed':
        if (!this.linked) {
          void this.link.failed();
          this.#announce('The code entered on your other device did not match. A new code is shown.');
        }
        break;
      case 'link_requested':
        if (!this.linked) break;
        this.approvals.add(event.request);
        this.devicesChanged += 1;
        this.#announce(`${event.request.device_name} asks to be linked to your account.`);
        break;
      case 'own_devices_changed': {
        this.approvals.devicesChanged(event.added, event.removed);
        const others = event.added.filter((id) => id !== this.session.deviceId && !this.approvals.approvedHere.has(id));
        if (others.length > 0 && this.linked) {
          this.newOwnDevices = [...new Set([...this.newOwnDevices, ...others])];
          this.#announce('A new device was linked to your account.');
        }
        this.newOwnDevices = this.newOwnDevices.filter((id) => !event.removed.includes(id));
        this.devicesChanged += 1;
        break;
      }
      case 'account_replaced':
        this.#unlink('replaced');
        break;
      case 'device_removed':
        this.#unlink('removed');
        break;
    }
  }

  #channelEntry(entry: ChannelEntry): void {
    const views = [...this.#viewsOf(entry.channel_id)];
    const known = views.some((v) => v.entries.some((e) => e.id === entry.id));
    for (const view of views) view.upsert(entry);
    if (!known && entry.state === 'ok' && entry.edited_at == null && entry.author_id !== this.session.userId) {
      this.#maybeNotifyChannel(entry);
    }
    if (known || entry.author_id === this.session.userId || !this.visible || this.activeChannel !== entry.channel_id) return;
    const name = this.contacts.name(entry.author_id);
    if (entry.state === 'ok') this.#announce(`${name}: ${entry.body}`);
    else if (entry.state === 'pending') this.#announce(`${name} sent a message that could not be decrypted yet.`);
  }

  /** A desktop notification for a channel message that came while the page is hidden. */
  #maybeNotifyChannel(entry: ChannelEntry): void {
    if (this.visible || this.social.isBlocked(entry.author_id)) return;
    const found = this.communities.channel(entry.channel_id);
    if (!found) return;
    const server = found.state?.server.id ?? null;
    // Judged by the text decrypted, not by what the sender declared beside it.
    const mentioned = mentionsMe(mentionsInText(entry.body), this.session.userId, this.communities.myRoles(entry.channel_id));
    const arrival = { channel: entry.channel_id, server, mentionsMe: mentioned, status: this.social.status(this.session.userId), now: Date.now() };
    if (!notifies(this.social.notifications, arrival)) return;
    const where = found.state ? `#${found.channel.name}, ${found.state.server.name}` : this.groupName(found.channel);
    const text = plainMentions(entry.body, (id) => this.contacts.name(id), (id) => found.state?.roles.find((r) => r.id === id)?.name ?? 'role');
    const route: Route = found.state ? { name: 'server', server: found.state.server.id, channel: entry.channel_id } : { name: 'me', id: entry.channel_id };
    this.#desktopNotify(`${this.contacts.name(entry.author_id)} (${where})`, text, `channel-${entry.channel_id}`, route);
  }

  /** Shows a desktop notification if the browser allows it; a click brings the page to `route`. */
  #desktopNotify(title: string, body: string, tag: string, route: Route): void {
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    try {
      const shown = new Notification(title, { body: body.slice(0, 200), tag });
      shown.onclick = () => {
        window.focus();
        this.navigate(route);
        shown.close();
      };
    } catch {
      // Some browsers only notify from a service worker: the unread marks still tell.
    }
  }

  #entry(entry: HistoryEntry): void {
    const onScreen = this.#onScreen();
    this.conversations = applyEntry(this.conversations, entry, onScreen);
    this.#views.get(entry.conversation)?.add(entry);
    this.contacts.ensure(entry.conversation);
    if (onScreen === entry.conversation) this.#markRead(entry.conversation);
    if (entry.kind === 'identity_changed') return;
    const incoming = !(entry.kind === 'message' && entry.outgoing);
    if (incoming) {
      this.social.messageFrom(dmPlace(entry.conversation), entry.author);
      if (!this.visible && entry.kind === 'message' && notifies(this.social.notifications, { mentionsMe: true, status: this.social.status(this.session.userId), now: Date.now() })) {
        this.#desktopNotify(this.contacts.name(entry.author), entry.body, `dm-${entry.conversation}`, { name: 'me', id: entry.conversation });
      }
      const name = this.contacts.name(entry.author);
      if (entry.kind === 'undecryptable') this.#announce(`${name} sent a message that could not be decrypted yet.`);
      else if (onScreen === entry.conversation) this.#announce(`${name}: ${entry.body}`);
      else this.#announce(`New message from ${name}.`);
    }
  }

  #scheduleListRefresh(): void {
    if (this.#listTimer) return;
    this.#listTimer = setTimeout(() => {
      this.#listTimer = null;
      void this.refreshConversations();
    }, LIST_REFRESH_DELAY_MS);
  }

  #announce(text: string): void {
    if (!text) return;
    // The same text twice in a row must still be read: alternate an invisible suffix.
    this.#announceSeq += 1;
    this.announcement = this.#announceSeq % 2 === 0 ? text : `${text}\u200b`;
  }
}
