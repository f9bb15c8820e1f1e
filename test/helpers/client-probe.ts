/**
 * Drives a @pubgate/client instance in integration tests: records its events
 * and the messages of its subscriptions, and waits on conditions that every
 * event re-checks (bounded by a hang guard, never a sleep); and the set-up the
 * tests of the client against real gateways share (useClientFixture).
 */
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startGateway, type GatewayProcess } from './gateway.js';
import { startRedis, type RedisServer } from './redis.js';
import { startForwarder, type Forwarder } from './tcp-forwarder.js';
import {
  connect,
  type ClientEvents,
  type ConnectOptions,
  type MessageFrame,
  type PubgateClient,
  type SubscribeOptions,
  type Subscription,
} from '../../packages/client/src/index.js';

const EVENT_TYPES: ReadonlyArray<keyof ClientEvents> = ['state', 'connecting', 'connected', 'disconnected', 'closed', 'resubscribed', 'refreshed', 'error'];

export class ClientProbe {
  readonly client: PubgateClient;
  readonly events: Array<{ readonly type: keyof ClientEvents; readonly ev: unknown }> = [];
  /** Messages per channel, in arrival order. */
  readonly messages = new Map<string, MessageFrame[]>();
  readonly #waiters = new Set<() => void>();

  constructor(options: ConnectOptions) {
    // Node 20 has no global WebSocket: the ws package stands in, as the README shows.
    this.client = connect({ WebSocket, ...options });
    for (const type of EVENT_TYPES) {
      this.client.on(type, (ev) => {
        this.events.push({ type, ev });
        this.#wake();
      });
    }
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  of<K extends keyof ClientEvents>(type: K): ClientEvents[K][] {
    return this.events.filter((e) => e.type === type).map((e) => e.ev as ClientEvents[K]);
  }

  subscribe(channel: string, options?: SubscribeOptions): Subscription {
    return this.client.subscribe(
      channel,
      (_data, m) => {
        let list = this.messages.get(channel);
        if (!list) this.messages.set(channel, (list = []));
        list.push(m);
        this.#wake();
      },
      options,
    );
  }

  /** Every event so far, one per line (for assertion messages). */
  trace(): string {
    return this.events.map((e) => `${e.type} ${JSON.stringify(e.ev)}`).join('\n');
  }

  /** Data of every message received on a channel. */
  got(channel: string): unknown[] {
    return (this.messages.get(channel) ?? []).map((m) => m.data);
  }

  /** Resolves once `cond` holds; checked now and after every event and message. */
  until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        const recent = this.events.slice(-8).map((e) => `${e.type} ${JSON.stringify(e.ev)}`).join('\n  ');
        reject(new Error(`${what}: not within ${timeoutMs} ms (state ${this.client.state}); last events:\n  ${recent}`));
      }, timeoutMs);
      this.#waiters.add(check);
    });
  }

  /** Waits until `n` connections have been established in total. */
  connections(n: number, timeoutMs?: number): Promise<void> {
    return this.until(() => this.of('connected').length >= n, `${n} connection(s)`, timeoutMs);
  }

  /** Waits for messages on a channel until `n` arrived. */
  untilCount(channel: string, n: number, timeoutMs?: number): Promise<void> {
    return this.until(() => this.got(channel).length >= n, `${n} message(s) on ${channel} (have ${this.got(channel).length})`, timeoutMs);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

/**
 * For a test file of the client against real gateways: one redis-server for
 * the whole file; the gateways, TCP forwarders and probes started through
 * this are ended after each test (gateways with SIGKILL). Probes reconnect
 * with a short backoff (100 ms to 1 s) unless their options say otherwise.
 */
export function useClientFixture(): {
  redis(): RedisServer;
  gateway(env?: Record<string, string>): Promise<GatewayProcess>;
  forwarder(targetPort?: number): Promise<Forwarder>;
  probe(options: ConnectOptions): ClientProbe;
} {
  let redis: RedisServer | undefined;
  const gateways: GatewayProcess[] = [];
  const probes: ClientProbe[] = [];
  const forwarders: Forwarder[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  }, 60_000);
  afterAll(async () => {
    await redis?.stop();
  });
  afterEach(async () => {
    await Promise.allSettled(probes.splice(0).map((p) => p.close()));
    await Promise.allSettled(gateways.splice(0).map((g) => g.stop('SIGKILL')));
    await Promise.allSettled(forwarders.splice(0).map((f) => f.close()));
  });

  return {
    redis() {
      if (!redis) throw new Error('redis-server did not start');
      return redis;
    },
    async gateway(env = {}) {
      const g = await startGateway(env);
      gateways.push(g);
      return g;
    },
    async forwarder(targetPort) {
      const f = await startForwarder(targetPort);
      forwarders.push(f);
      return f;
    },
    probe(options) {
      const p = new ClientProbe({ backoff: { minMs: 100, maxMs: 1000 }, ...options });
      probes.push(p);
      return p;
    },
  };
}
