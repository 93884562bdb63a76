import { capture, channelMessages, composer, expect, send, serverMenu, test, twoInAServer } from './fixtures';

const secret = () => Math.random().toString(36).slice(2, 10);

test('a moderator times a member out: the member can only read until the timeout is lifted, and the audit log says who did it and why', async ({ browser }) => {
  test.setTimeout(120_000);
  const { ann, ben, a, b } = await twoInAServer(browser, 'Mods');
  const before = `Before the timeout ${secret()}`;
  await send(b.page, before);
  await expect(channelMessages(a.page).getByText(before)).toBeVisible({ timeout: 30_000 });

  // Ann times Ben out for 10 minutes, with a reason.
  await serverMenu(a.page, 'Server settings');
  const settings = a.page.getByRole('dialog', { name: /^Server settings: / });
  await settings.getByRole('tab', { name: 'Members' }).click();
  await settings.getByRole('button', { name: `Time out ${ben}` }).click();
  const dialog = a.page.getByRole('dialog', { name: `Time out ${ben}?` });
  await dialog.getByLabel('Duration').selectOption({ label: '10 minutes' });
  await expect(dialog.getByRole('checkbox', { name: /^Longer for a repeat/ })).toBeChecked();
  await dialog.getByLabel('Reason (kept in the audit log)').fill('Cool off a little');
  await capture(a.page, 'moderation-timeout-dialog', { dark: false });
  await dialog.getByRole('button', { name: 'Time out', exact: true }).click();
  await expect(dialog).toBeHidden();
  await expect(settings.getByText(/^Timed out until /)).toBeVisible({ timeout: 30_000 });
  await expect(settings.getByRole('button', { name: `Remove the timeout of ${ben}` })).toBeVisible();

  // Ben's page: no composer, and why.
  await expect(composer(b.page)).toHaveCount(0, { timeout: 30_000 });
  await expect(b.page.getByRole('note').filter({ hasText: /^You are timed out until / })).toBeVisible();
  await capture(b.page, 'moderation-timed-out-member');

  // The audit log: who, what, to whom, why; filtered by action.
  await settings.getByRole('tab', { name: 'Audit log' }).click();
  const entries = settings.getByRole('list', { name: 'Audit log entries' });
  const entry = entries.getByRole('listitem').filter({ hasText: `${ann} timed out ${ben} for 10 minutes` });
  await expect(entry).toBeVisible();
  await expect(entry.getByText('Reason: Cool off a little')).toBeVisible();
  await capture(a.page, 'moderation-audit-log');
  await settings.getByLabel('Action').selectOption({ label: 'Kicks' });
  await expect(settings.getByText('Nothing recorded for these filters.')).toBeVisible();
  await settings.getByLabel('Action').selectOption({ label: 'Timeouts' });
  await expect(entries.getByRole('listitem')).toHaveCount(1);

  // Ann lifts it: Ben writes again, and the log has both.
  await settings.getByRole('tab', { name: 'Members' }).click();
  await settings.getByRole('button', { name: `Remove the timeout of ${ben}` }).click();
  await expect(settings.getByRole('button', { name: `Time out ${ben}` })).toBeVisible({ timeout: 30_000 });
  await expect(composer(b.page)).toBeVisible({ timeout: 30_000 });
  const after = `Free again ${secret()}`;
  await send(b.page, after);
  await expect(channelMessages(b.page).getByText(after)).toBeVisible();
  await settings.getByRole('tab', { name: 'Audit log' }).click();
  await expect(entries.getByRole('listitem').first()).toContainText(`${ann} removed the timeout of ${ben}`);
  await a.page.keyboard.press('Escape');
  await expect(channelMessages(a.page).getByText(after)).toBeVisible({ timeout: 30_000 });

  await a.context.close();
  await b.context.close();
});

test('a moderator deletes a member’s recent messages: they disappear for everyone, and the audit log counts them', async ({ browser }) => {
  test.setTimeout(120_000);
  const { ann, ben, a, b } = await twoInAServer(browser, 'Purge');
  const spam = [`Buy now ${secret()}`, `Cheap stuff ${secret()}`];
  for (const text of spam) await send(b.page, text);
  const kept = `Hello all ${secret()}`;
  await send(a.page, kept);
  for (const text of spam) await expect(channelMessages(a.page).getByText(text)).toBeVisible({ timeout: 30_000 });

  await serverMenu(a.page, 'Server settings');
  const settings = a.page.getByRole('dialog', { name: /^Server settings: / });
  await settings.getByRole('tab', { name: 'Members' }).click();
  await settings.getByRole('button', { name: `Delete the recent messages of ${ben}` }).click();
  const dialog = a.page.getByRole('dialog', { name: `Delete the messages of ${ben}?` });
  await dialog.getByLabel('From').selectOption({ label: 'Previous hour' });
  await capture(a.page, 'moderation-purge-dialog', { dark: false });
  await dialog.getByRole('button', { name: 'Delete messages' }).click();
  await expect(dialog).toBeHidden();
  await expect(settings.getByRole('status').filter({ hasText: `2 messages by ${ben} deleted.` })).toBeVisible();
  await settings.getByRole('tab', { name: 'Audit log' }).click();
  await expect(settings.getByRole('list', { name: 'Audit log entries' }).getByRole('listitem').first()).toContainText(
    `${ann} deleted 2 messages by ${ben} from the last 1 hour`,
  );
  await a.page.keyboard.press('Escape');

  // Gone on both pages; Ann's own message stays.
  for (const page of [a.page, b.page]) {
    for (const text of spam) await expect(channelMessages(page).getByText(text)).toHaveCount(0, { timeout: 30_000 });
    await expect(channelMessages(page).getByText(kept)).toBeVisible();
  }
  await a.context.close();
  await b.context.close();
});
