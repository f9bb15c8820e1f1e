/**
 * Limits at the edge: the publish API's per-key rate (PUBGATE_API_RATE), the
 * request-head limit (24 KiB, then uWS's 431), and which client IP the
 * handshake rate limit counts: the TCP peer, or X-Forwarded-For only from
 * PUBGATE_TRUSTED_PROXIES (the right-most untrusted hop).
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token } from '../helpers/client.js';
import { TEST_API_KEY, metric, publish, type GatewayProcess, type LogLine } from '../helpers/gateway.js';
import { expectRejectLogged, logMark, rawUpgrade, startGateways, waitUntil } from '../helpers/handshake.js';
import { record } from '../helpers/recorder.js';

const KEY_A = 'limits-key-a';
const KEY_B = 'limits-key-b';

let apiRated: GatewayProcess; // PUBGATE_API_RATE=1 (burst 2), keys A and B
let plain: GatewayProcess; // defaults (request-head limit)
let trusted32: GatewayProcess; // trusted proxy 127.0.0.1/32, ipHandshakeRate 1
let untrusted: GatewayProcess; // no trusted proxies, ipHandshakeRate 1
let trusted8: GatewayProcess; // trusted proxies 127.0.0.0/8, ipHandshakeRate 1
let slowRate: GatewayProcess; // ipHandshakeRate 0.25 (one upgrade per 4 s)

beforeAll(async () => {
  [apiRated, plain, trusted32, untrusted, trusted8, slowRate] = await startGateways([
    { PUBGATE_API_RATE: '1', PUBGATE_API_KEYS: `${KEY_A},${KEY_B}` },
    {},
    { PUBGATE_TRUSTED_PROXIES: '127.0.0.1/32', PUBGATE_IP_HANDSHAKE_RATE: '1' },
    { PUBGATE_IP_HANDSHAKE_RATE: '1' },
    { PUBGATE_TRUSTED_PROXIES: '127.0.0.0/8', PUBGATE_IP_HANDSHAKE_RATE: '1' },
    { PUBGATE_IP_HANDSHAKE_RATE: '0.25' },
  ]);
});
afterAll(async () => {
  await Promise.all([apiRated, plain, trusted32, untrusted, trusted8, slowRate].map((g) => g?.stop()));
});

const userToken = (sub: string): Promise<string> => token({ sub, channels: ['news', 'rl'] });

describe('PUBGATE_API_RATE (per API key, burst 2x)', () => {
  it('answers the third quick publish with one key 429 rate_limited and Retry-After, publishes nothing for it, and leaves another key alone', async () => {
    const sub = await connect(apiRated.url, { token: await userToken('rl-sub') });
    const rec = record(sub.ws);
    expect(await sub.request({ type: 'subscribe', id: 1, channel: 'rl' })).toEqual({ type: 'reply', id: 1 });
    const from = rec.mark();

    // Three at once, so all fall well inside one refill second.
    const answers = await Promise.all([1, 2, 3].map(async (n) => {
      const res = await publish(apiRated, { channel: 'rl', data: { n } }, KEY_A);
      return { n, status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as unknown };
    }));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 429]);
    const limited = answers.find((a) => a.status === 429)!;
    expect(limited.body).toEqual({ error: { code: 'rate_limited', message: expect.any(String) } });
    expect(limited.retryAfter).toMatch(/^[1-9]\d*$/);
    // At 1 request per second a token is back within a second.
    expect(Number(limited.retryAfter)).toBe(1);

    // Another key has its own bucket: its burst of two is whole.
    for (const n of [10, 11]) expect((await publish(apiRated, { channel: 'rl', data: { n } }, KEY_B)).status).toBe(200);

    // The 429'd message never reaches a subscriber; the accepted ones do.
    await rec.waitFor((f) => f.type === 'message' && (f.data as { n: number }).n === 11, from);
    const delivered = rec.since(from).filter((f) => f.type === 'message').map((f) => (f.data as { n: number }).n).sort((a, b) => a - b);
    const accepted = answers.filter((a) => a.status === 200).map((a) => a.n);
    expect(delivered).toEqual([...accepted, 10, 11]);

    // Retry-After means what it says: after that long, the key is served again.
    await delay(Number(limited.retryAfter) * 1000);
    expect((await publish(apiRated, { channel: 'rl', data: { n: 4 } }, KEY_A)).status).toBe(200);
    await sub.close();
  });
});

interface RawHttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** One HTTP/1.1 request on a fresh connection (node:http, so any header size can be sent). */
function rawRequest(url: string, method: string, headers: Record<string, string>, body?: string): Promise<RawHttpAnswer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

