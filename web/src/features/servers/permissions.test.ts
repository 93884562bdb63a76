import { describe, expect, it } from 'vitest';
import type { Overwrite, ServerState } from '../../lib/api/types';
import { ALL, EVERYONE_DEFAULT, NONE, P, PERMISSION_INFO, canActOnRole, channelPermissions, outranks, permissions, type MemberContext } from './permissions';

// The same table as client-core/src/servers.rs `permission_table`: both must agree.
const SERVER = '1';
const MOD = '10';
const MUTED = '11';
const ME = '100';

function ctx(roles: Array<[string, number]>, owner: boolean): MemberContext {
  return { user: ME, isOwner: owner, everyone: EVERYONE_DEFAULT, roles };
}

function ow(id: string, kind: 'role' | 'member', allow: number, deny: number): Overwrite {
  return { id, kind, allow, deny };
}

const not = (p: number) => ~p & ALL;

describe('permissions (the table of client-core)', () => {
  const moderator: Array<[string, number]> = [[MOD, P.MANAGE_MESSAGES | P.KICK_MEMBERS]];
  const admin: Array<[string, number]> = [[MOD, P.ADMINISTRATOR]];
  const muted: Array<[string, number]> = [[MUTED, NONE]];
  const both: Array<[string, number]> = [
    [MOD, P.MANAGE_MESSAGES],
    [MUTED, NONE],
  ];
  const none: Array<[string, number]> = [];
  const e = EVERYONE_DEFAULT;
  const cases: Array<[string, Array<[string, number]>, boolean, Overwrite[] | null, number]> = [
    ['everyone, server-wide', none, false, null, e],
    ['role adds to everyone', moderator, false, null, e | P.MANAGE_MESSAGES | P.KICK_MEMBERS],
    ['owner has all', none, true, [ow(SERVER, 'role', NONE, ALL)], ALL],
    ['administrator has all, even denied', admin, false, [ow(SERVER, 'role', NONE, P.VIEW_CHANNEL)], ALL],
    ['no overwrite: server-wide', none, false, [], e],
    ['everyone denied send', none, false, [ow(SERVER, 'role', NONE, P.SEND_MESSAGES)], e & not(P.SEND_MESSAGES)],
    [
      'role allow beats everyone deny',
      moderator,
      false,
      [ow(SERVER, 'role', NONE, P.SEND_MESSAGES), ow(MOD, 'role', P.SEND_MESSAGES, NONE)],
      e | P.MANAGE_MESSAGES | P.KICK_MEMBERS,
    ],
    [
      "role allow beats another role's deny",
      both,
      false,
      [ow(MUTED, 'role', NONE, P.SEND_MESSAGES), ow(MOD, 'role', P.SEND_MESSAGES, NONE)],
      e | P.MANAGE_MESSAGES,
    ],
    ['role deny', muted, false, [ow(MUTED, 'role', NONE, P.SEND_MESSAGES | P.ADD_REACTIONS)], e & not(P.SEND_MESSAGES | P.ADD_REACTIONS)],
    [
      'member deny beats role allow',
      moderator,
      false,
      [ow(MOD, 'role', P.SEND_MESSAGES, NONE), ow(ME, 'member', NONE, P.SEND_MESSAGES)],
      (e | P.MANAGE_MESSAGES | P.KICK_MEMBERS) & not(P.SEND_MESSAGES),
    ],
    [
      'member allow beats role deny',
      muted,
      false,
      [ow(MUTED, 'role', NONE, P.SEND_MESSAGES), ow(ME, 'member', P.SEND_MESSAGES, NONE)],
      e,
    ],
    ['private channel: nothing', none, false, [ow(SERVER, 'role', NONE, P.VIEW_CHANNEL)], NONE],
    [
      'private channel, role let in',
      moderator,
      false,
      [ow(SERVER, 'role', NONE, P.VIEW_CHANNEL), ow(MOD, 'role', P.VIEW_CHANNEL, NONE)],
      e | P.MANAGE_MESSAGES | P.KICK_MEMBERS,
    ],
    [
      'private channel, member let in',
      none,
      false,
      [ow(SERVER, 'role', NONE, P.VIEW_CHANNEL), ow(ME, 'member', P.VIEW_CHANNEL, NONE)],
      e,
    ],
    ['overwrite of a role the member lacks: ignored', none, false, [ow(MOD, 'role', P.MANAGE_MESSAGES, NONE)], e],
    ['overwrite of another member: ignored', none, false, [ow('101', 'member', NONE, P.VIEW_CHANNEL)], e],
  ];
  it.each(cases)('%s', (_name, roles, owner, overwrites, expected) => {
    expect(permissions(SERVER, ctx(roles, owner), overwrites).toString(2)).toBe(expected.toString(2));
  });

  it('names every permission once, and they add up to ALL', () => {
    expect(PERMISSION_INFO.reduce((a, p) => a | p.bit, 0)).toBe(ALL);
    expect(new Set(PERMISSION_INFO.map((p) => p.bit)).size).toBe(17);
  });
});

