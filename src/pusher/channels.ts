/**
 * Pusher channel names and their internal (hub, broker, presence) names.
 *
 * Each Pusher app is its own channel space. The default app shares the native
 * channel space: a name that is also valid in the native grammar is the native
 * channel of that name, so native and Pusher subscribers meet on it. Every
 * other channel becomes `#<appId>#<pusherName>`: `#` is valid in neither
 * grammar, so no native client can name it, and no Pusher client can forge
 * another app's prefix. `internalChannel` and `pusherChannel` are inverses.
 */
import { NO_OPTIONS, type ChannelOptions, type ChannelResolver } from '../channels/namespaces.js';
import { CHANNEL_RE } from '../protocol/channel.js';
import type { PusherApp, PusherApps } from './apps.js';

/** Pusher's channel grammar (its docs: "Channel naming conventions"). */
export const PUSHER_CHANNEL_RE = /^[A-Za-z0-9_\-=@,.;]{1,164}$/;

/** The per-user channel of user authentication; only the server publishes to it. */
export const USER_CHANNEL_PREFIX = '#server-to-user-';

/**
 * A user channel as the HTTP API names it (`pusher.sendToUser` triggers on
 * `#server-to-user-<id>`): the id in Pusher's channel alphabet, the whole name
 * within Pusher's 164 characters. The alphabet keeps internal names free of
 * characters that would need escaping in webhook texts or Redis hash tags.
 */
export const USER_CHANNEL_RE = /^#server-to-user-[A-Za-z0-9_\-=@,.;]{1,148}$/;

/** Whether a user id can have a user channel (pusher:signin refuses others). */
export function isUserChannelId(id: string): boolean {
  return USER_CHANNEL_RE.test(USER_CHANNEL_PREFIX + id);
}

/** Whether an internal channel is a user channel (of any app): server-to-one-user, no occupancy or webhooks. */
export function isInternalUserChannel(internal: string): boolean {
  return /^#[^#]+##server-to-user-/.test(internal);
}

export type PusherChannelKind = 'public' | 'private' | 'private-encrypted' | 'presence';

/** Whether a client may name this channel in pusher:subscribe. */
export function isValidPusherChannel(v: unknown): v is string {
  return typeof v === 'string' && PUSHER_CHANNEL_RE.test(v);
}

/** The kind of a valid Pusher channel name, from its prefix. */
export function channelKind(name: string): PusherChannelKind {
  if (name.startsWith('private-encrypted-')) return 'private-encrypted';
  if (name.startsWith('private-')) return 'private';
  if (name.startsWith('presence-')) return 'presence';
  return 'public';
}

/**
 * The internal name of a Pusher channel of `app`: the same name on the default
 * app when it is valid natively, else `#<appId>#<name>`. `name` is a valid
 * Pusher channel or a user channel (`#server-to-user-<id>`, which is never
 * valid natively).
 */
export function internalChannel(app: PusherApp, name: string): string {
  if (app.isDefault && CHANNEL_RE.test(name)) return name;
  return `#${app.id}#${name}`;
}

/** The internal name of the user channel of `userId` on `app`. */
export function userChannel(app: PusherApp, userId: string): string {
  return internalChannel(app, USER_CHANNEL_PREFIX + userId);
}

/**
 * The inverse of internalChannel: the app and Pusher name of an internal
 * channel, or undefined when no Pusher client can see it (a native name
 * outside Pusher's grammar, an unknown app, or no default app).
 */
export function pusherChannel(apps: PusherApps, internal: string): { app: PusherApp; name: string } | undefined {
  if (internal.startsWith('#')) {
    const end = internal.indexOf('#', 1);
    if (end < 0) return undefined;
    const app = apps.byId(internal.slice(1, end));
    if (app === undefined) return undefined;
    const name = internal.slice(end + 1);
    // The default app's natively valid names never take the prefixed form.
    if (app.isDefault && CHANNEL_RE.test(name)) return undefined;
    if (!PUSHER_CHANNEL_RE.test(name) && !name.startsWith(USER_CHANNEL_PREFIX)) return undefined;
    return { app, name };
  }
  const app = apps.defaultApp;
  if (app === undefined || !PUSHER_CHANNEL_RE.test(internal)) return undefined;
  return { app, name: internal };
}

/**
 * The Pusher name, on `app`, of an internal name that internalChannel(app, ·)
 * gave (a channel a connection of `app` subscribed): the inverse within one
 * app, without a lookup. Unprefixed internal names never start with `#`.
 */
export function nameInApp(app: PusherApp, internal: string): string {
  return internal.startsWith('#') ? internal.slice(app.id.length + 2) : internal;
}

/** Options of every Pusher presence channel: presence with member events (join/leave → member_added/removed). */
const PUSHER_PRESENCE: ChannelOptions = Object.freeze({ ...NO_OPTIONS, namespace: 'presence-*', presence: true, joinLeave: true });

/**
 * The channel resolver with Pusher's presence channels added: a `presence-`
 * channel of any app (on the default app, also the native channel of that
 * name) has presence and member events, whatever the namespaces say.
 */
export function withPusherChannels(channels: ChannelResolver, apps: PusherApps): ChannelResolver {
  if (apps.list.length === 0) return channels;
  const isPresence = (internal: string): boolean => {
    const p = pusherChannel(apps, internal);
    return p !== undefined && p.name.startsWith('presence-');
  };
  return {
    resolve: (channel) => (isPresence(channel) ? PUSHER_PRESENCE : channels.resolve(channel)),
    anyHistory: channels.anyHistory,
    anyPresence: true,
  };
}
