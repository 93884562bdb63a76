import type { Page } from '@playwright/test';
import { channelList, expect, shot, test, twoInAServer } from './fixtures';

// Two people in a voice channel, with Chromium's fake microphone (a beep), camera and screen.
// Every frame is SFrame-encrypted in the sender's media worker and decrypted in the receiver's:
// a video frame decoded, or an audio frame opened, proves the keys went through the engine's
// Signal sessions and the media worker on both sides.

const stage = (page: Page) => page.getByRole('region', { name: /^Voice channel / });
const stats = (page: Page) => stage(page).locator('[data-audio-opened]');

async function joinVoice(page: Page): Promise<void> {
  await channelList(page).getByRole('button', { name: /^general \(voice channel\)/ }).click();
  await expect(page.getByRole('region', { name: 'Voice connection' }).getByText('Voice connected')).toBeVisible({ timeout: 30_000 });
}

async function number(page: Page, attr: string): Promise<number> {
  return Number((await stats(page).getAttribute(attr)) ?? '0');
}

test('two people talk in a voice channel: speaking, camera and screen share, decrypted on each side; both leave', async ({ browser }) => {
  test.setTimeout(180_000);
  const { ann, ben, a, b } = await twoInAServer(browser, 'Voice');

  // Ann joins: her own tile, the privacy code, and her name under the channel for Ben.
  await joinVoice(a.page);
  await expect(stage(a.page).getByRole('group', { name: new RegExp(`^${ann}(,|$)`) })).toBeVisible();
  await expect(channelList(b.page).locator('[data-voice-member]')).toHaveCount(1);

  // Ben joins. Each sees the other's tile and the other speaking (the fake microphone beeps;
  // the SFU reads the audio level, never the audio).
  await joinVoice(b.page);
  const benOnA = stage(a.page).getByRole('group', { name: new RegExp(`^${ben}(,|$)`) });
  const annOnB = stage(b.page).getByRole('group', { name: new RegExp(`^${ann}(,|$)`) });
  await expect(benOnA).toBeVisible();
  await expect(annOnB).toBeVisible();
  await expect(benOnA).toHaveAttribute('data-speaking', 'true', { timeout: 30_000 });
  await expect(annOnB).toHaveAttribute('data-speaking', 'true', { timeout: 30_000 });
  await expect(channelList(a.page).locator('[data-voice-member][data-speaking="true"]').first()).toBeVisible();

  // Audio frames opened with the other's key, on each side.
  await expect.poll(() => number(a.page, 'data-audio-opened'), { timeout: 30_000 }).toBeGreaterThan(0);
  await expect.poll(() => number(b.page, 'data-audio-opened'), { timeout: 30_000 }).toBeGreaterThan(0);
  await expect(benOnA.getByText('Waiting for their key')).toHaveCount(0);

  // The same privacy code on both screens.
  const codeA = stage(a.page).locator('[data-privacy-code]');
  await expect(codeA).toHaveAttribute('data-privacy-code', /^\d{5}( \d{5}){5}$/, { timeout: 30_000 });
  const code = await codeA.getAttribute('data-privacy-code');
  await expect(stage(b.page).locator('[data-privacy-code]')).toHaveAttribute('data-privacy-code', code!);

  // Ann turns her camera on: Ben decodes it (a frame that did not decrypt cannot decode).
  await stage(a.page).getByRole('button', { name: 'Turn on camera' }).click();
  await expect(annOnB.locator('video')).toBeVisible({ timeout: 30_000 });
  await expect.poll(() => number(b.page, 'data-frames-decoded'), { timeout: 30_000 }).toBeGreaterThan(0);
  await expect.poll(() => number(b.page, 'data-video-opened')).toBeGreaterThan(0);
  await expect.poll(() => annOnB.locator('video').evaluate((v: HTMLVideoElement) => v.videoWidth), { timeout: 30_000 }).toBeGreaterThan(0);
  // Her browser's bandwidth estimate grows (its probes are acknowledged, RTX padding included)
  // until it sends her best layer, which the SFU gives Ben: more than half of its width.
  const bestWidth = await a.page.evaluate(async () => {
    const s = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
    const width = s.getVideoTracks()[0]?.getSettings().width ?? 0;
    for (const t of s.getTracks()) t.stop();
    return width;
  });
  await expect.poll(() => annOnB.locator('video').evaluate((v: HTMLVideoElement) => v.videoWidth), { timeout: 30_000 }).toBeGreaterThan(bestWidth / 2);
  await expect(channelList(b.page).getByTitle('Camera on')).toBeVisible();
  // Lost video is sent again on a retransmission stream (RTX) both ways: Ann's camera layers
  // to the SFU, and the SFU's copy of her camera to Ben.
  await expect.poll(() => number(a.page, 'data-video-rtx-sending'), { timeout: 15_000 }).toBeGreaterThan(0);
  await expect.poll(() => number(b.page, 'data-video-rtx-receiving'), { timeout: 15_000 }).toBeGreaterThan(0);
  await shot(b.page, 'voice-camera');

  // Ben shares his screen: Ann gets a tile for it and decodes it.
  const framesBefore = await number(a.page, 'data-frames-decoded');
  await stage(b.page).getByRole('button', { name: 'Share your screen' }).click();
  const screenOnA = stage(a.page).getByRole('group', { name: new RegExp(`^${ben}’s screen`) });
  await expect(screenOnA).toBeVisible({ timeout: 30_000 });
  await expect.poll(() => screenOnA.locator('video').evaluate((v: HTMLVideoElement) => v.videoWidth), { timeout: 30_000 }).toBeGreaterThan(0);
  await expect.poll(() => number(a.page, 'data-frames-decoded'), { timeout: 30_000 }).toBeGreaterThan(framesBefore);
  await expect(channelList(a.page).getByText('LIVE')).toBeVisible();
  await shot(a.page, 'voice-screen-share');

  // Focus the screen, then back to the grid.
  await screenOnA.hover();
  await screenOnA.getByRole('button', { name: /^Focus / }).click();
  await shot(a.page, 'voice-focused');
  await stage(a.page).getByRole('button', { name: 'Back to the grid' }).click();

  // Mute shows on the other side; no frame failed to open all along.
  await stage(b.page).getByRole('button', { name: 'Mute', exact: true }).click();
  await expect(benOnA).toHaveAttribute('aria-label', /muted/);
  expect(Number(await stats(a.page).getAttribute('data-audio-opened'))).toBeGreaterThan(0);

  // Ann stops sending (muted, camera off), then Ben leaves: she draws no new key until she
  // sends again (dormant), and her page does not claim to be drawing one.
  await stage(a.page).getByRole('button', { name: 'Mute', exact: true }).click();
  await stage(a.page).getByRole('button', { name: 'Turn off camera' }).click();
  await expect(channelList(b.page).getByTitle('Camera on')).toHaveCount(0);
  await stage(b.page).getByRole('button', { name: 'Leave voice' }).click();
  await expect(benOnA).toHaveCount(0, { timeout: 15_000 });
  const openedByAnnBeforeLeave = await number(a.page, 'data-audio-opened');
  await expect(stage(a.page).getByText('Someone left')).toHaveCount(0);
  // Her (silent) microphone frames are dropped from the moment the leave arrived, none sent.
  const unsent = await number(a.page, 'data-audio-unsent');
  await expect.poll(() => number(a.page, 'data-audio-unsent'), { timeout: 15_000 }).toBeGreaterThan(unsent);
  const sent = await number(a.page, 'data-audio-sent');
  await expect.poll(() => number(a.page, 'data-audio-unsent'), { timeout: 15_000 }).toBeGreaterThan(unsent + 50);
  expect(await number(a.page, 'data-audio-sent')).toBe(sent);

  // Ben comes back: Ann gave him no key (she had none to give) and his page does not wait for
  // one while she is silent. Once she unmutes, her fresh key reaches him and her audio opens.
  await joinVoice(b.page);
  await expect(annOnB).toBeVisible();
  await expect(benOnA).toBeVisible();
  await expect(annOnB.getByText('Waiting for their key')).toHaveCount(0);
  expect(await number(b.page, 'data-audio-opened')).toBe(0);
  await stage(a.page).getByRole('button', { name: 'Unmute', exact: true }).click();
  await expect.poll(() => number(b.page, 'data-audio-opened'), { timeout: 30_000 }).toBeGreaterThan(0);
  await expect(annOnB).toHaveAttribute('data-speaking', 'true', { timeout: 30_000 });
  // Ben's new microphone track reaches Ann on the m-line his first one left free (the SFU
  // reuses it, its numbering going on), and opens there with his new key.
  await expect.poll(() => number(a.page, 'data-audio-opened'), { timeout: 30_000 }).toBeGreaterThan(openedByAnnBeforeLeave + 50);
  await expect(benOnA).toHaveAttribute('data-speaking', 'true', { timeout: 30_000 });
  // The same privacy code on both screens again.
  const codes = async () => Promise.all([a.page, b.page].map((p) => stage(p).locator('[data-privacy-code]').getAttribute('data-privacy-code')));
  await expect.poll(async () => { const [x, y] = await codes(); return x !== null && x === y; }, { timeout: 30_000 }).toBe(true);
  expect((await codes())[0]).toMatch(/^\d{5}( \d{5}){5}$/);

  // Both leave: the call ends and the channel empties for everyone.
  await stage(b.page).getByRole('button', { name: 'Leave voice' }).click();
  await expect(benOnA).toHaveCount(0, { timeout: 15_000 });
  await a.page.getByRole('region', { name: 'Voice connection' }).getByRole('button', { name: 'Leave voice' }).click();
  await expect(a.page.getByRole('region', { name: 'Voice connection' })).toHaveCount(0);
  await expect(channelList(b.page).locator('[data-voice-member]')).toHaveCount(0, { timeout: 15_000 });
  await expect(stage(a.page).getByRole('button', { name: 'Join voice' })).toBeVisible();
  await shot(a.page, 'voice-lobby');

  await a.context.close();
  await b.context.close();
});
