import type { Browser } from '@playwright/test';
import {
  capture,
  closeSettings,
  composer,
  expect,
  expectShell,
  localStoreDump,
  messages,
  newUser,
  openConversation,
  openDm,
  openSettings,
  recordOutgoing,
  resetIdentity,
  safetyNumber,
  send,
  settingsDialog,
  signIn,
  signInAgain,
  signOut,
  signUp,
  test,
  uniqueName,
  unlock,
} from './fixtures';

test('two people chat end to end: history survives a reload and a new sign-in, safety numbers match, no text leaves a page in clear', async ({
  browser,
}) => {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const a = await newUser(browser);
  const b = await newUser(browser);
  const sentByPages: string[] = [];
  recordOutgoing(a.page, sentByPages);
  recordOutgoing(b.page, sentByPages);
  const secret = () => `pineapple-${Math.random().toString(36).slice(2, 10)}`;
  const texts: string[] = [];

  const aliceKey = await signUp(a.page, alice);
  await signUp(b.page, bob);
  await capture(a.page, 'shell-empty', { phone: true });

  // A starts a conversation with B by exact username.
  await openDm(a.page, bob);
  await expect(a.page.getByRole('heading', { level: 1, name: bob })).toBeVisible();
  const first = `Hello ${bob}, ${secret()}`;
  texts.push(first);
  await send(a.page, first);
  await expect(messages(a.page).getByText(first)).toBeVisible();

  // B sees it arrive: an unread conversation, then the message.
  const bList = b.page.getByRole('navigation', { name: 'Direct messages' });
  await expect(bList.getByRole('button', { name: new RegExp(alice) })).toContainText('unread', { timeout: 30_000 });
  await openConversation(b.page, new RegExp(alice));
  await expect(messages(b.page).getByText(first)).toBeVisible();

  // Both ways, a few times, with a line break.
  for (let i = 0; i < 3; i++) {
    const fromB = `Reply ${i} from ${bob}: ${secret()}`;
    texts.push(fromB);
    await send(b.page, fromB);
    await expect(messages(a.page).getByText(fromB)).toBeVisible();
    const fromA = `Answer ${i}: ${secret()}`;
    texts.push(fromA);
    await send(a.page, fromA);
    await expect(messages(b.page).getByText(fromA)).toBeVisible();
  }
  const multiline = `two\nlines ${secret()}`;
  texts.push(multiline);
  await composer(a.page).fill('two');
  await composer(a.page).press('Shift+Enter');
  await composer(a.page).pressSequentially(multiline.slice(4));
  await composer(a.page).press('Enter');
  await expect(messages(b.page).getByText(multiline.slice(4))).toBeVisible();
  await expect(composer(a.page)).toHaveValue('');

  await capture(a.page, 'chat', { phone: true });
  await capture(b.page, 'chat-other-side', { dark: false });

  // The safety numbers shown on both sides are the same 60 digits.
  await openSettings(a.page, 'Privacy & safety');
  await settingsDialog(a.page).getByRole('button', { name: new RegExp(`^${bob}`) }).click();
  const numberAtA = await safetyNumber(a.page, bob);
  await capture(a.page, 'safety-numbers', { phone: true });
  await openSettings(b.page, 'Privacy & safety');
  await settingsDialog(b.page).getByRole('button', { name: new RegExp(`^${alice}`) }).click();
  const numberAtB = await safetyNumber(b.page, alice);
  expect(numberAtA).toMatch(/^\d{60}$/);
  expect(numberAtB).toBe(numberAtA);

  // B marks A verified: the DM header says so.
  await b.page.getByRole('switch', { name: 'Mark as verified' }).first().click();
  await expect(b.page.getByRole('switch', { name: 'Mark as verified' }).first()).toHaveAttribute('aria-checked', 'true');
  await closeSettings(b.page);
  await expect(b.page.getByTitle(/You verified .*safety number/)).toBeVisible();
  await closeSettings(a.page);

  // B reloads: the password unlocks the local store, the history is there.
  await b.page.reload();
  await capture(b.page, 'unlock', { phone: true });
  await unlock(b.page, 'not my password');
  await expect(b.page.getByRole('alert').filter({ hasText: 'Wrong password.' })).toBeVisible({ timeout: 30_000 });
  await unlock(b.page);
  await expectShell(b.page);
  await openConversation(b.page, new RegExp(alice));
  for (const text of texts.slice(0, -1)) await expect(messages(b.page).getByText(text)).toBeVisible();

  // A signs out and in again (a new device, linked with the recovery key): the history on this browser is still readable.
  await signOut(a.page);
  await signInAgain(a.page, alice, aliceKey);
  await openConversation(a.page, new RegExp(bob));
  for (const text of texts.slice(0, -1)) await expect(messages(a.page).getByText(text)).toBeVisible();

  // Nothing a page sent (request bodies, URLs, WebSocket frames) held a message's text.
  expect(sentByPages.length).toBeGreaterThan(20);
  for (const text of texts) {
    const needle = text.split(': ').pop() ?? text;
    for (const sent of sentByPages) expect(sent, 'a message text left the page in clear').not.toContain(needle);
  }
  // Nor does this browser's local store hold it in clear.
  for (const page of [a.page, b.page]) {
    const records = await localStoreDump(page);
    expect(records.length).toBeGreaterThan(0);
    for (const text of texts) {
      const needle = text.split(': ').pop() ?? text;
      for (const record of records) expect(record, 'a message text is stored in clear').not.toContain(needle);
    }
  }

  await a.context.close();
  await b.context.close();
});

