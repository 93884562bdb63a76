/**
 * The platform administration routes (`/api/v1/admin/`): accounts, their sessions, bans, live
 * figures and the platform audit log. Admins reach all of them; moderators the account and ban
 * routes, on members.
 */

import type { ApiClient } from './client';
import type {
  AdminServer,
  AdminServers,
  AdminSessions,
  AdminUser,
  AdminUsers,
  BansCreated,
  NewPlatformBan,
  PlatformAction,
  PlatformAuditLog,
  PlatformBans,
  PlatformRole,
  PlatformStats,
  Severity,
  UserDeleted,
} from './types';

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
  deleteUser(user: string): Promise<UserDeleted> {
    return this.#api.json('DELETE', `/api/v1/admin/users/${enc(user)}`);
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
  servers(query: { query?: string; cursor?: string; owner_id?: string } = {}): Promise<AdminServers> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
    const q = params.toString();
    return this.#api.json('GET', `/api/v1/admin/servers${q ? `?${q}` : ''}`);
  }
  takeDown(server: string, reason: string | null): Promise<AdminServer> {
    return this.#api.json('POST', `/api/v1/admin/servers/${enc(server)}/take-down`, { reason });
  }
  restore(server: string): Promise<AdminServer> {
    return this.#api.json('POST', `/api/v1/admin/servers/${enc(server)}/restore`);
  }
  stats(): Promise<PlatformStats> {
    return this.#api.json('GET', '/api/v1/admin/stats');
  }
  sessions(user: string): Promise<AdminSessions> {
    return this.#api.json('GET', `/api/v1/admin/users/${enc(user)}/sessions`);
  }
  bans(query: { before?: string } = {}): Promise<PlatformBans> {
    const q = query.before ? `?before=${enc(query.before)}` : '';
    return this.#api.json('GET', `/api/v1/admin/bans${q}`);
  }
  ban(body: NewPlatformBan): Promise<BansCreated> {
    return this.#api.json('POST', '/api/v1/admin/bans', body);
  }
  liftBan(id: string): Promise<void> {
    return this.#api.json('DELETE', `/api/v1/admin/bans/${enc(id)}`);
  }
  auditLog(query: { before?: string; action?: PlatformAction | ''; severity?: Severity | '' } = {}): Promise<PlatformAuditLog> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
    const q = params.toString();
    return this.#api.json('GET', `/api/v1/admin/audit-log${q ? `?${q}` : ''}`);
  }
}
