/**
 * One node's answer to a count query about the native channels (app '' in
 * hub/control.ts): the subscriptions this node holds, by channel name. The
 * node that takes `GET /v1/channels` or an admin console read asks every node
 * and sums their answers.
 *
 * Only names valid in the native grammar are listed: the internal names of
 * the other Pusher apps' channels (`#<app>#<name>`) are not native channels.
 * Bounded like the Pusher counts: at most `max` (MAX_ANSWER_CHANNELS)
 * channels, the first in name order, with `more` when the node has others
 * after them; or, for `top`, the `top` busiest (most subscriptions first, ties
 * in name order), with `more` when it has others.
 */
import type { ControlAnswer, ControlQuery } from '../broker/broker.js';
import { MAX_ANSWER_CHANNELS } from '../broker/control.js';
import type { LocalSubscriptions } from '../pusher/counts.js';
import { isValidChannel } from '../protocol/channel.js';
import { busiestFirst, byName } from './control.js';


export function localNativeCounts(hub: LocalSubscriptions, q: ControlQuery, max: number = MAX_ANSWER_CHANNELS): Pick<ControlAnswer, 'counts' | 'more'> {
  const found: [string, number][] = [];
  if (q.channels !== undefined) {
    for (const name of new Set(q.channels)) {
      const n = hub.localSubscribers(name);
      if (n > 0) found.push([name, n]);
    }
  } else {
    const prefix = q.prefix ?? '';
    for (const [name, n] of hub.localChannels()) {
      if (n > 0 && name.startsWith(prefix) && isValidChannel(name)) found.push([name, n]);
    }
  }
  if (q.top !== undefined && q.channels === undefined) {
    const top = Math.min(q.top, max);
    found.sort(busiestFirst);
    return found.length > top ? { counts: found.slice(0, top), more: true } : { counts: found, more: false };
  }
  found.sort(byName);
  return found.length > max ? { counts: found.slice(0, max), more: true } : { counts: found, more: false };
}
