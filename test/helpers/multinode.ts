/**
 * Helpers for multi-node tests: several real gateway processes on one Redis
 * (or one Redis Cluster), event-driven subscriber sockets that keep every
 * message per channel, readiness polling with a bounded deadline, and log
 * waits restricted to lines printed after a mark.
 */
import type { Socket } from 'node:net';
import type { Frame } from './client.js';
import { RecordingClient } from './recording-client.js';
import { TEST_API_KEY, startGateway, type GatewayProcess, type LogLine } from './gateway.js';
import { pollUntil, startRedis, startRedisCluster, type RedisCluster, type RedisServer } from './redis.js';

/** Starts one gateway per node id (in parallel), all with `env`. Started ones land in `into` even if another fails. */
export async function startNodes(ids: readonly string[], env: Record<string, string>, into: GatewayProcess[]): Promise<GatewayProcess[]> {
  const results = await Promise.allSettled(ids.map((id) => startGateway({ ...env, PUBGATE_NODE_ID: id })));
  const started: GatewayProcess[] = [];
  for (const r of results) if (r.status === 'fulfilled') started.push(r.value);
  into.push(...started);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return started;
}

/** Stops every gateway (never throws), then empties the list. */
export async function stopNodes(nodes: GatewayProcess[]): Promise<void> {
  await Promise.allSettled(nodes.splice(0).map((n) => n.stop()));
}

/**
 * The gateway nodes of a test file and the broker they share: a fresh
 * redis-server (startOnRedis) or Redis Cluster (startOnCluster), then one
 * node per id on it, each ready. Whatever started is kept here, so `stop`
 * also ends a start that failed half-way.
 */
export class NodeGroup {
  /** The nodes started so far; startNodes(..., group.nodes) adds more that `stop` ends too. */
  readonly nodes: GatewayProcess[] = [];
  #redis: RedisServer | undefined;
  #cluster: RedisCluster | undefined;

