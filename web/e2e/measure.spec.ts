/**
 * The figures: bytes the sign-in screen downloads and the total after sign-in
 * (gzip, as Accept-Encoding: gzip asks), the time to an interactive sign-in form and from
 * sign-in to the conversation list, and browser-to-browser DM latency (p50, p95 over 100
 * messages). Budgets are asserted; figures go to test-results/measurements.json.
 */

import { writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from '@playwright/test';
import {
  composer,
  expect,
  expectShell,
  messages,
  newUser,
  openConversation,
  openDm,
  PASSWORD,
  saveRecoveryKey,
  signOut,
  signUp,
  test,
  uniqueName,
  unlock,
  useRecoveryKey,
} from './fixtures';

const OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'test-results', 'measurements.json');
const figures: Record<string, unknown> = {};

function trackBytes(page: Page) {
  const seen: Array<{ url: string; bytes: number; api: boolean }> = [];
  page.on('requestfinished', async (request) => {
    const sizes = await request.sizes().catch(() => null);
    if (!sizes) return;
    const url = new URL(request.url());
    seen.push({ url: url.pathname, bytes: sizes.responseBodySize + sizes.responseHeadersSize, api: url.pathname.startsWith('/api/') });
  });
  return seen;
}

test.afterAll(() => {
  writeFileSync(OUT, `${JSON.stringify(figures, null, 2)}\n`);
});

test('download budget and time to interactive', async ({ browser }) => {
  const context = await browser.newContext({ baseURL: process.env.COPAINS_E2E_BASE_URL, extraHTTPHeaders: { 'accept-encoding': 'gzip' } });
  const page = await context.newPage();
  const seen = trackBytes(page);

  const t0 = Date.now();
  await page.goto('/');
  await expect(page.getByLabel('Username', { exact: true })).toBeEditable();
  const toForm = Date.now() - t0;
  await page.waitForLoadState('networkidle');
  const signInBytes = seen.reduce((n, r) => n + r.bytes, 0);
  const before = seen.length;

  await page.getByRole('button', { name: 'Create an account' }).click();
  const username = uniqueName('size');
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  const t1 = Date.now();
  await page.getByRole('button', { name: 'Create account', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Save your recovery key' })).toBeVisible({ timeout: 30_000 });
  const toRecoveryKey = Date.now() - t1;
  const recoveryKey = await saveRecoveryKey(page);
  await expectShell(page);
  await page.waitForLoadState('networkidle');
  const after = seen.slice(before);
  const appBytes = after.filter((r) => !r.api).reduce((n, r) => n + r.bytes, 0);
  const apiBytes = after.filter((r) => r.api).reduce((n, r) => n + r.bytes, 0);

  // Sign out and in again: the time from the sign-in button to the link screen (a new device
  // is pending), then from the recovery key to the conversation list.
  await signOut(page);
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  const t2 = Date.now();
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Approve this browser' })).toBeVisible({ timeout: 30_000 });
  const signInToLink = Date.now() - t2;
  const t3 = Date.now();
  await useRecoveryKey(page, recoveryKey);
  await expect(page.getByRole('navigation', { name: 'Direct messages' })).toBeVisible({ timeout: 30_000 });
  const recoveryKeyToList = Date.now() - t3;
  await expectShell(page);

  Object.assign(figures, {
    sign_in_to_link_screen_ms: signInToLink,
    recovery_key_to_dm_list_ms: recoveryKeyToList,
    sign_in_screen_bytes: signInBytes,
    after_sign_in_app_bytes: appBytes,
    after_sign_in_api_bytes: apiBytes,
    total_app_bytes: signInBytes + appBytes,
    navigation_to_sign_in_form_ms: toForm,
    sign_up_to_recovery_key_ms: toRecoveryKey,
    files: seen.filter((r) => !r.api).map((r) => `${r.url} ${r.bytes}`),
  });
  console.log(
    `sign-in screen: ${(signInBytes / 1024).toFixed(1)} KiB; after sign-in: ${(appBytes / 1024).toFixed(1)} KiB (+${(apiBytes / 1024).toFixed(1)} KiB API); ` +
      `form in ${toForm} ms; sign-up to recovery key in ${toRecoveryKey} ms; sign-in to link screen in ${signInToLink} ms; recovery key to list in ${recoveryKeyToList} ms`,
  );
  expect(signInBytes).toBeLessThanOrEqual(150 * 1024);
  expect(signInBytes + appBytes).toBeLessThanOrEqual(1024 * 1024);
  await context.close();
});

test('browser-to-browser DM latency over 100 messages', async ({ browser }) => {
  test.setTimeout(300_000);
  const alice = uniqueName('lat');
  const bob = uniqueName('lat');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(a.page, alice);
  await signUp(b.page, bob);
  await openDm(a.page, bob);
  await composer(a.page).fill('warm-up');
  await composer(a.page).press('Enter');
  await openConversation(b.page, new RegExp(alice));
  await expect(messages(b.page).getByText('warm-up')).toBeVisible({ timeout: 30_000 });

  // B notes when each text appears on its page.
  await b.page.evaluate(() => {
    const seen: Record<string, number> = {};
    (window as unknown as { __seen: Record<string, number> }).__seen = seen;
    new MutationObserver(() => {
      for (const el of document.querySelectorAll('li p')) {
        const text = el.textContent ?? '';
        if (text.startsWith('lat-') && !(text in seen)) seen[text] = Date.now();
      }
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });

  const sentAt: Record<string, number> = {};
  for (let i = 0; i < 100; i++) {
    const text = `lat-${i}`;
    await composer(a.page).fill(text);
    sentAt[text] = Date.now();
    await composer(a.page).press('Enter');
    await b.page.waitForFunction((t) => (window as unknown as { __seen: Record<string, number> }).__seen[t] !== undefined, text);
  }
  const seen = await b.page.evaluate(() => (window as unknown as { __seen: Record<string, number> }).__seen);
  const latencies = Object.keys(sentAt)
    .map((t) => (seen[t] ?? Number.NaN) - sentAt[t]!)
    .sort((x, y) => x - y);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
  Object.assign(figures, { dm_latency_ms: { p50: pct(50), p95: pct(95), max: latencies[latencies.length - 1], n: latencies.length } });
  console.log(`DM latency over ${latencies.length} messages: p50 ${pct(50)} ms, p95 ${pct(95)} ms`);
  expect(latencies.every((l) => Number.isFinite(l))).toBe(true);

  // After a reload, the history comes back a page at a time as B scrolls up.
  await b.page.reload();
  await unlock(b.page);
  await expectShell(b.page);
  await openConversation(b.page, new RegExp(alice));
  const list = messages(b.page);
  await expect(list.getByText('lat-99', { exact: true })).toBeVisible();
  await expect(list.getByText('warm-up')).toHaveCount(0);
  for (let i = 0; i < 10 && (await list.getByText('warm-up').count()) === 0; i++) {
    await list.evaluate((el) => el.scrollTo({ top: 0 }));
    await b.page.waitForTimeout(300);
  }
  await expect(list.getByText('warm-up')).toBeVisible();
  await expect(list.getByText(/This is the beginning of your direct messages/)).toBeVisible();
  // Every message once, in order.
  const shown = await list.locator('li p').allTextContents();
  const lat = shown.map((t) => t.trim()).filter((t) => t.startsWith('lat-'));
  expect(lat).toEqual(Array.from({ length: 100 }, (_, i) => `lat-${i}`));
  await a.context.close();
  await b.context.close();
});

