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
  send,
  settingsDialog,
  signIn,
  signInApproved,
  signUp,
  test,
  uniqueName,
  useRecoveryKey,
} from './fixtures';

const NEW_PASSWORD = 'a brand new passphrase';

test('a password changed on another device: this browser is signed out with a notice, keeps its store, and opens it with the previous password', async ({
  browser,
}) => {
  const dana = uniqueName('dana');
  const eve = uniqueName('friend');
  const first = await newUser(browser);
  const friend = await newUser(browser);
  const danaKey = await signUp(first.page, dana);
  await signUp(friend.page, eve);
  await openDm(first.page, eve);
  const text = `kept across the password change ${Math.random().toString(36).slice(2)}`;
  await send(first.page, text);
  await expect(messages(first.page).getByText(text)).toBeVisible();

  // Dana signs in on a second browser (approved from the first) and changes the password there.
  const second = await newUser(browser);
  await signInApproved(second.page, first.page, dana);
  await openSettings(second.page, 'Password');
  await second.page.getByLabel('Current password').fill(PASSWORD);
  await second.page.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
  await second.page.getByLabel('Confirm new password').fill(NEW_PASSWORD);
  await second.page.getByRole('button', { name: 'Change password' }).click();
  await expect(second.page.getByText(/Password changed/)).toBeVisible();
  await closeSettings(second.page);

  // The first browser's session was revoked: back to sign-in, with a notice.
  await expect(first.page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible({ timeout: 30_000 });
  await expect(first.page.getByRole('alert')).toContainText('Your messages on this browser are kept');
  await capture(first.page, 'session-ended', { dark: false });

  // The new password signs in, but this browser's store is locked with the old one.
  await signIn(first.page, dana, NEW_PASSWORD);
  await expect(first.page.getByRole('heading', { name: "This browser's messages use an older password" })).toBeVisible({ timeout: 30_000 });
  await capture(first.page, 'wrong-password', { phone: true });

  // A wrong guess is said so; the previous password opens it.
  await first.page.getByLabel('Previous password', { exact: true }).fill('not it at all');
  await first.page.getByRole('button', { name: 'Unlock with previous password' }).click();
  await expect(first.page.getByText('That password does not open it either.')).toBeVisible();
  await first.page.getByLabel('Previous password', { exact: true }).fill(PASSWORD);
  await first.page.getByRole('button', { name: 'Unlock with previous password' }).click();
  // Signing in made a new device, pending: the recovery key links it. (It got the number of
  // the device the password change signed out, still in the account's list.)
  await useRecoveryKey(first.page, danaKey);
  await expectShell(first.page);
  await openConversation(first.page, new RegExp(eve));
  await expect(messages(first.page).getByText(text)).toBeVisible();

  // From now on the store opens with the current password.
  await first.page.reload();
  await first.page.getByLabel('Password', { exact: true }).fill(NEW_PASSWORD);
  await first.page.getByRole('button', { name: 'Unlock', exact: true }).click();
  await expectShell(first.page);

  for (const ctx of [first, second, friend]) await ctx.context.close();
});

test('start fresh deletes only after confirmation', async ({ browser }) => {
  const finn = uniqueName('finn');
  const one = await newUser(browser);
  const finnKey = await signUp(one.page, finn);
  const two = await newUser(browser);
  await signInApproved(two.page, one.page, finn);
  await openSettings(two.page, 'Password');
  await two.page.getByLabel('Current password').fill(PASSWORD);
  await two.page.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
  await two.page.getByLabel('Confirm new password').fill(NEW_PASSWORD);
  await two.page.getByRole('button', { name: 'Change password' }).click();
  await expect(two.page.getByText(/Password changed/)).toBeVisible();

  await expect(one.page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible({ timeout: 30_000 });
  await signIn(one.page, finn, NEW_PASSWORD);
  await one.page.getByRole('button', { name: /^Start fresh/ }).click();
  const confirm = one.page.getByRole('dialog', { name: "Delete this browser's history?" });
  await expect(confirm).toBeVisible();
  await capture(one.page, 'start-fresh-confirm', { dark: false });
  await confirm.getByRole('button', { name: 'Cancel' }).click();
  await expect(confirm).toBeHidden();
  await one.page.getByRole('button', { name: /^Start fresh/ }).click();
  await one.page.getByRole('button', { name: 'Delete local history and start fresh' }).click();
  await useRecoveryKey(one.page, finnKey);
  await expectShell(one.page);
  for (const ctx of [one, two]) await ctx.context.close();
});

test('a browser waiting for approval is listed as not approved, and removing it signs it out at once', async ({ browser }) => {
  const max = uniqueName('max');
  const one = await newUser(browser);
  await signUp(one.page, max);
  const two = await newUser(browser);
  await two.page.goto('/');
  await signIn(two.page, max);
  await linkCode(two.page);

  // The first browser is asked; "Not now" leaves the request in the devices list.
  await expect(approvalDialog(one.page)).toBeVisible({ timeout: 30_000 });
  await approvalDialog(one.page).getByRole('button', { name: 'Not now' }).click();
  await expect(approvalDialog(one.page)).toBeHidden();
  await openSettings(one.page, 'Devices');
  const dialog = settingsDialog(one.page);
  const list = dialog.getByRole('list', { name: 'Your devices' });
  await expect(list.getByRole('listitem')).toHaveCount(2);
  await expect(list.getByText('Not approved', { exact: true })).toBeVisible();
  await expect(list.getByRole('button', { name: /^Approve / })).toBeVisible();
  await capture(one.page, 'settings-devices-pending', { phone: true });

  await dialog.getByRole('button', { name: /^Remove / }).click();
  const confirm = one.page.getByRole('dialog', { name: /^Remove / });
  await expect(confirm).toBeVisible();
  await capture(one.page, 'remove-device-confirm', { dark: false });
  await confirm.getByRole('button', { name: 'Remove device' }).click();
  await expect(list.getByRole('listitem')).toHaveCount(1);

  await expect(two.page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible({ timeout: 30_000 });
  await expect(two.page.getByRole('alert')).toContainText('You were signed out');
  for (const ctx of [one, two]) await ctx.context.close();
});
