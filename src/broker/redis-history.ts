/**
 * History in Redis: per channel a position hash (fields `e`, the epoch, and
 * `o`, the last offset) and a stream of the last `size` frames, both expiring
 * `ttlSec` after the last publish. Epoch and offset share one key so that
 * memory eviction (or a partial restore) can never keep one without the other:
 * an offset counter that survived its epoch would number a new epoch's
 * messages from the old count, and an epoch that survived its counter would
 * give offsets from 1 again in the same epoch, which a client takes for
 * messages it already has. One Lua
 * script appends and PUBLISHes (SPUBLISHes on a cluster), so offsets are
 * gap-free in delivery order and a message is never in history without having
 * been published (or the reverse).
 *
 * On a Redis Cluster one script may only touch one slot: a channel's
 * keys (and its idempotency keys, see idempotency.ts) carry its Redis channel name as their hash tag
 * (`pubgate:hp:{pubgate:ch:news}`), so they hash to the slot of the shard
 * channel the script SPUBLISHes to (`pubgate:ch:news`, no tag), and the script
 * runs on the master that owns that slot, where the node holds its SSUBSCRIBE.
 * Channel names and the prefix contain no braces, so the tag is always the
 * whole Redis channel name. Standalone keeps the untagged names
 * (`pubgate:hp:news`).
 *
 * Versions before 0.2 kept the offset and the epoch under two keys
 * (`pubgate:o:…`, `pubgate:e:…`). They are not read: after the upgrade each
 * history channel starts a new epoch (its old stream is cleared with it), as
 * after any loss of history, and the old keys expire on their own.
 *
 * The epoch changes whenever the history is lost: when the keys expired, were
 * flushed, or Redis restarted without its data, the next publish (or position
 * read) finds no epoch and starts a new one, with offsets from 1. A Redis that
 * restarts with its data keeps the epoch.
 */
import { encodeMessage } from '../protocol/frames.js';
import { newEpoch, type History, type HistoryOptions, type HistoryPosition } from './history.js';
import { idempotencyRedisKey } from './idempotency.js';

/** Runs a Lua script on the publishing connection, through the broker's readiness and timeout guard. */
export type ScriptRunner = (lua: string, keys: readonly string[], args: readonly string[]) => Promise<unknown>;

// KEYS: position hash (e: epoch, o: offset), stream. Creates the epoch when
// missing, with offset 0 (and clears anything left of an older one). Returns the epoch.
const ENSURE_EPOCH = `
local function ensure_epoch(candidate, ttl)
  local epoch = redis.call('HGET', KEYS[1], 'e')
  if not epoch then
    epoch = candidate
    redis.call('DEL', KEYS[1], KEYS[2])
    redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
    redis.call('EXPIRE', KEYS[1], ttl)
  end
  return epoch
end
`;

// ARGV: redis channel, frame head ('{"type":"message","channel":"x"'), data, epoch candidate, size, ttl,
// idempotency ttl ('' without a key), envelope ('' or a prefix published before the frame, never stored)
// KEYS[3], when given, is the publish's idempotency key: remembered with the
// answer ("offset epoch") in this same step, and a key already there makes
// the script publish nothing and return that answer. Returns {offset, epoch, repeat(0/1)}.
const publishScript = (publishCommand: 'PUBLISH' | 'SPUBLISH'): string => `${ENSURE_EPOCH}
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sp = string.find(seen, ' ', 1, true)
    return {tonumber(string.sub(seen, 1, sp - 1)), string.sub(seen, sp + 1), 1}
  end
end
local epoch = ensure_epoch(ARGV[4], ARGV[6])
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local frame = ARGV[2] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '","data":' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0', 'f', frame)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('${publishCommand}', ARGV[1], ARGV[8] .. frame)
if KEYS[3] then redis.call('SET', KEYS[3], offset .. ' ' .. epoch, 'EX', ARGV[7]) end
return {offset, epoch, 0}
`;

// ARGV: epoch candidate, ttl
const POSITION = `${ENSURE_EPOCH}
local epoch = ensure_epoch(ARGV[1], ARGV[2])
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
return {offset, epoch}
`;

// ARGV: epoch candidate, ttl, since offset, page size. Returns {offset, epoch, complete(0/1), frames...}.
const SINCE = `${ENSURE_EPOCH}
local epoch = ensure_epoch(ARGV[1], ARGV[2])
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local since = tonumber(ARGV[3])
if since == offset then return {offset, epoch, 1} end
if since > offset then return {offset, epoch, 0} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 or tonumber(string.match(first[1][1], '^(%d+)')) > since + 1 then return {offset, epoch, 0} end
local out = {offset, epoch, 1}
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[4])
for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
return out
`;

export interface RedisHistoryOptions extends HistoryOptions {
  /** Prefix of every key; must not contain braces when `sharded`. */
  readonly prefix: string;
  /** The Redis channel a pubgate channel's messages are published on (the broker's naming). */
  readonly redisChannel: (channel: string) => string;
  /** Redis Cluster: SPUBLISH, and keys hash-tagged into the slot of the shard channel. */
  readonly sharded: boolean;
  readonly run: ScriptRunner;
}

/** A channel's keys: position hash (epoch and offset), stream (same slot as `redisChannel` when sharded). */
export function historyKeys(prefix: string, channel: string, redisChannel: string, sharded: boolean): [string, string] {
  const id = sharded ? `{${redisChannel}}` : channel;
  return [`${prefix}hp:${id}`, `${prefix}h:${id}`];
}

export function createRedisHistory(opts: RedisHistoryOptions): History {
  const keys = (channel: string): string[] => historyKeys(opts.prefix, channel, opts.redisChannel(channel), opts.sharded);
  const PUBLISH = publishScript(opts.sharded ? 'SPUBLISH' : 'PUBLISH');

  function position(reply: unknown): HistoryPosition {
    const r = reply as [number | string, string];
    return { offset: Number(r[0]), epoch: String(r[1]) };
  }

  return {
    async publish(channel, rawData, o = opts, idem, envelope = '') {
      // The frame head is built here once, so the script only appends offset, epoch and data.
      const head = encodeMessage(channel, '').slice(0, -',"data":}'.length);
      const rc = opts.redisChannel(channel);
      const k = keys(channel);
      const args = [rc, head, rawData, newEpoch(), String(o.size), String(o.ttlSec), idem ? String(idem.ttlSec) : '', envelope];
      if (idem) k.push(idempotencyRedisKey(opts.prefix, rc, idem.key));
      const reply = await opts.run(PUBLISH, k, args);
      return { ...position(reply), repeat: Number((reply as unknown[])[2]) === 1 };
    },
    async position(channel, o = opts) {
      return position(await opts.run(POSITION, keys(channel), [newEpoch(), String(o.ttlSec)]));
    },
    async since(channel, offset, limit, o = opts) {
      const r = (await opts.run(SINCE, keys(channel), [newEpoch(), String(o.ttlSec), String(offset), String(Math.max(1, limit))])) as unknown[];
      const complete = Number(r[2]) === 1;
      return { position: position(r), frames: complete ? (r.slice(3) as string[]) : undefined };
    },
  };
}
