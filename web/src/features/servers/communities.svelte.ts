/**
 * The servers and group DMs this account is in, as READY and the gateway's events describe
 * them (metadata only: names, roles, channels, members), the member lists loaded on demand,
 * and which channels hold unread messages. REST actions go through here so that their answer
 * shows at once; the gateway's copy of the same change is applied idempotently.
 */

import { CommunityApi } from '../../lib/api/communities';
import type { Channel, Member, MemberRemoved, PublicUser, ReadState, Removed, Role, Server, ServerState } from '../../lib/api/types';
import { compareIds } from '../channels/timeline';
import { P, channelPermissions, has } from './permissions';

/** What is kept per account in localStorage: the newest message read, per channel. */
const READ_KEY = 'copains.read.';

export class Communities {
  readonly rest: CommunityApi;
  servers = $state.raw<ServerState[]>([]);
  groupDms = $state.raw<Channel[]>([]);
  /** READY came (the lists are the server's). */
  loaded = $state(false);
  /** Member lists, per server, once loaded. */
  members = $state.raw<Record<string, Member[]>>({});
  /** Channels with messages newer than the last read one. */
  unread = $state.raw<Record<string, true>>({});
  /** Mentions of this user after the last read message, per channel. */
  mentions = $state.raw<Record<string, number>>({});

  readonly #me: string;
  readonly #storage: Storage | null;
  #read: Record<string, string> = {};
  readonly #loadingMembers = new Set<string>();

  constructor(rest: CommunityApi, me: string, storage: Storage | null = typeof localStorage === 'undefined' ? null : localStorage) {
    this.rest = rest;
    this.#me = me;
    this.#storage = storage;
    try {
      this.#read = JSON.parse(storage?.getItem(READ_KEY + me) ?? '{}') as Record<string, string>;
    } catch {
      this.#read = {};
    }
  }

  get me(): string {
    return this.#me;
  }

  /** READY's servers and group DMs, and how far this user read them on any device. */
  ready(servers: ServerState[] | undefined, groupDms: Channel[] | undefined, readStates: ReadState[] = []): void {
    if (Array.isArray(servers)) this.servers = servers;
    if (Array.isArray(groupDms)) this.groupDms = groupDms;
    this.loaded = true;
    const waiting: Record<string, number> = {};
    for (const r of readStates) {
      if (r.last_read_id !== '0') this.#remember(r.channel_id, r.last_read_id);
      if ((r.mention_count ?? 0) > 0) waiting[r.channel_id] = r.mention_count ?? 0;
    }
    this.mentions = waiting;
    const unread: Record<string, true> = {};
    for (const channel of [...this.servers.flatMap((s) => s.channels), ...this.groupDms]) {
      const last = channel.last_message_id;
      const read = this.#read[channel.id];
      if (last && (!read || compareIds(last, read) > 0)) unread[channel.id] = true;
    }
    this.unread = unread;
    // Members changed while away: reload the lists shown.
    const loaded = Object.keys(this.members);
    this.members = {};
    for (const id of loaded) void this.loadMembers(id);
  }

  state(server: string): ServerState | undefined {
    return this.servers.find((s) => s.server.id === server);
  }

  /** A channel of a server or a group DM, with its server's state. */
  /** A user as the loaded member lists and group DMs know them (nothing is fetched). */
  knownUser(id: string): PublicUser | undefined {
    for (const list of Object.values(this.members)) {
      const found = list.find((m) => m.user.id === id);
      if (found) return found.user;
    }
    for (const group of this.groupDms) {
      const found = group.recipients?.find((u) => u.id === id);
      if (found) return found;
    }
    return undefined;
  }

  channel(id: string): { channel: Channel; state: ServerState | null } | null {
    for (const s of this.servers) {
      const channel = s.channels.find((c) => c.id === id);
      if (channel) return { channel, state: s };
    }
    const group = this.groupDms.find((c) => c.id === id);
    return group ? { channel: group, state: null } : null;
  }

