/**
 * Handshake rule 1 (Origin) against real gateway processes: exact origins,
 * one-label wildcards, `*`, `null`, the absent Origin with and without
 * requireOrigin, and the metric and log line every origin reject leaves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, refused, token } from '../helpers/client.js';
import { metric, type GatewayProcess, type LogLine } from '../helpers/gateway.js';
import { expectRejectLogged, logMark, startGateways } from '../helpers/handshake.js';

let exact: GatewayProcess; // https://app.example.com, http://localhost:3000
let wild: GatewayProcess; // https://*.example.com
let any: GatewayProcess; // *
let required: GatewayProcess; // https://app.example.com, requireOrigin
let unset: GatewayProcess; // no allowedOrigins

beforeAll(async () => {
  [exact, wild, any, required, unset] = await startGateways([
    { PUBGATE_ALLOWED_ORIGINS: 'https://app.example.com,http://localhost:3000' },
    { PUBGATE_ALLOWED_ORIGINS: 'https://*.example.com' },
    { PUBGATE_ALLOWED_ORIGINS: '*' },
    { PUBGATE_ALLOWED_ORIGINS: 'https://app.example.com', PUBGATE_REQUIRE_ORIGIN: 'true' },
    {},
  ]);
});
afterAll(async () => {
  await Promise.all([exact, wild, any, required, unset].map((g) => g?.stop()));
});

const validToken = (sub = 'origin-user'): Promise<string> => token({ sub, channels: ['news'] });

/** Connects with a valid token and `origin` (undefined: no Origin header); checks the welcome. */
async function expectAccepted(gw: GatewayProcess, origin: string | undefined): Promise<void> {
  const c = await connect(gw.url, { token: await validToken('o-ok'), ...(origin !== undefined ? { origin } : {}) });
  expect(c.welcome).toMatchObject({ type: 'welcome', user: 'o-ok' });
  await c.close();
}

/**
 * A valid token with `origin` must get 403 origin_not_allowed with the JSON
 * error body, and leave a `handshake rejected` warn line with that code.
 */
async function expectOriginRejected(gw: GatewayProcess, origin: string | undefined): Promise<LogLine> {
  const mark = logMark(gw);
  const r = await refused(gw.url, { token: await validToken(), ...(origin !== undefined ? { origin } : {}) });
  expect(r.status).toBe(403);
  expect(r.headers['content-type']).toBe('application/json');
  expect(r.body).toEqual({ error: { code: 'origin_not_allowed', message: expect.any(String) } });
  return expectRejectLogged(gw, mark, 'origin_not_allowed');
}

describe('origin: exact entries', () => {
  it('accepts an origin that is exactly in the list (101, welcome)', async () => {
    await expectAccepted(exact, 'https://app.example.com');
    await expectAccepted(exact, 'http://localhost:3000');
  });

  it('answers a disallowed origin with a valid token 403 origin_not_allowed, counts it and logs a warn line', async () => {
    const before = await metric(exact.admin, 'pubgate_handshakes_total', { result: 'rejected', reason: 'origin_not_allowed' });
    const accepted = await metric(exact.admin, 'pubgate_handshakes_total', { result: 'accepted' });
    const line = await expectOriginRejected(exact, 'https://evil.com');
    expect(line.origin).toBe('https://evil.com');
    expect(await metric(exact.admin, 'pubgate_handshakes_total', { result: 'rejected', reason: 'origin_not_allowed' })).toBe(before + 1);
    expect(await metric(exact.admin, 'pubgate_handshakes_total', { result: 'accepted' })).toBe(accepted);
  });

  it.each([
    ['suffix appended', 'https://app.example.com.evil.com'],
    ['prefix glued on', 'https://evilapp.example.com'],
    ['parent domain', 'https://example.com'],
    ['http instead of https', 'http://app.example.com'],
    ['https instead of http', 'https://localhost:3000'],
    ['other port', 'https://app.example.com:8443'],
    ['other port (listed host:port)', 'http://localhost:3001'],
    ['port dropped', 'http://localhost'],
    ['trailing slash', 'https://app.example.com/'],
    ['with a path', 'https://app.example.com/app'],
    ['with userinfo', 'https://user@app.example.com'],
  ])('rejects a look-alike (%s: %s) with 403', async (_what, origin) => {
    await expectOriginRejected(exact, origin);
  });

  it('rejects Origin: null (sandboxed iframe, file:) with 403', async () => {
    await expectOriginRejected(exact, 'null');
  });

  it('checks the Origin before the token: a foreign origin without a token gets 403, not 401', async () => {
    const mark = logMark(exact);
    const r = await refused(exact.url, { origin: 'https://evil.com' });
    expect(r.status).toBe(403);
    expect(r.body.error?.code).toBe('origin_not_allowed');
    await expectRejectLogged(exact, mark, 'origin_not_allowed');
  });

  it('allows a client that sends no Origin (requireOrigin is false)', async () => {
    await expectAccepted(exact, undefined);
  });
});

describe('origin: one-label wildcard https://*.example.com', () => {
  it('matches a single label under the domain', async () => {
    await expectAccepted(wild, 'https://a.example.com');
    await expectAccepted(wild, 'https://app-2.example.com');
  });

  it.each([
    ['the bare domain', 'https://example.com'],
    ['two labels', 'https://a.b.example.com'],
    ['an empty label', 'https://.example.com'],
    ['a domain ending in the same letters', 'https://evilexample.com'],
    ['the domain as a prefix of another', 'https://app.example.com.evil.com'],
    ['http instead of https', 'http://a.example.com'],
    ['another port', 'https://a.example.com:8443'],
    ['a trailing slash', 'https://a.example.com/'],
    ['null', 'null'],
  ])('does not match %s (%s): 403', async (_what, origin) => {
    await expectOriginRejected(wild, origin);
  });
});

describe('origin: *', () => {
  it('allows any origin, null, and no Origin', async () => {
    await expectAccepted(any, 'https://anything.example.net');
    await expectAccepted(any, 'http://127.0.0.1:5173');
    await expectAccepted(any, 'null');
    await expectAccepted(any, undefined);
  });
});

describe('origin: requireOrigin', () => {
  it('rejects a client without Origin with 403 origin_not_allowed, counted and logged', async () => {
    const before = await metric(required.admin, 'pubgate_handshakes_total', { result: 'rejected', reason: 'origin_not_allowed' });
    const line = await expectOriginRejected(required, undefined);
    expect(line.origin).toBeUndefined();
    expect(await metric(required.admin, 'pubgate_handshakes_total', { result: 'rejected', reason: 'origin_not_allowed' })).toBe(before + 1);
  });

  it('still accepts an allowed origin and rejects others', async () => {
    await expectAccepted(required, 'https://app.example.com');
    await expectOriginRejected(required, 'https://evil.com');
  });
});

describe('origin: nothing configured', () => {
  it('allows clients without Origin', async () => {
    await expectAccepted(unset, undefined);
  });

  it('rejects every browser origin, and null, with 403', async () => {
    await expectOriginRejected(unset, 'https://app.example.com');
    await expectOriginRejected(unset, 'http://127.0.0.1');
    await expectOriginRejected(unset, 'null');
  });
});
