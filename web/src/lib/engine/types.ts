/**
 * The E2EE engine's interface as the app uses it (client-core's `wasm` bindings, built by
 * scripts/build-web into src/wasm/). Results cross the boundary as JSON text; the shapes
 * below are those of client-core's `HistoryEntry`, `Conversation`, `SafetyNumber` and the
 * bindings' event enum.
 */

import type { Http } from '../api/client';

export interface VaultStore {
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  writeBatch(putKeys: Uint8Array[], putValues: Uint8Array[], deletes: Uint8Array[]): Promise<void>;
}

/** The engine object of the WASM module (every method is async unless noted; never call two at once). */
export interface WasmEngine {
  start(now: number): Promise<string>;
  drainQueue(now: number): Promise<string>;
  handleEnvelope(envelopeJson: string, now: number): Promise<string>;
  takeAcks(): string;
  maintain(now: number): Promise<void>;
  sendDm(to: string, body: string, now: number): Promise<string>;
  takeEvents(): string;
  history(conversation: string, before: number | undefined, limit: number): Promise<string>;
  conversations(): Promise<string>;
  markRead(conversation: string): Promise<void>;
  safetyNumbers(user: string, now: number): Promise<string>;
  setVerified(user: string, device: number, verified: boolean): Promise<void>;
  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void>;
  free?(): void;
  close?(): void;
}

export interface WasmEngineClass {
  open(
    store: VaultStore,
    http: Http,
    passphrase: string,
    userId: string,
    deviceId: number,
    sessionId: string,
    now: number,
  ): Promise<WasmEngine>;
}

export interface WasmModule {
  default: (input?: unknown) => Promise<unknown>;
  Engine: WasmEngineClass;
}

export interface MessageEntry {
  kind: 'message';
  pos: number;
  message_id: string;
  conversation: string;
  author: string;
  author_device: number;
  outgoing: boolean;
  body: string;
  sent_at: number;
}

export interface UndecryptableEntry {
  kind: 'undecryptable';
  pos: number;
  conversation: string;
  author: string;
  author_device: number;
  sent_at: number;
  repaired: boolean;
}

/** The contact's device changed its identity key (their safety number changed), kept where it happened. */
export interface IdentityChangedEntry {
  kind: 'identity_changed';
  pos: number;
  conversation: string;
  device: number;
  sent_at: number;
}

export type HistoryEntry = MessageEntry | UndecryptableEntry | IdentityChangedEntry;

export interface Conversation {
  user: string;
  last: HistoryEntry | null;
  unread: number;
}

export interface SafetyNumber {
  device: number;
  number: string;
  verified: boolean;
  /** Verified before, and its key changed since: nothing is sent to it until accepted or verified again. */
  changed: boolean;
}

export type RetryRefusal = 'not_a_recipient' | 'expired' | 'identity_changed' | 'answered_already';

export type EngineEvent =
  | { type: 'message'; entry: HistoryEntry }
  | { type: 'undecryptable'; entry: HistoryEntry }
  | { type: 'repaired'; conversation: string; pos: number }
  | { type: 'identity_changed'; user: string; device: number; entry?: IdentityChangedEntry | null }
  | { type: 'device_added'; user: string; device: number }
  | { type: 'retry_refused'; user: string; device: number; reason: RetryRefusal | string };

/** How an engine failure is classified, from the code its message starts with. */
export type EngineErrorKind = 'wrong_passphrase' | 'store' | 'http' | 'crypto' | 'send' | 'untrusted_identity' | 'invalid' | 'other';

export function engineErrorKind(e: unknown): EngineErrorKind {
  const message = e instanceof Error ? e.message : typeof e === 'string' ? e : '';
  const code = /^([a-z_]+):?/.exec(message)?.[1];
  switch (code) {
    case 'wrong_passphrase':
    case 'store':
    case 'http':
    case 'crypto':
    case 'send':
    case 'untrusted_identity':
    case 'invalid':
      return code;
    default:
      return 'other';
  }
}
