/**
 * WebSocket `/app/{key}`: Pusher Channels protocol 7 (contract 1.1, "Pusher
 * Channels compatibility") over the same hub, broker and presence as `/ws`.
 *
 * The upgrade applies the edge admission, Origin and capacity rules of `/ws`
 * (no token: Pusher authorizes per channel). An unknown key is upgraded and
 * told `pusher:error` 4001, then closed, as Pusher does (pusher-js then does
 * not reconnect). Lifecycle (heartbeat, slow consumers, close bookkeeping) is
 * the native connections' (transport/connection.ts); the frames are Pusher's.
 */
import type { Config } from '../config.js';
import type { ErrorCode } from '../errors.js';
import type { Hub } from '../hub/hub.js';
import { takeToken } from '../limits/rate.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { CLOSE } from '../protocol/close-codes.js';
import { channelAuthText, userAuthText, verifyAuth } from '../protocol/pusher/auth.js';
import {
  PUSHER_CODE, encodeConnectionEstablished, encodePong, encodePusherError, encodeSigninSuccess, encodeSubscriptionError,
  encodeSubscriptionSucceeded, parsePusherFrame, presenceData, type SubscriptionErrorType,
} from '../protocol/pusher/frames.js';
import type { ConnectHandler, ConnectKind } from '../transport/connect.js';
import type { ConnIds } from '../transport/conn-id.js';
import type { Connections } from '../transport/connection.js';
import { FRAME_BURST, MAX_RATE_STRIKES } from '../transport/connection.js';
import { upgradeAccepted, upgradeRefusal, type UpgradeContext } from '../transport/upgrade.js';
import type { HttpRequest, HttpResponse, WebSocket, WebSocketBehavior } from '../transport/uws.js';
import type { PusherApps } from './apps.js';
import { USER_CHANNEL_PREFIX, channelKind, internalChannel, isUserChannelId, isValidPusherChannel, userChannel } from './channels.js';
import { createSocketIds } from './socket-id.js';
import { PusherSocket, type PusherSession } from './socket.js';
import { appUserId, hubUserOf } from './users.js';

export interface PusherEndpointDeps {
  readonly config: Config;
  readonly apps: PusherApps;
  readonly hub: Hub;
  readonly conns: Connections;
  readonly connIds: ConnIds;
  readonly metrics: Metrics;
  readonly log: Log;
  /** The connection admission shared with `/ws` and `/sse`. */
  readonly connect: ConnectHandler;
  readonly nowMs: () => number;
}

/** The user of a Pusher connection that has not signed in nor joined a presence channel. */
export const NO_USER = '';
/** Pusher's limit on a member's user_info (and ours on a presence `info`). */
const MAX_USER_INFO = 1024;

type Ws = WebSocket<PusherSession>;

