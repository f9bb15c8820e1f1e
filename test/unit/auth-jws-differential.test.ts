/**
 * Differential test of src/auth/jws-sync.ts (pubgate's synchronous verifier
 * for HMAC secrets and PEM keys) against jose's jwtVerify, on one seeded
 * corpus (test/helpers/jws-corpus.ts) under several configurations.
 *
 * Layer compared: what a handshake gets. pubgate side: `verifySync(token)` of
 * a real createVerifier (jws-sync underneath). jose side, the JWKS path's
 * pipeline with local keys: the token length limit (a pubgate rule both paths
 * apply before any parsing), then jose's jwtVerify with the options pubgate
 * gives jose (the config's `algorithms`, requiredClaims exp and sub, its
 * clockTolerance, issuer, audience, the same clock), then `toClaims` (pubgate's
 * own claim rules, applied after jose on the JWKS path too). For accepted
 * tokens the Claims must be equal, and so must the full payload jws-sync
 * decodes and the one jose returns.
 *
 * Keys on the jose side: every configured key is offered to jose in turn (the
 * pattern verifier.ts uses for several matching JWKS keys), and jose alone
 * decides whether a key fits the algorithm (it throws TypeError/DOMException
 * for a key of the wrong type or curve; the next key is tried) and whether the
 * signature holds (JWSSignatureVerificationFailed; the next key is tried). Any
 * other jose error rejects the token. Only the `kid` rule is pubgate's and is
 * written here from the contract and docs/protocol.md, not taken from
 * src/auth: a string kid selects the HMAC secret with that kid and no other; a
 * token without kid may use any secret; PEM keys carry no kid and serve any
 * token; a kid that is not a string (RFC 7515 §4.1.4) selects no key.
 *
 * The one intended difference: jws-sync decodes base64url strictly (no '='
 * padding, no whitespace, zero trailing bits), while jose on Node 22 decodes
 * with the forgiving atob and accepts, for example, a signature with a newline
 * in it. So: a token whose three parts are canonical base64url gets the same
 * decision from both; for any other token pubgate rejects (`malformed`) and
 * jose may accept. pubgate never accepts what jose rejects.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { errors, jwtVerify, type JWTPayload, type JWTVerifyOptions } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JWT_ALGORITHMS, type JwtAlgorithm } from '../../src/config.js';
import { checkClaims, decodeBase64url, decodeJws } from '../../src/auth/jws-sync.js';
import { MAX_TOKEN_LENGTH } from '../../src/auth/token.js';
import { AuthError, createVerifier, toClaims, type Claims, type ConfiguredVerifier, type VerifierConfig } from '../../src/auth/verifier.js';
import { buildCorpus, generateKeys, type CorpusCase, type CorpusKeys, type KeyPair } from '../helpers/jws-corpus.js';
import { tempDir } from '../helpers/keys.js';

const SEED = 20260512;
const NOW_SEC = 1_900_000_000;
/** The clock sits 0.6 s past a whole second, so a verifier that does not round "now" as jose does is caught. */
const NOW_MS = NOW_SEC * 1000 + 600;
const ISSUER = 'https://issuer.example';
const AUDIENCE = 'pubgate';

interface Setup {
  readonly name: string;
  readonly algorithms: readonly JwtAlgorithm[];
  readonly secrets: (k: CorpusKeys) => CorpusKeys['secrets'];
  readonly pem: (k: CorpusKeys) => readonly KeyPair[];
  readonly issuer?: string;
  readonly audience?: string;
  readonly tolerance: number;
}

