/**
 * Token buckets, each kept in one number (the GCRA form): `fullAtMs`, the time
 * at which the bucket is full again. At `now` it holds
 * `burst - max(0, fullAtMs - now) * rate / 1000` tokens; taking one pushes
 * `fullAtMs` back by one token's refill time; 0 (or any past time) is a full
 * bucket. Per connection for client frames (a session field), per client IP
 * for handshakes and per API key for the publish API (bounded maps). Refill is
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

/**
 * One bucket per key, at most `maxKeys` of them: when full, buckets that have
 * refilled completely (and so carry no information) are evicted first, then
 * the oldest. Rate 0 disables the limiter.
 */
export function createKeyedLimiter(ratePerSec: number, burst: number, maxKeys = 100_000): KeyedLimiter {
  /** key → fullAtMs */
  const buckets = new Map<string, number>();

  function evict(nowMs: number): void {
    for (const [k, fullAtMs] of buckets) {
      if (fullAtMs <= nowMs) buckets.delete(k);
    }
    // Still full: drop the oldest tenth (Map iterates in insertion order).
    if (buckets.size >= maxKeys) {
      let n = Math.ceil(maxKeys / 10);
      for (const k of buckets.keys()) {
        buckets.delete(k);
        if (--n === 0) break;
      }
    }
  }

  return {
    take(key, nowMs) {
      if (ratePerSec <= 0) return true;
      const fullAtMs = buckets.get(key);
      if (fullAtMs === undefined && buckets.size >= maxKeys) evict(nowMs);
      const next = takeToken(fullAtMs ?? 0, ratePerSec, burst, nowMs);
      if (next === undefined) return false;
      buckets.set(key, next);
      return true;
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
