/**
 * Presence in Redis. Every call is one Lua script on the broker's publishing
 * connection, so each change, and the `join`/`leave` frame it causes, happen
 * in one atomic step: frames are (S)PUBLISHed on the channel's own Redis
 * channel in the order of the changes, exactly once per change.
 *
 * Keys of a channel (all carry the channel's Redis channel name as their hash
 * tag, `{pubgate:ch:chat:1}`, so on a Cluster they live in the slot of its
 * shard channel, and the script runs on the master that SPUBLISHes):
 *
 *   pe:{tag}        HASH  conn → record: seq(15 digits) len(user) ":" user info
 *   pu:{tag}        HASH  user → its connection count     (users = HLEN)
 *   po:{tag}        ZSET  (score 0) len(user) ":" user seq conn: a user's
 *                         connections in the order they came (oldest first)
 *   pn:{tag}        ZSET  node → lease expiry (ms, Redis time)
 *   ps:{tag}        HASH  n: the channel's entry sequence; e: its epoch, a
 *                         random name made when the channel's presence starts
 *                         (so a node tells a store that lost everything from
 *                         one that swept only its own lease)
 *   pk:{tag}:<node> SET   the node's connections in the channel
 *   wq:{tag}        LIST  the channel's webhook outbox (webhooks/queue.ts): with
 *                         webhooks on, member_added/member_removed are appended
 *                         in the same step as the change (queue.mark follows)
 *
 * `user` is stored as its JSON text, so frames are built by concatenation.
 * Connections = HLEN pe, users = HLEN pu: O(1) counts, never by listing.
 *
 * Leases: a node renews its lease on each of its presence channels every tick
 * (presence/presence.ts); any call on a channel first sweeps the leases that
 * expired there (a killed node's), removing their entries and publishing
 * `leave` for users left without a connection. Every key expires
 * `keysTtlMs` after the last write, so a channel whose nodes all died leaves
 * nothing behind.
 */
import type { PresenceCall, PresenceEntry, PresenceMember, PresenceStore, Swept } from '../presence/store.js';
import { LUA_ENCODE_EVENT, newEventBase } from '../webhooks/events.js';
import { webhookOutboxKey } from '../webhooks/queue.js';
import type { EventSink } from '../webhooks/sink.js';
import { newEpoch } from './history.js';
import type { ScriptRunner } from './redis-history.js';

/** Entries a sweep removes per call at most (a dead node's rest goes in the next calls). */
export const SWEEP_BUDGET = 2000;

