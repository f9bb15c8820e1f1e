/**
 * A typed client of the gateway's HTTP API (publish, history, presence,
 * server-side subscriptions, disconnect) for server-side code: it holds an API
 * key, which must never reach a browser (anyone who can read the page could
 * publish anywhere). The WebSocket client (`connect`) is the browser's side.
 *
 * Retries: a request is retried (on a network error, a timeout, 429, 502, 503
 * or 504) only when repeating it cannot do anything twice: the reads, the
 * server-side subscribe/unsubscribe (a connection already subscribed gets
 * nothing) and disconnect, and a publish that carries an idempotency key (the
 * gateway answers a repeat with the first answer; contract 1.1). A publish
 * without a key is sent once: after a timeout it may or may not have been
 * published, and the error says so.
 */
import { DEFAULT_BACKOFF, fullJitter, type BackoffOptions } from './backoff.js';
import { isValidChannel, type ErrorCode, type SinceOffset } from './protocol.js';
import type { PresenceInfo, PresenceMember } from './presence.js';

/** The subset of a `fetch` response the API client reads (the global `fetch`'s fits). */
export interface FetchResponseLike {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  text(): Promise<string>;
}

/**
 * The subset of `fetch` the API client calls: the global one (Node ≥ 18), or
 * undici's, or a test double. `signal` is the global AbortController's signal
 * (typed `never` so that every fetch's own AbortSignal type fits without a cast).
 */
export type FetchLike = (url: string, init: { method: string; headers: Record<string, string>; body?: string; signal?: never }) => Promise<FetchResponseLike>;

export interface ApiClientOptions {
  /** The gateway's HTTP base URL, `https://gw.example.com` (the `/v1/...` paths are added). */
  readonly url: string;
  /** One of the gateway's API keys (`PUBGATE_API_KEYS`). Keep it on the server. */
  readonly apiKey: string;
  /** Each attempt not answered within this many ms is cut short. Default 10 000. */
  readonly timeoutMs?: number;
  /** Retries of a request that is safe to repeat (see above). Default 2, at most 10. */
  readonly retries?: number;
  /** Backoff between retries, ms (full jitter): default from 500 doubling up to 20 000. A `Retry-After` is honoured up to `maxMs`. */
  readonly backoff?: Partial<BackoffOptions>;
  /** Default `globalThis.fetch`. */
  readonly fetch?: FetchLike;
  /** The API client refuses to start in a browser (it would expose the key); set this to allow it anyway (a trusted kiosk, an Electron main process). */
  readonly dangerouslyAllowBrowser?: boolean;
  /** Random source in [0, 1) for the jitter (tests). Default Math.random. */
  readonly random?: () => number;
}

export interface ApiPublishOptions {
  /**
   * 1 to 128 printable ASCII characters (contract 1.1, `Idempotency-Key`):
   * within the gateway's `PUBGATE_IDEMPOTENCY_TTL` (default 300 s), a publish
   * to the same channel with the same key is not published again and gets the
   * first answer. With a key the publish is retried after timeouts and 503s;
   * without one it is sent once.
   */
  readonly idempotencyKey?: string;
  /** A connection id (`welcome.conn`) that does not receive the message, typically the one whose action caused it. */
  readonly exclude?: string;
}

/** One message of `publishBatch`. */
export interface ApiBatchMessage extends ApiPublishOptions {
  readonly channel: string;
  readonly data: unknown;
}

/** The answer to a publish: `offset` on history channels. */
export interface ApiPublishResult {
  readonly channel: string;
  readonly offset?: number;
}

export interface ApiHistoryOptions {
  /** At most this many messages (default, and at most: the channel's history size). */
  readonly limit?: number;
  /**
   * The messages after this position (page on with the last message's offset
   * and the answer's epoch) instead of the last ones. Rejects with
   * `recovery_failed` when they are no longer held or the epoch differs.
   */
  readonly since?: SinceOffset;
}

export interface ApiHistoryMessage<T = unknown> {
  readonly offset: number;
  readonly data: T;
}

