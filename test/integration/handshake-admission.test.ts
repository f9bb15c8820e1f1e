/**
 * Edge admission (src/transport/admission.ts) against real gateway processes,
 * at the raw-socket level: ambiguous framing (repeated single-valued headers,
 * Transfer-Encoding, a body) refused with 400 before the upgrade; the per-IP
 * handshake limit taken before the token is verified (a bad-token flood reaches
 * the verifier at most the bucket's burst); IPv6 clients bucketed by /64;
 * rejections logged as aggregated counts, not one line each.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { logAfter, logMark, rawExchange, rawUpgrade, startGateways, upgradeRequestText, type RawExchange } from '../helpers/handshake.js';

const ORIGIN = 'https://app.example.com';
/** PUBGATE_IP_HANDSHAKE_RATE 0.02: a burst of one upgrade, then one every 50 s (nothing refills during a test). */
const SLOW_RATE = { PUBGATE_IP_HANDSHAKE_RATE: '0.02' };

let plain: GatewayProcess; // no handshake rate; ORIGIN allowed
let flood: GatewayProcess; // SLOW_RATE, log level info (the production default)
let proxied: GatewayProcess; // SLOW_RATE, 127.0.0.1 is a trusted proxy

beforeAll(async () => {
  [plain, flood, proxied] = await startGateways([
    { PUBGATE_ALLOWED_ORIGINS: ORIGIN },
    { ...SLOW_RATE, PUBGATE_LOG_LEVEL: 'info' },
    { ...SLOW_RATE, PUBGATE_TRUSTED_PROXIES: '127.0.0.1/32' },
  ]);
});
afterAll(async () => {
  await Promise.all([plain, flood, proxied].map((g) => g?.stop()));
});

const userToken = (sub: string): Promise<string> => token({ sub, channels: ['news'] });
const rejections = (gw: GatewayProcess, reason: string): Promise<number> => metric(gw.admin, 'pubgate_handshake_rejections_total', { reason });
const accepted = (gw: GatewayProcess): Promise<number> => metric(gw.admin, 'pubgate_handshakes_total', { result: 'accepted' });

/** Expects the JSON 400 of an admission refusal, the connection closed by the server, and no upgrade. */
function expectRefused400(r: RawExchange, message: string): void {
  expect(r.status, r.raw.slice(0, 200)).toBe(400);
  expect(JSON.parse(r.body)).toEqual({ error: { code: 'bad_request', message } });
  expect(r.closedByServer).toBe(true);
  // One answer, and it is not a 101: nothing after the head was taken for WebSocket data or another request.
  expect(r.raw.match(/HTTP\/1\.1 /g)).toHaveLength(1);
}

