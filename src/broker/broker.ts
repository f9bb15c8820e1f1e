/**
 * Cross-node fan-out. The hub talks to a Broker only through this interface;
 * MemoryBroker (one process) and RedisBroker (many nodes) implement it, and
 * test/helpers/broker-contract.ts is the suite both must pass.
 *
 * Payloads are final frame texts: the broker moves strings and never parses them.
 */
import type { Liveness, OccupancyStore } from '../occupancy/store.js';
import type { PresenceStore } from '../presence/store.js';
import type { ClosableSink } from '../webhooks/sink.js';
import type { WebhookQueue } from '../webhooks/queue.js';
import type { History } from './history.js';
import type { Idempotency } from './idempotency.js';

export type BrokerStatus = 'connecting' | 'ready' | 'down';

/**
 * A node-to-node control message. `disconnect` (/v1/disconnect) is fire and
 * forget. `subscribe`/`unsubscribe` (/v1/subscribe, /v1/unsubscribe) are
 * requests: request `id` from node `from`; every node that applied one answers
 * with an `ack` addressed `to` that node (`ok` false when it could not apply it).
 */
export type ControlMessage =
  | { readonly kind: 'disconnect'; readonly user: string }
  | ControlRequest
  | ControlAck
  | ControlQuery
  | ControlAnswer;

export interface ControlRequest {
  readonly kind: 'subscribe' | 'unsubscribe';
  readonly id: string;
  /** The requesting node's instance name (Broker.instance). */
  readonly from: string;
  readonly user: string;
  readonly channel: string;
}

export interface ControlAck {
  readonly kind: 'ack';
  readonly id: string;
  /** The requesting node's instance name. */
  readonly to: string;
  /** The answering node's instance name. */
  readonly node: string;
  readonly ok: boolean;
}

/**
 * A question to every node about its own connections (the Pusher HTTP API's
 * channel counts, `GET /v1/channels`, the admin console): the subscriptions of
 * one Pusher app's channels, or of the native channels (`app` ''), either the
 * channels whose name starts with `prefix`, or the named `channels`. With
 * `top` (native only, with `prefix`), a node lists its `top` channels with the
 * most subscriptions (most first) instead of the first ones in name order.
 * Every node answers with an `answer` addressed `to` the asker.
 */
export interface ControlQuery {
  readonly kind: 'query';
  readonly id: string;
  readonly from: string;
  /** The Pusher app id; '' for the native channels (by their names, the hub's). */
  readonly app: string;
  readonly prefix?: string;
  readonly channels?: readonly string[];
  /** With `prefix` and app '': list the node's `top` (1..MAX_QUERY_TOP) busiest channels, most subscriptions first. */
  readonly top?: number;
}

export interface ControlAnswer {
  readonly kind: 'answer';
  readonly id: string;
  readonly to: string;
  readonly node: string;
  /**
   * [name, subscriptions] of the node's matching channels with subscribers
   * (Pusher names, or native names for app ''), in name order (for `top`:
   * most subscriptions first), at most MAX_ANSWER_CHANNELS (broker/control.ts).
   */
  readonly counts: readonly (readonly [string, number])[];
  /** The node has more matching channels than it listed (those after the last listed name; for `top`, with fewer subscriptions). */
  readonly more: boolean;
}

/**
 * What a node tells the others about itself (the admin console's overview):
 * stored beside its lease in the node registry at each renewal (Redis), or
 * read from memory (the embedded broker).
 */
export interface NodeInfo {
  /** PUBGATE_NODE_ID. */
  readonly id: string;
  readonly version: string;
  /** ISO time the process started. */
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly connections: { readonly total: number; readonly websocket: number; readonly sse: number; readonly pusher: number };
  readonly subscriptions: number;
  readonly channels: number;
  readonly broker: BrokerStatus;
  readonly draining: boolean;
}

/** One live node of the registry with what it last reported (`info` undefined when it reported nothing readable). */
export interface NodeReport {
  readonly instance: string;
  /** As stored: the reader validates it (another node, another version, wrote it). */
  readonly info: unknown;
  /** When it was reported (ms since the epoch; Redis time with Redis). */
  readonly reportedAtMs: number;
}

export interface BrokerHandlers {
  /** A message for a channel this node is subscribed to. Called in publish order per channel. */
  onMessage(channel: string, frame: string): void;
  /** Status transitions ('ready' means connected and every subscription live). */
  onStatus(status: BrokerStatus): void;
  /** A control message published by any node (this one included). */
  onControl(msg: ControlMessage): void;
  /** This node's info, stored with each lease renewal (nodeInfos); absent: none is stored. */
  nodeInfo?(): NodeInfo;
}

export interface Broker {
  readonly kind: 'memory' | 'redis' | 'redis-sentinel' | 'redis-cluster';
  /** This process's name among the nodes (unique per process: the node id and a random suffix). */
  readonly instance: string;
  /** Message history (offsets, epochs, recovery), when the broker was created with history options. */
  readonly history: History | undefined;
  /** Presence (entries, leases, join/leave), when the broker was created with presence options. */
  readonly presence: PresenceStore | undefined;
  /** Cluster-wide occupancy sets (occupied/vacated), when created with webhooks. */
  readonly occupancy?: OccupancyStore | undefined;
  /** Node liveness and channel lists for sweeping dead nodes (Redis, with presence or webhooks). */
  readonly liveness?: Liveness | undefined;
  /** The webhook queue and the sink the event producers report to, when created with webhooks. */
  readonly webhooks?: { readonly queue: WebhookQueue; readonly sink: ClosableSink } | undefined;
  readonly status: BrokerStatus;
  /** Connects; resolves once the first connection attempt settled (the broker may still be 'down'). */
  start(handlers: BrokerHandlers): Promise<void>;
  /**
   * Publishes a frame to every node subscribed to the channel. Resolves once the
   * broker accepted it; rejects with GatewayError('unavailable') when it cannot.
   */
  publish(channel: string, frame: string): Promise<void>;
  /**
   * Publishes a frame unless `idem.key` was already accepted for the channel
   * within its ttl, atomically with the check (see idempotency.ts). Resolves
   * true when it published, false for a repeat; rejects as publish does.
   */
  publishOnce(channel: string, frame: string, idem: Idempotency): Promise<boolean>;
  /** Subscribes this node to a channel; resolves when the broker confirmed it. Idempotent. */
  subscribe(channel: string): Promise<void>;
  /** Releases the channel. Idempotent. */
  unsubscribe(channel: string): Promise<void>;
  /** Sends a control message to every node, this one included. */
  publishControl(msg: ControlMessage): Promise<void>;
  /**
   * The instances of the live nodes sharing this broker, this one included
   * once registered: with Redis, the node registry (each node renews a short
   * lease while its broker is ready); the embedded broker has only this one.
   * Rejects with GatewayError('unavailable') when the broker cannot answer.
   */
  nodes(): Promise<readonly string[]>;
  /**
   * The live nodes (as `nodes()`, at most MAX_NODES, by instance) with the
   * info each last reported (BrokerHandlers.nodeInfo). Rejects as nodes() does.
   */
  nodeInfos?(): Promise<readonly NodeReport[]>;
  /** Channels this node is subscribed to at the broker (for metrics and tests). */
  subscribedCount(): number;
  close(): Promise<void>;
}
