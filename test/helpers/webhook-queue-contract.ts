/**
 * The behaviour every WebhookQueue must have (semantics: src/webhooks/queue.ts),
 * run against the memory queue and against Redis (standalone and a Cluster):
 * `runWebhookQueueContract({ name, newHarness })`.
 *
 * A harness is one fresh, empty queue seen from two nodes (`a`, `b`: two
 * queue objects on two connections in Redis, the same object in memory).
 * Events are appended the way the stores do: RPUSH of encodeEvent texts to
 * the outbox then `mark` (Redis), `append` (memory).
 *
 * Waiting: leases and backoffs that must run out are short and waited for by
 * polling the queue's own calls (with a hang guard); leases and backoffs that
 * must not run out during a case are a minute long. No case asserts a
 * duration.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeEvent, type WebhookEventName } from '../../src/webhooks/events.js';
import type { DroppedCounts, RetryPolicy, WebhookQueue } from '../../src/webhooks/queue.js';
import { pollUntil } from './redis.js';

export interface QueueHarness {
  /** Two nodes' views of one queue. */
  readonly a: WebhookQueue;
  readonly b: WebhookQueue;
  /** Appends event texts to a channel's outbox and marks it (oldest queued at `oldestMs`); answers the drops. */
  append(channel: string, texts: readonly string[], oldestMs: number): Promise<DroppedCounts>;
  /**
   * Redis: runs `fn` once, right after the next script of `a` on an outbox
   * (so between the outbox step and the index step of an ack or expiry).
   */
  readonly afterOutboxStep?: (fn: () => Promise<void>) => void;
  /** Redis: the remaining time to live (ms) of the index keys and these channels' outboxes that exist, by key (-1: none). */
  readonly ttls?: (channels: readonly string[]) => Promise<Map<string, number>>;
  close(): Promise<void>;
}

export interface QueueContractOptions {
  readonly name: string;
  /** A fresh empty queue bounded at `maxEvents`, whose keys expire `ttlMs` after their last touch (Redis). */
  readonly newHarness: (maxEvents: number, ttlMs: number) => Promise<QueueHarness>;
}

const LONG_MS = 60_000;
const TTL_MS = 600_000;
/** A policy whose backoff does not run out during a case. */
const SLOW: RetryPolicy = { baseMs: 60_000, maxMs: 240_000, windowMs: 3_600_000 };

let counter = 0;
/** An event text with a fresh id; `t` its queue time (time_ms). */
function ev(channel: string, t: number, name: WebhookEventName = 'channel_occupied', user?: string): string {
  counter++;
  const u = user ?? (name.startsWith('member') ? `u${counter}` : undefined);
  return encodeEvent(`${randomUUID().slice(0, 12)}.${counter}`, name, channel, u, t);
}
const idOf = (text: string): string => (JSON.parse(text) as { id: string }).id;

