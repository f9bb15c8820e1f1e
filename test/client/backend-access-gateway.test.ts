/**
 * Integration: backend-driven access (contract 1.1) through @pubgate/client
 * (in Node, on the `ws` package) against real gateway processes: subscription
 * tokens from getSubscriptionToken (fetched again for the resubscribe after a
 * dropped connection, an expired one replaced, a wrong one refused), and
 * server-side subscriptions surfaced as subscriptions: the token's `subs`
 * (renewed after a reconnect, with a recovery report), POST /v1/subscribe and
 * /v1/unsubscribe (the `subscribed`/`unsubscribed` events; a subscription made
 * through the API ends with `reconnected` after a reconnect), and
 * `limit_exceeded`; on two nodes sharing a real redis-server, the API reaching
 * a client on the other node; and a cookie session of the connect proxy
 * (a local HTTP backend) refreshed without a token and reconnected after 4001.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { useClientFixture, type ClientProbe } from '../helpers/client-probe.js';
import { TEST_API_KEY, type GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import { pollUntil } from '../helpers/redis.js';
import type { Forwarder } from '../helpers/tcp-forwarder.js';
import type { ConnectOptions, MessageFrame, Subscription, UnsubscribedEvent, WebSocketConstructor } from '../../packages/client/src/index.js';

const fx = useClientFixture();

const nowSec = (): number => Math.floor(Date.now() / 1000);
const uid = (): string => randomUUID().slice(0, 8);

/** History on `feed:*`, presence on `room:*`. */
const NAMESPACES = JSON.stringify([
  { pattern: 'feed:*', history: { size: 50, ttl: 300 } },
  { pattern: 'room:*', presence: true },
]);

async function gateway(env: Record<string, string> = {}): Promise<GatewayProcess> {
  const g = await fx.gateway({ PUBGATE_NAMESPACES: NAMESPACES, ...env });
  await untilReadyz(g, 200);
  return g;
}

/** POST to the gateway's HTTP API; fails the test unless it answers 200. */
async function api(gw: GatewayProcess | Forwarder, path: string, body: unknown): Promise<unknown> {
  const res = await fetch(`${gw.http}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${path} answered ${res.status} ${text}`);
  return JSON.parse(text) as unknown;
}

