/**
 * The behaviour every PresenceStore must have, exercised through a real
 * broker (`broker.presence`) that is subscribed to the channel, so `join` and
 * `leave` frames arrive the way they do in the gateway: through onMessage.
 * Run it with `runPresenceContract({ name, newBroker, sharedBackend, redis })`.
 *
 * Nodes are only names here: two names on one store stand for two gateway
 * nodes. A node "dies" by no longer calling; its short lease then runs out and
 * a call of another node (or a read) sweeps it. Lease expiry is waited for by
 * polling the store through its own calls (with a guard), never by sleeping.
 *
 * Absence of frames is proven with a sentinel: after the calls, a sentinel
 * frame is published on the channel through the same broker; presence frames
 * are published on the same connection (Redis) or synchronously (memory), so
 * once the sentinel arrived, every frame of the earlier calls has too.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { presenceKeys } from '../../src/broker/redis-presence.js';
import type { PresenceCall, PresenceEntry, PresenceMember, PresenceStore, Swept } from '../../src/presence/store.js';
import { eventHead } from '../../src/webhooks/events.js';
import { webhookOutboxKey } from '../../src/webhooks/queue.js';
import { Recorder } from './broker-contract.js';

/** Raw access to the Redis behind a broker (for key names and TTLs, and to lose data). */
export interface PresenceRedisAccess {
  /** Runs a command (redis-cli, raw output lines) on the Redis node that holds `key`. */
  cli(key: string, ...args: string[]): Promise<string[]>;
  /** FLUSHALL on every node that holds data. */
  flushAll(): Promise<void>;
}

export interface PresenceContractOptions {
  readonly name: string;
  /** A new, unstarted broker with presence whose keys outlive their last write by `keysTtlMs` (the memory broker ignores it). */
  readonly newBroker: (keysTtlMs: number) => Broker;
  /** True for multi-node brokers: the cross-instance cases run. */
  readonly sharedBackend: boolean;
  /** Redis-backed brokers (default key prefix `pubgate:`): the key and data-loss cases run. */
  readonly redis?: PresenceRedisAccess;
  /**
   * The same broker created with webhooks (`broker.webhooks`): member events go
   * to the channel's outbox, read back through `webhooks.queue.peek`.
   */
  readonly newWebhookBroker?: (keysTtlMs: number) => Broker;
}

/** Keys TTL of the brokers, except where a case asks for a short one. */
const KEYS_TTL_MS = 120_000;
/** Lease of a node that stays alive during a case. */
const LONG_MS = 60_000;
/** Lease of a node that dies during a case. */
const SHORT_MS = 300;

const LIVE: PresenceCall = { joinLeave: true, leaseMs: LONG_MS };
const DYING: PresenceCall = { joinLeave: true, leaseMs: SHORT_MS };
const QUIET: PresenceCall = { joinLeave: false, leaseMs: LONG_MS };

interface Frame {
  readonly type: string;
  readonly channel?: string;
  readonly user?: string;
  readonly info?: unknown;
}

