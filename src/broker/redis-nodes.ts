/**
 * The node registry in Redis: which nodes share this Redis right now, so that
 * a node asking every node to do something (POST /v1/subscribe) knows whose
 * answers to wait for.
 *
 * One sorted set, `<prefix>nodes`: member = a node's instance name, score =
 * its lease expiry (ms, Redis time, so the nodes' clocks do not matter). A
 * node renews its lease every `renewMs` while its broker is ready (so a
 * registered node receives control messages); the lease lasts `leaseMs`. Every
 * call first drops the leases that ran out: a node killed (kill -9) is gone
 * from the registry within `leaseMs` of its last renewal, and one that closes
 * its broker removes itself at once. The key expires a while after the last
 * renewal, so a Redis whose nodes all died keeps nothing.
 *
 * Beside each lease, the node's info (broker.ts NodeInfo, the admin
 * console's overview): a hash `{<prefix>nodes}info` (the registry's slot in a
 * Redis Cluster), field = instance, value = `<Redis time ms> <JSON>`, written
 * at each renewal, deleted with the lease when it runs out (swept) or the node
 * leaves, read only for the live names; it expires with the registry.
 *
 * Bounded: at most MAX_NODES names are read, at most MAX_NODES expired infos
 * deleted per call (an info left over past that is never read, and expires
 * with the key), and an info is at most MAX_NODE_INFO characters.
 */
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { ScriptRunner } from './redis-history.js';

/** How often a node renews its lease. */
export const NODE_RENEW_MS = 1000;
/** How long a lease lasts from its renewal: a dead node is dropped this long after its last renewal, at most. */
export const NODE_LEASE_MS = 3000;
/** Names read at most (a registry bigger than this is logged, and requests wait for the first MAX_NODES). */
export const MAX_NODES = 1024;
/** Longest node info stored (JSON characters); a longer one is stored as `{}`. */
export const MAX_NODE_INFO = 4096;

/** The node info hash of a registry key: `{<key>}info`, in the registry's Redis Cluster slot. */
export function nodeInfoKey(registryKey: string): string {
  return `{${registryKey}}info`;
}

// KEYS[1]: the registry, KEYS[2]: the info hash. ARGV: instance, op ('renew' |
// 'read' | 'leave' | 'infos'), lease ms, max names, info JSON ('' for none).
// Returns {names..., total}; for 'infos' {name, info or false, ..., total}.
const SCRIPT = `
local KEY, INFO, NODE, OP, LEASE, MAX = KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEY, '-inf', now, 'LIMIT', 0, MAX)
if #expired > 0 then redis.call('HDEL', INFO, unpack(expired)) end
redis.call('ZREMRANGEBYSCORE', KEY, '-inf', now)
if OP == 'renew' then
  redis.call('ZADD', KEY, now + LEASE, NODE)
  redis.call('PEXPIRE', KEY, LEASE * 10)
  if ARGV[5] ~= '' then
    redis.call('HSET', INFO, NODE, tostring(now) .. ' ' .. ARGV[5])
    redis.call('PEXPIRE', INFO, LEASE * 10)
  end
elseif OP == 'leave' then
  redis.call('ZREM', KEY, NODE)
  redis.call('HDEL', INFO, NODE)
end
local names = redis.call('ZRANGE', KEY, 0, MAX - 1)
local out = names
if OP == 'infos' then
  out = {}
  if #names > 0 then
    local infos = redis.call('HMGET', INFO, unpack(names))
    for i, n in ipairs(names) do
      out[#out + 1] = n
      out[#out + 1] = infos[i]
    end
  end
end
out[#out + 1] = tostring(redis.call('ZCARD', KEY))
return out
`;

/** One live node and its last stored info (see broker.ts NodeReport). */
export interface NodeInfoEntry {
  readonly instance: string;
  /** The info as parsed from its JSON; undefined when none is stored or it does not parse. */
  readonly info: unknown;
  /** Redis time of the renewal that stored it (ms); 0 when none is stored. */
  readonly reportedAtMs: number;
}

