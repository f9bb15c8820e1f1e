/**
 * Helpers for presence and join/leave tests (contract 1.1, "Presence and
 * join/leave"): a client whose token carries an `info` claim and that keeps
 * every frame in arrival order (join/leave included), the presence frames and
 * the HTTP presence API, the expected view of a channel computed from the
 * connections a test holds, and gateway nodes on the memory broker, one
 * redis-server or a 3-master Redis Cluster.
 *
 * Absence is proven with sentinels: after the frame that must not arrive, the
 * test causes one that must (another user's join or leave, a published
 * message), waits for it, and checks the whole sequence.
 */
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import WebSocket from 'ws';
import { token, type Frame } from './client.js';
import { TEST_API_KEY, metric, type GatewayProcess } from './gateway.js';
import { NodeGroup, startNodes, untilReadyz } from './multinode.js';
import { RecordingClient } from './recording-client.js';

export type PresenceBackend = 'memory' | 'redis' | 'redis-cluster';

/** chat:* keeps presence and sends join/leave; room:* keeps presence only; plain:* has neither. */
export const NAMESPACES = [
  { pattern: 'chat:*', presence: true, joinLeave: true },
  { pattern: 'room:*', presence: true },
] as const;

export const ALL_CHANNELS: readonly string[] = ['chat:*', 'room:*', 'plain:*'];

/** Node settings for presence tests: the namespaces above, a short lease, info-level logs (tests keep every line). */
export function presenceEnv(o: { ttl?: number; maxMembers?: number } = {}): Record<string, string> {
  return {
    PUBGATE_NAMESPACES: JSON.stringify(NAMESPACES),
    PUBGATE_PRESENCE_TTL: String(o.ttl ?? 4),
    ...(o.maxMembers !== undefined ? { PUBGATE_PRESENCE_MAX_MEMBERS: String(o.maxMembers) } : {}),
    PUBGATE_LOG_LEVEL: 'info',
  };
}

/** A short unique tag for a test's channels and users. */
export const uid = (): string => randomUUID().slice(0, 8);

export interface PresenceClaims {
  readonly user: string;
  /** Patterns the token allows (default ALL_CHANNELS). */
  readonly channels?: readonly string[];
  /** The token's `info` claim (left out when undefined). */
  readonly info?: unknown;
}

/** A join or leave frame as the contract writes it. */
export interface PresenceEvent {
  readonly type: 'join' | 'leave';
  readonly channel: string;
  readonly user: string;
  readonly info?: unknown;
}

export interface Member {
  readonly user: string;
  readonly info?: unknown;
  readonly conns: number;
}

/** A presence answer without its envelope; members sorted by user. */
export interface PresenceView {
  readonly members: Member[];
  readonly users: number;
  readonly connections: number;
  readonly truncated?: boolean;
}

export function presenceToken(c: PresenceClaims): Promise<string> {
  return token({ sub: c.user, channels: c.channels ?? ALL_CHANNELS, publish: [], ...(c.info !== undefined ? { info: c.info } : {}) });
}

/** Members sorted by user (the contract does not order them). */
export function sortMembers(members: readonly Member[]): Member[] {
  return [...members].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
}

/** The view of a presence reply or HTTP body: sorted members, counts, `truncated` only when present. */
export function viewOf(body: Record<string, unknown>): PresenceView {
  if (!Array.isArray(body.members)) throw new Error(`not a presence answer: ${JSON.stringify(body).slice(0, 500)}`);
  return {
    members: sortMembers(body.members as Member[]),
    users: body.users as number,
    connections: body.connections as number,
    ...('truncated' in body ? { truncated: body.truncated as boolean } : {}),
  };
}

/**
 * The exact view a channel must show for these connections, given oldest
 * first: one member per user, `info` of the user's oldest connection (no key
 * when it has none), `conns` its connection count.
 */
export function expectedView(conns: ReadonlyArray<{ readonly user: string; readonly info?: unknown }>): PresenceView {
  const byUser = new Map<string, { info?: unknown; conns: number }>();
  for (const c of conns) {
    const m = byUser.get(c.user);
    if (m) m.conns += 1;
    else byUser.set(c.user, { ...(c.info !== undefined ? { info: c.info } : {}), conns: 1 });
  }
  const members = sortMembers([...byUser].map(([user, m]) => ({ user, ...m })));
  return { members, users: members.length, connections: conns.length };
}

/**
 * A WebSocket client whose token carries `info`. Keeps every frame after the
 * welcome in arrival order; waits are on events, bounded by a hang guard.
 */
export class PresenceClient extends RecordingClient {
  readonly frames: Frame[] = [];

  private constructor(
    ws: WebSocket,
    readonly user: string,
    readonly info: unknown,
  ) {
    super(ws);
  }

