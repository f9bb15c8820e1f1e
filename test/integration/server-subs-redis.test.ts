/**
 * Server-side subscriptions (contract 1.1) on one redis-server with two
 * gateway nodes: the rules of test/helpers/server-subs-rules.ts; then, on
 * three nodes of their own Redis, what the API answers when a node stays
 * silent (503 after 5 s, saying how many did not answer), when a node is
 * killed with kill -9 while a request waits (200 once its lease ran out), and
 * what happens while Redis is down (subs at connect: 1011 without a welcome;
 * the API: 503); and, with one node whose Redis subscriber connection lags
 * both ways, that the 200 waits for that node's broker subscription.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDelayProxy, type DelayProxy } from '../helpers/delay-proxy.js';
import type { GatewayProcess } from '../helpers/gateway.js';
import { NodeGroup, logMark, publishBatch, publishOne, startNodes, untilReadyz, waitForNewLog } from '../helpers/multinode.js';
import { uid } from '../helpers/presence.js';
import { SubsClient, closeSubsClients, serverSub, serverSubOk, subsEnv } from '../helpers/server-subs.js';
import { runServerSubsRules } from '../helpers/server-subs-rules.js';

runServerSubsRules('redis');

/** How late node B's subscriber connection carries commands to Redis, and Redis' answers and messages back. */
const LAG_MS = 300;

