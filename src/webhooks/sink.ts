/**
 * Where the stores that decide events (presence, occupancy) report them.
 *
 * - The memory stores hand over event texts (`append`): the memory queue
 *   appends and marks in one step.
 * - The Redis stores append to the channel's outbox inside their own scripts
 *   (atomic with the change) and report how many (`appended`); the sink then
 *   marks the channel in the queue's index. A mark that fails (Redis briefly
 *   away) is kept and tried again every second, for at most
 *   MAX_PENDING_MARKS channels (past that the oldest is given up: its events
 *   stay in the outbox and go with the channel's next mark, or with the sweep
 *   of this node's channels if it dies).
 */
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { DroppedCounts, MemoryWebhookQueue, WebhookQueue } from './queue.js';

export const MAX_PENDING_MARKS = 10_000;
const RETRY_MS = 1000;

export interface EventSink {
  /** Memory stores: append these event texts (built with encodeEvent), in order. */
  append(channel: string, texts: readonly string[]): void;
  /** Redis stores: a script appended `count` events, queued at `timeMs` (Redis time), to the channel's outbox. */
  appended(channel: string, count: number, timeMs: number): void;
}

export interface EventSinkHooks {
  /** Events were queued for the channel (the deliverer may claim at once). */
  readonly queued?: (channel: string, count: number) => void;
  /** Events dropped to keep the queue's bound. */
  readonly dropped?: (counts: DroppedCounts) => void;
}

export interface ClosableSink extends EventSink {
  /** Hooks set once the gateway built its metrics and deliverer. */
  hook(h: EventSinkHooks): void;
  /** Marks still failing (tests). */
  pending(): number;
  close(): void;
}

export function createEventSink(queue: WebhookQueue | MemoryWebhookQueue, log: Log): ClosableSink {
  let hooks: EventSinkHooks = {};
  const failures = new LogTally(log.child({ component: 'webhooks' }), 'warn', 'webhook queue marks failed');
  /** channel → [count, oldest time] of marks to try again. */
  const retry = new Map<string, [number, number]>();
  let timer: NodeJS.Timeout | undefined;

  function dropped(d: DroppedCounts): void {
    if (Object.keys(d).length > 0) hooks.dropped?.(d);
  }

  function later(channel: string, count: number, timeMs: number): void {
    const had = retry.get(channel);
    if (had) {
      had[0] += count;
      had[1] = Math.min(had[1], timeMs);
    } else {
      if (retry.size >= MAX_PENDING_MARKS) {
        const oldest = retry.keys().next().value as string;
        retry.delete(oldest);
        failures.add('given up', 1, 'too many channels waiting to be marked');
      }
      retry.set(channel, [count, timeMs]);
    }
    if (!timer) {
      timer = setTimeout(flush, RETRY_MS);
      timer.unref();
    }
  }

  function mark(channel: string, count: number, timeMs: number): void {
    queue.mark(channel, count, timeMs).then(
      (d) => {
        dropped(d);
        hooks.queued?.(channel, count);
      },
      (e: unknown) => {
        failures.add('mark', 1, e instanceof Error ? e.message : String(e));
        later(channel, count, timeMs);
      },
    );
  }

  function flush(): void {
    timer = undefined;
    const todo = [...retry];
    retry.clear();
    for (const [channel, [count, timeMs]] of todo) mark(channel, count, timeMs);
  }

  return {
    append(channel, texts) {
      if (texts.length === 0) return;
      if (!('append' in queue)) throw new Error('append needs the memory webhook queue');
      dropped(queue.append(channel, texts, Date.now()));
      hooks.queued?.(channel, texts.length);
    },
    appended(channel, count, timeMs) {
      if (count > 0) mark(channel, count, timeMs);
    },
    hook(h) {
      hooks = h;
    },
    pending: () => retry.size,
    close() {
      if (timer) clearTimeout(timer);
      timer = undefined;
      retry.clear();
      failures.flush();
    },
  };
}
