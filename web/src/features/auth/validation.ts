/** What the sign-in and sign-up forms say about their input and about the server's answers. */

import { ApiError, NetworkError, retryText } from '../../lib/api/errors';

export type AuthMode = 'signin' | 'signup';

export interface FormErrors {
  username?: string;
  password?: string;
  /** About the whole form (wrong credentials, rate limits, the server). */
  form?: string;
}

const USERNAME = /^[A-Za-z0-9_.-]{2,32}$/;

/** The server's rules (docs/api.md), checked before asking it. */
export function validateCredentials(mode: AuthMode, username: string, password: string): FormErrors {
  const errors: FormErrors = {};
  if (!username) errors.username = 'Enter your username.';
  else if (mode === 'signup') {
    if (username.length < 2 || username.length > 32) errors.username = 'Use 2 to 32 characters.';
    else if (!USERNAME.test(username)) errors.username = 'Use only letters, digits, and _ . -';
    else if (/^[.-]|[.-]$/.test(username)) errors.username = 'Do not start or end with . or -';
  }
  if (!password) errors.password = 'Enter your password.';
  else if (mode === 'signup') {
    if (password.length < 8) errors.password = 'Use at least 8 characters.';
    else if (new TextEncoder().encode(password).length > 1024) errors.password = 'Use at most 1024 bytes.';
  }
  return errors;
}

export function passwordRuleError(password: string): string | undefined {
  if (password.length < 8) return 'Use at least 8 characters.';
  if (new TextEncoder().encode(password).length > 1024) return 'Use at most 1024 bytes.';
  return undefined;
}

/** The inline errors for a failed sign-in or sign-up. */
export function authFailure(mode: AuthMode, e: unknown): FormErrors {
  if (e instanceof NetworkError) return { form: 'Cannot reach the server. Check your connection and try again.' };
  if (!(e instanceof ApiError)) return { form: 'Something went wrong. Try again.' };
  switch (e.code) {
    case 'invalid_credentials':
      return { form: 'Wrong username or password.' };
    case 'username_taken':
      return { username: 'That username is taken. Try another one.' };
    case 'account_disabled':
      return { form: 'This account is disabled.' };
    case 'banned': {
      const until = (e.details as { until?: unknown } | undefined)?.until;
      const when = typeof until === 'number' ? ` until ${new Date(until).toLocaleString()}` : '';
      return { form: mode === 'signin' && /account/.test(e.message) ? `This account is banned from this server${when}.` : `Sign-ups and sign-ins from this device are banned${when}.` };
    }
    case 'rate_limited':
      return { form: `Too many attempts. ${retryText(e.retryAfter)}` };
    case 'too_many_devices':
      return { form: 'This account has too many devices. Remove one from another device, then try again.' };
    case 'validation_failed':
      if (/password/i.test(e.message)) return { password: e.message };
      if (/username/i.test(e.message)) return { username: e.message };
      return { form: e.message };
    case 'unavailable':
      return { form: `The server is busy. ${retryText(e.retryAfter)}` };
    default:
      return { form: mode === 'signin' ? `Could not sign in: ${e.message}` : `Could not create the account: ${e.message}` };
  }
}
