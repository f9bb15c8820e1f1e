/**
 * The HTTP API: /v1/publish, /v1/publish/batch, /v1/disconnect,
 * /v1/subscribe, /v1/unsubscribe (POST), and
 * the presence reads /v1/presence, /v1/presence/stats (GET, `?channel=`), and
 * the history read /v1/history (GET, `?channel=&limit=[&since=&epoch=]`), and
 * the channel list /v1/channels (GET, `?prefix=&limit=`: every node's count, summed).
 * Transport-agnostic: the transport copies the request head, asks `preflight`
 * whether to read the body, reads at most `maxPublishBytes`, then calls `handle`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { GatewayError, HTTP_STATUS, errorBody, isGatewayError, type ErrorCode } from '../errors.js';
import type { ApiEndpoint } from '../observability/metrics.js';
import { isValidChannel } from '../protocol/channel.js';
import { presenceBody, type SinceOffset } from '../protocol/frames.js';
import type { HistoryPosition } from '../broker/history.js';
import type { PresenceSnapshot, PresenceStats } from '../presence/store.js';
import type { PublishOptions } from '../hub/hub.js';
import { arrayElements, objectMembers, type Span } from '../protocol/json-scan.js';
import { createKeyedLimiter } from '../limits/rate.js';
import { isValidIdempotencyKey } from '../broker/idempotency.js';

export const MAX_BATCH = 1000;

/** Channels GET /v1/channels lists at most (`limit`), and by default; at most MAX_ANSWER_CHANNELS. */
export const MAX_LIST_CHANNELS = 1000;
export const DEFAULT_LIST_CHANNELS = 100;
/** Longest `prefix` of GET /v1/channels (a channel name is at most 200 characters). */
export const MAX_LIST_PREFIX = 200;

/** Longest `exclude` value: a `welcome.conn` is a 6-character node prefix and a base-36 number. */
export const MAX_CONN_LENGTH = 64;

/** The options of one publish; undefined when it has none. */
function publishOptions(idempotencyKey: string | undefined, exclude: string | undefined): PublishOptions | undefined {
  if (idempotencyKey === undefined && exclude === undefined) return undefined;
  return { ...(idempotencyKey === undefined ? {} : { idempotencyKey }), ...(exclude === undefined ? {} : { exclude }) };
}

/** A `welcome.conn` value as `exclude` takes it: letters and digits, bounded (the broker envelope needs no newline in it). */
function isConn(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_CONN_LENGTH && /^[A-Za-z0-9]+$/.test(v);
}

export interface ApiRequestHead {
  readonly method: string; // lower case, as uWS gives it
  readonly path: string;
  /** Raw query string without '?', '' when none. */
  readonly query: string;
  readonly authorization: string;
  readonly contentType: string;
  readonly contentLength: string;
  /** The Idempotency-Key header; undefined when the request has none ('' when it is empty). */
  readonly idempotencyKey?: string | undefined;
}

