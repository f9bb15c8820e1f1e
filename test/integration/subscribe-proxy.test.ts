/**
 * The subscribe proxy (contract 1.1) against real gateways and a local test
 * backend: what it is sent (user, conn, channel, info, the proxy key), allow
 * with and without `info` (shown in presence), deny (200 false, 403), every
 * failure as `unavailable` (timeout, 500, 401, refused connection, bad JSON,
 * wrong types, a 10 MB body), the concurrency bound (beyond it `unavailable`
 * at once, none hanging), when it is not asked (claims, a token, a namespace
 * without subscribeProxy), no caching, metrics and the aggregated log; on the
 * embedded broker, and the backend's `info` seen from another node through Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token, type Client } from '../helpers/client.js';
import { metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { httpView, uid } from '../helpers/presence.js';
import { startBackend, type Backend } from '../helpers/proxy-backend.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';

const KEY = 'proxy-key-for-tests-0123456789';
const PATH = '/pubgate/subscribe';
const NAMESPACES = JSON.stringify([
  { pattern: 'room:*', presence: true, subscribeProxy: true },
  { pattern: 'plain:*', presence: true },
]);

let nextId = 1;
const id = (): number => nextId++;
const errorOf = (reply: Record<string, unknown>): { code: string; message: string } | undefined => reply.error as { code: string; message: string } | undefined;

function subscribe(c: Client, channel: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  return c.request({ type: 'subscribe', id: id(), channel, ...extra });
}

const proxyMetric = (gw: GatewayProcess, result: string): Promise<number> => metric(gw.admin, 'pubgate_proxy_requests_total', { proxy: 'subscribe', result });

describe('the subscribe proxy (embedded broker)', () => {
  let backend: Backend;
  let gw: GatewayProcess;
  const clients: Client[] = [];
  const calls = (): number => backend.calls.filter((c) => c.path === PATH).length;

  async function open(user: string, claims: Record<string, unknown> = {}): Promise<Client> {
    const c = await connect(gw.url, { token: await token({ sub: user, channels: [], ...claims }) });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    backend = await startBackend();
    gw = await startGateway({
      PUBGATE_NAMESPACES: NAMESPACES,
      PUBGATE_SUBSCRIBE_PROXY_URL: `${backend.url}${PATH}`,
      PUBGATE_PROXY_KEY: KEY,
      PUBGATE_PROXY_TIMEOUT_MS: '1000',
      PUBGATE_PROXY_CONCURRENCY: '4',
    });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await gw?.stop();
    await backend?.close();
  });

  it('posts {user, conn, channel, info} with the proxy key, allows on 200 {"allow":true} and delivers the channel', async () => {
    backend.on(PATH, { json: { allow: true } });
    const ch = `room:${uid()}`;
    const c = await open('p1', { info: { name: 'Ann' } });
    const allowed = await proxyMetric(gw, 'allow');
    expect((await subscribe(c, ch)).error).toBeUndefined();
    const call = backend.calls.at(-1)!;
    expect(call.body).toEqual({ user: 'p1', conn: c.welcome.conn, channel: ch, info: { name: 'Ann' } });
    expect(call.headers.authorization).toBe(`Bearer ${KEY}`);
    expect((await publish(gw, { channel: ch, data: 'hi' })).status).toBe(200);
    expect(await c.next((f) => f.type === 'message')).toMatchObject({ channel: ch, data: 'hi' });
    expect(await proxyMetric(gw, 'allow')).toBe(allowed + 1);
  });

  it('leaves info out of the request for a connection without one', async () => {
    backend.on(PATH, { json: { allow: true } });
    const c = await open('p2');
    expect((await subscribe(c, `room:${uid()}`)).error).toBeUndefined();
    expect(Object.keys(backend.calls.at(-1)!.body).sort()).toEqual(['channel', 'conn', 'user']);
  });

  it("shows the backend's info in that channel's presence, else the connection's", async () => {
    const [a, b] = [`room:${uid()}`, `room:${uid()}`];
    const c = await open('p3', { info: { name: 'Conn' } });
    backend.on(PATH, (call) => ({ json: call.body.channel === a ? { allow: true, info: { seat: 7 } } : { allow: true } }));
    expect((await subscribe(c, a)).error).toBeUndefined();
    expect((await subscribe(c, b)).error).toBeUndefined();
    expect((await c.request({ type: 'presence', id: id(), channel: a })).members).toEqual([{ user: 'p3', info: { seat: 7 }, conns: 1 }]);
    expect((await c.request({ type: 'presence', id: id(), channel: b })).members).toEqual([{ user: 'p3', info: { name: 'Conn' }, conns: 1 }]);
  });

  it('refuses with forbidden on 200 {"allow":false} and on 403, and subscribes nothing', async () => {
    const ch = `room:${uid()}`;
    const c = await open('p4');
    const denied = await proxyMetric(gw, 'deny');
    backend.on(PATH, { json: { allow: false } });
    expect(errorOf(await subscribe(c, ch))).toEqual({ code: 'forbidden', message: `not allowed to subscribe to ${ch}` });
    backend.on(PATH, { status: 403, json: { error: 'no' } });
    expect(errorOf(await subscribe(c, ch))?.code).toBe('forbidden');
    expect(await proxyMetric(gw, 'deny')).toBe(denied + 2);
    // Not subscribed: presence (asked by a connection the claims allow) lists nobody.
    const watcher = await open('p4-watch', { channels: ['room:*'] });
    expect(await watcher.request({ type: 'presence_stats', id: id(), channel: ch })).toMatchObject({ users: 0, connections: 0 });
  });

  const failures: Array<[string, Parameters<Backend['on']>[1], string, RegExp]> = [
    ['a 500', { status: 500, json: { error: 'boom' } }, 'bad_status', /unexpected status/],
    ['a 401 (only 403 refuses)', { status: 401, json: { allow: false } }, 'bad_status', /unexpected status/],
    ['a body that is not JSON', { body: '<html>oops</html>', contentType: 'text/html' }, 'bad_response', /invalid answer/],
    ['allow as a string', { json: { allow: 'true' } }, 'bad_response', /invalid answer/],
    ['an info that is not an object', { json: { allow: true, info: 'Ann' } }, 'bad_response', /invalid answer/],
    ['a 10 MB body', { body: Buffer.alloc(10 * 1024 * 1024, ' ') }, 'bad_response', /invalid answer/],
    ['a 10 MB chunked body', { streamBytes: 10 * 1024 * 1024 }, 'bad_response', /invalid answer/],
  ];
  for (const [what, answer, result, message] of failures) {
    it(`answers unavailable for ${what}, counted as ${result}`, async () => {
      backend.on(PATH, answer);
      const ch = `room:${uid()}`;
      const c = await open(`p5-${result}`);
      const before = await proxyMetric(gw, result);
      const e = errorOf(await subscribe(c, ch));
      expect(e?.code).toBe('unavailable');
      expect(e?.message).toMatch(message);
      expect(await proxyMetric(gw, result)).toBe(before + 1);
      expect(await c.request({ type: 'ping', id: id() })).toMatchObject({ type: 'reply' });
    });
  }

  it('answers unavailable when the backend does not answer within PUBGATE_PROXY_TIMEOUT_MS, and the backend sees the call dropped', async () => {
    backend.on(PATH, 'hold');
    const c = await open('p6');
    const before = await proxyMetric(gw, 'timeout');
    expect(errorOf(await subscribe(c, `room:${uid()}`))).toEqual({ code: 'unavailable', message: 'the subscribe proxy did not answer in time' });
    await backend.calls.at(-1)!.gone;
    expect(await proxyMetric(gw, 'timeout')).toBe(before + 1);
    backend.release({ json: { allow: true } });
  });

  it('answers unavailable at once beyond PUBGATE_PROXY_CONCURRENCY calls in flight, none hanging, and asks again once they ended', async () => {
    backend.on(PATH, 'hold');
    const c = await open('p7');
    const before = calls();
    const overloaded = await proxyMetric(gw, 'overloaded');
    const held = [1, 2, 3, 4].map(() => subscribe(c, `room:${uid()}`));
    await backend.waitForCalls(before + 4, PATH);
    expect(await metric(gw.admin, 'pubgate_proxy_in_flight', { proxy: 'subscribe' })).toBe(4);
    const over = await Promise.all([1, 2, 3].map(() => subscribe(c, `room:${uid()}`)));
    for (const r of over) expect(errorOf(r)).toEqual({ code: 'unavailable', message: 'too many proxy calls in flight on this node' });
    // Answered while the four are still held, without a call.
    expect(backend.held()).toBe(4);
    expect(calls()).toBe(before + 4);
    expect(await proxyMetric(gw, 'overloaded')).toBe(overloaded + 3);
    expect(backend.release({ json: { allow: true } })).toBe(4);
    for (const r of await Promise.all(held)) expect(r.error).toBeUndefined();
    expect(await metric(gw.admin, 'pubgate_proxy_in_flight', { proxy: 'subscribe' })).toBe(0);
    backend.on(PATH, { json: { allow: true } });
    expect((await subscribe(await open('p7b'), `room:${uid()}`)).error).toBeUndefined();
  });

  it('is not asked when the claims allow the channel, when a subscription token allows it, or when the namespace has no subscribeProxy', async () => {
    backend.on(PATH, { json: { allow: true } });
    const ch = `room:${uid()}`;
    const c = await open('p8', { channels: [ch] });
    const before = calls();
    expect((await subscribe(c, ch)).error).toBeUndefined();
    const other = `room:${uid()}`;
    expect((await subscribe(c, other, { token: await token({ sub: 'p8', channel: other }) })).error).toBeUndefined();
    // An invalid token is refused as such; the backend is not asked instead.
    const third = `room:${uid()}`;
    expect(errorOf(await subscribe(c, third, { token: await token({ sub: 'p8', channel: 'room:else' }) }))?.code).toBe('forbidden');
    expect(errorOf(await subscribe(c, `plain:${uid()}`))?.code).toBe('forbidden');
    expect(calls()).toBe(before);
  });

  it('asks again at every subscribe: answers are not cached', async () => {
    const ch = `room:${uid()}`;
    const c = await open('p9');
    const before = calls();
    backend.on(PATH, { json: { allow: true } });
    expect((await subscribe(c, ch)).error).toBeUndefined();
    expect(await c.request({ type: 'unsubscribe', id: id(), channel: ch })).toMatchObject({ type: 'reply' });
    backend.on(PATH, { json: { allow: false } });
    expect(errorOf(await subscribe(c, ch))?.code).toBe('forbidden');
    expect(calls()).toBe(before + 2);
  });

  it('does not ask for a channel the connection is subscribed to already', async () => {
    backend.on(PATH, { json: { allow: true } });
    const ch = `room:${uid()}`;
    const c = await open('p10');
    expect((await subscribe(c, ch)).error).toBeUndefined();
    const before = calls();
    expect((await subscribe(c, ch)).error).toBeUndefined();
    expect(calls()).toBe(before);
  });

  it('observes call durations, and logs failures in one aggregated line without the key', async () => {
    expect(await metric(gw.admin, 'pubgate_proxy_duration_seconds_count', { proxy: 'subscribe' })).toBeGreaterThan(0);
    const line = await gw.waitForLog((l) => l.msg === 'proxy calls failed', 20_000);
    expect(line).toMatchObject({ level: 'warn', component: 'proxy' });
    expect(Object.keys(line.counts as object).every((k) => k.startsWith('subscribe:'))).toBe(true);
    expect(gw.lines.filter((l) => l.msg === 'proxy calls failed').length).toBeLessThanOrEqual(2);
    expect(JSON.stringify(gw.lines)).not.toContain(KEY);
  });
});

describe('the subscribe proxy when the backend is down', () => {
  let gw: GatewayProcess;
  let c: Client | undefined;

  beforeAll(async () => {
    gw = await startGateway({ PUBGATE_NAMESPACES: NAMESPACES, PUBGATE_SUBSCRIBE_PROXY_URL: `http://127.0.0.1:${await freePort()}/gone` });
  });
  afterAll(async () => {
    await c?.close();
    await gw?.stop();
  });

  it('answers unavailable for a refused connection, counted as error', async () => {
    c = await connect(gw.url, { token: await token({ sub: 'd1', channels: [] }) });
    expect(errorOf(await subscribe(c, `room:${uid()}`))).toEqual({ code: 'unavailable', message: 'the subscribe proxy cannot be reached' });
    expect(await proxyMetric(gw, 'error')).toBe(1);
    expect(await metric(gw.admin, 'pubgate_proxy_in_flight', { proxy: 'subscribe' })).toBe(0);
  });
});

describe('the subscribe proxy on two nodes with Redis', () => {
  let redis: RedisServer;
  let backend: Backend;
  let a: GatewayProcess;
  let b: GatewayProcess;
  const clients: Client[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    backend = await startBackend();
    const env = (node: string): Record<string, string> => ({
      PUBGATE_REDIS_URL: redis.url,
      PUBGATE_NODE_ID: node,
      PUBGATE_NAMESPACES: NAMESPACES,
      PUBGATE_SUBSCRIBE_PROXY_URL: `${backend.url}${PATH}`,
    });
    [a, b] = await Promise.all([startGateway(env('sp-a')), startGateway(env('sp-b'))]);
    await pollUntil(async () => (await fetch(`${a.admin}/readyz`)).status === 200 && (await fetch(`${b.admin}/readyz`)).status === 200, 'both nodes ready');
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
    await backend?.close();
  });

  it("shows the backend's info in presence on both nodes and delivers a publish from the other node", async () => {
    const ch = `room:${uid()}`;
    backend.on(PATH, (call) => ({ json: { allow: true, info: { from: call.body.user } } }));
    const ca = await connect(a.url, { token: await token({ sub: 'ra', channels: [] }) });
    const cb = await connect(b.url, { token: await token({ sub: 'rb', channels: [] }) });
    clients.push(ca, cb);
    expect((await subscribe(ca, ch)).error).toBeUndefined();
    expect((await subscribe(cb, ch)).error).toBeUndefined();
    const want = { members: [{ user: 'ra', info: { from: 'ra' }, conns: 1 }, { user: 'rb', info: { from: 'rb' }, conns: 1 }], users: 2, connections: 2 };
    expect(await httpView(a, ch)).toEqual(want);
    expect(await httpView(b, ch)).toEqual(want);
    expect((await publish(b, { channel: ch, data: 'x' })).status).toBe(200);
    expect(await ca.next((f) => f.type === 'message')).toMatchObject({ channel: ch, data: 'x' });
  });
});
