import { describe, expect, it } from 'vitest';
import { dayStart, highlightParts, parseSearch } from './query';

const NOW = new Date(2026, 10, 25, 15, 30).getTime();

describe('the search box', () => {
  it('takes filters out of the words, anywhere', () => {
    const q = parseSearch('picnic from:@alice in:#general has:link has:LINK lake', NOW);
    expect(q).toMatchObject({ text: 'picnic lake', from: ['alice'], in: ['#general'], has: ['link'], problems: [] });
    expect(parseSearch('from:"Jean Paul" in:@bob', NOW)).toMatchObject({ text: '', from: ['Jean Paul'], in: ['@bob'] });
  });

  it('reads days of the local calendar', () => {
    const day = new Date(2026, 10, 1).getTime();
    const next = new Date(2026, 10, 2).getTime();
    const range = (input: string) => {
      const q = parseSearch(input, NOW);
      return [q.after, q.before];
    };
    expect(range('before:2026-11-01')).toEqual([undefined, day]);
    expect(range('after:2026-11-01')).toEqual([next, undefined]);
    expect(range('during:2026-11-01')).toEqual([day, next]);
    expect(parseSearch('after:yesterday', NOW).after).toBe(new Date(2026, 10, 25).getTime());
    expect(dayStart('today', NOW)).toBe(new Date(2026, 10, 25).getTime());
    // Two bounds of one kind: the narrower one.
    expect(parseSearch('before:2026-11-10 before:2026-11-05', NOW).before).toBe(new Date(2026, 10, 5).getTime());
  });

  it('says what it did not understand', () => {
    expect(parseSearch('has:poll before:2026-02-30 after:soon from:', NOW).problems).toEqual([
      'has: is link, mention or reply (not “poll”)',
      'before: wants a day like 2026-11-25 (not “2026-02-30”)',
      'after: wants a day like 2026-11-25 (not “soon”)',
      'from: needs a value',
    ]);
  });

  it('leaves links and other colons among the words', () => {
    expect(parseSearch('https://example.org/a note:this', NOW)).toMatchObject({ text: 'https://example.org/a note:this', problems: [] });
  });
});

describe('highlighting', () => {
  it('marks the words as the index folds them, and words they begin', () => {
    expect(highlightParts('Le Café, the CAFETERIA and a cat', ['cafe'])).toEqual([
      { text: 'Le ', hit: false },
      { text: 'Café', hit: true },
      { text: ', the ', hit: false },
      { text: 'CAFETERIA', hit: true },
      { text: ' and a cat', hit: false },
    ]);
    expect(highlightParts('nothing here', [])).toEqual([{ text: 'nothing here', hit: false }]);
  });
});
