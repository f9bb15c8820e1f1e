/**
 * Pusher Channels clients through the shipped load balancer configs
 * (deploy/nginx, deploy/apache, deploy/haproxy; Debian's packages, rendered
 * with test ports and a generated certificate) in front of two gateway nodes
 * on a real redis-server, in Pusher mode (PUBGATE_PUSHER_APPS): a raw
 * Pusher-protocol WebSocket on wss://ws.<domain>/app/{key}, and the real
 * `pusher` server library on https://api.<domain>/apps/{id}/... . Host names
 * resolve to 127.0.0.1 only inside this test (the library's HTTPS agent gets a
 * lookup function), so each proxy routes by the real Host header and SNI.
 */
import type { LookupFunction } from 'node:net';
import https from 'node:https';
import Pusher from 'pusher';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { frameInbox, upgradeRefusal, type Frame } from '../helpers/client.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import {
  makeCert, removeDir, renderApache, renderHaproxy, renderNginx, startProxy, tempDir, type Cert, type ProxyProcess,
} from '../helpers/proxies.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';
import { findTool, needs, type ToolName } from '../helpers/tools.js';

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

let redis: RedisServer | undefined;
let certDir: string | undefined;
let cert: Cert;
const gateways: GatewayProcess[] = [];
const sockets: PusherSocket[] = [];

beforeAll(async () => {
  redis = await startRedis();
  certDir = tempDir('pubgate-e2e-pusher-cert-');
  if (findTool('openssl')) cert = makeCert(certDir, [WS_HOST, API_HOST]);
  const env = {
    PUBGATE_REDIS_URL: redis.url,
    PUBGATE_PUSHER_APPS: `${APP.id}:${APP.key}:${APP.secret}`,
    PUBGATE_TRUSTED_PROXIES: '127.0.0.1/32',
  };
  gateways.push(...(await Promise.all([startGateway(env), startGateway(env)])));
  for (const gw of gateways) {
    await pollUntil(async () => (await fetch(`${gw.admin}/readyz`)).status === 200, `/readyz 200 on ${gw.admin}`);
  }
});

afterAll(async () => {
  for (const s of sockets.splice(0)) s.close();
  await Promise.allSettled(gateways.splice(0).map((g) => g.stop()));
  await redis?.stop();
  removeDir(certDir);
});

interface Started {
  readonly proxy: ProxyProcess;
  readonly dir: string;
}

/** Each shipped config, started on (httpsPort, httpPort) in front of both gateways. */
const PROXIES: readonly { name: string; file: string; tool: ToolName; start(httpsPort: number, httpPort: number): Promise<Started> }[] = [
  {
    name: 'nginx',
    file: 'deploy/nginx',
    tool: 'nginx',
    async start(httpsPort, httpPort) {
      const r = renderNginx({ upstreams: gateways.map((g) => g.port), httpsPort, httpPort, cert });
      return { proxy: await startProxy(findTool('nginx')!, r.args, [httpsPort, httpPort], 'nginx'), dir: r.dir };
    },
  },
  {
    name: 'Apache',
    file: 'deploy/apache',
    tool: 'apache2',
    async start(httpsPort, httpPort) {
      const r = renderApache({ upstreams: gateways.map((g) => g.port), httpsPort, httpPort, cert });
      return { proxy: await startProxy(findTool('apache2')!, r.args, [httpsPort, httpPort], 'apache2'), dir: r.dir };
    },
  },
  {
    name: 'HAProxy',
    file: 'deploy/haproxy',
    tool: 'haproxy',
    async start(httpsPort, httpPort) {
      const r = renderHaproxy({ upstreams: gateways.map((g) => ({ port: g.port, adminPort: g.adminPort })), httpsPort, httpPort, cert });
      return { proxy: await startProxy(findTool('haproxy')!, r.args, [httpsPort, httpPort], 'haproxy'), dir: r.dir };
    },
  },
];

