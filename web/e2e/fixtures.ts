/** What the browser tests share: the server's address, sign-up/sign-in steps, screenshots. */

import { test as base, expect, type Browser, type BrowserContext, type Locator, type Page } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SHOTS = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'test-results', 'screenshots');

/** Uncaught errors of the pages a test opened: a test fails if there is one. */
const pageErrors: string[] = [];

function watchErrors(page: Page): void {
  page.on('pageerror', (error) => pageErrors.push(`${error.name}: ${error.message}`));
}

export const test = base.extend<{ noPageErrors: void }>({
  // The global setup started the server on a free port and left its address here.
  baseURL: async ({}, use) => {
    const url = process.env.COPAINS_E2E_BASE_URL;
    if (!url) throw new Error('COPAINS_E2E_BASE_URL is not set: run through playwright.config.ts');
    await use(url);
  },
  page: async ({ page }, use) => {
    watchErrors(page);
    await use(page);
  },
  noPageErrors: [
    async ({}, use) => {
      pageErrors.length = 0;
      await use();
      expect(pageErrors, 'uncaught errors in the page').toEqual([]);
    },
    { auto: true },
  ],
});
export { expect };

export const PASSWORD = 'correct horse battery';

let counter = 0;
/** A username no earlier run used. */
export function uniqueName(prefix: string): string {
  counter += 1;
  return `${prefix}${Date.now().toString(36).slice(-5)}${counter}`;
}

export const PHONE = { width: 360, height: 740 };
export const WIDE = { width: 1440, height: 900 };

export async function newUser(browser: Browser, viewport = WIDE, userAgent?: string): Promise<{ context: BrowserContext; page: Page }> {
  // A user agent of its own makes a device of its own for the server (bans name address and agent).
  const context = await browser.newContext({ viewport, baseURL: process.env.COPAINS_E2E_BASE_URL, ...(userAgent ? { userAgent } : {}) });
  const page = await context.newPage();
  watchErrors(page);
  return { context, page };
}

/** Creates an account (its recovery key written down on the way); returns the recovery key. */
export async function signUp(page: Page, username: string, password = PASSWORD): Promise<string> {
  await page.goto('/');
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Create account', exact: true }).click();
  const key = await saveRecoveryKey(page);
  await expectShell(page);
  return key;
}

/** The recovery key shown in `scope` ("ABCD-EFGH-…"). */
export async function readRecoveryKey(scope: Page | Locator): Promise<string> {
  const groups = await scope.getByRole('group', { name: 'Recovery key' }).locator('span').allTextContents();
  expect(groups.length).toBeGreaterThan(1);
  return groups.map((g) => g.trim()).join('-');
}

/** Passes the recovery key screen (after sign-up or a reset), typing its last two groups; returns the key. */
export async function saveRecoveryKey(page: Page, continueLabel = 'Continue to LesCopains'): Promise<string> {
  await expect(page.getByRole('heading', { name: /Save your (new )?recovery key/ })).toBeVisible({ timeout: 30_000 });
  const key = await readRecoveryKey(page);
  await page.getByRole('button', { name: 'I have written it down' }).click();
  await page.getByLabel('Last two groups').fill(key.split('-').slice(-2).join('-'));
  await page.getByRole('button', { name: continueLabel }).click();
  return key;
}

/** The code a pending browser shows on its "Approve this browser" screen. */
export async function linkCode(page: Page): Promise<string> {
  await expect(page.getByRole('heading', { name: 'Approve this browser' })).toBeVisible({ timeout: 30_000 });
  const code = page.locator('[data-code]');
  await expect(code).toHaveAttribute('data-code', /^\d{4}\D?\d{4}$/, { timeout: 30_000 });
  return (await code.getAttribute('data-code')) ?? '';
}

/** A linked browser's approval dialog. */
export function approvalDialog(page: Page) {
  return page.getByRole('dialog', { name: 'Approve a new device?' });
}

