/**
 * Helpers for server-side subscription tests (contract 1.1, "Server-side
 * subscriptions"): a client whose token may carry `subs` and that keeps every
 * frame in arrival order from the first one (so "welcome is first" can be
 * checked), client frames sent the moment the socket opens (before the
 * welcome), and the /v1/subscribe and /v1/unsubscribe calls.
 */
import WebSocket from 'ws';
import { token, type Frame } from './client.js';
import { TEST_API_KEY, type GatewayProcess } from './gateway.js';
import { RecordingClient } from './recording-client.js';

/** feed:* keeps history; chat:* has presence with join/leave; news:* neither. */
export const SUBS_NAMESPACES = [
  { pattern: 'feed:*', history: { size: 100, ttl: 300 } },
  { pattern: 'chat:*', presence: true, joinLeave: true },
] as const;

export function subsEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PUBGATE_NAMESPACES: JSON.stringify(SUBS_NAMESPACES), PUBGATE_PRESENCE_TTL: '4', PUBGATE_LOG_LEVEL: 'info', ...extra };
}

export interface SubsClaims {
  readonly user: string;
  /** The token's `channels` (default none: server-side subscriptions need no permission). */
  readonly channels?: readonly string[];
  /** The token's `subs` claim (left out when undefined). */
  readonly subs?: readonly string[];
  readonly info?: unknown;
}

export interface OpenOptions {
  /** Client frames sent as soon as the socket is open, before the welcome came. */
  readonly early?: ReadonlyArray<Record<string, unknown>>;
  /** Wait for the welcome (default true); false for a connection that must close without one. */
  readonly welcome?: boolean;
}

/** A client that keeps every frame, the welcome included, in arrival order. */
export class SubsClient extends RecordingClient {
  /** Every frame received, in order (the first must be the welcome). */
  readonly all: Frame[] = [];

  private constructor(
    ws: WebSocket,
    readonly user: string,
  ) {
    super(ws);
  }

  protected onFrame(f: Frame): void {
    this.all.push(f);
  }

  static async open(url: string, c: SubsClaims, o: OpenOptions = {}): Promise<SubsClient> {
    const jwt = await token({
      sub: c.user,
      channels: c.channels ?? [],
      publish: [],
      ...(c.subs !== undefined ? { subs: c.subs } : {}),
      ...(c.info !== undefined ? { info: c.info } : {}),
    });
    const ws = new WebSocket(url, ['pubgate.v1', `bearer.${jwt}`], { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    const client = new SubsClient(ws, c.user);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => {
        for (const f of o.early ?? []) client.sendRequest(f);
        resolve();
      });
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
    });
    ws.on('error', (e) => {
      client.lastError = e; // a reset after close is reported through `closed`
    });
    if (o.welcome !== false) await client.until(() => client.welcome !== undefined, `welcome of ${c.user}`);
    return client;
  }

  /** `welcome.subs` (fails without a welcome). */
  get welcomeSubs(): Record<string, { offset?: number; epoch?: string }> | undefined {
    if (!this.welcome) throw new Error(`${this.user} has no welcome`);
    return this.welcome.subs as Record<string, { offset?: number; epoch?: string }> | undefined;
  }

  /** Frames of `type` (on `channel`, when given), in arrival order. */
  of(type: string, channel?: string): Frame[] {
    return this.all.filter((f) => f.type === type && (channel === undefined || f.channel === channel));
  }

  /** Message data on `channel`, in arrival order. */
  data(channel: string): unknown[] {
    return this.of('message', channel).map((f) => f.data);
  }

  /** Waits for a frame matching `pred` (past or future); resolves with the first. */
  async untilFrame(pred: (f: Frame) => boolean, what: string, timeoutMs = 30_000): Promise<Frame> {
    await this.until(() => this.all.some(pred), `${what} at ${this.user}`, timeoutMs);
    return this.all.find(pred)!;
  }

  /** Waits for the message with `data` on `channel`. */
  untilMessage(channel: string, data: unknown, timeoutMs = 30_000): Promise<Frame> {
    const want = JSON.stringify(data);
    return this.untilFrame((f) => f.type === 'message' && f.channel === channel && JSON.stringify(f.data) === want, `message ${want} on ${channel}`, timeoutMs);
  }

  /** The frames after the welcome and before the message `data` on `channel` (which must have come). */
  framesBefore(channel: string, data: unknown): Frame[] {
    const want = JSON.stringify(data);
    const i = this.all.findIndex((f) => f.type === 'message' && f.channel === channel && JSON.stringify(f.data) === want);
    if (i < 0) throw new Error(`${this.user} has no message ${want} on ${channel}`);
    return this.all.slice(0, i);
  }

  async subscribe(channel: string): Promise<Frame> {
    return this.request({ type: 'subscribe', channel });
  }
}

export interface ApiAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly headers: Headers;
}

/** POST /v1/subscribe or /v1/unsubscribe with `body` as given (JSON-encoded unless a string); the API key unless `key` is null. */
export async function serverSub(
  gw: GatewayProcess,
  op: 'subscribe' | 'unsubscribe',
  body: unknown,
  o: { key?: string | null; contentType?: string; method?: string } = {},
): Promise<ApiAnswer> {
  const key = o.key === undefined ? TEST_API_KEY : o.key;
  const res = await fetch(`${gw.http}/v1/${op}`, {
    method: o.method ?? 'POST',
    headers: { 'content-type': o.contentType ?? 'application/json', ...(key !== null ? { authorization: `Bearer ${key}` } : {}) },
    ...(o.method === 'GET' ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** POST /v1/subscribe or /v1/unsubscribe for `user` and `channel`; fails unless 200 `{}`. */
export async function serverSubOk(gw: GatewayProcess, op: 'subscribe' | 'unsubscribe', user: string, channel: string): Promise<void> {
  const r = await serverSub(gw, op, { user, channel });
  if (r.status !== 200 || JSON.stringify(r.body) !== '{}') throw new Error(`/v1/${op} ${user} ${channel} on ${gw.http}: ${r.status} ${JSON.stringify(r.body)}`);
}

/** Ends every client (never throws), then empties the list. */
export async function closeSubsClients(clients: SubsClient[]): Promise<void> {
  await Promise.allSettled(clients.splice(0).map((c) => c.terminate()));
}
