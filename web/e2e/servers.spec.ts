import {
  PASSWORD,
  capture,
  channelList,
  channelMessages,
  composer,
  createServer,
  expect,
  expectShell,
  inviteLink,
  messageAction,
  messageRow,
  newUser,
  openChannel,
  saveRecoveryKey,
  send,
  serverMenu,
  shot,
  signUp,
  test,
  uniqueName,
  unlock,
} from './fixtures';

const secret = () => Math.random().toString(36).slice(2, 10);

test('two people in a server: invite link, join, and a live chat with a reply, a reaction, an edit and a delete', async ({ browser }) => {
  const alice = uniqueName('ann');
  const bob = uniqueName('ben');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(a.page, alice);
  await signUp(b.page, bob);
  const base = process.env.COPAINS_E2E_BASE_URL!;
  await a.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });

  // A creates a server: it lands in #general, with the server in the rail.
  const serverName = `Copains ${secret()}`;
  await createServer(a.page, serverName);
  await expect(a.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: serverName })).toHaveAttribute('aria-current', 'page');
  await expect(composer(a.page)).toHaveAttribute('placeholder', 'Message #general');

  // A copies an invite link.
  const link = await inviteLink(a.page);
  expect(await a.page.evaluate(() => navigator.clipboard.readText())).toBe(link);
  await capture(a.page, 'server-invite-dialog', { dark: false });
  await a.page.getByRole('dialog', { name: /^Invite friends to / }).getByRole('button', { name: 'Done' }).click();

  // B opens the link (a page load: the store unlocks first), sees the preview and joins.
  await b.page.goto(new URL(link).pathname);
  await unlock(b.page);
  await expectShell(b.page);
  const invite = b.page.getByRole('region', { name: serverName });
  await expect(invite.getByRole('heading', { name: serverName })).toBeVisible();
  await expect(invite.getByText('1 member')).toBeVisible();
  await expect(invite.getByText(`${alice} invited you to join`)).toBeVisible();
  await capture(b.page, 'server-invite-page', { phone: true });
  await invite.getByRole('button', { name: 'Join', exact: true }).click();
  await expect(b.page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();
  expect(new URL(b.page.url()).pathname).toMatch(/^\/channels\/\d+\/\d+$/);

  // Someone without an account opens the link: signed out, the sign-in screen says why; once
  // the account exists, the invite shows.
  const carol = uniqueName('cyd');
  const c = await newUser(browser);
  await c.page.goto(new URL(link).pathname);
  await expect(c.page.getByRole('status').filter({ hasText: 'You were invited to a server' })).toBeVisible();
  await c.page.getByRole('button', { name: 'Create an account' }).click();
  await c.page.getByLabel('Username', { exact: true }).fill(carol);
  await c.page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await c.page.getByRole('button', { name: 'Create account', exact: true }).click();
  await saveRecoveryKey(c.page);
  await expect(c.page.getByRole('region', { name: serverName }).getByText('2 members')).toBeVisible({ timeout: 30_000 });
  await c.context.close();

  // A sees B arrive in the member list.
  await expect(a.page.getByRole('complementary', { name: 'Members' }).getByRole('button', { name: new RegExp(`^${bob}`) })).toBeVisible();

  // A writes; B reads it live.
  const hello = `Hello everyone ${secret()}`;
  await send(a.page, hello);
  await expect(channelMessages(b.page).getByText(hello)).toBeVisible({ timeout: 30_000 });

  // B replies: A sees the quote.
  await messageAction(b.page, hello, 'Reply');
  await expect(b.page.getByRole('status').filter({ hasText: `Replying to ${alice}` })).toBeVisible();
  const answer = `Welcome reply ${secret()}`;
  await send(b.page, answer);
  const replied = messageRow(a.page, answer);
  await expect(replied).toBeVisible({ timeout: 30_000 });
  await expect(replied.getByRole('button', { name: new RegExp(`^Replying to ${alice}: ${hello}`) })).toBeVisible();

  // B reacts to A's message: A sees a chip with 1.
  await messageAction(b.page, hello, 'Add reaction');
  await b.page.getByRole('dialog', { name: 'Choose a reaction' }).getByRole('button', { name: 'React with thumbs up' }).click();
  await expect(messageRow(b.page, hello).first().getByRole('button', { name: /^👍 1 reaction/ })).toHaveAttribute('aria-pressed', 'true');
  await expect(messageRow(a.page, hello).first().getByRole('button', { name: /^👍 1 reaction/ })).toBeVisible({ timeout: 30_000 });
  await expect(messageRow(a.page, hello).first().getByRole('button', { name: /^👍 1 reaction/ })).toHaveAttribute('aria-pressed', 'false');

  // A edits the message: B sees the new text, marked edited.
  const edited = `Hello everyone, edited ${secret()}`;
  await messageAction(a.page, hello, 'Edit');
  const box = a.page.getByRole('textbox', { name: 'Edit message' });
  await box.fill(edited);
  await box.press('Enter');
  await expect(messageRow(b.page, edited).first()).toContainText('(edited)', { timeout: 30_000 });
  await expect(channelMessages(b.page).getByText(hello, { exact: true })).toHaveCount(0);

  // A deletes another message: it disappears for B.
  const doomed = `Oops wrong channel ${secret()}`;
  await send(a.page, doomed);
  await expect(channelMessages(b.page).getByText(doomed)).toBeVisible({ timeout: 30_000 });
  await messageAction(a.page, doomed, 'Delete');
  const confirm = a.page.getByRole('dialog', { name: 'Delete message' });
  await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
  await expect(confirm).toBeHidden();
  await expect(channelMessages(a.page).getByText(doomed)).toHaveCount(0);
  await expect(channelMessages(b.page).getByText(doomed)).toHaveCount(0, { timeout: 30_000 });

  await capture(a.page, 'server-chat', { phone: true });
  await capture(b.page, 'server-chat-other-side', { dark: false });

  // The settings, as the owner sees them.
  await serverMenu(a.page, 'Server settings');
  const settings = a.page.getByRole('dialog', { name: /^Server settings: / });
  await expect(settings.getByRole('tab', { name: 'Overview' })).toHaveAttribute('aria-selected', 'true');
  await capture(a.page, 'server-settings-overview', { dark: false });
  await a.page.keyboard.press('Escape');
  await expect(settings).toBeHidden();

  // B leaves: the server is gone from B's rail, and A's member list drops B.
  await serverMenu(b.page, 'Leave server');
  await b.page.getByRole('dialog', { name: `Leave ${serverName}?` }).getByRole('button', { name: 'Leave server' }).click();
  await expect(b.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: serverName })).toHaveCount(0);
  await expect(a.page.getByRole('complementary', { name: 'Members' }).getByRole('button', { name: new RegExp(`^${bob}`) })).toHaveCount(0, { timeout: 30_000 });

  await a.context.close();
  await b.context.close();
});

