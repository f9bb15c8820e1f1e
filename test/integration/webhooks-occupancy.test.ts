/**
 * Webhook events from cluster-wide state (contract 1.1, "Webhooks"): on two
 * nodes sharing one redis-server, two nodes on a Redis Cluster (occupancy,
 * presence, outboxes in each channel's slot, the queue's index in its own),
 * and on one node of the embedded broker.
 * Every request is verified by the test receiver with the standardwebhooks
 * package (a bad signature fails the test in afterEach).
 *
 * - channel_occupied when the first subscriber anywhere appears and
 *   channel_vacated when the last one anywhere leaves: one event per
 *   transition, never one per node;
 * - member events per user on a presence channel: a user's second
 *   connection (on the same or another node) adds nothing, closing one of two
 *   removes nothing, the last one leaving removes the member.
 *
 * Absence is proven with sentinels on the same channel: the channel's events
 * are delivered in order, so once a later event arrived, an earlier one that
 * must not exist would have been seen.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayProcess } from '../helpers/gateway.js';
import { uid } from '../helpers/presence.js';
import { WebhookNodes } from '../helpers/webhook-nodes.js';
import { alternationProblems, short, shortOn, type WebhookEvent } from '../helpers/webhook-receiver.js';

/** The events of `channel` without member events (occupied/vacated only), as texts. */
const occupancy = (events: readonly WebhookEvent[], channel: string): string[] =>
  shortOn(events.filter((e) => e.name === 'channel_occupied' || e.name === 'channel_vacated'), channel);

/** The member events of `user` on `channel`, as texts. */
const memberOf = (events: readonly WebhookEvent[], channel: string, user: string): string[] =>
  events.filter((e) => e.channel === channel && e.user === user).map(short);

