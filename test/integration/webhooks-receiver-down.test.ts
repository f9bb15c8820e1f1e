/**
 * The receiver is down for 30 s (contract 1.1, "Webhooks": delivery is at
 * least once, retried with backoff for PUBGATE_WEBHOOK_RETRY_SECONDS): two
 * nodes on one redis-server produce events on several channels while
 * connections to the receiver are refused; once it is back, every event
 * arrives, each channel's events in the order they happened (occupied and
 * vacated alternate, member events alternate per user). The receiver
 * verifies every request with the standardwebhooks package.
 *
 * The 30 s are the scenario (a wall-clock outage), not a wait for a result.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import { pollUntil } from '../helpers/redis.js';
import { expectedView, uid, untilHttpView } from '../helpers/presence.js';
import { WebhookNodes } from '../helpers/webhook-nodes.js';
import { alternationProblems, short, type WebhookEvent } from '../helpers/webhook-receiver.js';

const DOWN_MS = 30_000;

describe('webhooks: the receiver down for 30 s (redis, two nodes)', () => {
  const w = new WebhookNodes('redis');

  beforeAll(() => w.start(['wd-a', 'wd-b']), 90_000);
  afterAll(() => w.stop());

  it(
    'events produced while the receiver refuses connections all arrive once it is back, in order per channel',
    async () => {
      const t = uid();
      const r = w.receiver;
      const [a, b] = [w.node(0), w.node(1)];
      const p1 = `plain:${t}-1`;
      const p2 = `plain:${t}-2`;
      const ch = `chat:${t}`;
      const u = `${t}-u`;
      const v = `${t}-v`;
      await r.stop();
      const downAt = Date.now();

      // p1: occupied, vacated, occupied, vacated (subscribers on both nodes). A node may cancel a release
      // and a hold of one channel in quick succession before telling the cluster (a debounce, not a
      // transition), so each transition is waited for in the queue gauge before the next.
      const queued = (n: number): Promise<void> =>
        pollUntil(async () => (await metric(a.admin, 'pubgate_webhook_queue_events')) >= n, `${n} events queued`, 20_000);
      const x = await w.open(a, { user: `${t}-x` });
      const y = await w.open(b, { user: `${t}-y` });
      await x.subscribe(p1);
      await y.subscribe(p1);
      await x.unsubscribe(p1);
      await y.unsubscribe(p1);
      await queued(2);
      await y.subscribe(p1);
      await queued(3);
      await y.unsubscribe(p1);
      await queued(4);
      // p2: occupied and left occupied.
      await x.subscribe(p2);
      // chat: u added, v added, u removed, u added again (another node), v removed, u removed.
      const u1 = await w.open(a, { user: u });
      const v1 = await w.open(b, { user: v });
      const u2 = await w.open(b, { user: u });
      // An unsubscribe answers before presence has the removal: each change is waited for in presence
      // (on the other node) before the next, so the changes happen in this order.
      await u1.subscribe(ch);
      await v1.subscribe(ch);
      await u1.unsubscribe(ch);
      await untilHttpView(b, ch, expectedView([v1]), 20_000);
      await u2.subscribe(ch);
      await v1.unsubscribe(ch);
      await untilHttpView(a, ch, expectedView([u2]), 20_000);
      await u2.unsubscribe(ch);
      await untilHttpView(a, ch, expectedView([]), 20_000);
      const expected: Record<string, string[]> = {
        [p1]: [`channel_occupied ${p1}`, `channel_vacated ${p1}`, `channel_occupied ${p1}`, `channel_vacated ${p1}`],
        [p2]: [`channel_occupied ${p2}`],
        [ch]: [
          `member_added ${ch} ${u}`,
          `member_added ${ch} ${v}`,
          `member_removed ${ch} ${u}`,
          `member_added ${ch} ${u}`,
          `member_removed ${ch} ${v}`,
          `member_removed ${ch} ${u}`,
        ],
      };
      const chOccupancy = [`channel_occupied ${ch}`, `channel_vacated ${ch}`];

      // While down, the events wait in the queue (the gauge counts them).
      await pollUntil(async () => (await metric(a.admin, 'pubgate_webhook_queue_events')) >= 13, 'the queue gauge counting the 13 events', 20_000);
      expect(r.requests).toHaveLength(0);
      const left = DOWN_MS - (Date.now() - downAt);
      if (left > 0) await new Promise((res) => setTimeout(res, left));
      await r.start();

      // The longest backoff a 30 s outage leads to is 32 s; the guard is well above.
      const onTest = (ev: readonly WebhookEvent[]): WebhookEvent[] => ev.filter((e) => e.channel === p1 || e.channel === p2 || e.channel === ch);
      await r.untilAccepted((ev) => onTest(ev).length >= 13, 'all 13 events of the outage', 75_000);
      const got = onTest(r.accepted());
      expect(got.filter((e) => e.channel === p1).map(short)).toEqual(expected[p1]);
      expect(got.filter((e) => e.channel === p2).map(short)).toEqual(expected[p2]);
      expect(got.filter((e) => e.channel === ch && e.user !== undefined).map(short)).toEqual(expected[ch]);
      expect(got.filter((e) => e.channel === ch && e.user === undefined).map(short)).toEqual(chOccupancy);
      expect(alternationProblems(got)).toEqual([]);
      expect(got).toHaveLength(13);
      // time_ms is when each change happened (during the outage), not when it was delivered.
      expect(got.every((e) => e.time_ms >= downAt - 1000 && e.time_ms < downAt + DOWN_MS)).toBe(true);
      r.assertNoProblems();
      await pollUntil(async () => (await metric(a.admin, 'pubgate_webhook_queue_events')) === 0, 'an empty queue', 20_000);
    },
    150_000,
  );
});