export interface ApiHistoryResult<T = unknown> {
  readonly channel: string;
  readonly epoch: string;
  /** The channel's current offset (0 when it is empty). */
  readonly offset: number;
  /** Oldest first. */
  readonly messages: ReadonlyArray<ApiHistoryMessage<T>>;
}

export interface ApiPresenceResult<I = PresenceInfo> {
  readonly channel: string;
  readonly members: ReadonlyArray<PresenceMember<I>>;
  readonly users: number;
  readonly connections: number;
  /** More users than `PUBGATE_PRESENCE_MAX_MEMBERS`: `members` lists only that many. */
  readonly truncated: boolean;
}

export interface ApiPresenceStats {
  readonly channel: string;
  readonly users: number;
  readonly connections: number;
}

/**
 * Why an API call failed: the gateway's error code (with the HTTP status), or
 * the client's own: `timeout` (no answer within `timeoutMs`), `network` (no
 * connection), `protocol` (an answer the client cannot read).
 */
export type ApiErrorCode = ErrorCode | 'recovery_failed' | 'timeout' | 'network' | 'protocol';

export class PubgateApiError extends Error {
  readonly code: ApiErrorCode;
  /** The HTTP status, when the gateway answered. */
  readonly status: number | undefined;
  /** The gateway's `Retry-After`, seconds, when it sent one (429, 503). */
  readonly retryAfter: number | undefined;
  constructor(code: ApiErrorCode, message: string, status?: number, retryAfter?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PubgateApiError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export interface PubgateApiClient {
  /** `POST /v1/publish`. */
  publish(channel: string, data: unknown, options?: ApiPublishOptions): Promise<ApiPublishResult>;
  /** `POST /v1/publish/batch` (1 to 1000 messages): results in the same order. Retried only when every message has an idempotency key. */
  publishBatch(messages: readonly ApiBatchMessage[]): Promise<ApiPublishResult[]>;
  /** `GET /v1/history` (contract 1.1): the channel's last messages, or those after `since`. */
  history<T = unknown>(channel: string, options?: ApiHistoryOptions): Promise<ApiHistoryResult<T>>;
  /** `GET /v1/presence`: one member per user. */
  presence<I = PresenceInfo>(channel: string): Promise<ApiPresenceResult<I>>;
  /** `GET /v1/presence/stats`. */
  presenceStats(channel: string): Promise<ApiPresenceStats>;
  /** `POST /v1/subscribe`: subscribes every open connection of `user`, on every node. */
  subscribeUser(user: string, channel: string): Promise<void>;
  /** `POST /v1/unsubscribe`. */
  unsubscribeUser(user: string, channel: string): Promise<void>;
  /** `POST /v1/disconnect`: closes every connection of `user` with 4501. */
  disconnect(user: string): Promise<void>;
}

/** 1 to 128 printable ASCII characters (space to tilde), as the gateway checks. */
const IDEMPOTENCY_KEY_RE = /^[\x20-\x7e]{1,128}$/;
const MAX_BATCH = 1000;
const MAX_RETRIES = 10;
/** Statuses after which a request that is safe to repeat is repeated. */
const RETRY_STATUS = new Set([429, 502, 503, 504]);
/** The code of a status whose body is not the gateway's (a proxy in front of it answered). */
const STATUS_CODE: Readonly<Record<number, ApiErrorCode>> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'recovery_failed',
  413: 'too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
  502: 'unavailable',
  503: 'unavailable',
  504: 'unavailable',
};

interface Host {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  fetch?: FetchLike;
  document?: unknown;
  AbortController?: new () => { readonly signal: unknown; abort(): void };
}

function host(): Host {
  return globalThis as unknown as Host;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => host().setTimeout(resolve, ms));
}

function checkChannel(channel: string): void {
  if (!isValidChannel(channel)) throw new PubgateApiError('bad_request', `invalid channel name: ${JSON.stringify(channel)}`);
}

function checkUser(user: string): void {
  if (typeof user !== 'string' || user === '') throw new PubgateApiError('bad_request', 'user must be a non-empty string');
}

