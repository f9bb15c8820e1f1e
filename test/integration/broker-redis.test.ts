import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { createRedisBroker, parseControl, type RedisBrokerEvents, type RedisBrokerOptions } from '../../src/broker/redis-broker.js';
import { GatewayError } from '../../src/errors.js';
import { expectUnavailable, memoryLog, Recorder, runBrokerContract, type MemoryLog } from '../helpers/broker-contract.js';
import { runPresenceContract } from '../helpers/presence-contract.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';

let shared: RedisServer | undefined;

beforeAll(async () => {
  shared = await startRedis();
});
afterAll(async () => {
  await shared?.stop();
});

function sharedServer(): RedisServer {
  if (!shared) throw new Error('redis-server did not start');
  return shared;
}

function sharedUrl(): string {
  return sharedServer().url;
}

runBrokerContract({
  name: 'redis',
  newBroker: () => createRedisBroker({ url: sharedUrl(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog() }),
  sharedBackend: true,
  newHistoryBroker: (history) => createRedisBroker({ url: sharedUrl(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), history }),
});

runPresenceContract({
  name: 'redis',
  newBroker: (keysTtlMs) => createRedisBroker({ url: sharedUrl(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), presence: { keysTtlMs } }),
  newWebhookBroker: (keysTtlMs) =>
    createRedisBroker({ url: sharedUrl(), nodeId: `n-${randomUUID().slice(0, 8)}`, log: memoryLog(), presence: { keysTtlMs }, webhooks: { maxEvents: 1_000_000, keysTtlMs: 600_000 } }),
  sharedBackend: true,
  redis: {
    cli: (_key, ...args) => sharedServer().cli(...args),
    flushAll: async () => void (await sharedServer().cli('FLUSHALL')),
  },
});

/** Counts what a broker reports through RedisBrokerEvents. */
function eventLog(r: Recorder) {
  const seen = {
    reconnect: [] as string[],
    publishError: [] as string[],
    probes: [] as Array<number | undefined>,
    resubscribed: [] as number[],
    invalidControl: 0,
  };
  const events: RedisBrokerEvents = {
    onReconnect: (c) => void seen.reconnect.push(c),
    onPublishError: (reason) => void seen.publishError.push(reason),
    onProbe: (s) => {
      seen.probes.push(s);
      r.notify();
    },
    onResubscribed: (n) => void seen.resubscribed.push(n),
    onInvalidControl: () => {
      seen.invalidControl += 1;
    },
  };
  return { seen, events };
}

describe('RedisBroker (standalone) against a real redis-server', () => {
  const open: Broker[] = [];
  const servers: RedisServer[] = [];

  afterEach(async () => {
    await Promise.all(open.splice(0).map((b) => b.close()));
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  });

  type Node = { b: Broker; r: Recorder; log: MemoryLog; seen: ReturnType<typeof eventLog>['seen'] };


  function node(url: string, extra: Partial<RedisBrokerOptions> = {}): Node {
    const log = memoryLog();
    const r = new Recorder();
    const { seen, events } = eventLog(r);
    const b = createRedisBroker({ url, nodeId: `n-${randomUUID().slice(0, 8)}`, log, events, ...extra });
    open.push(b);
    return { b, r, log, seen };
  }

  async function readyNode(url: string, extra: Partial<RedisBrokerOptions> = {}): Promise<Node> {
    const n = node(url, extra);
    await n.b.start(n.r);
    await n.r.untilStatus('ready');
    return n;
  }

  async function ownServer(start = true): Promise<RedisServer> {
    const s = await startRedis({ start });
    servers.push(s);
    return s;
  }

  it('reports kind redis and validates its options', () => {
    const b = createRedisBroker({ url: sharedUrl(), nodeId: 'x', log: memoryLog() });
    expect(b.kind).toBe('redis');
    expect(b.status).toBe('connecting');
    expect(() => createRedisBroker({ nodeId: 'x', log: memoryLog() })).toThrow(TypeError);
    expect(() => createRedisBroker({ url: sharedUrl(), cluster: ['127.0.0.1:1'], nodeId: 'x', log: memoryLog() })).toThrow(TypeError);
  });

  it('holds in Redis exactly the channels with local listeners (PUBSUB CHANNELS / NUMSUB)', async () => {
    const srv = await ownServer();
    const prefix = 'pg:';
    const a = await readyNode(srv.url, { keyPrefix: prefix });
    const b = await readyNode(srv.url, { keyPrefix: prefix });
    const channels = async (): Promise<string[]> => (await srv.cli('PUBSUB', 'CHANNELS', `${prefix}ch:*`)).sort();
    const numsub = async (ch: string): Promise<number> => Number((await srv.cli('PUBSUB', 'NUMSUB', `${prefix}ch:${ch}`))[1]);

    expect(await channels()).toEqual([]);
    await a.b.subscribe('c1');
    await a.b.subscribe('c2');
    await b.b.subscribe('c1');
    expect(await channels()).toEqual(['pg:ch:c1', 'pg:ch:c2']);
    expect(await numsub('c1')).toBe(2);
    expect(await numsub('c2')).toBe(1);
    expect(Number((await srv.cli('PUBSUB', 'NUMSUB', `${prefix}control`))[1])).toBe(2);

    await a.b.unsubscribe('c1');
    expect(await numsub('c1')).toBe(1);
    await a.b.unsubscribe('c2');
    expect(await channels()).toEqual(['pg:ch:c1']);
    await b.b.unsubscribe('c1');
    expect(await channels()).toEqual([]);

    // Interleaved subscribes and unsubscribes, not awaited one by one: Redis ends in the state of the last call.
    const model = new Set<string>();
    const ops: Array<Promise<void>> = [];
    for (let i = 0; i < 400; i++) {
      const ch = `r${(i * 7) % 23}`;
      if ((i * 13) % 5 < 3) {
        model.add(ch);
        ops.push(a.b.subscribe(ch));
      } else {
        model.delete(ch);
        ops.push(a.b.unsubscribe(ch));
      }
    }
    await Promise.all(ops);
    expect(a.b.subscribedCount()).toBe(model.size);
    expect(await channels()).toEqual([...model].map((c) => `pg:ch:${c}`).sort());

    await a.b.close();
    await b.b.close();
    await pollUntil(async () => (await srv.cli('PUBSUB', 'NUMSUB', `${prefix}control`))[1] === '0', 'the closed brokers to leave Redis');
    expect(await channels()).toEqual([]);
  });

  it('keeps brokers with different key prefixes apart', async () => {
    const p1 = await readyNode(sharedUrl(), { keyPrefix: 'one:' });
    const p2 = await readyNode(sharedUrl(), { keyPrefix: 'two:' });
    await p2.b.subscribe('news');
    await p2.b.subscribe('sentinel');
    await p1.b.publish('news', 'from prefix one');
    await p2.b.publish('sentinel', 'done');
    await p2.r.untilReceived('sentinel', 'done');
    expect(p2.r.got('news')).toEqual([]);
  });

  it('goes down on kill -9, rejects publishes during the outage, and comes back with its subscriptions', async () => {
    const srv = await ownServer();
    const a = await readyNode(srv.url);
    const b = await readyNode(srv.url);
    await b.b.subscribe('news');
    await b.b.subscribe('sports');
    await a.b.publish('news', 'before');
    await b.r.untilReceived('news', 'before');

    await srv.kill9();
    await a.r.untilStatus('down');
    await b.r.untilStatus('down');
    expect(a.b.status).toBe('down');

    for (let i = 0; i < 20; i++) {
      const err = await expectUnavailable(a.b.publish('news', `during-${i}`));
      expect(err.retryAfterSec).toBeGreaterThanOrEqual(1);
    }
    await expectUnavailable(a.b.publishControl({ kind: 'disconnect', user: 'u1' }));
    await expectUnavailable(b.b.subscribe('weather'));
    expect(a.seen.publishError.length).toBeGreaterThanOrEqual(21);
    expect(a.seen.publishError.every((r) => r === 'not_ready')).toBe(true);

    await srv.start(); // same port, empty server
    await a.r.untilStatus('ready');
    await b.r.untilStatus('ready');
    expect(b.b.subscribedCount()).toBe(2);
    expect((await srv.cli('PUBSUB', 'CHANNELS', 'pubgate:ch:*')).sort()).toEqual(['pubgate:ch:news', 'pubgate:ch:sports']);

    await a.b.publish('news', 'after');
    await a.b.publish('sports', 'after');
    await b.r.untilReceived('news', 'after');
    await b.r.untilReceived('sports', 'after');
    // Nothing attempted during the outage was queued and sent later.
    expect(b.r.got('news')).toEqual(['before', 'after']);
    expect(b.r.got('sports')).toEqual(['after']);
    expect(b.r.got('weather')).toEqual([]);

    expect(a.seen.reconnect).toEqual(expect.arrayContaining(['publisher', 'subscriber']));
    expect(b.seen.resubscribed).toEqual([2]);
  });

  it('resubscribes thousands of channels after a restart before it reports ready', async () => {
    const srv = await ownServer();
    const a = await readyNode(srv.url);
    const b = await readyNode(srv.url);
    const channels = Array.from({ length: 3000 }, (_, i) => `many.${i}`);
    await Promise.all(channels.map((c) => b.b.subscribe(c)));
    // The next transitions to ready, after the outage.
    const back = b.r.nextStatus('ready');
    const aBack = a.r.nextStatus('ready');
    await srv.restart();
    await back;
    // 'ready' came only after every subscription was confirmed again.
    expect(b.b.subscribedCount()).toBe(channels.length);
    expect(await srv.cli('PUBSUB', 'CHANNELS', 'pubgate:ch:many.*')).toHaveLength(channels.length);
    expect(b.seen.resubscribed).toEqual([channels.length]);
    await aBack;
    await a.b.publish('many.2999', 'last');
    await a.b.publish('many.0', 'first');
    await b.r.untilReceived('many.0', 'first');
    await b.r.untilReceived('many.2999', 'last');
  });

  it('settles every in-flight publish when Redis dies: accepted, or rejected as unavailable', async () => {
    const srv = await ownServer();
    const a = await readyNode(srv.url);
    const b = await readyNode(srv.url);
    await b.b.subscribe('flow');
    const outcomes: Array<'ok' | 'unavailable'> = [];
    let sawUnavailable = false;
    const pump = async (): Promise<void> => {
      // Batches of 50 pipelined publishes until one of them is refused.
      while (!sawUnavailable) {
        const batch: Array<Promise<'ok' | 'unavailable'>> = [];
        for (let k = 0; k < 50; k++) {
          const id = outcomes.length + batch.length;
          batch.push(
            a.b.publish('flow', `m${id}`).then(
              () => 'ok' as const,
              (e: unknown) => {
                if (e instanceof GatewayError && e.code === 'unavailable') return 'unavailable' as const;
                throw e;
              },
            ),
          );
        }
        const settled = await Promise.all(batch);
        outcomes.push(...settled);
        sawUnavailable = settled.includes('unavailable');
      }
    };
    const pumping = pump();
    await b.r.until(() => b.r.got('flow').length > 0, 'a first delivery');
    await srv.kill9();
    await pumping; // every publish settled: none hangs
    await b.r.untilStatus('down');
    const seenBeforeOutage = b.r.got('flow').length;
    expect(outcomes).toContain('unavailable');
    // What b received was published, in order, with no duplicates.
    const got = b.r.got('flow');
    expect(new Set(got).size).toBe(got.length);
    expect(got.map((m) => Number(m.slice(1)))).toEqual([...got.map((m) => Number(m.slice(1)))].sort((x, y) => x - y));

    await srv.start();
    await b.r.untilStatus('ready');
    await a.r.untilStatus('ready');
    await a.b.publish('flow', 'after');
    await b.r.untilReceived('flow', 'after');
    // Nothing refused during the outage was queued and sent once Redis came back.
    expect(b.r.got('flow').slice(seenBeforeOutage)).toEqual(['after']);
  });

  it('starts while Redis is down, stays down, and becomes ready when Redis appears', async () => {
    const srv = await ownServer(false);
    const a = node(srv.url);
    await a.b.start(a.r); // resolves although nothing listens on the port
    expect(a.b.status).toBe('down');
    expect(a.r.statuses).toEqual(['down']);
    await expectUnavailable(a.b.publish('x', 'nope'));
    await expectUnavailable(a.b.subscribe('failed'));
    expect(a.b.subscribedCount()).toBe(0);
    expect(a.log.lines.some((l) => l.level === 'warn')).toBe(true);

    await srv.start();
    await a.r.untilStatus('ready');
    await a.b.subscribe('x');
    await a.b.publish('x', 'hello');
    await a.r.untilReceived('x', 'hello');
    // The subscribe that failed while Redis was down left nothing behind.
    expect(await srv.cli('PUBSUB', 'CHANNELS', 'pubgate:ch:*')).toEqual(['pubgate:ch:x']);
  });

  it('closes promptly while Redis is unreachable', async () => {
    const srv = await ownServer(false);
    const a = node(srv.url);
    await a.b.start(a.r);
    expect(a.b.status).toBe('down');
    await a.b.close();
    expect(a.b.status).toBe('down');
    const seen = a.r.statuses.length;
    await expectUnavailable(a.b.publish('x', 'y'));
    // Nothing is reported after close, even when Redis appears.
    await srv.start();
    expect(a.r.statuses.length).toBe(seen);
  });

  it('resubscribes when Redis drops its subscriber connection (CLIENT KILL TYPE pubsub)', async () => {
    const srv = await ownServer();
    const a = await readyNode(srv.url);
    const b = await readyNode(srv.url);
    await b.b.subscribe('c');
    // Both subscriber connections are killed: both brokers go down and come back.
    const bBack = b.r.nextStatus('ready');
    const aBack = a.r.nextStatus('ready');
    await srv.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await bBack;
    await aBack;
    expect(b.r.statuses.slice(-2)).toEqual(['down', 'ready']);
    await a.b.publish('c', 'again');
    await b.r.untilReceived('c', 'again');
    expect(b.seen.reconnect).toContain('subscriber');
    expect(b.seen.resubscribed).toEqual([1]);
  });

  it('marks itself down when its self-probe stops coming back, and ready when it returns', async () => {
    const srv = await ownServer();
    const a = await readyNode(srv.url, { probeIntervalMs: 100 });
    await a.r.until(() => a.seen.probes.some((p) => p !== undefined), 'a probe round trip');
    const down = a.r.nextStatus('down');
    // Both connections stay up, but Redis answers nothing for 3 s.
    await srv.cli('CLIENT', 'PAUSE', '3000', 'ALL');
    // A publish Redis does not answer is refused within the command timeout, never left hanging.
    await expectUnavailable(a.b.publish('paused', 'x'));
    await down;
    await a.r.nextStatus('ready');
    const warns = a.log.lines.filter((l) => l.level === 'warn' && /probe/.test(l.msg));
    expect(warns).toHaveLength(1);
    expect(a.seen.probes).toContain(undefined);
  });

  it('authenticates with the password option when the URL carries none, and stays down with a wrong one', async () => {
    const secret = `pw-${randomUUID()}`;
    const srv = await startRedis({ password: secret });
    servers.push(srv);
    const ok = await readyNode(srv.url, { password: secret });
    await ok.b.subscribe('auth');
    await ok.b.publish('auth', 'hello');
    await ok.r.untilReceived('auth', 'hello');
    const bad = node(srv.url, { password: 'wrong-password-123' });
    await bad.b.start(bad.r);
    expect(bad.b.status).toBe('down');
    await expectUnavailable(bad.b.publish('auth', 'nope'));
    const text = JSON.stringify([...ok.log.lines, ...bad.log.lines]);
    expect(bad.log.lines.some((l) => l.level === 'warn')).toBe(true);
    expect(text.includes(secret) || text.includes('wrong-password-123')).toBe(false);
  });

  it('ignores control messages that are not valid JSON ControlMessages', async () => {
    const a = await readyNode(sharedUrl(), { keyPrefix: 'ctl:' });
    const bad = ['not json', '[1,2]', '{"kind":"disconnect"}', '{"kind":"other","user":"u"}', '{"kind":"disconnect","user":7}', 'null'];
    if (!shared) throw new Error('no server');
    for (const m of bad) await shared.cli('PUBLISH', 'ctl:control', m);
    await a.b.publishControl({ kind: 'disconnect', user: 'valid' });
    await a.r.until(() => a.r.controls.length > 0, 'the valid control message');
    expect(a.r.controls).toEqual([{ kind: 'disconnect', user: 'valid' }]);
    expect(a.seen.invalidControl).toBe(bad.length);
    expect(a.log.lines.filter((l) => l.level === 'warn' && /control/.test(l.msg))).toHaveLength(bad.length);
    expect(parseControl('{"kind":"disconnect","user":"42","extra":1}')).toEqual({ kind: 'disconnect', user: '42' });
  });

  describe('history keys', () => {
    async function historyNode(): Promise<Node & { h: NonNullable<Broker['history']> }> {
      const n = await readyNode(sharedUrl(), { history: { size: 10, ttlSec: 60 } });
      if (!n.b.history) throw new Error('no history');
      return { ...n, h: n.b.history };
    }

    it('keeps epoch and offset in one hash: losing it starts a new epoch from offset 1 and drops the old stream', async () => {
      const { h } = await historyNode();
      const srv = sharedServer();
      const ch = `hk${randomUUID().slice(0, 8)}`;
      const first = await h.publish(ch, '1');
      await h.publish(ch, '2');
      expect(await srv.cli('HGETALL', `pubgate:hp:${ch}`)).toEqual(['e', first.epoch, 'o', '2']);
      expect(Number((await srv.cli('TTL', `pubgate:hp:${ch}`))[0])).toBeGreaterThan(0);
      expect(await srv.cli('EXISTS', `pubgate:o:${ch}`, `pubgate:e:${ch}`)).toEqual(['0']);
      // What eviction of that one key does: epoch and offset go together.
      await srv.cli('DEL', `pubgate:hp:${ch}`);
      const next = await h.publish(ch, '3');
      expect(next.offset).toBe(1);
      expect(next.epoch).not.toBe(first.epoch);
      expect((await h.since(ch, 0, 10)).frames).toEqual([`{"type":"message","channel":"${ch}","offset":1,"epoch":"${next.epoch}","data":3}`]);
    });

    it("ignores a previous version's separate offset and epoch keys: the channel starts a new epoch", async () => {
      const { h } = await historyNode();
      const srv = sharedServer();
      const ch = `hk${randomUUID().slice(0, 8)}`;
      await srv.cli('SET', `pubgate:e:${ch}`, 'oldEpoch');
      await srv.cli('SET', `pubgate:o:${ch}`, '41');
      await srv.cli('XADD', `pubgate:h:${ch}`, '41-0', 'f', 'old frame');
      const p = await h.publish(ch, '"new"');
      expect(p.offset).toBe(1);
      expect(p.epoch).not.toBe('oldEpoch');
      expect((await h.since(ch, 0, 10)).frames?.map((f) => (JSON.parse(f) as { data: unknown }).data)).toEqual(['new']);
    });
  });
});
