/**
 * The Pusher Channels HTTP API (contract 1.1, "Pusher Channels compatibility";
 * Pusher's "HTTP API reference" for the details), over the same hub as the
 * native API: `/apps/{id}/events`, `/batch_events`, `/channels`,
 * `/channels/{name}`, `/channels/{name}/users`,
 * `/users/{user_id}/terminate_connections`. Transport-agnostic, like
 * api/publish-api.ts: the route (pusher/http-route.ts) asks `route` whether
 * and how much body to read, then calls `handle`.
 *
 * Every request is signed (pusher/signing.ts). Errors are answered as Pusher's
 * API answers them: the status, and a plain-text explanation as the body
 * (what the Pusher libraries put in their RequestError). Every answer is
 * counted in pubgate_pusher_api_requests_total{endpoint,result}; `result` is
 * `ok` or one of PUSHER_API_REJECTS (docs/errors.md).
 *
 * An event reaches the channel's subscribers as a native `message` frame whose
 * data is `{"event":<name>,"data":<data>}` (data parsed as JSON when it is JSON
 * text, else the string): native subscribers of the default app's channels get
 * it as it is, Pusher sockets as the event (the Pusher transport maps it back).
 */
import { MAX_ANSWER_CHANNELS, MAX_QUERY_PREFIX } from '../broker/control.js';
import { isGatewayError } from '../errors.js';
import type { CountResult, QuestionOf } from '../hub/control.js';
import type { PublishOptions } from '../hub/hub.js';
import { createKeyedLimiter } from '../limits/rate.js';
import type { PresenceSnapshot, PresenceStats } from '../presence/store.js';
import type { PusherApp, PusherApps } from './apps.js';
import { USER_CHANNEL_RE, internalChannel, isValidPusherChannel } from './channels.js';
import { verifySignedRequest, type SignatureReject } from './signing.js';
import { appUserId, hubUserOf } from './users.js';

/** Channels one event may name (Pusher's limit). */
export const MAX_EVENT_CHANNELS = 100;
/** Events in one batch (Pusher's limit on its multi-tenant clusters). */
export const MAX_BATCH_EVENTS = 10;
/** Longest event name (the Pusher libraries' limit). */
export const MAX_EVENT_NAME = 200;
/** Presence store reads in flight for one GET /channels answer. */
const ATTR_READS_AT_ONCE = 32;
/** Longest user id in terminate_connections. */
export const MAX_USER_ID = 1024;
/** Channels listed in one GET /channels answer, at most (the first in name order; the count query's bound). */
export const MAX_LISTED_CHANNELS = MAX_ANSWER_CHANNELS;
/** Header of a GET /channels answer that lists the first MAX_LISTED_CHANNELS channels of more. */
export const MORE_CHANNELS_HEADER = 'X-Pubgate-More-Channels';

export type PusherApiEndpoint = 'events' | 'batch_events' | 'channels' | 'channel' | 'users' | 'terminate' | 'other';

/** Every way a request is refused; `result` label of pubgate_pusher_api_requests_total beside `ok`. */
export const PUSHER_API_REJECTS = [
  'unknown_app',
  'not_found',
  'method_not_allowed',
  'auth_params',
  'unknown_key',
  'auth_version',
  'expired',
  'body_md5',
  'bad_signature',
  'bad_request',
  'too_large',
  'request_timeout',
  'rate_limited',
  'unavailable',
  'internal',
] as const satisfies readonly (string | SignatureReject)[];

export type PusherApiReject = (typeof PUSHER_API_REJECTS)[number];
export type PusherApiResult = 'ok' | PusherApiReject;

/** HTTP status of each reject. */
export const PUSHER_REJECT_STATUS: Readonly<Record<PusherApiReject, number>> = {
  unknown_app: 404,
  not_found: 404,
  method_not_allowed: 405,
  auth_params: 401,
  unknown_key: 401,
  auth_version: 401,
  expired: 401,
  body_md5: 401,
  bad_signature: 401,
  bad_request: 400,
  too_large: 413,
  request_timeout: 408,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};

