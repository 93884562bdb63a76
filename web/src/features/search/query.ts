/**
 * The search box's language, as in Discord: words, and filters written `key:value` anywhere
 * among them — `from:alice`, `in:#general` (or `in:@bob` in direct messages), `has:link`,
 * `has:mention`, `has:reply`, `before:2026-11-01`, `after:2026-11-01`, `during:2026-11-01`.
 * A value with spaces goes in quotes (`from:"Jean Paul"`). Dates are days of the local
 * calendar (`today` and `yesterday` too). The words are matched by the engine, on this device.
 */

export type HasKind = 'link' | 'mention' | 'reply';

export interface ParsedSearch {
  /** The words, filters taken out. */
  text: string;
  from: string[];
  in: string[];
  has: HasKind[];
  /** Sent before (Unix milliseconds). */
  before?: number;
  /** Sent at or after (Unix milliseconds). */
  after?: number;
  /** What could not be understood, said plainly. */
  problems: string[];
}

const HAS: readonly HasKind[] = ['link', 'mention', 'reply'];
const FILTER = /(^|\s)(from|in|has|before|after|during|on):("[^"]*"?|\S*)/gi;

/** Midnight starting the local day `value` names, or null. */
export function dayStart(value: string, now: number = Date.now()): number | null {
  const word = value.toLowerCase();
  if (word === 'today' || word === 'yesterday') {
    const d = new Date(now);
    d.setHours(0, 0, 0, 0);
    if (word === 'yesterday') d.setDate(d.getDate() - 1);
    return d.getTime();
  }
  const m = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(value);
  if (!m) return null;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const d = new Date(year, month - 1, day);
  if (d.getFullYear() !== year || d.getMonth() !== month - 1 || d.getDate() !== day) return null;
  return d.getTime();
}

function nextDay(start: number): number {
  const d = new Date(start);
  d.setDate(d.getDate() + 1);
  return d.getTime();
}

/** Reads what was typed in the search box. */
export function parseSearch(input: string, now: number = Date.now()): ParsedSearch {
  const out: ParsedSearch = { text: '', from: [], in: [], has: [], problems: [] };
  const narrowBefore = (t: number) => (out.before = out.before === undefined ? t : Math.min(out.before, t));
  const narrowAfter = (t: number) => (out.after = out.after === undefined ? t : Math.max(out.after, t));
  const text = input.replace(FILTER, (_all, lead: string, rawKey: string, rawValue: string) => {
    const key = rawKey.toLowerCase();
    const value = rawValue.startsWith('"') ? rawValue.replace(/^"|"$/g, '') : rawValue;
    if (!value.trim()) {
      out.problems.push(`${key}: needs a value`);
      return lead;
    }
    switch (key) {
      case 'from':
        out.from.push(value.replace(/^@/, ''));
        break;
      case 'in':
        out.in.push(value);
        break;
      case 'has': {
        const kind = value.toLowerCase() as HasKind;
        if (HAS.includes(kind)) {
          if (!out.has.includes(kind)) out.has.push(kind);
        } else out.problems.push(`has: is link, mention or reply (not “${value}”)`);
        break;
      }
      default: {
        const start = dayStart(value, now);
        if (start === null) {
          out.problems.push(`${key}: wants a day like 2026-11-25 (not “${value}”)`);
          break;
        }
        if (key === 'before') narrowBefore(start);
        else if (key === 'after') narrowAfter(nextDay(start));
        else {
          narrowAfter(start);
          narrowBefore(nextDay(start));
        }
      }
    }
    return lead;
  });
  out.text = text.replace(/\s+/g, ' ').trim();
  return out;
}

/** A character as the index folds it: accents off, lower case. */
function fold(c: string): string {
  return c.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase();
}

/** `text` cut into parts, those that are one of `words` (as the index folds them) marked. */
export function highlightParts(text: string, words: readonly string[]): Array<{ text: string; hit: boolean }> {
  const wanted = words.filter((w) => w.length > 0);
  if (wanted.length === 0) return text ? [{ text, hit: false }] : [];
  // Runs of letters and digits, each folded, matched by their beginning (the last word of a
  // query may begin a longer one).
  const parts: Array<{ text: string; hit: boolean }> = [];
  const push = (t: string, hit: boolean) => {
    if (!t) return;
    const last = parts[parts.length - 1];
    if (last && last.hit === hit) last.text += t;
    else parts.push({ text: t, hit });
  };
  for (const piece of text.split(/([\p{L}\p{N}\p{M}]+)/u)) {
    if (!piece) continue;
    if (/^[\p{L}\p{N}\p{M}]/u.test(piece)) {
      const folded = [...piece].map(fold).join('');
      push(piece, wanted.some((w) => folded.startsWith(w)));
    } else push(piece, false);
  }
  return parts;
}
