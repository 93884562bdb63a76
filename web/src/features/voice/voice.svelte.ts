/**
 * Voice in the page (docs/voice.md): who is in which voice channel (voice states), and this
 * page's own call: one RTCPeerConnection to the SFU with three senders (microphone, camera in
 * three simulcast layers, screen), every frame encrypted and decrypted with SFrame in the media
 * worker, the media keys sealed and opened by the engine over the pairwise Signal sessions.
 * Nothing leaves unencrypted: until this device's key is made, the worker drops every frame.
 */

import type { VoiceKeyShare, VoiceParticipant } from '../../lib/engine/engine';
import type { FrameStats } from '../../lib/voice/frames';
import { KeyRoom, type KeyRoomState, type VoiceEpochEvent, type VoiceKeyEngine } from '../../lib/voice/keys';
import { MediaWorker } from '../../lib/voice/media';

export const VoiceOp = { Join: 4, Leave: 5, State: 13, Sdp: 14, Ice: 15, Keys: 16, Quality: 17 } as const;

/** A member's voice state (VOICE_STATE_UPDATE, READY's `voice_states`). */
export interface VoiceState {
  server_id: string | null;
  channel_id: string | null;
  user_id: string;
  device_id: number;
  self_mute: boolean;
  self_deaf: boolean;
  mute: boolean;
  deaf: boolean;
  self_video: boolean;
  self_stream: boolean;
  joined_at: number;
}

/** A track the SFU forwards to this page (VOICE_SDP's `tracks`: the server's claim). */
export interface RemoteTrackInfo {
  mid: string;
  track_id: number;
  user_id: string;
  device_id: number;
  slot: number;
  kind: 'audio' | 'camera' | 'screen';
}

export interface RemoteMedia {
  info: RemoteTrackInfo;
  stream: MediaStream;
}

export type CallPhase = 'joining' | 'connecting' | 'connected' | 'reconnecting';

/** Why a call ended, in words for the person. */
const DISCONNECT_TEXT: Record<string, string> = {
  disconnected: 'A moderator disconnected you from voice.',
  kicked: 'You were removed from the server.',
  permission_lost: 'You can no longer connect to that voice channel.',
  replaced: 'You joined voice from another tab or device.',
  media_failed: 'The voice connection failed. Check that UDP traffic to the server is allowed.',
  gateway_lost: 'The connection to the server was lost.',
  moved: 'A moderator moved you to another channel.',
};

/** VOICE_ERROR codes, in words (docs/voice.md §5). */
const ERROR_TEXT: Record<number, string> = {
  4100: 'That is not a voice channel.',
  4101: 'You do not have permission for that in this channel.',
  4102: 'This voice channel is full.',
  4103: 'You are banned from this server.',
  4104: 'You are timed out.',
  4106: 'Your browser’s media offer was refused.',
  4109: 'Too many attempts: wait a minute and try again.',
  4110: 'Voice is not available on this server right now.',
  4111: 'You are not in a voice channel.',
};

export interface VoiceSettings {
  /** 'voice': the microphone is open unless muted; 'ptt': only while the key is held. */
  mode: 'voice' | 'ptt';
  /** KeyboardEvent.code of the push-to-talk key. */
  pttKey: string;
  /** Per-user playback volume, 0–100 (%). */
  volumes: Record<string, number>;
}

const SETTINGS_KEY = 'copains.voice';

export interface VoiceHost {
  me: string;
  deviceId: number;
  engine: VoiceKeyEngine;
  /** Sends a client op on the gateway (false when offline). */
  send(op: number, d: unknown): boolean;
  iceServers(): Promise<RTCIceServer[]>;
  announce(text: string): void;
  storage?: Storage | null;
}

/** Layers a camera is sent in (lowest first, docs/voice.md §2.1). */
const CAMERA_LAYERS: RTCRtpEncodingParameters[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];