describe('request head limit (24 KiB)', () => {
  it('answers a 30 KiB request head with uWS 431 (publish API and upgrade) and keeps serving', async () => {
    const big = { 'x-padding': 'a'.repeat(30 * 1024) };
    const pub = await rawRequest(`${plain.http}/v1/publish`, 'POST', {
      ...big,
      authorization: `Bearer ${TEST_API_KEY}`,
      'content-type': 'application/json',
    }, '{"channel":"news","data":1}');
    expect(pub.status).toBe(431);
    // uWS's own answer: no JSON error body (docs/protocol.md, Handshake).
    expect(() => JSON.parse(pub.body) as unknown).toThrow();

    const before = await metric(plain.admin, 'pubgate_handshakes_total');
    const up = await rawUpgrade(plain.url, { ...big, authorization: `Bearer ${await userToken('big-head')}` });
    expect(up.status).toBe(431);
    // uWS answered before pubgate's handler ran: no handshake counted.
    expect(await metric(plain.admin, 'pubgate_handshakes_total')).toBe(before);

    // A 20 KiB head is read whole and answered normally.
    const ok = await rawRequest(`${plain.http}/v1/publish`, 'POST', {
      'x-padding': 'a'.repeat(20 * 1024),
      authorization: `Bearer ${TEST_API_KEY}`,
      'content-type': 'application/json',
    }, '{"channel":"news","data":2}');
    expect(ok.status).toBe(200);

    // The node keeps serving: publish API, WebSocket, admin.
    expect(plain.proc.exitCode).toBeNull();
    expect((await publish(plain, { channel: 'news', data: 3 })).status).toBe(200);
    const c = await connect(plain.url, { token: await userToken('after-431') });
    expect(c.welcome).toMatchObject({ type: 'welcome', user: 'after-431' });
    await c.close();
    expect((await fetch(`${plain.admin}/healthz`)).status).toBe(200);
  });
});

/** Log lines after `mark` with this message. */
const linesAfter = (gw: GatewayProcess, mark: number, msg: string): LogLine[] => gw.lines.slice(mark).filter((l) => l.msg === msg);

/** Waits until `n` `connection open` lines were logged after `mark`; returns their `ip` fields, sorted. */
async function openedIps(gw: GatewayProcess, mark: number, n: number): Promise<string[]> {
  await waitUntil(() => linesAfter(gw, mark, 'connection open').length >= n, `${n} connection open lines`);
  return linesAfter(gw, mark, 'connection open').map((l) => String(l.ip)).sort();
}

