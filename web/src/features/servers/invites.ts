/** Invite choices and texts shared by "Invite people" and the invite settings. */

import type { Invite } from '../../lib/api/types';
import { formatFull } from '../../lib/format';

/** Expiry choices (seconds; null: never), as Discord offers them. */
export const EXPIRY_CHOICES: ReadonlyArray<{ label: string; value: number | null }> = [
  { label: '30 minutes', value: 30 * 60 },
  { label: '1 hour', value: 3600 },
  { label: '6 hours', value: 6 * 3600 },
  { label: '12 hours', value: 12 * 3600 },
  { label: '1 day', value: 24 * 3600 },
  { label: '7 days', value: 7 * 24 * 3600 },
  { label: '30 days', value: 30 * 24 * 3600 },
  { label: 'Never', value: null },
];

export const USES_CHOICES: ReadonlyArray<{ label: string; value: number | null }> = [
  { label: 'No limit', value: null },
  { label: '1 use', value: 1 },
  { label: '5 uses', value: 5 },
  { label: '10 uses', value: 10 },
  { label: '25 uses', value: 25 },
  { label: '50 uses', value: 50 },
  { label: '100 uses', value: 100 },
];

/** The link of an invite on this site. */
export function inviteLink(code: string, origin = typeof location === 'undefined' ? '' : location.origin): string {
  return `${origin}/invite/${encodeURIComponent(code)}`;
}

/** "Expires Monday, …" / "Never expires" / "Expired". */
export function expiryText(invite: Pick<Invite, 'expires_at'>, now: number): string {
  if (invite.expires_at === null || invite.expires_at === undefined) return 'Never expires';
  if (invite.expires_at <= now) return 'Expired';
  return `Expires ${formatFull(invite.expires_at)}`;
}

/** "3 / 10 uses" or "3 uses". */
export function usesText(invite: Pick<Invite, 'uses' | 'max_uses'>): string {
  return invite.max_uses ? `${invite.uses} / ${invite.max_uses} uses` : `${invite.uses} use${invite.uses === 1 ? '' : 's'}`;
}
