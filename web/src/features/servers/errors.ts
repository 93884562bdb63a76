/** Sentences for failed community actions. */

import { ApiError, NetworkError, retryText } from '../../lib/api/errors';

/** What went wrong with a REST action, for a form's error line. */
export function actionError(e: unknown, what = 'That did not work'): string {
  if (e instanceof NetworkError) return 'Cannot reach the server. Check your connection.';
  if (e instanceof ApiError) {
    if (e.status === 403) return `${what}: you do not have the permission.`;
    if (e.status === 404) return `${what}: it does not exist any more, or you are not allowed to see it.`;
    if (e.status === 429) return `Too many requests. ${retryText(e.retryAfter)}`;
    if (e.status >= 500) return 'The server had a problem. Try again in a moment.';
    return e.message || `${what}.`;
  }
  return e instanceof Error ? e.message : `${what}.`;
}
