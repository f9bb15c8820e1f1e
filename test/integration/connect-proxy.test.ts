/**
 * The connect proxy (contract 1.1) against real gateways and a local test
 * backend: an upgrade without a token is decided by the backend from its
 * cookies, client IP and Origin. Accepted like a token with the answer's
 * claims (user, expiry, channels, publish, info in presence); refused with
 * 401; timeout, errors, bad answers and the concurrency bound with 503 and
 * Retry-After; a client that goes away while the backend thinks leaves no
 * connection and no upgrade; a refresh asks the backend again with the same
 * cookie; metrics, reasons and the aggregated log, never with the cookie.
 */
import { connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect, refused, token, type Client } from '../helpers/client.js';
import { metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { rawExchange, upgradeRequestText } from '../helpers/handshake.js';
import { freePort } from '../helpers/ports.js';
import { uid } from '../helpers/presence.js';
import { startBackend, type Answer, type Backend } from '../helpers/proxy-backend.js';
import { pollUntil } from '../helpers/redis.js';

const KEY = 'connect-proxy-key-0123456789';
const PATH = '/pubgate/connect';
const ORIGIN = 'https://app.example.com';
const SECRET_COOKIE = 'sid=s3cr3t-session-value';

let nextId = 1;
const id = (): number => nextId++;
const errorOf = (reply: Record<string, unknown>): { code: string; message: string } | undefined => reply.error as { code: string; message: string } | undefined;

const grant = (user: string, extra: Record<string, unknown> = {}): Answer => ({ json: { user, expiresIn: 3600, ...extra } });

describe('the connect proxy', () => {
  let backend: Backend;
  let gw: GatewayProcess;
  /** The backend's answer per Cookie header; 401 for any other. */
  const byCookie = new Map<string, Answer | (() => Answer)>();
  const clients: Client[] = [];
  const calls = (): number => backend.calls.filter((c) => c.path === PATH).length;
  const reasonCount = (reason: string): Promise<number> => metric(gw.admin, 'pubgate_handshake_rejections_total', { reason });
  const proxyCount = (result: string): Promise<number> => metric(gw.admin, 'pubgate_proxy_requests_total', { proxy: 'connect', result });

  async function open(cookie: string, o: { origin?: string } = {}): Promise<Client> {
    const c = await connect(gw.url, { headers: { cookie }, ...(o.origin !== undefined ? { origin: o.origin } : {}) });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    backend = await startBackend();
    backend.on(PATH, (call) => {
      const a = byCookie.get(String(call.body.cookie));
      return a === undefined ? { status: 401, json: { error: 'who are you' } } : typeof a === 'function' ? a() : a;
    });
    gw = await startGateway({
      PUBGATE_CONNECT_PROXY_URL: `${backend.url}${PATH}`,
      PUBGATE_PROXY_KEY: KEY,
      PUBGATE_PROXY_TIMEOUT_MS: '1000',
      PUBGATE_PROXY_CONCURRENCY: '2',
      PUBGATE_ALLOWED_ORIGINS: ORIGIN,
      PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'chat:*', presence: true }]),
      PUBGATE_API_KEYS: 'k',
    });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await gw?.stop();
    await backend?.close();
  });

  it('posts the cookies, client IP and Origin with the proxy key, and accepts the connection with the answered claims', async () => {
    const cookie = `${SECRET_COOKIE}; theme=dark`;
    byCookie.set(cookie, grant('u-cookie', { channels: ['chat:*'], publish: ['chat:1'], info: { name: 'Ann' } }));
    const c = await open(cookie, { origin: ORIGIN });
    const call = backend.calls.at(-1)!;
    expect(call.body).toEqual({ cookie, ip: '127.0.0.1', origin: ORIGIN });
    expect(call.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(c.welcome).toMatchObject({ user: 'u-cookie' });
    expect(c.welcome.expiresIn).toBeGreaterThanOrEqual(3598);
    expect(c.welcome.expiresIn).toBeLessThanOrEqual(3600);
    expect((await c.request({ type: 'subscribe', id: id(), channel: 'chat:1' })).error).toBeUndefined();
    expect(errorOf(await c.request({ type: 'subscribe', id: id(), channel: 'news' }))?.code).toBe('forbidden');
    expect((await c.request({ type: 'publish', id: id(), channel: 'chat:1', data: 1 })).error).toBeUndefined();
    expect(errorOf(await c.request({ type: 'publish', id: id(), channel: 'chat:2', data: 1 }))?.code).toBe('forbidden');
    expect((await c.request({ type: 'presence', id: id(), channel: 'chat:1' })).members).toEqual([{ user: 'u-cookie', info: { name: 'Ann' }, conns: 1 }]);
  });

  it('makes the server-side subscriptions of the answer\u2019s subs before the welcome, which lists them', async () => {
    const t = uid();
    const cookie = `sid=${t}-subs`;
    byCookie.set(cookie, grant(`u-${t}`, { subs: [`news:${t}`, `chat:${t}`] }));
    const c = await open(cookie);
    expect(c.welcome.subs).toEqual({ [`news:${t}`]: {}, [`chat:${t}`]: {} });
    const r = await publish(gw, { channel: `news:${t}`, data: 'hello' }, 'k');
    expect(r.status).toBe(200);
    expect(await c.next((f) => f.type === 'message')).toEqual({ type: 'message', channel: `news:${t}`, data: 'hello' });
    // In presence, as for a token's subs.
    expect((await c.request({ type: 'presence', id: id(), channel: `chat:${t}` })).members).toEqual([{ user: `u-${t}`, conns: 1 }]);
  });

  it('sends an empty cookie and origin for a request without them, and joins repeated Cookie lines with "; "', async () => {
    byCookie.set('', grant('u-empty'));
    expect((await open('')).welcome).toMatchObject({ user: 'u-empty' });
    // `ws` sends `Cookie: ` (empty): the backend gets "" either way.
    expect(backend.calls.at(-1)!.body).toEqual({ cookie: '', ip: '127.0.0.1', origin: '' });
    byCookie.set('a=1; b=2', grant('u-two-lines'));
    const r = await rawExchange(gw.port, upgradeRequestText({ host: `127.0.0.1:${gw.port}`, lines: ['Cookie: a=1', 'Cookie: b=2'] }));
    expect(r.status).toBe(101);
    expect(backend.calls.at(-1)!.body.cookie).toBe('a=1; b=2');
  });

  it('does not ask the backend for an upgrade that carries a token', async () => {
    const before = calls();
    const c = await connect(gw.url, { token: await token({ sub: 'u-token' }), headers: { cookie: SECRET_COOKIE } });
    clients.push(c);
    expect(c.welcome).toMatchObject({ user: 'u-token' });
    // An invalid token is 401 as always, not passed on to the backend.
    expect((await refused(gw.url, { token: 'not.a.token', headers: { cookie: SECRET_COOKIE } })).status).toBe(401);
    expect(calls()).toBe(before);
  });

  it('refuses with 401 unauthorized when the backend answers 401 or 403', async () => {
    const before = await reasonCount('proxy_deny');
    const denied = await proxyCount('deny');
    byCookie.set('sid=forbidden', { status: 403, json: {} });
    for (const cookie of ['sid=unknown', 'sid=forbidden']) {
      const r = await refused(gw.url, { headers: { cookie } });
      expect(r.status).toBe(401);
      expect(r.body.error).toEqual({ code: 'unauthorized', message: 'the connect proxy refused the connection' });
      expect(r.headers['www-authenticate']).toBe('Bearer');
    }
    expect(await reasonCount('proxy_deny')).toBe(before + 2);
    expect(await proxyCount('deny')).toBe(denied + 2);
  });

  it('answers 503 unavailable with Retry-After when the backend does not answer in time, and drops the call', async () => {
    byCookie.set('sid=slow', 'hold');
    const before = await reasonCount('proxy_timeout');
    const r = await refused(gw.url, { headers: { cookie: 'sid=slow' } });
    expect(r.status).toBe(503);
    expect(r.body.error).toEqual({ code: 'unavailable', message: 'the connect proxy did not answer in time' });
    expect(r.headers['retry-after']).toBe('5');
    await backend.calls.at(-1)!.gone;
    expect(await reasonCount('proxy_timeout')).toBe(before + 1);
    backend.release({ status: 500, json: {} });
  });

  const bad: Array<[string, Answer, string]> = [
    ['a 500', { status: 500, json: { error: 'boom' } }, 'proxy_bad_status'],
    ['a 404', { status: 404, body: 'not found', contentType: 'text/plain' }, 'proxy_bad_status'],
    ['a body that is not JSON', { body: 'user=42' }, 'proxy_bad_response'],
    ['no user', { json: { expiresIn: 60 } }, 'proxy_bad_response'],
    ['a numeric user', { json: { user: 42, expiresIn: 60 } }, 'proxy_bad_response'],
    ['expiresIn 0', { json: { user: 'x', expiresIn: 0 } }, 'proxy_bad_response'],
    ['expiresIn as a string', { json: { user: 'x', expiresIn: '60' } }, 'proxy_bad_response'],
    ['channels as a string', { json: { user: 'x', expiresIn: 60, channels: 'chat:*' } }, 'proxy_bad_response'],
    ['an invalid channel pattern', { json: { user: 'x', expiresIn: 60, publish: ['a b'] } }, 'proxy_bad_response'],
    ['subs with a pattern', { json: { user: 'x', expiresIn: 60, subs: ['chat:*'] } }, 'proxy_bad_response'],
    ['info over 1024 bytes', { json: { user: 'x', expiresIn: 60, info: { x: 'y'.repeat(1017) } } }, 'proxy_bad_response'],
    ['a 10 MB body', { body: Buffer.alloc(10 * 1024 * 1024, ' ') }, 'proxy_bad_response'],
  ];
  for (const [what, answer, reason] of bad) {
    it(`answers 503 unavailable with Retry-After for ${what} (${reason})`, async () => {
      const cookie = `sid=bad-${uid()}`;
      byCookie.set(cookie, answer);
      const before = await reasonCount(reason);
      const r = await refused(gw.url, { headers: { cookie } });
      expect(r.status).toBe(503);
      expect(r.body.error?.code).toBe('unavailable');
      expect(r.headers['retry-after']).toBe('5');
      expect(await reasonCount(reason)).toBe(before + 1);
    });
  }

  it('answers 503 at once beyond PUBGATE_PROXY_CONCURRENCY calls in flight, and completes the held upgrades once answered', async () => {
    byCookie.set('sid=held', 'hold');
    const before = calls();
    const pending = [1, 2].map(() => new WebSocket(gw.url, ['pubgate.v1'], { headers: { cookie: 'sid=held' } }));
    const opened = pending.map((ws) => new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    }));
    await backend.waitForCalls(before + 2, PATH);
    const overloaded = await reasonCount('proxy_overloaded');
    const r = await refused(gw.url, { headers: { cookie: 'sid=whatever' } });
    expect(r.status).toBe(503);
    expect(r.body.error).toEqual({ code: 'unavailable', message: 'too many proxy calls in flight on this node' });
    expect(r.headers['retry-after']).toBe('5');
    expect(calls()).toBe(before + 2);
    expect(backend.held()).toBe(2);
    expect(await reasonCount('proxy_overloaded')).toBe(overloaded + 1);
    expect(backend.release({ json: { user: 'u-held', expiresIn: 60 } })).toBe(2);
    await Promise.all(opened);
    for (const ws of pending) ws.close();
  });

  it('leaves no connection and no upgrade when the client goes away while the backend thinks, and aborts the call', async () => {
    byCookie.set('sid=thinking', 'hold');
    const before = calls();
    const [aborted, accepted, proxyAborted] = [await reasonCount('aborted'), await metric(gw.admin, 'pubgate_handshakes_total', { result: 'accepted' }), await proxyCount('aborted')];
    await pollUntil(async () => (await metric(gw.admin, 'pubgate_connections')) === clients.length, 'earlier connections counted');
    const openBefore = await metric(gw.admin, 'pubgate_connections');
    const sock = tcpConnect(gw.port, '127.0.0.1', () => sock.write(upgradeRequestText({ host: `127.0.0.1:${gw.port}`, lines: ['Cookie: sid=thinking'] })));
    let answered = '';
    sock.on('data', (d: Buffer) => (answered += d.toString('latin1')));
    sock.on('error', () => undefined);
    await backend.waitForCalls(before + 1, PATH);
    sock.destroy();
    // The gateway aborts its call: the backend sees it go before answering.
    await backend.calls.at(-1)!.gone;
    await pollUntil(async () => (await reasonCount('aborted')) === aborted + 1, 'the abort counted');
    expect(await proxyCount('aborted')).toBe(proxyAborted + 1);
    expect(backend.release({ json: { user: 'late', expiresIn: 60 } })).toBe(0);
    expect(await metric(gw.admin, 'pubgate_handshakes_total', { result: 'accepted' })).toBe(accepted);
    expect(await metric(gw.admin, 'pubgate_connections')).toBe(openBefore);
    expect(await metric(gw.admin, 'pubgate_proxy_in_flight', { proxy: 'connect' })).toBe(0);
    expect(answered).toBe('');
    // The node goes on: the next cookie upgrade is accepted.
    byCookie.set('sid=after', grant('u-after'));
    expect((await open('sid=after')).welcome).toMatchObject({ user: 'u-after' });
  });

  it('refreshes a proxied connection by asking the backend again with the same cookie, IP and Origin (no token needed)', async () => {
    const cookie = `sid=refresh-${uid()}`;
    let answer: Answer = grant('u-refresh', { channels: ['chat:*'] });
    byCookie.set(cookie, () => answer);
    const c = await open(cookie, { origin: ORIGIN });
    expect(errorOf(await c.request({ type: 'subscribe', id: id(), channel: 'news' }))?.code).toBe('forbidden');
    const before = calls();
    answer = grant('u-refresh', { expiresIn: 7200, channels: ['chat:*', 'news'] });
    expect(await c.request({ type: 'refresh', id: 901 })).toEqual({ type: 'reply', id: 901 });
    expect(calls()).toBe(before + 1);
    expect(backend.calls.at(-1)!.body).toEqual({ cookie, ip: '127.0.0.1', origin: ORIGIN });
    expect((await c.request({ type: 'subscribe', id: id(), channel: 'news' })).error).toBeUndefined();
    // A token in the frame is ignored: the backend decides.
    expect(await c.request({ type: 'refresh', id: 902, token: await token({ sub: 'someone-else' }) })).toEqual({ type: 'reply', id: 902 });
    expect(calls()).toBe(before + 2);
  });

  it('answers a refused, mismatched or failed refresh with an error and keeps the connection', async () => {
    const cookie = `sid=refresh-${uid()}`;
    let answer: Answer = grant('u-r2');
    byCookie.set(cookie, () => answer);
    const c = await open(cookie);
    const rejected = await metric(gw.admin, 'pubgate_token_refreshes_total', { result: 'rejected' });
    answer = { status: 401, json: {} };
    expect(errorOf(await c.request({ type: 'refresh', id: id() }))).toEqual({ code: 'unauthorized', message: 'the connect proxy refused the refresh' });
    answer = grant('someone-else');
    expect(errorOf(await c.request({ type: 'refresh', id: id() }))).toEqual({ code: 'forbidden', message: 'the connect proxy answered another user' });
    answer = { status: 500, json: {} };
    expect(errorOf(await c.request({ type: 'refresh', id: id() }))?.code).toBe('unavailable');
    expect(await metric(gw.admin, 'pubgate_token_refreshes_total', { result: 'rejected' })).toBe(rejected + 3);
    expect(await c.request({ type: 'ping', id: id() })).toMatchObject({ type: 'reply' });
  });

  it('still needs a token to refresh a connection that came with one', async () => {
    const c = await connect(gw.url, { token: await token({ sub: 'u-tok' }) });
    clients.push(c);
    expect(errorOf(await c.request({ type: 'refresh', id: id() }))).toEqual({ code: 'bad_request', message: 'refresh needs a token' });
  });

  it('closes a proxied connection with 4001 when its expiresIn passes without a refresh', async () => {
    byCookie.set('sid=short', grant('u-short', { expiresIn: 1 }));
    const c = await open('sid=short');
    expect(c.welcome.expiresIn).toBeLessThanOrEqual(1);
    expect((await c.closed).code).toBe(4001);
  });

  it('logs failures in one aggregated line, never with a cookie or the key', async () => {
    const line = await gw.waitForLog((l) => l.msg === 'proxy calls failed', 20_000);
    expect(line).toMatchObject({ level: 'warn', component: 'proxy' });
    expect((line.counts as Record<string, number>)['connect:bad_response']).toBeGreaterThan(0);
    const all = JSON.stringify(gw.lines);
    expect(all).not.toContain('s3cr3t-session-value');
    expect(all).not.toContain(KEY);
  });
});

describe('the connect proxy when the backend is down', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ PUBGATE_CONNECT_PROXY_URL: `http://127.0.0.1:${await freePort()}/connect` });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('answers 503 unavailable with Retry-After for a refused connection, and tokens still work', async () => {
    const r = await refused(gw.url, { headers: { cookie: 'sid=x' } });
    expect(r.status).toBe(503);
    expect(r.body.error).toEqual({ code: 'unavailable', message: 'the connect proxy cannot be reached' });
    expect(r.headers['retry-after']).toBe('5');
    expect(await metric(gw.admin, 'pubgate_handshake_rejections_total', { reason: 'proxy_error' })).toBe(1);
    const c = await connect(gw.url, { token: await token({ sub: 'still-fine' }) });
    expect(c.welcome).toMatchObject({ user: 'still-fine' });
    await c.close();
  });
});
