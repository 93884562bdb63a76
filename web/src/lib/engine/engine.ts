import type { Http } from '../api/client';
import type {
  AccountState,
  ChannelDraft,
  ChannelEntry,
  ChannelQuery,
  Conversation,
  SearchQuery,
  SearchResults,
  EngineEvent,
  HistoryEntry,
  LinkRequest,
  MessageEntry,
  OwnDevice,
  SafetyNumber,
  VaultStore,
  WasmEngine,
  WasmModule,
} from './types';

type ChannelCalls = Pick<
  WasmEngine,
  'channelSend' | 'channelEdit' | 'channelDelete' | 'channelReact' | 'channelUnreact' | 'channelHistory' | 'channelPins' | 'sealVoiceKeys' | 'openVoiceKey' | 'voicePrivacyCode'
>;

/** A participant of a voice room, as VOICE_READY and VOICE_EPOCH list them (the server's claim). */
export interface VoiceParticipant {
  user_id: string;
  device_id: number;
  slot: number;
}

/** One sealed key share for VOICE_KEYS. */
export interface VoiceKeyShare {
  user_id: string;
  device_id: number;
  ciphertext: string;
}

/** This device's media key share sealed for the room: send `keys`; `devices` got one. */
export interface SealedVoiceKeys {
  keys: VoiceKeyShare[];
  /** [user, device, identity key] of each device sealed for. */
  devices: Array<[string, number, string]>;
}

/** A VOICE_KEY opened: `share` goes to the media worker; frames it opens are `from_user`'s. */
export interface OpenedVoiceKey {
  from_user: string;
  from_device: number;
  epoch: number;
  /** The media key share as JSON for the media worker. */
  share: { slot: number; generation: number; step: number; material: string };
}

/** A call's answer that may be a channel entry (or nothing). */
function parseEntry(text: unknown): ChannelEntry | null {
  if (typeof text !== 'string' || !text) return null;
  try {
    const value = JSON.parse(text) as unknown;
    return value && typeof value === 'object' && 'id' in value && 'channel_id' in value ? (value as ChannelEntry) : null;
  } catch {
    return null;
  }
}

/** What one event-producing engine call gave: events to show and envelope ids to ACK. */
export interface Step {
  events: EngineEvent[];
  acks: string[];
  /** Set when the call failed (after processing `acks`). */
  error?: unknown;
}

/** This build's engine has no channel messages (built before them). */
export class EngineMissingFeatureError extends Error {
  constructor(what: string) {
    super(`invalid: this build of the engine cannot ${what}. Rebuild it (scripts/build-web).`);
    this.name = 'EngineMissingFeatureError';
  }
}

export class EngineClosedError extends Error {
  constructor() {
    super('The engine is closed.');
    this.name = 'EngineClosedError';
  }
}

/**
 * The app's handle on the WASM engine. The engine's methods borrow it for their whole run, so
 * two calls at once would fail: every call here waits for the previous one (one queue, in call
 * order). That order is also what the protocol needs: envelopes are decrypted in the order they
 * came, and the offline queue is drained before the live envelopes held behind it.
 */
export class Engine {
  readonly #inner: WasmEngine;
  readonly #now: () => number;
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;
  #release: () => void = () => {};

  constructor(inner: WasmEngine, now: () => number = Date.now) {
    this.#inner = inner;
    this.#now = now;
  }

  /** Runs `release` (closing the store under the engine) once the engine is closed. */
  onClose(release: () => void): void {
    this.#release = release;
  }

  static async open(
    mod: WasmModule,
    options: { store: VaultStore; http: Http; passphrase: string; userId: string; deviceId: number; sessionId: string },
    now: () => number = Date.now,
  ): Promise<Engine> {
    const inner = await mod.Engine.open(
      options.store,
      options.http,
      options.passphrase,
      options.userId,
      options.deviceId,
      options.sessionId,
      now(),
    );
    return new Engine(inner, now);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #run<T>(call: (engine: WasmEngine) => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new EngineClosedError());
    const result = this.#tail.then(() => call(this.#inner));
    this.#tail = result.catch(() => undefined);
    return result;
  }

