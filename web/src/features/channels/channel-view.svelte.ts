/**
 * One channel (or one thread of it) as the chat view shows it: its loaded history (paged up
 * with a before-cursor, or around a message one jumps to), the messages being sent, and the
 * actions on messages (reply, edit, delete, react). The engine encrypts and decrypts; this
 * keeps what is on screen.
 */

import type { Engine } from '../../lib/engine/engine';
import { engineErrorKind, type ChannelDraft, type ChannelEntry } from '../../lib/engine/types';
import { ApiError } from '../../lib/api/errors';
import {
  PAGE_SIZE,
  compareIds,
  mergeChannelEntries,
  quoteOf,
  toggledReactions,
  withoutEntry,
  type ChannelPending,
} from './timeline';

/** Longest message the composer accepts. */
export const MAX_CHANNEL_MESSAGE_LENGTH = 4000;

let nextLocalId = 0;

/** A sentence for a failed channel action ("Not sent: …"). */
export function describeChannelError(e: unknown, prefix = 'Not sent'): string {
  if (e instanceof ApiError) {
    if (e.status === 403) return `${prefix}: you do not have the permission.`;
    if (e.status === 404) return `${prefix}: it no longer exists.`;
    if (e.status === 429) return `${prefix}: too many at once. Wait a moment.`;
    return `${prefix}: ${e.message}`;
  }
  const message = e instanceof Error ? e.message : String(e);
  switch (engineErrorKind(e)) {
    case 'http':
      if (/\b403\b|forbidden|missing_permission/i.test(message)) return `${prefix}: you do not have the permission.`;
      if (/\b404\b|not_found/i.test(message)) return `${prefix}: it no longer exists.`;
      return /429|rate/i.test(message) ? `${prefix}: too many at once. Wait a moment.` : `${prefix}: the server could not be reached.`;
    case 'crypto':
      return `${prefix}: it could not be encrypted for this channel.`;
    case 'send':
      return `${prefix}: ${message.replace(/^send:\s*/, '')}`;
    case 'not_linked':
      return `${prefix}: this browser is not linked to your account yet.`;
    case 'invalid':
      return `${prefix}: ${message.replace(/^invalid:\s*/, '')}`;
    default:
      return `${prefix}.`;
  }
}

export interface ChannelViewOptions {
  /** The thread this view shows (the id of the message that starts it); none for the channel. */
  threadId?: string | null;
  /** This account's id (for the reactions toggled here before the engine answers). */
  me: string;
  now?: () => number;
  /** A message of this view was sent (for the unread marks). */
  onSent?: (entry: ChannelEntry) => void;
}

export class ChannelView {
  readonly channel: string;
  readonly threadId: string | null;
  entries = $state.raw<ChannelEntry[]>([]);
  pending = $state.raw<ChannelPending[]>([]);
  loaded = $state(false);
  hasOlder = $state(false);
  /** After a jump to an older message: newer ones are not loaded (a "Jump to present" shows). */
  hasNewer = $state(false);
  loadingOlder = $state(false);
  error = $state<string | null>(null);
  /** A message to bring into view and mark (a jump to a replied message). */
  highlight = $state<string | null>(null);
  /** The message being replied to. */
  replyTo = $state.raw<ChannelEntry | null>(null);
  /** The message being edited. */
  editing = $state<string | null>(null);
  /** A failed action on a message (edit, delete, reaction), shown until dismissed. */
  actionError = $state<string | null>(null);
  /** Thread replies seen here, per thread (their parents' "N replies" never count less). */
  threadReplies = $state.raw<Record<string, string[]>>({});
  /** Thread names seen here (they travel in a thread's messages), per thread. */
  threadNames = $state.raw<Record<string, string>>({});

  readonly #engine: Engine;
  readonly #me: string;
  readonly #now: () => number;
  readonly #onSent: (entry: ChannelEntry) => void;
  #loading: Promise<void> | null = null;

  constructor(engine: Engine, channel: string, options: ChannelViewOptions) {
    this.#engine = engine;
    this.channel = channel;
    this.threadId = options.threadId ?? null;
    this.#me = options.me;
    this.#now = options.now ?? Date.now;
    this.#onSent = options.onSent ?? (() => {});
  }

