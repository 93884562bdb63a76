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
      return slow('drain', JSON.stringify([{ type: 'identity_changed', user: '7', device: 1 }]));
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
    safetyNumbers: () => slow('safety', '[]'),
    setVerified: () => slow('verify', undefined),
    changePassphrase: async () => {
      throw new Error('wrong_passphrase: wrong passphrase');
    },
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
    expect(results[0]).toEqual({ events: [{ type: 'identity_changed', user: '7', device: 1 }], acks: ['1', '2'] });
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
});
