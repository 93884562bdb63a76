/**
 * What this browser remembers between page loads, in localStorage. Only the current login
 * session (with its refresh token, so that a reload returns to the app) and, per username,
 * the account last used here. No keys, no passwords, no message content: the encrypted local
 * store (IndexedDB) holds everything else, sealed by the engine.
 */

const SESSION_KEY = 'copains.session';
const ACCOUNTS_KEY = 'copains.accounts';

export interface StoredSession {
  username: string;
  userId: string;
  deviceId: number;
  sessionId: string;
  refreshToken: string;
}

export interface KnownAccount {
  userId: string;
  deviceId: number;
}

function read<T>(storage: Storage, key: string): T | null {
  try {
    const text = storage.getItem(key);
    return text ? (JSON.parse(text) as T) : null;
  } catch {
    return null;
  }
}

function isSession(v: unknown): v is StoredSession {
  if (!v || typeof v !== 'object') return false;
  const s = v as Record<string, unknown>;
  return (
    typeof s.username === 'string' &&
    typeof s.userId === 'string' &&
    typeof s.deviceId === 'number' &&
    typeof s.sessionId === 'string' &&
    typeof s.refreshToken === 'string'
  );
}

export class LocalState {
  readonly #storage: Storage;

  constructor(storage: Storage) {
    this.#storage = storage;
  }

  session(): StoredSession | null {
    const s = read<unknown>(this.#storage, SESSION_KEY);
    return isSession(s) ? s : null;
  }

  saveSession(session: StoredSession): void {
    this.#storage.setItem(SESSION_KEY, JSON.stringify(session));
    const accounts = this.accounts();
    accounts[session.username.toLowerCase()] = { userId: session.userId, deviceId: session.deviceId };
    this.#storage.setItem(ACCOUNTS_KEY, JSON.stringify(accounts));
  }

  updateRefreshToken(refreshToken: string): void {
    const s = this.session();
    if (s) this.#storage.setItem(SESSION_KEY, JSON.stringify({ ...s, refreshToken }));
  }

  clearSession(): void {
    this.#storage.removeItem(SESSION_KEY);
  }

  /** The account last signed in from this browser under `username` (case-insensitive). */
  account(username: string): KnownAccount | null {
    return this.accounts()[username.toLowerCase()] ?? null;
  }

  accounts(): Record<string, KnownAccount> {
    const a = read<Record<string, KnownAccount>>(this.#storage, ACCOUNTS_KEY);
    return a && typeof a === 'object' ? a : {};
  }
}
