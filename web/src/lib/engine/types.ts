/**
 * The E2EE engine's interface as the app uses it (client-core's `wasm` bindings, built by
 * scripts/build-web into src/wasm/). Results cross the boundary as JSON text; the shapes
 * below are those of client-core's `HistoryEntry`, `Conversation`, `SafetyNumber`, the
 * account's state, link requests and own devices, and the bindings' event enum.
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
  safetyNumber(user: string, now: number): Promise<string>;
  setVerified(user: string, verified: boolean): Promise<void>;
  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void>;
  /** Synchronous: whether this device is linked to the account, and an unconfirmed recovery key. */
  accountState(): string;
  confirmRecoveryKey(): Promise<void>;
  beginLink(now: number): Promise<string>;
  pollLink(now: number): Promise<string>;
  handleEvent(name: string, payloadJson: string, now: number): Promise<string>;
  linkWithRecoveryKey(key: string, now: number): Promise<string>;
  resetIdentity(password: string, now: number): Promise<string>;
  linkRequests(now: number): Promise<string>;
  approveLink(deviceId: number, code: string, now: number): Promise<void>;
  declineLink(deviceId: number): Promise<void>;
  ownDevices(now: number): Promise<string>;
  removeDevice(deviceId: number, now: number): Promise<void>;
  newRecoveryKey(now: number): Promise<string>;
  // Channel messages (server channels and group DMs), end-to-end encrypted with sender keys.
  // Optional: an engine built before them lacks them (the calls then fail with a clear error).
  channelSend?(channel: string, draftJson: string, now: number): Promise<string>;
  channelEdit?(channel: string, message: string, body: string, now: number): Promise<string | undefined>;
  channelDelete?(channel: string, message: string, now: number): Promise<string | undefined | void>;
  channelReact?(channel: string, message: string, emoji: string, now: number): Promise<string | undefined | void>;
  channelUnreact?(channel: string, message: string, emoji: string, now: number): Promise<string | undefined | void>;
  channelHistory?(channel: string, queryJson: string, now: number): Promise<string>;
  channelPins?(channel: string, now: number): Promise<string>;
  /** Searches this device's history (the query never leaves the device). */
  search?(queryJson: string): Promise<string>;
  searchCrawl?(channel: string, fresh: boolean, now: number): Promise<boolean>;
  // Voice (the `voice` feature): media key shares over the pairwise sessions.
  sealVoiceKeys?(channel: string, epoch: number, participantsJson: string, shareJson: string, now: number): Promise<string>;
  openVoiceKey?(keyJson: string, participantsJson: string, now: number): Promise<string>;
  voicePrivacyCode?(channel: string, epoch: number, participantsJson: string, now: number): Promise<string | undefined>;
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

/** The contact's account key changed (their safety number changed), kept where it happened. */
export interface IdentityChangedEntry {
  kind: 'identity_changed';
  pos: number;
  conversation: string;
  sent_at: number;
}

export type HistoryEntry = MessageEntry | UndecryptableEntry | IdentityChangedEntry;

export interface Conversation {
  user: string;
  last: HistoryEntry | null;
  unread: number;
}

/** The safety number with a contact: computed from the two accounts' keys, the same on every device. */
export interface SafetyNumber {
  /** 60 digits. */
  number: string;
  verified: boolean;
  /** Verified before, and their account key changed since: nothing is sent until accepted or verified again. */
  changed: boolean;
}

/**
 * Whether this device belongs to the account: `linked` (it holds the account key), `pending`
 * (signed in with the password only: it must be approved by a linked device or the recovery
 * key), `removed` (it was linked and was removed from the account).
 */
export type LinkState = 'linked' | 'pending' | 'removed';

export interface AccountState {
  state: LinkState;
  /** Set from sign-up (or a reset) until the person confirmed writing it down. */
  unconfirmed_recovery_key: string | null;
}

/** A pending device's open request to be linked (times in Unix milliseconds). */
export interface LinkRequest {
  device_id: number;
  device_name: string;
  created_at: number;
  expires_at: number;
}

/** One of this account's devices, `linked` as the signed list this device verified says. */
export interface OwnDevice {
  id: number;
  name: string;
  linked: boolean;
  current: boolean;
  /** Unix milliseconds (RFC 3339 text is read too). */
  created_at: number | string;
  last_seen_at: number | string;
}

export type RetryRefusal = 'not_a_recipient' | 'expired' | 'identity_changed' | 'answered_already';

