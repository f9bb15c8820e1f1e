/**
 * Server-side subscriptions (contract 1.1) on this node's connections: the
 * `subs` a connection starts with, and what POST /v1/subscribe and
 * /v1/unsubscribe do here (hub/control.ts carries them to every node).
 *
 * - Every subscription is made held (hub.subscribe with `hold`): the socket
 *   joins the channel's fan-out only after the frame that announces it
 *   (`welcome`, `subscribed`) went out, and what was delivered for it
 *   meanwhile follows that frame, in order. So `welcome` stays the first frame,
 *   and a `subscribed` comes before the channel's messages.
 * - The position announced on a history channel is read once the subscription
 *   is live; when messages were held meanwhile it is the offset just before
 *   the first of them, so a client that skips offsets it has seen (the SDK
 *   does) still gets every held message. The position is read on the broker's
 *   publishing connection, ahead of the messages on its subscriber
 *   connection: messages up to the announced offset that arrive after it are
 *   not delivered (hub.release). Every message after it is, once, in order.
 * - API requests for one user are applied one after the other on each node,
 *   in the order they arrive, and on a connection whose welcome is still
 *   waiting for its `subs` only after that welcome.
 *
 * Bounded: at most maxSubscriptions per connection; held frames as in the hub
 * (maxRecoveryBuffer per connection and channel; past it the connection is
 * closed with 1011); one pending chain per user with requests in flight.
 */
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { ControlOp, Metrics } from '../observability/metrics.js';
import { encodeSubscribed, encodeUnsubscribed, type SubPosition } from '../protocol/frames.js';
import type { HistoryPosition } from '../broker/history.js';
import type { Hub } from './hub.js';
import type { Socket } from './session.js';

/** `welcome.subs`: channel → its position on history channels, `{}` on others. */
export type WelcomeSubs = Record<string, Partial<SubPosition>>;

export interface ServerSubsDeps {
  readonly hub: Hub;
  /** Closes a socket with 1011 (server-side subscriptions could not be made, or frames were lost). */
  readonly closeSocket: (ws: Socket, code: 1011) => void;
  readonly maxSubscriptions: number;
  readonly metrics: Metrics;
  readonly log: Log;
}

export interface ServerSubs {
  /**
   * Makes a new connection's server-side subscriptions (the first
   * maxSubscriptions names; the others are neither made nor listed), then
   * calls `welcome` with their positions and lets the held frames follow.
   * Resolves true once the welcome went out; false when the connection closed
   * meanwhile or a subscription failed (broker down: the connection is then
   * closed with 1011 and no welcome is sent).
   */
  connect(ws: Socket, channels: readonly string[], welcome: (subs: WelcomeSubs) => void): Promise<boolean>;
  /**
   * Applies /v1/subscribe or /v1/unsubscribe to this node's open connections
   * of `user`. Resolves false when a connection could not be subscribed (broker
   * down): the request is then answered `unavailable`, and a retry subscribes
   * the connections still missing it (those already subscribed get nothing).
   */
  apply(op: ControlOp, user: string, channel: string): Promise<boolean>;
  /** Connections whose welcome waits for their server-side subscriptions. */
  connecting(): number;
}

/** The position to announce: the live one, or just before the first message held meanwhile. */
function announced(pos: HistoryPosition, firstHeld: number | undefined): SubPosition {
  const offset = firstHeld !== undefined && firstHeld - 1 < pos.offset ? firstHeld - 1 : pos.offset;
  return { offset, epoch: pos.epoch };
}

