/**
 * Idempotent publish (contract 1.1, "Idempotent publish and exclude") through
 * the HTTP API: `Idempotency-Key` on /v1/publish and `idempotencyKey` per
 * batch message, on the embedded broker, on two nodes sharing a Redis and on
 * two nodes on a 3-master Redis Cluster; and the retry this exists for: a
 * publish whose Redis reply comes after the node's publish timeout (503),
 * retried with the same key, is delivered once with one offset.
 *
 * Every "delivered once" is checked by publishing an unkeyed closing message
 * after the repeats and waiting for it: per channel, delivery is in publish
 * order, so anything a repeat had published would have arrived before it.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDelayProxy, type DelayProxy } from '../helpers/delay-proxy.js';
import { TEST_API_KEY, metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { NodeGroup, Subscriber, closeAll, startNodes, untilReadyz } from '../helpers/multinode.js';

const ENV = { PUBGATE_HISTORY_CHANNELS: 'mn:h:*' };
const subs: Subscriber[] = [];

afterAll(async () => {
  await closeAll(subs);
});

function post(gw: GatewayProcess, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${gw.http}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

/** POST /v1/publish with an Idempotency-Key; the answer's status and body. */
async function keyed(gw: GatewayProcess, channel: string, data: unknown, key: string): Promise<{ status: number; body: unknown }> {
  const res = await post(gw, '/v1/publish', { channel, data }, { 'idempotency-key': key });
  return { status: res.status, body: await res.json() };
}

async function subscriber(gw: GatewayProcess, ...channels: string[]): Promise<Subscriber> {
  const s = await Subscriber.open(gw.url);
  subs.push(s);
  await s.subscribe(...channels);
  return s;
}

/**
 * Publishes an unkeyed "end" and waits for it: everything published before it
 * on the channel has arrived. Returns what the channel received, the "end"s left out.
 */
async function settle(gw: GatewayProcess, s: Subscriber, channel: string): Promise<unknown[]> {
  const ends = s.got(channel).filter((d) => d === 'end').length;
  expect((await post(gw, '/v1/publish', { channel, data: 'end' })).status).toBe(200);
  await s.until(() => s.got(channel).filter((d) => d === 'end').length > ends, `the closing message on ${channel}`);
  return s.got(channel).filter((d) => d !== 'end');
}

/** A metric summed over the distinct nodes. */
async function total(nodes: readonly GatewayProcess[], name = 'pubgate_idempotent_hits_total'): Promise<number> {
  let sum = 0;
  for (const n of new Set(nodes)) sum += await metric(n.admin, name);
  return sum;
}

const tag = (): string => randomUUID().slice(0, 8);

