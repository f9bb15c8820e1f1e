/**
 * The webhook queue in Redis (semantics: webhooks/queue.ts). It survives any
 * node's death: the events, the index and the claims live in Redis, and a
 * claim is a lease (a due time in the future), so a claimer that dies lets
 * the channel become due again and another node sends the same head.
 *
 * Keys:
 *
 *   <prefix>wq:{<redis channel>}  LIST  a channel's outbox, event texts oldest
 *                                       first (webhookOutboxKey; in the slot of
 *                                       the channel: producers RPUSH to it in
 *                                       the script of the change)
 *   <prefix>whd:{<prefix>wh}      ZSET  due: channel → when it may be tried
 *                                       next (ms, Redis time); a claim moves
 *                                       it to the lease's end
 *   <prefix>wha:{<prefix>wh}      ZSET  age: channel → queue time of its oldest
 *                                       event (time_ms of the head; a hint
 *                                       kept close, used to pick what to drop)
 *   <prefix>whf:{<prefix>wh}      HASH  channel → "attempts:firstFailMs"
 *   <prefix>whg:{<prefix>wh}      HASH  channel → generation of its last mark
 *                                       (from the field " seq", a counter;
 *                                       channel names have no spaces), see release
 *   <prefix>whn:{<prefix>wh}      STRING  events queued (the size counter)
 *
 * The index keys share the hash tag `{<prefix>wh}`: one slot, so each index
 * step is one script. An outbox is in its channel's slot, so every operation
 * touching both is two or three scripts, ordered as argued at `release`.
 *
 * Clocks: every time is Redis time (TIME in the script), never a node's.
 *
 * Expiry: every key touched is given `ttlMs` (PEXPIRE) again: the index keys
 * on every index step (a claim tick keeps them while any node delivers), an
 * outbox on every peek, take or drop that leaves events in it (and by its
 * producers on every RPUSH). So an outbox lives while deliveries are tried on
 * it (`ttlMs` must exceed the longest pause between two tries: the backoff's
 * max plus a lease; the lead passes the retry window plus a margin), and
 * anything abandoned (no node left delivering) expires after `ttlMs`.
 *
 * The size counter is approximate: a producer that dies between RPUSH and
 * mark leaves events uncounted (a sweep's later mark indexes the channel but
 * counts only its own events); an outbox that expired leaves its count; two
 * marks past the bound at once may both drop. It never goes below 0, and a
 * counter past the bound with no channel left in `age` is reset to 0.
 */
import { eventHead } from '../webhooks/events.js';
import type { DroppedCounts, FailResult, RetryPolicy, WebhookQueue } from '../webhooks/queue.js';
import type { ScriptRunner } from './redis-history.js';

export interface RedisWebhookQueueOptions {
  /** Key prefix (no braces: the index's hash tag is built from it). */
  readonly prefix: string;
  /** A channel's outbox key (webhookOutboxKey(prefix, redisChannel(channel))). */
  readonly outboxKey: (channel: string) => string;
  readonly run: ScriptRunner;
  /** Events queued at most (PUBGATE_WEBHOOK_MAX_QUEUE). */
  readonly maxEvents: number;
  /** Expiry of every key after its last touch (ms): at least the retry window plus the longest backoff. */
  readonly ttlMs: number;
}

/** Events one drop step takes at most (a larger excess takes more steps). */
const DROP_STEP = 500;
/** Drop steps one mark takes at most (each drops at least one event, or corrects a stale age hint). */
const DROP_ROUNDS = 64;

/** The index keys (one hash tag, one slot). */
export function webhookIndexKeys(prefix: string): string[] {
  const tag = `{${prefix}wh}`;
  return ['whd', 'wha', 'whf', 'whg', 'whn'].map((k) => `${prefix}${k}:${tag}`);
}

// Index scripts. KEYS: due, age, fails, gens, size. ARGV[1]: ttl ms.
const INDEX = `
local D, A, F, G, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local TTL = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function touch()
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], TTL) end
end
local function gen(ch)
  return redis.call('HGET', G, ch) or '0'
end
-- {excess, channel, its generation, the next channel's age ('' for none)}: what the bound asks to drop.
local function over(max)
  local size = tonumber(redis.call('GET', N) or '0')
  if size <= max then return {0} end
  local r = redis.call('ZRANGE', A, 0, 1, 'WITHSCORES')
  if #r == 0 then
    redis.call('SET', N, 0, 'PX', TTL)
    return {0}
  end
  return {size - max, r[1], gen(r[1]), r[4] or ''}
end
local function decr(n)
  if n > 0 and redis.call('DECRBY', N, n) < 0 then redis.call('SET', N, 0, 'PX', TTL) end
end
`;

// ARGV: ttl, channel, count, oldest ms, max events. Returns over().
const MARK = `${INDEX}
local ch = ARGV[2]
redis.call('HSET', G, ch, redis.call('HINCRBY', G, ' seq', 1))
redis.call('ZADD', D, 'NX', NOW, ch)
redis.call('ZADD', A, 'LT', ARGV[4], ch)
redis.call('INCRBY', N, ARGV[3])
touch()
return over(tonumber(ARGV[5]))
`;

