/**
 * Mentions in message text: what the composer turns `@name` into (`<@user id>`, `<@&role id>`;
 * `@everyone` stays), how a text is cut into text and mention parts to draw, and whether a
 * message's declared mentions concern this user.
 */

export interface Person {
  id: string;
  username: string;
}

export interface NamedRole {
  id: string;
  name: string;
}

export interface Mentions {
  users?: string[];
  roles?: string[];
  everyone?: boolean;
}

const AT = /(^|[\s(])@([A-Za-z0-9_.-]{1,32})/g;

/** Replaces `@username` (any case) and `@role` (a role name without spaces) by their tokens. */
export function encodeMentions(text: string, people: readonly Person[], roles: readonly NamedRole[] = []): string {
  const byName = new Map(people.map((p) => [p.username.toLowerCase(), p.id]));
  const byRole = new Map(roles.filter((r) => !/\s/.test(r.name)).map((r) => [r.name.toLowerCase(), r.id]));
  return text.replace(AT, (whole, before: string, name: string) => {
    const key = name.toLowerCase();
    if (key === 'everyone') return whole;
    const user = byName.get(key);
    if (user) return `${before}<@${user}>`;
    const role = byRole.get(key);
    if (role) return `${before}<@&${role}>`;
    return whole;
  });
}

export type Part = { kind: 'text'; text: string } | { kind: 'user'; id: string } | { kind: 'role'; id: string } | { kind: 'everyone' };

// As client-core reads them: an id without a leading zero, `@everyone` as a word of its own.
const TOKEN = /<@(&?)(0|[1-9]\d{0,19})>|(?<![\p{L}\p{N}_.])@everyone(?![\p{L}\p{N}_])/gu;

/** The text cut into plain runs and mentions. */
export function mentionParts(text: string): Part[] {
  const parts: Part[] = [];
  let last = 0;
  for (const m of text.matchAll(TOKEN)) {
    const at = m.index ?? 0;
    if (at > last) parts.push({ kind: 'text', text: text.slice(last, at) });
    if (m[0] === '@everyone') parts.push({ kind: 'everyone' });
    else parts.push(m[1] ? { kind: 'role', id: m[2]! } : { kind: 'user', id: m[2]! });
    last = at + m[0].length;
  }
  if (last < text.length) parts.push({ kind: 'text', text: text.slice(last) });
  return parts;
}

/** The mentions a text makes (what a decrypted message is judged by: not its declaration). */
export function mentionsInText(text: string): Mentions {
  const out: Required<Mentions> = { users: [], roles: [], everyone: false };
  for (const part of mentionParts(text)) {
    if (part.kind === 'everyone') out.everyone = true;
    else if (part.kind === 'user' && !out.users.includes(part.id)) out.users.push(part.id);
    else if (part.kind === 'role' && !out.roles.includes(part.id)) out.roles.push(part.id);
  }
  return out;
}

/** Whether declared mentions reach `me` (by name, by one of `myRoles`, or everyone). */
export function mentionsMe(mentions: Mentions | null | undefined, me: string, myRoles: readonly string[] = []): boolean {
  if (!mentions) return false;
  if (mentions.everyone) return true;
  if (mentions.users?.includes(me)) return true;
  return (mentions.roles ?? []).some((r) => myRoles.includes(r));
}

/** The same text with tokens as names (previews, notifications, replies). */
export function plainMentions(text: string, name: (id: string) => string, role: (id: string) => string): string {
  return mentionParts(text)
    .map((p) => (p.kind === 'text' ? p.text : p.kind === 'user' ? `@${name(p.id)}` : p.kind === 'role' ? `@${role(p.id)}` : '@everyone'))
    .join('');
}
