import { describe, expect, it } from 'vitest';
import { ApiClient } from './client';
import { ApiError, NetworkError, SessionEndedError } from './errors';

type Handler = (req: { method: string; path: string; body: unknown; auth: string | null }) => {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
};

function fakeServer(handler: Handler) {
  const log: Array<{ method: string; path: string; auth: string | null; body: unknown }> = [];
  const fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const headers = (init?.headers ?? {}) as Record<string, string>;
    const req = {
      method: init?.method ?? 'GET',
      path: String(input),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
      auth: headers.authorization ?? null,
    };
    log.push(req);
    const res = handler(req);
    return new Response(res.status === 204 ? null : JSON.stringify(res.body ?? {}), {
      status: res.status,
      headers: res.headers,
    });
  }) as typeof globalThis.fetch;
  return { fetch, log };
}

const tokens = (n: number) => ({
  access_token: `a${n}`,
  access_token_expires_in: 900,
  refresh_token: `r${n}`,
  refresh_token_expires_at: '2030-01-01T00:00:00Z',
});

describe('ApiClient', () => {
  it('refreshes once on 401 and retries with the new token', async () => {
    let now = 0;
    const server = fakeServer((req) => {
      if (req.path === '/api/v1/auth/refresh') return { status: 200, body: tokens(2) };
      return req.auth === 'Bearer a2' ? { status: 200, body: { ok: true } } : { status: 401, body: { error: { code: 'unauthorized', message: 'no' } } };
    });
    const saved: string[] = [];
    const api = new ApiClient({ fetch: server.fetch, now: () => now, onRefreshToken: (t) => saved.push(t) });
    api.resume('r1');
    // No access token yet: the first request refreshes first.
    expect(await api.json('GET', '/api/v1/users/@me')).toEqual({ ok: true });
    expect(saved).toEqual(['r2']);
    expect(server.log.map((r) => r.path)).toEqual(['/api/v1/auth/refresh', '/api/v1/users/@me']);
    expect(server.log[0]!.body).toEqual({ refresh_token: 'r1' });
    now += 1000;
  });

  it('renews the access token shortly before it expires', async () => {
    let now = 0;
    let n = 1;
    const server = fakeServer((req) => {
      if (req.path === '/api/v1/auth/refresh') return { status: 200, body: tokens(++n) };
      if (req.path === '/api/v1/auth/login') return { status: 200, body: { user: { id: '1' }, device_id: 1, session_id: '5', ...tokens(1) } };
      return { status: 200, body: { auth: req.auth } };
    });
    const api = new ApiClient({ fetch: server.fetch, now: () => now });
    await api.login({ username: 'a', password: 'b' });
    expect(await api.json('GET', '/x')).toEqual({ auth: 'Bearer a1' });
    now = 900_000 - 10_000; // within the 30 s margin
    expect(await api.json('GET', '/x')).toEqual({ auth: 'Bearer a2' });
  });

  it('shares one refresh between concurrent requests (a refresh token is single-use)', async () => {
    let refreshes = 0;
    const server = fakeServer((req) => {
      if (req.path === '/api/v1/auth/refresh') {
        refreshes += 1;
        return { status: 200, body: tokens(2) };
      }
      return { status: 200, body: {} };
    });
    const api = new ApiClient({ fetch: server.fetch });
    api.resume('r1');
    await Promise.all([api.json('GET', '/a'), api.json('GET', '/b'), api.accessToken()]);
    expect(refreshes).toBe(1);
  });

  it('reports the end of the session once when the refresh token is refused', async () => {
    const server = fakeServer(() => ({ status: 401, body: { error: { code: 'invalid_refresh_token', message: 'gone' } } }));
    let ended = 0;
    const api = new ApiClient({ fetch: server.fetch, onSessionEnded: () => (ended += 1) });
    api.resume('r1');
    // The engine's Http resolves with the 401 instead of throwing.
    expect((await api.request('GET', '/api/v1/keys/count', undefined)).status).toBe(401);
    await expect(api.accessToken()).rejects.toBeInstanceOf(SessionEndedError);
    await expect(api.json('GET', '/x')).rejects.toMatchObject({ status: 401 });
    expect(ended).toBe(1);
    expect(api.signedIn).toBe(false);
  });

  it('keeps the session when the refresh fails for another reason', async () => {
    const server = fakeServer(() => ({ status: 429, body: { error: { code: 'rate_limited', message: 'slow down' } }, headers: { 'retry-after': '7' } }));
    let ended = 0;
    const api = new ApiClient({ fetch: server.fetch, onSessionEnded: () => (ended += 1) });
    api.resume('r1');
    const err = await api.accessToken().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).retryAfter).toBe(7);
    expect(ended).toBe(0);
    expect(api.signedIn).toBe(true);
  });

  it('maps error bodies and network failures', async () => {
    const api = new ApiClient({
      fetch: fakeServer(() => ({ status: 409, body: { error: { code: 'username_taken', message: 'That username is taken.' } } })).fetch,
    });
    const err = (await api.register({ username: 'a', password: 'b' }).catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.code).toBe('username_taken');
    expect(err.message).toBe('That username is taken.');

    const offline = new ApiClient({
      fetch: (async () => {
        throw new TypeError('Failed to fetch');
      }) as typeof fetch,
    });
    await expect(offline.login({ username: 'a', password: 'b' })).rejects.toBeInstanceOf(NetworkError);
  });

  it('logs out with the bearer token and forgets the tokens', async () => {
    const server = fakeServer((req) => (req.path === '/api/v1/auth/logout' ? { status: 204 } : { status: 200, body: { user: {}, device_id: 1, session_id: '1', ...tokens(1) } }));
    const api = new ApiClient({ fetch: server.fetch });
    await api.login({ username: 'a', password: 'b' });
    await api.logout();
    expect(server.log.at(-1)).toMatchObject({ method: 'POST', path: '/api/v1/auth/logout', auth: 'Bearer a1' });
    expect(api.signedIn).toBe(false);
  });
});

describe('ApiClient 401s', () => {
  it('does not renew the token for a 401 about the request (a wrong current password)', async () => {
    let refreshes = 0;
    const server = fakeServer((req) => {
      if (req.path === '/api/v1/auth/refresh') {
        refreshes += 1;
        return { status: 200, body: tokens(2) };
      }
      return { status: 401, body: { error: { code: 'invalid_credentials', message: 'wrong password' } } };
    });
    const api = new ApiClient({ fetch: server.fetch });
    api.resume('r1');
    await expect(api.json('POST', '/api/v1/users/@me/password', {})).rejects.toMatchObject({ code: 'invalid_credentials' });
    expect(refreshes).toBe(1); // the first access token only
  });
});
