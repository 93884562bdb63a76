import { describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../lib/api/types';
import { AUDIT_ACTIONS, describe as sentence, durationText } from './audit';

const names: Record<string, string> = { '1': 'Ann', '2': 'Ben', '3': 'Cleo' };
const name = (id: string) => names[id] ?? 'Unknown user';
const entry = (action: AuditEntry['action'], target: string | null, details: Record<string, unknown> = {}): AuditEntry => ({
  id: '9',
  action,
  actor_id: '1',
  target_id: target,
  reason: null,
  details,
  created_at: 0,
});

describe('the audit log in words', () => {
  it('says durations in their largest whole unit', () => {
    expect(durationText(60)).toBe('1 minute');
    expect(durationText(600)).toBe('10 minutes');
    expect(durationText(90)).toBe('90 seconds');
    expect(durationText(86400)).toBe('1 day');
    expect(durationText(14 * 86400)).toBe('2 weeks');
  });

  it('names who did what to whom', () => {
    expect(sentence(entry('member_timeout', '2', { duration_secs: 600, count: 1 }), name)).toBe('Ann timed out Ben for 10 minutes');
    expect(sentence(entry('member_timeout_remove', '2'), name)).toBe('Ann removed the timeout of Ben');
    expect(sentence(entry('member_kick', '2'), name)).toBe('Ann kicked Ben');
    expect(sentence(entry('member_ban', '2'), name)).toBe('Ann banned Ben');
    expect(sentence(entry('member_ban', '2', { duration_secs: 86400 }), name)).toBe('Ann banned Ben for 1 day');
    expect(sentence(entry('member_roles_update', '2', { added: [{ id: '7', name: 'mods' }], removed: [{ id: '8', name: 'new' }] }), name)).toBe(
      'Ann changed the roles of Ben: +mods, −new',
    );
    expect(sentence(entry('member_voice_update', '2', { mute: true, deaf: null }), name)).toBe('Ann server muted Ben');
    expect(sentence(entry('message_delete', '55', { channel_id: '4', author_id: '3' }), name)).toBe('Ann deleted a message by Cleo');
    expect(sentence(entry('channel_update', '4', { name: { old: 'general', new: 'lounge' }, topic: { old: null, new: 'hi' } }), name)).toBe(
      'Ann changed the channel #lounge (name, topic)',
    );
    expect(sentence(entry('role_create', '7', { name: 'mods', permissions: 4 }), name)).toBe('Ann created the role mods');
    expect(sentence(entry('invite_delete', null, { invite: 'AbCd…' }), name)).toBe('Ann revoked the invite AbCd…');
  });

  it('has a filter label for every action', () => {
    const actions = AUDIT_ACTIONS.map((a) => a.action);
    expect(new Set(actions).size).toBe(23);
    for (const a of actions) expect(sentence(entry(a, '2'), name)).toMatch(/^Ann /);
  });

  it('names the author of a pinned message and of a removed reaction', () => {
    expect(sentence({ ...entry('message_pin', '9'), details: { author_id: '2', channel_id: '5' } }, name)).toBe('Ann pinned a message by Ben');
    expect(sentence({ ...entry('message_unpin', '9'), details: { author_id: '2' } }, name)).toBe('Ann unpinned a message by Ben');
    expect(sentence({ ...entry('reaction_remove', '2'), details: { message_id: '9' } }, name)).toBe('Ann removed a reaction by Ben');
  });

  it('counts a purge and says how far back it went', () => {
    const e = { ...entry('messages_purge', '2'), details: { deleted: 3, within_secs: 86400 } };
    expect(sentence(e, name)).toBe('Ann deleted 3 messages by Ben from the last 1 day');
  });
});
