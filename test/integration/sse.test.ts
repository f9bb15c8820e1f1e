/**
 * GET /sse (contract 1.1, "Server-Sent Events transport") against a real
 * gateway with a raw HTTP client: admission with the handshake's statuses
 * and bodies, the event formats, heartbeat comments, the ends (expiry,
 * disconnect API, drain, slow consumer) with their `close` events, and the
 * transport label of the connection metrics.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token } from '../helpers/client.js';
import { metric, publish, startGateway, TEST_API_KEY, type GatewayProcess } from '../helpers/gateway.js';
import { waitUntil } from '../helpers/handshake.js';
import { startBackend } from '../helpers/proxy-backend.js';
import { json, openSse, type SseEvent, type SseStreamClient } from '../helpers/sse.js';

const started: GatewayProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((g) => g.stop()));
});

async function gateway(env: Record<string, string> = {}): Promise<GatewayProcess> {
  const gw = await startGateway(env);
  started.push(gw);
  return gw;
}

const errorOf = (s: SseStreamClient): { code: string; message: string } => (JSON.parse(s.body) as { error: { code: string; message: string } }).error;
const closeOf = (s: SseStreamClient, timeoutMs?: number): Promise<SseEvent> => s.waitFor((e) => e.event === 'close', timeoutMs);
const messages = (s: SseStreamClient): SseEvent[] => s.events.filter((e) => e.event === 'message');

describe('GET /sse admission (the handshake\'s statuses and bodies)', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await gateway({ PUBGATE_MAX_SUBSCRIPTIONS: '3', PUBGATE_ALLOWED_ORIGINS: 'https://app.example' });
  });

  it.each([
    ['no channel', [], undefined, 'bad_request'],
    ['an invalid channel name', ['ok', 'bad name'], undefined, 'bad_request'],
    ['more distinct channels than maxSubscriptions', ['a', 'b', 'c', 'd'], undefined, 'limit_exceeded'],
    ['more channels than maxSubscriptions, one of them invalid (counted first)', ['a', 'b', 'c', 'bad name'], undefined, 'limit_exceeded'],
  ] as const)('answers 400 to %s', async (_what, channels, _x, code) => {
    const s = await openSse(gw.http, { channels, token: await token({ sub: 'u', channels: ['*'] }) });
    expect(s.status).toBe(400);
    expect(s.headers['content-type']).toBe('application/json');
    expect(errorOf(s).code).toBe(code);
  });

  it('counts a channel named twice once', async () => {
    const s = await openSse(gw.http, { channels: ['a', 'b', 'c', 'a'], token: await token({ sub: 'u', channels: ['*'] }) });
    expect(s.status).toBe(200);
    s.close();
  });

  it('answers CORS for an allowed Origin: the preflight (204) and the stream (echoed origin, credentials); refuses others', async () => {
    const pre = await fetch(`${gw.http}/sse?channel=a`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization,last-event-id' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('content-type')).toBeNull(); // no content, no content type
    expect(await pre.text()).toBe('');
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(pre.headers.get('access-control-allow-credentials')).toBe('true');
    expect(pre.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('last-event-id');
    const evil = await fetch(`${gw.http}/sse?channel=a`, { method: 'OPTIONS', headers: { origin: 'https://evil.example' } });
    expect(evil.status).toBe(403);
    expect(evil.headers.get('access-control-allow-origin')).toBeNull();
    const s = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'u', channels: ['*'] }), headers: { origin: 'https://app.example' } });
    expect(s.status).toBe(200);
    expect(s.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(s.headers['access-control-allow-credentials']).toBe('true');
    expect(s.headers.vary).toBe('Origin');
    s.close();
    const same = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'u', channels: ['*'] }) });
    expect(same.status).toBe(200);
    expect(same.headers['access-control-allow-origin']).toBeUndefined();
    same.close();
  });

  it('checks the channel list before the Origin, the Origin before the token', async () => {
    const bad = await openSse(gw.http, { channels: [], headers: { origin: 'https://evil.example' } });
    expect([bad.status, errorOf(bad).code]).toEqual([400, 'bad_request']);
    const origin = await openSse(gw.http, { channels: ['a'], headers: { origin: 'https://evil.example' } });
    expect([origin.status, errorOf(origin).code]).toEqual([403, 'origin_not_allowed']);
    const allowed = await openSse(gw.http, { channels: ['a'], headers: { origin: 'https://app.example' } });
    expect([allowed.status, errorOf(allowed).code]).toEqual([401, 'unauthorized']);
  });

  it('answers 401 to a missing or invalid token, with WWW-Authenticate', async () => {
    const missing = await openSse(gw.http, { channels: ['a'] });
    expect([missing.status, errorOf(missing).code, missing.headers['www-authenticate']]).toEqual([401, 'unauthorized', 'Bearer']);
    const invalid = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'u', channels: ['*'] }, { secret: 'another-secret-0123456789abcdef01234' }) });
    expect([invalid.status, errorOf(invalid).code]).toEqual([401, 'unauthorized']);
  });

  it('takes the token from the access_token query parameter', async () => {
    const s = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'q', channels: ['a'] }), queryToken: true });
    expect(s.status).toBe(200);
    expect(json((await s.waitFor((e) => e.event === 'welcome'))).user).toBe('q');
    s.close();
  });

  it('answers 403 forbidden when the token does not allow every named channel', async () => {
    const s = await openSse(gw.http, { channels: ['news', 'secret'], token: await token({ sub: 'u', channels: ['news'] }) });
    expect(s.status).toBe(403);
    expect(errorOf(s)).toEqual({ code: 'forbidden', message: 'not allowed to subscribe to secret' });
    expect(await metric(gw.admin, 'pubgate_handshake_rejections_total', { reason: 'channel_forbidden' })).toBe(1);
  });

  it('answers 404 not_found when PUBGATE_SSE=false', async () => {
    const off = await gateway({ PUBGATE_SSE: 'false' });
    const s = await openSse(off.http, { channels: ['a'], token: await token({ sub: 'u', channels: ['*'] }) });
    expect([s.status, errorOf(s).code]).toEqual([404, 'not_found']);
  });
});

describe('GET /sse with the connect proxy', () => {
  it('lets the backend decide a request without a token from its cookies, and refuses 401 or 403 by its answer', async () => {
    const backend = await startBackend();
    try {
      backend.on('/connect', (call) => (String(call.body.cookie) === 'sid=ok'
        ? { json: { user: 'cookie-user', expiresIn: 3600, channels: ['feed:*'] } }
        : { status: 401, json: {} }));
      const gw = await gateway({ PUBGATE_CONNECT_PROXY_URL: `${backend.url}/connect` });
      const s = await openSse(gw.http, { channels: ['feed:1'], headers: { cookie: 'sid=ok' } });
      expect(s.status).toBe(200);
      expect(json(await s.waitFor((e) => e.event === 'welcome')).user).toBe('cookie-user');
      s.close();
      const other = await openSse(gw.http, { channels: ['other'], headers: { cookie: 'sid=ok' } });
      expect([other.status, errorOf(other).code]).toEqual([403, 'forbidden']);
      const denied = await openSse(gw.http, { channels: ['feed:1'], headers: { cookie: 'sid=nope' } });
      expect([denied.status, errorOf(denied).code]).toEqual([401, 'unauthorized']);
      expect(backend.calls.map((c) => c.body.cookie)).toEqual(['sid=ok', 'sid=ok', 'sid=nope']);
    } finally {
      await backend.close();
    }
  });
});

describe('GET /sse capacity', () => {
  it('counts SSE streams and WebSockets together in maxConnections (503 overloaded)', async () => {
    const gw = await gateway({ PUBGATE_MAX_CONNECTIONS: '2' });
    const jwt = await token({ sub: 'u', channels: ['*'] });
    const s = await openSse(gw.http, { channels: ['a'], token: jwt });
    const ws = await connect(gw.url, { token: jwt });
    const full = await openSse(gw.http, { channels: ['a'], token: jwt });
    expect([full.status, errorOf(full).code, full.headers['retry-after']]).toEqual([503, 'overloaded', '5']);
    s.close();
    ws.close();
  });

  it('answers 429 rate_limited over ipHandshakeRate, counting upgrades and streams alike', async () => {
    const gw = await gateway({ PUBGATE_IP_HANDSHAKE_RATE: '0.01' });
    const jwt = await token({ sub: 'u', channels: ['*'] });
    const first = await openSse(gw.http, { channels: ['a'], token: jwt });
    expect(first.status).toBe(200);
    const second = await openSse(gw.http, { channels: ['a'], token: jwt });
    expect([second.status, errorOf(second).code]).toEqual([429, 'rate_limited']);
    first.close();
  });
});

describe('GET /sse events', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await gateway({ PUBGATE_HISTORY_CHANNELS: 'h:*', PUBGATE_PING_INTERVAL: '0.3' });
  });

  it('answers 200 with the contract headers, welcome first, then messages without their type member', async () => {
    const s = await openSse(gw.http, { channels: ['news', 'h:1'], token: await token({ sub: 'ev', channels: ['*'] }) });
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toBe('text/event-stream');
    expect(s.headers['cache-control']).toBe('no-cache');
    expect(s.headers['x-accel-buffering']).toBe('no');
    const welcome = await s.waitFor((e) => e.event === 'welcome');
    expect(s.events.filter((e) => e.event !== 'comment')[0]).toBe(welcome);
    const w = json(welcome);
    expect(Object.keys(w).sort()).toEqual(['conn', 'expiresIn', 'node', 'ping', 'user']);
    expect([w.user, w.ping]).toEqual(['ev', 0.3]);
    expect(welcome.id).toMatch(/^[0-9a-f]{8}\.[A-Za-z0-9_-]+:0$/);
    await publish(gw, { channel: 'news', data: { headline: 'x' } });
    await publish(gw, { channel: 'h:1', data: [1, 2] });
    const plain = await s.waitFor((e) => e.event === 'message' && json(e).channel === 'news');
    expect(plain.data).toBe('{"channel":"news","data":{"headline":"x"}}');
    const hist = await s.waitFor((e) => e.event === 'message' && json(e).channel === 'h:1');
    const h = json(hist);
    expect([h.offset, h.data]).toEqual([1, [1, 2]]);
    expect(hist.id).toBe(`${welcome.id!.split('.')[0]}.${String(h.epoch)}:1`);
    s.close();
  });

  it('sends a `: ping` comment every ping interval and never closes a silent stream', async () => {
    const s = await openSse(gw.http, { channels: ['quiet'], token: await token({ sub: 'p', channels: ['*'] }) });
    // Ten intervals: far past the WebSocket silence rule (two).
    await waitUntil(() => s.events.filter((e) => e.event === 'comment' && e.data === 'ping').length >= 10, 'ten pings');
    expect(s.events.some((e) => e.event === 'close')).toBe(false);
    s.close();
  });

  it('ends the stream with event close 4001 at token expiry', async () => {
    const s = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'exp', channels: ['*'] }, { ttlSec: 1 }) });
    await s.waitFor((e) => e.event === 'welcome');
    expect(json(await closeOf(s))).toEqual({ code: 4001, reason: 'token expired' });
    await s.ended;
  });

  it('ends every stream of a user with event close 4501 on POST /v1/disconnect', async () => {
    const s = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'dis', channels: ['*'] }) });
    await s.waitFor((e) => e.event === 'welcome');
    const res = await fetch(`${gw.http}/v1/disconnect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: '{"user":"dis"}',
    });
    expect(res.status).toBe(200);
    expect(json(await closeOf(s))).toEqual({ code: 4501, reason: 'disconnected' });
    await s.ended;
  });

  it('completes the response as valid chunked encoding after the close event, with Connection: close in the head', async () => {
    // uWS's end(…, closeConnection) wrote "Connection: close" into the chunked body after the
    // close event; strict clients and proxies (undici, a Node proxy) then lost the close event.
    const tok = await token({ sub: 'raw', channels: ['*'] });
    const { port } = new URL(gw.http);
    const sock = net.connect(Number(port), '127.0.0.1');
    let raw = '';
    const welcome = new Promise<void>((resolve) => {
      sock.on('data', (d: Buffer) => {
        raw += d.toString('latin1');
        if (raw.includes('event: welcome')) resolve();
      });
    });
    const ended = new Promise<void>((resolve) => sock.on('end', resolve));
    sock.write(`GET /sse?channel=a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${tok}\r\n\r\n`);
    await welcome;
    const res = await fetch(`${gw.http}/v1/disconnect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: '{"user":"raw"}',
    });
    expect(res.status).toBe(200);
    await Promise.race([ended, new Promise<void>((resolve) => {
      const check = (): void => {
        if (raw.endsWith('\r\n0\r\n\r\n')) resolve();
        else setTimeout(check, 20);
      };
      check();
    })]);
    sock.destroy();
    const [head, body = ''] = raw.split('\r\n\r\n', 2).length === 2 ? [raw.slice(0, raw.indexOf('\r\n\r\n')), raw.slice(raw.indexOf('\r\n\r\n') + 4)] : [raw, ''];
    expect(head.toLowerCase()).toContain('connection: close');
    expect(head.toLowerCase()).toContain('transfer-encoding: chunked');
    // Decode the chunks: every size line is hex, the data matches it, the last chunk is 0.
    let rest = body;
    let text = '';
    for (;;) {
      const nl = rest.indexOf('\r\n');
      expect(nl).toBeGreaterThan(0);
      const size = rest.slice(0, nl);
      expect(size).toMatch(/^[0-9a-f]+$/i);
      const n = parseInt(size, 16);
      if (n === 0) {
        expect(rest.slice(nl)).toBe('\r\n\r\n');
        break;
      }
      text += rest.slice(nl + 2, nl + 2 + n);
      expect(rest.slice(nl + 2 + n, nl + 4 + n)).toBe('\r\n');
      rest = rest.slice(nl + 4 + n);
    }
    expect(text).toContain('event: close\ndata: {"code":4501,"reason":"disconnected"}\n\n');
    expect(text.toLowerCase()).not.toContain('connection');
  });

  it('counts streams under transport="sse" in pubgate_connections and pubgate_disconnects_total', async () => {
    const g = await gateway();
    const s = await openSse(g.http, { channels: ['a'], token: await token({ sub: 'm', channels: ['*'] }) });
    await s.waitFor((e) => e.event === 'welcome');
    expect(await metric(g.admin, 'pubgate_connections', { transport: 'sse' })).toBe(1);
    expect(await metric(g.admin, 'pubgate_connections', { transport: 'ws' })).toBe(0);
    s.close();
    await waitUntil(async () => (await metric(g.admin, 'pubgate_connections', { transport: 'sse' })) === 0, 'the stream counted closed');
    expect(await metric(g.admin, 'pubgate_disconnects_total', { transport: 'sse', code: '1006' })).toBe(1);
  });
});

describe('GET /sse presence events', () => {
  it('sends join and leave events (data without type) on joinLeave channels', async () => {
    const gw = await gateway({ PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'chat:*', presence: true, joinLeave: true }]) });
    const s = await openSse(gw.http, { channels: ['chat:1'], token: await token({ sub: 'watcher', channels: ['chat:*'] }) });
    await s.waitFor((e) => e.event === 'welcome');
    const ws = await connect(gw.url, { token: await token({ sub: 'joiner', channels: ['chat:*'] }) });
    expect((await ws.request({ type: 'subscribe', id: 1, channel: 'chat:1' })).error).toBeUndefined();
    const join = await s.waitFor((e) => e.event === 'join');
    expect([join.id, json(join)]).toEqual([undefined, { channel: 'chat:1', user: 'joiner' }]);
    await ws.close();
    const leave = await s.waitFor((e) => e.event === 'leave');
    expect(json(leave)).toEqual({ channel: 'chat:1', user: 'joiner' });
    // The stream's own user joined too: its own join is not sent to it (as for WebSocket).
    expect(s.events.filter((e) => e.event === 'join').map((e) => json(e).user)).toEqual(['joiner']);
    s.close();
  });
});

describe('GET /sse drain', () => {
  it('ends streams with event close 1001 on SIGTERM', async () => {
    const gw = await gateway();
    const s = await openSse(gw.http, { channels: ['a'], token: await token({ sub: 'd', channels: ['*'] }) });
    await s.waitFor((e) => e.event === 'welcome');
    const stopped = gw.stop();
    expect(json(await closeOf(s))).toEqual({ code: 1001, reason: 'node is draining' });
    await s.ended;
    expect(await stopped).toBe(0);
  });
});

describe('GET /sse slow consumer', () => {
  it('bounds a reader that stops reading by maxBackpressure and ends it with close 4008 after a gap-free prefix', async () => {
    const gw = await gateway({
      PUBGATE_HISTORY_CHANNELS: 'h:*',
      PUBGATE_MAX_BACKPRESSURE: '65536',
      PUBGATE_PING_INTERVAL: '0.5',
      PUBGATE_MAX_PUBLISH_BYTES: String(4 * 1024 * 1024),
    });
    const s = await openSse(gw.http, { channels: ['h:slow'], token: await token({ sub: 'slow', channels: ['*'] }) });
    await s.waitFor((e) => e.event === 'welcome');
    s.pause();
    const payload = 'x'.repeat(30_000);
    let published = 0;
    // Batches until the node gives up on the reader (kernel buffers hold a few MB first); bounded.
    for (let batch = 0; batch < 40 && (await metric(gw.admin, 'pubgate_slow_consumer_closes_total')) === 0; batch++) {
      const res = await fetch(`${gw.http}/v1/publish/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages: Array.from({ length: 100 }, () => ({ channel: 'h:slow', data: payload })) }),
      });
      expect(res.status).toBe(200);
      published += 100;
      if ((await metric(gw.admin, 'pubgate_slow_consumer_closes_total')) > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitUntil(async () => (await metric(gw.admin, 'pubgate_slow_consumer_closes_total')) === 1, 'the slow stream closed');
    s.resume();
    expect(json(await closeOf(s, 30_000))).toEqual({ code: 4008, reason: 'slow consumer: send buffer full' });
    await s.ended;
    const offsets = messages(s).map((e) => json(e).offset as number);
    expect(offsets.length).toBeGreaterThan(0);
    expect(offsets.length).toBeLessThan(published);
    expect(offsets).toEqual(offsets.map((_o, i) => i + 1));
    expect(await metric(gw.admin, 'pubgate_disconnects_total', { transport: 'sse', code: '4008' })).toBe(1);
  }, 60_000);

  it('with slowConsumerPolicy=drop skips a stopped reader\'s messages and delivers again once it caught up', async () => {
    const gw = await gateway({
      PUBGATE_HISTORY_CHANNELS: 'h:*',
      PUBGATE_MAX_BACKPRESSURE: '65536',
      PUBGATE_SLOW_CONSUMER_POLICY: 'drop',
      PUBGATE_MAX_PUBLISH_BYTES: String(4 * 1024 * 1024),
    });
    const s = await openSse(gw.http, { channels: ['h:drop'], token: await token({ sub: 'drop', channels: ['*'] }) });
    await s.waitFor((e) => e.event === 'welcome');
    s.pause();
    const payload = 'x'.repeat(30_000);
    const dropped = async (): Promise<number> => metric(gw.admin, 'pubgate_messages_dropped_total');
    for (let batch = 0; batch < 40 && (await dropped()) === 0; batch++) {
      const res = await fetch(`${gw.http}/v1/publish/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages: Array.from({ length: 100 }, () => ({ channel: 'h:drop', data: payload })) }),
      });
      expect(res.status).toBe(200);
    }
    expect(await dropped()).toBeGreaterThan(0);
    s.resume();
    // Caught up: a later message arrives, and the stream was never closed.
    await waitUntil(async () => {
      await publish(gw, { channel: 'h:drop', data: 'after' });
      return s.events.some((e) => e.event === 'message' && json(e).data === 'after');
    }, 'a message after the reader caught up', 30_000);
    expect(s.events.some((e) => e.event === 'close')).toBe(false);
    const offsets = messages(s).map((e) => json(e).offset as number);
    expect(offsets).toEqual([...offsets].sort((x, y) => x - y));
    s.close();
  }, 60_000);
});
