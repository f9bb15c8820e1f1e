/**
 * Composition root: builds every part, wires them, and owns the lifecycle
 * (start, and the drain order on SIGTERM). The only module that knows them all.
 */
import { readFileSync } from 'node:fs';
import { createAdminApi } from './admin/admin-api.js';
import { loadConsoleFiles } from './admin/console-files.js';
import { createPublishApi, type PublishSink } from './api/publish-api.js';
import { createVerifier } from './auth/verifier.js';
import type { Broker, BrokerStatus, NodeInfo } from './broker/broker.js';
import { createMemoryBroker } from './broker/memory-broker.js';
import { createRedisBroker } from './broker/redis-broker.js';
import { compileNamespaces, type ChannelOptions, type ChannelResolver } from './channels/namespaces.js';
import { createPresence, presenceTickMs, type Presence } from './presence/presence.js';
import { createOccupancy } from './occupancy/occupancy.js';
import { countDroppedWebhookEvents, createWebhookDeliverer, type WebhookPoster } from './webhooks/deliverer.js';
import { pusherWebhookDestination } from './pusher/webhooks.js';
import { parseWebhookSecret } from './webhooks/signing.js';
import { randomBytes } from 'node:crypto';
import { shortHmacSecrets, type Config } from './config.js';
import { createClusterControl } from './hub/control.js';
import { createHub } from './hub/hub.js';
import { PusherApps } from './pusher/apps.js';
import { isInternalUserChannel, withPusherChannels } from './pusher/channels.js';
import { createServerSubs } from './hub/server-subs.js';
import type { Socket } from './hub/session.js';
import type { Log } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { createProxies } from './proxy/proxies.js';
import { CLOSE } from './protocol/close-codes.js';
import { createTransport, type Transport } from './transport/server.js';
import { createConnIds } from './transport/conn-id.js';
import { localPusherCounts } from './pusher/counts.js';
import { localNativeCounts } from './hub/native-counts.js';
import { createPusherHttpApi } from './pusher/http-api.js';

export interface Gateway {
  start(): Promise<{ port: number; adminPort: number }>;
  /** Drains (readiness 503, 1001 closes spread over drainSeconds) and stops. */
  drain(): Promise<void>;
  readonly metrics: Metrics;
}

export interface GatewayOptions {
  /** Replaces the broker chosen from config (tests). */
  readonly broker?: Broker;
}

