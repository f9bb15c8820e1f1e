/**
 * WebSockets through the shipped Apache (deploy/apache) and HAProxy
 * (deploy/haproxy) configs, each in front of its own two gateway nodes on a
 * real redis-server: routing by host, TLS, idle connections kept by the
 * server's pings (tunnel timeouts cut to 3 s), no tokens in the logs, and
 * failover to the other node when one drains; Server-Sent Events on /sse
 * (streamed, kept past the proxy's idle timeout by the pings). Apache's AH01144 (the ws://
 * form without mod_proxy_wstunnel) is reproduced as docs/troubleshooting.md
 * describes it. Skipped, with the package to install, when a tool is missing.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import {
  makeCert, removeDir, renderApache, renderHaproxy, startProxy, tempDir, type Cert, type ProxyProcess,
} from '../helpers/proxies.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';
import { openSse } from '../helpers/sse-reader.js';
import { findTool, needs } from '../helpers/tools.js';
import { openClient, publishVia, refusedUpgrade, type WireClient, type WireOptions } from '../helpers/wire.js';

const APACHE = findTool('apache2');
const HAPROXY = findTool('haproxy');

const WS_HOST = 'ws.example.com';
const API_HOST = 'api.example.com';
const TUNNEL_TIMEOUT_SEC = 3;
const PING_SEC = 1;

/** Two gateway nodes on one Redis, a certificate, and cleanup of everything a test starts. */
function fixture(prefix: string) {
  const f = {
    redis: undefined as RedisServer | undefined,
    certDir: undefined as string | undefined,
    cert: undefined as unknown as Cert,
    a: undefined as unknown as GatewayProcess,
    b: undefined as unknown as GatewayProcess,
    gateways: [] as GatewayProcess[],
    proxies: [] as ProxyProcess[],
    dirs: [] as string[],
    clients: [] as WireClient[],
    async setUp(): Promise<void> {
      f.redis = await startRedis();
      f.certDir = tempDir(`pubgate-${prefix}-cert-`);
      f.cert = makeCert(f.certDir, [WS_HOST, API_HOST]);
      const env = (id: string): Record<string, string> => ({
        PUBGATE_REDIS_URL: f.redis!.url,
        PUBGATE_NODE_ID: id,
        PUBGATE_PING_INTERVAL: String(PING_SEC),
        // Long enough that a node still holds connections (and answers
        // upgrades with 503 draining) when its first client reconnects.
        PUBGATE_DRAIN_SECONDS: '3',
        PUBGATE_TRUSTED_PROXIES: '127.0.0.1/32',
      });
      f.a = await startGateway(env(`${prefix}-a`));
      f.gateways.push(f.a);
      f.b = await startGateway(env(`${prefix}-b`));
      f.gateways.push(f.b);
      for (const g of f.gateways) await pollUntil(async () => (await fetch(`${g.admin}/readyz`)).status === 200, `/readyz 200 on ${g.admin}`);
    },
    async tearDown(): Promise<void> {
      await Promise.allSettled(f.clients.splice(0).map((c) => c.close()));
      await Promise.allSettled(f.proxies.splice(0).map((p) => p.stop()));
      await Promise.allSettled(f.gateways.splice(0).map((g) => g.stop()));
      await f.redis?.stop();
      for (const d of f.dirs.splice(0)) removeDir(d);
      removeDir(f.certDir);
    },
    async client(httpsPort: number, o: WireOptions = {}): Promise<WireClient> {
      const c = await openClient(`wss://127.0.0.1:${httpsPort}/ws`, {
        host: WS_HOST,
        servername: WS_HOST,
        ca: f.cert.certPem,
        token: await token({ sub: prefix, channels: ['news', 'idle', 'drain'] }),
        ...o,
      });
      f.clients.push(c);
      return c;
    },
    api(httpsPort: number) {
      return { tls: true, port: httpsPort, host: API_HOST, servername: API_HOST, ca: f.cert.certPem };
    },
  };
  return f;
}

