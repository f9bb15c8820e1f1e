/**
 * The Pusher HTTP API (contract 1.1, "Pusher Channels compatibility") driven by
 * the real `pusher` server library against two real gateway nodes on one real
 * redis-server: trigger (one channel, many, socket_id), triggerBatch, channel
 * queries (presence counts cluster-wide from the presence store), users,
 * terminateUserConnections; delivery checked on native WebSocket subscribers;
 * and the refusals (bad signature, stale and future timestamps, wrong
 * body_md5, unknown app, limits) with their statuses, bodies and metric.
 */
import Pusher from 'pusher';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { bodyMd5 } from '../../src/pusher/signing.js';
import { metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { closePresenceClients, PresenceClient, uid } from '../helpers/presence.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const APP1 = { id: '1001', key: 'key-one', secret: 'secret-one-0123456789' };
const APP2 = { id: 'second', key: 'key-two', secret: 'secret-two-0123456789' };
/** Channels the native test clients may subscribe to. */
const CHANNELS = ['news-*', 'presence-*', 'plain:*'];

let redis: RedisServer;
let a: GatewayProcess;
let b: GatewayProcess;
const clients: PresenceClient[] = [];

function lib(gw: GatewayProcess, app: { id: string; key: string; secret: string } = APP1): Pusher {
  return new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(gw.port), useTLS: false });
}

async function native(gw: GatewayProcess, user: string, ...channels: string[]): Promise<PresenceClient> {
  const c = await PresenceClient.open(gw.url, { user, channels: CHANNELS });
  clients.push(c);
  await c.subscribe(...channels);
  return c;
}

/**
 * A signed POST of an object the library's own checks would refuse before
 * sending. Its types say `body: string`, but lib/requests.js JSON-encodes the
 * body itself: an object is what trigger() passes too.
 */
function post(p: Pusher, path: string, body: Record<string, unknown>): Promise<unknown> {
  return p.post({ path, body: body as unknown as string });
}

/** The status and body of a refused library call. */
async function refusal(p: Promise<unknown>): Promise<{ status: number; body: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as { status?: number; body?: string };
    return { status: err.status ?? 0, body: err.body ?? '' };
  }
  throw new Error('the call was not refused');
}

beforeAll(async () => {
  redis = await startRedis();
  const env = {
    PUBGATE_REDIS_URL: redis.url,
    PUBGATE_PUSHER_APPS: [APP1, APP2].map((x) => `${x.id}:${x.key}:${x.secret}`).join(','),
    PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'presence-*', presence: true }]),
    PUBGATE_LOG_LEVEL: 'info',
  };
  [a, b] = await Promise.all([startGateway(env), startGateway(env)]);
});