export interface ApiResponse {
  readonly status: number;
  readonly body: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export type Preflight =
  /** `body: false`: a GET, answered without reading a body; `query` is handed to handle(). */
  | { readonly ok: true; readonly endpoint: ApiEndpoint; readonly key: string; readonly body: boolean; readonly idempotencyKey?: string }
  | { readonly ok: false; readonly endpoint: ApiEndpoint; readonly response: ApiResponse };

export interface PublishSink {
  /**
   * Publishes raw JSON data; resolves with its offset on history channels, and
   * `repeat` when its idempotency key was already accepted (nothing published);
   * rejects with GatewayError('unavailable') when the broker cannot.
   */
  publishData(channel: string, rawData: string, opts?: PublishOptions): Promise<{ offset?: number; repeat?: boolean }>;
  disconnectUser(user: string): Promise<void>;
  /**
   * Server-side subscriptions: subscribes (unsubscribes) every open connection
   * of the user on every node; resolves once every node applied it; rejects
   * with GatewayError('unavailable') otherwise.
   */
  serverSubscription(op: 'subscribe' | 'unsubscribe', user: string, channel: string): Promise<void>;
  /** Who is in a presence channel; rejects with bad_request when the channel has no presence. */
  presence(channel: string): Promise<PresenceSnapshot>;
  presenceStats(channel: string): Promise<PresenceStats>;
  /**
   * A history channel's frames (full `message` frame texts) and position: the
   * last `limit` (undefined: the history size; clamped to it), or the first
   * `limit` after `since`. Rejects with bad_request when the channel keeps no
   * history, recovery_failed when `since` is not held or its epoch differs.
   */
  history(channel: string, limit: number | undefined, since?: SinceOffset): Promise<{ position: HistoryPosition; frames: readonly string[] }>;
  /**
   * The channels with subscribers on any node whose name starts with `prefix`,
   * with their subscriptions summed over the nodes, in name order (at most
   * MAX_ANSWER_CHANNELS; `more` when others follow). Rejects with
   * GatewayError('unavailable') when a node does not answer.
   */
  channels(prefix: string): Promise<{ readonly counts: readonly (readonly [string, number])[]; readonly more: boolean }>;
}

export interface PublishApiOptions {
  readonly apiKeys: readonly string[];
  readonly maxPublishBytes: number;
  readonly apiRate: number;
  readonly sink: PublishSink;
  readonly published: (count: number) => void;
  readonly nowMs?: () => number;
}

const ROUTES: Readonly<Record<string, { readonly endpoint: ApiEndpoint; readonly method: 'post' | 'get' }>> = {
  '/v1/publish': { endpoint: 'publish', method: 'post' },
  '/v1/publish/batch': { endpoint: 'batch', method: 'post' },
  '/v1/disconnect': { endpoint: 'disconnect', method: 'post' },
  '/v1/subscribe': { endpoint: 'subscribe', method: 'post' },
  '/v1/unsubscribe': { endpoint: 'unsubscribe', method: 'post' },
  '/v1/presence': { endpoint: 'presence', method: 'get' },
  '/v1/presence/stats': { endpoint: 'presence_stats', method: 'get' },
  '/v1/history': { endpoint: 'history', method: 'get' },
  '/v1/channels': { endpoint: 'channels', method: 'get' },
};

export function errorResponse(code: ErrorCode, message: string, status = HTTP_STATUS[code], headers?: Record<string, string>): ApiResponse {
  return headers ? { status, body: errorBody(code, message), headers } : { status, body: errorBody(code, message) };
}

/** The answer for an error thrown while handling a request (a GatewayError's code and status, `Retry-After` when it says when, or 503); else 500. */
export function errorResponseOf(e: unknown): ApiResponse {
  if (isGatewayError(e)) {
    const headers = e.retryAfterSec !== undefined || e.code === 'unavailable' ? { 'Retry-After': String(e.retryAfterSec ?? 1) } : undefined;
    return errorResponse(e.code, e.message, HTTP_STATUS[e.code], headers);
  }
  return errorResponse('internal', 'internal error');
}

/** SHA-256 of a secret: secrets are compared as digests with timingSafeEqual (equal lengths, constant time). */
export const secretDigest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** The digest of the token of an `Authorization: Bearer <token>` header; undefined without one. */
export function bearerDigest(authorization: string): Buffer | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return m ? secretDigest(m[1] ?? '') : undefined;
}

/**
 * The entries of a history read: the stored frames are whole `message`
 * frames, so each entry's `offset` and `data` are cut out of the frame text
 * and `data` goes out byte-for-byte as published.
 */
export function historyEntriesJson(frames: readonly string[]): string {
  const entries = frames.map((f) => {
    const m = objectMembers(f);
    const o = m.get('offset');
    const d = m.get('data');
    if (!o || !d) throw new GatewayError('internal', 'a history frame has no offset or data');
    return `{"offset":${f.slice(o.start, o.end)},"data":${f.slice(d.start, d.end)}}`;
  });
  return `[${entries.join(',')}]`;
}

export interface PublishApi {
  preflight(head: ApiRequestHead): Preflight;
  /**
   * `input` is the body for POST endpoints, the query string for GET ones;
   * `idempotencyKey` is the preflight's (a validated Idempotency-Key header).
   */
  handle(endpoint: ApiEndpoint, input: string, idempotencyKey?: string): Promise<ApiResponse>;
}

