import { describe, expect, it } from 'vitest';
import { ApiError, NetworkError } from '../../lib/api/errors';
import { authFailure, validateCredentials } from './validation';

describe('auth form validation', () => {
  it('checks the server’s rules on sign-up only', () => {
    expect(validateCredentials('signup', 'a', 'longenough')).toEqual({ username: 'Use 2 to 32 characters.' });
    expect(validateCredentials('signup', 'al ice', 'longenough').username).toMatch(/letters/);
    expect(validateCredentials('signup', '.alice', 'longenough').username).toMatch(/start or end/);
    expect(validateCredentials('signup', 'alice', 'short')).toEqual({ password: 'Use at least 8 characters.' });
    expect(validateCredentials('signup', 'alice', 'longenough')).toEqual({});
    expect(validateCredentials('signin', 'a', 'short')).toEqual({});
    expect(validateCredentials('signin', '', '')).toEqual({ username: 'Enter your username.', password: 'Enter your password.' });
  });

  it('maps server answers to inline errors', () => {
    expect(authFailure('signin', new ApiError(401, 'invalid_credentials', 'x'))).toEqual({ form: 'Wrong username or password.' });
    expect(authFailure('signup', new ApiError(409, 'username_taken', 'x'))).toEqual({ username: 'That username is taken. Try another one.' });
    expect(authFailure('signin', new ApiError(429, 'rate_limited', 'x', 42)).form).toBe('Too many attempts. Try again in 42 seconds.');
    expect(authFailure('signup', new ApiError(422, 'validation_failed', 'password is too weak')).password).toBe('password is too weak');
    expect(authFailure('signin', new NetworkError()).form).toMatch(/Cannot reach/);
  });
});
