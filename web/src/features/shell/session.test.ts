import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../../lib/api/client';
import { Engine } from '../../lib/engine/engine';
import type { EngineEvent, HistoryEntry, WasmEngine } from '../../lib/engine/types';
import type { GatewaySocket } from '../../lib/gateway/gateway';
import { ChatSession } from './session.svelte';

const ME = '100';
const BOB = '200';

class FakeSocket implements GatewaySocket {
  sent: Array<{ op: number; d?: unknown }> = [];
  closed: number | undefined;
  onopen: (() => void) | null = null;
  onmessage: ((data: string) => void) | null = null;
  onclose: ((code: number, reason: string) => void) | null = null;
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close(code?: number) {
    this.closed = code;
  }
  frame(op: number, d?: unknown, s?: number, t?: string) {
    this.onmessage?.(JSON.stringify({ op, d, s, t }));
  }
  acks(): string[] {
    return this.sent.filter((f) => f.op === 12).flatMap((f) => (f.d as { ids: string[] }).ids);
  }
}

function message(pos: number, body: string, from = BOB): HistoryEntry {
  return { kind: 'message', pos, message_id: `m${pos}`, conversation: BOB, author: from, author_device: 1, outgoing: from === ME, body, sent_at: 1_000 + pos };
}

/** An engine that decrypts envelopes whose content is the text, and logs its calls. */
function fakeEngine() {
  const calls: string[] = [];
  let acks: string[] = [];
  let queue: Array<{ id: string; content: string }> = [];
  let pos = 0;
  let drainGate: Promise<void> = Promise.resolve();
  const unread = new Map<string, number>();
  const history: HistoryEntry[] = [];
  const events = (list: EngineEvent[]) => JSON.stringify(list);
  const receive = (id: string, content: string): EngineEvent[] => {
    acks.push(id);
    if (content === 'identity') return [{ type: 'identity_changed', user: BOB, device: 1 }];
    const entry = message(pos++, content);
    history.push(entry);
    unread.set(BOB, (unread.get(BOB) ?? 0) + 1);
    return [{ type: 'message', entry }];
  };
  const engine: WasmEngine = {
    start: async () => {
      calls.push('start');
      return '[]';
    },
    drainQueue: async () => {
      calls.push('drain:start');
      await drainGate;
      const out = queue.flatMap((e) => receive(e.id, e.content));
      queue = [];
      calls.push('drain:end');
      return events(out);
    },
    handleEnvelope: async (text) => {
      const e = JSON.parse(text) as { id: string; content: string };
      calls.push(`envelope:${e.id}`);
      return events(receive(e.id, e.content));
    },
    takeAcks: () => {
      const out = JSON.stringify(acks);
      acks = [];
      return out;
    },
    maintain: async () => {
      calls.push('maintain');
    },
    takeEvents: () => '[]',
    sendDm: async (to, body) => {
      const entry = { ...message(pos++, body, ME), conversation: to };
      history.push(entry);
      return JSON.stringify(entry);
    },
    history: async () => JSON.stringify(history),
    conversations: async () =>
      JSON.stringify(history.length ? [{ user: BOB, last: history[history.length - 1], unread: unread.get(BOB) ?? 0 }] : []),
    markRead: async (c) => {
      calls.push(`markRead:${c}`);
      unread.set(c, 0);
    },
    safetyNumbers: async () => JSON.stringify([{ device: 1, number: '1'.repeat(60), verified: false }]),
    setVerified: async () => {},
    changePassphrase: async () => {},
  };
  return {
    engine,
    calls,
    queueOffline: (id: string, content: string) => queue.push({ id, content }),
    holdDrain: () => {
      let release = () => {};
      drainGate = new Promise((r) => (release = r));
      return release;
    },
  };
}

function setup() {
  const fake = fakeEngine();
  const sockets: FakeSocket[] = [];
  const ended: string[] = [];
  const fetch = (async (input: RequestInfo | URL) => {
    const path = String(input);
    if (path === '/api/v1/auth/refresh')
      return new Response(JSON.stringify({ access_token: 'a', access_token_expires_in: 900, refresh_token: 'r2', refresh_token_expires_at: '2030-01-01T00:00:00Z' }));
    if (path === '/api/v1/users/@me') return new Response(JSON.stringify({ id: ME, username: 'me', display_name: null, status_text: null }));
    const id = /\/api\/v1\/users\/(\d+)$/.exec(path)?.[1];
    if (id) return new Response(JSON.stringify({ id, username: `user${id}`, display_name: null, status_text: null }));
    return new Response('{}', { status: 404 });
  }) as typeof globalThis.fetch;
  const api = new ApiClient({ fetch });
  api.resume('r1');
  const chat = new ChatSession({
    api,
    engine: new Engine(fake.engine),
    session: { username: 'me', userId: ME, deviceId: 1, sessionId: '9', refreshToken: 'r1' },
    onEnded: (why) => ended.push(why),
    onSignOut: () => {},
    gatewayUrl: 'ws://test/gateway',
    socket: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
  });
  const socket = () => sockets[sockets.length - 1]!;
  const connect = async () => {
    socket().frame(10, { heartbeat_interval_ms: 30_000 });
    await vi.advanceTimersByTimeAsync(0);
    socket().frame(0, { session_id: 'g1', user: { id: ME, username: 'me' }, device_id: 1 }, 1, 'READY');
  };
  return { fake, chat, sockets, socket, connect, ended };
}

