/**
 * Token buckets: per client IP for handshakes (in a bounded map), per API key
 * for the publish API. Refill is computed on use; no timers.
 */
export interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Refills `b` to `now` and takes one token if there is one. */
export function take(b: Bucket, ratePerSec: number, burst: number, nowMs: number): boolean {
  const elapsed = nowMs - b.updatedMs;
  if (elapsed > 0) {
    b.tokens = Math.min(burst, b.tokens + (elapsed * ratePerSec) / 1000);
    b.updatedMs = nowMs;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  return false;
}

/**
 * The same token bucket kept in one number (the GCRA form), for state held per
 * connection: `fullAtMs`, the time at which the bucket is full again. At `now`
 * it holds `burst - max(0, fullAtMs - now) * rate / 1000` tokens; taking one
 * pushes `fullAtMs` back by one token's refill time. 0 is a full bucket.
 * Returns the new `fullAtMs`, or undefined when the bucket holds no whole token.
 */
export function takeToken(fullAtMs: number, ratePerSec: number, burst: number, nowMs: number): number | undefined {
  const perTokenMs = 1000 / ratePerSec;
  const debtMs = Math.max(0, fullAtMs - nowMs);
  if (burst - debtMs / perTokenMs < 1) return undefined;
  return nowMs + debtMs + perTokenMs;
}

/** Seconds until the bucket holds a whole token again (for Retry-After). */
export function secondsUntilToken(b: Bucket, ratePerSec: number): number {
  return Math.max(1, Math.ceil((1 - b.tokens) / ratePerSec));
}

export interface KeyedLimiter {
  /** Takes a token for `key`; false when over the rate. */
  take(key: string, nowMs: number): boolean;
  retryAfterSec(key: string): number;
  readonly size: number;
}

/**
 * One bucket per key, at most `maxKeys` of them: when full, buckets that have
 * refilled completely (and so carry no information) are evicted first, then
 * the oldest. Rate 0 disables the limiter.
 */
export function createKeyedLimiter(ratePerSec: number, burst: number, maxKeys = 100_000): KeyedLimiter {
  const buckets = new Map<string, Bucket>();
  const fullAfterMs = ratePerSec > 0 ? (burst / ratePerSec) * 1000 : 0;

  function evict(nowMs: number): void {
    for (const [k, b] of buckets) {
      if (nowMs - b.updatedMs >= fullAfterMs) buckets.delete(k);
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
      let b = buckets.get(key);
      if (!b) {
        if (buckets.size >= maxKeys) evict(nowMs);
        b = { tokens: burst, updatedMs: nowMs };
        buckets.set(key, b);
      }
      return take(b, ratePerSec, burst, nowMs);
    },
    retryAfterSec(key) {
      const b = buckets.get(key);
      return b ? secondsUntilToken(b, ratePerSec) : 1;
    },
    get size() {
      return buckets.size;
    },
  };
}
