/**
 * A conversation's timeline as the chat view shows it, computed from the engine's history
 * pages (merged by position), the messages being sent, and the clock. Pure functions: the
 * store applies them, the tests check them.
 */

import { dayKey, dayLabel } from '../../lib/format';
import type { Conversation, HistoryEntry, IdentityChangedEntry, MessageEntry, UndecryptableEntry } from '../../lib/engine/types';

/** Entries asked of the engine per page. */
export const PAGE_SIZE = 50;
/** Messages of one author closer than this are shown as one block (Discord does the same). */
const GROUP_GAP_MS = 7 * 60_000;

/** A message typed here that the server has not accepted yet, or that failed. */
export interface Pending {
  localId: string;
  conversation: string;
  body: string;
  sent_at: number;
  state: 'sending' | 'failed';
  error?: string;
}

export type Row =
  | { type: 'day'; key: string; label: string }
  | { type: 'unread'; key: string }
  | { type: 'message'; key: string; entry: MessageEntry; head: boolean }
  | { type: 'pending'; key: string; pending: Pending; head: boolean }
  | { type: 'undecryptable'; key: string; entry: UndecryptableEntry }
  | { type: 'identity'; key: string; entry: IdentityChangedEntry };

/** Both lists' entries, one per position (the newer copy wins), in position order. */
export function mergeEntries(existing: readonly HistoryEntry[], incoming: readonly HistoryEntry[]): HistoryEntry[] {
  if (incoming.length === 0) return existing.slice();
  const byPos = new Map<number, HistoryEntry>();
  for (const e of existing) byPos.set(e.pos, e);
  for (const e of incoming) byPos.set(e.pos, e);
  return [...byPos.values()].sort((a, b) => a.pos - b.pos);
}

/** Marks the undecryptable entry at `pos` repaired (its message follows in the history). */
export function markRepaired(entries: readonly HistoryEntry[], pos: number): HistoryEntry[] {
  return entries.map((e) => (e.pos === pos && e.kind === 'undecryptable' ? { ...e, repaired: true } : e));
}

/** Whether a page this long may have older entries before it. */
export function mayHaveOlder(page: readonly HistoryEntry[], limit: number): boolean {
  return page.length >= limit && (page[0]?.pos ?? 0) > 0;
}

/** The position of the first unread entry, given how many incoming entries are unread. */
export function firstUnreadPos(entries: readonly HistoryEntry[], unread: number): number | null {
  if (unread <= 0) return null;
  let left = unread;
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i]!;
    if (e.kind === 'message' && e.outgoing) continue;
    if (e.kind === 'undecryptable' && e.repaired) continue;
    if (e.kind === 'identity_changed') continue;
    left -= 1;
    if (left === 0) return e.pos;
  }
  return entries[0]?.pos ?? null;
}

function author(e: HistoryEntry | Pending, me: string): string {
  if (!('kind' in e)) return me;
  return e.kind === 'identity_changed' ? '' : e.author;
}

/**
 * The rows to draw: day separators, an "unread" marker, entries with or without their author
 * header, then the pending messages. A repaired undecryptable entry is left out: the message
 * it stood for is further down.
 */
export function buildRows(
  entries: readonly HistoryEntry[],
  pending: readonly Pending[],
  me: string,
  now: number,
  unreadFrom: number | null = null,
): Row[] {
  const rows: Row[] = [];
  let prev: HistoryEntry | Pending | null = null;
  let prevDay = '';
  const push = (item: HistoryEntry | Pending) => {
    const day = dayKey(item.sent_at);
    let head = true;
    if (day !== prevDay) {
      rows.push({ type: 'day', key: `day-${day}`, label: dayLabel(item.sent_at, now) });
      prevDay = day;
    } else if (
      prev &&
      !('kind' in prev && prev.kind !== 'message') &&
      author(prev, me) === author(item, me) &&
      item.sent_at - prev.sent_at < GROUP_GAP_MS
    ) {
      head = false;
    }
    if ('kind' in item) {
      if (unreadFrom !== null && item.pos === unreadFrom) {
        rows.push({ type: 'unread', key: 'unread' });
        head = true;
      }
      if (item.kind === 'message') rows.push({ type: 'message', key: `p${item.pos}`, entry: item, head });
      else if (item.kind === 'undecryptable') rows.push({ type: 'undecryptable', key: `p${item.pos}`, entry: item });
      else rows.push({ type: 'identity', key: `p${item.pos}`, entry: item });
    } else {
      rows.push({ type: 'pending', key: `l${item.localId}`, pending: item, head });
    }
    prev = item;
  };
  for (const e of entries) {
    if (e.kind === 'undecryptable' && e.repaired) continue;
    push(e);
  }
  for (const p of pending) push(p);
  return rows;
}

/**
 * The conversation list after a new entry, before the engine's own list comes back: the
 * conversation moves to the top with the entry as its last, and an incoming entry counts as
 * unread unless the conversation is on screen.
 */
export function applyEntry(list: readonly Conversation[], entry: HistoryEntry, onScreen: string | null): Conversation[] {
  const current = list.find((c) => c.user === entry.conversation);
  const incoming = entry.kind === 'undecryptable' || (entry.kind === 'message' && !entry.outgoing);
  const unread = (current?.unread ?? 0) + (incoming && onScreen !== entry.conversation ? 1 : 0);
  const last = current?.last && current.last.pos > entry.pos ? current.last : entry;
  const updated: Conversation = { user: entry.conversation, last, unread };
  return [updated, ...list.filter((c) => c.user !== entry.conversation)];
}

/** The list with one conversation read. */
export function markListRead(list: readonly Conversation[], user: string): Conversation[] {
  return list.map((c) => (c.user === user && c.unread !== 0 ? { ...c, unread: 0 } : c));
}

/** Conversations with unread entries (for the badge on the home button). */
export function unreadConversations(list: readonly Conversation[]): number {
  return list.filter((c) => c.unread > 0).length;
}

export function totalUnread(list: readonly Conversation[]): number {
  return list.reduce((n, c) => n + c.unread, 0);
}
