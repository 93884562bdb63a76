import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../../lib/api/client';
import { Engine } from '../../lib/engine/engine';
import type { AccountState, EngineEvent, HistoryEntry, LinkRequest, WasmEngine } from '../../lib/engine/types';
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
function fakeEngine(initial: Partial<AccountState> = {}) {
  const calls: string[] = [];
  const account: AccountState = { state: 'linked', unconfirmed_recovery_key: null, ...initial };
  let codes = 0;
  /** What handleEvent and pollLink answer, by dispatch name (or 'poll'). */
  const replies: Record<string, EngineEvent[]> = {};
  let openRequests: LinkRequest[] = [];
  let acks: string[] = [];
  let queue: Array<{ id: string; content: string }> = [];
  let pos = 0;
  let drainGate: Promise<void> = Promise.resolve();
  const unread = new Map<string, number>();
  const history: HistoryEntry[] = [];
  const events = (list: EngineEvent[]) => JSON.stringify(list);
  const receive = (id: string, content: string): EngineEvent[] => {
    acks.push(id);
    if (content === 'identity') return [{ type: 'identity_changed', user: BOB }];
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
    safetyNumber: async () => JSON.stringify({ number: '1'.repeat(60), verified: false, changed: false }),
    setVerified: async (user, verified) => {
      calls.push(`verify:${user}:${verified}`);
    },
    changePassphrase: async () => {},
    accountState: () => JSON.stringify(account),
    confirmRecoveryKey: async () => {
      calls.push('confirmRecoveryKey');
      account.unconfirmed_recovery_key = null;
    },
    beginLink: async () => {
      codes += 1;
      calls.push('beginLink');
      return `1234-000${codes}`;
    },
    pollLink: async () => {
      calls.push('pollLink');
      return JSON.stringify(replies.poll ?? []);
    },
    handleEvent: async (name, payload) => {
      calls.push(`event:${name}`);
      const out = replies[name] ?? [];
      if (out.some((e) => e.type === 'linked')) account.state = 'linked';
      void payload;
      return JSON.stringify(out);
    },
    linkWithRecoveryKey: async (key) => {
      if (key !== 'GOOD-KEY') throw new Error('wrong_recovery_key: no');
      account.state = 'linked';
      return JSON.stringify([{ type: 'linked' }]);
    },
    resetIdentity: async () => {
      account.state = 'linked';
      account.unconfirmed_recovery_key = 'NEWK-EYAB';
      return 'NEWK-EYAB';
    },
    linkRequests: async () => JSON.stringify(openRequests),
    approveLink: async (id, code) => {
      calls.push(`approve:${id}:${code}`);
    },
    declineLink: async (id) => {
      calls.push(`decline:${id}`);
    },
    ownDevices: async () => '[]',
    removeDevice: async (id) => {
      calls.push(`remove:${id}`);
    },
    newRecoveryKey: async () => 'CCCC-DDDD',
    channelHistory: async (channel, query) => {
      calls.push(`channelHistory:${channel}:${query}`);
      return '[]';
    },
  };
  return {
    engine,
    calls,
    account,
    replies,
    setRequests: (list: LinkRequest[]) => (openRequests = list),
    queueOffline: (id: string, content: string) => queue.push({ id, content }),
    holdDrain: () => {
      let release = () => {};
      drainGate = new Promise((r) => (release = r));
      return release;
    },
  };
}

