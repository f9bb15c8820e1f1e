/**
 * Admission of a subscriber connection, shared by the WebSocket upgrade
 * (upgrade.ts) and the Server-Sent Events stream (sse.ts): one function, so
 * both answer the same request with the same status and body.
 *
 * First the edge admission (admission.ts): one pass over the head refuses
 * ambiguous framing with 400, and the client's per-IP bucket is charged; over
 * the rate is 429 before anything else is done. Then the transport's own
 * request-shape checks (WebSocket: the upgrade headers; SSE: the channel
 * list), then the contract's order: Origin, token, verification, capacity,
 * and last the transport's permission check (SSE: every named channel). A
 * rejected request is a plain HTTP status with the JSON error body.
 *
 * With a connect proxy configured, a request without a token is decided by
 * the backend (contract 1.1): its Cookie, client IP and Origin are posted to
 * it, and its answer is taken like a token's claims. Everything that call
 * needs is copied from the request first; a client that goes away meanwhile
 * aborts the call and is never accepted.
 */
import { extractToken } from '../auth/token.js';
import type { PermissionsCache } from '../auth/permissions.js';
import { AuthError, type Claims, type Verifier } from '../auth/verifier.js';
import type { Config } from '../config.js';
import { HTTP_STATUS, errorBody, isGatewayError, type ErrorCode } from '../errors.js';
import { NO_CHANNELS, type Permissions, type Session } from '../hub/session.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { failureMessage, type ConnectProxy } from '../proxy/proxies.js';
import { matchesAny } from '../protocol/channel.js';
import { createAdmission, rejectReason, type HandshakeRejectReason, type RejectionLog, type UpgradeHead } from './admission.js';
import type { ClientAddress, ClientIpResolver } from './client-ip.js';
import type { ConnIds } from './conn-id.js';
import { send, watch, type ResponseState } from './http.js';
import { compileOrigins } from './origin.js';
import type { AsyncCork } from './cork-anchor.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export interface ConnectDeps {
  readonly config: Config;
  readonly verifier: Verifier;
  readonly metrics: Metrics;
  readonly log: Log;
  /** Where refused handshakes are logged (aggregated per interval). */
  readonly rejections: RejectionLog;
  readonly clientIp: ClientIpResolver;
  readonly connIds: ConnIds;
  /** Compiled channel permissions, shared between connections with the same claims. */
  readonly permissions: PermissionsCache;
  /** Open connections of every transport (maxConnections counts them all). */
  readonly connectionCount: () => number;
  readonly isDraining: () => boolean;
  readonly nowMs: () => number;
  /** Decides requests without a token when PUBGATE_CONNECT_PROXY_URL is set. */
  readonly connectProxy?: ConnectProxy | undefined;
  /** Corks WebSocket upgrades completed after an await (cork-anchor.ts). */
  readonly asyncCork?: AsyncCork | undefined;
}

/** A refusal decided by a transport's own checks. */
export interface TransportRefusal {
  readonly code: ErrorCode;
  readonly message: string;
  readonly reason: HandshakeRejectReason;
  readonly headers?: Readonly<Record<string, string>>;
  /** The HTTP status, when not the code's usual one (426 for a missing upgrade). */
  readonly status?: number;
}

/** What an accepted connection starts with: from its token's claims, the anonymous defaults, or the connect proxy. */
export interface Accepted {
  readonly user: string;
  readonly exp: number;
  readonly perms: Permissions;
  readonly info?: string | undefined;
  readonly subs?: readonly string[] | undefined;
  readonly cookie?: string | undefined;
  readonly connectFrom?: { readonly ip: string; readonly origin: string } | undefined;
}

/** The request as the transport sees it once admitted (req is not valid after the handler returned). */
export interface Admitted {
  readonly res: HttpResponse;
  readonly st: ResponseState;
  readonly head: UpgradeHead;
  readonly client: ClientAddress;
  /** True while uWS's request handler still runs (the response is corked then); false after an await. */
  readonly sync: boolean;
  /** How to cork a WebSocket upgrade completed after an await (cork-anchor.ts); absent: on the response itself. */
  readonly asyncCork?: AsyncCork | undefined;
}

/** A transport's request-shape check: refused, or what it read (SSE: the channels). */
export type ShapeResult<S> = { readonly refusal: TransportRefusal } | { readonly value: S };

