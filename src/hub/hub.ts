/**
 * Local state of a node: live sessions, channel reference counts, and delivery
 * of broker messages into the transport's topics.
 *
 * The broker is subscribed to a channel on its first local subscriber (0→1)
 * and released on the last (1→0). A client's `subscribe` reply waits for the
 * broker's confirmation, so nothing published after the reply is missed.
 */
import type { Broker, BrokerStatus, ControlMessage } from '../broker/broker.js';
import { frameOffset, type HistoryOptions, type HistoryPosition, type HistorySince } from '../broker/history.js';
import type { ChannelOptions } from '../channels/namespaces.js';
import type { Presence } from '../presence/presence.js';
import type { PresenceSnapshot, PresenceStats } from '../presence/store.js';
import { GatewayError } from '../errors.js';
import type { SinceOffset } from '../protocol/frames.js';
import { encodeMessage } from '../protocol/frames.js';
import type { ConnIds } from '../transport/conn-id.js';
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { Metrics } from '../observability/metrics.js';
import { addChannel, deleteChannel, NO_CHANNELS, extraOf, type Session, type Socket } from './session.js';

/** What the hub needs of the transport: topic fan-out in native code, and single sends (replays). */
export interface TopicPublisher {
  /** Sends `frame` to every socket subscribed to `topic`; returns how many it reached. */
  publish(topic: string, frame: string): number;
  /** Sends a message frame to one socket, compressed as the transport compresses published frames. */
  sendTo(ws: Socket, frame: string): void;
}

interface ChannelState {
  count: number;
  /** Settles when the broker confirmed (or refused) the subscription. */
  ready: Promise<void>;
  /** The channel's namespace options: resolved once, when the node subscribes to it, never per message. */
  readonly opts: ChannelOptions;
}

/**
 * A subscribe with `rewind` (1.1): a recovery from the channel's position
 * minus `rewind` (at most the history size), read when the subscription is
 * live.
 */
export interface Rewind {
  readonly rewind: number;
}

/** Options of one publish (contract 1.1, "Idempotent publish and exclude"). */
export interface PublishOptions {
  /** Idempotency key (1–128 printable ASCII), scoped to the channel: a repeat within idempotencyTtl gets the first answer and publishes nothing. */
  readonly idempotencyKey?: string;
  /** A `welcome.conn` value: every subscriber but that connection receives the message. */
  readonly exclude?: string;
}

/**
 * A broker payload that starts with this character is an envelope:
 * `!<conn>\n<frame>`, a message frame that the connection `<conn>`
 * (a `welcome.conn`, no newline in it) must not receive. Frames start with `{`.
 */
const EXCLUDE_MARK = '!';
const EXCLUDE_CODE = 0x21;

/** Server frames start with `{"type":"`; the next character tells message (m), join (j) and leave (l) apart. */
const TYPE_AT = 9;
const M = 109; // 'm'
const J = 106; // 'j'

/** The user of a `join` frame (built by presence/store.ts encodeJoin). */
function joinUser(frame: string): string | undefined {
  try {
    const u = (JSON.parse(frame) as { user?: unknown }).user;
    return typeof u === 'string' ? u : undefined;
  } catch {
    return undefined;
  }
}

/** How one subscription differs from the connection's defaults. */
export interface SubscribeOptions {
  /** Presence `info` for this channel (a subscription token's or the subscribe proxy's), instead of the connection's. */
  readonly info?: string | undefined;
  /** Held: the socket joins the fan-out only at release() (see Hub.subscribe). */
  readonly hold?: boolean;
}

