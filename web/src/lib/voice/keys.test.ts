import { describe, expect, it } from 'vitest';
import type { OpenedVoiceKey, SealedVoiceKeys, VoiceParticipant } from '../engine/engine';
import { KeyRoom, MAX_KEYS_FRAME_BYTES, MAX_KEYS_PER_FRAME, keyFrames, type MediaKeyPort, type VoiceKeyEngine } from './keys';

const ana: VoiceParticipant = { user_id: '1', device_id: 1, slot: 1 };
const ben: VoiceParticipant = { user_id: '2', device_id: 1, slot: 2 };
const cleo: VoiceParticipant = { user_id: '3', device_id: 4, slot: 3 };

/** A media worker that counts steps and generations as copains-media does. */
class FakeMedia implements MediaKeyPort {
  generation = 0;
  step = 0;
  slot = 0;
  added: string[] = [];
  forgotten: number[] = [];
  /** Whether sending is held, and what was done in order. */
  held = false;
  log: string[] = [];
  /** The ratchet is at its last step: the next one starts a generation. */
  exhausted = false;
  #share() {
    return JSON.stringify({ slot: this.slot, generation: this.generation, step: this.step, material: 'm' });
  }
  async fresh(slot: number, generation: number) {
    this.slot = slot;
    this.generation = generation;
    this.step = 0;
    return this.#share();
  }
  async ratchet() {
    if (this.exhausted) {
      this.generation += 1;
      this.step = 0;
    } else this.step += 1;
    return this.#share();
  }
  async nextGeneration() {
    this.generation += 1;
    this.step = 0;
    this.log.push(`generation ${this.generation}`);
    return this.#share();
  }
  async hold() {
    this.held = true;
    this.log.push('hold');
  }
  async release() {
    this.held = false;
    this.log.push('release');
  }
  async add(share: string) {
    this.added.push(share);
  }
  async forgetSlot(slot: number) {
    this.forgotten.push(slot);
  }
}

/** An engine that seals for the listed devices (as a room whose members all read the channel). */
class FakeEngine implements VoiceKeyEngine {
  sealed: Array<{ epoch: number; to: string[]; share: string }> = [];
  refuse = new Set<string>();
  /** While set, seals wait for it (a slow session set-up). */
  gate: Promise<void> | null = null;
  async sealVoiceKeys(_channel: string, epoch: number, participants: VoiceParticipant[], share: string): Promise<SealedVoiceKeys> {
    if (this.gate) await this.gate;
    this.sealed.push({ epoch, to: participants.map((p) => p.user_id), share });
    return {
      keys: participants.map((p) => ({ user_id: p.user_id, device_id: p.device_id, ciphertext: 'c' })),
      devices: participants.map((p) => [p.user_id, p.device_id, 'id']),
    };
  }
  async openVoiceKey(key: unknown): Promise<OpenedVoiceKey> {
    const k = key as { from_user: string; from_device: number; epoch: number; slot: number; generation?: number };
    if (this.refuse.has(k.from_user)) throw new Error('refused');
    return { from_user: k.from_user, from_device: k.from_device, epoch: k.epoch, share: { slot: k.slot, generation: k.generation ?? 0, step: 0, material: 'x' } };
  }
  async voicePrivacyCode(_c: string, epoch: number, participants: VoiceParticipant[]) {
    return `code-${epoch}-${participants.length}`;
  }
}

function setup() {
  const engine = new FakeEngine();
  const media = new FakeMedia();
  const frames: Array<{ epoch: number; keys: unknown[] }> = [];
  const room = new KeyRoom({ engine, media, send: (d) => frames.push(d) });
  return { engine, media, frames, room };
}

const ready = (participants: VoiceParticipant[], slot = 1) => ({ voice_session_id: 'vs', channel_id: '10', slot, epoch: participants.length, participants });

