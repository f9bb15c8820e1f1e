/**
 * HMAC secrets shorter than the hash output (RFC 7518 §3.2): refused by
 * loadConfig with NODE_ENV=production, reported by shortHmacSecrets (the
 * gateway's startup warning) otherwise. The process-level behaviour (exit 1,
 * the warning line) is in test/integration/auth-secret-length.test.ts.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HMAC_MIN_SECRET_BYTES, loadConfig, shortHmacSecrets } from '../../src/config.js';
import { configProblems } from '../helpers/config-problems.js';

// The admin console off: its token is another test's (config.test.ts).
const PRODUCTION = { NODE_ENV: 'production', PUBGATE_ADMIN_CONSOLE: 'false' };
const SHORT = 'short-hmac-secret-of-31-bytes!!'; // 31 bytes: one under the HS256 minimum
const LONG32 = 'a-hmac-secret-of-exactly-32-byte';
const LONG48 = 'an-hmac-secret-of-exactly-forty-eight-bytes-long';
const LONG64 = 'an-hmac-secret-that-is-exactly-sixty-four-bytes-long-for-HS512!!';

const problems = configProblems;

describe('HMAC secret length', () => {
  it('uses lengths that are what their names say', () => {
    expect([SHORT, LONG32, LONG48, LONG64].map((s) => Buffer.byteLength(s))).toEqual([31, 32, 48, 64]);
    expect(HMAC_MIN_SECRET_BYTES).toEqual({ HS256: 32, HS384: 48, HS512: 64 });
  });

  it('refuses a secret under 32 bytes for HS256 with NODE_ENV=production, naming it by position and kid, never by value', () => {
    const p = problems({ ...PRODUCTION, PUBGATE_JWT_SECRETS: `${LONG32},k1:${SHORT},${SHORT}x` });
    expect(p).toEqual([
      'PUBGATE_JWT_SECRETS: secret 2 of 3 (kid "k1") is shorter than 32 bytes, the minimum for HS256 (RFC 7518 §3.2); refused when NODE_ENV=production',
    ]);
    const q = problems({ ...PRODUCTION, PUBGATE_JWT_SECRETS: `${SHORT},k2:${LONG32}` });
    expect(q).toEqual([
      'PUBGATE_JWT_SECRETS: secret 1 of 2 (no kid) is shorter than 32 bytes, the minimum for HS256 (RFC 7518 §3.2); refused when NODE_ENV=production',
    ]);
    for (const line of [...p, ...q]) {
      expect(line).not.toContain(SHORT);
      expect(line).not.toContain(SHORT.slice(0, 8));
      expect(line).not.toContain(LONG32);
    }
  });

  it('asks every secret for the longest hash among the allowed HMAC algorithms', () => {
    // A secret is not bound to one algorithm: with HS512 allowed, any secret may verify an HS512 token.
    expect(problems({ ...PRODUCTION, PUBGATE_JWT_ALGORITHMS: 'HS256,HS384', PUBGATE_JWT_SECRETS: LONG32 })[0])
      .toMatch(/^PUBGATE_JWT_SECRETS: secret 1 of 1 \(no kid\) is shorter than 48 bytes, the minimum for HS384 /);
    expect(problems({ ...PRODUCTION, PUBGATE_JWT_ALGORITHMS: 'HS384', PUBGATE_JWT_SECRETS: LONG48 })).toEqual([]);
    expect(problems({ ...PRODUCTION, PUBGATE_JWT_ALGORITHMS: 'HS512,HS256', PUBGATE_JWT_SECRETS: `a:${LONG48},b:${LONG64}` }))
      .toEqual(['PUBGATE_JWT_SECRETS: secret 1 of 2 (kid "a") is shorter than 64 bytes, the minimum for HS512 (RFC 7518 §3.2); refused when NODE_ENV=production']);
    expect(problems({ ...PRODUCTION, PUBGATE_JWT_ALGORITHMS: 'HS512', PUBGATE_JWT_SECRETS: LONG64 })).toEqual([]);
  });

  it('counts UTF-8 bytes, as the verifier keys the HMAC', () => {
    const sixteenChars32Bytes = 'é'.repeat(16);
    expect(shortHmacSecrets({ jwtAlgorithms: ['HS256'], jwtSecrets: [{ kid: undefined, secret: sixteenChars32Bytes }] })).toEqual([]);
    expect(shortHmacSecrets({ jwtAlgorithms: ['HS256'], jwtSecrets: [{ kid: undefined, secret: 'é'.repeat(15) + 'x' }] })).toHaveLength(1);
  });

  it('does not look at secrets when no HMAC algorithm is allowed (they are never used)', () => {
    expect(shortHmacSecrets({ jwtAlgorithms: ['RS256', 'EdDSA'], jwtSecrets: [{ kid: undefined, secret: 'x' }] })).toEqual([]);
  });

  it('only reports outside production: loadConfig accepts, shortHmacSecrets lists them for the warning', () => {
    const env = { PUBGATE_JWT_SECRETS: `k1:${SHORT},${LONG32},k3:x` };
    expect(problems(env)).toEqual([]);
    expect(problems({ ...env, NODE_ENV: 'development' })).toEqual([]);
    expect(shortHmacSecrets(loadConfig(env))).toEqual([
      'secret 1 of 3 (kid "k1") is shorter than 32 bytes, the minimum for HS256 (RFC 7518 §3.2)',
      'secret 3 of 3 (kid "k3") is shorter than 32 bytes, the minimum for HS256 (RFC 7518 §3.2)',
    ]);
  });

  it('ships a development secret long enough for every HMAC algorithm', () => {
    const dev = JSON.parse(readFileSync(new URL('../../config/development.json', import.meta.url), 'utf8')) as { jwtSecrets: string };
    const cfg = loadConfig({ PUBGATE_JWT_SECRETS: dev.jwtSecrets, PUBGATE_JWT_ALGORITHMS: 'HS256,HS384,HS512' });
    expect(shortHmacSecrets(cfg)).toEqual([]);
  });
});
