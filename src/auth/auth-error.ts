/**
 * Authentication errors. jose errors become our codes here and nowhere else.
 *
 * `reason` is a short, fixed string for logs (and, being a closed set, safe as a
 * metric label value). Messages are fixed per reason: they never contain the
 * token, a claim value or anything else taken from the request.
 */
import { errors } from 'jose';
import { GatewayError } from '../errors.js';

export const AUTH_REASONS = [
  'missing',          // no token at all
  'too_long',         // longer than MAX_TOKEN_LENGTH, rejected before any parsing or crypto
  'malformed',        // not a compact JWS, bad base64url/JSON, bad header, unknown `crit`
  'alg_not_allowed',  // `alg` not in the allow-list (includes `none`) or no key configured for it
  'unknown_kid',      // `kid` names no configured secret / no JWKS key (after a refetch)
  'bad_signature',    // no configured key verifies the signature
  'bad_key',          // the matching key cannot be used (e.g. RSA shorter than 2048 bits in the JWKS)
  'expired',          // `exp` in the past (beyond clock tolerance)
  'not_yet_valid',    // `nbf` in the future (beyond clock tolerance)
  'claim_invalid',    // required claim missing or of the wrong type, wrong `iss`/`aud`
  'info_invalid',     // the `info` claim is not a JSON object, or is over 1 KiB serialized
  'jwks_unavailable', // the JWKS endpoint could not be fetched (503, not 401)
  'internal',         // anything unexpected; fails closed
] as const;

export type AuthReason = (typeof AUTH_REASONS)[number];

const MESSAGES: Readonly<Record<AuthReason, string>> = {
  missing: 'missing token',
  too_long: 'token too long',
  malformed: 'malformed token',
  alg_not_allowed: 'token algorithm not allowed',
  unknown_kid: 'unknown token key id',
  bad_signature: 'invalid token signature',
  bad_key: 'token key unusable',
  expired: 'token expired',
  not_yet_valid: 'token not yet valid',
  claim_invalid: 'invalid token claims',
  info_invalid: 'the info claim must be a JSON object of at most 1024 bytes',
  jwks_unavailable: 'cannot fetch JWKS',
  internal: 'cannot verify token',
};

export class AuthError extends GatewayError {
  readonly reason: AuthReason;
  constructor(reason: AuthReason, options?: { cause?: unknown }) {
    super(
      reason === 'jwks_unavailable' ? 'unavailable' : reason === 'internal' ? 'internal' : 'unauthorized',
      MESSAGES[reason],
    );
    this.name = 'AuthError';
    this.reason = reason;
    // Only set for jwks_unavailable/internal: jose claim errors carry the whole payload.
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/**
 * Thrown by our JWKS key resolver when the endpoint itself failed (network
 * error, timeout, non-200, invalid JSON, malformed key set), so that a fetch
 * failure is never mistaken for a bad token.
 */
export class JwksFetchError extends Error {
  constructor(cause: unknown) {
    super('cannot fetch JWKS', { cause });
    this.name = 'JwksFetchError';
  }
}

/** Maps an error raised while verifying a token to a reason from the fixed set. */
export function classifyJoseError(e: unknown): AuthReason {
  if (e instanceof AuthError) return e.reason;
  if (e instanceof JwksFetchError) return 'jwks_unavailable';
  if (e instanceof errors.JWTExpired) return 'expired';
  if (e instanceof errors.JWTClaimValidationFailed) return e.claim === 'nbf' ? 'not_yet_valid' : 'claim_invalid';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'alg_not_allowed';
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'bad_signature';
  if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys) return 'unknown_kid';
  if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) return 'jwks_unavailable';
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid || e instanceof errors.JOSENotSupported) {
    return 'malformed';
  }
  // jose reports unusable keys (wrong type, RSA modulus under 2048 bits) as TypeError.
  if (e instanceof TypeError) return 'bad_key';
  return 'internal';
}

/** The AuthError to throw for any error raised while verifying a token. */
export function toAuthError(e: unknown): AuthError {
  if (e instanceof AuthError) return e;
  const reason = classifyJoseError(e);
  const keepCause = reason === 'jwks_unavailable' || reason === 'internal';
  const cause = e instanceof JwksFetchError ? e.cause : e;
  return new AuthError(reason, keepCause ? { cause } : undefined);
}
