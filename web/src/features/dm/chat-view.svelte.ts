/** One conversation as the chat pane shows it: its loaded history, paging, sending. */

import type { Engine } from '../../lib/engine/engine';
import { engineErrorKind, type HistoryEntry } from '../../lib/engine/types';
import { PAGE_SIZE, firstUnreadPos, markRepaired, mayHaveOlder, mergeEntries, type Pending } from './timeline';

/** Entries loaded above one jumped to. */
const JUMP_CONTEXT = 10;
/** Entries read at a time to reach one jumped to (the most the engine gives at once). */
const JUMP_PAGE = 500;

/** Longest message the composer accepts. */
export const MAX_MESSAGE_LENGTH = 4000;

let nextLocalId = 0;

export function describeSendError(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  switch (engineErrorKind(e)) {
    case 'http':
      return /429|rate/i.test(message) ? 'Not sent: too many messages. Wait a moment.' : 'Not sent: the server could not be reached.';
    case 'crypto':
      return 'Not sent: it could not be encrypted for this person.';
    case 'send':
      return `Not sent: ${message.replace(/^send:\s*/, '')}`;
    case 'untrusted_identity':
      return 'Not sent: this person’s safety number changed since you verified it. Accept the new number or verify it again (View safety number), then Retry.';
    case 'not_linked':
      return 'Not sent: this browser is not linked to your account yet.';
    default:
      return 'Not sent.';
  }
}

export class ChatView {
  readonly user: string;
  entries = $state.raw<HistoryEntry[]>([]);
  pending = $state.raw<Pending[]>([]);
  loaded = $state(false);
  hasOlder = $state(false);
  loadingOlder = $state(false);
  error = $state<string | null>(null);
  /** Where the "new messages" line goes (set when the conversation was opened with unread entries). */
  unreadFrom = $state<number | null>(null);
  /** An entry to bring into view and mark (a search result), by position. */
  highlight = $state<number | null>(null);
  readonly #engine: Engine;
  readonly #now: () => number;
  readonly #onSent: (entry: HistoryEntry) => void;

  constructor(engine: Engine, user: string, options: { now?: () => number; onSent?: (entry: HistoryEntry) => void } = {}) {
    this.#engine = engine;
    this.user = user;
    this.#now = options.now ?? Date.now;
    this.#onSent = options.onSent ?? (() => {});
  }

  /** Loads the newest page (again, when reopened). */
  async load(unread: number): Promise<void> {
    try {
      const page = await this.#engine.history(this.user, undefined, PAGE_SIZE);
      this.entries = mergeEntries(this.entries, page);
      if (!this.loaded) this.hasOlder = mayHaveOlder(page, PAGE_SIZE);
      this.unreadFrom = firstUnreadPos(this.entries, unread);
      this.error = null;
    } catch (e) {
      this.error = `The history could not be read: ${e instanceof Error ? e.message : String(e)}`;
    } finally {
      this.loaded = true;
    }
  }

  /** Loads the page before the oldest loaded entry. */
  async loadOlder(): Promise<void> {
    if (!this.hasOlder || this.loadingOlder) return;
    const oldest = this.entries[0];
    if (!oldest) return;
    this.loadingOlder = true;
    try {
      const page = await this.#engine.history(this.user, oldest.pos, PAGE_SIZE);
      this.entries = mergeEntries(page, this.entries);
      this.hasOlder = mayHaveOlder(page, PAGE_SIZE);
    } catch (e) {
      this.error = `Older messages could not be read: ${e instanceof Error ? e.message : String(e)}`;
    } finally {
      this.loadingOlder = false;
    }
  }

  /** Brings the entry at `pos` into view: loads what lies between it and the newest first. */
  async jumpTo(pos: number): Promise<boolean> {
    if (!this.loaded) await this.load(0);
    // Older pages of the local store until it is loaded, with a few entries above it.
    while (this.entries.length > 0 && this.entries[0]!.pos > Math.max(0, pos - JUMP_CONTEXT)) {
      const oldest = this.entries[0]!.pos;
      try {
        const page = await this.#engine.history(this.user, oldest, JUMP_PAGE);
        if (page.length === 0) break;
        this.entries = mergeEntries(page, this.entries);
        this.hasOlder = mayHaveOlder(page, JUMP_PAGE);
      } catch (e) {
        this.error = `That message could not be read: ${e instanceof Error ? e.message : String(e)}`;
        return false;
      }
    }
    if (!this.entries.some((e) => e.pos === pos)) return false;
    this.highlight = pos;
    return true;
  }

  /** A new entry of this conversation (received, or sent from another device). */
  add(entry: HistoryEntry): void {
    this.entries = mergeEntries(this.entries, [entry]);
  }

  repaired(pos: number): void {
    this.entries = markRepaired(this.entries, pos);
  }

  /** The person read what is on screen: no "new messages" line any more. */
  clearUnreadMarker(): void {
    this.unreadFrom = null;
  }

  /** Sends `body`: shown at once as sending, then sent (an entry) or failed (kept, with Retry). */
  async send(body: string): Promise<void> {
    const pending: Pending = {
      localId: `${this.#now()}-${nextLocalId++}`,
      conversation: this.user,
      body,
      sent_at: this.#now(),
      state: 'sending',
    };
    this.pending = [...this.pending, pending];
    this.unreadFrom = null;
    await this.#deliver(pending);
  }

  async retry(localId: string): Promise<void> {
    const pending = this.pending.find((p) => p.localId === localId);
    if (!pending || pending.state !== 'failed') return;
    const again: Pending = { ...pending, state: 'sending', error: undefined };
    this.pending = this.pending.map((p) => (p.localId === localId ? again : p));
    await this.#deliver(again);
  }

  discard(localId: string): void {
    this.pending = this.pending.filter((p) => p.localId !== localId);
  }

  async #deliver(pending: Pending): Promise<void> {
    try {
      const entry = await this.#engine.sendDm(this.user, pending.body);
      this.pending = this.pending.filter((p) => p.localId !== pending.localId);
      if (entry.pos === 0 && this.entries.some((e) => e.pos === 0 && (e.kind !== 'message' || e.message_id !== entry.message_id))) {
        // No position came back: read the newest page instead of guessing where it goes.
        await this.load(0);
      } else {
        this.entries = mergeEntries(this.entries, [entry]);
      }
      this.#onSent(entry);
    } catch (e) {
      const error = describeSendError(e);
      this.pending = this.pending.map((p) => (p.localId === pending.localId ? { ...p, state: 'failed', error } : p));
    }
  }
}