export function runWebhookQueueContract(opts: QueueContractOptions): void {
  describe(`WebhookQueue contract: ${opts.name}`, () => {
    const open: QueueHarness[] = [];
    afterEach(async () => {
      await Promise.all(open.splice(0).map((h) => h.close()));
    });

    async function harness(maxEvents = 1000): Promise<QueueHarness> {
      const h = await opts.newHarness(maxEvents, TTL_MS);
      open.push(h);
      return h;
    }

    /** Claims (long lease) until `channel` is returned, through `q`. */
    async function claimUntil(q: WebhookQueue, channel: string, what: string): Promise<void> {
      let got = false;
      await pollUntil(async () => {
        got = (await q.claim(100, LONG_MS)).includes(channel);
        return got;
      }, what, 10_000);
    }

    it('keeps events in append order per channel, and counts them', async () => {
      const h = await harness();
      const a = [ev('a', 1000), ev('a', 1001)];
      const b = [ev('b', 1002)];
      const a3 = ev('a', 1003, 'member_added');
      await h.append('a', a, 1000);
      await h.append('b', b, 1002);
      await h.append('a', [a3], 1003);
      expect(await h.a.peek('a', 10)).toEqual([...a, a3]);
      expect(await h.b.peek('a', 2)).toEqual(a);
      expect(await h.a.peek('b', 10)).toEqual(b);
      expect(await h.a.peek('none', 10)).toEqual([]);
      expect(await h.a.size()).toBe(4);
    });

    it('returns each due channel to one claimer only, oldest due first, and no channel without events', async () => {
      const h = await harness();
      const channels = Array.from({ length: 6 }, (_, i) => `c${i}`);
      for (const [i, ch] of channels.entries()) await h.append(ch, [ev(ch, 1000 + i)], 1000 + i);
      const first = await h.a.claim(2, LONG_MS);
      expect(first).toEqual(['c0', 'c1']);
      const [x, y] = await Promise.all([h.a.claim(100, LONG_MS), h.b.claim(100, LONG_MS)]);
      expect(x.filter((c) => y.includes(c))).toEqual([]);
      expect([...first, ...x, ...y].sort()).toEqual(channels);
      expect(await h.a.claim(100, LONG_MS)).toEqual([]);
      expect(await h.b.claim(100, LONG_MS)).toEqual([]);
    });

    it('returns a claimed channel to another claimer once the lease ran out, with the same head', async () => {
      const h = await harness();
      const texts = [ev('x', 1000), ev('x', 1001)];
      await h.append('x', texts, 1000);
      expect(await h.a.claim(10, 200)).toEqual(['x']);
      const sent = await h.a.peek('x', 10);
      // The claimer "dies": another node gets the channel after the lease, and sends the same events.
      await claimUntil(h.b, 'x', 'the lease to run out');
      expect(await h.b.peek('x', 10)).toEqual(sent);
      expect(await h.a.claim(10, LONG_MS)).toEqual([]);
    });

    it('acks by removing exactly the given head ids, and makes the channel due again at once when events remain', async () => {
      const h = await harness();
      const e = [ev('k', 1000), ev('k', 1001), ev('k', 1002), ev('k', 1003)];
      await h.append('k', e, 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['k']);
      const batch = await h.a.peek('k', 2);
      expect(batch).toEqual(e.slice(0, 2));
      await h.a.ack('k', batch.map(idOf));
      expect(await h.a.peek('k', 10)).toEqual(e.slice(2));
      expect(await h.a.size()).toBe(2);
      expect(await h.b.claim(10, LONG_MS)).toEqual(['k']);
      // An id not at the head is not removed (nor anything else).
      await h.b.ack('k', [idOf(e[3] as string), 'nope.1']);
      expect(await h.a.peek('k', 10)).toEqual(e.slice(2));
      expect(await h.a.size()).toBe(2);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['k']);
      await h.a.ack('k', e.slice(2).map(idOf));
      expect(await h.a.peek('k', 10)).toEqual([]);
      expect(await h.a.size()).toBe(0);
      expect(await h.b.claim(10, LONG_MS)).toEqual([]);
      // An emptied channel is indexed again by its next append.
      const later = ev('k', 1010);
      await h.append('k', [later], 1010);
      expect(await h.b.claim(10, LONG_MS)).toEqual(['k']);
      expect(await h.b.peek('k', 10)).toEqual([later]);
    });

    it('keeps a channel whose events were appended while it was claimed: due again after the ack', async () => {
      const h = await harness();
      const first = ev('m', 1000);
      await h.append('m', [first], 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['m']);
      const next = ev('m', 1001, 'channel_vacated');
      await h.append('m', [next], 1001);
      // Claimed: the append does not make it due for another claimer.
      expect(await h.b.claim(10, LONG_MS)).toEqual([]);
      await h.a.ack('m', [idOf(first)]);
      expect(await h.b.claim(10, LONG_MS)).toEqual(['m']);
      expect(await h.b.peek('m', 10)).toEqual([next]);
    });

    it('does not lose a channel whose append raced an ack that emptied it', async () => {
      const h = await harness();
      const first = ev('r', 1000);
      await h.append('r', [first], 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['r']);
      const raced = ev('r', 1001);
      let ran = false;
      // Redis: the append (RPUSH and mark) lands after the ack read the outbox empty,
      // and before the ack updates the index. Memory: the ack is one step, the append follows it.
      const append = async (): Promise<void> => {
        ran = true;
        await h.append('r', [raced], 1001);
      };
      if (h.afterOutboxStep) h.afterOutboxStep(append);
      await h.a.ack('r', [idOf(first)]);
      if (!h.afterOutboxStep) await append();
      expect(ran).toBe(true);
      expect(await h.b.claim(10, LONG_MS)).toEqual(['r']);
      expect(await h.b.peek('r', 10)).toEqual([raced]);
      expect(await h.b.size()).toBe(1);
    });

    it('fails with a delay from base doubling to max, keeps the events, and resets the attempts on ack', async () => {
      const h = await harness();
      const e = [ev('f', 1000), ev('f', 1001)];
      await h.append('f', e, 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['f']);
      const results = [];
      for (let i = 0; i < 4; i++) results.push(await h.a.fail('f', e.map(idOf), SLOW));
      expect(results).toEqual([
        { attempts: 1, expired: false, delayMs: 60_000 },
        { attempts: 2, expired: false, delayMs: 120_000 },
        { attempts: 3, expired: false, delayMs: 240_000 },
        { attempts: 4, expired: false, delayMs: 240_000 },
      ]);
      expect(await h.a.peek('f', 10)).toEqual(e);
      expect(await h.a.size()).toBe(2);
      // In backoff: not due, and an append does not make it due.
      await h.append('f', [ev('f', 1002)], 1002);
      expect(await h.b.claim(10, LONG_MS)).toEqual([]);
      await h.a.ack('f', [idOf(e[0] as string)]);
      expect(await h.b.claim(10, LONG_MS)).toEqual(['f']);
      expect(await h.b.fail('f', [idOf(e[1] as string)], SLOW)).toEqual({ attempts: 1, expired: false, delayMs: 60_000 });
    });

    it('makes a failed channel due again once its backoff ran out', async () => {
      const h = await harness();
      const e = [ev('g', 1000)];
      await h.append('g', e, 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['g']);
      expect(await h.a.fail('g', e.map(idOf), { baseMs: 50, maxMs: 100, windowMs: LONG_MS })).toMatchObject({ attempts: 1, expired: false, delayMs: 50 });
      await claimUntil(h.b, 'g', 'the backoff to run out');
      expect(await h.b.peek('g', 10)).toEqual(e);
    });

    it('gives up the head once the retry window is used up: the events are removed, the rest is due at once', async () => {
      const h = await harness();
      const head = [ev('w', 1000, 'member_added'), ev('w', 1001, 'member_removed')];
      const rest = ev('w', 1002);
      await h.append('w', [...head, rest], 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['w']);
      const policy: RetryPolicy = { baseMs: 1, maxMs: 5, windowMs: 150 };
      const ids = head.map(idOf);
      const first = await h.a.fail('w', ids, policy);
      expect(first).toMatchObject({ attempts: 1, expired: false });
      let last = first;
      await pollUntil(async () => {
        last = await h.a.fail('w', ids, policy);
        return last.expired;
      }, 'the retry window to be used up', 10_000);
      expect(last.attempts).toBeGreaterThan(1);
      expect(last.delayMs).toBe(0);
      expect(await h.a.peek('w', 10)).toEqual([rest]);
      expect(await h.a.size()).toBe(1);
      expect(await h.b.claim(10, LONG_MS)).toEqual(['w']);
      // The next head starts a new window.
      expect(await h.b.fail('w', [idOf(rest)], policy)).toMatchObject({ attempts: 1, expired: false });
    });

    it('drops the oldest events across channels past the bound, and answers them by name', async () => {
      const h = await harness(5);
      const a = [ev('p', 1000, 'member_added'), ev('p', 1001)];
      const b = [ev('q', 1002, 'member_removed'), ev('q', 1003), ev('q', 1004)];
      expect(await h.append('p', a, 1000)).toEqual({});
      expect(await h.append('q', b, 1002)).toEqual({});
      expect(await h.a.size()).toBe(5);
      const c = [ev('s', 1005), ev('s', 1006, 'channel_vacated')];
      expect(await h.append('s', c, 1005)).toEqual({ member_added: 1, channel_occupied: 1 });
      expect(await h.a.size()).toBe(5);
      expect(await h.a.peek('p', 10)).toEqual([]);
      expect(await h.a.peek('q', 10)).toEqual(b);
      // Older than another channel's newer events: the next drop takes q's head, then s's.
      const p2 = ev('p', 1007);
      expect(await h.append('p', [p2], 1007)).toEqual({ member_removed: 1 });
      expect(await h.a.size()).toBe(5);
      expect(await h.a.peek('q', 10)).toEqual(b.slice(1));
      const many = [ev('s', 1008), ev('s', 1009), ev('s', 1010)];
      expect(await h.append('s', many, 1008)).toEqual({ channel_occupied: 3 });
      expect(await h.a.peek('q', 10)).toEqual([]);
      expect(await h.a.peek('s', 10)).toEqual([c[1], ...many]);
      expect(await h.a.peek('p', 10)).toEqual([p2]);
      expect(await h.a.size()).toBe(5);
    });

    it('keeps acks of events in flight working when the bound dropped some of them, and releases channels it emptied', async () => {
      const h = await harness(4);
      const e = [ev('e', 999)];
      const q = [ev('q', 1000), ev('q', 1001), ev('q', 1002)];
      await h.append('e', e, 999);
      await h.append('q', q, 1000);
      expect((await h.a.claim(10, LONG_MS)).sort()).toEqual(['e', 'q']);
      const inFlightE = await h.a.peek('e', 10);
      const inFlightQ = await h.a.peek('q', 10);
      expect(inFlightQ).toEqual(q);
      // Two newer events: the bound drops the two oldest, e's and q's head, both in flight.
      const r = [ev('r', 1003, 'member_added'), ev('r', 1004, 'member_added')];
      expect(await h.append('r', r, 1003)).toEqual({ channel_occupied: 2 });
      expect(await h.a.peek('e', 10)).toEqual([]);
      expect(await h.a.peek('q', 10)).toEqual(q.slice(1));
      expect(await h.a.size()).toBe(4);
      // Still claimed: the drop let no other claimer in.
      expect(await h.b.claim(10, LONG_MS)).toEqual(['r']);
      await h.a.ack('q', inFlightQ.map(idOf));
      await h.a.ack('e', inFlightE.map(idOf));
      expect(await h.a.peek('q', 10)).toEqual([]);
      expect(await h.a.size()).toBe(2);
      expect(await h.a.claim(10, LONG_MS)).toEqual([]);
      await h.b.ack('r', []);
      expect(await h.a.peek('r', 10)).toEqual(r);
      // r is emptied by drops while due and unclaimed: claimed once more, found empty, released by an empty ack.
      const s4 = [ev('s', 1005), ev('s', 1006), ev('s', 1007), ev('s', 1008)];
      expect(await h.append('s', s4, 1005)).toEqual({ member_added: 2 });
      expect((await h.b.claim(10, LONG_MS)).sort()).toEqual(['r', 's']);
      expect(await h.b.peek('r', 10)).toEqual([]);
      await h.b.ack('r', []);
      await h.b.ack('s', s4.map(idOf));
      expect(await h.a.size()).toBe(0);
      expect(await h.a.claim(10, LONG_MS)).toEqual([]);
    });

    it('keeps exactly the newest events under the bound, over many channels and appends of several events', async () => {
      const h = await harness(50);
      const all: Array<[string, string]> = [];
      let dropped = 0;
      let t = 10_000;
      for (let i = 0; i < 120; i++) {
        const ch = `c${(i * 7) % 23}`;
        const texts = Array.from({ length: 1 + (i % 3) }, () => ev(ch, t++));
        for (const x of texts) all.push([ch, x]);
        dropped += (await h.append(ch, texts, t - texts.length)).channel_occupied ?? 0;
      }
      expect(dropped).toBe(all.length - 50);
      expect(await h.a.size()).toBe(50);
      const kept = new Map<string, string[]>();
      for (const [ch, x] of all.slice(-50)) kept.set(ch, [...(kept.get(ch) ?? []), x]);
      for (let c = 0; c < 23; c++) expect(await h.a.peek(`c${c}`, 1000), `c${c}`).toEqual(kept.get(`c${c}`) ?? []);
    });

    it('delivers every event once and in order per channel while two nodes deliver and a producer appends', async () => {
      const h = await harness(100_000);
      const channels = ['d0', 'd1', 'd2', 'd3', 'd4'];
      const sent = new Map<string, string[]>(channels.map((c) => [c, []]));
      const got = new Map<string, string[]>(channels.map((c) => [c, []]));
      const total = 200;
      let received = 0;
      const producer = async (): Promise<void> => {
        for (let i = 0; i < total; i++) {
          const ch = channels[i % channels.length] as string;
          const x = ev(ch, 20_000 + i);
          sent.get(ch)?.push(x);
          await h.append(ch, [x], 20_000 + i);
        }
      };
      const deadline = Date.now() + 30_000;
      const deliverer = async (q: WebhookQueue): Promise<void> => {
        while (received < total) {
          if (Date.now() > deadline) throw new Error(`gave up with ${received} of ${total} events delivered`);
          const claimed = await q.claim(2, LONG_MS);
          if (claimed.length === 0) await new Promise((r) => setTimeout(r, 5));
          for (const ch of claimed) {
            const batch = await q.peek(ch, 3);
            got.get(ch)?.push(...batch);
            received += batch.length;
            await q.ack(ch, batch.map(idOf));
          }
        }
      };
      await Promise.all([producer(), deliverer(h.a), deliverer(h.b)]);
      for (const ch of channels) expect(got.get(ch), ch).toEqual(sent.get(ch));
      expect(await h.a.size()).toBe(0);
      expect(await h.a.claim(10, LONG_MS)).toEqual([]);
    });

    it('gives every key it keeps a time to live of at most the configured one', async () => {
      const h = await harness();
      if (!h.ttls) {
        // Memory: nothing expires (nothing outlives the process). Checked for Redis only.
        expect(h.ttls).toBeUndefined();
        return;
      }
      await h.append('t', [ev('t', 1000), ev('t', 1001)], 1000);
      expect(await h.a.claim(10, LONG_MS)).toEqual(['t']);
      await h.a.fail('t', [], SLOW);
      const ttls = await h.ttls(['t']);
      expect(ttls.size, JSON.stringify([...ttls])).toBeGreaterThanOrEqual(6);
      for (const [k, ms] of ttls) {
        expect(ms, k).toBeGreaterThan(0);
        expect(ms, k).toBeLessThanOrEqual(TTL_MS);
      }
    });
  });
}