  #step(call: (engine: WasmEngine) => Promise<string>): Promise<Step> {
    return this.#run(async (engine) => {
      let events: EngineEvent[] = [];
      let error: unknown;
      try {
        events = JSON.parse(await call(engine)) as EngineEvent[];
      } catch (e) {
        error = e;
      }
      // Whatever was processed before a failure is still to be acknowledged.
      const acks = JSON.parse(engine.takeAcks()) as string[];
      return error === undefined ? { events, acks } : { events, acks, error };
    });
  }

  /** Publishes a new device's keys, tops up prekeys. */
  start(): Promise<Step> {
    return this.#step((e) => e.start(this.#now()));
  }

  /** Fetches and decrypts the offline queue. */
  drainQueue(): Promise<Step> {
    return this.#step((e) => e.drainQueue(this.#now()));
  }

  /** Processes the payload of an `ENVELOPE` dispatch. */
  handleEnvelope(envelope: unknown): Promise<Step> {
    const text = JSON.stringify(envelope);
    return this.#step((e) => e.handleEnvelope(text, this.#now()));
  }

  maintain(): Promise<void> {
    return this.#run((e) => e.maintain(this.#now()));
  }

  /** Events a send raised (a contact's changed safety number) go here. */
  onEvents: (events: EngineEvent[]) => void = () => {};

  async sendDm(to: string, body: string): Promise<MessageEntry> {
    const text = await this.#run(async (e) => {
      try {
        return await e.sendDm(to, body, this.#now());
      } finally {
        // The send's own outcome stands whatever happens here.
        try {
          const events = JSON.parse(e.takeEvents()) as EngineEvent[];
          if (events.length > 0) this.onEvents(events);
        } catch {
          // No events to show.
        }
      }
    });
    return JSON.parse(text) as MessageEntry;
  }

  /**
   * Runs a call that may raise events (a channel send, edit, reaction): they go to `onEvents`
   * whatever the call's outcome.
   */
  #withEvents<T>(call: (engine: WasmEngine) => Promise<T>): Promise<T> {
    return this.#run(async (e) => {
      try {
        return await call(e);
      } finally {
        try {
          const events = JSON.parse(e.takeEvents()) as EngineEvent[];
          if (events.length > 0) this.onEvents(events);
        } catch {
          // No events to show.
        }
      }
    });
  }

  #channel<K extends keyof ChannelCalls>(name: K, what: string): NonNullable<WasmEngine[K]> {
    const f = this.#inner[name];
    if (typeof f !== 'function') throw new EngineMissingFeatureError(what);
    return (f as (...args: unknown[]) => unknown).bind(this.#inner) as NonNullable<WasmEngine[K]>;
  }

  /** Encrypts and sends a message to a channel (its key distributed first where needed). */
  async channelSend(channel: string, draft: ChannelDraft): Promise<ChannelEntry> {
    const text = await this.#withEvents(() => this.#channel('channelSend', 'send channel messages')(channel, JSON.stringify(draft), this.#now()));
    return JSON.parse(text) as ChannelEntry;
  }

  /**
   * Seals this device's media key share (as the media worker gave it) for the devices of the
   * room that the channel's signed device lists name.
   */
  async sealVoiceKeys(channel: string, epoch: number, participants: VoiceParticipant[], share: string): Promise<SealedVoiceKeys> {
    const text = await this.#withEvents(() =>
      this.#channel('sealVoiceKeys', 'seal voice keys')(channel, epoch, JSON.stringify(participants), share, this.#now()),
    );
    return JSON.parse(text) as SealedVoiceKeys;
  }

  /** Opens a VOICE_KEY event against the room as last listed; throws when it is refused. */
  async openVoiceKey(key: unknown, participants: VoiceParticipant[]): Promise<OpenedVoiceKey> {
    const text = await this.#withEvents(() =>
      this.#channel('openVoiceKey', 'open voice keys')(JSON.stringify(key), JSON.stringify(participants), this.#now()),
    );
    return JSON.parse(text) as OpenedVoiceKey;
  }

  /** The room's privacy code at `epoch`, or null when a participant is a device no signed list names. */
  async voicePrivacyCode(channel: string, epoch: number, participants: VoiceParticipant[]): Promise<string | null> {
    const code = await this.#run(() =>
      this.#channel('voicePrivacyCode', 'compute voice privacy codes')(channel, epoch, JSON.stringify(participants), this.#now()),
    );
    return code ?? null;
  }

  /** Replaces the text of one's own message. */
  async channelEdit(channel: string, message: string, body: string): Promise<ChannelEntry | null> {
    const text = await this.#withEvents(() => this.#channel('channelEdit', 'edit channel messages')(channel, message, body, this.#now()));
    return parseEntry(text);
  }

  async channelDelete(channel: string, message: string): Promise<void> {
    await this.#withEvents(() => this.#channel('channelDelete', 'delete channel messages')(channel, message, this.#now()));
  }

  async channelReact(channel: string, message: string, emoji: string): Promise<ChannelEntry | null> {
    const text = await this.#withEvents(() => this.#channel('channelReact', 'react')(channel, message, emoji, this.#now()));
    return parseEntry(text);
  }

  async channelUnreact(channel: string, message: string, emoji: string): Promise<ChannelEntry | null> {
    const text = await this.#withEvents(() => this.#channel('channelUnreact', 'react')(channel, message, emoji, this.#now()));
    return parseEntry(text);
  }

  /** A page of a channel's history (or of a thread), oldest first. */
  async channelHistory(channel: string, query: ChannelQuery): Promise<ChannelEntry[]> {
    const text = await this.#withEvents(() => this.#channel('channelHistory', 'read channels')(channel, JSON.stringify(query), this.#now()));
    return JSON.parse(text) as ChannelEntry[];
  }

  /** The channel's pinned messages. */
  async channelPins(channel: string): Promise<ChannelEntry[]> {
    const text = await this.#withEvents(() => this.#channel('channelPins', 'read pins')(channel, this.#now()));
    return JSON.parse(text) as ChannelEntry[];
  }

  async history(conversation: string, before: number | undefined, limit: number): Promise<HistoryEntry[]> {
    const text = await this.#run((e) => e.history(conversation, before, limit));
    return JSON.parse(text) as HistoryEntry[];
  }

  /** Searches this device's history; nothing of the query leaves the device. */
  async search(query: SearchQuery): Promise<SearchResults> {
    const text = await this.#run((e) => {
      if (!e.search) throw new Error('the engine predates search; reload the page');
      return e.search(JSON.stringify(query));
    });
    return JSON.parse(text) as SearchResults;
  }

  /** Reads one more page of a channel's history for search; true when all of it is read. */
  searchCrawl(channel: string, fresh: boolean): Promise<boolean> {
    return this.#run((e) => {
      if (!e.searchCrawl) throw new Error('the engine predates search; reload the page');
      return e.searchCrawl(channel, fresh, this.#now());
    });
  }

  async conversations(): Promise<Conversation[]> {
    return JSON.parse(await this.#run((e) => e.conversations())) as Conversation[];
  }

  markRead(conversation: string): Promise<void> {
    return this.#run((e) => e.markRead(conversation));
  }

  /** The safety number with `user` (one per contact: from the two accounts' keys). */
  async safetyNumber(user: string): Promise<SafetyNumber> {
    return JSON.parse(await this.#run((e) => e.safetyNumber(user, this.#now()))) as SafetyNumber;
  }

  setVerified(user: string, verified: boolean): Promise<void> {
    return this.#run((e) => e.setVerified(user, verified));
  }

  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void> {
    return this.#run((e) => e.changePassphrase(oldPassphrase, newPassphrase));
  }

  // ---- the account's devices ----------------------------------------------------------

  /** Whether this device is linked, and the recovery key still to be confirmed (after sign-up). */
  accountState(): Promise<AccountState> {
    // Synchronous in the engine, but it must not run while another call holds it.
    return this.#run(async (e) => JSON.parse(e.accountState()) as AccountState);
  }

  /** The person wrote the recovery key down: the engine forgets it. */
  confirmRecoveryKey(): Promise<void> {
    return this.#run((e) => e.confirmRecoveryKey());
  }

  /** A pending device asks to be linked: the code to show (`1234-5678`), valid 10 minutes. */
  beginLink(): Promise<string> {
    return this.#run((e) => e.beginLink(this.#now()));
  }

  /** Whether an answer to this device's link request came while the gateway was down. */
  pollLink(): Promise<Step> {
    return this.#step((e) => e.pollLink(this.#now()));
  }

  /** Processes a `LINK_REQUEST`, `LINK_ANSWER` or `DEVICE_LIST_UPDATE` dispatch. */
  handleEvent(name: string, payload: unknown): Promise<Step> {
    const text = JSON.stringify(payload ?? null);
    return this.#step((e) => e.handleEvent(name, text, this.#now()));
  }

  /** Links this device with the recovery key (fails with `wrong_recovery_key:`). */
  async linkWithRecoveryKey(key: string): Promise<EngineEvent[]> {
    return JSON.parse(await this.#run((e) => e.linkWithRecoveryKey(key, this.#now()))) as EngineEvent[];
  }

  /** Every device and the recovery key are lost: a new account identity. Returns the new recovery key. */
  resetIdentity(password: string): Promise<string> {
    return this.#run((e) => e.resetIdentity(password, this.#now()));
  }

  /** Open link requests of this account's pending devices. */
  async linkRequests(): Promise<LinkRequest[]> {
    return JSON.parse(await this.#run((e) => e.linkRequests(this.#now()))) as LinkRequest[];
  }

  /** Answers a pending device's request with the code it shows (its 8 digits). */
  approveLink(deviceId: number, code: string): Promise<void> {
    return this.#run((e) => e.approveLink(deviceId, code, this.#now()));
  }

  declineLink(deviceId: number): Promise<void> {
    return this.#run((e) => e.declineLink(deviceId));
  }

  async ownDevices(): Promise<OwnDevice[]> {
    return JSON.parse(await this.#run((e) => e.ownDevices(this.#now()))) as OwnDevice[];
  }

  /** Removes a device from the signed list, then from the server. */
  removeDevice(deviceId: number): Promise<void> {
    return this.#run((e) => e.removeDevice(deviceId, this.#now()));
  }

  /** A new recovery key (the previous one stops working). */
  newRecoveryKey(): Promise<string> {
    return this.#run((e) => e.newRecoveryKey(this.#now()));
  }

  /** Lets the calls already queued finish, then frees the engine; later calls fail. */
  async close(): Promise<void> {
    if (this.#closed) return;
    const tail = this.#tail;
    this.#closed = true;
    await tail;
    if (this.#inner.close) this.#inner.close();
    else this.#inner.free?.();
    this.#release();
  }
}
