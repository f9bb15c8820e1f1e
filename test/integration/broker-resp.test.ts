/**
 * ioredis 6 speaks RESP3 unless told otherwise; pubgate pins every connection
 * it opens to RESP2 (src/broker/redis-conn.ts RESP_VERSION), the protocol the
 * broker suites were written and run against. CLIENT LIST shows what each
 * connection negotiated (`resp=2` or `resp=3`).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { createRedisBroker } from '../../src/broker/redis-broker.js';
import { memoryLog } from '../helpers/broker-contract.js';
import { pollUntil, startRedis, startRedisCluster, type RedisCluster, type RedisServer } from '../helpers/redis.js';

interface ClientLine {
  readonly name: string;
  readonly resp: string;
}

async function clients(cli: (...args: string[]) => Promise<string[]>): Promise<ClientLine[]> {
  const text = (await cli('CLIENT', 'LIST')).join('\n');
  return text
    .split('\n')
    .filter((l) => l.includes(' name='))
    .map((l) => ({ name: /(?:^| )name=(\S*)/.exec(l)?.[1] ?? '', resp: /(?:^| )resp=(\S*)/.exec(l)?.[1] ?? '' }));
}

async function startBroker(b: Broker): Promise<void> {
  await b.start({ onMessage: () => undefined, onStatus: () => undefined, onControl: () => undefined });
  await pollUntil(() => b.status === 'ready', 'broker ready');
  // A subscribed channel makes the subscriber connection exist on every kind of transport.
  await b.subscribe(`resp-${randomUUID().slice(0, 8)}`);
}

describe('Redis connections use RESP2', () => {
  let redis: RedisServer | undefined;
  let cluster: RedisCluster | undefined;
  const open: Broker[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await Promise.all(open.map((b) => b.close()));
    await redis?.stop();
    await cluster?.stop();
  });

  it('standalone: the publisher, subscriber and probe connections all negotiated resp=2', async () => {
    const nodeId = `resp-${randomUUID().slice(0, 8)}`;
    const b = createRedisBroker({ url: redis!.url, nodeId, log: memoryLog() });
    open.push(b);
    await startBroker(b);
    const mine = (await clients((...a) => redis!.cli(...a))).filter((c) => c.name.includes(nodeId));
    // publisher and subscriber at least; every one of them on RESP2.
    expect(mine.length).toBeGreaterThanOrEqual(2);
    expect(mine.map((c) => c.resp)).toEqual(mine.map(() => '2'));
  });

  it('cluster: every connection to every master negotiated resp=2', async () => {
    cluster = await startRedisCluster();
    const b = createRedisBroker({ cluster: [...cluster.seeds], nodeId: `resp-${randomUUID().slice(0, 8)}`, log: memoryLog() });
    open.push(b);
    await startBroker(b);
    const masters = await cluster.masters();
    const seen: string[] = [];
    for (const m of masters) {
      const node = cluster.nodes.find((n) => n.port === m.port)!;
      // Cluster data connections carry no client name (disableClientInfo); count every client but redis-cli itself.
      const text = (await node.cli('CLIENT', 'LIST')).join('\n');
      for (const l of text.split('\n')) {
        if (!l.includes(' id=') && !l.startsWith('id=')) continue;
        if (/ cmd=client\|list /.test(l) || / flags=S /.test(l) || / flags=M /.test(l)) continue; // this cli, replication links
        seen.push(/(?:^| )resp=(\S*)/.exec(l)?.[1] ?? '?');
      }
    }
    expect(seen.length).toBeGreaterThanOrEqual(masters.length);
    expect(seen).toEqual(seen.map(() => '2'));
  }, 120_000);
});
