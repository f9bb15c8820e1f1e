/**
 * The behaviour every OccupancyStore (and, for Redis, Liveness) must have,
 * exercised through a real broker created with webhooks: `broker.occupancy`
 * decides occupied/vacated and appends them to the channel's outbox, read
 * back through `broker.webhooks.queue.peek` (the same text the deliverer
 * sends). Run it with `runOccupancyContract({ name, newBroker, redis })`.
 *
 * Members are only names here (`<node>#<generation>`). Liveness entries and
 * claims that run out are waited for by polling the store through its own
 * calls (with a guard), never by sleeping. Every case uses its own key prefix,
 * so one case's dead members are never claimed by another.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import type { DeadMember, Liveness, OccupancyStore } from '../../src/occupancy/store.js';
import { eventHead } from '../../src/webhooks/events.js';
import { webhookOutboxKey } from '../../src/webhooks/queue.js';
import { Recorder } from './broker-contract.js';

export interface OccupancyContractOptions {
  readonly name: string;
  /** A new, unstarted broker with webhooks (and, for Redis, liveness) whose keys start with `keyPrefix` (the memory broker ignores it). */
  readonly newBroker: (keyPrefix: string) => Broker;
  /** Redis-backed brokers: the key and Liveness cases run. `cli` runs a command on the node that holds `key`. */
  readonly redis?: { cli(key: string, ...args: string[]): Promise<string[]> };
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it answers a value (a guard turns a hang into a failure). */
async function pollFor<T>(check: () => Promise<T | undefined>, what: string, guardMs = 30_000): Promise<T> {
  const deadline = Date.now() + guardMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await delay(25);
  }
}

