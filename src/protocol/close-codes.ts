/**
 * WebSocket close codes, ranged as in the contract: 4000–4499 means
 * "reconnect", 4500–4999 means "do not reconnect". docs/errors.md lists them
 * and a test checks that list against this catalog in both directions.
 */
export const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  UNSUPPORTED_DATA: 1003,
  POLICY_VIOLATION: 1008,
  TOO_LARGE: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  TOKEN_EXPIRED: 4001,
  PING_TIMEOUT: 4002,
  SLOW_CONSUMER: 4008,
  MALFORMED: 4500,
  FORBIDDEN: 4501,
} as const;

export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE];

/** Short reasons (< 123 bytes) sent with each code. */
export const CLOSE_REASON: Readonly<Record<CloseCode, string>> = {
  1000: 'normal close',
  1001: 'node is draining',
  1003: 'binary frames are not accepted',
  1008: 'too many frames: rate limit exceeded repeatedly',
  1009: 'frame too large',
  1011: 'internal error',
  1013: 'node overloaded',
  4001: 'token expired',
  4002: 'no pong within two ping intervals',
  4008: 'slow consumer: send buffer full',
  4500: 'malformed frame',
  4501: 'disconnected',
};

/** Whether a client should reconnect after this code (the SDK uses the same rule). */
export function shouldReconnect(code: number): boolean {
  if (code >= 4000 && code <= 4499) return true;
  return code === 1001 || code === 1006 || code === 1011 || code === 1013 || code === 1008;
}
