import type { Locator, Page } from '@playwright/test';
import { capture, channelMessages, composer, expect, messageRow, messages, newUser, signUp, test, twoInAServer, uniqueName } from './fixtures';

/** The Friends page's row of `username`. */
function friendRow(page: Page, username: string): Locator {
  return page.locator(`li[data-user="${username}"]`);
}

/** The presence dot of a row. */
function dot(row: Locator): Locator {
  return row.locator('[data-presence]');
}

async function friendsTab(page: Page, tab: 'Online' | 'All' | 'Pending' | 'Blocked' | 'Add friend'): Promise<void> {
  await page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name: /^Friends/ }).click();
  await page.getByRole('tab', { name: new RegExp(`^${tab}`) }).click();
}

test('two people become friends, see each other online, idle and busy, type, and clear an unread badge by reading', async ({ browser }) => {
  const ann = uniqueName('ann');
  const ben = uniqueName('ben');
  const a = await newUser(browser);
  const b = await newUser(browser);
  // Ann's page runs on a clock the test can move: five quiet minutes make her idle.
  await a.page.clock.install();

  await signUp(a.page, ann);
  await signUp(b.page, ben);

  // Ann asks Ben to be friends, by username.
  await friendsTab(a.page, 'Add friend');
  await a.page.getByLabel('Username', { exact: true }).fill(ben);
  await a.page.getByRole('button', { name: 'Send friend request' }).click();
  await expect(a.page.getByRole('status').filter({ hasText: `Friend request sent to ${ben}.` })).toBeVisible();
  await capture(a.page, 'friends-add', { phone: true });

  // Ben sees the request counted on his Friends entry, and accepts it.
  const bFriends = b.page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name: /^Friends/ });
  await expect(bFriends).toContainText('1', { timeout: 30_000 });
  await friendsTab(b.page, 'Pending');
  await expect(friendRow(b.page, ann)).toContainText('Incoming friend request');
  await capture(b.page, 'friends-pending');
  await friendRow(b.page, ann).getByRole('button', { name: `Accept ${ann}` }).click();

  // Each sees the other online.
  await friendsTab(b.page, 'Online');
  await expect(dot(friendRow(b.page, ann))).toHaveAttribute('data-presence', 'online', { timeout: 30_000 });
  await friendsTab(a.page, 'Online');
  await expect(dot(friendRow(a.page, ben))).toHaveAttribute('data-presence', 'online', { timeout: 30_000 });
  await capture(a.page, 'friends-online', { phone: true });

  // Ann leaves her keyboard for six minutes: Ben sees her idle; she moves the mouse: online.
  await a.page.clock.fastForward('06:00');
  await expect(dot(friendRow(b.page, ann))).toHaveAttribute('data-presence', 'idle', { timeout: 30_000 });
  await expect(friendRow(b.page, ann)).toContainText('Idle');
  await a.page.mouse.move(200, 200);
  await a.page.mouse.move(240, 260);
  await expect(dot(friendRow(b.page, ann))).toHaveAttribute('data-presence', 'online', { timeout: 30_000 });

  // Ann chooses Do Not Disturb with a custom status; Ben sees both.
  await a.page.getByRole('button', { name: /^Set your status/ }).click();
  const picker = a.page.getByRole('dialog', { name: 'Set your status' });
  await picker.getByLabel('Custom status').fill('In a meeting');
  await picker.getByRole('button', { name: 'Save status' }).click();
  await picker.getByText('Do Not Disturb').click();
  await expect(a.page.getByRole('button', { name: 'Set your status, now Do Not Disturb' })).toBeVisible();
  await capture(a.page, 'presence-picker');
  await a.page.keyboard.press('Escape');
  await expect(dot(friendRow(b.page, ann))).toHaveAttribute('data-presence', 'dnd', { timeout: 30_000 });
  await expect(friendRow(b.page, ann)).toContainText('In a meeting');

  // Ann opens the DM and types: Ben, in the DM, sees her typing; her message ends it.
  await friendRow(a.page, ben).getByRole('button', { name: `Message ${ben}` }).click();
  await friendRow(b.page, ann).getByRole('button', { name: `Message ${ann}` }).click();
  await composer(a.page).pressSequentially('hel');
  const typing = b.page.getByTestId('typing');
  await expect(typing).toHaveText(`${ann} is typing…`, { timeout: 30_000 });
  await capture(b.page, 'typing');
  await composer(a.page).press('Enter');
  await expect(messages(b.page).getByText('hel', { exact: true })).toBeVisible({ timeout: 30_000 });
  await expect(typing).toHaveText('');

  // Ben steps away to the Friends page; Ann writes again: an unread badge on her conversation.
  await friendsTab(b.page, 'All');
  const text = `are you there ${ben}?`;
  await composer(a.page).fill(text);
  await composer(a.page).press('Enter');
  const conversation = b.page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name: new RegExp(`^${ann}`) });
  await expect(conversation).toContainText('1 unread', { timeout: 30_000 });
  await capture(b.page, 'unread-badge');
  // Reading clears it.
  await conversation.click();
  await expect(messages(b.page).getByText(text)).toBeVisible();
  await expect(conversation).not.toContainText('unread');

  // Ben blocks Ann from her profile: she leaves his friends, and her messages no longer reach him.
  await b.page.getByRole('button', { name: 'Block' }).click();
  await friendsTab(b.page, 'Blocked');
  await expect(friendRow(b.page, ann)).toContainText('Blocked');
  await friendsTab(a.page, 'All');
  await expect(friendRow(a.page, ben)).toHaveCount(0, { timeout: 30_000 });

  await a.context.close();
  await b.context.close();
});