/** One reaction on a channel message, as the engine decrypted them. */
export interface ChannelReaction {
  emoji: string;
  count: number;
  /** Who reacted with it. */
  users: string[];
  /** Whether this account is among them. */
  mine: boolean;
}

/** The quote of the message a channel message replies to (inside the ciphertext). */
export interface ChannelReplyQuote {
  id: string;
  author_id: string;
  excerpt: string;
}

/**
 * A channel message as the engine decrypted it. `pending`: its sender's key has not come yet
 * (it is decrypted when it does); `failed`: it cannot be decrypted.
 */
export interface ChannelEntry {
  id: string;
  channel_id: string;
  author_id: string;
  author_device: number;
  created_at: number;
  edited_at: number | null;
  thread_id: string | null;
  pinned: boolean;
  thread_count: number;
  state: 'ok' | 'pending' | 'failed';
  body: string;
  reply_to: ChannelReplyQuote | null;
  thread_name: string | null;
  reactions: ChannelReaction[];
  /** Who its author declared it mentions (absent: nobody). */
  mentions?: { users?: string[]; roles?: string[]; everyone?: boolean };
  /** The declared mentions are not those of the text. */
  mention_mismatch?: boolean;
}

/** A message to send to a channel. */
export interface ChannelDraft {
  body: string;
  reply_to?: string;
  thread_id?: string;
  thread_name?: string;
}

/** A search of this device's history (client-core's `SearchQuery`). */
export interface SearchQuery {
  /** Words to find (all of them; the last one may begin a word). Empty: any message the filters keep. */
  text: string;
  /** Written by one of these users (anyone when empty). */
  from?: string[];
  /** In these DM conversations (every one when absent, none when empty). */
  dms?: string[];
  /** In these channels or group DMs (every one when absent, none when empty). */
  channels?: string[];
  has?: Array<'link' | 'mention' | 'reply'>;
  /** Sent before / at or after (Unix milliseconds). */
  before?: number;
  after?: number;
  offset?: number;
  limit?: number;
}

/** One message a search found. */
export type SearchHit = (
  | { kind: 'dm'; user_id: string; position: number }
  | { kind: 'channel'; channel_id: string; message_id: string; thread_id: string | null }
) & { author_id: string; sent_at: number; body: string };

/** What a search found: `total` in all, one page of `hits` (newest first), the words looked for. */
export interface SearchResults {
  total: number;
  hits: SearchHit[];
  words: string[];
  /** The offset of the next page (results whose message is gone are skipped). */
  next_offset: number;
}

/** Which page of a channel's history to read. */
export interface ChannelQuery {
  before?: string;
  after?: string;
  around?: string;
  thread_id?: string;
  limit?: number;
}

export type EngineEvent =
  /** A channel message appeared or changed (decrypted, edited, reacted to): replace it. */
  | { type: 'channel_entry'; entry: ChannelEntry }
  | { type: 'channel_message_deleted'; channel_id: string; id: string }
  | { type: 'message'; entry: HistoryEntry }
  | { type: 'undecryptable'; entry: HistoryEntry }
  | { type: 'repaired'; conversation: string; pos: number }
  | { type: 'identity_changed'; user: string; entry?: IdentityChangedEntry | null }
  | { type: 'retry_refused'; user: string; device: number; reason: RetryRefusal | string }
  /** This device is now linked. */
  | { type: 'linked' }
  /** The answer to this device's link request did not open (a wrong code): ask for a new code. */
  | { type: 'link_failed'; reason: string }
  /** A pending device of this account asks to be linked. */
  | { type: 'link_requested'; request: LinkRequest }
  /** The account's signed device list changed. */
  | { type: 'own_devices_changed'; added: number[]; removed: number[] }
  /** The account's identity was reset on another device: this one is no longer linked. */
  | { type: 'account_replaced' }
  /** This device was removed from the account's device list. */
  | { type: 'device_removed' };

/** How an engine failure is classified, from the code its message starts with. */
export type EngineErrorKind =
  | 'wrong_passphrase'
  | 'store'
  | 'http'
  | 'crypto'
  | 'send'
  | 'untrusted_identity'
  | 'invalid'
  | 'not_linked'
  | 'wrong_code'
  | 'wrong_recovery_key'
  /** A device list or account key that does not verify, or a link exchange that failed. */
  | 'identity'
  | 'other';

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
    case 'not_linked':
    case 'wrong_code':
    case 'wrong_recovery_key':
    case 'identity':
      return code;
    default:
      return 'other';
  }
}