test('server settings: a role, and a private channel that a member sees once given the role', async ({ browser }) => {
  const alice = uniqueName('cat');
  const bob = uniqueName('dan');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(a.page, alice);
  await signUp(b.page, bob);
  await createServer(a.page, `Crew ${secret()}`);
  const link = await inviteLinkWithoutClipboard(a.page);
  await b.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: 'Add a server' }).click();
  const add = b.page.getByRole('dialog', { name: 'Create a server' });
  await add.getByRole('button', { name: 'Have an invite? Join a server' }).click();
  const join = b.page.getByRole('dialog', { name: 'Join a server' });
  await join.getByLabel('Invite link').fill(link);
  await join.getByRole('button', { name: 'Join server' }).click();
  await expect(b.page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();

  // A makes a role "Crew".
  await serverMenu(a.page, 'Server settings');
  const settings = a.page.getByRole('dialog', { name: /^Server settings: / });
  await settings.getByRole('tab', { name: 'Roles' }).click();
  await settings.getByRole('button', { name: 'Create role' }).click();
  const roleForm = settings.getByRole('form', { name: /^Edit role / });
  await roleForm.getByLabel('Role name').fill('Crew');
  await roleForm.getByRole('switch', { name: 'Display members with this role separately' }).check();
  await roleForm.getByRole('button', { name: 'Colour #e91e63' }).click();
  await roleForm.getByRole('button', { name: 'Save changes' }).click();
  await expect(settings.getByRole('status').filter({ hasText: 'Saved.' })).toBeVisible();
  await expect(settings.getByRole('list', { name: 'Roles' }).getByRole('button', { name: 'Crew', exact: true })).toBeVisible();
  await capture(a.page, 'server-settings-roles', { dark: false });
  await a.page.keyboard.press('Escape');

  // A makes a private channel, then lets Crew in.
  await serverMenu(a.page, 'Create channel');
  const create = a.page.getByRole('dialog', { name: 'Create channel' });
  await create.getByLabel('Channel name').fill('secret');
  await create.getByRole('switch', { name: 'Private channel' }).check();
  await create.getByRole('button', { name: 'Create channel' }).click();
  await expect(a.page.getByRole('heading', { level: 1, name: 'secret' })).toBeVisible();
  await serverMenu(a.page, 'Server settings');
  await settings.getByRole('tab', { name: 'Channels' }).click();
  await settings.getByRole('list', { name: 'Channels' }).getByRole('button', { name: 'secret' }).click();
  const channelForm = settings.getByRole('form', { name: 'Edit secret' });
  await channelForm.getByLabel('Add a role or member').selectOption({ label: 'Crew' });
  await channelForm.getByRole('radiogroup', { name: 'View channels' }).getByLabel('Allow').check();
  await channelForm.getByRole('button', { name: 'Save changes' }).click();
  await expect(settings.getByRole('status').filter({ hasText: 'Saved.' })).toBeVisible();
  await capture(a.page, 'server-settings-channel-permissions', { dark: false });

  // B cannot see it yet.
  await expect(channelList(b.page).getByRole('button', { name: /^general \(text channel\)/ })).toBeVisible();
  await expect(channelList(b.page).getByRole('button', { name: /^secret/ })).toHaveCount(0);

  // A gives B the role: the channel appears for B, live.
  await settings.getByRole('tab', { name: 'Members' }).click();
  await settings.getByRole('button', { name: `Roles of ${bob}` }).click();
  const rolesDialog = a.page.getByRole('dialog', { name: `Roles of ${bob}` });
  await rolesDialog.getByLabel('Crew').check();
  await rolesDialog.getByRole('button', { name: 'Save roles' }).click();
  await expect(rolesDialog).toBeHidden();
  await a.page.keyboard.press('Escape');
  await expect(settings).toBeHidden();
  await expect(channelList(b.page).getByRole('button', { name: /^secret/ })).toBeVisible({ timeout: 30_000 });

  // And they talk there.
  const words = `Only for the crew ${secret()}`;
  await send(a.page, words);
  await openChannel(b.page, 'secret');
  await expect(channelMessages(b.page, 'secret').getByText(words)).toBeVisible({ timeout: 30_000 });
  // B's name now shows in the Crew group of the member list.
  await expect(b.page.getByRole('complementary', { name: 'Members' }).getByRole('heading', { name: /^Crew — 1$/ })).toBeVisible();
  await shot(b.page, 'server-private-channel');

  // A pins the message: B finds it under Pinned messages.
  await messageAction(a.page, words, 'Pin', 'secret');
  await b.page.getByRole('button', { name: 'Pinned messages' }).click();
  const pins = b.page.getByRole('dialog', { name: 'Pinned messages' });
  await expect(pins.getByText(words)).toBeVisible({ timeout: 30_000 });
  await shot(b.page, 'server-pins');
  await b.page.keyboard.press('Escape');
  await expect(pins).toBeHidden();

  await a.context.close();
  await b.context.close();
});