describe('server-side subscriptions with a node whose Redis subscriber connection lags both ways', () => {
  const group = new NodeGroup();
  const clients: SubsClient[] = [];
  let proxy: DelayProxy | undefined;

  beforeAll(async () => {
    await group.startOnRedis(['ssl-a'], subsEnv());
    const r = group.redis();
    // Node B reaches Redis through a proxy that delays its subscriber connection: the control
    // messages it receives, its SUBSCRIBE commands, and their confirmations.
    proxy = await startDelayProxy({ target: { host: '127.0.0.1', port: r.port }, marker: 'pubgate-ssl-b-sub', delayMs: LAG_MS, upstreamDelayMs: LAG_MS });
    const [b] = await startNodes(['ssl-b'], { ...subsEnv(), PUBGATE_REDIS_URL: `redis://127.0.0.1:${proxy.port}` }, group.nodes);
    await untilReadyz(b!, 200);
    expect(proxy.matched).toBeGreaterThan(0);
  }, 90_000);
  afterEach(() => closeSubsClients(clients));
  afterAll(async () => {
    await group.stop();
    await proxy?.close();
  });

  it('announces positions on the lagging node that the messages follow exactly: messages still on their way up to it are not delivered, every later one is', async () => {
    const t = uid();
    const feed = `feed:${t}`;
    // The channel is live on the lagging node already: a new tab's subscription is confirmed at once.
    const anchor = await SubsClient.open(group.node(1).url, { user: `${t}-anchor`, subs: [feed] });
    clients.push(anchor);
    let last = 0;
    for (let round = 0; round < 3; round++) {
      // A burst still on its way to the lagging node (300 ms) when the tab reads its position.
      const batch = await publishBatch(group.node(0), Array.from({ length: 10 }, (_, i) => ({ channel: feed, data: `r${round}-${i}` })));
      expect(batch.status).toBe(200);
      last += 10;
      const c = await SubsClient.open(group.node(1).url, { user: `${t}-u${round}` , subs: [feed] });
      clients.push(c);
      expect(c.welcomeSubs).toEqual({ [feed]: { offset: last, epoch: expect.any(String) as string } });
      expect((await publishOne(group.node(0), feed, `after-${round}`)).status).toBe(200);
      last += 1;
      await c.untilMessage(feed, `after-${round}`);
      await anchor.untilMessage(feed, `after-${round}`);
      expect(c.all.map((f) => (f.type === 'message' ? f.offset : f.type))).toEqual(['welcome', last]);
    }
    expect(anchor.of('message', feed).map((f) => f.offset)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
  });

  it('holds up to 32 client frames sent before a welcome that waits for the lagging node, answers them after it, and closes with 1008 beyond', async () => {
    const t = uid();
    const pings = (n: number): Array<Record<string, unknown>> => Array.from({ length: n }, () => ({ type: 'ping' }));
    // Fresh channels: the welcome waits for a SUBSCRIBE that takes 600 ms there and back.
    const within = await SubsClient.open(group.node(1).url, { user: `${t}-a`, subs: [`news:${t}-a`] }, { early: pings(32) });
    clients.push(within);
    await within.until(() => within.replies.size === 32, '32 replies');
    expect(within.all[0]?.type).toBe('welcome');
    expect(within.all.slice(1).map((f) => f.type)).toEqual(Array.from({ length: 32 }, () => 'reply'));
    const beyond = await SubsClient.open(group.node(1).url, { user: `${t}-b`, subs: [`news:${t}-b`] }, { early: pings(33), welcome: false });
    clients.push(beyond);
    expect(await beyond.closed).toEqual({ code: 1008, reason: 'too many frames: rate limit exceeded repeatedly' });
    expect(beyond.all).toEqual([]);
  });

  it('answers 200 only once the lagging node subscribed at Redis: a publish right after it reaches the connections there', async () => {
    const t = uid();
    const user = `${t}-u`;
    const tabs: SubsClient[] = [];
    for (const gw of [group.node(0), group.node(1), group.node(1)]) {
      const c = await SubsClient.open(gw.url, { user });
      clients.push(c);
      tabs.push(c);
    }
    for (let i = 0; i < 3; i++) {
      const channel = i === 1 ? `feed:${t}-${i}` : `news:${t}-${i}`;
      await serverSubOk(group.node(0), 'subscribe', user, channel);
      expect((await publishOne(group.node(0), channel, { round: i })).status).toBe(200);
      for (const c of tabs) {
        await c.untilMessage(channel, { round: i });
        expect(c.framesBefore(channel, { round: i }).filter((f) => f.channel === channel).map((f) => f.type)).toEqual(['subscribed']);
      }
    }
  });
});

describe('server-side subscriptions when a node stays silent, is killed, or Redis is down', () => {
  const group = new NodeGroup();
  const clients: SubsClient[] = [];
  const A = (): GatewayProcess => group.node(0);
  const B = (): GatewayProcess => group.node(1);

  async function open(gw: GatewayProcess, user: string, subs?: string[], welcome = true): Promise<SubsClient> {
    const c = await SubsClient.open(gw.url, { user, ...(subs ? { subs } : {}) }, { welcome });
    clients.push(c);
    return c;
  }

  beforeAll(() => group.startOnRedis(['ssx-a', 'ssx-b', 'ssx-c'], subsEnv()), 90_000);
  afterEach(() => closeSubsClients(clients));
  afterAll(() => group.stop());

  it('answers 503 after 5 s naming how many nodes did not answer when a registered node stays silent, and applies it on the others', async () => {
    const t = uid();
    const user = `${t}-u`;
    const channel = `news:${t}`;
    const onA = await open(A(), user);
    const onB = await open(B(), user);
    // A node that renews its lease but never answers: a registry entry far in the future.
    await group.redis().cli('ZADD', 'pubgate:nodes', '99999999999999', 'ghost~silent');
    try {
      const r = await serverSub(A(), 'subscribe', { user, channel });
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(r.body).toEqual({
        error: { code: 'unavailable', message: '1 node of 4 did not answer within 5 s; it may be applied on the others, and retrying is safe' },
      });
      for (const c of [onA, onB]) await c.untilFrame((f) => f.type === 'subscribed' && f.channel === channel, 'subscribed');
    } finally {
      await group.redis().cli('ZREM', 'pubgate:nodes', 'ghost~silent');
    }
    // The retry is answered 200, and nobody hears of it twice.
    await serverSubOk(B(), 'subscribe', user, channel);
    expect((await publishOne(B(), channel, 'after')).status).toBe(200);
    for (const c of [onA, onB]) {
      await c.untilMessage(channel, 'after');
      expect(c.of('subscribed')).toHaveLength(1);
    }
  });

  it('answers 200 without a node killed with kill -9 while the request waits, once its lease ran out', async () => {
    const t = uid();
    const user = `${t}-u`;
    const channel = `feed:${t}`;
    const onA = await open(A(), user);
    const onC = await open(group.node(2), user);
    const mark = logMark(A());
    expect(await group.node(2).stop('SIGKILL')).toBeNull();
    await onC.closed;
    // Its lease is still running: the request waits for its answer, then no longer.
    await serverSubOk(A(), 'subscribe', user, channel);
    await waitForNewLog(A(), mark, (l) => l.msg === 'not waiting for a node whose lease ran out');
    const sub = await onA.untilFrame((f) => f.type === 'subscribed', 'subscribed');
    expect(sub).toEqual({ type: 'subscribed', channel, offset: 0, epoch: expect.any(String) as string });
    expect((await publishOne(B(), channel, 'after')).status).toBe(200);
    await onA.untilMessage(channel, 'after');
    expect((await group.redis().cli('ZCARD', 'pubgate:nodes'))[0]).toBe('2');
  });

  it('closes a connection whose subs cannot be made while Redis is down with 1011 and no welcome, answers the API 503, and works again once Redis is back', async () => {
    const t = uid();
    const user = `${t}-u`;
    const redis = group.redis();
    await redis.kill9();
    await untilReadyz(A(), 503);
    const refusedSubs = await open(A(), user, [`news:${t}`], false);
    expect(await refusedSubs.closed).toEqual({ code: 1011, reason: 'internal error' });
    expect(refusedSubs.all).toEqual([]);
    // Without subs a connection opens as before (its own subscribes are refused until Redis is back).
    const plain = await open(A(), user);
    expect(plain.welcomeSubs).toBeUndefined();
    const r = await serverSub(A(), 'subscribe', { user, channel: `news:${t}` });
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
    expect(r.body).toMatchObject({ error: { code: 'unavailable' } });
    await redis.start();
    await untilReadyz(A(), 200);
    await untilReadyz(B(), 200);
    const back = await open(A(), user, [`news:${t}`]);
    expect(back.welcomeSubs).toEqual({ [`news:${t}`]: {} });
    await serverSubOk(B(), 'subscribe', user, `news:${t}-2`);
    for (const c of [plain, back]) await c.untilFrame((f) => f.type === 'subscribed' && f.channel === `news:${t}-2`, 'subscribed');
  });
});