describe('from a server state', () => {
  const state: ServerState = {
    server: { id: SERVER, name: 'S', owner_id: '1000', created_at: 0, member_count: 3 },
    roles: [
      { id: SERVER, server_id: SERVER, name: '@everyone', color: 0, position: 0, permissions: EVERYONE_DEFAULT, hoist: false },
      { id: MOD, server_id: SERVER, name: 'Mods', color: 0xff0000, position: 2, permissions: P.MANAGE_ROLES | P.KICK_MEMBERS, hoist: true },
      { id: MUTED, server_id: SERVER, name: 'Helpers', color: 0, position: 1, permissions: NONE, hoist: false },
    ],
    channels: [],
    me: { user: { id: ME, username: 'me', display_name: null, status_text: null }, server_id: SERVER, roles: [MOD], joined_at: 0 },
  };
  const user = (id: string) => ({ id, username: id, display_name: null, status_text: null });

  it('reads the roles of the member and the channel overwrites', () => {
    const hidden = { id: '5', server_id: SERVER, name: 'staff', kind: 'text' as const, parent_id: null, position: 0, topic: null, last_message_id: null, overwrites: [ow(SERVER, 'role', NONE, P.VIEW_CHANNEL), ow(MOD, 'role', P.VIEW_CHANNEL, NONE)] };
    expect(channelPermissions(state, hidden) & P.VIEW_CHANNEL).toBe(P.VIEW_CHANNEL);
    expect(channelPermissions(state, hidden, { user: user('7'), roles: [] })).toBe(NONE);
    expect(channelPermissions(state, hidden, { user: user('1000'), roles: [] })).toBe(ALL);
  });

  it('acts only below its highest role, never on the owner', () => {
    expect(canActOnRole(state, state.me, 1)).toBe(true);
    expect(canActOnRole(state, state.me, 2)).toBe(false);
    expect(outranks(state, state.me, { user: user('7'), roles: [MUTED] })).toBe(true);
    expect(outranks(state, state.me, { user: user('8'), roles: [MOD] })).toBe(false);
    expect(outranks(state, state.me, { user: user('1000'), roles: [] })).toBe(false);
    expect(outranks(state, { user: user('1000'), roles: [] }, state.me)).toBe(true);
  });
});

describe('timeouts', () => {
  const later = Date.now() + 60_000;
  const earlier = Date.now() - 1;
  const timed = (until: number, roles: Array<[string, number]> = [], owner = false): MemberContext => ({
    user: ME,
    isOwner: owner,
    everyone: EVERYONE_DEFAULT,
    roles,
    timeoutUntil: until,
  });

  it('leave viewing and listening only while they run', () => {
    expect(permissions(SERVER, timed(later, [[MOD, P.MANAGE_MESSAGES | P.KICK_MEMBERS]]), null)).toBe(P.VIEW_CHANNEL | P.CONNECT);
    expect(permissions(SERVER, timed(later), [ow(SERVER, 'role', P.MANAGE_MESSAGES, NONE)])).toBe(P.VIEW_CHANNEL | P.CONNECT);
    // A channel they may not view stays hidden.
    expect(permissions(SERVER, timed(later), [ow(SERVER, 'role', NONE, P.VIEW_CHANNEL)])).toBe(NONE);
    // Ended: everything back.
    expect(permissions(SERVER, timed(earlier), null)).toBe(EVERYONE_DEFAULT);
  });

  it('do not hold the owner or an administrator', () => {
    expect(permissions(SERVER, timed(later, [], true), null)).toBe(ALL);
    expect(permissions(SERVER, timed(later, [[MOD, P.ADMINISTRATOR]]), null)).toBe(ALL);
  });
});
