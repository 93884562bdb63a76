/**
 * Devices the server cannot forge: a browser signed in with the password alone is pending
 * until a linked device approves it with the code it shows, or the recovery key links it.
 */

import {
  approvalDialog,
  capture,
  closeSettings,
  expect,
  expectShell,
  linkCode,
  messages,
  newUser,
  openConversation,
  openDm,
  openSettings,
  PASSWORD,
  readRecoveryKey,
  safetyNumber,
  saveRecoveryKey,
  send,
  settingsDialog,
  signIn,
  signInApproved,
  signOut,
  signUp,
  test,
  uniqueName,
  unlock,
  useRecoveryKey,
} from './fixtures';

test('a new browser is approved with the code it shows (a wrong code gets a new one); both of Alice’s browsers then read Bob, and the new one writes', async ({
  browser,
}) => {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const a1 = await newUser(browser);
  const b = await newUser(browser);

  // Sign-up: the recovery key comes first, and stays until it is written down, across a reload too.
  await a1.page.goto('/');
  await a1.page.getByRole('button', { name: 'Create an account' }).click();
  await a1.page.getByLabel('Username', { exact: true }).fill(alice);
  await a1.page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await a1.page.getByRole('button', { name: 'Create account', exact: true }).click();
  await expect(a1.page.getByRole('heading', { name: 'Save your recovery key' })).toBeVisible({ timeout: 30_000 });
  const key = await readRecoveryKey(a1.page);
  expect(key.replace(/-/g, '')).toMatch(/^[A-Z2-7]{32}$/);
  await expect(a1.page.getByRole('button', { name: 'Copy' })).toBeVisible();
  await capture(a1.page, 'recovery-key', { phone: true });
  await a1.page.getByRole('button', { name: 'I have written it down' }).click();
  await a1.page.getByLabel('Last two groups').fill('AAAA-AAAA');
  await a1.page.getByRole('button', { name: 'Continue to LesCopains' }).click();
  await expect(a1.page.getByRole('alert').filter({ hasText: 'That is not how your recovery key ends' })).toBeVisible();
  await capture(a1.page, 'recovery-key-check', { phone: true });
  await a1.page.reload();
  await unlock(a1.page);
  await expect(a1.page.getByRole('heading', { name: 'Save your recovery key' })).toBeVisible({ timeout: 30_000 });
  expect(await readRecoveryKey(a1.page)).toBe(key);
  await saveRecoveryKey(a1.page);
  await expectShell(a1.page);
  // Confirmed: a reload goes straight to the app.
  await a1.page.reload();
  await unlock(a1.page);
  await expectShell(a1.page);

  await signUp(b.page, bob);

  // Alice signs in on a third browser: it is pending, shows a code, and not the app.
  const a3 = await newUser(browser);
  await a3.page.goto('/');
  await signIn(a3.page, alice);
  const code = await linkCode(a3.page);
  await expect(a3.page.getByRole('navigation', { name: 'Servers' })).toHaveCount(0);
  await expect(a3.page.getByText('Waiting for approval…')).toBeVisible();
  await capture(a3.page, 'link-screen', { phone: true });

  // Browser 1 asks for the code. A wrong one first: nothing is shared, the new browser says
  // so with a new code, and browser 1 asks again.
  const dialog = approvalDialog(a1.page);
  await expect(dialog).toBeVisible({ timeout: 30_000 });
  await expect(dialog).toContainText('asked to be linked to your account');
  await capture(a1.page, 'approve-dialog', { phone: true });
  await dialog.getByLabel('Code shown on the new device').fill('12-34');
  await dialog.getByRole('button', { name: 'Approve', exact: true }).click();
  await expect(dialog.getByRole('alert')).toContainText('Enter the 8 digits');
  const wrong = code.replace(/\D/g, '') === '00000000' ? '1111-1111' : '0000-0000';
  await dialog.getByLabel('Code shown on the new device').fill(wrong);
  await dialog.getByRole('button', { name: 'Approve', exact: true }).click();
  await expect(a3.page.getByRole('alert').filter({ hasText: 'did not match' })).toBeVisible({ timeout: 30_000 });
  await expect(a3.page.locator('[data-code]')).not.toHaveAttribute('data-code', code);
  const second = await linkCode(a3.page);
  await capture(a3.page, 'link-screen-wrong-code', { dark: false });
  await expect(dialog.getByRole('alert')).toContainText('That code did not match', { timeout: 30_000 });
  await capture(a1.page, 'approve-dialog-wrong-code', { dark: false });

  // The right code, typed with a space: linked.
  const digits = second.replace(/\D/g, '');
  await dialog.getByLabel('Code shown on the new device').fill(`${digits.slice(0, 4)} ${digits.slice(4)}`);
  await dialog.getByRole('button', { name: 'Approve', exact: true }).click();
  const linked = a1.page.getByRole('dialog', { name: 'Device linked' });
  await expect(linked).toBeVisible({ timeout: 30_000 });
  await capture(a1.page, 'approve-dialog-linked', { dark: false });
  await linked.getByRole('button', { name: 'Done' }).click();
  await expectShell(a3.page);

  // Both of Alice's browsers are linked.
  await openSettings(a1.page, 'Devices');
  const list = settingsDialog(a1.page).getByRole('list', { name: 'Your devices' });
  await expect(list.getByRole('listitem')).toHaveCount(2);
  await expect(list.getByText('Linked', { exact: true })).toHaveCount(2);
  await capture(a1.page, 'settings-devices-linked', { phone: true });
  await closeSettings(a1.page);

  // Bob writes to Alice: both of her browsers show it.
  await openDm(b.page, alice);
  await send(b.page, 'to both of your browsers');
  await openConversation(a1.page, new RegExp(bob));
  await expect(messages(a1.page).getByText('to both of your browsers')).toBeVisible({ timeout: 30_000 });
  await openConversation(a3.page, new RegExp(bob));
  await expect(messages(a3.page).getByText('to both of your browsers')).toBeVisible({ timeout: 30_000 });

  // Alice answers from the new browser: Bob reads it, and her first browser shows it too.
  await send(a3.page, 'written on my new browser');
  await expect(messages(b.page).getByText('written on my new browser')).toBeVisible({ timeout: 30_000 });
  await expect(messages(a1.page).getByText('written on my new browser')).toBeVisible({ timeout: 30_000 });

  // One safety number per contact: the same on both of Alice's browsers, and at Bob's.
  const numbers: string[] = [];
  for (const [page, contact] of [
    [a1.page, bob],
    [a3.page, bob],
    [b.page, alice],
  ] as const) {
    await openSettings(page, 'Privacy & safety');
    await settingsDialog(page).getByRole('button', { name: new RegExp(`^${contact}`) }).click();
    numbers.push(await safetyNumber(page, contact));
    await closeSettings(page);
  }
  expect(numbers[0]).toMatch(/^\d{60}$/);
  expect(new Set(numbers).size).toBe(1);

  for (const p of [a1, a3, b]) await p.context.close();
});