// ARGV: ttl, max channels, lease ms. Returns the claimed channels, oldest due first.
const CLAIM = `${INDEX}
local chs = redis.call('ZRANGEBYSCORE', D, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[2]))
local until_ms = NOW + tonumber(ARGV[3])
for _, ch in ipairs(chs) do redis.call('ZADD', D, 'XX', until_ms, ch) end
touch()
return chs
`;

// ARGV: ttl, channel. The first step of an ack: resets the attempts, answers the generation.
const BEGIN_ACK = `${INDEX}
redis.call('HDEL', F, ARGV[2])
touch()
return gen(ARGV[2])
`;

// ARGV: ttl, channel, base ms, max ms, window ms.
// Returns {attempts, expired (1/0), delay ms, generation}.
const FAIL = `${INDEX}
local ch = ARGV[2]
local rec = redis.call('HGET', F, ch)
local attempts, first = 0, NOW
if rec then
  local colon = string.find(rec, ':', 1, true)
  attempts = tonumber(string.sub(rec, 1, colon - 1))
  first = tonumber(string.sub(rec, colon + 1))
end
attempts = attempts + 1
if NOW - first >= tonumber(ARGV[5]) then
  redis.call('HDEL', F, ch)
  touch()
  return {attempts, 1, 0, gen(ch)}
end
local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * math.pow(2, math.min(attempts - 1, 40)))
delay = math.floor(delay)
redis.call('HSET', F, ch, attempts .. ':' .. first)
redis.call('ZADD', D, NOW + delay, ch)
touch()
return {attempts, 0, delay, '0'}
`;

// ARGV: ttl, channel, generation read before the outbox step, events removed, outbox length, head time (-1: none).
// The last step of an ack or an expiry (see release).
const RELEASE = `${INDEX}
local ch, len = ARGV[2], tonumber(ARGV[5])
decr(tonumber(ARGV[4]))
if len > 0 or gen(ch) ~= ARGV[3] then
  redis.call('ZADD', D, NOW, ch)
  if len > 0 then redis.call('ZADD', A, ARGV[6], ch) end
else
  redis.call('ZREM', D, ch)
  redis.call('ZREM', A, ch)
  redis.call('HDEL', F, ch)
  redis.call('HDEL', G, ch)
end
touch()
return 1
`;

// ARGV: ttl, channel, generation (from over()), events dropped, outbox length, head time (-1: none), max events.
// Returns over() for the next drop step. Never touches due (see dropOldest).
const DROPPED = `${INDEX}
local ch, len = ARGV[2], tonumber(ARGV[5])
decr(tonumber(ARGV[4]))
if len > 0 then
  redis.call('ZADD', A, ARGV[6], ch)
elseif gen(ch) == ARGV[3] then
  redis.call('ZREM', A, ch)
end
touch()
return over(tonumber(ARGV[7]))
`;

// Outbox scripts. KEYS[1]: the outbox. ARGV[1]: ttl ms.
const OUTBOX = `
local Q, TTL = KEYS[1], ARGV[1]
local function id_of(text)
  local e = string.find(text, '"', 8, true)
  if not e then return '' end
  return string.sub(text, 8, e - 1)
end
local function time_of(text)
  return tonumber(string.match(text, ',"time_ms":(%d+)}$') or '0')
end
-- {length, head time or -1}; refreshes the expiry of an outbox with events.
local function rest()
  local len = redis.call('LLEN', Q)
  if len == 0 then return len, -1 end
  redis.call('PEXPIRE', Q, TTL)
  return len, time_of(redis.call('LINDEX', Q, 0))
end
`;

// ARGV: ttl, max. The first max events.
const PEEK = `${OUTBOX}
local out = redis.call('LRANGE', Q, 0, tonumber(ARGV[2]) - 1)
if #out > 0 then redis.call('PEXPIRE', Q, TTL) end
return out
`;

// ARGV: ttl, ids... Removes those of ids still at the head, in order (ids a
// drop took meanwhile are skipped: they are a prefix of ids). Returns {removed, length, head time}.
const TAKE = `${OUTBOX}
local removed = 0
for i = 2, #ARGV do
  local h = redis.call('LINDEX', Q, 0)
  if not h then break end
  if id_of(h) == ARGV[i] then
    redis.call('LPOP', Q)
    removed = removed + 1
  end
end
local len, head = rest()
return {removed, len, head}
`;

// ARGV: ttl, max, limit ('' for none). Drops head events, at most max, while
// their queue time is not past limit (the next channel's age); drops none when
// the first is past it (the age hint was stale; the caller corrects it).
// Returns {length, head time, dropped texts...}.
const DROP = `${OUTBOX}
local max, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
while #out < max do
  local h = redis.call('LINDEX', Q, 0)
  if not h then break end
  if limit and time_of(h) > limit then break end
  redis.call('LPOP', Q)
  out[#out + 1] = h
end
local len, head = rest()
local reply = {len, head}
for i = 1, #out do reply[#reply + 1] = out[i] end
return reply
`;

