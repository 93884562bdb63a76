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