describe('KeyRoom', () => {
  it('draws a fresh key on VOICE_READY and seals it for every other participant', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben, cleo]));
    expect(t.media.slot).toBe(1);
    expect(t.engine.sealed).toEqual([{ epoch: 3, to: ['2', '3'], share: expect.stringContaining('"step":0') }]);
    expect(t.frames).toHaveLength(1);
    expect(t.room.state).toMatchObject({ shared: true, privacyCode: 'code-3-3', unvouched: false });
  });

  it('on a join ratchets and sends only the new step, only to the newcomer', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben]));
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 3, cause: 'join', subject: cleo, participants: [ana, ben, cleo] });
    expect(t.engine.sealed[1]).toEqual({ epoch: 3, to: ['3'], share: expect.stringContaining('"step":1') });
    expect(t.media.generation).toBe(0);
  });

  it('sends a ratchet that had to start a generation to everyone', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben]));
    t.media.exhausted = true;
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 3, cause: 'join', subject: cleo, participants: [ana, ben, cleo] });
    expect(t.engine.sealed[1]!.to).toEqual(['2', '3']);
  });

  it('on a leave forgets the leaver and sends a fresh generation to those who stay', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben, cleo]));
    await t.room.key({ voice_session_id: 'vs', from_user: '3', from_device: 4, epoch: 3, slot: 3 } as never);
    await t.room.key({ voice_session_id: 'vs', from_user: '2', from_device: 1, epoch: 3, slot: 2 } as never);
    expect(Object.keys(t.room.state.owners)).toEqual(['2', '3']);
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 4, cause: 'leave', subject: cleo, participants: [ana, ben] });
    expect(t.media.forgotten).toEqual([3]);
    expect(Object.keys(t.room.state.owners)).toEqual(['2']);
    expect(t.engine.sealed[1]).toEqual({ epoch: 4, to: ['2'], share: expect.stringContaining('"generation":1') });
    expect(t.room.state.privacyCode).toBe('code-4-2');
  });

  it('stops sending the moment a leave arrives, ahead of seals still queued, until the new generation is drawn', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben]));
    expect(t.media.log).toEqual(['release']);
    t.media.log = [];
    let open = () => {};
    t.engine.gate = new Promise((resolve) => (open = resolve));
    // Cleo joins (a slow seal to her), then leaves: the leave waits behind that seal...
    const join = t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 3, cause: 'join', subject: cleo, participants: [ana, ben, cleo] });
    expect(t.media.held).toBe(false);
    const leave = t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 4, cause: 'leave', subject: cleo, participants: [ana, ben] });
    // ...but nothing more is sent under the key she was given, and the page says so.
    expect(t.media.held).toBe(true);
    expect(t.room.state.held).toBe(true);
    open();
    await Promise.all([join, leave]);
    expect(t.media.held).toBe(false);
    expect(t.room.state.held).toBe(false);
    expect(t.media.log).toEqual(['hold', 'generation 1', 'release']);
  });

  it('stays held through a leave until the key for after the last leave that arrived is drawn', async () => {
    const t = setup();
    const dan = { user_id: '4', device_id: 1, slot: 4 };
    await t.room.ready(ready([ana, ben, cleo, dan]));
    t.media.log = [];
    let open = () => {};
    t.engine.gate = new Promise((resolve) => (open = resolve));
    const first = t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 5, cause: 'leave', subject: cleo, participants: [ana, ben, dan] });
    // Dan's "join" list drops him without saying so: a leave all the same.
    const eve = { user_id: '5', device_id: 1, slot: 5 };
    const second = t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 6, cause: 'join', subject: eve, participants: [ana, ben, eve] });
    open();
    await Promise.all([first, second]);
    // Generation 1 went to Dan too (he was listed at epoch 5): it never sent a frame.
    expect(t.media.log).toEqual(['hold', 'hold', 'generation 1', 'generation 2', 'release']);
    expect(t.media.held).toBe(false);
  });

  it('treats anyone missing from a "join" list as a leaver, and seals only to newcomers on the list', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben, cleo]));
    await t.room.key({ voice_session_id: 'vs', from_user: '3', from_device: 4, epoch: 3, slot: 3 } as never);
    // The server calls it Dan's join, but Cleo vanished from the list: fresh key, to the list.
    const dan = { user_id: '4', device_id: 1, slot: 4 };
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 4, cause: 'join', subject: dan, participants: [ana, ben, dan] });
    expect(t.engine.sealed[1]).toEqual({ epoch: 4, to: ['2', '4'], share: expect.stringContaining('"generation":1') });
    expect(t.media.forgotten).toEqual([3]);
    // A "join" whose subject is not on the list seals for nobody new.
    const eve = { user_id: '5', device_id: 1, slot: 5 };
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 5, cause: 'join', subject: eve, participants: [ana, ben, dan] });
    expect(t.engine.sealed).toHaveLength(2);
    // A stale or replayed epoch changes nothing.
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 4, cause: 'leave', subject: ben, participants: [ana, dan] });
    expect(t.room.state.epoch).toBe(5);
    expect(t.room.state.participants).toHaveLength(3);
  });

  it('forgets a leaver\'s slot in one call, whatever generation it announced', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben]));
    // A far generation (a loop over generations would never end): the slot goes at once.
    await t.room.key({ voice_session_id: 'vs', from_user: '2', from_device: 1, epoch: 2, slot: 2, generation: 4294967295 } as never);
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 3, cause: 'leave', subject: ben, participants: [ana] });
    expect(t.media.forgotten).toEqual([2]);
    expect(t.media.log).toEqual(['release', 'hold', 'generation 1', 'release']);
  });

  it('a device that joins sending nothing draws no key until it starts, then seals it for everyone listed', async () => {
    const engine = new FakeEngine();
    const media = new FakeMedia();
    const frames: Array<{ epoch: number; keys: unknown[] }> = [];
    const room = new KeyRoom({ engine, media, send: (d) => frames.push(d), sending: false });
    await room.ready(ready([ana, ben]));
    expect(engine.sealed).toEqual([]);
    expect(media.log).toEqual([]);
    expect(room.state).toMatchObject({ dormant: true, shared: true, privacyCode: 'code-2-2' });
    // Cleo joins: a dormant device has nothing to ratchet, nor to give her.
    await room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 3, cause: 'join', subject: cleo, participants: [ana, ben, cleo] });
    expect(engine.sealed).toEqual([]);
    expect(room.state.privacyCode).toBe('code-3-3');
    // Stopping again changes nothing; starting draws the first key, for the room as it is now.
    await room.sending(false);
    await room.sending(true);
    expect(media.slot).toBe(1);
    expect(engine.sealed).toEqual([{ epoch: 3, to: ['2', '3'], share: expect.stringContaining('"generation":0') }]);
    expect(frames).toHaveLength(1);
    expect(room.state).toMatchObject({ dormant: false, shared: true, held: false });
    // Sending on (the microphone and then a camera) seals nothing more.
    await room.sending(true);
    expect(engine.sealed).toHaveLength(1);
  });

  it('a device sending nothing when someone leaves stays held with no new key until it starts again', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben, cleo]));
    await t.room.key({ voice_session_id: 'vs', from_user: '3', from_device: 4, epoch: 3, slot: 3 } as never);
    await t.room.sending(false);
    t.media.log = [];
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 4, cause: 'leave', subject: cleo, participants: [ana, ben] });
    // The leaver's key is forgotten; nothing is drawn or sealed, and nothing goes out under the key Cleo holds.
    expect(t.media.forgotten).toEqual([3]);
    expect(t.engine.sealed).toHaveLength(1);
    expect(t.media.log).toEqual(['hold']);
    expect(t.room.state).toMatchObject({ held: true, dormant: true, privacyCode: 'code-4-2' });
    // Another leave while dormant: still one generation up when it wakes, never the old key.
    const dan = { user_id: '4', device_id: 1, slot: 4 };
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 5, cause: 'join', subject: dan, participants: [ana, ben, dan] });
    expect(t.engine.sealed).toHaveLength(1);
    await t.room.sending(true);
    expect(t.media.log).toEqual(['hold', 'generation 1', 'release']);
    expect(t.engine.sealed[1]).toEqual({ epoch: 5, to: ['2', '4'], share: expect.stringContaining('"generation":1') });
    expect(t.room.state).toMatchObject({ held: false, dormant: false });
  });

  it('a leave that arrives while a dormant device wakes keeps it held until the key for after the leave', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben, cleo]));
    await t.room.sending(false);
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 4, cause: 'join', subject: { user_id: '4', device_id: 1, slot: 4 }, participants: [ana, ben, cleo, { user_id: '4', device_id: 1, slot: 4 }] });
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 5, cause: 'leave', subject: { user_id: '4', device_id: 1, slot: 4 }, participants: [ana, ben, cleo] });
    t.media.log = [];
    // The microphone opens, and Cleo's leave arrives before the key for epoch 5 is drawn.
    const wake = t.room.sending(true);
    const leave = t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 6, cause: 'leave', subject: cleo, participants: [ana, ben] });
    await Promise.all([wake, leave]);
    // The key drawn for epoch 5 went to Cleo too: it sends nothing, the one after her does.
    expect(t.media.log).toEqual(['hold', 'generation 1', 'generation 2', 'release']);
    expect(t.engine.sealed.at(-1)).toEqual({ epoch: 6, to: ['2'], share: expect.stringContaining('"generation":2') });
    expect(t.media.held).toBe(false);
  });

  it('counts refused shares and gives them to nobody', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben]));
    t.engine.refuse.add('2');
    await t.room.key({ voice_session_id: 'vs', from_user: '2', from_device: 1, epoch: 2, slot: 2 } as never);
    expect(t.media.added).toEqual([]);
    expect(t.room.state.refused).toBe(1);
    expect(t.room.state.owners).toEqual({});
  });

  it('ignores events of another voice session and stops once closed', async () => {
    const t = setup();
    await t.room.ready(ready([ana, ben]));
    await t.room.epoch({ voice_session_id: 'old', channel_id: '10', epoch: 3, cause: 'join', subject: cleo, participants: [ana, ben, cleo] });
    expect(t.engine.sealed).toHaveLength(1);
    t.room.close();
    await t.room.epoch({ voice_session_id: 'vs', channel_id: '10', epoch: 3, cause: 'join', subject: cleo, participants: [ana, ben, cleo] });
    expect(t.engine.sealed).toHaveLength(1);
  });

  it('splits a big room into VOICE_KEYS frames of at most 100 shares', async () => {
    const t = setup();
    const room = Array.from({ length: 150 }, (_, i) => ({ user_id: String(i + 1), device_id: 1, slot: i + 1 }));
    await t.room.ready(ready(room));
    expect(t.frames.map((f) => f.keys.length)).toEqual([MAX_KEYS_PER_FRAME, 49]);
  });

  it('keeps every VOICE_KEYS frame under the server\'s size limit when shares start Signal sessions', () => {
    // A PreKey message with its post-quantum key: about 1.9 KB, 2.5 KB of base64.
    const big = Array.from({ length: 99 }, (_, i) => ({ user_id: String(117632502289399808n + BigInt(i)), device_id: i + 1, ciphertext: 'A'.repeat(2536) }));
    const frames = keyFrames(big);
    expect(frames.length).toBe(4);
    for (const keys of frames) {
      const text = JSON.stringify({ op: 16, d: { voice_session_id: 'a-voice-session-id', epoch: 7, keys } });
      expect(text.length).toBeLessThanOrEqual(MAX_KEYS_FRAME_BYTES);
      expect(text.length).toBeLessThanOrEqual(72 * 1024);
    }
    expect(frames.flat()).toEqual(big);
  });
});
