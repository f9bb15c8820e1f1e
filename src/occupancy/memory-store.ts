/**
 * Occupancy in process memory, for the embedded broker: one process is the
 * whole cluster, so there is nothing to sweep (no Liveness). Events go to the
 * sink synchronously, in the order of the changes.
 */
import { encodeEvent, newEventBase } from '../webhooks/events.js';
import type { EventSink } from '../webhooks/sink.js';
import type { OccupancyStore } from './store.js';

export function createMemoryOccupancy(events?: EventSink, nowMs: () => number = Date.now): OccupancyStore {
  const holders = new Map<string, Set<string>>();
  const idBase = newEventBase();
  let eventNo = 0;
  const event = (channel: string, name: 'channel_occupied' | 'channel_vacated'): void =>
    events?.append(channel, [encodeEvent(`${idBase}.${++eventNo}`, name, channel, undefined, nowMs())]);
  return {
    add(channel, member, silent) {
      let set = holders.get(channel);
      if (!set) holders.set(channel, (set = new Set()));
      if (!set.has(member)) {
        set.add(member);
        if (set.size === 1 && !silent) event(channel, 'channel_occupied');
      }
      return Promise.resolve();
    },
    remove(channel, member) {
      const set = holders.get(channel);
      if (set?.delete(member) && set.size === 0) {
        holders.delete(channel);
        event(channel, 'channel_vacated');
      }
      return Promise.resolve();
    },
  };
}
