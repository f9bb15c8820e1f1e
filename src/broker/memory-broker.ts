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
import { createMemoryOccupancy } from '../occupancy/memory-store.js';
import { createMemoryWebhookQueue } from '../webhooks/memory-queue.js';
import type { MemoryWebhookQueue } from '../webhooks/queue.js';
import { createEventSink, type ClosableSink } from '../webhooks/sink.js';
import { silentLogger } from '../observability/logger.js';

export function createMemoryBroker(opts: { history?: HistoryOptions; presence?: boolean; webhooks?: { maxEvents: number } } = {}): Broker {
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
  // Webhooks: the queue lives in this process (and dies with it, as the contract says).
  let webhooks: { queue: MemoryWebhookQueue; sink: ClosableSink } | undefined;
  if (opts.webhooks) {
    const queue = createMemoryWebhookQueue({ maxEvents: opts.webhooks.maxEvents });
    webhooks = { queue, sink: createEventSink(queue, silentLogger()) };
  }
  // Join/leave frames go out synchronously, in the order of the changes.
  const presence = opts.presence === true
    ? createMemoryPresence(
        (channel, frame) => {
          if (status === 'ready' && channels.has(channel)) handlers?.onMessage(channel, frame);
        },
        Date.now,
        webhooks?.sink,
      )
    : undefined;
  const occupancy = webhooks ? createMemoryOccupancy(webhooks.sink) : undefined;

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
    occupancy,
    webhooks,
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
    nodeInfos() {
      if (status !== 'ready') return Promise.reject(new GatewayError('unavailable', 'broker is closed'));
      // The one node, from memory.
      const info = handlers?.nodeInfo?.();
      return Promise.resolve([{ instance, info, reportedAtMs: Date.now() }]);
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
