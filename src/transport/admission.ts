/**
 * Edge admission: the first stage of every upgrade, before any token is looked
 * at, any signature checked or anything logged. One pass over the request's
 * header lines refuses requests whose framing is ambiguous (duplicated
 * single-valued headers, Transfer-Encoding, a body), and the client's per-IP
 * bucket is charged for every attempt. A flood from one address then costs one
 * bucket lookup per request. Rejections are logged by an aggregating log (one
 * line per reason at once, then counts per interval), not one line each.
 */
import { AUTH_REASONS } from '../auth/verifier.js';
import type { ErrorCode } from '../errors.js';
import { createKeyedLimiter, MAX_LIMITER_KEYS } from '../limits/rate.js';
import type { Log } from '../observability/logger.js';
import type { ClientAddress, ClientIpResolver } from './client-ip.js';
import type { HttpRequest } from './uws.js';

/**
 * The fine reasons a handshake is refused for: the `reason` of the
 * `handshake rejected` log line and the label of
 * `pubgate_handshake_rejections_total`. A closed set.
 */
export const HANDSHAKE_REJECT_REASONS = [
  // admission (this module)
  'duplicate_header',
  'transfer_encoding',
  'body',
  'connection_close',
  'ip_rate',
  // the upgrade request itself
  'not_upgrade',
  'bad_version',
  'bad_ws_key',
  // the SSE request itself (1.1): no channel, an invalid name, more than maxSubscriptions
  'no_channel',
  'bad_channel',
  'too_many_channels',
  'origin',
  // the token (AUTH_REASONS: missing, malformed, bad_signature, expired, ..., jwks_unavailable, internal)
  ...AUTH_REASONS,
  // the connect proxy, for upgrades without a token (1.1): refused (401), or no decision (503)
  'proxy_deny',
  'proxy_timeout',
  'proxy_error',
  'proxy_bad_status',
  'proxy_bad_response',
  'proxy_overloaded',
  // capacity
  'draining',
  'overloaded',
  // SSE (1.1): the connection may not subscribe to a named channel
  'channel_forbidden',
  // the client went away while its token was being checked or the connect proxy asked (no answer sent)
  'aborted',
] as const;

export type HandshakeRejectReason = (typeof HANDSHAKE_REJECT_REASONS)[number];

const REASON_SET: ReadonlySet<string> = new Set(HANDSHAKE_REJECT_REASONS);

/** A reason from anywhere (an error's `reason` or `code`) as a member of the closed set; `internal` otherwise. */
export function rejectReason(reason: string): HandshakeRejectReason {
  return REASON_SET.has(reason) ? (reason as HandshakeRejectReason) : 'internal';
}

/** What the handshake reads from the request head, each list-valued header with all its lines joined. */
export interface UpgradeHead {
  readonly origin: string;
  readonly authorization: string;
  /** Sec-WebSocket-Protocol, every line joined with ", " (RFC 6455 §11.3.4: lines may repeat). */
  readonly protocols: string;
  readonly key: string;
  /** Sec-WebSocket-Extensions, every line joined (RFC 6455 §11.3.2). */
  readonly extensions: string;
  readonly version: string;
  readonly upgrade: string;
  readonly connection: string;
  /** X-Forwarded-For, every line joined with "," in order (RFC 9110 §5.3). */
  readonly forwardedFor: string;
  /** Cookie, every line joined with "; " (RFC 6265 §5.4), for the connect proxy. */
  readonly cookie: string;
  /** Last-Event-ID (SSE recovery, 1.1): the last line when repeated. */
  readonly lastEventId: string;
  /** Why the request's framing is refused (400, before the upgrade), or undefined. */
  readonly violation: Violation | undefined;
}

export interface Violation {
  readonly reason: 'duplicate_header' | 'transfer_encoding' | 'body' | 'connection_close';
  readonly message: string;
}

/** Headers that must appear at most once on an upgrade, by the bit that marks them seen. */
const SINGLE: Readonly<Record<string, { bit: number; name: string }>> = {
  host: { bit: 1, name: 'Host' },
  origin: { bit: 2, name: 'Origin' },
  authorization: { bit: 4, name: 'Authorization' },
  'sec-websocket-key': { bit: 8, name: 'Sec-WebSocket-Key' },
  'sec-websocket-version': { bit: 16, name: 'Sec-WebSocket-Version' },
  'content-length': { bit: 32, name: 'Content-Length' },
};

