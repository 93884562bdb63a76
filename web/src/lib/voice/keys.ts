/**
 * The media keys of one voice session (docs/voice.md §6), apart from WebRTC: what this device
 * does with its own key at each room event, and which key shares of the others it takes.
 *
 * - VOICE_READY: a fresh key for this device's slot, sealed for every other participant.
 * - VOICE_EPOCH `join`: one ratchet step, sealed only for the newcomer (who cannot go back).
 *   A ratchet that had to start a new generation is new to everyone, so it goes to all.
 * - VOICE_EPOCH `leave`: the leaver's keys are forgotten and a fresh key one generation up
 *   goes to everyone who stays, so the leaver cannot read what follows. Sending stops the
 *   moment the leave arrives (ahead of seals still queued) and starts again only once the key
 *   for after the last leave that arrived is drawn.
 * - VOICE_KEY: opened by the engine against the room as last listed, then given to the worker.
 *
 * A device that sends nothing (microphone muted, no camera, no screen) when it joins or when
 * someone leaves draws no key then: it is *dormant*, holds no key the room can read, and draws
 * a fresh one, sealed for everyone, when it starts sending. In a big room where a few talk,
 * a leave costs the few talkers' keys instead of one from everyone, and each listener opens
 * a few shares instead of one per participant.
 *
 * Events are handled one at a time, in the order they came; the engine and the worker are
 * reached through ports so that the choreography can be tested without either.
 */

import type { OpenedVoiceKey, SealedVoiceKeys, VoiceKeyShare, VoiceParticipant } from '../engine/engine';

/** Key shares per VOICE_KEYS frame (the server's limit). */
export const MAX_KEYS_PER_FRAME = 100;
/** A VOICE_KEYS frame's text stays under this (the server takes 72 KiB): a share that starts a
 * Signal session carries a post-quantum key, about 2.5 KB of base64, some 28 to a frame. */
export const MAX_KEYS_FRAME_BYTES = 70 * 1024;

/** `keys` in frames of at most 100 shares and well under the server's frame size. */
export function keyFrames(keys: VoiceKeyShare[]): VoiceKeyShare[][] {
  const frames: VoiceKeyShare[][] = [];
  let chunk: VoiceKeyShare[] = [];
  let bytes = 256;
  for (const key of keys) {
    const size = JSON.stringify(key).length + 1;
    if (chunk.length > 0 && (chunk.length === MAX_KEYS_PER_FRAME || bytes + size > MAX_KEYS_FRAME_BYTES)) {
      frames.push(chunk);
      chunk = [];
      bytes = 256;
    }
    chunk.push(key);
    bytes += size;
  }
  if (chunk.length > 0) frames.push(chunk);
  return frames;
}

/** The engine's voice calls. */
export interface VoiceKeyEngine {
  sealVoiceKeys(channel: string, epoch: number, participants: VoiceParticipant[], share: string): Promise<SealedVoiceKeys>;
  openVoiceKey(key: unknown, participants: VoiceParticipant[]): Promise<OpenedVoiceKey>;
  voicePrivacyCode(channel: string, epoch: number, participants: VoiceParticipant[]): Promise<string | null>;
}

/** The media worker's key calls (each returns this device's new share as JSON, where it makes one). */
export interface MediaKeyPort {
  fresh(slot: number, generation: number): Promise<string>;
  ratchet(): Promise<string>;
  nextGeneration(): Promise<string>;
  /** Stops sending (someone left). */
  hold(): Promise<void>;
  /** Sends again. */
  release(): Promise<void>;
  add(share: string): Promise<void>;
  /** Forgets every key held of a slot, whatever generations it announced. */
  forgetSlot(slot: number): Promise<void>;
}

export interface VoiceReadyKeys {
  voice_session_id: string;
  channel_id: string;
  slot: number;
  epoch: number;
  participants: VoiceParticipant[];
}

export interface VoiceEpochEvent {
  voice_session_id: string;
  channel_id: string;
  epoch: number;
  cause: 'join' | 'leave';
  subject: VoiceParticipant;
  participants: VoiceParticipant[];
}

/** Whose key a slot holds, as the Signal session that delivered it proves. */
export interface KeyOwner {
  user: string;
  device: number;
}

export interface KeyRoomState {
  epoch: number;
  participants: VoiceParticipant[];
  /** Keys taken from others, by slot. */
  owners: Record<number, KeyOwner>;
  /** This device's key went out for the current epoch (false: sealing, or no key yet). */
  shared: boolean;
  /** Someone left and this device's key for after it is not drawn yet: nothing is sent. */
  held: boolean;
  /** This device sends nothing and the room holds no key of it that it may use: it draws one
   * when it starts sending (until then `held` stays as it is, and means nothing to show). */
  dormant: boolean;
  /** The privacy code of the current epoch (null: computing, or a device nobody vouches for). */
  privacyCode: string | null;
  /** A device nobody vouches for is listed in the room. */
  unvouched: boolean;
  /** Shares refused (not from a vouched device, wrong channel or slot). */
  refused: number;
}

