/**
 * The public port (WebSocket on /ws, Server-Sent Events on /sse, publish API on /v1/*) and the admin port
 * (/healthz, /readyz, /metrics, and the admin console on /admin/*). The only module that builds uWS apps.
 */
import type { AdminApi } from '../admin/admin-api.js';
import type { PublishApi } from '../api/publish-api.js';
import type { Verifier } from '../auth/verifier.js';
import type { Config } from '../config.js';
import { errorBody } from '../errors.js';
import type { Hub } from '../hub/hub.js';
import type { ServerSubs, WelcomeSubs } from '../hub/server-subs.js';
import type { Session, Socket } from '../hub/session.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Proxies } from '../proxy/proxies.js';
import type { PusherHttpApi } from '../pusher/http-api.js';
import { createPusherHttpRoute } from '../pusher/http-route.js';
import type { CloseCode } from '../protocol/close-codes.js';
import { encodeWelcome } from '../protocol/frames.js';
import { createPermissionsCache } from '../auth/permissions.js';
import { createRejectionLog } from './admission.js';
import { createClientIpResolver } from './client-ip.js';
import { createConnIds, type ConnIds } from './conn-id.js';
import { createConnections } from './connection.js';
import { createApiRoute } from './api-route.js';
import { createAdminRoute } from './admin-route.js';
import { createCorkAnchor } from './cork-anchor.js';
import { send, watch } from './http.js';
import { createConnectAdmission } from './connect.js';
import { createSseRoute, SSE_PREFLIGHT_HEADERS, SseFanout, sseCors } from './sse.js';
import { compileOrigins } from './origin.js';
import { createUpgradeHandler } from './upgrade.js';
import type { PusherApps } from '../pusher/apps.js';
import { createPusherFanout, mountPusher } from '../pusher/mount.js';
import {
  App, COMPRESSION_DISABLED, listenExclusive, COMPRESSION_SHARED, SSLApp, us_listen_socket_close, us_socket_local_port,
  type TemplatedApp, type us_listen_socket,
} from './uws.js';

export interface TransportDeps {
  readonly config: Config;
  readonly hub: Hub;
  /** Server-side subscriptions: a connection's `subs` are made before its welcome. */
  readonly serverSubs: ServerSubs;
  readonly verifier: Verifier;
  readonly api: PublishApi;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly isReady: () => boolean;
  readonly isDraining: () => boolean;
  /** The connect and subscribe proxies (1.1), when configured. */
  readonly proxies?: Proxies;
  /** Connection ids shared with the hub (which finds an excluded connection by its id); a new set when absent. */
  readonly connIds?: ConnIds;
  /** The Pusher HTTP API on `/apps/*` (Pusher compatibility, when apps are configured). */
  readonly pusherApi?: PusherHttpApi;
  /** Pusher apps (contract 1.1): with any, `/app/{key}` speaks the Pusher protocol (src/pusher/). */
  readonly pusherApps?: PusherApps;
  /** The admin console and its API (`/admin/*`, on the admin port only); absent: 404 like any unknown path. */
  readonly adminApi?: AdminApi;
}

export interface Transport {
  /** Fans a frame out to a topic's sockets in native code; returns how many it reached. */
  publish(topic: string, frame: string): number;
  /** Sends a message frame to one socket (compressed like published frames). */
  sendTo(ws: Socket, frame: string): void;
  listen(): Promise<{ port: number; adminPort: number }>;
  /** Closes one socket with a catalog code. */
  closeSocket(ws: Socket, code: CloseCode): void;
  /** Stops listening on the public port (existing sockets stay open). */
  closePublicListener(): void;
  closeAdminListener(): void;
  /** Public API requests still being answered. */
  inflightRequests(): number;
  /** Stops the heartbeat, writes the pending handshake-rejection and proxy-failure summaries, and closes the proxies' connections. */
  stopTimers(): void;
}

/**
 * uWS closes the TCP connection (the client sees 1006) for frames over its own
 * limit. It gets more room than the contract's, so frames between the two get
 * the contract's 1009; beyond it uWS cuts the connection.
 */
export function uwsPayloadLimit(maxPayloadLength: number): number {
  return Math.max(maxPayloadLength * 4, maxPayloadLength + 64 * 1024);
}

function tlsApp(cert: string, key: string): TemplatedApp {
  try {
    return SSLApp({ cert_file_name: cert, key_file_name: key });
  } catch {
    throw new Error('PUBGATE_TLS_CERT / PUBGATE_TLS_KEY: the certificate or key cannot be loaded (not PEM, encrypted, or they do not match)');
  }
}