const join = (a: string, b: string, sep: string): string => (a === '' ? b : `${a}${sep}${b}`);

/**
 * Reads the head in one pass over its lines (uWS's getHeader returns only the
 * first line of a repeated header, so duplicates are only visible here).
 *
 * uWS itself answers 400 (without calling us) for a request with both
 * Transfer-Encoding and Content-Length, or without Host, 505 for HTTP/1.0,
 * and closes the connection on malformed header lines; everything refused
 * here reaches the upgrade handler, and uWS would upgrade it.
 */
export function readUpgradeHead(req: HttpRequest): UpgradeHead {
  let origin = '';
  let authorization = '';
  let protocols = '';
  let key = '';
  let extensions = '';
  let version = '';
  let upgrade = '';
  let connection = '';
  let forwardedFor = '';
  let cookie = '';
  let lastEventId = '';
  let seen = 0;
  let violation: Violation | undefined;
  req.forEach((k, v) => {
    const single = SINGLE[k];
    if (single !== undefined) {
      if ((seen & single.bit) !== 0) violation ??= { reason: 'duplicate_header', message: `duplicate ${single.name} header` };
      seen |= single.bit;
    }
    switch (k) {
      case 'origin':
        origin = v;
        break;
      case 'authorization':
        authorization = v;
        break;
      case 'sec-websocket-key':
        key = v;
        break;
      case 'sec-websocket-version':
        version = v;
        break;
      case 'sec-websocket-protocol':
        protocols = join(protocols, v, ', ');
        break;
      case 'sec-websocket-extensions':
        extensions = join(extensions, v, ', ');
        break;
      case 'upgrade':
        upgrade = join(upgrade, v, ',');
        break;
      case 'connection':
        connection = join(connection, v, ',');
        break;
      case 'x-forwarded-for':
        forwardedFor = join(forwardedFor, v, ',');
        break;
      case 'cookie':
        cookie = join(cookie, v, '; ');
        break;
      case 'last-event-id':
        lastEventId = v;
        break;
      case 'transfer-encoding':
        violation ??= { reason: 'transfer_encoding', message: 'an upgrade request cannot carry Transfer-Encoding' };
        break;
      case 'content-length':
        if (v !== '0') violation ??= { reason: 'body', message: 'an upgrade request cannot carry a body (Content-Length must be 0)' };
        break;
    }
  });
  // An upgrade (Connection lists upgrade) that also lists close contradicts
  // itself, and uWS acts on a line that is exactly "close": it shuts down a
  // WebSocket upgraded after an await (uWebSockets issue #1928, the JWKS path),
  // so no such upgrade may reach that path. Without upgrade it is a plain GET
  // (often a proxy that strips the upgrade): the 426 below says so.
  if (violation === undefined && connection !== '') {
    const tokens = connection.toLowerCase().split(',').map((t) => t.trim());
    if (tokens.includes('close') && tokens.includes('upgrade')) {
      violation = { reason: 'connection_close', message: 'an upgrade request cannot carry Connection: close' };
    }
  }
  return { origin, authorization, protocols, key, extensions, version, upgrade, connection, forwardedFor, cookie, lastEventId, violation };
}

export interface Refusal {
  readonly code: ErrorCode;
  readonly status: number;
  readonly message: string;
  readonly reason: HandshakeRejectReason;
  readonly headers?: Readonly<Record<string, string>>;
  /** Close the connection after the answer (the request's framing cannot be trusted). */
  readonly close: boolean;
}

export interface Admitted {
  readonly head: UpgradeHead;
  readonly client: ClientAddress;
  /** Set when the request is refused at admission; nothing else may be done for it then. */
  readonly refusal: Refusal | undefined;
}

export interface AdmissionOptions {
  /** Upgrades per second per client IP (IPv6: per /64); 0 disables. The burst is twice that, at least 1. */
  readonly ipHandshakeRate: number;
  readonly clientIp: ClientIpResolver;
  /** Bound on the per-IP buckets (least recently used evicted). */
  readonly maxKeys?: number;
}

export type Admission = (req: HttpRequest, peer: string, nowMs: number) => Admitted;