function checkPublishOptions(o: ApiPublishOptions | undefined, where: string): void {
  if (o?.idempotencyKey !== undefined && (typeof o.idempotencyKey !== 'string' || !IDEMPOTENCY_KEY_RE.test(o.idempotencyKey))) {
    throw new PubgateApiError('bad_request', `${where}: idempotencyKey must be 1 to 128 printable ASCII characters`);
  }
  if (o?.exclude !== undefined && (typeof o.exclude !== 'string' || o.exclude === '')) throw new PubgateApiError('bad_request', `${where}: exclude must be a connection id`);
}

/** `data` as JSON text; rejects what JSON cannot carry. */
function dataJson(data: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (e) {
    throw new PubgateApiError('bad_request', `data cannot be serialized as JSON: ${describe(e)}`, undefined, undefined, { cause: e });
  }
  if (json === undefined) throw new PubgateApiError('bad_request', 'data must be a JSON value');
  return json;
}

function publishBody(channel: string, data: unknown, o: ApiPublishOptions | undefined, withKey: boolean): string {
  const extra = (o?.exclude !== undefined ? `,"exclude":${JSON.stringify(o.exclude)}` : '') + (withKey && o?.idempotencyKey !== undefined ? `,"idempotencyKey":${JSON.stringify(o.idempotencyKey)}` : '');
  return `{"channel":${JSON.stringify(channel)},"data":${dataJson(data)}${extra}}`;
}