test('the recovery key links a browser once every old device is gone; a new recovery key replaces the old one', async ({ browser }) => {
  const carol = uniqueName('carol');
  const dave = uniqueName('dave');
  const c1 = await newUser(browser);
  const d = await newUser(browser);
  const firstKey = await signUp(c1.page, carol);
  await signUp(d.page, dave);

  // Settings → Devices: a new recovery key, shown once and checked like the first.
  await openSettings(c1.page, 'Devices');
  await capture(c1.page, 'settings-recovery', { dark: false });
  await settingsDialog(c1.page).getByRole('button', { name: 'Create a new recovery key' }).click();
  await c1.page.getByRole('dialog', { name: 'Create a new recovery key?' }).getByRole('button', { name: 'Create a new key' }).click();
  const save = c1.page.getByRole('dialog', { name: 'Save your new recovery key' });
  await expect(save).toBeVisible({ timeout: 30_000 });
  const newKey = await readRecoveryKey(save);
  expect(newKey).not.toBe(firstKey);
  await capture(c1.page, 'settings-new-recovery-key', { dark: false });
  await save.getByRole('button', { name: 'I have written it down' }).click();
  await save.getByLabel('Last two groups').fill(newKey.split('-').slice(-2).join(' ').toLowerCase());
  await save.getByRole('button', { name: 'Done' }).click();
  await expect(save).toBeHidden();
  await expect(settingsDialog(c1.page).getByRole('status').filter({ hasText: 'Your new recovery key is saved' })).toBeVisible();
  await closeSettings(c1.page);

  // Carol signs out: no device of hers is left. A new browser is pending.
  await signOut(c1.page);
  const c2 = await newUser(browser);
  await c2.page.goto('/');
  await signIn(c2.page, carol);
  await linkCode(c2.page);

  // The old key no longer opens the account; the new one links the browser.
  await useRecoveryKey(c2.page, firstKey);
  await expect(c2.page.getByRole('alert').filter({ hasText: 'does not open your account' })).toBeVisible({ timeout: 30_000 });
  await capture(c2.page, 'link-recovery-key-wrong', { phone: true });
  await c2.page.getByLabel('Recovery key', { exact: true }).fill(newKey.toLowerCase());
  await c2.page.getByRole('button', { name: 'Link with recovery key' }).click();
  await expectShell(c2.page);

  // Linked: Dave's message reaches it, and it answers.
  await openDm(d.page, carol);
  await send(d.page, 'are you there, carol?');
  await openConversation(c2.page, new RegExp(dave));
  await expect(messages(c2.page).getByText('are you there, carol?')).toBeVisible({ timeout: 30_000 });
  await send(c2.page, 'yes, on a new browser');
  await expect(messages(d.page).getByText('yes, on a new browser')).toBeVisible({ timeout: 30_000 });

  // Only this browser is left in the account's list.
  await openSettings(c2.page, 'Devices');
  const list = settingsDialog(c2.page).getByRole('list', { name: 'Your devices' });
  await expect(list.getByRole('listitem')).toHaveCount(1);
  await expect(list.getByText('This device', { exact: true })).toBeVisible();
  await expect(list.getByText('Linked', { exact: true })).toBeVisible();
  await closeSettings(c2.page);
  for (const p of [c1, c2, d]) await p.context.close();
});

