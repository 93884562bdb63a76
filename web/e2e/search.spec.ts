import type { Page } from '@playwright/test';
import {
  capture,
  channelList,
  expectShell,
  channelMessages,
  composer,
  expect,
  localStoreDump,
  messages,
  openDm,
  recordOutgoing,
  send,
  serverMenu,
  test,
  twoInAServer,
  unlock,
} from './fixtures';

/** Opens the search panel from the top bar and searches for `query`. */
async function search(page: Page, query: string): Promise<void> {
  const panel = page.getByRole('complementary', { name: 'Search' });
  if (!(await panel.isVisible())) await page.getByRole('button', { name: 'Search', exact: true }).click();
  const box = panel.getByRole('searchbox');
  await box.fill(query);
  await box.press('Enter');
}

function results(page: Page) {
  return page.getByRole('complementary', { name: 'Search' }).getByRole('listitem');
}

test('search finds messages by word and filter on this device, jumps to them, and sends nothing of the query', async ({ browser }) => {
  test.setTimeout(240_000);
  const { ann, ben, a, b } = await twoInAServer(browser, 'Search');

  // Ann writes in #general while Ben reads along; the first message ends up far above the
  // newest page.
  await send(a.page, 'Picnic at the lake on Saturday');
  await send(a.page, 'I will bring the Pétanque set: https://boules.example/set');
  for (let i = 1; i <= 52; i++) {
    await composer(a.page).fill(`filler message number ${i}`);
    await composer(a.page).press('Enter');
  }
  await send(b.page, 'Who has the picnic blanket?');
  await expect(channelMessages(b.page).getByText('filler message number 52')).toBeVisible({ timeout: 60_000 });
  await expect(channelMessages(a.page).getByText('Who has the picnic blanket?')).toBeVisible({ timeout: 30_000 });

  // From here on, nothing Ben's page sends may carry a word he searches for.
  const outgoing: string[] = [];
  recordOutgoing(b.page, outgoing);

  // A word, accents and case aside: both messages, the newest first.
  await search(b.page, 'PICNIC');
  const panel = b.page.getByRole('complementary', { name: 'Search' });
  await expect(panel.getByRole('status')).toHaveText('2 results');
  await expect(results(b.page).nth(0)).toContainText('Who has the picnic blanket?');
  await expect(results(b.page).nth(1)).toContainText('Picnic at the lake on Saturday');
  await expect(results(b.page).nth(1).locator('mark')).toHaveText('Picnic');
  await capture(b.page, 'search-results', { phone: true });

  // A result far up the channel: the jump loads it and marks it.
  await results(b.page).nth(1).getByRole('button').click();
  const target = channelMessages(b.page).getByRole('listitem').filter({ hasText: 'Picnic at the lake on Saturday' });
  await expect(target).toBeInViewport();
  await expect(target).toHaveClass(/highlight/);

  // Filters: by author and what a message has, and the beginning of a word.
  await search(b.page, `from:${ann} has:link petan`);
  await expect(panel.getByRole('status')).toHaveText('1 result');
  await expect(results(b.page).first()).toContainText('https://boules.example/set');
  await search(b.page, `from:${ben} picnic`);
  await expect(panel.getByRole('status')).toHaveText('1 result');
  await expect(results(b.page).first()).toContainText('Who has the picnic blanket?');
  await search(b.page, 'in:#nowhere picnic');
  await expect(panel.getByRole('alert')).toHaveText('No channel named “#nowhere” here.');
  await search(b.page, 'volleyball');
  await expect(panel.getByRole('status')).toHaveText('No results');

  // Direct messages: Ann writes to Ben; from his DMs, search finds it and opens it.
  await a.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: /^Direct messages/ }).click();
  await openDm(a.page, ben);
  await send(a.page, 'Secret: the surprise cake is lemon');
  await b.page.getByRole('navigation', { name: 'Servers' }).getByRole('button', { name: /^Direct messages/ }).click();
  await expect(b.page.getByRole('navigation', { name: 'Direct messages' }).getByRole('button', { name: new RegExp(ann) })).toBeVisible({ timeout: 30_000 });
  await search(b.page, 'lemon');
  await expect(panel.getByRole('status')).toHaveText('1 result', { timeout: 30_000 });
  await expect(results(b.page).first()).toContainText(`@${ann}`);
  await capture(b.page, 'search-dms');
  await results(b.page).first().getByRole('button').click();
  await expect(messages(b.page).getByText('Secret: the surprise cake is lemon')).toBeInViewport();

  // Nothing of any query left the page, and the browser's store holds none of the words.
  for (const word of ['picnic', 'PICNIC', 'petan', 'lemon', 'volleyball']) {
    expect(outgoing.filter((o) => o.includes(word)), `sent ${word}`).toEqual([]);
  }
  const stored = (await localStoreDump(b.page)).join('\n');
  expect(stored.length).toBeGreaterThan(10_000);
  for (const word of ['Picnic', 'picnic', 'blanket', 'lemon', 'boules', 'filler']) {
    expect(stored.includes(word), `the store shows ${word}`).toBe(false);
  }

  await a.context.close();
  await b.context.close();
});

test('what was sent while one was away, in a channel one never opened, is found on coming back', async ({ browser }) => {
  test.setTimeout(180_000);
  const { b, a } = await twoInAServer(browser, 'Away');
  await serverMenu(a.page, 'Create channel');
  const create = a.page.getByRole('dialog', { name: 'Create channel' });
  await create.getByLabel('Channel name').fill('news');
  await create.getByRole('button', { name: 'Create channel' }).click();
  await expect(a.page.getByRole('heading', { level: 1, name: 'news' })).toBeVisible();
  await expect(channelList(b.page).getByRole('button', { name: /^news \(text channel\)/ })).toBeVisible({ timeout: 30_000 });

  // Ben closes his tab (on #general); Ann writes in #news meanwhile.
  await expect(b.page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();
  const generalPath = new URL(b.page.url()).pathname;
  await b.page.close();
  await send(a.page, 'The regatta moved to Sunday');
  await expect(channelMessages(a.page, 'news').getByText('The regatta moved to Sunday')).toBeVisible();

  // Ben comes back to #general. The history of #news is read in the background (never on
  // screen), and search finds the message.
  const page = await b.context.newPage();
  await page.goto(generalPath);
  await unlock(page);
  await expectShell(page);
  await expect(page.getByRole('heading', { level: 1, name: 'general' })).toBeVisible();
  await expect
    .poll(
      async () => {
        await search(page, 'regatta');
        return page.getByRole('complementary', { name: 'Search' }).getByRole('status').textContent();
      },
      { timeout: 30_000 },
    )
    .toBe('1 result');
  await expect(results(page).first()).toContainText('#news');
  await results(page).first().getByRole('button').click();
  await expect(page.getByRole('heading', { level: 1, name: 'news' })).toBeVisible();
  await expect(channelMessages(page, 'news').getByText('The regatta moved to Sunday')).toBeInViewport();

  await a.context.close();
  await b.context.close();
});