test('a group DM of three: a thread started from a message, rename, and one leaving', async ({ browser }) => {
  const alice = uniqueName('eva');
  const bob = uniqueName('fred');
  const carol = uniqueName('gus');
  const a = await newUser(browser);
  const b = await newUser(browser);
  const c = await newUser(browser);
  await signUp(a.page, alice);
  await signUp(b.page, bob);
  await signUp(c.page, carol);

  // A makes a group with B and C, by username.
  await a.page.getByRole('button', { name: 'New group' }).click();
  const dialog = a.page.getByRole('dialog', { name: 'New group' });
  for (const name of [bob, carol]) {
    await dialog.getByLabel('Add by username').fill(name);
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    await expect(dialog.getByRole('list', { name: 'In the group' }).getByText(name)).toBeVisible();
  }
  await dialog.getByLabel('Group name (optional)').fill('Trip');
  await dialog.getByRole('button', { name: 'Create group' }).click();
  await expect(a.page.getByRole('heading', { level: 1, name: 'Trip' })).toBeVisible();
  await expect(composer(a.page)).toHaveAttribute('placeholder', 'Message @Trip');

  // B and C find it in their direct messages.
  for (const page of [b.page, c.page]) {
    await page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name: /^Trip, group of 3/ }).click({ timeout: 30_000 });
    await expect(page.getByRole('heading', { level: 1, name: 'Trip' })).toBeVisible();
  }
  const question = `Where shall we go ${secret()}`;
  await send(a.page, question);
  const groupMessages = (page: import('@playwright/test').Page) => page.getByRole('region', { name: 'Messages in @Trip' });
  await expect(groupMessages(b.page).getByText(question)).toBeVisible({ timeout: 30_000 });
  await expect(groupMessages(c.page).getByText(question)).toBeVisible({ timeout: 30_000 });

  // B starts a thread from A's message; A sees "1 reply" and reads it in the thread.
  const row = groupMessages(b.page).getByRole('listitem').filter({ hasText: question }).first();
  await row.hover();
  await row.getByRole('toolbar', { name: 'Message actions' }).getByRole('button', { name: 'Create thread' }).click();
  const thread = b.page.getByRole('complementary', { name: 'Thread' });
  await thread.getByLabel('Thread name').fill('Ideas');
  const idea = `The seaside ${secret()}`;
  await thread.getByRole('textbox', { name: /^Message the thread/ }).fill(idea);
  await thread.getByRole('textbox', { name: /^Message the thread/ }).press('Enter');
  await expect(thread.getByRole('heading', { name: 'Ideas' }).first()).toBeVisible();
  await expect(thread.getByText(idea)).toBeVisible();
  const replies = groupMessages(a.page).getByRole('listitem').filter({ hasText: question }).first().getByRole('button', { name: /1 reply/ });
  await expect(replies).toBeVisible({ timeout: 30_000 });
  await replies.click();
  const threadAtA = a.page.getByRole('complementary', { name: 'Thread' });
  await expect(threadAtA.getByText(idea)).toBeVisible({ timeout: 30_000 });
  await capture(a.page, 'group-thread', { dark: false });
  await threadAtA.getByRole('button', { name: 'Close thread' }).click();

  // A renames the group: B sees the new name.
  await a.page.getByRole('button', { name: 'Group options' }).click();
  await a.page.getByRole('menuitem', { name: 'Rename group' }).click();
  const rename = a.page.getByRole('dialog', { name: 'Rename group' });
  await rename.getByLabel('Group name').fill('Summer trip');
  await rename.getByRole('button', { name: 'Save' }).click();
  await expect(b.page.getByRole('heading', { level: 1, name: 'Summer trip' })).toBeVisible({ timeout: 30_000 });

  // C leaves: it is gone from C's list, and A's member list has two.
  await c.page.getByRole('button', { name: 'Group options' }).click();
  await c.page.getByRole('menuitem', { name: 'Leave group' }).click();
  await c.page.getByRole('dialog', { name: /^Leave / }).getByRole('button', { name: 'Leave group' }).click();
  await expect(c.page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name: /group of/ })).toHaveCount(0);
  await expect(a.page.getByRole('complementary', { name: 'Members' }).getByRole('heading', { name: 'Members — 2' })).toBeVisible({ timeout: 30_000 });

  await a.context.close();
  await b.context.close();
  await c.context.close();
});

/** "Invite people", reading the link from the field (no clipboard permission). */
async function inviteLinkWithoutClipboard(page: import('@playwright/test').Page): Promise<string> {
  await serverMenu(page, 'Invite people');
  const dialog = page.getByRole('dialog', { name: /^Invite friends to / });
  const field = dialog.getByLabel('Invite link');
  await expect(field).toHaveValue(/\/invite\/[A-Za-z0-9_-]+$/);
  const link = await field.inputValue();
  await dialog.getByRole('button', { name: 'Done' }).click();
  return link;
}
