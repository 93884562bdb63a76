/**
 * The app's places as URL paths, as Discord names them: `/channels/@me` (direct messages),
 * `/channels/@me/{id}` (a conversation with a user, or a group DM), `/channels/{server}` and
 * `/channels/{server}/{channel}`, `/friends`, and `/invite/{code}` (an invite's preview and Join).
 */

export type Route =
  | { name: 'home' }
  /** The friends page (also what the DM home shows on a wide screen). */
  | { name: 'friends' }
  /** A DM (the id is a user's) or a group DM (a channel's): told apart once the group DMs are known. */
  | { name: 'me'; id: string }
  | { name: 'server'; server: string; channel: string | null }
  | { name: 'invite'; code: string };

const ID = /^\d{1,20}$/;
const CODE = /^[A-Za-z0-9_-]{1,64}$/;

/** The route of a path (anything unknown is the DM home). */
export function parseRoute(path: string): Route {
  const parts = path.split(/[?#]/)[0]!.split('/').filter(Boolean).map(safeDecode);
  if (parts[0] === 'invite' && parts[1] && CODE.test(parts[1])) return { name: 'invite', code: parts[1] };
  if (parts[0] === 'friends' && parts.length === 1) return { name: 'friends' };
  if (parts[0] === 'channels') {
    if (parts[1] === '@me') return parts[2] && ID.test(parts[2]) ? { name: 'me', id: parts[2] } : { name: 'home' };
    if (parts[1] && ID.test(parts[1])) {
      return { name: 'server', server: parts[1], channel: parts[2] && ID.test(parts[2]) ? parts[2] : null };
    }
  }
  return { name: 'home' };
}

export function routePath(route: Route): string {
  switch (route.name) {
    case 'home':
      return '/channels/@me';
    case 'friends':
      return '/friends';
    case 'me':
      return `/channels/@me/${route.id}`;
    case 'server':
      return route.channel ? `/channels/${route.server}/${route.channel}` : `/channels/${route.server}`;
    case 'invite':
      return `/invite/${encodeURIComponent(route.code)}`;
  }
}

export function sameRoute(a: Route, b: Route): boolean {
  return routePath(a) === routePath(b);
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}
