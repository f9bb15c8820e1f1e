/**
 * The embedded broker: one process, no network. Delivery is synchronous, so
 * order per channel is publish order and nothing is ever queued. It is its
 * own only node (`nodes()`), and control messages reach it synchronously.
 */
import { GatewayError } from '../errors.js';
import type { Broker, BrokerHandlers, BrokerStatus, ControlMessage } from './broker.js';
import { createMemoryPresence } from '../presence/memory-store.js';
import { createMemoryHistory, type HistoryOptions } from './history.js';
import { createIdempotencyMemo } from './idempotency.js';

export function createMemoryBroker(opts: { history?: HistoryOptions; presence?: boolean } = {}): Broker {
  let handlers: BrokerHandlers | undefined;
  let status: BrokerStatus = 'connecting';
  const channels = new Set<string>();
  const publish = (channel: string, frame: string): Promise<void> => {
    try {
      const h = live();
      if (channels.has(channel)) h.onMessage(channel, frame);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e as Error);
    }
  };
  // Plain channels' idempotency keys (history channels keep theirs in the history).
  const memo = createIdempotencyMemo();
  const history = opts.history ? createMemoryHistory(opts.history, publish) : undefined;
  // Join/leave frames go out synchronously, in the order of the changes.
  const presence = opts.presence === true
    ? createMemoryPresence((channel, frame) => {
        if (status === 'ready' && channels.has(channel)) handlers?.onMessage(channel, frame);
      })
    : undefined;

  function live(): BrokerHandlers {
    if (!handlers || status !== 'ready') throw new GatewayError('unavailable', 'broker is closed');
    return handlers;
  }

  const instance = 'local';
  return {
    kind: 'memory',
    instance,
    history,
    presence,
    get status() {
      return status;
    },
    start(h) {
      handlers = h;
      status = 'ready';
      h.onStatus(status);
      return Promise.resolve();
    },
    publish,
    publishOnce(channel, frame, idem) {
      // Synchronous check and record, as the publish itself: atomic in this process.
      if (memo.get(channel, idem.key) !== undefined) return Promise.resolve(false);
      if (status === 'ready') memo.set(channel, idem.key, '1', idem.ttlSec);
      return publish(channel, frame).then(() => true);
    },
    subscribe(channel) {
      if (status !== 'ready') return Promise.reject(new GatewayError('unavailable', 'broker is closed'));
      channels.add(channel);
      return Promise.resolve();
    },
    unsubscribe(channel) {
      channels.delete(channel);
      return Promise.resolve();
    },
    publishControl(msg: ControlMessage) {
      try {
        live().onControl(msg);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e as Error);
      }
    },
    nodes() {
      return status === 'ready' ? Promise.resolve([instance]) : Promise.reject(new GatewayError('unavailable', 'broker is closed'));
    },
    subscribedCount() {
      return channels.size;
    },
    close() {
      history?.stop();
      if (status !== 'down') {
        status = 'down';
        channels.clear();
        handlers?.onStatus(status);
      }
      return Promise.resolve();
    },
  };
}