const SETUPS: readonly Setup[] = [
  {
    name: 'every algorithm, every key type, iss and aud, tolerance 5',
    algorithms: JWT_ALGORITHMS,
    secrets: (k) => k.secrets,
    pem: (k) => [k.rsaA, k.rsaB, k.ec256, k.ec384, k.ec521, k.ed25519],
    issuer: ISSUER,
    audience: AUDIENCE,
    tolerance: 5,
  },
  {
    name: 'HS256 only, a kid-less secret and k1, tolerance 0',
    algorithms: ['HS256'],
    secrets: (k) => k.secrets.slice(0, 2),
    pem: () => [],
    tolerance: 0,
  },
  {
    name: 'HS384 and HS512, secrets with kids only, iss, tolerance 30',
    algorithms: ['HS384', 'HS512'],
    secrets: (k) => k.secrets.slice(1),
    pem: () => [],
    issuer: ISSUER,
    tolerance: 30,
  },
  {
    name: 'RS256, PS384, ES256, EdDSA from a PEM file (also a P-384 key no algorithm fits), aud, tolerance 30',
    algorithms: ['RS256', 'PS384', 'ES256', 'EdDSA'],
    secrets: () => [],
    pem: (k) => [k.rsaB, k.ec256, k.ec384, k.ed25519],
    audience: AUDIENCE,
    tolerance: 30,
  },
  {
    name: 'HS256 and RS256 together (algorithm confusion), tolerance 5',
    algorithms: ['HS256', 'RS256'],
    secrets: (k) => k.secrets.slice(0, 1),
    pem: (k) => [k.rsaA],
    tolerance: 5,
  },
];

type Outcome =
  | { readonly ok: true; readonly claims: Claims; readonly payload: JWTPayload }
  | { readonly ok: false; readonly why: string };

interface Prepared {
  readonly setup: Setup;
  readonly cfg: VerifierConfig;
  readonly pubgate: ConfiguredVerifier;
  readonly secretKeys: readonly { readonly kid: string | undefined; readonly key: Uint8Array }[];
  readonly publicKeys: readonly KeyObject[];
  readonly joseOptions: JWTVerifyOptions;
}

class NoCandidate extends Error {}

/** jose's decision for a token, with every configured key offered in turn (see the file comment). */
async function joseDecides(p: Prepared, token: string): Promise<Outcome> {
  if (token.length > MAX_TOKEN_LENGTH) return { ok: false, why: 'too_long (pubgate rule on both paths)' };
  const candidates = (header: { kid?: unknown }): (Uint8Array | KeyObject)[] => {
    const { kid } = header;
    if (kid !== undefined && typeof kid !== 'string') return [];
    const secrets = kid === undefined
      ? [...p.secretKeys.filter((s) => s.kid === undefined), ...p.secretKeys.filter((s) => s.kid !== undefined)]
      : p.secretKeys.filter((s) => s.kid === kid);
    return [...secrets.map((s) => s.key), ...p.publicKeys];
  };
  for (let i = 0; ; i++) {
    try {
      const { payload } = await jwtVerify(token, (header) => {
        const c = candidates(header);
        if (i >= c.length) throw new NoCandidate();
        return c[i]!;
      }, p.joseOptions);
      try {
        return { ok: true, claims: toClaims(payload), payload };
      } catch (e) {
        return { ok: false, why: `toClaims: ${(e as AuthError).reason}` };
      }
    } catch (e) {
      if (e instanceof NoCandidate) return { ok: false, why: 'no key verifies' };
      if (e instanceof errors.JWSSignatureVerificationFailed) continue;
      // jose's "this key cannot be used with this alg": TypeError from its own checks, DOMException from WebCrypto.
      if (e instanceof TypeError || e instanceof DOMException) continue;
      return { ok: false, why: `${(e as Error).constructor.name}: ${(e as Error).message}` };
    }
  }
}

function pubgateDecides(p: Prepared, token: string): Outcome {
  try {
    const claims = p.pubgate.verifySync(token);
    if (claims === undefined) return { ok: false, why: 'undefined (JWKS needed: no JWKS is configured)' };
    // The payload as jws-sync decodes it, for the payload comparison.
    const payload = checkClaims(decodeJws(token).payload, {
      clockToleranceSec: p.cfg.jwtClockTolerance, issuer: p.cfg.jwtIssuer, audience: p.cfg.jwtAudience,
    }, NOW_MS) as JWTPayload;
    return { ok: true, claims, payload };
  } catch (e) {
    if (!(e instanceof AuthError)) throw e;
    return { ok: false, why: e.reason };
  }
}