  groupDm(id: string): Channel | undefined {
    return this.groupDms.find((c) => c.id === id);
  }

  /** Whether a server has unread channels (`shows` tells which channels may show it: not muted). */
  serverUnread(server: string, shows: (channel: string) => boolean = () => true): boolean {
    return this.state(server)?.channels.some((c) => this.unread[c.id] && shows(c.id)) ?? false;
  }

  /** This account's permissions in a server channel (every permission in a group DM). */
  can(channelId: string, bit: number): boolean {
    const found = this.channel(channelId);
    if (!found) return false;
    if (!found.state) return bit !== P.MANAGE_MESSAGES || found.channel.owner_id === this.#me;
    return has(channelPermissions(found.state, found.channel), bit);
  }

  // ---- unread marks ----

  /** A message came to `channel`: unread unless it is on screen or it is one's own; counted if it mentions this user. */
  messageArrived(channelId: string, messageId: string, author: string, onScreen: boolean, mentioned = false): void {
    this.#setLast(channelId, messageId);
    if (onScreen || author === this.#me) this.markRead(channelId, messageId);
    else {
      if (!this.unread[channelId]) this.unread = { ...this.unread, [channelId]: true };
      if (mentioned) this.mentions = { ...this.mentions, [channelId]: (this.mentions[channelId] ?? 0) + 1 };
    }
  }

  /** This user's roles in the server of `channelId` (none in a group DM). */
  myRoles(channelId: string): string[] {
    return this.channel(channelId)?.state?.me.roles ?? [];
  }

  /** Mentions waiting in a server's channels. */
  serverMentions(server: string): number {
    return this.state(server)?.channels.reduce((n, c) => n + (this.mentions[c.id] ?? 0), 0) ?? 0;
  }

  /** The channel was read here up to its newest message (or `upTo`): the server is told. */
  markRead(channelId: string, upTo?: string): void {
    const last = upTo ?? this.channel(channelId)?.channel.last_message_id ?? null;
    if (last && this.#remember(channelId, last)) this.#tellServer(channelId, last);
    this.#clearUnread(channelId);
    this.#setMentions(channelId, 0);
  }

  /** Another device of this user read `channelId` up to `upTo`; `mentionCount` still wait after it. */
  readElsewhere(channelId: string, upTo: string, mentionCount = 0): void {
    this.#remember(channelId, upTo);
    const last = this.channel(channelId)?.channel.last_message_id;
    if (!last || compareIds(last, upTo) <= 0) this.#clearUnread(channelId);
    this.#setMentions(channelId, mentionCount);
  }

  #setMentions(channelId: string, count: number): void {
    if ((this.mentions[channelId] ?? 0) === count) return;
    const { [channelId]: _, ...rest } = this.mentions;
    this.mentions = count > 0 ? { ...rest, [channelId]: count } : rest;
  }

  /** Keeps the furthest mark; returns whether it moved. */
  #remember(channelId: string, upTo: string): boolean {
    const read = this.#read[channelId];
    if (read && compareIds(upTo, read) <= 0) return false;
    this.#read[channelId] = upTo;
    try {
      this.#storage?.setItem(READ_KEY + this.#me, JSON.stringify(this.#read));
    } catch {
      // A full store: the marks live until the page closes.
    }
    return true;
  }

