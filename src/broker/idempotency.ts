/**
 * Idempotent publish (contract 1.1, "Idempotent publish and exclude"): a key,
 * scoped to its channel, is remembered with the first publish's answer for
 * `ttlSec`; a repeat within that time publishes nothing and gets that answer.
 *
 * The remembering is atomic with the publish everywhere: on Redis in the same
 * Lua script (redis-history.ts for history channels, PUBLISH_ONCE here for
 * plain ones), on the embedded broker in the same synchronous step. So a
 * repeat is never "in progress" at the same time as its first publish: on
 * Redis the scripts of one key run one after the other (one slot, one
 * master), and a repeat sent on the same connection as a first whose reply is
 * late queues behind it and reads its answer; in one process the check and
 * the record happen before any await.
 */

/** An idempotency key and how long it is remembered. */
export interface Idempotency {
  readonly key: string;
  readonly ttlSec: number;
}

/** 1 to 128 printable ASCII characters (space to tilde). */
const KEY_RE = /^[\x20-\x7e]{1,128}$/;

export function isValidIdempotencyKey(v: unknown): v is string {
  return typeof v === 'string' && KEY_RE.test(v);
}

/**
 * The Redis key remembering `key` for a channel. The Redis channel name sits
 * in braces: it is the hash tag on a cluster (the key lives in the slot of the
 * shard channel the script SPUBLISHes to, like the history keys), and, since
 * channel names and the prefix contain no braces, it also keeps the channel
 * and the key apart unambiguously on a standalone Redis.
 */
export function idempotencyRedisKey(prefix: string, redisChannel: string, key: string): string {
  return `${prefix}i:{${redisChannel}}${key}`;
}

// KEYS: the idempotency key. ARGV: redis channel, frame, ttl. Publishes unless
// the key is there; returns 1 when it published, 0 for a repeat.
export const publishOnceScript = (publishCommand: 'PUBLISH' | 'SPUBLISH'): string => `
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('${publishCommand}', ARGV[1], ARGV[2])
  return 1
end
return 0
`;

/**
 * The embedded broker's memory of keys: per channel and key, the first
 * answer, until it expires. Bounded: past `maxKeys` the oldest key is
 * forgotten early (keys share one ttl, so insertion order is expiry order).
 */
export interface IdempotencyMemo {
  /** The remembered answer, or undefined (and nothing remembered) when the key is new or expired. */
  get(channel: string, key: string): string | undefined;
  set(channel: string, key: string, answer: string, ttlSec: number): void;
  readonly size: number;
}

export function createIdempotencyMemo(maxKeys = 100_000, nowMs: () => number = Date.now): IdempotencyMemo {
  const entries = new Map<string, { answer: string; expiresAtMs: number }>();
  // Channel names never contain a newline, so this joins channel and key unambiguously.
  const id = (channel: string, key: string): string => `${channel}\n${key}`;
  function sweep(now: number): void {
    // Oldest first; stop at the first live one (bounded by what expired).
    for (const [k, e] of entries) {
      if (e.expiresAtMs > now) break;
      entries.delete(k);
    }
  }
  return {
    get(channel, key) {
      const now = nowMs();
      sweep(now);
      const e = entries.get(id(channel, key));
      return e && e.expiresAtMs > now ? e.answer : undefined;
    },
    set(channel, key, answer, ttlSec) {
      const k = id(channel, key);
      entries.delete(k);
      entries.set(k, { answer, expiresAtMs: nowMs() + ttlSec * 1000 });
      while (entries.size > maxKeys) {
        const oldest = entries.keys().next();
        if (oldest.done === true) break;
        entries.delete(oldest.value);
      }
    },
    get size() {
      return entries.size;
    },
  };
}
