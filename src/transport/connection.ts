/**
 * What happens on an open connection: client frames, replies, token refresh,
 * heartbeats and expiry. One reply per client frame `id`, always.
 */
import type { Verifier } from '../auth/verifier.js';
import type { PermissionsCache } from '../auth/permissions.js';
import type { Config } from '../config.js';
import { GatewayError, isGatewayError, type ErrorCode } from '../errors.js';
import type { Hub, SubscribeOptions } from '../hub/hub.js';
import { extraOf, type Session, type Socket } from '../hub/session.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { failureMessage, type ConnectProxy, type SubscribeProxy } from '../proxy/proxies.js';
import { CLOSE, CLOSE_REASON, type CloseCode } from '../protocol/close-codes.js';
import { encodeErrorReply, encodePresenceReply, encodeReply, parseClientFrame, type ClientFrame } from '../protocol/frames.js';
import { takeToken } from '../limits/rate.js';
import type { ConnIds } from './conn-id.js';
import { createExpiryWheel } from './expiry.js';

/** Consecutive rate-limited frames after which a client is closed with 1008. */
export const MAX_RATE_STRIKES = 50;
/** Burst of the per-connection frame bucket, as the contract gives it. */
export const FRAME_BURST = 200;
/** Heartbeat checks per ping interval: a silent connection is closed at most this fraction of an interval late. */
export const HEARTBEAT_TICKS_PER_PING = 4;
/** Client frames held at most while the welcome waits for the server-side subscriptions (more closes with 1008). */
export const MAX_HELD_FRAMES = 32;
/** Bytes of client frames held at most meanwhile (at least one frame of maxPayloadLength fits). */
export const MAX_HELD_BYTES = 64 * 1024;

export interface ConnectionDeps {
  readonly config: Config;
  readonly hub: Hub;
  readonly verifier: Verifier;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly nowMs: () => number;
  readonly connIds: ConnIds;
  readonly permissions: PermissionsCache;
  /** The connect proxy (refresh of the connections it accepted) and the subscribe proxy, when configured. */
  readonly proxies?: { readonly connect?: ConnectProxy | undefined; readonly subscribe?: SubscribeProxy | undefined };
}

export interface Connections {
  opened(ws: Socket): void;
  message(ws: Socket, data: ArrayBuffer, isBinary: boolean): void;
  pong(ws: Socket): void;
  /** uWS skipped a message for this socket: its send buffer is over maxBackpressure. */
  dropped(ws: Socket): void;
  /** The socket's send buffer shrank. */
  drain(ws: Socket): void;
  closed(ws: Socket, code: number, reason: string): void;
  /** From now on client frames are held (the welcome waits for the server-side subscriptions). */
  holdFrames(ws: Socket): void;
  /** The welcome went out: the held client frames are handled, in order, and later ones as they come. */
  releaseFrames(ws: Socket): void;
  /** Closes with a catalog code and its reason, once. */
  close(ws: Socket, code: CloseCode): void;
  stop(): void;
}

