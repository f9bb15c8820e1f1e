/**
 * The node side of occupancy (src/occupancy/occupancy.ts) against fake
 * stores: an OccupancyStore with occupied/vacated semantics, a Liveness whose
 * answers the test decides, and a presence store that only evicts. Every call
 * that reaches a fake is written to one log, so the order across stores is
 * visible (write-ahead: a channel is listed before it is taken). Ticks and
 * sweeps run by hand (the timers are a day long); nothing waits for time.
 */
import { setImmediate as drained } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createOccupancy, SWEEP_PAGE, type Occupancy, type OccupancyDeps } from '../../src/occupancy/occupancy.js';
import type { DeadMember, Liveness, OccupancyStore, RenewResult } from '../../src/occupancy/store.js';
import type { PresenceCall, PresenceStore } from '../../src/presence/store.js';
import { memoryLog } from '../helpers/broker-contract.js';

const DAY = 86_400_000;
const NODE = 'nodeA';

type LivenessOp = keyof Liveness;

/** A call log shared by the fakes. */
type Log = string[];

function fakeStore(log: Log) {
  const holders = new Map<string, Set<string>>();
  const events: string[] = [];
  /** Calls of these fail before they apply, this many times each. */
  const failAdd = { n: 0 };
  const failRemove = new Set<string>();
  const store: OccupancyStore = {
    add(channel, member, silent) {
      log.push(`add ${channel} ${member}${silent ? ' silent' : ''}`);
      if (failAdd.n > 0) {
        failAdd.n--;
        return Promise.reject(new Error('add failed'));
      }
      let set = holders.get(channel);
      if (!set) holders.set(channel, (set = new Set()));
      if (!set.has(member)) {
        set.add(member);
        if (set.size === 1 && !silent) events.push(`occupied ${channel}`);
      }
      return Promise.resolve();
    },
    remove(channel, member) {
      log.push(`remove ${channel} ${member}`);
      if (failRemove.has(channel)) return Promise.reject(new Error('remove failed'));
      const set = holders.get(channel);
      if (set?.delete(member) && set.size === 0) {
        holders.delete(channel);
        events.push(`vacated ${channel}`);
      }
      return Promise.resolve();
    },
  };
  return { store, holders, events, failAdd, failRemove, holdersOf: (ch: string) => [...(holders.get(ch) ?? [])].sort() };
}

function fakeLiveness(log: Log) {
  const lists = new Map<string, Set<string>>();
  const live = new Set<string>();
  const state = {
    epoch: 'e1',
    /** Members whose next renewal answers added (as if swept), once each. */
    swept: new Set<string>(),
    /** Renewals of these members fail. */
    renewFails: new Set<string>(),
    /** claimDead answers these, in order, then undefined. */
    dead: [] as DeadMember[],
    failOps: new Set<LivenessOp>(),
  };
  const check = (op: LivenessOp): void => {
    if (state.failOps.has(op)) throw new Error(`liveness ${op} failed`);
  };
  const liveness: Liveness = {
    renew(member, ttlMs): Promise<RenewResult> {
      log.push(`renew ${member}`);
      expect(ttlMs).toBeGreaterThan(0);
      if (state.renewFails.has(member)) return Promise.reject(new Error('renew failed'));
      let added = !live.has(member);
      if (state.swept.delete(member)) added = true;
      live.add(member);
      return Promise.resolve({ added, epoch: state.epoch });
    },
    async leave(member) {
      log.push(`leave ${member}`);
      check('leave');
      live.delete(member);
      lists.delete(member);
    },
    async hold(member, channels) {
      log.push(`hold ${member} ${channels.join(',')}`);
      check('hold');
      let set = lists.get(member);
      if (!set) lists.set(member, (set = new Set()));
      for (const c of channels) set.add(c);
    },
    async unhold(member, channels) {
      log.push(`unhold ${member} ${channels.join(',')}`);
      check('unhold');
      for (const c of channels) lists.get(member)?.delete(c);
    },
    async claimDead(claimMs) {
      log.push(`claim ${claimMs}`);
      check('claimDead');
      return state.dead.shift();
    },
    async extend(member) {
      log.push(`extend ${member}`);
      check('extend');
    },
    async held(member, cursor, count) {
      log.push(`held ${member} ${cursor}`);
      check('held');
      const all = [...(lists.get(member) ?? [])].sort();
      const from = Number(cursor);
      const next = from + count;
      return { cursor: next >= all.length ? '0' : String(next), channels: all.slice(from, next) };
    },
    async done(member) {
      log.push(`done ${member}`);
      check('done');
      lists.delete(member);
    },
  };
  return { liveness, lists, state, listOf: (m: string) => [...(lists.get(m) ?? [])].sort() };
}

