/**
 * The webhook queue in memory (the embedded broker; see queue.ts for the
 * semantics, which this follows exactly). It dies with the process, as the
 * contract says for the embedded broker.
 *
 * Structures, all bounded by the queued events (`maxEvents`) and the channels
 * that hold them:
 * - per channel an outbox: a FIFO of (text, seq), `seq` numbering appends
 *   across the whole queue (queue order);
 * - `due`: an indexed min-heap of channels by (when it may be tried next,
 *   insertion order). A claim moves a channel to `now + lease`, so a claimer
 *   that dies simply lets the channel become due again; there is no separate
 *   claimed set to leak;
 * - `age`: an indexed min-heap of channels with events by the seq of their
 *   head, so the oldest event across channels is found in O(log n) when the
 *   bound drops.
 *
 * Every operation is O(log n) per channel touched plus O(k) for k events moved.
 * Appending and marking are one step here (`append`); `mark` only indexes a
 * channel with events that is not indexed and enforces the bound (events
 * cannot enter the outbox any other way), so `size` is exact.
 *
 * Like the Redis queue, a drop never removes a channel from `due`: a channel
 * emptied by drops is still claimed (or claimable) until its claimer acks it
 * (peek answers [], ack with no ids releases it). So a drop never lets a
 * second claimer in while the first still holds the channel.
 */
import { eventHead } from './events.js';
import type { DroppedCounts, FailResult, MemoryWebhookQueue, RetryPolicy } from './queue.js';

export interface MemoryWebhookQueueOptions {
  /** Events queued at most (PUBGATE_WEBHOOK_MAX_QUEUE); past it the oldest are dropped. */
  readonly maxEvents: number;
  /** Clock (ms); Date.now by default. */
  readonly now?: () => number;
}

/** An indexed binary min-heap of string keys: insert, update, remove, peek in O(log n). */
class IndexedHeap {
  private readonly keys: string[] = [];
  private readonly prio: Array<[number, number]> = [];
  private readonly pos = new Map<string, number>();
  private tie = 0;

  get size(): number {
    return this.keys.length;
  }

  has(key: string): boolean {
    return this.pos.has(key);
  }

  score(key: string): number | undefined {
    const i = this.pos.get(key);
    return i === undefined ? undefined : (this.prio[i] as [number, number])[0];
  }

  /** Inserts or moves `key` to `score` (ties keep insertion order). */
  set(key: string, score: number): void {
    const i = this.pos.get(key);
    if (i === undefined) {
      this.keys.push(key);
      this.prio.push([score, this.tie++]);
      this.pos.set(key, this.keys.length - 1);
      this.up(this.keys.length - 1);
      return;
    }
    this.prio[i] = [score, this.tie++];
    this.down(this.up(i));
  }

  remove(key: string): void {
    const i = this.pos.get(key);
    if (i === undefined) return;
    const last = this.keys.length - 1;
    this.swap(i, last);
    this.keys.pop();
    this.prio.pop();
    this.pos.delete(key);
    if (i < this.keys.length) this.down(this.up(i));
  }

  /** The key with the lowest score, and that score. */
  min(): [string, number] | undefined {
    const k = this.keys[0];
    return k === undefined ? undefined : [k, (this.prio[0] as [number, number])[0]];
  }

  private less(a: number, b: number): boolean {
    const x = this.prio[a] as [number, number];
    const y = this.prio[b] as [number, number];
    return x[0] < y[0] || (x[0] === y[0] && x[1] < y[1]);
  }

  private swap(a: number, b: number): void {
    const ka = this.keys[a] as string;
    const kb = this.keys[b] as string;
    this.keys[a] = kb;
    this.keys[b] = ka;
    const p = this.prio[a] as [number, number];
    this.prio[a] = this.prio[b] as [number, number];
    this.prio[b] = p;
    this.pos.set(kb, a);
    this.pos.set(ka, b);
  }

  private up(i: number): number {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
    return i;
  }

  private down(i: number): void {
    const n = this.keys.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(l, m)) m = l;
      if (r < n && this.less(r, m)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }
}

interface Outbox {
  texts: string[];
  seqs: number[];
  /** Index of the head in texts/seqs (amortized O(1) shift: compacted when past half). */
  head: number;
  attempts: number;
  firstFailMs: number | undefined;
}

const idOf = (text: string): string => {
  const end = text.indexOf('"', 7);
  return end < 0 ? '' : text.slice(7, end);
};