describe.each<{ kind: 'redis' | 'redis-cluster' | 'memory' }>([{ kind: 'redis' }, { kind: 'redis-cluster' }, { kind: 'memory' }])('webhooks: occupancy and member events ($kind)', ({ kind }) => {
  const w = new WebhookNodes(kind);
  /** Node A and node B (the same node on the embedded broker). */
  const a = (): GatewayProcess => w.node(0);
  const b = (): GatewayProcess => w.node(kind === 'memory' ? 0 : 1);

  // A Cluster forms slowly on a loaded machine.
  beforeAll(() => w.start([`wo-${kind}-a`, `wo-${kind}-b`]), kind === 'redis-cluster' ? 240_000 : 90_000);
  afterEach(async () => {
    await w.n.closeClients();
    w.receiver.assertNoProblems();
  });
  afterAll(() => w.stop());

  it(
    'subscribe on A, then on B, unsubscribe A, then B: exactly one channel_occupied and one channel_vacated, and a later subscriber occupies the channel again',
    async () => {
      const t = uid();
      const ch = `plain:${t}`;
      const r = w.receiver;
      const ca = await w.open(a(), { user: `${t}-a` });
      const cb = await w.open(b(), { user: `${t}-b` });
      await ca.subscribe(ch);
      await r.untilEvent('channel_occupied', ch);
      await cb.subscribe(ch);
      await ca.unsubscribe(ch);
      await cb.unsubscribe(ch);
      await r.untilEvent('channel_vacated', ch);
      // Sentinel: the channel is occupied again; a duplicate of either transition would come before it.
      await ca.subscribe(ch);
      await r.untilAccepted((ev) => occupancy(ev, ch).length >= 3, `a second channel_occupied on ${ch}`);
      await ca.unsubscribe(ch);
      await r.untilAccepted((ev) => occupancy(ev, ch).length >= 4, `a second channel_vacated on ${ch}`);
      expect(r.acceptedOn(ch).map(short)).toEqual([
        `channel_occupied ${ch}`,
        `channel_vacated ${ch}`,
        `channel_occupied ${ch}`,
        `channel_vacated ${ch}`,
      ]);
      // Times are those of the changes, in order.
      const times = r.acceptedOn(ch).map((e) => e.time_ms);
      expect([...times].sort((x, y) => x - y)).toEqual(times);
      // Every copy the receiver got (retries included) names one of these four events.
      expect(new Set(r.rawOn(ch).map((e) => e.id)).size).toBe(4);
    },
    60_000,
  );

  it(
    'member events per user on a presence channel: the same user on two connections of A and one of B is added once and removed once, when the last connection leaves; another user is added and removed on its own',
    async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const u = `${t}-u`;
      const v = `${t}-v`;
      const r = w.receiver;
      const u1 = await w.open(a(), { user: u });
      const u2 = await w.open(a(), { user: u });
      const u3 = await w.open(b(), { user: u });
      const v1 = await w.open(b(), { user: v });
      await u1.subscribe(ch);
      await r.untilEvent('member_added', ch, u);
      await u2.subscribe(ch);
      await u3.subscribe(ch);
      await v1.subscribe(ch);
      await r.untilEvent('member_added', ch, v);
      await u1.unsubscribe(ch);
      await u2.close();
      // Sentinel: v leaves; u's removal, had one of its connections removed it, would come before.
      await v1.unsubscribe(ch);
      await r.untilEvent('member_removed', ch, v);
      expect(memberOf(r.accepted(), ch, u)).toEqual([`member_added ${ch} ${u}`]);
      expect(occupancy(r.accepted(), ch)).toEqual([`channel_occupied ${ch}`]);
      // The last connection of u leaves (by closing): u is removed, and the channel is vacated.
      await u3.close();
      await r.untilEvent('member_removed', ch, u);
      await r.untilEvent('channel_vacated', ch);
      const got = r.acceptedOn(ch);
      expect(memberOf(got, ch, u)).toEqual([`member_added ${ch} ${u}`, `member_removed ${ch} ${u}`]);
      expect(memberOf(got, ch, v)).toEqual([`member_added ${ch} ${v}`, `member_removed ${ch} ${v}`]);
      expect(occupancy(got, ch)).toEqual([`channel_occupied ${ch}`, `channel_vacated ${ch}`]);
      expect(alternationProblems(got)).toEqual([]);
      // In the order of the changes: v was added after u, and removed before u.
      const at = (text: string): number => got.map(short).indexOf(text);
      expect(at(`member_added ${ch} ${u}`)).toBeLessThan(at(`member_added ${ch} ${v}`));
      expect(at(`member_removed ${ch} ${v}`)).toBeLessThan(at(`member_removed ${ch} ${u}`));
      expect(got).toHaveLength(6);
      expect(got.every((e) => e.channel === ch && e.time_ms > 1_700_000_000_000)).toBe(true);
    },
    60_000,
  );

  it(
    'a channel without presence gets occupancy events only, and room:* (presence without join/leave) gets member events too',
    async () => {
      const t = uid();
      const plain = `plain:${t}`;
      const room = `room:${t}`;
      const r = w.receiver;
      const c = await w.open(a(), { user: `${t}-c` });
      await c.subscribe(plain, room);
      await r.untilEvent('member_added', room, `${t}-c`);
      await c.unsubscribe(plain);
      await c.unsubscribe(room);
      await r.untilEvent('channel_vacated', plain);
      await r.untilEvent('member_removed', room, `${t}-c`);
      await r.untilEvent('channel_vacated', room);
      expect(r.acceptedOn(plain).map(short)).toEqual([`channel_occupied ${plain}`, `channel_vacated ${plain}`]);
      expect(occupancy(r.accepted(), room)).toEqual([`channel_occupied ${room}`, `channel_vacated ${room}`]);
      expect(memberOf(r.accepted(), room, `${t}-c`)).toEqual([`member_added ${room} ${t}-c`, `member_removed ${room} ${t}-c`]);
    },
    60_000,
  );
});
