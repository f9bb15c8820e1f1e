/**
 * The memory webhook queue on a clock of its own (the contract suite,
 * test/helpers/webhook-queue-contract.ts, covers the semantics on real time):
 * exact lease and backoff ends, and its heaps under many channels.
 */
import { describe, expect, it } from 'vitest';
import { encodeEvent } from '../../src/webhooks/events.js';
import { backoffMs, createMemoryWebhookQueue } from '../../src/webhooks/memory-queue.js';

let n = 0;
const ev = (channel: string): string => encodeEvent(`id.${++n}`, 'channel_occupied', channel, undefined, n);
const idOf = (text: string): string => (JSON.parse(text) as { id: string }).id;

/** A small deterministic generator (tests must repeat). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('memory webhook queue', () => {
  it('makes a claimed channel due exactly when its lease ends, and a failed one when its backoff ends', async () => {
    let t = 1000;
    const q = createMemoryWebhookQueue({ maxEvents: 10, now: () => t });
    q.append('a', [ev('a')], t);
    expect(await q.claim(10, 500)).toEqual(['a']);
    t += 499;
    expect(await q.claim(10, 500)).toEqual([]);
    t += 1;
    expect(await q.claim(10, 500)).toEqual(['a']);
    const policy = { baseMs: 100, maxMs: 300, windowMs: 10_000 };
    expect(await q.fail('a', [], policy)).toEqual({ attempts: 1, expired: false, delayMs: 100 });
    t += 99;
    expect(await q.claim(10, 500)).toEqual([]);
    t += 1;
    expect(await q.claim(10, 500)).toEqual(['a']);
    // The window counts from the first failure: 10 s after it, the next failure gives up.
    t += 10_000 - 100;
    const head = await q.peek('a', 10);
    expect(await q.fail('a', head.map(idOf), policy)).toEqual({ attempts: 2, expired: true, delayMs: 0 });
    expect(await q.size()).toBe(0);
  });

  it('computes the backoff from base, doubling, capped at max', () => {
    const p = { baseMs: 1000, maxMs: 300_000, windowMs: 3_600_000 };
    expect([1, 2, 3, 9, 10, 1000].map((a) => backoffMs(a, p))).toEqual([1000, 2000, 4000, 256_000, 300_000, 300_000]);
  });

  it('keeps exactly the newest events under the bound, across many channels appended in random order', async () => {
    const q = createMemoryWebhookQueue({ maxEvents: 100 });
    const next = rng(7);
    const all: Array<[string, string]> = [];
    let dropped = 0;
    for (let i = 0; i < 2000; i++) {
      const ch = `c${Math.floor(next() * 300)}`;
      const text = ev(ch);
      all.push([ch, text]);
      dropped += q.append(ch, [text], i).channel_occupied ?? 0;
    }
    expect(dropped).toBe(1900);
    expect(await q.size()).toBe(100);
    const kept = new Map<string, string[]>();
    for (const [ch, text] of all.slice(-100)) kept.set(ch, [...(kept.get(ch) ?? []), text]);
    for (let c = 0; c < 300; c++) expect(await q.peek(`c${c}`, 1000)).toEqual(kept.get(`c${c}`) ?? []);
  });

  it('claims channels in order of their due times, each once, under many backoffs', async () => {
    let t = 0;
    const q = createMemoryWebhookQueue({ maxEvents: 10_000, now: () => t });
    const next = rng(11);
    const channels = Array.from({ length: 500 }, (_, i) => `c${i}`);
    for (const ch of channels) q.append(ch, [ev(ch)], t);
    expect((await q.claim(1000, 1_000_000)).sort()).toEqual([...channels].sort());
    const dueAt = new Map<string, number>();
    for (const ch of channels) {
      const base = 1 + Math.floor(next() * 10_000);
      const r = await q.fail(ch, [], { baseMs: base, maxMs: 1_000_000, windowMs: 1_000_000 });
      dueAt.set(ch, t + r.delayMs);
    }
    const order: string[] = [];
    for (let guard = 0; guard < 1000 && order.length < channels.length; guard++) {
      t += 200;
      const got = await q.claim(7, 1_000_000_000);
      for (const ch of got) expect(dueAt.get(ch), ch).toBeLessThanOrEqual(t);
      order.push(...got);
      // Everything due is claimed within a few rounds of 7.
      if (got.length === 7) t -= 200;
    }
    expect([...order].sort()).toEqual([...channels].sort());
    const times = order.map((ch) => dueAt.get(ch) ?? 0);
    expect(times).toEqual([...times].sort((x, y) => x - y));
  });
});
