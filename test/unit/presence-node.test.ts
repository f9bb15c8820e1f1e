/**
 * The node side of presence (src/presence/presence.ts) against the memory
 * store, behind a wrapper that can make calls fail before they reach the store,
 * lose their reply after it applied them, or hold their reply back (as a Redis
 * round trip does). The store's clock is a number the test moves, and ticks are
 * run by hand: nothing here waits for time to pass.
 */
import { setImmediate as drained } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { NO_CHANNELS, type Session } from '../../src/hub/session.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { createMemoryPresence } from '../../src/presence/memory-store.js';
import { createPresence, RESYNC_EVERY, type Presence } from '../../src/presence/presence.js';
import type { PresenceCall, PresenceStore } from '../../src/presence/store.js';
import { memoryLog } from '../helpers/broker-contract.js';

type Op = keyof PresenceStore;

const CH = 'chat:1';
const TTL_SEC = 30;
const TICK_MS = 5000;
/** The node's lease: ttl - tick. */
const LEASE_MS = TTL_SEC * 1000 - TICK_MS;
/** Calls of other nodes, made on the store directly. */
const OTHER: PresenceCall = { joinLeave: true, leaseMs: 1e9 };

const metrics = createMetrics('presence-node-test');

/** A store wrapper with failure switches, and the list of calls that reached it. */
interface Switchable {
  readonly store: PresenceStore;
  /** The store behind; replace it to lose all of its data (like a Redis restart). */
  target: PresenceStore;
  /** Calls of these ops fail before reaching the store. */
  readonly down: Set<Op>;
  /** Calls of these ops are applied, then fail (their reply was lost). */
  readonly replyLost: Set<Op>;
  /** Calls of these ops are applied at once; their reply waits for the promise. */
  readonly held: Map<Op, Promise<void>>;
  readonly calls: Op[];
}

function switchable(target: PresenceStore): Switchable {
  const s: Switchable = {
    target,
    down: new Set(),
    replyLost: new Set(),
    held: new Map(),
    calls: [],
    store: {
      add: (channel, node, entries, call) => through('add', () => s.target.add(channel, node, entries, call)),
      remove: (channel, node, conns, call, release) => through('remove', () => s.target.remove(channel, node, conns, call, release)),
      renew: (channel, node, call) => through('renew', () => s.target.renew(channel, node, call)),
      resync: (channel, node, keep, call) => through('resync', () => s.target.resync(channel, node, keep, call)),
      presence: (channel, max, call) => through('presence', () => s.target.presence(channel, max, call)),
      stats: (channel, call) => through('stats', () => s.target.stats(channel, call)),
      evict: (channel, node, call) => through('evict', () => s.target.evict(channel, node, call)),
    },
  };
  async function through<T>(op: Op, apply: () => Promise<T>): Promise<T> {
    s.calls.push(op);
    if (s.down.has(op)) throw new Error(`store ${op} is down`);
    const applied = apply();
    const gate = s.held.get(op);
    if (gate) await gate;
    const r = await applied;
    if (s.replyLost.has(op)) throw new Error(`store ${op}: reply lost`);
    return r;
  }
  return s;
}

