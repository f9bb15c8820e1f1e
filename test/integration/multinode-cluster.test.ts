/**
 * Three real gateway processes on a real 3-master / 3-replica Redis Cluster
 * (sharded pub/sub): cross-node fan-out, each channel held only on the master
 * that owns its slot, and a master failover under connected subscribers.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  NodeGroup,
  Subscriber,
  closeAll,
  logMark,
  publishBatch,
  seq,
  untilReadyz,
  waitForNewLog,
  watchReadyz,
} from '../helpers/multinode.js';
import type { RedisServer } from '../helpers/redis.js';

const IDS = ['cl-a', 'cl-b', 'cl-c'] as const;
const group = new NodeGroup();
const { nodes } = group;
const subs: Subscriber[] = [];

beforeAll(() => group.startOnCluster(IDS), 240_000);

afterAll(async () => {
  await closeAll(subs);
  await group.stop();
});

afterEach(async () => {
  await closeAll(subs);
});

function redisAt(port: number): RedisServer {
  const s = group.cluster().nodes.find((n) => n.port === port);
  if (!s) throw new Error(`no cluster node on ${port}`);
  return s;
}

/** One subscriber per gateway node, each subscribed to every channel. */
async function listenersOn(channels: readonly string[]): Promise<Subscriber[]> {
  const listeners = await Promise.all(nodes.map((n) => Subscriber.open(n.url)));
  subs.push(...listeners);
  for (const [i, l] of listeners.entries()) {
    expect(l.welcome?.node).toBe(IDS[i]);
    await l.subscribe(...channels);
  }
  return listeners;
}

/** Publishes `total` messages over `channels` in sequential batches, round-robin over the nodes; data is the per-channel sequence number. */
async function publishRoundRobin(channels: readonly string[], total: number, batch: number): Promise<void> {
  for (let b = 0; b * batch < total; b++) {
    const messages = seq(Math.min(batch, total - b * batch)).map((j) => {
      const k = b * batch + j;
      return { channel: channels[k % channels.length] ?? '', data: Math.floor(k / channels.length) };
    });
    const res = await publishBatch(group.node(b % nodes.length), messages);
    expect(res.status, await res.clone().text()).toBe(200);
  }
}

/** Channel → port of the master owning it (redis channel `pubgate:ch:<channel>`). */
async function owners(channels: readonly string[]): Promise<Map<string, number>> {
  const c = group.cluster();
  const out = new Map<string, number>();
  for (const ch of channels) out.set(ch, await c.ownerOf(`pubgate:ch:${ch}`));
  return out;
}

