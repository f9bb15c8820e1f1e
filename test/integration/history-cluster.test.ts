/**
 * History on a real 3-master / 3-replica Redis Cluster with two gateway nodes:
 * a subscriber that moves between nodes mid-stream while both publish gets
 * every offset once, in order; channels on every master keep their own
 * history; and a master failover: the promoted replica keeps the history it
 * had received (same epoch, offsets go on), and a connected history
 * subscriber of that shard is closed with 1011 and recovers with `since`.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { keySlot } from '../../src/broker/redis-cluster.js';
import type { GatewayProcess } from '../helpers/gateway.js';
import { HistoryClient, closeClients, publishBatchH, publishOffset, range } from '../helpers/history.js';
import { expectMoveInOrder } from '../helpers/history-stream.js';
import { NodeGroup, untilReadyz } from '../helpers/multinode.js';

const TOTAL = 2000;
const NODE_ENV = { PUBGATE_HISTORY_CHANNELS: 'h:*', PUBGATE_HISTORY_SIZE: '20000', PUBGATE_LOG_LEVEL: 'info' };

const group = new NodeGroup();
const { nodes } = group;
const clients: HistoryClient[] = [];

beforeAll(() => group.startOnCluster(['hc-a', 'hc-b'], NODE_ENV), 240_000);

afterAll(async () => {
  await closeClients(clients);
  await group.stop();
});

afterEach(async () => {
  await closeClients(clients);
});

async function open(gw: GatewayProcess): Promise<HistoryClient> {
  const c = await HistoryClient.open(gw.url);
  clients.push(c);
  return c;
}

describe('history on two gateway nodes sharing a Redis Cluster', () => {
  it(`a subscriber that moves from node A to node B with since while both publish receives offsets 1..${TOTAL} once each, in order`, async () => {
    const ch = `h:cmn:${randomUUID().slice(0, 8)}`;
    const [a, b] = [group.node(0), group.node(1)];
    await expectMoveInOrder(ch, a, b, { total: TOTAL, inFlight: 8, disconnectAt: 600, publishers: [a, b], clients });
  }, 180_000);

  it('channels on every master each keep their own offsets, epoch and history', async () => {
    const c = group.cluster();
    const tag = randomUUID().slice(0, 8);
    // Enough channels that every master owns at least two of them.
    const byOwner = new Map<number, string[]>();
    for (let i = 0; [...byOwner.values()].filter((l) => l.length >= 2).length < 3; i++) {
      const ch = `h:spread:${tag}:${i}`;
      const rc = `pubgate:ch:${ch}`;
      const slot = Number((await c.nodes.find((n) => n.running)?.cli('CLUSTER', 'KEYSLOT', rc))?.[0]);
      expect(keySlot(rc)).toBe(slot);
      const owner = await c.ownerOf(rc);
      byOwner.set(owner, [...(byOwner.get(owner) ?? []), ch]);
      if (i > 200) throw new Error('the channels did not spread over three masters');
    }
    expect(byOwner.size).toBe(3);
    const channels = [...byOwner.values()].flat();

    const sub = await open(group.node(1));
    const epochs = new Map<string, string>();
    for (const ch of channels) {
      const r = await sub.subscribe(ch);
      expect(r).toMatchObject({ offset: 0 });
      epochs.set(ch, r.epoch as string);
    }
    // Three rounds of one batch over every channel, from node A: offsets 1, 2, 3 per channel.
    for (const round of [1, 2, 3]) {
      const res = await publishBatchH(group.node(0), channels.map((channel) => ({ channel, data: { round } })));
      expect(res.status).toBe(200);
      expect(res.body.results).toEqual(channels.map((channel) => ({ channel, offset: round })));
    }
    for (const ch of channels) {
      await sub.untilOffset(ch, 3);
      expect(sub.messages(ch)).toEqual([1, 2, 3].map((round) => ({ type: 'message', channel: ch, offset: round, epoch: epochs.get(ch), data: { round } })));
    }

    // Each channel's history is on the master that owns its shard channel.
    for (const [owner, chs] of byOwner) {
      const srv = c.nodes.find((n) => n.port === owner);
      for (const ch of chs) expect(await srv?.cli('XLEN', `pubgate:h:{pubgate:ch:${ch}}`), ch).toEqual(['3']);
    }

    // A client recovers every channel from offset 1 on the other node.
    const rec = await open(group.node(0));
    for (const ch of channels) {
      expect(await rec.subscribe(ch, { offset: 1, epoch: epochs.get(ch) ?? '' })).toMatchObject({ recovered: true, offset: 3, epoch: epochs.get(ch) });
    }
    for (const ch of channels) {
      await rec.untilOffset(ch, 3);
      expect(rec.offsets(ch)).toEqual([2, 3]);
    }
  }, 120_000);

  // Kills a master: keep this last in this file.
  it('after a master failover the promoted replica keeps the history it had (same epoch), and its subscribers recover with since', async () => {
    const c = group.cluster();
    const tag = randomUUID().slice(0, 8);
    const victim = (await c.masters())[0]?.port ?? 0;
    let ch = '';
    for (let i = 0; ch === ''; i++) if ((await c.ownerOf(`pubgate:ch:h:fo:${tag}:${i}`)) === victim) ch = `h:fo:${tag}:${i}`;

    const sub = await open(group.node(1));
    const epoch = (await sub.subscribe(ch)).epoch as string;
    for (const n of range(1, 5)) expect(await publishOffset(group.node(0), ch, { n })).toBe(n);
    await sub.untilOffset(ch, 5);
    // Replication is asynchronous: what the replica has not received when its master dies is lost.
    await c.untilReplicated(victim);

    await c.killMaster(victim);
    // The node's subscription to that shard moved to the promoted replica: a gap, so its
    // history subscribers are closed with 1011 and reconnect with since.
    expect((await sub.closed).code).toBe(1011);
    await Promise.all(nodes.map((n) => untilReadyz(n, 200, 60_000, 'after the failover')));

    // Publishes go on from the replica's counter, in the same epoch.
    for (const n of range(6, 8)) expect(await publishOffset(group.node(0), ch, { n })).toBe(n);

    const back = await open(group.node(1));
    expect(await back.subscribe(ch, sub.last(ch))).toEqual({ type: 'reply', id: 1, recovered: true, offset: 8, epoch });
    await back.untilOffset(ch, 8);
    expect(back.messages(ch)).toEqual(range(6, 8).map((n) => ({ type: 'message', channel: ch, offset: n, epoch, data: { n } })));
    // Everything from offset 0 is still there too.
    const all = await open(group.node(0));
    expect(await all.subscribe(ch, { offset: 0, epoch })).toMatchObject({ recovered: true, offset: 8, epoch });
    await all.untilOffset(ch, 8);
    expect(all.offsets(ch)).toEqual(range(1, 8));
  }, 240_000);
});
