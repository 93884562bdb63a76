import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SessionEndedError } from '../api/errors';
import { Gateway, type ConnectionState, type GatewayEnd, type GatewaySocket } from './gateway';

class FakeSocket implements GatewaySocket {
  sent: Array<{ op: number; d?: unknown }> = [];
  closedWith: number | undefined;
  onopen: (() => void) | null = null;
  onmessage: ((data: string) => void) | null = null;
  onclose: ((code: number, reason: string) => void) | null = null;

  send(text: string): void {
    this.sent.push(JSON.parse(text));
  }
  close(code?: number): void {
    this.closedWith = code;
  }
  /** The server sends a frame. */
  frame(op: number, d?: unknown, s?: number, t?: string): void {
    this.onmessage?.(JSON.stringify({ op, d, s, t }));
  }
  /** The server (or the network) closes the connection. */
  serverClose(code: number): void {
    this.onclose?.(code, '');
  }
  ops(): number[] {
    return this.sent.map((f) => f.op);
  }
}

function setup(token: (force: boolean) => Promise<string> = async () => 'tok') {
  const sockets: FakeSocket[] = [];
  const states: ConnectionState[] = [];
  const ended: GatewayEnd[] = [];
  const dispatched: Array<[string, unknown]> = [];
  const ready: unknown[] = [];
  const gw = new Gateway({
    url: 'ws://test/gateway',
    token,
    random: () => 0.5,
    socket: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    handlers: {
      state: (s) => states.push(s),
      ended: (w) => ended.push(w),
      dispatch: (t, d) => dispatched.push([t, d]),
      ready: (d) => ready.push(d),
    },
  });
  const last = () => sockets[sockets.length - 1]!;
  return { gw, sockets, states, ended, dispatched, ready, last };
}

const flush = () => vi.advanceTimersByTimeAsync(0);

async function handshake(s: FakeSocket, sessionId = 'gs1') {
  s.frame(10, { heartbeat_interval_ms: 1000, resume_window_ms: 10_000 });
  await flush();
  s.frame(0, { session_id: sessionId, user: {}, device_id: 1 }, 1, 'READY');
}

