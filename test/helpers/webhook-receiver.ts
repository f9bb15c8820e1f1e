/**
 * A webhook receiver for tests (contract 1.1, "Webhooks"): a real HTTP server
 * on 127.0.0.1 that verifies every request with the `standardwebhooks` npm
 * package (the reference implementation of the Standard Webhooks
 * specification, written by nobody here), records requests and events, and
 * answers as the test says: 2xx, a given status for the next N requests or
 * until told otherwise, or never (the request hangs until the gateway's
 * timeout ends it). It can be stopped and started again on the same port
 * (the receiver is down: connections are refused).
 *
 * Anything a request does against the contract (a signature that does not
 * verify, not a POST, not JSON, a body that is not 1 to 100 well-formed
 * events, one webhook-id naming two different bodies, one event id naming two
 * different events) is kept in `problems`, answered 400, and fails the test
 * through `assertNoProblems` (called in afterEach or at the end).
 *
 * Views of what arrived:
 * - `requests`: every request in arrival order, with how it was answered;
 * - `raw`: every event of every request (retries included), in arrival order;
 * - `accepted()`: the events of the requests answered 2xx, deduplicated by
 *   event id (the first acceptance counts), in the order accepted — what a
 *   receiver that deduplicates (as the contract asks) ends up with.
 *
 * Waits are on events (each request re-evaluates the condition), bounded by
 * a deadline; no sleeping.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { freePort } from './ports.js';

/** A secret in the `whsec_` form (32 key bytes, base64), as Standard Webhooks writes it. */
export const WEBHOOK_TEST_SECRET = `whsec_${Buffer.from('pubgate-webhook-test-key-0123456789ab').toString('base64')}`;

export interface WebhookEvent {
  readonly id: string;
  readonly name: 'channel_occupied' | 'channel_vacated' | 'member_added' | 'member_removed';
  readonly channel: string;
  readonly user?: string;
  readonly time_ms: number;
}

export interface ReceivedRequest {
  /** 1, 2, ... in arrival order. */
  readonly seq: number;
  readonly atMs: number;
  readonly webhookId: string;
  readonly timestamp: string;
  readonly body: string;
  /** The events of the body (empty when it did not verify or parse). */
  readonly events: WebhookEvent[];
  /** How it was answered: a status, 'hung' while held, 'aborted' when the gateway gave up on a held request. */
  answer: number | 'hung' | 'aborted';
}

/** How the receiver answers the next requests. */
type Mode = { kind: 'status'; status: number; remaining: number | undefined } | { kind: 'hang'; remaining: number | undefined };

const NAMES = new Set(['channel_occupied', 'channel_vacated', 'member_added', 'member_removed']);

/** The problem with one event object of a body, or undefined when it is well-formed. */
function eventProblem(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return 'an event is not an object';
  const o = e as Record<string, unknown>;
  if (typeof o.id !== 'string' || o.id.length === 0) return 'an event has no string id';
  if (typeof o.name !== 'string' || !NAMES.has(o.name)) return `unknown event name ${JSON.stringify(o.name)}`;
  if (typeof o.channel !== 'string' || o.channel.length === 0) return 'an event has no channel';
  if (typeof o.time_ms !== 'number' || !Number.isInteger(o.time_ms)) return 'an event has no integer time_ms';
  const member = o.name === 'member_added' || o.name === 'member_removed';
  if (member && typeof o.user !== 'string') return `${o.name} without a string user`;
  if (!member && 'user' in o) return `${o.name} with a user`;
  const extra = Object.keys(o).filter((k) => !['id', 'name', 'channel', 'user', 'time_ms'].includes(k));
  if (extra.length > 0) return `an event has unknown fields ${extra.join(',')}`;
  return undefined;
}