/** What differs between the transports. */
export interface ConnectKind<Shape> {
  /** `ws`, `sse` or `pusher`: in the rejection log line. */
  readonly transport: 'ws' | 'sse' | 'pusher';
  /**
   * No token is asked for (Pusher authorizes per channel): after the Origin,
   * only the capacity checks; the session starts with no user and no permissions.
   */
  readonly tokenless?: boolean;
  /** Request-shape checks, before the Origin (WebSocket: upgrade headers; SSE: channels). */
  shape(head: UpgradeHead, query: string): ShapeResult<Shape>;
  /** After the capacity checks: whether this connection may have what it asked for (SSE: subscribe to every channel). */
  authorize?(shape: Shape, session: Session): TransportRefusal | undefined;
  /** The connection is accepted: the transport takes the response over. */
  accept(session: Session, shape: Shape, a: Admitted): void;
}

const NONE = (): boolean => false;
const NO_PERMISSIONS: Permissions = { subscribe: NONE, publish: NONE };

export type ConnectHandler = <Shape>(res: HttpResponse, req: HttpRequest, kind: ConnectKind<Shape>) => void;

export function createConnectAdmission(deps: ConnectDeps): ConnectHandler {
  const { config, verifier, metrics, log, nowMs, connIds, permissions, rejections } = deps;
  const originAllowed = compileOrigins(config.allowedOrigins, config.requireOrigin);
  const admit = createAdmission({ ipHandshakeRate: config.ipHandshakeRate, clientIp: deps.clientIp });
  const anonymous: Permissions = { subscribe: (ch) => matchesAny(config.anonymousChannels, ch), publish: NONE };

  return <Shape>(res: HttpResponse, req: HttpRequest, kind: ConnectKind<Shape>): void => {
    // Admission first: one pass over the head and one bucket lookup, nothing logged yet.
    // Everything the handshake needs is copied here: req is invalid after the first await.
    const { head, client, refusal } = admit(req, Buffer.from(res.getRemoteAddressAsText()).toString(), nowMs());
    const st = watch(res);
    /** True while this handler runs; false once the verification went asynchronous. */
    let sync = true;

    const reject = (
      code: ErrorCode,
      message: string,
      reason: HandshakeRejectReason,
      headers?: Readonly<Record<string, string>>,
      status = HTTP_STATUS[code],
      close = false,
    ): void => {
      metrics.handshake('rejected', code);
      metrics.handshakeRejection(reason);
      rejections.rejected({ code, reason, client, origin: head.origin, transport: kind.transport });
      send(res, st, status, errorBody(code, message), headers, 'application/json', close);
    };
    const refuse = (r: TransportRefusal): void => reject(r.code, r.message, r.reason, r.headers, r.status ?? HTTP_STATUS[r.code]);

    if (refusal) return reject(refusal.code, refusal.message, refusal.reason, refusal.headers, refusal.status, refusal.close);

    const query = req.getQuery() ?? '';
    const shaped = kind.shape(head, query);
    if ('refusal' in shaped) return refuse(shaped.refusal);
    const shape = shaped.value;

    const { origin } = head;
    if (!originAllowed(origin)) {
      return reject('origin_not_allowed', origin ? `origin ${origin.slice(0, 200)} is not allowed` : 'an Origin header is required', 'origin');
    }

    /** The client went away while the handshake waited (JWKS, connect proxy): nothing is answered, nothing accepted. */
    const aborted = (): void => {
      metrics.handshake('rejected', 'aborted');
      metrics.handshakeRejection('aborted');
    };
    const finish = ({ user, exp, perms, info, subs, cookie, connectFrom }: Accepted): void => {
      if (st.aborted) return aborted();
      if (deps.isDraining()) return reject('draining', 'node is draining; connect to another node', 'draining', { 'Retry-After': '1' });
      if (deps.connectionCount() >= config.maxConnections) {
        return reject('overloaded', 'node is at its connection limit', 'overloaded', { 'Retry-After': '5' });
      }
      const session: Session = {
        id: connIds.next(),
        user,
        exp,
        perms,
        channels: NO_CHANNELS,
        open: true,
        idleBeats: 0,
        frameFullAtMs: 0,
        // Only connections with an `info`, server-side subscriptions or a proxied cookie pay for the extra object.
        extra: info === undefined && subs === undefined && cookie === undefined
          ? undefined
          : { strikes: 0, slowSinceMs: 0, dropped: 0, info, subs, cookie, connectFrom },
      };
      const denied = kind.authorize?.(shape, session);
      if (denied) return refuse(denied);
      st.done = true;
      metrics.handshake('accepted', 'ok');
      // Logged here, where the client IP is at hand: the session does not keep it.
      log.debug({ conn: connIds.name(session.id), user, ip: client.ip, transport: kind.transport }, 'connection open');
      kind.accept(session, shape, { res, st, head, client, sync, asyncCork: deps.asyncCork });
    };

    /**
     * A request without a token, decided by the connect proxy. A node that
     * would refuse it anyway (draining, full) answers before asking the
     * backend; finish() checks again once the answer is in. The call is
     * aborted when the client goes away, and an aborted handshake answers
     * nothing.
     */
    function askConnectProxy(proxy: ConnectProxy): void {
      if (deps.isDraining()) return reject('draining', 'node is draining; connect to another node', 'draining', { 'Retry-After': '1' });
      if (deps.connectionCount() >= config.maxConnections) {
        return reject('overloaded', 'node is at its connection limit', 'overloaded', { 'Retry-After': '5' });
      }
      sync = false;
      const from = { ip: client.ip, origin: head.origin };
      const cookie = head.cookie;
      const abort = new AbortController();
      st.onAbort = () => abort.abort();
      proxy.ask({ cookie, ...from }, abort.signal).then(
        (o) => {
          st.onAbort = undefined;
          if (st.aborted) return aborted();
          if (o.result === 'allow') {
            const g = o.value;
            return finish({
              user: g.user,
              // Whole seconds, nearest to now + expiresIn: the welcome (rounded the
              // same way) says exactly the granted expiresIn, the life is within ±0.5 s of it.
              exp: Math.round(Date.now() / 1000 + g.expiresIn),
              perms: permissions.get(g.channels, g.publish),
              info: g.info,
              subs: g.subs,
              cookie,
              connectFrom: from,
            });
          }
          if (o.result === 'deny') {
            return reject('unauthorized', 'the connect proxy refused the connection', 'proxy_deny', { 'WWW-Authenticate': 'Bearer' });
          }
          if (o.result === 'aborted') return aborted();
          return reject('unavailable', failureMessage('connect', o.result), `proxy_${o.result}`, { 'Retry-After': '5' });
        },
        (e: unknown) => {
          st.onAbort = undefined;
          log.error({ err: e, ip: client.ip }, 'connect proxy call failed unexpectedly');
          if (st.aborted) return aborted();
          return reject('internal', 'the connect proxy call failed', 'internal');
        },
      );
    }

    if (kind.tokenless === true) return finish({ user: '', exp: 0, perms: NO_PERMISSIONS });
    // SSE takes the token from Authorization or access_token only (a Sec-WebSocket-Protocol entry is WebSocket's).
    const token = extractToken({ authorization: head.authorization, protocols: kind.transport === 'ws' ? head.protocols : '', query });
    if (!token) {
      if (deps.connectProxy) return askConnectProxy(deps.connectProxy);
      if (!config.allowAnonymous) return reject('unauthorized', 'a token is required', 'missing', { 'WWW-Authenticate': 'Bearer' });
      return finish({ user: 'anonymous', exp: 0, perms: anonymous });
    }
    const accept = (claims: Claims): void => {
      metrics.tokenVerified('ok');
      finish({ user: claims.sub, exp: claims.exp, perms: permissions.get(claims.channels, claims.publish), info: claims.info, subs: claims.subs });
    };
    const refuseToken = (e: unknown): void => {
      if (isGatewayError(e)) {
        metrics.tokenVerified(e.code === 'unavailable' || e.code === 'internal' ? e.code : 'unauthorized');
        const reason = rejectReason(e instanceof AuthError ? e.reason : e.code);
        const headers: Record<string, string> = e.code === 'unavailable' ? { 'Retry-After': '5' } : { 'WWW-Authenticate': 'Bearer' };
        return reject(e.code, e.message, reason, headers);
      }
      metrics.tokenVerified('internal');
      log.error({ err: e, ip: client.ip }, 'token verification failed unexpectedly');
      return reject('internal', 'token verification failed', 'internal');
    };
    // Local keys decide synchronously, so the connection is accepted inside
    // this handler (for WebSocket: uWS's synchronous upgrade path). Only a
    // JWKS lookup goes async.
    let claims: Claims | undefined;
    try {
      claims = verifier.verifySync(token.token);
    } catch (e) {
      return refuseToken(e);
    }
    if (claims) return accept(claims);
    sync = false;
    verifier.verify(token.token).then(accept, refuseToken);
  };
}
