/**
 * The error-code catalog. Every reject the gateway makes, over HTTP or in a
 * `reply` frame, uses one of these codes; docs/errors.md lists them and a test
 * checks the list against this file in both directions.
 */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'method_not_allowed',
  'unsupported_media_type',
  'too_large',
  'request_timeout',
  'rate_limited',
  'limit_exceeded',
  'recovery_failed',
  'origin_not_allowed',
  'overloaded',
  'draining',
  'unavailable',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** HTTP status used when an error code is answered over HTTP. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  unsupported_media_type: 415,
  too_large: 413,
  request_timeout: 408,
  rate_limited: 429,
  limit_exceeded: 400,
  recovery_failed: 409,
  origin_not_allowed: 403,
  overloaded: 503,
  draining: 503,
  unavailable: 503,
  internal: 500,
};

export class GatewayError extends Error {
  readonly code: ErrorCode;
  /** Seconds a client should wait before retrying (503/429), when known. */
  readonly retryAfterSec: number | undefined;
  constructor(code: ErrorCode, message: string, retryAfterSec?: number) {
    super(message);
    this.name = 'GatewayError';
    this.code = code;
    this.retryAfterSec = retryAfterSec;
  }
}

export function isGatewayError(e: unknown): e is GatewayError {
  return e instanceof GatewayError;
}

/** `{"error":{"code":..,"message":..}}`, the body of every HTTP reject. */
export function errorBody(code: ErrorCode, message: string): string {
  return JSON.stringify({ error: { code, message } });
}
