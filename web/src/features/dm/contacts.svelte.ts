/** Other people's public profiles, fetched once per session and kept by id. */

import type { ApiClient } from '../../lib/api/client';
import { ApiError } from '../../lib/api/errors';
import type { PublicUser } from '../../lib/api/types';
import { displayName } from '../../lib/format';

export class Contacts {
  byId = $state<Record<string, PublicUser>>({});
  readonly #api: ApiClient;
  readonly #asked = new Set<string>();

  constructor(api: ApiClient) {
    this.#api = api;
  }

  /** The name to show for a user id (the profile is fetched on first use). */
  name(id: string): string {
    const user = this.byId[id];
    if (!user) this.ensure(id);
    return displayName(user, 'Loading…');
  }

  ensure(id: string): void {
    if (this.#asked.has(id) || this.byId[id]) return;
    this.#asked.add(id);
    this.#api
      .json<PublicUser>('GET', `/api/v1/users/${encodeURIComponent(id)}`)
      .then((user) => this.put(user))
      .catch(() => {
        // Asked again later (next session, or a USER_UPDATE brings it).
        setTimeout(() => this.#asked.delete(id), 30_000);
      });
  }

  put(user: PublicUser): void {
    this.byId[user.id] = user;
  }

  /** An exact username → the user, or null when there is none. */
  async lookup(username: string): Promise<PublicUser | null> {
    try {
      const user = await this.#api.json<PublicUser>('GET', `/api/v1/users/lookup?username=${encodeURIComponent(username)}`);
      this.put(user);
      return user;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }
}
