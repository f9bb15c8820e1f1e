/**
 * A slow consumer closed with 4008 recovers everything it missed from history:
 * a paused subscriber falls behind (send buffer over maxBackpressure), reads
 * what was buffered once resumed, is closed with 4008, reconnects with `since`
 * = the last offset it received and ends up with every offset exactly once.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import { BROKERS_AND_CLUSTER, publishBatchOffsets, publishOffset, range, useHistoryGateway } from '../helpers/history.js';

const MAX_BACKPRESSURE = 64 * 1024;
const BATCH = 500;
const MIN_BATCHES = 6; // 3000 messages at least
const MAX_BATCHES = 40; // kernel socket buffers absorb a few MB before the node's own buffer fills
const PAD = 'x'.repeat(1000);
/** The replay test: 20 MB of history, several times what loopback socket buffers take in (about 4 MB send + what the reader drains meanwhile). */
const BIG_BATCHES = 20;
const BIG_PAD = 'x'.repeat(2000);

describe.each(BROKERS_AND_CLUSTER)('slow consumer recovery on the %s broker', (kind) => {
  const { gw, open } = useHistoryGateway(kind, {
    PUBGATE_SLOW_CONSUMER_POLICY: 'close',
    PUBGATE_MAX_BACKPRESSURE: String(MAX_BACKPRESSURE),
    PUBGATE_HISTORY_SIZE: String(Math.max(MAX_BATCHES, BIG_BATCHES) * BATCH + 100),
    PUBGATE_MAX_PUBLISH_BYTES: String(2 * 1024 * 1024),
    PUBGATE_LOG_LEVEL: 'info',
  });

  it('a 4008-closed slow consumer reconnects with since and ends up with offsets 1..N exactly', async () => {
    const ch = `h:slow:${randomUUID().slice(0, 8)}`;
    const fast = await open();
    const slow = await open();
    const epoch = (await fast.subscribe(ch)).epoch as string;
    expect(await slow.subscribe(ch)).toEqual({ type: 'reply', id: 1, offset: 0, epoch });
    const drops0 = await metric(gw().admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' });
    slow.ws.pause(); // stops reading: kernel buffers fill, then the node's send buffer

    // Publish until the node reports the paused subscriber as slow (and at least MIN_BATCHES).
    let n = 0;
    for (let b = 0; b < MAX_BATCHES; b++) {
      const offsets = await publishBatchOffsets(gw(), ch, range(n + 1, n + BATCH).map((i) => ({ i, pad: PAD })));
      expect(offsets).toEqual(range(n + 1, n + BATCH));
      n += BATCH;
      // The fast subscriber has everything so far: the node has handled every delivery.
      await fast.untilOffset(ch, n);
      if (b + 1 >= MIN_BATCHES && (await metric(gw().admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' })) > drops0) break;
    }
    expect(await metric(gw().admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' })).toBeGreaterThan(drops0);
    // More after the drop: the slow subscriber misses those too.
    expect(await publishBatchOffsets(gw(), ch, range(n + 1, n + BATCH).map((i) => ({ i, pad: PAD })))).toEqual(range(n + 1, n + BATCH));
    n += BATCH;
    await fast.untilOffset(ch, n);
    expect(fast.offsets(ch)).toEqual(range(1, n));

    // It reads again: what was buffered arrives, then the 4008 close.
    slow.ws.resume();
    expect((await slow.closed).code).toBe(4008);
    const before = slow.offsets(ch);
    expect(before.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(n);
    expect(before).toEqual(range(1, before.length)); // a gap-free prefix
    const last = slow.last(ch);
    expect(last).toEqual({ offset: before.length, epoch });

    const again = await open();
    const reply = await again.subscribe(ch, last);
    expect(reply).toEqual({ type: 'reply', id: 1, recovered: true, offset: n, epoch });
    await again.untilOffset(ch, n);
    expect(await publishOffset(gw(), ch, { i: n + 1, pad: PAD })).toBe(n + 1);
    await again.untilOffset(ch, n + 1);
    expect(await again.alive()).toBe('open');

    const all = [...slow.messages(ch), ...again.messages(ch)];
    expect(all.map((m) => m.offset)).toEqual(range(1, n + 1));
    expect(all.every((m) => m.epoch === epoch && (m.data as { i: number }).i === m.offset)).toBe(true);
  });

  it('a client recovering 20 MB of history (under historySize, 300× maxBackpressure) gets it all with one subscribe, paced, while live messages keep coming', async () => {
    const ch = `h:bigreplay:${randomUUID().slice(0, 8)}`;
    const count = BIG_BATCHES * BATCH;
    const probe = await open();
    const epoch = (await probe.subscribe(ch)).epoch as string;
    await probe.close();
    for (let b = 0; b < BIG_BATCHES; b++) {
      const from = b * BATCH + 1;
      expect(await publishBatchOffsets(gw(), ch, range(from, from + BATCH - 1).map((i) => ({ i, pad: BIG_PAD })))).toEqual(range(from, from + BATCH - 1));
    }
    const drops0 = await metric(gw().admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' });
    const c = await open();
    const id = c.sendRequest({ type: 'subscribe', channel: ch, since: { offset: 0, epoch } });
    // Live messages published while the replay is under way (the first replayed frame has arrived).
    await c.until(() => c.offsets(ch).length > 0, 'the first replayed message', 60_000);
    const LIVE = 300;
    for (let i = count + 1; i <= count + LIVE; i++) expect(await publishOffset(gw(), ch, { i, pad: 'live' })).toBe(i);
    await c.until(() => c.replies.has(id) || c.closeInfo !== undefined, 'the reply', 120_000);
    expect(c.closeInfo).toBeUndefined();
    const reply = c.replies.get(id);
    expect(reply).toMatchObject({ type: 'reply', id, recovered: true, epoch });
    // The reply comes after the replay; its offset is where the replay (and the live messages held during it) ended.
    expect(reply?.offset).toBeGreaterThanOrEqual(count);
    await c.untilOffset(ch, count + LIVE);
    expect(c.offsets(ch)).toEqual(range(1, count + LIVE));
    expect(c.messages(ch).every((m) => m.epoch === epoch && (m.data as { i: number }).i === m.offset)).toBe(true);
    expect(await c.alive()).toBe('open');
    // Paced: the replay never went over maxBackpressure, so nothing was skipped.
    expect(await metric(gw().admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' })).toBe(drops0);
    expect(await metric(gw().admin, 'pubgate_recovery_replayed_messages_total')).toBeGreaterThanOrEqual(count);
  }, 180_000);
});
