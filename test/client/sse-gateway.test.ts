/**
 * Integration: @pubgate/client's SSE fallback against a real gateway (GET
 * /sse) and a real redis-server, behind an HTTP proxy on 127.0.0.1 that the
 * test breaks and fixes: broken, it refuses every WebSocket upgrade (as a
 * proxy that strips `Upgrade` does) and passes plain HTTP, so the SSE stream
 * works. The client moves to SSE by itself and receives everything; fixed,
 * it moves back to WebSocket; messages of a history channel published the
 * whole time arrive once each, in order, across both moves.
 * Needs the gateway's GET /sse (issue 17, branch sse-core).
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { useClientFixture, type ClientProbe } from '../helpers/client-probe.js';
import { type GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import type { ConnectOptions } from '../../packages/client/src/index.js';
import { runCheck } from '../../packages/client/src/check/check.js';

const fx = useClientFixture();

/** An HTTP proxy in front of one gateway: `broken` refuses upgrades with 400 (plain HTTP passes, streamed); `cut()` ends every connection. */
interface Proxy {
  readonly url: string;
  broken: boolean;
  cut(): void;
  close(): Promise<void>;
}

const proxies: Proxy[] = [];
afterEach(async () => {
  await Promise.allSettled(proxies.splice(0).map((p) => p.close()));
});