  async startOnRedis(ids: readonly string[], env: Record<string, string> = {}): Promise<void> {
    this.#redis = await startRedis();
    await startNodes(ids, { ...env, PUBGATE_REDIS_URL: this.#redis.url }, this.nodes);
    await Promise.all(this.nodes.map((n) => untilReadyz(n, 200)));
  }

  async startOnCluster(ids: readonly string[], env: Record<string, string> = {}): Promise<void> {
    this.#cluster = await startRedisCluster();
    await startNodes(ids, { ...env, PUBGATE_REDIS_CLUSTER: this.#cluster.seeds.join(',') }, this.nodes);
    await Promise.all(this.nodes.map((n) => untilReadyz(n, 200, 60_000)));
  }

  node(i: number): GatewayProcess {
    const n = this.nodes[i];
    if (!n) throw new Error(`gateway ${i} did not start`);
    return n;
  }

  redis(): RedisServer {
    if (!this.#redis) throw new Error('redis-server did not start');
    return this.#redis;
  }

  cluster(): RedisCluster {
    if (!this.#cluster) throw new Error('the Redis cluster did not start');
    return this.#cluster;
  }

  /** Stops every node, then the broker. */
  async stop(): Promise<void> {
    await stopNodes(this.nodes);
    await this.#redis?.stop();
    await this.#cluster?.stop();
  }
}

export async function readyz(gw: GatewayProcess): Promise<number> {
  return (await fetch(`${gw.admin}/readyz`)).status;
}

export async function healthz(gw: GatewayProcess): Promise<number> {
  return (await fetch(`${gw.admin}/healthz`)).status;
}

/** Polls /readyz until it answers `status`; fails after `deadlineMs`. */
export function untilReadyz(gw: GatewayProcess, status: 200 | 503, deadlineMs = 30_000, what = ''): Promise<void> {
  return pollUntil(async () => (await readyz(gw)) === status, `/readyz ${status} on ${gw.admin}${what ? ` (${what})` : ''}`, deadlineMs);
}

/** Polls /readyz in the background, recording every distinct answer in order, until stopped. */
export function watchReadyz(gw: GatewayProcess): { seen: number[]; stop: () => Promise<number[]> } {
  const seen: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const s = await readyz(gw);
        if (seen[seen.length - 1] !== s) seen.push(s);
      } catch {
        // the admin port is always up; a refused fetch is recorded as 0
        if (seen[seen.length - 1] !== 0) seen.push(0);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  return {
    seen,
    stop: async () => {
      running = false;
      await loop;
      // A poll in flight when stop was called may have been answered before a later change: read once more.
      const last = await readyz(gw).catch(() => 0);
      if (seen[seen.length - 1] !== last) seen.push(last);
      return seen;
    },
  };
}

function post(gw: GatewayProcess, path: string, body: unknown): Promise<Response> {
  return fetch(`${gw.http}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

export function publishOne(gw: GatewayProcess, channel: string, data: unknown): Promise<Response> {
  return post(gw, '/v1/publish', { channel, data });
}

export function publishBatch(gw: GatewayProcess, messages: ReadonlyArray<{ channel: string; data: unknown }>): Promise<Response> {
  return post(gw, '/v1/publish/batch', { messages });
}

export function disconnectUser(gw: GatewayProcess, user: string): Promise<Response> {
  return post(gw, '/v1/disconnect', { user });
}

/** A position in a gateway's log: lines printed from now on. */
export function logMark(gw: GatewayProcess): ReadonlySet<LogLine> {
  return new Set(gw.lines);
}

/** The first line printed after `mark` that matches (past or future). */
export function waitForNewLog(gw: GatewayProcess, mark: ReadonlySet<LogLine>, pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
  return gw.waitForLog((l) => !mark.has(l) && pred(l), timeoutMs);
}

export interface SubscriberOptions {
  readonly user?: string;
  readonly channels?: readonly string[];
  readonly publish?: readonly string[];
}

/**
 * A WebSocket client that keeps every frame it receives: messages per channel
 * in arrival order, replies by id, and the close. Waits are on events (each
 * frame or the close re-evaluates the condition), bounded by a hang guard.
 */
export class Subscriber extends RecordingClient {
  readonly messages = new Map<string, unknown[]>();
  /** Every message frame in arrival order (channel and data). */
  readonly log: Array<{ channel: string; data: unknown }> = [];

  protected onFrame(f: Frame): void {
    if (f.type !== 'message') return;
    const ch = String(f.channel);
    let list = this.messages.get(ch);
    if (!list) this.messages.set(ch, (list = []));
    list.push(f.data);
    this.log.push({ channel: ch, data: f.data });
  }

  static open(url: string, o: SubscriberOptions = {}): Promise<Subscriber> {
    const claims = { user: o.user ?? 'mn-user', channels: o.channels ?? ['mn:*'], publish: o.publish ?? [] };
    return RecordingClient.connect(url, claims, (ws) => new Subscriber(ws));
  }

  async subscribe(...channels: string[]): Promise<void> {
    const replies = await Promise.all(channels.map((channel) => this.request({ type: 'subscribe', channel })));
    for (const [i, r] of replies.entries()) {
      if (r.error !== undefined) throw new Error(`subscribe ${channels[i] ?? ''} failed: ${JSON.stringify(r.error)}`);
    }
  }

  /**
   * Subscribes to every channel with all frames in one TCP write, so the
   * gateway reads them in one go and has every subscribe in flight at once.
   */
  async subscribeBurst(channels: readonly string[]): Promise<void> {
    const sock = (this.ws as unknown as { _socket: Socket })._socket;
    const ids = channels.map(() => this.nextId++);
    sock.cork();
    for (const [i, channel] of channels.entries()) this.ws.send(JSON.stringify({ type: 'subscribe', id: ids[i], channel }));
    sock.uncork();
    await this.until(() => ids.every((id) => this.replies.has(id)) || this.closeInfo !== undefined, `replies to ${channels.length} subscribes`);
    for (const [i, id] of ids.entries()) {
      const r = this.replies.get(id);
      if (!r || r.error !== undefined) throw new Error(`subscribe ${channels[i] ?? ''} failed: ${JSON.stringify(r?.error ?? this.closeInfo)}`);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    const r = await this.request({ type: 'unsubscribe', channel });
    if (r.error !== undefined) throw new Error(`unsubscribe ${channel} failed: ${JSON.stringify(r.error)}`);
  }

  got(channel: string): unknown[] {
    return this.messages.get(channel) ?? [];
  }

  /** Waits until `channel` has received at least `n` messages. */
  untilCount(channel: string, n: number, timeoutMs = 20_000): Promise<void> {
    return this.until(() => this.got(channel).length >= n, `${n} messages on ${channel} (have ${this.got(channel).length})`, timeoutMs);
  }
}

/** Drops every subscriber's connection (never throws, never waits on a dead server), then empties the list. */
export async function closeAll(subs: Subscriber[]): Promise<void> {
  await Promise.allSettled(subs.splice(0).map((s) => s.terminate()));
}

/** [0, 1, ..., n-1] */
export function seq(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * Asserts a publish API answer of 503 `unavailable` with a whole-seconds
 * Retry-After, and returns its body (for a batch: `results` must then list
 * what was accepted, which callers check).
 */
export async function expectUnavailable(res: Response): Promise<{ error?: { code?: string }; results?: unknown[] }> {
  const text = await res.text();
  const where = `${res.status} ${text}`;
  if (res.status !== 503) throw new Error(`expected 503 unavailable, got ${where}`);
  const retryAfter = res.headers.get('retry-after');
  if (retryAfter === null || !/^[1-9][0-9]*$/.test(retryAfter)) throw new Error(`Retry-After is ${String(retryAfter)} on ${where}`);
  const body = JSON.parse(text) as { error?: { code?: string }; results?: unknown[] };
  if (body.error?.code !== 'unavailable') throw new Error(`expected error code unavailable, got ${where}`);
  return body;
}