/**
 * Connects until each node holds at least two clients, drains a: its first
 * client to get 1001 reconnects at once, while a still holds others (so still
 * listens and answers upgrades with 503 draining), and must land on b.
 * `retries503`: the proxy resends a handshake a refused with 503 to b, so no
 * client sees it (HAProxy). Otherwise (Apache) the proxy passes a's first 503
 * on to one client and takes a out of rotation: that client's next attempt
 * lands on b, and so does everyone else; no second 503.
 */
async function drainAndReconnect(f: ReturnType<typeof fixture>, httpsPort: number, retries503: boolean): Promise<void> {
  const idA = String(f.a.lines.find((l) => l.msg === 'listening')?.node);
  const onA: WireClient[] = [];
  const onB: WireClient[] = [];
  for (let i = 0; i < 10 && (onA.length < 2 || onB.length < 2); i++) {
    const c = await f.client(httpsPort);
    (c.welcome.node === idA ? onA : onB).push(c);
  }
  expect(onA.length).toBeGreaterThanOrEqual(2);
  expect(onB.length).toBeGreaterThanOrEqual(2);
  const idB = String(onB[0]!.welcome.node);
  expect(await onB[0]!.request({ type: 'subscribe', id: 1, channel: 'drain' })).toEqual({ type: 'reply', id: 1 });
  const exited = f.a.stop();
  expect(await Promise.race(onA.map((c) => c.closed))).toEqual({ code: 1001, reason: 'node is draining' });
  const stillOnA = onA.filter((c) => c.isOpen()).length;
  // Reconnect at once (the first client), then a few more clients while a drains.
  let refusedDraining = 0;
  const reconnect = async (): Promise<WireClient> => {
    for (;;) {
      try {
        return await f.client(httpsPort);
      } catch (e) {
        const err = e as { status?: number; body?: string };
        if (retries503 || err.status !== 503 || !String(err.body).includes('"draining"') || refusedDraining > 0) throw e;
        refusedDraining++;
      }
    }
  };
  const again = await reconnect();
  const more = [await reconnect(), await reconnect(), await reconnect()];
  expect(stillOnA).toBeGreaterThan(0);
  for (const c of [again, ...more]) expect(c.welcome.node).toBe(idB);
  if (retries503) {
    // The proxy tried a (it holds fewer connections now) and resent the 503'd handshake to b.
    await f.a.waitForLog((l) => l.msg === 'handshake rejected' && l.reason === 'draining', 5_000);
  }
  expect(await again.request({ type: 'subscribe', id: 1, channel: 'drain' })).toEqual({ type: 'reply', id: 1 });
  const res = await publishVia(f.api(httpsPort), 'drain', 'after failover');
  expect(res.status, res.body).toBe(200);
  expect((await again.next((x) => x.type === 'message')).data).toBe('after failover');
  expect((await onB[0]!.next((x) => x.type === 'message')).data).toBe('after failover');
  for (const c of onA) expect(await c.closed).toEqual({ code: 1001, reason: 'node is draining' });
  expect(await exited).toBe(0);
}

async function idleSurvives(f: ReturnType<typeof fixture>, httpsPort: number): Promise<void> {
  const c = await f.client(httpsPort);
  expect(await c.request({ type: 'subscribe', id: 1, channel: 'idle' })).toEqual({ type: 'reply', id: 1 });
  await c.waitPings(Math.ceil((2 * TUNNEL_TIMEOUT_SEC) / PING_SEC) + 2, 60_000);
  expect(c.isOpen()).toBe(true);
  expect((await publishVia(f.api(httpsPort), 'idle', 'still here')).status).toBe(200);
  expect((await c.next((x) => x.type === 'message')).data).toBe('still here');
  await c.close();
}

/**
 * GET /sse on the ws. host through the proxy: 200 text/event-stream and
 * welcome, still open after more pings than fit in twice the proxy's idle
 * timeout for streams (cut to 3 s), then a publish through api.<domain>
 * arrives as a message event.
 */