describe('X-Forwarded-For and the handshake rate limit (PUBGATE_IP_HANDSHAKE_RATE=1, burst 2)', () => {
  it('from a trusted proxy (127.0.0.1/32): counts the forwarded client, so 10.1.1.1 is limited and 10.2.2.2 is not', async () => {
    const t = await userToken('xff');
    const mark = logMark(trusted32);
    const answers = await Promise.all([1, 2, 3].map(() =>
      rawUpgrade(trusted32.url, { authorization: `Bearer ${t}`, 'x-forwarded-for': '10.1.1.1' })));
    expect(answers.map((a) => a.status).sort()).toEqual([101, 101, 429]);
    const r = answers.find((a) => a.status === 429)!;
    expect(JSON.parse(r.body)).toEqual({ error: { code: 'rate_limited', message: expect.any(String) } });
    expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    const line = await expectRejectLogged(trusted32, mark, 'rate_limited', 'ip_rate');
    expect(line.ip).toBe('10.1.1.1');

    // Another forwarded client through the same proxy has its own bucket.
    const other = await rawUpgrade(trusted32.url, { authorization: `Bearer ${t}`, 'x-forwarded-for': '10.2.2.2' });
    expect(other.status).toBe(101);
    expect(await openedIps(trusted32, mark, 3)).toEqual(['10.1.1.1', '10.1.1.1', '10.2.2.2']);
  });

  it('from an untrusted peer (no PUBGATE_TRUSTED_PROXIES): ignores X-Forwarded-For, every upgrade counts against 127.0.0.1', async () => {
    const t = await userToken('xff-ignored');
    const mark = logMark(untrusted);
    // Four at once, inside one refill second: two pass, whatever X-Forwarded-For claims.
    const xffs = ['10.1.1.1', '10.1.1.1', '10.1.1.1', '10.2.2.2'];
    const answers = await Promise.all(xffs.map((x) => rawUpgrade(untrusted.url, { authorization: `Bearer ${t}`, 'x-forwarded-for': x })));
    expect(answers.map((a) => a.status).sort()).toEqual([101, 101, 429, 429]);
    await waitUntil(() => linesAfter(untrusted, mark, 'handshake rejected').length >= 2, 'two rejection lines');
    const rejected = linesAfter(untrusted, mark, 'handshake rejected');
    expect(rejected.map((l) => [l.code, l.ip])).toEqual([['rate_limited', '127.0.0.1'], ['rate_limited', '127.0.0.1']]);
    expect(await openedIps(untrusted, mark, 2)).toEqual(['127.0.0.1', '127.0.0.1']);
  });

  it('from a trusted proxy (127.0.0.0/8): a spoofed chain resolves to the right-most untrusted hop, skipping trusted hops', async () => {
    const t = await userToken('xff-chain');
    const mark = logMark(trusted8);
    // A client that prepends a forged 10.9.9.9 to its header; the proxy appends the real 10.1.1.1.
    // All three are the same client (10.1.1.1): two pass, one is limited.
    const xffs = ['10.9.9.9, 10.1.1.1', '10.9.9.9,10.1.1.1, 127.0.0.5', '10.1.1.1'];
    const answers = await Promise.all(xffs.map((x) => rawUpgrade(trusted8.url, { authorization: `Bearer ${t}`, 'x-forwarded-for': x })));
    expect(answers.map((a) => a.status).sort()).toEqual([101, 101, 429]);
    const line = await expectRejectLogged(trusted8, mark, 'rate_limited', 'ip_rate');
    expect(line.ip).toBe('10.1.1.1');
    expect(await openedIps(trusted8, mark, 2)).toEqual(['10.1.1.1', '10.1.1.1']);

    // The forged address was never charged: its own bucket is whole.
    const forged = await rawUpgrade(trusted8.url, { authorization: `Bearer ${t}`, 'x-forwarded-for': '10.9.9.9' });
    expect(forged.status).toBe(101);
    expect(await openedIps(trusted8, mark, 3)).toEqual(['10.1.1.1', '10.1.1.1', '10.9.9.9']);

    // A rejection for another reason logs the resolved client too (no token: 401).
    const m2 = logMark(trusted8);
    const anon = await rawUpgrade(trusted8.url, { 'x-forwarded-for': '10.9.9.9, 10.3.3.3' });
    expect(anon.status).toBe(401);
    expect((await expectRejectLogged(trusted8, m2, 'unauthorized')).ip).toBe('10.3.3.3');
  });
});

describe('X-Forwarded-For sent as several header lines', () => {
  /** An upgrade request (no token) whose X-Forwarded-For goes out as one header line per value. */
  function upgradeWithXffLines(url: string, lines: string[]): Promise<number> {
    const u = new URL(url.replace(/^ws/, 'http'));
    return new Promise((resolve, reject) => {
      const req = request({
        host: u.hostname, port: u.port, path: u.pathname, method: 'GET', agent: false,
        headers: {
          connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13',
          'sec-websocket-key': randomBytes(16).toString('base64'), 'x-forwarded-for': lines,
        },
      });
      req.once('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.once('upgrade', (res, socket) => {
        socket.destroy();
        resolve(res.statusCode ?? 0);
      });
      req.once('error', reject);
      req.end();
    });
  }

  // uWS's getHeader returns only the first line of a repeated header; a proxy
  // that appends its own X-Forwarded-For line after a client's forged one must
  // not let the client choose its address (RFC 9110 §5.3).
  it('reads them as one list, in order, and takes the right-most untrusted hop', async () => {
    const mark = logMark(trusted32);
    // The client forged 10.66.66.66; the trusted proxy (127.0.0.1) appended the real 10.77.77.77 on its own line.
    expect(await upgradeWithXffLines(trusted32.url, ['10.66.66.66', '10.77.77.77'])).toBe(401);
    expect((await expectRejectLogged(trusted32, mark, 'unauthorized')).ip).toBe('10.77.77.77');
  });
});

describe('a handshake rate under 0.5 per second', () => {
  // The bucket's burst is never below one whole token, whatever the rate.
  it('accepts the first upgrade of a fresh client at PUBGATE_IP_HANDSHAKE_RATE=0.25 (one every 4 s)', async () => {
    const r = await rawUpgrade(slowRate.url, { authorization: `Bearer ${await userToken('slow-rate')}` });
    expect(r.status).toBe(101);
  });

});
