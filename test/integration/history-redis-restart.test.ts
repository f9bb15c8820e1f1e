/**
 * History across Redis restarts (redis-server SIGKILLed and started again on
 * the same port). Without persistence the history is lost: the epoch changes,
 * offsets restart at 1 and a client recovering with the old epoch gets
 * `recovered:false`. With persistence (AOF, fsync always) the epoch and the
 * offsets carry on. Either way, subscribers of history channels that were
 * connected during the outage are closed with 1011 when the broker comes back
 * (the gap rule), so they reconnect and recover with `since`.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { HistoryClient, closeClients, publishBatchOffsets, publishH, publishOffset, range } from '../helpers/history.js';
import { readyz, untilReadyz } from '../helpers/multinode.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const servers: RedisServer[] = [];
const gateways: GatewayProcess[] = [];
const clients: HistoryClient[] = [];
const uid = (): string => randomUUID().slice(0, 8);

afterEach(async () => {
  await closeClients(clients);
});
afterAll(async () => {
  await Promise.allSettled(gateways.map((g) => g.stop()));
  await Promise.allSettled(servers.map((s) => s.stop()));
});

async function setup(persistent: boolean): Promise<{ redis: RedisServer; gw: GatewayProcess }> {
  const redis = await startRedis(persistent ? { args: ['--appendonly', 'yes', '--appendfsync', 'always'] } : {});
  servers.push(redis);
  const gw = await startGateway({ PUBGATE_REDIS_URL: redis.url, PUBGATE_HISTORY_CHANNELS: 'h:*', PUBGATE_LOG_LEVEL: 'info' });
  gateways.push(gw);
  await untilReadyz(gw, 200);
  return { redis, gw };
}

async function open(gw: GatewayProcess): Promise<HistoryClient> {
  const c = await HistoryClient.open(gw.url);
  clients.push(c);
  return c;
}

/** Kills Redis, checks that history subscribers stay connected while it is down, starts it again, and returns their close. */
async function outage(redis: RedisServer, gw: GatewayProcess, hsub: HistoryClient): Promise<{ code: number }> {
  await redis.kill9();
  await untilReadyz(gw, 503, 30_000, 'Redis killed');
  expect((await publishH(gw, 'h:during-outage', { lost: true })).status).toBe(503);
  // Down, not back yet: nothing was closed.
  expect(hsub.closeInfo).toBeUndefined();
  await redis.start();
  const closed = await hsub.until(() => hsub.closeInfo !== undefined, '1011 close after the broker came back', 30_000).then(() => hsub.closed);
  await untilReadyz(gw, 200, 30_000, 'Redis back');
  return closed;
}