/** Approves a pending browser's `code` from the linked browser `linked`, until it shows "Device linked". */
export async function approve(linked: Page, code: string): Promise<void> {
  const dialog = approvalDialog(linked);
  await expect(dialog).toBeVisible({ timeout: 30_000 });
  await dialog.getByLabel('Code shown on the new device').fill(code);
  await dialog.getByRole('button', { name: 'Approve', exact: true }).click();
  const done = linked.getByRole('dialog', { name: 'Device linked' });
  await expect(done).toBeVisible({ timeout: 30_000 });
  await done.getByRole('button', { name: 'Done' }).click();
  await expect(done).toBeHidden();
}

/** Signs `page` (a browser new to the account) in, and approves it from the linked browser `from`. */
export async function signInApproved(page: Page, from: Page, username: string, password = PASSWORD): Promise<void> {
  await page.goto('/');
  await signIn(page, username, password);
  await approve(from, await linkCode(page));
  await expectShell(page);
}

/** A pending browser links itself with the recovery key. */
export async function useRecoveryKey(page: Page, key: string): Promise<void> {
  await expect(page.getByRole('heading', { name: 'Approve this browser' })).toBeVisible({ timeout: 30_000 });
  await page.getByRole('button', { name: 'Use your recovery key instead' }).click();
  await page.getByLabel('Recovery key', { exact: true }).fill(key);
  await page.getByRole('button', { name: 'Link with recovery key' }).click();
}

/** Signs in again on a browser that signed out (a new device, pending): the recovery key links it. */
export async function signInAgain(page: Page, username: string, recoveryKey: string, password = PASSWORD): Promise<void> {
  await signIn(page, username, password);
  await useRecoveryKey(page, recoveryKey);
  await expectShell(page);
}

/**
 * A pending browser whose account lost every device and the recovery key: resets the account's
 * identity with the password; returns the new recovery key (written down on the way).
 */
export async function resetIdentity(page: Page, password = PASSWORD): Promise<string> {
  await expect(page.getByRole('heading', { name: 'Approve this browser' })).toBeVisible({ timeout: 30_000 });
  await page.getByRole('button', { name: 'I lost all my devices and my recovery key' }).click();
  await page.getByLabel('Your password').fill(password);
  await page.getByRole('button', { name: "Reset my account's identity…" }).click();
  await page.getByRole('dialog', { name: "Reset your account's identity?" }).getByRole('button', { name: 'Reset and get a new recovery key' }).click();
  const key = await saveRecoveryKey(page);
  await expectShell(page);
  return key;
}

export async function signIn(page: Page, username: string, password = PASSWORD): Promise<void> {
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

export async function unlock(page: Page, password = PASSWORD): Promise<void> {
  await expect(page.getByRole('heading', { name: 'Unlock your messages' })).toBeVisible();
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Unlock', exact: true }).click();
}

/** The app shell is up and connected. */
export async function expectShell(page: Page): Promise<void> {
  await expect(page.getByRole('navigation', { name: 'Servers' })).toBeVisible({ timeout: 30_000 });
  await expect(page.getByRole('status').filter({ hasText: 'Connection: Online' })).toBeAttached({ timeout: 30_000 });
}

export async function openDm(page: Page, username: string): Promise<void> {
  await page.getByRole('button', { name: 'New message' }).first().click();
  const dialog = page.getByRole('dialog', { name: 'New message' });
  await dialog.getByLabel('Username', { exact: true }).fill(username);
  await dialog.getByRole('button', { name: 'Open conversation' }).click();
  await expect(dialog).toBeHidden();
}

export function composer(page: Page) {
  return page.getByRole('textbox', { name: /^Message / });
}

export async function send(page: Page, text: string): Promise<void> {
  await composer(page).fill(text);
  await composer(page).press('Enter');
}

export function messages(page: Page) {
  return page.getByRole('region', { name: /^Messages with / });
}

export async function openConversation(page: Page, name: string | RegExp): Promise<void> {
  await page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name }).click();
}

