/**
 * Reads, in the background and one page at a time, the history of every channel and group
 * this account can read, so that search (answered on this device) also finds what was sent
 * while the device was away or before the channel was first opened here. The pages are those
 * scrolling would ask for; the engine decrypts and indexes them.
 */

export interface CrawlEngine {
  /** One more page of `channel`; `fresh`: look for newer messages again. True when all of it is read. */
  searchCrawl(channel: string, fresh: boolean): Promise<boolean>;
}

export interface CrawlerOptions {
  /** Between two pages (the engine also answers the page's own calls meanwhile). */
  pauseMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

export class Crawler {
  readonly #engine: CrawlEngine;
  readonly #channels: () => string[];
  readonly #pauseMs: number;
  readonly #sleep: (ms: number) => Promise<void>;
  /** Channels read to their beginning and caught up since the last (re)connection. */
  readonly #done = new Set<string>();
  /** Channels whose newer messages were looked for since the last (re)connection. */
  readonly #fresh = new Set<string>();
  /** Channels that failed this round (no access any more, a network error): tried next round. */
  readonly #failed = new Set<string>();
  #running: Promise<void> | null = null;
  #again = false;
  #stopped = false;

  constructor(engine: CrawlEngine, channels: () => string[], options: CrawlerOptions = {}) {
    this.#engine = engine;
    this.#channels = channels;
    this.#pauseMs = options.pauseMs ?? 300;
    this.#sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /** After a (re)connection: newer messages may have come meanwhile, everywhere. */
  connected(): Promise<void> {
    this.#done.clear();
    this.#fresh.clear();
    this.#failed.clear();
    return this.kick();
  }

  /** The channels may have changed (joined a server, a new channel): read what is new. */
  kick(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#loop().finally(() => (this.#running = null));
    return this.#running;
  }

  stop(): void {
    this.#stopped = true;
  }

  async #loop(): Promise<void> {
    // One page of each channel in turn: a long history does not hold the others back.
    for (;;) {
      this.#again = false;
      const due = this.#channels().filter((c) => !this.#done.has(c) && !this.#failed.has(c));
      if (due.length === 0 && !this.#again) return;
      for (const channel of due) {
        if (this.#stopped) return;
        try {
          const fresh = !this.#fresh.has(channel);
          this.#fresh.add(channel);
          if (await this.#engine.searchCrawl(channel, fresh)) this.#done.add(channel);
        } catch {
          this.#failed.add(channel);
        }
        if (this.#stopped) return;
        await this.#sleep(this.#pauseMs);
      }
    }
  }
}
