/** Formatting shared by the views: times, days, names, safety numbers. */

import type { HistoryEntry } from './engine/types';

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const shortDateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

/** "14:05" in the person's locale. */
/** A size in bytes for people: `512 B`, `3.4 MB`, `1.2 TB` (powers of 1000, as disks are sold). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** A duration in whole units for people: `45 s`, `12 min`, `5 h 3 min`, `3 d 4 h`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

export function formatTime(ms: number): string {
  return timeFormat.format(ms);
}

/** "Monday, 3 March 2025 at 14:05": for tooltips and screen readers. */
export function formatFull(ms: number): string {
  return fullFormat.format(ms);
}

/** "3 Mar 2025". */
export function formatDate(ms: number): string {
  return shortDateFormat.format(ms);
}

/** A key that is equal for two times of the same local calendar day. */
export function dayKey(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** "Today", "Yesterday", or the full date, for day separators. */
export function dayLabel(ms: number, now: number): string {
  if (dayKey(ms) === dayKey(now)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(yesterday.getDate() - 1);
  if (dayKey(ms) === dayKey(yesterday.getTime())) return 'Yesterday';
  return dayFormat.format(ms);
}

/** Time for the conversation list: the time today, "Yesterday", else the date. */
export function shortWhen(ms: number, now: number): string {
  const label = dayLabel(ms, now);
  if (label === 'Today') return formatTime(ms);
  if (label === 'Yesterday') return label;
  return formatDate(ms);
}

/** "5 minutes ago" style text for device activity. */
export function ago(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? '' : 's'} ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} hour${h === 1 ? '' : 's'} ago`;
  const d = Math.round(h / 24);
  if (d < 30) return `${d} day${d === 1 ? '' : 's'} ago`;
  return formatDate(ms);
}

/** A safety number's 60 digits in 12 groups of 5 (as Signal shows them). */
export function safetyGroups(number: string): string[] {
  const digits = number.replace(/\D/g, '');
  const groups: string[] = [];
  for (let i = 0; i < digits.length; i += 5) groups.push(digits.slice(i, i + 5));
  return groups;
}

export interface Named {
  username: string;
  display_name?: string | null;
}

export function displayName(user: Named | undefined | null, fallback = 'Unknown user'): string {
  if (!user) return fallback;
  return user.display_name?.trim() || user.username;
}

/** One or two letters for an avatar. */
export function initials(name: string): string {
  const words = name.trim().split(/[\s._-]+/).filter(Boolean);
  if (words.length === 0) return '?';
  const first = Array.from(words[0]!)[0] ?? '?';
  const second = words.length > 1 ? (Array.from(words[1]!)[0] ?? '') : '';
  return (first + second).toUpperCase();
}

/** A stable colour slot (0–7) for an id, so a person keeps their avatar colour everywhere. */
export function colourSlot(id: string): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return h % 8;
}

/** A one-line preview of an entry for the conversation list. */
export function preview(entry: HistoryEntry | null, maxLength = 80): string {
  if (!entry) return 'No messages yet';
  if (entry.kind === 'undecryptable') return entry.repaired ? 'Message' : 'Message not decrypted yet';
  if (entry.kind === 'identity_changed') return 'Safety number changed';
  const line = entry.body.replace(/\s+/g, ' ').trim();
  const text = line.length > maxLength ? `${line.slice(0, maxLength - 1)}…` : line;
  return entry.outgoing ? `You: ${text}` : text;
}
