/**
 * JWT verification for the handshake and for `refresh` frames.
 *
 * Safety rules, each enforced here and tested in test/unit/auth-verifier.test.ts:
 * - The length limit is checked before any parsing or crypto.
 * - jose always gets an explicit `algorithms` list, and keys are chosen from the
 *   algorithm family: an HS* token is only ever checked against the configured
 *   HMAC secrets (never against public-key bytes), an asymmetric token only
 *   against public keys, each with an allow-list of its own family. So mixing
 *   HS and RS in the config cannot lead to algorithm confusion.
 * - An algorithm is effectively allowed only when it is in the config's list and
 *   key material exists for it (a secret, a fitting PEM key, or a JWKS URL).
 * - No EmbeddedJWK, no UnsecuredJWT; `jku`/`x5u`/`jwk` headers are never used.
 * - `exp` and `sub` are required; `iss`/`aud` are checked when configured.
 */
import type { KeyObject } from 'node:crypto';
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import type { Config, JwtAlgorithm } from '../config.js';
import { JWT_ALGORITHMS } from '../config.js';
import { AuthError, JwksFetchError, toAuthError } from './auth-error.js';
import { HmacKeyring, isHmacAlgorithm, keyFitsAlgorithm, loadPublicKeys } from './keys.js';
import { MAX_TOKEN_LENGTH } from './token.js';

export { AuthError, classifyJoseError, AUTH_REASONS, type AuthReason } from './auth-error.js';

export interface Claims {
  readonly sub: string;
  /** Expiry, unix seconds. */
  readonly exp: number;
  /** Channel patterns this connection may subscribe to. */
  readonly channels: readonly string[];
  /** Channel patterns this connection may publish to over the socket. */
  readonly publish: readonly string[];
}

export interface Verifier {
  /** Resolves the token's claims, or rejects with an AuthError (401; 503 when the JWKS cannot be fetched). */
  verify(token: string): Promise<Claims>;
}

/** What createVerifier returns: a Verifier that also tells which algorithms it can verify (for a startup log line). */
export interface ConfiguredVerifier extends Verifier {
  /** The allowed algorithms that have key material (a secret, a fitting PEM key, or the JWKS URL). */
  readonly algorithms: readonly JwtAlgorithm[];
}

export type VerifierConfig = Pick<
  Config,
  | 'jwtAlgorithms'
  | 'jwtSecrets'
  | 'jwtPublicKeys'
  | 'jwtJwksUrl'
  | 'jwtIssuer'
  | 'jwtAudience'
  | 'jwtClockTolerance'
>;

export interface VerifierOptions {
  /** Clock used for `exp`/`nbf` checks (tests). */
  readonly now?: () => Date;
  /** Minimum time between two JWKS refetches triggered by unknown kids (default 30 s). */
  readonly jwksCooldownMs?: number;
  /** JWKS request timeout (default 5 s). */
  readonly jwksTimeoutMs?: number;
}

