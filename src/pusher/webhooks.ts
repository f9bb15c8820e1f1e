/**
 * Pusher-format webhooks (contract 1.1, "Pusher Channels compatibility":
 * `PUBGATE_PUSHER_WEBHOOK_URL`): the webhook queue's events, in Pusher's
 * webhook format and signing, as a second destination of the one deliverer
 * (webhooks/deliverer.ts: a channel is acked once every destination took its
 * events, so at-least-once and per-channel order hold for both).
 *
 * Per batch, one request per app that has events in it (each app signs with
 * its own secret): `POST <url>`, `Content-Type: application/json`, body
 * `{"time_ms":<now>,"events":[{"name":"channel_occupied","channel":"<pusher name>"},
 * {"name":"member_added","channel":"presence-…","user_id":"<id>"},…]}`,
 * headers `X-Pusher-Key: <app key>` and `X-Pusher-Signature: <hex
 * HMAC-SHA256(app secret, body)>`, which the `pusher` library's
 * `webhook(…).isValid()` verifies. A batch holds at most 100 events, so does
 * each request.
 *
 * A queued event's channel is an internal name (pusher/channels.ts): it maps
 * back to its app and Pusher name; a channel no Pusher client can name (a
 * native name outside Pusher's grammar, the user channels) is not sent here.
 * Member events carry the app's own user id (a non-default app's hub user is
 * `#<appId>#<id>`, users.ts).
 */
import { createHmac } from 'node:crypto';
import type { BatchEvent, WebhookDestination, WebhookPoster } from '../webhooks/deliverer.js';
import type { PusherApp, PusherApps } from './apps.js';
import { USER_CHANNEL_PREFIX, pusherChannel } from './channels.js';
import { appUserId } from './users.js';

/** Pusher's `X-Pusher-Signature`: hex HMAC-SHA256 of the body with the app secret. */
export function signPusherWebhook(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

interface QueuedEvent {
  readonly name?: unknown;
  readonly channel?: unknown;
  readonly user?: unknown;
}

/** The Pusher event of a queued event text and its app, or undefined when it is not for a Pusher app. */
export function pusherWebhookEvent(apps: PusherApps, text: string): { app: PusherApp; json: string } | undefined {
  let e: QueuedEvent;
  try {
    e = JSON.parse(text) as QueuedEvent;
  } catch {
    return undefined;
  }
  if (typeof e.name !== 'string' || typeof e.channel !== 'string') return undefined;
  const p = pusherChannel(apps, e.channel);
  if (p === undefined || p.name.startsWith(USER_CHANNEL_PREFIX)) return undefined;
  const out: Record<string, string> = { name: e.name, channel: p.name };
  if (typeof e.user === 'string') out.user_id = appUserId(p.app, e.user);
  return { app: p.app, json: JSON.stringify(out) };
}

export function pusherWebhookDestination(apps: PusherApps, url: string, post: WebhookPoster): WebhookDestination {
  return {
    name: 'pusher',
    async send(events: readonly BatchEvent[]) {
      const byApp = new Map<PusherApp, { ids: string[]; json: string[] }>();
      const skipped: string[] = [];
      for (const ev of events) {
        const p = pusherWebhookEvent(apps, ev.text);
        if (p === undefined) {
          skipped.push(ev.id);
          continue;
        }
        let g = byApp.get(p.app);
        if (g === undefined) byApp.set(p.app, (g = { ids: [], json: [] }));
        g.ids.push(ev.id);
        g.json.push(p.json);
      }
      const timeMs = Date.now();
      const requests = await Promise.all([...byApp].map(async ([app, g]) => {
        const body = `{"time_ms":${timeMs},"events":[${g.json.join(',')}]}`;
        const r = await post(url, body, { 'x-pusher-key': app.key, 'x-pusher-signature': signPusherWebhook(app.secret, body) });
        return { ...r, ids: g.ids };
      }));
      return { requests, skipped };
    },
  };
}