export class Call {
  readonly channelId: string;
  readonly serverId: string;
  phase = $state<CallPhase>('joining');
  voiceSessionId = $state<string | null>(null);
  slot = $state(0);
  keys = $state.raw<KeyRoomState | null>(null);
  remote = $state.raw<RemoteMedia[]>([]);
  /** Speaking now, by `user:device`. */
  speaking = $state<Record<string, boolean>>({});
  muted = $state(false);
  deafened = $state(false);
  /** Push-to-talk key held. */
  talking = $state(false);
  camera = $state.raw<MediaStream | null>(null);
  screen = $state.raw<MediaStream | null>(null);
  /** The microphone could not be opened (blocked, or none): listening only. */
  micProblem = $state<string | null>(null);
  cameraProblem = $state<string | null>(null);
  screenProblem = $state<string | null>(null);
  stats = $state.raw<FrameStats | null>(null);
  /** Video frames this page decoded (after decryption), from the connection's stats. */
  framesDecoded = $state(0);
  /** Retransmission (RTX): the video streams this page sends and receives with one, and the
   * lost video packets that came back over them. */
  retransmission = $state.raw({ sending: 0, receiving: 0, recovered: 0 });

  readonly media: MediaWorker;
  readonly #host: VoiceHost;
  readonly #pc: RTCPeerConnection;
  readonly #room: KeyRoom;
  #mic: MediaStreamTrack | null = null;
  #tx: { mic: RTCRtpTransceiver; camera: RTCRtpTransceiver; screen: RTCRtpTransceiver } | null = null;
  #tracks = new Map<string, RemoteTrackInfo>();
  #streams = new Map<string, MediaStream>();
  #statsTimer: ReturnType<typeof setInterval> | null = null;
  #ended = false;
  #sdpTail: Promise<void> = Promise.resolve();
  #qualities = new Map<number, string>();

