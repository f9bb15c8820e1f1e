import { describe, expect, it } from 'vitest';
import { createKeyedLimiter, secondsUntilToken, takeToken } from '../../src/limits/rate.js';

/** The textbook token bucket (tokens and a refill time), as the oracle the one-number form must agree with. */
function classicBucket(ratePerSec: number, burst: number) {
  let tokens = burst;
  let updatedMs = 0;
  return (nowMs: number): boolean => {
    tokens = Math.min(burst, tokens + ((nowMs - updatedMs) * ratePerSec) / 1000);
    updatedMs = nowMs;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  };
}

describe('takeToken', () => {
  it('starts full: a burst passes, the next frame does not', () => {
    let fullAt = 0;
    for (let i = 0; i < 5; i++) {
      const next = takeToken(fullAt, 10, 5, 1000);
      expect(next).toBeDefined();
      fullAt = next as number;
    }
    expect(takeToken(fullAt, 10, 5, 1000)).toBeUndefined();
    // One token refills in 100 ms at 10/s.
    expect(takeToken(fullAt, 10, 5, 1099)).toBeUndefined();
    expect(takeToken(fullAt, 10, 5, 1100)).toBeDefined();
  });

  it('decides like the textbook token bucket', () => {
    // A deterministic pseudo-random sequence of frame times: bursts, pauses, steady sending.
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const [rate, burst] of [[50, 200], [3, 6], [0.5, 1], [1000, 10]] as const) {
      const classic = classicBucket(rate, burst);
      let fullAt = 0;
      let now = 1000 + rnd() * 1000;
      let allowed = 0;
      for (let i = 0; i < 20_000; i++) {
        const gap = rnd() < 0.02 ? (rnd() * 20_000) / rate : (rnd() * 1000) / rate;
        now += gap;
        const a = classic(now);
        const next = takeToken(fullAt, rate, burst, now);
        expect([rate, i, next !== undefined]).toEqual([rate, i, a]);
        if (next !== undefined) {
          fullAt = next;
          allowed++;
        }
      }
      expect(allowed).toBeGreaterThan(1000);
      expect(allowed).toBeLessThan(20_000);
    }
  });

  it('gives Retry-After as the whole seconds until a token is back, at least 1', () => {
    // 0.5/s, burst 2: two tokens taken at t=0 → the first is back after 2 s.
    let fullAt = 0;
    for (let i = 0; i < 2; i++) fullAt = takeToken(fullAt, 0.5, 2, 0) as number;
    expect(takeToken(fullAt, 0.5, 2, 0)).toBeUndefined();
    expect(secondsUntilToken(fullAt, 0.5, 2, 0)).toBe(2);
    expect(secondsUntilToken(fullAt, 0.5, 2, 1500)).toBe(1);
    expect(takeToken(fullAt, 0.5, 2, 1999)).toBeUndefined();
    expect(takeToken(fullAt, 0.5, 2, 2000)).toBeDefined();
    expect(secondsUntilToken(0, 10, 5, 0)).toBe(1);
  });
});

describe('createKeyedLimiter', () => {
  it('keeps a bucket per key', () => {
    const l = createKeyedLimiter(1, 2, 4);
    expect([l.take('a', 0), l.take('a', 0), l.take('a', 0)]).toEqual([true, true, false]);
    expect(l.retryAfterSec('a', 0)).toBe(1);
    expect(l.take('b', 0)).toBe(true);
    expect(l.take('a', 1000)).toBe(true);
    expect(createKeyedLimiter(0, 1).take('x', 0)).toBe(true);
  });

  it('evicts the least recently used key at the bound, never refusing a new key, never growing', () => {
    const l = createKeyedLimiter(1, 1, 3);
    // a, b, c spend their one token; a is used again (refused) so b is now the least recently used.
    for (const k of ['a', 'b', 'c']) expect(l.take(k, 0)).toBe(true);
    expect(l.take('a', 0)).toBe(false);
    // A new key at the bound: taken (full bucket), and b is evicted.
    expect(l.take('d', 0)).toBe(true);
    expect(l.size).toBe(3);
    // b starts over with a full bucket; a and c kept their debt (a refused take kept a's).
    expect(l.take('b', 0)).toBe(true); // evicts c (least recently used now)
    expect(l.take('a', 0)).toBe(false);
    expect(l.take('d', 0)).toBe(false);
    expect(l.take('c', 0)).toBe(true); // c was evicted: fresh bucket
    expect(l.size).toBe(3);
  });

  it('holds a flood of distinct keys at the bound and keeps the busiest key if it stays in use', () => {
    const l = createKeyedLimiter(1, 1, 1000);
    expect(l.take('attacker', 0)).toBe(true);
    let refusedNew = 0;
    let attackerPassed = 0;
    for (let i = 0; i < 50_000; i++) {
      if (!l.take(`k${i}`, 0)) refusedNew++;
      // The attacker keeps trying: it stays among the recently used, so its debt is never evicted.
      if (i % 500 === 0 && l.take('attacker', 0)) attackerPassed++;
    }
    expect([refusedNew, attackerPassed, l.size]).toEqual([0, 0, 1000]);
  });
});