export function createTransport(deps: TransportDeps): Transport {
  const { config, metrics, log, api } = deps;
  const app: TemplatedApp = config.tlsCert && config.tlsKey ? tlsApp(config.tlsCert, config.tlsKey) : App();
  const admin: TemplatedApp = App();
  // Registered before the admin port's catch-all; connected once the admin port listens.
  const anchor = createCorkAnchor(admin, log);
  let publicListener: us_listen_socket | undefined;
  let adminListener: us_listen_socket | undefined;
  const nowMs = (): number => performance.now();

  // With SHARED_COMPRESSOR, uWS.js v20 deflates a published message for each
  // subscriber that negotiated permessage-deflate (one shared zlib stream,
  // reset per message), not once per message: see docs/benchmarks.md.
  // Frames under compressionThreshold go out plain: deflate saves little on
  // them for many times the CPU (permessage-deflate is per message, RSV1).
  const compressFrom = config.compression === 'shared' ? config.compressionThreshold : Number.POSITIVE_INFINITY;
  const compress = (frame: string): boolean => frame.length >= compressFrom;
  const apiRoute = createApiRoute({ api, metrics, log, maxPublishBytes: config.maxPublishBytes, bodyTimeoutMs: config.httpBodyTimeoutMs });
  const connIds = deps.connIds ?? createConnIds();
  const permissions = createPermissionsCache();
  const conns = createConnections({
    config, hub: deps.hub, verifier: deps.verifier, metrics, log, nowMs, connIds, permissions,
    ...(deps.proxies ? { proxies: deps.proxies } : {}),
  });
  const rejections = createRejectionLog(log);
  const connect = createConnectAdmission({
    config,
    verifier: deps.verifier,
    metrics,
    log,
    rejections,
    clientIp: createClientIpResolver(config.trustedProxies),
    connIds,
    permissions,
    connectionCount: () => deps.hub.size,
    isDraining: deps.isDraining,
    nowMs,
    connectProxy: deps.proxies?.connect,
    asyncCork: anchor.cork,
  });
  const upgrade = createUpgradeHandler(connect);

  app.ws<Session>('/ws', {
    compression: config.compression === 'shared' ? COMPRESSION_SHARED : COMPRESSION_DISABLED,
    maxPayloadLength: uwsPayloadLimit(config.maxPayloadLength),
    maxBackpressure: config.maxBackpressure,
    closeOnBackpressureLimit: false,
    idleTimeout: 0, // heartbeats are ours (connection.ts): uWS's timer has a 4 s granularity
    sendPingsAutomatically: false,
    upgrade,
    open: (ws) => {
      const s = ws.getUserData();
      conns.opened(ws);
      const welcome = (subs?: WelcomeSubs): void => {
        ws.send(encodeWelcome({
          node: config.nodeId,
          conn: connIds.name(s.id),
          user: s.user,
          expiresIn: s.exp > 0 ? Math.max(0, Math.round(s.exp - Date.now() / 1000)) : null,
          ping: config.pingInterval,
          ...(subs ? { subs } : {}),
        }), false);
      };
      const subs = s.extra?.subs;
      if (subs === undefined || subs.length === 0) return welcome();
      // `welcome` stays the first frame: it waits until the server-side
      // subscriptions are live (their messages held meanwhile, hub.ts), and so
      // do the client's frames (connection.ts holdFrames, bounded).
      s.extra!.subs = undefined; // made once; nothing keeps the list afterwards
      conns.holdFrames(ws);
      void deps.serverSubs.connect(ws, subs, welcome).then((sent) => {
        if (sent) conns.releaseFrames(ws);
      });
    },
    message: (ws, message, isBinary) => conns.message(ws, message, isBinary),
    pong: (ws) => conns.pong(ws),
    dropped: (ws) => conns.dropped(ws),
    drain: (ws) => conns.drain(ws),
    close: (ws, code, message) => conns.closed(ws, code, Buffer.from(message).toString('utf8').slice(0, 123)),
  });

  // A plain GET on /ws (no upgrade headers: a proxy that strips them, or a typo).
  app.get('/ws', (res) => {
    const st = watch(res);
    metrics.handshake('rejected', 'bad_request');
    metrics.handshakeRejection('not_upgrade');
    send(res, st, 426, errorBody('bad_request', 'this endpoint needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)'), {
      Upgrade: 'websocket',
    });
  });

  const pusherRoute = deps.pusherApi
    ? createPusherHttpRoute({ api: deps.pusherApi, metrics, log, maxBodyBytes: config.maxPublishBytes, bodyTimeoutMs: config.httpBodyTimeoutMs })
    : undefined;
  if (pusherRoute) app.any('/apps/*', pusherRoute.handle);
  // Pusher Channels protocol 7 on /app/{key}, with its own uWS topics (src/pusher/).
  const pusherApps = deps.pusherApps;
  const pusherFanout = pusherApps !== undefined && pusherApps.list.length > 0
    ? mountPusher(app, {
        config, apps: pusherApps, hub: deps.hub, conns, connIds, metrics, log, connect, nowMs,
      })
    : createPusherFanout(app, undefined);
  // GET /sse (contract 1.1): the same admission, hub and fan-out; off (PUBGATE_SSE=false): 404.
  const fanout = new SseFanout();
  if (config.sse) {
    // CORS preflight: only for an Origin that admission would let through.
    const originOk = compileOrigins(config.allowedOrigins, config.requireOrigin);
    app.options('/sse', (res, req) => {
      const st = watch(res);
      const origin = req.getHeader('origin');
      const cors = origin !== '' && originOk(origin) ? sseCors(origin, config.allowedOrigins) : undefined;
      if (!cors) return send(res, st, 403, errorBody('origin_not_allowed', origin ? `origin ${origin.slice(0, 200)} is not allowed` : 'a preflight needs an Origin header'));
      send(res, st, 204, '', { ...cors, ...SSE_PREFLIGHT_HEADERS });
    });
    app.get('/sse', createSseRoute({
      config,
      hub: deps.hub,
      connIds,
      connect,
      fanout,
      metrics,
      hooks: {
        opened: (ws) => conns.opened(ws),
        dropped: (ws) => conns.dropped(ws),
        drain: (ws) => conns.drain(ws),
        closed: (ws, code, reason) => conns.closed(ws, code, reason),
        close: (ws, code) => conns.close(ws, code),
      },
    }));
  } else {
    app.get('/sse', (res) => send(res, watch(res), 404, errorBody('not_found', 'Server-Sent Events are off on this node (PUBGATE_SSE=false)')));
  }

  app.any('/*', apiRoute.handle);

  admin.get('/healthz', (res) => send(res, watch(res), 200, '{"status":"ok"}'));
  admin.get('/readyz', (res) => {
    const ready = deps.isReady();
    send(res, watch(res), ready ? 200 : 503, JSON.stringify({ status: ready ? 'ready' : deps.isDraining() ? 'draining' : 'not_ready' }));
  });
  admin.get('/metrics', (res) => {
    const st = watch(res);
    metrics.render().then(
      (text) => send(res, st, 200, text, undefined, metrics.contentType),
      (e: unknown) => {
        log.error({ err: e }, 'metrics render failed');
        send(res, st, 500, errorBody('internal', 'metrics render failed'));
      },
    );
  });
  if (deps.adminApi) {
    // The admin port only: on the public port /admin/* stays an unknown path (404).
    const adminRoute = createAdminRoute({ api: deps.adminApi, metrics, log, maxBodyBytes: config.maxPublishBytes, bodyTimeoutMs: config.httpBodyTimeoutMs });
    admin.any('/admin', adminRoute);
    admin.any('/admin/*', adminRoute);
  }
  admin.any('/*', (res, req) => send(res, watch(res), 404, errorBody('not_found', `no route for ${req.getUrl()}`)));

  function listenOn(a: TemplatedApp, port: number, what: string): Promise<us_listen_socket> {
    return new Promise((resolve, reject) => {
      listenExclusive(a, config.host, port, (ls) => {
        if (ls) resolve(ls);
        else reject(new Error(`cannot listen on ${config.host}:${port} (${what} port): address in use or not available`));
      });
    });
  }

  return {
    publish: (topic, frame) => {
      const n = app.numSubscribers(topic);
      if (n > 0) app.publish(topic, frame, false, compress(frame));
      return n + fanout.publish(topic, frame) + pusherFanout.publish(topic, frame);
    },
    sendTo: (ws, frame) => {
      ws.send(frame, false, compress(frame));
    },
    async listen() {
      publicListener = await listenOn(app, config.port, 'public');
      adminListener = await listenOn(admin, config.adminPort, 'admin');
      const adminPort = us_socket_local_port(adminListener);
      anchor.start(config.host, adminPort);
      return { port: us_socket_local_port(publicListener), adminPort };
    },
    closeSocket: (ws, code) => conns.close(ws, code),
    closePublicListener() {
      if (publicListener) us_listen_socket_close(publicListener);
      publicListener = undefined;
    },
    closeAdminListener() {
      if (adminListener) us_listen_socket_close(adminListener);
      adminListener = undefined;
    },
    inflightRequests: () => apiRoute.inflight() + (pusherRoute?.inflight() ?? 0),
    stopTimers: () => {
      conns.stop();
      rejections.flush();
      deps.proxies?.close();
      anchor.stop();
    },
  };
}
