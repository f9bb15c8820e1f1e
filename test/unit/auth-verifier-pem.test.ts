import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type JwtAlgorithm } from '../../src/config.js';
import { AuthError, createVerifier, type VerifierConfig } from '../../src/auth/verifier.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_SEC = NOW.getTime() / 1000;
const claims = (over: JWTPayload = {}): JWTPayload => ({ sub: 'user-1', exp: NOW_SEC + 600, ...over });

interface Pair { publicKey: KeyObject; privateKey: KeyObject }
const rsaA: Pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaB: Pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaOutside: Pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const p256: Pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const p384: Pair = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const ed: Pair = generateKeyPairSync('ed25519');
const pem = (k: KeyObject): string => k.export({ type: 'spki', format: 'pem' }).toString();

let dir: string;
let keysFile: string;

async function fixture(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pubgate-auth-'));
  // Several keys in one file, with text around and between the blocks.
  keysFile = await fixture('keys.pem', [
    '# issuer keys', pem(rsaA.publicKey), pem(rsaB.publicKey), 'comment', pem(p256.publicKey),
    pem(p384.publicKey), pem(ed.publicKey),
  ].join('\n'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function cfg(over: Partial<VerifierConfig> = {}): VerifierConfig {
  return {
    jwtAlgorithms: ['RS256', 'RS384', 'PS256', 'ES256', 'ES384', 'EdDSA'],
    jwtSecrets: [],
    jwtPublicKeys: keysFile,
    jwtJwksUrl: undefined,
    jwtIssuer: undefined,
    jwtAudience: undefined,
    jwtClockTolerance: 5,
    ...over,
  };
}

async function sign(alg: JwtAlgorithm, key: KeyObject, payload = claims(), kid?: string): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, ...(kid !== undefined ? { kid } : {}) }).sign(key);
}

async function expectUnauthorized(p: Promise<unknown>, reason: string): Promise<void> {
  const e: unknown = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(AuthError);
  const a = e as AuthError;
  expect({ code: a.code, reason: a.reason }).toEqual({ code: 'unauthorized', reason });
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** The three parts of a compact JWS. */
function segments(token: string): [string, string, string] {
  const [h = '', p = '', s = ''] = token.split('.');
  return [h, p, s];
}
function hs256(payload: JWTPayload, secret: string | Buffer): string {
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

describe('createVerifier (PEM public keys)', () => {
  it('verifies RS256, RS384 and PS256 with any RSA key in the file', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    expect((await v.verify(await sign('RS256', rsaA.privateKey))).sub).toBe('user-1');
    expect((await v.verify(await sign('RS256', rsaB.privateKey))).sub).toBe('user-1');
    expect((await v.verify(await sign('RS384', rsaB.privateKey))).sub).toBe('user-1');
    expect((await v.verify(await sign('PS256', rsaB.privateKey))).sub).toBe('user-1');
  });

  it('verifies ES256, ES384 and EdDSA with keys of the fitting type', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    expect((await v.verify(await sign('ES256', p256.privateKey))).sub).toBe('user-1');
    expect((await v.verify(await sign('ES384', p384.privateKey))).sub).toBe('user-1');
    expect((await v.verify(await sign('EdDSA', ed.privateKey))).sub).toBe('user-1');
  });

  it('ignores a kid for PEM keys, which carry none', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    expect((await v.verify(await sign('RS256', rsaB.privateKey, claims(), 'any-kid'))).sub).toBe('user-1');
  });

  it('rejects a token signed by a key that is not in the file', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign('RS256', rsaOutside.privateKey)), 'bad_signature');
    const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await expectUnauthorized(v.verify(await sign('ES256', otherEc.privateKey)), 'bad_signature');
  });

  it('rejects a token whose alg header does not match its signing key', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const [, payload, sig] = segments(await sign('ES256', p256.privateKey));
    await expectUnauthorized(v.verify(`${b64({ alg: 'RS256' })}.${payload}.${sig}`), 'bad_signature');
    const [, p2, s2] = segments(await sign('RS256', rsaA.privateKey));
    await expectUnauthorized(v.verify(`${b64({ alg: 'PS256' })}.${p2}.${s2}`), 'bad_signature');
  });

  it('rejects a tampered payload and an expired token', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const [h, , s] = segments(await sign('RS256', rsaA.privateKey));
    await expectUnauthorized(v.verify(`${h}.${b64(claims({ sub: 'admin' }))}.${s}`), 'bad_signature');
    await expectUnauthorized(v.verify(await sign('EdDSA', ed.privateKey, claims({ exp: NOW_SEC - 60 }))), 'expired');
  });

  it('rejects algorithms outside the allow-list even with a fitting key', async () => {
    const v = await createVerifier(cfg({ jwtAlgorithms: ['RS256'] }), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign('ES256', p256.privateKey)), 'alg_not_allowed');
    await expectUnauthorized(v.verify(await sign('RS512', rsaA.privateKey)), 'alg_not_allowed');
  });

  it('drops an allowed algorithm for which the file has no fitting key', async () => {
    const rsaOnly = await fixture('rsa-only.pem', pem(rsaA.publicKey));
    const v = await createVerifier(cfg({ jwtPublicKeys: rsaOnly, jwtAlgorithms: ['RS256', 'ES256'] }), { now: () => NOW });
    expect(v.algorithms).toEqual(['RS256']);
    await expectUnauthorized(v.verify(await sign('ES256', p256.privateKey)), 'alg_not_allowed');
  });
});

