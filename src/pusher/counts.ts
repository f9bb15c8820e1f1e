/**
 * One node's answer to a channel count query (hub/control.ts): the
 * subscriptions this node holds on a Pusher app's channels, by Pusher name.
 * The node that takes a Pusher HTTP API request asks every node and sums
 * their answers, so `GET /channels` and `/channels/{name}` count the whole
 * cluster.
 *
 * Bounded: at most `max` (MAX_ANSWER_CHANNELS) channels, the first in name
 * order, with `more` when the node has others after them (the asker needs the
 * order to sum exactly: see CountSum).
 */
import type { ControlAnswer, ControlQuery } from '../broker/broker.js';
import { MAX_ANSWER_CHANNELS } from '../broker/control.js';
import type { PusherApps } from './apps.js';
import { internalChannel, pusherChannel } from './channels.js';
import { byName } from '../hub/control.js';

/** What the hub tells about this node's subscriptions. */
export interface LocalSubscriptions {
  localSubscribers(channel: string): number;
  localChannels(): readonly (readonly [string, number])[];
}

export function localPusherCounts(apps: PusherApps, hub: LocalSubscriptions, q: ControlQuery, max: number = MAX_ANSWER_CHANNELS): Pick<ControlAnswer, 'counts' | 'more'> {
  const app = apps.byId(q.app);
  if (!app) return { counts: [], more: false }; // another configuration: this node has no such app
  const found: [string, number][] = [];
  if (q.channels !== undefined) {
    for (const name of new Set(q.channels)) {
      const n = hub.localSubscribers(internalChannel(app, name));
      if (n > 0) found.push([name, n]);
    }
  } else {
    const prefix = q.prefix ?? '';
    for (const [internal, n] of hub.localChannels()) {
      if (n <= 0) continue;
      const p = pusherChannel(apps, internal);
      // User channels (`#server-to-user-…`) are not listed, as by Pusher.
      if (!p || p.app !== app || !p.name.startsWith(prefix) || p.name.startsWith('#')) continue;
      found.push([p.name, n]);
    }
  }
  found.sort(byName);
  return found.length > max ? { counts: found.slice(0, max), more: true } : { counts: found, more: false };
}
