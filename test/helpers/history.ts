/**
 * Helpers for history and recovery tests: a WebSocket client that keeps every
 * frame with its `offset` and `epoch` (the multinode Subscriber keeps only
 * `data`), publish calls that return the parsed answer, and the gateway and
 * broker set-up shared by the single-node history-*.test.ts files.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { MessageFrame, SinceOffset as Position } from '../../src/protocol/frames.js';
import type { Frame } from './client.js';
import { RecordingClient } from './recording-client.js';
import { TEST_API_KEY, startGateway, type GatewayProcess } from './gateway.js';
import { untilReadyz } from './multinode.js';
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from './redis.js';

/** 'valkey': the Redis broker on a valkey-server (Valkey 8). */
export type BrokerKind = 'memory' | 'redis' | 'valkey' | 'redis-cluster';
export const BROKERS: readonly BrokerKind[] = ['memory', 'redis'];
/** BROKERS and a real 3-master Redis Cluster (slower to start: see setupTimeoutMs). */
export const BROKERS_AND_CLUSTER: readonly BrokerKind[] = [...BROKERS, 'redis-cluster'];

/** A hang guard for startHistoryGateway (a Redis Cluster takes a while to form on a loaded machine). */
function setupTimeoutMs(kind: BrokerKind): number {
  return kind === 'redis-cluster' ? 180_000 : 60_000;
}

/** A message frame and a channel position (`since`) as the gateway defines them. */
export type { MessageFrame, SinceOffset as Position } from '../../src/protocol/frames.js';

export interface HistoryClaims {
  readonly user?: string;
  readonly channels?: readonly string[];
  readonly publish?: readonly string[];
}

/**
 * A client that records every frame in arrival order. Waits are on events
 * (every frame and the close re-check the condition), bounded by a hang guard.
 */
export class HistoryClient extends RecordingClient {
  /** Every frame received, in order (welcome, replies, messages). */
  readonly frames: Frame[] = [];

  protected onFrame(f: Frame): void {
    this.frames.push(f);
  }

  static open(url: string, o: HistoryClaims = {}): Promise<HistoryClient> {
    const claims = { user: o.user ?? 'h-user', channels: o.channels ?? ['h:*', 'p:*'], publish: o.publish ?? [] };
    return RecordingClient.connect(url, claims, (ws) => new HistoryClient(ws));
  }

  async subscribe(channel: string, since?: Position): Promise<Frame> {
    const r = await this.request(since ? { type: 'subscribe', channel, since } : { type: 'subscribe', channel });
    if (r.error !== undefined) throw new Error(`subscribe ${channel} failed: ${JSON.stringify(r.error)}`);
    return r;
  }

  /** Message frames of `channel`, in arrival order. */
  messages(channel: string): MessageFrame[] {
    return this.frames.filter((f): f is Frame & MessageFrame => f.type === 'message' && f.channel === channel);
  }

  offsets(channel: string): number[] {
    return this.messages(channel).map((m) => Number(m.offset));
  }

  /** The position of the last message received on `channel`. */
  last(channel: string): Position {
    const m = this.messages(channel).at(-1);
    if (!m || m.offset === undefined || m.epoch === undefined) throw new Error(`no history message received on ${channel}`);
    return { offset: m.offset, epoch: m.epoch };
  }

  /** Waits until a message with `offset` (or beyond) arrived on `channel`. */
  untilOffset(channel: string, offset: number, timeoutMs = 30_000): Promise<void> {
    return this.until(
      () => this.messages(channel).some((m) => Number(m.offset) >= offset),
      `message at offset ${offset} on ${channel} (last: ${String(this.messages(channel).at(-1)?.offset)})`,
      timeoutMs,
    );
  }

  /** Waits until a message whose data satisfies `pred` arrived on `channel`. */
  untilData(channel: string, pred: (data: unknown) => boolean, timeoutMs = 30_000): Promise<MessageFrame> {
    let found: MessageFrame | undefined;
    return this.until(() => (found = this.messages(channel).find((m) => pred(m.data))) !== undefined, `matching message on ${channel}`, timeoutMs).then(() => found!);
  }
}

