import { describe, expect, it } from 'vitest';
import { Engine, EngineClosedError } from './engine';
import type { WasmEngine } from './types';
import { engineErrorKind } from './types';

/** A fake engine that fails, like wasm-bindgen's borrow check, when two calls overlap. */
function fakeWasm() {
  let busy = false;
  const calls: string[] = [];
  let acks: string[] = [];
  const slow = async <T>(name: string, value: T): Promise<T> => {
    if (busy) throw new Error('recursive use of an object detected');
    busy = true;
    calls.push(`${name}:start`);
    await new Promise((r) => setTimeout(r, 1));
    calls.push(`${name}:end`);
    busy = false;
    return value;
  };
  const engine: WasmEngine = {
    start: () => slow('start', '[]'),
    drainQueue: () => {
      acks.push('1', '2');
      return slow('drain', JSON.stringify([{ type: 'identity_changed', user: '7' }]));
    },
    handleEnvelope: (text) => {
      acks.push((JSON.parse(text) as { id: string }).id);
      return slow(`env${(JSON.parse(text) as { id: string }).id}`, '[]');
    },
    takeAcks: () => {
      if (busy) throw new Error('recursive use of an object detected');
      const out = JSON.stringify(acks);
      acks = [];
      return out;
    },
    maintain: () => slow('maintain', undefined),
    sendDm: (to, body) => slow('send', JSON.stringify({ kind: 'message', pos: 1, body, conversation: to })),
    takeEvents: () => '[]',
    history: () => slow('history', '[]'),
    conversations: () => slow('conversations', '[]'),
    markRead: () => slow('markRead', undefined),
    safetyNumber: (user) => slow(`safety:${user}`, JSON.stringify({ number: '1'.repeat(60), verified: true, changed: false })),
    setVerified: (user, verified) => slow(`verify:${user}:${verified}`, undefined),
    changePassphrase: async () => {
      throw new Error('wrong_passphrase: wrong passphrase');
    },
    accountState: () => {
      if (busy) throw new Error('recursive use of an object detected');
      calls.push('accountState');
      return JSON.stringify({ state: 'pending', unconfirmed_recovery_key: null });
    },
    confirmRecoveryKey: () => slow('confirmRecoveryKey', undefined),
    beginLink: (now) => slow(`beginLink@${now}`, '1234-5678'),
    pollLink: () => slow('pollLink', '[]'),
    handleEvent: (name, payload, now) => {
      acks.push('9');
      return slow(`event:${name}:${payload}@${now}`, JSON.stringify([{ type: 'linked' }]));
    },
    linkWithRecoveryKey: async (key) => {
      if (key !== 'GOOD') throw new Error('wrong_recovery_key: this recovery key does not open the account');
      return slow('recovery', JSON.stringify([{ type: 'linked' }]));
    },
    resetIdentity: (password) => slow(`reset:${password}`, 'AAAA-BBBB'),
    linkRequests: () => slow('linkRequests', JSON.stringify([{ device_id: 3, device_name: 'Firefox', created_at: 1, expires_at: 2 }])),
    approveLink: (id, code, now) => slow(`approve:${id}:${code}@${now}`, undefined),
    declineLink: (id) => slow(`decline:${id}`, undefined),
    ownDevices: () => slow('ownDevices', JSON.stringify([{ id: 1, name: 'Chrome', linked: true, current: true, created_at: 1, last_seen_at: 2 }])),
    removeDevice: (id) => slow(`remove:${id}`, undefined),
    newRecoveryKey: () => slow('newRecoveryKey', 'CCCC-DDDD'),
    free: () => calls.push('free'),
  };
  return { engine, calls };
}

describe('Engine', () => {
  it('runs one call at a time, in call order', async () => {
    const { engine, calls } = fakeWasm();
    const e = new Engine(engine);
    const drain = e.drainQueue();
    const a = e.handleEnvelope({ id: '3' });
    const b = e.handleEnvelope({ id: '4' });
    const list = e.conversations();
    const results = await Promise.all([drain, a, b, list]);
    expect(calls).toEqual(['drain:start', 'drain:end', 'env3:start', 'env3:end', 'env4:start', 'env4:end', 'conversations:start', 'conversations:end']);
    expect(results[0]).toEqual({ events: [{ type: 'identity_changed', user: '7' }], acks: ['1', '2'] });
    expect(results[1].acks).toEqual(['3']);
    expect(results[2].acks).toEqual(['4']);
  });

  it('keeps going after a failed call, and reports engine error kinds', async () => {
    const { engine } = fakeWasm();
    const e = new Engine(engine);
    const failed = e.changePassphrase('a', 'b');
    const next = e.conversations();
    const err = await failed.catch((x: unknown) => x);
    expect(engineErrorKind(err)).toBe('wrong_passphrase');
    expect(await next).toEqual([]);
    expect(engineErrorKind(new Error('http: 503'))).toBe('http');
    expect(engineErrorKind(new Error('boom'))).toBe('other');
  });

  it('closes after the queued calls and refuses later ones', async () => {
    const { engine, calls } = fakeWasm();
    const e = new Engine(engine);
    let released = false;
    e.onClose(() => (released = true));
    const send = e.sendDm('5', 'hi');
    await e.close();
    expect(released).toBe(true);
    expect((await send).body).toBe('hi');
    expect(calls.at(-1)).toBe('free');
    await expect(e.history('5', undefined, 50)).rejects.toBeInstanceOf(EngineClosedError);
  });

  it('passes the account calls through the same queue, with the clock', async () => {
    const { engine, calls } = fakeWasm();
    const e = new Engine(engine, () => 42);
    // accountState is synchronous in the engine: it must still wait for the call before it.
    const [code, state] = await Promise.all([e.beginLink(), e.accountState()]);
    expect(code).toBe('1234-5678');
    expect(state).toEqual({ state: 'pending', unconfirmed_recovery_key: null });
    expect(calls).toEqual(['beginLink@42:start', 'beginLink@42:end', 'accountState']);

    const step = await e.handleEvent('LINK_ANSWER', { from_device: 1 });
    expect(step).toEqual({ events: [{ type: 'linked' }], acks: ['9'] });
    expect(calls).toContain('event:LINK_ANSWER:{"from_device":1}@42:start');

    await e.approveLink(3, '12345678');
    expect(calls).toContain('approve:3:12345678@42:start');
    expect(await e.linkRequests()).toEqual([{ device_id: 3, device_name: 'Firefox', created_at: 1, expires_at: 2 }]);
    expect((await e.ownDevices())[0]).toMatchObject({ id: 1, linked: true, current: true });
    expect(await e.safetyNumber('5')).toEqual({ number: '1'.repeat(60), verified: true, changed: false });
    await e.setVerified('5', false);
    expect(calls).toContain('verify:5:false:start');
    expect(await e.newRecoveryKey()).toBe('CCCC-DDDD');
    expect(await e.resetIdentity('pw')).toBe('AAAA-BBBB');
  });

  it('reports a wrong recovery key by its kind, and links with the right one', async () => {
    const { engine } = fakeWasm();
    const e = new Engine(engine);
    const err = await e.linkWithRecoveryKey('BAD').catch((x: unknown) => x);
    expect(engineErrorKind(err)).toBe('wrong_recovery_key');
    expect(await e.linkWithRecoveryKey('GOOD')).toEqual([{ type: 'linked' }]);
    expect(engineErrorKind(new Error('not_linked: approve this device first'))).toBe('not_linked');
    expect(engineErrorKind(new Error('wrong_code: 8 digits'))).toBe('wrong_code');
  });
});
