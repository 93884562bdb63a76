/**
 * Typing indicators, as plain state on an injected clock: who types where (a place is a
 * channel id, or `dm:<user id>`), each until 10 s after their last `TYPING_START` or until a
 * message of theirs arrives; and when this client should tell the others that its user types
 * (at most once every 8 s per place, as the server's rate limit expects).
 */

/** How long an indicator lasts without a new event (client-core's `TYPING_TIMEOUT_MS`). */
export const TYPING_TIMEOUT_MS = 10_000;
/** How often a client repeats its own indicator while its user types (`TYPING_RESEND_MS`). */
export const TYPING_RESEND_MS = 8_000;

export function dmPlace(user: string): string {
  return `dm:${user}`;
}

export class TypingTracker {
  /** place → user → when the indicator ends. Insertion order is arrival order. */
  readonly #places = new Map<string, Map<string, number>>();

  /** `user` types in `place` (an event at `now`). */
  add(place: string, user: string, now: number): void {
    let users = this.#places.get(place);
    if (!users) this.#places.set(place, (users = new Map()));
    users.delete(user);
    users.set(user, now + TYPING_TIMEOUT_MS);
  }

  /** `user`'s message arrived in `place`: they stopped. Returns whether anything changed. */
  stopped(place: string, user: string): boolean {
    const users = this.#places.get(place);
    if (!users?.delete(user)) return false;
    if (users.size === 0) this.#places.delete(place);
    return true;
  }

  /** Forgets `user` everywhere (blocked). */
  forget(user: string): boolean {
    let changed = false;
    for (const place of [...this.#places.keys()]) changed = this.stopped(place, user) || changed;
    return changed;
  }

  /** Who types in `place` at `now`, first to start first. */
  who(place: string, now: number): string[] {
    const users = this.#places.get(place);
    if (!users) return [];
    return [...users].filter(([, until]) => until > now).map(([user]) => user);
  }

  /** Drops what ended by `now`; returns whether anything did. */
  prune(now: number): boolean {
    let changed = false;
    for (const [place, users] of this.#places) {
      for (const [user, until] of users) {
        if (until <= now) {
          users.delete(user);
          changed = true;
        }
      }
      if (users.size === 0) this.#places.delete(place);
    }
    return changed;
  }

  /** When the next indicator ends, if any. */
  nextEnd(): number | null {
    let next: number | null = null;
    for (const users of this.#places.values()) for (const until of users.values()) if (next === null || until < next) next = until;
    return next;
  }
}

/** When to tell the others that this client's user types. */
export class TypingSender {
  readonly #last = new Map<string, number>();

  /** The user typed in `place` at `now`: whether to send `TYPING_START` now. */
  typed(place: string, now: number): boolean {
    const last = this.#last.get(place);
    if (last !== undefined && now - last < TYPING_RESEND_MS) return false;
    this.#last.set(place, now);
    return true;
  }

  /** The message was sent (the indicator ends with it): the next keystroke sends again. */
  sent(place: string): void {
    this.#last.delete(place);
  }
}

/** The line under the composer. */
export function typingLine(names: string[]): string {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return 'Several people are typing…';
}
