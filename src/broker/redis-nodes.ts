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
 * Bounded: at most MAX_NODES names are read.
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

// KEYS[1]: the registry. ARGV: instance, op ('renew' | 'read' | 'leave'), lease ms, max names.
// Returns {names..., total}.
const SCRIPT = `
local KEY, NODE, OP, LEASE, MAX = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEY, '-inf', now)
if OP == 'renew' then
  redis.call('ZADD', KEY, now + LEASE, NODE)
  redis.call('PEXPIRE', KEY, LEASE * 10)
elseif OP == 'leave' then
  redis.call('ZREM', KEY, NODE)
end
local names = redis.call('ZRANGE', KEY, 0, MAX - 1)
names[#names + 1] = tostring(redis.call('ZCARD', KEY))
return names
`;

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

  /** Removes this node (a clean shutdown): nobody waits for it any more. */
  async leave(): Promise<void> {
    await this.call('leave');
  }

  private async call(op: 'renew' | 'read' | 'leave'): Promise<string[]> {
    const r = await this.o.run(SCRIPT, [this.o.key], [this.o.instance, op, String(this.leaseMs), String(MAX_NODES)]);
    const list = Array.isArray(r) ? r.map(String) : [];
    const total = Number(list.pop() ?? 0);
    if (total > list.length && !this.warnedTotal) {
      this.warnedTotal = true;
      this.o.log.warn({ total, read: list.length }, 'more nodes in the registry than are read: requests to every node wait for the first ones only');
    }
    return list;
  }
}
