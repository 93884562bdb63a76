/**
 * Permissions, computed in the browser with the same rules as client-core's `permissions()`
 * (client-core/src/servers.rs): to hide or disable what a member may not do. The server
 * decides in the end; its 403 is still handled wherever an action is offered.
 */

import type { Channel, Member, Overwrite, Role, ServerState } from '../../lib/api/types';

export const P = {
  VIEW_CHANNEL: 1 << 0,
  SEND_MESSAGES: 1 << 1,
  MANAGE_MESSAGES: 1 << 2,
  MANAGE_CHANNELS: 1 << 3,
  MANAGE_ROLES: 1 << 4,
  MANAGE_SERVER: 1 << 5,
  KICK_MEMBERS: 1 << 6,
  BAN_MEMBERS: 1 << 7,
  MODERATE_MEMBERS: 1 << 8,
  CREATE_INVITES: 1 << 9,
  CONNECT: 1 << 10,
  SPEAK: 1 << 11,
  STREAM: 1 << 12,
  ADD_REACTIONS: 1 << 13,
  ADMINISTRATOR: 1 << 14,
  VIEW_AUDIT_LOG: 1 << 15,
  MENTION_EVERYONE: 1 << 16,
} as const;

export const NONE = 0;
export const ALL = (1 << 17) - 1;
export const EVERYONE_DEFAULT =
  P.VIEW_CHANNEL | P.SEND_MESSAGES | P.CREATE_INVITES | P.CONNECT | P.SPEAK | P.STREAM | P.ADD_REACTIONS;

/** Every permission with its label and a line for the settings screens, in the order shown there. */
export const PERMISSION_INFO: ReadonlyArray<{ bit: number; label: string; help: string; channel: boolean }> = [
  { bit: P.VIEW_CHANNEL, label: 'View channels', help: 'See the channel and read its messages.', channel: true },
  { bit: P.SEND_MESSAGES, label: 'Send messages', help: 'Write, reply and start threads.', channel: true },
  { bit: P.ADD_REACTIONS, label: 'Add reactions', help: 'React to messages with emoji.', channel: true },
  { bit: P.MENTION_EVERYONE, label: 'Mention @everyone and roles', help: 'Notify everyone in the channel, or every member of a role.', channel: true },
  { bit: P.MANAGE_MESSAGES, label: 'Manage messages', help: "Delete other people's messages, pin and unpin.", channel: true },
  { bit: P.MANAGE_CHANNELS, label: 'Manage channels', help: 'Create, edit and delete channels and their permissions.', channel: true },
  { bit: P.CREATE_INVITES, label: 'Create invites', help: 'Invite people to the server.', channel: true },
  { bit: P.CONNECT, label: 'Connect', help: 'Join voice channels.', channel: true },
  { bit: P.SPEAK, label: 'Speak', help: 'Talk in voice channels.', channel: true },
  { bit: P.STREAM, label: 'Video', help: 'Share a camera or a screen in voice channels.', channel: true },
  { bit: P.MANAGE_ROLES, label: 'Manage roles', help: 'Create, edit and assign roles below their highest role.', channel: false },
  { bit: P.MANAGE_SERVER, label: 'Manage server', help: 'Rename the server, see and revoke every invite.', channel: false },
  { bit: P.KICK_MEMBERS, label: 'Kick members', help: 'Remove members (they may come back with an invite).', channel: false },
  { bit: P.BAN_MEMBERS, label: 'Ban members', help: 'Ban and unban members.', channel: false },
  { bit: P.MODERATE_MEMBERS, label: 'Time out members', help: 'Stop members from talking for a while.', channel: false },
  { bit: P.VIEW_AUDIT_LOG, label: 'View audit log', help: 'See who did what in the server: moderation and settings changes.', channel: false },
  { bit: P.ADMINISTRATOR, label: 'Administrator', help: 'Every permission, in every channel. Grant with care.', channel: false },
];

export function has(perms: number, bit: number): boolean {
  return (perms & bit) === bit;
}

/** What `permissions()` needs to know about one member. */
export interface MemberContext {
  user: string;
  isOwner: boolean;
  /** `@everyone`'s permissions. */
  everyone: number;
  /** Their roles (not `@everyone`): id and permissions. */
  roles: ReadonlyArray<readonly [string, number]>;
  /** When their timeout ends (Unix ms), while one runs. */
  timeoutUntil?: number | null;
}

/** What a timed-out member keeps (as the server's `TIMEOUT_KEEPS`): viewing and listening. */
export const TIMEOUT_KEEPS = P.VIEW_CHANNEL | P.CONNECT;