describe('three gateway nodes on a Redis Cluster (sharded pub/sub)', () => {
  it('fans out 2000 messages over 20 channels from every node to every node in publish order, each channel SSUBSCRIBEd only on its owning master', async () => {
    const c = group.cluster();
    const tag = randomUUID().slice(0, 8);
    const channels = seq(20).map((i) => `mn:cl:${tag}:${i}`);
    const listeners = await listenersOn(channels);

    // Where Redis holds the subscriptions: the owning master, and only there.
    const own = await owners(channels);
    expect(new Set(own.values()).size).toBeGreaterThan(1); // the 20 channels span several shards
    const pattern = `pubgate:ch:mn:cl:${tag}:*`;
    for (const srv of c.nodes.filter((n) => n.running)) {
      const held = (await srv.cli('PUBSUB', 'SHARDCHANNELS', pattern)).sort();
      const expected = channels.filter((ch) => own.get(ch) === srv.port).map((ch) => `pubgate:ch:${ch}`).sort();
      expect(held, `PUBSUB SHARDCHANNELS on ${srv.port}`).toEqual(expected);
      // Nothing goes through classic (cluster-wide broadcast) pub/sub.
      expect(await srv.cli('PUBSUB', 'CHANNELS', 'pubgate:*'), `PUBSUB CHANNELS on ${srv.port}`).toEqual([]);
    }
    for (const ch of channels) {
      const reply = await redisAt(own.get(ch) ?? 0).cli('PUBSUB', 'SHARDNUMSUB', `pubgate:ch:${ch}`);
      expect(Number(reply[1]), `SHARDNUMSUB ${ch}`).toBe(3); // one subscriber connection per gateway node
    }

    const TOTAL = 2000;
    const PER_CHANNEL = TOTAL / channels.length;
    await publishRoundRobin(channels, TOTAL, 250);
    // One more per channel: a duplicate or late copy of an earlier message would show before it.
    expect((await publishBatch(group.node(2), channels.map((channel) => ({ channel, data: 'end' })))).status).toBe(200);
    await Promise.all(
      listeners.map((l) => l.until(() => channels.every((ch) => l.got(ch).length >= PER_CHANNEL + 1), `all messages on ${String(l.welcome?.node)}`, 120_000)),
    );
    const expected = [...seq(PER_CHANNEL), 'end'];
    for (const l of listeners) for (const ch of channels) expect(l.got(ch), `${ch} on ${String(l.welcome?.node)}`).toEqual(expected);
  }, 180_000);

  it('survives a master failover: every node goes not ready then ready, and delivery resumes on that shard without subscribers reconnecting', async () => {
    const c = group.cluster();
    const tag = randomUUID().slice(0, 8);
    const channels = seq(20).map((i) => `mn:fo:${tag}:${i}`);
    const listeners = await listenersOn(channels);
    const own = await owners(channels);
    const victim = own.get(channels[0] ?? '') ?? 0;
    const onVictim = channels.filter((ch) => own.get(ch) === victim);
    expect(onVictim.length).toBeGreaterThan(0);

    expect((await publishBatch(group.node(0), channels.map((channel) => ({ channel, data: 'before' })))).status).toBe(200);
    await Promise.all(listeners.map((l) => l.until(() => channels.every((ch) => l.got(ch).length >= 1), 'the message before the failover')));

    const marks = nodes.map(logMark);
    const watchers = nodes.map(watchReadyz);
    let promoted: number;
    try {
      ({ promoted } = await c.killMaster(victim));
      // Each node saw its broker go down, then come back.
      await Promise.all(
        nodes.map(async (n, i) => {
          const down = await waitForNewLog(n, marks[i] ?? new Set(), (l) => l.msg === 'broker status' && l.status === 'down', 60_000);
          const afterDown = new Set(n.lines.slice(0, n.lines.indexOf(down) + 1));
          await waitForNewLog(n, afterDown, (l) => l.msg === 'broker status' && l.status === 'ready', 60_000);
        }),
      );
      await Promise.all(nodes.map((n) => untilReadyz(n, 200, 60_000, 'after the failover')));
    } finally {
      await Promise.all(watchers.map((w) => w.stop()));
    }
    for (const [i, w] of watchers.entries()) {
      expect(w.seen[0], `first /readyz on ${IDS[i]}`).toBe(200);
      expect(w.seen, `/readyz answers on ${IDS[i]}`).toContain(503);
      expect(w.seen[w.seen.length - 1], `last /readyz on ${IDS[i]}`).toBe(200);
    }

    // The promoted replica now holds that shard's channels, once per gateway node.
    const held = (await redisAt(promoted).cli('PUBSUB', 'SHARDCHANNELS', `pubgate:ch:mn:fo:${tag}:*`)).sort();
    expect(held).toEqual(onVictim.map((ch) => `pubgate:ch:${ch}`).sort());
    for (const ch of onVictim) expect(Number((await redisAt(promoted).cli('PUBSUB', 'SHARDNUMSUB', `pubgate:ch:${ch}`))[1])).toBe(3);

    // Published on two other nodes, received on the sockets that never reconnected.
    expect((await publishBatch(group.node(1), channels.map((channel) => ({ channel, data: 'after-b' })))).status).toBe(200);
    expect((await publishBatch(group.node(2), channels.map((channel) => ({ channel, data: 'after-c' })))).status).toBe(200);
    await Promise.all(listeners.map((l) => l.until(() => channels.every((ch) => l.got(ch).length >= 3), `messages after the failover on ${String(l.welcome?.node)}`, 30_000)));
    for (const l of listeners) {
      for (const ch of channels) expect(l.got(ch), `${ch} on ${String(l.welcome?.node)}`).toEqual(['before', 'after-b', 'after-c']);
      expect(l.closeInfo).toBeUndefined();
      expect(await l.alive()).toBe('open');
    }
  }, 240_000);
});
