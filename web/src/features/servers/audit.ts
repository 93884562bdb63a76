/**
 * A server's audit log in words: each entry as a sentence ("Ann timed out Ben for 10
 * minutes"), from what the server recorded. Entries never hold message content.
 */

import type { AuditAction, AuditEntry } from '../../lib/api/types';

/** Every action, with the label its filter shows. */
export const AUDIT_ACTIONS: ReadonlyArray<{ action: AuditAction; label: string }> = [
  { action: 'member_timeout', label: 'Timeouts' },
  { action: 'member_timeout_remove', label: 'Timeouts lifted' },
  { action: 'member_kick', label: 'Kicks' },
  { action: 'member_ban', label: 'Bans' },
  { action: 'member_unban', label: 'Bans lifted' },
  { action: 'member_roles_update', label: 'Member roles' },
  { action: 'member_voice_update', label: 'Voice mutes and deafens' },
  { action: 'member_voice_disconnect', label: 'Voice disconnections' },
  { action: 'member_voice_move', label: 'Voice moves' },
  { action: 'message_delete', label: 'Messages deleted' },
  { action: 'messages_purge', label: 'Recent messages purged' },
  { action: 'message_pin', label: 'Messages pinned' },
  { action: 'message_unpin', label: 'Messages unpinned' },
  { action: 'reaction_remove', label: 'Reactions removed' },
  { action: 'role_create', label: 'Roles created' },
  { action: 'role_update', label: 'Roles changed' },
  { action: 'role_delete', label: 'Roles deleted' },
  { action: 'channel_create', label: 'Channels created' },
  { action: 'channel_update', label: 'Channels changed' },
  { action: 'channel_delete', label: 'Channels deleted' },
  { action: 'server_update', label: 'Server settings' },
  { action: 'invite_create', label: 'Invites created' },
  { action: 'invite_delete', label: 'Invites revoked' },
];

/** "10 minutes", "1 day", "2 weeks": a duration in seconds, in its largest whole unit. */
export function durationText(secs: number): string {
  const units: Array<[number, string]> = [
    [7 * 24 * 3600, 'week'],
    [24 * 3600, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [size, name] of units) {
    if (secs >= size && secs % size === 0) {
      const n = secs / size;
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return `${secs} seconds`;
}

type Details = Record<string, unknown>;

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** The fields an update changed, by name ("name, topic"). */
function changed(details: Details): string {
  const labels: Record<string, string> = {
    name: 'name',
    topic: 'topic',
    position: 'position',
    parent_id: 'category',
    overwrites: 'permissions',
    user_limit: 'user limit',
    permissions: 'permissions',
    color: 'colour',
    hoist: 'display',
    owner_id: 'owner',
  };
  const names = [...new Set(Object.keys(details).map((k) => labels[k] ?? k.replace(/_/g, ' ')))];
  return names.join(', ');
}

/** The new value of a changed field, if it is text. */
function renamed(details: Details): string | null {
  const name = details.name as { new?: unknown } | undefined;
  return str(name?.new);
}

/**
 * One entry as a sentence. `name` gives a user's display name by id; channel and role names come
 * from the entry's details (what they were called then).
 */
export function describe(entry: AuditEntry, name: (userId: string) => string): string {
  const actor = name(entry.actor_id);
  const target = entry.target_id ?? '';
  const who = () => name(target);
  const d = (entry.details ?? {}) as Details;
  const label = str(d.name);
  switch (entry.action) {
    case 'member_timeout':
      return `${actor} timed out ${who()}${typeof d.duration_secs === 'number' ? ` for ${durationText(d.duration_secs)}` : ''}`;
    case 'member_timeout_remove':
      return `${actor} removed the timeout of ${who()}`;
    case 'member_kick':
      return `${actor} kicked ${who()}`;
    case 'member_ban':
      return `${actor} banned ${who()}${typeof d.duration_secs === 'number' ? ` for ${durationText(d.duration_secs)}` : ''}`;
    case 'member_unban':
      return `${actor} lifted the ban of ${who()}`;
    case 'member_roles_update': {
      const names = (v: unknown) => (Array.isArray(v) ? v.map((r) => str((r as Details).name)).filter((n): n is string => !!n) : []);
      const parts = [...names(d.added).map((n) => `+${n}`), ...names(d.removed).map((n) => `−${n}`)];
      return `${actor} changed the roles of ${who()}${parts.length ? `: ${parts.join(', ')}` : ''}`;
    }
    case 'member_voice_update': {
      const parts: string[] = [];
      if (d.mute === true) parts.push('server muted');
      if (d.mute === false) parts.push('unmuted');
      if (d.deaf === true) parts.push('server deafened');
      if (d.deaf === false) parts.push('undeafened');
      return `${actor} ${parts.length ? parts.join(' and ') : 'changed the voice state of'} ${who()}`;
    }
    case 'member_voice_disconnect':
      return `${actor} disconnected ${who()} from voice`;
    case 'member_voice_move':
      return `${actor} moved ${who()} to another voice channel`;
    case 'message_delete':
      return `${actor} deleted a message by ${typeof d.author_id === 'string' ? name(d.author_id) : 'someone'}`;
    case 'message_pin':
      return `${actor} pinned a message by ${typeof d.author_id === 'string' ? name(d.author_id) : 'someone'}`;
    case 'message_unpin':
      return `${actor} unpinned a message by ${typeof d.author_id === 'string' ? name(d.author_id) : 'someone'}`;
    case 'reaction_remove':
      return `${actor} removed a reaction by ${who()}`;
    case 'messages_purge': {
      const n = typeof d.deleted === 'number' ? d.deleted : 0;
      const span = typeof d.within_secs === 'number' ? ` from the last ${durationText(d.within_secs)}` : '';
      return `${actor} deleted ${n} message${n === 1 ? '' : 's'} by ${who()}${span}`;
    }
    case 'role_create':
      return `${actor} created the role ${label ?? ''}`.trimEnd();
    case 'role_update': {
      const now = renamed(d);
      return `${actor} changed the role ${now ?? ''} (${changed(d)})`.replace('  ', ' ');
    }
    case 'role_delete':
      return `${actor} deleted the role ${label ?? ''}`.trimEnd();
    case 'channel_create':
      return `${actor} created the channel ${label ? `#${label}` : ''}`.trimEnd();
    case 'channel_update': {
      const now = renamed(d);
      return `${actor} changed the channel ${now ? `#${now}` : ''} (${changed(d)})`.replace('  ', ' ');
    }
    case 'channel_delete':
      return `${actor} deleted the channel ${label ? `#${label}` : ''}`.trimEnd();
    case 'server_update':
      return `${actor} changed the server (${changed(d)})`;
    case 'invite_create':
      return `${actor} created the invite ${str(d.invite) ?? ''}`.trimEnd();
    case 'invite_delete':
      return `${actor} revoked the invite ${str(d.invite) ?? ''}`.trimEnd();
  }
}
