/**
 * Integration: @pubgate/client recovery on history channels against real
 * gateways: after a reconnect it resubscribes with `since` = the last
 * position it saw (a message or the subscribe reply) and gets every message
 * it missed, in order and once (recovered:true); when the history is gone it
 * reports recovered:false and stays subscribed. Covers a killed node, a cut
 * broker subscription (1011), a slow consumer (4008) and a Redis restart
 * without data.
 *
 * These depend on server-side history (PUBGATE_HISTORY_CHANNELS). Each test
 * checks that the subscribe reply of a history channel carries offset and
 * epoch, and skips (saying so) on a gateway without history.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { describe, expect, it, type TestContext } from 'vitest';
import { token } from '../helpers/client.js';
import { useClientFixture, type ClientProbe } from '../helpers/client-probe.js';
import { TEST_API_KEY, metric, type GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import { pollUntil } from '../helpers/redis.js';
import type { ConnectOptions, MessageFrame, SubscribeResult } from '../../packages/client/src/index.js';

const HISTORY = { PUBGATE_HISTORY_CHANNELS: 'hist:*' };

const fx = useClientFixture();

/** A node with history channels, ready (broker connected). */
async function gateway(env: Record<string, string>): Promise<GatewayProcess> {
  const g = await fx.gateway({ ...HISTORY, ...env });
  await untilReadyz(g, 200);
  return g;
}

async function probe(url: string | string[], o: Partial<ConnectOptions> = {}): Promise<ClientProbe> {
  const jwt = await token({ sub: 'recovery-user', channels: ['hist:*'] });
  return fx.probe({ url, token: jwt, ...o });
}

