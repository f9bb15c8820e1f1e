import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { frameOffset, type History, type HistoryOptions } from '../../src/broker/history.js';
import { createRedisBroker, type RedisBrokerEvents } from '../../src/broker/redis-broker.js';
import { keySlot } from '../../src/broker/redis-cluster.js';
import { historyKeys } from '../../src/broker/redis-history.js';
import { expectUnavailable, memoryLog, Recorder, runBrokerContract } from '../helpers/broker-contract.js';
import { runPresenceContract } from '../helpers/presence-contract.js';
import { startRedisCluster, type RedisCluster } from '../helpers/redis.js';

let cluster: RedisCluster | undefined;

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 180_000);
afterAll(async () => {
  await cluster?.stop();
});

function seeds(): readonly string[] {
  if (!cluster) throw new Error('the Redis cluster did not start');
  return cluster.seeds;
}

function newBroker(history?: HistoryOptions, events?: RedisBrokerEvents): Broker {
  return createRedisBroker({
    cluster: seeds(),
    nodeId: `n-${randomUUID().slice(0, 8)}`,
    log: memoryLog(),
    ...(history ? { history } : {}),
    ...(events ? { events } : {}),
  });
}

runBrokerContract({ name: 'redis-cluster', newBroker: () => newBroker(), sharedBackend: true, newHistoryBroker: (history) => newBroker(history) });

runPresenceContract({
  name: 'redis-cluster',
  newBroker: (keysTtlMs) => createRedisBroker({ cluster: seeds(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), presence: { keysTtlMs } }),
  newWebhookBroker: (keysTtlMs) =>
    createRedisBroker({ cluster: seeds(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), presence: { keysTtlMs }, webhooks: { maxEvents: 1_000_000, keysTtlMs: 600_000 } }),
  sharedBackend: true,
  redis: {
    async cli(key, ...args) {
      if (!cluster) throw new Error('the Redis cluster did not start');
      const port = await cluster.ownerOf(key);
      const node = cluster.nodes.find((n) => n.port === port);
      if (!node) throw new Error(`no cluster node on ${port}`);
      return node.cli(...args);
    },
    async flushAll() {
      if (!cluster) throw new Error('the Redis cluster did not start');
      for (const m of await cluster.masters()) await cluster.nodes.find((n) => n.port === m.port)?.cli('FLUSHALL');
    },
  },
});

