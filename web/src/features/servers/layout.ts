/**
 * How a server's channels and members are laid out on screen: channels under their
 * categories in position order, members under their highest hoisted role. Pure functions.
 */

import type { Channel, Member, Role, ServerState } from '../../lib/api/types';
import { displayName } from '../../lib/format';
import { compareIds } from '../channels/timeline';

export interface ChannelGroup {
  /** The category (null: channels outside any category, listed first). */
  category: Channel | null;
  channels: Channel[];
}

function byPosition(a: Channel, b: Channel): number {
  return a.position - b.position || compareIds(a.id, b.id);
}

/** Channels grouped by category: uncategorised first, then each category in position order. */
export function channelGroups(channels: readonly Channel[]): ChannelGroup[] {
  const categories = channels.filter((c) => c.kind === 'category').sort(byPosition);
  const known = new Set(categories.map((c) => c.id));
  const inside = (parent: string | null) =>
    channels.filter((c) => c.kind !== 'category' && (parent === null ? !c.parent_id || !known.has(c.parent_id) : c.parent_id === parent)).sort(byPosition);
  const groups: ChannelGroup[] = [];
  const loose = inside(null);
  if (loose.length > 0 || categories.length === 0) groups.push({ category: null, channels: loose });
  for (const category of categories) groups.push({ category, channels: inside(category.id) });
  return groups;
}

/** The channel a server opens on: the first text channel in list order (else any non-category). */
export function defaultChannel(channels: readonly Channel[]): Channel | null {
  const ordered = channelGroups(channels).flatMap((g) => g.channels);
  return ordered.find((c) => c.kind === 'text') ?? ordered[0] ?? null;
}

/** Roles from the highest down, `@everyone` last. */
export function rolesByRank(roles: readonly Role[]): Role[] {
  return [...roles].sort((a, b) => b.position - a.position || compareIds(a.id, b.id));
}

/** A role's colour as CSS (`null` for none). */
export function roleColour(color: number): string | null {
  return color > 0 ? `#${color.toString(16).padStart(6, '0')}` : null;
}

/** The colour of a member's name: that of their highest coloured role. */
export function memberColour(state: Pick<ServerState, 'roles'>, member: Pick<Member, 'roles'>): string | null {
  const colored = rolesByRank(state.roles.filter((r) => member.roles.includes(r.id) && r.color > 0));
  return colored[0] ? roleColour(colored[0].color) : null;
}

export interface MemberGroup {
  key: string;
  label: string;
  colour: string | null;
  members: Member[];
}

/** Members under their highest hoisted role (highest first), then the others; by name within. */
export function memberGroups(state: Pick<ServerState, 'server' | 'roles'>, members: readonly Member[]): MemberGroup[] {
  const hoisted = rolesByRank(state.roles.filter((r) => r.hoist && r.id !== state.server.id));
  const groups = new Map<string, Member[]>();
  for (const m of members) {
    const role = hoisted.find((r) => m.roles.includes(r.id));
    const key = role?.id ?? '';
    groups.set(key, [...(groups.get(key) ?? []), m]);
  }
  const byName = (a: Member, b: Member) => displayName(a.user).localeCompare(displayName(b.user));
  const out: MemberGroup[] = [];
  for (const role of hoisted) {
    const list = groups.get(role.id);
    if (list) out.push({ key: role.id, label: role.name, colour: roleColour(role.color), members: list.sort(byName) });
  }
  const rest = groups.get('');
  if (rest) out.push({ key: 'members', label: 'Members', colour: null, members: rest.sort(byName) });
  return out;
}

/** One or two letters for a server's icon. */
export function serverInitials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return '?';
  if (words.length === 1) return Array.from(words[0]!).slice(0, 2).join('');
  return words
    .slice(0, 3)
    .map((w) => Array.from(w)[0] ?? '')
    .join('');
}

/** A group DM's name: its own, else its other members' names. */
export function groupName(channel: Pick<Channel, 'name' | 'recipients'>, me: string): string {
  if (channel.name.trim()) return channel.name;
  const others = (channel.recipients ?? []).filter((u) => u.id !== me).map((u) => displayName(u));
  return others.length > 0 ? others.join(', ') : 'Empty group';
}
