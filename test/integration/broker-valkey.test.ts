/**
 * The broker contract (with history) against Valkey 8 (valkey-server, which
 * takes redis-server's arguments), and a kill -9 / restart of it: the Redis
 * broker must behave the same on either server.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBroker } from '../../src/broker/redis-broker.js';
import { expectUnavailable, memoryLog, Recorder, runBrokerContract } from '../helpers/broker-contract.js';
import { runPresenceContract } from '../helpers/presence-contract.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { VALKEY_BIN } from '../helpers/server-tools.js';
import { needs } from '../helpers/tools.js';

const VALKEY = VALKEY_BIN;

let shared: RedisServer | undefined;
beforeAll(async () => {
  if (VALKEY) shared = await startRedis({ binary: VALKEY });
});
afterAll(async () => {
  await shared?.stop();
});

function server(): RedisServer {
  if (!shared) throw new Error('valkey-server did not start');
  return shared;
}

function url(): string {
  return server().url;
}

describe('RedisBroker against Valkey', needs('valkey-server'), () => {
  it('runs on a real valkey-server 8', async () => {
    if (!shared) throw new Error('valkey-server did not start');
    const info = (await shared.cli('INFO', 'server')).join('\n');
    expect(info).toMatch(/^valkey_version:8\./m);
  });

  runBrokerContract({
    name: 'redis (valkey-server)',
    newBroker: () => createRedisBroker({ url: url(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog() }),
    sharedBackend: true,
    newHistoryBroker: (history) => createRedisBroker({ url: url(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), history }),
  });

  runPresenceContract({
    name: 'redis (valkey-server)',
    newBroker: (keysTtlMs) => createRedisBroker({ url: url(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), presence: { keysTtlMs } }),
    sharedBackend: true,
    redis: {
      cli: (_key, ...args) => server().cli(...args),
      flushAll: async () => void (await server().cli('FLUSHALL')),
    },
  });

  it('goes down on kill -9 and comes back with its subscriptions when Valkey restarts', async () => {
    const srv = await startRedis({ binary: VALKEY });
    const a = createRedisBroker({ url: srv.url, nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog() });
    const b = createRedisBroker({ url: srv.url, nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog() });
    try {
      const ra = new Recorder();
      const rb = new Recorder();
      await a.start(ra);
      await b.start(rb);
      await ra.untilStatus('ready');
      await rb.untilStatus('ready');
      await b.subscribe('news');
      await srv.kill9();
      await ra.untilStatus('down');
      await rb.untilStatus('down');
      await expectUnavailable(a.publish('news', 'during'));
      await srv.start();
      await ra.untilStatus('ready');
      await rb.untilStatus('ready');
      expect(await srv.cli('PUBSUB', 'CHANNELS', 'pubgate:ch:*')).toEqual(['pubgate:ch:news']);
      await a.publish('news', 'after');
      await rb.untilReceived('news', 'after');
      expect(rb.got('news')).toEqual(['after']);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await srv.stop();
    }
  });
});
