/**
 * Pieces shared by the Redis broker files: connection options, the backoff,
 * and the two roles a transport plays (publisher, subscriber router).
 */
import type { Cluster, Redis, RedisOptions } from 'ioredis';
import { GatewayError } from '../errors.js';

/** Reconnect delay: 100 ms doubling to a 2 s cap, with ±20 % jitter; never a tight loop, never gives up. */
export function backoffMs(attempt: number): number {
  const base = Math.min(100 * 2 ** Math.max(0, Math.min(attempt - 1, 10)), 2000);
  return Math.max(50, Math.round(base * (0.8 + Math.random() * 0.4)));
}

export interface ConnTuning {
  /** Reject a command that got no reply within this many ms (hung connection, paused server). */
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** TCP keepalive initial delay, so a dead path without FIN is noticed. */
  readonly keepAliveMs: number;
}

export const DEFAULT_TUNING: ConnTuning = { commandTimeoutMs: 1000, connectTimeoutMs: 2000, keepAliveMs: 5000 };

/**
 * ioredis 6 speaks RESP3 by default (a HELLO round trip on every connect, pub/sub
 * messages as push frames). The suites run on RESP2 against Redis 7, Valkey 8,
 * Cluster and Sentinel, so every connection asks for RESP2 explicitly.
 */
export const RESP_VERSION = 2;

/**
 * Options for every connection we open ourselves. Nothing is queued while a
 * connection is down (enableOfflineQueue false), nothing in flight survives a
 * drop (maxRetriesPerRequest 0 rejects it at once, no resend after reconnect),
 * and we resubscribe ourselves so readiness can wait for Redis' confirmation.
 */
export function connOptions(t: ConnTuning, onRetry: (delayMs: number) => void): RedisOptions {
  return {
    protocol: RESP_VERSION,
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResubscribe: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: t.commandTimeoutMs,
    connectTimeout: t.connectTimeoutMs,
    keepAlive: t.keepAliveMs,
    retryStrategy: (times: number) => {
      const d = backoffMs(times);
      onRetry(d);
      return d;
    },
  };
}

/** `host:port` (IPv6 in brackets) → host and port; 6379 when no port is given. */
export function parseHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  if (i <= 0) return { host: s, port: 6379 };
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

/** The master of a Redis Sentinel group. */
export interface SentinelTarget {
  /** `host:port` of each Sentinel (more are learnt from them: SENTINEL SENTINELS). */
  readonly sentinels: readonly string[];
  /** The master group name the Sentinels monitor. */
  readonly name: string;
  /** The Sentinels' own password (their requirepass), if any. */
  readonly sentinelPassword?: string;
}

/** Where a standalone transport connects: a redis:// URL, or the master a Sentinel group names. */
export interface StandaloneTarget {
  readonly url?: string;
  readonly sentinel?: SentinelTarget;
  /** Password of the data nodes (not needed when the URL carries it). */
  readonly password?: string;
}

/**
 * The ioredis constructor arguments for one standalone connection: `base`
 * (connOptions) plus the password and, for Sentinel, the group. Through
 * Sentinel every connect (the first and each reconnect, on the same retry
 * strategy) asks the Sentinels for the current master and then checks that
 * the server says role:master (ready check), so after a failover a
 * reconnect lands on the promoted replica. failoverDetector: each connection
 * also listens for `+switch-master` on the Sentinels and drops itself when the
 * master changes, so a master that hangs without closing its sockets
 * (SIGSTOP, a network partition) is left as soon as the Sentinels promote
 * another. Nothing here is logged: the passwords stay in these options.
 */
export function standaloneConnection(target: StandaloneTarget, base: RedisOptions, t: ConnTuning): { url: string | undefined; options: RedisOptions } {
  const password = target.password !== undefined ? { password: target.password } : {};
  const s = target.sentinel;
  if (!s) return { url: target.url, options: { ...base, ...password } };
  return {
    url: undefined,
    options: {
      ...base,
      ...password,
      sentinels: s.sentinels.map(parseHostPort),
      name: s.name,
      role: 'master',
      ...(s.sentinelPassword !== undefined ? { sentinelPassword: s.sentinelPassword } : {}),
      // A Sentinel that does not answer must not hold up the search for the master.
      sentinelCommandTimeout: t.commandTimeoutMs,
      // Every Sentinel unreachable: retry the round after the usual backoff, never give up.
      sentinelRetryStrategy: (times: number) => backoffMs(times),
      failoverDetector: true,
      // A failover-detector connection to a Sentinel that dropped comes back on the backoff (ioredis: 60 s).
      sentinelReconnectStrategy: (times: number) => backoffMs(times),
    },
  };
}

