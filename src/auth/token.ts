/**
 * Where the handshake token comes from, in the contract's order:
 * 1. `Authorization: Bearer <jwt>` (scheme case-insensitive);
 * 2. a `Sec-WebSocket-Protocol` entry `bearer.<jwt>` (browsers);
 * 3. the `access_token` query parameter.
 * A source that is present but carries an empty token (`Bearer ` with nothing
 * after it, `bearer.`, `access_token=`) counts as absent and the next source is
 * looked at. An `Authorization` header with another scheme (Basic, ...) is
 * ignored. Length is not checked here: the verifier rejects a token longer than
 * MAX_TOKEN_LENGTH with reason `too_long`.
 */

/** Longest token accepted (contract: longer → 401). */
export const MAX_TOKEN_LENGTH = 8192;

/** The subprotocol the gateway speaks; the only one it ever selects. */
export const SUBPROTOCOL = 'pubgate.v1';

const BEARER_PROTOCOL_PREFIX = 'bearer.';

export type TokenSource = 'header' | 'subprotocol' | 'query';

export interface ExtractedToken {
  readonly token: string;
  readonly source: TokenSource;
}

export interface TokenInput {
  /** `Authorization` header value, '' when absent. */
  readonly authorization: string;
  /** `Sec-WebSocket-Protocol` header value, '' when absent. */
  readonly protocols: string;
  /** Raw query string without the leading '?', '' when absent. */
  readonly query: string;
}

export function extractToken(input: TokenInput): ExtractedToken | undefined {
  const fromHeader = bearerFromAuthorization(input.authorization);
  if (fromHeader !== undefined) return { token: fromHeader, source: 'header' };
  const fromProtocol = bearerFromProtocols(input.protocols);
  if (fromProtocol !== undefined) return { token: fromProtocol, source: 'subprotocol' };
  const fromQuery = accessTokenFromQuery(input.query);
  if (fromQuery !== undefined) return { token: fromQuery, source: 'query' };
  return undefined;
}

/** 'pubgate.v1' when the client offers it; never the `bearer.<jwt>` entry. */
export function selectSubprotocol(protocols: string): string | undefined {
  return splitProtocols(protocols).includes(SUBPROTOCOL) ? SUBPROTOCOL : undefined;
}

function bearerFromAuthorization(header: string): string | undefined {
  // RFC 9110 §11.1: the auth-scheme is case-insensitive; one or more spaces follow it.
  const m = /^[ \t]*bearer[ \t]+(.*)$/is.exec(header);
  if (!m) return undefined;
  const token = (m[1] ?? '').trim();
  return token === '' ? undefined : token;
}

function splitProtocols(header: string): string[] {
  if (header === '') return [];
  return header.split(',').map((p) => p.trim()).filter((p) => p !== '');
}

function bearerFromProtocols(header: string): string | undefined {
  for (const entry of splitProtocols(header)) {
    if (entry.startsWith(BEARER_PROTOCOL_PREFIX) && entry.length > BEARER_PROTOCOL_PREFIX.length) {
      return entry.slice(BEARER_PROTOCOL_PREFIX.length);
    }
  }
  return undefined;
}

function accessTokenFromQuery(query: string): string | undefined {
  if (query === '') return undefined;
  // URLSearchParams percent-decodes and turns '+' into a space (base64url never
  // contains '+', so a token is unaffected); the first occurrence wins.
  const value = new URLSearchParams(query.startsWith('?') ? query.slice(1) : query).get('access_token');
  return value === null || value === '' ? undefined : value;
}
