/** An error answer of the REST API: `{"error": {"code", "message"}}` with a 4xx/5xx status. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds to wait before trying again (429, some 503). */
  readonly retryAfter: number | undefined;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, retryAfter?: number, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.details = details;
  }
}

/** No answer came (offline, server down, connection reset). */
export class NetworkError extends Error {
  constructor(message = 'Cannot reach the server.') {
    super(message);
    this.name = 'NetworkError';
  }
}

/** The login session is over (refresh token refused): the person must sign in again. */
export class SessionEndedError extends Error {
  constructor() {
    super('Your session has ended.');
    this.name = 'SessionEndedError';
  }
}

/** Builds an [`ApiError`] from a status, the body text and the `Retry-After` header. */
export function apiErrorFrom(status: number, body: string, retryAfterHeader?: string | null): ApiError {
  let code = status >= 500 ? 'unavailable' : 'unknown';
  let message = status >= 500 ? 'The server is unavailable. Try again in a moment.' : `Request failed (${status}).`;
  let details: unknown;
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    if (parsed.error && typeof parsed.error.code === 'string') {
      code = parsed.error.code;
      if (typeof parsed.error.message === 'string') message = parsed.error.message;
      details = parsed.error.details;
    }
  } catch {
    // Not JSON (a proxy's error page): keep the generic message.
  }
  const seconds = retryAfterHeader ? Number.parseInt(retryAfterHeader, 10) : Number.NaN;
  return new ApiError(status, code, message, Number.isFinite(seconds) ? seconds : undefined, details);
}

/** "Try again in 1 minute" style text for a `Retry-After` in seconds. */
export function retryText(seconds: number | undefined): string {
  if (seconds === undefined || seconds <= 0) return 'Try again in a moment.';
  if (seconds < 60) return `Try again in ${seconds} second${seconds === 1 ? '' : 's'}.`;
  const minutes = Math.ceil(seconds / 60);
  return `Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`;
}