describe('RedisBroker (cluster, sharded pub/sub) against a real 3-master cluster', () => {
  const open: Broker[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((b) => b.close()));
  });

  async function readyNode(history?: HistoryOptions, events?: RedisBrokerEvents): Promise<{ b: Broker; r: Recorder }> {
    const b = newBroker(history, events);
    open.push(b);
    const r = new Recorder();
    await b.start(r);
    await r.untilStatus('ready');
    return { b, r };
  }

  async function historyNode(events?: RedisBrokerEvents): Promise<{ b: Broker; r: Recorder; h: History }> {
    const n = await readyNode({ size: 50, ttlSec: 60 }, events);
    if (!n.b.history) throw new Error('no history');
    return { ...n, h: n.b.history };
  }

  function liveCluster(): RedisCluster {
    if (!cluster) throw new Error('the Redis cluster did not start');
    return cluster;
  }

  it('reports kind redis-cluster, and refuses a key prefix with braces', () => {
    expect(newBroker().kind).toBe('redis-cluster');
    for (const keyPrefix of ['{app}:', 'a{', 'b}']) {
      expect(() => createRedisBroker({ cluster: seeds(), keyPrefix, nodeId: 'x', log: memoryLog() })).toThrow(TypeError);
    }
  });

  it('computes the same slot as CLUSTER KEYSLOT', async () => {
    const c = liveCluster();
    const keys = ['pubgate:ch:news', 'a', '', 'user:{42}:feed', '{}x', '{a}{b}', 'x{}{y}', 'é漢字', ...Array.from({ length: 30 }, (_, i) => `pubgate:ch:k${i}`)];
    const port = c.nodes.find((n) => n.running)?.port ?? 0;
    for (const k of keys) {
      const expected = Number((await c.nodes.find((n) => n.port === port)?.cli('CLUSTER', 'KEYSLOT', k))?.[0]);
      expect(keySlot(k), k).toBe(expected);
    }
  });

  it('subscribes each channel only on the master that owns its slot (SSUBSCRIBE)', async () => {
    const c = liveCluster();
    const { b } = await readyNode();
    const tag = randomUUID().slice(0, 8);
    const channels = Array.from({ length: 30 }, (_, i) => `s${tag}:${i}`);
    await Promise.all(channels.map((ch) => b.subscribe(ch)));
    const masters = await c.masters();
    const where = new Map<string, number[]>();
    for (const m of masters) {
      const node = c.nodes.find((n) => n.port === m.port);
      const held = (await node?.cli('PUBSUB', 'SHARDCHANNELS', `pubgate:ch:s${tag}:*`)) ?? [];
      // Classic pub/sub holds nothing: no cluster-wide broadcast.
      expect(await node?.cli('PUBSUB', 'CHANNELS', `pubgate:ch:s${tag}:*`)).toEqual([]);
      for (const rc of held) where.set(rc, [...(where.get(rc) ?? []), m.port]);
    }
    expect([...where.keys()].sort()).toEqual(channels.map((ch) => `pubgate:ch:${ch}`).sort());
    const usedMasters = new Set<number>();
    for (const ch of channels) {
      const owner = await c.ownerOf(`pubgate:ch:${ch}`);
      expect(where.get(`pubgate:ch:${ch}`)).toEqual([owner]);
      usedMasters.add(owner);
    }
    expect(usedMasters.size).toBe(3);

    await Promise.all(channels.slice(0, 10).map((ch) => b.unsubscribe(ch)));
    let remaining = 0;
    for (const m of masters) {
      const node = c.nodes.find((n) => n.port === m.port);
      remaining += ((await node?.cli('PUBSUB', 'SHARDCHANNELS', `pubgate:ch:s${tag}:*`)) ?? []).length;
    }
    expect(remaining).toBe(20);
  });

  it("keeps each channel's history keys on the master that owns its shard channel, for channels on every master", async () => {
    const c = liveCluster();
    const a = await historyNode();
    const b = await historyNode();
    const tag = randomUUID().slice(0, 8);
    const channels = Array.from({ length: 24 }, (_, i) => `hs${tag}:${i}`);
    await Promise.all(channels.map((ch) => b.b.subscribe(ch)));
    const owners = new Set<number>();
    for (const ch of channels) {
      const rc = `pubgate:ch:${ch}`;
      const keys = historyKeys('pubgate:', ch, rc, true);
      // CLUSTER KEYSLOT agrees: the keys and the shard channel share one slot.
      const slots = await Promise.all([rc, ...keys].map(async (k) => Number((await c.nodes.find((n) => n.running)?.cli('CLUSTER', 'KEYSLOT', k))?.[0])));
      expect(new Set(slots), ch).toEqual(new Set([keySlot(rc)]));
      for (let i = 1; i <= 3; i++) expect(await a.h.publish(ch, String(i))).toMatchObject({ offset: i });
      const owner = await c.ownerOf(rc);
      owners.add(owner);
      const node = c.nodes.find((n) => n.port === owner);
      expect(await node?.cli('HGET', keys[0], 'o')).toEqual(['3']);
      expect(await node?.cli('XLEN', keys[1])).toEqual(['3']);
    }
    expect(owners.size).toBe(3);
    await b.r.until(() => channels.every((ch) => b.r.got(ch).length === 3), 'three messages on every channel');
    for (const ch of channels) {
      expect(b.r.got(ch).map(frameOffset)).toEqual([1, 2, 3]);
      expect((await b.h.since(ch, 1, 10)).frames?.map(frameOffset)).toEqual([2, 3]);
    }
  });

  it('refuses a script whose shard channel is on another master than its keys (why the keys carry the hash tag)', async () => {
    const c = liveCluster();
    const tag = randomUUID().slice(0, 8);
    const chans = Array.from({ length: 30 }, (_, i) => `pubgate:ch:x${tag}:${i}`);
    const byOwner = new Map<number, string>();
    for (const rc of chans) byOwner.set(await c.ownerOf(rc), rc);
    const [first, second] = [...byOwner.entries()];
    if (!first || !second) throw new Error('the channels did not spread over two masters');
    const node = c.nodes.find((n) => n.port === first[0]);
    const lua = "redis.call('INCR', KEYS[1]); return redis.call('SPUBLISH', ARGV[1], 'x')";
    const key = `pubgate:o:{${first[1]}}`;
    // Same slot: fine. Shard channel on another master: refused by Redis.
    expect(await node?.cli('EVAL', lua, '1', key, first[1])).toEqual(['0']);
    expect(await node?.cli('EVAL', lua, '1', key, second[1])).toEqual([expect.stringMatching(/non local key|CROSSSLOT/)]);
  });

  it('publishes with history after SCRIPT FLUSH on every master (NOSCRIPT), in order and without gaps', async () => {
    const c = liveCluster();
    const a = await historyNode();
    const b = await historyNode();
    const ch = `nf${randomUUID().slice(0, 8)}`;
    await b.b.subscribe(ch);
    for (let i = 1; i <= 3; i++) await a.h.publish(ch, String(i));
    for (const m of await c.masters()) await c.nodes.find((n) => n.port === m.port)?.cli('SCRIPT', 'FLUSH');
    const more = await Promise.all([4, 5, 6, 7].map((i) => a.h.publish(ch, String(i))));
    expect(more.map((p) => p.offset)).toEqual([4, 5, 6, 7]);
    await b.r.until(() => b.r.got(ch).length === 7, 'seven messages');
    expect(b.r.got(ch).map(frameOffset)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('recovers when the masters drop its publishing and subscriber connections (CLIENT KILL)', async () => {
    const c = liveCluster();
    const a = await readyNode();
    const b = await readyNode();
    const ch = `k${randomUUID().slice(0, 8)}`;
    await b.b.subscribe(ch);
    const aBack = a.r.nextStatus('ready');
    const bBack = b.r.nextStatus('ready');
    for (const m of await c.masters()) {
      const node = c.nodes.find((n) => n.port === m.port);
      await node?.cli('CLIENT', 'KILL', 'TYPE', 'normal');
      await node?.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    }
    await aBack;
    await bBack;
    await a.b.publish(ch, 'after kill');
    await b.r.untilReceived(ch, 'after kill');
    expect(b.r.got(ch)).toEqual(['after kill']);
  });

  // Kills a master: keep these two last in this file.
  it('resumes delivery after a master is killed and its replica takes over; history there keeps its epoch and offsets', async () => {
    const c = liveCluster();
    const a = await historyNode();
    const reported: string[] = [];
    const b = await historyNode({ onReconnect: (conn) => void reported.push(conn), onResubscribed: () => void reported.push('resubscribed') });
    const tag = randomUUID().slice(0, 8);
    const channels = Array.from({ length: 20 }, (_, i) => `f${tag}:${i}`);
    await Promise.all(channels.map((ch) => b.b.subscribe(ch)));
    for (const ch of channels) await a.b.publish(ch, 'before');
    await b.r.until(() => channels.every((ch) => b.r.got(ch).includes('before')), 'every channel before the failover');

    const victim = await c.ownerOf(`pubgate:ch:${channels[0] ?? ''}`);
    // A history channel on the master that is killed, with three messages its replica has received.
    let hch = '';
    for (let i = 0; hch === ''; i++) if ((await c.ownerOf(`pubgate:ch:fh${tag}:${i}`)) === victim) hch = `fh${tag}:${i}`;
    await b.b.subscribe(hch);
    for (let i = 1; i <= 3; i++) await a.h.publish(hch, String(i));
    const before = await a.h.position(hch);
    expect(before.offset).toBe(3);
    await c.untilReplicated(victim);
    reported.length = 0;
    const aDown = a.r.nextStatus('down');
    const bDown = b.r.nextStatus('down');
    const failover = c.killMaster(victim);
    await aDown;
    // While a shard is without its master, the node refuses publishes instead of queueing them.
    await expectUnavailable(a.b.publish(channels[0] ?? '', 'during'));
    await bDown;
    const { promoted } = await failover;
    await a.r.untilStatus('ready');
    await b.r.untilStatus('ready');
    expect(b.b.subscribedCount()).toBe(channels.length + 1);

    for (const ch of channels) await a.b.publish(ch, 'after');
    await b.r.until(() => channels.every((ch) => b.r.got(ch).includes('after')), 'every channel after the failover');
    for (const ch of channels) expect(b.r.got(ch)).toEqual(['before', 'after']);

    // The channels of the killed master now live on the promoted replica.
    const moved = (await c.nodes.find((n) => n.port === promoted)?.cli('PUBSUB', 'SHARDCHANNELS', `pubgate:ch:f${tag}:*`)) ?? [];
    expect(moved).toContain(`pubgate:ch:${channels[0] ?? ''}`);
    // Moving subscriptions to another master is a gap (messages published there
    // before the new SSUBSCRIBE are missed): reported like a subscriber reconnect.
    expect(reported).toContain('subscriber');
    expect(reported).toContain('resubscribed');

    // The promoted replica had the history: same epoch, offsets go on.
    expect(await b.h.position(hch)).toEqual(before);
    expect(await a.h.publish(hch, '4')).toEqual({ offset: 4, epoch: before.epoch, repeat: false });
    expect((await b.h.since(hch, 1, 10)).frames?.map(frameOffset)).toEqual([2, 3, 4]);
    await b.r.until(() => b.r.got(hch).length === 4, 'four history messages');
    expect(b.r.got(hch).map(frameOffset)).toEqual([1, 2, 3, 4]);

    // A broker started after the failover works too.
    const late = await readyNode();
    await late.b.subscribe(channels[0] ?? '');
    await a.b.publish(channels[0] ?? '', 'late');
    await late.r.untilReceived(channels[0] ?? '', 'late');
  });

  it('survives a restart of the whole cluster, and a broker started while it is down becomes ready', async () => {
    const c = liveCluster();
    const a = await readyNode();
    const b = await readyNode();
    const ch = `w${randomUUID().slice(0, 8)}`;
    await b.b.subscribe(ch);
    const aBack = a.r.nextStatus('ready');
    const bBack = b.r.nextStatus('ready');
    await Promise.all(c.nodes.map((n) => n.kill9()));
    await a.r.untilStatus('down');

    const late = newBroker();
    open.push(late);
    const lateRec = new Recorder();
    await late.start(lateRec); // resolves although no node answers
    expect(late.status).toBe('down');

    // Same ports, same nodes.conf: the cluster re-forms (empty, which pub/sub does not mind).
    await Promise.all(c.nodes.map((n) => n.start()));
    await aBack;
    await bBack;
    await lateRec.untilStatus('ready');
    await late.subscribe(ch);
    await a.b.publish(ch, 'after restart');
    await b.r.untilReceived(ch, 'after restart');
    await lateRec.untilReceived(ch, 'after restart');
  });
});
