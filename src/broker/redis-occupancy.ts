/**
 * Occupancy and node liveness in Redis (occupancy/store.ts).
 *
 * Keys of a channel, in the slot of its Redis channel (like presence):
 *   oc:{<redis channel>}   SET   members (node generations) holding the channel
 *   wq:{<redis channel>}   LIST  the channel's webhook outbox: occupied/vacated
 *                                are appended in the same step as the change
 *
 * Liveness keys, one hash tag of their own (one slot on a Cluster):
 *   lv:live:{<prefix>lv}   ZSET  member → entry expiry (ms, Redis time)
 *   lv:sweep:{<prefix>lv}  ZSET  member being swept → claim expiry
 *   lv:epoch:{<prefix>lv}  STRING a random name made when the keys start
 * and per member, anywhere:
 *   lv:held:<member>       SET   channels the member holds (written before taking them)
 *
 * No key here expires by time: a dead member's keys are removed by its sweep,
 * which every node runs, and a node that stops cleanly removes its own. (A
 * TTL would let a long-held channel's set vanish while held, and the next
 * change would then report a transition that did not happen.)
 */
import { LUA_ENCODE_EVENT, newEventBase } from '../webhooks/events.js';
import { webhookOutboxKey } from '../webhooks/queue.js';
import type { EventSink } from '../webhooks/sink.js';
import type { DeadMember, Liveness, OccupancyStore, RenewResult } from '../occupancy/store.js';
import { newEpoch } from './history.js';
import type { ScriptRunner } from './redis-history.js';

// KEYS: oc, wq. ARGV: channel, member, op ('add' | 'restore' | 'remove'), event id base ('' = no events), outbox ttl ms.
// Returns {events appended, Redis time ms}.
const OCCUPANCY = `
local OC, WQ = KEYS[1], KEYS[2]
local CH, M, OP, EVB, WQTTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local EVN = 0
${LUA_ENCODE_EVENT}
local function wh(name)
  if EVB == '' then return end
  EVN = EVN + 1
  redis.call('RPUSH', WQ, wh_encode(EVB .. '.' .. EVN, name, CH, nil, NOW))
  redis.call('PEXPIRE', WQ, WQTTL)
end
if OP == 'remove' then
  if redis.call('SREM', OC, M) == 1 and redis.call('SCARD', OC) == 0 then wh('channel_vacated') end
else
  if redis.call('SADD', OC, M) == 1 and redis.call('SCARD', OC) == 1 and OP == 'add' then wh('channel_occupied') end
end
return {EVN, NOW}
`;

// KEYS: live, sweep, epoch. ARGV[1]: op; then per op (see below).
const LIVENESS = `
local LIVE, SWEEP, EPOCH = KEYS[1], KEYS[2], KEYS[3]
local OP = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if OP == 'renew' then
  -- ARGV: member, ttl ms, epoch candidate. Returns {added (1/0), epoch}.
  local e = redis.call('GET', EPOCH)
  if not e then
    e = ARGV[4]
    redis.call('SET', EPOCH, e)
  end
  local added = redis.call('ZADD', LIVE, NOW + tonumber(ARGV[3]), ARGV[2])
  return {added, e}
elseif OP == 'leave' then
  redis.call('ZREM', LIVE, ARGV[2])
  return 1
elseif OP == 'claim' then
  -- ARGV: claim ms. Returns {member, base alive (1/0)} or {}.
  local m = redis.call('ZRANGEBYSCORE', LIVE, '-inf', NOW, 'LIMIT', 0, 1)[1]
  if m then
    redis.call('ZREM', LIVE, m)
  else
    m = redis.call('ZRANGEBYSCORE', SWEEP, '-inf', NOW, 'LIMIT', 0, 1)[1]
  end
  if not m then return {} end
  redis.call('ZADD', SWEEP, NOW + tonumber(ARGV[2]), m)
  local base = string.match(m, '^(.*)#[^#]*$') or m
  local alive = 0
  -- Only entries that have not run out: another generation that is dead too
  -- (not yet claimed) keeps nothing alive.
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', LIVE, '(' .. NOW, '+inf', 'LIMIT', 0, 1024)) do
    if string.sub(other, 1, string.len(base) + 1) == base .. '#' then alive = 1 end
  end
  return {m, alive}
elseif OP == 'extend' then
  redis.call('ZADD', SWEEP, 'XX', NOW + tonumber(ARGV[3]), ARGV[2])
  return 1
elseif OP == 'done' then
  redis.call('ZREM', SWEEP, ARGV[2])
  return 1
end
return redis.error_reply('unknown liveness op')
`;

