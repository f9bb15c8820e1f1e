/**
 * The node side of occupancy: which channels this node holds (at least one
 * local subscriber), kept equal in the cluster-wide store, and the sweep of
 * dead nodes.
 *
 * - The hub calls `hold` when a channel gets its first local subscriber and
 *   `release` when it loses its last. Each channel has at most one store call
 *   in flight; when it answers and the wish changed meanwhile, the next call
 *   goes (a hold and release in quick succession may cancel out before
 *   anything is sent). A failed call is tried again at the next tick.
 * - With Redis (Liveness): the node renews its entry every tick (lasting the
 *   presence TTL) and writes a channel into its list before it takes the
 *   channel. An entry that was missing at a renewal means this node was swept
 *   (it stalled or was cut off past the TTL: its channels were reported
 *   vacated) or Redis lost its data (the epoch changed): the node continues
 *   under a new generation and takes its channels again, announcing them
 *   (`channel_occupied`) after a sweep, silently after a data loss. The old
 *   generation's entry runs out and is swept like a dead node's, which removes
 *   whatever it still held without a false `vacated` (the new generation holds
 *   those channels by then). The node also lets go of each channel under the
 *   old generation itself once the new one took it, or when the channel was
 *   released before it was taken again (the old list may be gone with the
 *   first sweep). Nothing is taken under a generation before its entry exists.
 * - Sweep: every SWEEP_MS each node claims at most a few dead members (one
 *   claimer each, for CLAIM_MS, extended while it works) and, for every
 *   channel in the member's list, evicts its presence (unless another
 *   generation of that node is alive and keeps its own) and removes it from
 *   the channel's occupancy: `member_removed` and `channel_vacated` come from
 *   these steps, once. A claimer that dies mid-sweep lets the claim run out
 *   and another node sweeps the same list again (every step is idempotent).
 *
 * Bounded: one state per locally held channel; SWEEP_CONCURRENCY store calls
 * in flight per sweep, pages of SWEEP_PAGE channels.
 */
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { PresenceCall, PresenceStore } from '../presence/store.js';
import type { Liveness, OccupancyStore } from './store.js';

export const SWEEP_MS = 1000;
export const CLAIM_MS = 30_000;
export const SWEEP_PAGE = 100;
export const SWEEP_CONCURRENCY = 8;
/** Dead members swept per round at most (the rest next round). */
const SWEEPS_PER_ROUND = 4;
/** Evict calls per channel at most in one sweep (each removes up to the store's budget). */
const EVICT_ROUNDS = 64;
/** Channels retried per tick at most. */
const RETRY_PER_TICK = 10_000;

export interface OccupancyHooks {
  /** A store call's outcome (for metrics). */
  op?(op: 'add' | 'remove' | 'renew' | 'sweep', ok: boolean): void;
  /** A dead member's list was swept: how many channels. */
  swept?(channels: number): void;
}

export interface OccupancyDeps {
  /** Webhooks on: the cluster-wide occupancy sets (events come from there). */
  readonly store: OccupancyStore | undefined;
  /** Redis: liveness and channel lists, for sweeping dead nodes. */
  readonly liveness: Liveness | undefined;
  /** This node's name (also its presence lease name). */
  readonly node: string;
  /** Presence store, to evict a dead node's entries; `presenceCall` answers a presence channel's call (undefined for others). */
  readonly presence?: { readonly store: PresenceStore; readonly presenceCall: (channel: string) => PresenceCall | undefined };
  /** PUBGATE_PRESENCE_TTL (seconds): a node is dead this long after its last renewal. */
  readonly ttlSec: number;
  readonly tickMs: number;
  readonly log: Log;
  readonly hooks?: OccupancyHooks;
  readonly sweepMs?: number;
  readonly claimMs?: number;
}

export interface Occupancy {
  /** The channel got its first local subscriber. */
  /**
   * The channel got its first local subscriber. Resolves once the store
   * holds it for this node (or the attempt failed: the tick tries again), so
   * a subscribe answered after it is already counted cluster-wide: another
   * node letting go of the channel meanwhile cannot report it vacated.
   */
  hold(channel: string): Promise<void>;
  /** The channel lost its last local subscriber. */
  release(channel: string): void;
  /** The member name this node holds channels under now. */
  member(): string;
  /** Channels held (or being taken) here. */
  size(): number;
  /** Runs one liveness tick now (tests). */
  tick(): Promise<void>;
  /** Runs one sweep round now; resolves with the members swept (tests). */
  sweep(): Promise<number>;
  /** Resolves once no store call is in flight (bounded by `timeoutMs`). */
  settle(timeoutMs: number): Promise<void>;
  start(): Promise<void>;
  /** Stops the timers; with `leave`, removes this node's entry and list when it holds nothing. */
  stop(leave: boolean): Promise<void>;
}