export interface PusherApiResponse {
  readonly status: number;
  readonly body: string;
  /** `application/json` for answers, `text/plain` for errors (as Pusher's API). */
  readonly contentType: string;
  readonly result: PusherApiResult;
  readonly headers?: Readonly<Record<string, string>>;
}

/** What the hub offers this API (gateway.ts wires it). */
export interface PusherApiSink {
  /** As Hub.publishData: raw JSON data, through history on history channels; rejects with unavailable. */
  publishData(channel: string, rawData: string, opts?: PublishOptions): Promise<unknown>;
  /** Who is in a presence channel, cluster-wide; rejects with bad_request when the channel keeps no presence. */
  presence(channel: string): Promise<PresenceSnapshot>;
  presenceStats(channel: string): Promise<PresenceStats>;
  /**
   * The subscriptions of an app's channels on every node, summed (a count
   * query to every node: hub/control.ts); rejects with unavailable when a
   * node does not answer.
   */
  channelCounts(q: QuestionOf): Promise<CountResult>;
  /** Closes every connection of a (hub) user on every node. */
  disconnectUser(user: string): Promise<void>;
}

export interface PusherHttpApiOptions {
  readonly apps: PusherApps;
  readonly sink: PusherApiSink;
  /** Largest body read (PUBGATE_MAX_PUBLISH_BYTES). */
  readonly maxBodyBytes: number;
  /** Requests per second per app (PUBGATE_API_RATE); 0: unlimited. */
  readonly apiRate: number;
  /**
   * The hub connection (`welcome.conn` form, what PublishOptions.exclude takes)
   * of a Pusher `socket_id`; undefined when it names none. connOfSocketId when absent.
   */
  readonly socketConn?: (socketId: string) => string | undefined;
  /** The hub user of a Pusher user id of an app (what the Pusher sockets register as); users.ts hubUserOf when absent. */
  readonly hubUser?: (app: PusherApp, userId: string) => string;
  /** Messages published (pubgate_messages_published_total). */
  readonly published: (count: number) => void;
  readonly nowSec?: () => number;
  readonly nowMs?: () => number;
}

/** A request as the route copied it. */
export interface PusherApiRequest {
  /** Lower case, as uWS gives it. */
  readonly method: string;
  /** The path as sent (not decoded). */
  readonly path: string;
  readonly query: string;
}

export type PusherRoute =
  | { readonly ok: false; readonly endpoint: PusherApiEndpoint; readonly response: PusherApiResponse }
  | { readonly ok: true; readonly endpoint: PusherApiEndpoint; readonly app: PusherApp; readonly body: boolean; readonly params: readonly string[] };

export interface PusherHttpApi {
  /** Which endpoint and app a request is for, decided from its head (before any body is read). */
  route(req: PusherApiRequest, contentLength: string): PusherRoute;
  /** Verifies the signature (with the body) and answers. */
  handle(req: PusherApiRequest, route: PusherRoute & { ok: true }, body: string): Promise<PusherApiResponse>;
}

/** Pusher's socket_id form (what its libraries validate). */
const SOCKET_ID_RE = /^\d{1,20}\.\d{1,20}$/;

/**
 * The hub connection (`welcome.conn`) a Pusher socket id names, on whichever
 * node holds it: socket ids are `<node prefix as a decimal>.<connection
 * number>` (the Pusher WebSocket side, pusher/socket-id.ts), conn texts the
 * 6-hex-digit node prefix and the number in base 36 (transport/conn-id.ts).
 * The request may land on any node, so this does not ask the local node: the
 * hub's exclude envelope travels to all nodes and the owning one matches it.
 * Undefined for a socket id no node can have given.
 */
export function connOfSocketId(socketId: string): string | undefined {
  const m = /^(\d{1,10})\.(\d{1,15})$/.exec(socketId);
  if (!m) return undefined;
  const node = Number(m[1]);
  const n = Number(m[2]);
  if (node > 0xffffff || !Number.isSafeInteger(n)) return undefined;
  return node.toString(16).padStart(6, '0') + n.toString(36);
}