/** The rules that hold on every broker, with `nodes()` the publishing nodes (one or two). */
function sharedRules(nodes: () => readonly [GatewayProcess, GatewayProcess]): void {
  for (const kind of ['h', 'p'] as const) {
    const channelOf = (): string => `mn:${kind}:${tag()}`;
    const offsetOf = (n: number): Record<string, number> => (kind === 'h' ? { offset: n } : {});

    it(`answers a repeated key with the first answer and publishes it once (${kind === 'h' ? 'history' : 'plain'} channel, two nodes)`, async () => {
      const [a, b] = nodes();
      const ch = channelOf();
      const s = await subscriber(b, ch);
      const before = await total([a, b]);
      const published = await total([a, b], 'pubgate_messages_published_total');
      const first = await keyed(a, ch, 'first', 'k-1');
      expect(first).toEqual({ status: 200, body: { channel: ch, ...offsetOf(1) } });
      expect(await keyed(b, ch, 'another body', 'k-1')).toEqual(first);
      expect(await keyed(a, ch, 'third try', 'k-1')).toEqual(first);
      expect(await total([a, b])).toBe(before + 2);
      // Repeats published nothing and are not counted as published.
      expect(await total([a, b], 'pubgate_messages_published_total')).toBe(published + 1);
      expect(await settle(a, s, ch)).toEqual(['first']);
    });

    it(`publishes once when ten requests with one key arrive at once on two nodes (${kind === 'h' ? 'history' : 'plain'} channel)`, async () => {
      const [a, b] = nodes();
      const ch = channelOf();
      const s = await subscriber(a, ch);
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => keyed(i % 2 === 0 ? a : b, ch, i, 'race')));
      expect(new Set(answers.map((r) => JSON.stringify(r)))).toEqual(new Set([JSON.stringify({ status: 200, body: { channel: ch, ...offsetOf(1) } })]));
      expect(await settle(b, s, ch)).toHaveLength(1);
    });

    it(`scopes keys per channel, and shares them between /v1/publish and batches (${kind === 'h' ? 'history' : 'plain'} channel)`, async () => {
      const [a, b] = nodes();
      const ch1 = channelOf();
      const ch2 = channelOf();
      const s = await subscriber(a, ch1, ch2);
      const published = await total([a, b], 'pubgate_messages_published_total');
      expect((await keyed(a, ch1, 1, 'shared')).status).toBe(200);
      expect(await keyed(b, ch2, 2, 'shared')).toEqual({ status: 200, body: { channel: ch2, ...offsetOf(1) } });
      const res = await post(b, '/v1/publish/batch', {
        messages: [
          { channel: ch1, data: 'repeat of the single publish', idempotencyKey: 'shared' },
          { channel: ch1, data: 'new', idempotencyKey: 'b-1' },
          { channel: ch1, data: 'repeat within the batch', idempotencyKey: 'b-1' },
          { channel: ch1, data: 'unkeyed' },
        ],
      });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        results: [
          { channel: ch1, ...offsetOf(1) },
          { channel: ch1, ...offsetOf(2) },
          { channel: ch1, ...offsetOf(2) },
          { channel: ch1, ...offsetOf(3) },
        ],
      });
      expect(await keyed(a, ch1, 'again', 'b-1')).toEqual({ status: 200, body: { channel: ch1, ...offsetOf(2) } });
      // Of the batch, two messages were published: the repeats are not counted.
      expect(await total([a, b], 'pubgate_messages_published_total')).toBe(published + 4);
      expect(await settle(a, s, ch1)).toEqual([1, 'new', 'unkeyed']);
      expect(await settle(a, s, ch2)).toEqual([2]);
    });
  }
}

describe('idempotent publish on the embedded broker', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway(ENV);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  sharedRules(() => [gw, gw]);

  it('refuses an invalid Idempotency-Key with 400 bad_request and publishes nothing', async () => {
    const ch = `mn:h:${tag()}`;
    const s = await subscriber(gw, ch);
    for (const key of ['', 'x'.repeat(129), 'é', 'a\tb']) {
      const res = await post(gw, '/v1/publish', { channel: ch, data: 'bad' }, { 'idempotency-key': key });
      expect(res.status, JSON.stringify(key)).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('bad_request');
    }
    expect((await keyed(gw, ch, 'ok', 'x'.repeat(128))).status).toBe(200);
    // The header belongs to /v1/publish: a batch carries keys per message.
    const batch = await post(gw, '/v1/publish/batch', { messages: [{ channel: ch, data: 'bad' }] }, { 'idempotency-key': 'k' });
    expect(batch.status).toBe(400);
    expect(await settle(gw, s, ch)).toEqual(['ok']);
  });

  it('refuses a whole batch with 400 when one message has an invalid idempotencyKey, publishing none of it', async () => {
    const ch = `mn:p:${tag()}`;
    const s = await subscriber(gw, ch);
    for (const bad of ['', 'x'.repeat(129), 7, null, 'a\nb']) {
      const res = await post(gw, '/v1/publish/batch', {
        messages: [
          { channel: ch, data: 'fine', idempotencyKey: 'good' },
          { channel: ch, data: 'bad', idempotencyKey: bad },
        ],
      });
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(((await res.json()) as { error: { code: string; message: string } }).error.message).toContain('messages[1].idempotencyKey');
    }
    expect(await settle(gw, s, ch)).toEqual([]);
    // Nothing was remembered either: the good key still publishes.
    expect((await keyed(gw, ch, 'now', 'good')).status).toBe(200);
    expect(await settle(gw, s, ch)).toEqual(['now']);
  });
});

