import { describe, expect, it } from 'vitest';
import { parseRoute, routePath, type Route } from './route';

describe('routes', () => {
  it.each<[string, Route]>([
    ['/', { name: 'home' }],
    ['/channels/@me', { name: 'home' }],
    ['/channels/@me/123', { name: 'me', id: '123' }],
    ['/channels/5/6', { name: 'server', server: '5', channel: '6' }],
    ['/channels/5', { name: 'server', server: '5', channel: null }],
    ['/channels/5/not-an-id', { name: 'server', server: '5', channel: null }],
    ['/invite/AbC-9_x', { name: 'invite', code: 'AbC-9_x' }],
    ['/invite/AbC?x=1', { name: 'invite', code: 'AbC' }],
    ['/invite/', { name: 'home' }],
    ['/channels/abc', { name: 'home' }],
    ['/something/else', { name: 'home' }],
  ])('%s', (path, route) => {
    expect(parseRoute(path)).toEqual(route);
  });

  it('writes paths that read back the same', () => {
    for (const route of [
      { name: 'home' },
      { name: 'me', id: '9' },
      { name: 'server', server: '1', channel: '2' },
      { name: 'server', server: '1', channel: null },
      { name: 'invite', code: 'x_Y-1' },
    ] as Route[]) {
      expect(parseRoute(routePath(route))).toEqual(route);
    }
  });
});