export interface Hub {
  add(ws: Socket): void;
  /** Forgets a closed socket and releases its channels. */
  remove(ws: Socket): void;
  /**
   * Subscribes a socket; resolves once the broker confirmed the channel (and
   * the presence entry is stored). With `hold`, the socket does not join the
   * channel's fan-out yet: what is delivered for it meanwhile is held (at most
   * maxRecoveryBuffer frames) until release(), so that a frame announcing the
   * subscription (welcome, subscribed) can go out first.
   */
  subscribe(ws: Socket, channel: string, opts?: SubscribeOptions): Promise<void>;
  /**
   * What a held subscription holds: the offset of the first held message
   * (undefined when none has one), and whether more frames came than could be
   * held (frames were lost: the caller closes the socket). Undefined when the
   * socket is not holding that channel (closed, or unsubscribed meanwhile).
   */
  peekHeld(ws: Socket, channel: string): { readonly firstOffset: number | undefined; readonly overflow: boolean } | undefined;
  /**
   * Ends the hold: the held frames go out in order and the socket joins the
   * channel's fan-out, in one synchronous step. Call it right after sending
   * the frame that announces the subscription, in the same turn as peekHeld.
   * `announced`: on a history channel, the offset that frame announced (at
   * most the first held message's offset minus one): messages up to it that
   * are still on their way from the broker (its position is read on another
   * connection than its messages come on) are not delivered, as for a
   * recovery that caught up.
   */
  release(ws: Socket, channel: string, announced?: number): void;
  unsubscribe(ws: Socket, channel: string): void;
  /** The live sockets of a user on this node (a copy). */
  socketsOf(user: string): Socket[];
  /**
   * Gives a live socket its user (a Pusher connection learns it from
   * pusher:signin or its first presence channel_data). Only for a socket in no
   * presence channel yet: presence entries carry the user they were added with.
   */
  setUser(ws: Socket, user: string): void;
  /** Publishes a final frame text through the broker. */
  publish(channel: string, frame: string): Promise<void>;
  /**
   * Publishes raw JSON `data`: through history on history channels (resolving
   * its offset), else as a plain frame. `repeat`: the idempotency key was
   * already accepted for the channel, nothing was published, the offset is the first publish's.
   */
  publishData(channel: string, rawData: string, opts?: PublishOptions): Promise<{ offset?: number; repeat?: boolean }>;
  /** Whether a channel keeps history. */
  isHistory(channel: string): boolean;
  /** A channel's namespace options. */
  options(channel: string): ChannelOptions;
  /** Who is in a presence channel (bad_request when the channel has no presence). */
  presence(channel: string): Promise<PresenceSnapshot>;
  /** A presence channel's exact user and connection counts. */
  presenceStats(channel: string): Promise<PresenceStats>;
  /** A history channel's current position. */
  position(channel: string): Promise<HistoryPosition>;
  /**
   * GET /v1/history: the last `limit` frames (clamped to the channel's history
   * size), or the first `limit` after `since`. bad_request on a channel
   * without history; recovery_failed when `since` is no longer held or its
   * epoch differs.
   */
  readHistory(channel: string, limit: number | undefined, since?: SinceOffset): Promise<HistorySince & { readonly frames: readonly string[] }>;
  /**
   * Subscribes to a history channel and replays what came after `since`, then
   * goes live with no gap and no duplicate. `recovered` is false when the
   * epoch differs or the history no longer reaches back to `since`.
   */
  recover(ws: Socket, channel: string, since: SinceOffset | Rewind, opts?: SubscribeOptions): Promise<{ recovered: boolean; position: HistoryPosition; replayed: number }>;
  /** Closes every connection subscribed to a history channel (after the broker lost messages). */
  closeHistorySubscribers(): number;
  /** Closes every connection of a user on every node (through the broker's control channel). */
  disconnectUser(user: string): Promise<void>;
  readonly size: number;
  forEach(fn: (ws: Socket) => void): void;
  channelCount(): number;
  /** This node's subscriptions of a channel (every protocol's sockets), 0 when it has none. */
  localSubscribers(channel: string): number;
  /** The channels this node has subscribers of, with their counts (a copy). */
  localChannels(): [channel: string, subscribers: number][];
  /** This node's open connections by transport (`ws`: native WebSocket). */
  connectionCounts(): { readonly ws: number; readonly sse: number; readonly pusher: number };
  /** This node's subscriptions (connection and channel pairs, every transport). */
  subscriptionCount(): number;
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
  /** The transport's drain event: the socket's send buffer shrank (a paced replay goes on). */
  drained(ws: Socket): void;
}

export interface HubDeps {
  readonly broker: Broker;
  readonly topics: TopicPublisher;
  readonly metrics: Metrics;
  readonly log: Log;
  /** Closes a socket with a catalog code (4501 for disconnects, 1011 after a broker gap, 4008). */
  readonly closeSocket: (ws: Socket, code: 1011 | 4008 | 4501) => void;
  /** A channel's namespace options (channels/namespaces.ts ChannelResolver.resolve). */
  readonly channelOptions: (channel: string) => ChannelOptions;
  /** Presence on this node; needed when a namespace has presence. */
  readonly presence?: Presence;
  /**
   * Live frames held back per recovering socket, at most; beyond that they are
   * dropped and read again from history.
   */
  readonly maxRecoveryBuffer: number;
  /** The transport's send-buffer limit per socket: a replay waits for `drained` rather than going over it. */
  readonly maxBackpressure: number;
  /** Frames read from history per round trip during a recovery. */
  readonly recoveryPageSize?: number;
  /** PUBGATE_IDEMPOTENCY_TTL: seconds an idempotency key is remembered (default 300). */
  readonly idempotencyTtlSec?: number;
  readonly onBrokerStatus?: (status: BrokerStatus) => void;
  /** This node's connection ids (`welcome.conn`): `exclude` names a connection by one. */
  readonly connIds?: ConnIds;
  /**
   * A channel got its first subscriber on this node (`held` true) or lost its
   * last (false): cluster-wide occupancy (occupancy/occupancy.ts).
   */
  readonly onChannelHeld?: (channel: string, opts: ChannelOptions, held: boolean) => Promise<void> | void;
}