/** A presence store that only evicts: each channel answers `left` from a script (then 0). */
function fakePresence(log: Log, leftScript: Map<string, number[]> = new Map()) {
  const no = (): never => {
    throw new Error('not used by occupancy');
  };
  const store: PresenceStore = {
    add: no,
    remove: no,
    renew: no,
    resync: no,
    presence: no,
    stats: no,
    evict(channel, node, call) {
      log.push(`evict ${channel} ${node}`);
      expect(call.leaseMs).toBeGreaterThan(0);
      const left = leftScript.get(channel)?.shift() ?? 0;
      return Promise.resolve({ leases: 0, entries: 0, removed: 1, left });
    },
  };
  return store;
}

/** The calls besides claims (a sweep round claims again after each member it swept). */
const work = (r: Rig): string[] => r.log.filter((c) => !c.startsWith('claim '));

interface Rig {
  readonly occ: Occupancy;
  readonly log: Log;
  readonly s: ReturnType<typeof fakeStore>;
  readonly l: ReturnType<typeof fakeLiveness>;
  readonly ops: string[];
  readonly swept: number[];
}

const PRESENCE_CALL: PresenceCall = { joinLeave: true, leaseMs: 30_000 };

function rig(extra: Partial<OccupancyDeps> = {}, leftScript?: Map<string, number[]>): Rig {
  const log: Log = [];
  const s = fakeStore(log);
  const l = fakeLiveness(log);
  const ops: string[] = [];
  const swept: number[] = [];
  const occ = createOccupancy({
    store: s.store,
    liveness: l.liveness,
    node: NODE,
    presence: { store: fakePresence(log, leftScript), presenceCall: (ch) => (ch.startsWith('p:') ? PRESENCE_CALL : undefined) },
    ttlSec: 30,
    tickMs: DAY,
    sweepMs: DAY,
    claimMs: 30_000,
    log: memoryLog(),
    hooks: { op: (op, ok) => void ops.push(`${op} ${ok ? 'ok' : 'error'}`), swept: (n) => void swept.push(n) },
    ...extra,
  });
  return { occ, log, s, l, ops, swept };
}

async function started(extra: Partial<OccupancyDeps> = {}, leftScript?: Map<string, number[]>): Promise<Rig> {
  const r = rig(extra, leftScript);
  await r.occ.start();
  expect(r.occ.member()).toBe(`${NODE}#0`);
  r.log.length = 0;
  return r;
}

async function settle(r: Rig): Promise<void> {
  await r.occ.settle(5000);
  await drained();
}

