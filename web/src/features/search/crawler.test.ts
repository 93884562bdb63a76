import { describe, expect, it } from 'vitest';
import { Crawler } from './crawler';

describe('the history reader for search', () => {
  it('reads every channel a page at a time in turns, fresh once per connection, and skips failures', async () => {
    const calls: string[] = [];
    let pagesLeft: Record<string, number> = { a: 3, b: 1, c: 2 };
    const engine = {
      async searchCrawl(channel: string, fresh: boolean) {
        calls.push(`${channel}${fresh ? '*' : ''}`);
        if (channel === 'c') throw new Error('http: 403');
        pagesLeft[channel]! -= 1;
        return pagesLeft[channel]! <= 0;
      },
    };
    let channels = ['a', 'b', 'c'];
    const crawler = new Crawler(engine, () => channels, { sleep: async () => {} });
    await crawler.connected();
    expect(calls).toEqual(['a*', 'b*', 'c*', 'a', 'a']);

    // A new channel: only it is read; done and failed ones wait for the next connection.
    calls.length = 0;
    channels = [...channels, 'd'];
    pagesLeft = { ...pagesLeft, d: 1 };
    await crawler.kick();
    expect(calls).toEqual(['d*']);

    calls.length = 0;
    pagesLeft = { a: 1, b: 1, c: 1, d: 1 };
    await crawler.connected();
    expect(calls).toEqual(['a*', 'b*', 'c*', 'd*']);
  });

  it('runs once at a time, and again when kicked meanwhile', async () => {
    let release: () => void = () => {};
    const calls: string[] = [];
    const engine = {
      searchCrawl(channel: string) {
        calls.push(channel);
        return new Promise<boolean>((resolve) => (release = () => resolve(true)));
      },
    };
    let channels = ['a'];
    const crawler = new Crawler(engine, () => channels, { sleep: async () => {} });
    const first = crawler.connected();
    channels = ['a', 'b'];
    const second = crawler.kick();
    release();
    await Promise.resolve();
    await new Promise((r) => setTimeout(r, 0));
    release();
    await Promise.all([first, second]);
    expect(calls).toEqual(['a', 'b']);
  });
});