export function createPublishApi(opts: PublishApiOptions): PublishApi {
  // Keys are compared as SHA-256 digests with timingSafeEqual: equal lengths,
  // constant time, and every configured key is checked (no early exit).
  const keyDigests = opts.apiKeys.map((k) => ({ key: k, d: secretDigest(k) }));
  const limiter = createKeyedLimiter(opts.apiRate, Math.max(1, opts.apiRate * 2), Math.max(1, opts.apiKeys.length));
  const now = opts.nowMs ?? (() => performance.now());

  function authenticate(authorization: string): string | undefined {
    const d = bearerDigest(authorization);
    if (!d || keyDigests.length === 0) return undefined;
    let found: string | undefined;
    for (const k of keyDigests) if (timingSafeEqual(k.d, d)) found = k.key;
    return found;
  }

  function parseBody(body: string): unknown {
    try {
      return JSON.parse(body);
    } catch {
      throw new GatewayError('bad_request', 'body is not valid JSON');
    }
  }

  /** Validates one `{channel, data[, idempotencyKey][, exclude]}` object and returns its raw data text and options (the body's key comes from the header). */
  function message(v: unknown, text: string, span: Span, where: string): { channel: string; data: string; idempotencyKey?: string; exclude?: string } {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new GatewayError('bad_request', `${where} must be an object`);
    const o = v as Record<string, unknown>;
    if (!isValidChannel(o.channel)) throw new GatewayError('bad_request', `${where}.channel is not a valid channel name`);
    const dataSpan = objectMembers(text, span).get('data');
    if (!('data' in o) || !dataSpan) throw new GatewayError('bad_request', `${where}.data is required`);
    if (o.exclude !== undefined && !isConn(o.exclude)) {
      throw new GatewayError('bad_request', `${where}.exclude must be a connection id (welcome.conn: 1 to ${MAX_CONN_LENGTH} letters and digits)`);
    }
    const data = text.slice(dataSpan.start, dataSpan.end);
    const exclude = o.exclude === undefined ? {} : { exclude: o.exclude };
    if (!('idempotencyKey' in o) || where === 'body') return { channel: o.channel, data, ...exclude };
    if (!isValidIdempotencyKey(o.idempotencyKey)) throw new GatewayError('bad_request', `${where}.idempotencyKey must be 1 to 128 printable ASCII characters`);
    return { channel: o.channel, data, idempotencyKey: o.idempotencyKey, ...exclude };
  }

  async function publishOne(body: string, idempotencyKey: string | undefined): Promise<ApiResponse> {
    const v = parseBody(body);
    const { channel, data, exclude } = message(v, body, { start: 0, end: body.length }, 'body');
    const r = await opts.sink.publishData(channel, data, publishOptions(idempotencyKey, exclude));
    // A repeat of an idempotency key published nothing: not counted.
    opts.published(r.repeat === true ? 0 : 1);
    return { status: 200, body: JSON.stringify(r.offset === undefined ? { channel } : { channel, offset: r.offset }) };
  }

  async function publishBatch(body: string): Promise<ApiResponse> {
    const v = parseBody(body);
    const msgs = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>).messages : undefined;
    if (!Array.isArray(msgs)) throw new GatewayError('bad_request', 'body.messages must be an array');
    if (msgs.length === 0 || msgs.length > MAX_BATCH) {
      throw new GatewayError('bad_request', `body.messages must hold 1 to ${MAX_BATCH} messages, got ${msgs.length}`);
    }
    const listSpan = objectMembers(body).get('messages');
    const spans = listSpan ? arrayElements(body, listSpan) : [];
    // Validate everything before publishing anything: a bad batch publishes nothing.
    const items = msgs.map((m, i) => message(m, body, spans[i] ?? { start: 0, end: 0 }, `messages[${i}]`));
    // Publish in order; stop at the first refusal so nothing after it is reported.
    const results: { channel: string; offset?: number }[] = [];
    let repeats = 0; // messages answered from their idempotency key: not published, not counted
    for (const f of items) {
      let r: { offset?: number; repeat?: boolean };
      try {
        r = await opts.sink.publishData(f.channel, f.data, publishOptions(f.idempotencyKey, f.exclude));
      } catch (e) {
        opts.published(results.length - repeats);
        if (results.length === 0) throw e;
        // Part of the batch went out: say exactly which part.
        const err = isGatewayError(e) ? e : new GatewayError('internal', 'publish failed');
        return {
          status: HTTP_STATUS[err.code],
          body: JSON.stringify({ error: { code: err.code, message: `${err.message}; the first ${results.length} messages were published` }, results }),
          headers: { 'Retry-After': String(err.retryAfterSec ?? 1) },
        };
      }
      if (r.repeat === true) repeats++;
      results.push(r.offset === undefined ? { channel: f.channel } : { channel: f.channel, offset: r.offset });
    }
    opts.published(results.length - repeats);
    return { status: 200, body: JSON.stringify({ results }) };
  }

  /** The `user` of a body that names one (1 to 1024 characters). */
  function userOf(v: unknown): string {
    const user = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>).user : undefined;
    if (typeof user !== 'string' || user === '' || user.length > 1024) throw new GatewayError('bad_request', 'body.user must be a non-empty string');
    return user;
  }

  async function disconnect(body: string): Promise<ApiResponse> {
    await opts.sink.disconnectUser(userOf(parseBody(body)));
    return { status: 200, body: '{}' };
  }

  /** POST /v1/subscribe and /v1/unsubscribe: `{"user":"42","channel":"news"}`. */
  async function serverSubscription(op: 'subscribe' | 'unsubscribe', body: string): Promise<ApiResponse> {
    const v = parseBody(body);
    const user = userOf(v);
    const channel = (v as Record<string, unknown>).channel;
    if (!isValidChannel(channel)) throw new GatewayError('bad_request', 'body.channel is not a valid channel name');
    await opts.sink.serverSubscription(op, user, channel);
    return { status: 200, body: '{}' };
  }

  /** The `channel` query parameter of a presence read. */
  function channelParam(query: string): string {
    const channel = new URLSearchParams(query).get('channel');
    if (channel === null || channel === '') throw new GatewayError('bad_request', 'the channel query parameter is required');
    if (!isValidChannel(channel)) throw new GatewayError('bad_request', 'channel is not a valid channel name');
    return channel;
  }

  async function presence(query: string): Promise<ApiResponse> {
    const channel = channelParam(query);
    const p = await opts.sink.presence(channel);
    return { status: 200, body: `{"channel":${JSON.stringify(channel)},${presenceBody(p)}}` };
  }

  async function presenceStats(query: string): Promise<ApiResponse> {
    const channel = channelParam(query);
    const p = await opts.sink.presenceStats(channel);
    return { status: 200, body: JSON.stringify({ channel, users: p.users, connections: p.connections }) };
  }

  /** A whole number parameter (digits only, at most 15 of them: a safe integer); undefined when absent. */
  function intParam(q: URLSearchParams, name: string, min: number): number | undefined {
    const v = q.get(name);
    if (v === null) return undefined;
    if (!/^[0-9]{1,15}$/.test(v) || Number(v) < min) throw new GatewayError('bad_request', `${name} must be a whole number >= ${min}`);
    return Number(v);
  }

  /** GET /v1/history (entries: historyEntriesJson). */
  async function historyRead(query: string): Promise<ApiResponse> {
    const channel = channelParam(query);
    const q = new URLSearchParams(query);
    const limit = intParam(q, 'limit', 1);
    const sinceOffset = intParam(q, 'since', 0);
    const epoch = q.get('epoch');
    if (sinceOffset !== undefined && epoch === null) throw new GatewayError('bad_request', 'since needs epoch');
    if (epoch !== null && sinceOffset === undefined) throw new GatewayError('bad_request', 'epoch needs since');
    if (epoch !== null && (epoch === '' || epoch.length > 64)) throw new GatewayError('bad_request', 'epoch must be 1 to 64 characters');
    const since = sinceOffset !== undefined && epoch !== null ? { offset: sinceOffset, epoch } : undefined;
    const r = await opts.sink.history(channel, limit, since);
    const head = `{"channel":${JSON.stringify(channel)},"epoch":${JSON.stringify(r.position.epoch)},"offset":${r.position.offset}`;
    return { status: 200, body: `${head},"messages":${historyEntriesJson(r.frames)}}` };
  }

  /** GET /v1/channels?prefix=&limit=: `{"channels":[{"channel","subscribers"}],"more"}`, in name order. */
  async function channelList(query: string): Promise<ApiResponse> {
    const q = new URLSearchParams(query);
    const limit = intParam(q, 'limit', 1) ?? DEFAULT_LIST_CHANNELS;
    if (limit > MAX_LIST_CHANNELS) throw new GatewayError('bad_request', `limit must be a whole number from 1 to ${MAX_LIST_CHANNELS}`);
    const prefix = q.get('prefix') ?? '';
    if (prefix.length > MAX_LIST_PREFIX) throw new GatewayError('bad_request', `prefix must be at most ${MAX_LIST_PREFIX} characters`);
    const r = await opts.sink.channels(prefix);
    const listed = r.counts.slice(0, limit);
    const more = r.more || r.counts.length > limit;
    return { status: 200, body: JSON.stringify({ channels: listed.map(([channel, subscribers]) => ({ channel, subscribers })), more }) };
  }

  return {
    preflight(head) {
      const route = ROUTES[head.path];
      if (!route) return { ok: false, endpoint: 'other', response: errorResponse('not_found', `no route for ${head.path}`) };
      const { endpoint } = route;
      if (head.method !== route.method) {
        const allow = route.method.toUpperCase();
        return { ok: false, endpoint, response: errorResponse('method_not_allowed', `${head.path} accepts ${allow} only`, 405, { Allow: allow }) };
      }
      const key = authenticate(head.authorization);
      if (key === undefined) {
        const message = keyDigests.length === 0 ? 'the publish API is disabled: no API keys are configured' : 'missing or unknown API key';
        return { ok: false, endpoint, response: errorResponse('unauthorized', message, 401, { 'WWW-Authenticate': 'Bearer' }) };
      }
      const at = now();
      if (!limiter.take(key, at)) {
        return {
          ok: false,
          endpoint,
          response: errorResponse('rate_limited', 'API key over its request rate', 429, { 'Retry-After': String(limiter.retryAfterSec(key, at)) }),
        };
      }
      if (route.method === 'get') return { ok: true, endpoint, key, body: false };
      // Checked before the body is read: an invalid key (an empty header too) is 400 whatever the body.
      const idem = head.idempotencyKey;
      if (idem !== undefined && endpoint !== 'publish') {
        return { ok: false, endpoint, response: errorResponse('bad_request', 'the Idempotency-Key header applies to /v1/publish; batch messages carry "idempotencyKey" each') };
      }
      if (idem !== undefined && !isValidIdempotencyKey(idem)) {
        return { ok: false, endpoint, response: errorResponse('bad_request', 'the Idempotency-Key header must be 1 to 128 printable ASCII characters') };
      }
      const mediaType = head.contentType.split(';')[0]?.trim().toLowerCase();
      if (mediaType !== 'application/json') {
        return { ok: false, endpoint, response: errorResponse('unsupported_media_type', 'Content-Type must be application/json', 415) };
      }
      const len = head.contentLength === '' ? 0 : Number(head.contentLength);
      if (len > opts.maxPublishBytes) {
        return { ok: false, endpoint, response: errorResponse('too_large', `body over ${opts.maxPublishBytes} bytes`, 413) };
      }
      return idem === undefined ? { ok: true, endpoint, key, body: true } : { ok: true, endpoint, key, body: true, idempotencyKey: idem };
    },
    async handle(endpoint, input, idempotencyKey) {
      try {
        if (endpoint === 'publish') return await publishOne(input, idempotencyKey);
        if (endpoint === 'batch') return await publishBatch(input);
        if (endpoint === 'disconnect') return await disconnect(input);
        if (endpoint === 'subscribe' || endpoint === 'unsubscribe') return await serverSubscription(endpoint, input);
        if (endpoint === 'presence') return await presence(input);
        if (endpoint === 'presence_stats') return await presenceStats(input);
        if (endpoint === 'history') return await historyRead(input);
        if (endpoint === 'channels') return await channelList(input);
        return errorResponse('not_found', 'no such route');
      } catch (e) {
        return errorResponseOf(e);
      }
    },
  };
}
