import { createSign, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { JwtAlgorithm } from '../../src/config.js';
import { AuthError, createVerifier, type VerifierConfig } from '../../src/auth/verifier.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_SEC = NOW.getTime() / 1000;
const claims = (over: JWTPayload = {}): JWTPayload => ({ sub: 'user-1', exp: NOW_SEC + 600, ...over });

interface Pair { publicKey: KeyObject; privateKey: KeyObject }
const k1: Pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const k2: Pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec: Pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed: Pair = generateKeyPairSync('ed25519');
const attacker: Pair = generateKeyPairSync('rsa', { modulusLength: 2048 });

async function jwk(p: Pair, kid: string): Promise<JWK> {
  return { ...(await exportJWK(p.publicKey)), kid, use: 'sig' };
}

/** A JWKS endpoint whose answer each test controls, counting requests. */
interface JwksServer {
  url: string;
  fetches: number;
  respond: (res: { status: number; body: string; location?: string } | 'hang') => void;
  serveKeys: (keys: JWK[]) => void;
  close: () => Promise<void>;
}

async function startServer(): Promise<JwksServer> {
  let answer: { status: number; body: string; location?: string } | 'hang' = { status: 200, body: '{"keys":[]}' };
  const state = { fetches: 0 };
  const server: Server = createServer((req, res) => {
    state.fetches += 1;
    if (answer === 'hang') return; // never answers; the verifier's timeout must fire
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (answer.location !== undefined) headers.location = answer.location;
    res.writeHead(answer.status, headers).end(answer.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${String(port)}/.well-known/jwks.json`,
    get fetches() { return state.fetches; },
    set fetches(n: number) { state.fetches = n; },
    respond: (a) => { answer = a; },
    serveKeys: (keys) => { answer = { status: 200, body: JSON.stringify({ keys }) }; },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => { resolve(); }));
    },
  };
}

let jwks: JwksServer;
let sinkhole: JwksServer;
let dir: string;

beforeAll(async () => {
  jwks = await startServer();
  sinkhole = await startServer();
  dir = await mkdtemp(join(tmpdir(), 'pubgate-jwks-'));
});

afterAll(async () => {
  await jwks.close();
  await sinkhole.close();
  await rm(dir, { recursive: true, force: true });
});

afterEach(() => {
  vi.useRealTimers();
  jwks.fetches = 0;
  sinkhole.fetches = 0;
});

function cfg(over: Partial<VerifierConfig> = {}): VerifierConfig {
  return {
    jwtAlgorithms: ['RS256', 'ES256', 'EdDSA'],
    jwtSecrets: [],
    jwtPublicKeys: undefined,
    jwtJwksUrl: jwks.url,
    jwtIssuer: undefined,
    jwtAudience: undefined,
    jwtClockTolerance: 5,
    ...over,
  };
}

async function sign(alg: JwtAlgorithm, key: KeyObject, kid?: string, extra: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims()).setProtectedHeader({ alg, ...(kid !== undefined ? { kid } : {}), ...extra }).sign(key);
}

async function authError(p: Promise<unknown>): Promise<AuthError> {
  const e: unknown = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(AuthError);
  return e as AuthError;
}

async function expectUnauthorized(p: Promise<unknown>, reason: string): Promise<void> {
  const e = await authError(p);
  expect({ code: e.code, reason: e.reason }).toEqual({ code: 'unauthorized', reason });
}

async function expectUnavailable(p: Promise<unknown>): Promise<void> {
  const e = await authError(p);
  expect({ code: e.code, reason: e.reason, message: e.message })
    .toEqual({ code: 'unavailable', reason: 'jwks_unavailable', message: 'cannot fetch JWKS' });
}

/** Moves only Date (jose's JWKS cache clock); claims use the verifier's `now` option. */
function advanceWallClock(ms: number): void {
  vi.setSystemTime(Date.now() + ms);
}

describe('createVerifier (JWKS)', () => {
  it('verifies RS256, ES256 and EdDSA tokens by kid and caches the key set', async () => {
    jwks.serveKeys([await jwk(k1, 'k1'), await jwk(ec, 'e1'), await jwk(ed, 'd1')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    expect(jwks.fetches).toBe(0); // fetched lazily, not at start
    expect((await v.verify(await sign('RS256', k1.privateKey, 'k1'))).sub).toBe('user-1');
    expect((await v.verify(await sign('ES256', ec.privateKey, 'e1'))).sub).toBe('user-1');
    expect((await v.verify(await sign('EdDSA', ed.privateKey, 'd1'))).sub).toBe('user-1');
    expect(jwks.fetches).toBe(1);
  });

  it('tries every matching key for a token without kid', async () => {
    jwks.serveKeys([await jwk(k1, 'k1'), await jwk(k2, 'k2')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    expect((await v.verify(await sign('RS256', k2.privateKey))).sub).toBe('user-1');
    expect((await v.verify(await sign('RS256', k1.privateKey))).sub).toBe('user-1');
    await expectUnauthorized(v.verify(await sign('RS256', attacker.privateKey)), 'bad_signature');
  });

  it('rejects a key whose kid is known but whose signature is wrong', async () => {
    jwks.serveKeys([await jwk(k1, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign('RS256', attacker.privateKey, 'k1')), 'bad_signature');
  });

  it('accepts a rotated-in kid after one refetch and drops a removed kid when the cache ages out', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    jwks.serveKeys([await jwk(k1, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW, jwksCooldownMs: 30_000 });
    const t1 = await sign('RS256', k1.privateKey, 'k1');
    const t2 = await sign('RS256', k2.privateKey, 'k2');
    expect((await v.verify(t1)).sub).toBe('user-1');
    expect(jwks.fetches).toBe(1);

    jwks.serveKeys([await jwk(k1, 'k1'), await jwk(k2, 'k2')]);
    // Within the cooldown an unknown kid does not refetch.
    await expectUnauthorized(v.verify(t2), 'unknown_kid');
    expect(jwks.fetches).toBe(1);

    advanceWallClock(31_000);
    expect((await v.verify(t2)).sub).toBe('user-1');
    expect(jwks.fetches).toBe(2);
    expect((await v.verify(t1)).sub).toBe('user-1');
    expect(jwks.fetches).toBe(2);

    jwks.serveKeys([await jwk(k2, 'k2')]);
    advanceWallClock(11 * 60_000); // past jose's 10-minute cache age
    await expectUnauthorized(v.verify(t1), 'unknown_kid');
    expect(jwks.fetches).toBe(3);
    expect((await v.verify(t2)).sub).toBe('user-1');
    expect(jwks.fetches).toBe(3);
  });

  it('refetches on every unknown kid when the cooldown is 0', async () => {
    jwks.serveKeys([await jwk(k1, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW, jwksCooldownMs: 0 });
    expect((await v.verify(await sign('RS256', k1.privateKey, 'k1'))).sub).toBe('user-1');
    jwks.serveKeys([await jwk(k2, 'k2')]);
    expect((await v.verify(await sign('RS256', k2.privateKey, 'k2'))).sub).toBe('user-1');
    expect(jwks.fetches).toBe(2);
  });

  it('fetches at most once per cooldown under a flood of unknown kids', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    jwks.serveKeys([await jwk(k1, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW, jwksCooldownMs: 30_000 });
    const flood = async (n: number): Promise<void> => {
      const tokens = await Promise.all(Array.from({ length: n }, () => sign('RS256', attacker.privateKey, randomUUID())));
      const errors = await Promise.all(tokens.map((t) => authError(v.verify(t))));
      for (const e of errors) expect(e.reason).toBe('unknown_kid');
    };

    await flood(100); // concurrent, first use: one shared initial fetch
    expect(jwks.fetches).toBe(1);
    for (let i = 0; i < 20; i += 1) await flood(5); // sequential waves inside the cooldown
    expect(jwks.fetches).toBe(1);

    advanceWallClock(30_001);
    await flood(100); // cooldown over: the concurrent wave shares one refetch
    expect(jwks.fetches).toBe(2);
    await flood(50);
    expect(jwks.fetches).toBe(2);
  });

  it('rejects weird kid values as unknown', async () => {
    jwks.serveKeys([await jwk(k1, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    for (const kid of ['../../etc/passwd', "' OR 1=1--", '__proto__', 'k1 ', 'K1', '', 'x'.repeat(4000)]) {
      await expectUnauthorized(v.verify(await sign('RS256', k1.privateKey, kid)), 'unknown_kid');
    }
    expect(jwks.fetches).toBe(1);
  });

  it('never follows jku, x5u or an embedded jwk', async () => {
    jwks.serveKeys([await jwk(k1, 'k1')]);
    sinkhole.serveKeys([await jwk(attacker, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    const header = { jku: sinkhole.url, x5u: sinkhole.url, jwk: await exportJWK(attacker.publicKey) };
    await expectUnauthorized(v.verify(await sign('RS256', attacker.privateKey, 'k1', header)), 'bad_signature');
    await expectUnauthorized(v.verify(await sign('RS256', attacker.privateKey, undefined, header)), 'bad_signature');
    expect(sinkhole.fetches).toBe(0);
  });

  it('does not fetch the JWKS for a token refused by its algorithm', async () => {
    jwks.serveKeys([await jwk(k1, 'k1')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    const b64 = (x: unknown): string => Buffer.from(JSON.stringify(x)).toString('base64url');
    await expectUnauthorized(v.verify(`${b64({ alg: 'none', kid: 'k1' })}.${b64(claims())}.`), 'alg_not_allowed');
    await expectUnauthorized(v.verify(`${b64({ alg: 'HS256', kid: 'k1' })}.${b64(claims())}.c2ln`), 'alg_not_allowed');
    expect(jwks.fetches).toBe(0);
  });

  it('rejects a JWKS key shorter than 2048 bits', async () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    jwks.serveKeys([await jwk(weak, 'weak')]);
    const v = await createVerifier(cfg(), { now: () => NOW });
    // jose refuses to sign with such a key, so sign by hand.
    const input = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'weak' })).toString('base64url')}.${
      Buffer.from(JSON.stringify(claims())).toString('base64url')}`;
    const signature = createSign('RSA-SHA256').update(input).sign(weak.privateKey, 'base64url');
    await expectUnauthorized(v.verify(`${input}.${signature}`), 'bad_key');
  });

  it('tries PEM keys first and falls back to the JWKS', async () => {
    const pemFile = join(dir, 'k2.pem');
    await writeFile(pemFile, k2.publicKey.export({ type: 'spki', format: 'pem' }));
    jwks.respond({ status: 500, body: 'down' });
    const v = await createVerifier(cfg({ jwtPublicKeys: pemFile }), { now: () => NOW });
    expect((await v.verify(await sign('RS256', k2.privateKey, 'k2'))).sub).toBe('user-1');
    expect(jwks.fetches).toBe(0);
    await expectUnavailable(v.verify(await sign('RS256', k1.privateKey, 'k1')));
    jwks.serveKeys([await jwk(k1, 'k1')]);
    expect((await v.verify(await sign('RS256', k1.privateKey, 'k1'))).sub).toBe('user-1');
  });
});

describe('createVerifier (JWKS endpoint failures are 503, not 401)', () => {
  it('reports a 500 as unavailable and recovers when the endpoint does', async () => {
    jwks.respond({ status: 500, body: '{"error":"boom"}' });
    const v = await createVerifier(cfg(), { now: () => NOW });
    const token = await sign('RS256', k1.privateKey, 'k1');
    await expectUnavailable(v.verify(token));
    jwks.serveKeys([await jwk(k1, 'k1')]);
    expect((await v.verify(token)).sub).toBe('user-1');
    expect(jwks.fetches).toBe(2);
  });

  it('reports invalid JSON, a malformed key set and a redirect as unavailable', async () => {
    const token = await sign('RS256', k1.privateKey, 'k1');
    for (const answer of [
      { status: 200, body: '{not json' },
      { status: 200, body: '{"keys":"nope"}' },
      { status: 302, body: '', location: sinkhole.url },
      { status: 404, body: 'not found' },
    ]) {
      jwks.respond(answer);
      const v = await createVerifier(cfg(), { now: () => NOW });
      await expectUnavailable(v.verify(token));
    }
    expect(sinkhole.fetches).toBe(0);
  });

  it('reports a refused connection as unavailable', async () => {
    const closed = await startServer();
    const url = closed.url;
    await closed.close();
    const v = await createVerifier(cfg({ jwtJwksUrl: url }), { now: () => NOW });
    await expectUnavailable(v.verify(await sign('RS256', k1.privateKey, 'k1')));
  });

  it('reports a timeout as unavailable', async () => {
    jwks.respond('hang');
    const v = await createVerifier(cfg(), { now: () => NOW, jwksTimeoutMs: 100 });
    await expectUnavailable(v.verify(await sign('RS256', k1.privateKey, 'k1')));
  });
});