let ids = 0;
function session(user: string, info?: object): Session {
  return {
    id: ++ids,
    user,
    exp: 1,
    perms: { subscribe: () => true, publish: () => true },
    channels: NO_CHANNELS,
    open: true,
    idleBeats: 0,
    frameFullAtMs: 0,
    extra: info === undefined ? undefined : { strikes: 0, slowSinceMs: 0, dropped: 0, info: JSON.stringify(info) },
  };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** A node 'A' on a memory store whose clock the test moves; `frames` are the join/leave frames as "join u1". */
function setup(): {
  p: Presence;
  sw: Switchable;
  mem: PresenceStore;
  frames: string[];
  clock: { now: number };
  newStore: () => PresenceStore;
  conn: (s: Session) => string;
  members: () => Promise<Array<[string, number]>>;
} {
  const frames: string[] = [];
  const clock = { now: 1_000_000 };
  const newStore = (): PresenceStore =>
    createMemoryPresence(
      (channel, frame) => {
        const f = JSON.parse(frame) as { type: string; channel: string; user: string };
        expect(f.channel).toBe(channel);
        frames.push(`${f.type} ${f.user}`);
      },
      () => clock.now,
    );
  const mem = newStore();
  const sw = switchable(mem);
  const p = createPresence({ store: sw.store, ttlSec: TTL_SEC, maxMembers: 100, metrics, log: memoryLog(), node: 'A', tickMs: TICK_MS });
  const members = async (): Promise<Array<[string, number]>> =>
    (await sw.target.presence(CH, 100, OTHER)).members.map((m): [string, number] => [m.user, m.conns]).sort((a, b) => a[0].localeCompare(b[0]));
  return { p, sw, mem, frames, clock, newStore, conn: (s) => `A.${s.id.toString(36)}`, members };
}

async function expectUnavailable(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => new Error('expected a rejection'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('unavailable');
}

describe('presence, node side', () => {
  it('adds and removes entries in the store, counting them in entries()', async () => {
    const { p, sw, frames, members } = setup();
    const s1 = session('u1', { n: 1 });
    const s2 = session('u1');
    const s3 = session('u2');
    await p.add(CH, s1, true);
    await p.add(CH, s1, true);
    await p.add(CH, s2, true);
    await p.add(CH, s3, true);
    expect(p.entries()).toBe(3);
    expect(sw.calls).toEqual(['add', 'add', 'add']);
    expect(await members()).toEqual([['u1', 2], ['u2', 1]]);
    expect(await p.presence(CH, true)).toEqual({
      members: [{ user: 'u1', info: '{"n":1}', conns: 2 }, { user: 'u2', info: undefined, conns: 1 }],
      users: 2,
      connections: 3,
      truncated: false,
    });
    expect(await p.stats(CH, true)).toEqual({ users: 2, connections: 3 });
    p.remove(CH, s1);
    p.remove(CH, s1);
    p.remove(CH, session('never'));
    expect(p.entries()).toBe(2);
    p.remove(CH, s2);
    p.remove(CH, s3);
    expect(p.entries()).toBe(0);
    await p.tick();
    expect(await members()).toEqual([]);
    expect(frames).toEqual(['join u1', 'join u2', 'leave u1', 'leave u2']);
  });

  it('leaves no local entry when the store refuses an add, rejects with unavailable, and resyncs at the next tick', async () => {
    const { p, sw, mem, members } = setup();
    const keep = session('u0');
    await p.add(CH, keep, true);
    sw.down.add('add');
    await expectUnavailable(p.add(CH, session('u1'), true));
    expect(p.entries()).toBe(1);
    expect(await members()).toEqual([['u0', 1]]);
    sw.down.clear();
    sw.calls.length = 0;
    await p.tick();
    // Marked for resync: no plain renewal this time.
    expect(sw.calls).toEqual(['resync']);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual(['renew']);
    expect(await mem.renew(CH, 'A', OTHER)).toMatchObject({ held: 1, lost: false });
  });

  it('undoes at the next tick an add the store applied but whose reply was lost', async () => {
    const { p, sw, frames, members } = setup();
    const keep = session('u0');
    await p.add(CH, keep, true);
    sw.replyLost.add('add');
    await expectUnavailable(p.add(CH, session('u1'), true));
    sw.replyLost.clear();
    expect(p.entries()).toBe(1);
    // The store has it: the add was applied.
    expect(await members()).toEqual([['u0', 1], ['u1', 1]]);
    await p.tick();
    expect(await members()).toEqual([['u0', 1]]);
    expect(frames).toEqual(['join u0', 'join u1', 'leave u1']);
  });

  it('drops the channel and its lease at the next tick when the only add failed', async () => {
    const { p, sw, mem, members } = setup();
    sw.replyLost.add('add');
    await expectUnavailable(p.add(CH, session('u1'), true));
    sw.replyLost.clear();
    expect(p.entries()).toBe(0);
    await p.tick();
    expect(await members()).toEqual([]);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual([]);
    expect(await mem.renew(CH, 'A', OTHER)).toMatchObject({ held: 0, lost: true });
  });

  it('repairs a failed remove at the next tick, with one leave', async () => {
    const { p, sw, frames, members } = setup();
    const s1 = session('u1');
    const s2 = session('u2');
    await p.add(CH, s1, true);
    await p.add(CH, s2, true);
    sw.down.add('remove');
    p.remove(CH, s1);
    expect(p.entries()).toBe(1);
    // After every pending promise reaction: the node has seen the failure.
    await drained();
    expect(sw.calls).toContain('remove');
    sw.down.clear();
    expect(await members()).toEqual([['u1', 1], ['u2', 1]]);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual(['resync']);
    expect(await members()).toEqual([['u2', 1]]);
    expect(frames).toEqual(['join u1', 'join u2', 'leave u1']);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual(['renew']);
  });

  it('repairs a failed remove of the last local connection at the next tick, and then releases the lease', async () => {
    const { p, sw, mem, frames, members } = setup();
    const s1 = session('u1');
    await p.add(CH, s1, true);
    sw.down.add('remove');
    p.remove(CH, s1);
    expect(p.entries()).toBe(0);
    // After every pending promise reaction: the node has seen the failure.
    await drained();
    expect(sw.calls).toContain('remove');
    sw.down.clear();
    expect(await members()).toEqual([['u1', 1]]);
    await p.tick();
    expect(await members()).toEqual([]);
    expect(frames).toEqual(['join u1', 'leave u1']);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual([]);
    expect(await mem.renew(CH, 'A', OTHER)).toMatchObject({ held: 0, lost: true });
  });

  it('keeps its lease alive by renewing it every tick', async () => {
    const { p, clock, mem, members } = setup();
    await p.add(CH, session('u1'), true);
    await mem.add(CH, 'B', [{ conn: 'B.1', user: 'u2', info: undefined }], OTHER);
    for (let i = 0; i < 10; i++) {
      clock.now += LEASE_MS - 1;
      // Another node's call right before the lease would run out sweeps nothing.
      expect(await mem.stats(CH, OTHER)).toEqual({ leases: 0, entries: 0, users: 2, connections: 2 });
      await p.tick();
    }
    expect(await members()).toEqual([['u1', 1], ['u2', 1]]);
    // Without the ticks, the lease runs out: the next call of another node sweeps it.
    clock.now += LEASE_MS;
    expect(await mem.stats(CH, OTHER)).toEqual({ leases: 1, entries: 1, users: 1, connections: 1 });
  });

  it('restores its entries after its lease was swept, with a join for users that vanished', async () => {
    const { p, sw, clock, mem, frames, members } = setup();
    await p.add(CH, session('u1', { n: 1 }), true);
    await p.add(CH, session('u2'), true);
    await mem.add(CH, 'B', [{ conn: 'B.1', user: 'u2', info: undefined }], OTHER);
    // The node stalled past its lease: another node's call sweeps it.
    clock.now += LEASE_MS + 1;
    expect(await mem.renew(CH, 'B', OTHER)).toMatchObject({ leases: 1, entries: 2 });
    expect(await members()).toEqual([['u2', 1]]);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual(['renew', 'resync', 'add']);
    expect(await members()).toEqual([['u1', 1], ['u2', 2]]);
    expect((await mem.presence(CH, 10, OTHER)).members.find((m) => m.user === 'u1')?.info).toBe('{"n":1}');
    expect(frames).toEqual(['join u1', 'join u2', 'leave u1', 'join u1']);
    expect(p.entries()).toBe(2);
    expect(await mem.renew(CH, 'A', OTHER)).toMatchObject({ held: 2, lost: false });
  });

  it('restores its entries when the store lost all of its data', async () => {
    const { p, sw, newStore, frames, members } = setup();
    await p.add(CH, session('u1'), true);
    await p.add(CH, session('u1'), true);
    sw.target = newStore();
    await p.tick();
    expect(await members()).toEqual([['u1', 2]]);
    expect(frames).toEqual(['join u1', 'join u1']);
  });

  it('resyncs when the store holds fewer entries for the node than are subscribed', async () => {
    const { p, sw, mem, conn, frames, members } = setup();
    const s1 = session('u1');
    await p.add(CH, s1, true);
    await p.add(CH, session('u2'), true);
    await mem.remove(CH, 'A', [conn(s1)], OTHER, false);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual(['renew', 'resync', 'add']);
    expect(await members()).toEqual([['u1', 1], ['u2', 1]]);
    expect(frames).toEqual(['join u1', 'join u2', 'leave u1', 'join u1']);
  });

  it('resyncs when the store holds more entries for the node than are subscribed', async () => {
    const { p, sw, mem, frames, members } = setup();
    await p.add(CH, session('u1'), true);
    await mem.add(CH, 'A', [{ conn: 'A.stale', user: 'ghost', info: undefined }], OTHER);
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual(['renew', 'resync']);
    expect(await members()).toEqual([['u1', 1]]);
    expect(frames).toEqual(['join u1', 'join ghost', 'leave ghost']);
  });

  it(`resyncs every channel in full every ${RESYNC_EVERY} ticks, and only then when nothing differs`, async () => {
    const { p, sw } = setup();
    await p.add(CH, session('u1'), true);
    sw.calls.length = 0;
    for (let i = 0; i < RESYNC_EVERY * 2; i++) await p.tick();
    expect(sw.calls.filter((c) => c === 'resync')).toHaveLength(2);
    expect(sw.calls.filter((c) => c === 'renew')).toHaveLength(RESYNC_EVERY * 2 - 2);
  });

  it('releases its lease when the last local connection of a channel goes, and not before', async () => {
    const { p, sw, mem } = setup();
    const s1 = session('u1');
    const s2 = session('u2');
    await p.add(CH, s1, true);
    await p.add(CH, s2, true);
    p.remove(CH, s1);
    await p.tick();
    expect(await mem.stats(CH, OTHER)).toMatchObject({ users: 1, connections: 1 });
    p.remove(CH, s2);
    await drained();
    expect(await mem.stats(CH, OTHER)).toMatchObject({ users: 0, connections: 0 });
    // Released: no lease left (a renewal finds none), and ticks leave the channel alone.
    sw.calls.length = 0;
    await p.tick();
    expect(sw.calls).toEqual([]);
    expect(await mem.renew(CH, 'A', OTHER)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: true });
  });

  it('runs one tick at a time: a tick asked for while one runs is that tick', async () => {
    const { p, sw } = setup();
    await p.add(CH, session('u1'), true);
    await p.add('chat:2', session('u1'), true);
    const gate = deferred();
    sw.held.set('renew', gate.promise);
    sw.calls.length = 0;
    const first = p.tick();
    const second = p.tick();
    expect(second).toBe(first);
    gate.resolve();
    await first;
    expect(sw.calls).toEqual(['renew', 'renew']);
  });

  describe('a renewal in flight while the channel’s last local connection leaves', () => {
    it('does not remove a connection that subscribed meanwhile from the store', async () => {
      const { p, sw, frames, members } = setup();
      const s1 = session('u1');
      await p.add(CH, s1, true);
      const gate = deferred();
      sw.held.set('renew', gate.promise);
      // The tick's renewal reaches the store (held: 1); its reply is on its way back.
      const tick = p.tick();
      // Meanwhile the last local connection leaves (the channel is released) and another one subscribes.
      p.remove(CH, s1);
      await p.add(CH, session('u2'), true);
      expect(await members()).toEqual([['u2', 1]]);
      gate.resolve();
      await tick;
      sw.held.clear();
      expect(p.entries()).toBe(1);
      expect(await members(), 'presence after the tick').toEqual([['u2', 1]]);
      await p.tick();
      expect(frames, 'join/leave frames').toEqual(['join u1', 'leave u1', 'join u2']);
    });

    it('does not take the released lease again', async () => {
      const { p, sw, mem, members } = setup();
      const s1 = session('u1');
      await p.add(CH, s1, true);
      const gate = deferred();
      sw.held.set('renew', gate.promise);
      const tick = p.tick();
      p.remove(CH, s1);
      gate.resolve();
      await tick;
      expect(await members()).toEqual([]);
      // The node holds nothing in the channel and no longer renews it: a lease left
      // there would run out and be swept as a dead node's.
      expect(await mem.renew(CH, 'A', OTHER), 'the lease after the tick').toMatchObject({ leases: 0, entries: 0, held: 0, lost: true });
    });
  });
});
