import { describe, expect, it } from 'vitest';
import { emptyStats, transformFrame, type FrameCrypto } from './frames';

// A stand-in for the media module: "encrypts" by prefixing a byte, refuses what it did not seal.
function fakeCrypto(hasKey: boolean): FrameCrypto {
  return {
    encrypt: (frame) => (hasKey ? new Uint8Array([0xee, ...frame]) : undefined),
    decrypt: (data) => (data[0] === 0xee ? data.slice(1) : undefined),
    last_slot: () => 7,
  };
}

const frame = (bytes: number[]) => ({ data: new Uint8Array(bytes).buffer });

describe('transformFrame', () => {
  it('drops what it cannot encrypt: nothing leaves in the clear', () => {
    const stats = emptyStats();
    const f = frame([1, 2, 3]);
    expect(transformFrame(undefined, 'send', 'audio', f, stats)).toBe(false);
    expect(transformFrame(fakeCrypto(false), 'send', 'video', f, stats)).toBe(false);
    expect(stats.unsent).toEqual({ audio: 1, video: 1 });
    expect(stats.sent).toEqual({ audio: 0, video: 0 });
  });

  it('replaces the frame with its sealed form and opens it on the other side', () => {
    const stats = emptyStats();
    const f = frame([1, 2, 3]);
    expect(transformFrame(fakeCrypto(true), 'send', 'audio', f, stats)).toBe(true);
    expect([...new Uint8Array(f.data)]).toEqual([0xee, 1, 2, 3]);
    expect(transformFrame(fakeCrypto(true), 'recv', 'audio', f, stats)).toBe(true);
    expect([...new Uint8Array(f.data)]).toEqual([1, 2, 3]);
    expect(stats.opened.audio).toBe(1);
    expect(stats.bySlot[7]).toBe(1);
  });

  it('drops a frame that opens with the key of another sender than the track announced', () => {
    const stats = emptyStats();
    const f = frame([0xee, 5]);
    expect(transformFrame(fakeCrypto(true), 'recv', 'audio', f, stats, 3)).toBe(false);
    expect(stats.failed.audio).toBe(1);
    expect(stats.opened.audio).toBe(0);
    expect(transformFrame(fakeCrypto(true), 'recv', 'audio', frame([0xee, 5]), stats, 7)).toBe(true);
  });

  it('drops a frame that does not open and counts it', () => {
    const stats = emptyStats();
    const f = frame([9, 9]);
    expect(transformFrame(fakeCrypto(true), 'recv', 'video', f, stats)).toBe(false);
    expect(stats.failed.video).toBe(1);
    expect(stats.opened.video).toBe(0);
  });

  it('passes an empty frame through untouched', () => {
    const stats = emptyStats();
    expect(transformFrame(undefined, 'send', 'audio', frame([]), stats)).toBe(true);
  });
});
