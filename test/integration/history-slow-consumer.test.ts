/**
 * A slow consumer closed with 4008 recovers everything it missed from history:
 * a paused subscriber falls behind (send buffer over maxBackpressure), reads
 * what was buffered once resumed, is closed with 4008, reconnects with `since`
 * = the last offset it received and ends up with every offset exactly once.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import { BROKERS, HistoryClient, closeClients, publishBatchOffsets, publishOffset, range, startHistoryGateway, type HistorySetup } from '../helpers/history.js';

const MAX_BACKPRESSURE = 64 * 1024;
const BATCH = 500;
const MIN_BATCHES = 6; // 3000 messages at least
const MAX_BATCHES = 40; // kernel socket buffers absorb a few MB before the node's own buffer fills
const PAD = 'x'.repeat(1000);
/** The replay test: 20 MB of history, several times what loopback socket buffers take in (about 4 MB send + what the reader drains meanwhile). */
const BIG_BATCHES = 20;
const BIG_PAD = 'x'.repeat(2000);

describe.each(BROKERS)('slow consumer recovery on the %s broker', (kind) => {
  let setup: HistorySetup | undefined;
  const clients: HistoryClient[] = [];
  const gw = () => {
    if (!setup) throw new Error('gateway did not start');
    return setup.gw;
  };
  const open = async (): Promise<HistoryClient> => {
    const c = await HistoryClient.open(gw().url);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    setup = await startHistoryGateway(kind, {
      PUBGATE_SLOW_CONSUMER_POLICY: 'close',
      PUBGATE_MAX_BACKPRESSURE: String(MAX_BACKPRESSURE),
      PUBGATE_HISTORY_SIZE: String(Math.max(MAX_BATCHES, BIG_BATCHES) * BATCH + 100),
      PUBGATE_MAX_PUBLISH_BYTES: String(2 * 1024 * 1024),
      PUBGATE_LOG_LEVEL: 'info',
    });
  }, 60_000);
  afterEach(async () => {
    await closeClients(clients);
  });
  afterAll(async () => {
    await setup?.stop();
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

  /** How the recovery of 20 MB went: subscribes needed, close codes seen, error replies, the first subscribe's reply. */
  let bigReplay: { rounds: number; closes: number[]; errors: number; firstReply: unknown } | undefined;

  it('a client recovering 20 MB of history (under historySize), reconnecting with since after every 4008, ends up with every offset once', async () => {
    const ch = `h:bigreplay:${randomUUID().slice(0, 8)}`;
    const count = BIG_BATCHES * BATCH;
    const probe = await open();
    const epoch = (await probe.subscribe(ch)).epoch as string;
    await probe.close();
    for (let b = 0; b < BIG_BATCHES; b++) {
      const from = b * BATCH + 1;
      expect(await publishBatchOffsets(gw(), ch, range(from, from + BATCH - 1).map((i) => ({ i, pad: BIG_PAD })))).toEqual(range(from, from + BATCH - 1));
    }
    const got: number[] = [];
    const closes: number[] = [];
    let firstReply: unknown;
    let rounds = 0;
    let errors = 0;
    while (got.length < count) {
      rounds++;
      if (rounds > 40) throw new Error(`no complete recovery after 40 reconnects (have ${got.length} of ${count})`);
      const c = await open();
      const since = { offset: got.length, epoch };
      const id = c.sendRequest({ type: 'subscribe', channel: ch, since });
      // Done when closed, answered with an error, or answered with everything replayed.
      const done = (): boolean => {
        const r = c.replies.get(id);
        return c.closeInfo !== undefined || (r !== undefined && (r.error !== undefined || c.offsets(ch).at(-1) === count));
      };
      await c.until(done, 'the whole replay and the reply, an error reply, or a close', 60_000);
      const reply = c.replies.get(id);
      if (rounds === 1) firstReply = reply;
      const offsets = c.offsets(ch);
      if (reply?.error !== undefined) {
        // Reading that much history can outlast the broker's command timeout under load: retry.
        expect(reply.error).toMatchObject({ code: 'unavailable' });
        errors++;
      } else {
        if (reply) expect(reply).toEqual({ type: 'reply', id, recovered: true, offset: count, epoch });
        // Each round continues exactly where the last one stopped, and makes progress.
        expect(offsets.length).toBeGreaterThan(0);
      }
      expect(offsets).toEqual(range(since.offset + 1, since.offset + offsets.length));
      got.push(...offsets);
      if (c.closeInfo) closes.push(c.closeInfo.code);
      await c.terminate();
    }
    expect(got).toEqual(range(1, count));
    expect(closes.every((code) => code === 4008)).toBe(true);
    bigReplay = { rounds, closes, errors, firstReply };
  }, 180_000);

  // BUG (src/hub/hub.ts, recover): the replay is written with ws.send() in one
  // synchronous loop, ignoring the send buffer. Once the buffer is over
  // maxBackpressure, uWS drops every further send (returns 2 and calls
  // `dropped`), so a client that reads as fast as it can, recovering fewer
  // than historySize messages, gets only what fits in the socket buffers, no
  // reply at all, and is closed with 4008 as a slow consumer; it takes many
  // reconnects to recover (see the test above). Expected: one subscribe,
  // answered recovered:true, every message, no close. Fix: pace the replay:
  // send while ws.getBufferedAmount() is under maxBackpressure, continue from
  // the transport's drain callback (keeping the socket in `recovering` so live
  // frames stay held and deduplicated, or re-reading history from the last
  // sent offset), and send the reply before the replay or once it is done.
  it.fails('BUG: and it takes one subscribe, answered, with no 4008 (fails: 4008 mid-replay, no reply, many reconnects)', () => {
    expect(bigReplay).toEqual({ rounds: 1, closes: [], errors: 0, firstReply: expect.objectContaining({ recovered: true }) });
  });
});