/** Ends every client (never throws, never waits on a dead server), then empties the list. */
export async function closeClients(clients: HistoryClient[]): Promise<void> {
  await Promise.allSettled(clients.splice(0).map((c) => c.terminate()));
}

async function post(gw: GatewayProcess, path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gw.http}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed };
}

/** POST /v1/publish; returns status and parsed body. */
export function publishH(gw: GatewayProcess, channel: string, data: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  return post(gw, '/v1/publish', { channel, data });
}

/** POST /v1/publish/batch; returns status and parsed body. */
export function publishBatchH(
  gw: GatewayProcess,
  messages: ReadonlyArray<{ channel: string; data: unknown }>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return post(gw, '/v1/publish/batch', { messages });
}

/** Publishes one message and returns its offset (fails unless 200 with an offset). */
export async function publishOffset(gw: GatewayProcess, channel: string, data: unknown): Promise<number> {
  const r = await publishH(gw, channel, data);
  if (r.status !== 200 || typeof r.body.offset !== 'number') throw new Error(`publish to ${channel}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.offset;
}

/** Publishes `datas` in one batch and returns their offsets (fails unless 200 with an offset each). */
export async function publishBatchOffsets(gw: GatewayProcess, channel: string, datas: readonly unknown[]): Promise<number[]> {
  const r = await publishBatchH(gw, datas.map((data) => ({ channel, data })));
  const results = r.body.results as Array<{ offset?: number }> | undefined;
  if (r.status !== 200 || !results || results.some((x) => typeof x.offset !== 'number')) {
    throw new Error(`batch to ${channel}: ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
  }
  return results.map((x) => x.offset!);
}

/** [from, from+1, ..., to] */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

/**
 * One gateway on the given broker (Redis or a Redis Cluster started here), ready.
 * `stop` ends both; safe when start failed half-way.
 */
interface HistorySetup {
  gw: GatewayProcess;
  redis: RedisServer | undefined;
  cluster: RedisCluster | undefined;
  stop(): Promise<void>;
}

async function startHistoryGateway(kind: BrokerKind, env: Record<string, string>): Promise<HistorySetup> {
  let redis: RedisServer | undefined;
  let cluster: RedisCluster | undefined;
  if (kind === 'redis') redis = await startRedis();
  if (kind === 'valkey') redis = await startRedis({ binary: 'valkey-server' });
  if (kind === 'redis-cluster') cluster = await startRedisCluster();
  const brokerEnv: Record<string, string> = redis
    ? { PUBGATE_REDIS_URL: redis.url }
    : cluster
      ? { PUBGATE_REDIS_CLUSTER: cluster.seeds.join(',') }
      : {};
  let gw: GatewayProcess;
  try {
    gw = await startGateway({ PUBGATE_HISTORY_CHANNELS: 'h:*', ...env, ...brokerEnv });
  } catch (e) {
    await redis?.stop();
    await cluster?.stop();
    throw e;
  }
  const setup: HistorySetup = {
    gw,
    redis,
    cluster,
    async stop() {
      await gw.stop();
      await redis?.stop();
      await cluster?.stop();
    },
  };
  try {
    await untilReadyz(gw, 200, cluster ? 60_000 : 30_000);
  } catch (e) {
    await setup.stop();
    throw e;
  }
  return setup;
}

/**
 * For a describe block: one gateway with `env` on a fresh `kind` broker,
 * started before all its tests and stopped (with the broker) after them.
 * `open` connects a HistoryClient to it; those are closed after each test.
 */
export function useHistoryGateway(
  kind: BrokerKind,
  env: Record<string, string>,
): { gw(): GatewayProcess; open(o?: HistoryClaims): Promise<HistoryClient> } {
  let setup: HistorySetup | undefined;
  const clients: HistoryClient[] = [];
  const gw = (): GatewayProcess => {
    if (!setup) throw new Error('gateway did not start');
    return setup.gw;
  };
  beforeAll(async () => {
    setup = await startHistoryGateway(kind, env);
  }, setupTimeoutMs(kind));
  afterEach(async () => {
    await closeClients(clients);
  });
  afterAll(async () => {
    await setup?.stop();
  });
  return {
    gw,
    async open(o = {}) {
      const c = await HistoryClient.open(gw().url, o);
      clients.push(c);
      return c;
    },
  };
}