  protected onFrame(f: Frame): void {
    if (f.type !== 'welcome') this.frames.push(f);
  }

  static async open(url: string, c: PresenceClaims): Promise<PresenceClient> {
    const jwt = await presenceToken(c);
    const ws = new WebSocket(url, ['pubgate.v1', `bearer.${jwt}`], { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    const client = new PresenceClient(ws, c.user, c.info);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
    });
    ws.on('error', (e) => {
      client.lastError = e; // a reset after close is reported through `closed`
    });
    await client.until(() => client.welcome !== undefined, 'welcome');
    return client;
  }

  /** join/leave frames (of `channel`, when given), in arrival order. */
  events(channel?: string): PresenceEvent[] {
    return this.frames.filter(
      (f): f is Frame & PresenceEvent => (f.type === 'join' || f.type === 'leave') && (channel === undefined || f.channel === channel),
    );
  }

  /** Message frames of `channel`, in arrival order. */
  messages(channel: string): Frame[] {
    return this.frames.filter((f) => f.type === 'message' && f.channel === channel);
  }

  /** Waits for a join/leave of `user` on `channel` (past or future); resolves with the first one. */
  async untilEvent(type: 'join' | 'leave', channel: string, user: string, timeoutMs = 30_000): Promise<PresenceEvent> {
    const find = (): PresenceEvent | undefined => this.events(channel).find((e) => e.type === type && e.user === user);
    await this.until(() => find() !== undefined, `${type} of ${user} on ${channel} at ${this.user} (seen: ${JSON.stringify(this.events(channel))})`, timeoutMs);
    return find()!;
  }

  /** Waits for a message on `channel` whose data equals `data` (compared as JSON). */
  untilMessage(channel: string, data: unknown, timeoutMs = 30_000): Promise<void> {
    const want = JSON.stringify(data);
    return this.until(() => this.messages(channel).some((m) => JSON.stringify(m.data) === want), `message ${want} on ${channel} at ${this.user}`, timeoutMs);
  }