describe('Gateway', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('identifies after HELLO and is online on READY', async () => {
    const t = setup();
    t.gw.start();
    expect(t.states).toEqual(['connecting']);
    await handshake(t.last());
    expect(t.last().sent[0]).toEqual({ op: 2, d: { token: 'tok' } });
    expect(t.states).toEqual(['connecting', 'online']);
    expect(t.ready).toHaveLength(1);
    expect(t.gw.sessionId).toBe('gs1');
  });

  it('heartbeats with the last sequence number and drops a connection whose beat is not answered', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().frame(0, { x: 1 }, 2, 'USER_UPDATE');
    await vi.advanceTimersByTimeAsync(500); // first beat after random (0.5) × interval
    expect(t.last().sent.at(-1)).toEqual({ op: 1, d: 2 });
    t.last().frame(11, null);
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.last().ops().filter((op) => op === 1)).toHaveLength(2);
    // No ACK for the second beat: at the third, the connection is abandoned and resumed.
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.sockets[0]!.closedWith).toBe(4000);
    expect(t.states.at(-1)).toBe('reconnecting');
  });

  it('resumes after a drop with the session id and last seq', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().frame(0, { id: '9' }, 5, 'ENVELOPE');
    t.last().serverClose(1006);
    expect(t.states.at(-1)).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.sockets).toHaveLength(2);
    t.last().frame(10, { heartbeat_interval_ms: 1000 });
    await flush();
    expect(t.last().sent[0]).toEqual({ op: 6, d: { token: 'tok', session_id: 'gs1', seq: 5 } });
    t.last().frame(0, { replayed: 0 }, undefined, 'RESUMED');
    expect(t.states.at(-1)).toBe('online');
  });

  it('identifies again after INVALID_SESSION', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().serverClose(4009);
    await vi.advanceTimersByTimeAsync(1000);
    t.last().frame(10, { heartbeat_interval_ms: 1000 });
    await flush();
    t.last().frame(9, { resumable: false });
    await flush();
    expect(t.last().ops()).toEqual([6, 2]);
    await handshake(t.last(), 'gs2');
    expect(t.ready).toHaveLength(2);
    expect(t.gw.sessionId).toBe('gs2');
  });

  it('identifies directly once the resume window has passed', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().serverClose(1006);
    // Keep failing until the resume window (10 s) is over.
    for (let i = 0; i < 5; i++) {
      await vi.advanceTimersByTimeAsync(30_000);
      t.last().serverClose(1006);
    }
    await vi.advanceTimersByTimeAsync(30_000);
    t.last().frame(10, { heartbeat_interval_ms: 1000 });
    await flush();
    expect(t.last().ops()).toEqual([2]);
  });

  it('backs off exponentially, capped, and starts over once online', async () => {
    const t = setup();
    t.gw.start();
    t.last().serverClose(1006);
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      const before = t.sockets.length;
      let waited = 0;
      while (t.sockets.length === before) {
        await vi.advanceTimersByTimeAsync(100);
        waited += 100;
      }
      delays.push(waited);
      t.last().serverClose(1006);
    }
    // random() = 0.5 → 75 % of 1, 2, 4, 8, 16, 30, 30 s.
    expect(delays).toEqual([800, 1500, 3000, 6000, 12000, 22500, 22500]);
  });

  it('does not reconnect after 4011 and reports the revocation', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().serverClose(4011);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(t.sockets).toHaveLength(1);
    expect(t.ended).toEqual(['revoked']);
    expect(t.states.at(-1)).toBe('offline');
  });

  it('does not reconnect after 4014 until asked', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().serverClose(4014);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(t.ended).toEqual(['replaced']);
    expect(t.sockets).toHaveLength(1);
    t.gw.reconnectNow();
    expect(t.sockets).toHaveLength(2);
  });

  it('renews the token after 4004 and identifies', async () => {
    const forced: boolean[] = [];
    const t = setup(async (force) => {
      forced.push(force);
      return force ? 'fresh' : 'stale';
    });
    t.gw.start();
    t.last().frame(10, { heartbeat_interval_ms: 1000 });
    await flush();
    t.last().serverClose(4004);
    await vi.advanceTimersByTimeAsync(1000);
    t.last().frame(10, { heartbeat_interval_ms: 1000 });
    await flush();
    expect(forced).toEqual([false, true]);
    expect(t.last().sent[0]).toEqual({ op: 2, d: { token: 'fresh' } });
  });

  it('ends when the token cannot be renewed because the session is over', async () => {
    const t = setup(async () => {
      throw new SessionEndedError();
    });
    t.gw.start();
    t.last().frame(10, { heartbeat_interval_ms: 1000 });
    await flush();
    expect(t.ended).toEqual(['expired']);
    expect(t.sockets[0]!.closedWith).toBe(1000);
  });

  it('waits a few seconds after a rate limit close', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().serverClose(4008);
    await vi.advanceTimersByTimeAsync(4900);
    expect(t.sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(200);
    expect(t.sockets).toHaveLength(2);
  });

  it('sends ACKs in frames of at most 100 ids, holding them while not authenticated', async () => {
    const t = setup();
    t.gw.start();
    const ids = Array.from({ length: 250 }, (_, i) => String(i + 1));
    t.gw.ack(ids);
    expect(t.last().sent).toEqual([]);
    await handshake(t.last());
    const acks = t.last().sent.filter((f) => f.op === 12) as Array<{ d: { ids: string[] } }>;
    expect(acks.map((f) => f.d.ids.length)).toEqual([100, 100, 50]);
    expect(acks.flatMap((f) => f.d.ids)).toEqual(ids);
  });

  it('sends client ops only on an authenticated connection', async () => {
    const t = setup();
    t.gw.start();
    expect(t.gw.send(5, {})).toBe(false);
    await handshake(t.last());
    expect(t.gw.send(5, {})).toBe(true);
    expect(t.last().sent.at(-1)).toEqual({ op: 5, d: {} });
    t.last().serverClose(1006);
    expect(t.gw.send(13, { self_mute: true })).toBe(false);
  });

  it('passes other events on and ignores unknown opcodes', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.last().frame(42, {});
    t.last().frame(0, { id: '1' }, 2, 'ENVELOPE');
    t.last().frame(0, {}, 3, 'SOMETHING_NEW');
    expect(t.dispatched).toEqual([
      ['ENVELOPE', { id: '1' }],
      ['SOMETHING_NEW', {}],
    ]);
    expect(t.gw.seq).toBe(3);
  });

  it('stop closes with 1000 and never reconnects', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.gw.stop();
    expect(t.sockets[0]!.closedWith).toBe(1000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.sockets).toHaveLength(1);
    expect(t.states.at(-1)).toBe('offline');
  });

  it('reconnects at once when the network comes back', async () => {
    const t = setup();
    t.gw.start();
    await handshake(t.last());
    t.gw.networkChanged(false);
    expect(t.sockets[0]!.closedWith).toBe(4000);
    expect(t.states.at(-1)).toBe('offline');
    t.gw.networkChanged(true);
    expect(t.sockets).toHaveLength(2);
    expect(t.states.at(-1)).toBe('reconnecting');
  });
});
