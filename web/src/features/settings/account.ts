/** The account's REST calls used by the settings screens. */

import type { ApiClient } from '../../lib/api/client';
import type { Device, SessionInfo, User } from '../../lib/api/types';
import type { OwnDevice } from '../../lib/engine/types';
import { toMs } from '../devices/codes';

export function updateProfile(api: ApiClient, patch: { display_name?: string | null; status_text?: string | null }): Promise<User> {
  return api.json<User>('PATCH', '/api/v1/users/@me', patch);
}

export function changePassword(api: ApiClient, currentPassword: string, newPassword: string): Promise<void> {
  return api.json<void>('POST', '/api/v1/users/@me/password', {
    current_password: currentPassword,
    new_password: newPassword,
  });
}

export function listSessions(api: ApiClient): Promise<SessionInfo[]> {
  return api.json<SessionInfo[]>('GET', '/api/v1/users/@me/sessions');
}

export function renameDevice(api: ApiClient, id: number, name: string): Promise<Device> {
  return api.json<Device>('PATCH', `/api/v1/users/@me/devices/${id}`, { name });
}

/** One of the account's devices as the devices screen lists it. */
export interface OwnDeviceRow {
  id: number;
  name: string;
  /** In the signed device list this device verified. */
  linked: boolean;
  current: boolean;
  createdAt: number;
  lastSeenAt: number;
  session: SessionInfo | null;
}

/** The account's devices (the engine's view) with their login sessions: this one first, then linked ones, then the most recently seen. */
export function ownDeviceRows(devices: readonly OwnDevice[], sessions: readonly SessionInfo[]): OwnDeviceRow[] {
  const rows = devices.map((d) => ({
    id: d.id,
    name: d.name,
    linked: d.linked,
    current: d.current,
    createdAt: toMs(d.created_at),
    lastSeenAt: toMs(d.last_seen_at),
    session: sessions.find((s) => s.device.id === d.id) ?? null,
  }));
  return rows.sort((a, b) => {
    if (a.current !== b.current) return a.current ? -1 : 1;
    if (a.linked !== b.linked) return a.linked ? -1 : 1;
    return (b.lastSeenAt || 0) - (a.lastSeenAt || 0);
  });
}
