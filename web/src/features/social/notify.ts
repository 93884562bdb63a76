/**
 * Whether a message notifies, from the user's settings (per server and per channel, kept by
 * the server for every device), their status and whether it mentions them: as in Discord, a
 * channel's own level wins over its server's; a mute silences notifications and unread marks
 * (mentions still count); do not disturb silences every desktop notification.
 */

export type Level = 'all' | 'mentions' | 'nothing';

export interface TargetSettings {
  level?: Level | null;
  muted?: boolean;
  muted_until?: number | null;
}

export type SettingsMap = Readonly<Record<string, TargetSettings>>;

export function isMuted(settings: TargetSettings | undefined, now: number): boolean {
  if (!settings?.muted) return false;
  return settings.muted_until == null || settings.muted_until > now;
}

/** The level in force in a channel (of a server, or a group DM: `server` null). */
export function levelOf(map: SettingsMap, channel: string, server: string | null): Level {
  return map[channel]?.level ?? (server ? map[server]?.level : null) ?? 'all';
}

/** Whether a channel shows unread marks (not muted, nor in a muted server). */
export function showsUnread(map: SettingsMap, channel: string, server: string | null, now: number): boolean {
  return !isMuted(map[channel], now) && !(server && isMuted(map[server], now));
}

export interface Arrival {
  /** A channel or group DM (`server` null for a group DM); absent for a DM. */
  channel?: string;
  server?: string | null;
  mentionsMe: boolean;
  /** The user's own status. */
  status: string;
  now: number;
}

/** Whether a message that arrived while the page is hidden makes a desktop notification. */
export function notifies(map: SettingsMap, a: Arrival): boolean {
  if (a.status === 'dnd') return false;
  if (!a.channel) return true;
  const server = a.server ?? null;
  if (isMuted(map[a.channel], a.now) || (server && isMuted(map[server], a.now))) return false;
  const level = levelOf(map, a.channel, server);
  return level === 'all' || (level === 'mentions' && a.mentionsMe);
}