// KEYS: a member's held set. ARGV: op, then channels (hold/unhold) or cursor, count (scan).
const HELD = `
local OP = ARGV[1]
if OP == 'hold' then
  for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
  return 1
elseif OP == 'unhold' then
  for i = 2, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end
  return 1
elseif OP == 'scan' then
  return redis.call('SSCAN', KEYS[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
elseif OP == 'del' then
  redis.call('DEL', KEYS[1])
  return 1
end
return redis.error_reply('unknown held op')
`;

export interface RedisOccupancyOptions {
  readonly prefix: string;
  readonly redisChannel: (channel: string) => string;
  readonly run: ScriptRunner;
  /** Webhooks on: occupied/vacated go to the channel's outbox (reported to the sink). Without, the store only keeps the sets. */
  readonly webhooks?: { readonly sink: EventSink; readonly outboxTtlMs: number };
}

export function createRedisOccupancy(opts: RedisOccupancyOptions): OccupancyStore {
  const wh = opts.webhooks;
  async function call(channel: string, member: string, op: 'add' | 'restore' | 'remove'): Promise<void> {
    const rc = opts.redisChannel(channel);
    const r = (await opts.run(OCCUPANCY, [`${opts.prefix}oc:{${rc}}`, webhookOutboxKey(opts.prefix, rc)], [
      channel,
      member,
      op,
      wh ? newEventBase() : '',
      String(wh?.outboxTtlMs ?? 0),
    ])) as unknown[];
    const events = Number(r[0]);
    if (wh && events > 0) wh.sink.appended(channel, events, Number(r[1]));
  }
  return {
    add: (channel, member, silent) => call(channel, member, silent ? 'restore' : 'add'),
    remove: (channel, member) => call(channel, member, 'remove'),
  };
}

export function createRedisLiveness(opts: { readonly prefix: string; readonly run: ScriptRunner }): Liveness {
  const tag = `{${opts.prefix}lv}`;
  const keys = [`${opts.prefix}lv:live:${tag}`, `${opts.prefix}lv:sweep:${tag}`, `${opts.prefix}lv:epoch:${tag}`];
  const heldKey = (member: string): string => `${opts.prefix}lv:held:${member}`;
  const live = (args: string[]): Promise<unknown> => opts.run(LIVENESS, keys, args);
  const held = (member: string, args: string[]): Promise<unknown> => opts.run(HELD, [heldKey(member)], args);
  return {
    async renew(member, ttlMs): Promise<RenewResult> {
      const r = (await live(['renew', member, String(Math.round(ttlMs)), newEpoch()])) as unknown[];
      return { added: Number(r[0]) === 1, epoch: String(r[1]) };
    },
    async leave(member) {
      await live(['leave', member]);
      await held(member, ['del']);
    },
    async hold(member, channels) {
      if (channels.length > 0) await held(member, ['hold', ...channels]);
    },
    async unhold(member, channels) {
      if (channels.length > 0) await held(member, ['unhold', ...channels]);
    },
    async claimDead(claimMs): Promise<DeadMember | undefined> {
      const r = (await live(['claim', String(Math.round(claimMs))])) as unknown[];
      if (r.length < 2) return undefined;
      return { member: String(r[0]), baseAlive: Number(r[1]) === 1 };
    },
    async extend(member, claimMs) {
      await live(['extend', member, String(Math.round(claimMs))]);
    },
    async held(member, cursor, count) {
      const r = (await held(member, ['scan', cursor, String(count)])) as [string, string[]];
      return { cursor: String(r[0]), channels: (r[1] ?? []).map(String) };
    },
    async done(member) {
      await held(member, ['del']);
      await live(['done', member]);
    },
  };
}
