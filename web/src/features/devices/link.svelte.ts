/**
 * Linking a browser to the account, from both ends. On the new browser (pending), the code it
 * shows and keeps fresh; on a linked device, the requests of pending devices and the
 * approval dialog's steps. The engine does the exchange itself: this is only which screen
 * says what, and when to ask for a new code.
 */

import { engineErrorKind, type LinkRequest } from '../../lib/engine/types';
import { normalizeLinkCode } from './codes';

/** How long a link request (and its code) lasts. */
export const LINK_TTL_MS = 10 * 60_000;
/** A new code is asked for this long before the shown one lapses. */
export const REFRESH_BEFORE_MS = 30_000;
/** After a failure to get a code (offline), the next try. */
export const RETRY_MS = 10_000;

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const detail = (e: unknown) => message(e).replace(/^[a-z_]+:\s*/, '');

export const WRONG_CODE_NOTICE =
  'The code entered on your other device did not match. Here is a new one: enter this code instead.';

/** Why the new browser has no code (shown under the code's place). */
export function beginLinkProblem(e: unknown): string {
  if (engineErrorKind(e) === 'http') return 'The server could not be reached. A code will appear once you are back online.';
  return `A code could not be made: ${detail(e)}. Trying again…`;
}

export interface PendingLinkOptions {
  beginLink(): Promise<string>;
  now?: () => number;
}

/** The new browser's side: the code on screen, renewed before it lapses and after a wrong try. */
export class PendingLink {
  code = $state<string | null>(null);
  expiresAt = $state<number | null>(null);
  /** Why the code changed (a wrong code was entered on the other device). */
  notice = $state<string | null>(null);
  /** Why there is no code right now. */
  problem = $state<string | null>(null);