async function sseStreams(f: ReturnType<typeof fixture>, httpsPort: number): Promise<void> {
  const s = await openSse(`https://127.0.0.1:${httpsPort}/sse?channel=sse-news`, {
    host: WS_HOST,
    ca: f.cert.certPem,
    token: await token({ sub: 'sse', channels: ['sse-news'] }),
  });
  try {
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
    const welcome = JSON.parse((await s.next((e) => e.event === 'welcome')).data) as { user?: string };
    expect(welcome.user).toBe('sse');
    await s.waitPings(Math.ceil((2 * TUNNEL_TIMEOUT_SEC) / PING_SEC) + 2, 60_000);
    expect(s.isOpen()).toBe(true);
    const res = await publishVia(f.api(httpsPort), 'sse-news', { n: 1 });
    expect(res.status, res.body).toBe(200);
    expect(JSON.parse((await s.next((e) => e.event === 'message')).data)).toMatchObject({ channel: 'sse-news', data: { n: 1 } });
  } finally {
    s.close();
  }
  // The client went away: the proxy ends the stream at the gateway too (no stream left behind it).
  await pollUntil(async () => (await Promise.all(f.gateways.map((g) => metric(g.admin, 'pubgate_connections', { transport: 'sse' })))).every((n) => n === 0),
    'the gateways to see the SSE stream end', 15_000);
}

async function routes(f: ReturnType<typeof fixture>, httpsPort: number): Promise<void> {
  const c = await f.client(httpsPort);
  expect(c.peerFingerprint256).toBe(f.cert.fingerprint256);
  expect(await c.request({ type: 'subscribe', id: 1, channel: 'news' })).toEqual({ type: 'reply', id: 1 });
  const res = await publishVia(f.api(httpsPort), 'news', { n: 1 });
  expect(res.status, res.body).toBe(200);
  expect((await c.next((x) => x.type === 'message')).data).toEqual({ n: 1 });
  await c.close();
}

describe('Apache in front of two nodes (deploy/apache)', needs('apache2', 'openssl'), () => {
  const f = fixture('apache');
  let httpsPort: number;
  let accessLog: string;

  async function startApache(o: { legacy?: boolean; withoutModules?: string[] } = {}) {
    const https = await freePort();
    const http = await freePort();
    const r = renderApache({
      upstreams: [f.a.port, f.b.port],
      httpsPort: https,
      httpPort: http,
      cert: f.cert,
      tunnelTimeoutSec: TUNNEL_TIMEOUT_SEC,
      sseTimeoutSec: TUNNEL_TIMEOUT_SEC,
      variant: o.legacy ? 'legacy-ws-scheme' : 'shipped',
      withoutModules: o.withoutModules ?? [],
    });
    f.dirs.push(r.dir);
    f.proxies.push(await startProxy(APACHE!, r.args, [https, http], 'apache2'));
    return { httpsPort: https, render: r };
  }

  beforeAll(async () => {
    await f.setUp();
    const main = await startApache();
    httpsPort = main.httpsPort;
    accessLog = main.render.accessLog;
  });
  afterAll(() => f.tearDown());

  it('routes wss://ws.<domain>/ws and https://api.<domain>/v1/publish to the gateways', () => routes(f, httpsPort));

  it('keeps an idle WebSocket past the tunnel timeout: the server pings count as traffic', () => idleSurvives(f, httpsPort));

  it('streams /sse through mod_proxy_http: welcome, a quiet stream kept past the workers\' timeout by the pings, then a message', () => sseStreams(f, httpsPort));

  it('fails the old ws:// form with AH01144 and 500 when no module handles ws:// (only `a2enmod proxy`)', async () => {
    const legacy = await startApache({ legacy: true, withoutModules: ['proxy_wstunnel', 'proxy_http'] });
    const res = await refusedUpgrade(`wss://127.0.0.1:${legacy.httpsPort}/ws`, { host: WS_HOST, servername: WS_HOST, ca: f.cert.certPem });
    expect(res.status).toBe(500);
    expect(readFileSync(legacy.render.errorLog, 'utf8')).toMatch(/AH01144: No protocol handler was valid for the URL \/ws \(scheme 'ws'\)/);
  });

  it('tunnels the old ws:// form once mod_proxy_wstunnel (and mod_proxy_http) are loaded', async () => {
    const legacy = await startApache({ legacy: true });
    const c = await f.client(legacy.httpsPort);
    expect(c.welcome.type).toBe('welcome');
    await c.close();
  });

  it('keeps ?access_token= out of the access log', async () => {
    const jwt = await token({ sub: 'apache', channels: ['news'] });
    const marker = `pubgate-apache-${Date.now()}`;
    const c = await f.client(httpsPort, { token: jwt, via: 'query', headers: { 'user-agent': marker } });
    await c.close();
    await pollUntil(() => readFileSync(accessLog, 'utf8').includes(marker), 'the access log line of the closed WebSocket');
    const line = readFileSync(accessLog, 'utf8').split('\n').find((l) => l.includes(marker))!;
    expect(line).toContain('"GET /ws HTTP/1.1" 101');
    expect(readFileSync(accessLog, 'utf8')).not.toContain(jwt);
    expect(readFileSync(accessLog, 'utf8')).not.toContain('access_token');
  });

  it('SIGTERM on one node: its clients get 1001 and reconnect through Apache to the other node (at most one 503 draining on the way)', () =>
    drainAndReconnect(f, httpsPort, false));
});

