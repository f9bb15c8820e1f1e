/**
 * Namespaces at work (contract 1.1): each channel takes the options of the
 * first namespace whose pattern matches it. History with its namespace's own
 * size; `historyChannels` as trailing namespaces; an earlier namespace without
 * history shadowing them; `clientPublish` for subscribers only. On the
 * embedded broker and on Redis.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BROKERS, publishH, range, useHistoryGateway } from '../helpers/history.js';

const uid = (): string => randomUUID().slice(0, 8);

const NAMESPACES = JSON.stringify([
  { pattern: 's:*', history: { size: 2, ttl: 60 } },
  { pattern: 'h:plain:*' },
  { pattern: 'cp:*', clientPublish: true },
]);

describe.each(BROKERS)('namespaces on the %s broker', (kind) => {
  // h:* keeps 5 messages (PUBGATE_HISTORY_CHANNELS, after the namespaces above).
  const { gw, open } = useHistoryGateway(kind, { PUBGATE_HISTORY_SIZE: '5', PUBGATE_NAMESPACES: NAMESPACES });

  it('keeps history with the size of the channel\'s namespace, and historyChannels after the configured namespaces', async () => {
    const small = `s:${uid()}`;
    const legacy = `h:${uid()}`;
    for (const n of range(1, 4)) {
      expect(await publishH(gw(), small, { n })).toEqual({ status: 200, body: { channel: small, offset: n } });
      expect(await publishH(gw(), legacy, { n })).toEqual({ status: 200, body: { channel: legacy, offset: n } });
    }
    const c = await open({ channels: ['s:*', 'h:*'] });
    const epochSmall = (await c.subscribe(small)).epoch as string;
    const epochLegacy = (await c.subscribe(legacy)).epoch as string;

    // s:* keeps 2: from offset 0 the history no longer reaches back; from 2 it does.
    const late = await open({ channels: ['s:*', 'h:*'] });
    expect(await late.subscribe(small, { offset: 0, epoch: epochSmall })).toMatchObject({ recovered: false, offset: 4 });
    const again = await open({ channels: ['s:*', 'h:*'] });
    expect(await again.subscribe(small, { offset: 2, epoch: epochSmall })).toMatchObject({ recovered: true, offset: 4 });
    await again.untilOffset(small, 4);
    expect(again.offsets(small)).toEqual([3, 4]);

    // h:* keeps 5 (PUBGATE_HISTORY_SIZE): all four come back from offset 0.
    expect(await late.subscribe(legacy, { offset: 0, epoch: epochLegacy })).toMatchObject({ recovered: true, offset: 4 });
    await late.untilOffset(legacy, 4);
    expect(late.offsets(legacy)).toEqual([1, 2, 3, 4]);
  });

  it('gives a channel the options of the first matching namespace: one without history shadows historyChannels', async () => {
    const shadowed = `h:plain:${uid()}`;
    expect(await publishH(gw(), shadowed, { n: 1 })).toEqual({ status: 200, body: { channel: shadowed } });
    const c = await open({ channels: ['h:*'] });
    expect(await c.subscribe(shadowed)).toEqual({ type: 'reply', id: 1 });
    await publishH(gw(), shadowed, { n: 2 });
    const m = await c.untilData(shadowed, (d) => (d as { n: number }).n === 2);
    expect(m).toEqual({ type: 'message', channel: shadowed, data: { n: 2 } });
  });

  it('lets a subscriber publish over the socket on a clientPublish channel, and nobody else without a publish claim', async () => {
    const ch = `cp:${uid()}`;
    const plain = `np:${uid()}`;
    const c = await open({ channels: ['cp:*', 'np:*'], publish: [] });
    const watcher = await open({ channels: ['cp:*'] });
    await watcher.subscribe(ch);

    // Not subscribed yet: forbidden, even on a clientPublish channel.
    const before = await c.request({ type: 'publish', channel: ch, data: { n: 0 } });
    expect(before.error).toEqual({ code: 'forbidden', message: `not allowed to publish to ${ch}` });

    await c.subscribe(ch);
    const ok = await c.request({ type: 'publish', channel: ch, data: { n: 1 } });
    expect(ok.error).toBeUndefined();
    expect(await watcher.untilData(ch, (d) => (d as { n: number }).n === 1)).toEqual({ type: 'message', channel: ch, data: { n: 1 } });
    expect(watcher.messages(ch)).toHaveLength(1); // the refused publish never went out

    // A channel without clientPublish: subscribed, still forbidden.
    await c.subscribe(plain);
    const refused = await c.request({ type: 'publish', channel: plain, data: { n: 2 } });
    expect(refused.error).toEqual({ code: 'forbidden', message: `not allowed to publish to ${plain}` });

    // After unsubscribing, the clientPublish right is gone too.
    await c.request({ type: 'unsubscribe', channel: ch });
    const after = await c.request({ type: 'publish', channel: ch, data: { n: 3 } });
    expect(after.error).toEqual({ code: 'forbidden', message: `not allowed to publish to ${ch}` });
  });
});
