/**
 * The engine's store conformance suite (client-core/src/crypto/conformance.rs, the one the
 * native SQLite store passes) run in Chromium on the app's own IndexedDB store.
 */

import { readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { expect, test } from './fixtures';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');

test('the IndexedDB store passes the engine’s store conformance suite', async ({ browser }) => {
  const glue = readdirSync(join(WEB, 'dist', 'assets')).find((f) => /^copains_web-.*\.js$/.test(f));
  test.skip(!glue, 'this build has no engine (scripts/build-web)');
  // The app's store module as it is, bundled for the page.
  const bundled = await build({ entryPoints: [join(WEB, 'src/lib/vault/idb.ts')], bundle: true, format: 'esm', write: false, target: 'es2022' });
  const code = bundled.outputFiles[0]!.text;

  // The module is handed to the page as a blob: allowed for this test only.
  const context = await browser.newContext({ baseURL: process.env.COPAINS_E2E_BASE_URL, bypassCSP: true });
  const page = await context.newPage();
  await page.goto('/');
  const ran = await page.evaluate(
    async ({ code, gluePath }) => {
      const idb = await import(URL.createObjectURL(new Blob([code], { type: 'text/javascript' })));
      const engine = await import(gluePath);
      await engine.default();
      // The suite opens a name again to check what survives a reopen (a fresh context: nothing is left from before).
      return engine.storeConformance((name: string) => idb.IdbVault.open(`conformance-${name}`)) as Promise<string>;
    },
    { code, gluePath: `/assets/${glue}` },
  );
  const checks = JSON.parse(ran) as string[];
  console.log(`store conformance on IndexedDB: ${checks.length} checks passed`);
  expect(checks.length).toBeGreaterThan(0);
  await context.close();
});