/** Safety number digits shown for a contact, from the privacy settings. */
export async function safetyNumber(page: Page, contact: string): Promise<string> {
  const group = page.getByRole('group', { name: `Safety number with ${contact}`, exact: true });
  await expect(group).toBeVisible();
  return ((await group.textContent()) ?? '').replace(/\D/g, '');
}

export function settingsDialog(page: Page) {
  return page.getByRole('dialog', { name: 'User settings' });
}

export async function openSettings(page: Page, tab?: string): Promise<void> {
  await page.getByRole('button', { name: 'User settings' }).click();
  await expect(page.getByRole('dialog', { name: 'User settings' })).toBeVisible();
  if (tab) await page.getByRole('tab', { name: tab }).click();
}

export async function closeSettings(page: Page): Promise<void> {
  await page.keyboard.press('Escape');
  await expect(page.getByRole('dialog', { name: 'User settings' })).toBeHidden();
}

export async function signOut(page: Page): Promise<void> {
  await openSettings(page);
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.getByRole('button', { name: 'Yes, sign out' }).click();
  await expect(page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible();
}

/** Saves a screenshot under test-results/screenshots/. */
export async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  // Let transitions settle (the drawer, focus rings).
  await page.waitForTimeout(250);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

/** Runs axe on the page; fails on serious or critical violations. */
export async function checkA11y(page: Page, screen: string): Promise<void> {
  const results = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']).analyze();
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const summary = bad.map((v) => `${v.id} (${v.impact}): ${v.help}\n  ${v.nodes.map((n) => n.target.join(' ')).join('\n  ')}`).join('\n');
  expect(bad, `accessibility violations on ${screen}:\n${summary}`).toEqual([]);
}


export interface CaptureOptions {
  /** Also in the phone layout (360 px). */
  phone?: boolean;
  /** Also in dark mode. */
  dark?: boolean;
}

/**
 * Checks a screen with axe and saves its screenshots: light and wide always; dark and phone
 * when asked (each combination is checked: contrast differs between the themes).
 */
export async function capture(page: Page, name: string, options: CaptureOptions = {}): Promise<void> {
  const viewport = page.viewportSize() ?? WIDE;
  const schemes: Array<'light' | 'dark'> = options.dark === false ? ['light'] : ['light', 'dark'];
  const sizes: Array<['wide' | 'phone', { width: number; height: number }]> = [['wide', viewport]];
  if (options.phone) sizes.push(['phone', PHONE]);
  for (const scheme of schemes) {
    // Without motion, a theme switch takes effect at once: axe must not read a colour halfway
    // through a transition (the app's CSS honours the setting).
    await page.emulateMedia({ colorScheme: scheme, reducedMotion: 'reduce' });
    for (const [size, vp] of sizes) {
      await page.setViewportSize(vp);
      await checkA11y(page, `${name} (${scheme}, ${size})`);
      await shot(page, `${name}-${scheme}-${size}`);
    }
  }
  await page.setViewportSize(viewport);
  await page.emulateMedia({ colorScheme: 'light', reducedMotion: null });
}

/** Records every request body and WebSocket frame a page sends. */
export function recordOutgoing(page: Page, into: string[]): void {
  page.on('request', (request) => {
    const body = request.postDataBuffer();
    if (body) into.push(body.toString('utf8'));
    into.push(request.url());
  });
  page.on('websocket', (ws) => {
    ws.on('framesent', (frame) => into.push(typeof frame.payload === 'string' ? frame.payload : frame.payload.toString('utf8')));
  });
}

/** Every record of every LesCopains IndexedDB database in the page, as text. */
export async function localStoreDump(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const out: string[] = [];
    const dbs = await indexedDB.databases();
    for (const info of dbs) {
      if (!info.name?.startsWith('copains-')) continue;
      const db = await new Promise<IDBDatabase>((res, rej) => {
        const r = indexedDB.open(info.name!);
        r.onsuccess = () => res(r.result);
        r.onerror = () => rej(r.error);
      });
      for (const storeName of Array.from(db.objectStoreNames)) {
        const tx = db.transaction(storeName, 'readonly');
        const store = tx.objectStore(storeName);
        const [keys, values] = await Promise.all([
          new Promise<IDBValidKey[]>((res) => {
            const r = store.getAllKeys();
            r.onsuccess = () => res(r.result);
          }),
          new Promise<unknown[]>((res) => {
            const r = store.getAll();
            r.onsuccess = () => res(r.result);
          }),
        ]);
        const text = (v: unknown) =>
          v instanceof Uint8Array || v instanceof ArrayBuffer ? new TextDecoder('utf-8', { fatal: false }).decode(v) : JSON.stringify(v);
        for (const k of keys) out.push(text(k));
        for (const v of values) out.push(text(v));
      }
      db.close();
    }
    return out;
  });
}

