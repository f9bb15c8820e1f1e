/**
 * The WebSocket handshake, in the contract's order: Origin, token, verification,
 * capacity, subprotocol. A rejected upgrade is a plain HTTP status with the
 * JSON error body; the upgrade never happens.
 */
import { extractToken, selectSubprotocol } from '../auth/token.js';
import type { PermissionsCache } from '../auth/permissions.js';
import { AuthError, type Claims, type Verifier } from '../auth/verifier.js';
import type { Config } from '../config.js';
import { HTTP_STATUS, errorBody, isGatewayError, type ErrorCode } from '../errors.js';
import { NO_CHANNELS, type Permissions, type Session } from '../hub/session.js';
import { createKeyedLimiter } from '../limits/rate.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { matchesAny } from '../protocol/channel.js';
import type { ClientIpResolver } from './client-ip.js';
import type { ConnIds } from './conn-id.js';
import { send, watch } from './http.js';
import { compileOrigins } from './origin.js';
import type { HttpRequest, HttpResponse } from './uws.js';

type Context = Parameters<HttpResponse['upgrade']>[4];

export interface UpgradeDeps {
  readonly config: Config;
  readonly verifier: Verifier;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly clientIp: ClientIpResolver;
  readonly connIds: ConnIds;
  /** Compiled channel permissions, shared between connections with the same claims. */
  readonly permissions: PermissionsCache;
  readonly connectionCount: () => number;
  readonly isDraining: () => boolean;
  readonly nowMs: () => number;
}

const NONE = (): boolean => false;
const KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

/**
 * Every X-Forwarded-For line, joined in order: uWS's getHeader returns only the
 * first, and a proxy that adds its own line after a client's forged one would
 * otherwise let the client choose its address (RFC 9110 §5.3: repeated lines
 * are one comma-separated list).
 */
function forwardedFor(req: HttpRequest): string {
  let out = '';
  req.forEach((k, v) => {
    if (k === 'x-forwarded-for') out = out === '' ? v : `${out},${v}`;
  });
  return out;
}

/** Whether a comma-separated header value (`Connection`, `Upgrade`) lists `token`, case-insensitively. */
function listsToken(header: string, token: string): boolean {
  return header.split(',').some((t) => t.trim().toLowerCase() === token);
}

