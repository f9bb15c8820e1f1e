/**
 * Presence across a Redis restart that loses every key (redis-server killed
 * with -9 and started again on the same port, no persistence), with two
 * gateway nodes: presence converges within PUBGATE_PRESENCE_TTL (+5 s) to the
 * connections that are open and subscribed (those that stayed connected come
 * back, those that closed while Redis was down are not listed), the
 * subscribers of presence channels stay connected, nobody gets a second join
 * for a user that never left, and join/leave work again afterwards. A member
 * with tabs on both nodes keeps the info of its oldest tab.
 *
 * The waits are hang guards, not timing assertions.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { untilReadyz } from '../helpers/multinode.js';
import { PresenceNodes, expectedView, httpPresence, channelQuery, presenceEnv, uid, untilHttpView, withoutInfoOf, type PresenceClient } from '../helpers/presence.js';

const TTL = 4;
const GUARD_MS = 90_000;

describe('presence across a Redis restart without data (two nodes)', () => {
  const n = new PresenceNodes('redis');

  beforeAll(() => n.start(['prr-a', 'prr-b'], presenceEnv({ ttl: TTL })), n.setupMs);
  afterEach(() => n.closeClients());
  afterAll(() => n.stop());

  /** Kills Redis, runs `during` while it is down (both nodes not ready), starts it again empty, waits until both nodes are ready. */
  async function restartEmpty(during: () => Promise<void>): Promise<void> {
    const nodes = [n.node(0), n.node(1)];
    const redis = n.group.redis();
    await redis.kill9();
    await Promise.all(nodes.map((gw) => untilReadyz(gw, 503, 30_000, 'Redis killed')));
    await during();
    await redis.start();
    await Promise.all(nodes.map((gw) => untilReadyz(gw, 200, 60_000, 'Redis back')));
  }

  it(
    'converges to the open subscribed connections: the connected ones are listed again, those closed during the outage are not, no second join, join/leave work again',
    async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const room = `room:${t}`;
      const [A, B] = [n.node(0), n.node(1)];
      // u1: a tab on each node. u2, u3: one tab each. u4: one tab, closed during the outage.
      // u5: its older tab closes during the outage, the newer one stays (its info takes over).
      const u1a = await n.open(A, { user: `${t}-u1`, info: { u: '1a' } });
      const u1b = await n.open(B, { user: `${t}-u1`, info: { u: '1b' } });
      const u2 = await n.open(A, { user: `${t}-u2`, info: { u: 2 } });
      const u3 = await n.open(B, { user: `${t}-u3` });
      const u4 = await n.open(A, { user: `${t}-u4` });
      const u5old = await n.open(A, { user: `${t}-u5`, info: { u: '5old' } });
      const u5new = await n.open(B, { user: `${t}-u5`, info: { u: '5new' } });
      const all = [u1a, u1b, u2, u3, u4, u5old, u5new];
      for (const c of all) await c.subscribe(ch, room);
      await u1a.until(() => u1a.events(ch).length === 4, 'joins of u2..u5 at u1a');
      for (const gw of [A, B]) {
        await untilHttpView(gw, ch, expectedView(all), 10_000);
        await untilHttpView(gw, room, expectedView(all), 10_000);
      }
      const mark = u1a.events(ch).length;

      await restartEmpty(async () => {
        await u4.close();
        await u5old.close();
      });

      // (The info of u1, whose tabs are on both nodes, is the next test's.)
      const open = [u1a, u1b, u2, u3, u5new];
      const mask = withoutInfoOf(u1a.user);
      for (const gw of [A, B]) {
        await untilHttpView(gw, ch, expectedView(open), GUARD_MS, mask);
        await untilHttpView(gw, room, expectedView(open), GUARD_MS, mask);
      }
      const stats = await httpPresence(B, channelQuery(ch), { stats: true });
      expect(stats.body).toEqual({ channel: ch, users: 4, connections: 5 });
      for (const c of open) expect(await c.alive(), c.user).toBe('open');

      // Sentinel: a new user joins after the restart. Before it, u1a may have seen a leave of u4
      // (at most one), and no join: every other user was present all along.
      const f = await n.open(B, { user: `${t}-f`, info: { u: 'f' } });
      await f.subscribe(ch);
      await u1a.untilEvent('join', ch, f.user);
      const since = u1a.events(ch).slice(mark);
      expect(since.at(-1)).toEqual({ type: 'join', channel: ch, user: f.user, info: { u: 'f' } });
      const before = since.slice(0, -1);
      expect(before.filter((e) => e.type === 'join')).toEqual([]);
      expect(before.filter((e) => !(e.type === 'leave' && e.user === u4.user))).toEqual([]);
      expect(before.length).toBeLessThanOrEqual(1);
      // And leave works again.
      await f.unsubscribe(ch);
      await u1a.untilEvent('leave', ch, f.user);
      await untilHttpView(A, ch, expectedView(open), 10_000, mask);
    },
    300_000,
  );

  it(
    'a member with tabs on both nodes keeps the info of its oldest tab once presence is back',
    async () => {
      const t = uid();
      const ch = `room:${t}`;
      const user = `${t}-u`;
      const [A, B] = [n.node(0), n.node(1)];
      // Oldest first, alternating nodes; the oldest on either node in turn, over two channels.
      const tabs: PresenceClient[] = [];
      for (let i = 0; i < 4; i++) tabs.push(await n.open(i % 2 ? B : A, { user, info: { tab: i } }));
      const other = `room:${t}:other`;
      for (const c of tabs) await c.subscribe(ch);
      for (const c of [...tabs].reverse()) await c.subscribe(other);
      const want = expectedView(tabs);
      const wantOther = expectedView([...tabs].reverse());
      expect(want.members[0]?.info).toEqual({ tab: 0 });
      expect(wantOther.members[0]?.info).toEqual({ tab: 3 });
      await untilHttpView(A, ch, want, 10_000);
      await untilHttpView(A, other, wantOther, 10_000);

      await restartEmpty(() => Promise.resolve());

      const mask = withoutInfoOf(user);
      for (const gw of [A, B]) {
        await untilHttpView(gw, ch, want, GUARD_MS, mask);
        await untilHttpView(gw, other, wantOther, GUARD_MS, mask);
      }
      // All four tabs are back: the member's info is that of the oldest.
      expect((await httpPresence(B, channelQuery(ch))).body.members, `${ch}: info of tab 0 (on node A)`).toEqual(want.members);
      expect((await httpPresence(A, channelQuery(other))).body.members, `${other}: info of tab 3 (on node B)`).toEqual(wantOther.members);
    },
    300_000,
  );
});