export function createPusherEndpoint(deps: PusherEndpointDeps): Pick<WebSocketBehavior<PusherSession>, 'upgrade' | 'open' | 'message' | 'close'> {
  const { config, apps, hub, conns, connIds, metrics, log, nowMs } = deps;
  const socketIds = createSocketIds(connIds);
  const activityTimeout = Math.max(1, Math.ceil(config.pingInterval));
  const frameRate = config.clientFrameRate;

  /**
   * The shared connection admission (transport/connect.ts), as for `/ws`: edge
   * admission, the upgrade's request checks, Origin, capacity; no token.
   */
  function upgrade(res: HttpResponse, req: HttpRequest, context: UpgradeContext): void {
    // Read now: req is invalid once the handler returns.
    const key = decodeURIComponent(req.getParameter(0) ?? '');
    const protocol = new URLSearchParams(req.getQuery() ?? '').get('protocol');
    const kind: ConnectKind<null> = {
      transport: 'pusher',
      tokenless: true,
      shape: (head) => upgradeRefusal(head) ?? { value: null },
      accept(session, _shape, a) {
        const ps: PusherSession = {
          ...session,
          user: NO_USER,
          perms: NO_PERMS,
          pusher: new PusherSocket(apps.byKey(key), protocol !== null && !/^[5-7]$/.test(protocol)),
        };
        upgradeAccepted(ps, '', a, context);
      },
    };
    deps.connect(res, req, kind);
  }

  function open(ws: Ws): void {
    const s = ws.getUserData();
    const socket = s.pusher;
    socket.ws = ws;
    if (socket.app === undefined) {
      s.open = false;
      ws.send(encodePusherError(PUSHER_CODE.UNKNOWN_APP, 'App key not in this gateway'), false);
      ws.end(PUSHER_CODE.UNKNOWN_APP, 'App key not in this gateway');
      return;
    }
    if (socket.badProtocol) {
      s.open = false;
      ws.send(encodePusherError(PUSHER_CODE.BAD_PROTOCOL, 'Unsupported protocol version'), false);
      ws.end(PUSHER_CODE.BAD_PROTOCOL, 'Unsupported protocol version');
      return;
    }
    conns.opened(socket);
    ws.send(encodeConnectionEstablished(socketIds.of(s.id), activityTimeout), false);
  }

  function subscriptionError(socket: PusherSocket, channel: string, type: SubscriptionErrorType, error: string, status: number, code: ErrorCode): void {
    metrics.frameRejected(code);
    socket.sendPusher(encodeSubscriptionError(channel, type, error, status));
  }

  async function subscribe(socket: PusherSocket, s: PusherSession, data: unknown): Promise<void> {
    const app = s.pusher.app!;
    const d = (data ?? {}) as { channel?: unknown; auth?: unknown; channel_data?: unknown };
    const name = d.channel;
    // pusher-js subscribes its user channel after pusher:signin; the signin subscribed it already.
    if (typeof name === 'string' && name.startsWith(USER_CHANNEL_PREFIX)) return userChannelSubscribe(socket, s, name);
    if (!isValidPusherChannel(name)) {
      metrics.frameRejected('bad_request');
      socket.sendPusher(encodePusherError(null, 'Invalid channel name'));
      return;
    }
    const internal = internalChannel(app, name);
    if (s.channels.has(internal)) return; // subscribed, or being subscribed
    if (s.channels.size >= config.maxSubscriptions) {
      return subscriptionError(socket, name, 'LimitReached', `at most ${config.maxSubscriptions} channels per connection`, 429, 'limit_exceeded');
    }
    const kind = channelKind(name);
    let info: string | undefined;
    if (kind !== 'public') {
      const channelData = kind === 'presence' ? d.channel_data : undefined;
      if (kind === 'presence' && typeof channelData !== 'string') {
        return subscriptionError(socket, name, 'AuthError', 'presence channels need channel_data', 401, 'unauthorized');
      }
      if (!verifyAuth(app.key, app.secret, channelAuthText(socketIds.of(s.id), name, channelData as string | undefined), d.auth)) {
        return subscriptionError(socket, name, 'AuthError', 'Invalid signature', 401, 'unauthorized');
      }
      if (kind === 'presence') {
        let cd: { user_id?: unknown; user_info?: unknown };
        try {
          cd = JSON.parse(channelData as string) as typeof cd;
        } catch {
          return subscriptionError(socket, name, 'AuthError', 'channel_data is not JSON', 400, 'bad_request');
        }
        const uid = typeof cd?.user_id === 'number' ? String(cd.user_id) : cd?.user_id;
        if (typeof uid !== 'string' || uid === '' || uid.length > 200) {
          return subscriptionError(socket, name, 'AuthError', 'channel_data needs a user_id', 400, 'bad_request');
        }
        if (cd.user_info !== undefined) {
          info = JSON.stringify(cd.user_info);
          if (info.length > MAX_USER_INFO) return subscriptionError(socket, name, 'AuthError', `user_info over ${MAX_USER_INFO} bytes`, 400, 'bad_request');
        }
        // One user per connection: the first of pusher:signin and presence channel_data names it (app-scoped, users.ts).
        const hu = hubUserOf(app, uid);
        if (s.user === NO_USER) hub.setUser(socket, hu);
        else if (s.user !== hu) return subscriptionError(socket, name, 'AuthError', 'this connection is another user', 403, 'forbidden');
      }
    }
    try {
      // The hub adds the channel to s.channels before its first await: a second pusher:subscribe meanwhile is ignored.
      await hub.subscribe(socket, internal, { hold: true, ...(info !== undefined ? { info } : {}) });
      let succeeded = encodeSubscriptionSucceeded(name);
      if (kind === 'presence') {
        const snap = await hub.presence(internal);
        succeeded = encodeSubscriptionSucceeded(name, presenceData(snap.members.map((m) => ({ user: appUserId(app, m.user), info: m.info }))));
      }
      const held = hub.peekHeld(socket, internal);
      if (held === undefined || !s.open) return; // unsubscribed or closed meanwhile
      if (held.overflow) return conns.close(socket, CLOSE.INTERNAL_ERROR);
      socket.sendPusher(succeeded);
      hub.release(socket, internal);
    } catch (e) {
      if (s.channels.has(internal)) hub.unsubscribe(socket, internal);
      if (!s.open) return;
      log.debug({ conn: connIds.name(s.id), err: e }, 'pusher subscribe failed');
      subscriptionError(socket, name, 'Unavailable', 'the channel is not available now; try again', 503, 'unavailable');
    }
  }

  /**
   * The user channel of each signed-in connection (internal name) and its hub
   * subscribe (settled: subscribed, or failed); removed when it failed.
   */
  const userSubscribes = new WeakMap<PusherSession, { readonly internal: string; readonly done: Promise<boolean> }>();

  /**
   * A pusher:subscribe of a user channel: succeeds (once the signin's own
   * subscribe is done) for the connection's own user channel, else 403.
   */
  async function userChannelSubscribe(socket: PusherSocket, s: PusherSession, name: string): Promise<void> {
    const internal = internalChannel(s.pusher.app!, name);
    const pending = userSubscribes.get(s);
    if (pending === undefined || pending.internal !== internal) {
      return subscriptionError(socket, name.slice(0, 200), 'AuthError', 'user channels are subscribed by pusher:signin, for the signed-in user only', 403, 'forbidden');
    }
    if (await pending.done) socket.sendPusher(encodeSubscriptionSucceeded(name));
    else subscriptionError(socket, name, 'Unavailable', 'the channel is not available now; try again', 503, 'unavailable');
  }

  function unsubscribe(socket: PusherSocket, s: PusherSession, data: unknown): void {
    const name = (data as { channel?: unknown } | null)?.channel;
    if (!isValidPusherChannel(name)) return;
    const internal = internalChannel(s.pusher.app!, name);
    if (!s.channels.has(internal)) return;
    hub.unsubscribe(socket, internal);
  }

  function clientEvent(socket: PusherSocket, s: PusherSession, event: string, channel: string | undefined, data: unknown): void {
    const internal = channel === undefined || !isValidPusherChannel(channel) ? undefined : internalChannel(s.pusher.app!, channel);
    if (internal === undefined || !s.channels.has(internal) || hub.peekHeld(socket, internal) !== undefined) {
      metrics.frameRejected('forbidden');
      socket.sendPusher(encodePusherError(null, `Client event rejected: not subscribed to ${String(channel).slice(0, 164)}`));
      return;
    }
    const kind = channelKind(channel!);
    if (kind !== 'private' && kind !== 'presence') {
      metrics.frameRejected('forbidden');
      socket.sendPusher(encodePusherError(null, 'Client events are allowed on private and presence channels only'));
      return;
    }
    const uid = kind === 'presence' && s.user !== NO_USER ? `,"user_id":${JSON.stringify(appUserId(s.pusher.app!, s.user))}` : '';
    const raw = `{"event":${JSON.stringify(event)},"data":${JSON.stringify(data ?? null)}${uid}}`;
    hub.publishData(internal, raw, { exclude: connIds.name(s.id) }).catch((e: unknown) => {
      log.debug({ conn: connIds.name(s.id), err: e }, 'pusher client event not published');
    });
  }

  function signin(socket: PusherSocket, s: PusherSession, data: unknown): void {
    const app = s.pusher.app!;
    const d = (data ?? {}) as { auth?: unknown; user_data?: unknown };
    const userData = d.user_data;
    if (typeof userData !== 'string' || !verifyAuth(app.key, app.secret, userAuthText(socketIds.of(s.id), userData), d.auth)) {
      metrics.frameRejected('unauthorized');
      return socket.endPusher(PUSHER_CODE.UNAUTHORIZED, 'Invalid signature');
    }
    let uid: unknown;
    try {
      uid = (JSON.parse(userData) as { id?: unknown }).id;
    } catch {
      uid = undefined;
    }
    if (typeof uid === 'number') uid = String(uid);
    if (typeof uid !== 'string' || uid === '' || uid.length > 200) {
      metrics.frameRejected('bad_request');
      return socket.endPusher(PUSHER_CODE.UNAUTHORIZED, 'user_data needs an id');
    }
    // The id names the user channel (#server-to-user-<id>): Pusher's channel alphabet only.
    if (!isUserChannelId(uid)) {
      metrics.frameRejected('bad_request');
      return socket.endPusher(PUSHER_CODE.UNAUTHORIZED, 'the user id must be 1-148 characters of A-Z a-z 0-9 _ - = @ , . ;');
    }
    const hu = hubUserOf(app, uid);
    if (s.user !== NO_USER && s.user !== hu) {
      metrics.frameRejected('forbidden');
      return socket.endPusher(PUSHER_CODE.UNAUTHORIZED, 'this connection is another user');
    }
    hub.setUser(socket, hu);
    const internal = userChannel(app, uid);
    socket.sendPusher(encodeSigninSuccess(userData));
    if (userSubscribes.get(s)?.internal === internal) return;
    const entry = {
      internal,
      done: hub.subscribe(socket, internal).then(
        () => true,
        () => {
          if (userSubscribes.get(s) === entry) userSubscribes.delete(s);
          return false;
        },
      ),
    };
    userSubscribes.set(s, entry);
  }

  function message(ws: Ws, data: ArrayBuffer, isBinary: boolean): void {
    const s = ws.getUserData();
    const socket = s.pusher;
    if (!s.open || socket.ws === undefined) return;
    s.idleBeats = 0;
    if (isBinary) {
      metrics.frameRejected('binary');
      return conns.close(socket, CLOSE.UNSUPPORTED_DATA);
    }
    if (data.byteLength > config.maxPayloadLength) {
      metrics.frameRejected('too_large');
      return conns.close(socket, CLOSE.TOO_LARGE);
    }
    const text = Buffer.from(data).toString('utf8');
    if (frameRate > 0) {
      const full = takeToken(s.frameFullAtMs, frameRate, FRAME_BURST, nowMs());
      if (full === undefined) {
        const strikes = (s.extra ??= { strikes: 0, slowSinceMs: 0, dropped: 0, info: undefined }).strikes++;
        metrics.frameRejected('rate_limited');
        if (strikes + 1 >= MAX_RATE_STRIKES) return conns.close(socket, CLOSE.POLICY_VIOLATION);
        socket.sendPusher(encodePusherError(PUSHER_CODE.CLIENT_EVENT_RATE, `over ${frameRate} frames per second`));
        return;
      }
      s.frameFullAtMs = full;
      if (s.extra) s.extra.strikes = 0;
    }
    const f = parsePusherFrame(text);
    if (f === undefined) {
      metrics.frameRejected('malformed');
      return conns.close(socket, CLOSE.MALFORMED);
    }
    switch (f.event) {
      case 'pusher:ping':
        return socket.sendPusher(encodePong());
      case 'pusher:pong':
        return;
      case 'pusher:subscribe':
        void subscribe(socket, s, f.data);
        return;
      case 'pusher:unsubscribe':
        return unsubscribe(socket, s, f.data);
      case 'pusher:signin':
        return signin(socket, s, f.data);
      default:
        if (f.event.startsWith('client-')) return clientEvent(socket, s, f.event, f.channel, f.data);
        metrics.frameRejected('bad_request');
    }
  }

  function close(ws: Ws, code: number, msg: ArrayBuffer): void {
    const s = ws.getUserData();
    const socket = s.pusher;
    // Refused at open (unknown key, protocol): never counted as opened.
    if (socket.ws === undefined || socket.app === undefined || socket.badProtocol) {
      s.open = false;
      return;
    }
    conns.closed(socket, code, Buffer.from(msg).toString('utf8').slice(0, 123));
  }

  return { upgrade, open, message, close };
}

const NO_PERMS = { subscribe: (): boolean => false, publish: (): boolean => false };
