/**
 * Two gateway nodes on one Redis, one history channel published to from both
 * nodes at once (several publishes in flight per node): a subscriber on node A
 * drops its connection mid-stream and recovers on node B with `since`. What it
 * received before and after equals the published sequence, which is the offset
 * order 1..N: no gap, no duplicate, each offset carrying the data its publish
 * was answered with. Then the same move to a third node whose Redis subscriber
 * connection lags behind its publishing connection (through a delaying proxy),
 * which makes the duplicate bug below certain instead of occasional.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayProcess } from '../helpers/gateway.js';
import { startDelayProxy, type DelayProxy } from '../helpers/delay-proxy.js';
import { HistoryClient, closeClients, range } from '../helpers/history.js';
import { expectMoveInOrder, firstArrivals, mismatches, moveMidStream, repeats, type StreamOptions } from '../helpers/history-stream.js';
import { NodeGroup, startNodes, untilReadyz } from '../helpers/multinode.js';

const TOTAL = 2000;
const IN_FLIGHT = 8; // concurrent publishes per node
const DISCONNECT_AT = 600; // messages received on the first node before it drops the connection
/** How late node C's subscriber connection gets what Redis sends (under the 1 s probe interval). */
const LAG_MS = 300;
const NODE_ENV = { PUBGATE_HISTORY_CHANNELS: 'h:*', PUBGATE_HISTORY_SIZE: '20000', PUBGATE_LOG_LEVEL: 'info' };

const group = new NodeGroup();
const clients: HistoryClient[] = [];

beforeAll(() => group.startOnRedis(['hist-a', 'hist-b'], NODE_ENV), 60_000);

afterAll(async () => {
  await closeClients(clients);
  await group.stop();
});

function stream(): StreamOptions {
  return { total: TOTAL, inFlight: IN_FLIGHT, disconnectAt: DISCONNECT_AT, publishers: [group.node(0), group.node(1)], clients };
}

describe('history on two nodes sharing one Redis', () => {
  it(`a subscriber that moves from node A to node B with since mid-stream receives offsets 1..${TOTAL} in order, no gap`, async () => {
    await expectMoveInOrder(`h:mn:${randomUUID().slice(0, 8)}`, group.node(0), group.node(1), stream());
  });

  describe('recovery on a node whose Redis subscriber connection lags behind its publisher connection', () => {
    let proxy: DelayProxy | undefined;
    let lagging: GatewayProcess | undefined;
    let repeated: number[] | undefined;
    beforeAll(async () => {
      const r = group.redis();
      // Node C reaches Redis through a proxy that delays what Redis sends on C's subscriber connection.
      proxy = await startDelayProxy({ target: { host: '127.0.0.1', port: r.port }, marker: 'pubgate-hist-c-sub', delayMs: LAG_MS });
      [lagging] = await startNodes(['hist-c'], { ...NODE_ENV, PUBGATE_REDIS_URL: `redis://127.0.0.1:${proxy.port}` }, group.nodes);
      await untilReadyz(lagging!, 200);
      expect(proxy.matched).toBeGreaterThan(0);
    }, 60_000);
    afterAll(async () => {
      await proxy?.close();
    });

    it('no gap, in order, data as published', async () => {
      if (!lagging) throw new Error('node C did not start');
      const mv = await moveMidStream(`h:lag:${randomUUID().slice(0, 8)}`, group.node(0), lagging, stream());
      expect(firstArrivals(mv.received)).toEqual(range(1, TOTAL));
      expect(mismatches(mv)).toEqual([]);
      repeated = repeats(mv.received);
    });

    // The replay is read on the publishing connection, which can be ahead of
    // the subscriber connection: the socket joins the fan-out only once live
    // delivery has passed its replay.
    it('and no duplicate, even while live delivery lags behind the replay', () => {
      expect(repeated).toEqual([]);
    });
  });
});