  constructor(host: VoiceHost, serverId: string, channelId: string, pc: RTCPeerConnection, media: MediaWorker) {
    this.#host = host;
    this.serverId = serverId;
    this.channelId = channelId;
    this.#pc = pc;
    this.media = media;
    this.#room = new KeyRoom({
      engine: host.engine,
      media,
      send: (d: { voice_session_id: string; epoch: number; keys: VoiceKeyShare[] }) => this.#host.send(VoiceOp.Keys, d),
      changed: (state) => (this.keys = state),
    });
    pc.ontrack = (e) => this.#onTrack(e);
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'connected') this.phase = 'connected';
      else if (s === 'disconnected') this.phase = 'reconnecting';
      else if (s === 'connecting' && this.phase !== 'joining') this.phase = 'connecting';
    };
  }

  /** Opens the microphone and the connection, and offers it with VOICE_JOIN. */
  async start(selfMute: boolean, selfDeaf: boolean): Promise<void> {
    this.muted = selfMute || selfDeaf;
    this.deafened = selfDeaf;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      this.#mic = stream.getAudioTracks()[0] ?? null;
    } catch (e) {
      this.micProblem = mediaProblem(e, 'microphone');
      this.muted = true;
    }
    if (this.#ended) {
      this.#mic?.stop();
      return;
    }
    const pc = this.#pc;
    const mic = pc.addTransceiver(this.#mic ?? 'audio', { direction: 'sendonly' });
    const camera = pc.addTransceiver('video', { direction: 'sendonly', sendEncodings: CAMERA_LAYERS.map((l) => ({ ...l })) });
    const screen = pc.addTransceiver('video', { direction: 'sendonly' });
    this.#tx = { mic, camera, screen };
    preferCodec(mic, 'audio', 'audio/opus');
    preferCodec(camera, 'video', 'video/VP8');
    preferCodec(screen, 'video', 'video/VP8');
    // Every frame goes through the worker before it is packetized: without a key it is dropped.
    mic.sender.transform = this.media.transform('send', 'audio');
    camera.sender.transform = this.media.transform('send', 'video');
    screen.sender.transform = this.media.transform('send', 'video');
    this.#applyMic();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (this.#ended) return;
    if (!this.#host.send(VoiceOp.Join, { channel_id: this.channelId, sdp: offer.sdp, self_mute: this.muted, self_deaf: this.deafened })) {
      throw new Error('You are offline.');
    }
    this.#statsTimer = setInterval(() => void this.#readStats(), 1000);
  }

  /** VOICE_READY: the SFU's answer, then this device's key to the others. */
  async ready(d: {
    voice_session_id: string;
    channel_id: string;
    slot: number;
    epoch: number;
    sdp: string;
    participants: VoiceParticipant[];
  }): Promise<void> {
    this.voiceSessionId = d.voice_session_id;
    this.slot = d.slot;
    this.phase = 'connecting';
    const keys = this.#room.ready(d);
    // The SFU's offers that follow wait behind its answer.
    const answer = this.#sdpTail.then(() => this.#pc.setRemoteDescription({ type: 'answer', sdp: d.sdp }));
    this.#sdpTail = answer.catch(() => undefined);
    void keys.catch(() => undefined);
    await answer;
    await keys;
  }

  epoch(d: VoiceEpochEvent): void {
    void this.#room.epoch(d).catch(() => undefined);
    if (d.cause === 'leave') {
      const key = `${d.subject.user_id}:${d.subject.device_id}`;
      if (this.speaking[key]) this.speaking = { ...this.speaking, [key]: false };
    }
  }

  key(d: { voice_session_id: string }): void {
    void this.#room.key(d).catch(() => undefined);
  }

  /** VOICE_SDP: the SFU's offer of what this page receives; answered with the same revision. */
  offer(d: { voice_session_id: string; sdp: string; revision: number; tracks: RemoteTrackInfo[] }): void {
    this.#sdpTail = this.#sdpTail
      .then(async () => {
        if (this.#ended || d.voice_session_id !== this.voiceSessionId) return;
        this.#tracks = new Map(d.tracks.map((t) => [t.mid, t]));
        await this.#pc.setRemoteDescription({ type: 'offer', sdp: d.sdp });
        const answer = await this.#pc.createAnswer();
        await this.#pc.setLocalDescription(answer);
        this.#host.send(VoiceOp.Sdp, { voice_session_id: d.voice_session_id, type: 'answer', sdp: answer.sdp, revision: d.revision });
        this.#refreshRemote();
      })
      .catch(() => undefined);
  }

  speakingChanged(user: string, device: number, speaking: boolean): void {
    this.speaking = { ...this.speaking, [`${user}:${device}`]: speaking };
  }

  /** The participants as the room lists them (the server's claim), this device included. */
  get participants(): VoiceParticipant[] {
    return this.keys?.participants ?? [];
  }

  setMuted(muted: boolean): void {
    if (this.micProblem && !muted) return;
    this.muted = muted;
    if (!muted && this.deafened) this.deafened = false;
    this.#applyMic();
    this.#state({ self_mute: this.muted, self_deaf: this.deafened });
  }

  setDeafened(deaf: boolean): void {
    this.deafened = deaf;
    // Deafened means muted too; undeafening restores the microphone unless it is blocked.
    this.muted = deaf || !!this.micProblem;
    this.#applyMic();
    this.#state({ self_mute: this.muted, self_deaf: this.deafened });
  }

  /** Push-to-talk: the key went down or up. */
  setTalking(talking: boolean): void {
    this.talking = talking;
    this.#applyMic();
  }

  #pttMode = false;
  setPushToTalk(on: boolean): void {
    this.#pttMode = on;
    this.talking = false;
    this.#applyMic();
  }

  #applyMic(): void {
    // A disabled track sends silence (still encrypted): the SFU sees no voice activity.
    if (this.#mic) this.#mic.enabled = !this.muted && !this.deafened && (!this.#pttMode || this.talking);
    this.#sendingChanged();
  }

  /** Tells the key room whether this page sends media (a dormant page draws a key to start). */
  #sendingChanged(): void {
    const sending = !!this.#mic?.enabled || this.camera !== null || this.screen !== null;
    void this.#room.sending(sending).catch(() => undefined);
  }

  setCamera(on: boolean): Promise<void> {
    return this.#setVideo('camera', on, async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } } });
      stream.getVideoTracks()[0]!.contentHint = 'motion';
      return stream;
    });
  }

  setScreen(on: boolean): Promise<void> {
    return this.#setVideo('screen', on, async () => {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
      const track = stream.getVideoTracks()[0]!;
      track.contentHint = 'detail';
      // The browser's own "Stop sharing" button ends the track.
      track.onended = () => {
        if (this.screen === stream) void this.setScreen(false);
      };
      return stream;
    });
  }

  /** Turns the camera or the screen share on (with what `open` captures) or off. */
  async #setVideo(source: 'camera' | 'screen', on: boolean, open: () => Promise<MediaStream>): Promise<void> {
    if (!this.#tx) return;
    const sender = this.#tx[source].sender;
    const problem = `${source}Problem` as const;
    const flag = source === 'camera' ? 'self_video' : 'self_stream';
    this[problem] = null;
    if (!on) {
      await sender.replaceTrack(null);
      for (const t of this[source]?.getTracks() ?? []) t.stop();
      this[source] = null;
      this.#sendingChanged();
      this.#state({ [flag]: false });
      return;
    }
    let stream: MediaStream;
    try {
      stream = await open();
    } catch (e) {
      // Closing the screen picker is a choice, not a problem.
      const cancelled = source === 'screen' && e instanceof DOMException && e.name === 'NotAllowedError';
      if (!cancelled) this[problem] = mediaProblem(e, source);
      return;
    }
    if (this.#ended) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    // Sending from now on (a dormant page draws its key; frames are dropped until it is drawn).
    this[source] = stream;
    this.#sendingChanged();
    await sender.replaceTrack(stream.getVideoTracks()[0]!);
    this.#state({ [flag]: true });
  }

  /** Asks the SFU for a layer of each video track (the focused one high, small tiles low). */
  setQualities(wishes: Array<{ track_id: number; quality: 'off' | 'low' | 'medium' | 'high' }>): void {
    const changed = wishes.filter((w) => this.#qualities.get(w.track_id) !== w.quality);
    if (changed.length === 0 || !this.voiceSessionId) return;
    for (const w of changed) this.#qualities.set(w.track_id, w.quality);
    this.#host.send(VoiceOp.Quality, { voice_session_id: this.voiceSessionId, tracks: changed });
  }

  #state(d: Record<string, boolean>): void {
    if (this.voiceSessionId) this.#host.send(VoiceOp.State, d);
  }

  #onTrack(e: RTCTrackEvent): void {
    const mid = e.transceiver.mid;
    if (!mid) return;
    const kind = e.track.kind === 'audio' ? 'audio' : 'video';
    // Frames are decrypted before the decoder sees them; those that do not open, or that open
    // with another sender's key than the one this track was announced for, are dropped.
    e.receiver.transform = this.media.transform('recv', kind, this.#tracks.get(mid)?.slot);
    this.#streams.set(mid, e.streams[0] ?? new MediaStream([e.track]));
    this.#refreshRemote();
  }

  #refreshRemote(): void {
    const list: RemoteMedia[] = [];
    for (const [mid, info] of this.#tracks) {
      const stream = this.#streams.get(mid);
      if (stream) list.push({ info, stream });
    }
    this.remote = list;
  }

  async #readStats(): Promise<void> {
    try {
      this.stats = await this.media.stats();
      let decoded = 0;
      const rtx = { sending: 0, receiving: 0, recovered: 0 };
      (await this.#pc.getStats()).forEach((s: VideoRtpStats) => {
        if (s.kind !== 'video') return;
        if (s.type === 'inbound-rtp') {
          decoded += s.framesDecoded ?? 0;
          if (s.rtxSsrc !== undefined) rtx.receiving += 1;
          rtx.recovered += s.retransmittedPacketsReceived ?? 0;
        } else if (s.type === 'outbound-rtp' && s.rtxSsrc !== undefined) {
          rtx.sending += 1;
        }
      });
      this.framesDecoded = decoded;
      this.retransmission = rtx;
    } catch {
      // The call ended.
    }
  }

  /** Ends the call on this side (VOICE_LEAVE is the caller's). */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#room.close();
    if (this.#statsTimer) clearInterval(this.#statsTimer);
    this.#mic?.stop();
    for (const t of this.camera?.getTracks() ?? []) t.stop();
    for (const t of this.screen?.getTracks() ?? []) t.stop();
    this.camera = null;
    this.screen = null;
    this.#pc.close();
    this.media.close();
    this.remote = [];
  }
}

