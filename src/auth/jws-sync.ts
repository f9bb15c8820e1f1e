/**
 * Synchronous verification of compact JWS tokens against local keys (HMAC
 * secrets and PEM public keys), with node:crypto.
 *
 * Why not jose here: jose's API is asynchronous, and a WebSocket upgrade that
 * completes asynchronously must go through res.cork(() => res.upgrade()),
 * which in the uWebSockets.js build we ship can shut a freshly upgraded socket
 * down (uWebSockets issue #1928, fixed upstream by PR #1929). Deciding within
 * the upgrade handler keeps the upgrade on uWS's synchronous path, which is not
 * affected, and a synchronous HMAC check costs a few microseconds instead of a
 * WebCrypto round trip. jose still verifies tokens whose key comes from a JWKS
 * (that needs network I/O anyway), and its behaviour is the reference for the
 * claim rules below; the same tests run against both paths.
 */
import { constants, createHmac, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { JwtAlgorithm } from '../config.js';
import { AuthError } from './auth-error.js';

export interface DecodedJws {
  readonly alg: string;
  readonly kid: string | undefined;
  /** `header.payload`, the signed bytes. */
  readonly signingInput: string;
  readonly payloadPart: string;
  readonly signature: Buffer;
}

function decodeJson(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new AuthError('malformed');
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Splits and decodes the protected header. The caller has checked the compact shape. */
export function decodeJws(token: string): DecodedJws {
  const dot1 = token.indexOf('.');
  const dot2 = token.indexOf('.', dot1 + 1);
  const header = decodeJson(token.slice(0, dot1));
  if (!isObject(header)) throw new AuthError('malformed');
  const { alg, kid } = header;
  if (typeof alg !== 'string' || alg === '') throw new AuthError('malformed');
  if (kid !== undefined && typeof kid !== 'string') throw new AuthError('malformed');
  // No extension is understood: any `crit` makes the token invalid (RFC 7515 §4.1.11),
  // and an unencoded payload (`b64: false`, RFC 7797) is not accepted.
  if (header.crit !== undefined || (header.b64 !== undefined && header.b64 !== true)) throw new AuthError('malformed');
  return {
    alg,
    kid,
    signingInput: token.slice(0, dot2),
    payloadPart: token.slice(dot1 + 1, dot2),
    signature: Buffer.from(token.slice(dot2 + 1), 'base64url'),
  };
}

const HASH: Readonly<Record<string, string>> = {
  HS256: 'sha256', HS384: 'sha384', HS512: 'sha512',
  RS256: 'sha256', RS384: 'sha384', RS512: 'sha512',
  PS256: 'sha256', PS384: 'sha384', PS512: 'sha512',
  ES256: 'sha256', ES384: 'sha384', ES512: 'sha512',
};
const EC_SIGNATURE_BYTES: Readonly<Record<string, number>> = { ES256: 64, ES384: 96, ES512: 132 };

/** Whether `sig` is a valid signature of `jws` by `key` under `alg` (the key fits the alg: the caller checked). */
export function signatureValid(jws: DecodedJws, alg: JwtAlgorithm, key: KeyObject): boolean {
  const data = Buffer.from(jws.signingInput);
  const sig = jws.signature;
  const hash = HASH[alg];
  if (alg.startsWith('HS')) {
    const mac = createHmac(hash!, key).update(data).digest();
    return mac.length === sig.length && timingSafeEqual(mac, sig);
  }
  if (alg === 'EdDSA') return cryptoVerify(null, data, key, sig);
  if (alg.startsWith('ES')) {
    if (sig.length !== EC_SIGNATURE_BYTES[alg]) return false;
    return cryptoVerify(hash!, data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  }
  if (alg.startsWith('PS')) {
    return cryptoVerify(hash!, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, sig);
  }
  return cryptoVerify(hash!, data, { key, padding: constants.RSA_PKCS1_PADDING }, sig);
}

export interface ClaimRules {
  readonly clockToleranceSec: number;
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
}

/**
 * The payload as an object, with the registered claims checked as jose does:
 * `exp` required (expired when exp <= now - tolerance), `nbf` (not yet valid
 * when nbf > now + tolerance), `iat` a number when present, `iss`/`aud` when
 * configured, `sub` a non-empty string.
 */
export function checkClaims(payloadPart: string, rules: ClaimRules, nowSec: number): Record<string, unknown> {
  const p = decodeJson(payloadPart);
  if (!isObject(p)) throw new AuthError('malformed');
  const tol = rules.clockToleranceSec;
  for (const name of ['exp', 'nbf', 'iat'] as const) {
    if (p[name] !== undefined && (typeof p[name] !== 'number' || !Number.isFinite(p[name]))) throw new AuthError('claim_invalid');
  }
  if (p.exp === undefined) throw new AuthError('claim_invalid');
  if ((p.exp as number) <= nowSec - tol) throw new AuthError('expired');
  if (p.nbf !== undefined && (p.nbf as number) > nowSec + tol) throw new AuthError('not_yet_valid');
  if (rules.issuer !== undefined && p.iss !== rules.issuer) throw new AuthError('claim_invalid');
  if (rules.audience !== undefined) {
    const aud = p.aud;
    const ok = typeof aud === 'string' ? aud === rules.audience : Array.isArray(aud) && aud.includes(rules.audience);
    if (!ok) throw new AuthError('claim_invalid');
  }
  if (typeof p.sub !== 'string' || p.sub === '') throw new AuthError('claim_invalid');
  return p;
}
