/**
 * The webhook queue: events waiting for the receiver, per channel, oldest
 * first. Implemented in memory (webhooks/memory-queue.ts, the embedded broker:
 * dies with the process, as the contract says) and in Redis
 * (broker/redis-webhook-queue.ts: survives any node's death).
 *
 * Shape (the same in both):
 * - One FIFO per channel, the channel's *outbox*. In Redis it is a LIST in the
 *   slot of the channel (`<prefix>wq:{<redis channel>}`, see
 *   webhookOutboxKey), so the presence and occupancy scripts append to it in
 *   the same atomic step as the change that caused the event: an event exists
 *   exactly when its change happened.
 * - An index of channels with queued events (`due`: when the channel may be
 *   tried next) and the queue's size, shared by all nodes. After a store call
 *   appended events, the node calls `mark` (on a Cluster the index lives in
 *   another slot than the outbox, so this is a second step; a node that dies
 *   between the two leaves the events in the outbox until the channel's next
 *   mark, which the sweep of that node's channels does).
 * - Delivery claims channels (one claimer per channel at a time, for a
 *   lease), reads the head of each, sends, then `ack`s (removes exactly the
 *   delivered events, by id) or `fail`s (keeps them; the channel is due again
 *   after a backoff). Per-channel order holds across retries and nodes: only
 *   the head is ever sent, and only by the claimer. A claimer that dies lets
 *   its lease run out; another node then sends the same head again (same ids).
 * - Bounded: past `maxEvents` queued, the oldest events (by queue time, across
 *   channels) are dropped and answered to the caller to be counted.
 */
import type { WebhookEventName } from './events.js';

/** Counts of dropped events by name. */
export type DroppedCounts = Partial<Record<WebhookEventName, number>>;

export interface RetryPolicy {
  /** First delay (ms); it doubles with each failed attempt. */
  readonly baseMs: number;
  /** Longest delay between tries (ms). */
  readonly maxMs: number;
  /** Events whose first failed attempt is older than this are given up (PUBGATE_WEBHOOK_RETRY_SECONDS). */
  readonly windowMs: number;
}

export interface FailResult {
  /** Failed attempts so far for the channel's head (this one included). */
  readonly attempts: number;
  /** The retry window was used up: the events were dropped (counted by the caller), the channel is due again at once. */
  readonly expired: boolean;
  /** When not expired: the channel is due again in this many ms. */
  readonly delayMs: number;
}

export interface WebhookQueue {
  /**
   * `count` events were appended to the channel's outbox, the oldest of them
   * queued at `oldestMs`: makes the channel due (unless it is in the index
   * already: due, claimed, or waiting out a backoff, which it keeps), adds
   * them to the size, and enforces the bound. Answers the events dropped to
   * keep it. (The memory queue's events only enter by `append`, which marks:
   * there `mark` only indexes the channel and enforces the bound.)
   */
  mark(channel: string, count: number, oldestMs: number): Promise<DroppedCounts>;
  /**
   * Claims up to `max` due channels (oldest due first), each for `leaseMs`:
   * no other claim returns them until acked, failed or the lease ran out.
   */
  claim(max: number, leaseMs: number): Promise<string[]>;
  /**
   * The first `max` events of the channel's outbox (JSON texts, oldest first).
   * A claimed channel may have none (the bound dropped them, or another
   * claimer took them after this claim's lease ran out): ack it with no ids,
   * which releases it (out of the index when still empty).
   */
  peek(channel: string, max: number): Promise<string[]>;
  /**
   * The events were delivered: removes those of `ids` still at the head of the
   * outbox (a drop may have taken some meanwhile), resets the channel's
   * attempts and releases it (due again at once when events remain).
   */
  ack(channel: string, ids: readonly string[]): Promise<void>;
  /**
   * The delivery of the head failed: keeps the events and makes the channel due
   * after the policy's backoff (`baseMs` doubled per failed attempt, at most
   * `maxMs`); when the window is used up (the channel's first failure since its
   * last ack or expiry is `windowMs` old or more), removes those of `ids` still
   * at the head instead, resets the attempts and releases the channel as ack
   * does (`expired`).
   */
  fail(channel: string, ids: readonly string[], policy: RetryPolicy): Promise<FailResult>;
  /** Events queued in all (for the queue gauge; may lag a racing change; approximate in Redis, see redis-webhook-queue.ts). */
  size(): Promise<number>;
}

/**
 * A queue the memory stores append to directly (the embedded broker: the
 * outbox and the index live in one process, so appending and marking are one step).
 */
export interface MemoryWebhookQueue extends WebhookQueue {
  /** Appends event texts (built with encodeEvent) to the channel's outbox, marks it, enforces the bound; answers the drops. */
  append(channel: string, texts: readonly string[], nowMs: number): DroppedCounts;
}

/** The Redis outbox of a channel: a LIST in the slot of the channel's Redis channel. */
export function webhookOutboxKey(prefix: string, redisChannel: string): string {
  return `${prefix}wq:{${redisChannel}}`;
}