function setup(account: Partial<AccountState> = {}, place: { path?: string; pushed?: string[] } = {}) {
  const fake = fakeEngine(account);
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
    initialPath: place.path ?? '/',
    history: place.pushed
      ? { pushState: (_s: unknown, _t: string, url?: string | URL | null) => void place.pushed!.push(`push ${url}`), replaceState: (_s: unknown, _t: string, url?: string | URL | null) => void place.pushed!.push(`replace ${url}`) }
      : null,
    socket: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
  });
  const socket = () => sockets[sockets.length - 1]!;
  const connect = async (extra: Record<string, unknown> = {}) => {
    socket().frame(10, { heartbeat_interval_ms: 30_000 });
    await vi.advanceTimersByTimeAsync(0);
    socket().frame(0, { session_id: 'g1', user: { id: ME, username: 'me' }, device_id: 1, ...extra }, 1, 'READY');
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

  it('raises an identity warning until the safety number is verified', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.socket().frame(0, { id: '5', content: 'identity', sender: BOB }, 2, 'ENVELOPE');
    await settle();
    expect(t.chat.identityAlerts[BOB]).toBe(true);
    expect(t.chat.verified[BOB]).toBe(false);
    expect(t.chat.announcement).toMatch(/safety number changed/);
    await t.chat.setVerified(BOB, true);
    expect(t.fake.calls).toContain(`verify:${BOB}:true`);
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

const REQUEST: LinkRequest = { device_id: 3, device_name: 'Firefox on Linux', created_at: Date.UTC(2030, 0, 1), expires_at: Date.UTC(2030, 0, 1, 0, 10) };

describe('ChatSession: a pending device', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(Date.UTC(2030, 0, 1));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('shows a code, drains nothing, polls after each connect, and goes into the app once linked', async () => {
    const t = setup({ state: 'pending' });
    await t.chat.start();
    await settle();
    expect(t.chat.account).toBe('pending');
    expect(t.chat.link.code).toBe('1234-0001');
    await t.connect();
    await settle();
    expect(t.fake.calls).toContain('pollLink');
    expect(t.fake.calls).not.toContain('drain:start');

    // The answer arrives on the gateway: the engine links the device.
    t.fake.replies.LINK_ANSWER = [{ type: 'linked' }];
    t.socket().frame(0, { from_device: 1, pake: 'AA', sealed: 'AA' }, 2, 'LINK_ANSWER');
    await settle();
    expect(t.fake.calls).toContain('event:LINK_ANSWER');
    expect(t.chat.account).toBe('linked');
    expect(t.chat.link.code).toBeNull();
    // Then what a start does: the keys, then the queue.
    const after = t.fake.calls.slice(t.fake.calls.indexOf('event:LINK_ANSWER'));
    expect(after).toEqual(expect.arrayContaining(['start', 'drain:start', 'drain:end']));
    expect(after.indexOf('start')).toBeLessThan(after.indexOf('drain:start'));
  });

  it('an answer that came while offline is found by the poll after the connect', async () => {
    const t = setup({ state: 'pending' });
    t.fake.replies.poll = [{ type: 'linked' }];
    await t.chat.start();
    await t.connect();
    await settle();
    expect(t.chat.account).toBe('linked');
    expect(t.fake.calls).toContain('drain:start');
  });

  it('a wrong code on the other device: says so and shows a new code', async () => {
    const t = setup({ state: 'pending' });
    await t.chat.start();
    await t.connect();
    await settle();
    t.fake.replies.LINK_ANSWER = [{ type: 'link_failed', reason: 'wrong code' }];
    t.socket().frame(0, {}, 2, 'LINK_ANSWER');
    await settle();
    expect(t.chat.link.code).toBe('1234-0002');
    expect(t.chat.link.notice).toMatch(/did not match/);
    expect(t.chat.account).toBe('pending');
  });

  it('asks for a new code before the shown one lapses', async () => {
    const t = setup({ state: 'pending' });
    await t.chat.start();
    await settle();
    expect(t.chat.link.code).toBe('1234-0001');
    await vi.advanceTimersByTimeAsync(9 * 60_000);
    expect(t.chat.link.code).toBe('1234-0001');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.chat.link.code).toBe('1234-0002');
    expect(t.chat.link.notice).toBeNull();
  });

  it('links with the recovery key; a wrong one is refused by its kind', async () => {
    const t = setup({ state: 'pending' });
    await t.chat.start();
    await expect(t.chat.linkWithRecoveryKey('BAD')).rejects.toThrow(/^wrong_recovery_key/);
    expect(t.chat.account).toBe('pending');
    await t.chat.linkWithRecoveryKey('  GOOD-KEY ');
    await settle();
    expect(t.chat.account).toBe('linked');
    expect(t.fake.calls).toContain('drain:start');
  });

  it('a reset gives a new recovery key to write down, then the app', async () => {
    const t = setup({ state: 'removed' });
    await t.chat.start();
    expect(t.chat.account).toBe('removed');
    await t.chat.resetIdentity('password');
    await settle();
    expect(t.chat.account).toBe('linked');
    expect(t.chat.recoveryKey).toBe('NEWK-EYAB');
    await t.chat.confirmRecoveryKey();
    expect(t.chat.recoveryKey).toBeNull();
    expect(t.fake.calls).toContain('confirmRecoveryKey');
  });
});