export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];
  readonly raw: WebhookEvent[] = [];
  readonly problems: string[] = [];
  readonly #accepted: WebhookEvent[] = [];
  readonly #acceptedIds = new Set<string>();
  /** webhook-id -> body, event id -> event text: one name never names two things. */
  readonly #bodies = new Map<string, string>();
  readonly #events = new Map<string, string>();
  readonly #waiters = new Set<() => void>();
  readonly #sockets = new Set<Socket>();
  readonly #held = new Set<ServerResponse>();
  readonly #verifier: Webhook;
  #mode: Mode = { kind: 'status', status: 200, remaining: undefined };
  #server: Server | undefined;

  private constructor(
    readonly port: number,
    secret: string,
  ) {
    // A raw-text secret (no whsec_ prefix) is the key bytes themselves, as the contract allows.
    this.#verifier = secret.startsWith('whsec_') ? new Webhook(secret) : new Webhook(secret, { format: 'raw' });
  }

  /** Starts a receiver on a free loopback port (or `port`), verifying with `secret` (default WEBHOOK_TEST_SECRET). */
  static async start(o: { secret?: string; port?: number } = {}): Promise<WebhookReceiver> {
    const r = new WebhookReceiver(o.port ?? (await freePort()), o.secret ?? WEBHOOK_TEST_SECRET);
    await r.start();
    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks`;
  }

  get running(): boolean {
    return this.#server !== undefined;
  }

  /** Listens (again) on the receiver's port. */
  async start(): Promise<void> {
    if (this.#server) return;
    const server = createServer((req, res) => this.#onRequest(req, res));
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
  }

  /** The receiver is down: stops listening and drops every connection (held requests included). */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    this.#held.clear();
    await closed;
  }

  /** Answers every request from now on with `status` (default 200). */
  answer(status = 200): void {
    this.#mode = { kind: 'status', status, remaining: undefined };
  }

  /** Answers the next `n` requests with `status`, then 200 again. */
  failNext(n: number, status = 500): void {
    this.#mode = { kind: 'status', status, remaining: n };
  }

  /** Never answers the next `n` requests (every one until told otherwise when `n` is undefined); then 200. */
  hang(n?: number): void {
    this.#mode = { kind: 'hang', remaining: n };
  }

  /** Requests held (not answered) and still open. */
  get held(): number {
    return this.#held.size;
  }

  /** Events accepted (requests answered 2xx), deduplicated by id, in the order accepted. */
  accepted(): WebhookEvent[] {
    return [...this.#accepted];
  }

  /** accepted() of one channel. */
  acceptedOn(channel: string): WebhookEvent[] {
    return this.#accepted.filter((e) => e.channel === channel);
  }

  /** raw of one channel (every copy of every event, in arrival order). */
  rawOn(channel: string): WebhookEvent[] {
    return this.raw.filter((e) => e.channel === channel);
  }

  /** Fails with every contract violation seen so far. */
  assertNoProblems(): void {
    if (this.problems.length > 0) throw new Error(`webhook receiver saw ${this.problems.length} problem(s):\n  ${this.problems.join('\n  ')}`);
  }

  /** Resolves once `cond` holds (checked now and after every request and every end of a held one). */
  until(cond: () => boolean, what: string | (() => string), timeoutMs = 30_000): Promise<void> {
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
        const text = typeof what === 'string' ? what : what();
        reject(new Error(`webhook receiver: ${text}: not within ${timeoutMs} ms; accepted: ${JSON.stringify(this.#accepted.map(short))}; problems: ${JSON.stringify(this.problems)}`));
      }, timeoutMs);
      this.#waiters.add(check);
    });
  }

  /** Waits until the accepted events satisfy `pred`; resolves with them. */
  async untilAccepted(pred: (events: readonly WebhookEvent[]) => boolean, what: string, timeoutMs = 30_000): Promise<WebhookEvent[]> {
    await this.until(() => pred(this.#accepted), what, timeoutMs);
    return this.accepted();
  }

  /** Waits for an accepted event with this name (and user) on `channel`; resolves with the first. */
  async untilEvent(name: WebhookEvent['name'], channel: string, user?: string, timeoutMs = 30_000): Promise<WebhookEvent> {
    const find = (): WebhookEvent | undefined => this.#accepted.find((e) => e.name === name && e.channel === channel && (user === undefined || e.user === user));
    await this.until(() => find() !== undefined, `${name} on ${channel}${user !== undefined ? ` of ${user}` : ''}`, timeoutMs);
    return find()!;
  }

  /** Waits for a request matching `pred` (past or future); resolves with the first. */
  async untilRequest(pred: (r: ReceivedRequest) => boolean, what: string, timeoutMs = 30_000): Promise<ReceivedRequest> {
    await this.until(() => this.requests.some(pred), what, timeoutMs);
    return this.requests.find(pred)!;
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  #problem(text: string): void {
    this.problems.push(text);
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      // A bound on what a test receiver keeps: 100 events are a few KiB.
      if (size <= 4 * 1024 * 1024) chunks.push(c);
    });
    req.on('end', () => this.#handle(req, res, Buffer.concat(chunks).toString('utf8')));
  }

  #handle(req: IncomingMessage, res: ServerResponse, body: string): void {
    const header = (name: string): string => {
      const v = req.headers[name];
      return Array.isArray(v) ? v.join(',') : (v ?? '');
    };
    const rec: ReceivedRequest = {
      seq: this.requests.length + 1,
      atMs: Date.now(),
      webhookId: header('webhook-id'),
      timestamp: header('webhook-timestamp'),
      body,
      events: [],
      answer: 400,
    };
    this.requests.push(rec);
    const where = `request ${rec.seq} (webhook-id ${rec.webhookId})`;
    const bad = (text: string): void => {
      this.#problem(`${where}: ${text}`);
      res.writeHead(400).end();
      this.#wake();
    };

    if (req.method !== 'POST') return bad(`method ${req.method ?? '?'}, not POST`);
    if (!/^application\/json\b/i.test(header('content-type'))) return bad(`content-type ${JSON.stringify(header('content-type'))}`);
    let parsed: unknown;
    try {
      parsed = this.#verifier.verify(body, {
        'webhook-id': rec.webhookId,
        'webhook-timestamp': rec.timestamp,
        'webhook-signature': header('webhook-signature'),
      });
    } catch (e) {
      return bad(`signature does not verify: ${e instanceof Error ? e.message : String(e)}`);
    }
    const events = (parsed as { events?: unknown } | null)?.events;
    if (!Array.isArray(events) || events.length < 1 || events.length > 100) return bad(`body is not {"events":[1 to 100 events]}: ${body.slice(0, 200)}`);
    if (Object.keys(parsed as object).length !== 1) return bad(`body has keys other than events: ${body.slice(0, 200)}`);
    for (const e of events) {
      const p = eventProblem(e);
      if (p !== undefined) return bad(`${p}: ${JSON.stringify(e)}`);
    }
    const seenBody = this.#bodies.get(rec.webhookId);
    if (seenBody !== undefined && seenBody !== body) this.#problem(`${where}: the same webhook-id names two different bodies:\n    ${seenBody}\n    ${body}`);
    else this.#bodies.set(rec.webhookId, body);
    for (const e of events as WebhookEvent[]) {
      const text = JSON.stringify(e);
      const seen = this.#events.get(e.id);
      if (seen !== undefined && seen !== text) this.#problem(`${where}: event id ${e.id} names two different events: ${seen} and ${text}`);
      else this.#events.set(e.id, text);
    }
    rec.events.push(...(events as WebhookEvent[]));
    this.raw.push(...rec.events);

    const mode = this.#mode;
    if (mode.remaining !== undefined) {
      const left = mode.remaining - 1;
      this.#mode = left > 0 ? { ...mode, remaining: left } : { kind: 'status', status: 200, remaining: undefined };
    }
    if (mode.kind === 'hang') {
      rec.answer = 'hung';
      this.#held.add(res);
      res.once('close', () => {
        this.#held.delete(res);
        if (rec.answer === 'hung') rec.answer = 'aborted';
        this.#wake();
      });
      this.#wake();
      return;
    }
    rec.answer = mode.status;
    if (mode.status >= 200 && mode.status < 300) {
      for (const e of rec.events) {
        if (this.#acceptedIds.has(e.id)) continue;
        this.#acceptedIds.add(e.id);
        this.#accepted.push(e);
      }
    }
    res.writeHead(mode.status, { 'content-type': 'text/plain' }).end(mode.status < 300 ? 'ok' : 'no');
    this.#wake();
  }
}