/** What this page reads of a video stream's statistics. */
interface VideoRtpStats {
  type: string;
  kind?: string;
  framesDecoded?: number;
  rtxSsrc?: number;
  retransmittedPacketsReceived?: number;
}

/** Keeps `mime` (and, for video, its retransmission stream: RTX, which the SFU reads) as the
 * only codecs `tx` offers. */
function preferCodec(tx: RTCRtpTransceiver, kind: 'audio' | 'video', mime: string): void {
  const caps = RTCRtpReceiver.getCapabilities(kind)?.codecs ?? [];
  const wanted = caps.filter((c) => c.mimeType.toLowerCase() === mime.toLowerCase());
  if (wanted.length > 0) {
    if (kind === 'video') wanted.push(...caps.filter((c) => c.mimeType.toLowerCase() === 'video/rtx'));
    try {
      tx.setCodecPreferences(wanted);
    } catch {
      // An older browser: the SFU rejects other codecs itself.
    }
  }
}

function mediaProblem(e: unknown, what: 'microphone' | 'camera' | 'screen'): string {
  const name = e instanceof DOMException ? e.name : '';
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return `The browser blocked the ${what}. Allow it in the site settings (the icon left of the address), then try again.`;
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return `No ${what} was found.`;
  if (name === 'NotReadableError') return `The ${what} is in use by another program.`;
  return `The ${what} could not be opened.`;
}

