/**
 * `rewind` on subscribe (contract 1.1, "History API and rewind") on the
 * embedded broker, Redis and Redis Cluster: the last N messages (fewer if
 * fewer are held, at most the history size), then live with no gap or
 * duplicate, also while publishers run; the reply's position; the refusals
 * (not a positive integer, with `since`, a namespace without `rewind`); the
 * metrics.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import { BROKERS_AND_CLUSTER, publishBatchOffsets, publishOffset, range, useHistoryGateway } from '../helpers/history.js';

const SIZE = 50;
const uid = (): string => randomUUID().slice(0, 8);
const NAMESPACES = JSON.stringify([
  { pattern: 'h:*', history: { size: SIZE }, rewind: true },
  { pattern: 'nr:*', history: { size: SIZE } },
]);
const CHANNELS = ['h:*', 'nr:*', 'p:*'];

describe.each(BROKERS_AND_CLUSTER)('rewind on the %s broker', (kind) => {
  const { gw, open } = useHistoryGateway(kind, { PUBGATE_NAMESPACES: NAMESPACES });

  it('delivers the last N messages, the reply carrying the position of the last one, then live ones once', async () => {
    const ch = `h:rw:${uid()}`;
    const before = await metric(gw().admin, 'pubgate_rewind_messages_total');
    await publishBatchOffsets(gw(), ch, range(1, 8).map((n) => ({ n })));
    const c = await open({ channels: CHANNELS });
    const r = await c.request({ type: 'subscribe', channel: ch, rewind: 3 });
    expect(r).toEqual({ type: 'reply', id: 1, offset: 8, epoch: expect.any(String) });
    // As for a recovery, the replayed messages may arrive before or after the reply.
    await c.untilOffset(ch, 8);
    expect(c.offsets(ch)).toEqual([6, 7, 8]);
    expect(c.messages(ch).map((m) => m.data)).toEqual([{ n: 6 }, { n: 7 }, { n: 8 }]);
    expect(c.messages(ch).every((m) => m.epoch === r.epoch)).toBe(true);
    expect(await publishOffset(gw(), ch, { n: 9 })).toBe(9);
    await c.untilOffset(ch, 9);
    expect(c.offsets(ch)).toEqual([6, 7, 8, 9]);
    expect(await metric(gw().admin, 'pubgate_rewind_messages_total')).toBe(before + 3);

    // Subscribed already: a second rewind replays nothing.
    expect(await c.request({ type: 'subscribe', channel: ch, rewind: 3 })).toEqual({ type: 'reply', id: 2, offset: 9, epoch: r.epoch });
    expect(await c.request({ type: 'ping' })).toEqual({ type: 'reply', id: 3 });
    expect(c.offsets(ch)).toEqual([6, 7, 8, 9]);
  });

  it('delivers fewer when fewer are held: at most the history size, none on an empty channel', async () => {
    const ch = `h:rw:${uid()}`;
    await publishBatchOffsets(gw(), ch, range(1, SIZE + 10).map((n) => ({ n })));
    const c = await open({ channels: CHANNELS });
    expect(await c.request({ type: 'subscribe', channel: ch, rewind: 1000 })).toMatchObject({ offset: SIZE + 10 });
    await c.untilOffset(ch, SIZE + 10);
    expect(c.offsets(ch)).toEqual(range(11, SIZE + 10));

    const empty = `h:rw:${uid()}`;
    const d = await open({ channels: CHANNELS });
    expect(await d.request({ type: 'subscribe', channel: empty, rewind: 5 })).toEqual({ type: 'reply', id: 1, offset: 0, epoch: expect.any(String) });
    expect(await publishOffset(gw(), empty, { n: 1 })).toBe(1);
    await d.untilOffset(empty, 1);
    expect(d.offsets(empty)).toEqual([1]);
  });

  it('with concurrent publishers: the last N as of the subscribe, then every later message once, in order', async () => {
    const ch = `h:rw:${uid()}`;
    const LAST = 300;
    await publishBatchOffsets(gw(), ch, range(1, 20).map((n) => ({ n })));
    // Two publishers run while the rewind reads history.
    let next = 21;
    const publisher = async (): Promise<void> => {
      while (next <= LAST) {
        const from = next;
        next += 10;
        await publishBatchOffsets(gw(), ch, range(from, Math.min(from + 9, LAST)).map(() => ({ n: 0 })));
      }
    };
    const running = Promise.all([publisher(), publisher()]);
    const c = await open({ channels: CHANNELS });
    const r = await c.request({ type: 'subscribe', channel: ch, rewind: 10 });
    await running;
    await c.untilOffset(ch, LAST);
    const got = c.offsets(ch);
    const first = got[0]!;
    expect(got).toEqual(range(first, LAST));
    expect(first).toBeGreaterThanOrEqual(11);
    // The reply's offset is the rewind's last message (where live delivery went on): at least N were rewound.
    expect(got).toContain(r.offset);
    expect(Number(r.offset) - first + 1).toBeGreaterThanOrEqual(10);
  });

  it('refuses a rewind that is not a positive integer, with since, or on a channel whose namespace lacks rewind, with bad_request', async () => {
    const c = await open({ channels: CHANNELS });
    const ch = `h:rw:${uid()}`;
    const before = await metric(gw().admin, 'pubgate_client_frames_rejected_total', { code: 'bad_request' });
    const bad: Array<Record<string, unknown>> = [
      { channel: ch, rewind: 0 },
      { channel: ch, rewind: -1 },
      { channel: ch, rewind: 1.5 },
      { channel: ch, rewind: '3' },
      { channel: ch, rewind: null },
      { channel: ch, rewind: 3, since: { offset: 0, epoch: 'x' } },
      { channel: `nr:rw:${uid()}`, rewind: 3 },
      { channel: `p:rw:${uid()}`, rewind: 3 },
    ];
    for (const f of bad) {
      const r = await c.request({ type: 'subscribe', ...f });
      expect(r.error, JSON.stringify(f)).toEqual({ code: 'bad_request', message: expect.any(String) });
    }
    expect(await metric(gw().admin, 'pubgate_client_frames_rejected_total', { code: 'bad_request' })).toBe(before + bad.length);
    // None of them subscribed: a subscriber on the same node gets the next message, c does not.
    const d = await open({ channels: CHANNELS });
    await d.subscribe(ch);
    await publishOffset(gw(), ch, { n: 1 });
    await d.untilOffset(ch, 1);
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'reply' });
    expect(c.messages(ch)).toEqual([]);
  });
});
