/** Unit: @pubgate/client reconnect timing and the close-code rules. */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_BACKOFF,
  POLICY_BACKOFF_ATTEMPT,
  backoffWindow,
  fullJitter,
  reconnectDelay,
  reconnectPlan,
} from '../../packages/client/src/backoff.js';
import { shouldReconnect as clientShouldReconnect } from '../../packages/client/src/protocol.js';
import { shouldReconnect as serverShouldReconnect } from '../../src/protocol/close-codes.js';

const almostOne = 0.999_999;

describe('backoff window', () => {
  it('starts at 0.5 s, doubles per failed attempt and is capped at 20 s', () => {
    expect(DEFAULT_BACKOFF).toEqual({ minMs: 500, maxMs: 20_000 });
    expect([0, 1, 2, 3, 4, 5, 6, 7, 50].map((a) => backoffWindow(a))).toEqual([500, 1000, 2000, 4000, 8000, 16_000, 20_000, 20_000, 20_000]);
  });

  it('full jitter: uniform in [0, window), using the random source', () => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const w = backoffWindow(attempt);
      expect(fullJitter(attempt, DEFAULT_BACKOFF, () => 0)).toBe(0);
      expect(fullJitter(attempt, DEFAULT_BACKOFF, () => 0.5)).toBe(Math.floor(w / 2));
      const top = fullJitter(attempt, DEFAULT_BACKOFF, () => almostOne);
      expect(top).toBeLessThan(w);
      expect(top).toBeGreaterThanOrEqual(w - 1);
    }
  });

  it('honours other bounds', () => {
    const o = { minMs: 100, maxMs: 1000 };
    expect([0, 1, 2, 3, 4, 5].map((a) => backoffWindow(a, o))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });
});

describe('close codes', () => {
  it('reconnects on exactly the codes the server says a client should (1000–4999)', () => {
    for (let code = 1000; code <= 4999; code++) expect(clientShouldReconnect(code), `code ${code}`).toBe(serverShouldReconnect(code));
  });

  it.each([1001, 1006, 1011, 1013, 4000, 4002, 4008, 4499])('%i: reconnect with ordinary backoff', (code) => {
    expect(reconnectPlan(code)).toEqual({ reconnect: true, newToken: false, penalty: false });
    expect(reconnectDelay(code, 0, DEFAULT_BACKOFF, () => almostOne)).toBeLessThan(500);
    expect(reconnectDelay(code, 3, DEFAULT_BACKOFF, () => almostOne)).toBeLessThan(4000);
    expect(reconnectDelay(code, 3, DEFAULT_BACKOFF, () => 0)).toBe(0);
  });

  it.each([1000, 1003, 1009, 4500, 4501, 4999, 1002, 1005, 3000])('%i: stop', (code) => {
    expect(reconnectPlan(code)).toEqual({ reconnect: false });
  });

  it('1008: backs off first: equal jitter over the window of attempt 4 or more', () => {
    expect(reconnectPlan(1008)).toEqual({ reconnect: true, newToken: false, penalty: true });
    const w = backoffWindow(POLICY_BACKOFF_ATTEMPT);
    expect(w).toBe(8000);
    expect(reconnectDelay(1008, 0, DEFAULT_BACKOFF, () => 0)).toBe(4000);
    expect(reconnectDelay(1008, 0, DEFAULT_BACKOFF, () => almostOne)).toBeLessThan(8000);
    expect(reconnectDelay(1008, 6, DEFAULT_BACKOFF, () => 0)).toBe(10_000);
  });

  it('4001: a new token, then reconnect like a first attempt', () => {
    expect(reconnectPlan(4001)).toEqual({ reconnect: true, newToken: true, penalty: false });
    expect(reconnectDelay(4001, 9, DEFAULT_BACKOFF, () => almostOne)).toBeLessThan(500);
  });
});