// KEYS: pe pu po pn ps pk(own) wq (the channel's webhook outbox).
// ARGV[1..9]: redis channel, channel, node, lease ms, joinLeave (1/0), keys ttl ms, epoch candidate,
// webhook event id base ('' when webhooks are off), outbox ttl ms. The operation's own arguments start at ARGV[10].
// Every script answers {leases swept, entries swept, webhook events appended, Redis time ms, ...}.
const COMMON = (publishCommand: 'PUBLISH' | 'SPUBLISH'): string => `
local PE, PU, PO, PN, PS, PK, WQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local RCH, CH, NODE, LEASE, JL, KTTL = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]
local EVB, WQTTL, EVN = ARGV[8], ARGV[9], 0
${LUA_ENCODE_EVENT}
local EPOCH = redis.call('HGET', PS, 'e') or ''
-- Writes that keep the channel (add, renew, resync) make the epoch when there is none.
local function ensure_epoch()
  if EPOCH == '' then
    EPOCH = ARGV[7]
    redis.call('HSET', PS, 'e', EPOCH)
  end
end
local PKBASE = string.sub(PK, 1, string.len(PK) - string.len(NODE))
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A webhook event, in the same step as the change that caused it (user: its JSON text).
local function wh(name, user)
  if EVB == '' then return end
  EVN = EVN + 1
  redis.call('RPUSH', WQ, wh_encode(EVB .. '.' .. EVN, name, CH, user, NOW))
  redis.call('PEXPIRE', WQ, WQTTL)
end

local function parse(rec)
  local colon = string.find(rec, ':', 16, true)
  local ulen = tonumber(string.sub(rec, 16, colon - 1))
  return string.sub(rec, 1, 15), string.sub(rec, colon + 1, colon + ulen), string.sub(rec, colon + ulen + 1)
end

local function drop(c)
  local rec = redis.call('HGET', PE, c)
  if not rec then return false end
  redis.call('HDEL', PE, c)
  local seq, user = parse(rec)
  redis.call('ZREM', PO, string.len(user) .. ':' .. user .. seq .. c)
  if redis.call('HINCRBY', PU, user, -1) <= 0 then
    redis.call('HDEL', PU, user)
    if JL then redis.call('${publishCommand}', RCH, '{"type":"leave","channel":"' .. CH .. '","user":' .. user .. '}') end
    wh('member_removed', user)
  end
  return true
end

local function sweep()
  local dead = redis.call('ZRANGEBYSCORE', PN, '-inf', NOW, 'LIMIT', 0, 16)
  local leases, entries, budget = 0, 0, ${SWEEP_BUDGET}
  for _, node in ipairs(dead) do
    if budget <= 0 then break end
    local set = PKBASE .. node
    local conns = redis.call('SPOP', set, budget)
    for _, c in ipairs(conns) do
      if drop(c) then entries = entries + 1 end
    end
    budget = budget - #conns
    if redis.call('SCARD', set) == 0 then
      redis.call('ZREM', PN, node)
      leases = leases + 1
    end
  end
  return leases, entries
end

-- seq: the entry's order key from an earlier add ('' for a new entry); silent: no join (a restore).
-- Returns the entry's order key.
local function add(c, user, info, given, silent)
  local rec = redis.call('HGET', PE, c)
  if rec then
    redis.call('SADD', PK, c)
    return tonumber(string.sub(rec, 1, 15))
  end
  local n
  if given ~= '' then
    n = tonumber(given)
    if tonumber(redis.call('HGET', PS, 'n') or '0') < n then redis.call('HSET', PS, 'n', n) end
  else
    n = redis.call('HINCRBY', PS, 'n', 1)
  end
  local seq = string.format('%015d', n)
  local ulen = string.len(user)
  redis.call('HSET', PE, c, seq .. ulen .. ':' .. user .. info)
  redis.call('ZADD', PO, 0, ulen .. ':' .. user .. seq .. c)
  redis.call('SADD', PK, c)
  if redis.call('HINCRBY', PU, user, 1) == 1 and not silent then
    if JL then
      local i = ''
      if info ~= '' then i = ',"info":' .. info end
      redis.call('${publishCommand}', RCH, '{"type":"join","channel":"' .. CH .. '","user":' .. user .. i .. '}')
    end
    wh('member_added', user)
  end
  return n
end

local function renew()
  return redis.call('ZADD', PN, NOW + LEASE, NODE) == 1
end

local function touch()
  for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], KTTL) end
  -- Every lease holder's set lives as long as the channel: a dead node's set
  -- must still be there when its lease is swept (else its entries stay for good).
  for _, n in ipairs(redis.call('ZRANGE', PN, 0, -1)) do redis.call('PEXPIRE', PKBASE .. n, KTTL) end
end
`;

// ARGV[10]: silent (1/0); ARGV[11..]: conn, user JSON, info ('' for none), order key ('' for new), repeated.
// Returns {leases, entries, events, now, epoch, order keys...}.
const ADD = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
ensure_epoch()
renew()
local out = {leases, entries, 0, NOW, EPOCH}
for i = 11, #ARGV, 4 do out[#out + 1] = add(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[10] == '1') end
touch()
out[3] = EVN
return out
`;

// ARGV[10]: release (1/0); ARGV[11..]: conns.
const REMOVE = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
for i = 11, #ARGV do
  if redis.call('SREM', PK, ARGV[i]) == 1 then drop(ARGV[i]) end
end
if ARGV[10] == '1' and redis.call('SCARD', PK) == 0 then
  redis.call('ZREM', PN, NODE)
end
return {leases, entries, EVN, NOW, EPOCH}
`;

