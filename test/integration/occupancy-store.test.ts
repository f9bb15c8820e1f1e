/**
 * The occupancy store contract (test/helpers/occupancy-contract.ts) against
 * the memory broker, a real redis-server and a real 3-master Redis Cluster.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll } from 'vitest';
import { createMemoryBroker } from '../../src/broker/memory-broker.js';
import { createRedisBroker } from '../../src/broker/redis-broker.js';
import { memoryLog } from '../helpers/broker-contract.js';
import { runOccupancyContract } from '../helpers/occupancy-contract.js';
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from '../helpers/redis.js';

let server: RedisServer | undefined;
let cluster: RedisCluster | undefined;

beforeAll(async () => {
  [server, cluster] = await Promise.all([startRedis(), startRedisCluster()]);
}, 180_000);
afterAll(async () => {
  await Promise.all([server?.stop(), cluster?.stop()]);
});

const webhooks = { maxEvents: 1_000_000, keysTtlMs: 600_000 };

runOccupancyContract({ name: 'memory', newBroker: () => createMemoryBroker({ webhooks: { maxEvents: 1_000_000 } }) });

runOccupancyContract({
  name: 'redis',
  newBroker: (keyPrefix) => {
    if (!server) throw new Error('redis-server did not start');
    return createRedisBroker({ url: server.url, keyPrefix, nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), webhooks });
  },
  redis: {
    cli: (_key, ...args) => {
      if (!server) throw new Error('redis-server did not start');
      return server.cli(...args);
    },
  },
});

runOccupancyContract({
  name: 'redis-cluster',
  newBroker: (keyPrefix) => {
    if (!cluster) throw new Error('the Redis cluster did not start');
    return createRedisBroker({ cluster: cluster.seeds, keyPrefix, nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), webhooks });
  },
  redis: {
    async cli(key, ...args) {
      if (!cluster) throw new Error('the Redis cluster did not start');
      const port = await cluster.ownerOf(key);
      const node = cluster.nodes.find((n) => n.port === port);
      if (!node) throw new Error(`no cluster node on ${port}`);
      return node.cli(...args);
    },
  },
});
