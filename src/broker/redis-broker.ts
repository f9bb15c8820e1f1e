/**
 * The Redis broker: fan-out between nodes through Redis pub/sub.
 *
 * - One Redis channel per pubgate channel, `<prefix>ch:<channel>`; a node holds
 *   exactly the channels it has local listeners for. Payloads are frame texts,
 *   passed through untouched.
 * - Standalone (`url`, or `sentinel`: the master of a Redis Sentinel group,
 *   looked up again on every reconnect): PUBLISH/SUBSCRIBE on one publishing
 *   and one subscriber connection. Cluster (`cluster` seeds): SPUBLISH/SSUBSCRIBE, one subscriber
 *   connection per master, so a message only travels inside its shard.
 * - History (optional): a Lua script per publish that appends and (S)PUBLISHes
 *   in one step, on the publishing side; on a cluster the channel's history
 *   keys are hash-tagged into the slot of its Redis channel (redis-history.ts).
 * - Nothing is queued while Redis is unreachable: publish rejects at once with
 *   GatewayError('unavailable'), and settles within publishTimeoutMs in any case.
 * - 'ready' means: publisher connected, every wanted channel confirmed by Redis
 *   on a connected subscriber, and the self-probe (`<prefix>probe:<nodeId>`)
 *   coming back. After a reconnect, status returns to 'ready' only once every
 *   subscription is confirmed again.
 * - Control messages (`<prefix>control`) are JSON, validated before use
 *   (control.ts).
 * - The node registry (`<prefix>nodes`, redis-nodes.ts): while ready, the
 *   node renews a short lease there, so that others know it is alive; it
 *   removes itself when the broker closes.
 */
import { randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';
import type { Log } from '../observability/logger.js';
import type { Broker, BrokerHandlers, BrokerStatus, ControlMessage } from './broker.js';
import { encodeControl, parseControl } from './control.js';
import { ClusterTransport } from './redis-cluster.js';
import {
  DEFAULT_TUNING,
  errorText,
  publishErrorReason,
  unavailable,
  type ConnTuning,
  type PublishErrorReason,
  type Publisher,
  type SentinelTarget,
  type SubRouter,
  type TransportEvents,
} from './redis-conn.js';
import { SelfProbe } from './redis-probe.js';
import { StandalonePublisher, StandaloneRouter } from './redis-standalone.js';
import type { HistoryOptions } from './history.js';
import { createRedisHistory } from './redis-history.js';
import { idempotencyRedisKey, publishOnceScript } from './idempotency.js';
import { createRedisPresence } from './redis-presence.js';
import { createRedisLiveness, createRedisOccupancy } from './redis-occupancy.js';
import { createRedisWebhookQueue } from './redis-webhook-queue.js';
import type { ScriptRunner } from './redis-history.js';
import { webhookOutboxKey, type WebhookQueue } from '../webhooks/queue.js';
import { createEventSink, type ClosableSink } from '../webhooks/sink.js';
import { NodeRegistry } from './redis-nodes.js';

export type { PublishErrorReason, SentinelTarget } from './redis-conn.js';
export { parseControl } from './control.js';

/** Optional callbacks for metrics; every one is called synchronously and must not throw. */
export interface RedisBrokerEvents {
  /** A connection came back after a drop. */
  onReconnect?(conn: 'publisher' | 'subscriber'): void;
  /** A publish (or control publish) was rejected; `reason` is a bounded label. */
  onPublishError?(reason: PublishErrorReason): void;
  /** A probe came back after `rttSec`, or `undefined` for a probe that did not come back within one interval. */
  onProbe?(rttSec: number | undefined): void;
  /** Status went back to 'ready' after a reconnect; `count` channels were resubscribed. */
  onResubscribed?(count: number): void;
  /** A control message that is not a valid ControlMessage was ignored. */
  onInvalidControl?(): void;
}

export interface RedisBrokerOptions {
  /** redis:// or rediss:// URL of a standalone Redis. Exactly one of url, sentinel and cluster. */
  readonly url?: string;
  /** A Redis Sentinel group: the node talks to its current master, and follows failovers. */
  readonly sentinel?: SentinelTarget;
  /** Password of the Redis data nodes (standalone or Sentinel; a URL may carry it instead). */
  readonly password?: string;
  /** `host:port` seeds of a Redis Cluster (sharded pub/sub, Redis >= 7). */
  readonly cluster?: readonly string[];
  /** Prefix of every Redis channel name; default 'pubgate:'. */
  readonly keyPrefix?: string;
  readonly nodeId: string;
  readonly log: Log;
  /** Self-probe period; default 1000. Three missed probes in a row mark the broker 'down'. */
  readonly probeIntervalMs?: number;
  /** A publish settles (accepted or 'unavailable') within this many ms; default 2000. */
  readonly publishTimeoutMs?: number;
  /** Per-command reply timeout; default 1000. */
  readonly commandTimeoutMs?: number;
  /** TCP connect timeout; default 2000. */
  readonly connectTimeoutMs?: number;
  readonly events?: RedisBrokerEvents;
  /** Keep history (offsets, epochs) for the channels the gateway asks about (see redis-history.ts for the key names). */
  readonly history?: HistoryOptions;
  /** Keep presence (redis-presence.ts); keys outlive their last write by `keysTtlMs`. */
  readonly presence?: { readonly keysTtlMs: number };
  /** Node registry timing (tests); defaults in redis-nodes.ts. */
  readonly registry?: { readonly renewMs?: number; readonly leaseMs?: number };
  /** Keep node liveness and channel lists, to sweep dead nodes' channels (redis-occupancy.ts). */
  readonly liveness?: boolean;
  /**
   * Webhooks: occupancy sets, the webhook queue (redis-webhook-queue.ts), and
   * member events from presence. Outboxes and the queue's keys live
   * `keysTtlMs` after their last write.
   */
  readonly webhooks?: { readonly maxEvents: number; readonly keysTtlMs: number };
}

/** A process's name among the nodes: its node id (at most 200 characters) and a random suffix. */
export function instanceName(nodeId: string): string {
  return `${nodeId.slice(0, 200)}~${randomBytes(6).toString('base64url')}`;
}

export function createRedisBroker(opts: RedisBrokerOptions): Broker {
  const clusterMode = (opts.cluster?.length ?? 0) > 0;
  const sentinelMode = opts.sentinel !== undefined;
  if ([clusterMode, sentinelMode, opts.url !== undefined && opts.url !== ''].filter(Boolean).length !== 1) {
    throw new TypeError('createRedisBroker needs exactly one of url, sentinel and cluster');
  }
  if (sentinelMode && (opts.sentinel.sentinels.length === 0 || opts.sentinel.name === '')) {
    throw new TypeError('createRedisBroker: a sentinel target needs at least one Sentinel and the master group name');
  }
  if (clusterMode && opts.password !== undefined) {
    throw new TypeError('createRedisBroker: password is not supported with cluster');
  }
  const kind = clusterMode ? 'redis-cluster' : sentinelMode ? 'redis-sentinel' : 'redis';
  const prefix = opts.keyPrefix ?? 'pubgate:';
  if (clusterMode && /[{}]/.test(prefix)) {
    // A brace in the prefix would make it (part of) the hash tag of every name: the
    // history keys of a channel and its shard channel could land in different slots.
    throw new TypeError('the key prefix of a Redis Cluster broker must not contain { or }');
  }
  const chPrefix = `${prefix}ch:`;
  // Plain channels' idempotent publish: check, remember and (S)PUBLISH in one script.
  const PUBLISH_ONCE = publishOnceScript(clusterMode ? 'SPUBLISH' : 'PUBLISH');
  const controlCh = `${prefix}control`;
  const probeCh = `${prefix}probe:${opts.nodeId}`;
  const instance = instanceName(opts.nodeId);
  const log = opts.log.child({ component: 'broker', broker: kind });
  const ev = opts.events ?? {};
  const probeIntervalMs = Math.max(10, opts.probeIntervalMs ?? 1000);
  const publishTimeoutMs = opts.publishTimeoutMs ?? 2000;
  const tuning: ConnTuning = {
    commandTimeoutMs: opts.commandTimeoutMs ?? DEFAULT_TUNING.commandTimeoutMs,
    connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_TUNING.connectTimeoutMs,
    keepAliveMs: DEFAULT_TUNING.keepAliveMs,
  };
  const connName = `pubgate-${opts.nodeId.replace(/[^A-Za-z0-9_.:-]/g, '_')}`;

  let handlers: BrokerHandlers | undefined;
  let status: BrokerStatus = 'connecting';
  let startPromise: Promise<void> | undefined;
  let settled = false;
  let settleStart: () => void = () => undefined;
  let closed = false;
  let closing: Promise<void> | undefined;
  let reconnected = false;
  /** User channels (pubgate names) this node wants. */
  const desired = new Set<string>();
  /** Channel → token of the subscribe call that added it, while that call is pending. */
  const adding = new Map<string, object>();

  const transportEvents: TransportEvents = {
    message: onRedisMessage,
    change: () => refresh(),
    failure: (conn, reason) => {
      if (!settled) {
        log.warn({ conn, err: reason }, 'redis unreachable at start; staying down until it appears');
        settleStart();
      }
    },
    reconnected: (conn) => {
      reconnected = true;
      safely(() => ev.onReconnect?.(conn), 'onReconnect');
    },
  };

  let publisher: Publisher;
  let router: SubRouter;
  if (clusterMode) {
    const t = new ClusterTransport(opts.cluster ?? [], tuning, connName, log, transportEvents);
    publisher = t;
    router = t;
  } else {
    const target = {
      ...(opts.sentinel ? { sentinel: opts.sentinel } : { url: opts.url ?? '' }),
      ...(opts.password !== undefined ? { password: opts.password } : {}),
    };
    publisher = new StandalonePublisher(target, tuning, `${connName}-pub`, log, transportEvents);
    router = new StandaloneRouter(target, tuning, `${connName}-sub`, log, transportEvents);
  }

  // ---- status -------------------------------------------------------------

  function downReason(): string {
    if (!publisher.ready()) return 'publisher connection down';
    if (!router.live()) return 'subscriptions not confirmed';
    return 'probe not coming back';
  }

  function refresh(): void {
    let next: BrokerStatus;
    if (closed) next = 'down';
    else if (publisher.ready() && router.live() && !probe.stale) next = 'ready';
    else next = settled ? 'down' : 'connecting';
    if (next === status) return;
    status = next;
    if (next === 'ready') {
      log.info({ channels: desired.size }, 'broker ready');
      if (reconnected) safely(() => ev.onResubscribed?.(desired.size), 'onResubscribed');
      reconnected = false;
      settleStart();
      registry.renew();
    } else if (next === 'down' && !closed) {
      log.warn({ reason: downReason() }, 'broker down');
    }
    safely(() => handlers?.onStatus(next), 'onStatus');
  }

  function safely(fn: () => void, what: string): void {
    try {
      fn();
    } catch (e) {
      log.error({ err: errorText(e), handler: what }, 'broker handler threw');
    }
  }

  // ---- incoming -----------------------------------------------------------

  function onRedisMessage(redisChannel: string, payload: string): void {
    if (closed || !handlers) return;
    const h = handlers;
    if (redisChannel.startsWith(chPrefix)) {
      const channel = redisChannel.slice(chPrefix.length);
      if (desired.has(channel)) safely(() => h.onMessage(channel, payload), 'onMessage');
    } else if (redisChannel === controlCh) {
      const msg = parseControl(payload);
      if (msg) safely(() => h.onControl(msg), 'onControl');
      else {
        log.warn({ bytes: payload.length }, 'ignored an invalid control message');
        safely(() => ev.onInvalidControl?.(), 'onInvalidControl');
      }
    } else if (redisChannel === probeCh) {
      probe.received(payload);
    }
  }

  const probe = new SelfProbe({
    channel: probeCh,
    intervalMs: probeIntervalMs,
    publisher,
    router,
    log,
    onProbe: (rtt) => safely(() => ev.onProbe?.(rtt), 'onProbe'),
    onChange: () => refresh(),
  });

  // ---- outgoing -----------------------------------------------------------

  /**
   * Runs one publishing command with the broker's guarantees: refused at once
   * unless ready (nothing is queued while Redis is away), settled within
   * publishTimeoutMs, and every refusal counted with a bounded reason.
   */
  function guarded<T>(op: () => Promise<T>): Promise<T> {
    const fail = (reason: PublishErrorReason, message: string): GatewayError => {
      safely(() => ev.onPublishError?.(reason), 'onPublishError');
      return unavailable(message, publisher.retryAfterSec());
    };
    if (closed) return Promise.reject(fail('closed', 'broker is closed'));
    if (status !== 'ready') return Promise.reject(fail('not_ready', 'broker is not connected'));
    // No await before this call: publishes leave in call order.
    const sent = op();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        // Judged after this turn's I/O was read (setImmediate runs after the poll
        // phase): an answer that waited in the socket while our own event loop was
        // busy (a burst of client frames) is not a broker that did not answer.
        setImmediate(() => {
          if (done) return;
          done = true;
          reject(fail('timeout', 'broker did not accept the publish in time'));
        });
      }, publishTimeoutMs);
      sent.then(
        (v) => {
          clearTimeout(timer);
          if (!done) resolve(v);
          done = true;
        },
        (e: unknown) => {
          clearTimeout(timer);
          log.debug({ err: errorText(e) }, 'publish failed');
          if (!done) reject(fail(publishErrorReason(e), 'broker did not accept the publish'));
          done = true;
        },
      );
    });
  }

  function send(redisChannel: string, payload: string): Promise<void> {
    return guarded(() => publisher.publish(redisChannel, payload));
  }

  const history = opts.history
    ? createRedisHistory({
        ...opts.history,
        prefix,
        redisChannel: (channel) => chPrefix + channel,
        sharded: clusterMode,
        run: (lua, keys, args) => guarded(() => publisher.script(lua, keys, args)),
      })
    : undefined;

  const runScript: ScriptRunner = (lua, keys, args) => guarded(() => publisher.script(lua, keys, args));
  const redisChannel = (channel: string): string => chPrefix + channel;
  let webhooks: { queue: WebhookQueue; sink: ClosableSink } | undefined;
  if (opts.webhooks) {
    const queue = createRedisWebhookQueue({
      prefix,
      outboxKey: (channel) => webhookOutboxKey(prefix, redisChannel(channel)),
      run: runScript,
      maxEvents: opts.webhooks.maxEvents,
      ttlMs: opts.webhooks.keysTtlMs,
    });
    webhooks = { queue, sink: createEventSink(queue, log) };
  }
  const eventsTo = webhooks ? { sink: webhooks.sink, outboxTtlMs: opts.webhooks?.keysTtlMs ?? 0 } : undefined;

  const presence = opts.presence
    ? createRedisPresence({
        prefix,
        redisChannel,
        sharded: clusterMode,
        keysTtlMs: opts.presence.keysTtlMs,
        run: runScript,
        ...(eventsTo ? { webhooks: eventsTo } : {}),
      })
    : undefined;
  const occupancy = webhooks ? createRedisOccupancy({ prefix, redisChannel, run: runScript, ...(eventsTo ? { webhooks: eventsTo } : {}) }) : undefined;
  const liveness = opts.liveness === true || webhooks ? createRedisLiveness({ prefix, run: runScript }) : undefined;

  const registry = new NodeRegistry({
    key: `${prefix}nodes`,
    instance,
    run: (lua, keys, args) => guarded(() => publisher.script(lua, keys, args)),
    ready: () => status === 'ready',
    log,
    ...opts.registry,
  });

  return {
    kind,
    instance,
    history,
    presence,
    occupancy,
    liveness,
    webhooks,
    get status() {
      return status;
    },

    start(h) {
      if (startPromise) return startPromise;
      if (closed) return Promise.resolve();
      handlers = h;
      // Stored beside the lease at each renewal (the admin console's overview).
      if (h.nodeInfo) registry.setInfo(h.nodeInfo.bind(h));
      startPromise = new Promise<void>((resolve) => {
        const guard = setTimeout(() => settleStart(), tuning.connectTimeoutMs * 2 + 1000);
        guard.unref();
        settleStart = () => {
          if (settled) return;
          settled = true;
          clearTimeout(guard);
          resolve();
          refresh();
        };
      });
      router.pin(controlCh);
      router.pin(probeCh);
      publisher.start();
      router.start();
      probe.start();
      registry.start();
      return startPromise;
    },

    publish(channel, frame) {
      return send(chPrefix + channel, frame);
    },

    async publishOnce(channel, frame, idem) {
      const rc = chPrefix + channel;
      const r = await guarded(() => publisher.script(PUBLISH_ONCE, [idempotencyRedisKey(prefix, rc, idem.key)], [rc, frame, String(idem.ttlSec)]));
      return Number(r) === 1;
    },

    subscribe(channel) {
      if (closed || !handlers) return Promise.reject(unavailable(closed ? 'broker is closed' : 'broker is not started'));
      const rc = chPrefix + channel;
      // Already wanted: confirm (or join the pending subscribe); a rejection changes nothing.
      if (desired.has(channel)) return router.add(rc);
      desired.add(channel);
      const token = {};
      adding.set(channel, token);
      return router.add(rc).then(
        () => {
          if (adding.get(channel) === token) adding.delete(channel);
        },
        (e: unknown) => {
          // A subscribe that fails leaves no trace, unless a later call took over the channel.
          if (adding.get(channel) === token) {
            adding.delete(channel);
            desired.delete(channel);
            void router.remove(rc);
          }
          throw e instanceof GatewayError ? e : unavailable('broker did not confirm the subscription');
        },
      );
    },

    unsubscribe(channel) {
      adding.delete(channel);
      if (!desired.delete(channel) || closed) return Promise.resolve();
      return router.remove(chPrefix + channel);
    },

    publishControl(msg: ControlMessage) {
      return send(controlCh, encodeControl(msg));
    },

    nodes() {
      return registry.read();
    },

    nodeInfos() {
      return registry.readInfos();
    },

    subscribedCount() {
      let n = 0;
      for (const ch of desired) if (router.confirmed(chPrefix + ch)) n += 1;
      return n;
    },

    close() {
      closing ??= (async () => {
        if (closed) return;
        registry.stop();
        // Leave the registry first (while still ready), so no node waits for this one's answers.
        if (status === 'ready') {
          await registry.leave().catch((e: unknown) => log.debug({ err: errorText(e) }, 'leaving the node registry failed'));
        }
        closed = true;
        probe.stop();
        settleStart();
        refresh();
        desired.clear();
        adding.clear();
        webhooks?.sink.close();
        await Promise.all([publisher.close(), router.close()]);
        log.info({}, 'broker closed');
      })();
      return closing;
    },
  };
}
