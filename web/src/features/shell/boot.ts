/**
 * The chat part of the app, loaded after sign-in (a separate chunk, with the WASM engine
 * behind it): opening the engine on this account's local store, the chat session, the shell.
 */

import type { ApiClient } from '../../lib/api/client';
import { Engine } from '../../lib/engine/engine';
import { EngineMissingError, loadEngine } from '../../lib/engine/load';
import { engineErrorKind } from '../../lib/engine/types';
import type { StoredSession } from '../../lib/storage';
import { IdbVault, vaultName } from '../../lib/vault/idb';

export { ChatSession } from './session.svelte';
/** The signed-in screens: the link screen or the recovery key while needed, then the shell. */
export { default as Shell } from '../devices/AccountGate.svelte';

/** Downloads and compiles the engine ahead of its first use. */
export async function preloadEngine(): Promise<void> {
  await loadEngine();
}

/** Opens this account's local store with `passphrase` and the engine over it. */
export async function openEngine(api: ApiClient, session: StoredSession, passphrase: string): Promise<Engine> {
  const mod = await loadEngine();
  const store = await IdbVault.open(vaultName(session.userId));
  try {
    const engine = await Engine.open(mod, {
      store,
      http: api,
      passphrase,
      userId: session.userId,
      deviceId: session.deviceId,
      sessionId: session.sessionId,
    });
    engine.onClose(() => store.close());
    return engine;
  } catch (e) {
    store.close();
    throw e;
  }
}

/** Deletes this account's local store on this browser (history, keys, contacts' identities). */
export function deleteLocalStore(userId: string): Promise<void> {
  return IdbVault.delete(vaultName(userId));
}

/** Whether opening again could work (not when this build has no engine at all). */
export function canRetryOpen(e: unknown): boolean {
  return !(e instanceof EngineMissingError);
}

/** A sentence for a failure to open or start the engine. */
export function describeOpenError(e: unknown): string {
  if (e instanceof EngineMissingError) return e.message;
  const message = e instanceof Error ? e.message : String(e);
  switch (engineErrorKind(e)) {
    case 'store':
      return `This browser's local store could not be used (${message.replace(/^store:\s*/, '')}). Private windows and full disks can cause this.`;
    case 'http':
      return 'The server could not be reached. Check your connection and try again.';
    case 'crypto':
      return `The encryption engine failed: ${message.replace(/^crypto:\s*/, '')}`;
    default:
      return `Something went wrong: ${message}`;
  }
}