export function createMemoryWebhookQueue(opts: MemoryWebhookQueueOptions): MemoryWebhookQueue {
  if (!Number.isInteger(opts.maxEvents) || opts.maxEvents < 1) throw new RangeError('maxEvents must be a positive integer');
  const now = opts.now ?? Date.now;
  const outboxes = new Map<string, Outbox>();
  const due = new IndexedHeap();
  const age = new IndexedHeap();
  let seq = 0;
  let size = 0;

  const length = (o: Outbox): number => o.texts.length - o.head;

  function compact(o: Outbox): void {
    if (o.head > 32 && o.head * 2 > o.texts.length) {
      o.texts = o.texts.slice(o.head);
      o.seqs = o.seqs.slice(o.head);
      o.head = 0;
    }
  }

  /** Removes the head event; keeps `age` on the new head. Answers its text. */
  function shift(channel: string, o: Outbox): string {
    const text = o.texts[o.head] as string;
    o.head++;
    size--;
    if (length(o) === 0) {
      o.texts = [];
      o.seqs = [];
      o.head = 0;
      age.remove(channel);
    } else {
      compact(o);
      age.set(channel, o.seqs[o.head] as number);
    }
    return text;
  }

  /** Drops the oldest events across channels until the bound holds. */
  function enforce(): DroppedCounts {
    const dropped: DroppedCounts = {};
    while (size > opts.maxEvents) {
      const oldest = age.min();
      if (!oldest) break;
      const o = outboxes.get(oldest[0]);
      if (!o || length(o) === 0) {
        age.remove(oldest[0]);
        continue;
      }
      const name = eventHead(shift(oldest[0], o))?.name;
      if (name) dropped[name] = (dropped[name] ?? 0) + 1;
    }
    return dropped;
  }

  /** Removes those of `ids` still at the head (in order; ids a drop took are skipped). Answers how many. */
  function removeHead(channel: string, o: Outbox, ids: readonly string[]): number {
    let removed = 0;
    for (const id of ids) {
      if (length(o) === 0) break;
      if (idOf(o.texts[o.head] as string) === id) {
        shift(channel, o);
        removed++;
      }
    }
    return removed;
  }

  /** Releases a channel: due at once with events left, else out of the index. */
  function release(channel: string): void {
    const o = outboxes.get(channel);
    if (o && length(o) > 0) {
      due.set(channel, now());
      return;
    }
    due.remove(channel);
    outboxes.delete(channel);
  }

  function index(channel: string): void {
    const o = outboxes.get(channel);
    if (o && length(o) > 0 && !due.has(channel)) due.set(channel, now());
  }

  return {
    append(channel, texts, _nowMs) {
      if (texts.length === 0) return {};
      let o = outboxes.get(channel);
      if (!o) {
        o = { texts: [], seqs: [], head: 0, attempts: 0, firstFailMs: undefined };
        outboxes.set(channel, o);
      }
      const wasEmpty = length(o) === 0;
      for (const t of texts) {
        o.texts.push(t);
        o.seqs.push(seq++);
      }
      size += texts.length;
      if (wasEmpty) age.set(channel, o.seqs[o.head] as number);
      index(channel);
      return enforce();
    },
    mark(channel) {
      index(channel);
      return Promise.resolve(enforce());
    },
    claim(max, leaseMs) {
      const t = now();
      // At least 1 ms, so a claimed channel is never due again within this loop.
      const until = t + Math.max(1, Math.ceil(leaseMs));
      const out: string[] = [];
      while (out.length < max) {
        const top = due.min();
        if (!top || top[1] > t) break;
        due.set(top[0], until);
        out.push(top[0]);
      }
      return Promise.resolve(out);
    },
    peek(channel, max) {
      const o = outboxes.get(channel);
      return Promise.resolve(o ? o.texts.slice(o.head, o.head + max) : []);
    },
    ack(channel, ids) {
      const o = outboxes.get(channel);
      if (o) {
        removeHead(channel, o, ids);
        o.attempts = 0;
        o.firstFailMs = undefined;
      }
      release(channel);
      return Promise.resolve();
    },
    fail(channel, ids, policy: RetryPolicy): Promise<FailResult> {
      const o = outboxes.get(channel);
      if (!o) {
        // Nothing left (dropped meanwhile): nothing to retry.
        release(channel);
        return Promise.resolve({ attempts: 1, expired: false, delayMs: 0 });
      }
      const t = now();
      o.attempts++;
      o.firstFailMs ??= t;
      const attempts = o.attempts;
      if (t - o.firstFailMs >= policy.windowMs) {
        removeHead(channel, o, ids);
        o.attempts = 0;
        o.firstFailMs = undefined;
        release(channel);
        return Promise.resolve({ attempts, expired: true, delayMs: 0 });
      }
      const delayMs = backoffMs(attempts, policy);
      due.set(channel, t + delayMs);
      return Promise.resolve({ attempts, expired: false, delayMs });
    },
    size() {
      return Promise.resolve(size);
    },
  };
}

/** The delay after the `attempts`-th failure: base, doubling, at most max. */
export function backoffMs(attempts: number, policy: RetryPolicy): number {
  const exp = Math.min(attempts - 1, 40);
  return Math.min(policy.maxMs, policy.baseMs * 2 ** exp);
}