interface Room {
  readonly b: Broker;
  readonly r: Recorder;
  readonly p: PresenceStore;
  readonly ch: string;
  marks: number;
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** An entry of `node`: conn `<node>.<n>`. */
function entry(node: string, n: number | string, user: string, info?: object): PresenceEntry {
  return { conn: `${node}.${n}`, user, info: info === undefined ? undefined : JSON.stringify(info) };
}

function sortByUser<T extends { readonly user?: string | undefined }>(list: readonly T[]): T[] {
  return [...list].sort((a, b) => ((a.user ?? '') < (b.user ?? '') ? -1 : (a.user ?? '') > (b.user ?? '') ? 1 : 0));
}
const byUser = (members: readonly PresenceMember[]): PresenceMember[] => sortByUser(members);

/** Members as plain objects (info parsed), sorted by user. */
function plain(members: readonly PresenceMember[]): Array<{ user: string; info?: unknown; conns: number }> {
  return byUser(members).map((m) => ({ user: m.user, ...(m.info !== undefined ? { info: JSON.parse(m.info) as unknown } : {}), conns: m.conns }));
}

/**
 * Calls `call` until `done(total)` holds for the sum of what the calls swept;
 * answers that sum and the last call's result. `guardMs` only turns a hang into
 * a readable failure.
 */
async function sweepUntil<T extends Swept>(call: () => Promise<T>, done: (total: Swept) => boolean, what: string, guardMs = 30_000): Promise<{ total: Swept; last: T }> {
  const total = { leases: 0, entries: 0 };
  const deadline = Date.now() + guardMs;
  for (;;) {
    const last = await call();
    total.leases += last.leases;
    total.entries += last.entries;
    if (done(total)) return { total, last };
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}; swept so far ${JSON.stringify(total)}`);
    await delay(25);
  }
}

export function runPresenceContract(opts: PresenceContractOptions): void {
  describe(`PresenceStore contract: ${opts.name}`, () => {
    const open: Broker[] = [];

    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()));
    });

    async function readyBroker(keysTtlMs = KEYS_TTL_MS): Promise<{ b: Broker; r: Recorder; p: PresenceStore }> {
      const b = opts.newBroker(keysTtlMs);
      open.push(b);
      const r = new Recorder();
      await b.start(r);
      await r.untilStatus('ready');
      if (!b.presence) throw new Error('the broker was created with presence options but has no presence store');
      return { b, r, p: b.presence };
    }

    /** A started broker subscribed to a fresh channel. */
    async function room(keysTtlMs = KEYS_TTL_MS, ch = `p${randomUUID().slice(0, 8)}:room`): Promise<Room> {
      const x = await readyBroker(keysTtlMs);
      await x.b.subscribe(ch);
      return { ...x, ch, marks: 0 };
    }

    /** Every presence frame the room got so far, once the calls made before are known to have published theirs. */
    async function settled(x: Room): Promise<Frame[]> {
      const mark = `{"type":"sentinel","n":${++x.marks}}`;
      await x.b.publish(x.ch, mark);
      await x.r.untilReceived(x.ch, mark);
      return x.r
        .got(x.ch)
        .map((f) => JSON.parse(f) as Frame)
        .filter((f) => f.type !== 'sentinel');
    }
    /** The raw texts of the presence frames (after `settled`). */
    const rawFrames = (x: Room): string[] => x.r.got(x.ch).filter((f) => !f.startsWith('{"type":"sentinel"'));

    const join = (x: Room, user: string, info?: object): Frame => ({ type: 'join', channel: x.ch, user, ...(info !== undefined ? { info } : {}) });
    const leave = (x: Room, user: string): Frame => ({ type: 'leave', channel: x.ch, user });

    it('publishes join for a user’s first connection and leave for its last, once each and in order', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1')], LIVE);
      await x.p.add(x.ch, 'A', [entry('A', 2, 'u2')], LIVE);
      await x.p.add(x.ch, 'A', [entry('A', 3, 'u1')], LIVE);
      // The same connection again: skipped.
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1')], LIVE);
      expect(await x.p.stats(x.ch, LIVE)).toEqual({ leases: 0, entries: 0, users: 2, connections: 3 });
      await x.p.remove(x.ch, 'A', ['A.1'], LIVE, false);
      // Absent connections are skipped, and so are another node's.
      await x.p.remove(x.ch, 'A', ['A.9', 'A.1'], LIVE, false);
      await x.p.remove(x.ch, 'B', ['A.3'], LIVE, false);
      expect(await x.p.stats(x.ch, LIVE)).toEqual({ leases: 0, entries: 0, users: 2, connections: 2 });
      expect(await settled(x)).toEqual([join(x, 'u1'), join(x, 'u2')]);
      await x.p.remove(x.ch, 'A', ['A.2'], LIVE, false);
      await x.p.remove(x.ch, 'A', ['A.3'], LIVE, true);
      expect(await settled(x)).toEqual([join(x, 'u1'), join(x, 'u2'), leave(x, 'u2'), leave(x, 'u1')]);
      expect(await x.p.stats(x.ch, LIVE)).toEqual({ leases: 0, entries: 0, users: 0, connections: 0 });
    });

    it('publishes frames in the order of the changes when many calls of two nodes are in flight', async () => {
      const x = await room();
      const users = Array.from({ length: 40 }, (_, i) => `u${i}`);
      // Both nodes add every user at once: one join per user, whichever node came first.
      await Promise.all(users.flatMap((u, i) => [x.p.add(x.ch, 'A', [entry('A', i, u)], LIVE), x.p.add(x.ch, 'B', [entry('B', i, u)], LIVE)]));
      expect(await settled(x)).toEqual(users.map((u) => join(x, u)));
      // A leaves everywhere first, then B: the leaves come with B's removals, in their order.
      await Promise.all(users.map((_, i) => x.p.remove(x.ch, 'A', [`A.${i}`], LIVE, false)));
      await Promise.all(users.map((_, i) => x.p.remove(x.ch, 'B', [`B.${i}`], LIVE, false)));
      const all = await settled(x);
      expect(all.slice(users.length)).toEqual(users.map((u) => leave(x, u)));
    });

    it('counts a user with two connections as one member with conns 2: no second join, no leave until the last goes', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'ann', { tab: 1 })], LIVE);
      await x.p.add(x.ch, 'B', [entry('B', 1, 'ann', { tab: 2 })], LIVE);
      const both = await x.p.presence(x.ch, 10, LIVE);
      expect(plain(both.members)).toEqual([{ user: 'ann', info: { tab: 1 }, conns: 2 }]);
      expect(both).toMatchObject({ users: 1, connections: 2, truncated: false, leases: 0, entries: 0 });
      expect(await settled(x)).toEqual([join(x, 'ann', { tab: 1 })]);
      await x.p.remove(x.ch, 'A', ['A.1'], LIVE, true);
      const one = await x.p.presence(x.ch, 10, LIVE);
      expect(plain(one.members)).toEqual([{ user: 'ann', info: { tab: 2 }, conns: 1 }]);
      expect(await settled(x)).toEqual([join(x, 'ann', { tab: 1 })]);
      await x.p.remove(x.ch, 'B', ['B.1'], LIVE, true);
      expect(await settled(x)).toEqual([join(x, 'ann', { tab: 1 }), leave(x, 'ann')]);
      expect(await x.p.presence(x.ch, 10, LIVE)).toEqual({ leases: 0, entries: 0, members: [], users: 0, connections: 0, truncated: false });
    });

    it('shows the info of a user’s oldest connection still present, then of the next oldest', async () => {
      const x = await room();
      // Added in this order (not the order of their ids): A.5, then A.2 and B.1 in one call each, then A.0 without info.
      await x.p.add(x.ch, 'A', [entry('A', 5, 'u', { n: 1 })], LIVE);
      await x.p.add(x.ch, 'A', [entry('A', 2, 'u', { n: 2 }), entry('A', 3, 'other', { n: 9 })], LIVE);
      await x.p.add(x.ch, 'B', [entry('B', 1, 'u', { n: 3 })], LIVE);
      await x.p.add(x.ch, 'A', [entry('A', 0, 'u')], LIVE);
      const infoOfU = async (): Promise<unknown> => plain((await x.p.presence(x.ch, 10, LIVE)).members).find((m) => m.user === 'u')?.info;
      expect(await infoOfU()).toEqual({ n: 1 });
      await x.p.remove(x.ch, 'A', ['A.5'], LIVE, false);
      expect(await infoOfU()).toEqual({ n: 2 });
      await x.p.remove(x.ch, 'A', ['A.2'], LIVE, false);
      expect(await infoOfU()).toEqual({ n: 3 });
      await x.p.remove(x.ch, 'B', ['B.1'], LIVE, false);
      // The oldest left has no info: the member has none (not a younger one's).
      const last = await x.p.presence(x.ch, 10, LIVE);
      expect(byUser(last.members)).toEqual([
        { user: 'other', info: '{"n":9}', conns: 1 },
        { user: 'u', info: undefined, conns: 1 },
      ]);
      // Re-adding A.5 makes it the youngest: A.0 stays the oldest.
      await x.p.add(x.ch, 'A', [entry('A', 5, 'u', { n: 1 })], LIVE);
      expect(await infoOfU()).toBeUndefined();
    });

    it('gives a member without info no info, and its join frame no info key', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'bare')], LIVE);
      await x.p.add(x.ch, 'A', [entry('A', 2, 'bare', { late: true })], LIVE);
      const snap = await x.p.presence(x.ch, 10, LIVE);
      expect(snap.members).toEqual([{ user: 'bare', info: undefined, conns: 2 }]);
      expect(snap.members[0]?.info).toBeUndefined();
      expect(await settled(x)).toEqual([join(x, 'bare')]);
      expect(rawFrames(x)).toEqual([`{"type":"join","channel":"${x.ch}","user":"bare"}`]);
    });

    it('keeps users apart whose names need JSON escaping or are prefixes of one another', async () => {
      const x = await room();
      const users = [
        'ab', // before its prefix, so an oldest-connection lookup by prefix would find it for "a"
        'a',
        'a"b',
        'a\\b',
        '\\',
        '"',
        '',
        'a:b',
        '3:"a"',
        'Zoë',
        '漢字',
        '😀',
        '\u2028\u0000\n\t',
        '\ud800',
        'x'.repeat(9),
        'x'.repeat(10),
        'x'.repeat(300),
        '{"type":"leave"}',
      ];
      // Each user twice (the second connection younger), with its own info.
      for (const [i, u] of users.entries()) await x.p.add(x.ch, 'A', [entry('A', `${i}a`, u, { i, u })], LIVE);
      for (const [i, u] of users.entries()) await x.p.add(x.ch, 'A', [entry('A', `${i}b`, u, { i: -i })], LIVE);
      const snap = await x.p.presence(x.ch, 100, LIVE);
      expect(snap).toMatchObject({ users: users.length, connections: users.length * 2, truncated: false });
      expect(plain(snap.members)).toEqual(sortByUser(users.map((u, i) => ({ user: u, info: { i, u }, conns: 2 }))));
      // Removing a's connections leaves ab alone (and the other way round).
      const ia = users.indexOf('a');
      await x.p.remove(x.ch, 'A', [`A.${ia}a`], LIVE, false);
      const afterA = plain((await x.p.presence(x.ch, 100, LIVE)).members);
      expect(afterA.find((m) => m.user === 'a')).toEqual({ user: 'a', info: { i: -ia }, conns: 1 });
      expect(afterA.find((m) => m.user === 'ab')).toEqual({ user: 'ab', info: { i: 0, u: 'ab' }, conns: 2 });
      await x.p.remove(x.ch, 'A', [`A.${ia}b`], LIVE, false);
      for (const [i, u] of users.entries()) if (u !== 'a') await x.p.remove(x.ch, 'A', [`A.${i}a`, `A.${i}b`], LIVE, false);
      const frames = await settled(x);
      expect(frames).toEqual([
        ...users.map((u, i) => join(x, u, { i, u })),
        leave(x, 'a'),
        ...users.filter((u) => u !== 'a').map((u) => leave(x, u)),
      ]);
      expect(await x.p.stats(x.ch, LIVE)).toMatchObject({ users: 0, connections: 0 });
    });

    it('lists at most max members, says truncated, and keeps users and connections exact', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u2'), entry('A', 3, 'u3', { k: 3 })], LIVE);
      await x.p.add(x.ch, 'B', [entry('B', 1, 'u3'), entry('B', 2, 'u4'), entry('B', 3, 'u5'), entry('B', 4, 'u3')], LIVE);
      const all = [
        { user: 'u1', conns: 1 },
        { user: 'u2', conns: 1 },
        { user: 'u3', info: { k: 3 }, conns: 3 },
        { user: 'u4', conns: 1 },
        { user: 'u5', conns: 1 },
      ];
      for (const max of [0, 1, 2, 4]) {
        const s = await x.p.presence(x.ch, max, LIVE);
        expect(s.members, `max ${max}`).toHaveLength(max);
        expect(new Set(s.members.map((m) => m.user)).size, `max ${max}: distinct users`).toBe(max);
        for (const m of plain(s.members)) expect(all, `max ${max}`).toContainEqual(m);
        expect(s).toMatchObject({ users: 5, connections: 7, truncated: true });
      }
      for (const max of [5, 6, 1000]) {
        const s = await x.p.presence(x.ch, max, LIVE);
        expect(plain(s.members), `max ${max}`).toEqual(all);
        expect(s).toMatchObject({ users: 5, connections: 7, truncated: false });
      }
      expect(await x.p.stats(x.ch, LIVE)).toEqual({ leases: 0, entries: 0, users: 5, connections: 7 });
    });

    it('answers empty presence and stats for a channel nobody is in, and keeps channels apart', async () => {
      const x = await room();
      const empty = { leases: 0, entries: 0, members: [], users: 0, connections: 0, truncated: false };
      expect(await x.p.presence(`${x.ch}:never`, 10, LIVE)).toEqual(empty);
      expect(await x.p.stats(`${x.ch}:never`, LIVE)).toEqual({ leases: 0, entries: 0, users: 0, connections: 0 });
      // The same connection in two channels is two entries, one per channel.
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u')], LIVE);
      await x.p.add(`${x.ch}:2`, 'A', [entry('A', 1, 'u')], QUIET);
      await x.p.remove(`${x.ch}:2`, 'A', ['A.1'], QUIET, true);
      expect(await x.p.presence(`${x.ch}:2`, 10, LIVE)).toEqual(empty);
      expect(plain((await x.p.presence(x.ch, 10, LIVE)).members)).toEqual([{ user: 'u', conns: 1 }]);
      // A read takes no lease and stores nothing.
      expect(await x.p.presence(`${x.ch}:never`, 10, LIVE)).toEqual(empty);
    });

    it('resync removes the node’s entries that are not kept and answers which kept ones are missing', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u2'), entry('A', 3, 'both'), entry('A', 5, 'u5')], LIVE);
      await x.p.add(x.ch, 'B', [entry('B', 1, 'both'), entry('B', 2, 'b2')], LIVE);
      const r = await x.p.resync(x.ch, 'A', ['A.2', 'A.4', 'A.1', 'B.2', 'A.6'], LIVE);
      expect(r.leases).toBe(0);
      expect(r.entries).toBe(0);
      // B.2 is B's, not A's: missing for A as well.
      expect([...r.missing].sort()).toEqual(['A.4', 'A.6', 'B.2']);
      const snap = await x.p.presence(x.ch, 10, LIVE);
      expect(plain(snap.members)).toEqual([
        { user: 'b2', conns: 1 },
        { user: 'both', conns: 1 },
        { user: 'u1', conns: 1 },
        { user: 'u2', conns: 1 },
      ]);
      expect(snap.connections).toBe(4);
      // u5 lost its only connection; "both" keeps B's.
      expect(await settled(x)).toEqual([join(x, 'u1'), join(x, 'u2'), join(x, 'both'), join(x, 'u5'), join(x, 'b2'), leave(x, 'u5')]);
      // An empty keep list removes all of the node's entries, and B's stay.
      expect((await x.p.resync(x.ch, 'A', [], LIVE)).missing).toEqual([]);
      expect(plain((await x.p.presence(x.ch, 10, LIVE)).members)).toEqual([
        { user: 'b2', conns: 1 },
        { user: 'both', conns: 1 },
      ]);
      // The leaves of one call come in no particular order among themselves.
      expect(sortByUser((await settled(x)).slice(6))).toEqual([leave(x, 'u1'), leave(x, 'u2')]);
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: false });
    });

    it('renew answers the entries held for the node and whether its lease was lost', async () => {
      const x = await room();
      // No lease yet: lost (the node would resync).
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: true });
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: false });
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u1')], LIVE);
      await x.p.add(x.ch, 'B', [entry('B', 1, 'u2')], LIVE);
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 2, lost: false });
      expect(await x.p.renew(x.ch, 'B', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 1, lost: false });
      // With entries left, release keeps the lease; without, it drops it.
      await x.p.remove(x.ch, 'A', ['A.1'], LIVE, true);
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 1, lost: false });
      await x.p.remove(x.ch, 'A', ['A.2'], LIVE, true);
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: true });
      // Without release the lease stays.
      await x.p.remove(x.ch, 'B', ['B.1'], LIVE, false);
      expect(await x.p.renew(x.ch, 'B', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: false });
    });

    it('reports a lease lost once it expired and another call swept it', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1')], DYING);
      await x.p.add(x.ch, 'B', [entry('B', 1, 'u2')], LIVE);
      await sweepUntil(() => x.p.renew(x.ch, 'B', LIVE), (t) => t.leases >= 1, "A's lease to expire");
      // A comes back (it had stalled): its lease and entries are gone.
      expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: true });
      expect((await x.p.resync(x.ch, 'A', ['A.1'], LIVE)).missing).toEqual(['A.1']);
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1')], LIVE);
      expect(await settled(x)).toEqual([join(x, 'u1'), join(x, 'u2'), leave(x, 'u1'), join(x, 'u1')]);
    });

    const sweepers: Array<[string, (x: Room) => Promise<Swept & { connections?: number }>]> = [
      ['a renew of the live node', (x) => x.p.renew(x.ch, 'B', LIVE)],
      ['an add of the live node', (x) => x.p.add(x.ch, 'B', [entry('B', 9, 'late')], LIVE)],
      ['a remove of the live node', (x) => x.p.remove(x.ch, 'B', ['B.8'], LIVE, false)],
      ['a resync of the live node', (x) => x.p.resync(x.ch, 'B', ['B.1', 'B.2'], LIVE)],
      ['a presence read', (x) => x.p.presence(x.ch, 100, LIVE)],
      ['a stats read', (x) => x.p.stats(x.ch, LIVE)],
    ];
    for (const [by, sweep] of sweepers) {
      it(`sweeps a dead node’s lease in ${by}: its entries go, leave for users left without a connection`, async () => {
        const x = await room();
        // A dies after this (its short lease is never renewed); B lives.
        await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u2', { a: 2 }), entry('A', 3, 'shared', { a: 3 }), entry('A', 4, 'u2')], DYING);
        await x.p.add(x.ch, 'B', [entry('B', 1, 'shared', { b: 1 }), entry('B', 2, 'u4')], LIVE);
        const { total } = await sweepUntil(() => sweep(x), (t) => t.leases >= 1, "A's lease to be swept");
        expect(total).toEqual({ leases: 1, entries: 4 });
        const snap = await x.p.presence(x.ch, 100, LIVE);
        expect(snap.members.filter((m) => m.user !== 'late')).toEqual(
          byUser([
            { user: 'shared', info: '{"b":1}', conns: 1 },
            { user: 'u4', info: undefined, conns: 1 },
          ]),
        );
        const frames = await settled(x);
        const joins = [join(x, 'u1'), join(x, 'u2', { a: 2 }), join(x, 'shared', { a: 3 }), join(x, 'u4')];
        expect(frames.slice(0, 4)).toEqual(joins);
        // The leaves of one sweep come in no particular order among themselves.
        const rest = frames.slice(4).filter((f) => f.user !== 'late');
        expect(sortByUser(rest)).toEqual([leave(x, 'u1'), leave(x, 'u2')]);
        // Nothing more to sweep; B's entries (and its lease) are untouched.
        expect(await x.p.stats(x.ch, LIVE)).toMatchObject({ leases: 0, entries: 0 });
        expect(await x.p.renew(x.ch, 'B', LIVE)).toMatchObject({ leases: 0, entries: 0, lost: false });
      });
    }

    it('sweeps a dead node with more entries than one call sweeps, counting each entry once', async () => {
      const x = await room();
      const n = 2500;
      const dead = Array.from({ length: n }, (_, i) => entry('A', i, `u${i}`));
      for (let i = 0; i < n; i += 250) await x.p.add(x.ch, 'A', dead.slice(i, i + 250), { joinLeave: false, leaseMs: SHORT_MS * 3 });
      await x.p.add(x.ch, 'B', [entry('B', 1, 'u0')], QUIET);
      const { total } = await sweepUntil(() => x.p.renew(x.ch, 'B', QUIET), (t) => t.leases >= 1, "A's lease to be swept");
      expect(total).toEqual({ leases: 1, entries: n });
      expect(await x.p.stats(x.ch, QUIET)).toEqual({ leases: 0, entries: 0, users: 1, connections: 1 });
    });

    it('drops the lease of a node that leaves with release: no lease-expired sweep follows a clean leave', async () => {
      const x = await room();
      await x.p.add(x.ch, 'B', [entry('B', 1, 'watcher')], LIVE);
      // A leaves cleanly; D removes its last entry without release (its lease stays and runs out); C dies holding an entry.
      await x.p.add(x.ch, 'A', [entry('A', 1, 'ua')], DYING);
      await x.p.remove(x.ch, 'A', ['A.1'], DYING, true);
      await x.p.add(x.ch, 'D', [entry('D', 1, 'ud')], DYING);
      await x.p.remove(x.ch, 'D', ['D.1'], DYING, false);
      await x.p.add(x.ch, 'C', [entry('C', 1, 'uc')], DYING);
      // C's lease was taken last, so once it is swept, A's and D's would have been too.
      const { total } = await sweepUntil(() => x.p.renew(x.ch, 'B', LIVE), (t) => t.entries >= 1, "C's lease to be swept");
      expect(total).toEqual({ leases: 2, entries: 1 });
      expect(await x.p.stats(x.ch, LIVE)).toEqual({ leases: 0, entries: 0, users: 1, connections: 1 });
    });

    it('publishes nothing with joinLeave false: adds, removes, resyncs and sweeps', async () => {
      const x = await room();
      await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u2', { i: 1 })], QUIET);
      await x.p.add(x.ch, 'D', [entry('D', 1, 'u3')], { joinLeave: false, leaseMs: SHORT_MS });
      await x.p.remove(x.ch, 'A', ['A.1'], QUIET, false);
      await x.p.resync(x.ch, 'A', [], QUIET);
      const { total } = await sweepUntil(() => x.p.renew(x.ch, 'A', QUIET), (t) => t.leases >= 1, "D's lease to be swept");
      expect(total).toEqual({ leases: 1, entries: 1 });
      expect(await x.p.stats(x.ch, QUIET)).toMatchObject({ users: 0, connections: 0 });
      expect(await settled(x)).toEqual([]);
    });

    it('lists 1000 members of 10 000 entries with truncated and exact counts, each user once', async () => {
      const x = await room();
      const users = 8000;
      const twice = 2000;
      // u0..u7999 on A (info {a:i}); u0..u1999 also on B, later (info {b:i}): 8000 users, 10 000 connections.
      const onA = Array.from({ length: users }, (_, i) => entry('A', i, `u${i}`, { a: i }));
      const onB = Array.from({ length: twice }, (_, i) => entry('B', i, `u${i}`, { b: i }));
      for (let i = 0; i < onA.length; i += 500) await x.p.add(x.ch, 'A', onA.slice(i, i + 500), QUIET);
      for (let i = 0; i < onB.length; i += 500) await x.p.add(x.ch, 'B', onB.slice(i, i + 500), QUIET);
      const check = (members: readonly PresenceMember[]): void => {
        const seen = new Set<string>();
        for (const m of members) {
          expect(seen.has(m.user), `${m.user} listed twice`).toBe(false);
          seen.add(m.user);
          const i = Number(m.user.slice(1));
          expect(m).toEqual({ user: `u${i}`, info: `{"a":${i}}`, conns: i < twice ? 2 : 1 });
        }
      };
      const page = await x.p.presence(x.ch, 1000, QUIET);
      expect(page.members).toHaveLength(1000);
      expect(page).toMatchObject({ users, connections: users + twice, truncated: true, leases: 0, entries: 0 });
      check(page.members);
      const full = await x.p.presence(x.ch, 20_000, QUIET);
      expect(full.members).toHaveLength(users);
      expect(full.truncated).toBe(false);
      check(full.members);
      expect(await x.p.stats(x.ch, QUIET)).toEqual({ leases: 0, entries: 0, users, connections: users + twice });
    });

    if (opts.sharedBackend) {
      it('shares presence between broker instances and delivers join and leave to every subscribed instance', async () => {
        const x = await room();
        const y = await readyBroker();
        await y.b.subscribe(x.ch);
        const yr: Room = { ...y, ch: x.ch, marks: 100 };
        await x.p.add(x.ch, 'A', [entry('A', 1, 'ann', { on: 'x' })], LIVE);
        await y.p.add(x.ch, 'B', [entry('B', 1, 'ann', { on: 'y' }), entry('B', 2, 'bob')], LIVE);
        expect(plain((await y.p.presence(x.ch, 10, LIVE)).members)).toEqual([
          { user: 'ann', info: { on: 'x' }, conns: 2 },
          { user: 'bob', conns: 1 },
        ]);
        await y.p.remove(x.ch, 'B', ['B.1', 'B.2'], LIVE, true);
        await x.p.remove(x.ch, 'A', ['A.1'], LIVE, true);
        const expected = [join(x, 'ann', { on: 'x' }), join(x, 'bob'), leave(x, 'bob'), leave(x, 'ann')];
        expect(await settled(x)).toEqual(expected);
        expect(await settled(yr)).toEqual(expected);
      });
    }

    const makeWebhookBroker = opts.newWebhookBroker;
    /** A new broker with webhooks (only called when the option is given). */
    const newWebhookBroker = (keysTtlMs: number): Broker => {
      if (!makeWebhookBroker) throw new Error('no newWebhookBroker');
      return makeWebhookBroker(keysTtlMs);
    };
    if (makeWebhookBroker) {
      describe('webhook member events', () => {
        /** A started broker with webhooks, subscribed to a fresh channel. */
        async function whRoom(): Promise<Room & { b: Broker }> {
          const b = newWebhookBroker(KEYS_TTL_MS);
          open.push(b);
          const r = new Recorder();
          await b.start(r);
          await r.untilStatus('ready');
          if (!b.presence || !b.webhooks) throw new Error('the broker was created with presence and webhooks but lacks one');
          const ch = `w${randomUUID().slice(0, 8)}:room`;
          await b.subscribe(ch);
          return { b, r, p: b.presence, ch, marks: 0 };
        }

        /** The channel's outbox as [name, user] pairs, checking every text parses with eventHead, names the channel, and has a unique id. */
        async function outbox(x: Room): Promise<Array<[string, string]>> {
          const texts = await x.b.webhooks?.queue.peek(x.ch, 100_000);
          if (!texts) throw new Error('no webhook queue');
          const ids = new Set<string>();
          return texts.map((t) => {
            const head = eventHead(t);
            expect(head, t).toBeDefined();
            expect(head?.channel, t).toBe(x.ch);
            expect(ids.has(head?.id ?? ''), `id ${head?.id} twice`).toBe(false);
            ids.add(head?.id ?? '');
            const parsed = JSON.parse(t) as { name: string; user?: string };
            expect(Object.keys(parsed), t).toEqual(['id', 'name', 'channel', 'user', 'time_ms']);
            return [parsed.name, parsed.user ?? ''];
          });
        }
        const added = (u: string): [string, string] => ['member_added', u];
        const removed = (u: string): [string, string] => ['member_removed', u];
        const sortPairs = (l: Array<[string, string]>): Array<[string, string]> => [...l].sort((a, b) => (a.join('\u0000') < b.join('\u0000') ? -1 : 1));

        it('appends member_added for a user’s first connection and member_removed for its last, once each, with or without joinLeave', async () => {
          const x = await whRoom();
          await x.p.add(x.ch, 'A', [entry('A', 1, 'u1', { i: 1 })], LIVE);
          // A second connection of the same user (on another node too): no event.
          await x.p.add(x.ch, 'A', [entry('A', 2, 'u1')], LIVE);
          await x.p.add(x.ch, 'B', [entry('B', 1, 'u1')], QUIET);
          // The same connection again: no event.
          await x.p.add(x.ch, 'A', [entry('A', 1, 'u1')], LIVE);
          expect(await outbox(x)).toEqual([added('u1')]);
          // Events do not depend on joinLeave.
          await x.p.add(x.ch, 'B', [entry('B', 2, 'quiet "user"')], QUIET);
          await x.p.remove(x.ch, 'A', ['A.1'], LIVE, false);
          await x.p.remove(x.ch, 'B', ['B.1'], QUIET, false);
          // An absent connection, and another node's: no event.
          await x.p.remove(x.ch, 'A', ['A.9', 'B.2'], LIVE, false);
          expect(await outbox(x)).toEqual([added('u1'), added('quiet "user"')]);
          await x.p.remove(x.ch, 'A', ['A.2'], LIVE, true);
          await x.p.remove(x.ch, 'B', ['B.2'], QUIET, true);
          expect(await outbox(x)).toEqual([added('u1'), added('quiet "user"'), removed('u1'), removed('quiet "user"')]);
          // Frames and events tell the same story (frames only where joinLeave).
          expect(await settled(x)).toEqual([join(x, 'u1', { i: 1 }), leave(x, 'u1')]);
        });

        it('appends no member_added for a silent restore, and member_removed when the restored user leaves', async () => {
          const x = await whRoom();
          await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u2')], LIVE, true);
          expect(await outbox(x)).toEqual([]);
          expect(await x.p.stats(x.ch, LIVE)).toMatchObject({ users: 2, connections: 2 });
          await x.p.remove(x.ch, 'A', ['A.1'], LIVE, false);
          expect(await outbox(x)).toEqual([removed('u1')]);
          expect(await settled(x)).toEqual([leave(x, 'u1')]);
        });

        it('appends member_removed when a dead node’s lease is swept, for the users left without a connection only', async () => {
          const x = await whRoom();
          await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'shared'), entry('A', 3, 'u1')], DYING);
          await x.p.add(x.ch, 'B', [entry('B', 1, 'shared')], LIVE);
          const { total } = await sweepUntil(() => x.p.renew(x.ch, 'B', LIVE), (t) => t.leases >= 1, "A's lease to be swept");
          expect(total).toEqual({ leases: 1, entries: 3 });
          expect(await outbox(x)).toEqual([added('u1'), added('shared'), removed('u1')]);
        });

        it('evict removes a node’s entries although its lease is live: leave frames and member_removed, the node’s lease goes', async () => {
          const x = await whRoom();
          await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'shared'), entry('A', 3, 'u3')], LIVE);
          await x.p.add(x.ch, 'B', [entry('B', 1, 'shared'), entry('B', 2, 'b')], LIVE);
          const r = await x.p.evict(x.ch, 'A', LIVE);
          expect(r).toEqual({ leases: 0, entries: 0, removed: 3, left: 0 });
          expect(plain((await x.p.presence(x.ch, 10, LIVE)).members)).toEqual([
            { user: 'b', conns: 1 },
            { user: 'shared', conns: 1 },
          ]);
          const events = await outbox(x);
          expect(events.slice(0, 4)).toEqual([added('u1'), added('shared'), added('u3'), added('b')]);
          expect(sortPairs(events.slice(4))).toEqual([removed('u1'), removed('u3')]);
          const frames = await settled(x);
          expect(sortByUser(frames.slice(4))).toEqual([leave(x, 'u1'), leave(x, 'u3')]);
          // A's lease went with its entries: its next renewal finds it lost (and would restore them).
          expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ held: 0, lost: true });
          expect(await x.p.renew(x.ch, 'B', LIVE)).toMatchObject({ held: 2, lost: false });
          // Evicting again, or a node that has nothing here, changes nothing.
          expect(await x.p.evict(x.ch, 'C', LIVE)).toMatchObject({ removed: 0, left: 0 });
          expect(await x.p.evict(`${x.ch}:never`, 'A', LIVE)).toMatchObject({ removed: 0, left: 0 });
          expect(await outbox(x)).toHaveLength(6);
        });

        it('evict of a node with more entries than one call removes pages until none is left, each user removed once', async () => {
          const x = await whRoom();
          const n = 2500;
          const dead = Array.from({ length: n }, (_, i) => entry('A', i, `u${i}`));
          for (let i = 0; i < n; i += 250) await x.p.add(x.ch, 'A', dead.slice(i, i + 250), QUIET);
          await x.p.add(x.ch, 'B', [entry('B', 1, 'u0')], QUIET);
          let removedTotal = 0;
          let calls = 0;
          for (;;) {
            const r = await x.p.evict(x.ch, 'A', QUIET);
            removedTotal += r.removed;
            calls++;
            expect(r.left).toBe(n - removedTotal);
            if (r.left === 0) break;
            expect(calls, 'evict calls').toBeLessThan(10);
          }
          expect(removedTotal).toBe(n);
          expect(await x.p.stats(x.ch, QUIET)).toEqual({ leases: 0, entries: 0, users: 1, connections: 1 });
          const events = await outbox(x);
          expect(events.filter(([name]) => name === 'member_added')).toHaveLength(n);
          const gone = events.filter(([name]) => name === 'member_removed').map(([, u]) => u);
          expect(gone).toHaveLength(n - 1);
          expect(new Set(gone).size).toBe(n - 1);
          expect(gone).not.toContain('u0');
          expect(await settled(x)).toEqual([]);
        });
      });
    }

    const redis = opts.redis;
    if (!redis) return;

    describe('Redis keys and data loss', () => {
      const keysOf = (ch: string, node: string): string[] => presenceKeys('pubgate:', `pubgate:ch:${ch}`, node);
      /** Runs a command on the node holding the channel's keys (its shard channel's master on a Cluster). */
      const at = (ch: string, ...args: string[]): Promise<string[]> => redis.cli(`pubgate:ch:${ch}`, ...args);

      it('keeps every key of a channel with its Redis channel, each expiring keysTtlMs after the last write', async () => {
        const x = await room();
        await x.p.add(x.ch, 'A', [entry('A', 1, 'u1', { i: 1 })], LIVE);
        const all = keysOf(x.ch, 'A');
        // The seventh is the channel's webhook outbox (absent without webhooks).
        const keys = all.slice(0, 6);
        // One EXISTS over all seven: on a Cluster this only works when they share the slot of the shard channel.
        expect(await at(x.ch, 'EXISTS', ...all)).toEqual(['6']);
        for (const k of keys) {
          const pttl = Number((await at(x.ch, 'PTTL', k))[0]);
          expect(pttl, k).toBeGreaterThan(0);
          expect(pttl, k).toBeLessThanOrEqual(KEYS_TTL_MS);
        }
        expect(await at(x.ch, 'HLEN', keys[0] ?? '')).toEqual(['1']);
      });

      it('leaves no key behind once every node is gone, whether it died or left cleanly', async () => {
        const ttl = 1500;
        const x = await room(ttl);
        await x.p.add(x.ch, 'A', [entry('A', 1, 'u1', { i: 1 }), entry('A', 2, 'u2')], { joinLeave: true, leaseMs: 1000 });
        await x.p.add(x.ch, 'B', [entry('B', 1, 'u2')], { joinLeave: true, leaseMs: 1000 });
        await x.p.remove(x.ch, 'B', ['B.1'], { joinLeave: true, leaseMs: 1000 }, true);
        const keys = [...keysOf(x.ch, 'A'), keysOf(x.ch, 'B')[5] ?? ''];
        for (const k of keys) {
          const pttl = Number((await at(x.ch, 'PTTL', k))[0]);
          // -2: gone (B's set once empty); never -1 (a key without expiry).
          expect(pttl === -2 || (pttl > 0 && pttl <= ttl), `${k}: PTTL ${pttl}`).toBe(true);
        }
        expect(Number((await at(x.ch, 'EXISTS', ...keys))[0])).toBeGreaterThan(0);
        await pollKeys(() => at(x.ch, 'EXISTS', ...keys), 'every key of the channel to expire');
      });

      it('sweeps a dead node whose lease ran out long ago, as long as the channel’s keys are there', async () => {
        // Every node with the same settings: keys live 6 s after the last write, leases 5.9 s.
        const ttl = 6000;
        const lease = { joinLeave: true, leaseMs: ttl - 100 };
        const x = await room(ttl);
        await x.p.add(x.ch, 'A', [entry('A', 1, 'ua1'), entry('A', 2, 'ua2')], lease);
        const [pe, , , , , pkA] = keysOf(x.ch, 'A');
        const pttl = async (key: string | undefined): Promise<number> => Number((await at(x.ch, 'PTTL', key ?? ''))[0]);
        // Half-way through A's lease, B joins and leaves: its writes keep the channel's keys half a TTL longer.
        await pollUntilTrue(async () => (await pttl(pkA)) < ttl / 2, "A's keys to be half-way to expiry");
        expect(await x.p.add(x.ch, 'B', [entry('B', 1, 'ub')], lease)).toMatchObject({ leases: 0, entries: 0 });
        await x.p.remove(x.ch, 'B', ['B.1'], lease, true);
        // A died: nobody calls until the keys are a quarter TTL from expiry
        // (more than a TTL after A's last write, so its lease ran out long ago,
        // and so would any key that only A's own calls kept alive).
        await pollUntilTrue(async () => (await pttl(pe)) < ttl / 4, 'the keys to be near expiry');
        expect(await at(x.ch, 'HLEN', pe ?? '')).toEqual(['2']);
        // C comes: its call sweeps A's lease, and must take A's entries with it.
        const swept = await x.p.add(x.ch, 'C', [entry('C', 1, 'uc')], LIVE);
        const snap = await x.p.presence(x.ch, 10, LIVE);
        expect(plain(snap.members), 'presence after the sweep').toEqual([{ user: 'uc', conns: 1 }]);
        expect(swept).toMatchObject({ leases: 1, entries: 2 });
        const frames = await settled(x);
        expect(frames.slice(0, 4)).toEqual([join(x, 'ua1'), join(x, 'ua2'), join(x, 'ub'), leave(x, 'ub')]);
        expect(sortByUser(frames.slice(4, 6))).toEqual([leave(x, 'ua1'), leave(x, 'ua2')]);
        expect(frames.slice(6)).toEqual([join(x, 'uc')]);
      });

      it('reports the lease lost and nothing held after FLUSHALL, and resync tells what to add again', async () => {
        const x = await room();
        await x.p.add(x.ch, 'A', [entry('A', 1, 'u1', { i: 1 }), entry('A', 2, 'u2')], LIVE);
        expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 2, lost: false });
        await redis.flushAll();
        expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 0, lost: true });
        expect(await x.p.stats(x.ch, LIVE)).toMatchObject({ users: 0, connections: 0 });
        const r = await x.p.resync(x.ch, 'A', ['A.1', 'A.2'], LIVE);
        expect([...r.missing].sort()).toEqual(['A.1', 'A.2']);
        await x.p.add(x.ch, 'A', [entry('A', 1, 'u1', { i: 1 }), entry('A', 2, 'u2')], LIVE);
        expect(plain((await x.p.presence(x.ch, 10, LIVE)).members)).toEqual([
          { user: 'u1', info: { i: 1 }, conns: 1 },
          { user: 'u2', conns: 1 },
        ]);
        // The users vanished with the data (no leave could be sent): they join again.
        expect(await settled(x)).toEqual([join(x, 'u1', { i: 1 }), join(x, 'u2'), join(x, 'u1', { i: 1 }), join(x, 'u2')]);
        expect(await x.p.renew(x.ch, 'A', LIVE)).toMatchObject({ leases: 0, entries: 0, held: 2, lost: false });
      });

      it('appends nothing to the channel’s outbox without webhooks (the outbox key stays absent)', async () => {
        const x = await room();
        expect(x.b.webhooks).toBeUndefined();
        const wq = webhookOutboxKey('pubgate:', `pubgate:ch:${x.ch}`);
        await x.p.add(x.ch, 'A', [entry('A', 1, 'u1'), entry('A', 2, 'u2')], LIVE);
        await x.p.add(x.ch, 'D', [entry('D', 1, 'u3')], DYING);
        await x.p.remove(x.ch, 'A', ['A.1'], LIVE, false);
        await sweepUntil(() => x.p.renew(x.ch, 'A', LIVE), (t) => t.leases >= 1, "D's lease to be swept");
        expect(await x.p.evict(x.ch, 'A', LIVE)).toMatchObject({ removed: 1, left: 0 });
        expect(await settled(x)).toHaveLength(6);
        expect(await at(x.ch, 'EXISTS', wq)).toEqual(['0']);
      });

      if (makeWebhookBroker) {
        it('keeps the member events in the channel’s outbox LIST, in the slot of its keys, expiring', async () => {
          const b = newWebhookBroker(KEYS_TTL_MS);
          open.push(b);
          const r = new Recorder();
          await b.start(r);
          await r.untilStatus('ready');
          const ch = `w${randomUUID().slice(0, 8)}:room`;
          const p = b.presence;
          if (!p) throw new Error('no presence');
          await p.add(ch, 'A', [entry('A', 1, 'u1')], LIVE);
          await p.remove(ch, 'A', ['A.1'], LIVE, true);
          const all = keysOf(ch, 'A');
          const wq = webhookOutboxKey('pubgate:', `pubgate:ch:${ch}`);
          expect(all[6]).toBe(wq);
          // One EXISTS over presence keys and the outbox: on a Cluster, only when they share a slot.
          expect(await at(ch, 'EXISTS', all[4] ?? '', wq)).toEqual(['2']);
          const texts = await at(ch, 'LRANGE', wq, '0', '-1');
          expect(texts.map((t) => eventHead(t)?.name)).toEqual(['member_added', 'member_removed']);
          expect(texts.map((t) => (JSON.parse(t) as { user: string }).user)).toEqual(['u1', 'u1']);
          expect(new Set(texts.map((t) => eventHead(t)?.id)).size).toBe(2);
          expect(Number((await at(ch, 'PTTL', wq))[0])).toBeGreaterThan(0);
        });
      }
    });
  });
}

/** Polls `check` until it holds (a guard turns a hang into a failure). */
async function pollUntilTrue(check: () => Promise<boolean>, what: string, guardMs = 30_000): Promise<void> {
  const deadline = Date.now() + guardMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await delay(25);
  }
}

/** Polls an EXISTS command until it answers 0. */
function pollKeys(exists: () => Promise<string[]>, what: string): Promise<void> {
  return pollUntilTrue(async () => (await exists())[0] === '0', what);
}
