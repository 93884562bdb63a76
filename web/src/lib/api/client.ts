import { ApiError, NetworkError, SessionEndedError, apiErrorFrom } from './errors';
import type { AuthResponse, Credentials, GuestInvite, GuestJoin, RefreshResponse } from './types';

/** Refresh the access token this long before it expires, so a request never carries a stale one. */
const EXPIRY_MARGIN_MS = 30_000;

/** What the E2EE engine needs from the page: authenticated REST requests, any status resolved. */
export interface Http {
  request(method: string, path: string, body: string | undefined): Promise<{ status: number; body: string }>;
}

export interface ApiClientOptions {
  /** Where the API is; empty for the page's own origin. */
  baseUrl?: string;
  fetch?: typeof fetch;
  now?: () => number;
  /** Called with every new refresh token, to keep it for the next page load. */
  onRefreshToken?: (token: string) => void;
  /** Called once when the server refuses the refresh token: the login session is over. */
  onSessionEnded?: () => void;
}

interface AccessToken {
  token: string;
  expiresAt: number;
}

/**
 * The app's REST client. It holds the tokens of one login session, adds the access token to
 * every request, renews it shortly before it expires and once after a 401, and shares one
 * refresh between concurrent requests (a refresh token is single-use: two refreshes with the
 * same one would end the session).
 */
export class ApiClient implements Http {
  readonly #baseUrl: string;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  readonly #onRefreshToken: (token: string) => void;
  readonly #onSessionEnded: () => void;
  #access: AccessToken | null = null;
  #refreshToken: string | null = null;
  #refreshing: Promise<string> | null = null;
  #ended = false;

  constructor(options: ApiClientOptions = {}) {
    this.#baseUrl = options.baseUrl ?? '';
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#now = options.now ?? Date.now;
    this.#onRefreshToken = options.onRefreshToken ?? (() => {});
    this.#onSessionEnded = options.onSessionEnded ?? (() => {});
  }

  /** Starts from a refresh token kept by an earlier page load (no access token yet). */
  resume(refreshToken: string): void {
    this.#refreshToken = refreshToken;
    this.#access = null;
    this.#ended = false;
  }

  /** True while this client holds a login session. */
  get signedIn(): boolean {
    return this.#refreshToken !== null && !this.#ended;
  }

  /** Forgets the tokens (after sign-out). */
  forget(): void {
    this.#access = null;
    this.#refreshToken = null;
  }

  async register(credentials: Credentials): Promise<AuthResponse> {
    return this.#authenticate('/api/v1/auth/register', credentials);
  }

  async login(credentials: Credentials): Promise<AuthResponse> {
    return this.#authenticate('/api/v1/auth/login', credentials);
  }

  /** A guest invite, for anyone (null: none by that code, or not a guest invite). */
  async guestInvite(code: string): Promise<GuestInvite | null> {
    const res = await this.#send('GET', `/api/v1/invites/${encodeURIComponent(code)}/guest`, undefined, undefined);
    if (res.status === 404) return null;
    if (res.status !== 200) throw apiErrorFrom(res.status, res.body, res.retryAfter);
    return JSON.parse(res.body) as GuestInvite;
  }

  /** Joins by a guest invite with a guest account made for it (signed in as it). */
  async guestJoin(code: string, body: GuestJoin): Promise<AuthResponse> {
    return this.#authenticate(`/api/v1/invites/${encodeURIComponent(code)}/guest`, body);
  }