/** Makes the page look hidden (another tab in front), or visible again. */
async function setHidden(page: Page, hidden: boolean): Promise<void> {
  await page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

test('a mention by name notifies and is counted on the server until read, drawn as a name and set apart', async ({ browser }) => {
  const { ben, a, b } = await twoInAServer(browser, 'Mentions');
  // Ben wants only his mentions from this server, and allows desktop notifications.
  await b.context.grantPermissions(['notifications'], { origin: process.env.COPAINS_E2E_BASE_URL! });
  await b.page.evaluate(() => {
    const shown: Array<{ title: string; body?: string }> = [];
    (window as unknown as { shown: typeof shown }).shown = shown;
    const Real = window.Notification;
    window.Notification = class extends Real {
      constructor(title: string, options?: NotificationOptions) {
        super(title, options);
        shown.push({ title, body: options?.body });
      }
    } as typeof Notification;
  });
  await b.page.getByRole('button', { name: /, server menu$/ }).click();
  await b.page.getByRole('menuitem', { name: 'Notification settings' }).click();
  const dialog = b.page.getByRole('dialog', { name: 'Notifications' });
  await dialog.getByLabel('Only @mentions').check();
  await capture(b.page, 'notification-settings');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await expect(dialog).toBeHidden();
  // Ben is elsewhere (his direct messages, another tab in front) when Ann writes in #general,
  // then names him.
  await b.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: /^Direct messages/ }).click();
  await setHidden(b.page, true);
  await composer(a.page).fill('just chatting');
  await composer(a.page).press('Enter');
  const text = `look at this @${ben}`;
  await composer(a.page).fill(text);
  await composer(a.page).press('Enter');
  await expect(channelMessages(a.page).getByText(`look at this @${ben}`)).toBeVisible();
  await expect
    .poll(() => b.page.evaluate(() => (window as unknown as { shown: Array<{ body?: string }> }).shown), { timeout: 30_000 })
    .toEqual([expect.objectContaining({ body: `look at this @${ben}` })]);
  await setHidden(b.page, false);
  const rail = b.page.getByRole('navigation', { name: 'Servers' });
  await expect(rail.getByRole('button', { name: /, 1 mention$/ })).toBeVisible({ timeout: 30_000 });
  await capture(b.page, 'mention-badge');
  // Opening the server reads #general: the count goes, the message names him and is set apart.
  await rail.getByRole('button', { name: /, 1 mention$/ }).click();
  const row = messageRow(b.page, 'look at this');
  await expect(row.locator('.mention.self')).toHaveText(`@${ben}`);
  await expect(row).toHaveClass(/mentioned/);
  await expect(rail.getByRole('button', { name: /mention/ })).toHaveCount(0);
  await a.context.close();
  await b.context.close();
});
