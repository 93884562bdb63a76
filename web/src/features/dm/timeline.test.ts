import { describe, expect, it } from 'vitest';
import type { Conversation, HistoryEntry, MessageEntry } from '../../lib/engine/types';
import {
  applyEntry,
  buildRows,
  firstUnreadPos,
  markListRead,
  markRepaired,
  mayHaveOlder,
  mergeEntries,
  totalUnread,
  unreadConversations,
  type Pending,
} from './timeline';

const T0 = new Date('2025-03-05T10:00:00').getTime();
const ME = '1';
const BOB = '2';

function msg(pos: number, from: string, minutes: number, body = `m${pos}`): MessageEntry {
  return {
    kind: 'message',
    pos,
    message_id: `id${pos}`,
    conversation: BOB,
    author: from,
    author_device: 1,
    outgoing: from === ME,
    body,
    sent_at: T0 + minutes * 60_000,
  };
}

function lost(pos: number, minutes: number, repaired = false): HistoryEntry {
  return { kind: 'undecryptable', pos, conversation: BOB, author: BOB, author_device: 1, sent_at: T0 + minutes * 60_000, repaired };
}

describe('history paging and merging', () => {
  it('merges pages by position, newest copy winning, in order', () => {
    const newest = [msg(50, BOB, 50), msg(51, ME, 51)];
    const older = [msg(48, BOB, 48), msg(49, BOB, 49), msg(50, BOB, 50, 'stale')];
    const merged = mergeEntries(newest, older);
    expect(merged.map((e) => e.pos)).toEqual([48, 49, 50, 51]);
    expect((merged[2] as MessageEntry).body).toBe('stale');
    expect(mergeEntries(merged, [])).toEqual(merged);
  });

  it('knows when older pages may exist', () => {
    const page = Array.from({ length: 50 }, (_, i) => msg(i + 10, BOB, i));
    expect(mayHaveOlder(page, 50)).toBe(true);
    expect(mayHaveOlder(page.slice(0, 49), 50)).toBe(false);
    expect(mayHaveOlder(Array.from({ length: 50 }, (_, i) => msg(i, BOB, i)), 50)).toBe(false);
  });

  it('marks a repaired entry and hides it from the rows', () => {
    const entries = markRepaired([msg(1, BOB, 0), lost(2, 1), msg(3, BOB, 2)], 2);
    expect(entries[1]).toMatchObject({ kind: 'undecryptable', repaired: true });
    const rows = buildRows(entries, [], ME, T0);
    expect(rows.filter((r) => r.type === 'undecryptable')).toHaveLength(0);
    const shown = buildRows([lost(2, 1)], [], ME, T0);
    expect(shown.map((r) => r.type)).toEqual(['day', 'undecryptable']);
  });
});

describe('rows', () => {
  it('adds day separators and groups an author’s close messages', () => {
    const entries = [
      msg(1, BOB, -24 * 60), // yesterday
      msg(2, BOB, 0),
      msg(3, BOB, 3),
      msg(4, ME, 4),
      msg(5, ME, 20), // more than 7 minutes later
    ];
    const rows = buildRows(entries, [], ME, T0 + 3600_000);
    expect(rows.map((r) => (r.type === 'day' ? r.label : r.type === 'message' ? `${r.entry.pos}${r.head ? 'H' : ''}` : r.type))).toEqual([
      'Yesterday',
      '1H',
      'Today',
      '2H',
      '3',
      '4H',
      '5H',
    ]);
  });

  it('puts pending messages last, grouped with my messages just before', () => {
    const pending: Pending[] = [
      { localId: 'a', conversation: BOB, body: 'hi', sent_at: T0 + 61_000, state: 'sending' },
      { localId: 'b', conversation: BOB, body: 'oops', sent_at: T0 + 62_000, state: 'failed', error: 'x' },
    ];
    const rows = buildRows([msg(1, ME, 1)], pending, ME, T0);
    expect(rows.map((r) => r.key)).toEqual([expect.stringMatching(/^day-/), 'p1', 'la', 'lb']);
    expect(rows.slice(2).map((r) => (r.type === 'pending' ? r.head : null))).toEqual([false, false]);
  });

  it('marks where the unread entries start', () => {
    const entries = [msg(1, BOB, 0), msg(2, ME, 1), msg(3, BOB, 2), msg(4, ME, 3), msg(5, BOB, 4)];
    expect(firstUnreadPos(entries, 2)).toBe(3);
    expect(firstUnreadPos(entries, 0)).toBeNull();
    expect(firstUnreadPos(entries, 10)).toBe(1);
    const rows = buildRows(entries, [], ME, T0, 3);
    const i = rows.findIndex((r) => r.type === 'unread');
    expect(rows[i + 1]).toMatchObject({ type: 'message', head: true, key: 'p3' });
  });
});

describe('unread counts', () => {
  const list: Conversation[] = [
    { user: '3', last: null, unread: 0 },
    { user: BOB, last: msg(1, BOB, 0), unread: 1 },
  ];

  it('counts an incoming entry as unread unless its conversation is on screen', () => {
    const a = applyEntry(list, msg(2, BOB, 1), null);
    expect(a[0]).toMatchObject({ user: BOB, unread: 2 });
    expect(a.map((c) => c.user)).toEqual([BOB, '3']);
    const b = applyEntry(list, msg(2, BOB, 1), BOB);
    expect(b[0]!.unread).toBe(1);
    const c = applyEntry(list, msg(2, ME, 1), null);
    expect(c[0]!.unread).toBe(1);
    expect(c[0]!.last?.pos).toBe(2);
  });

  it('starts a conversation on the first entry and keeps the newest last', () => {
    const a = applyEntry([], { ...msg(7, '9', 0), conversation: '9' }, null);
    expect(a).toEqual([{ user: '9', last: expect.objectContaining({ pos: 7 }), unread: 1 }]);
    const b = applyEntry(list, msg(0, BOB, -5), null);
    expect(b[0]!.last?.pos).toBe(1);
  });

  it('marks read and totals', () => {
    expect(totalUnread(list)).toBe(1);
    expect(unreadConversations(applyEntry(list, { ...msg(2, '3', 1), conversation: '3' }, null))).toBe(2);
    expect(totalUnread(markListRead(list, BOB))).toBe(0);
  });
});

describe('a changed safety number in the history', () => {
  const changed: HistoryEntry = { kind: 'identity_changed', pos: 1, conversation: BOB, sent_at: T0 + 60_000 };

  it('is a row of its own, and the next message starts a new group', () => {
    const rows = buildRows([msg(0, BOB, 0), changed, msg(2, BOB, 1)], [], ME, T0);
    expect(rows.map((r) => r.type)).toEqual(['day', 'message', 'identity', 'message']);
    const last = rows[3]!;
    expect(last.type === 'message' && last.head).toBe(true);
  });

  it('is not an unread message', () => {
    const list = applyEntry([{ user: BOB, last: msg(0, BOB, 0), unread: 0 }], changed, null);
    expect(list[0]!.unread).toBe(0);
    expect(firstUnreadPos([msg(0, BOB, 0), changed], 1)).toBe(0);
  });
});