describe('framing refused before the upgrade (400 bad_request, connection closed)', () => {
  const host = (): string => `127.0.0.1:${plain.port}`;

  it('accepts the same request without the duplicate (the control for every case below)', async () => {
    const t = await userToken('adm-control');
    const r = await rawExchange(plain.port, upgradeRequestText({
      host: host(), lines: [`Origin: ${ORIGIN}`, `Authorization: Bearer ${t}`, 'Content-Length: 0'],
    }));
    expect(r.status).toBe(101);
  });

  it('refuses each of Host, Origin, Authorization, Sec-WebSocket-Key and Sec-WebSocket-Version repeated, with identical and with differing values', async () => {
    const t = await userToken('adm-dup');
    const other = await userToken('adm-dup-other');
    const key = randomBytes(16).toString('base64');
    const cases: { header: string; lines: string[] }[] = [
      { header: 'Host', lines: [`Host: 127.0.0.1:${plain.port}`] },
      { header: 'Host', lines: ['Host: evil.example'] },
      { header: 'Origin', lines: [`Origin: ${ORIGIN}`, `Origin: ${ORIGIN}`] },
      { header: 'Origin', lines: [`Origin: ${ORIGIN}`, 'Origin: https://evil.example'] },
      { header: 'Authorization', lines: [`Authorization: Bearer ${t}`, `Authorization: Bearer ${t}`] },
      { header: 'Authorization', lines: [`Authorization: Bearer ${t}`, `Authorization: Bearer ${other}`] },
      { header: 'Sec-WebSocket-Key', lines: [`Sec-WebSocket-Key: ${key}`] },
      { header: 'Sec-WebSocket-Key', lines: [`Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`] },
      { header: 'Sec-WebSocket-Version', lines: ['Sec-WebSocket-Version: 13'] },
      { header: 'Sec-WebSocket-Version', lines: ['sec-websocket-version: 8'] },
    ];
    const acceptedBefore = await accepted(plain);
    const before = await rejections(plain, 'duplicate_header');
    const mark = logMark(plain);
    for (const c of cases) {
      const lines = c.header === 'Authorization' ? c.lines : [`Authorization: Bearer ${t}`, ...c.lines];
      const r = await rawExchange(plain.port, upgradeRequestText({ host: host(), key, lines }));
      expectRefused400(r, `duplicate ${c.header} header`);
    }
    expect(await rejections(plain, 'duplicate_header')).toBe(before + cases.length);
    expect(await accepted(plain)).toBe(acceptedBefore);
    const line = await logAfter(plain, mark, (l) => l.msg === 'handshake rejected');
    expect(line).toMatchObject({ code: 'bad_request', reason: 'duplicate_header', ip: '127.0.0.1' });
    // No token in any line: neither the refused request's nor the other one's.
    for (const l of plain.lines.slice(mark)) expect(JSON.stringify(l)).not.toMatch(new RegExp(`${t}|${other}`));
  });

  it('refuses Transfer-Encoding on an upgrade, whatever its value', async () => {
    const t = await userToken('adm-te');
    const before = await rejections(plain, 'transfer_encoding');
    for (const te of ['chunked', 'gzip, chunked', 'identity']) {
      const r = await rawExchange(plain.port, upgradeRequestText({
        host: host(), lines: [`Authorization: Bearer ${t}`, `Transfer-Encoding: ${te}`],
        // A chunked body holding a whole second request: it must be neither WebSocket data nor a request.
        body: '1c\r\nGET /v1/publish HTTP/1.1\r\n\r\n\r\n0\r\n\r\n',
      }));
      expectRefused400(r, 'an upgrade request cannot carry Transfer-Encoding');
    }
    expect(await rejections(plain, 'transfer_encoding')).toBe(before + 3);
  });

  it('refuses a Connection header listing close (uWS would cut an upgrade completed after an await: uWebSockets #1928)', async () => {
    const t = await userToken('adm-conn-close');
    const before = await rejections(plain, 'connection_close');
    const acceptedBefore = await accepted(plain);
    // upgradeRequestText sends `Connection: Upgrade`; close comes on a line of its own, or beside it in one more line.
    for (const line of ['Connection: close', 'Connection: keep-alive, close']) {
      const r = await rawExchange(plain.port, upgradeRequestText({ host: host(), lines: [`Authorization: Bearer ${t}`, line] }));
      expectRefused400(r, 'an upgrade request cannot carry Connection: close');
    }
    expect(await rejections(plain, 'connection_close')).toBe(before + 2);
    expect(await accepted(plain)).toBe(acceptedBefore);
  });

  it('refuses a body (Content-Length other than 0), and a repeated Content-Length', async () => {
    const t = await userToken('adm-body');
    const auth = `Authorization: Bearer ${t}`;
    const before = await rejections(plain, 'body');
    const smuggled = 'GET /v1/publish HTTP/1.1\r\nHost: x\r\n\r\n';
    const withBody = await rawExchange(plain.port, upgradeRequestText({
      host: host(), lines: [auth, `Content-Length: ${smuggled.length}`], body: smuggled,
    }));
    expectRefused400(withBody, 'an upgrade request cannot carry a body (Content-Length must be 0)');
    // A client frame sent as the "body" of the upgrade (masked text frame "hi").
    const frame = Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]).toString('latin1');
    const withFrame = await rawExchange(plain.port, upgradeRequestText({ host: host(), lines: [auth, 'Content-Length: 8'], body: frame }));
    expectRefused400(withFrame, 'an upgrade request cannot carry a body (Content-Length must be 0)');
    expect(await rejections(plain, 'body')).toBe(before + 2);

    const dupBefore = await rejections(plain, 'duplicate_header');
    const twice = await rawExchange(plain.port, upgradeRequestText({ host: host(), lines: [auth, 'Content-Length: 0', 'Content-Length: 0'] }));
    expectRefused400(twice, 'duplicate Content-Length header');
    expect(await rejections(plain, 'duplicate_header')).toBe(dupBefore + 1);
  });

  it('leaves to uWS what it refuses itself, before pubgate sees the request (not counted as a handshake)', async () => {
    const t = await userToken('adm-uws');
    const handshakesBefore = await metric(plain.admin, 'pubgate_handshakes_total');
    // Both Transfer-Encoding and Content-Length: uWS answers 400 (its own HTML page) and closes.
    const both = await rawExchange(plain.port, upgradeRequestText({
      host: host(), lines: [`Authorization: Bearer ${t}`, 'Transfer-Encoding: chunked', 'Content-Length: 5'], body: 'hello',
    }));
    expect(both.status).toBe(400);
    expect(both.body).not.toContain('"error"');
    // No Host: the same.
    const noHost = await rawExchange(plain.port, upgradeRequestText({ host: '', lines: [`Authorization: Bearer ${t}`] }).replace('Host: \r\n', ''));
    expect(noHost.status).toBe(400);
    expect(await metric(plain.admin, 'pubgate_handshakes_total')).toBe(handshakesBefore);
  });

  it('reads repeated Sec-WebSocket-Protocol and Connection lines as one list', async () => {
    const t = await userToken('adm-lists');
    // The line that matters is neither the first nor the last of its name.
    const r = await rawExchange(plain.port, upgradeRequestText({
      host: host(),
      lines: [
        'Sec-WebSocket-Protocol: chat.other', `Sec-WebSocket-Protocol: pubgate.v1, bearer.${t}`, 'Sec-WebSocket-Protocol: chat.third',
        'Connection: keep-alive', 'Connection: Upgrade', 'Connection: x-other',
      ],
    }).replace('Connection: Upgrade\r\n', ''));
    expect(r.status, r.raw.slice(0, 300)).toBe(101);
    expect(r.headers['sec-websocket-protocol']).toBe('pubgate.v1');
  });
});

