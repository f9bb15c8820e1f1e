/**
 * Redis faults seen from three real gateway processes: redis-server killed
 * with SIGKILL and restarted on the same port while subscribers stay
 * connected, and a node started while Redis is down.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { metric, type GatewayProcess } from '../helpers/gateway.js';
import {
  NodeGroup,
  Subscriber,
  closeAll,
  disconnectUser,
  expectUnavailable,
  healthz,
  publishBatch,
  publishOne,
  readyz,
  startNodes,
  stopNodes,
  untilReadyz,
  type SubscriberOptions,
} from '../helpers/multinode.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const IDS = ['out-a', 'out-b', 'out-c'] as const;
const group = new NodeGroup();
const { nodes } = group;
/** Nodes and a redis-server of their own that a test starts. */
const extraNodes: GatewayProcess[] = [];
const extraServers: RedisServer[] = [];
const subs: Subscriber[] = [];

beforeAll(() => group.startOnRedis(IDS), 120_000);

afterAll(async () => {
  await closeAll(subs);
  await group.stop();
  await stopNodes(extraNodes);
  await Promise.allSettled(extraServers.map((s) => s.stop()));
});

/** Each test starts with Redis up, every node ready and no subscriber left over. */
afterEach(async () => {
  await closeAll(subs);
  const redis = group.redis();
  if (!redis.running) await redis.start();
  await Promise.all(nodes.map((n) => untilReadyz(n, 200, 30_000, 'between tests')));
});

async function open(gw: GatewayProcess, o: SubscriberOptions = {}): Promise<Subscriber> {
  const s = await Subscriber.open(gw.url, o);
  subs.push(s);
  return s;
}

const each = <T>(f: (n: GatewayProcess) => Promise<T>): Promise<T[]> => Promise.all(nodes.map(f));