export interface HubWithBroker extends Hub {
  /** Broker handler: a message for a channel this node listens to. */
  deliver(channel: string, frame: string): void;
  control(msg: ControlMessage): void;
}

/**
 * A socket recovering a history channel. While `replaying`, live frames are
 * held back in `frames` (at most maxRecoveryBuffer; past that `overflow` is
 * set and they are read from history again); afterwards it catches up frame
 * by frame (offsets above `last`) until live delivery reached its replay, then
 * joins the topic.
 */
interface Recovering {
  frames: string[];
  overflow: boolean;
  replaying: boolean;
  last: number;
  /** A held subscription (subscribe with `hold`), not a recovery: it ends with release(). */
  readonly hold?: true;
}

/** Frames read from history per round trip when recovering: bounds what a recovery holds in memory. */
export const RECOVERY_PAGE_SIZE = 100;

export function createHub(deps: HubDeps): HubWithBroker {
  const idempotencyTtlSec = deps.idempotencyTtlSec ?? 300;
  const { broker, topics, metrics, log } = deps;
  /**
   * Every live socket, by user: the socket itself, or a Set of its sockets
   * while the user has several. Most users have one connection, and a Set each
   * would cost ~140 bytes; and one map rather than a Set of all sockets beside
   * it saves a hash-table entry per connection.
   */
  const byUser = new Map<string, Socket | Set<Socket>>();
  /** Live sessions by connection number: `exclude` finds its connection here (one entry per connection). */
  const byId = new Map<number, Socket>();
  /** Live sessions by transport (their sum is `size`), and subscriptions: the admin console's node counts. */
  const byTransport = { ws: 0, sse: 0, pusher: 0 };
  let subscriptionTotal = 0;
  const subsChanged = (d: number): void => {
    subscriptionTotal += d;
    metrics.subscriptionsChanged(d);
  };
  const channels = new Map<string, ChannelState>();
  /** Channel → slow sockets subscribed to it that the transport no longer feeds. */
  const slowByChannel = new Map<string, Set<Socket>>();
  const slow = new Set<Socket>();
  /** Channel → sockets recovering it: live frames are held back for them until their replay went out. */
  const recovering = new Map<string, Map<Socket, Recovering>>();
  /**
   * History channel → highest offset this node has delivered live. A recovery
   * reads history on the publishing connection, which can be ahead of what the
   * subscriber connection delivered; a recovered socket joins the fan-out only
   * once live delivery has caught up with its replay (else it would get
   * messages twice).
   */
  const lastLive = new Map<string, number>();
  /** Sockets whose replay waits for their send buffer to drain (at most one waiter per recovering channel). */
  const drainWaiters = new Map<Socket, Array<() => void>>();
  const pageSize = Math.max(1, deps.recoveryPageSize ?? RECOVERY_PAGE_SIZE);
  /**
   * Broker failures to release a channel, and refused subscribes (which their
   * replies already report), counted: when 1000 clients leave at once they
   * come by the thousand, and one line per interval says how many.
   */
  const releaseFailures = new LogTally(log, 'warn', 'broker unsubscribes failed', { component: 'hub' });
  const subscribeRefusals = new LogTally(log, 'debug', 'broker subscribes refused', { component: 'hub' });

  function wakeDrainWaiters(ws: Socket): void {
    const waiting = drainWaiters.get(ws);
    if (!waiting) return;
    drainWaiters.delete(ws);
    for (const wake of waiting) wake();
  }

  /**
   * Resolves once `bytes` more fit under maxBackpressure in the socket's send
   * buffer (an empty buffer takes any frame), or the socket closed. Replays are
   * paced this way: uWS would skip frames sent over the limit.
   */
  async function room(ws: Socket, s: Session, bytes: number): Promise<void> {
    while (s.open) {
      const buffered = ws.getBufferedAmount();
      if (buffered === 0 || buffered + bytes <= deps.maxBackpressure) return;
      await new Promise<void>((resolve) => {
        let waiting = drainWaiters.get(ws);
        if (!waiting) drainWaiters.set(ws, (waiting = []));
        waiting.push(resolve);
      });
    }
  }

  // Closing a socket from `fn` removes it from byUser meanwhile: Map and Set
  // iterators allow that, and a Set that shrank to one socket and was replaced
  // in the map still yields that socket.
  function forEachSocket(fn: (ws: Socket) => void): void {
    for (const mine of byUser.values()) {
      if (mine instanceof Set) for (const ws of mine) fn(ws);
      else fn(mine);
    }
  }

  function stopRecovering(ws: Socket, channel: string): void {
    const m = recovering.get(channel);
    if (!m) return;
    m.delete(ws);
    if (m.size === 0) recovering.delete(channel);
  }

  function history() {
    if (!broker.history) throw new GatewayError('internal', 'history channels need a broker with history');
    return broker.history;
  }

  function optionsOf(channel: string): ChannelOptions {
    return channels.get(channel)?.opts ?? deps.channelOptions(channel);
  }

  function historyOptions(channel: string): HistoryOptions {
    const h = optionsOf(channel).history;
    if (!h) throw new GatewayError('internal', `channel ${channel} keeps no history`);
    return { size: h.size, ttlSec: h.ttl };
  }

  /** The presence of a channel whose namespace has it (else bad_request). */
  function presenceFor(channel: string): { presence: Presence; joinLeave: boolean } {
    const o = optionsOf(channel);
    if (!o.presence) throw new GatewayError('bad_request', `channel ${channel} has no presence`);
    if (!deps.presence) throw new GatewayError('internal', 'presence channels need a node with presence');
    return { presence: deps.presence, joinLeave: o.joinLeave };
  }

  /** Adds a subscribed socket's presence entry when the channel has presence; the subscribe waits for it. */
  async function enterPresence(s: Session, channel: string, st: ChannelState, info: string | undefined): Promise<void> {
    // Unsubscribed or closed while the broker confirmed: nothing to enter (its removal already ran).
    if (!st.opts.presence || !s.open || !s.channels.has(channel)) return;
    if (!deps.presence) throw new GatewayError('internal', 'presence channels need a node with presence');
    await deps.presence.add(channel, s, st.opts.joinLeave, info);
  }

  function leavePresence(s: Session, channel: string): void {
    const st = channels.get(channel);
    if (st?.opts.presence) deps.presence?.remove(channel, s);
  }

  /**
   * A `join` goes to every subscriber but the joining user's own connections
   * (contract: a connection does not receive its own user's join): those on
   * this node leave the topic for the one publish and rejoin it at once.
   */
  function publishJoin(channel: string, frame: string, user: string | undefined): number {
    const mine = user === undefined ? undefined : byUser.get(user);
    if (mine === undefined) return topics.publish(channel, frame);
    return publishWithout(channel, frame, mine instanceof Set ? mine : [mine]).reached;
  }

  /**
   * A message every subscriber but one connection receives (`exclude`,
   * `echo:false`), the same way as a join.
   */
  function publishExcluding(channel: string, frame: string, ws: Socket): number {
    const r = publishWithout(channel, frame, [ws]);
    if (r.hidden > 0) metrics.excludedDelivery();
    return r.reached;
  }

  /**
   * One publish to the topic that `sockets` do not receive: those on the topic
   * leave it for this one publish and rejoin it at once, so the fan-out stays
   * one serialized publish in native code (no per-subscriber work here).
   */
  function publishWithout(channel: string, frame: string, sockets: Iterable<Socket>): { reached: number; hidden: number } {
    const hidden: Socket[] = [];
    for (const ws of sockets) {
      if (ws.getUserData().open && ws.isSubscribed(channel)) {
        ws.unsubscribe(channel);
        hidden.push(ws);
      }
    }
    const reached = topics.publish(channel, frame);
    for (const ws of hidden) ws.subscribe(channel);
    return { reached, hidden: hidden.length };
  }

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
    const opts = deps.channelOptions(channel);
    const subscribed = broker.subscribe(channel);
    // The subscribe is answered once the channel is also held cluster-wide
    // (occupancy: so no other node reports it vacated after this answer).
    const held = deps.onChannelHeld?.(channel, opts, true);
    const ready = held ? Promise.all([subscribed, held]).then(() => undefined) : subscribed;
    st = { count: 1, ready, opts };
    channels.set(channel, st);
    metrics.channelsChanged(1);
    // A refusal is reported to every waiter through `ready` (their replies say
    // it); the catch keeps an unobserved rejection from escaping when all
    // waiters left meanwhile. Counted, not logged per channel.
    ready.catch((e: unknown) => subscribeRefusals.add('subscribe', 1, e instanceof Error ? e.message : String(e)));
    return st;
  }

  function release(channel: string): void {
    const st = channels.get(channel);
    if (!st) return;
    st.count--;
    if (st.count > 0) return;
    channels.delete(channel);
    lastLive.delete(channel);
    metrics.channelsChanged(-1);
    deps.onChannelHeld?.(channel, st.opts, false);
    broker.unsubscribe(channel).catch((e: unknown) => releaseFailures.add('unsubscribe', 1, e instanceof Error ? e.message : String(e)));
  }

  /** Adds a socket to its user's entry in byUser (one socket, or a Set of them). */
  function indexUser(ws: Socket, user: string): void {
    const other = byUser.get(user);
    if (other === undefined) byUser.set(user, ws);
    else if (other instanceof Set) other.add(ws);
    else byUser.set(user, new Set([other, ws]));
  }

  /** Removes a socket from its user's entry; false when it was not there (not a live session). */
  function unindexUser(ws: Socket, user: string): boolean {
    const mine = byUser.get(user);
    if (mine === ws) {
      byUser.delete(user);
    } else if (mine instanceof Set && mine.delete(ws)) {
      if (mine.size === 1) byUser.set(user, mine.values().next().value as Socket);
    } else {
      return false;
    }
    return true;
  }

  function drop(ws: Socket, s: Session, channel: string): void {
    if (!deleteChannel(s, channel)) return;
    // Out of the fan-out first: the embedded broker delivers the leave that
    // leavePresence causes synchronously, and it is not for this connection.
    if (s.open) ws.unsubscribe(channel);
    leavePresence(s, channel);
    unmarkChannel(ws, channel);
    stopRecovering(ws, channel);
    subsChanged(-1);
    release(channel);
  }

  return {
    add(ws) {
      const s = ws.getUserData();
      const other = byUser.get(s.user);
      if (other === ws || (other instanceof Set && other.has(ws))) return;
      byTransport[ws.transport ?? 'ws']++;
      byId.set(s.id, ws);
      indexUser(ws, s.user);
    },
    remove(ws) {
      const s = ws.getUserData();
      if (!unindexUser(ws, s.user)) return; // not (or no longer) a live session
      byTransport[ws.transport ?? 'ws']--;
      byId.delete(s.id);
      for (const ch of s.channels) {
        leavePresence(s, ch);
        unmarkChannel(ws, ch);
        stopRecovering(ws, ch);
        subsChanged(-1);
        release(ch);
      }
      s.channels = NO_CHANNELS;
      slow.delete(ws);
      wakeDrainWaiters(ws);
    },
    async subscribe(ws, channel, opts) {
      // While the broker is not live no subscription can be confirmed, even to
      // a channel another local client already holds.
      if (broker.status !== 'ready') throw new GatewayError('unavailable', 'broker is not connected', 1);
      const s = ws.getUserData();
      if (s.channels.has(channel)) {
        // Already subscribed (or a subscribe is in flight): wait for the same confirmation.
        await channels.get(channel)?.ready;
        return;
      }
      addChannel(s, channel);
      if (opts?.hold === true) {
        // Held like a recovery that has not replayed yet: deliver() keeps its frames aside.
        let m = recovering.get(channel);
        if (!m) recovering.set(channel, (m = new Map()));
        m.set(ws, { frames: [], overflow: false, replaying: true, last: 0, hold: true });
      } else if (slow.has(ws)) {
        let set = slowByChannel.get(channel);
        if (!set) slowByChannel.set(channel, (set = new Set()));
        set.add(ws);
      } else {
        ws.subscribe(channel);
      }
      subsChanged(1);
      const st = acquire(channel);
      try {
        await st.ready;
        await enterPresence(s, channel, st, opts?.info);
      } catch (e) {
        drop(ws, s, channel);
        throw e instanceof GatewayError ? e : new GatewayError('unavailable', 'broker did not confirm the subscription');
      }
    },
    peekHeld(ws, channel) {
      const held = recovering.get(channel)?.get(ws);
      if (!ws.getUserData().open || held?.hold !== true) return undefined;
      let firstOffset: number | undefined;
      for (const f of held.frames) {
        if (f.charCodeAt(TYPE_AT) !== M) continue;
        const o = frameOffset(f);
        if (o > 0) firstOffset = o;
        break;
      }
      return { firstOffset, overflow: held.overflow };
    },
    release(ws, channel, announced) {
      const held = recovering.get(channel)?.get(ws);
      if (held?.hold !== true) return;
      stopRecovering(ws, channel);
      if (!ws.getUserData().open) return;
      let messages = 0;
      for (const f of held.frames) {
        topics.sendTo(ws, f);
        if (f.charCodeAt(TYPE_AT) === M) messages++;
      }
      metrics.delivered(messages);
      if (messages === 0 && announced !== undefined && (lastLive.get(channel) ?? 0) < announced) {
        // Live delivery has not reached the announced position yet: skip up
        // to it, then join the fan-out (deliver(), as after a recovery).
        let m = recovering.get(channel);
        if (!m) recovering.set(channel, (m = new Map()));
        m.set(ws, { frames: [], overflow: false, replaying: false, last: announced });
        return;
      }
      if (slow.has(ws)) {
        let set = slowByChannel.get(channel);
        if (!set) slowByChannel.set(channel, (set = new Set()));
        set.add(ws);
      } else {
        ws.subscribe(channel);
      }
    },
    unsubscribe(ws, channel) {
      drop(ws, ws.getUserData(), channel);
    },
    setUser(ws, user) {
      const s = ws.getUserData();
      if (s.user === user || !unindexUser(ws, s.user)) return; // same user, or not a live session
      (s as { user: string }).user = user;
      indexUser(ws, user);
    },
    socketsOf(user) {
      const mine = byUser.get(user);
      if (mine === undefined) return [];
      return mine instanceof Set ? [...mine] : [mine];
    },
    publish(channel, frame) {
      return broker.publish(channel, frame);
    },
    isHistory: (channel) => optionsOf(channel).history !== undefined,
    options: optionsOf,
    async presence(channel) {
      const p = presenceFor(channel);
      return p.presence.presence(channel, p.joinLeave);
    },
    async presenceStats(channel) {
      const p = presenceFor(channel);
      return p.presence.stats(channel, p.joinLeave);
    },
    async publishData(channel, rawData, popts) {
      const h = optionsOf(channel).history;
      const idem = popts?.idempotencyKey !== undefined ? { key: popts.idempotencyKey, ttlSec: idempotencyTtlSec } : undefined;
      const exclude = popts?.exclude;
      if (!h) {
        const plain = encodeMessage(channel, rawData);
        // The excluded connection travels with the frame to every node (the
        // broker moves strings): deliver() strips the envelope.
        const frame = exclude === undefined ? plain : `${EXCLUDE_MARK}${exclude}\n${plain}`;
        if (!idem) {
          await broker.publish(channel, frame);
          return {};
        }
        const published = await broker.publishOnce(channel, frame, idem);
        if (published) return {};
        metrics.idempotentHit();
        return { repeat: true };
      }
      try {
        // History keeps the plain frame; only what goes to the nodes carries the envelope.
        const envelope = exclude === undefined ? '' : `${EXCLUDE_MARK}${exclude}\n`;
        const pos = await history().publish(channel, rawData, { size: h.size, ttlSec: h.ttl }, idem, envelope);
        if (!pos.repeat) return { offset: pos.offset };
        metrics.idempotentHit();
        return { offset: pos.offset, repeat: true };
      } catch (e) {
        metrics.historyAppendError();
        throw e;
      }
    },
    position(channel) {
      return history().position(channel, historyOptions(channel));
    },
    async readHistory(channel, limit, since) {
      const h = optionsOf(channel).history;
      if (!h) throw new GatewayError('bad_request', `channel ${channel} keeps no history`);
      if (broker.status !== 'ready') throw new GatewayError('unavailable', 'broker is not connected', 1);
      const hopts = { size: h.size, ttlSec: h.ttl };
      const n = Math.min(limit ?? h.size, h.size);
      if (since !== undefined) {
        const r = await history().since(channel, since.offset, n, hopts);
        if (r.frames === undefined || r.position.epoch !== since.epoch) {
          throw new GatewayError('recovery_failed', `history of ${channel} no longer holds offset ${since.offset} of epoch ${since.epoch}`);
        }
        return { position: r.position, frames: r.frames };
      }
      // The last n: read the position, then the n after (position - n). The
      // store has no "last n" read; publishes between the two reads make the
      // page the n after the first position (still in order, gap-free), and
      // more than the history size of them makes the start fall out of
      // history: read again from the newer position (bounded).
      let pos = await history().position(channel, hopts);
      for (let attempt = 0; attempt < 3; attempt++) {
        const r = await history().since(channel, Math.max(0, pos.offset - n), n, hopts);
        if (r.frames !== undefined) return { position: r.position, frames: r.frames };
        pos = r.position;
      }
      throw new GatewayError('unavailable', `history of ${channel} moves faster than it can be read`, 1);
    },
    async recover(ws, channel, from, opts) {
      if (broker.status !== 'ready') throw new GatewayError('unavailable', 'broker is not connected', 1);
      const s = ws.getUserData();
      // Live first, but held back: frames for this socket are kept aside
      // (deliver) until the replay went out, then sent after it, deduplicated.
      const held: Recovering = { frames: [], overflow: false, replaying: true, last: 0 };
      let m = recovering.get(channel);
      if (!m) recovering.set(channel, (m = new Map()));
      m.set(ws, held);
      addChannel(s, channel);
      subsChanged(1);
      const st = acquire(channel);
      /** Still recovering: not closed, unsubscribed or taken over meanwhile. */
      const current = (): boolean => s.open && recovering.get(channel)?.get(ws) === held;
      try {
        await st.ready;
        await enterPresence(s, channel, st, opts?.info);
        const hopts = historyOptions(channel);
        // A rewind recovers from the position minus n, read now that the
        // subscription is held: everything after it is in history or held.
        // Should more than the history size be published between that read
        // and the first page's (or the history be lost), the first page
        // starts again from its newer position (bounded).
        let rewindTries = 'rewind' in from ? 3 : 0;
        const back = 'rewind' in from ? Math.min(from.rewind, hopts.size) : 0;
        let since: SinceOffset;
        if ('rewind' in from) {
          const p = await history().position(channel, hopts);
          since = { offset: Math.max(0, p.offset - back), epoch: p.epoch };
        } else since = from;
        // The replay, a page at a time and paced by the socket's send buffer.
        // Before each read the held frames are cleared: everything delivered
        // before the read was sent is in history, so a page covers it, and
        // what arrives later is held (or, on overflow, read again).
        let last = since.offset;
        let replayed = 0;
        let recovered: boolean | undefined;
        let position: HistoryPosition;
        for (;;) {
          held.frames = [];
          held.overflow = false;
          const r = await history().since(channel, last, pageSize, hopts);
          position = r.position;
          if (!current()) return { recovered: false, position, replayed };
          if (recovered === undefined) {
            const reached = r.frames !== undefined && r.position.epoch === since.epoch;
            if (!reached && --rewindTries > 0) {
              since = { offset: Math.max(0, r.position.offset - back), epoch: r.position.epoch };
              last = since.offset;
              continue;
            }
            recovered = reached;
            if (!recovered) {
              last = r.position.offset;
              break;
            }
          } else if (r.frames === undefined || r.position.epoch !== since.epoch) {
            // History moved past this socket while it read its replay: it is
            // too slow for the channel's rate (or history was lost). It
            // reconnects and gets recovered:false.
            log.info({ user: s.user, channel, offset: last }, 'history moved past a recovering socket; closing it');
            stopRecovering(ws, channel);
            deps.closeSocket(ws, r.frames === undefined ? 4008 : 1011);
            return { recovered: false, position, replayed };
          }
          const page = r.frames ?? [];
          for (const f of page) {
            await room(ws, s, f.length);
            if (!current()) return { recovered: false, position, replayed };
            topics.sendTo(ws, f);
            last = frameOffset(f);
            replayed++;
          }
          // A short page reached the end of history as of its read: what came
          // after is in `held`, unless it overflowed (then read on).
          if (page.length < pageSize && !held.overflow) break;
        }
        for (const f of held.frames) {
          // join/leave frames carry no offset: they go out in their place.
          if (f.charCodeAt(TYPE_AT) !== M) {
            topics.sendTo(ws, f);
            continue;
          }
          const o = frameOffset(f);
          if (o > last) {
            topics.sendTo(ws, f);
            last = o;
          }
        }
        held.frames = [];
        held.replaying = false;
        held.last = last;
        // Join the fan-out now if live delivery already passed the replay;
        // otherwise deliver() hands it the next frames one by one and joins it then.
        if ((lastLive.get(channel) ?? 0) >= last) {
          stopRecovering(ws, channel);
          if (!slow.has(ws)) ws.subscribe(channel);
        }
        return { recovered, position: { offset: Math.max(last, position.offset), epoch: position.epoch }, replayed };
      } catch (e) {
        stopRecovering(ws, channel);
        drop(ws, s, channel);
        throw e instanceof GatewayError ? e : new GatewayError('unavailable', 'history is not available');
      }
    },
    closeHistorySubscribers() {
      lastLive.clear();
      let n = 0;
      const all: Socket[] = [];
      forEachSocket((ws) => all.push(ws));
      for (const ws of all) {
        const s = ws.getUserData();
        if (!s.open) continue;
        for (const ch of s.channels) {
          if (optionsOf(ch).history !== undefined) {
            deps.closeSocket(ws, 1011);
            n++;
            break;
          }
        }
      }
      return n;
    },
    disconnectUser(user) {
      return broker.publishControl({ kind: 'disconnect', user });
    },
    deliver(channel, payload) {
      let frame = payload;
      let excluded: Socket | undefined;
      if (payload.charCodeAt(0) === EXCLUDE_CODE) {
        const nl = payload.indexOf('\n');
        frame = payload.slice(nl + 1);
        const id = deps.connIds?.parse(payload.slice(1, nl));
        excluded = id === undefined ? undefined : byId.get(id);
      }
      const held = recovering.get(channel);
      const st = channels.get(channel);
      let joining: Socket[] | undefined;
      // Presence frames (on joinLeave channels only): the user of a join, to skip its own connections.
      const kind = st?.opts.joinLeave === true ? frame.charCodeAt(TYPE_AT) : M;
      const joiner = kind === J ? joinUser(frame) : undefined;
      if (held || st?.opts.history !== undefined) {
        const o = kind === M ? frameOffset(frame) : 0;
        if (o > 0) lastLive.set(channel, o);
        if (held) {
          for (const [ws, r] of held) {
            if (joiner !== undefined && ws.getUserData().user === joiner) continue;
            if (ws === excluded) continue;
            if (r.replaying) {
              if (r.frames.length < deps.maxRecoveryBuffer) r.frames.push(frame);
              else r.overflow = true;
            } else if (kind !== M) {
              topics.sendTo(ws, frame);
            } else if (o > r.last) {
              // Catching up after its replay: this frame is new to it, and from
              // here on live delivery is past its replay: it joins the topic
              // after this frame went out to the others.
              (joining ??= []).push(ws);
              topics.sendTo(ws, frame);
            }
          }
        }
      }
      const skipped = slowByChannel.get(channel);
      if (skipped) {
        metrics.dropped('slow_consumer', skipped.size);
        // Each got its `extra` when it was marked slow.
        for (const ws of skipped) extraOf(ws.getUserData()).dropped++;
      }
      if (kind === M && excluded !== undefined) metrics.delivered(publishExcluding(channel, frame, excluded));
      else if (kind === M) metrics.delivered(topics.publish(channel, frame));
      else if (kind === J) metrics.presenceFrame('join', publishJoin(channel, frame, joiner));
      else metrics.presenceFrame('leave', topics.publish(channel, frame));
      if (joining) {
        for (const ws of joining) {
          stopRecovering(ws, channel);
          if (ws.getUserData().open && !slow.has(ws)) ws.subscribe(channel);
        }
      }
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
        // A channel still recovering joins the topic when its recovery is done.
        if (recovering.get(ch)?.has(ws) !== true) ws.subscribe(ch);
      }
    },
    drained(ws) {
      wakeDrainWaiters(ws);
    },
    slowCount() {
      return slow.size;
    },
    control(msg) {
      if (msg.kind === 'disconnect') {
        const mine = byUser.get(msg.user);
        if (mine === undefined) return;
        for (const ws of mine instanceof Set ? [...mine] : [mine]) deps.closeSocket(ws, 4501);
      }
    },
    get size() {
      return byTransport.ws + byTransport.sse + byTransport.pusher;
    },
    forEach(fn) {
      forEachSocket(fn);
    },
    channelCount() {
      return channels.size;
    },
    localSubscribers(channel) {
      return channels.get(channel)?.count ?? 0;
    },
    localChannels() {
      return [...channels].map(([ch, st]) => [ch, st.count]);
    },
    connectionCounts() {
      return { ...byTransport };
    },
    subscriptionCount() {
      return subscriptionTotal;
    },
  };
}
