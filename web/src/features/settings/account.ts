/** The account's REST calls used by the settings screens. */

import type { ApiClient } from '../../lib/api/client';
import type { Device, SessionInfo, User } from '../../lib/api/types';

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

export function listDevices(api: ApiClient): Promise<Device[]> {
  return api.json<Device[]>('GET', '/api/v1/users/@me/devices');
}

export function renameDevice(api: ApiClient, id: number, name: string): Promise<Device> {
  return api.json<Device>('PATCH', `/api/v1/users/@me/devices/${id}`, { name });
}

/** Removes a device: its login session ends, its keys and its queue are deleted. */
export function removeDevice(api: ApiClient, id: number): Promise<void> {
  return api.json<void>('DELETE', `/api/v1/users/@me/devices/${id}`);
}

export interface DeviceRow {
  device: Device;
  session: SessionInfo | null;
  current: boolean;
}

/** Devices with their login session, the current one first, then the most recently seen. */
export function deviceRows(devices: readonly Device[], sessions: readonly SessionInfo[]): DeviceRow[] {
  const rows = devices.map((device) => {
    const session = sessions.find((s) => s.device.id === device.id) ?? null;
    return { device, session, current: session?.current ?? false };
  });
  return rows.sort((a, b) => {
    if (a.current !== b.current) return a.current ? -1 : 1;
    return Date.parse(b.device.last_seen_at) - Date.parse(a.device.last_seen_at);
  });
}