async function proxy(gw: GatewayProcess): Promise<Proxy> {
  const target = new URL(gw.http);
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket, head) => {
    if (p.broken) {
      const body = 'upgrade refused by the test proxy';
      socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      return;
    }
    const up = net.connect({ host: target.hostname, port: Number(target.port) }, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length > 0) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => {
      sockets.delete(up);
      socket.destroy();
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
    socket.on('close', () => up.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const p: Proxy = {
    url: `ws://127.0.0.1:${port}/ws`,
    broken: true,
    cut() {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise((r) => {
        p.cut();
        server.close(() => r());
      }),
  };
  proxies.push(p);
  return p;
}

async function gateway(): Promise<GatewayProcess> {
  // A history long enough for everything the publishers below send while the client moves (they do not wait for it).
  const gw = await fx.gateway({ PUBGATE_NODE_ID: 'sse-gw', PUBGATE_REDIS_URL: fx.redis().url, PUBGATE_HISTORY_CHANNELS: 'cl:h:*', PUBGATE_HISTORY_SIZE: '100000' });
  await untilReadyz(gw, 200);
  return gw;
}

async function probe(url: string, o: Partial<ConnectOptions> = {}): Promise<ClientProbe> {
  const jwt = await token({ sub: 'sse-user', channels: ['cl:*'], publish: ['cl:*'] });
  return fx.probe({ url, token: jwt, ...o });
}

async function published(gw: GatewayProcess, channel: string, data: unknown): Promise<void> {
  const res = await fetch(`${gw.http}/v1/publish`, {
    method: 'POST',
    headers: { authorization: 'Bearer test-api-key-1', 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`publish to ${channel} answered ${res.status} ${text}`);
}

const chan = (kind: string): string => `cl:${kind}:${randomUUID().slice(0, 8)}`;

/** Publishes 1, 2, 3, ... on `channel` until stopped; resolves with the last number published. */
function publisher(gw: GatewayProcess, channel: string): { stop(): Promise<number> } {
  let n = 0;
  let running = true;
  const loop = (async () => {
    while (running && n < 100_000) {
      n++;
      await published(gw, channel, n);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return n;
    },
  };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

describe('@pubgate/client SSE fallback against a real gateway', () => {
  it('behind a proxy that refuses WebSocket upgrades: moves to SSE, receives history and plain channels, and refuses socket publish with transport_unsupported', async () => {
    const gw = await gateway();
    const px = await proxy(gw);
    const p = await probe(px.url, { wsRetryMs: 60_000 });
    const h = chan('h');
    const plain = chan('plain');
    const hs = p.subscribe(h);
    const ps = p.subscribe(plain);
    await p.connections(1);
    expect(p.client.transport, p.trace()).toBe('sse');
    expect(p.of('connected')[0], p.trace()).toMatchObject({ transport: 'sse', url: px.url.replace('ws://', 'http://').replace(/\/ws$/, '/sse'), welcome: { node: 'sse-gw', user: 'sse-user' } });
    await expect(hs.ready).resolves.toMatchObject({ offset: 0 });
    await expect(ps.ready).resolves.toEqual({});
    await published(gw, h, { n: 1 });
    await published(gw, plain, 'p1');
    await published(gw, h, { n: 2 });
    await p.untilCount(h, 2);
    await p.untilCount(plain, 1);
    expect(p.messages.get(h), p.trace()).toMatchObject([
      { type: 'message', channel: h, offset: 1, data: { n: 1 } },
      { type: 'message', channel: h, offset: 2, data: { n: 2 } },
    ]);
    expect(p.got(plain)).toEqual(['p1']);
    await expect(p.client.publish(h, 'x')).rejects.toMatchObject({ name: 'PubgateError', code: 'transport_unsupported' });
    await expect(p.client.ping()).rejects.toMatchObject({ code: 'transport_unsupported' });

    // A subscribe reopens the stream with both channels: the history channel loses nothing meanwhile.
    const pub = publisher(gw, h);
    await p.untilCount(h, 10);
    const third = chan('plain');
    await p.subscribe(third).ready;
    await published(gw, third, 't1');
    await p.untilCount(third, 1);
    const last = await pub.stop();
    await p.untilCount(h, last + 2);
    expect(p.got(h), p.trace()).toEqual([{ n: 1 }, { n: 2 }, ...range(last)]);
  });

  it('moves between WebSocket and SSE when the proxy breaks and is fixed, without losing or repeating a message of a history channel', async () => {
    const gw = await gateway();
    const px = await proxy(gw);
    px.broken = false;
    const p = await probe(px.url, { wsRetryMs: 500, backoff: { minMs: 50, maxMs: 200 } });
    const h = chan('h');
    await p.subscribe(h).ready;
    expect(p.client.transport).toBe('websocket');
    const pub = publisher(gw, h);
    await p.untilCount(h, 5);

    // Broken: the connection is cut, the next two upgrades are refused, SSE resumes from the last message.
    px.broken = true;
    px.cut();
    await p.until(() => p.client.transport === 'sse' && p.client.state === 'connected', 'on SSE');
    const onSse = p.got(h).length;
    await p.untilCount(h, onSse + 5);

    // Fixed: a background WebSocket gets its welcome, the channel is resubscribed there with since, SSE is dropped.
    px.broken = false;
    await p.until(() => p.of('connected').filter((c) => c.transport === 'websocket').length === 2, 'back on WebSocket');
    const back = p.got(h).length;
    await p.untilCount(h, back + 5);
    const last = await pub.stop();
    await p.untilCount(h, last);
    expect(p.of('connected').map((c) => c.transport), p.trace()).toEqual(['websocket', 'sse', 'websocket']);
    expect(p.got(h), p.trace()).toEqual(range(last));
    expect(p.of('resubscribed').filter((r) => r.channel === h).every((r) => r.recovered === true), p.trace()).toBe(true);
    await expect(p.client.publish(h, 'works again')).resolves.toMatchObject({ type: 'reply' });
  });

  it('an SSE stream the gateway ends with a close event is handled as that WebSocket close code: 4501 (POST /v1/disconnect) stops the client', async () => {
    const gw = await gateway();
    const p = await probe(gw.url, { transports: ['sse'] });
    await p.subscribe(chan('h')).ready;
    expect(p.client.transport).toBe('sse');
    const res = await fetch(`${gw.http}/v1/disconnect`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-api-key-1', 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'sse-user' }),
    });
    expect(res.status).toBe(200);
    await p.until(() => p.client.state === 'closed', 'closed');
    expect(p.of('closed')[0]?.code, p.trace()).toBe(4501);
  });

  it('pubgate-check through the broken proxy: the WebSocket fails, SSE works, and the verdict says so', async () => {
    const gw = await gateway();
    const px = await proxy(gw);
    const jwt = await token({ sub: 'checker', channels: ['cl:*'] });
    const report = await runCheck({ url: px.url, token: jwt, idleSec: 0, timeoutMs: 10_000 });
    expect(report.transports, JSON.stringify(report.steps, null, 2)).toEqual({ websocket: false, sse: true });
    const sse = report.steps.find((s) => s.step === 'sse');
    expect(sse?.summary).toMatch(/channel=cl%3Apubgate-check: welcome from node sse-gw, user checker$/);
    expect(sse?.details?.join('\n')).toContain('WebSocket fails (at Upgrade) but SSE works');
    px.broken = false;
    const fixed = await runCheck({ url: px.url, token: jwt, idleSec: 0, timeoutMs: 10_000 });
    expect(fixed.transports, JSON.stringify(fixed.steps, null, 2)).toEqual({ websocket: true, sse: true });
    expect(fixed.ok).toBe(true);
  });
});
