/**
 * The gateway connection (docs/gateway.md): HELLO → IDENTIFY or RESUME → READY/RESUMED, then
 * heartbeats and sequenced events; reconnects with backoff after a drop and resumes without
 * loss, except after the close codes that say not to. The socket and the clock come in from
 * outside (a fake socket and fake timers in the tests).
 */

import { SessionEndedError } from '../api/errors';

export type ConnectionState = 'connecting' | 'online' | 'reconnecting' | 'offline';

/** Why the gateway stopped for good: the app must act (sign in again, or ask the person). */
export type GatewayEnd =
  /** 4011: the login session was revoked (sign-out elsewhere, password change, device removed). */
  | 'revoked'
  /** The access token could not be renewed: the login session is over. */
  | 'expired'
  /** 4014: a newer session of this device or user took this one's place. */
  | 'replaced'
  /** 4001, 4002, 4013: the server could not understand this client. */
  | 'protocol';

export interface GatewaySocket {
  send(text: string): void;
  close(code?: number, reason?: string): void;
  onopen: (() => void) | null;
  onmessage: ((data: string) => void) | null;
  onclose: ((code: number, reason: string) => void) | null;
}

export type SocketFactory = (url: string) => GatewaySocket;

export interface GatewayHandlers {
  state?(state: ConnectionState): void;
  ready?(d: ReadyPayload): void;
  resumed?(d: unknown): void;
  dispatch?(t: string, d: unknown): void;
  ended?(why: GatewayEnd): void;
}

export interface ReadyPayload {
  session_id: string;
  user: unknown;
  device_id: number;
  login_session_id?: string;
  devices?: unknown;
}

export interface GatewayOptions {
  url: string;
  /** A valid access token; `force` asks for a renewed one (after the server refused the last). */
  token(force: boolean): Promise<string>;
  socket?: SocketFactory;
  random?: () => number;
  now?: () => number;
  handlers?: GatewayHandlers;
}

export const Op = {
  Dispatch: 0,
  Heartbeat: 1,
  Identify: 2,
  Resume: 6,
  Reconnect: 7,
  InvalidSession: 9,
  Hello: 10,
  HeartbeatAck: 11,
  Ack: 12,
} as const;

/** ACK frames carry at most this many envelope ids. */
export const MAX_ACK_IDS = 100;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;
const RATE_LIMITED_DELAY_MS = 5_000;
const DEFAULT_RESUME_WINDOW_MS = 120_000;
/** A client-chosen close code that keeps the session resumable (1000 and 1001 end it). */
const CLOSE_RESUMABLE = 4000;

interface Frame {
  op: number;
  d?: unknown;
  s?: number | null;
  t?: string | null;
}

export function browserSocket(url: string): GatewaySocket {
  const ws = new WebSocket(url);
  const socket: GatewaySocket = {
    send: (text) => ws.send(text),
    close: (code, reason) => ws.close(code, reason),
    onopen: null,
    onmessage: null,
    onclose: null,
  };
  ws.onopen = () => socket.onopen?.();
  ws.onmessage = (e) => {
    if (typeof e.data === 'string') socket.onmessage?.(e.data);
  };
  ws.onclose = (e) => socket.onclose?.(e.code, e.reason);
  return socket;
}

export class Gateway {
  readonly #url: string;
  readonly #token: (force: boolean) => Promise<string>;
  readonly #factory: SocketFactory;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #on: GatewayHandlers;

  #socket: GatewaySocket | null = null;
  #state: ConnectionState = 'offline';
  #sessionId: string | null = null;
  #seq: number | null = null;
  #resumeWindowMs = DEFAULT_RESUME_WINDOW_MS;
  #droppedAt: number | null = null;
  #authenticated = false;
  #forceRefresh = false;
  #attempt = 0;
  #stopped = true;
  #networkUp = true;
  #heartbeat: ReturnType<typeof setTimeout> | null = null;
  #heartbeatInterval = 0;
  #heartbeatAcked = true;
  #reconnect: ReturnType<typeof setTimeout> | null = null;
  #pendingAcks: string[] = [];

