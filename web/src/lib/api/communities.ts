/**
 * The REST routes of communities (servers, roles, channels, invites, members, bans, group DMs,
 * pins): metadata the server needs to route and enforce permissions, never message content
 * (that goes through the engine). Each function is one request; errors are [`ApiError`]s.
 */

import type { ApiClient } from './client';
import type {
  AuditAction,
  AuditLog,
  Ban,
  Channel,
  ChannelKind,
  EditChannel,
  EditRole,
  Invite,
  InvitePreview,
  Member,
  Overwrite,
  ReadState,
  Role,
  Server,
  NewTimeout,
  ServerState,
} from './types';

const enc = encodeURIComponent;

export interface NewChannelBody {
  name: string;
  kind: ChannelKind;
  parent_id?: string | null;
  topic?: string | null;
  position?: number | null;
  overwrites?: Overwrite[] | null;
}

export interface NewInviteBody {
  /** A guest invite: the accounts it makes for people without one last this many seconds. */
  guest_ttl_secs?: number | null;
  max_uses?: number | null;
  /** Seconds; `null` never expires; absent: the server's default (7 days). */
  max_age_secs?: number | null;
}

export interface NewBanBody {
  reason?: string | null;
  duration_secs?: number | null;
  /** Also delete their messages of this many last seconds (up to 7 days). */
  delete_message_secs?: number | null;
}

/** The community routes over the app's authenticated client. */
export class CommunityApi {
  readonly #api: ApiClient;

  constructor(api: ApiClient) {
    this.#api = api;
  }

  // ---- servers ----
  /** Marks a channel or group DM read up to a message (the marker never moves back). */
  markRead(channel: string, messageId: string): Promise<ReadState> {
    return this.#api.json('PUT', `/api/v1/channels/${enc(channel)}/read`, { message_id: messageId });
  }

