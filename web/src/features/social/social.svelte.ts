/**
 * Friends, blocks, presence and typing: the state READY and the gateway's events keep, and the
 * REST actions on it. Components read this state and call its actions.
 *
 * Presence shown is what the server sends: it shares a user's presence only with their friends
 * and the members of servers and group DMs they share, never across a block. This client
 * reports its own idleness (no input for five minutes) on the gateway.
 */

import type { ApiClient } from '../../lib/api/client';
import type { CustomStatus, Presence, PresenceSettings, PresenceStatus, PublicUser, Relationship } from '../../lib/api/types';
import { IdleWatcher } from './idle';
import type { SettingsMap, TargetSettings } from './notify';
import { dmPlace, TypingSender, TypingTracker } from './typing';

/** Gateway op ACTIVITY (client-core `op::ACTIVITY`). */
export const OP_ACTIVITY = 3;

export interface SocialReady {
  relationships?: Relationship[];
  presence?: PresenceSettings;
  presences?: Presence[];
  notification_settings?: Array<TargetSettings & { target_id: string }>;
}

export interface SocialOptions {
  api: ApiClient;
  me: string;
  /** Sends a gateway frame. */
  send(op: number, d: unknown): void;
  now?: () => number;
  /** Watches input for idleness (absent in tests that drive it by hand). */
  idle?: IdleWatcher | null;
}

const enc = encodeURIComponent;

/** Words for a status. */
export function statusLabel(status: PresenceStatus): string {
  switch (status) {
    case 'online':
      return 'Online';
    case 'idle':
      return 'Idle';
    case 'dnd':
      return 'Do Not Disturb';
    case 'invisible':
      return 'Invisible';
    case 'offline':
      return 'Offline';
  }
}

export class Social {
  /** Relationships by the other user's id. */
  relationships = $state.raw<Record<string, Relationship>>({});
  /** How others are seen, by user id (absent: offline). */
  presences = $state.raw<Record<string, Presence>>({});
  /** What this user chose to be seen as. */
  mine = $state.raw<PresenceSettings>({ status: 'online' });
  /** Whether this client reports its user idle. */
  idle = $state(false);
  /** Bumped when typing indicators change. */
  typingChanged = $state(0);
  /** Notification settings per server and channel (absent: the defaults). */
  notifications = $state.raw<SettingsMap>({});

