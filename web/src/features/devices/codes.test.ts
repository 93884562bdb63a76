import { describe, expect, it } from 'vitest';
import { cleanRecoveryKey, linkCodeGroups, matchesLastGroups, normalizeLinkCode, recoveryKeyGroups, spokenCode, toMs } from './codes';

describe('link codes', () => {
  it('reads the eight digits whatever the separators', () => {
    expect(normalizeLinkCode('1234-5678')).toBe('12345678');
    expect(normalizeLinkCode('1234 5678')).toBe('12345678');
    expect(normalizeLinkCode(' 12345678 ')).toBe('12345678');
    expect(normalizeLinkCode('12 34-56 78')).toBe('12345678');
  });

  it('refuses anything else', () => {
    expect(normalizeLinkCode('')).toBeNull();
    expect(normalizeLinkCode('1234-567')).toBeNull();
    expect(normalizeLinkCode('123456789')).toBeNull();
    expect(normalizeLinkCode('1234-567a')).toBeNull();
    expect(normalizeLinkCode('1234.5678')).toBeNull();
  });

  it('is shown in two groups and spoken digit by digit', () => {
    expect(linkCodeGroups('1234-5678')).toEqual(['1234', '5678']);
    expect(linkCodeGroups('')).toEqual([]);
    expect(spokenCode('1234-5678')).toBe('1 2 3 4, 5 6 7 8');
  });
});

describe('recovery keys', () => {
  const key = 'ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567';

  it('are shown in the engine’s groups, or in fours', () => {
    expect(recoveryKeyGroups(key)).toHaveLength(8);
    expect(recoveryKeyGroups(key).at(-1)).toBe('4567');
    expect(recoveryKeyGroups('ABCDEFGHIJ')).toEqual(['ABCD', 'EFGH', 'IJ']);
    expect(recoveryKeyGroups('abcd efgh')).toEqual(['abcd', 'efgh']);
  });

  it('the written-down check takes the last two groups in any case and spacing', () => {
    expect(matchesLastGroups(key, 'YZ23-4567')).toBe(true);
    expect(matchesLastGroups(key, 'yz23 4567')).toBe(true);
    expect(matchesLastGroups(key, ' yz234567 ')).toBe(true);
    expect(matchesLastGroups(key, '4567')).toBe(false);
    expect(matchesLastGroups(key, 'UVWX-YZ23')).toBe(false);
    expect(matchesLastGroups('', '')).toBe(false);
  });

  it('are compared without separators', () => {
    expect(cleanRecoveryKey('abcd-efgh ijkl')).toBe('ABCDEFGHIJKL');
  });
});

describe('engine times', () => {
  it('reads milliseconds and RFC 3339', () => {
    expect(toMs(1_700_000_000_000)).toBe(1_700_000_000_000);
    expect(toMs('2024-01-01T00:00:00Z')).toBe(Date.UTC(2024, 0, 1));
    expect(toMs('1700000000000')).toBe(1_700_000_000_000);
    expect(toMs(null)).toBeNaN();
  });
});