export interface NodeRegistryOptions {
  /** The registry's key, `<prefix>nodes`. */
  readonly key: string;
  readonly instance: string;
  /** Runs a script with the broker's guarantees (refused unless ready, bounded in time). */
  readonly run: ScriptRunner;
  /** Whether the broker is ready (renewals are sent only then). */
  readonly ready: () => boolean;
  readonly log: Log;
  readonly renewMs?: number;
  readonly leaseMs?: number;
}

export class NodeRegistry {
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;
  private warnedTotal = false;
  private readonly failures: LogTally;
  private readonly renewMs: number;
  private readonly leaseMs: number;
  /** This node's info (JSON-serializable), stored at each renewal (setInfo); none until set. */
  private info: (() => unknown) | undefined;

  constructor(private readonly o: NodeRegistryOptions) {
    this.renewMs = o.renewMs ?? NODE_RENEW_MS;
    this.leaseMs = o.leaseMs ?? NODE_LEASE_MS;
    this.failures = new LogTally(o.log, 'warn', 'node registry renewals failed', { component: 'broker' });
  }

  start(): void {
    this.timer = setInterval(() => this.renew(), this.renewMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Sets what this node stores as its info from the next renewal on. */
  setInfo(info: (() => unknown) | undefined): void {
    this.info = info;
  }

  /** Renews this node's lease now (the broker just became ready), unless a renewal is under way. */
  renew(): void {
    if (this.renewing || !this.o.ready()) return;
    this.renewing = true;
    this.call('renew').then(
      () => undefined,
      (e: unknown) => this.failures.add('renew', 1, e instanceof Error ? e.message : String(e)),
    ).finally(() => {
      this.renewing = false;
    });
  }

  /** The live nodes' instance names. */
  async read(): Promise<string[]> {
    return this.call('read');
  }

  /** The live nodes, by instance name, with their last stored info. */
  async readInfos(): Promise<NodeInfoEntry[]> {
    const list = await this.call('infos');
    const out: NodeInfoEntry[] = [];
    for (let i = 0; i + 1 < list.length; i += 2) {
      const instance = list[i] as string;
      const raw = list[i + 1];
      out.push({ instance, ...parseStored(raw) });
    }
    return out;
  }

  /** Removes this node (a clean shutdown): nobody waits for it any more. */
  async leave(): Promise<void> {
    await this.call('leave');
  }

  /** This node's info as stored: '' when there is none, `{}` when it cannot be serialized or is too long. */
  private infoText(): string {
    if (!this.info) return '';
    let text: string | undefined;
    try {
      text = JSON.stringify(this.info());
    } catch {
      text = undefined;
    }
    return text === undefined || text.length > MAX_NODE_INFO ? '{}' : text;
  }

  private async call(op: 'renew' | 'read' | 'leave' | 'infos'): Promise<string[]> {
    const info = op === 'renew' ? this.infoText() : '';
    const r = await this.o.run(SCRIPT, [this.o.key, nodeInfoKey(this.o.key)], [this.o.instance, op, String(this.leaseMs), String(MAX_NODES), info]);
    // A missing info comes back as null (false in Lua): kept as '' here.
    const list = Array.isArray(r) ? r.map((v: unknown) => (v === null || v === undefined ? '' : String(v))) : [];
    const total = Number(list.pop() ?? 0);
    const names = op === 'infos' ? list.length / 2 : list.length;
    if (total > names && !this.warnedTotal) {
      this.warnedTotal = true;
      this.o.log.warn({ total, read: names }, 'more nodes in the registry than are read: requests to every node wait for the first ones only');
    }
    return list;
  }
}

/** `<ms> <JSON>` as the renewal stores it. */
function parseStored(raw: string | undefined): { info: unknown; reportedAtMs: number } {
  if (raw === undefined || raw === '') return { info: undefined, reportedAtMs: 0 };
  const sp = raw.indexOf(' ');
  const at = Number(raw.slice(0, sp));
  if (sp < 0 || !Number.isSafeInteger(at)) return { info: undefined, reportedAtMs: 0 };
  try {
    return { info: JSON.parse(raw.slice(sp + 1)) as unknown, reportedAtMs: at };
  } catch {
    return { info: undefined, reportedAtMs: at };
  }
}