export function createUpgradeHandler(deps: UpgradeDeps): (res: HttpResponse, req: HttpRequest, context: Context) => void {
  const { config, verifier, metrics, log, nowMs, connIds, permissions } = deps;
  const originAllowed = compileOrigins(config.allowedOrigins, config.requireOrigin);
  // Burst twice the rate, and never below one whole token (else rates under 0.5 would refuse everyone).
  const ipLimiter = createKeyedLimiter(config.ipHandshakeRate, Math.max(1, config.ipHandshakeRate * 2));
  const anonymous: Permissions = { subscribe: (ch) => matchesAny(config.anonymousChannels, ch), publish: NONE };

  return (res, req, context) => {
    // Copy everything synchronously: req is invalid after the first await.
    const origin = req.getHeader('origin');
    const authorization = req.getHeader('authorization');
    const protocols = req.getHeader('sec-websocket-protocol');
    const key = req.getHeader('sec-websocket-key');
    const extensions = req.getHeader('sec-websocket-extensions');
    const version = req.getHeader('sec-websocket-version');
    const upgradeHeader = req.getHeader('upgrade');
    const connectionHeader = req.getHeader('connection');
    const query = req.getQuery() ?? '';
    const ip = deps.clientIp(Buffer.from(res.getRemoteAddressAsText()).toString(), forwardedFor(req));
    const st = watch(res);
    /** True while this handler runs; false once the verification went asynchronous. */
    let sync = true;
    // Every attempt takes from the IP's bucket, so a flood of bad tokens is limited too.
    const attemptMs = nowMs();
    const ipAllowed = ipLimiter.take(ip, attemptMs);

    const reject = (code: ErrorCode, message: string, reason: string, headers?: Record<string, string>, status = HTTP_STATUS[code]): void => {
      metrics.handshake('rejected', code);
      log.warn({ ip, code, reason, origin: origin || undefined }, 'handshake rejected');
      send(res, st, status, errorBody(code, message), headers);
    };

    // uWS calls this handler for any GET with a Sec-WebSocket-Key, even without
    // `Upgrade: websocket` / `Connection: Upgrade` (RFC 6455 §4.2.1 requires
    // both): a proxy that strips those hop-by-hop headers must get the same 426
    // as a plain GET, not a 101 it cannot relay.
    if (!listsToken(upgradeHeader, 'websocket') || !listsToken(connectionHeader, 'upgrade')) {
      return reject('bad_request', 'this endpoint needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)', 'not_upgrade', {
        Upgrade: 'websocket',
      }, 426);
    }
    if (version !== '13') {
      return reject('bad_request', 'Sec-WebSocket-Version must be 13', 'bad_version', { 'Sec-WebSocket-Version': '13' }, 426);
    }
    if (!KEY_RE.test(key)) return reject('bad_request', 'missing or invalid Sec-WebSocket-Key', 'bad_key');
    if (!originAllowed(origin)) {
      return reject('origin_not_allowed', origin ? `origin ${origin.slice(0, 200)} is not allowed` : 'an Origin header is required', 'origin');
    }

    const finish = (user: string, exp: number, perms: Permissions): void => {
      if (st.aborted) {
        metrics.handshake('rejected', 'aborted');
        return;
      }
      if (deps.isDraining()) return reject('draining', 'node is draining; connect to another node', 'draining', { 'Retry-After': '1' });
      if (deps.connectionCount() >= config.maxConnections) {
        return reject('overloaded', 'node is at its connection limit', 'overloaded', { 'Retry-After': '5' });
      }
      if (!ipAllowed) {
        return reject('rate_limited', 'too many handshakes from this address', 'ip_rate', { 'Retry-After': String(ipLimiter.retryAfterSec(ip, attemptMs)) });
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
        trouble: undefined,
      };
      st.done = true;
      metrics.handshake('accepted', 'ok');
      // Logged here, where the client IP is at hand: the session does not keep it.
      log.debug({ conn: connIds.name(session.id), user, ip }, 'connection open');
      const upgrade = (): void => res.upgrade(session, key, selectSubprotocol(protocols) ?? '', extensions, context);
      // Inside the handler the response is already corked; after an await it must be corked again.
      if (sync) upgrade();
      else res.cork(upgrade);
    };

    const token = extractToken({ authorization, protocols, query });
    if (!token) {
      if (!config.allowAnonymous) return reject('unauthorized', 'a token is required', 'missing', { 'WWW-Authenticate': 'Bearer' });
      return finish('anonymous', 0, anonymous);
    }
    const accept = (claims: Claims): void =>
      finish(claims.sub, claims.exp, permissions.get(claims.channels, claims.publish));
    const refuse = (e: unknown): void => {
      if (isGatewayError(e)) {
        const reason = e instanceof AuthError ? e.reason : e.code;
        const headers: Record<string, string> = e.code === 'unavailable' ? { 'Retry-After': '5' } : { 'WWW-Authenticate': 'Bearer' };
        return reject(e.code, e.message, reason, headers);
      }
      log.error({ err: e, ip }, 'token verification failed unexpectedly');
      return reject('internal', 'token verification failed', 'internal');
    };
    // Local keys decide synchronously, so the upgrade completes inside this
    // handler: uWS's synchronous upgrade path. Only a JWKS lookup goes async.
    let claims: Claims | undefined;
    try {
      claims = verifier.verifySync(token.token);
    } catch (e) {
      return refuse(e);
    }
    if (claims) return accept(claims);
    sync = false;
    verifier.verify(token.token).then(accept, refuse);
  };
}