test('after signing out and in again (a new device, linked with the recovery key), the conversation goes on both ways with the same safety number', async ({
  browser,
}) => {
  const alice = uniqueName('gina');
  const bob = uniqueName('hugo');
  const a = await newUser(browser);
  const b = await newUser(browser);
  const aliceKey = await signUp(a.page, alice);
  await signUp(b.page, bob);
  await openDm(a.page, bob);
  await send(a.page, 'before');
  await openConversation(b.page, new RegExp(alice));
  await expect(messages(b.page).getByText('before')).toBeVisible();
  await send(b.page, 'seen before');
  await expect(messages(a.page).getByText('seen before')).toBeVisible();
  await openSettings(b.page, 'Privacy & safety');
  await settingsDialog(b.page).getByRole('button', { name: new RegExp(`^${alice}`) }).click();
  const before = await safetyNumber(b.page, alice);
  await closeSettings(b.page);

  await signOut(a.page);
  await signInAgain(a.page, alice, aliceKey);
  await openConversation(a.page, new RegExp(bob));
  await send(a.page, 'from my new device');
  await expect(messages(b.page).getByText('from my new device')).toBeVisible({ timeout: 30_000 });
  await send(b.page, 'welcome back');
  await expect(messages(a.page).getByText('welcome back')).toBeVisible({ timeout: 30_000 });
  // The account key came back with the recovery key: the safety number is the same, nothing to warn about.
  await expect(b.page.getByRole('alert').filter({ hasText: 'safety number changed' })).toHaveCount(0);
  await openSettings(b.page, 'Privacy & safety');
  await settingsDialog(b.page).getByRole('button', { name: new RegExp(`^${alice}`) }).click();
  expect(await safetyNumber(b.page, alice)).toBe(before);
  await closeSettings(b.page);
  await a.context.close();
  await b.context.close();
});

/** A and B have talked (A wrote `first`), and B has marked A's safety number verified. */
async function verifiedPair(browser: Browser, first: string) {
  const alice = uniqueName('ivy');
  const bob = uniqueName('jon');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(a.page, alice);
  await signUp(b.page, bob);
  await openDm(a.page, bob);
  await send(a.page, first);
  await openConversation(b.page, new RegExp(alice));
  await expect(messages(b.page).getByText(first)).toBeVisible();
  await openSettings(b.page, 'Privacy & safety');
  await settingsDialog(b.page).getByRole('button', { name: new RegExp(`^${alice}`) }).click();
  const verifiedNumber = await safetyNumber(b.page, alice);
  await b.page.getByRole('switch', { name: 'Mark as verified' }).first().click();
  await expect(b.page.getByRole('switch', { name: 'Mark as verified' }).first()).toHaveAttribute('aria-checked', 'true');
  await closeSettings(b.page);
  return { alice, bob, a, b, verifiedNumber };
}

test('a verified contact who lost every device and the recovery key resets: the message still arrives, with the safety-number warning, kept in the history', async ({
  browser,
}) => {
  const { alice, bob, a, b } = await verifiedPair(browser, 'before');

  // A signs in again with nothing left to link with: a new account identity.
  await signOut(a.page);
  await signIn(a.page, alice);
  await resetIdentity(a.page);
  await openConversation(a.page, new RegExp(bob));
  await send(a.page, 'new keys, same person');
  await expect(messages(b.page).getByText('new keys, same person')).toBeVisible({ timeout: 30_000 });
  await expect(b.page.getByRole('alert').filter({ hasText: `${alice}'s safety number changed` })).toBeVisible();
  await expect(b.page.getByTitle(/You verified .*safety number/)).toBeHidden();
  await capture(b.page, 'identity-changed', { phone: true });
  await b.page.getByRole('button', { name: 'Dismiss', exact: true }).click();
  await expect(b.page.getByRole('alert').filter({ hasText: 'safety number changed' })).toBeHidden();

  // The change stays in the conversation, where it happened, after a reload too.
  const notice = messages(b.page).getByText(`${alice}'s safety number changed`);
  await expect(notice).toBeVisible();
  await b.page.reload();
  await unlock(b.page);
  await openConversation(b.page, new RegExp(alice));
  await expect(notice).toBeVisible();
  await capture(b.page, 'identity-changed-in-history');
  await a.context.close();
  await b.context.close();
});