  async #authenticate(path: string, credentials: Credentials | GuestJoin): Promise<AuthResponse> {
    const res = await this.#send('POST', path, JSON.stringify(credentials), undefined);
    if (res.status !== 200 && res.status !== 201) throw apiErrorFrom(res.status, res.body, res.retryAfter);
    const auth = JSON.parse(res.body) as AuthResponse;
    this.#take(auth);
    return auth;
  }

  /** Ends this login session on the server (its device goes with it) and forgets the tokens. */
  async logout(): Promise<void> {
    try {
      const res = await this.request('POST', '/api/v1/auth/logout', undefined);
      if (res.status !== 204 && res.status !== 401) throw apiErrorFrom(res.status, res.body);
    } finally {
      this.forget();
    }
  }

  /** A valid access token (for the gateway's IDENTIFY and RESUME), renewed if it is about to expire. */
  async accessToken(): Promise<string> {
    if (this.#access && this.#access.expiresAt - EXPIRY_MARGIN_MS > this.#now()) return this.#access.token;
    return this.refresh();
  }

  /**
   * Trades the refresh token for new tokens. Concurrent callers share one exchange. Throws
   * [`SessionEndedError`] when the server refuses the token (and reports it once), an
   * [`ApiError`] or [`NetworkError`] when it could not ask (the session may still be alive).
   */
  refresh(): Promise<string> {
    if (this.#refreshing) return this.#refreshing;
    this.#refreshing = this.#refresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #refresh(): Promise<string> {
    const refreshToken = this.#refreshToken;
    if (!refreshToken || this.#ended) throw new SessionEndedError();
    const res = await this.#send('POST', '/api/v1/auth/refresh', JSON.stringify({ refresh_token: refreshToken }), undefined);
    if (res.status === 200) {
      const tokens = JSON.parse(res.body) as RefreshResponse;
      this.#take(tokens);
      return tokens.access_token;
    }
    if (res.status === 401) {
      this.#end();
      throw new SessionEndedError();
    }
    throw apiErrorFrom(res.status, res.body, res.retryAfter);
  }

  #take(tokens: RefreshResponse): void {
    this.#access = { token: tokens.access_token, expiresAt: this.#now() + tokens.access_token_expires_in * 1000 };
    this.#refreshToken = tokens.refresh_token;
    this.#ended = false;
    this.#onRefreshToken(tokens.refresh_token);
  }

  #end(): void {
    const wasSignedIn = !this.#ended;
    this.#ended = true;
    this.#access = null;
    this.#refreshToken = null;
    if (wasSignedIn) this.#onSessionEnded();
  }

  /**
   * An authenticated request. Resolves with the status and body for any HTTP answer (a 401
   * after a refresh too); rejects only when no answer came. This is the engine's `Http`.
   */
  async request(method: string, path: string, body: string | undefined): Promise<{ status: number; body: string }> {
    let token: string;
    try {
      token = await this.accessToken();
    } catch (e) {
      if (e instanceof SessionEndedError) return sessionEndedAnswer();
      if (e instanceof ApiError) return { status: e.status, body: JSON.stringify({ error: { code: e.code, message: e.message } }) };
      throw e;
    }
    let res = await this.#send(method, path, body, token);
    // A 401 about the request itself (a wrong current password) is not about the token.
    if (res.status === 401 && !/"code"\s*:\s*"invalid_credentials"/.test(res.body)) {
      // Another request may have renewed the token while this one was in flight.
      const current = this.#access?.token;
      try {
        token = current && current !== token ? current : await this.refresh();
      } catch (e) {
        if (e instanceof SessionEndedError) return sessionEndedAnswer();
        if (e instanceof ApiError) return { status: res.status, body: res.body };
        throw e;
      }
      res = await this.#send(method, path, body, token);
    }
    return { status: res.status, body: res.body };
  }

  /** An authenticated JSON request: the parsed answer, `undefined` for 204; throws [`ApiError`] otherwise. */
  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body === undefined ? undefined : JSON.stringify(body));
    if (res.status === 204) return undefined as T;
    if (res.status >= 200 && res.status < 300) return JSON.parse(res.body) as T;
    throw apiErrorFrom(res.status, res.body);
  }

  async #send(
    method: string,
    path: string,
    body: string | undefined,
    token: string | undefined,
  ): Promise<{ status: number; body: string; retryAfter: string | null }> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    let res: Response;
    try {
      res = await this.#fetch(this.#baseUrl + path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
    } catch {
      throw new NetworkError();
    }
    let text: string;
    try {
      text = await res.text();
    } catch {
      throw new NetworkError();
    }
    return { status: res.status, body: text, retryAfter: res.headers.get('retry-after') };
  }
}

function sessionEndedAnswer(): { status: number; body: string } {
  return {
    status: 401,
    body: JSON.stringify({ error: { code: 'invalid_refresh_token', message: 'The login session has ended.' } }),
  };
}