describe('idempotency keys expire after PUBGATE_IDEMPOTENCY_TTL', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ ...ENV, PUBGATE_IDEMPOTENCY_TTL: '1' });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('publishes a key again once its ttl ran out', async () => {
    const ch = `mn:h:${tag()}`;
    const s = await subscriber(gw, ch);
    expect((await keyed(gw, ch, 'first', 'short')).body).toEqual({ channel: ch, offset: 1 });
    let next = await keyed(gw, ch, 'second', 'short');
    // Bounded: the key lives 1 s, and every try waits for its answer.
    for (let i = 0; i < 300 && (next.body as { offset: number }).offset === 1; i++) {
      await new Promise((res) => setTimeout(res, 10));
      next = await keyed(gw, ch, 'second', 'short');
    }
    expect(next.body).toEqual({ channel: ch, offset: 2 });
    expect(await settle(gw, s, ch)).toEqual(['first', 'second']);
  });
});

describe('idempotent publish on two nodes sharing one Redis', () => {
  const group = new NodeGroup();
  beforeAll(() => group.startOnRedis(['idem-a', 'idem-b'], ENV), 60_000);
  afterAll(async () => {
    await group.stop();
  });

  sharedRules(() => [group.node(0), group.node(1)]);

  describe('a publish whose Redis reply arrives after the node gave up on it', () => {
    let proxy: DelayProxy | undefined;
    let slow: GatewayProcess | undefined;
    beforeAll(async () => {
      // Node C's publishing connection gets Redis's replies through a proxy that can hold them back.
      proxy = await startDelayProxy({ target: { host: '127.0.0.1', port: group.redis().port }, marker: 'pubgate-idem-c-pub', delayMs: 0 });
      [slow] = await startNodes(['idem-c'], { ...ENV, PUBGATE_REDIS_URL: `redis://127.0.0.1:${proxy.port}` }, group.nodes);
      await untilReadyz(slow!, 200);
      expect(proxy.matched).toBeGreaterThan(0);
    }, 60_000);
    afterAll(async () => {
      await proxy?.close();
    });

    for (const kind of ['h', 'p'] as const) {
      it(`is delivered once when retried with the same key, here and on another node (${kind === 'h' ? 'history' : 'plain'} channel)`, async () => {
        const c = slow!;
        const a = group.node(0);
        const ch = `mn:${kind}:${tag()}`;
        const s = await subscriber(a, ch);
        expect((await post(a, '/v1/publish', { channel: ch, data: 'before' })).status).toBe(200);
        // Replies held back past the 2 s publish timeout: the script runs in Redis, node C answers 503.
        proxy!.setDelayMs(3000);
        const timedOut = await post(c, '/v1/publish', { channel: ch, data: 'once' }, { 'idempotency-key': 'retry-me' });
        expect(timedOut.status).toBe(503);
        proxy!.setDelayMs(0);
        const expected = { status: 200, body: kind === 'h' ? { channel: ch, offset: 2 } : { channel: ch } };
        // The retry on another node finds the key the first attempt stored.
        expect(await keyed(a, ch, 'once (retry)', 'retry-me')).toEqual(expected);
        // And on node C itself once its replies flow again: retries until one
        // is answered (the first replies may still be late), each safe by the key.
        await untilReadyz(c, 200);
        let onC = await keyed(c, ch, 'once (retry on C)', 'retry-me');
        for (let i = 0; i < 10 && onC.status === 503; i++) onC = await keyed(c, ch, 'once (retry on C)', 'retry-me');
        expect(onC).toEqual(expected);
        expect(await settle(a, s, ch)).toEqual(['before', 'once']);
      }, 60_000);
    }
  });
});

describe('idempotent publish on two nodes on a 3-master Redis Cluster', () => {
  const group = new NodeGroup();
  beforeAll(() => group.startOnCluster(['idem-x', 'idem-y'], ENV), 180_000);
  afterAll(async () => {
    await group.stop();
  });

  sharedRules(() => [group.node(0), group.node(1)]);
});