for (const P of PROXIES) {
  describe(`Pusher clients through ${P.name} (${P.file}: /app/ on the ws. host, /apps/ on the api. host)`, needs(P.tool, 'openssl'), () => {
    let started: Started | undefined;
    let httpsPort: number;

    beforeAll(async () => {
      httpsPort = await freePort();
      started = await P.start(httpsPort, await freePort());
    });

    afterAll(async () => {
      await started?.proxy.stop();
      removeDir(started?.dir);
    });

    /** A WebSocket to /app/{key} through the proxy as pusher-js opens it (protocol 7), with `host` as Host and SNI name. */
    function pusherWebSocket(host: string): WebSocket {
      return new WebSocket(`wss://127.0.0.1:${httpsPort}/app/${APP.key}?protocol=7&client=js&version=8.4.0&flash=false`, {
        headers: { host },
        servername: host,
        ca: cert.certPem,
        perMessageDeflate: false,
        handshakeTimeout: 15_000,
      } as WebSocket.ClientOptions & { servername: string });
    }

    /** Opens wss://ws.example.com/app/{key} through the proxy. */
    async function openPusherSocket(): Promise<PusherSocket> {
      const ws = pusherWebSocket(WS_HOST);
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

    /** The `pusher` library pointed at the proxy: https, its port, the test CA, and `host` → 127.0.0.1 for this agent only. */
    function library(host = API_HOST): Pusher {
      const lookup = ((hostname: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
        if (hostname !== host) return cb(new Error(`unexpected host ${hostname}`));
        if (options.all) return cb(null, [{ address: '127.0.0.1', family: 4 }]);
        return cb(null, '127.0.0.1', 4);
      }) as unknown as LookupFunction;
      const agent = new https.Agent({ ca: cert.certPem, lookup, keepAlive: false });
      return new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host, port: String(httpsPort), useTLS: true, agent });
    }

    /** Channel names of this proxy's tests (the gateways, and their subscriptions, are shared by all three). */
    const channel = (name: string): string => `deploy-${P.tool}-${name}`;

    it('connects a Pusher-protocol WebSocket to /app/{key}: pusher:connection_established, a subscription, and an event triggered through /apps/{id}/events', async () => {
      const s = await openPusherSocket();
      const established = await s.next((f) => f.event === 'pusher:connection_established');
      const info = JSON.parse(established.data as string) as { socket_id: string; activity_timeout: number };
      expect(info.socket_id).toMatch(/^\d+\.\d+$/);
      expect(info.activity_timeout).toBeGreaterThan(0);

      s.send('pusher:subscribe', { channel: channel('news') });
      expect(await s.next((f) => f.event === 'pusher_internal:subscription_succeeded')).toMatchObject({ channel: channel('news') });

      const res = await library().trigger(channel('news'), 'headline', { text: 'through the proxy' });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({});
      const got = await s.next((f) => f.event === 'headline');
      expect(got.channel).toBe(channel('news'));
      expect(JSON.parse(got.data as string)).toEqual({ text: 'through the proxy' });
    });

    it('answers a signed HTTP API query through the proxy with the cluster\'s view (the subscribed channel is occupied)', async () => {
      const s = await openPusherSocket();
      await s.next((f) => f.event === 'pusher:connection_established');
      s.send('pusher:subscribe', { channel: channel('occupied') });
      await s.next((f) => f.event === 'pusher_internal:subscription_succeeded');
      const res = await library().get({ path: `/channels/${channel('occupied')}`, params: { info: 'subscription_count' } });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ occupied: true, subscription_count: 1 });
    });

    it('keeps each API on its host: a signed /apps/ request on the ws. host and an /app/ upgrade on the api. host get the proxy\'s 404, not the node', async () => {
      // The node would answer both (200 and 101): a 404 is the proxy refusing to route them.
      const refusedApi = await library(WS_HOST).get({ path: '/channels' }).then(
        () => { throw new Error('/apps/ was routed on the ws. host'); },
        (e: { status?: number }) => e,
      );
      expect(refusedApi.status).toBe(404);
      expect((await library().get({ path: '/channels' })).status).toBe(200);
      const refusedWs = await upgradeRefusal(pusherWebSocket(API_HOST));
      expect(refusedWs.status).toBe(404);
    });
  });
}
