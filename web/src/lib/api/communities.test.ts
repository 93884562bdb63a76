import { describe, expect, it } from 'vitest';
import { inviteCode } from './communities';

describe('inviteCode', () => {
  it.each([
    ['https://chat.example.org/invite/aB3dE', 'aB3dE'],
    ['http://127.0.0.1:8080/invite/x-Y_z/', 'x-Y_z'],
    ['chat.example.org/invite/Q1?utm=1', 'Q1'],
    ['  aB3dE  ', 'aB3dE'],
    ['', null],
    ['not a code', null],
    ['https://chat.example.org/channels/1/2', null],
  ])('%s', (text, code) => {
    expect(inviteCode(text)).toBe(code);
  });
});
