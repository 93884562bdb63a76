/**
 * The engine's local store in IndexedDB: one database per account on this browser, one object
 * store of opaque records. The engine seals every value and replaces every record name by a
 * keyed hash before it gets here; this code only moves bytes.
 *
 * One database per account (not per device): the engine keeps a device's keys and sessions
 * under that device's own scope inside the store, and the history and contacts' identities
 * outside it, so signing in again as a new device on this browser keeps the conversations.
 */

import type { VaultStore } from '../engine/types';

const STORE = 'records';
const VERSION = 1;

/** IndexedDB takes views of plain (not shared) buffers as keys; the engine's always are. */
function idbKey(bytes: Uint8Array): IDBValidKey {
  return bytes as Uint8Array<ArrayBuffer>;
}

export function vaultName(userId: string): string {
  return `copains-${userId}`;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

export class IdbVault implements VaultStore {
  readonly #db: IDBDatabase;

  private constructor(db: IDBDatabase) {
    this.#db = db;
  }

  static open(name: string, factory: IDBFactory = indexedDB): Promise<IdbVault> {
    return new Promise((resolve, reject) => {
      const req = factory.open(name, VERSION);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE);
      };
      req.onsuccess = () => {
        const db = req.result;
        // Another tab deleting this database ("start fresh") must not wait for us forever.
        db.onversionchange = () => db.close();
        resolve(new IdbVault(db));
      };
      req.onerror = () => reject(req.error ?? new Error('Cannot open the local store'));
      req.onblocked = () => reject(new Error('store: the local store is in use by another tab'));
    });
  }

  /** Deletes an account's local store (its history and keys on this browser). */
  static delete(name: string, factory: IDBFactory = indexedDB): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = factory.deleteDatabase(name);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(req.error ?? new Error('Cannot delete the local store'));
      req.onblocked = () => reject(new Error('The local store is still open in another tab.'));
    });
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    const tx = this.#db.transaction(STORE, 'readonly');
    // The key is read at once: it may be a view of the engine's memory, which can move later.
    const value = await request(tx.objectStore(STORE).get(idbKey(key)));
    if (value === undefined) return undefined;
    return value instanceof Uint8Array ? value : new Uint8Array(value as ArrayBuffer);
  }

  /**
   * Writes and deletes records in one transaction: all or nothing. Resolves once the
   * transaction has committed. "relaxed" durability survives a crash of the browser or tab,
   * not a power cut in the next moments; what such a cut could lose (a ratchet step) the
   * protocol's retry path repairs, and "strict" would add a disk flush to every message.
   */
  writeBatch(putKeys: Uint8Array[], putValues: Uint8Array[], deletes: Uint8Array[]): Promise<void> {
    return new Promise((resolve, reject) => {
      if (putKeys.length !== putValues.length) {
        reject(new Error('store: keys and values differ in number'));
        return;
      }
      let tx: IDBTransaction;
      try {
        tx = this.#db.transaction(STORE, 'readwrite', { durability: 'relaxed' });
      } catch (e) {
        reject(e);
        return;
      }
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error('store: write failed'));
      tx.onabort = () => reject(tx.error ?? new Error('store: write aborted'));
      const store = tx.objectStore(STORE);
      try {
        // Values are copied by IndexedDB's structured clone during put(), synchronously.
        for (let i = 0; i < putKeys.length; i++) store.put(putValues[i], idbKey(putKeys[i]!));
        for (const key of deletes) store.delete(idbKey(key));
      } catch (e) {
        tx.abort();
        reject(e);
      }
    });
  }

  close(): void {
    this.#db.close();
  }
}
