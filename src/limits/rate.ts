/**
 * Token buckets, each kept in one number (the GCRA form): `fullAtMs`, the time
 * at which the bucket is full again. At `now` it holds
 * `burst - max(0, fullAtMs - now) * rate / 1000` tokens; taking one pushes
 * `fullAtMs` back by one token's refill time; 0 (or any past time) is a full
 * bucket. Per connection for client frames (a session field), per client IP
 * for handshakes and per API key for the publish API (bounded LRU maps). Refill is
 * computed on use; no timers.
 */

/** Takes one token: the new `fullAtMs`, or undefined when the bucket holds no whole token. */
export function takeToken(fullAtMs: number, ratePerSec: number, burst: number, nowMs: number): number | undefined {
  const perTokenMs = 1000 / ratePerSec;
  const debtMs = Math.max(0, fullAtMs - nowMs);
  if (burst - debtMs / perTokenMs < 1) return undefined;
  return nowMs + debtMs + perTokenMs;
}

/** Seconds until the bucket holds a whole token again (for Retry-After), at least 1. */
export function secondsUntilToken(fullAtMs: number, ratePerSec: number, burst: number, nowMs: number): number {
  const perTokenMs = 1000 / ratePerSec;
  const waitMs = Math.max(0, fullAtMs - nowMs) - (burst - 1) * perTokenMs;
  return Math.max(1, Math.ceil(waitMs / 1000));
}

export interface KeyedLimiter {
  /** Takes a token for `key`; false when over the rate. */
  take(key: string, nowMs: number): boolean;
  retryAfterSec(key: string, nowMs: number): number;
  readonly size: number;
}

/** Default bound on a keyed limiter's buckets (about 100 bytes each: some 10 MB at the bound). */
export const MAX_LIMITER_KEYS = 100_000;

/**
 * One bucket per key, at most `maxKeys` of them, kept in least-recently-used
 * order (a Map iterates in insertion order; every take moves its key to the
 * end). A new key at the bound evicts the least recently used one, so a full
 * map never refuses a new key and never grows: a key that was evicted simply
 * starts again with a full bucket. Rate 0 disables the limiter (nothing is
 * stored).
 */
export function createKeyedLimiter(ratePerSec: number, burst: number, maxKeys = MAX_LIMITER_KEYS): KeyedLimiter {
  if (!(maxKeys >= 1)) throw new RangeError('maxKeys must be at least 1');
  /** key → fullAtMs, least recently used first */
  const buckets = new Map<string, number>();

  return {
    take(key, nowMs) {
      if (ratePerSec <= 0) return true;
      const fullAtMs = buckets.get(key);
      if (fullAtMs === undefined) {
        if (buckets.size >= maxKeys) {
          const lru = buckets.keys().next();
          if (lru.done !== true) buckets.delete(lru.value);
        }
      } else {
        buckets.delete(key);
      }
      const next = takeToken(fullAtMs ?? 0, ratePerSec, burst, nowMs);
      // A refused take keeps its debt (and becomes the most recently used key).
      buckets.set(key, next ?? fullAtMs ?? 0);
      return next !== undefined;
    },
    retryAfterSec(key, nowMs) {
      const fullAtMs = buckets.get(key);
      return fullAtMs === undefined ? 1 : secondsUntilToken(fullAtMs, ratePerSec, burst, nowMs);
    },
    get size() {
      return buckets.size;
    },
  };
}
