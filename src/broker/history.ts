/**
 * Message history for channels matching `historyChannels`: every publish gets
 * the next offset of its channel and is kept (the last `size` messages, for
 * `ttlSec` after the channel's last publish), and the channel has an epoch
 * that changes whenever its history is lost. The append and the fan-out happen
 * in one step, so offsets are gap-free in the order subscribers see them.
 */
import { randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';
import { encodeMessage } from '../protocol/frames.js';
import { createIdempotencyMemo, type Idempotency } from './idempotency.js';

export interface HistoryPosition {
  /** Offset of the channel's last message; 0 when it has none. */
  readonly offset: number;
  readonly epoch: string;
}

/** What a publish got: its position, and whether it was a repeat of an idempotency key (then nothing was published and the position is the first publish's). */
export interface HistoryPublished extends HistoryPosition {
  readonly repeat: boolean;
}

export interface HistorySince {
  readonly position: HistoryPosition;
  /**
   * The frames after the asked offset, in order, at most the asked `limit` of
   * them; undefined when history no longer reaches back that far.
   */
  readonly frames: readonly string[] | undefined;
}

/**
 * Every call may name the channel's own size and ttl (its namespace's); the
 * options the history was created with apply otherwise.
 */
export interface History {
  /**
   * Appends a message (raw JSON `data`) and publishes its frame to every node;
   * resolves with its position. With `idem`, a key already accepted for the
   * channel appends and publishes nothing and resolves with the first position.
   */
  /**
   * `envelope` (e.g. an `exclude` mark) is put before the frame on its way to
   * the nodes only: history keeps the plain frame.
   */
  publish(channel: string, rawData: string, opts?: HistoryOptions, idem?: Idempotency, envelope?: string): Promise<HistoryPublished>;
  /** The channel's current position (an epoch is created when it has none). */
  position(channel: string, opts?: HistoryOptions): Promise<HistoryPosition>;
  /**
   * The channel's frames after `offset`, oldest first, at most `limit` of them
   * (a page: read on from the last one's offset), and its current position.
   */
  since(channel: string, offset: number, limit: number, opts?: HistoryOptions): Promise<HistorySince>;
}

export interface HistoryOptions {
  readonly size: number;
  readonly ttlSec: number;
}

/** A new epoch: short, random, JSON-safe. */
export function newEpoch(): string {
  return randomBytes(6).toString('base64url');
}

/** The offset in a history `message` frame (frames are built by encodeMessage, so the field is at a known place). */
export function frameOffset(frame: string): number {
  const at = frame.indexOf('"offset":');
  if (at < 0) return 0;
  return parseInt(frame.slice(at + 9, at + 30), 10);
}

interface ChannelLog {
  epoch: string;
  offset: number;
  frames: string[]; // ring: the last `size` frames, oldest first
  expiresAtMs: number;
  ttlMs: number;
}

/**
 * The embedded broker's history, in memory: same semantics as Redis, for one
 * node. Bounded: `size` frames per channel, and channels expire `ttlSec` after
 * their last publish (swept lazily and on a timer).
 */
export function createMemoryHistory(
  opts: HistoryOptions,
  deliver: (channel: string, frame: string) => Promise<void>,
  nowMs: () => number = Date.now,
): History & { stop(): void } {
  const logs = new Map<string, ChannelLog>();
  // Remembered answers: "offset epoch".
  const memo = createIdempotencyMemo(100_000, nowMs);

  function get(channel: string, o: HistoryOptions): ChannelLog {
    const now = nowMs();
    let log = logs.get(channel);
    if (log && log.expiresAtMs <= now) {
      logs.delete(channel);
      log = undefined;
    }
    if (!log) {
      const ttlMs = o.ttlSec * 1000;
      log = { epoch: newEpoch(), offset: 0, frames: [], expiresAtMs: now + ttlMs, ttlMs };
      logs.set(channel, log);
    }
    return log;
  }

  const sweep = setInterval(() => {
    const now = nowMs();
    for (const [ch, log] of logs) if (log.expiresAtMs <= now) logs.delete(ch);
  }, Math.min(opts.ttlSec * 1000, 10_000));
  sweep.unref();

  return {
    async publish(channel, rawData, o = opts, idem, envelope = '') {
      // The check, the append and the record happen before any await: a
      // repeat can never run while its first publish is half done.
      if (idem) {
        const seen = memo.get(channel, idem.key);
        if (seen !== undefined) {
          const [off, epoch] = seen.split(' ');
          return { offset: Number(off), epoch: epoch ?? '', repeat: true };
        }
      }
      const log = get(channel, o);
      // Offset and append happen before any await, so concurrent publishes
      // get consecutive offsets in the order they are delivered.
      const offset = ++log.offset;
      const frame = encodeMessage(channel, rawData, offset, log.epoch);
      log.frames.push(frame);
      while (log.frames.length > o.size) log.frames.shift();
      log.ttlMs = o.ttlSec * 1000;
      log.expiresAtMs = nowMs() + log.ttlMs;
      if (idem) memo.set(channel, idem.key, `${offset} ${log.epoch}`, idem.ttlSec);
      await deliver(channel, envelope + frame);
      return { offset, epoch: log.epoch, repeat: false };
    },
    position(channel, o = opts) {
      const log = get(channel, o);
      return Promise.resolve({ offset: log.offset, epoch: log.epoch });
    },
    since(channel, offset, limit, o = opts) {
      const log = get(channel, o);
      const position = { offset: log.offset, epoch: log.epoch };
      if (offset >= log.offset) return Promise.resolve({ position, frames: offset === log.offset ? [] : undefined });
      const first = log.offset - log.frames.length + 1;
      if (offset + 1 < first) return Promise.resolve({ position, frames: undefined });
      const from = offset + 1 - first;
      return Promise.resolve({ position, frames: log.frames.slice(from, from + Math.max(1, limit)) });
    },
    stop: () => clearInterval(sweep),
  };
}

export function historyUnavailable(message: string): GatewayError {
  return new GatewayError('unavailable', message, 1);
}
