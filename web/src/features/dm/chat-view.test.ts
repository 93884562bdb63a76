import { describe, expect, it } from 'vitest';
import { Engine } from '../../lib/engine/engine';
import type { HistoryEntry, WasmEngine } from '../../lib/engine/types';
import { ChatView } from './chat-view.svelte';
import { PAGE_SIZE } from './timeline';

const BOB = '2';

function entry(pos: number): HistoryEntry {
  return { kind: 'message', pos, message_id: `m${pos}`, conversation: BOB, author: BOB, author_device: 1, outgoing: false, body: `m${pos}`, sent_at: pos };
}

function engineWith(total: number, failSends: number) {
  const asked: Array<number | undefined> = [];
  let failures = failSends;
  const all = Array.from({ length: total }, (_, i) => entry(i));
  const wasm = {
    history: async (_c: string, before: number | undefined, limit: number) => {
      asked.push(before);
      const end = before ?? total;
      return JSON.stringify(all.slice(Math.max(0, end - limit), end));
    },
    takeEvents: () => '[]',
    sendDm: async (_to: string, body: string) => {
      if (failures-- > 0) throw new Error('http: 503');
      const e = { ...entry(total), body, outgoing: true, author: '1' };
      return JSON.stringify(e);
    },
    takeAcks: () => '[]',
  } as unknown as WasmEngine;
  return { engine: new Engine(wasm), asked };
}

describe('ChatView', () => {
  it('loads the newest page, then older pages until the start', async () => {
    const { engine, asked } = engineWith(120, 0);
    const view = new ChatView(engine, BOB);
    await view.load(3);
    expect(view.entries).toHaveLength(PAGE_SIZE);
    expect(view.entries[0]?.pos).toBe(70);
    expect(view.hasOlder).toBe(true);
    expect(view.unreadFrom).toBe(117);
    await view.loadOlder();
    await view.loadOlder();
    expect(asked).toEqual([undefined, 70, 20]);
    expect(view.entries.map((e) => e.pos)).toEqual(Array.from({ length: 120 }, (_, i) => i));
    expect(view.hasOlder).toBe(false);
    await view.loadOlder();
    expect(asked).toHaveLength(3);
  });

  it('jumps to an old entry: loads what lies between it and the newest, and marks it', async () => {
    const { engine, asked } = engineWith(2000, 0);
    const view = new ChatView(engine, BOB);
    await view.load(0);
    expect(await view.jumpTo(1200)).toBe(true);
    expect(view.highlight).toBe(1200);
    expect(view.entries[0]!.pos).toBeLessThanOrEqual(1190);
    // Contiguous from there to the newest.
    expect(view.entries.map((e) => e.pos)).toEqual(Array.from({ length: 2000 - view.entries[0]!.pos }, (_, i) => view.entries[0]!.pos + i));
    expect(asked).toEqual([undefined, 1950, 1450]);
    expect(await view.jumpTo(5)).toBe(true);
    expect(view.entries[0]!.pos).toBe(0);
    expect(await view.jumpTo(4000)).toBe(false);
  });

  it('keeps a failed message with its error until retried or deleted', async () => {
    const { engine } = engineWith(0, 1);
    const view = new ChatView(engine, BOB);
    await view.load(0);
    await view.send('first try');
    expect(view.pending).toEqual([expect.objectContaining({ body: 'first try', state: 'failed', error: 'Not sent: the server could not be reached.' })]);
    await view.retry(view.pending[0]!.localId);
    expect(view.pending).toEqual([]);
    expect(view.entries).toEqual([expect.objectContaining({ body: 'first try', outgoing: true })]);

    const { engine: failing } = engineWith(0, 5);
    const other = new ChatView(failing, BOB);
    await other.send('doomed');
    other.discard(other.pending[0]!.localId);
    expect(other.pending).toEqual([]);
  });
});

describe('send errors', () => {
  it('a changed safety number of a verified contact says what to do', async () => {
    const { describeSendError } = await import('./chat-view.svelte');
    expect(describeSendError(new Error("untrusted_identity: the safety number of 5's device 1 changed"))).toMatch(
      /safety number changed since you verified it/,
    );
    expect(describeSendError(new Error('send: the message is empty'))).toBe('Not sent: the message is empty');
  });
});