describe('createVerifier (algorithm confusion)', () => {
  const pemBytes = (): string => pem(rsaA.publicKey);

  it('rejects an HS256 token signed with the RSA public key against an RS256 config', async () => {
    const v = await createVerifier(cfg({ jwtAlgorithms: ['RS256'] }), { now: () => NOW });
    await expectUnauthorized(v.verify(hs256(claims(), pemBytes())), 'alg_not_allowed');
    const der = rsaA.publicKey.export({ type: 'spki', format: 'der' });
    await expectUnauthorized(v.verify(hs256(claims(), der)), 'alg_not_allowed');
    const jwk = JSON.stringify(await exportJWK(rsaA.publicKey));
    await expectUnauthorized(v.verify(hs256(claims(), jwk)), 'alg_not_allowed');
  });

  it('never uses public-key bytes as an HMAC secret when HS and RS are both allowed', async () => {
    const mixed = cfg({ jwtAlgorithms: ['HS256', 'RS256'], jwtSecrets: [{ kid: undefined, secret: 'real-hmac-secret' }] });
    const v = await createVerifier(mixed, { now: () => NOW });
    expect((await v.verify(hs256(claims(), 'real-hmac-secret'))).sub).toBe('user-1');
    expect((await v.verify(await sign('RS256', rsaA.privateKey))).sub).toBe('user-1');
    await expectUnauthorized(v.verify(hs256(claims(), pemBytes())), 'bad_signature');
    await expectUnauthorized(v.verify(hs256(claims(), pem(rsaB.publicKey))), 'bad_signature');
  });

  it('rejects HS256 entirely when it is allowed but no secret is configured', async () => {
    const v = await createVerifier(cfg({ jwtAlgorithms: ['HS256', 'RS256'] }), { now: () => NOW });
    expect(v.algorithms).toEqual(['RS256']);
    await expectUnauthorized(v.verify(hs256(claims(), pemBytes())), 'alg_not_allowed');
  });

  it('rejects an RS256 token signed with the HMAC secret', async () => {
    const mixed = cfg({ jwtAlgorithms: ['HS256', 'RS256'], jwtSecrets: [{ kid: undefined, secret: 'real-hmac-secret' }] });
    const v = await createVerifier(mixed, { now: () => NOW });
    const input = `${b64({ alg: 'RS256' })}.${b64(claims())}`;
    const forged = `${input}.${createHmac('sha256', 'real-hmac-secret').update(input).digest('base64url')}`;
    await expectUnauthorized(v.verify(forged), 'bad_signature');
  });
});

describe('createVerifier (PEM file problems stop the start)', () => {
  async function configError(path: string): Promise<ConfigError> {
    const e: unknown = await createVerifier(cfg({ jwtPublicKeys: path })).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(ConfigError);
    const ce = e as ConfigError;
    expect(ce.problems.length).toBeGreaterThan(0);
    for (const p of ce.problems) expect(p).toMatch(/^PUBGATE_JWT_PUBLIC_KEYS: /);
    return ce;
  }

  it('refuses a missing file', async () => {
    await configError(join(dir, 'does-not-exist.pem'));
  });

  it('refuses a file without keys', async () => {
    expect((await configError(await fixture('empty.pem', 'nothing here\n'))).problems[0]).toContain('no PEM public key');
  });

  it('refuses a private key, naming the block', async () => {
    const priv = rsaA.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const ce = await configError(await fixture('private.pem', pem(rsaA.publicKey) + priv));
    expect(ce.problems).toHaveLength(1);
    expect(ce.problems[0]).toContain('block 2');
    expect(ce.problems[0]).not.toContain(priv.split('\n')[1]);
  });

  it('refuses an RSA key under 2048 bits and a corrupt block', async () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const corrupt = '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n';
    const ce = await configError(await fixture('weak.pem', pem(weak.publicKey) + corrupt));
    expect(ce.problems).toHaveLength(2);
    expect(ce.problems[0]).toContain('1024 bits');
    expect(ce.problems[1]).toContain('block 2');
  });

  it('does not read the file when only HMAC algorithms are allowed', async () => {
    const v = await createVerifier(cfg({
      jwtAlgorithms: ['HS256'],
      jwtSecrets: [{ kid: undefined, secret: 's3cret' }],
      jwtPublicKeys: join(dir, 'does-not-exist.pem'),
    }), { now: () => NOW });
    expect((await v.verify(hs256(claims(), 's3cret'))).sub).toBe('user-1');
  });
});
