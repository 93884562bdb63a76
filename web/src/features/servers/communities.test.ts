import { describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../../lib/api/client';
import { CommunityApi } from '../../lib/api/communities';
import type { Channel, ServerState } from '../../lib/api/types';
import { Communities } from './communities.svelte';
import { EVERYONE_DEFAULT, P } from './permissions';

const ME = '100';

function memoryStorage(): Storage {
  const map = new Map<string, string>();
  return {
    get length() {
      return map.size;
    },
    clear: () => map.clear(),
    getItem: (k) => map.get(k) ?? null,
    key: (i) => [...map.keys()][i] ?? null,
    removeItem: (k) => void map.delete(k),
    setItem: (k, v) => void map.set(k, v),
  };
}

function channel(id: string, server: string | null, extra: Partial<Channel> = {}): Channel {
  return { id, server_id: server, name: `c${id}`, kind: server ? 'text' : 'group_dm', parent_id: null, position: 0, topic: null, overwrites: [], last_message_id: null, ...extra };
}

function server(id: string, channels: Channel[]): ServerState {
  return {
    server: { id, name: `s${id}`, owner_id: '1', created_at: 0, member_count: 2 },
    roles: [{ id, server_id: id, name: '@everyone', color: 0, position: 0, permissions: EVERYONE_DEFAULT, hoist: false }],
    channels,
    me: { user: { id: ME, username: 'me', display_name: null, status_text: null }, server_id: id, roles: [], joined_at: 0 },
  };
}

function make(storage = memoryStorage()) {
  const rest = new CommunityApi(new ApiClient({ fetch: (async () => new Response('[]')) as typeof fetch }));
  return { store: new Communities(rest, ME, storage), storage };
}

describe('Communities', () => {
  it('syncs read marks and mention counts with the user\'s other devices through the server', async () => {
    const marks: Array<{ path: string; body: string }> = [];
    const fetch = (async (url: string, init: RequestInit) => {
      const path = new URL(url, 'http://x').pathname;
      if (path === '/api/v1/auth/refresh') {
        const tokens = { access_token: 'a', access_token_expires_in: 900, refresh_token: 'r2', refresh_token_expires_at: '2030-01-01T00:00:00Z' };
        return new Response(JSON.stringify(tokens), { status: 200 });
      }
      marks.push({ path, body: String(init.body) });
      return new Response(JSON.stringify({ channel_id: '50', last_read_id: '961', mention_count: 0 }), { status: 200 });
    }) as unknown as typeof globalThis.fetch;
    const api = new ApiClient({ fetch });
    api.resume('r1');
    const store = new Communities(new CommunityApi(api), ME, memoryStorage());
    // READY: read up to 900 elsewhere, two mentions after it; a channel never read with one.
    store.ready(
      [server('5', [channel('50', '5', { last_message_id: '950' }), channel('51', '5', { last_message_id: '20' })])],
      [],
      [
        { channel_id: '50', last_read_id: '900', mention_count: 2 },
        { channel_id: '51', last_read_id: '0', mention_count: 1 },
      ],
    );
    expect(store.unread).toEqual({ '50': true, '51': true });
    expect(store.mentions).toEqual({ '50': 2, '51': 1 });
    expect(store.serverMentions('5')).toBe(3);
    // A mention arrives off screen: counted; one that does not mention this user: not.
    store.messageArrived('50', '960', '7', false, true);
    store.messageArrived('50', '961', '7', false, false);
    expect(store.mentions['50']).toBe(3);
    // Another device read channel 51 entirely: cleared here without a request.
    store.readElsewhere('51', '20', 0);
    expect(store.unread['51']).toBeUndefined();
    expect(store.mentions['51']).toBeUndefined();
    expect(marks).toEqual([]);
    // Read here: cleared, and the server is told (one request with the newest message).
    store.markRead('50');
    expect(store.mentions['50']).toBeUndefined();
    expect(store.serverMentions('5')).toBe(0);
    await vi.waitFor(() => expect(marks.length).toBe(1));
    expect(marks).toEqual([{ path: '/api/v1/channels/50/read', body: JSON.stringify({ message_id: '961' }) }]);
  });

  it('takes READY, and marks unread the channels with messages newer than the last read', () => {
    const { store, storage } = make();
    store.ready([server('5', [channel('50', '5', { last_message_id: '900' }), channel('51', '5')])], [channel('60', null, { last_message_id: '10' })]);
    expect(store.unread).toEqual({ '50': true, '60': true });
    expect(store.serverUnread('5')).toBe(true);
    store.markRead('50');
    expect(store.serverUnread('5')).toBe(false);
    // Kept for the next page load.
    const again = new Communities(store.rest, ME, storage);
    again.ready([server('5', [channel('50', '5', { last_message_id: '900' })])], []);
    expect(again.unread).toEqual({});
  });

  it('counts a message as unread unless it is on screen or one\'s own', () => {
    const { store } = make();
    store.ready([server('5', [channel('50', '5')])], []);
    store.messageArrived('50', '1000', ME, false);
    expect(store.unread['50']).toBeUndefined();
    store.messageArrived('50', '1001', '7', true);
    expect(store.unread['50']).toBeUndefined();
    store.messageArrived('50', '1002', '7', false);
    expect(store.unread['50']).toBe(true);
    expect(store.channel('50')?.channel.last_message_id).toBe('1002');
  });

  it('applies server, channel, role and member events', () => {
    const { store } = make();
    store.ready([], []);
    store.apply('SERVER_CREATE', server('5', [channel('50', '5')]));
    store.apply('SERVER_UPDATE', { id: '5', name: 'renamed', owner_id: '1', created_at: 0, member_count: 2 });
    expect(store.state('5')?.server.name).toBe('renamed');
    store.apply('CHANNEL_CREATE', channel('51', '5', { overwrites: [{ id: '5', kind: 'role', allow: 0, deny: P.VIEW_CHANNEL }] }));
    expect(store.can('51', P.VIEW_CHANNEL)).toBe(false);
    store.apply('ROLE_CREATE', { id: '8', server_id: '5', name: 'mods', color: 0, position: 1, permissions: P.ADMINISTRATOR, hoist: true });
    store.apply('MEMBER_UPDATE', { user: { id: ME, username: 'me', display_name: null, status_text: null }, server_id: '5', roles: ['8'], joined_at: 0 });
    expect(store.can('51', P.VIEW_CHANNEL)).toBe(true);
    store.apply('ROLE_DELETE', { id: '8', server_id: '5' });
    expect(store.state('5')?.me.roles).toEqual([]);
    store.apply('CHANNEL_DELETE', { id: '51', server_id: '5' });
    expect(store.state('5')?.channels.map((c) => c.id)).toEqual(['50']);
    store.apply('MEMBER_ADD', { user: { id: '7', username: 'x', display_name: null, status_text: null }, server_id: '5', roles: [], joined_at: 0 });
    expect(store.state('5')?.server.member_count).toBe(3);
    store.apply('MEMBER_REMOVE', { server_id: '5', user_id: ME });
    expect(store.state('5')).toBeUndefined();
  });

  it('keeps group DMs apart from servers', () => {
    const { store } = make();
    store.ready([], []);
    store.apply('CHANNEL_CREATE', channel('60', null, { owner_id: '1' }));
    expect(store.groupDm('60')).toBeDefined();
    expect(store.can('60', P.SEND_MESSAGES)).toBe(true);
    expect(store.can('60', P.MANAGE_MESSAGES)).toBe(false);
    store.apply('CHANNEL_DELETE', { id: '60' });
    expect(store.groupDms).toEqual([]);
  });
});
