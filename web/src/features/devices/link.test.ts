import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { LinkRequest } from '../../lib/engine/types';
import { Approvals, CODE_FORMAT_ERROR, CODE_MISMATCH_ERROR, PendingLink, REQUEST_EXPIRED_ERROR, WRONG_CODE_NOTICE } from './link.svelte';

const T0 = Date.UTC(2030, 0, 1);
const request = (device_id: number, created_at = T0, name = `Device ${device_id}`): LinkRequest => ({
  device_id,
  device_name: name,
  created_at,
  expires_at: created_at + 10 * 60_000,
});

function approvals(fail?: Error) {
  const calls: string[] = [];
  const a = new Approvals({
    approveLink: async (id, code) => {
      calls.push(`approve:${id}:${code}`);
      if (fail) throw fail;
    },
    declineLink: async (id) => {
      calls.push(`decline:${id}`);
    },
    now: () => Date.now(),
  });
  return { a, calls };
}

describe('Approvals', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0 + 1000);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('refuses a code that is not eight digits before asking the engine', async () => {
    const { a, calls } = approvals();
    a.add(request(3));
    await a.approve('1234-567');
    expect(a.dialog).toMatchObject({ step: 'enter', error: CODE_FORMAT_ERROR });
    await a.approve('12a4-5678');
    expect(calls).toEqual([]);
    await a.approve(' 1234-5678 ');
    expect(calls).toEqual(['approve:3:12345678']);
    expect(a.dialog?.step).toBe('waiting');
  });

  it('a new request from the device it waits for means the code was wrong: asks again', async () => {
    const { a } = approvals();
    a.add(request(3));
    await a.approve('11111111');
    a.add(request(3, T0 + 5000));
    expect(a.dialog).toMatchObject({ step: 'enter', error: CODE_MISMATCH_ERROR, request: { created_at: T0 + 5000 } });
  });

  it('shows the engine’s refusal and lets the person try again', async () => {
    const { a } = approvals(new Error('http: 503 Service Unavailable'));
    a.add(request(3));
    await a.approve('12345678');
    expect(a.dialog?.step).toBe('enter');
    expect(a.dialog?.error).toMatch(/server could not be reached/);
  });

  it('"Not now" puts a request aside; the next one asks, and the list can reopen it', () => {
    const { a } = approvals();
    a.add(request(3));
    a.add(request(4));
    expect(a.dialog?.request.device_id).toBe(3);
    a.close();
    expect(a.dialog?.request.device_id).toBe(4);
    a.close();
    expect(a.dialog).toBeNull();
    // The same request again does not prompt; the list still has both.
    a.add(request(3));
    expect(a.dialog).toBeNull();
    expect(a.requests.map((r) => r.device_id)).toEqual([3, 4]);
    expect(a.open(3)).toBe(true);
    expect(a.dialog?.request.device_id).toBe(3);
    expect(a.open(9)).toBe(false);
  });

  it('declines, and closes what another device linked or removed', async () => {
    const { a, calls } = approvals();
    a.add(request(3));
    a.add(request(4));
    await a.decline();
    expect(calls).toEqual(['decline:3']);
    expect(a.dialog?.request.device_id).toBe(4);
    a.devicesChanged([], [4]);
    expect(a.dialog).toBeNull();
    expect(a.requests).toEqual([]);
  });

  it('a late request of the device just linked does not ask again once "Done" is pressed', async () => {
    const { a } = approvals();
    a.add(request(3));
    await a.approve('12345678');
    a.devicesChanged([3], []);
    expect(a.dialog?.step).toBe('linked');
    a.add(request(3, T0 + 2000));
    expect(a.dialog?.step).toBe('linked');
    a.close();
    expect(a.dialog).toBeNull();
    expect(a.requests).toEqual([]);
  });

  it('says when the request lapsed', () => {
    const { a } = approvals();
    a.add(request(3));
    vi.setSystemTime(T0 + 11 * 60_000);
    a.expire();
    expect(a.requests).toEqual([]);
    expect(a.dialog?.error).toBe(REQUEST_EXPIRED_ERROR);
    // Lapsed requests do not prompt.
    a.close();
    a.add(request(5, T0));
    expect(a.dialog).toBeNull();
  });
});

describe('PendingLink', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('retries after a failure, and keeps a valid code across reconnects', async () => {
    let n = 0;
    let offline = true;
    const link = new PendingLink({
      beginLink: async () => {
        if (offline) throw new Error('http: network error');
        n += 1;
        return `0000-000${n}`;
      },
    });
    await link.start();
    expect(link.code).toBeNull();
    expect(link.problem).toMatch(/could not be reached/);
    offline = false;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(link.code).toBe('0000-0001');
    expect(link.problem).toBeNull();
    await link.online();
    expect(link.code).toBe('0000-0001');
    await link.failed();
    expect(link.code).toBe('0000-0002');
    expect(link.notice).toBe(WRONG_CODE_NOTICE);
    link.stop();
    await vi.advanceTimersByTimeAsync(20 * 60_000);
    expect(link.code).toBeNull();
    expect(n).toBe(2);
  });

  it('asks once when asked twice at the same time', async () => {
    let n = 0;
    const link = new PendingLink({ beginLink: async () => `1111-000${++n}` });
    await Promise.all([link.start(), link.renew(), link.online()]);
    expect(n).toBe(1);
  });
});
