/**
 * Prometheus metrics (prom-client), exposed as domain verbs so no other module
 * imports prom-client. Label values come from fixed sets only (error codes,
 * close codes, endpoint names): never channel or user names.
 */
import type { AdminEndpoint } from '../admin/admin-api.js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BrokerStatus } from '../broker/broker.js';
import { CLOSE } from '../protocol/close-codes.js';
import { WEBHOOK_EVENT_NAMES, type WebhookEventName } from '../webhooks/events.js';

export type HandshakeResult = 'accepted' | 'rejected';
export type ApiEndpoint = 'publish' | 'batch' | 'disconnect' | 'subscribe' | 'unsubscribe' | 'presence' | 'presence_stats' | 'history' | 'channels' | 'other';

/** Server-side subscription requests (POST /v1/subscribe, /v1/unsubscribe), as metric labels. */
export type ControlOp = 'subscribe' | 'unsubscribe';
/** A request to every node: a server-side subscription change, or a query of the nodes' channel counts (Pusher HTTP API). */
export type ControlKind = ControlOp | 'query';
/** How a request to every node ended on the node that asked: `failed` when a node answered that it could not apply it. */
export type ControlResult = 'ok' | 'failed' | 'timeout' | 'unavailable' | 'overloaded';
/** What a server-side subscription did to one connection. */
export type ServerSubResult = 'subscribed' | 'unsubscribed' | 'limit_exceeded' | 'failed';

/** Presence store operations, as metric labels. */
export type PresenceOp = 'add' | 'remove' | 'renew' | 'resync' | 'presence' | 'stats';

/** The two backend proxies (contract 1.1, "Subscription tokens and the proxies"). */
export type ProxyKind = 'connect' | 'subscribe';

/**
 * How a proxy call ended, a closed set: `allow` / `deny` (the backend's
 * decision), `timeout`, `error` (no HTTP answer: refused, reset, DNS),
 * `bad_status` (a status other than 200 and the refusals), `bad_response`
 * (not JSON, wrong types, over the body limit), `overloaded` (the node's
 * proxyConcurrency reached: no call made), `aborted` (the client went away
 * while the connect proxy was asked).
 */
export const PROXY_RESULTS = ['allow', 'deny', 'timeout', 'error', 'bad_status', 'bad_response', 'overloaded', 'aborted'] as const;
export type ProxyResult = (typeof PROXY_RESULTS)[number];

/**
 * What became of webhook events: `delivered` (a receiver's 2xx), `dropped`
 * (the queue bound PUBGATE_WEBHOOK_MAX_QUEUE pushed them out), `expired`
 * (PUBGATE_WEBHOOK_RETRY_SECONDS used up while failing).
 */
export const WEBHOOK_EVENT_RESULTS = ['delivered', 'dropped', 'expired'] as const;
export type WebhookEventResult = (typeof WEBHOOK_EVENT_RESULTS)[number];

/**
 * How one webhook request ended: `ok` (2xx), `status` (another status),
 * `timeout` (no whole answer within 5 s), `error` (no answer: refused, reset, DNS).
 */
export const WEBHOOK_REQUEST_RESULTS = ['ok', 'status', 'timeout', 'error'] as const;
export type WebhookRequestResult = (typeof WEBHOOK_REQUEST_RESULTS)[number];

/** The `transport` label of the connection metrics (`pusher` comes with the Pusher mode). */
export type ConnectionTransport = 'ws' | 'sse' | 'pusher';

