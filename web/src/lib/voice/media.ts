/**
 * The page's side of the media worker (media-worker.ts): one worker per voice session, which
 * every sender and receiver of the connection runs its encoded transform in, and requests to
 * it for keys and counts.
 */

import type { FrameStats, Kind, Side } from './frames';
import type { MediaKeyPort } from './keys';

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class MediaWorker implements MediaKeyPort {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  #closed = false;

  constructor(worker: Worker = new Worker(new URL('./media-worker.ts', import.meta.url), { type: 'module' })) {
    this.#worker = worker;
    worker.onmessage = (e: MessageEvent<{ id: number; ok: boolean; result?: unknown; error?: string }>) => {
      const p = this.#pending.get(e.data.id);
      if (!p) return;
      this.#pending.delete(e.data.id);
      if (e.data.ok) p.resolve(e.data.result);
      else p.reject(new Error(e.data.error ?? 'media worker error'));
    };
  }

  /** Whether this browser can encrypt media frames (RTCRtpScriptTransform). */
  static supported(): boolean {
    // A browser with the class but without the `transform` attribute would take the assignment
    // as a plain property and send media in the clear: both must be there.
    return (
      typeof RTCRtpScriptTransform !== 'undefined' &&
      typeof RTCRtpSender !== 'undefined' &&
      'transform' in RTCRtpSender.prototype &&
      'transform' in RTCRtpReceiver.prototype
    );
  }

  /**
   * The transform for a sender or a receiver: its frames go through the worker. A receiver's
   * `slot` is the sender its track was announced for: frames under any other key are dropped.
   */
  transform(side: Side, kind: Kind, slot?: number): RTCRtpScriptTransform {
    return new RTCRtpScriptTransform(this.#worker, slot === undefined ? { side, kind } : { side, kind, slot });
  }

  #call<T>(msg: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error('the call ended'));
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ ...msg, id });
    });
  }

  fresh(slot: number, generation: number): Promise<string> {
    return this.#call({ type: 'fresh', slot, generation });
  }
  ratchet(): Promise<string> {
    return this.#call({ type: 'ratchet' });
  }
  nextGeneration(): Promise<string> {
    return this.#call({ type: 'next-generation' });
  }
  hold(): Promise<void> {
    return this.#call({ type: 'hold' });
  }
  release(): Promise<void> {
    return this.#call({ type: 'release' });
  }
  add(share: string): Promise<void> {
    return this.#call({ type: 'add', share });
  }
  forgetSlot(slot: number): Promise<void> {
    return this.#call({ type: 'forget-slot', slot });
  }
  stats(): Promise<FrameStats> {
    return this.#call({ type: 'stats' });
  }

  /** Ends the worker: its keys are gone with it. */
  close(): void {
    this.#closed = true;
    this.#worker.terminate();
    for (const p of this.#pending.values()) p.reject(new Error('the call ended'));
    this.#pending.clear();
  }
}
