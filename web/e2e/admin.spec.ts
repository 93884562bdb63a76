import { E2E_ADMIN, E2E_ADMIN_PASSWORD } from './global-setup';
import { capture, expect, expectShell, newUser, openSettings, saveRecoveryKey, signIn, signUp, test, uniqueName } from './fixtures';

test('a platform admin disables a member: the member’s open page is signed out, and signs in again only once enabled', async ({ browser }) => {
  test.setTimeout(120_000);
  const ben = uniqueName('ben');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(b.page, ben);

  // The admin made on the command line signs in from a browser: its first device.
  await a.page.goto('/');
  await signIn(a.page, E2E_ADMIN, E2E_ADMIN_PASSWORD);
  await saveRecoveryKey(a.page);
  await expectShell(a.page);

  // The console: live figures, then Ben's account.
  await openSettings(a.page, 'Platform');
  const dialog = a.page.getByRole('dialog', { name: 'User settings' });
  await expect(dialog.getByRole('heading', { name: 'Live figures' })).toBeVisible();
  await dialog.getByRole('searchbox', { name: 'Search accounts' }).fill(ben);
  await dialog.getByRole('button', { name: 'Search', exact: true }).click();
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

  await a.context.close();
  await b.context.close();
});
