/**
 * The gap rule with a node that loses only its Redis subscriber connection
 * while another node keeps publishing: what was published meanwhile never
 * reaches that node, so its history subscribers must be closed with 1011
 * before any later message reaches them; they then recover with `since` from
 * the last message they got and miss nothing.
 *
 * Node D reaches Redis through a proxy that hands D's subscriber connection
 * what Redis sent in 50 ms batches (one read), so the subscription
 * confirmations after the reconnect and the first messages after them reach
 * the node together, as they can on any busy connection.
 */
import { randomUUID } from 'node:crypto';
import { waitUntil } from '../helpers/handshake.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDelayProxy, type DelayProxy } from '../helpers/delay-proxy.js';
import type { GatewayProcess } from '../helpers/gateway.js';
import { HistoryClient, closeClients, publishH, range } from '../helpers/history.js';
import { startNodes, stopNodes, untilReadyz } from '../helpers/multinode.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const IN_FLIGHT = 8;
const NODE_ENV = { PUBGATE_HISTORY_CHANNELS: 'h:*', PUBGATE_HISTORY_SIZE: '20000', PUBGATE_LOG_LEVEL: 'info' };

const nodes: GatewayProcess[] = [];
const clients: HistoryClient[] = [];
let redis: RedisServer | undefined;
let proxy: DelayProxy | undefined;
let publisherNode: GatewayProcess | undefined;
let gapNode: GatewayProcess | undefined;

beforeAll(async () => {
  redis = await startRedis();
  proxy = await startDelayProxy({ target: { host: '127.0.0.1', port: redis.port }, marker: 'pubgate-gap-d-sub', batchMs: 50 });
  [publisherNode] = await startNodes(['gap-b'], { ...NODE_ENV, PUBGATE_REDIS_URL: redis.url }, nodes);
  [gapNode] = await startNodes(['gap-d'], { ...NODE_ENV, PUBGATE_REDIS_URL: `redis://127.0.0.1:${proxy.port}` }, nodes);
  await Promise.all(nodes.map((n) => untilReadyz(n, 200)));
  expect(proxy.matched).toBe(1);
}, 60_000);

afterAll(async () => {
  await closeClients(clients);
  await stopNodes(nodes);
  await proxy?.close();
  await redis?.stop();
});

/** Kills the Redis connection named `name` (CLIENT KILL ID). */
async function killConnection(r: RedisServer, name: string): Promise<void> {
  const list = await r.cli('CLIENT', 'LIST');
  const line = list.find((l) => l.includes(` name=${name} `));
  if (!line) throw new Error(`no connection named ${name} in CLIENT LIST:\n${list.join('\n')}`);
  const id = /^id=(\d+) /.exec(line)?.[1];
  expect(await r.cli('CLIENT', 'KILL', 'ID', String(id))).toEqual(['1']);
}

describe("a node loses its Redis subscriber connection while another node keeps publishing", () => {
  /** The offsets the subscriber got before and after its 1011 close and recovery, and how many were published. */
  let outcome: { received: number[]; total: number } | undefined;

  it('history subscribers on it are closed with 1011, in order and without duplicates, and recover with since', async () => {
    const r = redis;
    const pubNode = publisherNode;
    const node = gapNode;
    if (!r || !pubNode || !node) throw new Error('set-up did not complete');
    const ch = `h:gap:${randomUUID().slice(0, 8)}`;
    const sub = await HistoryClient.open(node.url);
    clients.push(sub);
    const epoch = (await sub.subscribe(ch)).epoch as string;

    // The other node publishes continuously until the subscriber was closed.
    const byOffset = new Map<number, unknown>();
    let stop = false;
    let seq = 0;
    const worker = async (): Promise<void> => {
      while (!stop) {
        const data = { seq: seq++ };
        const res = await publishH(pubNode, ch, data);
        if (res.status !== 200 || typeof res.body.offset !== 'number') throw new Error(`publish: ${res.status} ${JSON.stringify(res.body)}`);
        byOffset.set(res.body.offset, data);
      }
    };
    const publishing = Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    publishing.catch(() => undefined);
    try {
      await sub.until(() => sub.messages(ch).length >= 100, '100 messages on node D');
      await killConnection(r, 'pubgate-gap-d-sub');
      const closed = await sub.until(() => sub.closeInfo !== undefined, 'the subscriber on D to be closed after the gap', 30_000).then(() => sub.closed);
      expect(closed.code).toBe(1011);
    } finally {
      stop = true;
      await publishing;
    }
    expect(proxy?.matched).toBe(2); // the subscriber connection was replaced
    const before = sub.offsets(ch);
    // In order, each once.
    expect(before.every((o, i) => i === 0 || o > before[i - 1]!)).toBe(true);
    expect(before[0]).toBe(1);

    const total = byOffset.size;
    expect([...byOffset.keys()].sort((x, y) => x - y)).toEqual(range(1, total));
    // The close comes as soon as the subscriber connection is back, before it
    // resubscribed: a subscribe is refused (`unavailable`) until the node is
    // ready again, so the client waits for that (a real client backs off).
    await waitUntil(async () => (await fetch(`${node.admin}/readyz`)).status === 200, 'node D ready again', 30_000);
    const back = await HistoryClient.open(node.url);
    clients.push(back);
    const last = sub.last(ch);
    expect(await back.subscribe(ch, last)).toEqual({ type: 'reply', id: 1, recovered: true, offset: total, epoch });
    await back.untilOffset(ch, total);
    expect(back.offsets(ch)).toEqual(range(last.offset + 1, total));
    outcome = { received: [...before, ...back.offsets(ch)], total };
  });

  // History subscribers are closed when the subscriber connection comes back,
  // before it subscribes again, so no message after the gap reaches them first.
  it('nothing published during the outage is lost: the 1011 close comes before any message after the gap', () => {
    expect(outcome?.received).toEqual(range(1, outcome?.total ?? -1));
  });
});
