import { createHmac } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import type { HmacSecret, JwtAlgorithm } from '../../src/config.js';
import { GatewayError } from '../../src/errors.js';
import { AuthError, classifyJoseError, createVerifier, type VerifierConfig } from '../../src/auth/verifier.js';
import { MAX_TOKEN_LENGTH } from '../../src/auth/token.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_SEC = NOW.getTime() / 1000;
const SECRET = 'test-secret-0123456789-abcdefghijklmnop';

function cfg(over: Partial<VerifierConfig> = {}): VerifierConfig {
  return {
    jwtAlgorithms: ['HS256'],
    jwtSecrets: [{ kid: undefined, secret: SECRET }],
    jwtPublicKeys: undefined,
    jwtJwksUrl: undefined,
    jwtIssuer: undefined,
    jwtAudience: undefined,
    jwtClockTolerance: 5,
    ...over,
  };
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** The three parts of a compact JWS. */
function segments(token: string): [string, string, string] {
  const [h = '', p = '', s = ''] = token.split('.');
  return [h, p, s];
}

/** Hand-crafted HMAC token: any header, any payload, no validation on our side. */
function craft(header: Record<string, unknown>, payload: Record<string, unknown>, secret = SECRET): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const hash = ({ HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' } as Record<string, string>)[String(header.alg)] ?? 'sha256';
  return `${input}.${createHmac(hash, secret).update(input).digest('base64url')}`;
}

const claims = (over: JWTPayload = {}): JWTPayload => ({ sub: '42', exp: NOW_SEC + 3600, ...over });

async function sign(payload: JWTPayload, opts: { secret?: string; alg?: JwtAlgorithm; kid?: string } = {}): Promise<string> {
  const header = { alg: opts.alg ?? 'HS256', ...(opts.kid !== undefined ? { kid: opts.kid } : {}) };
  return new SignJWT(payload).setProtectedHeader(header).sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

async function rejection(p: Promise<unknown>): Promise<AuthError> {
  const e: unknown = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(AuthError);
  expect(e).toBeInstanceOf(GatewayError);
  return e as AuthError;
}

async function expectUnauthorized(p: Promise<unknown>, reason: string): Promise<void> {
  const e = await rejection(p);
  expect({ code: e.code, reason: e.reason }).toEqual({ code: 'unauthorized', reason });
}

describe('createVerifier (HMAC and claims)', () => {
  it('accepts a valid HS256 token and returns its claims', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const c = await v.verify(await sign(claims({ channels: ['news', 'user:{sub}'], publish: ['chat:*'] })));
    expect(c).toEqual({ sub: '42', exp: NOW_SEC + 3600, channels: ['news', 'user:{sub}'], publish: ['chat:*'] });
    expect(v.algorithms).toEqual(['HS256']);
  });

  it('defaults channels and publish to empty lists', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const c = await v.verify(await sign(claims()));
    expect(c.channels).toEqual([]);
    expect(c.publish).toEqual([]);
  });

  it('accepts HS384 and HS512 when allowed', async () => {
    const v = await createVerifier(cfg({ jwtAlgorithms: ['HS384', 'HS512'] }), { now: () => NOW });
    expect((await v.verify(await sign(claims(), { alg: 'HS384' }))).sub).toBe('42');
    expect((await v.verify(await sign(claims(), { alg: 'HS512' }))).sub).toBe('42');
    await expectUnauthorized(v.verify(await sign(claims(), { alg: 'HS256' })), 'alg_not_allowed');
  });

  it('rejects alg none (unsigned token)', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims())}.`;
    await expectUnauthorized(v.verify(unsigned), 'alg_not_allowed');
    const withSig = craft({ alg: 'none' }, claims());
    await expectUnauthorized(v.verify(withSig), 'alg_not_allowed');
    const upper = `${b64({ alg: 'NONE' })}.${b64(claims())}.`;
    await expectUnauthorized(v.verify(upper), 'alg_not_allowed');
  });

  it('rejects an empty token as missing and an oversized one as too_long before any parsing', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(''), 'missing');
    const huge = 'a'.repeat(MAX_TOKEN_LENGTH + 1);
    expect(huge).toHaveLength(8193);
    await expectUnauthorized(v.verify(huge), 'too_long');
    // A real, validly signed token that is too long is still refused.
    const padded = await sign(claims({ pad: 'x'.repeat(MAX_TOKEN_LENGTH) }));
    expect(padded.length).toBeGreaterThan(MAX_TOKEN_LENGTH);
    await expectUnauthorized(v.verify(padded), 'too_long');
  });

  it('rejects malformed tokens', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    for (const t of ['abc', 'a.b', 'a.b.c.d', 'a.b.c.d.e', '!!.??.**', `${b64('str')}.${b64(claims())}.x`,
      `${Buffer.from('{not json').toString('base64url')}.${b64(claims())}.x`]) {
      await expectUnauthorized(v.verify(t), 'malformed');
    }
    await expectUnauthorized(v.verify(craft({ alg: 'HS256', kid: 7 }, claims())), 'malformed');
    const badPayload = `${b64({ alg: 'HS256' })}.${Buffer.from('not json').toString('base64url')}`;
    const sig = createHmac('sha256', SECRET).update(badPayload).digest('base64url');
    await expectUnauthorized(v.verify(`${badPayload}.${sig}`), 'malformed');
  });

  it('rejects a tampered payload', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const [h, , s] = segments(await sign(claims({ channels: ['news'] })));
    const forged = `${h}.${b64(claims({ channels: ['*'] }))}.${s}`;
    await expectUnauthorized(v.verify(forged), 'bad_signature');
  });

  it('rejects a token signed with another secret', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign(claims(), { secret: 'another-secret' })), 'bad_signature');
  });

  it('rejects an unknown crit header', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(craft({ alg: 'HS256', crit: ['x'], x: 1 }, claims())), 'malformed');
    await expectUnauthorized(v.verify(craft({ alg: 'HS256', crit: ['exp'], exp: 1 }, claims())), 'malformed');
  });

  it('requires exp and sub', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(craft({ alg: 'HS256' }, { sub: '42' })), 'claim_invalid');
    await expectUnauthorized(v.verify(craft({ alg: 'HS256' }, { exp: NOW_SEC + 60 })), 'claim_invalid');
    for (const sub of [42, '', null, ['42'], { id: 42 }, true]) {
      await expectUnauthorized(v.verify(craft({ alg: 'HS256' }, { sub, exp: NOW_SEC + 60 })), 'claim_invalid');
    }
    await expectUnauthorized(v.verify(craft({ alg: 'HS256' }, { sub: '42', exp: 'tomorrow' })), 'claim_invalid');
  });

  it('refuses a subscription token (one with a channel claim) as a connection token', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign(claims({ channel: 'room:5' }))), 'claim_invalid');
    await expect(v.verify(await sign(claims()))).resolves.toMatchObject({ sub: expect.any(String) });
  });

  it('rejects channels and publish claims that are not arrays of strings', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    for (const bad of ['news', [1], ['a', null], { a: 1 }, null, [['a']]]) {
      await expectUnauthorized(v.verify(craft({ alg: 'HS256' }, claims({ channels: bad }))), 'claim_invalid');
      await expectUnauthorized(v.verify(craft({ alg: 'HS256' }, claims({ publish: bad }))), 'claim_invalid');
    }
  });

  it('rejects an expired token', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign(claims({ exp: NOW_SEC - 3600 }))), 'expired');
  });

  it('applies the clock tolerance exactly at its boundaries', async () => {
    let clock = NOW;
    const v = await createVerifier(cfg({ jwtClockTolerance: 5 }), { now: () => clock });
    const token = await sign(claims({ exp: NOW_SEC, nbf: NOW_SEC - 100 }));
    clock = new Date((NOW_SEC + 4) * 1000);
    expect((await v.verify(token)).exp).toBe(NOW_SEC);
    clock = new Date((NOW_SEC + 4) * 1000 + 999);
    expect((await v.verify(token)).exp).toBe(NOW_SEC);
    clock = new Date((NOW_SEC + 5) * 1000);
    await expectUnauthorized(v.verify(token), 'expired');

    const future = await sign(claims({ nbf: NOW_SEC + 10 }));
    clock = new Date((NOW_SEC + 4) * 1000);
    await expectUnauthorized(v.verify(future), 'not_yet_valid');
    clock = new Date((NOW_SEC + 5) * 1000);
    expect((await v.verify(future)).sub).toBe('42');
  });

  it('applies no tolerance when configured to 0', async () => {
    let clock = new Date((NOW_SEC - 1) * 1000);
    const v = await createVerifier(cfg({ jwtClockTolerance: 0 }), { now: () => clock });
    const token = await sign(claims({ exp: NOW_SEC }));
    expect((await v.verify(token)).sub).toBe('42');
    clock = NOW;
    await expectUnauthorized(v.verify(token), 'expired');
  });

  it('rejects a token whose nbf is in the future', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign(claims({ nbf: NOW_SEC + 600 }))), 'not_yet_valid');
  });

  it('checks iss and aud when configured', async () => {
    const v = await createVerifier(cfg({ jwtIssuer: 'https://issuer.example', jwtAudience: 'pubgate' }), { now: () => NOW });
    const good = claims({ iss: 'https://issuer.example', aud: 'pubgate' });
    expect((await v.verify(await sign(good))).sub).toBe('42');
    expect((await v.verify(await sign({ ...good, aud: ['other', 'pubgate'] }))).sub).toBe('42');
    await expectUnauthorized(v.verify(await sign({ ...good, iss: 'https://evil.example' })), 'claim_invalid');
    await expectUnauthorized(v.verify(await sign({ ...good, aud: 'other' })), 'claim_invalid');
    await expectUnauthorized(v.verify(await sign(claims({ aud: 'pubgate' }))), 'claim_invalid');
    await expectUnauthorized(v.verify(await sign(claims({ iss: 'https://issuer.example' }))), 'claim_invalid');
  });

  it('ignores iss and aud when not configured', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    expect((await v.verify(await sign(claims({ iss: 'anyone', aud: 'anything' })))).sub).toBe('42');
  });

  it('never puts the token into the error message', async () => {
    const v = await createVerifier(cfg(), { now: () => NOW });
    const token = await sign(claims({ exp: NOW_SEC - 10 }));
    const e = await rejection(v.verify(token));
    expect(e.message).not.toContain(token);
    expect(e.message).not.toContain(token.split('.')[1]);
    expect(e.cause).toBeUndefined();
  });
});

describe('createVerifier (HMAC key rotation by kid)', () => {
  const rotating: HmacSecret[] = [
    { kid: 'k1', secret: 'secret-one-0123456789' },
    { kid: 'k2', secret: 'secret-two-0123456789' },
  ];

  it('selects the secret named by the kid', async () => {
    const v = await createVerifier(cfg({ jwtSecrets: rotating }), { now: () => NOW });
    expect((await v.verify(await sign(claims(), { kid: 'k1', secret: 'secret-one-0123456789' }))).sub).toBe('42');
    expect((await v.verify(await sign(claims(), { kid: 'k2', secret: 'secret-two-0123456789' }))).sub).toBe('42');
  });

  it('does not fall back to another secret when the kid names the wrong one', async () => {
    const v = await createVerifier(cfg({ jwtSecrets: rotating }), { now: () => NOW });
    await expectUnauthorized(v.verify(await sign(claims(), { kid: 'k1', secret: 'secret-two-0123456789' })), 'bad_signature');
  });

  it('rejects an unknown kid without trying the configured secrets', async () => {
    const withPlain: HmacSecret[] = [...rotating, { kid: undefined, secret: SECRET }];
    const v = await createVerifier(cfg({ jwtSecrets: withPlain }), { now: () => NOW });
    // Signed with a configured secret, but the kid names none: still refused.
    await expectUnauthorized(v.verify(await sign(claims(), { kid: 'k3', secret: SECRET })), 'unknown_kid');
    await expectUnauthorized(v.verify(await sign(claims(), { kid: 'k3', secret: 'secret-one-0123456789' })), 'unknown_kid');
  });

  it('tries kid-less secrets first, then the others, for a token without kid', async () => {
    const withPlain: HmacSecret[] = [...rotating, { kid: undefined, secret: SECRET }];
    const v = await createVerifier(cfg({ jwtSecrets: withPlain }), { now: () => NOW });
    expect((await v.verify(await sign(claims()))).sub).toBe('42');
    expect((await v.verify(await sign(claims(), { secret: 'secret-two-0123456789' }))).sub).toBe('42');
    await expectUnauthorized(v.verify(await sign(claims(), { secret: 'not-configured' })), 'bad_signature');
  });

  it('rejects weird kid values as unknown, with no lookup outside the configured secrets', async () => {
    const v = await createVerifier(cfg({ jwtSecrets: rotating }), { now: () => NOW });
    const weird = ['../../etc/passwd', "' OR 1=1--", '__proto__', 'constructor', 'toString', 'hasOwnProperty',
      '', ' k1', 'K1', 'k1\u0000', '%6B1', 'x'.repeat(5000), '\u{1F600}'];
    for (const kid of weird) {
      await expectUnauthorized(v.verify(await sign(claims(), { kid, secret: 'secret-one-0123456789' })), 'unknown_kid');
    }
  });

  it('treats HMAC algorithms without configured secrets as not allowed', async () => {
    const v = await createVerifier(cfg({ jwtSecrets: [] }), { now: () => NOW });
    expect(v.algorithms).toEqual([]);
    await expectUnauthorized(v.verify(await sign(claims())), 'alg_not_allowed');
  });
});

describe('classifyJoseError', () => {
  it('maps unexpected errors to internal and keeps AuthError reasons', () => {
    expect(classifyJoseError(new Error('boom'))).toBe('internal');
    expect(classifyJoseError(new AuthError('too_long'))).toBe('too_long');
  });

  it('gives a 503-class code only for JWKS failures', () => {
    expect(new AuthError('jwks_unavailable').code).toBe('unavailable');
    expect(new AuthError('jwks_unavailable').message).toBe('cannot fetch JWKS');
    expect(new AuthError('expired').code).toBe('unauthorized');
  });
});