  createServer(name: string): Promise<Server> {
    return this.#api.json('POST', '/api/v1/servers', { name });
  }
  server(id: string): Promise<Server> {
    return this.#api.json('GET', `/api/v1/servers/${enc(id)}`);
  }
  serverState(id: string): Promise<ServerState> {
    return this.#api.json('GET', `/api/v1/servers/${enc(id)}/state`);
  }
  editServer(id: string, body: { name?: string; owner_id?: string }): Promise<Server> {
    return this.#api.json('PATCH', `/api/v1/servers/${enc(id)}`, body);
  }
  deleteServer(id: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/servers/${enc(id)}`);
  }
  leaveServer(id: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/users/@me/servers/${enc(id)}`);
  }

  // ---- channels ----
  channels(server: string): Promise<Channel[]> {
    return this.#api.json('GET', `/api/v1/servers/${enc(server)}/channels`);
  }
  createChannel(server: string, body: NewChannelBody): Promise<Channel> {
    return this.#api.json('POST', `/api/v1/servers/${enc(server)}/channels`, body);
  }
  editChannel(channel: string, body: EditChannel): Promise<Channel> {
    return this.#api.json('PATCH', `/api/v1/channels/${enc(channel)}`, body);
  }
  deleteChannel(channel: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/channels/${enc(channel)}`);
  }

  // ---- roles ----
  createRole(server: string, body: EditRole): Promise<Role> {
    return this.#api.json('POST', `/api/v1/servers/${enc(server)}/roles`, body);
  }
  editRole(server: string, role: string, body: EditRole): Promise<Role> {
    return this.#api.json('PATCH', `/api/v1/servers/${enc(server)}/roles/${enc(role)}`, body);
  }
  deleteRole(server: string, role: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/servers/${enc(server)}/roles/${enc(role)}`);
  }

  // ---- members ----
  members(server: string): Promise<Member[]> {
    return this.#api.json('GET', `/api/v1/servers/${enc(server)}/members`);
  }
  setMemberRoles(server: string, user: string, roles: string[]): Promise<Member> {
    return this.#api.json('PUT', `/api/v1/servers/${enc(server)}/members/${enc(user)}/roles`, { roles });
  }
  kick(server: string, user: string, reason?: string): Promise<void> {
    const query = reason ? `?reason=${enc(reason)}` : '';
    return this.#api.json('DELETE', `/api/v1/servers/${enc(server)}/members/${enc(user)}${query}`);
  }
  timeout(server: string, user: string, body: NewTimeout): Promise<void> {
    return this.#api.json('PUT', `/api/v1/servers/${enc(server)}/members/${enc(user)}/timeout`, body);
  }
  liftTimeout(server: string, user: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/servers/${enc(server)}/members/${enc(user)}/timeout`);
  }

  // ---- audit log ----
  auditLog(server: string, query: { before?: string; action?: AuditAction | ''; actor_id?: string; limit?: number } = {}): Promise<AuditLog> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
    const q = params.toString();
    return this.#api.json('GET', `/api/v1/servers/${enc(server)}/audit-log${q ? `?${q}` : ''}`);
  }

  // ---- bans ----
  bans(server: string): Promise<Ban[]> {
    return this.#api.json('GET', `/api/v1/servers/${enc(server)}/bans`);
  }
  ban(server: string, user: string, body: NewBanBody): Promise<void> {
    return this.#api.json('PUT', `/api/v1/servers/${enc(server)}/bans/${enc(user)}`, body);
  }
  /** Deletes a member's messages of the last `withinSecs` seconds in every channel of the server. */
  purgeMessages(server: string, user: string, withinSecs: number): Promise<{ deleted: number }> {
    return this.#api.json('DELETE', `/api/v1/servers/${enc(server)}/members/${enc(user)}/messages?within_secs=${withinSecs}`);
  }
  unban(server: string, user: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/servers/${enc(server)}/bans/${enc(user)}`);
  }

  // ---- invites ----
  invites(server: string): Promise<Invite[]> {
    return this.#api.json('GET', `/api/v1/servers/${enc(server)}/invites`);
  }
  createInvite(server: string, body: NewInviteBody): Promise<Invite> {
    return this.#api.json('POST', `/api/v1/servers/${enc(server)}/invites`, body);
  }
  revokeInvite(code: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/invites/${enc(code)}`);
  }
  invitePreview(code: string): Promise<InvitePreview> {
    return this.#api.json('GET', `/api/v1/invites/${enc(code)}`);
  }
  /** Joins the invite's server: the server joined (its full state comes as SERVER_CREATE). */
  join(code: string): Promise<Server | ServerState> {
    return this.#api.json('POST', `/api/v1/invites/${enc(code)}`);
  }

  // ---- pins (the pinned messages themselves are read through the engine) ----
  pin(channel: string, message: string): Promise<void> {
    return this.#api.json('PUT', `/api/v1/channels/${enc(channel)}/pins/${enc(message)}`);
  }
  unpin(channel: string, message: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/channels/${enc(channel)}/pins/${enc(message)}`);
  }

  // ---- group DMs ----
  createGroupDm(recipients: string[], name?: string): Promise<Channel> {
    return this.#api.json('POST', '/api/v1/channels', name ? { recipients, name } : { recipients });
  }
  renameGroupDm(channel: string, name: string): Promise<Channel> {
    return this.#api.json('PATCH', `/api/v1/channels/${enc(channel)}`, { name });
  }
  addRecipient(channel: string, user: string): Promise<void> {
    return this.#api.json('PUT', `/api/v1/channels/${enc(channel)}/recipients/${enc(user)}`);
  }
  removeRecipient(channel: string, user: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/channels/${enc(channel)}/recipients/${enc(user)}`);
  }
}

/** The invite code in a pasted link (`https://host/invite/CODE`) or a bare code; null if none. */
export function inviteCode(text: string): string | null {
  const trimmed = text.trim();
  if (!trimmed) return null;
  const fromPath = /(?:^|\/)invite\/([A-Za-z0-9_-]+)\/?(?:[?#].*)?$/.exec(trimmed);
  if (fromPath) return fromPath[1]!;
  return /^[A-Za-z0-9_-]+$/.test(trimmed) ? trimmed : null;
}
