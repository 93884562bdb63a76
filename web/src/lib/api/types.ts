/** Names for the REST types the app uses; their shapes come from the server's OpenAPI document. */

import type { components } from './schema';

type Schemas = components['schemas'];

export type User = Schemas['User'];
export type PublicUser = Schemas['PublicUser'];
export type Credentials = Schemas['Credentials'];
export type AuthResponse = Schemas['AuthResponse'];
export type RefreshResponse = Schemas['Tokens'];
export type Device = Schemas['Device'];
export type SessionInfo = Schemas['SessionInfo'];

// ---- communities (client-core/src/servers.rs). Ids are decimal strings, permissions numbers. ----

export type ChannelKind = 'text' | 'voice' | 'category' | 'group_dm';
export type OverwriteKind = 'role' | 'member';

export interface Overwrite {
  /** The role's or the member's id. */
  id: string;
  kind: OverwriteKind;
  allow: number;
  deny: number;
}

export interface Server {
  id: string;
  name: string;
  owner_id: string;
  created_at: number;
  member_count: number;
}

export interface Role {
  id: string;
  server_id: string;
  name: string;
  color: number;
  position: number;
  permissions: number;
  hoist: boolean;
}

export interface Channel {
  id: string;
  server_id: string | null;
  name: string;
  kind: ChannelKind;
  parent_id: string | null;
  position: number;
  topic: string | null;
  overwrites: Overwrite[];
  recipients?: PublicUser[];
  owner_id?: string | null;
  last_message_id: string | null;
}

export interface Member {
  user: PublicUser;
  server_id: string;
  roles: string[];
  joined_at: number;
}

export interface ServerState {
  server: Server;
  roles: Role[];
  channels: Channel[];
  me: Member;
}

export interface EditChannel {
  name?: string;
  topic?: string;
  position?: number;
  parent_id?: string | null;
  overwrites?: Overwrite[];
}

export interface EditRole {
  name?: string;
  color?: number;
  permissions?: number;
  position?: number;
  hoist?: boolean;
}

export interface Invite {
  code: string;
  server_id: string;
  inviter_id: string;
  uses: number;
  max_uses: number | null;
  expires_at: number | null;
  created_at: number;
}

export interface InvitePreview {
  code: string;
  server_id: string;
  server_name: string;
  member_count: number;
  inviter: PublicUser;
  expires_at: number | null;
}

export interface Ban {
  user: PublicUser;
  reason: string | null;
  moderator_id: string;
  created_at: number;
  expires_at: number | null;
}

/** SERVER_DELETE, CHANNEL_DELETE, ROLE_DELETE. */
export interface Removed {
  id: string;
  server_id?: string | null;
}

/** MEMBER_REMOVE. */
export interface MemberRemoved {
  server_id: string;
  user_id: string;
}

/** PINS_UPDATE. */
export interface PinUpdate {
  channel_id: string;
  message_id: string;
  pinned: boolean;
}
