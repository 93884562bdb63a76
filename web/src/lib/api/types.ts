/** Names for the REST types the app uses; their shapes come from the server's OpenAPI document. */

import type { components } from './schema';

type Schemas = components['schemas'];

export type User = Schemas['User'];
export type PlatformRole = Schemas['PlatformRole'];
export type AdminUser = Schemas['AdminUser'];
export type AdminUsers = Schemas['AdminUsers'];
export type PlatformStats = Schemas['PlatformStats'];
export type PlatformAction = Schemas['PlatformAction'];
export type PlatformAuditEntry = Schemas['PlatformAuditEntry'];
export type PlatformAuditLog = Schemas['PlatformAuditLog'];
export type Severity = Schemas['Severity'];
export type PlatformBan = Schemas['PlatformBan'];
export type PlatformBans = Schemas['PlatformBans'];
export type NewPlatformBan = Schemas['NewPlatformBan'];
export type BansCreated = Schemas['BansCreated'];
export type AdminSession = Schemas['AdminSession'];
export type AdminSessions = Schemas['AdminSessions'];
export type AdminServer = Schemas['AdminServer'];
export type AdminServers = Schemas['AdminServers'];
export type UserDeleted = Schemas['UserDeleted'];
export type StatsSample = Schemas['StatsSample'];
export type GuestInvite = Schemas['GuestInvite'];
export type GuestJoin = Schemas['GuestJoin'];
export type PublicUser = Schemas['PublicUser'];
export type Credentials = Schemas['Credentials'];
export type AuthResponse = Schemas['AuthResponse'];
export type RefreshResponse = Schemas['Tokens'];
export type Device = Schemas['Device'];
export type SessionInfo = Schemas['SessionInfo'];

// ---- communities (client-core/src/servers.rs). Ids are decimal strings, permissions numbers. ----

export type ChannelKind = Schemas['ChannelKind'];
export type OverwriteKind = Schemas['OverwriteKind'];
export type Overwrite = Schemas['Overwrite'];
export type Server = Schemas['Server'];
export type Role = Schemas['Role'];
export type Channel = Schemas['Channel'];
export type Member = Schemas['Member'];
export type ServerState = Schemas['ServerState'];
export type EditChannel = Schemas['EditChannel'];
export type EditRole = Schemas['EditRole'];
export type Invite = Schemas['Invite'];
export type InvitePreview = Schemas['InvitePreview'];
export type Ban = Schemas['Ban'];
export type NewTimeout = Schemas['NewTimeout'];
export type AuditAction = Schemas['AuditAction'];
export type AuditEntry = Schemas['AuditEntry'];
export type AuditLog = Schemas['AuditLog'];

// Gateway payloads (client-core/src/servers.rs, channel_messages.rs): not in the OpenAPI document.

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

// ---- friends, presence, typing, read states (client-core/src/social.rs) ----

export type Relationship = Schemas['Relationship'];
export type RelationshipKind = Schemas['RelationshipKind'];
export type PresenceStatus = Schemas['PresenceStatus'];
export type CustomStatus = Schemas['CustomStatus'];
export type PresenceSettings = Schemas['PresenceSettings'];
export type Presence = Schemas['Presence'];
export type ReadState = Schemas['ReadState'];
export type DmReadState = Schemas['DmReadState'];
