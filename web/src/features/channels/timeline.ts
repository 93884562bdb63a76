/**
 * A channel's timeline as the chat view shows it: the engine's entries merged by message id
 * (snowflakes, so ordered by time), the messages being sent, day separators and author
 * grouping as in the DM view. Pure functions: the store applies them, the tests check them.
 */

import { dayKey, dayLabel } from '../../lib/format';
import type { ChannelEntry, ChannelReplyQuote } from '../../lib/engine/types';

/** Entries asked of the engine per page. */
export const PAGE_SIZE = 50;
/** Messages of one author closer than this are shown as one block. */
const GROUP_GAP_MS = 7 * 60_000;
/** Longest reply excerpt carried in a quote. */
export const EXCERPT_MAX = 100;

/** A message typed here that the server has not accepted yet, or that failed. */
export interface ChannelPending {
  localId: string;
  body: string;
  reply_to: ChannelReplyQuote | null;
  thread_name: string | null;
  created_at: number;
  state: 'sending' | 'failed';
  error?: string;
}

export type ChannelRow =
  | { type: 'day'; key: string; label: string }
  | { type: 'message'; key: string; entry: ChannelEntry; head: boolean }
  | { type: 'pending'; key: string; pending: ChannelPending; head: boolean };

/** Orders two snowflake ids (decimal strings of positive numbers). */
export function compareIds(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Both lists' entries, one per id (the incoming copy wins), oldest first. */
export function mergeChannelEntries(existing: readonly ChannelEntry[], incoming: readonly ChannelEntry[]): ChannelEntry[] {
  if (incoming.length === 0) return existing.slice();
  const byId = new Map<string, ChannelEntry>();
  for (const e of existing) byId.set(e.id, e);
  for (const e of incoming) byId.set(e.id, e);
  return [...byId.values()].sort((a, b) => compareIds(a.id, b.id));
}

export function withoutEntry(entries: readonly ChannelEntry[], id: string): ChannelEntry[] {
  return entries.filter((e) => e.id !== id);
}

/** The quote a reply carries: the replied message's author and the start of its text. */
export function quoteOf(entry: Pick<ChannelEntry, 'id' | 'author_id' | 'body'>): ChannelReplyQuote {
  const line = entry.body.replace(/\s+/g, ' ').trim();
  const excerpt = line.length > EXCERPT_MAX ? `${line.slice(0, EXCERPT_MAX - 1)}…` : line;
  return { id: entry.id, author_id: entry.author_id, excerpt };
}

/** The reactions of an entry once `user` toggled `emoji` (shown before the engine's copy comes back). */
export function toggledReactions(entry: ChannelEntry, emoji: string, user: string): ChannelEntry['reactions'] {
  const existing = entry.reactions.find((r) => r.emoji === emoji);
  if (!existing) return [...entry.reactions, { emoji, count: 1, users: [user], mine: true }];
  if (existing.mine) {
    const left = existing.count - 1;
    return left <= 0
      ? entry.reactions.filter((r) => r.emoji !== emoji)
      : entry.reactions.map((r) => (r.emoji === emoji ? { ...r, count: left, mine: false, users: r.users.filter((u) => u !== user) } : r));
  }
  return entry.reactions.map((r) => (r.emoji === emoji ? { ...r, count: r.count + 1, mine: true, users: [...r.users, user] } : r));
}

function authorOf(item: ChannelEntry | ChannelPending, me: string): string {
  return 'author_id' in item ? item.author_id : me;
}

/**
 * The rows to draw: day separators, entries with or without their author header (a reply, an
 * undecryptable entry and a long pause start a new block), then the pending messages.
 */
export function buildChannelRows(entries: readonly ChannelEntry[], pending: readonly ChannelPending[], me: string, now: number): ChannelRow[] {
  const rows: ChannelRow[] = [];
  let prev: ChannelEntry | ChannelPending | null = null;
  let prevDay = '';
  const push = (item: ChannelEntry | ChannelPending) => {
    const day = dayKey(item.created_at);
    let head = true;
    if (day !== prevDay) {
      rows.push({ type: 'day', key: `day-${day}`, label: dayLabel(item.created_at, now) });
      prevDay = day;
    } else if (
      prev &&
      authorOf(prev, me) === authorOf(item, me) &&
      item.created_at - prev.created_at < GROUP_GAP_MS &&
      !item.reply_to &&
      !('state' in prev && prev.state !== 'ok' && 'id' in prev) &&
      !('id' in item && item.state !== 'ok')
    ) {
      head = false;
    }
    if ('id' in item) rows.push({ type: 'message', key: `m${item.id}`, entry: item, head });
    else rows.push({ type: 'pending', key: `l${item.localId}`, pending: item, head });
    prev = item;
  };
  for (const e of entries) push(e);
  for (const p of pending) push(p);
  return rows;
}
