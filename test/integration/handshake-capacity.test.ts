/**
 * Handshake rule 4 (capacity: maxConnections, ipHandshakeRate, draining) and
 * the HTTP level of the upgrade (version, plain GET, admin paths), against
 * real gateway processes, with the metric and warn line of each reject.
 */
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, refused, token, type Client } from '../helpers/client.js';
import { metric, type GatewayProcess } from '../helpers/gateway.js';
import { expectRejectLogged, logAfter, logMark, rawUpgrade, startGateways, waitUntil } from '../helpers/handshake.js';

let capped: GatewayProcess; // maxConnections 2
let limited: GatewayProcess; // ipHandshakeRate 1 (burst 2)
let plain: GatewayProcess; // defaults
let drainer: GatewayProcess; // drainSeconds 5; SIGTERMed by its test, SIGTERMed again (exit at once) by afterAll

beforeAll(async () => {
  [capped, limited, plain, drainer] = await startGateways([
    { PUBGATE_MAX_CONNECTIONS: '2' },
    { PUBGATE_IP_HANDSHAKE_RATE: '1' },
    {},
    { PUBGATE_DRAIN_SECONDS: '5' },
  ]);
});
afterAll(async () => {
  await Promise.all([capped, limited, plain, drainer].map((g) => g?.stop()));
});

const userToken = (sub: string): Promise<string> => token({ sub, channels: ['news'] });

const handshakes = (gw: GatewayProcess, labels: Record<string, string>): Promise<number> =>
  metric(gw.admin, 'pubgate_handshakes_total', labels);

describe('maxConnections', () => {
  it('answers the third upgrade at PUBGATE_MAX_CONNECTIONS=2 with 503 overloaded, and accepts again once one closes', async () => {
    const c1 = await connect(capped.url, { token: await userToken('cap-1') });
    const c2 = await connect(capped.url, { token: await userToken('cap-2') });
    expect(await metric(capped.admin, 'pubgate_connections')).toBe(2);
    const before = await handshakes(capped, { result: 'rejected', reason: 'overloaded' });

    const mark = logMark(capped);
    const r = await refused(capped.url, { token: await userToken('cap-3') });
    expect(r.status).toBe(503);
    expect(r.body).toEqual({ error: { code: 'overloaded', message: expect.any(String) } });
    expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    await expectRejectLogged(capped, mark, 'overloaded');
    expect(await handshakes(capped, { result: 'rejected', reason: 'overloaded' })).toBe(before + 1);
    expect(await metric(capped.admin, 'pubgate_connections')).toBe(2);

    await c1.close();
    await waitUntil(async () => (await metric(capped.admin, 'pubgate_connections')) === 1, 'pubgate_connections to drop to 1');
    const c3 = await connect(capped.url, { token: await userToken('cap-3') });
    expect(c3.welcome).toMatchObject({ type: 'welcome', user: 'cap-3' });
    expect(await metric(capped.admin, 'pubgate_connections')).toBe(2);
    await Promise.all([c2.close(), c3.close()]);
  });
});

describe('ipHandshakeRate', () => {
  it('answers the third quick upgrade from one IP at rate 1 (burst 2) with 429 rate_limited and Retry-After, whatever X-Forwarded-For says', async () => {
    const t = await userToken('rate');
    const before = await handshakes(limited, { result: 'rejected', reason: 'rate_limited' });
    const mark = logMark(limited);
    // Three upgrades at once, so all three fall well inside one refill second. Each claims
    // another client in X-Forwarded-For, which counts for nothing from an untrusted peer.
    const answers = await Promise.all([1, 2, 3].map((n) =>
      rawUpgrade(limited.url, { authorization: `Bearer ${t}`, 'x-forwarded-for': `203.0.113.${n}` })));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([101, 101, 429]);
    const r = answers.find((a) => a.status === 429)!;
    expect(JSON.parse(r.body)).toEqual({ error: { code: 'rate_limited', message: expect.any(String) } });
    expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    const line = await expectRejectLogged(limited, mark, 'rate_limited');
    expect(line.ip).toBe('127.0.0.1');
    expect(await handshakes(limited, { result: 'rejected', reason: 'rate_limited' })).toBe(before + 1);
  });
});