const RENEW = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
ensure_epoch()
local lost = 0
if renew() then lost = 1 end
touch()
return {leases, entries, EVN, NOW, EPOCH, redis.call('SCARD', PK), lost}
`;

// ARGV[10..]: conns to keep.
const RESYNC = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
ensure_epoch()
renew()
local keep = {}
for i = 10, #ARGV do keep[ARGV[i]] = true end
for _, c in ipairs(redis.call('SMEMBERS', PK)) do
  if not keep[c] then
    redis.call('SREM', PK, c)
    drop(c)
  end
end
local out = {leases, entries, 0, NOW, EPOCH}
for i = 10, #ARGV do
  if redis.call('SISMEMBER', PK, ARGV[i]) == 0 or redis.call('HEXISTS', PE, ARGV[i]) == 0 then out[#out + 1] = ARGV[i] end
end
touch()
out[3] = EVN
return out
`;

// ARGV[10]: max members. Returns {leases, entries, events, now, users, connections, (user, conns, info)...}.
const PRESENCE = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
local max = tonumber(ARGV[10])
local out = {leases, entries, EVN, NOW, redis.call('HLEN', PU), redis.call('HLEN', PE)}
local seen, n, cursor = {}, 0, '0'
repeat
  local r = redis.call('HSCAN', PU, cursor, 'COUNT', 200)
  cursor = r[1]
  local kv = r[2]
  for i = 1, #kv, 2 do
    local user = kv[i]
    if n < max and not seen[user] then
      seen[user] = true
      n = n + 1
      local p = string.len(user) .. ':' .. user
      local info = ''
      local first = redis.call('ZRANGEBYLEX', PO, '[' .. p, '[' .. p .. '\\255', 'LIMIT', 0, 1)
      if first[1] then
        local rec = redis.call('HGET', PE, string.sub(first[1], string.len(p) + 16))
        if rec then
          local _, _, inf = parse(rec)
          info = inf
        end
      end
      out[#out + 1] = user
      out[#out + 1] = kv[i + 1]
      out[#out + 1] = info
    end
  end
until cursor == '0' or n >= max
return out
`;

const STATS = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
return {leases, entries, EVN, NOW, redis.call('HLEN', PU), redis.call('HLEN', PE)}
`;

// The calling node's set (PK) is the evicted node's: drops its entries (up to the
// sweep budget; `left` says how many remain) and, once none is left, its lease.
// Returns {leases, entries, events, now, removed, left}.
const EVICT = (cmd: 'PUBLISH' | 'SPUBLISH'): string => `${COMMON(cmd)}
local leases, entries = sweep()
local conns = redis.call('SPOP', PK, ${SWEEP_BUDGET})
local removed = 0
for _, c in ipairs(conns) do
  if drop(c) then removed = removed + 1 end
end
local left = redis.call('SCARD', PK)
if left == 0 then redis.call('ZREM', PN, NODE) end
return {leases, entries, EVN, NOW, removed, left}
`;

export interface RedisPresenceOptions {
  /** Prefix of every key (no braces on a Cluster). */
  readonly prefix: string;
  readonly redisChannel: (channel: string) => string;
  /** Redis Cluster: SPUBLISH. */
  readonly sharded: boolean;
  readonly run: ScriptRunner;
  /** Keys outlive the last write by this much (≥ the longest lease). */
  readonly keysTtlMs: number;
  /**
   * Webhooks on: member events go to the channel's outbox in the scripts'
   * own step, reported to the sink; outboxes live `outboxTtlMs` after an append.
   */
  readonly webhooks?: { readonly sink: EventSink; readonly outboxTtlMs: number };
}

/** A channel's presence keys; the node's own set, then the channel's webhook outbox. */
export function presenceKeys(prefix: string, redisChannel: string, node: string): string[] {
  const tag = `{${redisChannel}}`;
  return [
    `${prefix}pe:${tag}`,
    `${prefix}pu:${tag}`,
    `${prefix}po:${tag}`,
    `${prefix}pn:${tag}`,
    `${prefix}ps:${tag}`,
    `${prefix}pk:${tag}:${node}`,
    webhookOutboxKey(prefix, redisChannel),
  ];
}

function swept(r: unknown[]): Swept {
  return { leases: Number(r[0]), entries: Number(r[1]) };
}

/** Where a script's answer past the common head ({leases, entries, events, now}) starts. */
const HEAD = 4;

export function createRedisPresence(opts: RedisPresenceOptions): PresenceStore {
  const cmd = opts.sharded ? 'SPUBLISH' : 'PUBLISH';
  const S = { add: ADD(cmd), remove: REMOVE(cmd), renew: RENEW(cmd), resync: RESYNC(cmd), presence: PRESENCE(cmd), stats: STATS(cmd), evict: EVICT(cmd) };
  const ttl = String(opts.keysTtlMs);
  const wh = opts.webhooks;
  const outboxTtl = String(wh?.outboxTtlMs ?? 0);

  async function run(script: string, channel: string, node: string, call: PresenceCall, extra: readonly string[]): Promise<unknown[]> {
    const rc = opts.redisChannel(channel);
    const args = [rc, channel, node, String(Math.round(call.leaseMs)), call.joinLeave ? '1' : '0', ttl, newEpoch(), wh ? newEventBase() : '', outboxTtl, ...extra];
    const r = (await opts.run(script, presenceKeys(opts.prefix, rc, node), args)) as unknown[];
    const events = Number(r[2]);
    if (wh && events > 0) wh.sink.appended(channel, events, Number(r[3]));
    return r.slice(0, 2).concat(r.slice(HEAD));
  }

  return {
    async add(channel, node, entries: readonly PresenceEntry[], call, silent = false) {
      const extra: string[] = [silent ? '1' : '0'];
      for (const e of entries) extra.push(e.conn, JSON.stringify(e.user), e.info ?? '', e.seq !== undefined ? String(e.seq) : '');
      const r = await run(S.add, channel, node, call, extra);
      return { ...swept(r), epoch: String(r[2]), seqs: r.slice(3).map(Number) };
    },
    async remove(channel, node, conns, call, release) {
      const r = await run(S.remove, channel, node, call, [release ? '1' : '0', ...conns]);
      return { ...swept(r), epoch: String(r[2]) };
    },
    async renew(channel, node, call) {
      const r = await run(S.renew, channel, node, call, []);
      return { ...swept(r), epoch: String(r[2]), held: Number(r[3]), lost: Number(r[4]) === 1 };
    },
    async resync(channel, node, keep, call) {
      const r = await run(S.resync, channel, node, call, keep);
      return { ...swept(r), epoch: String(r[2]), missing: r.slice(3).map(String) };
    },
    async presence(channel, max, call) {
      // The node is only a name here (no lease is taken by a read).
      const r = await run(S.presence, channel, '-', call, [String(max)]);
      const members: PresenceMember[] = [];
      for (let i = 4; i + 2 < r.length; i += 3) {
        const info = String(r[i + 2]);
        members.push({ user: JSON.parse(String(r[i])) as string, info: info === '' ? undefined : info, conns: Number(r[i + 1]) });
      }
      const users = Number(r[2]);
      return { ...swept(r), members, users, connections: Number(r[3]), truncated: users > members.length };
    },
    async stats(channel, call) {
      const r = await run(S.stats, channel, '-', call, []);
      return { ...swept(r), users: Number(r[2]), connections: Number(r[3]) };
    },
    async evict(channel, node, call) {
      const r = await run(S.evict, channel, node, call, []);
      return { ...swept(r), removed: Number(r[2]), left: Number(r[3]) };
    },
  };
}
