import { describe, expect, it } from 'vitest';
import { Engine } from '../../lib/engine/engine';
import type { ChannelEntry, ChannelQuery, WasmEngine } from '../../lib/engine/types';
import { ChannelView } from './channel-view.svelte';
import { PAGE_SIZE, compareIds } from './timeline';

function entry(n: number, extra: Partial<ChannelEntry> = {}): ChannelEntry {
  return {
    id: String(1000 + n),
    channel_id: 'c',
    author_id: n % 2 ? 'b' : 'me',
    author_device: 1,
    created_at: 1_000_000 + n * 1000,
    edited_at: null,
    thread_id: null,
    pinned: false,
    thread_count: 0,
    state: 'ok',
    body: `m${n}`,
    reply_to: null,
    thread_name: null,
    reactions: [],
    ...extra,
  };
}

/** An engine holding `total` top-level messages, answering history queries as the contract says. */
function engineWith(total: number, options: { failSends?: number } = {}) {
  const queries: ChannelQuery[] = [];
  const sent: unknown[] = [];
  let failures = options.failSends ?? 0;
  let all = Array.from({ length: total }, (_, i) => entry(i));
  const wasm = {
    takeEvents: () => '[]',
    takeAcks: () => '[]',
    channelHistory: async (_c: string, q: string) => {
      const query = JSON.parse(q) as ChannelQuery;
      queries.push(query);
      const limit = query.limit ?? 50;
      let list = all.filter((e) => (e.thread_id ?? undefined) === query.thread_id);
      if (query.before) list = list.filter((e) => compareIds(e.id, query.before!) < 0).slice(-limit);
      else if (query.after) list = list.filter((e) => compareIds(e.id, query.after!) > 0).slice(0, limit);
      else if (query.around) {
        const i = list.findIndex((e) => e.id === query.around);
        list = i < 0 ? [] : list.slice(Math.max(0, i - limit / 2), i + limit / 2);
      } else list = list.slice(-limit);
      return JSON.stringify(list);
    },
    channelSend: async (_c: string, draft: string) => {
      if (failures-- > 0) throw new Error('http: 503');
      sent.push(JSON.parse(draft));
      const d = JSON.parse(draft) as { body: string; thread_id?: string; reply_to?: string };
      const e = entry(all.length, { author_id: 'me', body: d.body, thread_id: d.thread_id ?? null });
      all = [...all, e];
      return JSON.stringify(e);
    },
    channelEdit: async (_c: string, id: string, body: string) => JSON.stringify({ ...all.find((e) => e.id === id)!, body, edited_at: 5 }),
    channelDelete: async (_c: string, id: string) => {
      if (id === 'forbidden') throw new Error('http: 403 missing_permission');
      all = all.filter((e) => e.id !== id);
    },
    channelReact: async () => {
      throw new Error('http: 403 missing_permission');
    },
    channelUnreact: async () => undefined,
  } as unknown as WasmEngine;
  return { engine: new Engine(wasm), queries, sent };
}

describe('ChannelView', () => {
  it('loads the newest page, then older pages with a before-cursor until the start', async () => {
    const { engine, queries } = engineWith(120);
    const view = new ChannelView(engine, 'c', { me: 'me' });
    await view.load();
    expect(view.entries).toHaveLength(PAGE_SIZE);
    expect(view.entries[0]?.id).toBe('1070');
    expect(view.hasOlder).toBe(true);
    await view.loadOlder();
    await view.loadOlder();
    expect(view.entries).toHaveLength(120);
    expect(view.hasOlder).toBe(false);
    expect(queries.map((q) => q.before ?? null)).toEqual([null, '1070', '1020']);
  });

  it('jumps to an older message around it, then back to the present', async () => {
    const { engine, queries } = engineWith(200);
    const view = new ChannelView(engine, 'c', { me: 'me' });
    await view.load();
    expect(await view.jumpTo('1010')).toBe(true);
    expect(queries[1]).toMatchObject({ around: '1010' });
    expect(view.highlight).toBe('1010');
    expect(view.hasNewer).toBe(true);
    expect(view.entries.some((e) => e.id === '1010')).toBe(true);
    // A message arriving meanwhile waits for the present.
    view.upsert(entry(500));
    expect(view.entries.some((e) => e.id === '1500')).toBe(false);
    await view.jumpToPresent();
    expect(view.hasNewer).toBe(false);
    expect(view.entries[view.entries.length - 1]?.id).toBe('1199');
  });

  it('sends a reply: shown at once, then the entry; a failure keeps it with Retry', async () => {
    const { engine, sent } = engineWith(3, { failSends: 1 });
    const view = new ChannelView(engine, 'c', { me: 'me' });
    await view.load();
    view.replyTo = view.entries[1]!;
    const sending = view.send('hello');
    expect(view.pending).toHaveLength(1);
    expect(view.pending[0]?.reply_to).toMatchObject({ id: '1001', author_id: 'b', excerpt: 'm1' });
    expect(view.replyTo).toBeNull();
    await sending;
    expect(view.pending[0]?.state).toBe('failed');
    expect(view.pending[0]?.error).toMatch(/server could not be reached/);
    await view.retry(view.pending[0]!.localId);
    expect(view.pending).toHaveLength(0);
    expect(sent).toEqual([{ body: 'hello', reply_to: '1001' }]);
    expect(view.entries[view.entries.length - 1]?.body).toBe('hello');
  });

  it('keeps threads apart: the channel counts replies, the thread view shows them', async () => {
    const { engine, sent } = engineWith(2);
    const channel = new ChannelView(engine, 'c', { me: 'me' });
    const thread = new ChannelView(engine, 'c', { me: 'me', threadId: '1000' });
    await channel.load();
    await thread.load();
    await thread.send('first in thread', 'Plans');
    expect(sent).toEqual([{ body: 'first in thread', thread_id: '1000', thread_name: 'Plans' }]);
    const reply = thread.entries[0]!;
    channel.upsert(reply);
    expect(channel.entries.map((e) => e.id)).toEqual(['1000', '1001']);
    expect(channel.replyCount(channel.entries[0]!)).toBe(1);
    channel.upsert(reply);
    expect(channel.replyCount(channel.entries[0]!)).toBe(1);
    channel.remove(reply.id);
    expect(channel.replyCount(channel.entries[0]!)).toBe(0);
  });

  it('edits (with the edited mark at once), deletes, and puts a refused reaction back', async () => {
    const { engine } = engineWith(2);
    const view = new ChannelView(engine, 'c', { me: 'me' });
    await view.load();
    await view.edit('1000', 'changed');
    expect(view.entries[0]).toMatchObject({ body: 'changed', edited_at: 5 });
    await view.toggleReaction('1001', '👍');
    expect(view.entries[1]?.reactions).toEqual([]);
    expect(view.actionError).toMatch(/permission/);
    expect(await view.delete('1000')).toBe(true);
    expect(view.entries.map((e) => e.id)).toEqual(['1001']);
  });

  it('upserts decrypted and edited copies, and removes deleted ones', async () => {
    const { engine } = engineWith(1);
    const view = new ChannelView(engine, 'c', { me: 'me' });
    await view.load();
    view.upsert(entry(5, { state: 'pending', body: '' }));
    expect(view.entries[1]?.state).toBe('pending');
    view.upsert(entry(5));
    expect(view.entries[1]).toMatchObject({ state: 'ok', body: 'm5' });
    view.upsert({ ...entry(9), channel_id: 'other' });
    expect(view.entries).toHaveLength(2);
    view.remove('1005');
    expect(view.entries).toHaveLength(1);
  });
});
