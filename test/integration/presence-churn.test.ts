/**
 * Presence under churn (issue 13): 500 connections spread over two gateway
 * nodes subscribe to and unsubscribe from 20 presence channels at random, and
 * some close (with or without a close frame) and reconnect, for 30 s, on one
 * redis-server and on a 3-master Redis Cluster. A few subscribes are followed
 * at once by their unsubscribe, without waiting for the reply (a flap). Then
 * the presence of every channel, asked on both nodes, equals exactly the set
 * of connections still open and subscribed to it (members, their conns, users
 * and connections), and presence_stats agrees.
 *
 * Two observers (one per node, never churned) keep every join/leave of every
 * channel: per user, joins and leaves alternate, starting with a join (no
 * duplicate, none out of order), and replaying them gives the final members.
 *
 * The randomness is seeded (SEED) and bounded (time and operation count);
 * which worker draws which number depends on timing, so a run is not replayed
 * exactly, but its shape is.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { GatewayProcess } from '../helpers/gateway.js';
import {
  PresenceNodes,
  expectedView,
  httpPresence,
  channelQuery,
  presenceEnv,
  seededRandom,
  uid,
  untilHttpView,
  type PresenceBackend,
  type PresenceClient,
  type PresenceView,
} from '../helpers/presence.js';

const SEED = 0x5eed13;
const CONNECTIONS = 500;
/** Odd: slots i, i+USERS, i+2*USERS, ... share a user (about five tabs each), alternately on either node. */
const USERS = 101;
const CHANNELS = 20;
const CHURN_MS = 30_000;
const WORKERS = 8;
/** A bound on operations besides the time (a fast machine stops here). */
const MAX_OPS = 150_000;
/** Subscriptions per connection stay within [0, MAX_HELD] (bounds the join/leave fan-out the test process parses). */
const MAX_HELD = 4;

interface Slot {
  client: PresenceClient;
  readonly user: string;
  readonly info: { readonly u: number };
  readonly held: Set<number>;
  /** Clients of this slot that the test itself closed. */
  readonly closedByTest: Set<PresenceClient>;
}