export function createConnections(deps: ConnectionDeps): Connections {
  const { config, hub, verifier, metrics, log, nowMs, permissions } = deps;
  const conn = (s: Session): string => deps.connIds.name(s.id);
  const frameRate = config.clientFrameRate;
  const expiry = createExpiryWheel<Socket>((ws) => {
    const s = ws.getUserData();
    if (s.open && s.exp > 0 && s.exp <= Date.now() / 1000) close(ws, CLOSE.TOKEN_EXPIRED);
  }, () => Date.now() / 1000);

  function close(ws: Socket, code: CloseCode): void {
    const s = ws.getUserData();
    if (!s.open) return;
    s.open = false; // nothing more is sent; the close handler does the bookkeeping
    if (code === CLOSE.SLOW_CONSUMER) metrics.slowConsumerClosed();
    ws.end(code, CLOSE_REASON[code]);
  }

  // After an await the socket may be closed, and uWS throws on any access to a
  // closed socket: callers pass the Session they read before awaiting.
  function send(ws: Socket, s: Session, text: string): void {
    if (s.open) ws.send(text, false);
  }

  function replyError(ws: Socket, s: Session, id: number, code: ErrorCode, message: string): void {
    metrics.frameRejected(code);
    send(ws, s, encodeErrorReply(id, code, message));
  }

  function fail(ws: Socket, s: Session, id: number, e: unknown, what: string): void {
    if (isGatewayError(e)) {
      replyError(ws, s, id, e.code, e.message);
      return;
    }
    log.error({ err: e, conn: conn(s) }, `${what} failed`);
    replyError(ws, s, id, 'internal', `${what} failed`);
  }

  // Heartbeat: ping every interval; close what has been silent for two. The
  // check runs HEARTBEAT_TICKS_PER_PING times per interval and counts, per
  // connection, the ticks since the client last sent anything (a complete
  // frame or a pong; a frame still arriving is not activity): a small integer
  // rather than a time per connection. A connection is closed at the first
  // tick at which it has been silent for two whole intervals, so 2 to 2.25
  // intervals after its last frame, never before. That also bounds a client
  // stuck in a frame uWS waits for (an unmasked frame, an unfinished frame or
  // fragmented message under uWS's size limit: docs/protocol.md, Frames).
  const pingMs = config.pingInterval * 1000;
  const closeAfterTicks = 2 * HEARTBEAT_TICKS_PER_PING;
  const slowClose = config.slowConsumerPolicy === 'close';
  let tick = 0;
  const heartbeat = setInterval(() => {
    const now = nowMs();
    const ping = ++tick % HEARTBEAT_TICKS_PER_PING === 0;
    hub.forEach((ws) => {
      const s = ws.getUserData();
      if (!s.open) return;
      const slowSinceMs = s.extra?.slowSinceMs ?? 0;
      // A slow consumer whose buffer never drained: close it anyway (its close
      // frame may not fit, so the client may see 1006 instead of 4008).
      if (slowSinceMs > 0 && slowClose && now - slowSinceMs > 2 * pingMs) close(ws, CLOSE.SLOW_CONSUMER);
      else if (s.idleBeats >= closeAfterTicks) close(ws, CLOSE.PING_TIMEOUT);
      else {
        s.idleBeats++;
        if (ping) ws.ping();
      }
    });
  }, pingMs / HEARTBEAT_TICKS_PER_PING);
  heartbeat.unref();

  // Slow consumers. uWS skips messages for a socket whose buffer is over
  // maxBackpressure, but reports only some of them through `dropped` (most are
  // skipped silently). So pubgate takes over at the first report: the hub
  // counts every later message on the socket's channels as dropped, and the
  // socket leaves uWS's topics. `dropped` runs inside app.publish(), where
  // nothing may unsubscribe or close a socket (ending one there crashes the
  // process), so that part waits for a microtask, after publish returned.
  const closeWhenBelow = config.maxBackpressure;
  function takeOver(ws: Socket, s: Session): void {
    if (!s.open) return;
    hub.detach(ws);
    if (config.slowConsumerPolicy === 'close') {
      log.info({ conn: conn(s), user: s.user, buffered: ws.getBufferedAmount() }, 'slow consumer: closing with 4008 once its buffer drained');
      if (ws.getBufferedAmount() < closeWhenBelow) close(ws, CLOSE.SLOW_CONSUMER);
    } else {
      log.info({ conn: conn(s), user: s.user }, 'slow consumer: skipping its messages until it caught up (slowConsumerPolicy=drop)');
    }
  }

  const overLimit = (s: Session, channel: string): boolean => !s.channels.has(channel) && s.channels.size >= config.maxSubscriptions;
  const limitMessage = `at most ${config.maxSubscriptions} subscriptions per connection`;
  const subscribeProxy = deps.proxies?.subscribe;

  /** The subscribe proxy's decision as the subscription's options, or the reply's error. */
  async function askSubscribeProxy(proxy: SubscribeProxy, s: Session, channel: string): Promise<SubscribeOptions> {
    const o = await proxy.ask({ user: s.user, conn: conn(s), channel, info: s.extra?.info });
    if (o.result === 'allow') return o.value.info === undefined ? {} : { info: o.value.info };
    if (o.result === 'deny') throw new GatewayError('forbidden', `not allowed to subscribe to ${channel}`);
    throw new GatewayError('unavailable', failureMessage('subscribe', o.result), 1);
  }

  /**
   * Who allows a subscribe, in order (contract 1.1): the connection's claims
   * (or an earlier subscribe of the same channel), else the frame's
   * subscription token (an invalid one is refused, never passed on to the
   * proxy), else the subscribe proxy when the channel's namespace has
   * `subscribeProxy`, else nobody: `forbidden`.
   */
  async function subscribe(ws: Socket, s: Session, f: Extract<ClientFrame, { type: 'subscribe' }>): Promise<void> {
    let opts: SubscribeOptions | undefined;
    if (!s.channels.has(f.channel) && !s.perms.subscribe(f.channel, s.user)) {
      const { token, channel } = f;
      let ask: (() => Promise<SubscribeOptions>) | undefined;
      if (token !== undefined) ask = () => verifier.verifySubscription(token, { user: s.user, channel });
      else if (subscribeProxy !== undefined && hub.options(channel).subscribeProxy) ask = () => askSubscribeProxy(subscribeProxy, s, channel);
      if (ask === undefined) return replyError(ws, s, f.id, 'forbidden', `not allowed to subscribe to ${channel}`);
      // Checked before the token or the backend is asked, and again after (other subscribes may have completed meanwhile).
      if (overLimit(s, channel)) return replyError(ws, s, f.id, 'limit_exceeded', limitMessage);
      try {
        opts = await ask();
      } catch (e) {
        return fail(ws, s, f.id, e, 'subscribe');
      }
      if (!s.open) return;
    }
    if (overLimit(s, f.channel)) return replyError(ws, s, f.id, 'limit_exceeded', limitMessage);
    if (f.rewind !== undefined && !hub.options(f.channel).rewind) {
      return replyError(ws, s, f.id, 'bad_request', `the namespace of ${f.channel} does not allow rewind`);
    }
    try {
      if (f.rewind !== undefined && !s.channels.has(f.channel)) {
        // The paced recovery path from the position minus rewind: the last
        // messages, then live, no gap and no duplicate. Subscribed already:
        // as a plain subscribe (nothing is replayed twice).
        const r = await hub.recover(ws, f.channel, { rewind: f.rewind }, opts);
        metrics.rewind(true, r.replayed);
        send(ws, s, encodeReply(f.id, { offset: r.position.offset, epoch: r.position.epoch }));
      } else if (!hub.isHistory(f.channel)) {
        await hub.subscribe(ws, f.channel, opts);
        send(ws, s, encodeReply(f.id));
      } else if (f.since === undefined || s.channels.has(f.channel)) {
        // The position is read after the subscription is live: a client that
        // recovers from it later misses nothing.
        await hub.subscribe(ws, f.channel, opts);
        const pos = await hub.position(f.channel);
        send(ws, s, encodeReply(f.id, { offset: pos.offset, epoch: pos.epoch }));
      } else {
        const r = await hub.recover(ws, f.channel, f.since, opts);
        metrics.recovery(r.recovered, r.replayed);
        send(ws, s, encodeReply(f.id, { recovered: r.recovered, offset: r.position.offset, epoch: r.position.epoch }));
      }
    } catch (e) {
      if (f.since !== undefined) metrics.recovery(undefined, 0);
      if (f.rewind !== undefined) metrics.rewind(false, 0);
      fail(ws, s, f.id, e, 'subscribe');
    }
  }

  /**
   * The `publish` claim allows it, or the channel's namespace has clientPublish
   * and this connection is subscribed to it.
   */
  function mayPublish(s: Session, channel: string): boolean {
    if (s.perms.publish(channel, s.user)) return true;
    return s.channels.has(channel) && hub.options(channel).clientPublish;
  }

  async function publish(ws: Socket, s: Session, f: Extract<ClientFrame, { type: 'publish' }>): Promise<void> {
    if (!mayPublish(s, f.channel)) return replyError(ws, s, f.id, 'forbidden', `not allowed to publish to ${f.channel}`);
    try {
      const r = await hub.publishData(f.channel, f.data, f.echo === false ? { exclude: conn(s) } : undefined);
      metrics.published(1);
      send(ws, s, encodeReply(f.id, r.offset !== undefined ? { offset: r.offset } : undefined));
    } catch (e) {
      fail(ws, s, f.id, e, 'publish');
    }
  }

  /** A refresh's new expiry, permissions and `info` (`info` is shown from the next presence subscribe on; entries already made keep theirs). */
  function renew(ws: Socket, s: Session, exp: number, channels: readonly string[], publish: readonly string[], info: string | undefined): void {
    expiry.remove(ws, s.exp);
    s.exp = exp;
    expiry.add(ws, s.exp);
    s.perms = permissions.get(channels, publish);
    if (info !== s.extra?.info) extraOf(s).info = info;
  }

  async function refresh(ws: Socket, s: Session, id: number, token: string): Promise<void> {
    try {
      const claims = await verifier.verify(token);
      if (claims.sub !== s.user) throw new GatewayError('forbidden', 'a refresh token must carry the same sub');
      if (!s.open) return;
      renew(ws, s, claims.exp, claims.channels, claims.publish, claims.info);
      metrics.tokenRefreshed(true);
      send(ws, s, encodeReply(id));
    } catch (e) {
      metrics.tokenRefreshed(false);
      fail(ws, s, id, e, 'refresh');
    }
  }

  /**
   * A refresh of a connection the connect proxy accepted: the proxy is asked
   * again with the upgrade's cookie, client IP and Origin (a token in the
   * frame is ignored). Its answer replaces expiry, permissions and `info`;
   * `subs` apply at connect only. A refusal is `unauthorized` (the connection
   * stays open until its expiry), another user `forbidden`, no decision `unavailable`.
   */
  async function refreshThroughProxy(ws: Socket, s: Session, id: number, cookie: string): Promise<void> {
    try {
      const proxy = deps.proxies?.connect;
      if (proxy === undefined) throw new GatewayError('internal', 'the connect proxy is not configured');
      const from = s.extra?.connectFrom;
      const o = await proxy.ask({ cookie, ip: from?.ip ?? '', origin: from?.origin ?? '' });
      if (o.result === 'deny') throw new GatewayError('unauthorized', 'the connect proxy refused the refresh');
      if (o.result !== 'allow') throw new GatewayError('unavailable', failureMessage('connect', o.result), 5);
      const g = o.value;
      if (g.user !== s.user) throw new GatewayError('forbidden', 'the connect proxy answered another user');
      if (!s.open) return;
      renew(ws, s, Math.round(Date.now() / 1000 + g.expiresIn), g.channels, g.publish, g.info);
      metrics.tokenRefreshed(true);
      send(ws, s, encodeReply(id));
    } catch (e) {
      metrics.tokenRefreshed(false);
      fail(ws, s, id, e, 'refresh');
    }
  }

  /**
   * `presence` and `presence_stats`: for channels this connection may subscribe
   * to by its claims, or is subscribed to (a subscription token or the
   * subscribe proxy allowed it), checked first; with presence.
   */
  async function presence(ws: Socket, s: Session, f: Extract<ClientFrame, { type: 'presence' | 'presence_stats' }>): Promise<void> {
    if (!s.channels.has(f.channel) && !s.perms.subscribe(f.channel, s.user)) return replyError(ws, s, f.id, 'forbidden', `not allowed to subscribe to ${f.channel}`);
    try {
      if (f.type === 'presence') send(ws, s, encodePresenceReply(f.id, await hub.presence(f.channel)));
      else send(ws, s, encodeReply(f.id, await hub.presenceStats(f.channel)));
    } catch (e) {
      fail(ws, s, f.id, e, f.type);
    }
  }

  function dispatch(ws: Socket, s: Session, f: ClientFrame): void {
    metrics.clientFrame(f.type);
    switch (f.type) {
      case 'ping':
        if (f.id !== undefined) send(ws, s, encodeReply(f.id));
        return;
      case 'subscribe':
        void subscribe(ws, s, f);
        return;
      case 'unsubscribe':
        hub.unsubscribe(ws, f.channel);
        send(ws, s, encodeReply(f.id));
        return;
      case 'publish':
        void publish(ws, s, f);
        return;
      case 'refresh': {
        if (s.exp === 0) return replyError(ws, s, f.id, 'bad_request', 'anonymous connections have no token to refresh');
        const cookie = s.extra?.cookie;
        if (cookie !== undefined) {
          void refreshThroughProxy(ws, s, f.id, cookie);
          return;
        }
        if (f.token === undefined) return replyError(ws, s, f.id, 'bad_request', 'refresh needs a token');
        void refresh(ws, s, f.id, f.token);
        return;
      }
      case 'presence':
      case 'presence_stats':
        void presence(ws, s, f);
        return;
    }
  }

  /** One client text frame: the rate limit, parsing, dispatch. */
  function handleText(ws: Socket, s: Session, text: string): void {
    const parsed = parseClientFrame(text);
    if (frameRate > 0 && !takeFrameToken(s, frameRate, nowMs())) {
      const t = extraOf(s);
      t.strikes++;
      if (t.strikes >= MAX_RATE_STRIKES) {
        metrics.frameRejected('rate_limited');
        return close(ws, CLOSE.POLICY_VIOLATION);
      }
      if (parsed.ok ? parsed.frame.id !== undefined : parsed.id !== undefined) {
        const id = parsed.ok ? (parsed.frame.id as number) : (parsed.id as number);
        replyError(ws, s, id, 'rate_limited', `over ${frameRate} frames per second`);
      } else {
        metrics.frameRejected('rate_limited');
      }
      return;
    }
    if (s.extra) s.extra.strikes = 0;
    if (!parsed.ok) {
      if (parsed.id === undefined) {
        metrics.frameRejected('malformed');
        log.debug({ conn: conn(s), reason: parsed.message }, 'malformed frame');
        return close(ws, CLOSE.MALFORMED);
      }
      return replyError(ws, s, parsed.id, 'bad_request', parsed.message);
    }
    dispatch(ws, s, parsed.frame);
  }

  return {
    opened(ws) {
      hub.add(ws);
      const s = ws.getUserData();
      expiry.add(ws, s.exp);
      metrics.connectionOpened(ws.transport ?? 'ws');
    },
    message(ws, data, isBinary) {
      const s = ws.getUserData();
      if (!s.open) return;
      s.idleBeats = 0;
      if (isBinary) {
        metrics.frameRejected('binary');
        return close(ws, CLOSE.UNSUPPORTED_DATA);
      }
      if (data.byteLength > config.maxPayloadLength) {
        metrics.frameRejected('too_large');
        return close(ws, CLOSE.TOO_LARGE);
      }
      // Copy at once: the ArrayBuffer is only valid until this handler returns.
      const text = Buffer.from(data).toString('utf8');
      const held = s.extra?.held;
      if (held !== undefined) {
        // Before the welcome nothing may be answered: kept for later, bounded.
        let bytes = data.byteLength;
        for (const h of held) bytes += Buffer.byteLength(h);
        if (held.length >= MAX_HELD_FRAMES || bytes > Math.max(MAX_HELD_BYTES, config.maxPayloadLength)) {
          metrics.frameRejected('rate_limited');
          return close(ws, CLOSE.POLICY_VIOLATION);
        }
        held.push(text);
        return;
      }
      handleText(ws, s, text);
    },
    pong(ws) {
      ws.getUserData().idleBeats = 0;
    },
    dropped(ws) {
      const s = ws.getUserData();
      // Once slow, the hub counts every skipped message at delivery time.
      if (!s.open || (s.extra?.slowSinceMs ?? 0) > 0) return;
      metrics.dropped('slow_consumer', 1);
      const t = extraOf(s);
      t.dropped++;
      t.slowSinceMs = nowMs();
      hub.markSlow(ws);
      queueMicrotask(() => takeOver(ws, s));
    },
    drain(ws) {
      const s = ws.getUserData();
      if (!s.open) return;
      hub.drained(ws);
      const t = s.extra;
      if (t === undefined || t.slowSinceMs === 0) return;
      if (config.slowConsumerPolicy === 'close') {
        if (ws.getBufferedAmount() < closeWhenBelow) close(ws, CLOSE.SLOW_CONSUMER);
      } else if (ws.getBufferedAmount() === 0) {
        hub.reattach(ws);
        log.info({ conn: conn(s), user: s.user, dropped: t.dropped }, 'slow consumer caught up; delivering again');
        t.slowSinceMs = 0;
      }
    },
    closed(ws, code, reason) {
      const s = ws.getUserData();
      s.open = false;
      expiry.remove(ws, s.exp);
      hub.remove(ws);
      metrics.connectionClosed(code, ws.transport ?? 'ws');
      log.debug({ conn: conn(s), user: s.user, code, reason, dropped: s.extra?.dropped || undefined }, 'connection closed');
    },
    holdFrames(ws) {
      extraOf(ws.getUserData()).held = [];
    },
    releaseFrames(ws) {
      const s = ws.getUserData();
      const held = s.extra?.held;
      if (held === undefined) return;
      s.extra!.held = undefined;
      for (const text of held) {
        if (!s.open) return;
        handleText(ws, s, text);
      }
    },
    close,
    stop() {
      clearInterval(heartbeat);
      expiry.stop();
    },
  };
}

function takeFrameToken(s: Session, rate: number, now: number): boolean {
  const fullAtMs = takeToken(s.frameFullAtMs, rate, FRAME_BURST, now);
  if (fullAtMs === undefined) return false;
  s.frameFullAtMs = fullAtMs;
  return true;
}