describe('IPv6 clients share a bucket per /64', () => {
  /** An upgrade with a valid token forwarded for `xff` by the trusted proxy 127.0.0.1. */
  async function via(xff: string): Promise<number> {
    return (await rawUpgrade(proxied.url, { authorization: `Bearer ${await userToken('adm-v6')}`, 'x-forwarded-for': xff })).status;
  }

  it('limits every spelling of addresses in one /64 together, and another /64 apart', async () => {
    const mark = logMark(proxied);
    expect(await via('2001:db8:1:2::1')).toBe(101);
    // The same /64, spelled every other way: the burst (1) is spent.
    for (const x of ['2001:db8:1:2::1', '2001:DB8:1:2:FFFF:FFFF:FFFF:FFFF', '2001:0db8:0001:0002:0000:0000:0000:0abc', '[2001:db8:1:2::42]', '2001:db8:1:2:0:0:0:7']) {
      expect(await via(x), x).toBe(429);
    }
    // The neighbouring /64s have their own buckets.
    expect(await via('2001:db8:1:3::1')).toBe(101);
    expect(await via('2001:db8:1:1:ffff:ffff:ffff:ffff')).toBe(101);
    const line = await logAfter(proxied, mark, (l) => l.msg === 'handshake rejected' && l.reason === 'ip_rate');
    // Logs carry the client's own address; the bucket is its /64.
    expect(line.ip).toBe('2001:db8:1:2::1');
  });

  it('limits IPv4 by the full address, and an IPv4-mapped IPv6 address as that IPv4 address', async () => {
    expect(await via('192.0.2.10')).toBe(101);
    expect(await via('::ffff:192.0.2.10')).toBe(429);
    expect(await via('::FFFF:c000:020a')).toBe(429);
    expect(await via('192.0.2.11')).toBe(101);
  });

  it('limits a client connecting from ::1 (an IPv6 peer, as uWS spells it)', async () => {
    const v6 = await startGateway({ ...SLOW_RATE, PUBGATE_HOST: '::1' });
    try {
      const t = await userToken('adm-v6-peer');
      const text = (): string => upgradeRequestText({ host: `[::1]:${v6.port}`, lines: [`Authorization: Bearer ${t}`] });
      const mark = logMark(v6);
      expect((await rawExchange(v6.port, text(), { host: '::1' })).status).toBe(101);
      const second = await rawExchange(v6.port, text(), { host: '::1', openMs: 1000 });
      expect(second.status).toBe(429);
      const line = await logAfter(v6, mark, (l) => l.msg === 'handshake rejected');
      expect(line).toMatchObject({ reason: 'ip_rate', ip: '::1' });
    } finally {
      await v6.stop();
    }
  });
});