const same = (a: VoiceParticipant, b: VoiceParticipant) => a.user_id === b.user_id && a.device_id === b.device_id && a.slot === b.slot;

export class KeyRoom {
  readonly #engine: VoiceKeyEngine;
  readonly #media: MediaKeyPort;
  readonly #send: (d: { voice_session_id: string; epoch: number; keys: VoiceKeyShare[] }) => void;
  readonly #changed: (state: KeyRoomState) => void;
  #tail: Promise<void> = Promise.resolve();
  #session = '';
  #channel = '';
  #slot = 0;
  #closed = false;
  /** The room as last listed by an event that arrived (not yet handled, maybe). */
  #arrived: { session: string; epoch: number; participants: VoiceParticipant[] } = { session: '', epoch: 0, participants: [] };
  /** The epoch of the last leave that arrived: sending is held until a key after it is drawn. */
  #leaveArrived = 0;
  /** This device sends media (an open microphone, a camera or a screen). */
  #sending: boolean;
  /** This device has drawn a key in this session (the worker holds it, maybe held). */
  #drawn = false;
  #state: KeyRoomState = {
    epoch: 0,
    participants: [],
    owners: {},
    shared: false,
    held: false,
    dormant: false,
    privacyCode: null,
    unvouched: false,
    refused: 0,
  };

  constructor(options: {
    engine: VoiceKeyEngine;
    media: MediaKeyPort;
    /** Sends one VOICE_KEYS frame's `d`. */
    send: (d: { voice_session_id: string; epoch: number; keys: VoiceKeyShare[] }) => void;
    changed?: (state: KeyRoomState) => void;
    /** Whether this device sends media from the start (default: it does). */
    sending?: boolean;
  }) {
    this.#sending = options.sending ?? true;
    this.#engine = options.engine;
    this.#media = options.media;
    this.#send = options.send;
    this.#changed = options.changed ?? (() => {});
  }

  get state(): KeyRoomState {
    return this.#state;
  }

  /** Stops handling events (the call ended). */
  close(): void {
    this.#closed = true;
  }

  /** VOICE_READY: a fresh key for this device's slot, to every other participant. */
  ready(d: VoiceReadyKeys): Promise<void> {
    this.#arrived = { session: d.voice_session_id, epoch: d.epoch, participants: d.participants };
    return this.#queue(async () => {
      this.#session = d.voice_session_id;
      this.#channel = d.channel_id;
      this.#slot = d.slot;
      this.#set({ epoch: d.epoch, participants: d.participants, shared: false, privacyCode: null });
      if (!this.#sending) {
        this.#set({ dormant: true });
        await this.#seal(d.epoch, [], '');
        return;
      }
      this.#drawn = true;
      const share = await this.#media.fresh(d.slot, 0);
      await this.#releaseAfter(d.epoch);
      await this.#seal(d.epoch, this.#others(d.participants), share);
    });
  }

  /**
   * This device started or stopped sending media. Starting while dormant draws a fresh key
   * (one generation up, or the first) and seals it for everyone listed; frames are dropped
   * until it is drawn. Stopping changes nothing: the key stays until the next leave.
   */
  sending(on: boolean): Promise<void> {
    this.#sending = on;
    if (!on) return Promise.resolve();
    return this.#queue(async () => {
      if (!this.#state.dormant || !this.#sending || !this.#session) return;
      const epoch = this.#state.epoch;
      this.#set({ dormant: false, shared: false });
      const share = this.#drawn ? await this.#media.nextGeneration() : await this.#media.fresh(this.#slot, 0);
      this.#drawn = true;
      await this.#releaseAfter(epoch);
      await this.#seal(epoch, this.#others(this.#state.participants), share);
    });
  }

  /**
   * VOICE_EPOCH: someone joined (ratchet, to them) or left (fresh key, to everyone). The room's
   * list is checked against the last one rather than trusting `cause`: anyone who vanished from
   * it is treated as a leaver (a server that drops a listener while calling it a join must not
   * leave them holding a key that ratchets forward), and a newcomer must be on the list.
   */
  epoch(d: VoiceEpochEvent): Promise<void> {
    const arrived = this.#arrived;
    if (d.voice_session_id === arrived.session && d.epoch > arrived.epoch) {
      const leave = d.cause === 'leave' || arrived.participants.some((p) => !d.participants.some((q) => same(p, q)));
      this.#arrived = { ...arrived, epoch: d.epoch, participants: d.participants };
      // Not a frame more under the key the leaver holds: the fresh generation may wait
      // behind seals still queued, the worker stops sending now.
      if (leave && !this.#closed) {
        this.#leaveArrived = d.epoch;
        this.#media.hold().catch(() => undefined);
        this.#set({ held: true });
      }
    }
    return this.#queue(async () => {
      if (d.voice_session_id !== this.#session || d.epoch <= this.#state.epoch) return;
      const before = this.#state.participants;
      const gone = before.filter((p) => !d.participants.some((q) => same(p, q)));
      this.#set({ epoch: d.epoch, participants: d.participants, shared: false, privacyCode: null });
      if (gone.length === 0 && d.cause === 'join') {
        // A dormant device has no key to ratchet: the newcomer gets its fresh one with everyone.
        if (this.#state.dormant) return this.#seal(d.epoch, [], '');
        const share = await this.#media.ratchet();
        const fresh = (JSON.parse(share) as { step: number }).step === 0;
        const newcomers = d.participants.filter((p) => !before.some((q) => same(p, q)) && p.slot !== this.#slot);
        // A ratchet past its last step starts a new generation: a key nobody has yet.
        await this.#seal(d.epoch, fresh ? this.#others(d.participants) : newcomers, share);
        return;
      }
      const owners = { ...this.#state.owners };
      for (const [key, owner] of Object.entries(owners)) {
        const slot = Number(key);
        const left = gone.some((g) => g.slot === slot || (g.user_id === owner.user && g.device_id === owner.device));
        if (left || (d.cause === 'leave' && slot === d.subject.slot)) {
          // Every generation of the leaver's slot goes (a new participant may take the slot).
          await this.#media.forgetSlot(slot);
          delete owners[slot];
        }
      }
      this.#set({ owners });
      if (!this.#sending || this.#state.dormant) {
        // Held already: the key the leaver holds sends nothing more, and none is drawn yet.
        this.#set({ dormant: true });
        return this.#seal(d.epoch, [], '');
      }
      const share = await this.#media.nextGeneration();
      await this.#releaseAfter(d.epoch);
      await this.#seal(d.epoch, this.#others(d.participants), share);
    });
  }

  /** VOICE_KEY: another participant's share, opened by the engine and given to the worker. */
  key(d: { voice_session_id: string }): Promise<void> {
    return this.#queue(async () => {
      if (d.voice_session_id !== this.#session) return;
      let opened: OpenedVoiceKey;
      try {
        opened = await this.#engine.openVoiceKey(d, this.#state.participants);
      } catch {
        this.#set({ refused: this.#state.refused + 1 });
        return;
      }
      await this.#media.add(JSON.stringify(opened.share));
      const owners = { ...this.#state.owners };
      owners[opened.share.slot] = { user: opened.from_user, device: opened.from_device };
      this.#set({ owners });
    });
  }

  /** A key was drawn at `epoch`: sending starts again unless a later leave has arrived. */
  async #releaseAfter(epoch: number): Promise<void> {
    if (this.#leaveArrived > epoch) return;
    await this.#media.release();
    if (this.#state.held) this.#set({ held: false });
  }

  #others(participants: VoiceParticipant[]): VoiceParticipant[] {
    return participants.filter((p) => p.slot !== this.#slot);
  }

  async #seal(epoch: number, to: VoiceParticipant[], share: string): Promise<void> {
    if (to.length > 0) {
      // The engine seals against the whole room as listed, narrowed to `to` here: the
      // participants it does not list get nothing.
      const sealed = await this.#engine.sealVoiceKeys(this.#channel, epoch, to, share);
      if (this.#closed) return;
      for (const keys of keyFrames(sealed.keys)) this.#send({ voice_session_id: this.#session, epoch, keys });
    }
    const code = await this.#engine.voicePrivacyCode(this.#channel, epoch, this.#state.participants);
    if (this.#state.epoch === epoch) this.#set({ shared: true, privacyCode: code, unvouched: code === null });
  }

  #set(patch: Partial<KeyRoomState>): void {
    if (this.#closed) return;
    this.#state = { ...this.#state, ...patch };
    this.#changed(this.#state);
  }

  #queue(step: () => Promise<void>): Promise<void> {
    const run = this.#tail.then(async () => {
      if (!this.#closed) await step();
    });
    // One failed step (a seal the engine refused) does not stop the ones after it.
    this.#tail = run.catch(() => undefined);
    return run;
  }
}