/** pubgate's version (package.json, beside dist/ and src/ alike). */
function packageVersion(): string {
  try {
    const v = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}

function chooseBroker(config: Config, channels: ChannelResolver, log: Log, metrics: Metrics, onGap: () => void): Broker {
  // Defaults for history calls; each channel's namespace gives its own size and ttl.
  const history = channels.anyHistory ? { size: config.historySize, ttlSec: config.historyTtl } : undefined;
  if (config.redisUrl === undefined && config.redisCluster.length === 0 && config.redisSentinels.length === 0) {
    return createMemoryBroker({
      ...(history ? { history } : {}),
      presence: channels.anyPresence,
      ...(webhooksOn(config) ? { webhooks: { maxEvents: config.webhookMaxQueue } } : {}),
    });
  }
  const sentinel = config.redisSentinels.length > 0 && config.redisSentinelName !== undefined
    ? {
        sentinels: config.redisSentinels,
        name: config.redisSentinelName,
        ...(config.redisSentinelPassword !== undefined ? { sentinelPassword: config.redisSentinelPassword } : {}),
      }
    : undefined;
  return createRedisBroker({
    ...(history ? { history } : {}),
    // Presence keys outlive their last write by twice the TTL: a channel whose nodes all died leaves nothing.
    ...(channels.anyPresence ? { presence: { keysTtlMs: config.presenceTtl * 2000 + 10_000 } } : {}),
    // Dead nodes' channels are swept (their presence and occupancy) when either is kept.
    liveness: channels.anyPresence || webhooksOn(config),
    // Queued events outlive the retry window by a day: a cluster that was all down keeps them that long.
    ...(webhooksOn(config) ? { webhooks: { maxEvents: config.webhookMaxQueue, keysTtlMs: (config.webhookRetrySeconds + 86_400) * 1000 } } : {}),
    ...(sentinel ? { sentinel } : config.redisUrl !== undefined ? { url: config.redisUrl } : { cluster: config.redisCluster }),
    ...(config.redisPassword !== undefined ? { password: config.redisPassword } : {}),
    nodeId: config.nodeId,
    log,
    events: {
      onReconnect: (conn) => {
        metrics.brokerReconnect();
        // A new subscriber connection has lost whatever was published while the
        // old one was gone. History subscribers are closed now, before it
        // subscribes again, so no message after the gap reaches them first.
        if (conn === 'subscriber') onGap();
      },
      onPublishError: (reason) => metrics.brokerPublishError(reason),
      onProbe: (rtt) => metrics.brokerProbe(rtt),
      onResubscribed: (count) => {
        metrics.brokerGap();
        log.warn({ channels: count }, 'broker subscriptions restored after a loss: messages published meanwhile were missed');
      },
      onInvalidControl: () => metrics.frameRejected('invalid_control'),
    },
  });
}

/** The Standard Webhooks destination is configured. */
function standardWebhooks(config: Config): boolean {
  return config.webhookUrl !== undefined && config.webhookSecret !== undefined;
}

/** Any webhook destination (Standard, Pusher-format): occupancy, the queue and the deliverer run. */
function webhooksOn(config: Config): boolean {
  return standardWebhooks(config) || (config.pusherWebhookUrl !== undefined && config.pusherApps.length > 0);
}

export async function createGateway(config: Config, log: Log, opts: GatewayOptions = {}): Promise<Gateway> {
  const metrics = createMetrics(config.nodeId);
  // After a broker gap, subscribers of history channels are closed with 1011:
  // they reconnect and recover with `since`, so they miss nothing.
  const late: { transport?: Transport; onGap: () => void } = { onGap: () => undefined };
  const pusherApps = new PusherApps(config.pusherApps);
  // Pusher's presence- channels have presence whatever the namespaces say.
  const channels = withPusherChannels(compileNamespaces(config.namespaces, config), pusherApps);
  const broker = opts.broker ?? chooseBroker(config, channels, log, metrics, () => late.onGap());
  // This process's name in presence leases and occupancy (a new one per start).
  const nodeName = randomBytes(9).toString('base64url');
  let presence: Presence | undefined;
  if (channels.anyPresence) {
    if (!broker.presence) throw new Error('a namespace has presence but the broker keeps none');
    presence = createPresence({ store: broker.presence, ttlSec: config.presenceTtl, maxMembers: config.presenceMaxMembers, metrics, log, node: nodeName });
    const p = presence;
    metrics.observePresenceEntries(() => p.entries());
  }
  const webhooks = webhooksOn(config) ? broker.webhooks : undefined;
  if (webhooksOn(config) && !webhooks) throw new Error('webhooks are configured but the broker keeps no webhook queue');
  // One deliverer for both destinations: a channel is acked once both took its events (docs/protocol.md, "Pusher-format webhooks").
  const pusherHookUrl = config.pusherApps.length > 0 ? config.pusherWebhookUrl : undefined;
  const deliverer = webhooks
    ? createWebhookDeliverer({
        queue: webhooks.queue,
        ...(standardWebhooks(config) ? { url: config.webhookUrl as string, key: parseWebhookSecret(config.webhookSecret as string) } : {}),
        ...(pusherHookUrl !== undefined ? { destinations: [(post: WebhookPoster) => pusherWebhookDestination(pusherApps, pusherHookUrl, post)] } : {}),
        retryWindowMs: config.webhookRetrySeconds * 1000,
        metrics,
        log,
      })
    : undefined;
  if (webhooks && deliverer) {
    // Events queued by this node are claimed at once; others' within the deliverer's poll.
    webhooks.sink.hook({ queued: () => deliverer.nudge(), dropped: (d) => countDroppedWebhookEvents(metrics, d) });
  }
  // Occupancy: every channel with webhooks (occupied/vacated); otherwise, with
  // Redis and presence, only presence channels are listed, so a dead node's
  // presence is swept even where no other node holds the channel.
  const occupancy = broker.occupancy || broker.liveness
    ? createOccupancy({
        store: webhooks ? broker.occupancy : undefined,
        liveness: broker.liveness,
        node: nodeName,
        ...(broker.presence
          ? {
              presence: {
                store: broker.presence,
                presenceCall: (channel: string) => {
                  const o = channels.resolve(channel);
                  return o.presence ? { joinLeave: o.joinLeave, leaseMs: config.presenceTtl * 1000 } : undefined;
                },
              },
            }
          : {}),
        ttlSec: config.presenceTtl,
        tickMs: presenceTickMs(config.presenceTtl),
        log,
        hooks: { op: (op, ok) => metrics.occupancyOp(op, ok), swept: (n) => metrics.nodeSwept(n) },
      })
    : undefined;
  const verifier = await createVerifier(config);
  let draining = false;
  let brokerStatus: BrokerStatus = 'connecting';

  // The hub and the transport need each other: the hub fans out through the
  // transport's topics, the transport hands sockets to the hub.
  metrics.observeBrokerChannels(() => broker.subscribedCount());
  // One set of connection ids for the transport (welcome.conn) and the hub (exclude).
  const connIds = createConnIds();
  const hub = createHub({
    broker,
    topics: {
      publish: (topic, frame) => late.transport?.publish(topic, frame) ?? 0,
      sendTo: (ws, frame) => late.transport?.sendTo(ws, frame),
    },
    metrics,
    log,
    closeSocket: (ws: Socket, code) => late.transport?.closeSocket(ws, code),
    channelOptions: channels.resolve,
    ...(presence ? { presence } : {}),
    maxRecoveryBuffer: Math.max(1000, config.historySize),
    maxBackpressure: config.maxBackpressure,
    idempotencyTtlSec: config.idempotencyTtl,
    connIds,
    ...(occupancy
      ? {
          onChannelHeld: (channel: string, o: ChannelOptions, held: boolean): Promise<void> | undefined => {
            if (!webhooks && !o.presence) return undefined;
            // A user channel (#server-to-user-<id>) is one user's server push: no occupancy, no webhooks.
            if (isInternalUserChannel(channel)) return undefined;
            if (held) return occupancy.hold(channel);
            occupancy.release(channel);
            return undefined;
          },
        }
      : {}),
  });
  const serverSubs = createServerSubs({
    hub,
    closeSocket: (ws, code) => late.transport?.closeSocket(ws, code),
    maxSubscriptions: config.maxSubscriptions,
    metrics,
    log,
  });
  const control = createClusterControl({
    broker,
    apply: (op, user, channel) => serverSubs.apply(op, user, channel),
    // Channel counts, this node's share: native channels (app '': GET /v1/channels, the admin console),
    // or the Pusher HTTP API's (none without Pusher apps).
    answer: (q) => (q.app === '' ? localNativeCounts(hub, q) : localPusherCounts(pusherApps, hub, q)),
    disconnect: (user) => hub.control({ kind: 'disconnect', user }),
    metrics,
    log,
  });
  const sink: PublishSink = {
    publishData: (channel, rawData, o) => hub.publishData(channel, rawData, o),
    disconnectUser: (user) => hub.disconnectUser(user),
    serverSubscription: (op, user, channel) => control.request(op, user, channel),
    presence: (channel) => hub.presence(channel),
    presenceStats: (channel) => hub.presenceStats(channel),
    history: (channel, limit, since) => hub.readHistory(channel, limit, since),
    channels: (prefix) => control.query({ app: '', prefix }),
  };
  const api = createPublishApi({
    apiKeys: config.apiKeys,
    maxPublishBytes: config.maxPublishBytes,
    apiRate: config.apiRate,
    sink,
    published: (n) => metrics.published(n),
  });
  // The admin console (docs/admin.md): the same sink as /v1/*; its publishes count as published messages too.
  const adminSink: PublishSink = {
    ...sink,
    publishData: async (channel, rawData, o) => {
      const r = await sink.publishData(channel, rawData, o);
      metrics.published(r.repeat === true ? 0 : 1);
      return r;
    },
  };
  // Off (PUBGATE_ADMIN_CONSOLE=false, or no token): /admin/* answers 404 saying so.
  const adminOn = config.adminConsole && config.adminToken !== undefined;
  const consoleFiles = adminOn ? loadConsoleFiles() : new Map();
  if (adminOn && !consoleFiles.has('index.html')) log.warn({}, 'the admin console files are not found: /admin/ answers 404 (the API works)');
  const adminApi = createAdminApi({
    enabled: config.adminConsole,
    token: config.adminToken,
    maxPublishBytes: config.maxPublishBytes,
    files: consoleFiles,
    sink: adminSink,
    nodes: async () => {
      if (broker.nodeInfos) return broker.nodeInfos();
      return (await broker.nodes()).map((instance) => ({ instance, info: undefined, reportedAtMs: 0 }));
    },
    counts: (q) => control.queryByNode(q),
    channelOptions: channels.resolve,
    self: broker.instance,
    selfId: config.nodeId,
    brokerKind: broker.kind,
  });
  const startedAtMs = Date.now();
  const version = packageVersion();
  /** What this node tells the others (the admin console's overview), at each registry renewal. */
  const nodeInfo = (): NodeInfo => {
    const c = hub.connectionCounts();
    return {
      id: config.nodeId,
      version,
      startedAt: new Date(startedAtMs).toISOString(),
      uptimeSeconds: Math.floor((Date.now() - startedAtMs) / 1000),
      connections: { total: c.ws + c.sse + c.pusher, websocket: c.ws, sse: c.sse, pusher: c.pusher },
      subscriptions: hub.subscriptionCount(),
      channels: hub.channelCount(),
      broker: brokerStatus,
      draining,
    };
  };
  // The Pusher HTTP API (issue 18, in progress: config refuses PUBGATE_PUSHER_APPS unless the test-only switch is set).
  const pusherApi = config.pusherApps.length > 0
    ? createPusherHttpApi({
        apps: pusherApps,
        maxBodyBytes: config.maxPublishBytes,
        apiRate: config.apiRate,
        sink: {
          publishData: (channel, rawData, o) => hub.publishData(channel, rawData, o),
          presence: (channel) => hub.presence(channel),
          presenceStats: (channel) => hub.presenceStats(channel),
          channelCounts: (q) => control.query(q),
          disconnectUser: (user) => hub.disconnectUser(user),
        },
        published: (n) => metrics.published(n),
      })
    : undefined;
  const proxies = createProxies(config, metrics, log);
  const t = createTransport({
    connIds,
    pusherApps,
    config,
    hub,
    serverSubs,
    verifier,
    api,
    metrics,
    log,
    proxies,
    ...(pusherApi ? { pusherApi } : {}),
    adminApi,
    isReady: () => !draining && brokerStatus === 'ready',
    isDraining: () => draining,
  });
  late.transport = t;
  late.onGap = () => {
    const n = hub.closeHistorySubscribers();
    if (n > 0) log.warn({ connections: n }, 'closed history-channel subscribers with 1011 after a broker gap: they recover with since');
  };
  metrics.observeSendBuffers(() => {
    let maxBufferedBytes = 0;
    hub.forEach((ws) => {
      if (ws.getUserData().open) maxBufferedBytes = Math.max(maxBufferedBytes, ws.getBufferedAmount());
    });
    return { slow: hub.slowCount(), maxBufferedBytes };
  });

  if (config.jwtAlgorithms.some((a) => a.startsWith('HS')) && config.jwtSecrets.length === 0 && !config.jwtAlgorithms.some((a) => !a.startsWith('HS'))) {
    log.warn({}, 'no JWT secrets configured (PUBGATE_JWT_SECRETS): every token will be rejected');
  }
  if (config.apiKeys.length === 0) log.warn({}, 'no API keys configured (PUBGATE_API_KEYS): the publish API answers 401');
  if (config.adminConsole && config.adminToken === undefined) {
    log.warn({}, 'the admin console is off: set PUBGATE_ADMIN_TOKEN (or PUBGATE_ADMIN_CONSOLE=false); /admin/* answers 404');
  }
  if (config.connectProxyUrl !== undefined && config.allowAnonymous) {
    log.warn({}, 'PUBGATE_ALLOW_ANONYMOUS has no effect with PUBGATE_CONNECT_PROXY_URL: upgrades without a token are decided by the connect proxy');
  }
  if (config.subscribeProxyUrl !== undefined && !config.namespaces.some((n) => n.subscribeProxy === true)) {
    log.warn({}, 'PUBGATE_SUBSCRIBE_PROXY_URL is set but no namespace has subscribeProxy: the subscribe proxy is never asked');
  }
  const shortSecrets = shortHmacSecrets(config); // with NODE_ENV=production loadConfig has refused them already
  if (shortSecrets.length > 0) log.warn({ secrets: shortSecrets }, 'HMAC secrets shorter than RFC 7518 requires (PUBGATE_JWT_SECRETS): refused when NODE_ENV=production');

  return {
    metrics,
    async start() {
      await broker.start({
        onMessage: (channel, frame) => hub.deliver(channel, frame),
        onStatus: (status) => {
          if (status !== brokerStatus) log.info({ broker: broker.kind, status }, 'broker status');
          brokerStatus = status;
          metrics.brokerStatus(status);
          control.onBrokerStatus(status);
        },
        onControl: (msg) => control.onControl(msg),
        nodeInfo,
      });
      presence?.start();
      await occupancy?.start();
      deliverer?.start();
      const ports = await t.listen();
      log.info({ ...ports, host: config.host, broker: broker.kind, tls: config.tlsCert !== undefined }, 'listening');
      return ports;
    },
    async drain() {
      if (draining) return;
      draining = true;
      const sockets: Socket[] = [];
      hub.forEach((ws) => sockets.push(ws));
      const windowMs = config.drainSeconds * 1000;
      log.info({ connections: sockets.length, requests: t.inflightRequests(), drainSeconds: config.drainSeconds }, 'draining');
      // Spread the 1001 closes evenly over 90% of the window, so clients do not
      // reconnect to the other nodes all at once; the rest is for stragglers.
      const spreadMs = windowMs * 0.9;
      const t0 = performance.now();
      let closed = 0;
      await new Promise<void>((resolve) => {
        const tick = (): void => {
          const elapsed = performance.now() - t0;
          const due = spreadMs <= 0 ? sockets.length : Math.min(sockets.length, Math.ceil((sockets.length * elapsed) / spreadMs));
          while (closed < due) {
            const ws = sockets[closed++];
            if (ws && ws.getUserData().open) t.closeSocket(ws, CLOSE.GOING_AWAY);
          }
          if (closed >= sockets.length) resolve();
          else setTimeout(tick, Math.min(50, Math.max(1, spreadMs / sockets.length)));
        };
        tick();
      });
      // In-flight publish requests finish (bounded by the rest of the window
      // plus 4 s). Each one ends on its own within httpBodyTimeoutMs plus the
      // broker's answer: an answer, a 413 or 408, or its client going away
      // all release it (transport/api-route.ts).
      const deadline = t0 + windowMs + 4000;
      while (t.inflightRequests() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const unfinished = t.inflightRequests();
      if (unfinished > 0) log.warn({ requests: unfinished }, 'drain deadline passed with publish API requests in flight: cutting them');
      t.closePublicListener();
      t.stopTimers();
      presence?.stop();
      control.stop();
      // The closed connections' presence removals (their `leave`s) go out before the broker closes.
      await presence?.settle();
      // Their channels are let go of (vacated where this was the last node); then this node leaves the liveness list.
      await occupancy?.settle(5000);
      await occupancy?.stop(true);
      // Requests in flight finish (the queue keeps the rest: in Redis for the other nodes; in memory it ends here).
      await deliverer?.stop();
      await broker.close();
      t.closeAdminListener();
      log.info({ closed }, 'drained');
    },
  };
}
