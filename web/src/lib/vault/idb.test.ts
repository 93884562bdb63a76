import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { IdbVault, vaultName } from './idb';

const b = (s: string) => new TextEncoder().encode(s);
const text = (v: Uint8Array | undefined) => (v ? new TextDecoder().decode(v) : undefined);

describe('IdbVault', () => {
  it('stores, reads, overwrites and deletes opaque records in one batch', async () => {
    const vault = await IdbVault.open(vaultName('1'));
    await vault.writeBatch([b('k1'), b('k2')], [b('v1'), b('v2')], []);
    expect(text(await vault.get(b('k1')))).toBe('v1');
    await vault.writeBatch([b('k1')], [b('v1b')], [b('k2')]);
    expect(text(await vault.get(b('k1')))).toBe('v1b');
    expect(await vault.get(b('k2'))).toBeUndefined();
    vault.close();
  });

  it('writes all of a batch or none of it', async () => {
    const vault = await IdbVault.open(vaultName('2'));
    await vault.writeBatch([b('a')], [b('1')], []);
    // An invalid key (a plain object) fails the put: the whole transaction is rolled back.
    await expect(
      vault.writeBatch([b('a'), { bad: true } as unknown as Uint8Array], [b('2'), b('3')], []),
    ).rejects.toBeTruthy();
    expect(text(await vault.get(b('a')))).toBe('1');
    vault.close();
  });

  it('keeps records across opens and deletes the whole store', async () => {
    const name = vaultName('3');
    const vault = await IdbVault.open(name);
    await vault.writeBatch([b('x')], [b('y')], []);
    vault.close();
    const again = await IdbVault.open(name);
    expect(text(await again.get(b('x')))).toBe('y');
    again.close();
    await IdbVault.delete(name);
    const fresh = await IdbVault.open(name);
    expect(await fresh.get(b('x'))).toBeUndefined();
    fresh.close();
  });
});
