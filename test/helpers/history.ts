/**
 * Helpers for history and recovery tests: a WebSocket client that keeps every
 * frame with its `offset` and `epoch` (the multinode Subscriber keeps only
 * `data`), publish calls that return the parsed answer, and the gateway and
 * Redis set-up shared by the history-*.test.ts files.
 */
import WebSocket from 'ws';
import type { Frame } from './client.js';
import { token } from './client.js';
import { TEST_API_KEY, startGateway, type GatewayProcess } from './gateway.js';
import { untilReadyz } from './multinode.js';
import { startRedis, type RedisServer } from './redis.js';

export type BrokerKind = 'memory' | 'redis';
export const BROKERS: readonly BrokerKind[] = ['memory', 'redis'];

export interface MessageFrame {
  readonly type: 'message';
  readonly channel: string;
  readonly offset?: number;
  readonly epoch?: string;
  readonly data: unknown;
}

export interface Position {
  readonly offset: number;
  readonly epoch: string;
}

/**
 * A client that records every frame in arrival order. Waits are on events
 * (every frame and the close re-check the condition), bounded by a hang guard.
 */
export class HistoryClient {
  /** Every frame received, in order (welcome, replies, messages). */
  readonly frames: Frame[] = [];
  readonly replies = new Map<number, Frame>();
  closeInfo: { code: number; reason: string } | undefined;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly waiters = new Set<() => void>();
  private nextId = 1;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      });
    });
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      this.frames.push(f);
      if (f.type === 'reply') this.replies.set(Number(f.id), f);
      this.wake();
    });
  }

  static async open(url: string, o: { user?: string; channels?: readonly string[]; publish?: readonly string[] } = {}): Promise<HistoryClient> {
    const jwt = await token({ sub: o.user ?? 'h-user', channels: o.channels ?? ['h:*', 'p:*'], publish: o.publish ?? [] });
    const ws = new WebSocket(url, ['pubgate.v1', `bearer.${jwt}`], { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    const c = new HistoryClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
    });
    ws.on('error', () => undefined); // a reset after close is reported through `closed`
    await c.until(() => c.frames.some((f) => f.type === 'welcome'), 'welcome');
    return c;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once `cond` holds (checked now, after every frame and at the close). */
  until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        const closed = this.closeInfo ? `; socket closed ${this.closeInfo.code} ${this.closeInfo.reason}` : '';
        reject(new Error(`${what}: not within ${timeoutMs} ms${closed}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  /** Sends a frame with a fresh id and resolves with its reply (fails if the socket closes first). */
  async request(frame: Record<string, unknown>, timeoutMs = 30_000): Promise<Frame> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ ...frame, id }));
    await this.until(() => this.replies.has(id) || this.closeInfo !== undefined, `reply to ${String(frame.type)} ${id}`, timeoutMs);
    const reply = this.replies.get(id);
    if (!reply) throw new Error(`socket closed ${this.closeInfo?.code ?? '?'} before the reply to ${String(frame.type)} ${id}`);
    return reply;
  }

  /** Sends a frame with a fresh id without waiting; returns the id. */
  sendRequest(frame: Record<string, unknown>): number {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ ...frame, id }));
    return id;
  }

  /** Subscribes (with `since` when given); returns the reply, which must not be an error. */
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

  /** 'open' when a ping frame is answered on this very connection, otherwise how it ended. */
  async alive(): Promise<string> {
    if (this.closeInfo !== undefined || this.ws.readyState !== WebSocket.OPEN) return `closed ${this.closeInfo?.code ?? `readyState ${this.ws.readyState}`}`;
    try {
      const r = await this.request({ type: 'ping' }, 10_000);
      return r.error === undefined ? 'open' : `error ${JSON.stringify(r.error)}`;
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    await this.closed;
  }

  /** Drops the TCP connection without a close handshake. */
  async terminate(): Promise<void> {
    this.ws.terminate();
    await this.closed;
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
 * One gateway on the given broker (Redis started here for 'redis'), ready.
 * `stop` ends both; safe when start failed half-way.
 */
export interface HistorySetup {
  gw: GatewayProcess;
  redis: RedisServer | undefined;
  stop(): Promise<void>;
}

export async function startHistoryGateway(kind: BrokerKind, env: Record<string, string>): Promise<HistorySetup> {
  let redis: RedisServer | undefined;
  if (kind === 'redis') redis = await startRedis();
  let gw: GatewayProcess;
  try {
    gw = await startGateway({ PUBGATE_HISTORY_CHANNELS: 'h:*', ...env, ...(redis ? { PUBGATE_REDIS_URL: redis.url } : {}) });
  } catch (e) {
    await redis?.stop();
    throw e;
  }
  const setup: HistorySetup = {
    gw,
    redis,
    async stop() {
      await gw.stop();
      await redis?.stop();
    },
  };
  try {
    await untilReadyz(gw, 200);
  } catch (e) {
    await setup.stop();
    throw e;
  }
  return setup;
}
