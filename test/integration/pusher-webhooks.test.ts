/**
 * Pusher-format webhooks (contract 1.1, "Pusher Channels compatibility":
 * PUBGATE_PUSHER_WEBHOOK_URL) beside the Standard Webhooks receiver, on one
 * node with a real redis-server (the durable queue), with the real pusher-js
 * as clients. Every Pusher request is verified with the `pusher` library's
 * webhook(..).isValid() for the app its X-Pusher-Key names (test/helpers/pusher.ts);
 * every Standard request with the standardwebhooks package.
 *
 * Absence is proven behind sentinels: a channel's events are acked (and its
 * next ones sent) only once both destinations took them, so once a later
 * event of the same channel arrived, an earlier one would have been seen.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { PresenceClient, closePresenceClients, uid } from '../helpers/presence.js';
import { connected, hookText, PusherClients, PusherHookReceiver, pusherEnv, subscribed, type PusherApp } from '../helpers/pusher.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { short, WebhookReceiver, webhookEnv } from '../helpers/webhook-receiver.js';

const DEFAULT_APP: PusherApp = { id: '101', key: 'key-one', secret: 'secret-one-value' };
const OTHER_APP: PusherApp = { id: '202', key: 'key-two', secret: 'secret-two-value' };

describe('Pusher-format webhooks beside Standard Webhooks (redis)', () => {
  let redis: RedisServer;
  let gw: GatewayProcess;
  let standard: WebhookReceiver;
  let hooks: PusherHookReceiver;
  const clients = new PusherClients();
  const natives: PresenceClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    standard = await WebhookReceiver.start();
    hooks = await PusherHookReceiver.start([DEFAULT_APP, OTHER_APP]);
    gw = await startGateway({
      ...pusherEnv([DEFAULT_APP, OTHER_APP]),
      ...webhookEnv(standard),
      PUBGATE_PUSHER_WEBHOOK_URL: hooks.url,
      PUBGATE_REDIS_URL: redis.url,
      PUBGATE_LOG_LEVEL: 'info',
    });
  }, 60_000);
  afterEach(async () => {
    clients.closeAll();
    await closePresenceClients(natives.splice(0));
    standard.assertNoProblems();
    expect(hooks.problems).toEqual([]);
  });
  afterAll(async () => {
    await gw?.stop();
    await hooks?.stop();
    await standard?.stop();
    await redis?.stop();
  });

  it('sends another app\'s presence events under its key and secret, with its Pusher channel name and its own user ids, in order', async () => {
    const t = uid();
    const ch = `presence-room-${t}`;
    const p = clients.connect(gw, OTHER_APP, { user: { id: `u${t}`, info: { n: 1 } } });
    await connected(p);
    await subscribed(p, ch);
    await hooks.until(() => hooks.accepted(OTHER_APP.key).some((e) => e.name === 'member_added' && e.channel === ch), `member_added on ${ch}`);
    p.disconnect();
    await hooks.until(() => hooks.accepted(OTHER_APP.key).some((e) => e.name === 'channel_vacated' && e.channel === ch), `channel_vacated on ${ch}`);
    expect(hooks.accepted(OTHER_APP.key).filter((e) => e.channel === ch).map(hookText)).toEqual([
      `channel_occupied ${ch}`,
      `member_added ${ch} u${t}`,
      `member_removed ${ch} u${t}`,
      `channel_vacated ${ch}`,
    ]);
    // Nothing of it under the default app's key.
    expect(hooks.accepted(DEFAULT_APP.key).filter((e) => e.channel.includes(t))).toEqual([]);
    // The Standard receiver sees the same events on the internal names (app-scoped channel and user).
    await standard.untilEvent('channel_vacated', `#${OTHER_APP.id}#${ch}`);
    expect(standard.acceptedOn(`#${OTHER_APP.id}#${ch}`).map(short)).toEqual([
      `channel_occupied #${OTHER_APP.id}#${ch}`,
      `member_added #${OTHER_APP.id}#${ch} #${OTHER_APP.id}#u${t}`,
      `member_removed #${OTHER_APP.id}#${ch} #${OTHER_APP.id}#u${t}`,
      `channel_vacated #${OTHER_APP.id}#${ch}`,
    ]);
  }, 60_000);

  it('sends the default app\'s channels held by native subscribers under the default app\'s key, and native names outside Pusher\'s grammar to the Standard receiver only', async () => {
    const t = uid();
    const shared = `plain-${t}`; // valid in both grammars: the same channel for both protocols
    const nativeOnly = `plain:${t}`; // ':' is not in Pusher's alphabet
    const c = await PresenceClient.open(gw.url, { user: `n${t}`, channels: ['plain-*', 'plain:*'] });
    natives.push(c);
    await c.subscribe(shared, nativeOnly);
    await hooks.until(() => hooks.accepted(DEFAULT_APP.key).some((e) => e.name === 'channel_occupied' && e.channel === shared), `channel_occupied on ${shared}`);
    // Sentinel on the native-only channel: occupied, vacated, occupied again at the Standard receiver means the
    // first two were acked, so both destinations had taken them.
    await standard.untilEvent('channel_occupied', nativeOnly);
    await c.unsubscribe(nativeOnly);
    await standard.untilEvent('channel_vacated', nativeOnly);
    await c.subscribe(nativeOnly);
    await standard.untilAccepted((ev) => ev.filter((e) => e.channel === nativeOnly).length >= 3, `a second channel_occupied on ${nativeOnly}`);
    expect(hooks.all().filter((e) => e.channel.includes(nativeOnly) || e.channel.includes(`:${t}`))).toEqual([]);
    expect(hooks.accepted(DEFAULT_APP.key).filter((e) => e.channel === shared).map(hookText)).toEqual([`channel_occupied ${shared}`]);
  }, 60_000);

  it('sends events again to a Pusher receiver that answered 500, and not again to the Standard receiver that took them', async () => {
    const t = uid();
    const ch = `retry-${t}`;
    hooks.failFor(ch, 2);
    const p = clients.connect(gw, DEFAULT_APP);
    await connected(p);
    await subscribed(p, ch);
    await hooks.until(() => hooks.accepted(DEFAULT_APP.key).some((e) => e.channel === ch), `channel_occupied on ${ch} accepted`);
    // The failed requests carried the same event.
    const copies = hooks.requests.filter((r) => r.events.some((e) => e.channel === ch));
    expect(copies.filter((r) => r.status === 500).length).toBe(2);
    expect(copies.every((r) => r.events.filter((e) => e.channel === ch).map(hookText).join() === `channel_occupied ${ch}`)).toBe(true);
    // Sentinel: the next event of the channel reaches both; the Standard receiver got the first one once.
    p.disconnect();
    await standard.untilEvent('channel_vacated', ch);
    await hooks.until(() => hooks.accepted(DEFAULT_APP.key).some((e) => e.name === 'channel_vacated' && e.channel === ch), `channel_vacated on ${ch}`);
    expect(standard.rawOn(ch).map(short)).toEqual([`channel_occupied ${ch}`, `channel_vacated ${ch}`]);
  }, 60_000);
});