export interface Metrics {
  /** A connection opened: `ws` (WebSocket) or `sse` (Server-Sent Events stream). */
  connectionOpened(transport: ConnectionTransport): void;
  connectionClosed(code: number, transport: ConnectionTransport): void;
  handshake(result: HandshakeResult, reason: string): void;
  /** A refused handshake by its fine reason (a closed set: transport/admission.ts HANDSHAKE_REJECT_REASONS). */
  handshakeRejection(reason: string): void;
  /** A handshake token checked by the verifier: `ok` or the error code it was refused with. */
  tokenVerified(result: 'ok' | 'unauthorized' | 'unavailable' | 'internal'): void;
  subscriptionsChanged(delta: number): void;
  channelsChanged(delta: number): void;
  published(count: number): void;
  delivered(count: number): void;
  dropped(reason: 'slow_consumer' | 'closed', count: number): void;
  slowConsumerClosed(): void;
  clientFrame(type: string): void;
  frameRejected(code: string): void;
  apiRequest(endpoint: ApiEndpoint, status: number, seconds: number): void;
  /** The client went away before its API request was answered: while its body was arriving, or after. */
  apiAborted(endpoint: ApiEndpoint, phase: 'body' | 'response'): void;
  /** Samples the API requests in flight (reading a body or being answered) at each scrape. */
  observeApiInflight(count: () => number): void;
  /** An admin console request answered (transport/admin-route.ts), by endpoint (admin/admin-api.ts ADMIN_ENDPOINTS) and HTTP status. */
  adminRequest(endpoint: AdminEndpoint, status: number): void;
  /** A Pusher HTTP API answer (pusher/http-route.ts): `result` is `ok` or the reject reason. */
  pusherApiRequest(endpoint: string, result: string): void;
  brokerStatus(status: BrokerStatus): void;
  brokerReconnect(): void;
  brokerPublishError(reason: string): void;
  /** Samples the broker's confirmed channel count at each scrape. */
  observeBrokerChannels(count: () => number): void;
  /** Samples slow consumers and the largest send buffer at each scrape. */
  observeSendBuffers(sample: () => { slow: number; maxBufferedBytes: number }): void;
  /** The broker resubscribed after losing its subscriptions: messages may have been missed. */
  brokerGap(): void;
  /** A subscribe with `since`: recovered (true), not recovered (false) or failed (undefined); messages replayed. */
  recovery(recovered: boolean | undefined, replayed: number): void;
  /** A message that one subscribed connection on this node did not receive (`exclude`, `echo:false`). */
  excludedDelivery(): void;
  /** A subscribe with `rewind`: done (true) or failed (false); messages replayed. */
  rewind(ok: boolean, replayed: number): void;
  /** A publish to a history channel failed (not appended, not published). */
  historyAppendError(): void;
  /** A publish whose idempotency key was already accepted for its channel: answered with the first answer, not published. */
  idempotentHit(): void;
  brokerProbe(rttSec: number | undefined): void;
  tokenRefreshed(ok: boolean): void;
  /** Samples the presence entries this node holds (its subscribed connections on presence channels) at each scrape. */
  observePresenceEntries(count: () => number): void;
  /** One presence store operation: its result and how long it took. */
  presenceOp(op: PresenceOp, ok: boolean, seconds: number): void;
  /** A join or leave frame handed to `deliveries` subscriber sockets on this node. */
  presenceFrame(type: 'join' | 'leave', deliveries: number): void;
  /** This node swept the expired leases of dead nodes: `leases` node leases and the `entries` they held. */
  presenceLeasesExpired(leases: number, entries: number): void;
  /** One cluster-wide occupancy call (occupancy/occupancy.ts): take or let go of a channel, renew this node's liveness, sweep a dead node. */
  occupancyOp(op: 'add' | 'remove' | 'renew' | 'sweep', ok: boolean): void;
  /** This node swept a dead node's channel list (`channels` channels). */
  nodeSwept(channels: number): void;
  /** Server-side subscriptions changed on `n` connections: at connect (`subs`) or through the API. */
  serverSubscription(source: 'connect' | 'api', result: ServerSubResult, n?: number): void;
  /** A request to every node ended on this (the asking) node, after `seconds`. */
  controlRequest(op: ControlKind, result: ControlResult, seconds: number): void;
  /** Samples the requests to every node this node waits on, at each scrape. */
  observeControlPending(count: () => number): void;
  /** An answer to one of this node's requests: `ok`, `error` (that node could not apply it), or `late` (no request waits for it any more). */
  controlAck(result: 'ok' | 'error' | 'late'): void;
  /** This node applied a request from any node (and answered `ok` or `error`). */
  controlApplied(op: ControlKind, ok: boolean): void;
  /** The live nodes in the node registry, at this node's last read. */
  clusterNodes(n: number): void;
  /** One proxy call's outcome, with its duration when a request was made (none for `overloaded`). */
  proxyRequest(proxy: ProxyKind, result: ProxyResult, seconds: number | undefined): void;
  /** A proxy call started (+1) or ended (-1). */
  proxyInFlight(proxy: ProxyKind, delta: 1 | -1): void;
  /** `n` webhook events named `name` were delivered, dropped by the queue bound, or expired. */
  webhookEvents(name: WebhookEventName, result: WebhookEventResult, n: number): void;
  /** The webhook queue's size (events, cluster-wide) at this node's last read. */
  webhookQueueEvents(n: number): void;
  /** One webhook event acknowledged by the receiver `seconds` after it happened (its time_ms). */
  webhookDelivered(seconds: number): void;
  /** One webhook request ended. */
  webhookRequest(result: WebhookRequestResult): void;
  render(): Promise<string>;
  readonly contentType: string;
}

