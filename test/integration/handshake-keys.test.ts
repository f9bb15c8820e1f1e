/**
 * Handshake rule 3 with public keys, against real gateway processes: PEM keys
 * (RS256) and algorithm confusion, and a JWKS endpoint (a local node:http
 * server) with key rotation, lazy first fetch, the refetch on an unknown kid
 * and the refetch cooldown.
 *
 * The gateway refetches its JWKS on an unknown kid at most once per 30 s
 * (src/auth/verifier.ts, not configurable). To test the refetch without
 * waiting, the refetch gateway runs with test/helpers/clock-shift.cjs
 * preloaded: SIGUSR2 moves its Date.now() (which jose's cooldown reads) 61 s
 * forward, and the gateway's log line confirms it before the test goes on.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, refused, type ConnectOptions } from '../helpers/client.js';
import { TEST_SECRET, type GatewayProcess } from '../helpers/gateway.js';
import { expectRejectLogged, logAfter, logMark, startGateways } from '../helpers/handshake.js';
import {
  hmacJwt, nowSec, p256Pair, publicJwk, publicPem, rsaPair, signAsym, startJwksServer, tempDir, unsignedJwt, validClaims,
  type JwksServer, type KeyPair,
} from '../helpers/keys.js';

const CLOCK_SHIFT = fileURLToPath(new URL('../helpers/clock-shift.cjs', import.meta.url));

const issuerKey = rsaPair();
const otherRsa = rsaPair();
const a1 = rsaPair();
const a2 = rsaPair();
const e1 = p256Pair();
const e2 = p256Pair();
const e3 = p256Pair();

let tmp: Awaited<ReturnType<typeof tempDir>>;
let rsOnly: GatewayProcess; // RS256 with a PEM key
let mixed: GatewayProcess; // RS256 and HS256: PEM key and TEST_SECRET
let jwksA: JwksServer;
let lazy: GatewayProcess; // RS256 from jwksA
let jwksE: JwksServer;
let refetch: GatewayProcess; // ES256 from jwksE, clock-shift preloaded

beforeAll(async () => {
  tmp = await tempDir('pubgate-handshake-keys-');
  const pemFile = await tmp.file('issuer.pem', publicPem(issuerKey));
  [jwksA, jwksE] = await Promise.all([startJwksServer(), startJwksServer()]);
  jwksA.serve([await publicJwk(a1, 'a1', 'RS256')]);
  jwksE.serve([await publicJwk(e1, 'e1', 'ES256')]);
  [rsOnly, mixed, lazy, refetch] = await startGateways([
    { PUBGATE_JWT_ALGORITHMS: 'RS256', PUBGATE_JWT_PUBLIC_KEYS: pemFile },
    { PUBGATE_JWT_ALGORITHMS: 'RS256,HS256', PUBGATE_JWT_PUBLIC_KEYS: pemFile },
    { PUBGATE_JWT_ALGORITHMS: 'RS256', PUBGATE_JWT_JWKS_URL: jwksA.url },
    { PUBGATE_JWT_ALGORITHMS: 'ES256', PUBGATE_JWT_JWKS_URL: jwksE.url, NODE_OPTIONS: `--require ${CLOCK_SHIFT}` },
  ]);
});
afterAll(async () => {
  await Promise.all([rsOnly, mixed, lazy, refetch].map((g) => g?.stop()));
  await Promise.all([jwksA, jwksE].map((s) => s?.close()));
  await tmp?.cleanup();
});

async function expectAccepted(gw: GatewayProcess, t: string, user: string, via: ConnectOptions['via'] = 'header'): Promise<void> {
  const c = await connect(gw.url, { token: t, via });
  expect(c.welcome).toMatchObject({ type: 'welcome', user });
  await c.close();
}

/** 401 unauthorized with the JSON body, and its warn line (with `reason` when given). */
async function expect401(gw: GatewayProcess, t: string, reason?: string): Promise<void> {
  const mark = logMark(gw);
  const r = await refused(gw.url, { token: t, via: 'header' });
  expect(r.status).toBe(401);
  expect(r.body).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
  await expectRejectLogged(gw, mark, 'unauthorized', reason);
}

const rs256 = (key: KeyPair, sub: string, kid?: string): Promise<string> => signAsym('RS256', key, validClaims(sub), kid);
const es256 = (key: KeyPair, sub: string, kid?: string): Promise<string> => signAsym('ES256', key, validClaims(sub), kid);

