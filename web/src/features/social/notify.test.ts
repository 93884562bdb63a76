import { describe, expect, it } from 'vitest';
import { isMuted, levelOf, notifies, showsUnread } from './notify';

const NOW = 1_000_000;

describe('notification rules', () => {
  it('a channel’s level wins over its server’s, which wins over all', () => {
    const map = { s: { level: 'mentions' as const }, c2: { level: 'all' as const } };
    expect(levelOf(map, 'c1', 's')).toBe('mentions');
    expect(levelOf(map, 'c2', 's')).toBe('all');
    expect(levelOf({}, 'c1', 's')).toBe('all');
    expect(levelOf(map, 'g', null)).toBe('all');
  });

  it('a mute lasts until its end, or until lifted', () => {
    expect(isMuted({ muted: true }, NOW)).toBe(true);
    expect(isMuted({ muted: true, muted_until: NOW + 1 }, NOW)).toBe(true);
    expect(isMuted({ muted: true, muted_until: NOW }, NOW)).toBe(false);
    expect(isMuted({ level: 'all' }, NOW)).toBe(false);
    expect(showsUnread({ s: { muted: true } }, 'c', 's', NOW)).toBe(false);
    expect(showsUnread({ c: { muted: true, muted_until: NOW - 1 } }, 'c', 's', NOW)).toBe(true);
  });

  it('notifies by level, never when muted or in do not disturb, and always for a DM otherwise', () => {
    const base = { channel: 'c', server: 's', mentionsMe: false, status: 'online', now: NOW };
    expect(notifies({}, base)).toBe(true);
    expect(notifies({ s: { level: 'mentions' } }, base)).toBe(false);
    expect(notifies({ s: { level: 'mentions' } }, { ...base, mentionsMe: true })).toBe(true);
    expect(notifies({ c: { level: 'nothing' } }, { ...base, mentionsMe: true })).toBe(false);
    expect(notifies({ s: { muted: true } }, { ...base, mentionsMe: true })).toBe(false);
    expect(notifies({}, { ...base, status: 'dnd' })).toBe(false);
    expect(notifies({}, { mentionsMe: false, status: 'idle', now: NOW })).toBe(true);
    expect(notifies({}, { mentionsMe: false, status: 'dnd', now: NOW })).toBe(false);
  });
});