describe('Redis faults with three gateway nodes', () => {
  it('Redis kill -9 and restart: subscribers stay connected, /readyz 503 within 5 s, publishes refused (never delivered later), delivery resumes on the same sockets', async () => {
    const r = group.redis();
    const ch = `mn:out:${randomUUID().slice(0, 8)}`;
    const listeners = await Promise.all(nodes.map((n) => open(n)));
    for (const [i, l] of listeners.entries()) {
      expect(l.welcome?.node).toBe(IDS[i]);
      await l.subscribe(ch);
    }
    const wsPublisher = await open(group.node(0), { user: 'mn-ws-pub', publish: ['mn:*'] });

    expect((await publishOne(group.node(2), ch, 'before')).status).toBe(200);
    await Promise.all(listeners.map((l) => l.untilCount(ch, 1)));
    expect(await each((n) => metric(n.admin, 'pubgate_broker_up'))).toEqual([1, 1, 1]);
    expect(await each((n) => metric(n.admin, 'pubgate_broker_channels'))).toEqual([1, 1, 1]);
    const reconnects0 = await each((n) => metric(n.admin, 'pubgate_broker_reconnects_total'));
    const published0 = await each((n) => metric(n.admin, 'pubgate_messages_published_total'));

    await r.kill9();
    // The contract's bound: not ready within 5 s of Redis going away.
    await Promise.all(nodes.map((n) => untilReadyz(n, 503, 5_000, 'within 5 s of Redis being killed')));
    expect(await each((n) => metric(n.admin, 'pubgate_broker_up'))).toEqual([0, 0, 0]);
    // Nothing is confirmed at a dead broker, while the local listeners are still there.
    expect(await each((n) => metric(n.admin, 'pubgate_broker_channels'))).toEqual([0, 0, 0]);
    expect(await each((n) => metric(n.admin, 'pubgate_channels'))).toEqual([1, 1, 1]);

    // HTTP publishes during the outage, on every node: 503 unavailable with Retry-After, none accepted.
    for (const [i, n] of nodes.entries()) {
      await expectUnavailable(await publishOne(n, ch, `outage-${i}`));
      const body = await expectUnavailable(await publishBatch(n, [{ channel: ch, data: `outage-batch-${i}-0` }, { channel: ch, data: `outage-batch-${i}-1` }]));
      expect(body.results ?? []).toEqual([]);
      await expectUnavailable(await disconnectUser(n, 'mn-nobody'));
    }
    // A WebSocket publish gets an `unavailable` reply; so does a subscribe that needs Redis.
    const wsReply = await wsPublisher.request({ type: 'publish', channel: ch, data: 'outage-ws' });
    expect((wsReply.error as { code?: string } | undefined)?.code).toBe('unavailable');
    const subReply = await listeners[0]!.request({ type: 'subscribe', channel: `${ch}:new` });
    expect((subReply.error as { code?: string } | undefined)?.code).toBe('unavailable');
    expect(await each((n) => metric(n.admin, 'pubgate_messages_published_total'))).toEqual(published0);
    // The subscribers are still connected: their own connection answers a ping.
    for (const l of [...listeners, wsPublisher]) expect(await l.alive()).toBe('open');

    await r.start(); // same port, empty state
    await Promise.all(nodes.map((n) => untilReadyz(n, 200, 30_000, 'after Redis came back')));
    expect(await each((n) => metric(n.admin, 'pubgate_broker_up'))).toEqual([1, 1, 1]);
    expect(await each((n) => metric(n.admin, 'pubgate_broker_channels'))).toEqual([1, 1, 1]); // resubscribed
    const reconnects = await each((n) => metric(n.admin, 'pubgate_broker_reconnects_total'));
    for (const [i, c] of reconnects.entries()) expect(c, `reconnects on ${IDS[i]}`).toBeGreaterThan(reconnects0[i] ?? 0);

    // New messages, published on node B and over node A's socket, reach all three
    // subscribers on the sockets that stayed open; nothing from the outage arrives.
    expect((await publishOne(group.node(1), ch, 'after-1')).status).toBe(200);
    const wsOk = await wsPublisher.request({ type: 'publish', channel: ch, data: 'after-2' });
    expect(wsOk.error).toBeUndefined();
    await Promise.all(listeners.map((l) => l.untilCount(ch, 3)));
    for (const l of listeners) {
      expect(l.got(ch), String(l.welcome?.node)).toEqual(['before', 'after-1', 'after-2']);
      expect(l.closeInfo).toBeUndefined();
    }
    expect(wsPublisher.closeInfo).toBeUndefined();
    // Subscribing to a new channel works again.
    await listeners[0]!.subscribe(`${ch}:new`);
  }, 120_000);

  // A channel another local client already holds is no exception: while the
  // broker is down, no subscribe is confirmed (the subscription is gone at Redis).
  it('a subscribe during a Redis outage is never answered success before the broker confirmed it (even for a channel the node already holds)', async () => {
    const r = group.redis();
    const ch = `mn:held:${randomUUID().slice(0, 8)}`;
    const holder = await open(group.node(0));
    await holder.subscribe(ch);
    const late = await open(group.node(0));

    await r.kill9();
    let redisBack = false;
    await untilReadyz(group.node(0), 503, 5_000, 'within 5 s of Redis being killed');
    let answeredDuringOutage = false;
    const pending = late.request({ type: 'subscribe', channel: ch }, 60_000).then((f) => {
      answeredDuringOutage = !redisBack;
      return f;
    });
    pending.catch(() => undefined); // awaited below; a close before the reply must not go unhandled meanwhile
    // Two round trips through node A while Redis stays down.
    expect(await late.alive()).toBe('open');
    await expectUnavailable(await publishOne(group.node(0), ch, 'outage'));
    redisBack = true;
    await r.start();
    const reply = await pending;
    if (answeredDuringOutage) expect(reply.error, 'a reply sent while Redis was down').toMatchObject({ code: 'unavailable' });
    else expect(reply.error).toBeUndefined();
  }, 60_000);

  it('a node started while Redis is down answers /healthz 200 and /readyz 503, and becomes ready when Redis starts', async () => {
    const late = await startRedis({ start: false });
    extraServers.push(late);
    const [gw] = await startNodes(['out-late'], { PUBGATE_REDIS_URL: late.url }, extraNodes);
    if (!gw) throw new Error('gateway did not start');
    expect(await healthz(gw)).toBe(200);
    expect(await readyz(gw)).toBe(503);
    expect(await metric(gw.admin, 'pubgate_broker_up')).toBe(0);
    await expectUnavailable(await publishOne(gw, 'mn:late', 'too early'));
    expect(gw.proc.exitCode).toBeNull();

    await late.start();
    await untilReadyz(gw, 200, 30_000, 'after Redis appeared');
    expect(await healthz(gw)).toBe(200);
    expect(await metric(gw.admin, 'pubgate_broker_up')).toBe(1);
    const s = await open(gw);
    await s.subscribe('mn:late');
    expect((await publishOne(gw, 'mn:late', 'ok')).status).toBe(200);
    await s.untilCount('mn:late', 1);
    expect(s.got('mn:late')).toEqual(['ok']);
  }, 60_000);
});