describe('PEM public keys (PUBGATE_JWT_ALGORITHMS=RS256)', () => {
  it('accepts an RS256 token signed with the private key, from every token source', async () => {
    await expectAccepted(rsOnly, await rs256(issuerKey, 'rs-user'), 'rs-user', 'header');
    await expectAccepted(rsOnly, await rs256(issuerKey, 'rs-user'), 'rs-user', 'subprotocol');
    await expectAccepted(rsOnly, await rs256(issuerKey, 'rs-user'), 'rs-user', 'query');
  });

  it('refuses an HS256 token whose HMAC secret is the PEM public key (algorithm confusion)', async () => {
    const pem = publicPem(issuerKey);
    await expect401(rsOnly, hmacJwt(validClaims('confused'), { key: pem }), 'alg_not_allowed');
    await expect401(rsOnly, hmacJwt(validClaims('confused'), { key: pem.trim() }), 'alg_not_allowed');
    const der = issuerKey.publicKey.export({ type: 'spki', format: 'der' });
    await expect401(rsOnly, hmacJwt(validClaims('confused'), { key: der }), 'alg_not_allowed');
  });

  it('refuses HS256 even with a configured secret when HS256 is not in the allow-list', async () => {
    await expect401(rsOnly, hmacJwt(validClaims('hs'), { key: TEST_SECRET }), 'alg_not_allowed');
  });

  it('refuses alg none, PS256 with the same key, another RSA key and an expired RS256 token', async () => {
    await expect401(rsOnly, unsignedJwt(validClaims('none')), 'alg_not_allowed');
    await expect401(rsOnly, await signAsym('PS256', issuerKey, validClaims('ps')), 'alg_not_allowed');
    await expect401(rsOnly, await rs256(otherRsa, 'forged'), 'bad_signature');
    await expect401(rsOnly, await signAsym('RS256', issuerKey, { sub: 'old', exp: nowSec() - 60 }), 'expired');
    await expect401(rsOnly, await signAsym('RS256', issuerKey, { exp: nowSec() + 3600 }), 'claim_invalid');
  });
});

describe('PEM key and HMAC secret together (PUBGATE_JWT_ALGORITHMS=RS256,HS256)', () => {
  it('accepts RS256 with the private key and HS256 with the configured secret', async () => {
    await expectAccepted(mixed, await rs256(issuerKey, 'mixed-rs'), 'mixed-rs');
    await expectAccepted(mixed, hmacJwt(validClaims('mixed-hs'), { key: TEST_SECRET }), 'mixed-hs');
  });

  it('refuses an HS256 token signed with the PEM public key bytes: HS tokens are checked against secrets only', async () => {
    const pem = publicPem(issuerKey);
    await expect401(mixed, hmacJwt(validClaims('confused'), { key: pem }), 'bad_signature');
    await expect401(mixed, hmacJwt(validClaims('confused'), { key: issuerKey.publicKey.export({ type: 'spki', format: 'der' }) }), 'bad_signature');
  });
});

describe('JWKS: first fetch on first use', () => {
  it('refuses alg none and HMAC tokens without fetching the key set', async () => {
    await expect401(lazy, unsignedJwt(validClaims('none')), 'alg_not_allowed');
    await expect401(lazy, hmacJwt(validClaims('hs'), { key: TEST_SECRET }), 'alg_not_allowed');
    expect(jwksA.fetches).toBe(0);
  });

  it('accepts a key rotated in before the first use, with one fetch; the removed key is 401 with no refetch', async () => {
    expect(jwksA.fetches).toBe(0); // precondition of this test: the gateway has not read the key set yet
    jwksA.serve([await publicJwk(a2, 'a2', 'RS256')]); // rotation: a1 out, a2 in
    await expectAccepted(lazy, await rs256(a2, 'jwks-a2', 'a2'), 'jwks-a2');
    expect(jwksA.fetches).toBe(1);
    await expectAccepted(lazy, await rs256(a2, 'jwks-a2', 'a2'), 'jwks-a2', 'subprotocol');
    expect(jwksA.fetches).toBe(1); // cached
    // Unknown kids right after a fetch are refused without hammering the endpoint (refetch cooldown).
    await expect401(lazy, await rs256(a1, 'jwks-a1', 'a1'), 'unknown_kid');
    for (let i = 0; i < 5; i++) await expect401(lazy, await rs256(a1, 'jwks-rand', `random-${i}`), 'unknown_kid');
    expect(jwksA.fetches).toBe(1);
    // A known kid with someone else's signature.
    await expect401(lazy, await rs256(otherRsa, 'forged', 'a2'), 'bad_signature');
  });
});

describe('JWKS: refetch on an unknown kid', () => {
  async function advanceGatewayClock(): Promise<void> {
    const mark = logMark(refetch);
    refetch.proc.kill('SIGUSR2');
    await logAfter(refetch, mark, (l) => l.msg === 'test clock advanced');
  }

  it('accepts a token with a new kid after the key set changes, refetching once the cooldown has passed', async () => {
    await expectAccepted(refetch, await es256(e1, 'es-1', 'e1'), 'es-1');
    expect(jwksE.fetches).toBe(1);

    jwksE.serve([await publicJwk(e1, 'e1', 'ES256'), await publicJwk(e2, 'e2', 'ES256')]);
    // Within the cooldown the new kid is unknown and the set is not refetched.
    await expect401(refetch, await es256(e2, 'es-2', 'e2'), 'unknown_kid');
    expect(jwksE.fetches).toBe(1);

    await advanceGatewayClock(); // past the 30 s cooldown, within the 10 min cache
    await expectAccepted(refetch, await es256(e2, 'es-2', 'e2'), 'es-2');
    expect(jwksE.fetches).toBe(2);
    await expectAccepted(refetch, await es256(e1, 'es-1', 'e1'), 'es-1'); // still in the set
    await expectAccepted(refetch, await es256(e2, 'es-2', 'e2'), 'es-2', 'query');
    expect(jwksE.fetches).toBe(2);

    // A kid that is in no key set: one refetch at most, then 401.
    await expect401(refetch, await es256(e3, 'es-3', 'e3'), 'unknown_kid');
    await expect401(refetch, await es256(e3, 'es-3', 'e3'), 'unknown_kid');
    expect(jwksE.fetches).toBe(2);
  });
});