/**
 * While `r` is ready its commands carry no ioredis per-command timer; the
 * caller bounds them (the broker's publish timeout, the subscription
 * batcher's stall watchdog), judged after the socket was read. ioredis' timer
 * fires in the timers phase, before a reply already waiting in the socket is
 * read: after a busy spell of our own event loop (a burst of client frames, a
 * mass disconnect) it would fail commands Redis had answered, and the reply
 * to a command it failed is then consumed without a word. The connection's
 * handshake (ready check, CLIENT SETNAME) keeps the configured timeout.
 */
export function untimedWhileReady(r: Redis): void {
  const handshake = r.options.commandTimeout;
  r.on('ready', () => {
    r.options.commandTimeout = undefined;
  });
  r.on('close', () => {
    r.options.commandTimeout = handshake;
  });
}

export function unavailable(message: string, retryAfterSec = 1): GatewayError {
  return new GatewayError('unavailable', message, retryAfterSec);
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Bounded reasons reported to RedisBrokerEvents.onPublishError (metric labels). */
export type PublishErrorReason = 'not_ready' | 'closed' | 'timeout' | 'connection' | 'error';

export function publishErrorReason(e: unknown): PublishErrorReason {
  const m = errorText(e);
  if (/timed? ?out/i.test(m)) return 'timeout';
  if (/closed|writeable|isn't ready|not ready|max retries|ECONN|EPIPE|disconnect|None of startup/i.test(m)) return 'connection';
  return 'error';
}

/** The sending side: PUBLISH (standalone) or SPUBLISH (cluster). */
export interface Publisher {
  ready(): boolean;
  /** Seconds a client should wait before retrying while this side is down. */
  retryAfterSec(): number;
  publish(redisChannel: string, payload: string): Promise<void>;
  /** Runs a Lua script on the publishing connection (EVALSHA, loaded with EVAL: see Scripts). */
  script(lua: string, keys: readonly string[], args: readonly string[]): Promise<unknown>;
  start(): void;
  close(): Promise<void>;
}

/** The receiving side: confirmed subscriptions on one or more subscriber connections. */
export interface SubRouter {
  /** A user channel: resolves when Redis confirmed it; rejects with 'unavailable' when it cannot. */
  add(redisChannel: string): Promise<void>;
  /** An internal channel (control, probe): kept subscribed across reconnects, no promise. */
  pin(redisChannel: string): void;
  /** Resolves once Redis confirmed the release (or at once when the connection is down). Never rejects. */
  remove(redisChannel: string): Promise<void>;
  confirmed(redisChannel: string): boolean;
  /** Every wanted channel is confirmed on a connected subscriber connection. */
  live(): boolean;
  start(): void;
  close(): Promise<void>;
}

/** What the transports report back to the broker core. */
export interface TransportEvents {
  message(redisChannel: string, payload: string): void;
  /** Something that may change the status happened. */
  change(): void;
  /** A connection attempt failed or an established connection dropped. */
  failure(conn: 'publisher' | 'subscriber', reason: string): void;
  /** A connection came back after having been ready before. */
  reconnected(conn: 'publisher' | 'subscriber'): void;
}

/** Disconnects a connection and resolves once it ended (at most 1 s: a dead peer does not hold up a shutdown). */
export function disconnectRedis(r: Redis): Promise<void> {
  if (r.status === 'end') return Promise.resolve();
  const ended = new Promise<void>((resolve) => {
    r.once('end', () => resolve());
    setTimeout(resolve, 1000).unref();
  });
  r.disconnect();
  return ended;
}

type ScriptCall = (...args: Array<string | number>) => Promise<unknown>;

/**
 * Lua scripts through ioredis' script commands (defineCommand), on a single
 * connection or a Cluster client alike: the first call on each connection
 * sends EVAL (which loads the script on that server), later calls EVALSHA; a
 * connection to a new server (reconnect, failover, MOVED/ASK to another node)
 * starts with EVAL again, and an EVALSHA answered NOSCRIPT (SCRIPT FLUSH) is
 * sent again as EVAL. On a Cluster client the script is routed by the slot of
 * its first key. Commands on one connection keep their order: the EVAL that
 * loads a script is written before the EVALSHAs that use it.
 */
export class Scripts {
  private readonly names = new Map<string, string>();

  constructor(private readonly client: Redis | Cluster) {}

  run(lua: string, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    let name = this.names.get(lua);
    if (name === undefined) {
      name = `pubgateScript${this.names.size + 1}`;
      // No numberOfKeys: every call passes its key count first, as with EVAL.
      this.client.defineCommand(name, { lua });
      this.names.set(lua, name);
    }
    const call = (this.client as unknown as Record<string, ScriptCall>)[name];
    if (!call) return Promise.reject(new Error(`script command ${name} is not defined`));
    return call.call(this.client, keys.length, ...keys, ...args);
  }
}
