/**
 * The platform administration routes (`/api/v1/admin/`): accounts, live figures and the
 * platform audit log. Admins reach all of them; moderators the account routes, on members.
 */

import type { ApiClient } from './client';
import type { AdminUser, AdminUsers, PlatformAction, PlatformAuditLog, PlatformRole, PlatformStats } from './types';

const enc = encodeURIComponent;

export class AdminApi {
  readonly #api: ApiClient;

  constructor(api: ApiClient) {
    this.#api = api;
  }

  users(query: { query?: string; cursor?: string; limit?: number } = {}): Promise<AdminUsers> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
    const q = params.toString();
    return this.#api.json('GET', `/api/v1/admin/users${q ? `?${q}` : ''}`);
  }
  user(id: string): Promise<AdminUser> {
    return this.#api.json('GET', `/api/v1/admin/users/${enc(id)}`);
  }
  disable(user: string): Promise<void> {
    return this.#api.json('POST', `/api/v1/admin/users/${enc(user)}/disable`);
  }
  enable(user: string): Promise<void> {
    return this.#api.json('POST', `/api/v1/admin/users/${enc(user)}/enable`);
  }
  logout(user: string): Promise<void> {
    return this.#api.json('POST', `/api/v1/admin/users/${enc(user)}/logout`);
  }
  setRole(user: string, role: PlatformRole): Promise<AdminUser> {
    return this.#api.json('PUT', `/api/v1/admin/users/${enc(user)}/role`, { role });
  }
  stats(): Promise<PlatformStats> {
    return this.#api.json('GET', '/api/v1/admin/stats');
  }
  auditLog(query: { before?: string; action?: PlatformAction | '' } = {}): Promise<PlatformAuditLog> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
    const q = params.toString();
    return this.#api.json('GET', `/api/v1/admin/audit-log${q ? `?${q}` : ''}`);
  }
}
