/**
 * History and recovery on one node, embedded broker, Redis, Valkey and Redis
 * Cluster alike: offsets and epochs on publish answers, frames and subscribe replies;
 * recovery with `since` (missed messages exactly once, in order, before newer
 * live ones); too-old offsets and wrong epochs; the recovery metrics.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import { VALKEY_BIN } from '../helpers/server-tools.js';
import { needs } from '../helpers/tools.js';
import { BROKERS_AND_CLUSTER, type BrokerKind, publishBatchH, publishBatchOffsets, publishH, publishOffset, range, useHistoryGateway } from '../helpers/history.js';

const SIZE = 5;
const uid = (): string => randomUUID().slice(0, 8);

const VALKEY = VALKEY_BIN;
const KINDS: readonly BrokerKind[] = [...BROKERS_AND_CLUSTER, ...(VALKEY ? (['valkey'] as const) : [])];

// Without valkey-server, one skipped case says so (the summary counts it).
if (!VALKEY) {
  describe('history on the valkey broker', needs('valkey-server'), () => {
    it('runs the cases below on valkey-server', () => undefined);
  });
}

describe.each(KINDS)('history on the %s broker', (kind) => {
  const { gw, open } = useHistoryGateway(kind, { PUBGATE_HISTORY_SIZE: String(SIZE) });

  it('offsets grow by one per message; frames and subscribe replies carry offset and epoch on history channels only', async () => {
    const ch = `h:basic:${uid()}`;
    const plain = `p:basic:${uid()}`;
    const sub = await open();
    const first = await sub.subscribe(ch);
    expect(first).toEqual({ type: 'reply', id: 1, offset: 0, epoch: expect.any(String) });
    const epoch = first.epoch as string;
    expect(epoch.length).toBeGreaterThan(0);
    expect(await sub.subscribe(plain)).toEqual({ type: 'reply', id: 2 });

    for (const n of [1, 2, 3]) {
      const r = await publishH(gw(), ch, { n });
      expect(r).toEqual({ status: 200, body: { channel: ch, offset: n } });
    }
    expect(await publishH(gw(), plain, { n: 'plain' })).toEqual({ status: 200, body: { channel: plain } });
    await sub.untilOffset(ch, 3);
    await sub.until(() => sub.messages(plain).length === 1, 'the plain message');
    expect(sub.messages(ch)).toEqual([1, 2, 3].map((n) => ({ type: 'message', channel: ch, offset: n, epoch, data: { n } })));
    expect(sub.messages(plain)).toEqual([{ type: 'message', channel: plain, data: { n: 'plain' } }]);

    // A later subscriber is told the current position; a plain channel's reply has none.
    const late = await open();
    expect(await late.subscribe(ch)).toEqual({ type: 'reply', id: 1, offset: 3, epoch });
    expect(await late.subscribe(plain)).toEqual({ type: 'reply', id: 2 });

    // Batches: consecutive offsets per channel, none on plain channels, each channel its own counter.
    const other = `h:basic:${uid()}`;
    const batch = await publishBatchH(gw(), [
      { channel: ch, data: { n: 4 } },
      { channel: ch, data: { n: 5 } },
      { channel: plain, data: { n: 'p2' } },
      { channel: other, data: { n: 1 } },
      { channel: ch, data: { n: 6 } },
    ]);
    expect(batch).toEqual({
      status: 200,
      body: {
        results: [
          { channel: ch, offset: 4 },
          { channel: ch, offset: 5 },
          { channel: plain },
          { channel: other, offset: 1 },
          { channel: ch, offset: 6 },
        ],
      },
    });
    await sub.untilOffset(ch, 6);
    expect(sub.offsets(ch)).toEqual(range(1, 6));

    // A publish over the socket is answered with its offset too.
    const pub = await open({ publish: ['h:*', 'p:*'] });
    expect(await pub.request({ type: 'publish', channel: ch, data: { n: 7 } })).toEqual({ type: 'reply', id: 1, offset: 7 });
    expect(await pub.request({ type: 'publish', channel: plain, data: { n: 'p3' } })).toEqual({ type: 'reply', id: 2 });
    await sub.untilOffset(ch, 7);
    expect(sub.messages(ch).at(-1)).toEqual({ type: 'message', channel: ch, offset: 7, epoch, data: { n: 7 } });
  });

  it('a subscriber that reconnects with since gets exactly the missed messages, in order, then new live ones', async () => {
    const ch = `h:rec:${uid()}`;
    const a = await open();
    const reply = await a.subscribe(ch);
    const epoch = reply.epoch as string;
    expect(await publishBatchOffsets(gw(), ch, [{ n: 1 }, { n: 2 }])).toEqual([1, 2]);
    await a.untilOffset(ch, 2);
    const last = a.last(ch);
    expect(last).toEqual({ offset: 2, epoch });
    await a.close();

    expect(await publishBatchOffsets(gw(), ch, [{ n: 3 }, { n: 4 }, { n: 5 }])).toEqual([3, 4, 5]);

    const b = await open();
    expect(await b.subscribe(ch, last)).toEqual({ type: 'reply', id: 1, recovered: true, offset: 5, epoch });
    await b.untilOffset(ch, 5);
    expect(await publishOffset(gw(), ch, { n: 6 })).toBe(6);
    expect(await publishOffset(gw(), ch, { n: 7 })).toBe(7);
    await b.untilOffset(ch, 7);
    // A ping reply after the last message: anything duplicated would have arrived by now.
    expect(await b.alive()).toBe('open');
    expect(b.messages(ch)).toEqual(range(3, 7).map((n) => ({ type: 'message', channel: ch, offset: n, epoch, data: { n } })));
  });

  it('a subscriber that got no message recovers from the offset of its subscribe reply', async () => {
    const ch = `h:norec:${uid()}`;
    // A fresh channel: position 0.
    const a = await open();
    const r0 = await a.subscribe(ch);
    expect(r0.offset).toBe(0);
    await a.close();
    expect(await publishBatchOffsets(gw(), ch, [{ n: 1 }, { n: 2 }, { n: 3 }])).toEqual([1, 2, 3]);
    const b = await open();
    expect(await b.subscribe(ch, { offset: 0, epoch: r0.epoch as string })).toEqual({ type: 'reply', id: 1, recovered: true, offset: 3, epoch: r0.epoch });
    await b.untilOffset(ch, 3);

    // A channel with messages: position 3, recovered from there.
    const c = await open();
    const r3 = await c.subscribe(ch);
    expect(r3).toEqual({ type: 'reply', id: 1, offset: 3, epoch: r0.epoch });
    await c.close();
    expect(await publishBatchOffsets(gw(), ch, [{ n: 4 }, { n: 5 }])).toEqual([4, 5]);
    const d = await open();
    expect(await d.subscribe(ch, { offset: 3, epoch: r3.epoch as string })).toEqual({ type: 'reply', id: 1, recovered: true, offset: 5, epoch: r0.epoch });
    expect(await publishOffset(gw(), ch, { n: 6 })).toBe(6);
    await d.untilOffset(ch, 6);
    expect(await d.alive()).toBe('open');
    expect(d.offsets(ch)).toEqual([4, 5, 6]);
    expect(d.messages(ch).map((m) => m.data)).toEqual([{ n: 4 }, { n: 5 }, { n: 6 }]);
    await b.untilOffset(ch, 6);
    expect(b.offsets(ch)).toEqual(range(1, 6));
  });

  it(`recovers the last ${SIZE} messages (historySize) but not one more`, async () => {
    const ch = `h:edge:${uid()}`;
    const offsets = await publishBatchOffsets(gw(), ch, range(1, 20).map((n) => ({ n })));
    expect(offsets).toEqual(range(1, 20));
    const probe = await open();
    const epoch = (await probe.subscribe(ch)).epoch as string;

    const ok = await open();
    expect(await ok.subscribe(ch, { offset: 20 - SIZE, epoch })).toEqual({ type: 'reply', id: 1, recovered: true, offset: 20, epoch });
    await ok.untilOffset(ch, 20);
    expect(ok.offsets(ch)).toEqual(range(21 - SIZE, 20));
    expect(ok.messages(ch).map((m) => m.data)).toEqual(range(21 - SIZE, 20).map((n) => ({ n })));

    const tooOld = await open();
    expect(await tooOld.subscribe(ch, { offset: 19 - SIZE, epoch })).toEqual({ type: 'reply', id: 1, recovered: false, offset: 20, epoch });

    // Up to date: recovered, nothing replayed.
    const current = await open();
    expect(await current.subscribe(ch, { offset: 20, epoch })).toEqual({ type: 'reply', id: 1, recovered: true, offset: 20, epoch });

    expect(await publishOffset(gw(), ch, { n: 21 })).toBe(21);
    for (const c of [ok, tooOld, current]) await c.untilOffset(ch, 21);
    expect(tooOld.offsets(ch)).toEqual([21]);
    expect(current.offsets(ch)).toEqual([21]);
    expect(ok.offsets(ch)).toEqual(range(21 - SIZE, 21));
  });

  it('a too-old offset or a wrong epoch: recovered false, current position in the reply, nothing replayed, live afterwards', async () => {
    const ch = `h:old:${uid()}`;
    expect(await publishBatchOffsets(gw(), ch, range(1, 20).map((n) => ({ n })))).toEqual(range(1, 20));
    const probe = await open();
    const epoch = (await probe.subscribe(ch)).epoch as string;

    const old = await open();
    expect(await old.subscribe(ch, { offset: 2, epoch })).toEqual({ type: 'reply', id: 1, recovered: false, offset: 20, epoch });
    const wrong = await open();
    const otherEpoch = epoch === 'not-the-epoch' ? 'still-not-it' : 'not-the-epoch';
    expect(await wrong.subscribe(ch, { offset: 18, epoch: otherEpoch })).toEqual({ type: 'reply', id: 1, recovered: false, offset: 20, epoch });

    expect(await publishOffset(gw(), ch, { n: 21 })).toBe(21);
    for (const c of [old, wrong]) {
      await c.untilOffset(ch, 21);
      expect(await c.alive()).toBe('open');
      // Only the new live message: nothing of the old history was replayed.
      expect(c.messages(ch)).toEqual([{ type: 'message', channel: ch, offset: 21, epoch, data: { n: 21 } }]);
    }
  });

  it('counts recoveries by result and replayed messages', async () => {
    const ch = `h:metrics:${uid()}`;
    const m = () =>
      Promise.all([
        metric(gw().admin, 'pubgate_recoveries_total', { result: 'recovered' }),
        metric(gw().admin, 'pubgate_recoveries_total', { result: 'not_recovered' }),
        metric(gw().admin, 'pubgate_recovery_replayed_messages_total'),
      ]);
    const probe = await open();
    const epoch = (await probe.subscribe(ch)).epoch as string;
    expect(await publishBatchOffsets(gw(), ch, [1, 2, 3, 4].map((n) => ({ n })))).toEqual([1, 2, 3, 4]);
    const [rec0, not0, replayed0] = await m();

    const a = await open();
    expect((await a.subscribe(ch, { offset: 1, epoch })).recovered).toBe(true); // replays 2, 3, 4
    await a.untilOffset(ch, 4);
    const b = await open();
    expect((await b.subscribe(ch, { offset: 4, epoch })).recovered).toBe(true); // replays nothing
    const c = await open();
    expect((await c.subscribe(ch, { offset: 1, epoch: `x${epoch}` })).recovered).toBe(false);
    // A plain subscribe is not a recovery.
    const d = await open();
    await d.subscribe(ch);

    expect(await m()).toEqual([rec0 + 2, not0 + 1, replayed0 + 3]);
  });
});