test('removing a linked browser signs it out; the last resort is explained, confirmed, checks the password, and unlinks the other browsers', async ({
  browser,
}) => {
  const erin = uniqueName('erin');
  const e1 = await newUser(browser);
  await signUp(e1.page, erin);
  const e2 = await newUser(browser);
  await signInApproved(e2.page, e1.page, erin);

  // Removing the second (linked) browser from the first: it is signed out.
  await openSettings(e1.page, 'Devices');
  const list = settingsDialog(e1.page).getByRole('list', { name: 'Your devices' });
  // The removed browser, unlisted first, asks to be linked again before its deletion lands:
  // the deletion is held until that request is in, and the first browser must not offer it.
  const askedAgain = e2.page.waitForResponse((r) => r.url().endsWith('/api/v1/users/@me/link-requests') && r.request().method() === 'POST');
  await e1.page.route('**/api/v1/users/@me/devices/*', async (route) => {
    if (route.request().method() === 'DELETE') await askedAgain;
    await route.continue();
  });
  await list.getByRole('button', { name: /^Remove / }).click();
  await e1.page.getByRole('dialog', { name: /^Remove / }).getByRole('button', { name: 'Remove device' }).click();
  // The confirmation stays (busy) until the removal is done, even if the list shows it first.
  await expect(e1.page.getByRole('dialog', { name: /^Remove / })).toBeHidden({ timeout: 30_000 });
  await expect(e2.page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible({ timeout: 30_000 });
  await expect(list.getByRole('listitem')).toHaveCount(1);
  expect((await askedAgain).status()).toBe(201);
  await expect(approvalDialog(e1.page)).toHaveCount(0);
  await settingsDialog(e1.page).getByRole('button', { name: 'Close settings' }).click();
  await expect(settingsDialog(e1.page)).toBeHidden();
  await e2.context.close();

  // A third browser: the first one is asked, and denies.
  const e3 = await newUser(browser);
  await e3.page.goto('/');
  await signIn(e3.page, erin);
  await linkCode(e3.page);
  await expect(approvalDialog(e1.page)).toBeVisible({ timeout: 30_000 });
  await approvalDialog(e1.page).getByRole('button', { name: 'Deny' }).click();
  await expect(approvalDialog(e1.page)).toBeHidden();

  // The dangerous path, behind its explanation, the password and a confirmation.
  await e3.page.getByRole('button', { name: 'Use your recovery key instead' }).click();
  await expect(e3.page.getByLabel('Recovery key', { exact: true })).toBeFocused();
  await e3.page.getByRole('button', { name: 'I lost all my devices and my recovery key' }).click();
  await expect(e3.page.getByText('Every contact sees that your safety number changed')).toBeVisible();
  await e3.page.getByLabel('Your password').fill('not my password at all');
  await e3.page.getByRole('button', { name: "Reset my account's identity…" }).click();
  const confirm = e3.page.getByRole('dialog', { name: "Reset your account's identity?" });
  await expect(confirm).toBeVisible();
  await capture(e3.page, 'link-reset-confirm', { dark: false });
  await confirm.getByRole('button', { name: 'Reset and get a new recovery key' }).click();
  await expect(e3.page.getByRole('alert').filter({ hasText: 'Wrong password.' })).toBeVisible({ timeout: 30_000 });
  await capture(e3.page, 'link-reset', { phone: true });
  // Nothing changed: the first browser is still in the app.
  await expect(e1.page.getByRole('navigation', { name: 'Servers' })).toBeVisible();

  // With the password: a new identity and recovery key here; the first browser is unlinked.
  await e3.page.getByLabel('Your password').fill(PASSWORD);
  await e3.page.getByRole('button', { name: "Reset my account's identity…" }).click();
  await confirm.getByRole('button', { name: 'Reset and get a new recovery key' }).click();
  await saveRecoveryKey(e3.page);
  await expectShell(e3.page);
  await expect(e1.page.getByRole('heading', { name: 'Approve this browser' })).toBeVisible({ timeout: 30_000 });
  await expect(e1.page.getByText("Your account's identity was reset on another device")).toBeVisible();
  await linkCode(e1.page);
  await capture(e1.page, 'link-screen-replaced', { dark: false });
  for (const p of [e1, e3]) await p.context.close();
});

test('a new browser that gets the number of a device signed out by a password change is confirmed linked on the approving browser', async ({
  browser,
}) => {
  // The server hands out the smallest free device number, and a password change signs the
  // other devices out without touching the signed list: the new browser is listed under a
  // number the list already holds (with the old identity key). The engine compares devices
  // by number and key, so the approving browser is told all the same.
  const gus = uniqueName('gus');
  const g1 = await newUser(browser);
  await signUp(g1.page, gus);
  const g2 = await newUser(browser);
  await signInApproved(g2.page, g1.page, gus);

  const newPassword = 'another long passphrase';
  await openSettings(g1.page, 'Password');
  await g1.page.getByLabel('Current password').fill(PASSWORD);
  await g1.page.getByLabel('New password', { exact: true }).fill(newPassword);
  await g1.page.getByLabel('Confirm new password').fill(newPassword);
  await g1.page.getByRole('button', { name: 'Change password' }).click();
  await expect(g1.page.getByText(/Password changed/)).toBeVisible();
  await closeSettings(g1.page);
  await expect(g2.page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible({ timeout: 30_000 });

  const g3 = await newUser(browser);
  await signInApproved(g3.page, g1.page, gus, newPassword);
  for (const p of [g1, g2, g3]) await p.context.close();
});
