/**
 * The WebhookQueue contract against the memory queue, a real redis-server and
 * a real 3-master Redis Cluster (the Redis queue through ioredis' script
 * commands, as the broker runs it: Scripts on one connection or a Cluster client).
 */
import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keySlot } from '../../src/broker/redis-cluster.js';
import { parseHostPort, Scripts } from '../../src/broker/redis-conn.js';
import type { ScriptRunner } from '../../src/broker/redis-history.js';
import { createRedisWebhookQueue, webhookIndexKeys } from '../../src/broker/redis-webhook-queue.js';
import { createMemoryWebhookQueue } from '../../src/webhooks/memory-queue.js';
import { webhookOutboxKey } from '../../src/webhooks/queue.js';
import { runWebhookQueueContract, type QueueHarness } from '../helpers/webhook-queue-contract.js';
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from '../helpers/redis.js';

let server: RedisServer | undefined;
let cluster: RedisCluster | undefined;

beforeAll(async () => {
  [server, cluster] = await Promise.all([startRedis(), startRedisCluster()]);
}, 180_000);
afterAll(async () => {
  await Promise.all([server?.stop(), cluster?.stop()]);
});

runWebhookQueueContract({
  name: 'memory',
  newHarness(maxEvents) {
    const q = createMemoryWebhookQueue({ maxEvents });
    return Promise.resolve<QueueHarness>({
      a: q,
      b: q,
      append: (channel, texts, oldestMs) => Promise.resolve(q.append(channel, texts, oldestMs)),
      close: () => Promise.resolve(),
    });
  },
});

type Client = Redis | Cluster;

// The producers' side: RPUSH with the outbox's expiry, as the presence and occupancy scripts do.
const RPUSH = `redis.call('RPUSH', KEYS[1], unpack(ARGV, 2)); redis.call('PEXPIRE', KEYS[1], ARGV[1]); return 1`;

/** A harness over two connections (`newClient`) to one Redis, on a fresh key prefix. */
function redisHarness(newClient: () => Client, pttl: (key: string) => Promise<number>) {
  return async (maxEvents: number, ttlMs: number): Promise<QueueHarness> => {
    const prefix = `t${randomUUID().slice(0, 8)}:`;
    const outboxKey = (channel: string): string => webhookOutboxKey(prefix, `${prefix}ch:${channel}`);
    const clients = [newClient(), newClient()];
    let hook: (() => Promise<void>) | undefined;
    const runners: ScriptRunner[] = clients.map((c) => {
      const s = new Scripts(c);
      return (lua, keys, args) => s.run(lua, keys, args);
    });
    const runA: ScriptRunner = async (lua, keys, args) => {
      const r = await (runners[0] as ScriptRunner)(lua, keys, args);
      const fn = hook;
      if (fn && keys[0]?.startsWith(`${prefix}wq:`)) {
        hook = undefined;
        await fn();
      }
      return r;
    };
    const make = (run: ScriptRunner) => createRedisWebhookQueue({ prefix, outboxKey, run, maxEvents, ttlMs });
    const a = make(runA);
    const b = make(runners[1] as ScriptRunner);
    return {
      a,
      b,
      async append(channel, texts, oldestMs) {
        await (runners[1] as ScriptRunner)(RPUSH, [outboxKey(channel)], [String(ttlMs), ...texts]);
        return b.mark(channel, texts.length, oldestMs);
      },
      afterOutboxStep(fn) {
        hook = fn;
      },
      async ttls(channels) {
        const out = new Map<string, number>();
        for (const k of [...webhookIndexKeys(prefix), ...channels.map(outboxKey)]) {
          const ms = await pttl(k);
          if (ms !== -2) out.set(k, ms);
        }
        return out;
      },
      async close() {
        await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
      },
    };
  };
}

function liveServer(): RedisServer {
  if (!server) throw new Error('redis-server did not start');
  return server;
}
function liveCluster(): RedisCluster {
  if (!cluster) throw new Error('the Redis cluster did not start');
  return cluster;
}

runWebhookQueueContract({
  name: 'redis',
  newHarness: redisHarness(
    () => new Redis(liveServer().url),
    async (key) => Number((await liveServer().cli('PTTL', key))[0]),
  ),
});

runWebhookQueueContract({
  name: 'redis-cluster',
  newHarness: redisHarness(
    () => new Cluster(liveCluster().seeds.map(parseHostPort)),
    async (key) => {
      const c = liveCluster();
      const port = await c.ownerOf(key);
      return Number((await c.nodes.find((n) => n.port === port)?.cli('PTTL', key))?.[0]);
    },
  ),
});

describe('Redis webhook queue keys', () => {
  it('keeps the index keys in one slot, and outboxes in the slot of their channel', () => {
    const idx = webhookIndexKeys('pubgate:');
    expect(idx).toEqual(['pubgate:whd:{pubgate:wh}', 'pubgate:wha:{pubgate:wh}', 'pubgate:whf:{pubgate:wh}', 'pubgate:whg:{pubgate:wh}', 'pubgate:whn:{pubgate:wh}']);
    expect(new Set(idx.map(keySlot)).size).toBe(1);
    expect(keySlot(webhookOutboxKey('pubgate:', 'pubgate:ch:chat:1'))).toBe(keySlot('pubgate:ch:chat:1'));
  });

  it('refuses a prefix with braces and a bound below 1', () => {
    const run: ScriptRunner = () => Promise.resolve(null);
    const base = { prefix: 'p:', outboxKey: (c: string) => c, run, maxEvents: 10, ttlMs: 60_000 };
    expect(() => createRedisWebhookQueue({ ...base, prefix: '{p}:' })).toThrow(TypeError);
    expect(() => createRedisWebhookQueue({ ...base, maxEvents: 0 })).toThrow(RangeError);
    expect(() => createMemoryWebhookQueue({ maxEvents: 0 })).toThrow(RangeError);
  });
});