// ---- communities ----

/** Creates a server from the rail's "Add a server"; lands in its #general. */
export async function createServer(page: Page, name: string): Promise<void> {
  await page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: 'Add a server' }).click();
  const dialog = page.getByRole('dialog', { name: 'Create a server' });
  await dialog.getByLabel('Server name').fill(name);
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();
}

/**
 * Ann and Ben, each signed up in a browser of their own; Ann creates a server (named `prefix`
 * and a random suffix) and Ben joins it by her invite link. Both end in its #general.
 */
export async function twoInAServer(browser: Browser, prefix: string) {
  const ann = uniqueName('ann');
  const ben = uniqueName('ben');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(a.page, ann);
  await signUp(b.page, ben);
  await a.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: process.env.COPAINS_E2E_BASE_URL! });
  await createServer(a.page, `${prefix} ${uniqueName('s')}`);
  const link = await inviteLink(a.page);
  await a.page.getByRole('dialog', { name: /^Invite friends to / }).getByRole('button', { name: 'Done' }).click();
  await b.page.goto(new URL(link).pathname);
  await unlock(b.page);
  await expectShell(b.page);
  await b.page.getByRole('button', { name: 'Join', exact: true }).click();
  await expect(b.page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();
  return { ann, ben, a, b };
}

/** Picks an item of the server menu (the server name at the top of the channel list). */
export async function serverMenu(page: Page, item: string): Promise<void> {
  await page.getByRole('button', { name: /, server menu$/ }).click();
  await page.getByRole('menuitem', { name: item }).click();
}

/** "Invite people": the link the dialog made (copied to the clipboard on the way). */
export async function inviteLink(page: Page): Promise<string> {
  await serverMenu(page, 'Invite people');
  const dialog = page.getByRole('dialog', { name: /^Invite friends to / });
  const field = dialog.getByLabel('Invite link');
  await expect(field).toHaveValue(/\/invite\/[A-Za-z0-9_-]+$/);
  await dialog.getByRole('button', { name: 'Copy' }).click();
  await expect(dialog.getByRole('button', { name: 'Copied' })).toBeVisible();
  const link = await field.inputValue();
  return link;
}

export function channelList(page: Page) {
  return page.getByRole('navigation', { name: 'Channels' });
}

export async function openChannel(page: Page, name: string): Promise<void> {
  await channelList(page).getByRole('button', { name: new RegExp(`^${name} \\(text channel\\)`) }).click();
  await expect(page.getByRole('heading', { level: 1, name })).toBeVisible();
}

/** A channel's message list. */
export function channelMessages(page: Page, channel = 'general') {
  return page.getByRole('region', { name: `Messages in #${channel}` });
}

/** The row of the message whose text holds `text`. */
export function messageRow(page: Page, text: string, channel = 'general') {
  return channelMessages(page, channel).getByRole('listitem').filter({ hasText: text });
}

/** Runs one of a message's hover actions (Reply, Edit, Delete, Add reaction…). */
export async function messageAction(page: Page, text: string, action: string, channel = 'general'): Promise<void> {
  // The message itself comes before the replies that quote it.
  const row = messageRow(page, text, channel).first();
  await row.hover();
  await row.getByRole('toolbar', { name: 'Message actions' }).getByRole('button', { name: action, exact: true }).click();
}