/** Publishes over HTTP, retrying while the node answers 503 (its broker subscriptions are being renewed). */
async function publish(gw: GatewayProcess, channel: string, data: unknown): Promise<number | undefined> {
  let offset: number | undefined;
  await pollUntil(async () => {
    const res = await fetch(`${gw.http}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
    });
    const text = await res.text();
    if (res.status === 503) return false;
    if (res.status !== 200) throw new Error(`publish answered ${res.status} ${text}`);
    offset = (JSON.parse(text) as { offset?: number }).offset;
    return true;
  }, `publish to ${channel} accepted`);
  return offset;
}

/** Skips the test when the gateway keeps no history (its subscribe reply carries no position). */
function requireHistory(ctx: TestContext, r: SubscribeResult): { offset: number; epoch: string } {
  if (typeof r.offset !== 'number' || typeof r.epoch !== 'string') {
    ctx.skip('waits on server history: the subscribe reply of a history channel carries no offset/epoch on this gateway');
  }
  return { offset: r.offset as number, epoch: r.epoch as string };
}

const offsets = (ms: readonly MessageFrame[]): Array<number | undefined> => ms.map((m) => m.offset);
const seq = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('@pubgate/client recovery on history channels', () => {
  it('a killed node: the client moves to another node and recovers what was published meanwhile, in order, once (recovered:true)', async (ctx) => {
    const a = await gateway({ PUBGATE_NODE_ID: 'rec-a', PUBGATE_REDIS_URL: fx.redis().url });
    const b = await gateway({ PUBGATE_NODE_ID: 'rec-b', PUBGATE_REDIS_URL: fx.redis().url });
    const lb = await fx.forwarder(); // the second URL: no backend until the gap has been published
    const p = await probe([a.url, lb.url()]);
    const ch = `hist:kill:${randomUUID().slice(0, 8)}`;
    const infos: unknown[] = [];
    const { epoch } = requireHistory(ctx, await p.subscribe(ch, { onResubscribe: (i) => infos.push(i) }).ready);
    for (const i of [1, 2, 3]) await publish(b, ch, { i });
    await p.untilCount(ch, 3);

    a.proc.kill('SIGKILL');
    await p.until(() => p.of('disconnected').length > 0, 'disconnected');
    for (const i of [4, 5, 6]) await publish(b, ch, { i });
    lb.setTarget(b.port);
    await p.until(() => p.of('resubscribed').length > 0, 'resubscribed');
    await publish(b, ch, { i: 7 });
    await p.untilCount(ch, 7);

    expect(p.got(ch), p.trace()).toEqual(seq(1, 7).map((i) => ({ i })));
    expect(offsets(p.messages.get(ch) ?? [])).toEqual(seq(1, 7));
    expect(p.client.welcome?.node, p.trace()).toBe('rec-b');
    const info = { channel: ch, since: { offset: 3, epoch }, recovered: true };
    expect(p.of('resubscribed'), p.trace()).toEqual([info]);
    expect(infos).toEqual([info]);
  });

  it('a client that had received nothing yet recovers from the position in the subscribe reply', async (ctx) => {
    const gw = await gateway({ PUBGATE_NODE_ID: 'rec-pos' });
    const lb = await fx.forwarder(gw.port);
    const p = await probe(lb.url());
    const ch = `hist:pos:${randomUUID().slice(0, 8)}`;
    const { offset, epoch } = requireHistory(ctx, await p.subscribe(ch).ready);
    expect(offset).toBe(0);

    lb.setTarget(undefined);
    lb.dropAll();
    await p.until(() => p.of('disconnected').length > 0, 'disconnected');
    for (const i of [1, 2]) await publish(gw, ch, { i });
    lb.setTarget(gw.port);
    await p.untilCount(ch, 2);
    expect(p.got(ch), p.trace()).toEqual([{ i: 1 }, { i: 2 }]);
    expect(p.of('resubscribed'), p.trace()).toEqual([{ channel: ch, since: { offset: 0, epoch }, recovered: true }]);
  });

  it('a cut broker subscription: the node closes with 1011, the client reconnects and recovers the gap (recovered:true)', async (ctx) => {
    const gw = await gateway({ PUBGATE_NODE_ID: 'rec-1011', PUBGATE_REDIS_URL: fx.redis().url });
    const lb = await fx.forwarder(gw.port);
    const p = await probe(lb.url());
    const ch = `hist:cut:${randomUUID().slice(0, 8)}`;
    const { epoch } = requireHistory(ctx, await p.subscribe(ch).ready);
    await publish(gw, ch, { i: 1 });
    await p.untilCount(ch, 1);

    // Hold the client off once it is disconnected, so that the gap is published while it is away.
    p.client.once('disconnected', () => lb.setTarget(undefined));
    await fx.redis().cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await p.until(() => p.of('disconnected').length > 0, 'the 1011 close');
    expect(p.of('disconnected')[0], p.trace()).toMatchObject({ code: 1011 });
    for (const i of [2, 3]) await publish(gw, ch, { i });
    lb.setTarget(gw.port);
    await p.untilCount(ch, 3);
    expect(p.got(ch), p.trace()).toEqual([{ i: 1 }, { i: 2 }, { i: 3 }]);
    // The replay may arrive before the reply: wait for the reply's event.
    await p.until(() => p.of('resubscribed').length > 0, 'the resubscribe reply');
    expect(p.of('resubscribed'), p.trace()).toEqual([{ channel: ch, since: { offset: 1, epoch }, recovered: true }]);
  });

  it('a slow consumer closed with 4008 reconnects with since and ends up with every offset exactly once', async (ctx) => {
    const gw = await gateway({
      PUBGATE_NODE_ID: 'rec-slow',
      PUBGATE_SLOW_CONSUMER_POLICY: 'close',
      PUBGATE_MAX_BACKPRESSURE: String(64 * 1024),
      PUBGATE_HISTORY_SIZE: '30000',
      PUBGATE_MAX_PUBLISH_BYTES: String(2 * 1024 * 1024),
      PUBGATE_LOG_LEVEL: 'info',
    });
    // A WebSocket class that lets the test stop reading from the socket, as a busy page would.
    const sockets: WebSocket[] = [];
    class Tracked extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols);
        sockets.push(this);
      }
    }
    const p = await probe(gw.url, { WebSocket: Tracked });
    const ch = `hist:slow:${randomUUID().slice(0, 8)}`;
    requireHistory(ctx, await p.subscribe(ch).ready);
    const drops0 = await metric(gw.admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' });
    sockets[0]!.pause();

    const pad = 'x'.repeat(1000);
    let n = 0;
    const batch = async (): Promise<void> => {
      const messages = Array.from({ length: 500 }, () => ({ channel: ch, data: { i: ++n, pad } }));
      const res = await fetch(`${gw.http}/v1/publish/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages }),
      });
      expect(res.status).toBe(200);
      await res.text();
    };
    // Until the node reports the paused subscriber as slow (kernel buffers absorb a few MB first), then once more.
    for (let b = 0; b < 50; b++) {
      await batch();
      if ((await metric(gw.admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' })) > drops0) break;
    }
    expect(await metric(gw.admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' })).toBeGreaterThan(drops0);
    await batch();
    sockets[0]!.resume();

    await p.untilCount(ch, n, 60_000);
    expect(p.of('disconnected')[0], p.trace()).toMatchObject({ code: 4008 });
    expect(p.of('resubscribed'), p.trace()).toHaveLength(1);
    expect(p.of('resubscribed')[0], p.trace()).toMatchObject({ channel: ch, recovered: true });
    expect(offsets(p.messages.get(ch) ?? [])).toEqual(seq(1, n));
    expect((p.got(ch) as Array<{ i: number }>).map((d) => d.i)).toEqual(seq(1, n));
  }, 120_000);

  it('history lost (Redis restarted without its data): recovered:false, reported as an event and to the subscription, which stays live', async (ctx) => {
    const gw = await gateway({ PUBGATE_NODE_ID: 'rec-lost', PUBGATE_REDIS_URL: fx.redis().url });
    const lb = await fx.forwarder(gw.port);
    const p = await probe(lb.url());
    const ch = `hist:lost:${randomUUID().slice(0, 8)}`;
    const infos: unknown[] = [];
    const first = requireHistory(ctx, await p.subscribe(ch, { onResubscribe: (i) => infos.push(i) }).ready);
    await publish(gw, ch, { i: 1 });
    await p.untilCount(ch, 1);

    lb.setTarget(undefined);
    lb.dropAll();
    await p.until(() => p.of('disconnected').length > 0, 'disconnected');
    await fx.redis().restart();
    await pollUntil(async () => (await fetch(`${gw.admin}/readyz`)).status === 200, 'the node ready after the Redis restart');
    lb.setTarget(gw.port);
    await p.until(() => p.of('resubscribed').length > 0, 'resubscribed');
    const info = { channel: ch, since: { offset: 1, epoch: first.epoch }, recovered: false };
    expect(p.of('resubscribed'), p.trace()).toEqual([info]);
    expect(infos).toEqual([info]);

    await publish(gw, ch, { i: 2 });
    await p.untilCount(ch, 2);
    const msgs = p.messages.get(ch) ?? [];
    expect(p.got(ch), p.trace()).toEqual([{ i: 1 }, { i: 2 }]);
    expect(msgs[1]!.epoch).not.toBe(first.epoch);
  });
});
