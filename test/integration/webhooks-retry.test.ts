/**
 * Webhook retries (contract 1.1, "Webhooks"): a request that gets a 500, or
 * no answer within the gateway's 5 s timeout, is sent again with the same
 * events, the same event ids, and (the same body) the same webhook-id, until
 * it gets a 2xx; on the embedded broker and on Redis. The receiver verifies
 * every request with the standardwebhooks package.
 *
 * Each test works on its own channel and waits for its clean-up events, so
 * the requests it looks at carry that channel's events only.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { uid } from '../helpers/presence.js';
import { WebhookNodes } from '../helpers/webhook-nodes.js';
import { short, type ReceivedRequest } from '../helpers/webhook-receiver.js';

describe.each<{ kind: 'redis' | 'memory' }>([{ kind: 'redis' }, { kind: 'memory' }])('webhooks: retries ($kind)', ({ kind }) => {
  const w = new WebhookNodes(kind);
  let lastChannel: string | undefined;

  beforeAll(() => w.start([`wr-${kind}`]), 90_000);
  afterEach(async () => {
    w.receiver.answer(200);
    await w.n.closeClients();
    // The test's channel is vacated and delivered before the next test starts.
    if (lastChannel !== undefined) await w.receiver.untilEvent('channel_vacated', lastChannel, undefined, 30_000);
    lastChannel = undefined;
    w.receiver.assertNoProblems();
  }, 60_000);
  afterAll(() => w.stop());

  /** The requests that carried the event `id`, in arrival order. */
  const carrying = (id: string): ReceivedRequest[] => w.receiver.requests.filter((q) => q.events.some((e) => e.id === id));

  it(
    'after three 500 answers the same events arrive again with the same ids and the same webhook-id, and are accepted once',
    async () => {
      const t = uid();
      const ch = `plain:${t}`;
      lastChannel = ch;
      const r = w.receiver;
      r.failNext(3, 500);
      const c = await w.open(w.node(0), { user: `${t}-c` });
      await c.subscribe(ch);
      const ev = await r.untilEvent('channel_occupied', ch, undefined, 45_000);
      const tries = carrying(ev.id);
      expect(tries.map((q) => q.answer)).toEqual([500, 500, 500, 200]);
      // The same content every time: the same body, hence the same webhook-id.
      expect(new Set(tries.map((q) => q.body)).size).toBe(1);
      expect(new Set(tries.map((q) => q.webhookId)).size).toBe(1);
      expect(tries[0]!.events.map(short)).toEqual([`channel_occupied ${ch}`]);
      expect(r.acceptedOn(ch).map((e) => e.id)).toEqual([ev.id]);
      // Tried again after a backoff, not at once (the first wait is 1 s, then it doubles).
      for (let i = 1; i < tries.length; i++) expect(tries[i]!.atMs - tries[i - 1]!.atMs).toBeGreaterThanOrEqual(900);
    },
    60_000,
  );

  it(
    'a request left unanswered is given up after the 5 s timeout and sent again with the same events, ids and webhook-id',
    async () => {
      const t = uid();
      const ch = `plain:${t}`;
      lastChannel = ch;
      const r = w.receiver;
      r.hang(2);
      const c = await w.open(w.node(0), { user: `${t}-c` });
      await c.subscribe(ch);
      const ev = await r.untilEvent('channel_occupied', ch, undefined, 45_000);
      const tries = carrying(ev.id);
      expect(tries.map((q) => q.answer)).toEqual(['aborted', 'aborted', 200]);
      expect(new Set(tries.map((q) => q.body)).size).toBe(1);
      expect(new Set(tries.map((q) => q.webhookId)).size).toBe(1);
      expect(tries[0]!.events.map(short)).toEqual([`channel_occupied ${ch}`]);
      expect(r.acceptedOn(ch).map((e) => e.id)).toEqual([ev.id]);
      // Waited for the timeout before giving up (5 s; a slower machine only adds to it).
      expect(tries[1]!.atMs - tries[0]!.atMs).toBeGreaterThanOrEqual(4500);
    },
    60_000,
  );

  it(
    'events that happen while a delivery is being retried follow the retried ones, in order, each id accepted once',
    async () => {
      const t = uid();
      const ch = `plain:${t}`;
      lastChannel = ch;
      const r = w.receiver;
      r.failNext(2, 500);
      const c = await w.open(w.node(0), { user: `${t}-c` });
      await c.subscribe(ch);
      await r.untilRequest((q) => q.answer === 500 && q.events.some((e) => e.channel === ch), `a failed request for ${ch}`);
      await c.unsubscribe(ch);
      await c.subscribe(ch);
      await c.unsubscribe(ch);
      await r.untilAccepted((ev) => ev.filter((e) => e.channel === ch).length >= 4, `4 events on ${ch}`, 45_000);
      expect(r.acceptedOn(ch).map(short)).toEqual([`channel_occupied ${ch}`, `channel_vacated ${ch}`, `channel_occupied ${ch}`, `channel_vacated ${ch}`]);
      // Only the head is sent: until the first event was accepted, no request carried a later one without it.
      const first = r.acceptedOn(ch)[0]!;
      const firstOk = r.requests.findIndex((q) => q.answer === 200 && q.events.some((e) => e.id === first.id));
      const laterIds = new Set(r.acceptedOn(ch).slice(1).map((e) => e.id));
      const early = r.requests.slice(0, firstOk).filter((q) => q.events.some((e) => laterIds.has(e.id)) && !q.events.some((e) => e.id === first.id));
      expect(early.map((q) => q.body)).toEqual([]);
    },
    60_000,
  );
});
