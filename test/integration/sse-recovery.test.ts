/**
 * SSE `id:` positions and Last-Event-ID recovery (contract 1.1) on two
 * gateways sharing a real redis-server: a stream that drops and reconnects to
 * the other node with its last id gets every message of every history
 * channel once, in order, while messages keep being published.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { waitUntil } from '../helpers/handshake.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { json, openSse, type SseStreamClient } from '../helpers/sse.js';

let redis: RedisServer;
let a: GatewayProcess;
let b: GatewayProcess;
let jwt: string;

beforeAll(async () => {
  redis = await startRedis();
  const env = { PUBGATE_REDIS_URL: redis.url, PUBGATE_HISTORY_CHANNELS: 'h:*' };
  [a, b] = await Promise.all([startGateway(env), startGateway(env)]);
  jwt = await token({ sub: 'rec', channels: ['*'] });
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

const offsetsOf = (s: SseStreamClient, channel: string): number[] =>
  s.events.filter((e) => e.event === 'message' && json(e).channel === channel).map((e) => json(e).offset as number);
const welcomeOf = async (s: SseStreamClient): Promise<Record<string, unknown>> => json(await s.waitFor((e) => e.event === 'welcome'));

describe('Last-Event-ID recovery', () => {
  it('recovers two history channels on another node while publishing, with no gap and no duplicate', async () => {
    const channels = ['h:one', 'h:two', 'plain'];
    const N = 160;
    const s1 = await openSse(a.http, { channels, token: jwt });
    await welcomeOf(s1);
    let published = 0;
    const publishing = (async () => {
      for (let i = 0; i < N; i++) {
        const res = await publish(b, { channel: i % 2 === 0 ? 'h:one' : 'h:two', data: { i } });
        expect(res.status).toBe(200);
        published++;
      }
    })();
    await waitUntil(() => s1.events.filter((e) => e.event === 'message').length >= 30, 'the first stream got 30 messages');
    // Read and dropped in one step: nothing arrives on s1 after its last id.
    const lastId = s1.lastId();
    s1.close();
    expect(published).toBeLessThan(N); // the drop happens while publishing goes on
    const s2 = await openSse(b.http, { channels, token: jwt, headers: { 'last-event-id': lastId! } });
    expect((await welcomeOf(s2)).recovered).toBe(true);
    expect(await metric(b.admin, 'pubgate_recoveries_total', { result: 'recovered' })).toBe(2);
    await publishing;
    await waitUntil(() => offsetsOf(s2, 'h:one').at(-1) === N / 2 && offsetsOf(s2, 'h:two').at(-1) === N / 2, 'the second stream reached the end');
    const all = Array.from({ length: N / 2 }, (_x, i) => i + 1);
    for (const ch of ['h:one', 'h:two']) expect([...offsetsOf(s1, ch), ...offsetsOf(s2, ch)], ch).toEqual(all);
    // Every message event's id names both channels' positions, the message's own among them.
    for (const e of s2.events.filter((x) => x.event === 'message')) {
      const m = json(e);
      expect(e.id).toContain(`${String(m.epoch)}:${String(m.offset)}`);
    }
    s2.close();
  });

  it('recovers from the welcome id of a stream that dropped before its first message', async () => {
    const s1 = await openSse(a.http, { channels: ['h:w1', 'h:w2'], token: jwt });
    await welcomeOf(s1);
    const welcomeId = s1.lastId();
    s1.close();
    for (const ch of ['h:w1', 'h:w2', 'h:w1']) expect((await publish(a, { channel: ch, data: 1 })).status).toBe(200);
    const s2 = await openSse(b.http, { channels: ['h:w2', 'h:w1'], token: jwt, headers: { 'last-event-id': welcomeId! } });
    expect((await welcomeOf(s2)).recovered).toBe(true);
    await waitUntil(() => offsetsOf(s2, 'h:w1').length === 2 && offsetsOf(s2, 'h:w2').length === 1, 'the replay');
    expect([offsetsOf(s2, 'h:w1'), offsetsOf(s2, 'h:w2')]).toEqual([[1, 2], [1]]);
    s2.close();
  });

  it('recovers the channels an older id covers when the stream now has one more history channel; the new one starts live', async () => {
    const s1 = await openSse(a.http, { channels: ['h:keep'], token: jwt });
    await welcomeOf(s1);
    expect((await publish(b, { channel: 'h:keep', data: 1 })).status).toBe(200);
    await s1.waitFor((e) => e.event === 'message');
    const id = s1.lastId()!;
    s1.close();
    // Missed while away.
    for (const i of [2, 3]) expect((await publish(b, { channel: 'h:keep', data: i })).status).toBe(200);
    const s2 = await openSse(b.http, { channels: ['h:keep', 'h:new'], token: jwt, headers: { 'last-event-id': id } });
    // Not every history channel recovered (h:new had no position): recovered false, but h:keep resumes after 1.
    expect((await welcomeOf(s2)).recovered).toBe(false);
    await waitUntil(() => offsetsOf(s2, 'h:keep').length >= 2, 'the missed messages of h:keep');
    expect(offsetsOf(s2, 'h:keep')).toEqual([2, 3]);
    expect((await publish(a, { channel: 'h:new', data: 'live' })).status).toBe(200);
    const m = await s2.waitFor((e) => e.event === 'message' && json(e).channel === 'h:new');
    expect(json(m).offset).toBe(1);
    s2.close();
  });

  it('starts live with recovered:false for an id of other channels or an unparseable one', async () => {
    const s1 = await openSse(a.http, { channels: ['h:x'], token: jwt });
    await welcomeOf(s1);
    const otherId = s1.lastId()!;
    s1.close();
    for (const id of [otherId, 'not-an-id', '']) {
      const s = await openSse(b.http, { channels: ['h:y', 'plain2'], token: jwt, headers: { 'last-event-id': id } });
      const w = await welcomeOf(s);
      if (id === '') expect(w.recovered).toBeUndefined();
      else expect(w.recovered).toBe(false);
      expect((await publish(a, { channel: 'h:y', data: id })).status).toBe(200);
      const m = await s.waitFor((e) => e.event === 'message');
      expect(json(m).data).toBe(id);
      s.close();
    }
  });

  it('replays a recovery of several MB (far over maxBackpressure) whole, in order, without closing the stream', async () => {
    const gw = await startGateway({
      PUBGATE_REDIS_URL: redis.url,
      PUBGATE_HISTORY_CHANNELS: 'h:*',
      PUBGATE_MAX_BACKPRESSURE: '65536',
      PUBGATE_MAX_PUBLISH_BYTES: String(4 * 1024 * 1024),
      PUBGATE_HISTORY_SIZE: '1000',
    });
    try {
      const s1 = await openSse(gw.http, { channels: ['h:big'], token: jwt });
      await welcomeOf(s1);
      const id = s1.lastId()!;
      s1.close();
      const payload = 'y'.repeat(30_000);
      const N = 200;
      // 6 MB, about 90 times maxBackpressure (the unit test forces uWS backpressure on such a replay).
      for (let batch = 0; batch < 2; batch++) {
        const res = await fetch(`${gw.http}/v1/publish/batch`, {
          method: 'POST',
          headers: { authorization: 'Bearer test-api-key-1', 'content-type': 'application/json' },
          body: JSON.stringify({ messages: Array.from({ length: N / 2 }, () => ({ channel: 'h:big', data: payload })) }),
        });
        expect(res.status).toBe(200);
      }
      const s2 = await openSse(gw.http, { channels: ['h:big'], token: jwt, headers: { 'last-event-id': id } });
      expect((await welcomeOf(s2)).recovered).toBe(true);
      await waitUntil(() => offsetsOf(s2, 'h:big').length === N || s2.events.some((e) => e.event === 'close'), 'the whole replay', 30_000);
      expect(s2.events.some((e) => e.event === 'close')).toBe(false);
      expect(offsetsOf(s2, 'h:big')).toEqual(Array.from({ length: N }, (_x, i) => i + 1));
      expect(s2.events.some((e) => e.event === 'close')).toBe(false);
      s2.close();
    } finally {
      await gw.stop();
    }
  });
});
