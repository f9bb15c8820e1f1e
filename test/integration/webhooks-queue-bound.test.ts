/**
 * The webhook queue's bound (contract 1.1, "Webhooks": PUBGATE_WEBHOOK_MAX_QUEUE;
 * past it the oldest events are dropped and counted): with the receiver down
 * and a bound of 5, eight channels are occupied one after the other; the three
 * oldest events are dropped and counted in
 * pubgate_webhook_events_total{result="dropped"}, the five newest are
 * delivered once the receiver is back. On the embedded broker and on Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import { pollUntil } from '../helpers/redis.js';
import { uid } from '../helpers/presence.js';
import { WebhookNodes } from '../helpers/webhook-nodes.js';
import { short } from '../helpers/webhook-receiver.js';

const MAX = 5;
const PRODUCED = 8;

describe.each<{ kind: 'redis' | 'memory' }>([{ kind: 'redis' }, { kind: 'memory' }])('webhooks: the queue bound ($kind)', ({ kind }) => {
  const w = new WebhookNodes(kind);

  beforeAll(() => w.start([`wq-${kind}`], { extra: { PUBGATE_WEBHOOK_MAX_QUEUE: String(MAX) } }), 90_000);
  afterAll(() => w.stop());

  it(
    'past the bound the oldest events are dropped and counted; the newest are delivered once the receiver is back',
    async () => {
      const t = uid();
      const r = w.receiver;
      const gw = w.node(0);
      const channels = Array.from({ length: PRODUCED }, (_, i) => `plain:${t}-${i}`);
      const dropped0 = await metric(gw.admin, 'pubgate_webhook_events_total', { result: 'dropped' });
      await r.stop();
      const c = await w.open(gw, { user: `${t}-c` });
      for (const ch of channels) await c.subscribe(ch);

      await pollUntil(
        async () => (await metric(gw.admin, 'pubgate_webhook_events_total', { result: 'dropped' })) - dropped0 >= PRODUCED - MAX,
        `${PRODUCED - MAX} dropped events counted`,
        20_000,
      );
      expect(await metric(gw.admin, 'pubgate_webhook_events_total', { result: 'dropped', name: 'channel_occupied' })).toBe(dropped0 + PRODUCED - MAX);
      await pollUntil(async () => (await metric(gw.admin, 'pubgate_webhook_queue_events')) === MAX, `the queue gauge at ${MAX}`, 20_000);

      await r.start();
      const newest = channels.slice(PRODUCED - MAX);
      await r.untilAccepted((ev) => newest.every((ch) => ev.some((e) => e.channel === ch)), `channel_occupied of the ${MAX} newest channels`, 60_000);
      // Sentinel: one more event after the bound was enforced, then the whole record of these channels.
      await c.unsubscribe(channels[PRODUCED - 1]!);
      await r.untilEvent('channel_vacated', channels[PRODUCED - 1]!, undefined, 30_000);
      const got = r.accepted().filter((e) => channels.includes(e.channel));
      expect(got.filter((e) => e.name === 'channel_occupied').map(short).sort()).toEqual(newest.map((ch) => `channel_occupied ${ch}`).sort());
      expect(got).toHaveLength(MAX + 1);
      // Nothing more was dropped.
      expect(await metric(gw.admin, 'pubgate_webhook_events_total', { result: 'dropped' })).toBe(dropped0 + PRODUCED - MAX);
      r.assertNoProblems();
    },
    90_000,
  );
});