/** Publishes over HTTP, retrying while the node answers 503 (its broker subscriptions are being renewed). */
async function published(gw: GatewayProcess | Forwarder, channel: string, data: unknown): Promise<void> {
  await pollUntil(async () => {
    const res = await fetch(`${gw.http}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
    });
    const text = await res.text();
    if (res.status === 503) return false;
    if (res.status !== 200) throw new Error(`publish to ${channel} answered ${res.status} ${text}`);
    return true;
  }, `publish to ${channel} accepted`);
}

/**
 * A probe that also records the server-side subscriptions it is handed
 * (`subscribed`), the `unsubscribed` events, and the messages of those
 * subscriptions; `until` re-checks on each of them.
 */
class Watch {
  readonly subs: Subscription[] = [];
  readonly unsubscribed: UnsubscribedEvent[] = [];
  /** Messages of the server-side subscriptions, per channel. */
  readonly messages = new Map<string, MessageFrame[]>();
  readonly #checks = new Set<() => void>();

  constructor(readonly p: ClientProbe) {
    p.client.on('subscribed', (sub) => {
      this.subs.push(sub);
      sub.on('message', (m) => {
        let list = this.messages.get(m.channel);
        if (!list) this.messages.set(m.channel, (list = []));
        list.push(m);
        this.#wake();
      });
      this.#wake();
    });
    p.client.on('unsubscribed', (ev) => {
      this.unsubscribed.push(ev);
      this.#wake();
    });
    for (const type of ['connected', 'resubscribed', 'error'] as const) p.client.on(type, () => this.#wake());
  }

  #wake(): void {
    for (const check of [...this.#checks]) check();
  }

  sub(channel: string): Subscription | undefined {
    return this.subs.find((s) => s.channel === channel);
  }

  got(channel: string): unknown[] {
    return (this.messages.get(channel) ?? []).map((m) => m.data);
  }

  /** Resolves once `cond` holds; checked now and after every event (bounded by a hang guard). */
  until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        this.#checks.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#checks.delete(check);
        reject(new Error(`${what}: not within ${timeoutMs} ms; subscribed: ${this.subs.map((s) => s.channel).join(' ') || 'none'}; unsubscribed: ${JSON.stringify(this.unsubscribed)}\n${this.p.trace()}`));
      }, timeoutMs);
      this.#checks.add(check);
    });
  }
}

function watch(o: ConnectOptions): Watch {
  return new Watch(fx.probe(o));
}

describe('subscription tokens through getSubscriptionToken', () => {
  it('subscribes a channel the claims do not allow, and fetches a fresh token for the resubscribe after a dropped connection', async () => {
    const gw = await gateway();
    const lb = await fx.forwarder(gw.port);
    const ch = `feed:${uid()}`;
    const asked: string[] = [];
    const p = fx.probe({
      url: lb.url('/ws'),
      token: await token({ sub: 'tok-user', channels: [] }),
      getSubscriptionToken: async (channel) => {
        asked.push(channel);
        return token({ sub: 'tok-user', channel }, { ttlSec: 60 });
      },
    });
    const sub = p.subscribe(ch);
    await expect(sub.ready).resolves.toMatchObject({ offset: 0 });
    await published(gw, ch, 'one');
    await p.untilCount(ch, 1);

    lb.dropAll();
    await p.connections(2);
    await p.until(() => p.of('resubscribed').length >= 1, 'the resubscribe');
    expect(p.of('resubscribed'), p.trace()).toEqual([{ channel: ch, since: expect.objectContaining({ offset: 1 }), recovered: true }]);
    expect(asked).toEqual([ch, ch]);
    await published(gw, ch, 'two');
    await p.untilCount(ch, 2);
    expect(p.got(ch)).toEqual(['one', 'two']);
  });

  it('replaces an expired token (unauthorized) with a fresh one; a token for another user is refused for good (forbidden)', async () => {
    const gw = await gateway();
    const ch = `room:${uid()}`;
    const other = `room:${uid()}`;
    let calls = 0;
    const p = fx.probe({
      url: gw.url,
      token: await token({ sub: 'tok-user-2', channels: [] }),
      backoff: { minMs: 100, maxMs: 1000 },
      getSubscriptionToken: async (channel) => {
        if (channel === other) return token({ sub: 'someone-else', channel });
        calls++;
        return calls === 1 ? token({ sub: 'tok-user-2', channel, exp: nowSec() - 120 }) : token({ sub: 'tok-user-2', channel });
      },
    });
    await expect(p.subscribe(ch).ready).resolves.toEqual({});
    expect(calls).toBe(2);
    expect(p.of('error').map((e) => e.code), p.trace()).toEqual(['unauthorized']);
    await expect(p.subscribe(other).ready).rejects.toMatchObject({ code: 'forbidden', channel: other });
    expect(p.client.channels()).toEqual([ch]);
  });
});

describe('server-side subscriptions', () => {
  it('the token subs are handed out with their positions, deliver messages, and are renewed after a reconnect (same object, recovery report)', async () => {
    const gw = await gateway();
    const lb = await fx.forwarder(gw.port);
    const feed = `feed:${uid()}`;
    const news = `news:${uid()}`;
    await published(gw, feed, 'before');
    const w = watch({ url: lb.url('/ws'), token: await token({ sub: 'ss-user', channels: [], subs: [feed, news] }) });
    await w.p.connections(1);
    expect(w.subs.map((s) => [s.channel, s.serverSide]), w.p.trace()).toEqual([
      [feed, true],
      [news, true],
    ]);
    await expect(w.sub(feed)!.ready).resolves.toEqual({ offset: 1, epoch: expect.any(String) });
    await expect(w.sub(news)!.ready).resolves.toEqual({});
    expect(w.p.client.channels().sort()).toEqual([feed, news].sort());

    await published(gw, feed, 'f2');
    await published(gw, news, 'n1');
    await w.until(() => w.got(feed).length >= 1 && w.got(news).length >= 1, 'a message on each');

    // Nothing is published while the client is away: recovered true.
    const renewed: unknown[] = [];
    w.sub(feed)!.on('resubscribed', (info) => renewed.push(info));
    lb.dropAll();
    await w.p.connections(2);
    expect(w.subs, 'no second subscribed event').toHaveLength(2);
    expect(renewed).toEqual([{ channel: feed, since: expect.objectContaining({ offset: 2 }), recovered: true }]);
    await published(gw, feed, 'f3');
    await w.until(() => w.got(feed).length >= 2, 'f3 on the renewed subscription');

    // Published while the client is away: the welcome's position is newer; recovered false, and it continues from there.
    lb.setTarget(undefined);
    lb.dropAll();
    await w.p.until(() => w.p.client.state !== 'connected', 'disconnected');
    await published(gw, feed, 'missed');
    lb.setTarget(gw.port);
    await w.p.connections(3);
    expect(renewed[1]).toEqual({ channel: feed, since: expect.objectContaining({ offset: 3 }), recovered: false });
    await published(gw, feed, 'f5');
    await w.until(() => w.got(feed).length >= 3, 'f5');
    expect(w.got(feed)).toEqual(['f2', 'f3', 'f5']);
    expect(w.unsubscribed).toEqual([]);
  });

  it('POST /v1/subscribe hands out a subscription that gets a publish made right after the 200; /v1/unsubscribe ends it', async () => {
    const gw = await gateway();
    const ch = `feed:${uid()}`;
    const w = watch({ url: gw.url, token: await token({ sub: 'api-user', channels: [] }) });
    await w.p.connections(1);
    await api(gw, '/v1/subscribe', { user: 'api-user', channel: ch });
    await published(gw, ch, 'right after');
    await w.until(() => w.got(ch).length >= 1, 'the publish made right after the 200');
    const sub = w.sub(ch)!;
    expect(sub.serverSide).toBe(true);
    await expect(sub.ready).resolves.toEqual({ offset: 0, epoch: expect.any(String) });

    const ended: UnsubscribedEvent[] = [];
    sub.on('unsubscribed', (ev) => ended.push(ev));
    await api(gw, '/v1/unsubscribe', { user: 'api-user', channel: ch });
    await w.until(() => w.unsubscribed.length >= 1, 'the unsubscribed event');
    expect(w.unsubscribed).toEqual([{ channel: ch }]);
    expect(ended).toEqual([{ channel: ch }]);
    expect(w.p.client.channels()).toEqual([]);
  });

  it('a subscription made through the API ends with reason reconnected after a reconnect; the client does not subscribe it itself', async () => {
    const gw = await gateway();
    const lb = await fx.forwarder(gw.port);
    const ch = `room:${uid()}`;
    const w = watch({ url: lb.url('/ws'), token: await token({ sub: 'api-user-2', channels: [] }) });
    await w.p.connections(1);
    await api(gw, '/v1/subscribe', { user: 'api-user-2', channel: ch });
    await w.until(() => w.subs.length >= 1, 'subscribed');
    lb.dropAll();
    await w.p.connections(2);
    expect(w.unsubscribed).toEqual([{ channel: ch, reason: 'reconnected' }]);
    expect(w.p.client.channels()).toEqual([]);
    expect(w.p.of('error'), w.p.trace()).toEqual([]); // no subscribe was tried (it would be forbidden)
  });

  it('POST /v1/subscribe beyond maxSubscriptions: unsubscribed with limit_exceeded, and what the connection has is kept', async () => {
    const gw = await gateway({ PUBGATE_MAX_SUBSCRIPTIONS: '1' });
    const a = `news:${uid()}`;
    const b = `news:${uid()}`;
    const w = watch({ url: gw.url, token: await token({ sub: 'limit-user', channels: [], subs: [a] }) });
    await w.p.connections(1);
    await api(gw, '/v1/subscribe', { user: 'limit-user', channel: b });
    await w.until(() => w.unsubscribed.length >= 1, 'limit_exceeded');
    expect(w.unsubscribed).toEqual([{ channel: b, reason: 'limit_exceeded' }]);
    expect(w.subs.map((s) => s.channel)).toEqual([a]);
    await published(gw, a, 'still here');
    await w.until(() => w.got(a).length >= 1, 'a message on the kept subscription');
  });

  it('on two nodes with Redis, POST /v1/subscribe on one node reaches the client on the other', async () => {
    const redis = fx.redis();
    const [n1, n2] = await Promise.all([gateway({ PUBGATE_NODE_ID: 'bk-1', PUBGATE_REDIS_URL: redis.url }), gateway({ PUBGATE_NODE_ID: 'bk-2', PUBGATE_REDIS_URL: redis.url })]);
    const ch = `feed:${uid()}`;
    const user = `two-node-${uid()}`;
    const w = watch({ url: n2!.url, token: await token({ sub: user, channels: [] }) });
    await w.p.connections(1);
    await api(n1!, '/v1/subscribe', { user, channel: ch });
    await published(n1!, ch, 'across nodes');
    await w.until(() => w.got(ch).length >= 1, 'the publish made right after the 200, on the other node');
    expect(w.sub(ch)?.serverSide).toBe(true);
  });
});

/** A connect proxy backend on 127.0.0.1: accepts `session=good` cookies while `allow` is true, else 403; counts calls. */
interface ConnectBackend {
  readonly url: string;
  readonly cookies: string[];
  allow: boolean;
  close(): Promise<void>;
}

const backends: Server[] = [];
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => new Promise((r) => b.close(r))));
});

async function connectBackend(answer: Record<string, unknown>): Promise<ConnectBackend> {
  const b: { allow: boolean; cookies: string[] } = { allow: true, cookies: [] };
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c.slice(0, 10_000)));
    req.on('end', () => {
      const cookie = String((JSON.parse(body || '{}') as { cookie?: unknown }).cookie ?? '');
      b.cookies.push(cookie);
      const ok = b.allow && cookie.includes('session=good');
      res.writeHead(ok ? 200 : 403, { 'content-type': 'application/json' });
      res.end(ok ? JSON.stringify(answer) : '{}');
    });
  });
  backends.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return Object.assign(b, { url: `http://127.0.0.1:${port}/connect`, close: () => new Promise<void>((r) => server.close(() => r())) });
}

/** The `ws` package with a Cookie header on the upgrade, as a browser sends the page's cookies. */
function withCookie(cookie: string): WebSocketConstructor {
  return class extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, { headers: { cookie } });
    }
  } as unknown as WebSocketConstructor;
}