/** Each of the three parts is base64url in its one canonical form (checked by re-encoding, not by jws-sync's method). */
function canonical(token: string): boolean {
  const parts = token.split('.');
  return parts.length === 3 && parts.every((part) => /^[A-Za-z0-9_-]*$/.test(part) && Buffer.from(part, 'base64url').toString('base64url') === part);
}

const shown = (token: string): string => (token.length > 160 ? `${token.slice(0, 160)}… (${token.length} chars)` : token);

let keys: CorpusKeys;
let corpus: CorpusCase[];
let dir: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  keys = generateKeys(SEED);
  corpus = buildCorpus(keys, { seed: SEED, nowSec: NOW_SEC, issuer: ISSUER, audience: AUDIENCE });
  dir = await tempDir('pubgate-jws-diff-');
});

afterAll(async () => {
  await dir.cleanup();
});

async function prepare(setup: Setup, index: number): Promise<Prepared> {
  const pairs = setup.pem(keys);
  const pemText = pairs.map((k) => k.publicKey.export({ type: 'spki', format: 'pem' }).toString()).join('');
  const cfg: VerifierConfig = {
    jwtAlgorithms: setup.algorithms,
    jwtSecrets: setup.secrets(keys),
    jwtPublicKeys: pairs.length > 0 ? await dir.file(`keys-${index}.pem`, pemText) : undefined,
    jwtJwksUrl: undefined,
    jwtIssuer: setup.issuer,
    jwtAudience: setup.audience,
    jwtClockTolerance: setup.tolerance,
  };
  return {
    setup,
    cfg,
    pubgate: await createVerifier(cfg, { now: () => new Date(NOW_MS) }),
    secretKeys: cfg.jwtSecrets.map((s) => ({ kid: s.kid, key: new TextEncoder().encode(s.secret) })),
    // Parsed from the same PEM text pubgate reads, but by the test.
    publicKeys: pairs.map((k) => createPublicKey(k.publicKey.export({ type: 'spki', format: 'pem' }))),
    joseOptions: {
      algorithms: [...setup.algorithms],
      requiredClaims: ['exp', 'sub'],
      clockTolerance: setup.tolerance,
      currentDate: new Date(NOW_MS),
      ...(setup.issuer !== undefined ? { issuer: setup.issuer } : {}),
      ...(setup.audience !== undefined ? { audience: setup.audience } : {}),
    },
  };
}

