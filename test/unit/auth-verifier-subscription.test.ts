/**
 * Subscription tokens (contract 1.1): verified by the connection tokens'
 * verifier (keys, algorithms, kid, PEM, JWKS), then bound to one user and one
 * channel. Invalid or mismatched is `forbidden`, past `exp` `unauthorized`,
 * a JWKS outage `unavailable`.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVerifier, type VerifierConfig } from '../../src/auth/verifier.js';
import { GatewayError } from '../../src/errors.js';
import { hmacJwt, publicPem, rawJwt, signAsym, tempDir, unsignedJwt } from '../helpers/keys.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_SEC = NOW.getTime() / 1000;
const SECRET = 'test-secret-0123456789-abcdefghijklmnop';
const OTHER = 'other-secret-0123456789-abcdefghijklmno';
const K2 = 'kid2-secret-0123456789-abcdefghijklmnopq';
const WANT = { user: '42', channel: 'room:5' } as const;
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

function cfg(over: Partial<VerifierConfig> = {}): VerifierConfig {
  return {
    jwtAlgorithms: ['HS256'],
    jwtSecrets: [{ kid: undefined, secret: SECRET }, { kid: 'k2', secret: K2 }],
    jwtPublicKeys: undefined,
    jwtJwksUrl: undefined,
    jwtIssuer: undefined,
    jwtAudience: undefined,
    jwtClockTolerance: 5,
    ...over,
  };
}

const claims = (over: JWTPayload = {}): Record<string, unknown> => ({ sub: '42', channel: 'room:5', exp: NOW_SEC + 600, ...over });

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const e: unknown = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(GatewayError);
  return { code: (e as GatewayError).code, message: (e as GatewayError).message };
}

describe('verifySubscription (HMAC)', () => {
  const v = createVerifier(cfg(), { now: () => NOW });

  it('accepts a token for this user and channel, with no info', async () => {
    expect(await (await v).verifySubscription(hmacJwt(claims(), { key: SECRET }), WANT)).toEqual({});
  });

  it('returns the info claim serialized, for presence in that channel', async () => {
    const t = hmacJwt(claims({ info: { role: 'guest', n: 1 } }), { key: SECRET });
    expect(await (await v).verifySubscription(t, WANT)).toEqual({ info: '{"role":"guest","n":1}' });
  });

  it('refuses a token for another user, another channel, or without a channel as forbidden', async () => {
    const other = await refusal((await v).verifySubscription(hmacJwt(claims({ sub: '43' }), { key: SECRET }), WANT));
    expect(other).toEqual({ code: 'forbidden', message: 'the subscription token is for another user' });
    const room = await refusal((await v).verifySubscription(hmacJwt(claims({ channel: 'room:6' }), { key: SECRET }), WANT));
    expect(room).toEqual({ code: 'forbidden', message: 'the subscription token is for another channel' });
    const none = claims();
    delete none.channel;
    expect((await refusal((await v).verifySubscription(hmacJwt(none, { key: SECRET }), WANT))).code).toBe('forbidden');
    // A channel pattern is not the channel.
    expect((await refusal((await v).verifySubscription(hmacJwt(claims({ channel: 'room:*' }), { key: SECRET }), WANT))).code).toBe('forbidden');
  });

  it('refuses a token past exp as unauthorized, and one within the clock tolerance is still valid', async () => {
    expect(await refusal((await v).verifySubscription(hmacJwt(claims({ exp: NOW_SEC - 6 }), { key: SECRET }), WANT))).toEqual({
      code: 'unauthorized',
      message: 'subscription token expired',
    });
    expect(await (await v).verifySubscription(hmacJwt(claims({ exp: NOW_SEC - 4 }), { key: SECRET }), WANT)).toEqual({});
  });

  it('refuses an expired token for another user as unauthorized: expiry is checked with the signature, before the binding', async () => {
    expect((await refusal((await v).verifySubscription(hmacJwt(claims({ sub: '43', exp: NOW_SEC - 60 }), { key: SECRET }), WANT))).code).toBe('unauthorized');
  });

  it('refuses a token signed with another key, unsigned, tampered or malformed as forbidden', async () => {
    const wrongKey = await refusal((await v).verifySubscription(hmacJwt(claims(), { key: OTHER }), WANT));
    expect(wrongKey).toEqual({ code: 'forbidden', message: 'invalid subscription token: invalid token signature' });
    expect((await refusal((await v).verifySubscription(unsignedJwt(claims()), WANT))).code).toBe('forbidden');
    const [h, , sig] = hmacJwt(claims(), { key: SECRET }).split('.');
    const tampered = `${h}.${Buffer.from(JSON.stringify(claims({ channel: 'room:6' }))).toString('base64url')}.${sig}`;
    expect((await refusal((await v).verifySubscription(tampered, { ...WANT, channel: 'room:6' }))).code).toBe('forbidden');
    expect((await refusal((await v).verifySubscription('not.a.jwt', WANT))).code).toBe('forbidden');
    expect((await refusal((await v).verifySubscription(rawJwt({ alg: 'HS256' }, claims(), 'x'), WANT))).code).toBe('forbidden');
  });

  it('selects the secret by kid, with no fallback, and refuses an unknown kid', async () => {
    expect(await (await v).verifySubscription(hmacJwt(claims(), { key: K2, kid: 'k2' }), WANT)).toEqual({});
    expect((await refusal((await v).verifySubscription(hmacJwt(claims(), { key: SECRET, kid: 'k2' }), WANT))).code).toBe('forbidden');
    const unknown = await refusal((await v).verifySubscription(hmacJwt(claims(), { key: K2, kid: 'k9' }), WANT));
    expect(unknown).toEqual({ code: 'forbidden', message: 'invalid subscription token: unknown token key id' });
  });

  it('refuses an info claim that is not an object or is over 1024 bytes as forbidden', async () => {
    expect((await refusal((await v).verifySubscription(hmacJwt(claims({ info: 'guest' }), { key: SECRET }), WANT))).code).toBe('forbidden');
    expect((await refusal((await v).verifySubscription(hmacJwt(claims({ info: [1] }), { key: SECRET }), WANT))).code).toBe('forbidden');
    // {"x":"..."} is 8 bytes around the value.
    const fits = { x: 'a'.repeat(1016) };
    expect(await (await v).verifySubscription(hmacJwt(claims({ info: fits }), { key: SECRET }), WANT)).toEqual({ info: JSON.stringify(fits) });
    const over = await refusal((await v).verifySubscription(hmacJwt(claims({ info: { x: 'a'.repeat(1017) } }), { key: SECRET }), WANT));
    expect(over.code).toBe('forbidden');
    expect(over.message).toMatch(/info claim must be a JSON object of at most 1024 bytes/);
  });

  it('checks iss and aud when configured, as for connection tokens', async () => {
    const strict = await createVerifier(cfg({ jwtIssuer: 'https://auth', jwtAudience: 'pubgate' }), { now: () => NOW });
    expect(await strict.verifySubscription(hmacJwt(claims({ iss: 'https://auth', aud: 'pubgate' }), { key: SECRET }), WANT)).toEqual({});
    expect((await refusal(strict.verifySubscription(hmacJwt(claims({ iss: 'https://evil', aud: 'pubgate' }), { key: SECRET }), WANT))).code).toBe('forbidden');
  });
});

describe('verifySubscription (public keys)', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let pemPath: string;
  beforeAll(async () => {
    dir = await tempDir();
    pemPath = await dir.file('keys.pem', publicPem(rsa));
  });
  afterAll(async () => {
    await dir.cleanup();
  });

  it('accepts an RS256 token from a PEM key and refuses HS256 signed with the PEM bytes (algorithm confusion)', async () => {
    const v = await createVerifier(cfg({ jwtAlgorithms: ['HS256', 'RS256'], jwtPublicKeys: pemPath }), { now: () => NOW });
    expect(await v.verifySubscription(await signAsym('RS256', rsa, claims()), WANT)).toEqual({});
    const confused = hmacJwt(claims(), { key: Buffer.from(publicPem(rsa)) });
    expect(await refusal(v.verifySubscription(confused, WANT))).toEqual({ code: 'forbidden', message: 'invalid subscription token: invalid token signature' });
  });

  it('refuses an algorithm outside the allow-list', async () => {
    const v = await createVerifier(cfg({ jwtAlgorithms: ['HS256'], jwtPublicKeys: pemPath }), { now: () => NOW });
    expect(await refusal(v.verifySubscription(await signAsym('RS256', rsa, claims()), WANT))).toEqual({
      code: 'forbidden',
      message: 'invalid subscription token: token algorithm not allowed',
    });
  });

  it('verifies through the JWKS (by kid), and answers unavailable while the JWKS cannot be fetched', async () => {
    let up = true;
    const jwk = { ...(await exportJWK(rsa.publicKey)), kid: 'r1', alg: 'RS256', use: 'sig' };
    const server: Server = createServer((_req, res) => {
      if (up) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
      else res.writeHead(500).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
    try {
      const v = await createVerifier(cfg({ jwtAlgorithms: ['RS256'], jwtSecrets: [], jwtJwksUrl: url }), { now: () => NOW, jwksCooldownMs: 0 });
      const t = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', kid: 'r1' }).sign(rsa.privateKey);
      expect(await v.verifySubscription(t, WANT)).toEqual({});
      expect((await refusal(v.verifySubscription(t, { ...WANT, user: '43' }))).code).toBe('forbidden');
      up = false;
      const fresh = await createVerifier(cfg({ jwtAlgorithms: ['RS256'], jwtSecrets: [], jwtJwksUrl: url }), { now: () => NOW });
      expect((await refusal(fresh.verifySubscription(t, WANT))).code).toBe('unavailable');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
