/**
 * The webhook deliverer (contract 1.1, "Webhooks"): takes due channels from
 * the webhook queue (webhooks/queue.ts), sends the head of each to the
 * receiver in signed batches, and acks or fails them.
 *
 * One loop per node, every node runs one: claim up to 100 due channels (each
 * for a lease), peek each for at most the room left in a batch of 100 events
 * (channels that do not fit, or turned out empty, are released at once with
 * `ack(channel, [])`), POST the batch, then ack every channel with exactly
 * the ids it contributed (2xx) or fail it (anything else: the queue keeps the
 * events and makes the channel due after the backoff, or gives them up once
 * the retry window is used up: `expired`). Up to `concurrency` batches are in
 * flight at once; the loop claims again as soon as a batch was sent (more may
 * be due), otherwise every `pollMs`, or at once after `nudge()`.
 *
 * Order per channel holds because only the head of a channel is ever sent,
 * by its claimer, and the next head only after the ack; a claimer that dies
 * lets its lease run out and another node sends the same head again.
 *
 * The lease (10 s) exceeds a batch's whole life: the peeks, the request (at
 * most 5 s, from connecting to the last byte of the answer) and the acks,
 * and is short enough that a channel a dead node was sending is free again
 * before that node's own death is swept (PUBGATE_PRESENCE_TTL after its last
 * renewal), so the death's events still arrive within TTL + 10 s. A
 * lease that still ran out (a stalled node) costs a duplicate, never a loss:
 * delivery is at least once and receivers deduplicate by event id.
 *
 * `webhook-id` names the body: `msg_` + base64url(SHA-256(body)). The same
 * events in the same batch give the same body, so a re-send (after a failure,
 * or by another node after a lease ran out) carries the same id; two
 * different bodies never share one. A batch re-composed around a retried
 * channel (other channels joined or left it) is a different body with a
 * different id; its events keep their own ids, which is what receivers
 * deduplicate by.
 *
 * Never throws out of the loop: queue errors (Redis down) and HTTP failures
 * are counted and logged aggregated (one `warn` line per 10 s at most, with
 * counts by kind and the latest reason), never with the secret, the URL's
 * query or a body.
 */
import { createHash } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { LogTally } from '../observability/log-tally.js';
import type { Log } from '../observability/logger.js';
import type { Metrics, WebhookRequestResult } from '../observability/metrics.js';
import { eventHead, WEBHOOK_EVENT_NAMES, type EventHead } from './events.js';
import type { DroppedCounts, RetryPolicy, WebhookQueue } from './queue.js';
import { signWebhook } from './signing.js';

/** Events in one request at most (contract). */
export const WEBHOOK_BATCH_EVENTS = 100;
/** Channels claimed at once at most (each gives at least one event, so no more fit a batch). */
export const WEBHOOK_CLAIM_CHANNELS = 100;

/**
 * How many channels to claim for one batch: enough to fill it at the events
 * per channel seen lately (`perChannel`, a moving average), with a margin, so
 * few claimed channels are released unsent (each release is a queue round
 * trip) while a batch still fills up.
 */
export function claimCount(perChannel: number): number {
  const avg = Math.max(1, perChannel);
  return Math.max(1, Math.min(WEBHOOK_CLAIM_CHANNELS, Math.ceil((WEBHOOK_BATCH_EVENTS / avg) * 1.25)));
}
export const WEBHOOK_DEFAULTS = {
  leaseMs: 10_000,
  pollMs: 250,
  concurrency: 4,
  requestTimeoutMs: 5000,
  backoffBaseMs: 1000,
  backoffMaxMs: 300_000,
  /** How often the queue size is read for pubgate_webhook_queue_events. */
  gaugeMs: 5000,
  logIntervalMs: 10_000,
} as const;
/** Answer bodies are read (to keep the connection) up to this; past it the connection is dropped. */
const MAX_ANSWER_BYTES = 64 * 1024;
/** An idle kept-alive connection is closed after this: below the 5 s of Node's server, so the node closes first. */
const IDLE_CONNECTION_MS = 4000;
/** stop() waits at most this much beyond the request timeout for the batches in flight (their acks included). */
const STOP_GRACE_MS = 2000;

