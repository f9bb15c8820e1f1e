/**
 * Pusher-format webhook events (src/pusher/webhooks.ts): a queued event's
 * internal channel maps back to its app and Pusher name, member events carry
 * the app's own user id, channels no Pusher client can name are left out, and
 * the signature is what the `pusher` library's webhook(..).isValid() checks.
 */
import Pusher from 'pusher';
import { describe, expect, it } from 'vitest';
import { PusherApps, parsePusherApps } from '../../src/pusher/apps.js';
import { pusherWebhookEvent, signPusherWebhook } from '../../src/pusher/webhooks.js';
import { encodeEvent } from '../../src/webhooks/events.js';

const apps = new PusherApps(parsePusherApps(['101:k1:s1', '202:k2:s2']));
const ev = (name: Parameters<typeof encodeEvent>[1], channel: string, user?: string): string => encodeEvent('b.1', name, channel, user, 1);

describe('Pusher webhook events', () => {
  it('maps the default app\'s shared channels and its prefixed ones to the default app', () => {
    expect(pusherWebhookEvent(apps, ev('channel_occupied', 'news')))
      .toEqual({ app: apps.byId('101'), json: '{"name":"channel_occupied","channel":"news"}' });
    expect(pusherWebhookEvent(apps, ev('member_added', '#101#presence-a;b', '42')))
      .toEqual({ app: apps.byId('101'), json: '{"name":"member_added","channel":"presence-a;b","user_id":"42"}' });
  });

  it('maps another app\'s channel to that app with its own user ids', () => {
    expect(pusherWebhookEvent(apps, ev('member_removed', '#202#presence-room', '#202#42')))
      .toEqual({ app: apps.byId('202'), json: '{"name":"member_removed","channel":"presence-room","user_id":"42"}' });
  });

  it('leaves out native names outside Pusher\'s grammar, user channels and unknown apps', () => {
    expect(pusherWebhookEvent(apps, ev('channel_occupied', 'chat:1'))).toBeUndefined();
    expect(pusherWebhookEvent(apps, ev('channel_occupied', '#202##server-to-user-42'))).toBeUndefined();
    expect(pusherWebhookEvent(apps, ev('channel_occupied', '#303#news'))).toBeUndefined();
  });

  it('signs as the pusher library verifies, for that app only', () => {
    const body = '{"time_ms":1,"events":[{"name":"channel_occupied","channel":"news"}]}';
    const headers = { 'x-pusher-key': 'k2', 'x-pusher-signature': signPusherWebhook('s2', body), 'content-type': 'application/json' };
    expect(new Pusher({ appId: '202', key: 'k2', secret: 's2', host: '127.0.0.1' }).webhook({ headers, rawBody: body }).isValid()).toBe(true);
    expect(new Pusher({ appId: '202', key: 'k2', secret: 's1', host: '127.0.0.1' }).webhook({ headers, rawBody: body }).isValid()).toBe(false);
  });
});
