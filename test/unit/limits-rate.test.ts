import { describe, expect, it } from 'vitest';
import { take, takeToken, type Bucket } from '../../src/limits/rate.js';

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

  it('decides like the two-number token bucket it replaces', () => {
    // A deterministic pseudo-random sequence of frame times: bursts, pauses, steady sending.
    let seed = 12345;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const [rate, burst] of [[50, 200], [3, 6], [0.5, 1], [1000, 10]] as const) {
      const bucket: Bucket = { tokens: burst, updatedMs: 0 };
      let fullAt = 0;
      let now = 1000 + rnd() * 1000;
      let allowed = 0;
      for (let i = 0; i < 20_000; i++) {
        const gap = rnd() < 0.02 ? (rnd() * 20_000) / rate : (rnd() * 1000) / rate;
        now += gap;
        const a = take(bucket, rate, burst, now);
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
});