  readonly #beginLink: () => Promise<string>;
  readonly #now: () => number;
  #active = false;
  #running: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: PendingLinkOptions) {
    this.#beginLink = options.beginLink;
    this.#now = options.now ?? Date.now;
  }

  get active(): boolean {
    return this.#active;
  }

  /** Shows a code (asks for one unless a valid one is on screen). */
  start(): Promise<void> {
    this.#active = true;
    if (this.#valid()) return Promise.resolve();
    return this.renew();
  }

  /** The gateway is back: a code that lapsed meanwhile, or none yet, is replaced. */
  online(): Promise<void> {
    if (!this.#active || this.#valid()) return Promise.resolve();
    return this.renew();
  }

  /** The other device entered a wrong code: say so, and show a new one. */
  failed(): Promise<void> {
    this.notice = WRONG_CODE_NOTICE;
    this.#active = true;
    return this.renew();
  }

  /** Asks the engine for a new code (one request at a time). */
  renew(): Promise<void> {
    if (this.#running) return this.#running;
    this.#clearTimer();
    this.#running = (async () => {
      try {
        const code = await this.#beginLink();
        if (!this.#active) return;
        this.code = code;
        this.expiresAt = this.#now() + LINK_TTL_MS;
        this.problem = null;
        this.#schedule(LINK_TTL_MS - REFRESH_BEFORE_MS);
      } catch (e) {
        if (!this.#active) return;
        this.problem = beginLinkProblem(e);
        // A code that lapsed is no use: the other device would be told it expired.
        if (!this.#valid()) this.code = null;
        this.#schedule(RETRY_MS);
      }
    })().finally(() => {
      this.#running = null;
    });
    return this.#running;
  }

  /** Linked (or signed out): no more codes. */
  stop(): void {
    this.#active = false;
    this.#clearTimer();
    this.code = null;
    this.expiresAt = null;
    this.notice = null;
    this.problem = null;
  }

  #valid(): boolean {
    return this.code !== null && this.expiresAt !== null && this.expiresAt - REFRESH_BEFORE_MS > this.#now();
  }

  #schedule(ms: number): void {
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (!this.#active) return;
      // A code renewed on time: an earlier "did not match" no longer applies to it.
      if (this.problem === null) this.notice = null;
      void this.renew();
    }, ms);
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

export type ApprovalStep = 'enter' | 'sending' | 'waiting' | 'linked';

export interface ApprovalDialog {
  request: LinkRequest;
  step: ApprovalStep;
  error: string | null;
}

export interface ApprovalsOptions {
  approveLink(deviceId: number, code: string): Promise<void>;
  declineLink(deviceId: number): Promise<void>;
  now?: () => number;
}

export const CODE_FORMAT_ERROR = 'Enter the 8 digits shown on the new device, like 1234-5678.';
export const CODE_MISMATCH_ERROR =
  'That code did not match, so nothing was shared. The new device now shows a new code: enter that one.';
export const REQUEST_EXPIRED_ERROR =
  'This request expired. Open LesCopains on the new device again: it will show a new code and ask again.';

export function approveErrorText(e: unknown): string {
  switch (engineErrorKind(e)) {
    case 'wrong_code':
      return CODE_FORMAT_ERROR;
    case 'not_linked':
      return 'This device is not linked to your account, so it cannot approve another one.';
    case 'http':
      return /\b(404|410)\b/.test(message(e))
        ? 'This request is no longer open: the new device may have stopped asking.'
        : 'The approval could not be sent: the server could not be reached. Try again.';
    default:
      return `The approval could not be sent: ${detail(e)}`;
  }
}

const requestKey = (r: LinkRequest) => `${r.device_id}:${r.created_at}`;

/** A linked device's side: pending devices' requests, and the approval dialog. */
export class Approvals {
  /** Open requests, oldest first. */
  requests = $state.raw<LinkRequest[]>([]);
  /** The approval dialog, when shown. */
  dialog = $state.raw<ApprovalDialog | null>(null);
  /** Devices approved from here (no "a device was linked" notice for them on this device). */
  readonly approvedHere = new Set<number>();

  readonly #engine: ApprovalsOptions;
  readonly #now: () => number;
  /** Requests put aside with "Not now": not shown again unless asked for. */
  readonly #dismissed = new Set<string>();

  constructor(options: ApprovalsOptions) {
    this.#engine = options;
    this.#now = options.now ?? Date.now;
  }

  /** The requests open when the app started (each prompts, as a new one would). */
  load(list: readonly LinkRequest[]): void {
    for (const request of list) this.add(request);
  }

  /** A pending device asks (again): list it, and prompt unless a dialog is already up. */
  add(request: LinkRequest): void {
    if (request.expires_at <= this.#now()) return;
    // A late event of a device linked meanwhile: nothing is left to approve.
    if (this.dialog?.request.device_id === request.device_id && this.dialog.step === 'linked') return;
    const others = this.requests.filter((r) => r.device_id !== request.device_id);
    this.requests = [...others, request].sort((a, b) => a.created_at - b.created_at || a.device_id - b.device_id);
    const d = this.dialog;
    if (d && d.request.device_id === request.device_id) {
      if (d.step === 'waiting' || d.step === 'sending') {
        // Its answer did not open there (a wrong code): it made a new code and asks again.
        this.dialog = { request, step: 'enter', error: CODE_MISMATCH_ERROR };
      } else if (d.step === 'enter') {
        this.dialog = { ...d, request };
      }
      return;
    }
    if (!d && !this.#dismissed.has(requestKey(request))) this.dialog = { request, step: 'enter', error: null };
  }

  /** Opens the dialog for a pending device's request (from the devices list). */
  open(deviceId: number): boolean {
    const request = this.requests.find((r) => r.device_id === deviceId);
    if (!request) return false;
    this.dialog = { request, step: 'enter', error: null };
    return true;
  }

  has(deviceId: number): boolean {
    return this.requests.some((r) => r.device_id === deviceId);
  }

  /** Closes the dialog ("Not now", Escape, or "Done"); the next request waiting is shown. */
  close(): void {
    const d = this.dialog;
    if (d && d.step === 'enter') this.#dismissed.add(requestKey(d.request));
    this.dialog = null;
    this.#next();
  }

  /** Sends the approval with the code typed; the dialog then waits for the device to appear in the list. */
  async approve(typed: string): Promise<void> {
    const d = this.dialog;
    if (!d || d.step !== 'enter') return;
    const code = normalizeLinkCode(typed);
    if (!code) {
      this.dialog = { ...d, error: CODE_FORMAT_ERROR };
      return;
    }
    if (d.request.expires_at <= this.#now()) {
      this.dialog = { ...d, error: REQUEST_EXPIRED_ERROR };
      return;
    }
    const id = d.request.device_id;
    this.dialog = { ...d, step: 'sending', error: null };
    try {
      await this.#engine.approveLink(id, code);
    } catch (e) {
      const now = this.dialog;
      if (now && now.request.device_id === id && now.step === 'sending') this.dialog = { ...now, step: 'enter', error: approveErrorText(e) };
      return;
    }
    this.approvedHere.add(id);
    const now = this.dialog;
    if (now && now.request.device_id === id && now.step === 'sending') this.dialog = { ...now, step: 'waiting' };
  }

  /** Refuses the request: the device stays pending (remove it in the devices list to sign it out). */
  async decline(): Promise<void> {
    const d = this.dialog;
    if (!d) return;
    const id = d.request.device_id;
    try {
      await this.#engine.declineLink(id);
    } catch (e) {
      if (this.dialog?.request.device_id === id) this.dialog = { ...d, error: `The request could not be declined: ${detail(e)}` };
      return;
    }
    this.requests = this.requests.filter((r) => r.device_id !== id);
    if (this.dialog?.request.device_id === id) this.dialog = null;
    this.#next();
  }

  /** The signed device list changed: devices added are linked, their requests closed. */
  devicesChanged(added: readonly number[], removed: readonly number[]): void {
    const gone = new Set([...added, ...removed]);
    this.requests = this.requests.filter((r) => !gone.has(r.device_id));
    const d = this.dialog;
    if (!d) return;
    if (added.includes(d.request.device_id)) this.dialog = { ...d, step: 'linked', error: null };
    else if (removed.includes(d.request.device_id) && d.step !== 'linked') {
      this.dialog = null;
      this.#next();
    }
  }

  /** Drops lapsed requests; an open dialog whose request lapsed says so. */
  expire(): void {
    const now = this.#now();
    this.requests = this.requests.filter((r) => r.expires_at > now);
    const d = this.dialog;
    if (d && d.step === 'enter' && d.request.expires_at <= now && d.error !== REQUEST_EXPIRED_ERROR) {
      this.dialog = { ...d, error: REQUEST_EXPIRED_ERROR };
    }
  }

  /** This device is no longer linked: nothing to approve from here. */
  clear(): void {
    this.requests = [];
    this.dialog = null;
  }

  #next(): void {
    if (this.dialog) return;
    const next = this.requests.find((r) => !this.#dismissed.has(requestKey(r)) && r.expires_at > this.#now());
    if (next) this.dialog = { request: next, step: 'enter', error: null };
  }
}