  #clearUnread(channelId: string): void {
    if (this.unread[channelId]) {
      const { [channelId]: _, ...rest } = this.unread;
      this.unread = rest;
    }
  }

  /** Marks go to the server (the user's other devices follow), one request per channel at a time. */
  readonly #marking = new Map<string, string>();
  #tellServer(channelId: string, upTo: string): void {
    const busy = this.#marking.has(channelId);
    this.#marking.set(channelId, upTo);
    if (busy) return;
    const send = async () => {
      for (;;) {
        const mark = this.#marking.get(channelId);
        if (mark === undefined) return;
        try {
          await this.rest.markRead(channelId, mark);
        } catch {
          // Offline or gone: the next read marks again.
        }
        if (this.#marking.get(channelId) === mark) {
          this.#marking.delete(channelId);
          return;
        }
      }
    };
    void send();
  }

  #setLast(channelId: string, messageId: string): void {
    const update = (c: Channel) =>
      c.id === channelId && (!c.last_message_id || compareIds(messageId, c.last_message_id) > 0) ? { ...c, last_message_id: messageId } : c;
    if (this.groupDms.some((c) => c.id === channelId)) {
      this.groupDms = this.groupDms.map(update);
      return;
    }
    this.servers = this.servers.map((s) => (s.channels.some((c) => c.id === channelId) ? { ...s, channels: s.channels.map(update) } : s));
  }

  // ---- the gateway's events ----

  /** Applies a community event; returns false for events it does not know. */
  apply(t: string, d: unknown): boolean {
    switch (t) {
      case 'SERVER_CREATE':
        this.putServer(d as ServerState);
        return true;
      case 'SERVER_UPDATE': {
        const server = d as Server;
        this.#mapServer(server.id, (s) => ({ ...s, server: { ...s.server, ...server } }));
        return true;
      }
      case 'SERVER_DELETE':
        this.dropServer((d as Removed).id);
        return true;
      case 'CHANNEL_CREATE':
      case 'CHANNEL_UPDATE':
        this.putChannel(d as Channel);
        return true;
      case 'CHANNEL_DELETE':
        this.dropChannel(d as Removed);
        return true;
      case 'ROLE_CREATE':
      case 'ROLE_UPDATE':
        this.putRole(d as Role);
        return true;
      case 'ROLE_DELETE': {
        const removed = d as Removed;
        if (!removed.server_id) return true;
        this.#mapServer(removed.server_id, (s) => ({
          ...s,
          roles: s.roles.filter((r) => r.id !== removed.id),
          me: { ...s.me, roles: s.me.roles.filter((r) => r !== removed.id) },
        }));
        const list = this.members[removed.server_id];
        if (list) this.#setMembers(removed.server_id, list.map((m) => ({ ...m, roles: m.roles.filter((r) => r !== removed.id) })));
        return true;
      }
      case 'MEMBER_ADD':
      case 'MEMBER_UPDATE':
        this.putMember(d as Member, t === 'MEMBER_ADD');
        return true;
      case 'MEMBER_REMOVE': {
        const { server_id, user_id } = d as MemberRemoved;
        if (user_id === this.#me) {
          this.dropServer(server_id);
          return true;
        }
        const list = this.members[server_id];
        const had = list?.some((m) => m.user.id === user_id) ?? true;
        if (list) this.#setMembers(server_id, list.filter((m) => m.user.id !== user_id));
        if (had) this.#mapServer(server_id, (s) => ({ ...s, server: { ...s.server, member_count: Math.max(0, s.server.member_count - 1) } }));
        return true;
      }
      default:
        return false;
    }
  }

  putServer(state: ServerState): void {
    if (this.servers.some((s) => s.server.id === state.server.id)) this.#mapServer(state.server.id, () => state);
    else this.servers = [...this.servers, state];
  }

  dropServer(id: string): void {
    const state = this.state(id);
    this.servers = this.servers.filter((s) => s.server.id !== id);
    if (state) {
      const { [id]: _, ...rest } = this.members;
      this.members = rest;
      const gone = new Set(state.channels.map((c) => c.id));
      if (Object.keys(this.unread).some((c) => gone.has(c))) {
        this.unread = Object.fromEntries(Object.entries(this.unread).filter(([c]) => !gone.has(c))) as Record<string, true>;
      }
    }
  }

  putChannel(channel: Channel): void {
    if (!channel.server_id) {
      this.groupDms = this.groupDms.some((c) => c.id === channel.id)
        ? this.groupDms.map((c) => (c.id === channel.id ? channel : c))
        : [channel, ...this.groupDms];
      return;
    }
    this.#mapServer(channel.server_id, (s) => ({
      ...s,
      channels: s.channels.some((c) => c.id === channel.id) ? s.channels.map((c) => (c.id === channel.id ? channel : c)) : [...s.channels, channel],
    }));
  }

  dropChannel(removed: Removed): void {
    if (!removed.server_id) {
      this.groupDms = this.groupDms.filter((c) => c.id !== removed.id);
    } else {
      this.#mapServer(removed.server_id, (s) => ({
        ...s,
        // A category's channels stay, out of it (as the server keeps them).
        channels: s.channels.filter((c) => c.id !== removed.id).map((c) => (c.parent_id === removed.id ? { ...c, parent_id: null } : c)),
      }));
    }
    if (this.unread[removed.id]) {
      const { [removed.id]: _, ...rest } = this.unread;
      this.unread = rest;
    }
  }

  putRole(role: Role): void {
    this.#mapServer(role.server_id, (s) => ({
      ...s,
      roles: s.roles.some((r) => r.id === role.id) ? s.roles.map((r) => (r.id === role.id ? role : r)) : [...s.roles, role],
    }));
  }

  putMember(member: Member, added = false): void {
    if (member.user.id === this.#me) this.#mapServer(member.server_id, (s) => ({ ...s, me: member }));
    const list = this.members[member.server_id];
    const known = list?.some((m) => m.user.id === member.user.id) ?? false;
    if (list) this.#setMembers(member.server_id, known ? list.map((m) => (m.user.id === member.user.id ? member : m)) : [...list, member]);
    if (added && !known) this.#mapServer(member.server_id, (s) => ({ ...s, server: { ...s.server, member_count: s.server.member_count + 1 } }));
  }

  #setMembers(server: string, list: Member[]): void {
    this.members = { ...this.members, [server]: list };
  }

  #mapServer(id: string, f: (s: ServerState) => ServerState): void {
    if (!this.servers.some((s) => s.server.id === id)) return;
    this.servers = this.servers.map((s) => (s.server.id === id ? f(s) : s));
  }

  /** Loads a server's member list (once; events keep it current). */
  async loadMembers(server: string, force = false): Promise<void> {
    if ((!force && this.members[server]) || this.#loadingMembers.has(server)) return;
    this.#loadingMembers.add(server);
    try {
      const list = await this.rest.members(server);
      if (this.state(server)) this.#setMembers(server, list);
    } catch {
      // Shown as not loaded; opening the server again retries.
    } finally {
      this.#loadingMembers.delete(server);
    }
  }

  // ---- actions (their answers show at once; the gateway's copies change nothing more) ----

  /** Creates a server and returns its state (the creator is its owner). */
  async createServer(name: string): Promise<ServerState> {
    const server = await this.rest.createServer(name);
    const state = await this.rest.serverState(server.id);
    this.putServer(state);
    return state;
  }

  /** Joins by invite code; returns the server's id. */
  async join(code: string): Promise<string> {
    const answer = await this.rest.join(code);
    const id = 'server' in answer ? answer.server.id : answer.id;
    if ('server' in answer) this.putServer(answer);
    else if (!this.state(id)) this.putServer(await this.rest.serverState(id));
    return id;
  }

  /** Leaves a server; `then` runs before it leaves the lists (to move away from it first). */
  async leave(server: string, then: () => void = () => {}): Promise<void> {
    await this.rest.leaveServer(server);
    then();
    this.dropServer(server);
  }

  async deleteServer(server: string, then: () => void = () => {}): Promise<void> {
    await this.rest.deleteServer(server);
    then();
    this.dropServer(server);
  }

  async createGroupDm(recipients: string[], name?: string): Promise<Channel> {
    const channel = await this.rest.createGroupDm(recipients, name);
    this.putChannel(channel);
    return channel;
  }

  async leaveGroupDm(channel: string, then: () => void = () => {}): Promise<void> {
    await this.rest.removeRecipient(channel, this.#me);
    then();
    this.dropChannel({ id: channel });
  }
}
