/**
 * The Redis broker through Redis Sentinel, against real processes: a master,
 * a replica and three redis-sentinel (quorum 2), with passwords on the data
 * nodes and on the Sentinels. The broker contract runs against the group's
 * master; then failovers, each on a group of its own: the master killed
 * (kill -9), frozen (SIGSTOP: its sockets stay open, only the Sentinels'
 * +switch-master tells the node to leave it), and handed over on purpose
 * (SENTINEL FAILOVER: the old master turns replica). Every wait is for an
 * event: a status transition, a delivery, or what the Sentinels report.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { createRedisBroker, type RedisBrokerEvents, type RedisBrokerOptions } from '../../src/broker/redis-broker.js';
import { expectUnavailable, memoryLog, Recorder, runBrokerContract, type MemoryLog } from '../helpers/broker-contract.js';
import { startSentinelGroup, type SentinelGroup } from '../helpers/sentinel.js';
import { SENTINEL_BIN } from '../helpers/server-tools.js';
import { needs } from '../helpers/tools.js';

const SENTINEL = SENTINEL_BIN;

const DATA_PASSWORD = `data-${randomUUID()}`;
const SENTINEL_PASSWORD = `sentinel-${randomUUID()}`;
const AUTH = { password: DATA_PASSWORD, sentinelPassword: SENTINEL_PASSWORD };

let shared: SentinelGroup | undefined;
beforeAll(async () => {
  if (SENTINEL) shared = await startSentinelGroup(AUTH);
}, 60_000);
afterAll(async () => {
  await shared?.stop();
});

function liveShared(): SentinelGroup {
  if (!shared) throw new Error('the Sentinel group did not start');
  return shared;
}

function sentinelBroker(g: SentinelGroup, extra: Partial<RedisBrokerOptions> = {}): Broker {
  return createRedisBroker({
    sentinel: { sentinels: g.addrs, name: g.name, sentinelPassword: SENTINEL_PASSWORD },
    password: DATA_PASSWORD,
    nodeId: `n-${randomUUID().slice(0, 8)}`,
    log: memoryLog(),
    ...extra,
  });
}

describe('RedisBroker through Redis Sentinel', needs('redis-sentinel'), () => {
  runBrokerContract({
    name: 'redis-sentinel',
    newBroker: () => sentinelBroker(liveShared()),
    sharedBackend: true,
    newHistoryBroker: (history) => sentinelBroker(liveShared(), { history }),
  });

  describe('failover', () => {
    const open: Broker[] = [];
    const groups: SentinelGroup[] = [];
    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()));
      await Promise.all(groups.splice(0).map((g) => g.stop()));
    });

    type Node = { b: Broker; r: Recorder; log: MemoryLog; reconnects: string[]; resubscribed: number[]; publishErrors: string[] };

    async function readyNode(g: SentinelGroup, extra: Partial<RedisBrokerOptions> = {}): Promise<Node> {
      const log = memoryLog();
      const r = new Recorder();
      const reconnects: string[] = [];
      const resubscribed: number[] = [];
      const publishErrors: string[] = [];
      const events: RedisBrokerEvents = {
        onReconnect: (c) => void reconnects.push(c),
        onResubscribed: (n) => void resubscribed.push(n),
        onPublishError: (reason) => void publishErrors.push(reason),
      };
      const b = sentinelBroker(g, { log, events, ...extra });
      open.push(b);
      await b.start(r);
      await r.untilStatus('ready');
      return { b, r, log, reconnects, resubscribed, publishErrors };
    }

    async function ownGroup(): Promise<SentinelGroup> {
      const g = await startSentinelGroup(AUTH);
      groups.push(g);
      return g;
    }

    /** After a failover: both nodes ready on the new master, b's channels held there, deliveries flow. */
    async function expectServedBy(g: SentinelGroup, promoted: number, a: Node, b: Node, channels: readonly string[]): Promise<void> {
      await a.r.untilStatus('ready');
      await b.r.untilStatus('ready');
      const m = await g.master();
      expect(m.port).toBe(promoted);
      expect((await m.cli('PUBSUB', 'CHANNELS', 'pubgate:ch:*')).sort()).toEqual(channels.map((c) => `pubgate:ch:${c}`).sort());
      for (const c of channels) {
        await a.b.publish(c, `after:${c}`);
        await b.r.untilReceived(c, `after:${c}`);
      }
      expect(b.b.subscribedCount()).toBe(channels.length);
      expect(b.reconnects).toContain('subscriber');
      expect(b.resubscribed).toEqual([channels.length]);
    }

    it('reports kind redis-sentinel and refuses a target without Sentinels or name, or with a cluster', () => {
      const g = liveShared();
      expect(sentinelBroker(g).kind).toBe('redis-sentinel');
      const log = memoryLog();
      expect(() => createRedisBroker({ sentinel: { sentinels: [], name: 'm' }, nodeId: 'x', log })).toThrow(TypeError);
      expect(() => createRedisBroker({ sentinel: { sentinels: g.addrs, name: '' }, nodeId: 'x', log })).toThrow(TypeError);
      expect(() => createRedisBroker({ sentinel: { sentinels: g.addrs, name: g.name }, url: 'redis://127.0.0.1:1', nodeId: 'x', log })).toThrow(TypeError);
      expect(() => createRedisBroker({ sentinel: { sentinels: g.addrs, name: g.name }, cluster: ['127.0.0.1:1'], nodeId: 'x', log })).toThrow(TypeError);
    });

    it('master killed (kill -9): down, publishes refused, then ready on the promoted replica with every subscription', async () => {
      const g = await ownGroup();
      const a = await readyNode(g);
      const b = await readyNode(g);
      await b.b.subscribe('news');
      await b.b.subscribe('sports');
      await a.b.publish('news', 'before');
      await b.r.untilReceived('news', 'before');

      const old = await g.master();
      const aDown = a.r.nextStatus('down');
      const bDown = b.r.nextStatus('down');
      await old.kill9();
      await aDown;
      await bDown;
      await expectUnavailable(a.b.publish('news', 'during'));
      await expectUnavailable(b.b.subscribe('weather'));
      expect(a.publishErrors).toContain('not_ready');

      const promoted = await g.untilNewMaster(old.port);
      await expectServedBy(g, promoted, a, b, ['news', 'sports']);
      // Nothing refused while the master was gone was queued and sent later.
      expect(b.r.got('news')).toEqual(['before', 'after:news']);
      expect(b.r.got('weather')).toEqual([]);
    });

    it('master frozen (SIGSTOP, sockets stay open): the self-probe marks it down, +switch-master moves both connections to the new master', async () => {
      const g = await ownGroup();
      const a = await readyNode(g, { probeIntervalMs: 200 });
      const b = await readyNode(g, { probeIntervalMs: 200 });
      await b.b.subscribe('frozen');
      await a.b.publish('frozen', 'before');
      await b.r.untilReceived('frozen', 'before');

      const old = await g.master();
      const aDown = a.r.nextStatus('down');
      const bDown = b.r.nextStatus('down');
      old.pause();
      try {
        // No connection drops: only the missing probes tell the nodes.
        await aDown;
        await bDown;
        expect(a.log.lines.some((l) => l.level === 'warn' && /self-probe is not coming back/.test(l.msg))).toBe(true);
        await expectUnavailable(a.b.publish('frozen', 'during'));
        // The frozen master never closes its sockets: the nodes leave it on the Sentinels' word alone.
        const promoted = await g.untilNewMaster(old.port);
        await expectServedBy(g, promoted, a, b, ['frozen']);
        expect(b.r.got('frozen')).toEqual(['before', 'after:frozen']);
      } finally {
        old.resume();
      }
    });

    it('SENTINEL FAILOVER (the old master turns replica): both nodes follow to the new master', async () => {
      const g = await ownGroup();
      const a = await readyNode(g);
      const b = await readyNode(g);
      await b.b.subscribe('planned');
      const old = await g.master();
      const sentinel = g.sentinels[0];
      if (!sentinel) throw new Error('no Sentinel');
      const bBack = b.r.nextStatus('ready');
      expect(await sentinel.cli('SENTINEL', 'FAILOVER', g.name)).toEqual(['OK']);
      const promoted = await g.untilNewMaster(old.port);
      await bBack;
      await expectServedBy(g, promoted, a, b, ['planned']);
      // The old master is a replica now: the node holds nothing there.
      expect(await old.cli('PUBSUB', 'CHANNELS', 'pubgate:ch:*')).toEqual([]);
    });

    it('wrong passwords: stays down and says why, without the password in any log line', async () => {
      const g = liveShared();
      for (const [what, extra] of [
        ['data', { password: 'not-the-data-password-xyz' }],
        ['sentinel', { sentinel: { sentinels: g.addrs, name: g.name, sentinelPassword: 'not-the-sentinel-password-xyz' } }],
      ] as const) {
        const log = memoryLog();
        const b = sentinelBroker(g, { log, ...extra });
        open.push(b);
        const r = new Recorder();
        await b.start(r);
        expect(b.status, what).toBe('down');
        await expectUnavailable(b.publish('x', 'y'));
        await b.close();
        const text = JSON.stringify(log.lines);
        expect(log.lines.some((l) => l.level === 'warn'), what).toBe(true);
        for (const secret of ['not-the-data-password-xyz', 'not-the-sentinel-password-xyz', DATA_PASSWORD, SENTINEL_PASSWORD]) {
          expect(text.includes(secret), `${what}: ${secret} in the log`).toBe(false);
        }
      }
    });
  });
});