describe('a cookie session of the connect proxy', () => {
  it('refreshes without a token (the proxy is asked again) and, after the 4001 of a refused refresh, reconnects instead of stopping', async () => {
    const backend = await connectBackend({ user: 'cookie-user', expiresIn: 4, channels: ['news:*'] });
    const gw = await gateway({ PUBGATE_CONNECT_PROXY_URL: backend.url, PUBGATE_PROXY_KEY: 'proxy-key-0123456789' });
    const p = fx.probe({ url: gw.url, WebSocket: withCookie('session=good; theme=dark') });
    await p.connections(1);
    expect(p.client.welcome, p.trace()).toMatchObject({ user: 'cookie-user', expiresIn: 4 });
    // A quarter of the 4 s before expiry, the client sends a token-less refresh: the proxy is asked again with the cookie.
    await p.until(() => p.of('refreshed').length >= 1, 'the first refresh');
    // The first refresh (a loaded machine may already have sent the next one: each is granted 4 s again).
    expect(p.of('refreshed')[0]).toEqual({ expiresIn: undefined });
    expect(backend.cookies.slice(0, 2)).toEqual(['session=good; theme=dark', 'session=good; theme=dark']);

    backend.allow = false;
    await p.until(() => p.of('disconnected').some((d) => d.code === 4001), 'the 4001 after a refused refresh');
    expect(p.of('error').map((e) => e.code), p.trace()).toContain('unauthorized');
    backend.allow = true;
    await p.connections(2);
    expect(p.of('closed'), p.trace()).toEqual([]);
  });
});
