import { describe, expect, it } from 'vitest';
import { TYPING_RESEND_MS, TYPING_TIMEOUT_MS, TypingSender, TypingTracker, typingLine } from './typing';

describe('TypingTracker', () => {
  it('shows a typer until ten seconds after their last event, and a renewal extends it', () => {
    const t = new TypingTracker();
    t.add('c1', 'ben', 0);
    expect(t.who('c1', TYPING_TIMEOUT_MS - 1)).toEqual(['ben']);
    expect(t.who('c1', TYPING_TIMEOUT_MS)).toEqual([]);
    t.add('c1', 'ben', 8_000);
    expect(t.who('c1', 17_999)).toEqual(['ben']);
    expect(t.nextEnd()).toBe(18_000);
    expect(t.prune(17_999)).toBe(false);
    expect(t.prune(18_000)).toBe(true);
    expect(t.who('c1', 18_000)).toEqual([]);
    expect(t.nextEnd()).toBeNull();
  });

  it('keeps places apart, lists typers in the order they started, and a message ends its author’s indicator', () => {
    const t = new TypingTracker();
    t.add('c1', 'ben', 0);
    t.add('c1', 'cid', 1);
    t.add('dm:ben', 'ben', 2);
    expect(t.who('c1', 5)).toEqual(['ben', 'cid']);
    expect(t.stopped('c1', 'ben')).toBe(true);
    expect(t.stopped('c1', 'ben')).toBe(false);
    expect(t.who('c1', 5)).toEqual(['cid']);
    expect(t.who('dm:ben', 5)).toEqual(['ben']);
    expect(t.forget('ben')).toBe(true);
    expect(t.who('dm:ben', 5)).toEqual([]);
  });
});

describe('TypingSender', () => {
  it('sends at most once per resend interval per place, and again at once after a message', () => {
    const s = new TypingSender();
    expect(s.typed('c1', 0)).toBe(true);
    expect(s.typed('c1', 1_000)).toBe(false);
    expect(s.typed('c2', 1_000)).toBe(true);
    expect(s.typed('c1', TYPING_RESEND_MS - 1)).toBe(false);
    expect(s.typed('c1', TYPING_RESEND_MS)).toBe(true);
    s.sent('c1');
    expect(s.typed('c1', TYPING_RESEND_MS + 1)).toBe(true);
  });
});

describe('typingLine', () => {
  it('names up to three typers', () => {
    expect(typingLine([])).toBe('');
    expect(typingLine(['Ben'])).toBe('Ben is typing…');
    expect(typingLine(['Ben', 'Cid'])).toBe('Ben and Cid are typing…');
    expect(typingLine(['Ben', 'Cid', 'Dee'])).toBe('Ben, Cid and Dee are typing…');
    expect(typingLine(['Ben', 'Cid', 'Dee', 'Eve'])).toBe('Several people are typing…');
  });
});