export function pusherError(result: PusherApiReject, message: string, headers?: Readonly<Record<string, string>>): PusherApiResponse {
  return { status: PUSHER_REJECT_STATUS[result], body: `${message}\n`, contentType: 'text/plain', result, ...(headers ? { headers } : {}) };
}

const ok = (body: unknown, headers?: Readonly<Record<string, string>>): PusherApiResponse => ({
  status: 200,
  body: JSON.stringify(body),
  contentType: 'application/json',
  result: 'ok',
  ...(headers ? { headers } : {}),
});

/** A refusal of the request's content (400): thrown inside handlers, answered by handle. */
class BadRequest extends Error {}

/**
 * The native data of an event: `{"event":name,"data":<data>}`, data parsed as
 * JSON when it is JSON text (kept as it was sent, byte for byte), else the
 * string.
 */
export function eventData(name: string, data: string): string {
  let json: boolean;
  try {
    JSON.parse(data);
    json = true;
  } catch {
    json = false;
  }
  return `{"event":${JSON.stringify(name)},"data":${json ? data.trim() : JSON.stringify(data)}}`;
}

function safeDecode(s: string): string | undefined {
  try {
    return decodeURI(s);
  } catch {
    return undefined;
  }
}

interface ChannelAttrs {
  occupied?: boolean;
  user_count?: number;
  subscription_count?: number;
}

