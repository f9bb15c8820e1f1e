/**
 * End to end through the shipped nginx config (deploy/nginx, Debian's nginx):
 * real nginx in front of two gateway nodes on a real redis-server, TLS with a
 * generated certificate, name-based routing of ws.example.com and
 * api.example.com. Only ports, paths, the certificate and (for the idle test)
 * proxy_read_timeout are rewritten in a temp copy; nginx runs in the
 * foreground with its own prefix and is stopped in afterAll.
 *
 * Timing: the gateways ping every second and nginx's proxy_read_timeout is
 * 3 s, so "survives idle" means "still open after more pings than fit in
 * twice the timeout", counted as ping events, not measured in wall time.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import {
  makeCert, removeDir, renderNginx, startProxy, tempDir, type Cert, type ProxyProcess, type RenderedNginx,
} from '../helpers/proxies.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';
import { openSse } from '../helpers/sse-reader.js';
import { findTool, needs } from '../helpers/tools.js';
import { openClient, publishVia, refusedUpgrade, request, type WireClient, type WireOptions } from '../helpers/wire.js';

const NGINX = findTool('nginx');

const WS_HOST = 'ws.example.com';
const API_HOST = 'api.example.com';
const READ_TIMEOUT_SEC = 3;
const PING_SEC = 1;

describe('nginx in front of two nodes (deploy/nginx)', needs('nginx', 'openssl'), () => {
  let redis: RedisServer | undefined;
  let certDir: string | undefined;
  let cert: Cert;
  const gateways: GatewayProcess[] = [];
  const proxies: ProxyProcess[] = [];
  const renders: RenderedNginx[] = [];
  const clients: WireClient[] = [];
  let a: GatewayProcess;
  let b: GatewayProcess;
  let main: { proxy: ProxyProcess; render: RenderedNginx; httpsPort: number; httpPort: number };

  const gatewayEnv = (id: string, extra: Record<string, string> = {}): Record<string, string> => ({
    PUBGATE_REDIS_URL: redis!.url,
    PUBGATE_NODE_ID: id,
    PUBGATE_PING_INTERVAL: String(PING_SEC),
    // Long enough that a node still holds connections (and so still answers
    // upgrades with 503 draining) when its first client reconnects.
    PUBGATE_DRAIN_SECONDS: '3',
    PUBGATE_TRUSTED_PROXIES: '127.0.0.1/32',
    ...extra,
  });

  async function untilReady(gw: GatewayProcess): Promise<void> {
    await pollUntil(async () => (await fetch(`${gw.admin}/readyz`)).status === 200, `/readyz 200 on ${gw.admin}`);
  }

  async function startNginx(upstreams: number[], opts: { readTimeoutSec?: number; withoutUpgradeHeaders?: boolean; withoutHttp11?: boolean } = {}) {
    const httpsPort = await freePort();
    const httpPort = await freePort();
    const render = renderNginx({ upstreams, httpsPort, httpPort, cert, ...opts });
    renders.push(render);
    const proxy = await startProxy(NGINX!, render.args, [httpsPort, httpPort], 'nginx');
    proxies.push(proxy);
    return { proxy, render, httpsPort, httpPort };
  }

  const wsOpts = (httpsPort: number, o: WireOptions = {}): [string, WireOptions] => [
    `wss://127.0.0.1:${httpsPort}/ws`,
    { host: WS_HOST, servername: WS_HOST, ca: cert.certPem, ...o },
  ];
  const apiOpts = () => ({ tls: true, port: main.httpsPort, host: API_HOST, servername: API_HOST, ca: cert.certPem });

  async function client(o: WireOptions = {}, httpsPort = main.httpsPort): Promise<WireClient> {
    const [url, opts] = wsOpts(httpsPort, { token: await token({ sub: 'e2e', channels: ['news', 'drain', 'idle'] }), ...o });
    const c = await openClient(url, opts);
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    redis = await startRedis();
    certDir = tempDir('pubgate-e2e-cert-');
    cert = makeCert(certDir, [WS_HOST, API_HOST]);
    a = await startGateway(gatewayEnv('e2e-a'));
    gateways.push(a);
    b = await startGateway(gatewayEnv('e2e-b'));
    gateways.push(b);
    await Promise.all([untilReady(a), untilReady(b)]);
    main = await startNginx([a.port, b.port], { readTimeoutSec: READ_TIMEOUT_SEC });
  });

  afterAll(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await Promise.allSettled(proxies.splice(0).map((p) => p.stop()));
    await Promise.allSettled(gateways.splice(0).map((g) => g.stop()));
    await redis?.stop();
    for (const r of renders.splice(0)) removeDir(r.dir);
    removeDir(certDir);
  });

  it('routes wss://ws.<domain>/ws to a gateway, and a publish through api.<domain> reaches it', async () => {
    const c = await client();
    expect(['e2e-a', 'e2e-b']).toContain(c.welcome.node);
    expect(c.peerFingerprint256).toBe(cert.fingerprint256);
    expect(c.ws.protocol).toBe('pubgate.v1');
    expect(await c.request({ type: 'subscribe', id: 1, channel: 'news' })).toEqual({ type: 'reply', id: 1 });
    const res = await publishVia(apiOpts(), 'news', { headline: 'through nginx' });
    expect(res.status, res.body).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ channel: 'news' });
    expect(await c.next((f) => f.type === 'message')).toEqual({ type: 'message', channel: 'news', data: { headline: 'through nginx' } });
    await c.close();
  });

  it('keeps an idle WebSocket open past proxy_read_timeout: the server pings keep nginx reading', async () => {
    const c = await client();
    expect(await c.request({ type: 'subscribe', id: 1, channel: 'idle' })).toEqual({ type: 'reply', id: 1 });
    // More pings than fit in twice proxy_read_timeout, with no frame from either side.
    const pings = Math.ceil((2 * READ_TIMEOUT_SEC) / PING_SEC) + 2;
    await c.waitPings(pings, 60_000);
    expect(c.isOpen()).toBe(true);
    expect((await publishVia(apiOpts(), 'idle', 'still here')).status).toBe(200);
    expect((await c.next((f) => f.type === 'message')).data).toBe('still here');
    await c.close();
  });

  it('streams /sse on the ws. host: welcome, a quiet stream kept past proxy_read_timeout by the pings, then a message published through api.<domain>', async () => {
    const s = await openSse(`https://127.0.0.1:${main.httpsPort}/sse?channel=sse-news`, {
      host: WS_HOST,
      ca: cert.certPem,
      token: await token({ sub: 'e2e-sse', channels: ['sse-news'] }),
    });
    try {
      expect(s.status).toBe(200);
      expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(JSON.parse((await s.next((e) => e.event === 'welcome')).data)).toMatchObject({ user: 'e2e-sse' });
      await s.waitPings(Math.ceil((2 * READ_TIMEOUT_SEC) / PING_SEC) + 2, 60_000);
      expect(s.isOpen()).toBe(true);
      const res = await publishVia(apiOpts(), 'sse-news', { headline: 'over SSE' });
      expect(res.status, res.body).toBe(200);
      expect(JSON.parse((await s.next((e) => e.event === 'message')).data)).toMatchObject({ channel: 'sse-news', data: { headline: 'over SSE' } });
    } finally {
      s.close();
    }
    // nginx ends the stream at the gateway when the client goes (later tests count connections per node).
    await pollUntil(async () => (await Promise.all([a, b].map((g) => metric(g.admin, 'pubgate_connections', { transport: 'sse' })))).every((n) => n === 0),
      'the gateways to see the SSE stream end', 15_000);
  });

  it('without server pings, nginx cuts the idle WebSocket after proxy_read_timeout: the client sees 1006', async () => {
    // The control for the test above: a node that pings once a minute.
    const quiet = await startGateway(gatewayEnv('e2e-quiet', { PUBGATE_PING_INTERVAL: '60' }));
    gateways.push(quiet);
    await untilReady(quiet);
    const lone = await startNginx([quiet.port], { readTimeoutSec: READ_TIMEOUT_SEC });
    const c = await client({}, lone.httpsPort);
    const closed = await c.closed;
    expect(closed.code).toBe(1006);
    expect(c.pings()).toBe(0);
    await quiet.waitForLog((l) => l.msg === 'connection closed' && l.code === 1006);
    expect(await metric(quiet.admin, 'pubgate_disconnects_total', { code: '1006' })).toBe(1);
    expect(readFileSync(lone.render.errorLog, 'utf8')).toMatch(/upstream timed out \(110: Connection timed out\) while proxying upgraded connection/);
  });

  it('answers a plain GET /ws (no Upgrade headers) with pubgate\'s 426, not a proxy error', async () => {
    const res = await request({ tls: true, port: main.httpsPort, path: '/ws', host: WS_HOST, servername: WS_HOST, ca: cert.certPem });
    expect(res.status).toBe(426);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'bad_request' } });
    expect(res.headers.upgrade).toBe('websocket');
  });

  it('fails loudly (426, reason not_upgrade) when the proxy drops the Upgrade/Connection headers', async () => {
    const broken = await startNginx([a.port], { withoutUpgradeHeaders: true });
    const [url, opts] = wsOpts(broken.httpsPort, { token: await token({ sub: 'e2e', channels: ['news'] }) });
    const res = await refusedUpgrade(url, opts);
    expect(res.status).toBe(426);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'bad_request' } });
    await a.waitForLog((l) => l.msg === 'handshake rejected' && l.reason === 'not_upgrade');
  });

  it('answers 505 when the proxy speaks HTTP/1.0 to the gateway (nginx without proxy_http_version 1.1)', async () => {
    // uWebSockets.js refuses HTTP/1.0 before pubgate sees the request: no log line, no metric.
    const old = await startNginx([a.port], { withoutHttp11: true });
    const [url, opts] = wsOpts(old.httpsPort, { token: await token({ sub: 'e2e', channels: ['news'] }) });
    const res = await refusedUpgrade(url, opts);
    expect(res.status).toBe(505);
    expect(res.body).toMatch(/does not support HTTP\/1\.0/);
  });

  it('lets 8192-character tokens through to pubgate (header and query): the gateway answers 401, not nginx 400/414', async () => {
    const long = 'a'.repeat(8192);
    for (const via of ['subprotocol', 'query'] as const) {
      const [url, opts] = wsOpts(main.httpsPort, { token: long, via });
      const res = await refusedUpgrade(url, opts);
      expect(res.status, via).toBe(401);
      expect(JSON.parse(res.body), via).toMatchObject({ error: { code: 'unauthorized' } });
    }
  });

  it('keeps ?access_token= out of the access and error logs', async () => {
    const jwt = await token({ sub: 'e2e', channels: ['news'] });
    const marker = `pubgate-e2e-${Date.now()}`;
    const c = await client({ token: jwt, via: 'query', headers: { 'user-agent': marker } });
    await c.close();
    // nginx writes a WebSocket's line when it closes.
    await pollUntil(() => readFileSync(main.render.accessLog, 'utf8').includes(marker), 'the access log line of the closed WebSocket');
    const line = readFileSync(main.render.accessLog, 'utf8').split('\n').find((l) => l.includes(marker))!;
    expect(JSON.parse(line)).toMatchObject({ host: WS_HOST, method: 'GET', path: '/ws', status: 101 });
    for (const f of [main.render.accessLog, main.render.errorLog]) {
      const text = readFileSync(f, 'utf8');
      expect(text).not.toContain(jwt);
      expect(text).not.toContain('access_token');
    }
  });

  it('SIGTERM on one node: its clients get 1001 and reconnect through nginx to the other node', async () => {
    // Clients on both nodes, at least two on a (least_conn alternates).
    const onA: WireClient[] = [];
    const onB: WireClient[] = [];
    for (let i = 0; i < 10 && (onA.length < 2 || onB.length < 2); i++) {
      const c = await client();
      (c.welcome.node === 'e2e-a' ? onA : onB).push(c);
    }
    expect(onA.length).toBeGreaterThanOrEqual(2);
    expect(onB.length).toBeGreaterThanOrEqual(2);
    expect(await onB[0]!.request({ type: 'subscribe', id: 1, channel: 'drain' })).toEqual({ type: 'reply', id: 1 });

    const exited = a.stop(); // SIGTERM: 1001 closes spread over 3 s
    const first = await Promise.race(onA.map((c) => c.closed));
    expect(first).toEqual({ code: 1001, reason: 'node is draining' });
    const stillOnA = onA.filter((c) => c.isOpen()).length;
    // Reconnect at once, as the close code says. a still holds connections, so
    // it still listens and answers the upgrade 503 draining: nginx
    // (least_conn picks a, which now has fewer) retries on b.
    const again = await client();
    expect(again.welcome.node).toBe('e2e-b');
    expect(stillOnA).toBeGreaterThan(0);
    await a.waitForLog((l) => l.msg === 'handshake rejected' && l.reason === 'draining');
    expect(await again.request({ type: 'subscribe', id: 1, channel: 'drain' })).toEqual({ type: 'reply', id: 1 });
    const res = await publishVia(apiOpts(), 'drain', 'after failover');
    expect(res.status, res.body).toBe(200);
    expect((await again.next((f) => f.type === 'message')).data).toBe('after failover');
    expect((await onB[0]!.next((f) => f.type === 'message')).data).toBe('after failover');
    for (const c of onA) expect(await c.closed).toEqual({ code: 1001, reason: 'node is draining' });
    expect(await exited).toBe(0);
  });
});