export function createServerSubs(deps: ServerSubsDeps): ServerSubs {
  const { hub, metrics, maxSubscriptions: max } = deps;
  /** Connections making their `subs` → settles once their welcome went out (or they failed). */
  const welcomes = new Map<Socket, Promise<void>>();
  /** User → the tail of its requests being applied here. */
  const chains = new Map<string, Promise<void>>();
  const failures = new LogTally(deps.log, 'warn', 'server-side subscriptions failed', { component: 'server-subs' });

  const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e));

  function send(ws: Socket, frame: string): void {
    if (ws.getUserData().open) ws.send(frame, false);
  }

  async function subscribeOne(ws: Socket, channel: string): Promise<boolean> {
    const s = ws.getUserData();
    await welcomes.get(ws);
    if (!s.open) return true;
    if (s.channels.has(channel)) {
      // Already subscribed (or being subscribed): nothing is sent, but the
      // answer waits for that subscription's confirmation.
      try {
        await hub.subscribe(ws, channel);
        return true;
      } catch (e) {
        failures.add('api', 1, describe(e));
        return !s.open;
      }
    }
    if (s.channels.size >= max) {
      metrics.serverSubscription('api', 'limit_exceeded');
      send(ws, encodeUnsubscribed(channel, 'limit_exceeded'));
      return true;
    }
    let pos: HistoryPosition | undefined;
    try {
      await hub.subscribe(ws, channel, { hold: true });
      if (hub.isHistory(channel)) pos = await hub.position(channel);
    } catch (e) {
      // Live but without a position (history unreadable): undone, so that a retry makes it again.
      if (hub.peekHeld(ws, channel)) hub.unsubscribe(ws, channel);
      if (!s.open) return true;
      metrics.serverSubscription('api', 'failed');
      failures.add('api', 1, describe(e));
      return false;
    }
    const held = hub.peekHeld(ws, channel);
    if (!held) return true; // closed, or unsubscribed meanwhile (by the client)
    if (held.overflow) {
      metrics.serverSubscription('api', 'failed');
      failures.add('held_overflow', 1);
      deps.closeSocket(ws, 1011);
      return true;
    }
    const at = pos ? announced(pos, held.firstOffset) : undefined;
    send(ws, encodeSubscribed(channel, at));
    hub.release(ws, channel, at?.offset);
    metrics.serverSubscription('api', 'subscribed');
    return true;
  }

  async function unsubscribeOne(ws: Socket, channel: string): Promise<boolean> {
    const s = ws.getUserData();
    await welcomes.get(ws);
    if (!s.open || !s.channels.has(channel)) return true;
    hub.unsubscribe(ws, channel);
    send(ws, encodeUnsubscribed(channel));
    metrics.serverSubscription('api', 'unsubscribed');
    return true;
  }

  async function applyNow(op: ControlOp, user: string, channel: string): Promise<boolean> {
    const one = op === 'subscribe' ? subscribeOne : unsubscribeOne;
    // SSE streams carry exactly the channels their request named (and have no frame to announce a change).
    const results = await Promise.all(hub.socketsOf(user).filter((ws) => ws.transport !== 'sse').map((ws) => one(ws, channel)));
    return results.every(Boolean);
  }

  return {
    async connect(ws, wanted, welcome) {
      const s = ws.getUserData();
      const channels = wanted.length > max ? wanted.slice(0, max) : wanted;
      metrics.serverSubscription('connect', 'limit_exceeded', wanted.length - channels.length);
      let settle: () => void = () => undefined;
      welcomes.set(ws, new Promise<void>((resolve) => (settle = resolve)));
      try {
        const positions = await Promise.all(channels.map(async (ch) => {
          await hub.subscribe(ws, ch, { hold: true });
          return hub.isHistory(ch) ? hub.position(ch) : undefined;
        }));
        if (!s.open) return false;
        // From here to the release, one synchronous step: nothing is delivered in between.
        const subs: WelcomeSubs = Object.create(null) as WelcomeSubs; // a channel may be named __proto__
        for (const [i, ch] of channels.entries()) {
          const held = hub.peekHeld(ws, ch);
          if (!held || held.overflow) throw new Error(held ? 'more frames arrived than could be held' : 'the subscription was lost');
          const pos = positions[i];
          subs[ch] = pos ? announced(pos, held.firstOffset) : {};
        }
        welcome(subs);
        for (const ch of channels) hub.release(ws, ch, subs[ch]?.offset);
        metrics.serverSubscription('connect', 'subscribed', channels.length);
        return true;
      } catch (e) {
        if (!s.open) return false;
        metrics.serverSubscription('connect', 'failed');
        failures.add('connect', 1, describe(e));
        deps.closeSocket(ws, 1011);
        return false;
      } finally {
        welcomes.delete(ws);
        settle();
      }
    },

    apply(op, user, channel) {
      const run = (chains.get(user) ?? Promise.resolve()).then(() => applyNow(op, user, channel));
      const tail = run.then(() => undefined, () => undefined);
      chains.set(user, tail);
      void tail.then(() => {
        if (chains.get(user) === tail) chains.delete(user);
      });
      return run;
    },

    connecting: () => welcomes.size,
  };
}
