import { describe, expect, it } from 'vitest';
import type { SearchQuery, SearchResults } from '../../lib/engine/types';
import { Search, type SearchPlaces, type SearchScope } from './search.svelte';

const places: SearchPlaces = {
  people: (scope) =>
    scope.kind === 'server'
      ? [
          { id: '1', username: 'alice', display_name: 'Alice Martin' },
          { id: '2', username: 'bob' },
        ]
      : [{ id: '2', username: 'bob' }],
  places: (scope) =>
    scope.kind === 'server'
      ? [
          { name: 'general', channel: '10' },
          { name: 'random', channel: '11' },
        ]
      : [
          { name: 'bob', dm: '2' },
          { name: 'Weekend crew', channel: '20' },
        ],
};

function engine() {
  const asked: SearchQuery[] = [];
  return {
    asked,
    async search(query: SearchQuery): Promise<SearchResults> {
      asked.push(query);
      const offset = query.offset ?? 0;
      const hits = Array.from({ length: Math.min(query.limit ?? 25, 30 - offset) }, (_, i) => ({
        kind: 'channel' as const,
        channel_id: '10',
        message_id: String(100 + offset + i),
        thread_id: null,
        author_id: '1',
        sent_at: 1000 - offset - i,
        body: 'picnic',
      }));
      // One result's message is gone: the page is one short, the next offset says where to go on.
      const kept = offset === 0 ? hits.filter((h) => h.message_id !== '103') : hits;
      return { total: 30, hits: kept, words: ['picnic'], next_offset: offset + hits.length };
    },
  };
}

const server: SearchScope = { kind: 'server', server: '5', name: 'les copains' };

describe('the search panel', () => {
  it('scopes a server search to its channels and resolves names', async () => {
    const e = engine();
    const s = new Search(e, places);
    s.show(server);
    s.input = 'picnic from:"alice martin" in:#random has:link';
    await s.run();
    expect(e.asked[0]).toEqual({ text: 'picnic', limit: 25, has: ['link'], from: ['1'], channels: ['11'], dms: [] });
    expect(s.hits).toHaveLength(24);
    expect(s.hasMore).toBe(true);
    await s.more();
    expect(e.asked[1]).toMatchObject({ offset: 25 });
    expect(s.hits).toHaveLength(29);
    expect(new Set(s.hits.map((h) => (h.kind === 'channel' ? h.message_id : ''))).size).toBe(29);
    expect(s.hasMore).toBe(false);
    await s.more();
    expect(e.asked).toHaveLength(2);
  });

  it('searches every DM and group at home, or the ones named', async () => {
    const e = engine();
    const s = new Search(e, places);
    s.show({ kind: 'dms' });
    s.input = 'picnic';
    await s.run();
    expect(e.asked[0]).toEqual({ text: 'picnic', limit: 25, channels: ['20'] });
    s.input = 'in:@bob picnic';
    await s.run();
    expect(e.asked[1]).toEqual({ text: 'picnic', limit: 25, channels: [], dms: ['2'] });
  });

  it('says what it cannot search for, and asks nothing then', async () => {
    const e = engine();
    const s = new Search(e, places);
    s.show(server);
    s.input = 'from:carol';
    await s.run();
    expect(s.error).toBe('No one named “carol” in this server.');
    s.input = 'in:#nowhere';
    await s.run();
    expect(s.error).toBe('No channel named “#nowhere” here.');
    s.input = 'has:poll';
    await s.run();
    expect(s.error).toContain('has: is link, mention or reply');
    s.input = '   ';
    await s.run();
    expect([s.error, s.searched]).toEqual([null, false]);
    expect(e.asked).toHaveLength(0);
  });
});