/** Whether a timeout holds `member` at `now`. */
export function timedOut(member: Pick<Member, 'timeout_until'>, now = Date.now()): boolean {
  return !!member.timeout_until && member.timeout_until > now;
}

/**
 * A member's permissions on the server (`overwrites` null) or in a channel (its overwrites).
 * In a channel, no VIEW_CHANNEL means no permission at all there.
 */
export function permissions(server: string, member: MemberContext, overwrites: readonly Overwrite[] | null): number {
  if (member.isOwner) return ALL;
  let perms = member.roles.reduce((p, [, r]) => p | r, member.everyone);
  if (has(perms, P.ADMINISTRATOR)) return ALL;
  // A running timeout leaves viewing and listening (the owner and administrators are above it).
  const timed = !!member.timeoutUntil && member.timeoutUntil > Date.now();
  if (!overwrites) return timed ? perms & TIMEOUT_KEEPS : perms;
  const apply = (p: number, allow: number, deny: number) => ((p & ~deny & ALL) | allow) & ALL;
  const everyone = overwrites.find((o) => o.kind === 'role' && String(o.id) === server);
  if (everyone) perms = apply(perms, everyone.allow ?? NONE, everyone.deny ?? NONE);
  let allow = NONE;
  let deny = NONE;
  for (const o of overwrites) {
    if (o.kind === 'role' && member.roles.some(([r]) => r === String(o.id))) {
      allow |= o.allow ?? NONE;
      deny |= o.deny ?? NONE;
    }
  }
  perms = apply(perms, allow, deny);
  const own = overwrites.find((o) => o.kind === 'member' && String(o.id) === member.user);
  if (own) perms = apply(perms, own.allow ?? NONE, own.deny ?? NONE);
  if (!has(perms, P.VIEW_CHANNEL)) return NONE;
  return timed ? perms & TIMEOUT_KEEPS : perms;
}

/** The context of `member` in the server `state` describes. */
export function memberContext(
  state: Pick<ServerState, 'server' | 'roles'>,
  member: Pick<Member, 'user' | 'roles'> & Partial<Pick<Member, 'timeout_until'>>,
): MemberContext {
  const everyone = state.roles.find((r) => r.id === state.server.id)?.permissions ?? NONE;
  const roles = member.roles
    .map((id) => state.roles.find((r) => r.id === id))
    .filter((r): r is Role => r !== undefined && r.id !== state.server.id)
    .map((r) => [r.id, r.permissions] as const);
  return { user: member.user.id, isOwner: state.server.owner_id === member.user.id, everyone, roles, timeoutUntil: member.timeout_until ?? null };
}

/** This member's server-wide permissions. */
export function serverPermissions(state: ServerState, member: Pick<Member, 'user' | 'roles'> & Partial<Pick<Member, 'timeout_until'>> = state.me): number {
  return permissions(state.server.id, memberContext(state, member), null);
}

/** This member's permissions in `channel`. */
export function channelPermissions(
  state: ServerState,
  channel: Channel,
  member: Pick<Member, 'user' | 'roles'> & Partial<Pick<Member, 'timeout_until'>> = state.me,
): number {
  return permissions(state.server.id, memberContext(state, member), channel.overwrites);
}

/** The highest position among a member's roles (`@everyone` is 0); the owner outranks everyone. */
export function topPosition(state: Pick<ServerState, 'server' | 'roles'>, member: Pick<Member, 'user' | 'roles'>): number {
  if (state.server.owner_id === member.user.id) return Number.POSITIVE_INFINITY;
  let top = 0;
  for (const id of member.roles) {
    const role = state.roles.find((r) => r.id === id);
    if (role && role.position > top) top = role.position;
  }
  return top;
}

/** Whether `actor` may act on a role at `position` (strictly below their highest role). */
export function canActOnRole(state: Pick<ServerState, 'server' | 'roles'>, actor: Pick<Member, 'user' | 'roles'>, position: number): boolean {
  return topPosition(state, actor) > position;
}

/** Whether `actor` outranks `target` (neither the owner nor at or above the actor's highest role). */
export function outranks(
  state: Pick<ServerState, 'server' | 'roles'>,
  actor: Pick<Member, 'user' | 'roles'>,
  target: Pick<Member, 'user' | 'roles'>,
): boolean {
  if (target.user.id === state.server.owner_id) return false;
  return topPosition(state, actor) > topPosition(state, target);
}