/**
 * Voice for the signed-in page: the voice states of every channel this account can see, and
 * at most one call.
 */
export class Voice {
  /** Voice states by user (one voice session per user). */
  states = $state.raw<Record<string, VoiceState>>({});
  call = $state.raw<Call | null>(null);
  /** Why the last call ended or could not start. */
  notice = $state<string | null>(null);
  settings = $state<VoiceSettings>({ mode: 'voice', pttKey: '', volumes: {} });

  readonly #host: VoiceHost;
  readonly #storage: Storage | null;
  /** The latest join asked for (an earlier one still fetching its ICE servers gives way). */
  #joinSeq = 0;

  constructor(host: VoiceHost) {
    this.#host = host;
    this.#storage = host.storage !== undefined ? host.storage : typeof localStorage === 'undefined' ? null : localStorage;
    try {
      const saved = JSON.parse(this.#storage?.getItem(SETTINGS_KEY + '.' + host.me) ?? 'null') as Partial<VoiceSettings> | null;
      if (saved) this.settings = { ...this.settings, ...saved, volumes: { ...(saved.volumes ?? {}) } };
    } catch {
      // Defaults.
    }
  }

  static supported(): boolean {
    return typeof RTCPeerConnection !== 'undefined' && MediaWorker.supported();
  }

  /** Who is in a voice channel, in the order they joined. */
  inChannel(channel: string): VoiceState[] {
    return Object.values(this.states)
      .filter((s) => s.channel_id === channel)
      .sort((a, b) => a.joined_at - b.joined_at);
  }

  /** READY: the voice states of every server (a new gateway session: a call is over and joined again). */
  ready(servers: Array<{ voice_states?: VoiceState[] }>): void {
    const states: Record<string, VoiceState> = {};
    for (const s of servers) for (const v of s.voice_states ?? []) if (v.channel_id) states[v.user_id] = v;
    this.states = states;
    const call = this.call;
    if (call && call.voiceSessionId) {
      // The voice session belonged to the gateway session that ended: join again.
      const { serverId, channelId, muted, deafened } = call;
      this.#drop(call);
      void this.join(serverId, channelId, { mute: muted, deaf: deafened });
    }
  }

  /** Handles a gateway event; true when it was a voice event. */
  dispatch(t: string, d: unknown): boolean {
    // A payload of the wrong shape (a newer or hostile server) is dropped, never half applied.
    if (!d || typeof d !== 'object') return t.startsWith('VOICE_');
    try {
      return this.#dispatch(t, d);
    } catch {
      return true;
    }
  }

  #dispatch(t: string, d: unknown): boolean {
    const call = this.call;
    switch (t) {
      case 'VOICE_STATE_UPDATE': {
        const s = d as VoiceState;
        if (typeof s.user_id !== 'string') return true;
        const { [s.user_id]: _, ...rest } = this.states;
        this.states = s.channel_id ? { ...rest, [s.user_id]: s } : rest;
        return true;
      }
      case 'VOICE_READY': {
        const r = d as Parameters<Call['ready']>[0];
        if (!Array.isArray(r.participants) || typeof r.sdp !== 'string' || typeof r.slot !== 'number') return true;
        // A READY for a join this page gave up meanwhile is already over on the server: its
        // VOICE_LEAVE or next VOICE_JOIN came after it.
        if (call && call.channelId === r.channel_id && !call.voiceSessionId) {
          void call.ready(r).catch(() => this.#fail(call, 'The voice connection could not be set up.'));
        }
        return true;
      }
      case 'VOICE_SDP': {
        const o = d as Parameters<Call['offer']>[0];
        if (!Array.isArray(o.tracks) || typeof o.sdp !== 'string') return true;
        if (call?.voiceSessionId === o.voice_session_id) call.offer(o);
        return true;
      }
      case 'VOICE_EPOCH': {
        const ep = d as VoiceEpochEvent;
        if (!Array.isArray(ep.participants) || !ep.subject || typeof ep.epoch !== 'number') return true;
        if (call?.voiceSessionId === ep.voice_session_id) call.epoch(ep);
        return true;
      }
      case 'VOICE_KEY': {
        const k = d as { voice_session_id: string };
        if (call?.voiceSessionId === k.voice_session_id) call.key(k);
        return true;
      }
      case 'VOICE_SPEAKING': {
        const s = d as { channel_id: string; user_id: string; device_id: number; speaking: boolean };
        if (call?.channelId === s.channel_id) call.speakingChanged(s.user_id, s.device_id, s.speaking);
        return true;
      }
      case 'VOICE_ERROR': {
        const e = d as { op: number; code: number; message: string; voice_session_id?: string };
        const text = (Object.hasOwn(ERROR_TEXT, e.code) ? ERROR_TEXT[e.code] : null) ?? String(e.message ?? 'Voice error.');
        if (call && e.op === VoiceOp.Join && !call.voiceSessionId) this.#fail(call, text);
        else this.notice = text;
        return true;
      }
      case 'VOICE_DISCONNECT': {
        const x = d as { voice_session_id: string; channel_id: string; reason: string; move_to?: string | null };
        if (!call || call.voiceSessionId !== x.voice_session_id) return true;
        this.#drop(call);
        if (x.reason === 'moved' && x.move_to) {
          this.notice = DISCONNECT_TEXT.moved!;
          void this.join(call.serverId, x.move_to, { mute: call.muted, deaf: call.deafened });
        } else {
          this.notice = (Object.hasOwn(DISCONNECT_TEXT, x.reason) ? DISCONNECT_TEXT[x.reason] : null) ?? 'You left voice.';
          this.#host.announce(this.notice);
        }
        return true;
      }
      default:
        return false;
    }
  }

  /** Joins a voice channel (leaving the current call first). */
  async join(serverId: string, channelId: string, opts: { mute?: boolean; deaf?: boolean } = {}): Promise<void> {
    if (this.call?.channelId === channelId) return;
    if (this.call) this.leave();
    const seq = ++this.#joinSeq;
    this.notice = null;
    if (!Voice.supported()) {
      this.notice = 'This browser cannot encrypt calls end to end (it lacks RTCRtpScriptTransform). Use a recent Chrome, Edge, Firefox or Safari.';
      return;
    }
    let iceServers: RTCIceServer[] = [];
    try {
      iceServers = await this.#host.iceServers();
    } catch {
      // The SFU's own address still works without STUN or TURN.
    }
    if (seq !== this.#joinSeq) return;
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    const call = new Call(this.#host, serverId, channelId, pc, new MediaWorker());
    call.setPushToTalk(this.settings.mode === 'ptt');
    this.call = call;
    try {
      await call.start(opts.mute ?? false, opts.deaf ?? false);
    } catch (e) {
      this.#fail(call, e instanceof Error ? e.message : 'Could not join voice.');
      return;
    }
    this.#host.announce('Joining voice.');
  }

  leave(): void {
    this.#joinSeq += 1;
    const call = this.call;
    if (!call) return;
    this.#host.send(VoiceOp.Leave, {});
    this.#drop(call);
    this.#host.announce('You left voice.');
  }

  setVolume(user: string, volume: number): void {
    this.settings.volumes = { ...this.settings.volumes, [user]: Math.max(0, Math.min(100, Math.round(volume))) };
    this.#save();
  }

  volume(user: string): number {
    const v = Object.hasOwn(this.settings.volumes, user) ? this.settings.volumes[user] : undefined;
    return typeof v === 'number' && Number.isFinite(v) ? Math.max(0, Math.min(100, v)) : 100;
  }

  setMode(mode: 'voice' | 'ptt', key?: string): void {
    this.settings.mode = mode;
    if (key !== undefined) this.settings.pttKey = key;
    this.call?.setPushToTalk(mode === 'ptt');
    this.#save();
  }

  /** The page's key events, for push-to-talk. */
  key(e: KeyboardEvent, down: boolean): void {
    if (this.settings.mode !== 'ptt' || !this.settings.pttKey || e.code !== this.settings.pttKey || !this.call) return;
    if (down && e.repeat) return;
    this.call.setTalking(down);
  }

  #save(): void {
    try {
      this.#storage?.setItem(SETTINGS_KEY + '.' + this.#host.me, JSON.stringify(this.settings));
    } catch {
      // A full store: the settings last until the page closes.
    }
  }

  #fail(call: Call, text: string): void {
    if (this.call === call) {
      if (call.voiceSessionId) this.#host.send(VoiceOp.Leave, {});
      this.#drop(call);
    }
    this.notice = text;
    this.#host.announce(text);
  }

  #drop(call: Call): void {
    call.end();
    if (this.call === call) this.call = null;
    // This page's own state goes at once; the server's VOICE_STATE_UPDATE follows.
    const mine = this.states[this.#host.me];
    if (mine && mine.device_id === this.#host.deviceId && mine.channel_id === call.channelId) {
      const { [this.#host.me]: _, ...rest } = this.states;
      this.states = rest;
    }
  }

  /** Signing out, or the page closes. */
  stop(): void {
    this.leave();
  }
}