describe('jws-sync against jose, on a generated corpus', () => {
  it('generates a deterministic corpus of thousands of cases', () => {
    expect(corpus.length).toBeGreaterThan(2500);
    // Same seed, same cases (labels; the bytes of randomized signatures differ).
    // A variant equal to the part it mutates is left out, so the signature
    // mutations of the randomized ECDSA and PSS signatures can come and go
    // (e.g. "standard alphabet" only exists when the signature has a - or _).
    const again = buildCorpus(keys, { seed: SEED, nowSec: NOW_SEC, issuer: ISSUER, audience: AUDIENCE });
    const stable = (c: CorpusCase): boolean => !/^(ES|PS)\S* signature characters: /.test(c.label);
    expect(again.filter(stable).map((c) => c.label)).toEqual(corpus.filter(stable).map((c) => c.label));
    // Cases that do not involve a randomized signature are byte-identical.
    const deterministic = (c: CorpusCase): boolean => /^HS|^RS|^EdDSA|^confusion: HS/.test(c.label);
    expect(again.filter(deterministic).map((c) => c.token)).toEqual(corpus.filter(deterministic).map((c) => c.token));
  });

  SETUPS.forEach((setup, index) => {
    it(`decides every case as jose does: ${setup.name}`, async () => {
      const p = await prepare(setup, index);
      const failures: string[] = [];
      const looserEncoding: CorpusCase[] = [];
      let accepted = 0;
      for (const c of corpus) {
        const ours = pubgateDecides(p, c.token);
        const theirs = await joseDecides(p, c.token);
        const where = `#${c.id} ${c.label}\n    token ${shown(JSON.stringify(c.token))}`;
        if (ours.ok && !theirs.ok) {
          failures.push(`${where}\n    pubgate ACCEPTS, jose rejects: ${theirs.why}`);
        } else if (!ours.ok && theirs.ok) {
          if (canonical(c.token) || ours.why !== 'malformed') failures.push(`${where}\n    pubgate rejects (${ours.why}), jose ACCEPTS`);
          else looserEncoding.push(c);
        } else if (ours.ok && theirs.ok) {
          accepted += 1;
          if (!isDeepStrictEqual(ours.claims, theirs.claims)) failures.push(`${where}\n    claims differ: ${JSON.stringify(ours.claims)} vs ${JSON.stringify(theirs.claims)}`);
          if (!isDeepStrictEqual(ours.payload, theirs.payload)) failures.push(`${where}\n    payloads differ: ${JSON.stringify(ours.payload)} vs ${JSON.stringify(theirs.payload)}`);
        }
      }
      expect(failures, failures.slice(0, 20).join('\n')).toEqual([]);
      // The corpus really exercises acceptance under this configuration, and the one documented difference.
      expect(accepted).toBeGreaterThan(50);
      expect(looserEncoding.length).toBeGreaterThan(0);
      for (const c of looserEncoding) expect(canonical(c.token), c.label).toBe(false);
    });
  });

  it('accepts a valid token of every algorithm and key type when everything is allowed', async () => {
    const p = await prepare(SETUPS[0]!, 100);
    const validOnes = corpus.filter((c) => / valid$/.test(c.label));
    const algs = new Set<string>();
    for (const c of validOnes) {
      expect(pubgateDecides(p, c.token).ok, c.label).toBe(true);
      expect((await joseDecides(p, c.token)).ok, c.label).toBe(true);
      algs.add(c.label.split('/')[0]!);
    }
    expect([...algs].sort()).toEqual([...JWT_ALGORITHMS].sort());
  });
});

describe('decodeBase64url (strict)', () => {
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const accepts = (s: string): boolean => {
    try {
      decodeBase64url(s);
      return true;
    } catch (e) {
      if (!(e instanceof AuthError) || e.reason !== 'malformed') throw e;
      return false;
    }
  };
  const isCanonical = (s: string): boolean => Buffer.from(s, 'base64url').toString('base64url') === s;

  it('accepts exactly the canonical encodings of the last 1 or 2 bytes (every 2-character tail, every 3-character tail)', () => {
    const wrong: string[] = [];
    let ok = 0;
    // Only the last character has unused bits; 'A', 'Q', 'g', 'w' cover the high bits of the first one.
    for (const a of 'AQgw') {
      for (const b of ALPHABET) {
        for (const text of [`AAAA${a}${b}`, ...[...ALPHABET].map((c) => `${a}${b}${c}`)]) {
          const yes = accepts(text);
          if (yes !== isCanonical(text)) wrong.push(text);
          if (yes) ok += 1;
        }
      }
    }
    expect(wrong).toEqual([]);
    expect(ok).toBe(4 * 4 + 4 * 64 * 16); // 1 in 16 two-character tails, 1 in 4 three-character ones
  });

  it('decodes canonical text to its bytes and refuses padding, whitespace, other alphabets and lengths 4n+1', () => {
    for (let n = 0; n < 40; n++) {
      const bytes = Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff));
      expect(decodeBase64url(bytes.toString('base64url'))).toEqual(bytes);
    }
    for (const bad of ['A', 'AAAAA', 'AA==', 'AAA=', 'AA=', 'AB', 'AAB', 'A+', 'A/', 'A A', 'AA\n', ' AA', 'AA\t', 'A.A', 'AÀ', 'QUJD+w']) {
      expect(accepts(bad), JSON.stringify(bad)).toBe(false);
    }
    expect(accepts('')).toBe(true);
  });
});