export function createAdmission(opts: AdmissionOptions): Admission {
  // Burst twice the rate, and never below one whole token (else rates under 0.5 would refuse everyone).
  const limiter = createKeyedLimiter(opts.ipHandshakeRate, Math.max(1, opts.ipHandshakeRate * 2), opts.maxKeys ?? MAX_LIMITER_KEYS);
  return (req, peer, nowMs) => {
    const head = readUpgradeHead(req);
    const client = opts.clientIp(peer, head.forwardedFor);
    // Every attempt takes from its bucket, refused ones too: a flood is limited whatever it sends.
    const allowed = limiter.take(client.bucket, nowMs);
    let refusal: Refusal | undefined;
    if (head.violation) {
      refusal = { code: 'bad_request', status: 400, message: head.violation.message, reason: head.violation.reason, close: true };
    } else if (!allowed) {
      refusal = {
        code: 'rate_limited',
        status: 429,
        message: 'too many handshakes from this address',
        reason: 'ip_rate',
        headers: { 'Retry-After': String(limiter.retryAfterSec(client.bucket, nowMs)) },
        close: false,
      };
    }
    return { head, client, refusal };
  };
}

/** Length of a rejection log interval. */
export const REJECTION_LOG_INTERVAL_MS = 10_000;
/** Clients (IPv4 addresses, IPv6 /64s) counted one by one per interval; the rest are counted together. */
const MAX_TRACKED_CLIENTS = 1000;
/** Clients named in a summary line. */
const TOP_CLIENTS = 5;

export interface Rejection {
  readonly code: ErrorCode;
  readonly reason: HandshakeRejectReason;
  readonly client: ClientAddress;
  readonly origin: string;
  /** The transport asked for: `sse` and `pusher` are named in the log line (WebSocket is the default). */
  readonly transport?: 'ws' | 'sse' | 'pusher';
}

export interface RejectionLog {
  rejected(r: Rejection): void;
  /** Writes the summary of the current interval now, if it has one (shutdown). */
  flush(): void;
}

/**
 * Handshake rejections, aggregated per interval. The first rejection of each
 * reason in an interval is logged at once at `warn` (`handshake rejected`,
 * with code, reason, ip and origin), so a new kind of failure shows up
 * immediately; later ones of that reason are logged only at `debug`. When the
 * interval ends (it starts at its first rejection), one `warn` line
 * `handshake rejections` gives the counts per reason, the total and the
 * clients with the most rejections, if any rejection was not logged at `warn`.
 * At most one line per reason plus one per interval at `info`.
 */
/** The fields of a `handshake rejected` line (the Origin is the client's text: cut to 200 characters). */
function line(code: ErrorCode, reason: HandshakeRejectReason, client: ClientAddress, origin: string, transport: 'ws' | 'sse' | 'pusher' | undefined): object {
  return { ip: client.ip, code, reason, origin: origin === '' ? undefined : origin.slice(0, 200), transport: transport === 'ws' ? undefined : transport };
}

export function createRejectionLog(log: Log, intervalMs = REJECTION_LOG_INTERVAL_MS): RejectionLog {
  const firstLogged = new Set<HandshakeRejectReason>();
  const reasons = new Map<HandshakeRejectReason, number>();
  const clients = new Map<string, number>();
  let otherClients = 0;
  let total = 0;
  let suppressed = 0;
  let timer: NodeJS.Timeout | undefined;

  function flush(): void {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (suppressed > 0) {
      const top = [...clients].sort((a, b) => b[1] - a[1]).slice(0, TOP_CLIENTS).map(([client, count]) => ({ client, count }));
      log.warn(
        {
          intervalSec: intervalMs / 1000,
          total,
          suppressed,
          reasons: Object.fromEntries(reasons),
          top,
          ...(otherClients > 0 ? { otherClients } : {}),
        },
        'handshake rejections',
      );
    }
    firstLogged.clear();
    reasons.clear();
    clients.clear();
    otherClients = 0;
    total = 0;
    suppressed = 0;
  }

  return {
    rejected({ code, reason, client, origin, transport }) {
      total++;
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      const n = clients.get(client.bucket);
      if (n !== undefined) clients.set(client.bucket, n + 1);
      else if (clients.size < MAX_TRACKED_CLIENTS) clients.set(client.bucket, 1);
      else otherClients++;
      if (!firstLogged.has(reason)) {
        firstLogged.add(reason);
        log.warn(line(code, reason, client, origin, transport), 'handshake rejected');
      } else {
        suppressed++;
        if (log.isLevelEnabled('debug')) log.debug(line(code, reason, client, origin, transport), 'handshake rejected');
      }
      if (timer === undefined) {
        timer = setTimeout(flush, intervalMs);
        timer.unref();
      }
    },
    flush,
  };
}
