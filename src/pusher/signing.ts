/**
 * Pusher HTTP API request signing (Pusher's "HTTP API reference",
 * "Generating authentication signatures"), checked against the signing code of
 * the `pusher` server library (test/unit/pusher-signing.test.ts). Pure: no I/O.
 *
 * A request carries, in its query string, `auth_key` (the app key),
 * `auth_timestamp` (Unix seconds), `auth_version` (`1.0`), `body_md5` (hex MD5
 * of the body, for a request with a body) and `auth_signature`: the hex
 * HMAC-SHA256, keyed by the app secret, of
 *
 *     METHOD "\n" path "\n" sorted query
 *
 * where `sorted query` is every query parameter but `auth_signature`, keys
 * lower-cased, sorted by key, joined as `key=value` with `&`, values NOT
 * URL-escaped (the libraries sign the raw values: the `pusher` library also
 * sends them raw, others URL-encode them in the request, so the values are
 * decoded here before the string is rebuilt).
 *
 * Pusher accepts a timestamp within 600 s of its clock; so does this, in both
 * directions (a timestamp in the future is refused the same way: a signed
 * request cannot be kept for replay later).
 *
 * Messages never quote the secret or the expected signature: they go back to
 * the caller and into logs.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** Seconds a request's `auth_timestamp` may differ from this node's clock, either way (Pusher's value). */
export const PUSHER_TIMESTAMP_WINDOW_SEC = 600;

/** Longest query string looked at: Pusher's own GET parameters are a few hundred characters. */
export const MAX_QUERY_LENGTH = 4096;

/** Why a request's signature was refused (a label of pubgate_pusher_api_requests_total). */
export type SignatureReject = 'auth_params' | 'unknown_key' | 'auth_version' | 'expired' | 'body_md5' | 'bad_signature';

export type SignatureCheck =
  /** `params`: the decoded query parameters (keys lower-cased), auth ones included. */
  | { readonly ok: true; readonly params: ReadonlyMap<string, string> }
  | { readonly ok: false; readonly reason: SignatureReject; readonly message: string };

export interface SignedRequest {
  /** Any case: upper-cased for the signature. */
  readonly method: string;
  /** The request path as sent (not decoded), e.g. `/apps/1/events`. */
  readonly path: string;
  /** Raw query string, without `?`. */
  readonly query: string;
  /** The body text; '' for none. */
  readonly body: string;
}

export interface AppCredentials {
  readonly key: string;
  readonly secret: string;
}

const hex = (s: string): boolean => /^[0-9a-f]+$/i.test(s);

/** Hex MD5 of a body's UTF-8 bytes, as the libraries compute `body_md5`. */
export function bodyMd5(body: string): string {
  return createHash('md5').update(body, 'utf8').digest('hex');
}

/** The string a request's signature covers (see the module comment). */
export function stringToSign(method: string, path: string, params: ReadonlyMap<string, string>): string {
  const pairs = [...params].filter(([k]) => k !== 'auth_signature').sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${method.toUpperCase()}\n${path}\n${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`;
}

/** Hex HMAC-SHA256 of a string with an app secret. */
export function signString(secret: string, s: string): string {
  return createHmac('sha256', secret).update(s, 'utf8').digest('hex');
}

/**
 * Decoded query parameters, keys lower-cased; undefined when the query cannot
 * be read: over MAX_QUERY_LENGTH, a parameter given twice (which value was
 * signed would be ambiguous), or bad percent-encoding.
 */
export function parseQuery(query: string): Map<string, string> | undefined {
  if (query.length > MAX_QUERY_LENGTH) return undefined;
  const out = new Map<string, string>();
  if (query === '') return out;
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawK = eq < 0 ? part : part.slice(0, eq);
    const rawV = eq < 0 ? '' : part.slice(eq + 1);
    let k: string;
    let v: string;
    try {
      // Form encoding: `+` is a space (the libraries that URL-encode use it).
      k = decodeURIComponent(rawK.replace(/\+/g, ' ')).toLowerCase();
      v = decodeURIComponent(rawV.replace(/\+/g, ' '));
    } catch {
      return undefined;
    }
    if (out.has(k)) return undefined;
    out.set(k, v);
  }
  return out;
}

/**
 * Checks a request's signature for an app. The order follows what a client can
 * fix: missing parameters, key, version, clock, body, then the signature.
 */
export function verifySignedRequest(req: SignedRequest, app: AppCredentials, nowSec: number): SignatureCheck {
  const params = parseQuery(req.query);
  if (!params) {
    return { ok: false, reason: 'auth_params', message: 'the query string cannot be read (too long, a parameter given twice, or bad percent-encoding)' };
  }
  const missing = ['auth_key', 'auth_timestamp', 'auth_version', 'auth_signature'].filter((k) => !params.has(k));
  if (missing.length > 0) return { ok: false, reason: 'auth_params', message: `Required parameters missing: ${missing.join(', ')}` };
  const key = params.get('auth_key') as string;
  if (!constantTimeEqual(key, app.key)) return { ok: false, reason: 'unknown_key', message: 'Unknown auth_key' };
  if (params.get('auth_version') !== '1.0') return { ok: false, reason: 'auth_version', message: 'Version not supported: auth_version must be 1.0' };
  const ts = params.get('auth_timestamp') as string;
  if (!/^[0-9]{1,12}$/.test(ts) || Math.abs(nowSec - Number(ts)) > PUSHER_TIMESTAMP_WINDOW_SEC) {
    return {
      ok: false,
      reason: 'expired',
      message: `Timestamp expired: given timestamp (${/^[0-9]{1,12}$/.test(ts) ? ts : 'not a number'}) not within ${PUSHER_TIMESTAMP_WINDOW_SEC}s of server time (${Math.floor(nowSec)})`,
    };
  }
  const md5 = params.get('body_md5');
  if (req.body !== '' || md5 !== undefined) {
    // A body is covered by the signature only through body_md5: without it the body could be swapped.
    if (md5 === undefined) return { ok: false, reason: 'body_md5', message: 'Required parameters missing: body_md5 (the request has a body)' };
    if (!constantTimeEqual(md5.toLowerCase(), bodyMd5(req.body))) return { ok: false, reason: 'body_md5', message: 'body_md5 does not match the MD5 of the body' };
  }
  const sig = params.get('auth_signature') as string;
  const expected = signString(app.secret, stringToSign(req.method, req.path, params));
  if (!hex(sig) || !constantTimeEqual(sig.toLowerCase(), expected)) {
    return { ok: false, reason: 'bad_signature', message: 'Invalid signature: auth_signature is not the HMAC-SHA256 of the request with the app secret' };
  }
  return { ok: true, params };
}

/** Equal strings, compared in constant time for their length (lengths are not secret: the key and hex digests have fixed lengths). */
function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}