export interface WebhookDelivererDeps {
  readonly queue: WebhookQueue;
  /** PUBGATE_WEBHOOK_URL (http or https): the Standard Webhooks destination, with `key`. */
  readonly url?: string;
  /** The signing key: parseWebhookSecret(PUBGATE_WEBHOOK_SECRET). */
  readonly key?: Buffer;
  /**
   * Further destinations fed from the same queue (the Pusher-format webhooks,
   * pusher/webhooks.ts); each gets every batch, and a channel is acked only once
   * all destinations took its events (see deliver()).
   */
  readonly destinations?: readonly ((post: WebhookPoster) => WebhookDestination)[];
  /** PUBGATE_WEBHOOK_RETRY_SECONDS × 1000. */
  readonly retryWindowMs: number;
  readonly metrics: Metrics;
  readonly log: Log;
  /** Claim lease; must exceed requestTimeoutMs. */
  readonly leaseMs?: number;
  /** Idle poll of claim when nothing was due. */
  readonly pollMs?: number;
  /** Batches (requests) in flight on this node at most. */
  readonly concurrency?: number;
  /** One request, from connecting to the last byte of the answer. */
  readonly requestTimeoutMs?: number;
  readonly backoffBaseMs?: number;
  readonly backoffMaxMs?: number;
  /** Interval of the queue size read for the gauge; 0 turns it off. */
  readonly gaugeMs?: number;
  readonly logIntervalMs?: number;
}

export interface WebhookDeliverer {
  /** Starts the loop (once). */
  start(): void;
  /**
   * Stops claiming, waits for the batches in flight to be answered and acked
   * or failed (at most the request timeout + 2 s), closes the connections.
   */
  stop(): Promise<void>;
  /** Events were just marked: claim now instead of at the next poll. */
  nudge(): void;
}

/** How one request ended (`why` for the aggregated log, never a body or secret). */
export interface PostOutcome {
  readonly result: WebhookRequestResult;
  readonly why?: string;
}

/** One POST of a body with headers to a destination's URL, bounded by the request timeout; never rejects. */
export type WebhookPoster = (url: string, body: string, headers: Readonly<Record<string, string>>) => Promise<PostOutcome>;

/** An event of a batch as a destination sees it: its id, its queued JSON text, its head (when parsed). */
export interface BatchEvent {
  readonly id: string;
  readonly text: string;
}

/**
 * A receiver of the queue's batches in its own format. `send` posts the
 * events (as one or more requests) and answers, per request, its outcome and
 * the ids it carried; events the destination does not send at all (not for
 * it) are in `skipped`, which counts as taken. Never rejects.
 */
export interface WebhookDestination {
  readonly name: string;
  send(events: readonly BatchEvent[]): Promise<{ readonly requests: readonly (PostOutcome & { readonly ids: readonly string[] })[]; readonly skipped: readonly string[] }>;
}

/** Event ids remembered per destination as taken while their channel waits for another destination (node-local). */
const MAX_TAKEN_IDS = 10_000;

/** One channel's part of a batch. */
interface Part {
  readonly channel: string;
  readonly ids: string[];
  readonly heads: EventHead[];
}

interface Batch {
  readonly parts: Part[];
  readonly events: BatchEvent[];
}

/** The id of an event text: from its head, or (a text the events module did not build) its leading `"id"`. */
const LEADING_ID = /^\{"id":"([^"\\]+)"/;

/** An error as one short line: its code when it has one (ECONNREFUSED ...), and its message. */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
}

/** `webhook-id` of a body: `msg_` + base64url SHA-256 (see the header comment). */
export function webhookMessageId(body: string): string {
  return `msg_${createHash('sha256').update(body).digest('base64url')}`;
}

/** The request body of event texts: exactly `{"events":[<texts joined by ",">]}`. */
export function webhookBody(texts: readonly string[]): string {
  return `{"events":[${texts.join(',')}]}`;
}

/** Counts the events a queue call dropped to keep its bound (pubgate_webhook_events_total{result="dropped"}). */
export function countDroppedWebhookEvents(metrics: Metrics, dropped: DroppedCounts): void {
  for (const name of WEBHOOK_EVENT_NAMES) {
    const n = dropped[name];
    if (n !== undefined && n > 0) metrics.webhookEvents(name, 'dropped', n);
  }
}