interface State {
  want: boolean;
  /** The member this node holds the channel under in the store (undefined: not held). */
  heldAs: string | undefined;
  busy: boolean;
  /** A call failed: try again at the next tick. */
  dirty: boolean;
  /** Take it again without `channel_occupied` (the store lost it with all its data). */
  silent: boolean;
  /** Holds waiting for the store call in flight (resolved when it settles). */
  waiters?: (() => void)[];
}

export function createOccupancy(deps: OccupancyDeps): Occupancy {
  const { store, liveness, log } = deps;
  const states = new Map<string, State>();
  const failures = new LogTally(log.child({ component: 'occupancy' }), 'warn', 'occupancy store calls failed');
  let gen = 0;
  let member = `${deps.node}#${gen}`;
  /** Liveness: the entry exists (channels may be taken); always true without Liveness. */
  let registered = liveness === undefined;
  let epoch = '';
  let tickTimer: NodeJS.Timeout | undefined;
  let sweepTimer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | undefined;
  let sweeping: Promise<number> | undefined;
  let stopped = false;
  const idle = new Set<() => void>();
  let inFlight = 0;
  const ttlMs = deps.ttlSec * 1000;
  const claimMs = deps.claimMs ?? CLAIM_MS;

  const report = (op: 'add' | 'remove' | 'renew' | 'sweep', ok: boolean): void => deps.hooks?.op?.(op, ok);
  const failed = (op: string, e: unknown): void => failures.add(op, 1, e instanceof Error ? e.message : String(e));

  /** The store agrees with the wish: held under the current generation, or not held under any. */
  const settled = (st: State): boolean => (st.want ? st.heldAs === member : st.heldAs === undefined);

  /** Lets go of the channel under `as` (the current generation, or an old one), then unlists it. */
  async function letGo(channel: string, as: string): Promise<void> {
    try {
      await store?.remove(channel, as);
      report('remove', true);
    } catch (e) {
      report('remove', false);
      throw e;
    }
    await liveness?.unhold(as, [channel]);
  }

  async function step(channel: string, st: State): Promise<void> {
    for (;;) {
      const m = member;
      if (settled(st)) return;
      if (st.want) {
        await liveness?.hold(m, [channel]);
        try {
          await store?.add(channel, m, st.silent);
          report('add', true);
        } catch (e) {
          report('add', false);
          throw e;
        }
        st.silent = false;
        const prev = st.heldAs;
        st.heldAs = m;
        // Held under an older generation too: let go of that one now (no
        // vacated: this generation holds the channel), rather than leave it to
        // the old generation's sweep, whose list may be gone already.
        if (prev !== undefined && prev !== m) await letGo(channel, prev);
      } else {
        // Under whichever generation took it: a channel taken before a switch
        // and let go of before it was taken again is still held by the old one.
        const as = st.heldAs as string;
        await letGo(channel, as);
        if (st.heldAs === as) st.heldAs = undefined;
      }
    }
  }

  function run(channel: string, st: State): void {
    if (st.busy || stopped && st.want) return;
    if (!registered) {
      st.dirty = true;
      return;
    }
    st.busy = true;
    st.dirty = false;
    inFlight++;
    step(channel, st)
      .catch((e: unknown) => {
        st.dirty = true;
        failed('change', e);
      })
      .finally(() => {
        st.busy = false;
        inFlight--;
        const w = st.waiters;
        st.waiters = undefined;
        if (w) for (const f of w) f();
        if (!st.want && st.heldAs === undefined && !st.dirty && states.get(channel) === st) states.delete(channel);
        if (inFlight === 0) for (const w of idle) w();
      });
  }

  async function renew(): Promise<void> {
    if (!liveness) return;
    let r;
    try {
      r = await liveness.renew(member, ttlMs);
      report('renew', true);
    } catch (e) {
      report('renew', false);
      failed('renew', e);
      return;
    }
    // False when the new generation's registration failed: nothing is taken
    // under it until a renewal made its entry (else a death now would leave
    // its channels with no entry to sweep them by).
    let ok = true;
    if (r.added && registered) {
      // Swept (same epoch) or Redis lost its data (new epoch): continue under a new generation.
      const dataLost = epoch !== '' && r.epoch !== epoch;
      const old = member;
      member = `${deps.node}#${++gen}`;
      try {
        await liveness.renew(member, ttlMs);
      } catch (e) {
        ok = false;
        failed('renew', e);
      }
      log.warn({ component: 'occupancy', old, member, dataLost }, dataLost ? 'Redis lost the occupancy data: holding the channels again' : 'this node was swept as dead: holding its channels again');
      for (const st of states.values()) if (st.heldAs === old) st.silent = dataLost;
    }
    epoch = r.epoch;
    registered = ok;
  }

  async function runTick(): Promise<void> {
    await renew();
    let n = 0;
    for (const [channel, st] of states) {
      if (n >= RETRY_PER_TICK) break;
      if (st.dirty || (!st.busy && !settled(st))) {
        n++;
        run(channel, st);
      }
    }
  }

  function tick(): Promise<void> {
    ticking ??= runTick().finally(() => {
      ticking = undefined;
    });
    return ticking;
  }

  async function sweepOne(dead: string, baseAlive: boolean): Promise<number> {
    if (!liveness) return 0;
    const base = dead.replace(/#[^#]*$/, '');
    let cursor = '0';
    let channels = 0;
    do {
      const page = await liveness.held(dead, cursor, SWEEP_PAGE);
      cursor = page.cursor;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < page.channels.length) {
          const channel = page.channels[next++] as string;
          const call = deps.presence?.presenceCall(channel);
          if (deps.presence && call && !baseAlive) {
            for (let i = 0; i < EVICT_ROUNDS; i++) {
              const r = await deps.presence.store.evict(channel, base, call);
              if (r.left === 0) break;
            }
          }
          await store?.remove(channel, dead);
          channels++;
        }
      };
      await Promise.all(Array.from({ length: Math.min(SWEEP_CONCURRENCY, page.channels.length) }, worker));
      await liveness.extend(dead, claimMs);
    } while (cursor !== '0');
    await liveness.done(dead);
    return channels;
  }

  async function runSweep(): Promise<number> {
    if (!liveness || !registered) return 0;
    let swept = 0;
    for (let i = 0; i < SWEEPS_PER_ROUND && !stopped; i++) {
      let dead;
      try {
        dead = await liveness.claimDead(claimMs);
      } catch (e) {
        failed('sweep', e);
        break;
      }
      if (!dead) break;
      try {
        const channels = await sweepOne(dead.member, dead.baseAlive);
        report('sweep', true);
        deps.hooks?.swept?.(channels);
        swept++;
        log.info({ component: 'occupancy', member: dead.member, channels, presence: !dead.baseAlive }, 'swept the channels of a dead node');
      } catch (e) {
        // The claim runs out and another node (or this one) sweeps the list again.
        report('sweep', false);
        failed('sweep', e);
        break;
      }
    }
    return swept;
  }

  function sweep(): Promise<number> {
    sweeping ??= runSweep().finally(() => {
      sweeping = undefined;
    });
    return sweeping;
  }

  return {
    hold(channel) {
      let st = states.get(channel);
      if (!st) states.set(channel, (st = { want: true, heldAs: undefined, busy: false, dirty: false, silent: false }));
      st.want = true;
      run(channel, st);
      // Not sent (not registered yet, or stopped): the tick sends it; the subscribe does not wait for that.
      if (!st.busy) return Promise.resolve();
      const s2 = st;
      return new Promise<void>((resolve) => (s2.waiters ??= []).push(resolve));
    },
    release(channel) {
      const st = states.get(channel);
      if (!st) return;
      st.want = false;
      run(channel, st);
    },
    member: () => member,
    size: () => states.size,
    tick,
    sweep,
    settle(timeoutMs) {
      if (inFlight === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          idle.delete(done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        timer.unref();
        idle.add(done);
      });
    },
    async start() {
      stopped = false;
      await tick();
      tickTimer = setInterval(() => void tick(), deps.tickMs);
      tickTimer.unref();
      if (liveness) {
        sweepTimer = setInterval(() => void sweep(), deps.sweepMs ?? SWEEP_MS);
        sweepTimer.unref();
      }
    },
    async stop(leave) {
      stopped = true;
      if (tickTimer) clearInterval(tickTimer);
      if (sweepTimer) clearInterval(sweepTimer);
      tickTimer = sweepTimer = undefined;
      await sweeping?.catch(() => undefined);
      failures.flush();
      // Only a node that let go of everything may delete its list; otherwise
      // its entry runs out and the sweep of another node cleans up after it.
      const holdsNothing = [...states.values()].every((st) => st.heldAs === undefined && !st.busy);
      if (leave && liveness && holdsNothing) {
        await liveness.leave(member).catch((e: unknown) => failed('leave', e));
      }
    },
  };
}