  async subscribe(...channels: string[]): Promise<void> {
    for (const channel of channels) {
      const r = await this.request({ type: 'subscribe', channel });
      if (r.error !== undefined) throw new Error(`subscribe ${channel} failed for ${this.user}: ${JSON.stringify(r.error)}`);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    const r = await this.request({ type: 'unsubscribe', channel });
    if (r.error !== undefined) throw new Error(`unsubscribe ${channel} failed for ${this.user}: ${JSON.stringify(r.error)}`);
  }

  /** The raw reply to a `presence` frame. */
  presence(channel: unknown): Promise<Frame> {
    return this.request({ type: 'presence', channel });
  }

  /** The raw reply to a `presence_stats` frame. */
  presenceStats(channel: unknown): Promise<Frame> {
    return this.request({ type: 'presence_stats', channel });
  }

  /** The view of `presence` on `channel` (fails on an error reply). */
  async view(channel: string): Promise<PresenceView> {
    const r = await this.presence(channel);
    if (r.error !== undefined) throw new Error(`presence ${channel} failed for ${this.user}: ${JSON.stringify(r.error)}`);
    return viewOf(r);
  }

  /**
   * Asks `presence` until the view satisfies `pred` (for changes the node
   * learns of asynchronously, such as a closed socket); returns that view.
   */
  async untilView(channel: string, pred: (v: PresenceView) => boolean, what: string, guardMs = 30_000): Promise<PresenceView> {
    const deadline = Date.now() + guardMs;
    let last: PresenceView | undefined;
    for (;;) {
      last = await this.view(channel);
      if (pred(last)) return last;
      if (Date.now() > deadline) throw new Error(`presence of ${channel} never showed ${what}; last: ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Ends every client (never throws, never waits on a dead server), then empties the list. */
export async function closePresenceClients(clients: PresenceClient[]): Promise<void> {
  await Promise.allSettled(clients.splice(0).map((c) => c.terminate()));
}

export interface HttpAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly contentType: string | null;
}

/**
 * `GET /v1/presence` (or `/v1/presence/stats` with stats) with `query` as
 * written (`channel=...`); the API key unless `key` is null.
 */
export async function httpPresence(
  gw: GatewayProcess,
  query: string,
  o: { stats?: boolean; key?: string | null; method?: string } = {},
): Promise<HttpAnswer> {
  const key = o.key === undefined ? TEST_API_KEY : o.key;
  const res = await fetch(`${gw.http}/v1/presence${o.stats ? '/stats' : ''}${query ? `?${query}` : ''}`, {
    method: o.method ?? 'GET',
    headers: key !== null ? { authorization: `Bearer ${key}` } : {},
  });
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { text };
  }
  return { status: res.status, body, contentType: res.headers.get('content-type') };
}

export const channelQuery = (channel: string): string => `channel=${encodeURIComponent(channel)}`;

/** The view of `GET /v1/presence?channel=` (fails unless 200). */
export async function httpView(gw: GatewayProcess, channel: string): Promise<PresenceView> {
  const r = await httpPresence(gw, channelQuery(channel));
  if (r.status !== 200) throw new Error(`GET /v1/presence ${channel} on ${gw.http}: ${r.status} ${JSON.stringify(r.body)}`);
  return viewOf(r.body);
}

/**
 * Asks `GET /v1/presence` on `gw` until it equals `want` exactly (a hang
 * guard, not a timing expectation); fails with the last view and the wanted
 * one. `mask`, when given, is applied to both sides first (to leave out what
 * a test checks separately).
 */
export async function untilHttpView(
  gw: GatewayProcess,
  channel: string,
  want: PresenceView,
  guardMs = 60_000,
  mask: (v: PresenceView) => PresenceView = (v) => v,
): Promise<void> {
  const deadline = Date.now() + guardMs;
  const wanted = JSON.stringify(mask(want));
  for (;;) {
    let last: string;
    try {
      const view = await httpView(gw, channel);
      if (isDeepStrictEqual(mask(view), mask(want))) return;
      last = JSON.stringify(view);
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    if (Date.now() > deadline) throw new Error(`presence of ${channel} on ${gw.http} did not converge in ${guardMs} ms\n  last: ${last}\n  want: ${wanted}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The view without the `info` of `user`'s member (for a check made on its own). */
export function withoutInfoOf(user: string): (v: PresenceView) => PresenceView {
  return (v) => ({ ...v, members: v.members.map((m) => (m.user === user ? { user: m.user, conns: m.conns } : m)) });
}

/** mulberry32: a small seeded PRNG, so a failing random run can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A JSON object whose JSON.stringify is exactly `bytes` bytes of UTF-8, padded with `pad` (1 or 2 UTF-8 bytes). */
export function infoOfBytes(bytes: number, pad = 'x'): Record<string, string> {
  const unit = Buffer.byteLength(pad);
  const overhead = Buffer.byteLength(JSON.stringify({ p: '' })); // {"p":""}
  let text = pad.repeat(Math.floor((bytes - overhead) / unit));
  while (Buffer.byteLength(JSON.stringify({ p: text })) < bytes) text += 'x';
  const info = { p: text };
  const n = Buffer.byteLength(JSON.stringify(info));
  if (n !== bytes) throw new Error(`built info of ${n} bytes, wanted ${bytes}`);
  return info;
}

/**
 * Gateway nodes for presence tests: one on the memory broker, or several on
 * one fresh redis-server or 3-master Redis Cluster. Clients opened through
 * `open` are ended by `closeClients`.
 */
export class PresenceNodes {
  readonly group = new NodeGroup();
  readonly clients: PresenceClient[] = [];

  constructor(readonly kind: PresenceBackend) {}

  /** How long starting may take on a loaded machine (a cluster forms slowly). */
  get setupMs(): number {
    return this.kind === 'redis-cluster' ? 240_000 : 90_000;
  }

  async start(ids: readonly string[], env: Record<string, string>): Promise<void> {
    if (this.kind === 'memory') {
      await startNodes(ids.slice(0, 1), env, this.group.nodes);
      await untilReadyz(this.node(0), 200);
    } else if (this.kind === 'redis') await this.group.startOnRedis(ids, env);
    else await this.group.startOnCluster(ids, env);
  }

  /** The broker settings of the nodes (to start more on the same broker). */
  brokerEnv(): Record<string, string> {
    if (this.kind === 'redis') return { PUBGATE_REDIS_URL: this.group.redis().url };
    if (this.kind === 'redis-cluster') return { PUBGATE_REDIS_CLUSTER: this.group.cluster().seeds.join(',') };
    return {};
  }

  get nodes(): GatewayProcess[] {
    return this.group.nodes;
  }

  node(i: number): GatewayProcess {
    return this.group.node(i);
  }

  async open(gw: GatewayProcess, c: PresenceClaims): Promise<PresenceClient> {
    const client = await PresenceClient.open(gw.url, c);
    this.clients.push(client);
    return client;
  }

  closeClients(): Promise<void> {
    return closePresenceClients(this.clients);
  }

  async stop(): Promise<void> {
    await this.closeClients();
    await this.group.stop();
  }
}

/** A Prometheus sample per node (sum over the series with `labels`). */
export function metricOn(nodes: readonly GatewayProcess[], name: string, labels: Record<string, string> = {}): Promise<number[]> {
  return Promise.all(nodes.map((n) => metric(n.admin, name, labels)));
}