export function createWebhookDeliverer(deps: WebhookDelivererDeps): WebhookDeliverer {
  const { queue, metrics } = deps;
  const leaseMs = deps.leaseMs ?? WEBHOOK_DEFAULTS.leaseMs;
  const pollMs = deps.pollMs ?? WEBHOOK_DEFAULTS.pollMs;
  const concurrency = deps.concurrency ?? WEBHOOK_DEFAULTS.concurrency;
  const timeoutMs = deps.requestTimeoutMs ?? WEBHOOK_DEFAULTS.requestTimeoutMs;
  const gaugeMs = deps.gaugeMs ?? WEBHOOK_DEFAULTS.gaugeMs;
  if (!(leaseMs > timeoutMs)) throw new Error(`webhook lease (${leaseMs} ms) must exceed the request timeout (${timeoutMs} ms)`);
  if (!(concurrency >= 1)) throw new Error('webhook concurrency must be at least 1');
  const policy: RetryPolicy = {
    baseMs: deps.backoffBaseMs ?? WEBHOOK_DEFAULTS.backoffBaseMs,
    maxMs: deps.backoffMaxMs ?? WEBHOOK_DEFAULTS.backoffMaxMs,
    windowMs: deps.retryWindowMs,
  };
  const log = deps.log.child({ component: 'webhooks' });
  const failures = new LogTally(log, 'warn', 'webhook deliveries failed', {}, deps.logIntervalMs ?? WEBHOOK_DEFAULTS.logIntervalMs);

  // One pool per origin: a connection per batch in flight, kept alive between batches.
  const agentOptions = { keepAlive: true, maxSockets: concurrency, maxTotalSockets: concurrency, maxFreeSockets: concurrency, scheduling: 'lifo', timeout: IDLE_CONNECTION_MS } as const;
  const agents = new Map<string, HttpAgent | HttpsAgent>();
  const poster: WebhookPoster = (url, body, headers) => post(url, body, headers);
  const destinations: WebhookDestination[] = [];
  if (deps.url !== undefined && deps.key !== undefined) destinations.push(standardDestination(deps.url, deps.key, poster));
  for (const make of deps.destinations ?? []) destinations.push(make(poster));
  if (destinations.length === 0) throw new Error('webhooks need a destination');
  /** Per destination: ids it took whose channel is not acked yet (another destination failed); not sent to it again from this node. */
  const taken = destinations.map(() => new Set<string>());

  let running = false;
  let started = false;
  /** Events per claimed channel lately (sizes the next claim). */
  let perChannel = 1;
  let nudged = false;
  let wake: (() => void) | undefined;
  let loopDone: Promise<void> = Promise.resolve();
  const inFlight = new Set<Promise<void>>();
  let gaugeTimer: NodeJS.Timeout | undefined;

  /** Waits for a nudge, a freed slot, stop(), or `ms` (undefined: no timer). */
  function pause(ms: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(done, ms);
      function done(): void {
        if (timer) clearTimeout(timer);
        if (wake === done) wake = undefined;
        resolve();
      }
      wake = done;
    });
  }

  function poke(): void {
    wake?.();
  }

  /** Releases claimed channels without sending (they are due again at once); errors only logged (the lease frees them anyway). */
  async function release(channels: readonly string[]): Promise<void> {
    const rs = await Promise.allSettled(channels.map((ch) => queue.ack(ch, [])));
    for (const r of rs) if (r.status === 'rejected') failures.add('queue', 1, `release: ${describe(r.reason)}`);
  }

  /** Claims due channels and reads their heads into one batch; undefined when nothing was due. */
  async function nextBatch(): Promise<Batch | undefined> {
    const channels = await queue.claim(claimCount(perChannel), leaseMs);
    if (channels.length === 0) return undefined;
    if (!running) {
      // stop() came while claiming: a stopped deliverer sends nothing.
      await release(channels);
      return undefined;
    }
    const parts: Part[] = [];
    const texts: BatchEvent[] = [];
    const unused: string[] = [];
    // All heads are read at once (one round trip each, in parallel), then the
    // batch is filled in claim order; each channel contributes a prefix of its head.
    const heads = await Promise.all(channels.map((ch) => queue.peek(ch, WEBHOOK_BATCH_EVENTS).then(
      (h) => h,
      (e: unknown) => {
        failures.add('queue', 1, `peek: ${describe(e)}`);
        return undefined;
      },
    )));
    let seen = 0;
    let nonEmpty = 0;
    for (let i = 0; i < channels.length; i++) {
      const channel = channels[i]!;
      const head = heads[i];
      if (head && head.length > 0) {
        seen += head.length;
        nonEmpty++;
      }
      const room = WEBHOOK_BATCH_EVENTS - texts.length;
      if (room <= 0 || !running || head === undefined) {
        unused.push(channel);
        continue;
      }
      const part: Part = { channel, ids: [], heads: [] };
      for (const text of head.slice(0, room)) {
        const h = eventHead(text);
        const id = h?.id ?? LEADING_ID.exec(text)?.[1];
        // A text without an id cannot be acked: stop the channel's part before it (it stays at the head, the bound drops it in time).
        if (id === undefined) {
          failures.add('malformed', 1, 'an event text without an id in the queue');
          break;
        }
        part.ids.push(id);
        if (h) part.heads.push(h);
        texts.push({ id, text });
      }
      if (part.ids.length === 0) unused.push(channel);
      else parts.push(part);
    }
    if (nonEmpty > 0) perChannel = perChannel * 0.7 + (seen / nonEmpty) * 0.3;
    if (unused.length > 0) await release(unused);
    if (parts.length === 0) return undefined;
    return { parts, events: texts };
  }

  /** One POST, bounded by the timeout from connecting to the answer's last byte; settles once, never rejects. */
  function post(url: string, body: string, headers: Readonly<Record<string, string>>): Promise<PostOutcome> {
    const u = new URL(url);
    const https = u.protocol === 'https:';
    let agent = agents.get(u.origin);
    if (agent === undefined) {
      agent = https ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
      agents.set(u.origin, agent);
    }
    const request = https ? httpsRequest : httpRequest;
    const target = { hostname: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port, path: `${u.pathname}${u.search}` };
    return new Promise((resolve) => {
      let settled = false;
      const req = request({
        agent,
        ...target,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'pubgate-webhooks',
          'content-length': Buffer.byteLength(body),
          ...headers,
        },
      });
      const end = (x: PostOutcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(x);
      };
      const cut = (x: PostOutcome): void => {
        end(x);
        req.destroy();
      };
      const timer = setTimeout(() => cut({ result: 'timeout', why: `no whole answer within ${timeoutMs} ms` }), timeoutMs);
      timer.unref();
      req.on('error', (e) => end({ result: 'error', why: describe(e) }));
      req.on('response', (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        const outcome = status >= 200 && status < 300 ? { result: 'ok' as const } : { result: 'status' as const, why: `HTTP ${status}` };
        // The answer is read (and dropped) to keep the connection; a long one is not worth it.
        if (Number(res.headers['content-length'] ?? '0') > MAX_ANSWER_BYTES) return cut(outcome);
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > MAX_ANSWER_BYTES) cut(outcome);
        });
        res.on('end', () => end(outcome));
        res.on('error', (e) => end({ result: 'error', why: `answer cut off: ${describe(e)}` }));
        res.on('close', () => end({ result: 'error', why: 'answer cut off' }));
      });
      req.end(body);
    });
  }

  /** Remembers that destination `d` took `id` (bounded: the oldest is forgotten, which costs a duplicate at most). */
  function take(d: number, id: string): void {
    const set = taken[d]!;
    if (set.size >= MAX_TAKEN_IDS) set.delete(set.values().next().value as string);
    set.add(id);
  }

  /**
   * Sends a batch to every destination and settles each channel with the
   * queue; never rejects. A destination gets the events it has not taken yet
   * (from this node); a channel is acked once every destination took all its
   * events, else failed with the policy (so per-channel order holds for each
   * destination, and a destination that is down holds the others' events of
   * the same channels back, for the retry window at most).
   */
  async function deliver(batch: Batch): Promise<void> {
    await Promise.all(destinations.map(async (dest, d) => {
      const todo = batch.events.filter((e) => !taken[d]!.has(e.id));
      if (todo.length === 0) return;
      const r = await dest.send(todo);
      for (const id of r.skipped) take(d, id);
      for (const req of r.requests) {
        metrics.webhookRequest(req.result);
        if (req.result === 'ok') for (const id of req.ids) take(d, id);
        else failures.add(req.result, 1, `${dest.name}: ${req.why ?? req.result}`);
      }
    }));
    const now = Date.now();
    const forget = (p: Part): void => {
      for (const set of taken) for (const id of p.ids) set.delete(id);
    };
    await Promise.all(batch.parts.map(async (p) => {
      const ok = taken.every((set) => p.ids.every((id) => set.has(id)));
      if (ok) {
        try {
          await queue.ack(p.channel, p.ids);
        } catch (e) {
          // Delivered but not removed: the lease runs out and the same events go again (at least once).
          failures.add('queue', 1, `ack: ${describe(e)}`);
          return;
        }
        forget(p);
        for (const h of p.heads) {
          metrics.webhookEvents(h.name, 'delivered', 1);
          metrics.webhookDelivered((now - h.timeMs) / 1000);
        }
        return;
      }
      try {
        const r = await queue.fail(p.channel, p.ids, policy);
        if (r.expired) {
          forget(p);
          for (const h of p.heads) metrics.webhookEvents(h.name, 'expired', 1);
          failures.add('expired', p.ids.length, `retry window of ${Math.round(policy.windowMs / 1000)} s used up`);
        }
      } catch (e) {
        failures.add('queue', 1, `fail: ${describe(e)}`);
      }
    }));
  }

  async function loop(): Promise<void> {
    while (running) {
      if (inFlight.size >= concurrency) {
        await pause(undefined); // a batch ending, or stop(), wakes it
        continue;
      }
      nudged = false;
      let batch: Batch | undefined;
      try {
        batch = await nextBatch();
      } catch (e) {
        failures.add('queue', 1, `claim: ${describe(e)}`);
      }
      if (batch === undefined) {
        if (running && !nudged) await pause(pollMs);
        continue;
      }
      if (!running) {
        // stop() came while the heads were read: release them unsent.
        await release(batch.parts.map((x) => x.channel));
        break;
      }
      const p: Promise<void> = deliver(batch)
        .catch((e: unknown) => failures.add('internal', 1, describe(e)))
        .finally(() => {
          inFlight.delete(p);
          poke();
        });
      inFlight.add(p);
    }
  }

  let reading = false;
  async function readGauge(): Promise<void> {
    // One read at a time: a queue that does not answer (Redis away) does not pile reads up.
    if (reading) return;
    reading = true;
    try {
      metrics.webhookQueueEvents(await queue.size());
    } catch (e) {
      failures.add('queue', 1, `size: ${describe(e)}`);
    } finally {
      reading = false;
    }
  }

  return {
    start() {
      if (started) return;
      started = true;
      running = true;
      loopDone = loop().catch((e: unknown) => log.error({ err: describe(e) }, 'webhook loop ended'));
      if (gaugeMs > 0) {
        void readGauge();
        gaugeTimer = setInterval(() => void readGauge(), gaugeMs);
        gaugeTimer.unref();
      }
    },
    async stop() {
      running = false;
      if (gaugeTimer) clearInterval(gaugeTimer);
      gaugeTimer = undefined;
      poke();
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs + STOP_GRACE_MS);
        timer.unref();
      });
      // The loop first (it sends nothing more once stopped), then every batch it had in flight.
      await Promise.race([loopDone.then(() => Promise.all([...inFlight])), limit]);
      clearTimeout(timer);
      failures.flush();
      for (const a of agents.values()) a.destroy();
    },
    nudge() {
      nudged = true;
      poke();
    },
  };
}

/** The Standard Webhooks destination (PUBGATE_WEBHOOK_URL): one request per batch, the queued texts as they are. */
function standardDestination(url: string, key: Buffer, post: WebhookPoster): WebhookDestination {
  const u = new URL(url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`webhook URL: unsupported scheme ${u.protocol}`);
  return {
    name: 'standard',
    async send(events) {
      const body = webhookBody(events.map((e) => e.text));
      const id = webhookMessageId(body);
      const ts = Math.floor(Date.now() / 1000);
      const r = await post(url, body, { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signWebhook(key, id, ts, body) });
      return { requests: [{ ...r, ids: events.map((e) => e.id) }], skipped: [] };
    },
  };
}
