/**
 * The test webhook receiver (test/helpers/webhook-receiver.ts) against
 * requests signed here with the standardwebhooks package: it accepts what
 * verifies, records every request and event (raw and deduplicated), answers
 * as told (status for N requests, hang, down), and reports every contract
 * violation, so the webhook integration tests can trust it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { WEBHOOK_TEST_SECRET, WebhookReceiver, alternationProblems, short, type WebhookEvent } from '../helpers/webhook-receiver.js';

const ev = (id: string, name: WebhookEvent['name'], channel: string, user?: string): WebhookEvent => ({
  id,
  name,
  channel,
  ...(user !== undefined ? { user } : {}),
  time_ms: 1764000000000,
});

/** POSTs `events` signed with `secret` (standardwebhooks) under `id`; resolves with the status, or 'error' when the connection failed. */
async function send(r: WebhookReceiver, id: string, events: unknown[], o: { secret?: string; body?: string; timeoutMs?: number } = {}): Promise<number | 'error'> {
  const body = o.body ?? JSON.stringify({ events });
  const wh = new Webhook(o.secret ?? WEBHOOK_TEST_SECRET);
  const now = new Date();
  try {
    const res = await fetch(r.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': wh.sign(id, now, body),
      },
      body,
      signal: AbortSignal.timeout(o.timeoutMs ?? 5000),
    });
    await res.text();
    return res.status;
  } catch {
    return 'error';
  }
}

describe('webhook receiver (test helper)', () => {
  const receivers: WebhookReceiver[] = [];
  const start = async (): Promise<WebhookReceiver> => {
    const r = await WebhookReceiver.start();
    receivers.push(r);
    return r;
  };
  afterEach(async () => {
    await Promise.all(receivers.splice(0).map((r) => r.stop()));
  });

  it('accepts signed requests, keeps raw copies and a view deduplicated by event id', async () => {
    const r = await start();
    const a = ev('b1.0', 'channel_occupied', 'c1');
    const b = ev('b1.1', 'member_added', 'c1', 'u');
    expect(await send(r, 'msg_1', [a, b])).toBe(200);
    expect(await send(r, 'msg_1', [a, b])).toBe(200);
    expect(r.raw.map((e) => e.id)).toEqual(['b1.0', 'b1.1', 'b1.0', 'b1.1']);
    expect(r.accepted().map(short)).toEqual(['channel_occupied c1', 'member_added c1 u']);
    expect(r.requests.map((q) => [q.webhookId, q.answer])).toEqual([['msg_1', 200], ['msg_1', 200]]);
    r.assertNoProblems();
  });

  it('reports a request signed with another secret, and answers it 400', async () => {
    const r = await start();
    const other = `whsec_${Buffer.from('another-key-of-at-least-24-bytes!!').toString('base64')}`;
    expect(await send(r, 'msg_x', [ev('x.0', 'channel_occupied', 'c')], { secret: other })).toBe(400);
    expect(r.accepted()).toEqual([]);
    expect(() => r.assertNoProblems()).toThrow(/signature does not verify/);
  });

  it('reports one webhook-id naming two bodies, one event id naming two events, and malformed events', async () => {
    const r = await start();
    expect(await send(r, 'msg_1', [ev('e.0', 'channel_occupied', 'c')])).toBe(200);
    expect(await send(r, 'msg_1', [ev('e.1', 'channel_occupied', 'd')])).toBe(200);
    expect(await send(r, 'msg_2', [ev('e.0', 'channel_vacated', 'c')])).toBe(200);
    expect(await send(r, 'msg_3', [{ id: 'z', name: 'member_added', channel: 'c', time_ms: 1 }])).toBe(400);
    expect(await send(r, 'msg_4', [])).toBe(400);
    expect(r.problems).toHaveLength(4);
    expect(r.problems.join('\n')).toMatch(/two different bodies[^]*two different events[^]*member_added without a string user[^]*1 to 100/);
  });

  it('answers a status for the next N requests, then 200; hangs requests until the client gives up; refuses connections while stopped and works again on the same port', async () => {
    const r = await start();
    r.failNext(2, 503);
    const e = [ev('f.0', 'channel_occupied', 'c')];
    expect([await send(r, 'a', e), await send(r, 'a', e), await send(r, 'a', e)]).toEqual([503, 503, 200]);
    r.hang(1);
    expect(await send(r, 'b', e, { timeoutMs: 300 })).toBe('error');
    await r.until(() => r.requests.at(-1)?.answer === 'aborted', 'the held request aborted', 5000);
    expect(await send(r, 'b', e)).toBe(200);
    const port = r.port;
    await r.stop();
    expect(await send(r, 'c', e)).toBe('error');
    await r.start();
    expect(r.port).toBe(port);
    expect(await send(r, 'c', e)).toBe(200);
    expect(r.requests.map((q) => q.answer)).toEqual([503, 503, 200, 'aborted', 200, 200]);
    r.assertNoProblems();
  });

  it('alternationProblems finds a second occupied and a removal before an add', () => {
    expect(alternationProblems([ev('1', 'channel_occupied', 'c'), ev('2', 'channel_vacated', 'c'), ev('3', 'channel_occupied', 'c')])).toEqual([]);
    expect(alternationProblems([ev('1', 'channel_occupied', 'c'), ev('2', 'channel_occupied', 'c')])).toHaveLength(1);
    expect(alternationProblems([ev('1', 'member_removed', 'c', 'u'), ev('2', 'member_added', 'c', 'v')])).toHaveLength(1);
  });
});
