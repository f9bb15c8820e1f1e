/**
 * Pusher Channels clients through the shipped nginx config (deploy/nginx,
 * Debian's nginx, rendered with test ports and a generated certificate) in
 * front of two gateway nodes on a real redis-server, in Pusher mode
 * (PUBGATE_PUSHER_APPS; PUBGATE_EXPERIMENTAL_PUSHER=1 while issue 18 is open):
 * a raw Pusher-protocol WebSocket on wss://ws.<domain>/app/{key}, and the
 * real `pusher` server library on https://api.<domain>/apps/{id}/... . Host
 * names resolve to 127.0.0.1 only inside this test (the library's HTTPS agent
 * gets a lookup function), so nginx routes by the real Host header and SNI.
 */
import type { LookupFunction } from 'node:net';
import https from 'node:https';
import Pusher from 'pusher';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frameInbox, type Frame } from '../helpers/client.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { makeCert, removeDir, renderNginx, startProxy, tempDir, type Cert, type ProxyProcess, type RenderedNginx } from '../helpers/proxies.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';
import { findTool, needs } from '../helpers/tools.js';
import { request } from '../helpers/wire.js';

const NGINX = findTool('nginx');

const WS_HOST = 'ws.example.com';
const API_HOST = 'api.example.com';
const APP = { id: '4242', key: 'deploy-key', secret: 'deploy-secret-0123456789' };

/** A Pusher-protocol WebSocket: frames are JSON `{event, channel?, data}` with `data` a JSON string for pusher:* events. */
interface PusherSocket {
  readonly ws: WebSocket;
  next(pred: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  send(event: string, data: unknown): void;
  close(): void;
}

describe('Pusher clients through nginx (deploy/nginx: /app/ on the ws. host, /apps/ on the api. host)', needs('nginx', 'openssl'), () => {
  let redis: RedisServer | undefined;
  let certDir: string | undefined;
  let cert: Cert;
  let render: RenderedNginx | undefined;
  let proxy: ProxyProcess | undefined;
  let httpsPort: number;
  const gateways: GatewayProcess[] = [];
  const sockets: PusherSocket[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    certDir = tempDir('pubgate-e2e-pusher-cert-');
    cert = makeCert(certDir, [WS_HOST, API_HOST]);
    const env = {
      PUBGATE_REDIS_URL: redis.url,
      PUBGATE_EXPERIMENTAL_PUSHER: '1',
      PUBGATE_PUSHER_APPS: `${APP.id}:${APP.key}:${APP.secret}`,
      PUBGATE_TRUSTED_PROXIES: '127.0.0.1/32',
    };
    gateways.push(...(await Promise.all([startGateway(env), startGateway(env)])));
    for (const gw of gateways) {
      await pollUntil(async () => (await fetch(`${gw.admin}/readyz`)).status === 200, `/readyz 200 on ${gw.admin}`);
    }
    httpsPort = await freePort();
    const httpPort = await freePort();
    render = renderNginx({ upstreams: gateways.map((g) => g.port), httpsPort, httpPort, cert });
    proxy = await startProxy(NGINX!, render.args, [httpsPort, httpPort], 'nginx');
  });

  afterAll(async () => {
    for (const s of sockets.splice(0)) s.close();
    await proxy?.stop();
    await Promise.allSettled(gateways.splice(0).map((g) => g.stop()));
    await redis?.stop();
    removeDir(render?.dir);
    removeDir(certDir);
  });

  /** Opens wss://ws.example.com/app/{key} through nginx as pusher-js would (protocol 7). */
  async function openPusherSocket(key = APP.key): Promise<PusherSocket> {
    const ws = new WebSocket(`wss://127.0.0.1:${httpsPort}/app/${key}?protocol=7&client=js&version=8.4.0&flash=false`, {
      headers: { host: WS_HOST },
      servername: WS_HOST,
      ca: cert.certPem,
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
    } as WebSocket.ClientOptions & { servername: string });
    let closedInfo: { code: number; reason: string } | undefined;
    ws.on('close', (code, reason) => (closedInfo = { code, reason: reason.toString() }));
    const { next } = frameInbox(ws, () => closedInfo);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
    });
    ws.on('error', () => undefined); // a reset after close shows as the close
    const s: PusherSocket = {
      ws,
      next,
      send: (event, data) => ws.send(JSON.stringify({ event, data })),
      close: () => ws.close(),
    };
    sockets.push(s);
    return s;
  }

  /** The `pusher` library pointed at nginx's api. host: https, port, CA, and api.example.com → 127.0.0.1 for this agent only. */
  function library(): Pusher {
    const lookup = ((hostname: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
      if (hostname !== API_HOST) return cb(new Error(`unexpected host ${hostname}`));
      if (options.all) return cb(null, [{ address: '127.0.0.1', family: 4 }]);
      return cb(null, '127.0.0.1', 4);
    }) as unknown as LookupFunction;
    const agent = new https.Agent({ ca: cert.certPem, lookup, keepAlive: false });
    return new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: API_HOST, port: String(httpsPort), useTLS: true, agent });
  }

  it('connects a Pusher-protocol WebSocket to /app/{key}: pusher:connection_established, a subscription, and an event triggered through /apps/{id}/events', async () => {
    const s = await openPusherSocket();
    const established = await s.next((f) => f.event === 'pusher:connection_established');
    const info = JSON.parse(established.data as string) as { socket_id: string; activity_timeout: number };
    expect(info.socket_id).toMatch(/^\d+\.\d+$/);
    expect(info.activity_timeout).toBeGreaterThan(0);

    s.send('pusher:subscribe', { channel: 'deploy-news' });
    expect(await s.next((f) => f.event === 'pusher_internal:subscription_succeeded')).toMatchObject({ channel: 'deploy-news' });

    const res = await library().trigger('deploy-news', 'headline', { text: 'through nginx' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    const got = await s.next((f) => f.event === 'headline');
    expect(got.channel).toBe('deploy-news');
    expect(JSON.parse(got.data as string)).toEqual({ text: 'through nginx' });
  });

  it('answers a signed HTTP API query through nginx with the cluster\'s view (the subscribed channel is occupied)', async () => {
    const s = await openPusherSocket();
    await s.next((f) => f.event === 'pusher:connection_established');
    s.send('pusher:subscribe', { channel: 'deploy-occupied' });
    await s.next((f) => f.event === 'pusher_internal:subscription_succeeded');
    const res = await library().get({ path: '/channels/deploy-occupied', params: { info: 'subscription_count' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ occupied: true, subscription_count: 1 });
  });

  it('keeps each API on its host: /apps/ on the ws. host and /app/ on the api. host get nginx\'s 404', async () => {
    const tls = { tls: true, port: httpsPort, ca: cert.certPem } as const;
    const apps = await request({ ...tls, path: `/apps/${APP.id}/channels`, host: WS_HOST, servername: WS_HOST });
    expect(apps.status).toBe(404);
    expect(JSON.parse(apps.body)).toMatchObject({ error: { code: 'not_found' } });
    const app = await request({ ...tls, path: `/app/${APP.key}?protocol=7`, host: API_HOST, servername: API_HOST });
    expect(app.status).toBe(404);
    expect(JSON.parse(app.body)).toMatchObject({ error: { code: 'not_found', message: expect.stringContaining('/apps/') as unknown } });
  });
});