describe('draining', () => {
  it('answers upgrades with 503 draining while the node drains, and /readyz with 503', async () => {
    // Several open connections make the drain spread its 1001 closes over the window.
    const clients: Client[] = [];
    for (let i = 0; i < 4; i++) clients.push(await connect(drainer.url, { token: await userToken(`drain-${i}`) }));
    const mark = logMark(drainer);
    drainer.proc.kill('SIGTERM');
    await logAfter(drainer, mark, (l) => l.msg === 'draining');

    const r = await refused(drainer.url, { token: await userToken('late') });
    expect(r.status).toBe(503);
    expect(r.body).toEqual({ error: { code: 'draining', message: expect.any(String) } });
    expect(r.headers['retry-after']).toMatch(/^[1-9]\d*$/);
    await expectRejectLogged(drainer, mark, 'draining');
    const ready = await fetch(`${drainer.admin}/readyz`);
    expect(ready.status).toBe(503);
    expect(await handshakes(drainer, { result: 'rejected', reason: 'draining' })).toBe(1);
    // afterAll's second SIGTERM ends the drain at once; the clients go with the process.
  });
});

describe('HTTP level', () => {
  it('answers Sec-WebSocket-Version: 8 with 426 and Sec-WebSocket-Version: 13, counted and logged', async () => {
    const before = await handshakes(plain, { result: 'rejected', reason: 'bad_request' });
    const mark = logMark(plain);
    const r = await rawUpgrade(plain.url, { 'sec-websocket-version': '8', authorization: `Bearer ${await userToken('v8')}` });
    expect(r.status).toBe(426);
    expect(r.headers['sec-websocket-version']).toBe('13');
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'bad_request' } });
    await expectRejectLogged(plain, mark, 'bad_request', 'bad_version');
    expect(await handshakes(plain, { result: 'rejected', reason: 'bad_request' })).toBe(before + 1);
  });

  it('is refused the same way by a real client speaking protocol version 8', async () => {
    const ws = new WebSocket(plain.url, { protocolVersion: 8, headers: { authorization: `Bearer ${await userToken('v8')}` } });
    const status = await new Promise<number>((resolve, reject) => {
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      ws.once('open', () => reject(new Error('upgrade was accepted')));
      ws.once('error', reject);
    });
    expect(status).toBe(426);
  });

  it('answers a plain GET /ws without upgrade headers with 426', async () => {
    const before = await handshakes(plain, { result: 'rejected', reason: 'bad_request' });
    const res = await fetch(`${plain.http}/ws`);
    expect(res.status).toBe(426);
    expect(await res.json()).toMatchObject({ error: { code: 'bad_request' } });
    expect(await handshakes(plain, { result: 'rejected', reason: 'bad_request' })).toBe(before + 1);
  });

  it.each<[string, Record<string, string | undefined>]>([
    ['no Upgrade header', { upgrade: undefined }],
    ['no Connection header', { connection: undefined }],
    ['Upgrade: h2c', { upgrade: 'h2c' }],
    ['Connection: keep-alive only', { connection: 'keep-alive' }],
  ])('answers a GET with a Sec-WebSocket-Key but %s with 426, not 101 (a proxy stripped the upgrade)', async (_what, headers) => {
    const mark = logMark(plain);
    const r = await rawUpgrade(plain.url, { authorization: `Bearer ${await userToken('no-upgrade')}`, ...headers });
    expect(r.status).toBe(426);
    expect(r.headers.upgrade).toBe('websocket');
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'bad_request' } });
    await expectRejectLogged(plain, mark, 'bad_request', 'not_upgrade');
  });

  it('accepts the header spellings browsers send (Connection: keep-alive, Upgrade; Upgrade: WebSocket)', async () => {
    const t = await userToken('spelling');
    const r = await rawUpgrade(plain.url, { authorization: `Bearer ${t}`, connection: 'keep-alive, Upgrade', upgrade: 'WebSocket' });
    expect(r.status).toBe(101);
  });

  it.each(['/metrics', '/healthz', '/readyz', '/admin', '/admin/', '/admin/console.js', '/admin/api/overview'])('answers the admin path %s with 404 on the public port', async (path) => {
    const res = await fetch(`${plain.http}${path}`);
    expect(res.status).toBe(404);
    const body = await res.text();
    expect(body).not.toContain('pubgate_');
    expect(JSON.parse(body)).toMatchObject({ error: { code: 'not_found' } });
  });

  it('serves /healthz, /readyz and /metrics with 200 on the admin port', async () => {
    for (const path of ['/healthz', '/readyz']) expect((await fetch(`${plain.admin}${path}`)).status).toBe(200);
    const m = await fetch(`${plain.admin}/metrics`);
    expect(m.status).toBe(200);
    expect(await m.text()).toContain('pubgate_handshakes_total');
  });

  it('counts an accepted handshake under result="accepted"', async () => {
    const accepted = await handshakes(plain, { result: 'accepted' });
    const c = await connect(plain.url, { token: await userToken('counted') });
    expect(await handshakes(plain, { result: 'accepted' })).toBe(accepted + 1);
    await c.close();
  });
});
