import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IDLE_AFTER_MS, IdleWatcher } from './idle';

describe('IdleWatcher', () => {
  beforeEach(() => vi.useFakeTimers({ now: 0 }));
  afterEach(() => vi.useRealTimers());

  const clock = {
    now: () => Date.now(),
    setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
    clearTimeout: (h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>),
  };

  it('goes idle after five quiet minutes and back at the next input', () => {
    const changes: boolean[] = [];
    const w = new IdleWatcher((idle) => changes.push(idle), IDLE_AFTER_MS, clock);
    w.start();
    vi.advanceTimersByTime(IDLE_AFTER_MS - 1);
    expect(changes).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(changes).toEqual([true]);
    expect(w.idle).toBe(true);
    vi.advanceTimersByTime(IDLE_AFTER_MS * 3);
    expect(changes).toEqual([true]);
    w.input();
    expect(changes).toEqual([true, false]);
    w.input();
    expect(changes).toEqual([true, false]);
    vi.advanceTimersByTime(IDLE_AFTER_MS);
    expect(changes).toEqual([true, false, true]);
    w.stop();
  });

  it('counts from the last input, not from the start', () => {
    const changes: boolean[] = [];
    const w = new IdleWatcher((idle) => changes.push(idle), IDLE_AFTER_MS, clock);
    w.start();
    vi.advanceTimersByTime(IDLE_AFTER_MS - 1_000);
    w.input();
    vi.advanceTimersByTime(1_000);
    expect(changes).toEqual([]);
    vi.advanceTimersByTime(IDLE_AFTER_MS - 1_000 - 1);
    expect(changes).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(changes).toEqual([true]);
  });

  it('does nothing once stopped', () => {
    const changes: boolean[] = [];
    const w = new IdleWatcher((idle) => changes.push(idle), IDLE_AFTER_MS, clock);
    w.start();
    w.stop();
    vi.advanceTimersByTime(IDLE_AFTER_MS * 2);
    w.input();
    expect(changes).toEqual([]);
  });
});
