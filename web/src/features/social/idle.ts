/**
 * Whether the person at this client is away: idle once nothing was typed, clicked or moved
 * for `idleAfterMs` (five minutes), active again at the next input. The clock and the timers
 * come in from outside, so the tests run it on a virtual clock.
 */

/** client-core's `IDLE_AFTER_MS`. */
export const IDLE_AFTER_MS = 5 * 60_000;

export interface IdleClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: IdleClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export class IdleWatcher {
  idle = false;
  readonly #after: number;
  readonly #clock: IdleClock;
  readonly #onChange: (idle: boolean) => void;
  #lastInput: number;
  #timer: unknown = null;
  #running = false;

  constructor(onChange: (idle: boolean) => void, idleAfterMs = IDLE_AFTER_MS, clock: IdleClock = realClock) {
    this.#onChange = onChange;
    this.#after = idleAfterMs;
    this.#clock = clock;
    this.#lastInput = clock.now();
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#lastInput = this.#clock.now();
    this.#arm(this.#after);
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** The person did something. */
  input(): void {
    if (!this.#running) return;
    this.#lastInput = this.#clock.now();
    if (this.idle) {
      this.idle = false;
      this.#onChange(false);
      this.#arm(this.#after);
    }
  }

  #arm(ms: number): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => this.#check(), ms);
  }

  #check(): void {
    this.#timer = null;
    if (!this.#running || this.idle) return;
    const quiet = this.#clock.now() - this.#lastInput;
    if (quiet >= this.#after) {
      this.idle = true;
      this.#onChange(true);
    } else {
      this.#arm(this.#after - quiet);
    }
  }
}
