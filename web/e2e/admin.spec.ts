import { E2E_ADMIN, E2E_ADMIN_2, E2E_ADMIN_PASSWORD } from './global-setup';
import { capture, createServer, expect, expectShell, newUser, openSettings, saveRecoveryKey, signIn, signUp, test, uniqueName, useRecoveryKey, WIDE } from './fixtures';

test('a platform admin disables a member: the member’s open page is signed out, and signs in again only once enabled; deleted, the account is gone', async ({ browser }) => {
  test.setTimeout(120_000);
  const ben = uniqueName('ben');
  const a = await newUser(browser);
  const b = await newUser(browser);
  const benKey = await signUp(b.page, ben);

  // The admin made on the command line signs in from a browser: its first device.
  await a.page.goto('/');
  await signIn(a.page, E2E_ADMIN, E2E_ADMIN_PASSWORD);
  await saveRecoveryKey(a.page);
  await expectShell(a.page);

  // The console: live figures, then Ben's account.
  await openSettings(a.page, 'Platform');
  const dialog = a.page.getByRole('dialog', { name: 'User settings' });
  await expect(dialog.getByRole('heading', { name: 'Live figures' })).toBeVisible();
  // The last hour, drawn and told in words (a sample was taken when the server started).
  await expect(dialog.getByRole('img', { name: /^Last \d+ minutes?: at most \d+ online/ })).toBeVisible();
  // This node's health: its database answers, its data disk has room.
  const health = dialog.getByRole('definition').filter({ hasText: /^Answers in \d+ ms$/ });
  await expect(health).toBeVisible();
  await expect(dialog.getByLabel('Node health')).toContainText(/Disk free \(data\)\s*[\d.]+ [kMGT]?B of [\d.]+ [kMGT]?B/);
  await dialog.getByRole('searchbox', { name: 'Search accounts' }).fill(ben);
  await dialog.getByRole('searchbox', { name: 'Search accounts' }).press('Enter');
  const row = dialog.getByRole('list', { name: 'Accounts' }).getByRole('listitem');
  await expect(row).toHaveCount(1);
  await expect(row).toContainText(`@${ben}`);
  await expect(row).toContainText('Member');
  await capture(a.page, 'admin-console');

  // Disabled: Ben's open page goes to the sign-in screen at once, and says why.
  await row.getByRole('button', { name: `Disable ${ben}` }).click();
  await a.page.getByRole('dialog', { name: `Disable ${ben}?` }).getByRole('button', { name: 'Disable', exact: true }).click();
  await expect(row).toContainText('Disabled');
  await expect(b.page.getByLabel('Password', { exact: true })).toBeVisible({ timeout: 30_000 });
  await expect(b.page.getByRole('button', { name: 'Sign in', exact: true })).toBeVisible();
  await expect(b.page.getByText(/^You were signed out/)).toBeVisible();
  await capture(b.page, 'admin-disabled-member-signed-out', { dark: false });

  // Ben cannot sign in while disabled.
  await signIn(b.page, ben);
  await expect(b.page.getByText('This account is disabled.')).toBeVisible();

  // The platform audit log says who did it; enabled again, Ben can sign in.
  await expect(dialog.getByRole('list', { name: 'Platform audit log' }).getByRole('listitem').first()).toContainText(`disabled ${ben}`);
  await row.getByRole('button', { name: `Enable ${ben}` }).click();
  await expect(row).not.toContainText('Disabled');
  await signIn(b.page, ben);
  await expect(b.page.getByRole('button', { name: 'Sign in', exact: true })).toBeHidden({ timeout: 30_000 });
  await expect(b.page.getByText('This account is disabled.')).toHaveCount(0);

  // Deleted: Ben's page is signed out, the account is gone with the server it owns, and its
  // name is free again. The admin sees what goes with it before confirming.
  await useRecoveryKey(b.page, benKey);
  await expectShell(b.page);
  const den = uniqueName('Den');
  await createServer(b.page, den);
  await row.getByRole('button', { name: `Delete ${ben}` }).click();
  const confirm = a.page.getByRole('dialog', { name: `Delete ${ben}?` });
  await expect(confirm.getByRole('list', { name: `Servers ${ben} owns` })).toContainText(`${den} · 1 member`);
  await capture(a.page, 'admin-delete-account');
  await confirm.getByRole('button', { name: 'Delete account' }).click();
  await expect(dialog.getByRole('status')).toContainText(`${ben} is deleted`);
  await expect(row).toHaveCount(0);
  await expect(b.page.getByLabel('Password', { exact: true })).toBeVisible({ timeout: 30_000 });
  await signIn(b.page, ben);
  await expect(b.page.getByText('Wrong username or password.')).toBeVisible();
  await expect(dialog.getByRole('list', { name: 'Platform audit log' }).getByRole('listitem').first()).toContainText(`deleted the account ${ben}`);

  await a.context.close();
  await b.context.close();
});