describe('ChatSession: a linked device', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(Date.UTC(2030, 0, 1, 0, 1));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('keeps an unconfirmed recovery key on screen until it is confirmed', async () => {
    const t = setup({ unconfirmed_recovery_key: 'ABCD-EFGH' });
    await t.chat.start();
    expect(t.chat.account).toBe('linked');
    expect(t.chat.recoveryKey).toBe('ABCD-EFGH');
    await t.chat.confirmRecoveryKey();
    expect(t.chat.recoveryKey).toBeNull();
  });

  it('prompts for a request already open at start', async () => {
    const t = setup();
    t.fake.setRequests([REQUEST]);
    await t.chat.start();
    await settle();
    expect(t.chat.approvals.dialog).toMatchObject({ request: { device_id: 3 }, step: 'enter' });
  });

  it('a LINK_REQUEST prompts; the code is sent as digits; linked when the list shows the device', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.fake.replies.LINK_REQUEST = [{ type: 'link_requested', request: REQUEST }];
    t.socket().frame(0, { device_id: 3 }, 2, 'LINK_REQUEST');
    await settle();
    expect(t.fake.calls).toContain('event:LINK_REQUEST');
    expect(t.chat.approvals.dialog?.step).toBe('enter');
    expect(t.chat.announcement).toMatch(/Firefox on Linux asks to be linked/);

    await t.chat.approvals.approve('1234 5678');
    expect(t.fake.calls).toContain('approve:3:12345678');
    expect(t.chat.approvals.dialog?.step).toBe('waiting');

    t.fake.replies.DEVICE_LIST_UPDATE = [{ type: 'own_devices_changed', added: [3], removed: [] }];
    t.socket().frame(0, { user_id: ME, version: 2 }, 3, 'DEVICE_LIST_UPDATE');
    await settle();
    expect(t.chat.approvals.dialog?.step).toBe('linked');
    expect(t.chat.approvals.requests).toEqual([]);
    // Approved from here: no "a new device was linked" notice on this device.
    expect(t.chat.newOwnDevices).toEqual([]);
  });

  it('a device linked from elsewhere is announced', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.fake.replies.DEVICE_LIST_UPDATE = [{ type: 'own_devices_changed', added: [4], removed: [] }];
    t.socket().frame(0, { user_id: ME, version: 2 }, 2, 'DEVICE_LIST_UPDATE');
    await settle();
    expect(t.chat.newOwnDevices).toEqual([4]);
    expect(t.chat.announcement).toMatch(/new device was linked/);
  });

  it('signing out takes a linked device out of the account’s list; a pending one has nothing to leave', async () => {
    const t = setup();
    await t.chat.start();
    await t.chat.leave();
    expect(t.fake.calls).toContain('remove:1');
    const p = setup({ state: 'pending' });
    await p.chat.start();
    await p.chat.leave();
    expect(p.fake.calls.filter((c) => c.startsWith('remove'))).toEqual([]);
  });

  it('an identity reset elsewhere says so, even with the removal that comes with it', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.fake.replies.DEVICE_LIST_UPDATE = [{ type: 'account_replaced' }, { type: 'device_removed' }];
    t.socket().frame(0, { user_id: ME, version: 3 }, 2, 'DEVICE_LIST_UPDATE');
    await settle();
    expect(t.chat.account).toBe('removed');
    expect(t.chat.unlinked).toBe('replaced');
    expect(t.chat.link.code).toBe('1234-0001');
  });

  it('removed from the account: back to the link screen with a new code', async () => {
    const t = setup();
    await t.chat.start();
    await t.connect();
    await settle();
    t.chat.ui.settings = 'devices';
    t.fake.replies.DEVICE_LIST_UPDATE = [{ type: 'device_removed' }];
    t.socket().frame(0, { user_id: ME, version: 3 }, 2, 'DEVICE_LIST_UPDATE');
    await settle();
    expect(t.chat.account).toBe('removed');
    expect(t.chat.unlinked).toBe('removed');
    expect(t.chat.ui.settings).toBeNull();
    expect(t.chat.link.code).toBe('1234-0001');
  });
});

