/**
 * The search panel's state: what was typed, where it searches (a server, or the direct
 * messages and groups), and what this device's engine found. The query is read here and
 * answered by the engine from the encrypted store on this device: nothing of it is sent.
 */

import type { SearchHit, SearchQuery, SearchResults } from '../../lib/engine/types';
import { parseSearch } from './query';

/** Where a search looks. */
export type SearchScope = { kind: 'server'; server: string; name: string } | { kind: 'dms' };

export interface NamedPerson {
  id: string;
  username: string;
  display_name?: string | null;
}

/** A place `in:` can name: a channel, a group DM, or a direct conversation. */
export interface NamedPlace {
  name: string;
  channel?: string;
  dm?: string;
}

/** What the panel needs to know of the account's servers and conversations. */
export interface SearchPlaces {
  /** The people `from:` can name in the scope. */
  people(scope: SearchScope): NamedPerson[];
  /** The places `in:` can name in the scope. */
  places(scope: SearchScope): NamedPlace[];
}

export const RESULTS_PER_PAGE = 25;

/** One key per message found. */
export function hitKey(hit: SearchHit): string {
  return hit.kind === 'dm' ? `dm:${hit.user_id}:${hit.position}` : `ch:${hit.message_id}`;
}

function same(a: string, b: string): boolean {
  return a.localeCompare(b, undefined, { sensitivity: 'accent' }) === 0;
}

/** The people named `name` (username or display name), without an `@`. */
export function peopleNamed(people: readonly NamedPerson[], name: string): NamedPerson[] {
  const bare = name.replace(/^@/, '');
  return people.filter((p) => same(p.username, bare) || (p.display_name ? same(p.display_name, bare) : false));
}

/** The places named `name` (`#general`, `@bob`, a group's name). */
export function placesNamed(places: readonly NamedPlace[], name: string): NamedPlace[] {
  const bare = name.replace(/^[#@]/, '');
  return places.filter((p) => same(p.name, bare) || same(p.name, name));
}

export class Search {
  open = $state(false);
  /** What is typed in the box. */
  input = $state('');
  scope = $state.raw<SearchScope>({ kind: 'dms' });
  hits = $state.raw<SearchHit[]>([]);
  total = $state(0);
  /** The words looked for, as the index folds them (to mark them). */
  words = $state.raw<string[]>([]);
  loading = $state(false);
  error = $state<string | null>(null);
  /** A search ran (the panel says when it found nothing). */
  searched = $state(false);

  readonly #engine: { search(query: SearchQuery): Promise<SearchResults> };
  readonly #places: SearchPlaces;
  #query: SearchQuery | null = null;
  #nextOffset = 0;
  #seq = 0;

  constructor(engine: { search(query: SearchQuery): Promise<SearchResults> }, places: SearchPlaces) {
    this.#engine = engine;
    this.#places = places;
  }

  /** Opens the panel on `scope` (what was found elsewhere is dropped). */
  show(scope: SearchScope): void {
    if (JSON.stringify(scope) !== JSON.stringify(this.scope)) {
      this.scope = scope;
      this.#clear();
      if (this.input.trim()) void this.run();
    }
    this.open = true;
  }

  close(): void {
    this.open = false;
  }

  #clear(): void {
    this.#seq++;
    this.hits = [];
    this.total = 0;
    this.words = [];
    this.error = null;
    this.searched = false;
    this.loading = false;
    this.#query = null;
    this.#nextOffset = 0;
  }

  /** The query for what is typed, or a sentence saying what is wrong with it. */
  build(): SearchQuery | string | null {
    const parsed = parseSearch(this.input);
    if (parsed.problems.length > 0) return parsed.problems.join(' · ');
    if (!parsed.text && !parsed.from.length && !parsed.in.length && !parsed.has.length && parsed.before === undefined && parsed.after === undefined) {
      return null;
    }
    const query: SearchQuery = { text: parsed.text, limit: RESULTS_PER_PAGE };
    if (parsed.has.length) query.has = parsed.has;
    if (parsed.before !== undefined) query.before = parsed.before;
    if (parsed.after !== undefined) query.after = parsed.after;
    const scope = this.scope;
    if (parsed.from.length) {
      const people = this.#places.people(scope);
      const from = new Set<string>();
      for (const name of parsed.from) {
        const found = peopleNamed(people, name);
        if (found.length === 0) return `No one named “${name}” ${scope.kind === 'server' ? 'in this server' : 'in your conversations'}.`;
        found.forEach((p) => from.add(p.id));
      }
      query.from = [...from];
    }
    const places = this.#places.places(scope);
    const chosen = parsed.in.length ? [] : places;
    for (const name of parsed.in) {
      const found = placesNamed(places, name);
      if (found.length === 0) return `No ${scope.kind === 'server' ? 'channel' : 'conversation'} named “${name}” here.`;
      chosen.push(...found);
    }
    query.channels = [...new Set(chosen.flatMap((p) => (p.channel ? [p.channel] : [])))];
    if (scope.kind === 'server') query.dms = [];
    else if (parsed.in.length) query.dms = [...new Set(chosen.flatMap((p) => (p.dm ? [p.dm] : [])))];
    // Direct messages with no `in:`: every conversation (those not listed yet included).
    return query;
  }

  /** Searches for what is typed. */
  async run(): Promise<void> {
    const query = this.build();
    this.#clear();
    if (query === null) return;
    if (typeof query === 'string') {
      this.error = query;
      return;
    }
    this.#query = query;
    await this.#fetch(query, false);
  }

  /** The next page of results. */
  async more(): Promise<void> {
    if (!this.#query || this.loading || !this.hasMore) return;
    await this.#fetch({ ...this.#query, offset: this.#nextOffset }, true);
  }

  /** More results than those shown. */
  get hasMore(): boolean {
    return this.#nextOffset < this.total;
  }

  async #fetch(query: SearchQuery, append: boolean): Promise<void> {
    const seq = ++this.#seq;
    this.loading = true;
    try {
      const found = await this.#engine.search(query);
      if (seq !== this.#seq) return;
      // A message that came between two pages shifts them: nothing is shown twice.
      const shown = new Set(append ? this.hits.map(hitKey) : []);
      this.hits = append ? [...this.hits, ...found.hits.filter((h) => !shown.has(hitKey(h)))] : found.hits;
      this.total = found.total;
      this.#nextOffset = found.next_offset;
      this.words = found.words;
      this.error = null;
      this.searched = true;
    } catch (e) {
      if (seq !== this.#seq) return;
      this.error = `The search failed: ${e instanceof Error ? e.message : String(e)}`;
    } finally {
      if (seq === this.#seq) this.loading = false;
    }
  }
}