function parseRetryAfter(v: string | null): number | undefined {
  if (v === null || !/^[0-9]{1,6}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

interface Call {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: string;
  readonly headers?: Record<string, string>;
  /** Repeating the call cannot do anything twice. */
  readonly safe: boolean;
}

class ApiClient implements PubgateApiClient {
  readonly #base: string;
  readonly #apiKey: string;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #backoff: BackoffOptions;
  readonly #fetch: FetchLike;
  readonly #random: () => number;

  constructor(o: ApiClientOptions) {
    if (typeof o.url !== 'string' || !/^https?:\/\//i.test(o.url)) throw new TypeError('createApiClient: url must be the gateway\'s http(s) base URL');
    if (typeof o.apiKey !== 'string' || o.apiKey === '') throw new TypeError('createApiClient: apiKey must be a non-empty string');
    if (host().document !== undefined && o.dangerouslyAllowBrowser !== true) {
      throw new TypeError('createApiClient: this looks like a browser; an API key there can be read by anyone who loads the page. Publish from your backend (or pass dangerouslyAllowBrowser: true)');
    }
    const retries = o.retries ?? 2;
    if (!Number.isSafeInteger(retries) || retries < 0 || retries > MAX_RETRIES) throw new TypeError(`createApiClient: retries must be an integer from 0 to ${MAX_RETRIES}`);
    const timeoutMs = o.timeoutMs ?? 10_000;
    if (!(timeoutMs > 0)) throw new TypeError('createApiClient: timeoutMs must be positive');
    const f = o.fetch ?? host().fetch;
    if (typeof f !== 'function') throw new TypeError('createApiClient: no fetch implementation: pass { fetch }');
    this.#base = o.url.replace(/\/+$/, '');
    this.#apiKey = o.apiKey;
    this.#timeoutMs = timeoutMs;
    this.#retries = retries;
    this.#backoff = { minMs: o.backoff?.minMs ?? DEFAULT_BACKOFF.minMs, maxMs: o.backoff?.maxMs ?? DEFAULT_BACKOFF.maxMs };
    this.#fetch = o.fetch ?? ((url, init) => (host().fetch as FetchLike)(url, init));
    this.#random = o.random ?? Math.random;
  }

  async publish(channel: string, data: unknown, options?: ApiPublishOptions): Promise<ApiPublishResult> {
    checkChannel(channel);
    checkPublishOptions(options, 'publish');
    const key = options?.idempotencyKey;
    const body = await this.#call({
      method: 'POST',
      path: '/v1/publish',
      body: publishBody(channel, data, options, false),
      ...(key !== undefined ? { headers: { 'idempotency-key': key } } : {}),
      safe: key !== undefined,
    });
    return publishResult(body, channel);
  }

  async publishBatch(messages: readonly ApiBatchMessage[]): Promise<ApiPublishResult[]> {
    if (!Array.isArray(messages) || messages.length === 0 || messages.length > MAX_BATCH) {
      throw new PubgateApiError('bad_request', `publishBatch takes 1 to ${MAX_BATCH} messages`);
    }
    const parts: string[] = [];
    messages.forEach((m, i) => {
      checkChannel(m.channel);
      checkPublishOptions(m, `messages[${i}]`);
      parts.push(publishBody(m.channel, m.data, m, true));
    });
    const body = await this.#call({
      method: 'POST',
      path: '/v1/publish/batch',
      body: `{"messages":[${parts.join(',')}]}`,
      safe: messages.every((m) => m.idempotencyKey !== undefined),
    });
    const results = (body as { results?: unknown }).results;
    if (!Array.isArray(results) || results.length !== messages.length) throw new PubgateApiError('protocol', 'the gateway answered the batch without one result per message');
    return results.map((r, i) => publishResult(r, messages[i]!.channel));
  }

  async history<T = unknown>(channel: string, options?: ApiHistoryOptions): Promise<ApiHistoryResult<T>> {
    checkChannel(channel);
    const q = [`channel=${encodeURIComponent(channel)}`];
    const limit = options?.limit;
    if (limit !== undefined) {
      if (!Number.isSafeInteger(limit) || limit < 1) throw new PubgateApiError('bad_request', 'history: limit must be a positive integer');
      q.push(`limit=${limit}`);
    }
    const since = options?.since;
    if (since !== undefined) {
      if (since === null || typeof since !== 'object' || !Number.isSafeInteger(since.offset) || since.offset < 0 || typeof since.epoch !== 'string' || since.epoch === '') {
        throw new PubgateApiError('bad_request', 'history: since must be { offset: integer >= 0, epoch: string }');
      }
      q.push(`since=${since.offset}`, `epoch=${encodeURIComponent(since.epoch)}`);
    }
    const body = (await this.#call({ method: 'GET', path: `/v1/history?${q.join('&')}`, safe: true })) as Partial<ApiHistoryResult<T>>;
    if (typeof body.epoch !== 'string' || typeof body.offset !== 'number' || !Array.isArray(body.messages)) {
      throw new PubgateApiError('protocol', 'the gateway answered history without epoch, offset and messages');
    }
    return { channel, epoch: body.epoch, offset: body.offset, messages: body.messages };
  }

  async presence<I = PresenceInfo>(channel: string): Promise<ApiPresenceResult<I>> {
    checkChannel(channel);
    const body = (await this.#call({ method: 'GET', path: `/v1/presence?channel=${encodeURIComponent(channel)}`, safe: true })) as Partial<ApiPresenceResult<I>>;
    if (!Array.isArray(body.members) || typeof body.users !== 'number' || typeof body.connections !== 'number') {
      throw new PubgateApiError('protocol', 'the gateway answered presence without members, users and connections');
    }
    return { channel, members: body.members, users: body.users, connections: body.connections, truncated: body.truncated === true };
  }

  async presenceStats(channel: string): Promise<ApiPresenceStats> {
    checkChannel(channel);
    const body = (await this.#call({ method: 'GET', path: `/v1/presence/stats?channel=${encodeURIComponent(channel)}`, safe: true })) as Partial<ApiPresenceStats>;
    if (typeof body.users !== 'number' || typeof body.connections !== 'number') throw new PubgateApiError('protocol', 'the gateway answered presence stats without users and connections');
    return { channel, users: body.users, connections: body.connections };
  }

  async subscribeUser(user: string, channel: string): Promise<void> {
    checkUser(user);
    checkChannel(channel);
    await this.#call({ method: 'POST', path: '/v1/subscribe', body: JSON.stringify({ user, channel }), safe: true });
  }

  async unsubscribeUser(user: string, channel: string): Promise<void> {
    checkUser(user);
    checkChannel(channel);
    await this.#call({ method: 'POST', path: '/v1/unsubscribe', body: JSON.stringify({ user, channel }), safe: true });
  }

  async disconnect(user: string): Promise<void> {
    checkUser(user);
    await this.#call({ method: 'POST', path: '/v1/disconnect', body: JSON.stringify({ user }), safe: true });
  }

  /** One call, with its retries: resolves with the parsed 200 body. */
  async #call(c: Call): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const last = !c.safe || attempt >= this.#retries;
      const r = await this.#attempt(c);
      if (r.ok) return r.body;
      if (last || !r.retryable) throw r.error;
      const jitter = fullJitter(attempt + 1, this.#backoff, this.#random);
      const wait = r.error.retryAfter !== undefined ? Math.max(jitter, r.error.retryAfter * 1000) : jitter;
      await sleep(Math.min(wait, this.#backoff.maxMs));
    }
  }

  async #attempt(c: Call): Promise<{ ok: true; body: unknown } | { ok: false; retryable: boolean; error: PubgateApiError }> {
    const Abort = host().AbortController;
    const abort = Abort ? new Abort() : undefined;
    let timedOut = false;
    let expire: (e: Error) => void = () => undefined;
    // The timeout ends the wait for the head and the body alike, with or without an AbortController.
    const expired = new Promise<never>((_, reject) => {
      expire = reject;
    });
    const timer = host().setTimeout(() => {
      timedOut = true;
      abort?.abort();
      expire(new Error('timeout'));
    }, this.#timeoutMs);
    const what = `${c.method} ${c.path.split('?')[0]}`;
    const unsure = c.method === 'POST' && !c.safe ? '; it may or may not have been done (pass an idempotencyKey to retry a publish safely)' : '';
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${this.#apiKey}`, ...c.headers };
      if (c.body !== undefined) headers['content-type'] = 'application/json';
      const init: Parameters<FetchLike>[1] = { method: c.method, headers, ...(c.body !== undefined ? { body: c.body } : {}), ...(abort ? { signal: abort.signal as never } : {}) };
      const { res, text } = await Promise.race([
        (async () => {
          const res = await this.#fetch(this.#base + c.path, init);
          return { res, text: await res.text() };
        })(),
        expired,
      ]);
      if (res.status === 200) {
        try {
          return { ok: true, body: JSON.parse(text) as unknown };
        } catch {
          return { ok: false, retryable: false, error: new PubgateApiError('protocol', `${what}: the gateway answered 200 with a body that is not JSON`, 200) };
        }
      }
      const retryAfter = parseRetryAfter(res.headers.get('retry-after'));
      let code: ApiErrorCode = STATUS_CODE[res.status] ?? 'internal';
      let message = `${what} answered ${res.status}`;
      try {
        const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
        // A code from a newer gateway is passed on as it is.
        if (typeof e?.code === 'string') code = e.code as ApiErrorCode;
        if (typeof e?.message === 'string') message = `${what} answered ${res.status} ${e.code}: ${e.message}`;
      } catch {
        // not the gateway's error body (a proxy's page): the status says enough
      }
      return { ok: false, retryable: RETRY_STATUS.has(res.status), error: new PubgateApiError(code, message + (res.status >= 500 ? unsure : ''), res.status, retryAfter) };
    } catch (e) {
      if (timedOut) return { ok: false, retryable: true, error: new PubgateApiError('timeout', `${what}: no answer within ${this.#timeoutMs} ms${unsure}`, undefined, undefined, { cause: e }) };
      return { ok: false, retryable: true, error: new PubgateApiError('network', `${what} failed: ${describe(e)}${unsure}`, undefined, undefined, { cause: e }) };
    } finally {
      host().clearTimeout(timer);
    }
  }
}

function publishResult(v: unknown, channel: string): ApiPublishResult {
  const offset = (v as { offset?: unknown } | null)?.offset;
  return typeof offset === 'number' ? { channel, offset } : { channel };
}

/**
 * A client of the gateway's HTTP API, for server-side code (it holds an API key):
 *
 *   const api = createApiClient({ url: 'https://gw.example.com', apiKey: secrets.pubgateApiKey });
 *   await api.publish('news', { headline: '...' }, { idempotencyKey: articleId });
 */
export function createApiClient(options: ApiClientOptions): PubgateApiClient {
  return new ApiClient(options);
}
