/**
 * How link codes and recovery keys are shown and read back. Only text handling: the engine
 * makes and checks both.
 */

/** Digits in a link code. */
export const LINK_CODE_DIGITS = 8;

/**
 * The digits of a link code as typed ("1234-5678", "1234 5678", "12345678"), or `null` when
 * it is not exactly eight digits with nothing but spaces and dashes between them (the
 * engine's own rule).
 */
export function normalizeLinkCode(typed: string): string | null {
  const text = typed.trim();
  if (!/^[\d\s-]*$/.test(text)) return null;
  const digits = text.replace(/\D/g, '');
  return digits.length === LINK_CODE_DIGITS ? digits : null;
}

/** A code's two groups of four digits: "1234-5678" → ["1234", "5678"]. */
export function linkCodeGroups(code: string): string[] {
  const digits = code.replace(/\D/g, '');
  const half = Math.ceil(digits.length / 2);
  return digits.length > 0 ? [digits.slice(0, half), digits.slice(half)].filter(Boolean) : [];
}

/** A code read digit by digit, for screen readers: "1 2 3 4, 5 6 7 8". */
export function spokenCode(code: string): string {
  return linkCodeGroups(code)
    .map((g) => g.split('').join(' '))
    .join(', ');
}

/** A recovery key's groups as the engine shows it ("ABCD-EFGH-…"); a key without separators is cut in fours. */
export function recoveryKeyGroups(key: string): string[] {
  const parts = key
    .trim()
    .split(/[\s-]+/)
    .filter(Boolean);
  if (parts.length > 1) return parts;
  const text = parts[0] ?? '';
  const groups: string[] = [];
  for (let i = 0; i < text.length; i += 4) groups.push(text.slice(i, i + 4));
  return groups;
}

/** A recovery key as compared: no spaces or dashes, upper case. */
export function cleanRecoveryKey(typed: string): string {
  return typed.replace(/[\s-]+/g, '').toUpperCase();
}

/** Whether `typed` is the last `count` groups of `key` (case, spaces and dashes do not matter). */
export function matchesLastGroups(key: string, typed: string, count = 2): boolean {
  const expected = cleanRecoveryKey(recoveryKeyGroups(key).slice(-count).join(''));
  return expected.length > 0 && cleanRecoveryKey(typed) === expected;
}

/** A time from the engine: Unix milliseconds, or RFC 3339 text. */
export function toMs(value: number | string | null | undefined): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'string') {
    if (/^\d+$/.test(value)) return Number(value);
    return Date.parse(value);
  }
  return Number.NaN;
}