  readonly #api: ApiClient;
  readonly #me: string;
  readonly #send: (op: number, d: unknown) => void;
  readonly #now: () => number;
  readonly #typing = new TypingTracker();
  readonly #sender = new TypingSender();
  readonly #idle: IdleWatcher | null;
  #typingTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: SocialOptions) {
    this.#api = options.api;
    this.#me = options.me;
    this.#send = options.send;
    this.#now = options.now ?? (() => Date.now());
    this.#idle = options.idle === undefined ? new IdleWatcher((idle) => this.#setIdle(idle)) : options.idle;
  }

  /** Starts watching for idleness. */
  start(): void {
    this.#idle?.start();
  }

  stop(): void {
    this.#idle?.stop();
    if (this.#typingTimer) clearTimeout(this.#typingTimer);
    this.#typingTimer = null;
  }

  /** The person did something (keys, pointer, focus). */
  input(): void {
    this.#idle?.input();
  }

  #setIdle(idle: boolean): void {
    this.idle = idle;
    this.#send(OP_ACTIVITY, { idle });
  }

  /** READY: everything afresh. Also tells the server again if this client is idle. */
  ready(d: SocialReady): void {
    const rel: Record<string, Relationship> = {};
    for (const r of d.relationships ?? []) rel[r.user.id] = r;
    this.relationships = rel;
    if (d.presence) this.mine = d.presence;
    const pres: Record<string, Presence> = {};
    for (const p of d.presences ?? []) if (p.status !== 'offline') pres[p.user_id] = p;
    this.presences = pres;
    const settings: Record<string, TargetSettings> = {};
    for (const { target_id, ...rest } of d.notification_settings ?? []) settings[target_id] = rest;
    this.notifications = settings;
    if (this.idle) this.#send(OP_ACTIVITY, { idle: true });
  }

  /** RESUMED: the server kept the session, but tell it again if this client is idle. */
  resumed(): void {
    if (this.idle) this.#send(OP_ACTIVITY, { idle: true });
  }

  /** A gateway event; returns whether it was one of these. */
  dispatch(t: string, d: unknown): boolean {
    switch (t) {
      case 'RELATIONSHIP_ADD': {
        const r = d as Relationship;
        this.relationships = { ...this.relationships, [r.user.id]: r };
        if (r.kind === 'blocked' && this.#typing.forget(r.user.id)) this.typingChanged++;
        return true;
      }
      case 'RELATIONSHIP_REMOVE': {
        const { user_id } = d as { user_id: string };
        const { [user_id]: _, ...rest } = this.relationships;
        this.relationships = rest;
        return true;
      }
      case 'PRESENCE_UPDATE': {
        const next = { ...this.presences };
        for (const p of (d as { presences: Presence[] }).presences ?? []) {
          if (p.status === 'offline') delete next[p.user_id];
          else next[p.user_id] = p;
        }
        this.presences = next;
        return true;
      }
      case 'PRESENCE_SETTINGS_UPDATE':
        this.mine = d as PresenceSettings;
        return true;
      case 'NOTIFICATION_SETTINGS_UPDATE': {
        const { target_id, ...rest } = d as TargetSettings & { target_id: string };
        this.#putNotifications(target_id, rest);
        return true;
      }
      case 'TYPING_START': {
        const typing = d as { user_id: string; channel_id?: string | null };
        if (typing.user_id === this.#me || this.isBlocked(typing.user_id)) return true;
        const place = typing.channel_id ?? dmPlace(typing.user_id);
        this.#typing.add(place, typing.user_id, this.#now());
        this.typingChanged++;
        this.#scheduleTypingExpiry();
        return true;
      }
      default:
        return false;
    }
  }

  // ---- presence ----

  /** How `user` is seen (offline when nothing says otherwise). */
  status(user: string): PresenceStatus {
    if (user === this.#me) return this.mine.status === 'online' && this.idle ? 'idle' : this.mine.status;
    return this.presences[user]?.status ?? 'offline';
  }

  customStatus(user: string): CustomStatus | null {
    const custom = user === this.#me ? this.mine.custom_status : this.presences[user]?.custom_status;
    if (!custom) return null;
    if (custom.expires_at != null && custom.expires_at <= this.#now()) return null;
    return custom;
  }

  /** Chooses a status and custom status (kept by the server for every device). */
  async setPresence(settings: PresenceSettings): Promise<void> {
    this.mine = await this.#api.json<PresenceSettings>('PUT', '/api/v1/users/@me/presence', settings);
  }

  // ---- notifications ----

  /** Sets what to be notified of in a server or channel (`{}`: back to the defaults). */
  async setNotifications(target: string, settings: TargetSettings): Promise<void> {
    const saved = await this.#api.json<TargetSettings & { target_id: string }>(
      'PUT',
      `/api/v1/users/@me/notification-settings/${enc(target)}`,
      settings,
    );
    const { target_id: _, ...rest } = saved;
    this.#putNotifications(target, rest);
  }

  #putNotifications(target: string, settings: TargetSettings): void {
    const { [target]: _, ...others } = this.notifications;
    this.notifications = settings.level || settings.muted ? { ...others, [target]: settings } : others;
  }

  // ---- relationships ----

  kind(user: string): Relationship['kind'] | null {
    return this.relationships[user]?.kind ?? null;
  }

  isBlocked(user: string): boolean {
    return this.relationships[user]?.kind === 'blocked';
  }

  list(kind: Relationship['kind']): Relationship[] {
    return Object.values(this.relationships)
      .filter((r) => r.kind === kind)
      .sort((a, b) => name(a.user).localeCompare(name(b.user)));
  }

  get friends(): Relationship[] {
    return this.list('friend');
  }

  get pending(): Relationship[] {
    return [...this.list('incoming'), ...this.list('outgoing')];
  }

  get incomingCount(): number {
    return this.list('incoming').length;
  }

  /** Asks someone to be friends by username (accepts, if they asked first). */
  async request(username: string): Promise<Relationship> {
    const r = await this.#api.json<Relationship>('POST', '/api/v1/users/@me/relationships', { username });
    this.relationships = { ...this.relationships, [r.user.id]: r };
    return r;
  }

  async accept(user: string): Promise<void> {
    const r = await this.#api.json<Relationship>('PUT', `/api/v1/users/@me/relationships/${enc(user)}`, { kind: 'friend' });
    this.relationships = { ...this.relationships, [r.user.id]: r };
  }

  async block(user: string): Promise<void> {
    const r = await this.#api.json<Relationship>('PUT', `/api/v1/users/@me/relationships/${enc(user)}`, { kind: 'blocked' });
    this.relationships = { ...this.relationships, [r.user.id]: r };
    if (this.#typing.forget(user)) this.typingChanged++;
  }

  /** Removes a friend, declines or cancels a request, or unblocks. */
  async remove(user: string): Promise<void> {
    await this.#api.json<void>('DELETE', `/api/v1/users/@me/relationships/${enc(user)}`);
    const { [user]: _, ...rest } = this.relationships;
    this.relationships = rest;
  }

  // ---- typing ----

  /** Who types in a channel (id) or the DM with a user (`dm:<id>`), first to start first. */
  typers(place: string): string[] {
    void this.typingChanged;
    return this.#typing.who(place, this.#now());
  }

  /** A message from `user` arrived in `place`: their indicator ends. */
  messageFrom(place: string, user: string): void {
    if (this.#typing.stopped(place, user)) this.typingChanged++;
  }

  /** This user typed in `place` (a channel id, or `dm:<id>`): tell the others, now and then. */
  typed(place: string): void {
    if (!this.#sender.typed(place, this.#now())) return;
    const path = place.startsWith('dm:') ? `/api/v1/users/${enc(place.slice(3))}/typing` : `/api/v1/channels/${enc(place)}/typing`;
    void this.#api.json<void>('POST', path).catch(() => undefined);
  }

  /** This user sent a message in `place`. */
  sent(place: string): void {
    this.#sender.sent(place);
  }

  #scheduleTypingExpiry(): void {
    if (this.#typingTimer) clearTimeout(this.#typingTimer);
    const next = this.#typing.nextEnd();
    if (next === null) return;
    this.#typingTimer = setTimeout(() => {
      this.#typingTimer = null;
      if (this.#typing.prune(this.#now())) this.typingChanged++;
      this.#scheduleTypingExpiry();
    }, Math.max(0, next - this.#now()));
  }
}

function name(user: PublicUser): string {
  return (user.display_name || user.username).toLowerCase();
}
