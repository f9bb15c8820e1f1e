/**
 * Reconnect timing: full-jitter exponential backoff, and what each close code
 * asks the client to do.
 */
import { CLOSE, shouldReconnect } from './protocol.js';

export interface BackoffOptions {
  /** First window, ms (default 500). */
  readonly minMs: number;
  /** Largest window, ms (default 20 000). */
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 20_000 };

/** The retry window after `attempt` failed attempts: min · 2^attempt, capped at max. */
export function backoffWindow(attempt: number, o: BackoffOptions = DEFAULT_BACKOFF): number {
  return Math.min(o.maxMs, o.minMs * 2 ** Math.max(0, attempt));
}

/** Full jitter: a uniformly random delay in [0, window). `random` returns [0, 1). */
export function fullJitter(attempt: number, o: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  return Math.floor(random() * backoffWindow(attempt, o));
}

/** The attempt number a 1008 close starts backing off from (window min · 2^4: 8 s with the defaults). */
export const POLICY_BACKOFF_ATTEMPT = 4;

export type ReconnectPlan =
  | { readonly reconnect: false }
  | {
      readonly reconnect: true;
      /** Get a new token (call `getToken`) before reconnecting (4001). */
      readonly newToken: boolean;
      /** Back off harder: at least half of the window of POLICY_BACKOFF_ATTEMPT (1008). */
      readonly penalty: boolean;
    };

/** What the client does after a close with `code`. */
export function reconnectPlan(code: number): ReconnectPlan {
  if (!shouldReconnect(code)) return { reconnect: false };
  return { reconnect: true, newToken: code === CLOSE.TOKEN_EXPIRED, penalty: code === CLOSE.POLICY_VIOLATION };
}

/**
 * The delay before the next connection attempt. `attempt` counts failed
 * attempts since the last stable connection (0 right after one).
 * - ordinary codes (1001, 1006, 1011, 1013, 4000–4499): full jitter over the window of `attempt`;
 *   right after a stable connection that is [0, 500 ms), so a drained node's clients spread out
 *   and reconnect at once;
 * - 1008 (rate limits): equal jitter over the window of max(attempt, 4): [4 s, 8 s) at first;
 * - 4001: a new token first, then [0, min) like a first attempt.
 */
export function reconnectDelay(code: number, attempt: number, o: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const plan = reconnectPlan(code);
  if (!plan.reconnect) return 0;
  if (plan.newToken) return fullJitter(0, o, random);
  if (plan.penalty) {
    const w = backoffWindow(Math.max(attempt, POLICY_BACKOFF_ATTEMPT), o);
    return Math.floor(w / 2 + random() * (w / 2));
  }
  return fullJitter(attempt, o, random);
}
