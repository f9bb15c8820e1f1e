/**
 * App-scoped users. The hub knows a connection's user by one text (its
 * presence entries, `/v1/disconnect`, terminate_connections, the join frames'
 * `user`), shared by every protocol. Each Pusher app is its own user space,
 * like its channel space (channels.ts):
 *
 * - the default app's users are the native users: Pusher user "42" and a
 *   native connection whose token's `sub` is "42" are one user (one presence
 *   member on a shared channel, both closed by either API's disconnect);
 * - another app's user "42" is `#<appId>#42` in the hub: `#` cannot start an
 *   app id, and no Pusher client or API call can name another app's prefix,
 *   so terminate_connections of app B's "42" closes neither the native "42"
 *   nor app C's.
 *
 * Pusher clients, the HTTP API's answers and the Pusher-format webhooks see
 * the app's own id (appUserId).
 */
import type { PusherApp } from './apps.js';

/** The prefix of a non-default app's hub users; empty for the default app. */
export function userPrefix(app: PusherApp): string {
  return app.isDefault ? '' : `#${app.id}#`;
}

/** The hub user of the app's user `id`. */
export function hubUserOf(app: PusherApp, id: string): string {
  return userPrefix(app) + id;
}

/** The app's own user id of a hub user (the inverse of hubUserOf; a text without the app's prefix is returned as it is). */
export function appUserId(app: PusherApp, hubUser: string): string {
  const p = userPrefix(app);
  return p !== '' && hubUser.startsWith(p) ? hubUser.slice(p.length) : hubUser;
}