test('writing to a verified contact whose keys changed: not sent until the new safety number is accepted', async ({ browser }) => {
  const { alice, bob, a, b, verifiedNumber } = await verifiedPair(browser, 'first');

  // A resets the account's identity (new keys); B writes first, to the keys B verified.
  await signOut(a.page);
  await signIn(a.page, alice);
  await resetIdentity(a.page);
  await send(b.page, 'is it still you?');
  const failure = messages(b.page).getByRole('alert').filter({ hasText: 'safety number changed since you verified it' });
  await expect(failure).toBeVisible({ timeout: 30_000 });
  await expect(b.page.getByRole('alert').filter({ hasText: `${alice}'s safety number changed` })).toBeVisible();
  await capture(b.page, 'send-to-changed-verified');

  // Retry alone sends nothing: the new number must be accepted (or verified) first.
  await failure.getByRole('button', { name: 'Retry' }).click();
  await expect(failure).toBeVisible();
  // B sees a new number, no longer verified, and accepts it; Retry then sends to the new keys.
  await openSettings(b.page, 'Privacy & safety');
  await settingsDialog(b.page).getByRole('button', { name: new RegExp(`^${alice}`) }).click();
  expect(await safetyNumber(b.page, alice)).not.toBe(verifiedNumber);
  await expect(b.page.getByRole('switch', { name: 'Mark as verified' }).first()).toHaveAttribute('aria-checked', 'false');
  await expect(settingsDialog(b.page).getByText('Changed since you verified it.')).toBeVisible();
  await capture(b.page, 'safety-number-changed-since-verified');
  await settingsDialog(b.page).getByRole('button', { name: 'Accept new safety number' }).click();
  await expect(settingsDialog(b.page).getByText('Changed since you verified it.')).toBeHidden();
  await closeSettings(b.page);
  await failure.getByRole('button', { name: 'Retry' }).click();
  await expect(failure).toBeHidden();
  await openConversation(a.page, new RegExp(bob));
  await expect(messages(a.page).getByText('is it still you?')).toBeVisible({ timeout: 30_000 });
  await a.context.close();
  await b.context.close();
});

test('a conversation with a username nobody has is refused; the screens are accessible', async ({ browser }) => {
  const carol = uniqueName('carol');
  const c = await newUser(browser);
  await signUp(c.page, carol);

  await c.page.getByRole('button', { name: 'New message' }).first().click();
  const dialog = c.page.getByRole('dialog', { name: 'New message' });
  await dialog.getByLabel('Username', { exact: true }).fill(uniqueName('ghost'));
  await dialog.getByRole('button', { name: 'Open conversation' }).click();
  await expect(dialog.getByText('No user with that exact username.')).toBeVisible();
  await capture(c.page, 'new-message-not-found', { phone: true });
  await c.page.keyboard.press('Escape');
  await expect(dialog).toBeHidden();

  // Every settings tab.
  await openSettings(c.page);
  await capture(c.page, 'settings-profile', { phone: true });
  await c.page.getByLabel('Display name').fill('Carol C.');
  await c.page.getByLabel('Status', { exact: true }).fill('Out for lunch');
  await c.page.getByRole('button', { name: 'Save changes' }).click();
  await expect(c.page.getByText('Profile saved.')).toBeVisible();
  await expect(c.page.getByRole('region', { name: 'Your account' })).toContainText('Carol C.');

  await c.page.getByRole('tab', { name: 'Password' }).click();
  await capture(c.page, 'settings-password');
  await c.page.getByRole('tab', { name: 'Devices' }).click();
  await expect(settingsDialog(c.page).getByText('This device', { exact: true })).toBeVisible();
  await expect(settingsDialog(c.page).getByRole('list', { name: 'Your devices' }).getByText('Linked', { exact: true })).toBeVisible();
  await capture(c.page, 'settings-devices', { phone: true });
  await c.page.getByRole('button', { name: /^Rename / }).click();
  await c.page.getByLabel('Device name').fill('My test browser');
  await c.page.getByRole('button', { name: 'Save', exact: true }).click();
  await expect(c.page.getByRole('heading', { name: /My test browser/ })).toBeVisible();
  await c.page.getByRole('tab', { name: 'Privacy & safety' }).click();
  await capture(c.page, 'settings-privacy');
  await closeSettings(c.page);
  await c.context.close();
});
