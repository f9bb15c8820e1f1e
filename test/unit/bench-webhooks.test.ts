/**
 * What the webhook benchmarks (loadtest/bench/lib/webhooks.mjs) rely on: the
 * receiver's tally (events, duplicates, events per request, lag quantiles),
 * its signature check with the reference verifier, the per-block figures
 * (rates, CPU per event, on ÷ off of the same run and round), the parsers of
 * the node's metrics and Redis' command stats, and one tiny run of each
 * scenario on the embedded broker, so the scenarios cannot rot unnoticed.
 */
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { ROOT } from '../helpers/gateway.js';

interface Range {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}
interface Stats {
  readonly requests: number;
  readonly events: number;
  readonly byName: Record<string, number>;
  readonly duplicates: number;
  readonly batch: { readonly mean: number; readonly p50: number; readonly min: number; readonly max: number; readonly full: number };
  readonly lag: { readonly p50: number; readonly p99: number; readonly max: number };
  readonly first: number;
  readonly last: number;
  readonly verified: number;
  readonly refused: number;
  readonly unreadable: number;
}
interface ReceiverModule {
  BENCH_WEBHOOK_SECRET: string;
  newTally(): unknown;
  tallyBody(t: unknown, body: string, nowMs: number): boolean;
  tallyStats(t: unknown): Stats;
  histQuantile(h: Uint32Array, q: number): number;
}
interface DeliveryFigures {
  readonly deliveryPerSec: Range;
  readonly endToEndPerSec: Range;
  readonly nodeUs: Range;
  readonly redisUs: Range;
  readonly batchMin: number;
  readonly batchMax: number;
  readonly fullShare: number;
}
interface RunResult {
  readonly ok: boolean;
  readonly blocks: readonly Record<string, unknown>[];
  readonly counts?: { requests: Record<string, number>; events: Record<string, number> };
}
interface Receiver {
  readonly url: string;
  stats(): Promise<Stats>;
  stop(): Promise<void>;
}
interface WebhooksModule {
  startReceiver(): Promise<Receiver>;
  deliveryFigures(blocks: readonly Record<string, unknown>[]): DeliveryFigures;
  subscribeFigures(blocks: readonly Record<string, unknown>[]): { kinds: Record<string, Record<string, Range>>; ratio: Range; diffUs: Range; nodeRatio: Range };
  parseWebhookCounts(text: string): { requests: Record<string, number>; events: Record<string, number> };
  parseCommandStats(text: string): Record<string, number>;
  callsPer(a: Record<string, number> | undefined, b: Record<string, number> | undefined, units: number): Record<string, number> | undefined;
  runWebhooks(sc: Record<string, unknown>, leg: { broker: string }, ctx: Record<string, unknown>): Promise<RunResult>;
}

const lib = (file: string): string => pathToFileURL(`${ROOT}loadtest/bench/lib/${file}`).href;
const rx = (await import(lib('webhook-receiver.mjs'))) as ReceiverModule;
const wh = (await import(lib('webhooks.mjs'))) as WebhooksModule;

const ev = (id: string, name: string, timeMs: number): string => `{"id":"${id}","name":"${name}","channel":"c","time_ms":${timeMs}}`;

