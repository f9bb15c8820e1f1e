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
 * (that needs network I/O anyway).
 *
 * This is security code kept only for that reason, and it is fenced: jose is
 * its reference. test/unit/auth-jws-differential.test.ts runs jose's jwtVerify
 * and this module on the same generated corpus (every allowed algorithm and
 * key type, mutated signatures, encodings, headers, claims) and requires the
 * same decision for every token. The one intended difference: the base64url
 * here is strict (no padding, no whitespace, zero trailing bits), where jose
 * on Node 22 decodes with the forgiving atob; this side only ever rejects
 * more. Delete this module (and verify with jose alone) once the uWS build
 * carries PR #1929 (uWebSockets.js >= v20.69) and its canary test passes.
 */
import { constants, createHmac, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { JwtAlgorithm } from '../config.js';
import { AuthError } from './auth-error.js';

export interface DecodedJws {
  readonly alg: string;
  readonly kid: string | undefined;
  /** `header.payload`, the signed bytes. */
  readonly signingInput: string;
  /** The decoded payload bytes (not yet parsed: that happens only after the signature is checked). */
  readonly payload: Buffer;
  readonly signature: Buffer;
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Strict base64url (RFC 7515 §2, RFC 4648 §5 without padding): only the
 * base64url alphabet, no '=' padding, no whitespace, no length that leaves a
 * single character, and the unused bits of the last character zero (the one
 * canonical encoding of the bytes). Node's own decoder skips what it does not
 * understand, so this check comes first.
 */
export function decodeBase64url(part: string): Buffer {
  if (!BASE64URL.test(part)) throw new AuthError('malformed');
  const rest = part.length % 4;
  if (rest === 1) throw new AuthError('malformed');
  if (rest !== 0) {
    const last = ALPHABET.indexOf(part[part.length - 1]!);
    // 2 characters carry 12 bits for 1 byte (4 unused), 3 carry 18 for 2 (2 unused).
    const unusedMask = rest === 2 ? 0b1111 : 0b11;
    if ((last & unusedMask) !== 0) throw new AuthError('malformed');
  }
  return Buffer.from(part, 'base64url');
}

/** UTF-8 as jose decodes it: invalid sequences are an error, a leading BOM is dropped. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(UTF8.decode(bytes));
  } catch {
    throw new AuthError('malformed');
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * `crit` (RFC 7515 §4.1.11) as jose handles it: when present it must be a
 * non-empty array of non-empty strings, each naming an understood extension
 * that the header carries. The only extension understood is `b64` (RFC 7797),
 * and only as `true`: `b64: false` (an unencoded payload) is not a JWT. A
 * `b64` without `crit` is an unknown parameter and ignored, as jose does.
 */
function checkCrit(header: Record<string, unknown>): void {
  const { crit } = header;
  if (crit === undefined) return;
  if (!Array.isArray(crit) || crit.length === 0) throw new AuthError('malformed');
  for (const name of crit) {
    if (name !== 'b64' || !Object.hasOwn(header, 'b64')) throw new AuthError('malformed');
  }
  if (header.b64 !== true) throw new AuthError('malformed');
}

/** Splits a compact JWS, decodes all three parts and checks the protected header. */
export function decodeJws(token: string): DecodedJws {
  const parts = token.split('.');
  if (parts.length !== 3) throw new AuthError('malformed');
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  const header = parseJson(decodeBase64url(headerPart));
  if (!isObject(header)) throw new AuthError('malformed');
  const { alg, kid } = header;
  if (typeof alg !== 'string' || alg === '') throw new AuthError('malformed');
  // RFC 7515 §4.1.4: a kid is a string. Any other value selects no key.
  if (kid !== undefined && typeof kid !== 'string') throw new AuthError('malformed');
  checkCrit(header);
  return {
    alg,
    kid,
    signingInput: `${headerPart}.${payloadPart}`,
    payload: decodeBase64url(payloadPart),
    signature: decodeBase64url(signaturePart),
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
 * The payload as an object, with the registered claims checked as jose's
 * jwtVerify does with pubgate's options (requiredClaims exp and sub,
 * clockTolerance, issuer, audience): `exp`, `nbf` and `iat` numbers when
 * present, "now" in whole seconds (rounded down), expired when
 * exp <= now - tolerance, not yet valid when nbf > now + tolerance. Then
 * pubgate's own rules, which toClaims applies after jose on the JWKS path
 * too: `sub` a non-empty string, `exp` finite.
 */
export function checkClaims(payload: Uint8Array, rules: ClaimRules, nowMs: number): Record<string, unknown> {
  const p = parseJson(payload);
  if (!isObject(p)) throw new AuthError('malformed');
  if (!Object.hasOwn(p, 'exp') || !Object.hasOwn(p, 'sub')) throw new AuthError('claim_invalid');
  const now = Math.floor(nowMs / 1000);
  const tol = rules.clockToleranceSec;
  if (rules.issuer !== undefined && p.iss !== rules.issuer) throw new AuthError('claim_invalid');
  if (rules.audience !== undefined) {
    const aud = p.aud;
    const ok = typeof aud === 'string' ? aud === rules.audience : Array.isArray(aud) && aud.includes(rules.audience);
    if (!ok) throw new AuthError('claim_invalid');
  }
  for (const name of ['exp', 'nbf', 'iat'] as const) {
    if (p[name] !== undefined && typeof p[name] !== 'number') throw new AuthError('claim_invalid');
  }
  if (p.nbf !== undefined && (p.nbf as number) > now + tol) throw new AuthError('not_yet_valid');
  if ((p.exp as number) <= now - tol) throw new AuthError('expired');
  if (!Number.isFinite(p.exp)) throw new AuthError('claim_invalid');
  if (typeof p.sub !== 'string' || p.sub === '') throw new AuthError('claim_invalid');
  return p;
}
