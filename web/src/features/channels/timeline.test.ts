import { describe, expect, it } from 'vitest';
import type { ChannelEntry } from '../../lib/engine/types';
import { buildChannelRows, compareIds, mergeChannelEntries, quoteOf, toggledReactions, type ChannelPending } from './timeline';

const DAY = 24 * 3600_000;
const T0 = Date.UTC(2026, 10, 20, 10, 0);

function entry(id: string, at: number, author = 'b', extra: Partial<ChannelEntry> = {}): ChannelEntry {
  return {
    id,
    channel_id: 'c',
    author_id: author,
    author_device: 1,
    created_at: at,
    edited_at: null,
    thread_id: null,
    pinned: false,
    thread_count: 0,
    state: 'ok',
    body: `text ${id}`,
    reply_to: null,
    thread_name: null,
    reactions: [],
    ...extra,
  };
}

describe('channel timeline', () => {
  it('orders snowflake ids as numbers, not as text', () => {
    expect(compareIds('9', '10')).toBeLessThan(0);
    expect(compareIds('123456789012345678', '123456789012345679')).toBeLessThan(0);
    expect(compareIds('5', '5')).toBe(0);
    expect(['100', '99', '1000'].sort(compareIds)).toEqual(['99', '100', '1000']);
  });

  it('merges pages by id, the newer copy winning', () => {
    const merged = mergeChannelEntries([entry('10', T0), entry('12', T0)], [entry('11', T0), { ...entry('12', T0), body: 'edited' }]);
    expect(merged.map((e) => e.id)).toEqual(['10', '11', '12']);
    expect(merged[2]?.body).toBe('edited');
  });

  it('groups one author within minutes, and starts a block for a reply, an undecrypted entry, another day', () => {
    const entries = [
      entry('1', T0),
      entry('2', T0 + 60_000),
      entry('3', T0 + 120_000, 'b', { reply_to: { id: '1', author_id: 'b', excerpt: 'x' } }),
      entry('4', T0 + 180_000, 'b', { state: 'pending', body: '' }),
      entry('5', T0 + 240_000),
      entry('6', T0 + 20 * 60_000),
      entry('7', T0 + DAY),
    ];
    const pending: ChannelPending[] = [{ localId: 'x', body: 'mine', reply_to: null, thread_name: null, created_at: T0 + DAY + 1, state: 'sending' }];
    const rows = buildChannelRows(entries, pending, 'me', T0 + DAY);
    const shape = rows.map((r) => (r.type === 'day' ? `day:${r.label}` : r.type === 'message' ? `${r.entry.id}${r.head ? '*' : ''}` : `p${r.head ? '*' : ''}`));
    expect(shape).toEqual(['day:Yesterday', '1*', '2', '3*', '4*', '5*', '6*', 'day:Today', '7*', 'p*']);
  });

  it('quotes the start of the replied text on one line', () => {
    const long = entry('1', T0, 'b', { body: `first\nline ${'x'.repeat(200)}` });
    const quote = quoteOf(long);
    expect(quote.id).toBe('1');
    expect(quote.author_id).toBe('b');
    expect(quote.excerpt.startsWith('first line')).toBe(true);
    expect(quote.excerpt.length).toBeLessThanOrEqual(100);
  });

  it('toggles one reaction of mine', () => {
    const e = entry('1', T0, 'b', { reactions: [{ emoji: '👍', count: 2, users: ['b', 'c'], mine: false }] });
    const added = toggledReactions(e, '👍', 'me');
    expect(added).toEqual([{ emoji: '👍', count: 3, users: ['b', 'c', 'me'], mine: true }]);
    const removed = toggledReactions({ ...e, reactions: added }, '👍', 'me');
    expect(removed).toEqual([{ emoji: '👍', count: 2, users: ['b', 'c'], mine: false }]);
    expect(toggledReactions(e, '🎉', 'me')).toHaveLength(2);
    expect(toggledReactions({ ...e, reactions: [{ emoji: '🎉', count: 1, users: ['me'], mine: true }] }, '🎉', 'me')).toEqual([]);
  });
});
