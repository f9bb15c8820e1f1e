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
 * - Local keys (secrets, PEM) are checked by jws-sync.ts, synchronously; every
 *   token, JWKS ones too, is first decoded there (strict base64url). Its
 *   decisions are held to jose's by test/unit/auth-jws-differential.test.ts.
 */
import type { KeyObject } from 'node:crypto';
import {
  createRemoteJWKSet,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import type { Config, JwtAlgorithm } from '../config.js';
import { JWT_ALGORITHMS } from '../config.js';
import { GatewayError } from '../errors.js';
import { AuthError, JwksFetchError, toAuthError } from './auth-error.js';
import { HmacKeyring, isHmacAlgorithm, keyFitsAlgorithm, loadPublicKeys } from './keys.js';
import { MAX_TOKEN_LENGTH } from './token.js';
import { checkClaims, decodeJws, signatureValid, type DecodedJws } from './jws-sync.js';
import { isValidChannel } from '../protocol/channel.js';

export { AuthError, classifyJoseError, AUTH_REASONS, type AuthReason } from './auth-error.js';

export interface Claims {
  readonly sub: string;
  /** Expiry, unix seconds. */
  readonly exp: number;
  /** Channel patterns this connection may subscribe to. */
  readonly channels: readonly string[];
  /** Channel patterns this connection may publish to over the socket. */
  readonly publish: readonly string[];
  /** The `info` claim serialized (a JSON object, at most MAX_INFO_BYTES), shown in presence; undefined without one. */
  readonly info?: string;
  /** The `subs` claim: channel names (not patterns) subscribed at connect (contract 1.1, server-side subscriptions). */
  readonly subs?: readonly string[];
}

/** What a valid subscription token carries beyond the checked `sub`, `channel` and `exp`. */
export interface SubscriptionClaims {
  /** The token's `info` claim serialized (a JSON object, at most MAX_INFO_BYTES), for presence in that channel. */
  readonly info?: string;
}

/** Largest `info` claim, serialized (contract: larger is 401 at the handshake). */
export const MAX_INFO_BYTES = 1024;

export interface Verifier {
  /** Resolves the token's claims, or rejects with an AuthError (401; 503 when the JWKS cannot be fetched). */
  verify(token: string): Promise<Claims>;
  /**
   * Decides without I/O when local keys (HMAC secrets, PEM keys) can: returns
   * the claims or throws an AuthError. Returns undefined when only the JWKS
   * can decide; then call verify().
   */
  verifySync(token: string): Claims | undefined;
  /**
   * A subscription token (contract 1.1): verified like a connection token (same
   * keys, algorithms, kid, JWKS, iss/aud, clock tolerance), then its `sub` must
   * be `want.user` and its `channel` `want.channel`. Rejects with a
   * GatewayError: `unauthorized` when it is past `exp`, `forbidden` when it is
   * invalid in any other way or for another user or channel, `unavailable` when
   * the JWKS cannot be fetched.
   */
  verifySubscription(token: string, want: { readonly user: string; readonly channel: string }): Promise<SubscriptionClaims>;
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
  // jose verifies only tokens whose key comes from the JWKS; local keys are checked in jws-sync.ts.
  const asymmetricOptions = baseOptions(asymmetricAlgorithms);

  const rules = { clockToleranceSec: cfg.jwtClockTolerance, issuer: cfg.jwtIssuer, audience: cfg.jwtAudience };

  const validWith = (jws: DecodedJws, alg: JwtAlgorithm, keys: readonly KeyObject[]): boolean =>
    keys.some((k) => {
      try {
        return signatureValid(jws, alg, k);
      } catch {
        return false; // a signature node:crypto cannot even parse is simply not valid
      }
    });

  /** The payload when local keys decide; undefined when the JWKS must; throws AuthError otherwise. */
  function verifyLocally(token: string): JWTPayload | undefined {
    if (typeof token !== 'string' || token === '') throw new AuthError('missing');
    if (token.length > MAX_TOKEN_LENGTH) throw new AuthError('too_long');
    // Three strict base64url parts and a well-formed header, for every token (JWKS ones too).
    const jws = decodeJws(token);
    if (!ALGORITHM_NAMES.has(jws.alg) || !allowed.has(jws.alg)) throw new AuthError('alg_not_allowed');
    const alg = jws.alg as JwtAlgorithm;
    const nowMs = now().getTime();
    if (isHmacAlgorithm(alg)) {
      const keys = hmac.candidates(jws.kid);
      if (keys.length === 0) throw new AuthError('unknown_kid');
      if (!validWith(jws, alg, keys)) throw new AuthError('bad_signature');
      return checkClaims(jws.payload, rules, nowMs) as JWTPayload;
    }
    // PEM keys first (no I/O, and they work while the JWKS endpoint is down); they carry no kid.
    const local = pemKeys.filter((k) => keyFitsAlgorithm(alg, k));
    if (validWith(jws, alg, local)) return checkClaims(jws.payload, rules, nowMs) as JWTPayload;
    if (jwks === undefined) throw new AuthError(local.length === 0 ? 'unknown_kid' : 'bad_signature');
    return undefined;
  }

  /** The verified payload, from local keys or the JWKS; throws AuthError. */
  async function verifiedPayload(token: string): Promise<JWTPayload> {
    let payload: JWTPayload | undefined;
    try {
      payload = verifyLocally(token);
      if (payload === undefined && jwks !== undefined) {
        payload = await verifyWithJwks(token, jwks, { ...asymmetricOptions, currentDate: now() });
      }
    } catch (e) {
      throw toAuthError(e);
    }
    if (payload === undefined) throw new AuthError('internal');
    return payload;
  }

  return {
    algorithms: [...allowed] as JwtAlgorithm[],
    verifySync(token: string): Claims | undefined {
      let payload: JWTPayload | undefined;
      try {
        payload = verifyLocally(token);
      } catch (e) {
        throw toAuthError(e);
      }
      return payload === undefined ? undefined : toClaims(payload);
    },
    async verify(token: string): Promise<Claims> {
      return toClaims(await verifiedPayload(token));
    },
    async verifySubscription(token, want) {
      let payload: JWTPayload;
      try {
        payload = await verifiedPayload(token);
      } catch (e) {
        throw subscriptionError(e);
      }
      return subscriptionClaims(payload, want);
    },
  };
}

/**
 * A connection token's AuthError as the subscribe reply's error: past `exp`
 * is `unauthorized` (the client fetches a new token), a JWKS outage
 * `unavailable`, anything else about the token `forbidden`. Messages are
 * fixed: never a claim value.
 */
function subscriptionError(e: unknown): GatewayError {
  const a = e instanceof AuthError ? e : toAuthError(e);
  if (a.reason === 'expired') return new GatewayError('unauthorized', 'subscription token expired');
  if (a.reason === 'jwks_unavailable') return new GatewayError('unavailable', 'cannot fetch JWKS to verify the subscription token', 5);
  if (a.reason === 'internal') return new GatewayError('internal', 'cannot verify the subscription token');
  return new GatewayError('forbidden', `invalid subscription token: ${a.message}`);
}

/** The subscription token's own rules, on a verified payload (exp and the signature are checked). */
export function subscriptionClaims(payload: JWTPayload, want: { readonly user: string; readonly channel: string }): SubscriptionClaims {
  if (payload.sub !== want.user) throw new GatewayError('forbidden', 'the subscription token is for another user');
  if (payload.channel !== want.channel) throw new GatewayError('forbidden', 'the subscription token is for another channel');
  let info: string | undefined;
  try {
    info = infoClaim(payload);
  } catch (e) {
    throw subscriptionError(e);
  }
  return info === undefined ? {} : { info };
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

/**
 * pubgate's own claim rules, applied to a payload jose (JWKS path) or
 * jws-sync.ts (local keys) has verified. Exported for the differential test,
 * which compares the two paths at this layer.
 */
export function toClaims(payload: JWTPayload): Claims {
  const { sub, exp } = payload;
  if (typeof sub !== 'string' || sub === '') throw new AuthError('claim_invalid');
  // jose has checked that exp is present and a number; be explicit for the type.
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new AuthError('claim_invalid');
  // A token naming a `channel` is a subscription token: handed out per
  // channel, it must not open a connection as its user.
  if (payload.channel !== undefined) throw new AuthError('claim_invalid');
  const info = infoClaim(payload);
  const subs = subsClaim(payload);
  return Object.freeze({
    sub,
    exp,
    channels: stringArrayClaim(payload, 'channels'),
    publish: stringArrayClaim(payload, 'publish'),
    ...(info !== undefined ? { info } : {}),
    ...(subs !== undefined ? { subs } : {}),
  });
}

/** The `subs` claim: an array of valid channel names (duplicates dropped, order kept); anything else is claim_invalid. */
function subsClaim(payload: JWTPayload): readonly string[] | undefined {
  const v = payload.subs;
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((c): c is string => isValidChannel(c))) throw new AuthError('claim_invalid');
  return Object.freeze([...new Set(v)]);
}

/** The `info` claim as JSON text: a JSON object of at most MAX_INFO_BYTES (UTF-8) serialized. */
function infoClaim(payload: JWTPayload): string | undefined {
  const v = payload.info;
  if (v === undefined) return undefined;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new AuthError('info_invalid');
  const text = JSON.stringify(v);
  if (Buffer.byteLength(text, 'utf8') > MAX_INFO_BYTES) throw new AuthError('info_invalid');
  return text;
}
