import { capture, expect, messages, newUser, openConversation, openDm, send, signUp, test, uniqueName } from './fixtures';

test('offline: the top bar says so, a message fails with Retry, and everything resumes when the network is back', async ({ browser }) => {
  const kim = uniqueName('kim');
  const lou = uniqueName('lou');
  const a = await newUser(browser);
  const b = await newUser(browser);
  await signUp(a.page, kim);
  await signUp(b.page, lou);
  await openDm(a.page, lou);
  await send(a.page, 'while online');
  await openConversation(b.page, new RegExp(kim));
  await expect(messages(b.page).getByText('while online')).toBeVisible();

  const status = a.page.getByRole('status').filter({ hasText: /^Connection:/ });
  await a.context.setOffline(true);
  await expect(status).toHaveText(/Connection: (Offline|Reconnecting…)/);
  await send(a.page, 'typed while offline');
  const failed = messages(a.page).getByRole('listitem').filter({ hasText: 'typed while offline' });
  await expect(failed.getByRole('alert')).toContainText('Not sent');
  await expect(a.page.getByRole('button', { name: 'Reconnect now' })).toBeVisible();
  await capture(a.page, 'offline-failed-message', { phone: true });

  await a.context.setOffline(false);
  await expect(status).toHaveText('Connection: Online', { timeout: 30_000 });
  await failed.getByRole('button', { name: 'Retry' }).click();
  await expect(messages(b.page).getByText('typed while offline')).toBeVisible({ timeout: 30_000 });
  await expect(failed.getByRole('alert')).toBeHidden();

  // Messages sent to A while it was away arrive too.
  await a.context.setOffline(true);
  await send(b.page, 'sent while you were away');
  await a.context.setOffline(false);
  await expect(messages(a.page).getByText('sent while you were away')).toBeVisible({ timeout: 30_000 });
  await a.context.close();
  await b.context.close();
});