/**
 * Close codes become label values only from a fixed set: the catalog, plus
 * 1005 (no code) and 1006 (no close frame). Anything else a client sends is
 * "other", so clients cannot grow the label set.
 */
function closeCodeLabel(code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : 'other';
}
const KNOWN_CLOSE_CODES: ReadonlySet<number> = new Set([...Object.values(CLOSE), 1005, 1006]);

export function createMetrics(nodeId: string): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels({ node: nodeId });
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });

  const connections = new Gauge({ name: 'pubgate_connections', help: 'Open connections, by transport (ws, sse)', labelNames: ['transport'], registers: [registry] });
  // Both series from the start (0): dashboards list nodes by this metric, and a sum has both terms.
  for (const transport of ['ws', 'sse'] as const) connections.set({ transport }, 0);
  const handshakes = new Counter({
    name: 'pubgate_handshakes_total',
    help: 'WebSocket upgrades by result and reason (the error code, or "ok")',
    labelNames: ['result', 'reason'],
    registers: [registry],
  });
  const handshakeRejections = new Counter({
    name: 'pubgate_handshake_rejections_total',
    help: 'Refused WebSocket upgrades by fine reason (duplicate_header, ip_rate, bad_signature, ...)',
    labelNames: ['reason'],
    registers: [registry],
  });
  const verifications = new Counter({
    name: 'pubgate_handshake_verifications_total',
    help: 'Upgrade tokens checked by the verifier (signature and claims), by result',
    labelNames: ['result'],
    registers: [registry],
  });
  const subscriptions = new Gauge({ name: 'pubgate_subscriptions', help: 'Channel subscriptions on this node', registers: [registry] });
  const channels = new Gauge({ name: 'pubgate_channels', help: 'Channels with at least one local subscriber', registers: [registry] });
  const published = new Counter({ name: 'pubgate_messages_published_total', help: 'Messages accepted for publishing on this node', registers: [registry] });
  const delivered = new Counter({ name: 'pubgate_messages_delivered_total', help: 'Messages handed to subscriber sockets (one per subscriber)', registers: [registry] });
  const dropped = new Counter({
    name: 'pubgate_messages_dropped_total',
    help: 'Messages not delivered to a subscriber, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  const slowCloses = new Counter({ name: 'pubgate_slow_consumer_closes_total', help: 'Connections closed with 4008', registers: [registry] });
  const disconnects = new Counter({
    name: 'pubgate_disconnects_total',
    help: 'Connections closed, by close code and transport (ws, sse)',
    labelNames: ['code', 'transport'],
    registers: [registry],
  });
  const frames = new Counter({ name: 'pubgate_client_frames_total', help: 'Client frames received, by type', labelNames: ['type'], registers: [registry] });
  const frameRejects = new Counter({
    name: 'pubgate_client_frames_rejected_total',
    help: 'Client frames answered with an error reply or a close, by error code',
    labelNames: ['code'],
    registers: [registry],
  });
  const apiRequests = new Counter({
    name: 'pubgate_api_requests_total',
    help: 'Publish API requests by endpoint and HTTP status',
    labelNames: ['endpoint', 'status'],
    registers: [registry],
  });
  const apiDuration = new Histogram({
    name: 'pubgate_publish_duration_seconds',
    help: 'Publish API request duration, from request to response',
    labelNames: ['endpoint'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const apiAborts = new Counter({
    name: 'pubgate_api_requests_aborted_total',
    help: 'Publish API requests whose client went away before the answer, by endpoint and phase (body, response)',
    labelNames: ['endpoint', 'phase'],
    registers: [registry],
  });
  const adminRequests = new Counter({
    name: 'pubgate_admin_requests_total',
    help: 'Admin console requests (admin port, /admin/*) by endpoint and HTTP status',
    labelNames: ['endpoint', 'status'],
    registers: [registry],
  });
  const pusherApiRequests = new Counter({
    name: 'pubgate_pusher_api_requests_total',
    help: 'Pusher HTTP API requests by endpoint and result (ok or the reject reason)',
    labelNames: ['endpoint', 'result'],
    registers: [registry],
  });
  let apiInflightSource: () => number = () => 0;
  new Gauge({
    name: 'pubgate_api_requests_in_flight',
    help: 'Publish API requests being read or answered',
    registers: [registry],
    collect() {
      this.set(apiInflightSource());
    },
  });
  const brokerUp = new Gauge({ name: 'pubgate_broker_up', help: '1 when the broker is connected and its subscriptions are live', registers: [registry] });
  const brokerState = new Gauge({ name: 'pubgate_broker_status', help: 'Broker status (1 for the current one)', labelNames: ['status'], registers: [registry] });
  const brokerReconnects = new Counter({ name: 'pubgate_broker_reconnects_total', help: 'Broker reconnections', registers: [registry] });
  const brokerErrors = new Counter({
    name: 'pubgate_broker_publish_errors_total',
    help: 'Publishes the broker did not accept, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  let brokerChannelsSource: () => number = () => 0;
  new Gauge({
    name: 'pubgate_broker_channels',
    help: 'Channels this node is subscribed to at the broker (confirmed)',
    registers: [registry],
    collect() {
      this.set(brokerChannelsSource());
    },
  });
  const probeRtt = new Histogram({
    name: 'pubgate_broker_probe_rtt_seconds',
    help: 'Round trip of the pub/sub self-probe',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const probeLost = new Counter({ name: 'pubgate_broker_probe_lost_total', help: 'Self-probes that did not come back in time', registers: [registry] });
  let sendBufferSource: () => { slow: number; maxBufferedBytes: number } = () => ({ slow: 0, maxBufferedBytes: 0 });
  let lastSample = { slow: 0, maxBufferedBytes: 0 };
  new Gauge({
    name: 'pubgate_slow_consumers',
    help: 'Connections currently over maxBackpressure (skipped by the fan-out)',
    registers: [registry],
    collect() {
      lastSample = sendBufferSource();
      this.set(lastSample.slow);
    },
  });
  new Gauge({
    name: 'pubgate_send_buffer_max_bytes',
    help: 'Largest per-connection send buffer at scrape time',
    registers: [registry],
    collect() {
      this.set(lastSample.maxBufferedBytes);
    },
  });
  const brokerGaps = new Counter({
    name: 'pubgate_broker_gaps_total',
    help: 'Times the broker lost its subscriptions and resubscribed (messages published meanwhile were not received)',
    registers: [registry],
  });
  const recoveries = new Counter({
    name: 'pubgate_recoveries_total',
    help: 'Subscribes with since, by result (recovered, not_recovered, failed)',
    labelNames: ['result'],
    registers: [registry],
  });
  const replayed = new Counter({ name: 'pubgate_recovery_replayed_messages_total', help: 'Messages replayed to recovering subscribers', registers: [registry] });
  const historyErrors = new Counter({ name: 'pubgate_history_append_errors_total', help: 'Publishes to history channels that were not appended', registers: [registry] });
  const idempotentHits = new Counter({
    name: 'pubgate_idempotent_hits_total',
    help: 'Publishes not published again because their idempotency key was already accepted for the channel',
    registers: [registry],
  });
  for (const result of ['recovered', 'not_recovered', 'failed']) recoveries.inc({ result }, 0);
  const rewinds = new Counter({ name: 'pubgate_rewinds_total', help: 'Subscribes with rewind, by result (ok, failed)', labelNames: ['result'], registers: [registry] });
  for (const result of ['ok', 'failed']) rewinds.inc({ result }, 0);
  const excludedDeliveries = new Counter({
    name: 'pubgate_excluded_deliveries_total',
    help: 'Messages not delivered to one subscribed connection of this node because the publish excluded it (exclude, echo:false)',
    registers: [registry],
  });
  const rewound = new Counter({ name: 'pubgate_rewind_messages_total', help: 'Messages delivered by rewinds', registers: [registry] });
  const refreshes = new Counter({ name: 'pubgate_token_refreshes_total', help: 'Token refresh frames by result', labelNames: ['result'], registers: [registry] });

  let presenceEntriesSource: () => number = () => 0;
  new Gauge({
    name: 'pubgate_presence_entries',
    help: 'Presence entries held by this node (its connections subscribed to presence channels)',
    registers: [registry],
    collect() {
      this.set(presenceEntriesSource());
    },
  });
  const presenceOps = new Counter({
    name: 'pubgate_presence_operations_total',
    help: 'Presence store operations by op (add, remove, renew, resync, presence, stats) and result (ok, error)',
    labelNames: ['op', 'result'],
    registers: [registry],
  });
  const presenceOpSeconds = new Histogram({
    name: 'pubgate_presence_operation_seconds',
    help: 'Presence store operation latency, by op',
    labelNames: ['op'],
    buckets: [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const occupancyOps = new Counter({
    name: 'pubgate_occupancy_operations_total',
    help: 'Cluster-wide occupancy calls by op (add, remove, renew, sweep) and result (ok, error)',
    labelNames: ['op', 'result'],
    registers: [registry],
  });
  const nodesSwept = new Counter({
    name: 'pubgate_dead_nodes_swept_total',
    help: 'Dead nodes (generations) whose channels this node swept: their presence and occupancy removed',
    registers: [registry],
  });
  const nodesSweptChannels = new Counter({
    name: 'pubgate_dead_node_channels_swept_total',
    help: 'Channels swept in the lists of dead nodes',
    registers: [registry],
  });
  const presenceFrames = new Counter({
    name: 'pubgate_presence_frames_total',
    help: 'join and leave frames handed to subscriber sockets on this node, by type',
    labelNames: ['type'],
    registers: [registry],
  });
  const presenceLeases = new Counter({
    name: 'pubgate_presence_leases_expired_total',
    help: 'Presence leases of dead nodes swept by this node (one per node and channel)',
    registers: [registry],
  });
  const presenceExpiredEntries = new Counter({
    name: 'pubgate_presence_entries_expired_total',
    help: 'Presence entries removed by this node because their node stopped renewing its lease',
    registers: [registry],
  });
  const serverSubs = new Counter({
    name: 'pubgate_server_subscriptions_total',
    help: 'Server-side subscription changes on connections of this node, by source (connect, api) and result',
    labelNames: ['source', 'result'],
    registers: [registry],
  });
  const controlRequests = new Counter({
    name: 'pubgate_control_requests_total',
    help: 'Requests to every node (POST /v1/subscribe, /v1/unsubscribe, Pusher channel count queries) asked by this node, by op and result',
    labelNames: ['op', 'result'],
    registers: [registry],
  });
  const controlSeconds = new Histogram({
    name: 'pubgate_control_request_duration_seconds',
    help: 'Requests to every node: from sending the request to the last answer (or the failure), by op',
    labelNames: ['op'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  let controlPendingSource: () => number = () => 0;
  new Gauge({
    name: 'pubgate_control_requests_pending',
    help: 'Requests to every node this node is waiting on',
    registers: [registry],
    collect() {
      this.set(controlPendingSource());
    },
  });
  const controlAcks = new Counter({
    name: 'pubgate_control_acks_total',
    help: 'Answers received to this node\'s requests to every node, by result (ok, error, late)',
    labelNames: ['result'],
    registers: [registry],
  });
  const controlApplied = new Counter({
    name: 'pubgate_control_applied_total',
    help: 'Requests from any node applied by this node, by op and result (ok, error)',
    labelNames: ['op', 'result'],
    registers: [registry],
  });
  const clusterNodes = new Gauge({ name: 'pubgate_cluster_nodes', help: 'Live nodes in the node registry at this node\'s last read', registers: [registry] });
  for (const op of ['subscribe', 'unsubscribe', 'query']) {
    for (const result of ['ok', 'failed', 'timeout', 'unavailable', 'overloaded']) controlRequests.inc({ op, result }, 0);
    for (const result of ['ok', 'error']) controlApplied.inc({ op, result }, 0);
  }
  for (const result of ['ok', 'error', 'late']) controlAcks.inc({ result }, 0);
  for (const type of ['join', 'leave']) presenceFrames.inc({ type }, 0);
  // Every op and result from the start, so an error ratio and the dashboard have a series before the first error.
  for (const op of ['add', 'remove', 'renew', 'resync', 'presence', 'stats']) for (const result of ['ok', 'error']) presenceOps.inc({ op, result }, 0);

  const proxyRequests = new Counter({
    name: 'pubgate_proxy_requests_total',
    help: 'Connect and subscribe proxy calls by proxy and result (allow, deny, timeout, error, bad_status, bad_response, overloaded, aborted)',
    labelNames: ['proxy', 'result'],
    registers: [registry],
  });
  const proxySeconds = new Histogram({
    name: 'pubgate_proxy_duration_seconds',
    help: 'Proxy call duration, from the request to the whole answer read (calls refused as overloaded are not observed)',
    labelNames: ['proxy'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const proxyInFlight = new Gauge({
    name: 'pubgate_proxy_in_flight',
    help: 'Proxy calls in flight on this node, by proxy (both together at most PUBGATE_PROXY_CONCURRENCY)',
    labelNames: ['proxy'],
    registers: [registry],
  });
  // Every proxy and result from the start, so error ratios and the dashboard have a series before the first call.
  for (const proxy of ['connect', 'subscribe'] as const) {
    proxyInFlight.set({ proxy }, 0);
    for (const result of PROXY_RESULTS) proxyRequests.inc({ proxy, result }, 0);
  }

  const webhookEvents = new Counter({
    name: 'pubgate_webhook_events_total',
    help: 'Webhook events by name and result (delivered, dropped by the queue bound, expired after the retry window)',
    labelNames: ['name', 'result'],
    registers: [registry],
  });
  const webhookQueue = new Gauge({
    name: 'pubgate_webhook_queue_events',
    help: 'Webhook events queued (cluster-wide with Redis) at this node\'s last read',
    registers: [registry],
  });
  const webhookDelivery = new Histogram({
    name: 'pubgate_webhook_delivery_seconds',
    help: 'Webhook events: from the change (the event\'s time_ms) to the receiver\'s 2xx',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [registry],
  });
  const webhookRequests = new Counter({
    name: 'pubgate_webhook_requests_total',
    help: 'Webhook requests sent by this node, by result (ok, status, timeout, error)',
    labelNames: ['result'],
    registers: [registry],
  });
  // Every name, result and request result from the start, so rates and alerts have a series before the first event.
  for (const name of WEBHOOK_EVENT_NAMES) for (const result of WEBHOOK_EVENT_RESULTS) webhookEvents.inc({ name, result }, 0);
  for (const result of WEBHOOK_REQUEST_RESULTS) webhookRequests.inc({ result }, 0);
  webhookQueue.set(0);

  for (const st of ['connecting', 'ready', 'down'] as const) brokerState.set({ status: st }, st === 'connecting' ? 1 : 0);
  brokerUp.set(0);
  dropped.inc({ reason: 'slow_consumer' }, 0);
  handshakes.inc({ result: 'accepted', reason: 'ok' }, 0);
  verifications.inc({ result: 'ok' }, 0);

  return {
    connectionOpened: (transport) => connections.inc({ transport }),
    connectionClosed: (code, transport) => {
      connections.dec({ transport });
      disconnects.inc({ code: closeCodeLabel(code), transport });
    },
    handshake: (result, reason) => handshakes.inc({ result, reason }),
    handshakeRejection: (reason) => handshakeRejections.inc({ reason }),
    tokenVerified: (result) => verifications.inc({ result }),
    subscriptionsChanged: (d) => subscriptions.inc(d),
    channelsChanged: (d) => channels.inc(d),
    published: (n) => published.inc(n),
    delivered: (n) => {
      if (n > 0) delivered.inc(n);
    },
    dropped: (reason, n) => dropped.inc({ reason }, n),
    slowConsumerClosed: () => slowCloses.inc(),
    clientFrame: (type) => frames.inc({ type }),
    frameRejected: (code) => frameRejects.inc({ code }),
    apiRequest: (endpoint, status, seconds) => {
      apiRequests.inc({ endpoint, status: String(status) });
      apiDuration.observe({ endpoint }, seconds);
    },
    apiAborted: (endpoint, phase) => apiAborts.inc({ endpoint, phase }),
    observeApiInflight: (count) => {
      apiInflightSource = count;
    },
    adminRequest: (endpoint, status) => adminRequests.inc({ endpoint, status: String(status) }),
    pusherApiRequest: (endpoint, result) => pusherApiRequests.inc({ endpoint, result }),
    brokerStatus: (status) => {
      brokerUp.set(status === 'ready' ? 1 : 0);
      for (const st of ['connecting', 'ready', 'down'] as const) brokerState.set({ status: st }, st === status ? 1 : 0);
    },
    brokerReconnect: () => brokerReconnects.inc(),
    brokerPublishError: (reason) => brokerErrors.inc({ reason }),
    observeBrokerChannels: (count) => {
      brokerChannelsSource = count;
    },
    brokerProbe: (rtt) => {
      if (rtt === undefined) probeLost.inc();
      else probeRtt.observe(rtt);
    },
    observeSendBuffers: (sample) => {
      sendBufferSource = sample;
    },
    brokerGap: () => brokerGaps.inc(),
    recovery: (ok, n) => {
      recoveries.inc({ result: ok === undefined ? 'failed' : ok ? 'recovered' : 'not_recovered' });
      if (n > 0) replayed.inc(n);
    },
    excludedDelivery: () => excludedDeliveries.inc(),
    rewind: (ok, n) => {
      rewinds.inc({ result: ok ? 'ok' : 'failed' });
      if (n > 0) rewound.inc(n);
    },
    historyAppendError: () => historyErrors.inc(),
    idempotentHit: () => idempotentHits.inc(),
    tokenRefreshed: (ok) => refreshes.inc({ result: ok ? 'ok' : 'rejected' }),
    observePresenceEntries: (count) => {
      presenceEntriesSource = count;
    },
    presenceOp: (op, ok, seconds) => {
      presenceOps.inc({ op, result: ok ? 'ok' : 'error' });
      presenceOpSeconds.observe({ op }, seconds);
    },
    presenceFrame: (type, n) => {
      if (n > 0) presenceFrames.inc({ type }, n);
    },
    occupancyOp: (op, ok) => occupancyOps.inc({ op, result: ok ? 'ok' : 'error' }),
    nodeSwept: (channels) => {
      nodesSwept.inc();
      if (channels > 0) nodesSweptChannels.inc(channels);
    },
    presenceLeasesExpired: (leases, entries) => {
      if (leases > 0) presenceLeases.inc(leases);
      if (entries > 0) presenceExpiredEntries.inc(entries);
    },
    serverSubscription: (source, result, n = 1) => {
      if (n > 0) serverSubs.inc({ source, result }, n);
    },
    controlRequest: (op, result, seconds) => {
      controlRequests.inc({ op, result });
      controlSeconds.observe({ op }, seconds);
    },
    observeControlPending: (count) => {
      controlPendingSource = count;
    },
    controlAck: (result) => controlAcks.inc({ result }),
    controlApplied: (op, ok) => controlApplied.inc({ op, result: ok ? 'ok' : 'error' }),
    clusterNodes: (n) => clusterNodes.set(n),
    proxyRequest: (proxy, result, seconds) => {
      proxyRequests.inc({ proxy, result });
      if (seconds !== undefined) proxySeconds.observe({ proxy }, seconds);
    },
    proxyInFlight: (proxy, delta) => proxyInFlight.inc({ proxy }, delta),
    webhookEvents: (name, result, n) => {
      if (n > 0) webhookEvents.inc({ name, result }, n);
    },
    webhookQueueEvents: (n) => webhookQueue.set(n),
    webhookDelivered: (seconds) => webhookDelivery.observe(Math.max(0, seconds)),
    webhookRequest: (result) => webhookRequests.inc({ result }),
    render: () => registry.metrics(),
    contentType: registry.contentType,
  };
}