describe('history across Redis restarts', () => {
  it('Redis restarted empty: history subscribers closed with 1011, new epoch, offsets from 1, old epoch not recovered', async () => {
    const { redis, gw } = await setup(false);
    const ch = `h:restart:${uid()}`;
    const plainCh = `p:restart:${uid()}`;
    const hsub = await open(gw);
    const r0 = await hsub.subscribe(ch);
    const oldEpoch = r0.epoch as string;
    const psub = await open(gw);
    await psub.subscribe(plainCh);
    expect(await publishBatchOffsets(gw, ch, [1, 2, 3].map((n) => ({ n })))).toEqual([1, 2, 3]);
    await hsub.untilOffset(ch, 3);
    const last = hsub.last(ch);
    expect(last).toEqual({ offset: 3, epoch: oldEpoch });
    const gaps0 = await metric(gw.admin, 'pubgate_broker_gaps_total');

    const closed = await outage(redis, gw, hsub);
    expect(closed.code).toBe(1011);
    // Plain-channel subscribers are not closed by the gap rule.
    expect(await psub.alive()).toBe('open');
    expect(await readyz(gw)).toBe(200);
    expect(await metric(gw.admin, 'pubgate_broker_gaps_total')).toBe(gaps0 + 1);

    // A fresh subscriber sees the new history: position 0, another epoch.
    const fresh = await open(gw);
    const r1 = await fresh.subscribe(ch);
    expect(r1).toEqual({ type: 'reply', id: 1, offset: 0, epoch: expect.any(String) });
    const newEpoch = r1.epoch as string;
    expect(newEpoch).not.toBe(oldEpoch);

    // The closed subscriber reconnects with its old position: not recovered, told the new one, live.
    const back = await open(gw);
    expect(await back.subscribe(ch, last)).toEqual({ type: 'reply', id: 1, recovered: false, offset: 0, epoch: newEpoch });

    expect(await publishOffset(gw, ch, { n: 'new-1' })).toBe(1);
    expect(await publishOffset(gw, ch, { n: 'new-2' })).toBe(2);
    for (const c of [fresh, back]) {
      await c.untilOffset(ch, 2);
      expect(c.messages(ch)).toEqual([
        { type: 'message', channel: ch, offset: 1, epoch: newEpoch, data: { n: 'new-1' } },
        { type: 'message', channel: ch, offset: 2, epoch: newEpoch, data: { n: 'new-2' } },
      ]);
    }
  });

  it('history flushed (FLUSHALL) while subscribers stay connected: the next message starts a new epoch at offset 1', async () => {
    const { redis, gw } = await setup(false);
    const ch = `h:flush:${uid()}`;
    const sub = await open(gw);
    const epoch = (await sub.subscribe(ch)).epoch as string;
    expect(await publishBatchOffsets(gw, ch, [1, 2].map((n) => ({ n })))).toEqual([1, 2]);
    await sub.untilOffset(ch, 2);
    expect(await redis.cli('FLUSHALL')).toEqual(['OK']);

    expect(await publishOffset(gw, ch, { n: 'after' })).toBe(1);
    const m = await sub.untilData(ch, (d) => (d as { n?: unknown }).n === 'after');
    expect(m.offset).toBe(1);
    expect(typeof m.epoch).toBe('string');
    expect(m.epoch).not.toBe(epoch);
    expect(sub.offsets(ch)).toEqual([1, 2, 1]);
    const back = await open(gw);
    expect(await back.subscribe(ch, { offset: 2, epoch })).toEqual({ type: 'reply', id: 1, recovered: false, offset: 1, epoch: m.epoch });
    expect(await back.subscribe(`h:flush-other:${uid()}`)).toMatchObject({ offset: 0 });
  });

  it('Redis restarted with its data (AOF): subscribers closed with 1011 recover with since; epoch and offsets carry on', async () => {
    const { redis, gw } = await setup(true);
    const ch = `h:persist:${uid()}`;
    const hsub = await open(gw);
    const epoch = (await hsub.subscribe(ch)).epoch as string;
    expect(await publishBatchOffsets(gw, ch, [1, 2, 3].map((n) => ({ n })))).toEqual([1, 2, 3]);
    await hsub.untilOffset(ch, 3);

    const closed = await outage(redis, gw, hsub);
    expect(closed.code).toBe(1011);

    const fresh = await open(gw);
    expect(await fresh.subscribe(ch)).toEqual({ type: 'reply', id: 1, offset: 3, epoch });
    // Published after the restart, before the closed subscriber is back: it must get it through recovery.
    expect(await publishOffset(gw, ch, { n: 4 })).toBe(4);
    const back = await open(gw);
    expect(await back.subscribe(ch, hsub.last(ch))).toEqual({ type: 'reply', id: 1, recovered: true, offset: 4, epoch });
    expect(await publishOffset(gw, ch, { n: 5 })).toBe(5);
    await back.untilOffset(ch, 5);
    const all = [...hsub.messages(ch), ...back.messages(ch)];
    expect(all.map((m) => m.offset)).toEqual(range(1, 5));
    expect(all.every((m) => m.epoch === epoch && (m.data as { n: number }).n === m.offset)).toBe(true);
  });
});