describe.each<{ kind: PresenceBackend }>([{ kind: 'redis' }, { kind: 'redis-cluster' }])('presence under churn ($kind, two nodes)', ({ kind }) => {
  const n = new PresenceNodes(kind);
  afterAll(() => n.stop());

  it(
    `${CONNECTIONS} connections joining and leaving ${CHANNELS} channels at random for ${CHURN_MS / 1000} s: presence equals the open subscribed connections exactly, and join/leave alternate per user`,
    async () => {
      await n.start([`pc-${kind}-a`, `pc-${kind}-b`], {
        ...presenceEnv({ ttl: 4, maxMembers: 1000 }),
        PUBGATE_MAX_BACKPRESSURE: String(8 * 1024 * 1024),
      });
      const rng = seededRandom(SEED);
      const t = uid();
      const channels = Array.from({ length: CHANNELS }, (_, j) => `chat:${t}:${j}`);
      const nodes = n.nodes;
      const nodeOf = (i: number): GatewayProcess => nodes[i % nodes.length]!;
      const problems: string[] = [];

      // Observers first, on every channel.
      const observers: PresenceClient[] = [];
      for (const [i, gw] of nodes.entries()) {
        const o = await n.open(gw, { user: `${t}-obs${i}` });
        for (const ch of channels) await o.subscribe(ch);
        observers.push(o);
      }

      // The connections, each with a few random channels.
      const slots: Slot[] = [];
      for (let base = 0; base < CONNECTIONS; base += 50) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(50, CONNECTIONS - base) }, async (_, k) => {
            const i = base + k;
            const u = i % USERS;
            const slot: Slot = {
              client: await n.open(nodeOf(i), { user: `${t}-u${u}`, info: { u } }),
              user: `${t}-u${u}`,
              info: { u },
              held: new Set(),
              closedByTest: new Set(),
            };
            return slot;
          }),
        );
        slots.push(...batch);
      }
      for (const s of slots) {
        const want = Math.floor(rng() * (MAX_HELD + 1));
        while (s.held.size < want) s.held.add(Math.floor(rng() * CHANNELS));
      }
      await Promise.all(slots.map(async (s) => s.client.subscribe(...[...s.held].map((j) => channels[j]!))));

      // The churn: WORKERS loops, each on a free slot at a time.
      const busy = new Set<number>();
      let ops = 0;
      const counts = { subscribe: 0, unsubscribe: 0, flap: 0, close: 0, terminate: 0 };
      const end = Date.now() + CHURN_MS;
      const worker = async (): Promise<void> => {
        while (Date.now() < end && ops < MAX_OPS && problems.length === 0) {
          let i = -1;
          for (let k = 0; k < 10 && i < 0; k++) {
            const c = Math.floor(rng() * CONNECTIONS);
            if (!busy.has(c)) i = c;
          }
          if (i < 0) {
            await new Promise((r) => setImmediate(r));
            continue;
          }
          busy.add(i);
          ops += 1;
          const s = slots[i]!;
          try {
            const r = rng();
            if (r < 0.04) {
              // Close (half with a close frame, half a TCP drop) and reconnect, maybe to the other node.
              const old = s.client;
              s.closedByTest.add(old);
              if (rng() < 0.5) {
                counts.close += 1;
                await old.close();
              } else {
                counts.terminate += 1;
                await old.terminate();
              }
              s.held.clear();
              s.client = await n.open(nodes[Math.floor(rng() * nodes.length)]!, { user: s.user, info: s.info });
            } else if (r < 0.07 && s.held.size < CHANNELS) {
              // A flap: subscribe and unsubscribe sent back to back (a component mounted and unmounted at once).
              const free = Array.from({ length: CHANNELS }, (_, j) => j).filter((j) => !s.held.has(j));
              const ch = channels[free[Math.floor(rng() * free.length)]!]!;
              counts.flap += 1;
              const c = s.client;
              const ids = [c.sendRequest({ type: 'subscribe', channel: ch }), c.sendRequest({ type: 'unsubscribe', channel: ch })];
              await c.until(() => ids.every((id) => c.replies.has(id)) || c.closeInfo !== undefined, `replies to a flap on ${ch}`);
              const err = ids.map((id) => c.replies.get(id)?.error).find((e) => e !== undefined);
              if (c.closeInfo !== undefined || err !== undefined) throw new Error(`flap on ${ch}: ${JSON.stringify(err ?? c.closeInfo)}`);
            } else {
              const subscribe = s.held.size === 0 || (s.held.size < MAX_HELD && rng() < 0.5);
              if (subscribe) {
                const free = Array.from({ length: CHANNELS }, (_, j) => j).filter((j) => !s.held.has(j));
                const j = free[Math.floor(rng() * free.length)]!;
                counts.subscribe += 1;
                await s.client.subscribe(channels[j]!);
                s.held.add(j);
              } else {
                const list = [...s.held];
                const j = list[Math.floor(rng() * list.length)]!;
                counts.unsubscribe += 1;
                await s.client.unsubscribe(channels[j]!);
                s.held.delete(j);
              }
            }
          } catch (e) {
            problems.push(`slot ${i}: ${e instanceof Error ? e.message : String(e)}`);
          } finally {
            busy.delete(i);
          }
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, () => worker()));
      expect(problems).toEqual([]);
      expect(counts.subscribe + counts.unsubscribe).toBeGreaterThan(500);
      expect(counts.close + counts.terminate).toBeGreaterThan(0);
      expect(counts.flap).toBeGreaterThan(0);

      // Nobody was closed but by the test.
      const unexpected = n.clients.filter((c) => c.closeInfo !== undefined && !slots.some((s) => s.closedByTest.has(c)));
      expect(unexpected.map((c) => `${c.user}: ${c.closeInfo?.code} ${c.closeInfo?.reason}`)).toEqual([]);

      // Presence of every channel, on both nodes, is exactly the open subscribed connections.
      const want = new Map<string, PresenceView>();
      for (const [j, ch] of channels.entries()) {
        const conns: Array<{ user: string; info?: unknown }> = observers.map((o) => ({ user: o.user }));
        for (const s of slots) if (s.held.has(j)) conns.push({ user: s.user, info: s.info });
        want.set(ch, expectedView(conns));
      }
      for (const gw of nodes) {
        for (const ch of channels) await untilHttpView(gw, ch, want.get(ch)!, 60_000);
      }
      for (const ch of channels) {
        const w = want.get(ch)!;
        const stats = await httpPresence(nodes[1]!, channelQuery(ch), { stats: true });
        expect(stats.body, ch).toEqual({ channel: ch, users: w.users, connections: w.connections });
        expect(await observers[0]!.view(ch), ch).toEqual(w);
      }

      // The observers: per channel and user, join and leave alternate from a join, and replaying them gives the members.
      for (const [k, o] of observers.entries()) {
        for (const ch of channels) {
          const others = new Set(want.get(ch)!.members.map((m) => m.user).filter((u) => u !== o.user));
          const replay = (): { present: Set<string>; broken: string[] } => {
            // The observers before this one were present when it subscribed: it never saw their joins.
            const present = new Set<string>(observers.slice(0, k).map((x) => x.user));
            const broken: string[] = [];
            for (const e of o.events(ch)) {
              if (e.type === 'join' && present.has(e.user)) broken.push(`second join of ${e.user}`);
              if (e.type === 'leave' && !present.has(e.user)) broken.push(`leave of ${e.user} who had not joined`);
              if (e.type === 'join') present.add(e.user);
              else present.delete(e.user);
            }
            return { present, broken };
          };
          const same = (a: Set<string>, b: Set<string>): boolean => a.size === b.size && [...a].every((x) => b.has(x));
          await o
            .until(() => same(replay().present, others), `join/leave at ${o.user} on ${ch} replaying to the final members`, 60_000)
            .catch((e: unknown) => problems.push(e instanceof Error ? e.message : String(e)));
          const r = replay();
          expect(r.broken, `${o.user} ${ch}`).toEqual([]);
          expect([...r.present].sort(), `${o.user} ${ch}`).toEqual([...others].sort());
          expect(o.events(ch).some((e) => e.user === o.user), `${o.user} got its own join on ${ch}`).toBe(false);
        }
      }
      expect(problems).toEqual([]);
    },
    (kind === 'redis-cluster' ? 240_000 : 90_000) + CHURN_MS + 240_000,
  );
});
