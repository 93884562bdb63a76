import { describe, expect, it } from 'vitest';
import { ago, colourSlot, dayKey, dayLabel, displayName, formatBytes, formatDuration, initials, preview, safetyGroups } from './format';

const at = (s: string) => new Date(s).getTime();

describe('format', () => {
  it('writes sizes and durations for people', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(3_400_000)).toBe('3.4 MB');
    expect(formatBytes(52_000_000_000)).toBe('52 GB');
    expect(formatBytes(2e18)).toBe('2000 PB');
    expect(formatDuration(45_000)).toBe('45 s');
    expect(formatDuration(12 * 60_000 + 5_000)).toBe('12 min');
    expect(formatDuration((5 * 60 + 3) * 60_000)).toBe('5 h 3 min');
    expect(formatDuration(2 * 3_600_000)).toBe('2 h');
    expect(formatDuration((3 * 24 + 4) * 3_600_000)).toBe('3 d 4 h');
    expect(formatDuration(-5)).toBe('0 s');
  });

  it('labels days relative to now', () => {
    const now = at('2025-03-05T10:00:00');
    expect(dayLabel(at('2025-03-05T00:01:00'), now)).toBe('Today');
    expect(dayLabel(at('2025-03-04T23:59:00'), now)).toBe('Yesterday');
    expect(dayLabel(at('2025-03-01T12:00:00'), now)).toMatch(/2025/);
    expect(dayKey(at('2025-03-05T00:00:00'))).toBe(dayKey(at('2025-03-05T23:59:59')));
    expect(dayKey(at('2025-03-05T23:59:59'))).not.toBe(dayKey(at('2025-03-06T00:00:00')));
  });

  it('splits a safety number into 12 groups of 5', () => {
    const number = '123456789012345678901234567890123456789012345678901234567890';
    const groups = safetyGroups(number);
    expect(groups).toHaveLength(12);
    expect(groups.every((g) => g.length === 5)).toBe(true);
    expect(groups.join('')).toBe(number);
  });

  it('names people by display name, else username', () => {
    expect(displayName({ username: 'alice', display_name: 'Alice L.' })).toBe('Alice L.');
    expect(displayName({ username: 'alice', display_name: '  ' })).toBe('alice');
    expect(displayName({ username: 'alice', display_name: null })).toBe('alice');
    expect(displayName(undefined)).toBe('Unknown user');
    expect(initials('Alice Liddell')).toBe('AL');
    expect(initials('bob_the.builder')).toBe('BT');
    expect(initials('émile')).toBe('É');
    expect(colourSlot('123')).toBe(colourSlot('123'));
    expect(colourSlot('123')).toBeGreaterThanOrEqual(0);
    expect(colourSlot('123')).toBeLessThan(8);
  });

  it('previews entries on one line', () => {
    const base = { pos: 1, message_id: 'm', conversation: '2', author: '2', author_device: 1, sent_at: 0 };
    expect(preview({ ...base, kind: 'message', outgoing: false, body: 'hello\n  there' })).toBe('hello there');
    expect(preview({ ...base, kind: 'message', outgoing: true, body: 'hi' })).toBe('You: hi');
    expect(preview({ ...base, kind: 'message', outgoing: false, body: 'x'.repeat(200) }, 10)).toBe(`${'x'.repeat(9)}…`);
    expect(preview({ ...base, kind: 'undecryptable', repaired: false })).toBe('Message not decrypted yet');
    expect(preview(null)).toBe('No messages yet');
  });

  it('says how long ago', () => {
    const now = at('2025-03-05T10:00:00');
    expect(ago(now - 5_000, now)).toBe('just now');
    expect(ago(now - 60_000, now)).toBe('1 minute ago');
    expect(ago(now - 3 * 3600_000, now)).toBe('3 hours ago');
    expect(ago(now - 2 * 86400_000, now)).toBe('2 days ago');
  });
});