type Over = [number, string, string, string] | [number];

export function createRedisWebhookQueue(opts: RedisWebhookQueueOptions): WebhookQueue {
  if (/[{}]/.test(opts.prefix)) throw new TypeError('the key prefix must not contain braces');
  if (!Number.isInteger(opts.maxEvents) || opts.maxEvents < 1) throw new RangeError('maxEvents must be a positive integer');
  if (!(opts.ttlMs >= 1000)) throw new RangeError('ttlMs must be at least 1000');
  const keys = webhookIndexKeys(opts.prefix);
  const ttl = String(Math.ceil(opts.ttlMs));
  const max = String(opts.maxEvents);
  const index = (lua: string, ...args: string[]): Promise<unknown> => opts.run(lua, keys, [ttl, ...args]);
  const outbox = (lua: string, channel: string, ...args: string[]): Promise<unknown> => opts.run(lua, [opts.outboxKey(channel)], [ttl, ...args]);

  /**
   * The end of an ack or an expiry: takes `ids` off the head of the outbox,
   * then puts the channel back in the index when events remain, else out of it.
   *
   * Order (gen0 was read from the index before this, still under our claim):
   *   1. outbox: remove the ids, read the length L (atomically);
   *   2. index: L > 0, or the channel's generation is no longer gen0 → due
   *      now; else remove it from the index.
   * A concurrent producer RPUSHes, then marks (bumps the generation, ZADD NX due).
   * - RPUSH before 1: step 1 sees L > 0 → due.
   * - RPUSH after 1, its mark before 2: the generation changed → due.
   * - RPUSH after 1, its mark after 2: step 2 removed the channel or left it
   *   due; either way its ZADD NX leaves it due.
   * So no interleaving leaves queued events out of the index. The channel also
   * stays in the index (due at our lease's end) until step 2: a node dying
   * anywhere in between loses nothing, the lease runs out and another node
   * sends the head again. Generations come from one counter, so a value is
   * never reused (no ABA after a removal).
   */
  async function release(channel: string, gen0: string, ids: readonly string[]): Promise<void> {
    const r = (await outbox(TAKE, channel, ...ids)) as [number, number, number];
    await index(RELEASE, channel, gen0, String(r[0]), String(r[1]), String(r[2]));
  }

  /**
   * Drops the oldest events until the bound holds (at most DROP_ROUNDS steps).
   * The channel with the oldest age loses its head events up to the next
   * channel's age, then the index is corrected (size, age; a channel left
   * empty leaves `age` unless a mark came meanwhile, by the same generation
   * argument as release). `due` is left alone: a claimed channel stays claimed
   * (its claimer's ack skips the ids dropped meanwhile and releases it), an
   * unclaimed empty one is claimed once more, found empty and released.
   */
  async function dropOldest(first: Over): Promise<DroppedCounts> {
    const dropped: DroppedCounts = {};
    let o = first;
    for (let round = 0; round < DROP_ROUNDS && o.length === 4 && Number(o[0]) > 0; round++) {
      const [excess, channel, gen, limit] = o;
      const r = (await outbox(DROP, channel, String(Math.min(Number(excess), DROP_STEP)), limit)) as [number, number, ...string[]];
      const texts = r.slice(2) as string[];
      for (const t of texts) {
        const name = eventHead(t)?.name;
        if (name) dropped[name] = (dropped[name] ?? 0) + 1;
      }
      o = (await index(DROPPED, channel, gen, String(texts.length), String(r[0]), String(r[1]), max)) as Over;
    }
    return dropped;
  }

  return {
    async mark(channel, count, oldestMs) {
      const o = (await index(MARK, channel, String(Math.max(0, Math.floor(count))), String(Math.floor(oldestMs)), max)) as Over;
      return dropOldest(o);
    },
    async claim(maxChannels, leaseMs) {
      if (maxChannels < 1) return [];
      return (await index(CLAIM, String(Math.floor(maxChannels)), String(Math.max(1, Math.ceil(leaseMs))))) as string[];
    },
    async peek(channel, maxEvents) {
      if (maxEvents < 1) return [];
      return (await outbox(PEEK, channel, String(Math.floor(maxEvents)))) as string[];
    },
    async ack(channel, ids) {
      const gen0 = String(await index(BEGIN_ACK, channel));
      await release(channel, gen0, ids);
    },
    async fail(channel, ids, policy: RetryPolicy): Promise<FailResult> {
      const r = (await index(FAIL, channel, String(policy.baseMs), String(policy.maxMs), String(policy.windowMs))) as [number, number, number, string];
      const attempts = Number(r[0]);
      if (Number(r[1]) !== 1) return { attempts, expired: false, delayMs: Number(r[2]) };
      await release(channel, String(r[3]), ids);
      return { attempts, expired: true, delayMs: 0 };
    },
    async size() {
      const r = await opts.run(`return redis.call('GET', KEYS[1]) or '0'`, [keys[4] as string], []);
      return Math.max(0, Number(r));
    },
  };
}