  constructor(options: GatewayOptions) {
    this.#url = options.url;
    this.#token = options.token;
    this.#factory = options.socket ?? browserSocket;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
    this.#on = options.handlers ?? {};
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The gateway session id (for RESUME), once READY came. */
  get sessionId(): string | null {
    return this.#sessionId;
  }

  /** The last sequence number received. */
  get seq(): number | null {
    return this.#seq;
  }

  /** Opens the connection (and keeps it open until [`Gateway.stop`] or an ending close code). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#attempt = 0;
    this.#open();
  }

  /** Closes for good and ends the gateway session (close code 1000). */
  stop(): void {
    this.#stopped = true;
    this.#clearTimers();
    const socket = this.#socket;
    this.#socket = null;
    this.#authenticated = false;
    if (socket) {
      detach(socket);
      socket.close(1000, 'bye');
    }
    this.#sessionId = null;
    this.#seq = null;
    this.#setState('offline');
  }

  /** Reconnects at once (the person asked, or the network came back). */
  reconnectNow(): void {
    this.#stopped = false;
    this.#attempt = 0;
    if (this.#reconnect) {
      clearTimeout(this.#reconnect);
      this.#reconnect = null;
    }
    if (!this.#socket) this.#open();
  }

  /** The browser's online/offline events. */
  networkChanged(up: boolean): void {
    this.#networkUp = up;
    if (!up) {
      // The socket may not notice for a heartbeat or two: leave it now (resumable).
      if (this.#socket) this.#drop();
      else if (!this.#stopped) this.#setState('offline');
      return;
    }
    if (!this.#stopped && !this.#socket) this.reconnectNow();
  }

  /** Acknowledges processed envelopes (sent now when online, else once READY or RESUMED). */
  ack(ids: readonly string[]): void {
    if (ids.length === 0) return;
    this.#pendingAcks.push(...ids);
    this.#flushAcks();
  }

  /**
   * Sends a client op (voice signalling) on the open, authenticated connection; false when
   * there is none (the caller waits for the next READY or RESUMED).
   */
  send(op: number, d: unknown): boolean {
    if (!this.#socket || !this.#authenticated) return false;
    this.#send({ op, d });
    return true;
  }

  #flushAcks(): void {
    if (!this.#socket || !this.#authenticated) return;
    while (this.#pendingAcks.length > 0) {
      const ids = this.#pendingAcks.splice(0, MAX_ACK_IDS);
      this.#send({ op: Op.Ack, d: { ids } });
    }
  }

  #open(): void {
    if (this.#stopped || this.#socket) return;
    if (this.#sessionId && this.#droppedAt !== null && this.#now() - this.#droppedAt > this.#resumeWindowMs) {
      // Past the resume window the server would answer INVALID_SESSION: identify directly.
      this.#sessionId = null;
      this.#seq = null;
    }
    this.#setState(this.#sessionId || this.#attempt > 0 ? 'reconnecting' : 'connecting');
    let socket: GatewaySocket;
    try {
      socket = this.#factory(this.#url);
    } catch {
      this.#scheduleReconnect(0);
      return;
    }
    this.#socket = socket;
    this.#authenticated = false;
    this.#heartbeatAcked = true;
    socket.onmessage = (data) => {
      if (this.#socket === socket) this.#frame(socket, data);
    };
    socket.onclose = (code) => {
      if (this.#socket === socket) this.#closed(code);
    };
  }

  #frame(socket: GatewaySocket, data: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(data) as Frame;
    } catch {
      return;
    }
    switch (frame.op) {
      case Op.Hello: {
        const d = (frame.d ?? {}) as { heartbeat_interval_ms?: number; resume_window_ms?: number };
        this.#heartbeatInterval = d.heartbeat_interval_ms ?? 30_000;
        if (d.resume_window_ms) this.#resumeWindowMs = d.resume_window_ms;
        // The first beat after a random fraction of the interval spreads reconnecting clients.
        this.#scheduleHeartbeat(Math.floor(this.#random() * this.#heartbeatInterval));
        void this.#authenticate(socket);
        break;
      }
      case Op.HeartbeatAck:
        this.#heartbeatAcked = true;
        break;
      case Op.Heartbeat:
        this.#beat();
        break;
      case Op.Dispatch:
        this.#dispatch(frame);
        break;
      case Op.Reconnect:
        this.#drop();
        break;
      case Op.InvalidSession:
        this.#sessionId = null;
        this.#seq = null;
        this.#authenticated = false;
        void this.#authenticate(socket);
        break;
      default:
        // Unknown opcodes from a newer server are ignored.
        break;
    }
  }

  async #authenticate(socket: GatewaySocket): Promise<void> {
    let token: string;
    try {
      token = await this.#token(this.#forceRefresh);
    } catch (e) {
      if (this.#socket !== socket) return;
      if (e instanceof SessionEndedError) {
        this.#end('expired');
      } else {
        // The token could not be renewed right now (offline, rate limited): try again later.
        this.#drop();
      }
      return;
    }
    if (this.#socket !== socket) return;
    this.#forceRefresh = false;
    if (this.#sessionId !== null && this.#seq !== null) {
      this.#send({ op: Op.Resume, d: { token, session_id: this.#sessionId, seq: this.#seq } });
    } else {
      this.#send({ op: Op.Identify, d: { token } });
    }
  }

  #dispatch(frame: Frame): void {
    if (typeof frame.s === 'number') this.#seq = frame.s;
    const t = frame.t ?? '';
    if (t === 'READY') {
      const d = frame.d as ReadyPayload;
      this.#sessionId = d.session_id;
      this.#online();
      this.#on.ready?.(d);
    } else if (t === 'RESUMED') {
      this.#online();
      this.#on.resumed?.(frame.d);
    } else {
      this.#on.dispatch?.(t, frame.d);
    }
  }

  #online(): void {
    this.#authenticated = true;
    this.#attempt = 0;
    this.#droppedAt = null;
    this.#setState('online');
    this.#flushAcks();
  }

  #scheduleHeartbeat(delay: number): void {
    if (this.#heartbeat) clearTimeout(this.#heartbeat);
    this.#heartbeat = setTimeout(() => {
      this.#heartbeat = null;
      this.#beat();
    }, delay);
  }

  #beat(): void {
    if (!this.#socket) return;
    if (!this.#heartbeatAcked) {
      // No answer to the last beat: the connection is dead even if the socket does not know.
      this.#drop();
      return;
    }
    this.#heartbeatAcked = false;
    this.#send({ op: Op.Heartbeat, d: this.#seq });
    this.#scheduleHeartbeat(this.#heartbeatInterval);
  }

  /** Leaves the current socket (resumable) and reconnects. */
  #drop(): void {
    const socket = this.#socket;
    if (!socket) return;
    detach(socket);
    socket.close(CLOSE_RESUMABLE, 'reconnecting');
    this.#closed(CLOSE_RESUMABLE);
  }

  #closed(code: number): void {
    this.#socket = null;
    this.#authenticated = false;
    if (this.#heartbeat) {
      clearTimeout(this.#heartbeat);
      this.#heartbeat = null;
    }
    if (this.#stopped) return;
    if (this.#droppedAt === null) this.#droppedAt = this.#now();
    switch (code) {
      case 4011:
        this.#end('revoked');
        return;
      case 4014:
        this.#end('replaced');
        return;
      case 4001:
      case 4002:
      case 4013:
        this.#end('protocol');
        return;
      case 4004:
        // The token was refused: renew it before the next IDENTIFY.
        this.#forceRefresh = true;
        this.#sessionId = null;
        this.#seq = null;
        this.#scheduleReconnect(0);
        return;
      case 4003:
      case 4005:
      case 4012:
        this.#sessionId = null;
        this.#seq = null;
        this.#scheduleReconnect(0);
        return;
      case 4008:
        this.#scheduleReconnect(RATE_LIMITED_DELAY_MS);
        return;
      default:
        this.#scheduleReconnect(0);
    }
  }

  #scheduleReconnect(minDelay: number): void {
    this.#setState(this.#networkUp ? 'reconnecting' : 'offline');
    const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.#attempt);
    // Jitter: between half and all of the step, so clients dropped together do not return together.
    const delay = Math.max(minDelay, Math.floor(exp * (0.5 + this.#random() * 0.5)));
    this.#attempt += 1;
    if (this.#reconnect) clearTimeout(this.#reconnect);
    this.#reconnect = setTimeout(() => {
      this.#reconnect = null;
      this.#open();
    }, delay);
  }

  #end(why: GatewayEnd): void {
    this.#stopped = true;
    this.#clearTimers();
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      detach(socket);
      socket.close(1000, why);
    }
    this.#sessionId = null;
    this.#seq = null;
    this.#setState('offline');
    this.#on.ended?.(why);
  }

  #clearTimers(): void {
    if (this.#heartbeat) clearTimeout(this.#heartbeat);
    if (this.#reconnect) clearTimeout(this.#reconnect);
    this.#heartbeat = null;
    this.#reconnect = null;
  }

  #send(frame: Frame): void {
    try {
      this.#socket?.send(JSON.stringify(frame));
    } catch {
      // A socket that is closing throws or drops the frame; its close event follows.
    }
  }

  #setState(state: ConnectionState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#on.state?.(state);
  }
}

function detach(socket: GatewaySocket): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onclose = null;
}
