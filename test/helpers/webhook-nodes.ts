/**
 * Gateway nodes that send webhooks to one test receiver: the receiver (see
 * webhook-receiver.ts) and presence-test nodes (chat:* with presence and
 * join/leave, room:* with presence, plain:* with neither) on the embedded
 * broker or one redis-server, all with the same webhook settings. More nodes
 * can join the same broker (`startNode`), e.g. after one was killed.
 */
import type { GatewayProcess } from './gateway.js';
import { startNodes, untilReadyz } from './multinode.js';
import { PresenceNodes, presenceEnv, type PresenceBackend, type PresenceClaims, type PresenceClient } from './presence.js';
import { WebhookReceiver, webhookEnv } from './webhook-receiver.js';

export class WebhookNodes {
  readonly n: PresenceNodes;
  #receiver: WebhookReceiver | undefined;
  #env: Record<string, string> = {};

  constructor(readonly kind: PresenceBackend) {
    this.n = new PresenceNodes(kind);
  }

  /** Starts the receiver, then one node per id (one only on the embedded broker) with `extra` settings on top. */
  async start(ids: readonly string[], o: { ttl?: number; extra?: Record<string, string> } = {}): Promise<void> {
    this.#receiver = await WebhookReceiver.start();
    this.#env = { ...presenceEnv({ ttl: o.ttl ?? 30 }), ...webhookEnv(this.#receiver, o.extra ?? {}) };
    await this.n.start(ids, this.#env);
  }

  get receiver(): WebhookReceiver {
    if (!this.#receiver) throw new Error('the webhook receiver did not start');
    return this.#receiver;
  }

  node(i: number): GatewayProcess {
    return this.n.node(i);
  }

  /** Starts one more node on the same broker with the same settings, ready. */
  async startNode(id: string): Promise<GatewayProcess> {
    const [gw] = await startNodes([id], { ...this.#env, ...this.n.brokerEnv() }, this.n.group.nodes);
    if (!gw) throw new Error(`node ${id} did not start`);
    await untilReadyz(gw, 200, 60_000);
    return gw;
  }

  open(gw: GatewayProcess, c: PresenceClaims): Promise<PresenceClient> {
    return this.n.open(gw, c);
  }

  async stop(): Promise<void> {
    await this.n.stop();
    await this.#receiver?.stop();
  }
}