describe('bench webhook receiver: tally', () => {
  it('counts events by name, duplicates, events per request and the lag of each event', () => {
    const t = rx.newTally();
    expect(rx.tallyBody(t, `{"events":[${ev('a.0', 'channel_occupied', 1000)},${ev('a.1', 'channel_vacated', 990)}]}`, 1010)).toBe(true);
    expect(rx.tallyBody(t, `{"events":[${ev('a.0', 'channel_occupied', 1000)}]}`, 1100)).toBe(true);
    expect(rx.tallyBody(t, 'not json', 1200)).toBe(false);
    const s = rx.tallyStats(t);
    expect(s.requests).toBe(2);
    expect(s.events).toBe(3);
    expect(s.byName).toEqual({ channel_occupied: 2, channel_vacated: 1 });
    expect(s.duplicates).toBe(1);
    expect(s.unreadable).toBe(1);
    expect(s.batch).toEqual({ mean: 1.5, p50: 1, min: 1, max: 2, full: 0 });
    // Lags 10, 20, 100 ms.
    expect(s.lag).toEqual({ p50: 20, p99: 100, max: 100 });
    expect([s.first, s.last]).toEqual([1010, 1100]);
  });

  it('takes nearest-rank quantiles of a histogram, NaN when empty', () => {
    const h = new Uint32Array(5);
    expect(rx.histQuantile(h, 0.5)).toBeNaN();
    h[1] = 3;
    h[4] = 1;
    expect(rx.histQuantile(h, 0.5)).toBe(1);
    expect(rx.histQuantile(h, 0.75)).toBe(1);
    expect(rx.histQuantile(h, 0.99)).toBe(4);
  });

  it('verifies a request signed with the bench secret, and counts a forged one as refused', async () => {
    const receiver = await wh.startReceiver();
    try {
      const hook = new Webhook(rx.BENCH_WEBHOOK_SECRET);
      const body = `{"events":[${ev('b.0', 'channel_occupied', Date.now())}]}`;
      const post = async (id: string, signature: string): Promise<number> => {
        const ts = String(Math.floor(Date.now() / 1000));
        const res = await fetch(receiver.url, { method: 'POST', body, headers: { 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': signature } });
        return res.status;
      };
      // The receiver verifies requests 0, 10, 20, ...: the first one signed right, the eleventh forged.
      expect(await post('msg_1', hook.sign('msg_1', new Date(Math.floor(Date.now() / 1000) * 1000), body))).toBe(200);
      for (let i = 2; i <= 10; i++) await post(`msg_${i}`, 'v1,AAAA');
      expect(await post('msg_11', 'v1,AAAA')).toBe(200);
      const s = await receiver.stats();
      expect(s.verified).toBe(1);
      expect(s.refused).toBe(1);
      expect(s.requests).toBe(11);
    } finally {
      await receiver.stop();
    }
  });
});

describe('bench webhooks: figures', () => {
  it('gives delivery rates, CPU per event, lag and batch sizes over blocks', () => {
    const block = (events: number, deliveryMs: number, nodeNs: number, batch: Record<string, number>): Record<string, unknown> => ({
      events, requests: events / batch.mean!, deliveryMs, totalMs: deliveryMs * 2, prodMs: 10, tailMs: 5, nodeNs, redisNs: nodeNs / 2,
      lag: { p50: 10, p99: 20, max: 30 }, batch,
    });
    const f = wh.deliveryFigures([
      block(1000, 100, 50e6, { mean: 100, p50: 100, min: 100, max: 100, full: 10 }), // 10 000/s, 50 µs
      block(1000, 200, 30e6, { mean: 50, p50: 50, min: 1, max: 100, full: 10 }), // 5 000/s, 30 µs
    ]);
    expect(f.deliveryPerSec.median).toBeCloseTo(7500, 6);
    expect(f.endToEndPerSec.max).toBeCloseTo(5000, 6);
    expect(f.nodeUs.median).toBeCloseTo(40, 6);
    expect(f.redisUs.median).toBeCloseTo(20, 6);
    expect([f.batchMin, f.batchMax]).toEqual([1, 100]);
    expect(f.fullShare).toBeCloseTo(20 / 30, 6);
  });

  it('compares webhooks on with off of the same run and round', () => {
    const block = (run: number, round: number, kind: string, subNs: number, unsubNs: number, redisNs = 0): Record<string, unknown> => ({
      run, round, kind, ops: 1000, sub: { nodeNs: subNs, redisNs }, unsub: { nodeNs: unsubNs, redisNs: 0 },
    });
    const f = wh.subscribeFigures([
      block(1, 1, 'off', 20e6, 20e6), // 40 µs a pair
      block(1, 1, 'on', 50e6, 30e6, 40e6), // 120 µs (node 80)
      block(1, 2, 'on', 60e6, 40e6), // 100 µs
      block(1, 2, 'off', 25e6, 25e6), // 50 µs
      block(2, 1, 'on', 90e6, 90e6), // its run has no off block: no pair
    ]);
    expect(f.kinds.off!.pair!.median).toBeCloseTo(45, 6);
    expect(f.kinds.on!.pairRedis!.max).toBeCloseTo(40, 6);
    expect(f.ratio.n).toBe(2);
    expect(f.ratio.median).toBeCloseTo(2.5, 6); // 3 and 2
    expect(f.nodeRatio.median).toBeCloseTo(2, 6); // 2 and 2
    expect(f.diffUs.median).toBeCloseTo(65, 6); // 80 and 50
  });

  it('reads the node\'s webhook counters and Redis\' command counts', () => {
    const metrics = [
      'pubgate_webhook_requests_total{result="ok"} 12',
      'pubgate_webhook_requests_total{result="timeout"} 0',
      'pubgate_webhook_events_total{name="channel_occupied",result="delivered"} 5',
      'pubgate_webhook_events_total{name="channel_vacated",result="delivered"} 4',
    ].join('\n');
    expect(wh.parseWebhookCounts(metrics)).toEqual({ requests: { ok: 12 }, events: { delivered: 9 } });
    const a = wh.parseCommandStats('# Commandstats\r\ncmdstat_evalsha:calls=10,usec=5\r\ncmdstat_get:calls=1,usec=1\r\n');
    const b = wh.parseCommandStats('cmdstat_evalsha:calls=30,usec=9\r\ncmdstat_get:calls=1,usec=1\r\ncmdstat_zadd:calls=40,usec=1\r\n');
    expect(wh.callsPer(a, b, 10)).toEqual({ zadd: 4, evalsha: 2 });
    expect(Object.keys(wh.callsPer(a, b, 10)!)).toEqual(['zadd', 'evalsha']);
    expect(wh.callsPer(undefined, b, 10)).toBeUndefined();
  });
});

describe('bench webhooks: a tiny run of each scenario (embedded broker)', () => {
  const ctx = { tokenIn: 'header' };
  it('webhooks-delivery delivers every event of every block to the receiver', async () => {
    const r = await wh.runWebhooks({ name: 'webhooks-delivery', connections: 4, perConn: 3, rounds: 1, workers: 1, drainMs: 20_000 }, { broker: 'embedded' }, ctx);
    expect(r.ok).toBe(true);
    expect(r.blocks).toHaveLength(1);
    expect(r.blocks[0]!.events).toBe(24);
    // Warm-up and measured round: 2 × 24 events, all delivered.
    expect(r.counts?.events).toEqual({ delivered: 48 });
  });

  it('webhooks-subscribe measures off and on in every round', async () => {
    const r = await wh.runWebhooks({ name: 'webhooks-subscribe', connections: 5, perConn: 2, rounds: 1, workers: 1, drainMs: 20_000 }, { broker: 'embedded' }, ctx);
    expect(r.ok).toBe(true);
    expect(r.blocks.map((b) => b.kind).sort()).toEqual(['off', 'on']);
    expect(r.counts?.events).toEqual({ delivered: 40 });
  });
});