afterAll(async () => {
  await closePresenceClients(clients);
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

describe('events', () => {
  it('delivers a trigger to native subscribers on every node as {event, data} with data parsed from JSON', async () => {
    const ch = `news-${uid()}`;
    const [x, y] = [await native(a, 'u1', ch), await native(b, 'u2', ch)];
    await lib(a).trigger(ch, 'created', { id: 7, title: 'hi' });
    await x.untilMessage(ch, { event: 'created', data: { id: 7, title: 'hi' } });
    await y.untilMessage(ch, { event: 'created', data: { id: 7, title: 'hi' } });
  });

  it('keeps data that is not JSON text as the string', async () => {
    const ch = `news-${uid()}`;
    const x = await native(b, 'u1', ch);
    await lib(a).trigger(ch, 'text', 'plain words, not JSON');
    await x.untilMessage(ch, { event: 'text', data: 'plain words, not JSON' });
  });

  it('delivers one trigger to several channels, and accepts a socket_id of no connection', async () => {
    const [c1, c2] = [`news-${uid()}`, `news-${uid()}`];
    const x = await native(a, 'u1', c1, c2);
    await lib(b).trigger([c1, c2], 'multi', { n: 1 }, { socket_id: '123.456' });
    await x.untilMessage(c1, { event: 'multi', data: { n: 1 } });
    await x.untilMessage(c2, { event: 'multi', data: { n: 1 } });
  });

  it('delivers a triggerBatch, each event to its channel', async () => {
    const [c1, c2] = [`news-${uid()}`, `news-${uid()}`];
    const x = await native(b, 'u1', c1, c2);
    const res = await lib(a).triggerBatch([
      { channel: c1, name: 'one', data: { i: 1 } },
      { channel: c2, name: 'two', data: 'two' },
    ]);
    expect(res.status).toBe(200);
    await x.untilMessage(c1, { event: 'one', data: { i: 1 } });
    await x.untilMessage(c2, { event: 'two', data: 'two' });
  });

  it('keeps another app\'s channels apart from the native channel of the same name', async () => {
    const ch = `news-${uid()}`;
    const x = await native(a, 'u1', ch);
    await lib(a, APP2).trigger(ch, 'elsewhere', { app: 2 });
    await lib(a).trigger(ch, 'here', { app: 1 });
    await x.untilMessage(ch, { event: 'here', data: { app: 1 } });
    expect(x.messages(ch).map((m) => (m.data as { event: string }).event)).toEqual(['here']);
  });

  it('refuses over 100 channels, over 10 batch events, a bad channel name and a bad socket_id with 400', async () => {
    const p = lib(a);
    const many = Array.from({ length: 101 }, (_, i) => `news-${i}`);
    // The library itself refuses 101 channels: send it through its signed post.
    expect(await refusal(post(p, '/events', { name: 'e', data: '1', channels: many }))).toMatchObject({ status: 400 });
    const batch = Array.from({ length: 11 }, (_, i) => ({ channel: `news-${i}`, name: 'e', data: '1' }));
    expect(await refusal(p.triggerBatch(batch))).toMatchObject({ status: 400 });
    expect(await refusal(post(p, '/events', { name: 'e', data: '1', channel: 'bad channel' }))).toMatchObject({ status: 400 });
    expect(await refusal(post(p, '/events', { name: 'e', data: '1', channel: 'news-1', socket_id: 'nope' }))).toMatchObject({ status: 400 });
    expect(await refusal(post(p, '/events', { name: 'e', data: { not: 'a string' }, channel: 'news-1' }))).toMatchObject({ status: 400 });
  });
});

describe('channel queries', () => {
  it('answers user_count and subscription_count of a presence channel cluster-wide, and its users', async () => {
    const ch = `presence-${uid()}`;
    await native(a, 'alice', ch);
    await native(b, 'bob', ch);
    await native(b, 'bob', ch);
    const info = await (await lib(a).get({ path: `/channels/${ch}`, params: { info: 'user_count,subscription_count' } })).json();
    expect(info).toEqual({ occupied: true, user_count: 2, subscription_count: 3 });
    const users = (await (await lib(b).get({ path: `/channels/${ch}/users` })).json()) as { users: { id: string }[] };
    expect(users.users.map((u) => u.id).sort()).toEqual(['alice', 'bob']);
  });

  it('answers a trigger and a batch with info with the attributes of their channels', async () => {
    const ch = `presence-${uid()}`;
    await native(b, 'dave', ch);
    const res = await lib(a).trigger(ch, 'ev', { x: 1 }, { info: 'user_count,subscription_count' });
    expect(await res.json()).toEqual({ channels: { [ch]: { user_count: 1, subscription_count: 1 } } });
    const batch = await lib(a).triggerBatch([
      { channel: ch, name: 'ev', data: '1', info: 'user_count' },
      { channel: `news-${uid()}`, name: 'ev', data: '2' },
    ]);
    expect(await batch.json()).toEqual({ batch: [{ user_count: 1 }, {}] });
  });

  it('lists the channels with subscribers by prefix, with user_count for presence channels', async () => {
    const tag = uid();
    const [p1, n1] = [`presence-${tag}`, `news-${tag}`];
    await native(a, 'carol', p1, n1);
    const all = (await (await lib(a).get({ path: '/channels', params: { filter_by_prefix: 'presence-' + tag, info: 'user_count' } })).json()) as {
      channels: Record<string, unknown>;
    };
    expect(all.channels).toEqual({ [p1]: { user_count: 1 } });
    const news = (await (await lib(a).get({ path: '/channels', params: { filter_by_prefix: 'news-' + tag } })).json()) as { channels: Record<string, unknown> };
    expect(news.channels).toEqual({ [n1]: {} });
  });

  it('answers an empty channel as not occupied, and refuses user_count and users outside presence channels with 400', async () => {
    const ch = `news-${uid()}`;
    expect(await (await lib(a).get({ path: `/channels/${ch}` })).json()).toEqual({ occupied: false });
    expect(await refusal(lib(a).get({ path: `/channels/${ch}`, params: { info: 'user_count' } }))).toMatchObject({ status: 400 });
    expect(await refusal(lib(a).get({ path: `/channels/${ch}/users` }))).toMatchObject({ status: 400 });
    expect(await refusal(lib(a).get({ path: '/channels', params: { info: 'user_count' } }))).toMatchObject({ status: 400 });
  });
});

describe('terminate_connections', () => {
  it('closes every connection of the user on every node', async () => {
    const user = `t-${uid()}`;
    const ch = `news-${uid()}`;
    const [x, y] = [await native(a, user, ch), await native(b, user, ch)];
    const other = await native(a, `keep-${uid()}`, ch);
    await lib(b).terminateUserConnections(user);
    expect((await x.closed).code).toBe(4501);
    expect((await y.closed).code).toBe(4501);
    expect(other.closeInfo).toBeUndefined();
  });
});

describe('refusals', () => {
  const body = JSON.stringify({ name: 'e', channel: 'news-x', data: '1' });

  it('refuses a signature made with another secret with 401', async () => {
    const r = await refusal(lib(a, { ...APP1, secret: 'not-the-secret' }).trigger('news-x', 'e', 1));
    expect(r.status).toBe(401);
    expect(r.body).toMatch(/^Invalid signature/);
  });

  it('refuses a timestamp over 600 s old and over 600 s ahead with 401', async () => {
    const realNow = Date.now();
    for (const shift of [-601_000, 601_000]) {
      const spy = vi.spyOn(Date, 'now').mockReturnValue(realNow + shift);
      const call = lib(a).trigger('news-x', 'e', 1); // the library signs synchronously, with Date.now()
      spy.mockRestore();
      const r = await refusal(call);
      expect(r.status).toBe(401);
      expect(r.body).toMatch(/^Timestamp expired/);
    }
  });

  it('refuses a body that does not match body_md5 with 401', async () => {
    const path = `/apps/${APP1.id}/events`;
    const query = lib(a).createSignedQueryString({ method: 'POST', path, body });
    const other = body.replace('"1"', '"2"');
    expect(bodyMd5(other)).not.toBe(bodyMd5(body));
    const res = await fetch(`${a.http}${path}?${query}`, { method: 'POST', body: other, headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(401);
    expect(await res.text()).toMatch(/body_md5/);
  });

  it('refuses an unknown app id with 404 and an unknown path with 404', async () => {
    expect(await refusal(lib(a, { ...APP1, id: '9999' }).trigger('news-x', 'e', 1))).toMatchObject({ status: 404 });
    expect(await refusal(lib(a).get({ path: '/nothing-here' }))).toMatchObject({ status: 404 });
  });

  it('refuses a body over the limit with 413', async () => {
    const r = await refusal(lib(a).trigger('news-x', 'big', 'x'.repeat(70 * 1024)));
    expect(r.status).toBe(413);
  });

  it('counts every answer by endpoint and result', async () => {
    expect(await metric(a.admin, 'pubgate_pusher_api_requests_total', { endpoint: 'events', result: 'bad_signature' })).toBeGreaterThanOrEqual(1);
    expect(await metric(a.admin, 'pubgate_pusher_api_requests_total', { endpoint: 'events', result: 'expired' })).toBeGreaterThanOrEqual(2);
    expect(await metric(a.admin, 'pubgate_pusher_api_requests_total', { endpoint: 'events', result: 'body_md5' })).toBeGreaterThanOrEqual(1);
    expect(await metric(a.admin, 'pubgate_pusher_api_requests_total', { endpoint: 'events', result: 'unknown_app' })).toBeGreaterThanOrEqual(1);
    expect(await metric(a.admin, 'pubgate_pusher_api_requests_total', { endpoint: 'events', result: 'ok' })).toBeGreaterThanOrEqual(1);
  });
});