/** An event without its id and time, for readable comparisons: `occupied ch`, `member_added ch u`. */
export function short(e: WebhookEvent): string {
  return `${e.name} ${e.channel}${e.user !== undefined ? ` ${e.user}` : ''}`;
}

/** The events of `channel` as `short` texts. */
export function shortOn(events: readonly WebhookEvent[], channel: string): string[] {
  return events.filter((e) => e.channel === channel).map(short);
}

/** Gateway settings that send webhooks to `receiver` (plus `extra`). */
export function webhookEnv(receiver: WebhookReceiver, extra: Record<string, string> = {}, secret = WEBHOOK_TEST_SECRET): Record<string, string> {
  return { PUBGATE_WEBHOOK_URL: receiver.url, PUBGATE_WEBHOOK_SECRET: secret, ...extra };
}

/**
 * Breaks of the contract's alternation in `events` (oldest first): per
 * channel, channel_occupied and channel_vacated alternate starting with
 * occupied; per channel and user, member_added and member_removed alternate
 * starting with added. [] when it holds.
 */
export function alternationProblems(events: readonly WebhookEvent[]): string[] {
  const last = new Map<string, string>();
  const out: string[] = [];
  for (const e of events) {
    const member = e.name === 'member_added' || e.name === 'member_removed';
    const key = member ? `${e.channel} ${e.user ?? ''}` : e.channel;
    const first = member ? 'member_added' : 'channel_occupied';
    const prev = last.get(key);
    const ok = prev === undefined ? e.name === first : prev !== e.name;
    if (!ok) out.push(`${short(e)} (${e.id}) after ${prev ?? 'nothing'}`);
    last.set(key, e.name);
  }
  return out;
}
