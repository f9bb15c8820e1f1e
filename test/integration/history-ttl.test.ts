/**
 * History expiry (historyTtl): a channel idle for longer than the TTL loses
 * its history, so its epoch changes and its offsets start again; a client
 * recovering with the expired epoch gets `recovered:false`. The embedded
 * broker expires lazily (and on a timer), Redis and Redis Cluster through key
 * TTLs.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { waitUntil } from '../helpers/handshake.js';
import { BROKERS_AND_CLUSTER, publishBatchOffsets, publishOffset, useHistoryGateway } from '../helpers/history.js';

describe.each(BROKERS_AND_CLUSTER)('history TTL on the %s broker', (kind) => {
  // Frame rate off: the poll below subscribes and unsubscribes repeatedly.
  const { gw, open } = useHistoryGateway(kind, { PUBGATE_HISTORY_TTL: '1', PUBGATE_CLIENT_FRAME_RATE: '0', PUBGATE_LOG_LEVEL: 'info' });

  it('after the channel was idle longer than the TTL: new epoch, offsets from 1, the old position not recovered', async () => {
    const ch = `h:ttl:${randomUUID().slice(0, 8)}`;
    const sub = await open();
    const first = await sub.subscribe(ch);
    expect(await publishBatchOffsets(gw(), ch, [{ n: 1 }, { n: 2 }])).toEqual([1, 2]);
    await sub.untilOffset(ch, 2);
    const old = sub.last(ch);
    expect(old.epoch).toBe(first.epoch);

    // Fresh subscribes (unsubscribe, subscribe) until the reply shows another epoch.
    const poller = await open();
    let latest = await poller.subscribe(ch);
    await waitUntil(
      async () => {
        expect((await poller.request({ type: 'unsubscribe', channel: ch })).error).toBeUndefined();
        latest = await poller.subscribe(ch);
        return latest.epoch !== old.epoch;
      },
      'the epoch to change after the TTL',
      15_000,
    );
    // History lost: position 0 in the new epoch.
    expect(latest).toMatchObject({ type: 'reply', offset: 0 });
    expect(typeof latest.epoch).toBe('string');

    const back = await open();
    const r = await back.subscribe(ch, old);
    expect(r).toMatchObject({ type: 'reply', id: 1, recovered: false, offset: 0 });
    expect(r.epoch).not.toBe(old.epoch);

    // Offsets start again at 1, in an epoch that is not the expired one; every subscriber is live.
    expect(await publishOffset(gw(), ch, { n: 'again' })).toBe(1);
    for (const c of [sub, poller, back]) {
      const m = await c.untilData(ch, (d) => (d as { n?: unknown }).n === 'again');
      expect(m.offset).toBe(1);
      expect(m.epoch).not.toBe(old.epoch);
    }
    // The live subscriber saw the old epoch's messages, then the new epoch from offset 1.
    expect(sub.offsets(ch)).toEqual([1, 2, 1]);
  });
});
