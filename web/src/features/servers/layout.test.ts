import { describe, expect, it } from 'vitest';
import type { Channel, Member, Role } from '../../lib/api/types';
import { channelGroups, defaultChannel, groupName, memberColour, memberGroups, serverInitials } from './layout';

function ch(id: string, kind: Channel['kind'], position: number, parent: string | null = null): Channel {
  return { id, server_id: '1', name: `n${id}`, kind, parent_id: parent, position, topic: null, overwrites: [], last_message_id: null };
}
function role(id: string, position: number, hoist: boolean, color = 0): Role {
  return { id, server_id: '1', name: `r${id}`, color, position, permissions: 0, hoist };
}
function member(id: string, roles: string[], name = `u${id}`): Member {
  return { user: { id, username: name, display_name: null, status_text: null }, server_id: '1', roles, joined_at: 0 };
}

describe('channel layout', () => {
  const channels = [ch('10', 'category', 1), ch('11', 'text', 1, '10'), ch('12', 'voice', 0, '10'), ch('20', 'category', 0), ch('3', 'text', 5), ch('4', 'text', 2), ch('5', 'text', 0, '99')];

  it('lists loose channels first, then categories in order with their channels in order', () => {
    expect(channelGroups(channels).map((g) => [g.category?.id ?? '-', g.channels.map((c) => c.id)])).toEqual([
      ['-', ['5', '4', '3']],
      ['20', []],
      ['10', ['12', '11']],
    ]);
  });

  it('opens on the first text channel', () => {
    expect(defaultChannel(channels)?.id).toBe('5');
    expect(defaultChannel([ch('1', 'voice', 0)])?.id).toBe('1');
    expect(defaultChannel([ch('1', 'category', 0)])).toBeNull();
  });
});

describe('member layout', () => {
  const state = { server: { id: '1', name: 'S', owner_id: 'x', created_at: 0, member_count: 4 }, roles: [role('1', 0, false), role('7', 3, true, 0xff0000), role('8', 2, true), role('9', 5, false, 0x00ff00)] };

  it('groups members under their highest hoisted role, then the rest by name', () => {
    const groups = memberGroups(state, [member('a', ['8', '7'], 'zed'), member('b', ['8']), member('c', []), member('d', ['9'], 'amy')]);
    expect(groups.map((g) => [g.label, g.members.map((m) => m.user.id)])).toEqual([
      ['r7', ['a']],
      ['r8', ['b']],
      ['Members', ['d', 'c']],
    ]);
    expect(groups[0]?.colour).toBe('#ff0000');
  });

  it('colours a name with the highest coloured role', () => {
    expect(memberColour(state, { roles: ['7', '9'] })).toBe('#00ff00');
    expect(memberColour(state, { roles: ['8'] })).toBeNull();
  });

  it('names servers and groups', () => {
    expect(serverInitials('Les Copains du Dimanche')).toBe('LCd');
    expect(serverInitials('gaming')).toBe('ga');
    const users = [
      { id: 'me', username: 'me', display_name: null, status_text: null },
      { id: 'b', username: 'bob', display_name: 'Bob', status_text: null },
      { id: 'c', username: 'cy', display_name: null, status_text: null },
    ];
    expect(groupName({ name: '', recipients: users }, 'me')).toBe('Bob, cy');
    expect(groupName({ name: 'Trip', recipients: users }, 'me')).toBe('Trip');
  });
});