describe('occupancy (node side)', () => {
  it('writes a channel into its list before taking it, and lets go before unlisting it', async () => {
    const r = await started();
    r.occ.hold('c:1');
    await settle(r);
    expect(r.log).toEqual(['hold nodeA#0 c:1', 'add c:1 nodeA#0']);
    expect(r.l.listOf('nodeA#0')).toEqual(['c:1']);
    expect(r.s.events).toEqual(['occupied c:1']);
    r.occ.release('c:1');
    await settle(r);
    expect(r.log.slice(2)).toEqual(['remove c:1 nodeA#0', 'unhold nodeA#0 c:1']);
    expect(r.l.listOf('nodeA#0')).toEqual([]);
    expect(r.s.events).toEqual(['occupied c:1', 'vacated c:1']);
    expect(r.occ.size()).toBe(0);
    await r.occ.stop(false);
  });

  it('resolves a hold only once the store holds the channel (a subscribe answered after it is counted cluster-wide)', async () => {
    const r = await started();
    r.log.length = 0;
    const held = r.occ.hold('c:w');
    let done = false;
    void held.then(() => (done = true));
    // Synchronously after hold(): the listing is in flight, the add not made yet.
    expect(r.log).toEqual(['hold nodeA#0 c:w']);
    expect(done).toBe(false);
    await held;
    expect(r.log).toEqual(['hold nodeA#0 c:w', 'add c:w nodeA#0']);
    expect(r.s.holdersOf('c:w')).toEqual(['nodeA#0']);
    // A failed add resolves the hold too (the tick tries again; the subscribe is not refused for it).
    r.s.failAdd.n = 1;
    await r.occ.hold('c:f');
    expect(r.s.holdersOf('c:f')).toEqual([]);
    await r.occ.tick();
    await settle(r);
    expect(r.s.holdersOf('c:f')).toEqual(['nodeA#0']);
    await r.occ.stop(false);
  });

  it('hold then release in quick succession ends without the member, through a consistent sequence of calls', async () => {
    for (const pattern of [['hold', 'release'], ['hold', 'release', 'hold', 'release'], ['hold', 'release', 'hold']]) {
      const r = await started();
      for (const p of pattern) if (p === 'hold') r.occ.hold('c:q');
      else r.occ.release('c:q');
      await settle(r);
      const wantHeld = pattern.at(-1) === 'hold';
      expect(r.s.holdersOf('c:q'), pattern.join(',')).toEqual(wantHeld ? ['nodeA#0'] : []);
      expect(r.l.listOf('nodeA#0'), pattern.join(',')).toEqual(wantHeld ? ['c:q'] : []);
      // Events alternate, starting with occupied.
      r.s.events.forEach((e, i) => expect(e, `${pattern.join(',')}: event ${i}`).toBe(i % 2 === 0 ? 'occupied c:q' : 'vacated c:q'));
      expect(r.s.events.length % 2, pattern.join(',')).toBe(wantHeld ? 1 : 0);
      // Every add follows its hold, every unhold its remove.
      for (const [i, call] of r.log.entries()) {
        if (call.startsWith('add ')) expect(r.log[i - 1], r.log.join(' | ')).toBe('hold nodeA#0 c:q');
        if (call.startsWith('unhold ')) expect(r.log[i - 1], r.log.join(' | ')).toBe('remove c:q nodeA#0');
      }
      expect(r.occ.size()).toBe(wantHeld ? 1 : 0);
      await r.occ.stop(false);
    }
  });

  it('tries a failed add again at the next tick', async () => {
    const r = await started();
    r.s.failAdd.n = 1;
    r.occ.hold('c:f');
    await settle(r);
    expect(r.s.holdersOf('c:f')).toEqual([]);
    expect(r.ops).toContain('add error');
    // Listed anyway (write-ahead): a death now would sweep it, harmlessly.
    expect(r.l.listOf('nodeA#0')).toEqual(['c:f']);
    await r.occ.tick();
    await settle(r);
    expect(r.s.holdersOf('c:f')).toEqual(['nodeA#0']);
    expect(r.s.events).toEqual(['occupied c:f']);
    expect(r.ops.filter((o) => o.startsWith('add'))).toEqual(['add error', 'add ok']);
    await r.occ.stop(false);
  });

  it('tries a failed remove again at the next tick, and unlists only after the remove went through', async () => {
    const r = await started();
    r.occ.hold('c:r');
    await settle(r);
    r.s.failRemove.add('c:r');
    r.occ.release('c:r');
    await settle(r);
    expect(r.s.holdersOf('c:r')).toEqual(['nodeA#0']);
    expect(r.l.listOf('nodeA#0')).toEqual(['c:r']);
    r.s.failRemove.clear();
    await r.occ.tick();
    await settle(r);
    expect(r.s.holdersOf('c:r')).toEqual([]);
    expect(r.l.listOf('nodeA#0')).toEqual([]);
    expect(r.occ.size()).toBe(0);
    await r.occ.stop(false);
  });

  it('takes nothing before its liveness entry exists, then everything wished for once it does', async () => {
    const r = rig();
    r.l.state.renewFails.add('nodeA#0');
    await r.occ.start();
    r.occ.hold('c:early');
    await settle(r);
    expect(r.log.filter((c) => !c.startsWith('renew'))).toEqual([]);
    r.l.state.renewFails.clear();
    await r.occ.tick();
    await settle(r);
    expect(r.s.holdersOf('c:early')).toEqual(['nodeA#0']);
    expect(r.occ.member()).toBe('nodeA#0');
    await r.occ.stop(false);
  });

  for (const dataLost of [false, true]) {
    it(`switches to a new generation when a renewal finds its entry gone and takes every held channel again, ${dataLost ? 'silently after a data loss (new epoch)' : 'announcing them after a sweep (same epoch)'}`, async () => {
      const r = await started();
      for (const ch of ['c:1', 'c:2', 'c:3']) r.occ.hold(ch);
      await settle(r);
      r.occ.release('c:3');
      await settle(r);
      if (dataLost) {
        r.l.state.epoch = 'e2';
        r.s.holders.clear();
        r.l.lists.clear();
      } else {
        // The sweep of another node removed this node's channels (vacated each).
        for (const ch of ['c:1', 'c:2']) await r.s.store.remove(ch, 'nodeA#0');
      }
      r.l.state.swept.add('nodeA#0');
      r.log.length = 0;
      r.s.events.length = 0;
      await r.occ.tick();
      await settle(r);
      expect(r.occ.member()).toBe('nodeA#1');
      expect(r.log[0]).toBe('renew nodeA#0');
      expect(r.log[1]).toBe('renew nodeA#1');
      const s = dataLost ? ' silent' : '';
      // Each channel: listed and taken under the new generation, then let go of under the old one (no vacated: the new one holds it).
      expect(r.log.slice(2).sort()).toEqual(
        ['add c:1 nodeA#1' + s, 'add c:2 nodeA#1' + s, 'hold nodeA#1 c:1', 'hold nodeA#1 c:2', 'remove c:1 nodeA#0', 'remove c:2 nodeA#0', 'unhold nodeA#0 c:1', 'unhold nodeA#0 c:2'].sort(),
      );
      for (const ch of ['c:1', 'c:2']) {
        expect(r.log.indexOf(`hold nodeA#1 ${ch}`)).toBeLessThan(r.log.indexOf(`add ${ch} nodeA#1${s}`));
        expect(r.log.indexOf(`add ${ch} nodeA#1${s}`)).toBeLessThan(r.log.indexOf(`remove ${ch} nodeA#0`));
        expect(r.s.holdersOf(ch)).toEqual(['nodeA#1']);
      }
      expect(r.l.listOf('nodeA#1')).toEqual(['c:1', 'c:2']);
      expect(r.s.events.sort()).toEqual(dataLost ? [] : ['occupied c:1', 'occupied c:2']);
      // The next tick renews the new generation only, and changes nothing else.
      r.log.length = 0;
      await r.occ.tick();
      await settle(r);
      expect(r.log).toEqual(['renew nodeA#1']);
      // Later holds are loud again.
      r.occ.hold('c:4');
      await settle(r);
      expect(r.log.slice(1)).toEqual(['hold nodeA#1 c:4', 'add c:4 nodeA#1']);
      await r.occ.stop(false);
    });
  }

  it('takes nothing under a new generation whose registration failed, and does not switch again once it registers', async () => {
    const r = await started();
    r.occ.hold('c:1');
    await settle(r);
    r.l.state.swept.add('nodeA#0');
    r.l.state.renewFails.add('nodeA#1');
    r.log.length = 0;
    await r.occ.tick();
    await settle(r);
    expect(r.occ.member()).toBe('nodeA#1');
    // No entry for nodeA#1: a channel taken under it now would never be swept if this node died.
    expect(r.log).toEqual(['renew nodeA#0', 'renew nodeA#1']);
    r.l.state.renewFails.clear();
    await r.occ.tick();
    await settle(r);
    expect(r.occ.member()).toBe('nodeA#1');
    expect(r.log.slice(2, 5)).toEqual(['renew nodeA#1', 'hold nodeA#1 c:1', 'add c:1 nodeA#1']);
    expect(r.s.holdersOf('c:1')).toEqual(['nodeA#1']);
    await r.occ.stop(false);
  });

  it('lets go of a channel held under an old generation when it is released before it was taken again', async () => {
    const r = await started();
    r.occ.hold('c:old');
    await settle(r);
    // The renewal finds the entry gone, and registering the new generation fails (Redis blinked).
    r.l.state.swept.add('nodeA#0');
    r.l.state.renewFails.add('nodeA#1');
    await r.occ.tick();
    await settle(r);
    expect(r.occ.member()).toBe('nodeA#1');
    // Released while unregistered; the next tick registers.
    r.occ.release('c:old');
    r.l.state.renewFails.clear();
    await r.occ.tick();
    await settle(r);
    expect(r.s.holdersOf('c:old'), 'the store still counts this node as a holder').toEqual([]);
    expect(r.occ.size(), 'the channel state is kept for good').toBe(0);
    await r.occ.stop(true);
    expect(r.log.at(-1)).toBe('leave nodeA#1');
  });

  describe('sweep', () => {
    /** A dead member `dead#3` whose list holds presence channels p:0.. and plain channels c:0.. */
    async function deadRig(presence: number, plain: number, baseAlive: boolean, leftScript?: Map<string, number[]>): Promise<Rig & { channels: string[] }> {
      const r = await started({}, leftScript);
      const channels = [...Array.from({ length: presence }, (_, i) => `p:${i}`), ...Array.from({ length: plain }, (_, i) => `c:${i}`)];
      await r.l.liveness.hold('dead#3', channels);
      for (const ch of channels) await r.s.store.add(ch, 'dead#3', false);
      r.l.state.dead.push({ member: 'dead#3', baseAlive });
      r.log.length = 0;
      r.s.events.length = 0;
      return { ...r, channels };
    }

    it('evicts presence of the dead node on presence channels only, removes occupancy of every channel, extends per page, then done', async () => {
      const r = await deadRig(130, 120, false, new Map([['p:7', [2, 1, 0]]]));
      expect(await r.occ.sweep()).toBe(1);
      const evicts = r.log.filter((c) => c.startsWith('evict '));
      // Base name (generation stripped); p:7 until nothing is left of it.
      expect(new Set(evicts)).toEqual(new Set(Array.from({ length: 130 }, (_, i) => `evict p:${i} dead`)));
      expect(evicts.filter((c) => c === 'evict p:7 dead')).toHaveLength(3);
      expect(evicts).toHaveLength(132);
      const removes = r.log.filter((c) => c.startsWith('remove '));
      expect(removes.sort()).toEqual(r.channels.map((ch) => `remove ${ch} dead#3`).sort());
      for (const ch of r.channels) expect(r.s.holdersOf(ch)).toEqual([]);
      expect(r.s.events).toHaveLength(250);
      // A presence channel's eviction comes before its occupancy removal.
      expect(r.log.indexOf('evict p:0 dead')).toBeLessThan(r.log.indexOf('remove p:0 dead#3'));
      const pages = Math.ceil(250 / SWEEP_PAGE);
      expect(r.log.filter((c) => c.startsWith('held dead#3'))).toHaveLength(pages);
      expect(r.log.filter((c) => c === 'extend dead#3')).toHaveLength(pages);
      expect(work(r).at(-1)).toBe('done dead#3');
      expect(r.log.filter((c) => c.startsWith('done'))).toHaveLength(1);
      // Each page's extend follows that page's work: the last extend after the last remove.
      expect(r.log.lastIndexOf('extend dead#3')).toBeGreaterThan(Math.max(...removes.map((c) => r.log.indexOf(c))));
      expect(r.swept).toEqual([250]);
      expect(r.ops).toContain('sweep ok');
      expect(r.l.listOf('dead#3')).toEqual([]);
      await r.occ.stop(false);
    });

    it('leaves presence alone when another generation of the dead node is alive, and still removes its occupancy', async () => {
      const r = await deadRig(3, 2, true);
      expect(await r.occ.sweep()).toBe(1);
      expect(r.log.filter((c) => c.startsWith('evict '))).toEqual([]);
      expect(r.log.filter((c) => c.startsWith('remove ')).sort()).toEqual(r.channels.map((ch) => `remove ${ch} dead#3`).sort());
      expect(work(r).at(-1)).toBe('done dead#3');
      await r.occ.stop(false);
    });

    it('keeps the claim (no done) when a step fails, so the list is swept again later', async () => {
      const r = await deadRig(2, 3, false);
      r.s.failRemove.add('c:1');
      expect(await r.occ.sweep()).toBe(0);
      expect(r.log.filter((c) => c.startsWith('done'))).toEqual([]);
      expect(r.ops).toContain('sweep error');
      expect(r.swept).toEqual([]);
      expect(r.l.listOf('dead#3')).toEqual(r.channels.slice().sort());
      // The claim ran out; a sweep (here or elsewhere) takes the same list again and completes.
      r.s.failRemove.clear();
      r.l.state.dead.push({ member: 'dead#3', baseAlive: false });
      expect(await r.occ.sweep()).toBe(1);
      expect(work(r).at(-1)).toBe('done dead#3');
      for (const ch of r.channels) expect(r.s.holdersOf(ch)).toEqual([]);
      // Each channel's vacated once, although two sweeps removed it.
      expect(r.s.events.sort()).toEqual(r.channels.map((ch) => `vacated ${ch}`).sort());
      await r.occ.stop(false);
    });

    it('keeps the claim when reading a page or extending the claim fails', async () => {
      for (const op of ['held', 'extend'] as const) {
        const r = await deadRig(1, 1, false);
        r.l.state.failOps.add(op);
        expect(await r.occ.sweep(), op).toBe(0);
        expect(r.log.filter((c) => c.startsWith('done')), op).toEqual([]);
        await r.occ.stop(false);
      }
    });

    it('sweeps nothing without a dead member', async () => {
      const r = await started();
      expect(await r.occ.sweep()).toBe(0);
      expect(r.log).toEqual(['claim 30000']);
      await r.occ.stop(false);
    });
  });

  describe('stop', () => {
    it('leaves (entry and list) on stop(true) when nothing is held', async () => {
      const r = await started();
      r.occ.hold('c:1');
      await settle(r);
      r.occ.release('c:1');
      await settle(r);
      await r.occ.stop(true);
      expect(r.log.at(-1)).toBe('leave nodeA#0');
    });

    it('does not leave while a channel is held (its entry runs out and a sweep cleans up), nor on stop(false)', async () => {
      const r = await started();
      r.occ.hold('c:1');
      await settle(r);
      await r.occ.stop(true);
      expect(r.log.filter((c) => c.startsWith('leave'))).toEqual([]);
      expect(r.l.listOf('nodeA#0')).toEqual(['c:1']);
      const q = await started();
      await q.occ.stop(false);
      expect(q.log.filter((c) => c.startsWith('leave'))).toEqual([]);
    });

    it('takes nothing after stop', async () => {
      const r = await started();
      await r.occ.stop(false);
      r.occ.hold('c:late');
      await settle(r);
      expect(r.log).toEqual([]);
    });
  });
});