export function runOccupancyContract(opts: OccupancyContractOptions): void {
  describe(`OccupancyStore contract: ${opts.name}`, () => {
    const open: Broker[] = [];

    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()));
    });

    interface Setup {
      readonly b: Broker;
      readonly o: OccupancyStore;
      readonly prefix: string;
      readonly ch: string;
    }

    async function setup(): Promise<Setup> {
      const prefix = `oc${randomUUID().slice(0, 8)}:`;
      const b = opts.newBroker(prefix);
      open.push(b);
      const r = new Recorder();
      await b.start(r);
      await r.untilStatus('ready');
      if (!b.occupancy || !b.webhooks) throw new Error('the broker was created with webhooks but keeps no occupancy or queue');
      return { b, o: b.occupancy, prefix, ch: `o${randomUUID().slice(0, 8)}:room` };
    }

    /** The channel's events (names), checking each text parses with eventHead, names the channel, has no user, and a unique id. */
    async function events(x: Setup, ch = x.ch): Promise<string[]> {
      const texts = (await x.b.webhooks?.queue.peek(ch, 100_000)) ?? [];
      const ids = new Set<string>();
      return texts.map((t) => {
        const head = eventHead(t);
        expect(head, t).toBeDefined();
        expect(head?.channel).toBe(ch);
        expect(ids.has(head?.id ?? ''), `id ${head?.id} twice`).toBe(false);
        ids.add(head?.id ?? '');
        expect(Object.keys(JSON.parse(t) as object)).toEqual(['id', 'name', 'channel', 'time_ms']);
        return head?.name ?? '';
      });
    }

    it('appends channel_occupied for the first member and channel_vacated for the last, once each, alternating', async () => {
      const x = await setup();
      await x.o.add(x.ch, 'A#0', false);
      expect(await events(x)).toEqual(['channel_occupied']);
      // A second member, and the same member again: nothing.
      await x.o.add(x.ch, 'B#0', false);
      await x.o.add(x.ch, 'A#0', false);
      // A member that is not there (another generation of A, a stranger): nothing.
      await x.o.remove(x.ch, 'A#1');
      await x.o.remove(x.ch, 'C#0');
      // The first of two goes: nothing.
      await x.o.remove(x.ch, 'A#0');
      expect(await events(x)).toEqual(['channel_occupied']);
      await x.o.remove(x.ch, 'B#0');
      expect(await events(x)).toEqual(['channel_occupied', 'channel_vacated']);
      // Removing again: nothing. Taken again: occupied again.
      await x.o.remove(x.ch, 'B#0');
      await x.o.add(x.ch, 'B#1', false);
      await x.o.remove(x.ch, 'B#1');
      expect(await events(x)).toEqual(['channel_occupied', 'channel_vacated', 'channel_occupied', 'channel_vacated']);
    });

    it('appends nothing for a remove on a channel nobody held', async () => {
      const x = await setup();
      await x.o.remove(x.ch, 'A#0');
      expect(await events(x)).toEqual([]);
    });

    it('restores silently (no channel_occupied) and reports vacated when the restored member leaves', async () => {
      const x = await setup();
      await x.o.add(x.ch, 'A#1', true);
      await x.o.add(x.ch, 'B#0', true);
      expect(await events(x)).toEqual([]);
      await x.o.remove(x.ch, 'A#1');
      expect(await events(x)).toEqual([]);
      await x.o.remove(x.ch, 'B#0');
      expect(await events(x)).toEqual(['channel_vacated']);
      // A silent add on a channel held by another member is a plain join: nothing.
      await x.o.add(x.ch, 'B#0', false);
      await x.o.add(x.ch, 'A#2', true);
      expect(await events(x)).toEqual(['channel_vacated', 'channel_occupied']);
    });

    it('decides each transition once when many members add and remove at once', async () => {
      const x = await setup();
      const members = Array.from({ length: 40 }, (_, i) => `n${i}#0`);
      await Promise.all(members.map((m) => x.o.add(x.ch, m, false)));
      expect(await events(x)).toEqual(['channel_occupied']);
      await Promise.all(members.map((m) => x.o.remove(x.ch, m)));
      expect(await events(x)).toEqual(['channel_occupied', 'channel_vacated']);
      // Interleaved adds and removes of two halves: the channel never empties while the second half holds it.
      await Promise.all(members.slice(0, 20).map((m) => x.o.add(x.ch, m, false)));
      await Promise.all([...members.slice(20).map((m) => x.o.add(x.ch, m, false)), ...members.slice(0, 20).map((m) => x.o.remove(x.ch, m))]);
      await Promise.all(members.slice(20).map((m) => x.o.remove(x.ch, m)));
      const all = await events(x);
      expect(all.slice(2)).toEqual(['channel_occupied', 'channel_vacated']);
    });

    it('keeps channels apart', async () => {
      const x = await setup();
      const other = `${x.ch}:2`;
      await x.o.add(x.ch, 'A#0', false);
      await x.o.add(other, 'A#0', false);
      await x.o.remove(other, 'A#0');
      expect(await events(x)).toEqual(['channel_occupied']);
      expect(await events(x, other)).toEqual(['channel_occupied', 'channel_vacated']);
    });

    const redis = opts.redis;
    if (!redis) return;

    it('keeps a channel’s occupancy set and outbox in the slot of its Redis channel', async () => {
      const x = await setup();
      await x.o.add(x.ch, 'A#0', false);
      const rc = `${x.prefix}ch:${x.ch}`;
      const oc = `${x.prefix}oc:{${rc}}`;
      const wq = webhookOutboxKey(x.prefix, rc);
      // One EXISTS over both: on a Cluster, only when they share the slot of the shard channel.
      expect(await redis.cli(rc, 'EXISTS', oc, wq)).toEqual(['2']);
      expect(await redis.cli(rc, 'SMEMBERS', oc)).toEqual(['A#0']);
      await x.o.remove(x.ch, 'A#0');
      expect(await redis.cli(rc, 'EXISTS', oc)).toEqual(['0']);
    });

    describe('Liveness', () => {
      async function lv(): Promise<Setup & { l: Liveness }> {
        const x = await setup();
        if (!x.b.liveness) throw new Error('the Redis broker with webhooks keeps no liveness');
        return { ...x, l: x.b.liveness };
      }
      /** Claims until a dead member comes (its entry has to run out first). */
      const claimed = (l: Liveness, claimMs: number, what: string): Promise<DeadMember> => pollFor(() => l.claimDead(claimMs), what);

      it('renew answers added for a new entry only, and one epoch for every member', async () => {
        const { l } = await lv();
        const a = await l.renew('A#0', 60_000);
        expect(a.added).toBe(true);
        expect(a.epoch).not.toBe('');
        expect(await l.renew('A#0', 60_000)).toEqual({ added: false, epoch: a.epoch });
        expect(await l.renew('B#0', 60_000)).toEqual({ added: true, epoch: a.epoch });
        expect(await l.renew('A#1', 60_000)).toEqual({ added: true, epoch: a.epoch });
      });

      it('claims nothing while entries last, then the one that ran out, once, for one claimer', async () => {
        const { l } = await lv();
        await l.renew('live#0', 60_000);
        expect(await l.claimDead(60_000)).toBeUndefined();
        await l.renew('dies#0', 200);
        // Many claimers at once, until one gets it: exactly one does, and none after it (the claim lasts).
        const winners: DeadMember[] = [];
        await pollFor(async () => {
          const got = (await Promise.all(Array.from({ length: 8 }, () => l.claimDead(60_000)))).filter((d) => d !== undefined);
          winners.push(...got);
          return winners.length > 0 ? true : undefined;
        }, 'the entry to run out');
        expect(winners).toEqual([{ member: 'dies#0', baseAlive: false }]);
        expect(await l.claimDead(60_000)).toBeUndefined();
      });

      it('renew of an entry that ran out but was not claimed keeps it (added false); after a claim it is added again', async () => {
        const { l } = await lv();
        const first = await l.renew('slow#0', 0);
        // Ran out at once (0 ms), not claimed yet: the renewal finds it.
        expect(await l.renew('slow#0', 0)).toEqual({ added: false, epoch: first.epoch });
        const d = await claimed(l, 60_000, 'slow#0 to run out');
        expect(d.member).toBe('slow#0');
        // Claimed (its sweep begins): the node finds its entry gone.
        expect(await l.renew('slow#0', 60_000)).toEqual({ added: true, epoch: first.epoch });
      });

      it('claims again a member whose claim ran out (its claimer died), and extend keeps a claim', async () => {
        const { l } = await lv();
        await l.renew('dead#0', 1);
        const d = await claimed(l, 0, 'dead#0 to run out');
        expect(d.member).toBe('dead#0');
        // A claim of 0 ms ran out at once: the next claimer gets the same member.
        const again = await claimed(l, 60_000, 'the run-out claim');
        expect(again.member).toBe('dead#0');
        expect(await l.claimDead(60_000)).toBeUndefined();
        // Extending with 0 ms makes it claimable again; extending with a minute keeps it.
        await l.extend('dead#0', 0);
        expect((await claimed(l, 0, 'the shortened claim')).member).toBe('dead#0');
        await l.extend('dead#0', 60_000);
        expect(await l.claimDead(60_000)).toBeUndefined();
        // extend does not create a claim for a member that has none.
        await l.extend('never#0', 0);
        expect(await l.claimDead(60_000)).toBeUndefined();
      });

      it('says baseAlive when another generation of the same node is live, not for prefixes of other names or expired generations', async () => {
        const { l } = await lv();
        await l.renew('n#1', 60_000);
        await l.renew('n#0', 1);
        // "nx" and "n" share a prefix but not a base.
        await l.renew('nx#0', 1);
        const got = new Map<string, boolean>();
        await pollFor(async () => {
          const d = await l.claimDead(60_000);
          if (d) got.set(d.member, d.baseAlive);
          return got.size === 2 ? true : undefined;
        }, 'both short entries to run out');
        expect(Object.fromEntries(got)).toEqual({ 'n#0': true, 'nx#0': false });
        // Two generations of one node both ran out (it was swept once, then died): neither is alive.
        await l.renew('m#0', 0);
        await l.renew('m#1', 0);
        const first = await claimed(l, 60_000, 'the first generation of m');
        expect(first.baseAlive, `${first.member} claimed while the other generation of m had run out too`).toBe(false);
        const second = await claimed(l, 60_000, 'the second generation of m');
        expect(second.baseAlive).toBe(false);
        expect([first.member, second.member].sort()).toEqual(['m#0', 'm#1']);
      });

      it('hold, unhold and held page through a member’s channels; done removes the list and the claim', async () => {
        const { l } = await lv();
        const channels = Array.from({ length: 250 }, (_, i) => `c${i}:x`);
        for (let i = 0; i < channels.length; i += 50) await l.hold('d#0', channels.slice(i, i + 50));
        await l.hold('d#0', []);
        await l.unhold('d#0', channels.slice(0, 50));
        await l.unhold('d#0', ['never:held']);
        await l.unhold('d#0', []);
        const seen = new Set<string>();
        let cursor = '0';
        let pages = 0;
        do {
          const page = await l.held('d#0', cursor, 20);
          for (const c of page.channels) seen.add(c);
          cursor = page.cursor;
          pages++;
          expect(pages, 'pages').toBeLessThan(200);
        } while (cursor !== '0');
        expect(pages).toBeGreaterThan(1);
        expect([...seen].sort()).toEqual(channels.slice(50).sort());
        // Another member's list is its own.
        expect(await l.held('other#0', '0', 100)).toEqual({ cursor: '0', channels: [] });
        await l.renew('d#0', 1);
        expect((await claimed(l, 0, 'd#0 to run out')).member).toBe('d#0');
        await l.done('d#0');
        expect(await l.held('d#0', '0', 100)).toEqual({ cursor: '0', channels: [] });
        // The claim of 0 ms had run out: without done, it would be claimed again.
        expect(await l.claimDead(60_000)).toBeUndefined();
      });

      it('leave removes the entry and the list: nothing to claim, and a renewal adds it afresh', async () => {
        const { l } = await lv();
        await l.renew('q#0', 1);
        await l.hold('q#0', ['a:1', 'a:2']);
        await l.leave('q#0');
        expect(await l.held('q#0', '0', 100)).toEqual({ cursor: '0', channels: [] });
        expect(await l.claimDead(60_000)).toBeUndefined();
        expect((await l.renew('q#0', 60_000)).added).toBe(true);
      });
    });
  });
}
