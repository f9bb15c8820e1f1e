/**
 * The node side of presence: which of this node's connections are in which
 * presence channel, the node's lease on each of those channels, and keeping
 * the store equal to what is really subscribed here.
 *
 * - A subscribe on a presence channel adds the connection's entry (the store
 *   publishes `join` when it is the user's first connection anywhere); the
 *   subscribe reply waits for it. Unsubscribe and close remove it.
 * - Leases: every `tickMs` the node renews its lease on each of its presence
 *   channels (one store call per channel; `PRESENCE_CONCURRENCY` in flight).
 *   The lease lasts `ttl - tick`, so when a node dies its lease runs out
 *   within `ttl - tick` of its last renewal, and the next tick of any other node
 *   holding the channel (or any read of it) sweeps it: entries gone, `leave`
 *   sent, within `ttl` seconds of the death. No coordinator, no node asks another.
 * - Convergence: a renewal answers how many entries the store holds for this
 *   node and whether the lease had vanished (Redis restarted without its data,
 *   or this node stalled past its lease and was swept). When that differs from
 *   what is subscribed here, or a change failed (broker down), the channel is
 *   resynced: entries that are not subscribed here any more are removed, the
 *   missing ones added again (with `join` for users that had vanished). A full
 *   resync also runs every RESYNC_EVERY ticks, to catch differences that cancel out.
 *
 * Bounded: one local entry per subscribed connection on a presence channel; a
 * tick is skipped while the previous one is still running.
 */
import { randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';
import type { Session } from '../hub/session.js';
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { Metrics, PresenceOp } from '../observability/metrics.js';
import type { PresenceCall, PresenceEntry, PresenceSnapshot, PresenceStats, PresenceStore, Swept } from './store.js';

/** Store calls in flight at most during a tick. */
export const PRESENCE_CONCURRENCY = 32;
/** Every this many ticks a channel is resynced in full, whatever the counts say. */
export const RESYNC_EVERY = 12;
/** Entries added per store call when resyncing. */
const ADD_CHUNK = 200;

export interface PresenceDeps {
  readonly store: PresenceStore;
  /** PUBGATE_PRESENCE_TTL, seconds. */
  readonly ttlSec: number;
  /** PUBGATE_PRESENCE_MAX_MEMBERS. */
  readonly maxMembers: number;
  readonly metrics: Metrics;
  readonly log: Log;
  /** This node's lease name; a new random one per process by default. */
  readonly node?: string;
  /** Overrides the tick (tests). */
  readonly tickMs?: number;
}

export interface Presence {
  /** This node's lease name (the prefix of its connections' presence ids). */
  readonly node: string;
  /**
   * Adds a subscribed connection's entry; resolves once the store has it. Rejects with GatewayError('unavailable').
   * `info` (serialized) replaces the connection's for this channel (a subscription token's or the subscribe proxy's).
   */
  add(channel: string, s: Session, joinLeave: boolean, info?: string): Promise<void>;
  /** Removes a connection's entry (unsubscribe or close); failures are repaired by the next tick. */
  remove(channel: string, s: Session): void;
  presence(channel: string, joinLeave: boolean): Promise<PresenceSnapshot>;
  stats(channel: string, joinLeave: boolean): Promise<PresenceStats>;
  /** Entries held by this node. */
  entries(): number;
  /** Runs one tick now and resolves when it is done (tests and benchmarks). */
  tick(): Promise<void>;
  /** Resolves once the removals sent so far are answered (a draining node waits for them before closing the broker). */
  settle(): Promise<void>;
  start(): void;
  stop(): void;
}

interface Local {
  readonly joinLeave: boolean;
  readonly conns: Map<string, PresenceEntry>;
  /** A change may not have reached the store: resync at the next tick. */
  dirty: boolean;
  /** The store's epoch of the channel, as last seen ('' before the first answer). */
  epoch: string;
  /**
   * The epoch changed: the store lost the channel (not just this node's
   * lease), and nobody was told its users left, so the resync restores them
   * without `join`.
   */
  dataLost: boolean;
}

const newLocal = (joinLeave: boolean, dirty: boolean): Local => ({ joinLeave, conns: new Map(), dirty, epoch: '', dataLost: false });

/** Notes the epoch a store call answered; a change means the store lost the channel: resync, silently. */
function sawEpoch(l: Local, epoch: string): void {
  if (epoch === '') return;
  if (l.epoch !== '' && epoch !== l.epoch) {
    l.dataLost = true;
    l.dirty = true;
  }
  l.epoch = epoch;
}

/** The tick for a TTL: a sixth of it, at most 5 s. */
export function presenceTickMs(ttlSec: number): number {
  return Math.round(Math.min(5000, Math.max(100, (ttlSec * 1000) / 6)));
}

export function createPresence(deps: PresenceDeps): Presence {
  const { store, metrics, log } = deps;
  const node = deps.node ?? randomBytes(9).toString('base64url');
  const tickMs = deps.tickMs ?? presenceTickMs(deps.ttlSec);
  const leaseMs = Math.max(tickMs, deps.ttlSec * 1000 - tickMs);
  const local = new Map<string, Local>();
  let entryCount = 0;
  let tickNo = 0;
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  /** Removals in flight (each bounded by the broker's publish timeout). */
  const removing = new Set<Promise<unknown>>();
  const failures = new LogTally(log.child({ component: 'presence' }), 'warn', 'presence store calls failed');

  const call = (joinLeave: boolean): PresenceCall => ({ joinLeave, leaseMs });
  const connId = (s: Session): string => `${node}.${s.id.toString(36)}`;

  async function timed<T extends Swept>(op: PresenceOp, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await fn();
      metrics.presenceOp(op, true, (performance.now() - t0) / 1000);
      if (r.leases > 0 || r.entries > 0) {
        metrics.presenceLeasesExpired(r.leases, r.entries);
        log.info({ component: 'presence', leases: r.leases, entries: r.entries }, 'swept the presence of dead nodes');
      }
      return r;
    } catch (e) {
      metrics.presenceOp(op, false, (performance.now() - t0) / 1000);
      throw e;
    }
  }

  function failed(op: PresenceOp, e: unknown): void {
    failures.add(op, 1, e instanceof Error ? e.message : String(e));
  }

  /** Brings the store in line with what is subscribed here (and drops the channel when nothing is). */
  async function resync(channel: string, l: Local): Promise<void> {
    // Released meanwhile (its last connection left while a renewal was in
    // flight): the release dropped the lease; a newer state is handled next tick.
    if (local.get(channel) !== l) return;
    l.dirty = false;
    const r = await timed('resync', () => store.resync(channel, node, [...l.conns.keys()], call(l.joinLeave)));
    sawEpoch(l, r.epoch);
    l.dirty = false;
    // Entries the store lost with the whole channel come back without `join`
    // (nobody was told they left); entries swept with this node's lease (a
    // `leave` went out) come back with one.
    const silent = l.dataLost;
    l.dataLost = false;
    const missing: PresenceEntry[] = [];
    for (const id of r.missing) {
      const e = l.conns.get(id);
      if (e) missing.push(e);
    }
    for (let i = 0; i < missing.length; i += ADD_CHUNK) {
      const chunk = missing.slice(i, i + ADD_CHUNK);
      const a = await timed('add', () => store.add(channel, node, chunk, call(l.joinLeave), silent));
      chunk.forEach((e, j) => (e.seq = a.seqs[j] ?? e.seq));
    }
    if (missing.length > 0) log.info({ component: 'presence', entries: missing.length, silent }, 'presence entries restored after a loss');
    if (l.conns.size === 0 && local.get(channel) === l) {
      await timed('remove', () => store.remove(channel, node, [], call(l.joinLeave), true));
      if (l.conns.size === 0 && local.get(channel) === l && !l.dirty) local.delete(channel);
    }
  }

  async function maintain(channel: string, l: Local, full: boolean): Promise<void> {
    try {
      if (l.dirty || full) return await resync(channel, l);
      const r = await timed('renew', () => store.renew(channel, node, call(l.joinLeave)));
      sawEpoch(l, r.epoch);
      if (r.lost || r.held !== l.conns.size || l.dirty) await resync(channel, l);
    } catch (e) {
      l.dirty = true;
      failed('renew', e);
    }
  }

  async function runTick(): Promise<void> {
    tickNo++;
    const full = tickNo % RESYNC_EVERY === 0;
    const work = [...local.entries()];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < work.length) {
        const [channel, l] = work[next++] as [string, Local];
        await maintain(channel, l, full);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PRESENCE_CONCURRENCY, work.length) }, worker));
  }

  function tick(): Promise<void> {
    running ??= runTick().finally(() => {
      running = undefined;
    });
    return running;
  }

  return {
    node,
    async add(channel, s, joinLeave, info) {
      const id = connId(s);
      let l = local.get(channel);
      if (!l) local.set(channel, (l = newLocal(joinLeave, false)));
      if (l.conns.has(id)) return;
      // Local first: a resync that runs meanwhile keeps this entry.
      const entry: PresenceEntry = { conn: id, user: s.user, info: info ?? s.extra?.info };
      l.conns.set(id, entry);
      entryCount++;
      try {
        const a = await timed('add', () => store.add(channel, node, [entry], call(joinLeave)));
        entry.seq = a.seqs[0];
        const cur = local.get(channel);
        if (cur) sawEpoch(cur, a.epoch);
      } catch (e) {
        // It may have been applied: the next tick makes the store agree.
        const cur = local.get(channel);
        if (cur?.conns.get(id) === entry) {
          cur.conns.delete(id);
          entryCount--;
          cur.dirty = true;
        }
        failed('add', e);
        throw e instanceof GatewayError ? e : new GatewayError('unavailable', 'presence is not available');
      }
    },
    remove(channel, s) {
      const l = local.get(channel);
      const id = connId(s);
      if (!l || !l.conns.delete(id)) return;
      entryCount--;
      const release = l.conns.size === 0;
      if (release && !l.dirty) local.delete(channel);
      const done = timed('remove', () => store.remove(channel, node, [id], call(l.joinLeave), release))
        .catch((e: unknown) => {
          failed('remove', e);
          // Keep (or put back) the channel so the next tick removes the entry.
          const cur = local.get(channel);
          if (cur) cur.dirty = true;
          else local.set(channel, newLocal(l.joinLeave, true));
        })
        .finally(() => removing.delete(done));
      removing.add(done);
    },
    async presence(channel, joinLeave) {
      const r = await timed('presence', () => store.presence(channel, deps.maxMembers, call(joinLeave)));
      return { members: r.members, users: r.users, connections: r.connections, truncated: r.truncated };
    },
    async stats(channel, joinLeave) {
      const r = await timed('stats', () => store.stats(channel, call(joinLeave)));
      return { users: r.users, connections: r.connections };
    },
    entries: () => entryCount,
    tick,
    async settle() {
      await Promise.allSettled([...removing]);
    },
    start() {
      if (timer) return;
      timer = setInterval(() => void tick(), tickMs);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      failures.flush();
    },
  };
}