test('a platform admin takes a member’s server down and restores it, then bans the member and the device it used: signed out, no sign-in, no new account from it, until lifted', async ({ browser }) => {
  test.setTimeout(120_000);
  const cal = uniqueName('cal');
  const a = await newUser(browser);
  // Cal's browser is a device of its own (the ban names address and user agent).
  const c = await newUser(browser, WIDE, `Mozilla/5.0 (X11; Linux x86_64) e2e-${cal}`);
  await signUp(c.page, cal);

  const serverName = `Cal's corner ${uniqueName('s')}`;
  await createServer(c.page, serverName);
  const calsServer = c.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: serverName });
  await expect(calsServer).toBeVisible();

  await a.page.goto('/');
  await signIn(a.page, E2E_ADMIN_2, E2E_ADMIN_PASSWORD);
  await saveRecoveryKey(a.page);
  await expectShell(a.page);
  await openSettings(a.page, 'Platform');
  const dialog = a.page.getByRole('dialog', { name: 'User settings' });

  // Cal's server, taken down: gone from Cal's open page at once; restored: back.
  await dialog.getByRole('searchbox', { name: 'Search servers' }).fill(serverName);
  await dialog.getByRole('searchbox', { name: 'Search servers' }).press('Enter');
  const serverRow = dialog.getByRole('list', { name: 'Servers' }).getByRole('listitem');
  await expect(serverRow).toHaveCount(1);
  await expect(serverRow).toContainText(`Owner @${cal} · 1 member`);
  await serverRow.getByRole('button', { name: `Take down ${serverName}` }).click();
  const takeDown = a.page.getByRole('dialog', { name: `Take down ${serverName}?` });
  await takeDown.getByLabel('Reason (only admins see it)').fill('phishing links');
  await takeDown.getByRole('button', { name: 'Take down', exact: true }).click();
  await expect(serverRow).toContainText('Taken down (“phishing links”)');
  await expect(calsServer).toHaveCount(0, { timeout: 30_000 });
  await capture(a.page, 'admin-server-taken-down');
  await serverRow.getByRole('button', { name: `Restore ${serverName}` }).click();
  await expect(serverRow).not.toContainText('Taken down');
  await expect(calsServer).toBeVisible({ timeout: 30_000 });
  await expect(dialog.getByRole('list', { name: 'Platform audit log' }).getByRole('listitem').first()).toContainText(`restored the server “${serverName}”`);

  await dialog.getByRole('searchbox', { name: 'Search accounts' }).fill(cal);
  await dialog.getByRole('searchbox', { name: 'Search accounts' }).press('Enter');
  const row = dialog.getByRole('list', { name: 'Accounts' }).getByRole('listitem').filter({ hasText: `@${cal}` });
  await expect(row).toHaveCount(1);

  // Its sessions, with the address it came from (admins see it while it is kept).
  await row.getByRole('button', { name: `Sessions of ${cal}` }).click();
  const sessions = row.getByRole('list', { name: `Sessions of ${cal}` });
  await expect(sessions.getByRole('listitem')).toHaveCount(1);
  await expect(sessions).toContainText('from 127.0.0.1');

  // Banned for a day with its device, with a reason.
  await row.getByRole('button', { name: `Ban ${cal}` }).click();
  const confirm = a.page.getByRole('dialog', { name: `Ban ${cal}?` });
  await confirm.getByLabel('Reason (only staff see it)').fill('spam in every server');
  await confirm.getByLabel('For how long').selectOption({ label: '1 day' });
  await expect(confirm.getByRole('checkbox', { name: /Also ban the devices/ })).toBeChecked();
  await capture(a.page, 'admin-ban-dialog');
  await confirm.getByRole('button', { name: 'Ban', exact: true }).click();
  await expect(dialog.getByRole('status')).toContainText(`${cal} is banned, with 1 device it used`);
  const bans = dialog.getByRole('list', { name: 'Bans' });
  await expect(bans.getByRole('listitem').filter({ hasText: `Account @${cal}` })).toContainText('spam in every server');
  await expect(bans.getByRole('listitem').filter({ hasText: `A device of @${cal}` })).toHaveCount(1);
  await expect(dialog.getByRole('list', { name: 'Platform audit log' }).getByRole('listitem').first()).toContainText(`banned ${cal}`);

  // Cal's open page is signed out; signing in is refused and says so; so is a new account.
  await expect(c.page.getByLabel('Password', { exact: true })).toBeVisible({ timeout: 30_000 });
  await signIn(c.page, cal);
  await expect(c.page.getByText(/^This account is banned from this server until /)).toBeVisible();
  await capture(c.page, 'admin-banned-sign-in', { dark: false });
  await c.page.getByRole('button', { name: 'Create an account' }).click();
  await c.page.getByLabel('Username', { exact: true }).fill(`${cal}2`);
  await c.page.getByLabel('Password', { exact: true }).fill('correct horse battery staple');
  await c.page.getByRole('button', { name: 'Create account', exact: true }).click();
  await expect(c.page.getByText(/^Sign-ups and sign-ins from this device are banned/)).toBeVisible();

  // The security events are in the log, filtered to warnings.
  await dialog.getByLabel('Show').selectOption({ label: 'Warnings and critical' });
  await expect(dialog.getByRole('list', { name: 'Platform audit log' }).getByRole('listitem').first()).toContainText('A banned device tried to sign up');
  await capture(a.page, 'admin-security-events');

  // Lifted (both bans): Cal signs in again.
  await bans.getByRole('button', { name: `Lift the ban of a device of ${cal}` }).click();
  await bans.getByRole('button', { name: `Lift the ban of ${cal}` }).click();
  await expect(dialog.getByText('Nobody is banned.')).toBeVisible();
  await c.page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await signIn(c.page, cal);
  await expect(c.page.getByRole('button', { name: 'Sign in', exact: true })).toBeHidden({ timeout: 30_000 });

  await a.context.close();
  await c.context.close();
});
