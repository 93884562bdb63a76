import { capture, channelMessages, createServer, expect, expectShell, newUser, saveRecoveryKey, send, serverMenu, signUp, test, uniqueName } from './fixtures';

test('a server owner makes a guest invite: someone without an account joins as a guest, for a day, and writes', async ({ browser }) => {
  test.setTimeout(120_000);
  const owner = uniqueName('own');
  const a = await newUser(browser);
  await signUp(a.page, owner);
  const serverName = `Open house ${uniqueName('s')}`;
  await createServer(a.page, serverName);

  // The invite, with guest accounts for a day.
  await serverMenu(a.page, 'Invite people');
  const dialog = a.page.getByRole('dialog', { name: /^Invite friends to / });
  await dialog.getByRole('button', { name: 'Edit invite link' }).click();
  await dialog.getByLabel('Guest accounts').selectOption({ label: 'Yes, guests for 1 day' });
  await dialog.getByRole('button', { name: 'Generate a new link' }).click();
  await expect(dialog.getByText(/guests without an account welcome/)).toBeVisible();
  await capture(a.page, 'guest-invite-dialog', { dark: false });
  const link = await dialog.getByLabel('Invite link').inputValue();
  await dialog.getByRole('button', { name: 'Done' }).click();

  // A visitor with no account opens it: the sign-in page offers to join as a guest.
  const v = await newUser(browser);
  await v.page.goto(new URL(link).pathname);
  await v.page.getByRole('button', { name: `Join ${serverName} as a guest` }).click();
  await expect(v.page.getByRole('heading', { name: `Join ${serverName} as a guest` })).toBeVisible();
  await expect(v.page.getByText(/^Your guest account lasts 1 day/)).toBeVisible();
  await v.page.getByLabel('Name shown to others').fill('Visiting Vera');
  await v.page.getByLabel('Password', { exact: true }).fill('short');
  await v.page.getByRole('button', { name: 'Join as a guest' }).click();
  await expect(v.page.getByText('Use at least 8 characters.')).toBeVisible();
  await capture(v.page, 'guest-join', { dark: false });
  await v.page.getByLabel('Password', { exact: true }).fill('correct horse battery staple');
  await v.page.getByRole('button', { name: 'Join as a guest' }).click();
  await saveRecoveryKey(v.page);
  await expectShell(v.page);
  await v.page.getByRole('button', { name: 'You are a member: open it' }).click();
  await expect(v.page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();
  // A guest visits this one server: it makes no others and joins no others.
  await expect(a.page.getByRole('button', { name: 'Add a server' })).toBeVisible();
  await expect(v.page.getByRole('button', { name: 'Add a server' })).toHaveCount(0);

  // The guest writes; the owner reads it, from "Visiting Vera".
  const hello = `Hello from a guest ${Math.random().toString(36).slice(2, 8)}`;
  await send(v.page, hello);
  await expect(channelMessages(a.page).getByText(hello)).toBeVisible({ timeout: 30_000 });
  await expect(channelMessages(a.page).getByText('Visiting Vera').first()).toBeVisible();

  await a.context.close();
  await v.context.close();
});