describe('the per-IP limit is taken before the token is verified', () => {
  it('lets a flood of bad tokens from one address reach the verifier at most the burst (1), answers the rest 429, and logs a bounded number of lines with the counts', async () => {
    const N = 200;
    const bad = await token({ sub: 'flooder' }, { secret: 'not-the-gateway-secret-0123456789abcdef' });
    const verifiedBefore = await metric(flood.admin, 'pubgate_handshake_verifications_total');
    const ipRateBefore = await rejections(flood, 'ip_rate');
    const mark = logMark(flood);

    const statuses: number[] = [];
    let retryAfterMissing = 0;
    for (let i = 0; i < N; i += 25) {
      const batch = await Promise.all(Array.from({ length: Math.min(25, N - i) }, () =>
        rawUpgrade(flood.url, { authorization: `Bearer ${bad}` })));
      for (const a of batch) {
        statuses.push(a.status);
        if (a.status === 429 && !/^[1-9]\d*$/.test(String(a.headers['retry-after']))) retryAfterMissing++;
      }
    }
    const count = (s: number): number => statuses.filter((x) => x === s).length;
    // The bucket's burst is one upgrade (rate 0.02/s): one verification (401), every other attempt 429.
    expect([count(401), count(429)]).toEqual([1, N - 1]);
    expect(retryAfterMissing).toBe(0);
    expect((await metric(flood.admin, 'pubgate_handshake_verifications_total')) - verifiedBefore).toBe(1);
    expect((await rejections(flood, 'ip_rate')) - ipRateBefore).toBe(N - 1);

    // Logging: one line at once per reason, then one summary line with the counts when the 10 s interval ends.
    const summary = await logAfter(flood, mark, (l) => l.msg === 'handshake rejections', 25_000);
    const handshakeLines = flood.lines.slice(mark).filter((l) => l.msg.startsWith('handshake'));
    expect(handshakeLines.map((l) => [l.msg, l.level, l.reason])).toEqual([
      ['handshake rejected', 'warn', 'bad_signature'],
      ['handshake rejected', 'warn', 'ip_rate'],
      ['handshake rejections', 'warn', undefined],
    ]);
    expect(summary).toMatchObject({
      total: N,
      suppressed: N - 2,
      reasons: { bad_signature: 1, ip_rate: N - 1 },
      top: [{ client: '127.0.0.1', count: N }],
      intervalSec: 10,
    });
    for (const l of flood.lines.slice(mark)) expect(JSON.stringify(l)).not.toContain(bad);
  });
});

// Last, so that the 10 s interval the IPv6 tests started has ended while the flood test waited for its own.
describe('the interval summary of the IPv6 tests', () => {
  it('names the /64 (not the addresses) among the top clients of the interval summary', async () => {
    const summary = await proxied.waitForLog((l) => l.msg === 'handshake rejections', 25_000);
    expect(summary.top).toEqual(expect.arrayContaining([{ client: '2001:db8:1:2::/64', count: 5 }]));
  });
});