/** Three base64url parts; the signature may be empty (`alg: none`, which is then refused by name). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const ALGORITHM_NAMES: ReadonlySet<string> = new Set(JWT_ALGORITHMS);

export async function createVerifier(cfg: VerifierConfig, opts: VerifierOptions = {}): Promise<ConfiguredVerifier> {
  const now = opts.now ?? (() => new Date());
  const hmac = new HmacKeyring(cfg.jwtSecrets);
  const wantsAsymmetric = cfg.jwtAlgorithms.some((a) => !isHmacAlgorithm(a));
  // PEM keys and the JWKS URL are only used (and the file only read) when an asymmetric algorithm is allowed.
  const pemKeys: readonly KeyObject[] =
    wantsAsymmetric && cfg.jwtPublicKeys !== undefined ? await loadPublicKeys(cfg.jwtPublicKeys) : [];
  const jwks = wantsAsymmetric && cfg.jwtJwksUrl !== undefined ? remoteKeyResolver(cfg.jwtJwksUrl, opts) : undefined;

  const hmacAlgorithms = cfg.jwtAlgorithms.filter((a) => isHmacAlgorithm(a) && hmac.size > 0);
  const asymmetricAlgorithms = cfg.jwtAlgorithms.filter(
    (a) => !isHmacAlgorithm(a) && (jwks !== undefined || pemKeys.some((k) => keyFitsAlgorithm(a, k))),
  );
  const allowed: ReadonlySet<string> = new Set([...hmacAlgorithms, ...asymmetricAlgorithms]);

  const baseOptions = (algorithms: readonly JwtAlgorithm[]): JWTVerifyOptions => ({
    algorithms: [...algorithms],
    requiredClaims: ['exp', 'sub'],
    clockTolerance: cfg.jwtClockTolerance,
    ...(cfg.jwtIssuer !== undefined ? { issuer: cfg.jwtIssuer } : {}),
    ...(cfg.jwtAudience !== undefined ? { audience: cfg.jwtAudience } : {}),
  });
  const hmacOptions = baseOptions(hmacAlgorithms);
  const asymmetricOptions = baseOptions(asymmetricAlgorithms);

  async function verifyPayload(token: string): Promise<JWTPayload> {
    const { alg, kid } = readHeader(token);
    if (!allowed.has(alg)) throw new AuthError('alg_not_allowed');
    const at = now();
    if (isHmacAlgorithm(alg as JwtAlgorithm)) {
      const keys = hmac.candidates(kid);
      if (keys.length === 0) throw new AuthError('unknown_kid');
      return tryKeys(token, keys, { ...hmacOptions, currentDate: at });
    }
    const options = { ...asymmetricOptions, currentDate: at };
    // PEM keys first (no I/O, and they work while the JWKS endpoint is down); they carry no kid.
    const local = pemKeys.filter((k) => keyFitsAlgorithm(alg as JwtAlgorithm, k));
    if (jwks === undefined) return tryKeys(token, local, options);
    if (local.length > 0) {
      try {
        return await tryKeys(token, local, options);
      } catch (e) {
        if (!(e instanceof AuthError && e.reason === 'bad_signature')) throw e;
      }
    }
    return verifyWithJwks(token, jwks, options);
  }

  return {
    algorithms: [...allowed] as JwtAlgorithm[],
    async verify(token: string): Promise<Claims> {
      if (typeof token !== 'string' || token === '') throw new AuthError('missing');
      if (token.length > MAX_TOKEN_LENGTH) throw new AuthError('too_long');
      if (!COMPACT_JWS.test(token)) throw new AuthError('malformed');
      let payload: JWTPayload;
      try {
        payload = await verifyPayload(token);
      } catch (e) {
        throw toAuthError(e);
      }
      return toClaims(payload);
    },
  };
}

function readHeader(token: string): { alg: string; kid: string | undefined } {
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch (e) {
    if (e instanceof TypeError) throw new AuthError('malformed');
    throw e;
  }
  const { alg, kid } = header;
  if (typeof alg !== 'string' || alg === '') throw new AuthError('malformed');
  if (kid !== undefined && typeof kid !== 'string') throw new AuthError('malformed');
  if (!ALGORITHM_NAMES.has(alg)) throw new AuthError('alg_not_allowed');
  return { alg, kid };
}

/**
 * Verifies against each key in turn. A signature mismatch moves on to the next
 * key; any other failure means the signature was fine (or the token is bad
 * regardless of key) and is final.
 */
async function tryKeys(token: string, keys: readonly KeyObject[], options: JWTVerifyOptions): Promise<JWTPayload> {
  for (const key of keys) {
    try {
      return (await jwtVerify(token, key, options)).payload;
    } catch (e) {
      if (!(e instanceof errors.JWSSignatureVerificationFailed)) throw e;
    }
  }
  throw new AuthError(keys.length === 0 ? 'unknown_kid' : 'bad_signature');
}

async function verifyWithJwks(token: string, getKey: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, getKey, options)).payload;
  } catch (e) {
    // A kid-less token matching several JWKS keys: try each (jose's documented pattern).
    if (!(e instanceof errors.JWKSMultipleMatchingKeys)) throw e;
    for await (const key of e) {
      try {
        return (await jwtVerify(token, key, options)).payload;
      } catch (inner) {
        if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
      }
    }
    throw new AuthError('bad_signature');
  }
}

/**
 * jose's remote key set (cached for 10 minutes, refetched on an unknown kid at
 * most once per cooldown, concurrent refetches shared), wrapped so that a
 * failure of the endpoint is told apart from a bad token: only "no matching
 * key", "several matching keys" and "unsupported alg" are the token's fault.
 */
function remoteKeyResolver(url: string, opts: VerifierOptions): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(new URL(url), {
    cooldownDuration: opts.jwksCooldownMs ?? 30_000,
    timeoutDuration: opts.jwksTimeoutMs ?? 5_000,
  });
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (e) {
      if (
        e instanceof errors.JWKSNoMatchingKey ||
        e instanceof errors.JWKSMultipleMatchingKeys ||
        e instanceof errors.JOSENotSupported
      ) {
        throw e;
      }
      throw new JwksFetchError(e);
    }
  };
}

function stringArrayClaim(payload: JWTPayload, name: 'channels' | 'publish'): readonly string[] {
  const value = payload[name];
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    throw new AuthError('claim_invalid');
  }
  return Object.freeze([...value]);
}

function toClaims(payload: JWTPayload): Claims {
  const { sub, exp } = payload;
  if (typeof sub !== 'string' || sub === '') throw new AuthError('claim_invalid');
  // jose has checked that exp is present and a number; be explicit for the type.
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new AuthError('claim_invalid');
  return Object.freeze({
    sub,
    exp,
    channels: stringArrayClaim(payload, 'channels'),
    publish: stringArrayClaim(payload, 'publish'),
  });
}