export function createPusherHttpApi(opts: PusherHttpApiOptions): PusherHttpApi {
  const { apps, sink } = opts;
  const nowSec = opts.nowSec ?? (() => Date.now() / 1000);
  const nowMs = opts.nowMs ?? (() => performance.now());
  const limiter = createKeyedLimiter(opts.apiRate, Math.max(1, opts.apiRate * 2), Math.max(1, apps.list.length));
  const hubUser = opts.hubUser ?? hubUserOf;
  const socketConn = opts.socketConn ?? connOfSocketId;

  function parseJson(body: string): Record<string, unknown> {
    let v: unknown;
    try {
      v = JSON.parse(body);
    } catch {
      throw new BadRequest('the body is not valid JSON');
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new BadRequest('the body must be a JSON object');
    return v as Record<string, unknown>;
  }

  interface Event {
    readonly name: string;
    readonly data: string;
    readonly channels: readonly string[];
    readonly exclude: string | undefined;
    /** The `info` attributes to answer for its channels, when asked. */
    readonly info: { users: boolean; subs: boolean } | undefined;
  }

  /** Validates one event object: name, data (a string), channel or channels, socket_id. */
  function event(o: Record<string, unknown>, where: string, many: boolean): Event {
    const { name, data, socket_id: socketId } = o;
    if (typeof name !== 'string' || name === '' || name.length > MAX_EVENT_NAME) throw new BadRequest(`${where}name must be a string of 1 to ${MAX_EVENT_NAME} characters`);
    if (typeof data !== 'string') throw new BadRequest(`${where}data must be a string (the libraries send JSON text)`);
    let channels: unknown[];
    if (o.channel !== undefined && o.channels !== undefined) throw new BadRequest(`${where}give channel or channels, not both`);
    if (o.channel !== undefined) channels = [o.channel];
    else if (many && Array.isArray(o.channels)) channels = o.channels;
    else throw new BadRequest(many ? `${where}channels (an array) or channel is required` : `${where}channel is required`);
    if (channels.length === 0 || channels.length > MAX_EVENT_CHANNELS) throw new BadRequest(`${where}channels must hold 1 to ${MAX_EVENT_CHANNELS} channels`);
    // A user channel (#server-to-user-<id>, pusher.sendToUser) is the server's to publish on.
    for (const c of channels) if (!isValidPusherChannel(c) && !(typeof c === 'string' && USER_CHANNEL_RE.test(c))) throw new BadRequest(`${where}invalid channel name: ${JSON.stringify(String(c)).slice(0, 220)}`);
    if (new Set(channels).size !== channels.length) throw new BadRequest(`${where}channels names a channel twice`);
    if (socketId !== undefined && (typeof socketId !== 'string' || !SOCKET_ID_RE.test(socketId))) throw new BadRequest(`${where}invalid socket_id`);
    const exclude = typeof socketId === 'string' ? socketConn(socketId) : undefined;
    if (o.info !== undefined && typeof o.info !== 'string') throw new BadRequest(`${where}info must be a comma-separated string`);
    const info = typeof o.info === 'string' && o.info !== '' ? infoAttrs(o.info) : undefined;
    return { name, data, channels: channels as string[], exclude, info };
  }

  /** Publishes validated events in order; stops at the first refusal (what went before stays published). */
  async function publish(app: PusherApp, events: readonly Event[]): Promise<void> {
    let n = 0;
    try {
      for (const e of events) {
        const raw = eventData(e.name, e.data);
        const popts = e.exclude === undefined ? undefined : { exclude: e.exclude };
        await Promise.all(e.channels.map((c) => sink.publishData(internalChannel(app, c), raw, popts)));
        n += e.channels.length;
      }
    } finally {
      opts.published(n);
    }
  }

  /** The `info` attributes asked for, validated for the channel (user_count is for presence channels only, as Pusher). */
  function infoOf(params: ReadonlyMap<string, string>, presenceOnly: boolean): { users: boolean; subs: boolean } {
    const info = params.get('info');
    const want = info === undefined || info === '' ? { users: false, subs: false } : infoAttrs(info);
    if (want.users && !presenceOnly) throw new BadRequest('info=user_count is only available for presence channels');
    return want;
  }

  function infoAttrs(info: string): { users: boolean; subs: boolean } {
    const attrs = info.split(',');
    for (const a of attrs) if (a !== 'user_count' && a !== 'subscription_count') throw new BadRequest(`unknown info attribute: ${JSON.stringify(a).slice(0, 80)}`);
    return { users: attrs.includes('user_count'), subs: attrs.includes('subscription_count') };
  }

  /**
   * What an event with `info` answers about its channels once published:
   * subscription_count for each, user_count for presence channels (Pusher's
   * `{"channels":{name:{..}}}`).
   */
  async function eventInfo(app: PusherApp, e: Event): Promise<Record<string, ChannelAttrs>> {
    const out: Record<string, ChannelAttrs> = {};
    if (!e.info) return out;
    const want = e.info;
    const counts = want.subs ? await clusterCounts(app, e.channels) : new Map<string, number>();
    const got = await Promise.all(e.channels.map((c) => attrs(app, c, { users: want.users && c.startsWith('presence-'), subs: want.subs, occupied: false }, counts)));
    e.channels.forEach((c, i) => (out[c] = got[i] as ChannelAttrs));
    return out;
  }

  /**
   * The subscriptions of the named channels on every node (those that are not
   * presence channels: the presence store counts them). User channels are
   * counted by no node.
   */
  async function clusterCounts(app: PusherApp, names: readonly string[]): Promise<Map<string, number>> {
    const asked = names.filter((n) => !n.startsWith('presence-') && isValidPusherChannel(n));
    if (asked.length === 0) return new Map();
    return new Map((await sink.channelCounts({ app: app.id, channels: asked })).counts);
  }

  /**
   * One channel's attributes. Presence channels answer from the presence
   * store (cluster-wide: users, connections); other channels from `counts`,
   * the subscriptions summed over every node (clusterCounts).
   */
  async function attrs(app: PusherApp, name: string, want: { users: boolean; subs: boolean; occupied: boolean }, counts: ReadonlyMap<string, number>): Promise<ChannelAttrs> {
    const out: ChannelAttrs = {};
    if (name.startsWith('presence-')) {
      const st = await presenceStats(internalChannel(app, name));
      if (want.occupied) out.occupied = st.users > 0;
      if (want.users) out.user_count = st.users;
      if (want.subs) out.subscription_count = st.connections;
      return out;
    }
    const n = counts.get(name) ?? 0;
    if (want.occupied) out.occupied = n > 0;
    if (want.subs) out.subscription_count = n;
    return out;
  }

  /** Presence stats; a presence- channel whose namespace keeps no presence is empty. */
  async function presenceStats(internal: string): Promise<PresenceStats> {
    try {
      return await sink.presenceStats(internal);
    } catch (e) {
      if (isGatewayError(e) && e.code === 'bad_request') return { users: 0, connections: 0 };
      throw e;
    }
  }

  async function channelsList(app: PusherApp, params: ReadonlyMap<string, string>): Promise<PusherApiResponse> {
    const prefix = params.get('filter_by_prefix') ?? '';
    const info = infoOf(params, prefix.startsWith('presence-'));
    // No channel name is longer than a query's prefix may be: a longer prefix matches nothing.
    const sum = prefix.length > MAX_QUERY_PREFIX ? { counts: [], more: false } : await sink.channelCounts({ app: app.id, prefix });
    const counts = new Map(sum.counts);
    const names = [...counts.keys()];
    const channels: Record<string, ChannelAttrs> = {};
    // Attributes of presence channels are store reads: a bounded number at a time.
    for (let i = 0; i < names.length; i += ATTR_READS_AT_ONCE) {
      const part = names.slice(i, i + ATTR_READS_AT_ONCE);
      const got = info.users || info.subs ? await Promise.all(part.map((n) => attrs(app, n, { ...info, occupied: false }, counts))) : part.map(() => ({}));
      part.forEach((n, j) => (channels[n] = got[j] as ChannelAttrs));
    }
    return ok({ channels }, sum.more ? { [MORE_CHANNELS_HEADER]: 'true' } : undefined);
  }

  async function channelInfo(app: PusherApp, name: string, params: ReadonlyMap<string, string>): Promise<PusherApiResponse> {
    const info = infoOf(params, name.startsWith('presence-'));
    return ok(await attrs(app, name, { ...info, occupied: true }, await clusterCounts(app, [name])));
  }

  async function users(app: PusherApp, name: string): Promise<PusherApiResponse> {
    if (!name.startsWith('presence-')) throw new BadRequest('users are only available for presence channels');
    let p: PresenceSnapshot;
    try {
      p = await sink.presence(internalChannel(app, name));
    } catch (e) {
      if (isGatewayError(e) && e.code === 'bad_request') return ok({ users: [] });
      throw e;
    }
    return ok({ users: p.members.map((m) => ({ id: appUserId(app, m.user) })) });
  }

  /** Path → endpoint, app, and the decoded path parameters. */
  function parsePath(path: string): { endpoint: PusherApiEndpoint; appId: string; params: string[]; method: 'get' | 'post' } | undefined {
    const m = /^\/apps\/([^/]+)\/(.+)$/.exec(path);
    if (!m) return undefined;
    const appId = m[1] as string;
    const rest = (m[2] as string).split('/');
    let decoded: string[];
    try {
      decoded = rest.map((s) => decodeURIComponent(s));
    } catch {
      return undefined;
    }
    const [a, b, c, d] = decoded;
    if (rest.length === 1 && a === 'events') return { endpoint: 'events', appId, params: [], method: 'post' };
    if (rest.length === 1 && a === 'batch_events') return { endpoint: 'batch_events', appId, params: [], method: 'post' };
    if (rest.length === 1 && a === 'channels') return { endpoint: 'channels', appId, params: [], method: 'get' };
    if (rest.length === 2 && a === 'channels') return { endpoint: 'channel', appId, params: [b as string], method: 'get' };
    if (rest.length === 3 && a === 'channels' && c === 'users') return { endpoint: 'users', appId, params: [b as string], method: 'get' };
    if (rest.length === 3 && a === 'users' && c === 'terminate_connections') return { endpoint: 'terminate', appId, params: [b as string], method: 'post' };
    void d;
    return undefined;
  }

  return {
    route(req, contentLength) {
      const p = parsePath(req.path);
      if (!p) return { ok: false, endpoint: 'other', response: pusherError('not_found', `Not found: no route for ${req.path.slice(0, 200)}`) };
      const app = apps.byId(p.appId);
      if (!app) return { ok: false, endpoint: p.endpoint, response: pusherError('unknown_app', 'Unknown app: no app with this id') };
      if (req.method !== p.method) {
        const allow = p.method.toUpperCase();
        return { ok: false, endpoint: p.endpoint, response: pusherError('method_not_allowed', `Method not allowed: ${allow} only`, { Allow: allow }) };
      }
      const at = nowMs();
      if (!limiter.take(app.id, at)) {
        return { ok: false, endpoint: p.endpoint, response: pusherError('rate_limited', 'Too many requests for this app', { 'Retry-After': String(limiter.retryAfterSec(app.id, at)) }) };
      }
      const len = contentLength === '' ? 0 : Number(contentLength);
      if (p.method === 'post' && len > opts.maxBodyBytes) {
        return { ok: false, endpoint: p.endpoint, response: pusherError('too_large', `Request Entity Too Large: body over ${opts.maxBodyBytes} bytes`) };
      }
      return { ok: true, endpoint: p.endpoint, app, body: p.method === 'post', params: p.params };
    },
    async handle(req, r, body) {
      let check = verifySignedRequest({ method: req.method, path: req.path, query: req.query, body }, r.app, nowSec());
      if (!check.ok && check.reason === 'bad_signature' && req.path.includes('%')) {
        // The libraries sign the path as they build it (a user id unescaped)
        // while the HTTP client may percent-encode it on the wire: the decoded
        // path is what they signed then.
        const decoded = safeDecode(req.path);
        if (decoded !== undefined) check = verifySignedRequest({ method: req.method, path: decoded, query: req.query, body }, r.app, nowSec());
      }
      if (!check.ok) return pusherError(check.reason, check.message);
      try {
        const { app } = r;
        switch (r.endpoint) {
          case 'events': {
            const e = event(parseJson(body), '', true);
            await publish(app, [e]);
            return ok(e.info ? { channels: await eventInfo(app, e) } : {});
          }
          case 'batch_events': {
            const list = parseJson(body).batch;
            if (!Array.isArray(list) || list.length === 0 || list.length > MAX_BATCH_EVENTS) throw new BadRequest(`batch must be an array of 1 to ${MAX_BATCH_EVENTS} events`);
            // Everything is validated before anything is published: a bad batch publishes nothing.
            const events = list.map((e: unknown, i) => {
              if (e === null || typeof e !== 'object' || Array.isArray(e)) throw new BadRequest(`batch[${i}] must be an object`);
              return event(e as Record<string, unknown>, `batch[${i}].`, false);
            });
            await publish(app, events);
            if (!events.some((e) => e.info)) return ok({});
            // With info, one entry per event: the attributes of its channel.
            return ok({ batch: await Promise.all(events.map(async (e) => (await eventInfo(app, e))[e.channels[0] as string] ?? {})) });
          }
          case 'channels':
            return await channelsList(app, check.params);
          case 'channel': {
            const name = r.params[0] as string;
            if (!isValidPusherChannel(name)) throw new BadRequest('invalid channel name');
            return await channelInfo(app, name, check.params);
          }
          case 'users': {
            const name = r.params[0] as string;
            if (!isValidPusherChannel(name)) throw new BadRequest('invalid channel name');
            return await users(app, name);
          }
          case 'terminate': {
            const user = r.params[0] as string;
            if (user === '' || user.length > MAX_USER_ID) throw new BadRequest(`the user id must be 1 to ${MAX_USER_ID} characters`);
            await sink.disconnectUser(hubUser(app, user));
            return ok({});
          }
          default:
            return pusherError('not_found', 'Not found');
        }
      } catch (e) {
        if (e instanceof BadRequest) return pusherError('bad_request', e.message);
        if (isGatewayError(e) && e.code === 'unavailable') return pusherError('unavailable', `Service unavailable: ${e.message}`, { 'Retry-After': String(e.retryAfterSec ?? 1) });
        if (isGatewayError(e) && e.code === 'bad_request') return pusherError('bad_request', e.message);
        throw e;
      }
    },
  };
}