describe('ChatSession: communities', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const user = (id: string) => ({ id, username: `user${id}`, display_name: null, status_text: null });
  const channel = (id: string, extra: Record<string, unknown> = {}) => ({
    id,
    server_id: '5',
    name: `c${id}`,
    kind: 'text',
    parent_id: null,
    position: Number(id),
    topic: null,
    overwrites: [],
    last_message_id: null,
    ...extra,
  });
  const server = {
    server: { id: '5', name: 'Five', owner_id: BOB, created_at: 0, member_count: 2 },
    roles: [{ id: '5', server_id: '5', name: '@everyone', color: 0, position: 0, permissions: 8195, hoist: false }],
    channels: [channel('51'), channel('50', { last_message_id: '7' })],
    me: { user: user(ME), server_id: '5', roles: [], joined_at: 0 },
  };
  const entry = (id: string, extra: Record<string, unknown> = {}) => ({
    id,
    channel_id: '50',
    author_id: BOB,
    author_device: 1,
    created_at: 5,
    edited_at: null,
    thread_id: null,
    pinned: false,
    thread_count: 0,
    state: 'ok',
    body: `hello ${id}`,
    reply_to: null,
    thread_name: null,
    reactions: [],
    ...extra,
  });

  it('opens a server link on its first channel once READY says what is there', async () => {
    const pushed: string[] = [];
    const t = setup({}, { path: '/channels/5', pushed });
    await t.chat.start();
    expect(t.chat.place.kind).toBe('loading');
    await t.connect({ servers: [server], group_dms: [] });
    await settle();
    expect(t.chat.place).toMatchObject({ kind: 'channel', channel: { id: '50' } });
    expect(pushed).toContain('replace /channels/5/50');
    expect(t.fake.calls.some((c) => c.startsWith('channelHistory:50:'))).toBe(true);
    // On screen: its unread mark is gone; the other server channel had none.
    expect(t.chat.communities.unread).toEqual({});

    t.chat.openChannel('5', '51');
    expect(pushed[pushed.length - 1]).toBe('push /channels/5/51');
    t.chat.navigate({ name: 'home' });
    expect(t.chat.place.kind).toBe('home');
    t.chat.openServer('5');
    expect(t.chat.activeChannel).toBe('51');
  });

  it('hands channel messages to the engine and shows what it decrypted; unread elsewhere', async () => {
    const t = setup({}, { path: '/channels/5/51' });
    await t.chat.start();
    await t.connect({ servers: [server], group_dms: [] });
    await settle();
    const view = t.chat.channelView('50');
    t.fake.replies.MESSAGE_CREATE = [{ type: 'channel_entry', entry: entry('900') as never }];
    t.socket().frame(0, { id: '900', channel_id: '50', author_id: BOB, thread_id: null }, 2, 'MESSAGE_CREATE');
    await settle();
    expect(t.fake.calls).toContain('event:MESSAGE_CREATE');
    expect(view.entries.map((e) => e.body)).toEqual(['hello 900']);
    expect(t.chat.communities.unread['50']).toBe(true);

    t.fake.replies.MESSAGE_DELETE = [{ type: 'channel_message_deleted', channel_id: '50', id: '900' }];
    t.socket().frame(0, { id: '900', channel_id: '50' }, 3, 'MESSAGE_DELETE');
    await settle();
    expect(view.entries).toEqual([]);

    // A purge's bulk deletion goes to the engine too, which reports each message.
    view.upsert(entry('902') as never);
    view.upsert(entry('903') as never);
    t.fake.replies.MESSAGE_DELETE_BULK = [
      { type: 'channel_message_deleted', channel_id: '50', id: '902' },
      { type: 'channel_message_deleted', channel_id: '50', id: '903' },
    ];
    t.socket().frame(0, { ids: ['902', '903'], channel_id: '50' }, 4, 'MESSAGE_DELETE_BULK');
    await settle();
    expect(t.fake.calls).toContain('event:MESSAGE_DELETE_BULK');
    expect(view.entries).toEqual([]);

    // Pins go straight to the views.
    view.upsert(entry('901') as never);
    t.socket().frame(0, { channel_id: '50', message_id: '901', pinned: true }, 5, 'PINS_UPDATE');
    await settle();
    expect(view.entries[0]?.pinned).toBe(true);
  });

  it('goes home when the server on screen goes away, and says so', async () => {
    const t = setup({}, { path: '/channels/5/50' });
    await t.chat.start();
    await t.connect({ servers: [server], group_dms: [] });
    await settle();
    t.socket().frame(0, { id: '5' }, 2, 'SERVER_DELETE');
    await settle();
    expect(t.chat.communities.servers).toEqual([]);
    expect(t.chat.place.kind).toBe('home');
    expect(t.chat.announcement).toMatch(/no longer in Five/);
  });

  it('tells a group DM link from a DM link', async () => {
    const group = { ...channel('60'), server_id: null, kind: 'group_dm', recipients: [user(ME), user(BOB), user('300')], owner_id: ME };
    const t = setup({}, { path: '/channels/@me/60' });
    await t.chat.start();
    await t.connect({ servers: [], group_dms: [group] });
    await settle();
    expect(t.chat.place).toMatchObject({ kind: 'group', channel: { id: '60' } });
    expect(t.chat.active).toBeNull();
    t.chat.openConversation(BOB);
    expect(t.chat.place).toMatchObject({ kind: 'dm', user: BOB });
  });
});
