/**
 * Webhooks when a node dies (kill -9: no clean-up), on one redis-server with
 * PUBGATE_PRESENCE_TTL=3 (contract 1.1, "Webhooks" and "Presence and
 * join/leave"):
 *
 * - the node holding a channel's only subscriber dies: channel_vacated and
 *   member_removed arrive within PUBGATE_PRESENCE_TTL + 10 s, sent by the
 *   survivor;
 * - the node that was delivering a request dies while the receiver holds it:
 *   the same events (same ids) are delivered by another node.
 *
 * The receiver verifies every request with the standardwebhooks package.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayProcess } from '../helpers/gateway.js';
import { metricOn, uid } from '../helpers/presence.js';
import { pollUntil } from '../helpers/redis.js';
import { WebhookNodes } from '../helpers/webhook-nodes.js';
import { alternationProblems, short } from '../helpers/webhook-receiver.js';

const TTL = 3;
/** Hang guard: what must arrive within TTL + 10 s is checked against its arrival time, not by this wait. */
const GUARD_MS = 60_000;
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

describe('webhooks when a node is killed (redis)', () => {
  const w = new WebhookNodes('redis');

  beforeAll(() => w.start(['wk-first'], { ttl: TTL }), 90_000);
  afterEach(async () => {
    w.receiver.answer(200);
    await w.n.closeClients();
    w.receiver.assertNoProblems();
  });
  afterAll(() => w.stop());

  it(
    'kill -9 of the node holding the only subscriber of a presence channel: channel_vacated and member_removed arrive within TTL + 10 s, from the survivor',
    async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const u = `${t}-u`;
      const r = w.receiver;
      const victim: GatewayProcess = await w.startNode(`wk-victim-${t}`);
      const delivered0 = sum(await metricOn(w.n.nodes, 'pubgate_webhook_events_total', { result: 'delivered' }));
      const c = await w.open(victim, { user: u });
      await c.subscribe(ch);
      await r.untilEvent('channel_occupied', ch);
      await r.untilEvent('member_added', ch, u);
      // Whichever node sent them has acked them too: the victim holds no claim on the channel when it dies
      // (a claim would keep the channel for its 20 s lease; that case is the next test's).
      await pollUntil(
        async () => sum(await metricOn(w.n.nodes, 'pubgate_webhook_events_total', { result: 'delivered' })) >= delivered0 + 2,
        'the two events acked',
        20_000,
      );

      const killedAt = Date.now();
      expect(await victim.stop('SIGKILL')).toBeNull();
      await c.closed;
      await r.untilEvent('member_removed', ch, u, GUARD_MS);
      await r.untilEvent('channel_vacated', ch, undefined, GUARD_MS);
      const arrivedMs = Date.now() - killedAt;
      expect(arrivedMs).toBeLessThanOrEqual((TTL + 10) * 1000);
      const got = r.acceptedOn(ch);
      expect(got.map(short).sort()).toEqual([`channel_occupied ${ch}`, `channel_vacated ${ch}`, `member_added ${ch} ${u}`, `member_removed ${ch} ${u}`].sort());
      expect(alternationProblems(got)).toEqual([]);
    },
    90_000,
  );

  it(
    'kill -9 of the node delivering a request the receiver holds: another node delivers the same events, with the same ids',
    async () => {
      // Only one node runs when the events are produced and sent, so the held request is its.
      // (The first test's victim is dead; the first node is the only live one.)
      const t = uid();
      const ch = `plain:${t}`;
      const r = w.receiver;
      const sender = w.node(0);
      expect(sender.proc.exitCode === null && sender.proc.signalCode === null).toBe(true);
      expect(w.n.nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null)).toHaveLength(1);
      r.hang();
      const c = await w.open(sender, { user: `${t}-c` });
      await c.subscribe(ch);
      const held = await r.untilRequest((q) => q.answer === 'hung' && q.events.some((e) => e.channel === ch), `a held request for ${ch}`);
      const heldIds = held.events.map((e) => e.id);
      expect(await sender.stop('SIGKILL')).toBeNull();
      await c.closed;
      const killedAt = Date.now();
      r.answer(200);

      const other = await w.startNode(`wk-other-${t}`);
      // The held events, then the vacated of the dead node's subscriber (swept after the TTL).
      await r.untilEvent('channel_vacated', ch, undefined, GUARD_MS);
      const got = r.acceptedOn(ch);
      expect(got.map(short)).toEqual([`channel_occupied ${ch}`, `channel_vacated ${ch}`]);
      for (const id of heldIds) expect(r.accepted().some((e) => e.id === id)).toBe(true);
      // Accepted in a request that arrived after the sender was dead: the other node sent it.
      const acceptedBy = r.requests.find((q) => q.answer === 200 && q.events.some((e) => e.id === heldIds[0]));
      expect(acceptedBy!.atMs).toBeGreaterThanOrEqual(killedAt);
      expect(other.proc.exitCode).toBeNull();
    },
    120_000,
  );
});