describe('HAProxy in front of two nodes (deploy/haproxy)', needs('haproxy', 'openssl'), () => {
  const f = fixture('haproxy');
  let httpsPort: number;
  let proxy: ProxyProcess;

  beforeAll(async () => {
    await f.setUp();
    httpsPort = await freePort();
    const httpPort = await freePort();
    const r = renderHaproxy({
      upstreams: [f.a, f.b].map((g) => ({ port: g.port, adminPort: g.adminPort })),
      httpsPort,
      httpPort,
      cert: f.cert,
      tunnelTimeoutSec: TUNNEL_TIMEOUT_SEC,
      sseServerTimeoutSec: TUNNEL_TIMEOUT_SEC,
    });
    f.dirs.push(r.dir);
    proxy = await startProxy(HAPROXY!, r.args, [httpsPort, httpPort], 'haproxy');
    f.proxies.push(proxy);
  });
  afterAll(() => f.tearDown());

  it('routes wss://ws.<domain>/ws and https://api.<domain>/v1/publish to the gateways', () => routes(f, httpsPort));

  it('keeps an idle WebSocket past `timeout tunnel`: the server pings count as traffic', () => idleSurvives(f, httpsPort));

  it('streams /sse through backend pubgate_sse: welcome, a quiet stream kept past `timeout server` by the pings, then a message', () => sseStreams(f, httpsPort));

  it('health-checks /readyz over HTTP/1.1 (HTTP/1.0 checks get 505 and mark every node down)', async () => {
    expect(proxy.output()).not.toMatch(/is DOWN/);
  });

  it('keeps ?access_token= out of its log', async () => {
    const jwt = await token({ sub: 'haproxy', channels: ['news'] });
    const c = await f.client(httpsPort, { token: jwt, via: 'query' });
    await c.close();
    await pollUntil(() => / 101 \d+ .* GET \/ws HTTP\/1\.1/.test(proxy.output()), 'the log line of the closed WebSocket');
    expect(proxy.output()).not.toContain(jwt);
    expect(proxy.output()).not.toContain('access_token');
  });

  it('SIGTERM on one node: its clients get 1001 and reconnect through HAProxy to the other node, which retries the 503', () =>
    drainAndReconnect(f, httpsPort, true));
});
