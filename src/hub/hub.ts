/**
 * Local state of a node: live sessions, channel reference counts, and delivery
 * of broker messages into the transport's topics.
 *
 * The broker is subscribed to a channel on its first local subscriber (0→1)
 * and released on the last (1→0). A client's `subscribe` reply waits for the
 * broker's confirmation, so nothing published after the reply is missed.
 */
import type { Broker, BrokerStatus, ControlMessage } from '../broker/broker.js';
import { GatewayError } from '../errors.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Session, Socket } from './session.js';

/** What the hub needs of the transport: topic fan-out in native code. */
export interface TopicPublisher {
  /** Sends `frame` to every socket subscribed to `topic`; returns how many it reached. */
  publish(topic: string, frame: string): number;
}

interface ChannelState {
  count: number;
  /** Settles when the broker confirmed (or refused) the subscription. */
  ready: Promise<void>;
}

export interface Hub {
  add(ws: Socket): void;
  /** Forgets a closed socket and releases its channels. */
  remove(ws: Socket): void;
  subscribe(ws: Socket, channel: string): Promise<void>;
  unsubscribe(ws: Socket, channel: string): void;
  /** Publishes a final frame text through the broker. */
  publish(channel: string, frame: string): Promise<void>;
  /** Closes every connection of a user on every node (through the broker's control channel). */
  disconnectUser(user: string): Promise<void>;
  readonly size: number;
  forEach(fn: (ws: Socket) => void): void;
  channelCount(): number;
  /**
   * A slow consumer: from now on every message on its channels counts as
   * dropped for it. Pure bookkeeping, safe to call from inside app.publish().
   */
  markSlow(ws: Socket): void;
  /** Takes a slow socket out of the transport's topics (never from inside app.publish()). */
  detach(ws: Socket): void;
  /** A slow socket caught up: it receives its channels' messages again. */
  reattach(ws: Socket): void;
  /** Slow sockets currently detached. */
  slowCount(): number;
}

export interface HubDeps {
  readonly broker: Broker;
  readonly topics: TopicPublisher;
  readonly metrics: Metrics;
  readonly log: Log;
  /** Called for each local socket of a user named by a disconnect control message. */
  readonly closeForDisconnect: (ws: Socket) => void;
  readonly onBrokerStatus?: (status: BrokerStatus) => void;
}

export interface HubWithBroker extends Hub {
  /** Broker handler: a message for a channel this node listens to. */
  deliver(channel: string, frame: string): void;
  control(msg: ControlMessage): void;
}

export function createHub(deps: HubDeps): HubWithBroker {
  const { broker, topics, metrics, log } = deps;
  const sessions = new Set<Socket>();
  const byUser = new Map<string, Set<Socket>>();
  const channels = new Map<string, ChannelState>();
  /** Channel → slow sockets subscribed to it that the transport no longer feeds. */
  const slowByChannel = new Map<string, Set<Socket>>();
  const slow = new Set<Socket>();

  function unmarkChannel(ws: Socket, channel: string): void {
    const set = slowByChannel.get(channel);
    if (!set) return;
    set.delete(ws);
    if (set.size === 0) slowByChannel.delete(channel);
  }

  function acquire(channel: string): ChannelState {
    let st = channels.get(channel);
    if (st) {
      st.count++;
      return st;
    }
    const ready = broker.subscribe(channel);
    st = { count: 1, ready };
    channels.set(channel, st);
    metrics.channelsChanged(1);
    // A refusal is reported to every waiter through `ready`; the catch keeps
    // an unobserved rejection from escaping when all waiters left meanwhile.
    ready.catch((e: unknown) => log.debug({ err: e, channel }, 'broker subscribe failed'));
    return st;
  }

  function release(channel: string): void {
    const st = channels.get(channel);
    if (!st) return;
    st.count--;
    if (st.count > 0) return;
    channels.delete(channel);
    metrics.channelsChanged(-1);
    broker.unsubscribe(channel).catch((e: unknown) => log.warn({ err: e, channel }, 'broker unsubscribe failed'));
  }

  function drop(ws: Socket, s: Session, channel: string): void {
    if (!s.channels.delete(channel)) return;
    unmarkChannel(ws, channel);
    if (s.open) ws.unsubscribe(channel);
    metrics.subscriptionsChanged(-1);
    release(channel);
  }

  return {
    add(ws) {
      const s = ws.getUserData();
      sessions.add(ws);
      let set = byUser.get(s.user);
      if (!set) {
        set = new Set();
        byUser.set(s.user, set);
      }
      set.add(ws);
    },
    remove(ws) {
      if (!sessions.delete(ws)) return;
      const s = ws.getUserData();
      const set = byUser.get(s.user);
      if (set) {
        set.delete(ws);
        if (set.size === 0) byUser.delete(s.user);
      }
      for (const ch of s.channels) {
        unmarkChannel(ws, ch);
        metrics.subscriptionsChanged(-1);
        release(ch);
      }
      s.channels.clear();
      slow.delete(ws);
    },
    async subscribe(ws, channel) {
      const s = ws.getUserData();
      if (s.channels.has(channel)) {
        // Already subscribed (or a subscribe is in flight): wait for the same confirmation.
        await channels.get(channel)?.ready;
        return;
      }
      s.channels.add(channel);
      if (slow.has(ws)) {
        let set = slowByChannel.get(channel);
        if (!set) slowByChannel.set(channel, (set = new Set()));
        set.add(ws);
      } else {
        ws.subscribe(channel);
      }
      metrics.subscriptionsChanged(1);
      const st = acquire(channel);
      try {
        await st.ready;
      } catch (e) {
        drop(ws, s, channel);
        throw e instanceof GatewayError ? e : new GatewayError('unavailable', 'broker did not confirm the subscription');
      }
    },
    unsubscribe(ws, channel) {
      drop(ws, ws.getUserData(), channel);
    },
    publish(channel, frame) {
      return broker.publish(channel, frame);
    },
    disconnectUser(user) {
      return broker.publishControl({ kind: 'disconnect', user });
    },
    deliver(channel, frame) {
      const skipped = slowByChannel.get(channel);
      if (skipped) {
        metrics.dropped('slow_consumer', skipped.size);
        for (const ws of skipped) ws.getUserData().droppedCount++;
      }
      metrics.delivered(topics.publish(channel, frame));
    },
    markSlow(ws) {
      if (slow.has(ws)) return;
      slow.add(ws);
      for (const ch of ws.getUserData().channels) {
        let set = slowByChannel.get(ch);
        if (!set) slowByChannel.set(ch, (set = new Set()));
        set.add(ws);
      }
    },
    detach(ws) {
      const s = ws.getUserData();
      if (!s.open || !slow.has(ws)) return;
      for (const ch of s.channels) ws.unsubscribe(ch);
    },
    reattach(ws) {
      const s = ws.getUserData();
      if (!slow.delete(ws) || !s.open) return;
      for (const ch of s.channels) {
        unmarkChannel(ws, ch);
        ws.subscribe(ch);
      }
    },
    slowCount() {
      return slow.size;
    },
    control(msg) {
      if (msg.kind === 'disconnect') {
        const set = byUser.get(msg.user);
        if (!set) return;
        for (const ws of [...set]) deps.closeForDisconnect(ws);
      }
    },
    get size() {
      return sessions.size;
    },
    forEach(fn) {
      for (const ws of sessions) fn(ws);
    },
    channelCount() {
      return channels.size;
    },
  };
}
