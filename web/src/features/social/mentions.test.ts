import { describe, expect, it } from 'vitest';
import { encodeMentions, mentionParts, mentionsInText, mentionsMe, plainMentions } from './mentions';

const people = [
  { id: '11', username: 'Ben' },
  { id: '12', username: 'cid.x' },
];
const roles = [
  { id: '40', name: 'crew' },
  { id: '41', name: 'two words' },
];

describe('encodeMentions', () => {
  it('turns known @names into tokens and leaves the rest', () => {
    expect(encodeMentions('hi @ben and @CID.X, @crew, @everyone, @nobody and a@ben', people, roles)).toBe(
      'hi <@11> and <@12>, <@&40>, @everyone, @nobody and a@ben',
    );
    expect(encodeMentions('(@ben)', people)).toBe('(<@11>)');
    expect(encodeMentions('@two words', people, roles)).toBe('@two words');
  });
});

describe('mentionParts', () => {
  it('cuts text around user, role and everyone mentions', () => {
    expect(mentionParts('a <@11> b <@&40> @everyone <@x> c')).toEqual([
      { kind: 'text', text: 'a ' },
      { kind: 'user', id: '11' },
      { kind: 'text', text: ' b ' },
      { kind: 'role', id: '40' },
      { kind: 'text', text: ' ' },
      { kind: 'everyone' },
      { kind: 'text', text: ' <@x> c' },
    ]);
    expect(mentionParts('')).toEqual([]);
  });

  it('reads ids and @everyone as client-core does', () => {
    expect(mentionParts('<@012> me@everyone.org @everyones (@everyone)')).toEqual([
      { kind: 'text', text: '<@012> me@everyone.org @everyones (' },
      { kind: 'everyone' },
      { kind: 'text', text: ')' },
    ]);
    expect(mentionsInText('<@11> <@11> <@&40> hi')).toEqual({ users: ['11'], roles: ['40'], everyone: false });
  });

  it('gives names for plain text', () => {
    expect(plainMentions('hey <@11>, <@&40>', (id) => (id === '11' ? 'Ben' : '?'), () => 'crew')).toBe('hey @Ben, @crew');
  });
});

describe('mentionsMe', () => {
  it('is true by name, by a role of mine, or for everyone', () => {
    expect(mentionsMe({ users: ['11'] }, '11')).toBe(true);
    expect(mentionsMe({ users: ['12'] }, '11')).toBe(false);
    expect(mentionsMe({ roles: ['40'] }, '11', ['40'])).toBe(true);
    expect(mentionsMe({ roles: ['40'] }, '11', ['41'])).toBe(false);
    expect(mentionsMe({ everyone: true }, '11')).toBe(true);
    expect(mentionsMe(undefined, '11')).toBe(false);
  });
});