  #query(extra: { before?: string; after?: string; around?: string }) {
    return { ...extra, limit: PAGE_SIZE, ...(this.threadId ? { thread_id: this.threadId } : {}) };
  }

  /** Loads the newest page (again, when reopened). */
  load(): Promise<void> {
    if (this.#loading) return this.#loading;
    this.#loading = this.#load().finally(() => (this.#loading = null));
    return this.#loading;
  }

  async #load(): Promise<void> {
    try {
      const page = this.#mine(await this.#engine.channelHistory(this.channel, this.#query({})));
      if (this.hasNewer) {
        this.entries = page;
        this.hasNewer = false;
        this.hasOlder = page.length >= PAGE_SIZE;
      } else {
        this.entries = mergeChannelEntries(this.entries, page);
        if (!this.loaded) this.hasOlder = page.length >= PAGE_SIZE;
      }
      this.error = null;
    } catch (e) {
      this.error = `The messages could not be loaded: ${describeLoadError(e)}`;
    } finally {
      this.loaded = true;
    }
  }

  /** Loads the page before the oldest loaded message. */
  async loadOlder(): Promise<void> {
    const oldest = this.entries[0];
    if (!this.hasOlder || this.loadingOlder || !oldest) return;
    this.loadingOlder = true;
    try {
      const page = this.#mine(await this.#engine.channelHistory(this.channel, this.#query({ before: oldest.id })));
      this.entries = mergeChannelEntries(page, this.entries);
      this.hasOlder = page.length >= PAGE_SIZE;
    } catch (e) {
      this.error = `Older messages could not be loaded: ${describeLoadError(e)}`;
    } finally {
      this.loadingOlder = false;
    }
  }

  /** After a jump: loads the page after the newest loaded message. */
  async loadNewer(): Promise<void> {
    const newest = this.entries[this.entries.length - 1];
    if (!this.hasNewer || this.loadingOlder || !newest) return;
    this.loadingOlder = true;
    try {
      const page = this.#mine(await this.#engine.channelHistory(this.channel, this.#query({ after: newest.id })));
      this.entries = mergeChannelEntries(this.entries, page);
      this.hasNewer = page.length >= PAGE_SIZE;
    } catch (e) {
      this.error = `Newer messages could not be loaded: ${describeLoadError(e)}`;
    } finally {
      this.loadingOlder = false;
    }
  }

  /** Brings message `id` into view: from what is loaded, or the page around it. */
  async jumpTo(id: string): Promise<boolean> {
    if (!this.entries.some((e) => e.id === id)) {
      try {
        const page = this.#mine(await this.#engine.channelHistory(this.channel, this.#query({ around: id })));
        if (!page.some((e) => e.id === id)) {
          this.actionError = 'That message is no longer there.';
          return false;
        }
        this.entries = page;
        this.hasOlder = true;
        this.hasNewer = true;
      } catch (e) {
        this.actionError = `That message could not be loaded: ${describeLoadError(e)}`;
        return false;
      }
    }
    this.highlight = id;
    return true;
  }

  /** Back to the newest messages after a jump. */
  async jumpToPresent(): Promise<void> {
    this.highlight = null;
    if (this.hasNewer) await this.#load();
  }

  /** Only the entries of this view (the channel's top level, or this thread). */
  #mine(page: ChannelEntry[]): ChannelEntry[] {
    return page.filter((e) => (e.thread_id ?? null) === this.threadId);
  }

  /** A message appeared or changed (decrypted, edited, reacted to). */
  upsert(entry: ChannelEntry): void {
    if (entry.channel_id !== this.channel) return;
    if ((entry.thread_id ?? null) !== this.threadId) {
      // A reply in a thread of this channel: its parent's count follows.
      if (this.threadId === null && entry.thread_id) {
        if (entry.thread_name && this.threadNames[entry.thread_id] !== entry.thread_name) {
          this.threadNames = { ...this.threadNames, [entry.thread_id]: entry.thread_name };
        }
        const seen = this.threadReplies[entry.thread_id] ?? [];
        if (!seen.includes(entry.id)) this.threadReplies = { ...this.threadReplies, [entry.thread_id]: [...seen, entry.id] };
      }
      return;
    }
    const known = this.entries.some((e) => e.id === entry.id);
    const newest = this.entries[this.entries.length - 1];
    // Viewing older messages after a jump: a new one waits for "Jump to present".
    if (!known && this.hasNewer && newest && compareIds(entry.id, newest.id) > 0) return;
    this.entries = mergeChannelEntries(this.entries, [entry]);
  }

  remove(id: string): void {
    this.entries = withoutEntry(this.entries, id);
    if (this.replyTo?.id === id) this.replyTo = null;
    if (this.editing === id) this.editing = null;
    for (const [thread, seen] of Object.entries(this.threadReplies)) {
      if (seen.includes(id)) this.threadReplies = { ...this.threadReplies, [thread]: seen.filter((x) => x !== id) };
    }
  }

  setPinned(id: string, pinned: boolean): void {
    if (this.entries.some((e) => e.id === id && e.pinned !== pinned)) {
      this.entries = this.entries.map((e) => (e.id === id ? { ...e, pinned } : e));
    }
  }

  /** How many replies the thread started by `entry` has, as far as this view knows. */
  replyCount(entry: ChannelEntry): number {
    return Math.max(entry.thread_count, this.threadReplies[entry.id]?.length ?? 0);
  }

  /** Sends `body` (as a reply to `replyTo` when set): shown at once as sending, then sent or failed. */
  async send(body: string, threadName: string | null = null): Promise<void> {
    const replying = this.replyTo;
    const pending: ChannelPending = {
      localId: `${this.#now()}-${nextLocalId++}`,
      body,
      reply_to: replying ? quoteOf(replying) : null,
      thread_name: threadName,
      created_at: this.#now(),
      state: 'sending',
    };
    this.replyTo = null;
    this.pending = [...this.pending, pending];
    if (this.hasNewer) void this.jumpToPresent();
    await this.#deliver(pending, replying?.id ?? null);
  }

  async retry(localId: string): Promise<void> {
    const pending = this.pending.find((p) => p.localId === localId);
    if (!pending || pending.state !== 'failed') return;
    const again: ChannelPending = { ...pending, state: 'sending', error: undefined };
    this.pending = this.pending.map((p) => (p.localId === localId ? again : p));
    await this.#deliver(again, pending.reply_to?.id ?? null);
  }

  discard(localId: string): void {
    this.pending = this.pending.filter((p) => p.localId !== localId);
  }

  async #deliver(pending: ChannelPending, replyTo: string | null): Promise<void> {
    const draft: ChannelDraft = { body: pending.body };
    if (replyTo) draft.reply_to = replyTo;
    if (this.threadId) draft.thread_id = this.threadId;
    if (pending.thread_name) draft.thread_name = pending.thread_name;
    try {
      const entry = await this.#engine.channelSend(this.channel, draft);
      this.pending = this.pending.filter((p) => p.localId !== pending.localId);
      this.upsert(entry);
      this.#onSent(entry);
    } catch (e) {
      const error = describeChannelError(e);
      this.pending = this.pending.map((p) => (p.localId === pending.localId ? { ...p, state: 'failed', error } : p));
    }
  }

  /** Replaces the text of one's own message; false (with `actionError`) when it failed. */
  async edit(id: string, body: string): Promise<boolean> {
    const before = this.entries.find((e) => e.id === id);
    if (!before) return false;
    if (before.body === body) {
      this.editing = null;
      return true;
    }
    this.entries = this.entries.map((e) => (e.id === id ? { ...e, body, edited_at: e.edited_at ?? this.#now() } : e));
    this.editing = null;
    try {
      const entry = await this.#engine.channelEdit(this.channel, id, body);
      if (entry) this.upsert(entry);
      return true;
    } catch (e) {
      this.entries = this.entries.map((x) => (x.id === id ? before : x));
      this.actionError = describeChannelError(e, 'Not edited');
      return false;
    }
  }

  async delete(id: string): Promise<boolean> {
    try {
      await this.#engine.channelDelete(this.channel, id);
      this.remove(id);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        this.remove(id);
        return true;
      }
      this.actionError = describeChannelError(e, 'Not deleted');
      return false;
    }
  }

  /** Adds this account's `emoji` reaction, or takes it away. */
  async toggleReaction(id: string, emoji: string): Promise<void> {
    const before = this.entries.find((e) => e.id === id);
    if (!before) return;
    const mine = before.reactions.some((r) => r.emoji === emoji && r.mine);
    this.entries = this.entries.map((e) => (e.id === id ? { ...e, reactions: toggledReactions(e, emoji, this.#me) } : e));
    try {
      const entry = mine ? await this.#engine.channelUnreact(this.channel, id, emoji) : await this.#engine.channelReact(this.channel, id, emoji);
      if (entry) this.upsert(entry);
    } catch (e) {
      this.entries = this.entries.map((x) => (x.id === id ? { ...x, reactions: before.reactions } : x));
      this.actionError = describeChannelError(e, mine ? 'Reaction not removed' : 'Reaction not added');
    }
  }
}

function describeLoadError(e: unknown): string {
  if (e instanceof ApiError) return e.status === 403 || e.status === 404 ? 'you cannot read this channel.' : e.message;
  const message = e instanceof Error ? e.message : String(e);
  if (engineErrorKind(e) === 'http') return /\b40[34]\b/.test(message) ? 'you cannot read this channel.' : 'the server could not be reached.';
  return message;
}