const settle = () => vi.advanceTimersByTimeAsync(300);

describe('ChatSession', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('drains the offline queue after READY, holding live envelopes behind it, and acknowledges them all', async () => {
    const t = setup();
    t.fake.queueOffline('1', 'offline one');
    t.fake.queueOffline('2', 'offline two');
    const release = t.fake.holdDrain();
    await t.chat.start();
    expect(t.fake.calls).toEqual(['start']);
    await t.connect();
    await vi.advanceTimersByTimeAsync(0);
    // Live while the drain runs: waits.
    t.socket().frame(0, { id: '3', content: 'live', sender: BOB }, 2, 'ENVELOPE');
    await vi.advanceTimersByTimeAsync(0);
    expect(t.fake.calls).toEqual(['start', 'drain:start']);
    release();
    await settle();
    expect(t.fake.calls.slice(0, 4)).toEqual(['start', 'drain:start', 'drain:end', 'envelope:3']);
    expect(t.socket().acks()).toEqual(['1', '2', '3']);
    expect(t.chat.conversations[0]).toMatchObject({ user: BOB, unread: 3 });
    expect(t.chat.unreadCount).toBe(1);
  });

  it('skips a live copy of an envelope the drain already processed', async () => {
    const t = setup();
    t.fake.queueOffline('7', 'once');
    await t.chat.start();
    await t.connect();
    await settle();
    t.socket().frame(0, { id: '7', content: 'once', sender: BOB }, 2, 'ENVELOPE');
    await settle();
    expect(t.fake.calls.filter((c) => c.startsWith('envelope'))).toEqual([]);
  });

  it('counts unread until the conversation is open, then marks it read', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.socket().frame(0, { id: '1', content: 'hi', sender: BOB }, 2, 'ENVELOPE');
    await settle();
    expect(t.chat.conversations[0]?.unread).toBe(1);
    expect(t.chat.announcement).toMatch(/New message from/);

    t.chat.openConversation(BOB);
    await settle();
    expect(t.fake.calls).toContain(`markRead:${BOB}`);
    expect(t.chat.conversations[0]?.unread).toBe(0);
    const view = t.chat.view(BOB);
    expect(view.entries.map((e) => (e.kind === 'message' ? e.body : ''))).toEqual(['hi']);

    // On screen: a new message is shown, read at once, and read aloud.
    t.socket().frame(0, { id: '2', content: 'there', sender: BOB }, 3, 'ENVELOPE');
    await settle();
    expect(view.entries).toHaveLength(2);
    expect(t.chat.conversations[0]?.unread).toBe(0);
    expect(t.chat.announcement).toMatch(/there/);
  });

  it('sends: pending first, then the engine entry', async () => {
    const t = setup();
    await t.chat.start();
    t.chat.openConversation(BOB);
    const view = t.chat.view(BOB);
    await settle();
    const sending = view.send('hello');
    expect(view.pending.map((p) => p.state)).toEqual(['sending']);
    await sending;
    expect(view.pending).toEqual([]);
    expect(view.entries.at(-1)).toMatchObject({ kind: 'message', body: 'hello', outgoing: true });
    // The list shows it at once.
    expect(t.chat.conversations[0]).toMatchObject({ user: BOB, unread: 0, last: { body: 'hello' } });
  });

  it('raises an identity warning until the device is verified', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.socket().frame(0, { id: '5', content: 'identity', sender: BOB }, 2, 'ENVELOPE');
    await settle();
    expect(t.chat.identityAlerts[BOB]).toEqual([1]);
    expect(t.chat.announcement).toMatch(/safety number changed/);
    await t.chat.setVerified(BOB, 1, true);
    expect(t.chat.identityAlerts[BOB]).toBeUndefined();
  });

  it('tops up prekeys on PREKEYS_LOW and ends on a revoked session', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.socket().frame(0, { device_id: 1, count: { pre_keys: 3, pq_pre_keys: 3 } }, 2, 'PREKEYS_LOW');
    await settle();
    expect(t.fake.calls).toContain('maintain');
    t.socket().onclose?.(4011, 'revoked');
    expect(t.ended).toEqual(['revoked']);
    expect(t.chat.connection).toBe('offline');
  });

  it('shows a replaced connection without reconnecting until asked', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    t.socket().onclose?.(4014, 'replaced');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.chat.connectionProblem).toBe('replaced');
    expect(t.sockets).toHaveLength(1);
    t.chat.reconnect();
    expect(t.sockets).toHaveLength(2);
    expect(t.chat.connectionProblem).toBeNull();
  });
});
