/**
 * The admin console's HTTP surface on the admin port (docs/admin.md):
 * the static console (`/admin/`, `/admin/console.js`, `/admin/console.css`,
 * no token: they hold no data) and the JSON API `/admin/api/*`, every path of
 * which needs `Authorization: Bearer <PUBGATE_ADMIN_TOKEN>`, checked before
 * the route is looked up (an unknown path without the token is 401 too).
 *
 * Transport-agnostic like api/publish-api.ts: the transport copies the request
 * head, asks `preflight` whether to read a body (at most `maxPublishBytes`),
 * then calls `handle`. Writes go through the publish API's own sink
 * (PublishSink), so an admin publish, disconnect or server-side subscription
 * is exactly the one of /v1/*; the reads ask every node (cluster control).
 */
import { timingSafeEqual } from 'node:crypto';
import { bearerDigest, errorResponseOf, historyEntriesJson, secretDigest, type PublishSink } from '../api/publish-api.js';
import type { BrokerStatus, NodeReport } from '../broker/broker.js';
import type { ChannelOptions } from '../channels/namespaces.js';
import { GatewayError, HTTP_STATUS, errorBody, type ErrorCode } from '../errors.js';
import { MAX_QUERY_CHANNELS, MAX_QUERY_TOP } from '../broker/control.js';
import { busiestFirst, type CountResult, type QuestionOf } from '../hub/control.js';
import { isValidChannel } from '../protocol/channel.js';
import { objectMembers } from '../protocol/json-scan.js';
import { presenceMembersJson } from '../protocol/frames.js';
import type { ConsoleFiles } from './console-files.js';

export const ADMIN_ENDPOINTS = ['console', 'overview', 'channels', 'channel', 'publish', 'disconnect', 'subscribe', 'unsubscribe', 'other'] as const;
/** The `endpoint` label of pubgate_admin_requests_total (a closed set). */
export type AdminEndpoint = (typeof ADMIN_ENDPOINTS)[number];

/** Busiest channels listed at most (`limit` of /admin/api/channels), and by default. */
export const MAX_ADMIN_CHANNELS = 100;
export const DEFAULT_ADMIN_CHANNELS = 20;
/** History messages the inspector shows at most, and by default. */
export const MAX_INSPECT_MESSAGES = 100;
export const DEFAULT_INSPECT_MESSAGES = 20;
/** Longest `prefix` of /admin/api/channels (a channel name is at most 200 characters). */
export const MAX_ADMIN_PREFIX = 200;

/** The console's security headers (the static files and the API's answers). */
export const ADMIN_HEADERS: Readonly<Record<string, string>> = {
  'Cache-Control': 'no-store',
  'Content-Security-Policy': "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
};

export interface AdminRequestHead {
  readonly method: string; // lower case, as uWS gives it
  readonly path: string;
  /** Raw query string without '?', '' when none. */
  readonly query: string;
  readonly authorization: string;
  readonly contentType: string;
  readonly contentLength: string;
}

export interface AdminResponse {
  readonly status: number;
  readonly body: string | Buffer;
  readonly headers?: Readonly<Record<string, string>>;
  /** application/json when absent. */
  readonly contentType?: string;
}

export type AdminPreflight =
  /** Answer this at once (static files, redirects, refusals). */
  | { readonly kind: 'answer'; readonly endpoint: AdminEndpoint; readonly response: AdminResponse }
  /** Serve with handle(): `body` true for a POST (read it first), false for a GET (handle gets the query). */
  | { readonly kind: 'serve'; readonly endpoint: AdminEndpoint; readonly body: boolean };

export interface AdminApi {
  preflight(head: AdminRequestHead): AdminPreflight;
  /** `input` is the body for POST endpoints, the query string for GET ones. */
  handle(endpoint: AdminEndpoint, input: string): Promise<AdminResponse>;
}

export interface AdminApiOptions {
  /** PUBGATE_ADMIN_CONSOLE. */
  readonly enabled: boolean;
  /** PUBGATE_ADMIN_TOKEN; undefined: the console is off (404). */
  readonly token: string | undefined;
  readonly maxPublishBytes: number;
  readonly files: ConsoleFiles;
  /** The publish API's sink: the same publish, disconnect, server-side subscriptions, presence and history. */
  readonly sink: PublishSink;
  /** The live nodes and what they reported (Broker.nodeInfos). */
  readonly nodes: () => Promise<readonly NodeReport[]>;
  /** Sums every node's subscription counts, with each node's total (ClusterControl.queryByNode). */
  readonly counts: (q: QuestionOf) => Promise<CountResult>;
  readonly channelOptions: (channel: string) => ChannelOptions;
  /** This node's broker instance and node id. */
  readonly self: string;
  readonly selfId: string;
  readonly brokerKind: 'memory' | 'redis' | 'redis-sentinel' | 'redis-cluster';
  readonly now?: () => number;
}

const ROUTES: Readonly<Record<string, { readonly endpoint: AdminEndpoint; readonly method: 'get' | 'post' }>> = {
  '/admin/api/overview': { endpoint: 'overview', method: 'get' },
  '/admin/api/channels': { endpoint: 'channels', method: 'get' },
  '/admin/api/channel': { endpoint: 'channel', method: 'get' },
  '/admin/api/publish': { endpoint: 'publish', method: 'post' },
  '/admin/api/disconnect': { endpoint: 'disconnect', method: 'post' },
  '/admin/api/subscribe': { endpoint: 'subscribe', method: 'post' },
  '/admin/api/unsubscribe': { endpoint: 'unsubscribe', method: 'post' },
};

const STATIC: Readonly<Record<string, string>> = {
  '/admin/': 'index.html',
  '/admin/console.js': 'console.js',
  '/admin/console.css': 'console.css',
};

function json(status: number, body: string, headers?: Record<string, string>): AdminResponse {
  return { status, body, headers: { ...ADMIN_HEADERS, ...headers } };
}

export function adminError(code: ErrorCode, message: string, status = HTTP_STATUS[code], headers?: Record<string, string>): AdminResponse {
  return json(status, errorBody(code, message), headers);
}

/** The publish API's answer for an error, with the admin headers. */
function fromError(e: unknown): AdminResponse {
  const r = errorResponseOf(e);
  return json(r.status, r.body, r.headers ? { ...r.headers } : undefined);
}

/** The overview's name of a broker kind. */
function brokerName(kind: AdminApiOptions['brokerKind']): 'memory' | 'redis' | 'sentinel' | 'cluster' {
  return kind === 'redis-sentinel' ? 'sentinel' : kind === 'redis-cluster' ? 'cluster' : kind;
}

/** A node id from an instance name (`<nodeId>~<suffix>`, redis-broker.ts instanceName). */
function idOf(instance: string, o: AdminApiOptions): string {
  if (instance === o.self) return o.selfId;
  const i = instance.lastIndexOf('~');
  return i > 0 ? instance.slice(0, i) : instance;
}

const count = (v: unknown): number => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : 0);
const shortText = (v: unknown, fallback: string): string => (typeof v === 'string' && v.length <= 256 ? v : fallback);
const BROKER_STATES: readonly BrokerStatus[] = ['ready', 'connecting', 'down'];

/** One node of the overview, from what it reported (validated field by field: another node, maybe another version, wrote it). */
function nodeOf(r: NodeReport, o: AdminApiOptions): Record<string, unknown> {
  const info = r.info !== null && typeof r.info === 'object' && !Array.isArray(r.info) ? (r.info as Record<string, unknown>) : {};
  const c = info.connections !== null && typeof info.connections === 'object' ? (info.connections as Record<string, unknown>) : {};
  const websocket = count(c.websocket);
  const sse = count(c.sse);
  const pusher = count(c.pusher);
  const reportedAt = new Date(r.reportedAtMs > 0 ? r.reportedAtMs : (o.now ?? Date.now)()).toISOString();
  const started = typeof info.startedAt === 'string' && !Number.isNaN(Date.parse(info.startedAt)) ? new Date(info.startedAt).toISOString() : reportedAt;
  return {
    instance: r.instance,
    id: shortText(info.id, idOf(r.instance, o)),
    version: shortText(info.version, 'unknown'),
    startedAt: started,
    uptimeSeconds: count(info.uptimeSeconds),
    connections: { total: c.total === undefined ? websocket + sse + pusher : count(c.total), websocket, sse, pusher },
    subscriptions: count(info.subscriptions),
    channels: count(info.channels),
    broker: BROKER_STATES.includes(info.broker as BrokerStatus) ? info.broker : 'ready',
    draining: info.draining === true,
    self: r.instance === o.self,
    reportedAt,
  };
}

export function createAdminApi(o: AdminApiOptions): AdminApi {
  const tokenDigest = o.token !== undefined ? secretDigest(o.token) : undefined;
  const off = !o.enabled
    ? 'the admin console is off on this node (PUBGATE_ADMIN_CONSOLE=false)'
    : o.token === undefined
      ? 'the admin console is off: set PUBGATE_ADMIN_TOKEN'
      : undefined;

  function authorized(authorization: string): boolean {
    const d = bearerDigest(authorization);
    return d !== undefined && tokenDigest !== undefined && timingSafeEqual(tokenDigest, d);
  }

  function parseBody(body: string): Record<string, unknown> {
    let v: unknown;
    try {
      v = JSON.parse(body);
    } catch {
      throw new GatewayError('bad_request', 'body is not valid JSON');
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new GatewayError('bad_request', 'body must be a JSON object');
    return v as Record<string, unknown>;
  }

  function userOf(v: Record<string, unknown>): string {
    const user = v.user;
    if (typeof user !== 'string' || user === '' || user.length > 1024) throw new GatewayError('bad_request', 'body.user must be a non-empty string (at most 1024 characters)');
    return user;
  }

  function channelOf(v: unknown, where: string): string {
    if (!isValidChannel(v)) throw new GatewayError('bad_request', `${where} is not a valid channel name`);
    return v;
  }

  /** A whole number query parameter in [min, max]; `def` when absent. */
  function intParam(q: URLSearchParams, name: string, min: number, max: number, def: number): number {
    const v = q.get(name);
    if (v === null || v === '') return def;
    if (!/^[0-9]{1,6}$/.test(v) || Number(v) < min || Number(v) > max) throw new GatewayError('bad_request', `${name} must be a whole number from ${min} to ${max}`);
    return Number(v);
  }

  async function overview(): Promise<AdminResponse> {
    const reports = await o.nodes();
    const nodes = reports.map((r) => nodeOf(r, o)).sort((a, b) => {
      const x = `${String(a.id)}\n${String(a.instance)}`;
      const y = `${String(b.id)}\n${String(b.instance)}`;
      return x < y ? -1 : x > y ? 1 : 0;
    });
    let connections = 0;
    let subscriptions = 0;
    for (const n of nodes) {
      connections += (n.connections as { total: number }).total;
      subscriptions += n.subscriptions as number;
    }
    return json(200, JSON.stringify({
      generatedAt: new Date((o.now ?? Date.now)()).toISOString(),
      broker: brokerName(o.brokerKind),
      totals: { nodes: nodes.length, connections, subscriptions },
      nodes,
    }));
  }

  async function busiest(query: string): Promise<AdminResponse> {
    const q = new URLSearchParams(query);
    const limit = intParam(q, 'limit', 1, MAX_ADMIN_CHANNELS, DEFAULT_ADMIN_CHANNELS);
    const prefix = q.get('prefix') ?? '';
    if (prefix.length > MAX_ADMIN_PREFIX) throw new GatewayError('bad_request', `prefix must be at most ${MAX_ADMIN_PREFIX} characters`);
    // Two steps: every node lists its busiest channels (the candidates), then
    // the first `limit` candidates are counted exactly on every node. A sum of
    // the nodes' tops alone would miss a channel's subscribers on a node where
    // it is not among the busiest.
    const top = await o.counts({ app: '', prefix, top: MAX_QUERY_TOP });
    const names = top.counts.slice(0, Math.min(limit, MAX_QUERY_CHANNELS)).map(([name]) => name);
    // The exact counts list only the named channels that still have subscribers.
    const exact = names.length === 0 ? [] : [...(await o.counts({ app: '', channels: names })).counts];
    const list = exact.sort(busiestFirst).map(([channel, subscribers]) => ({ channel, subscribers }));
    return json(200, JSON.stringify({ channels: list, more: top.more || top.counts.length > names.length }));
  }

  /** The inspector: subscribers (per node), presence and the last history messages of one channel. */
  async function inspect(query: string): Promise<AdminResponse> {
    const q = new URLSearchParams(query);
    const name = q.get('channel');
    if (name === null || name === '') throw new GatewayError('bad_request', 'the channel query parameter is required');
    const channel = channelOf(name, 'channel');
    const messages = intParam(q, 'messages', 0, MAX_INSPECT_MESSAGES, DEFAULT_INSPECT_MESSAGES);
    const opts = o.channelOptions(channel);
    const [counts, presence, history] = await Promise.all([
      o.counts({ app: '', channels: [channel] }),
      opts.presence ? o.sink.presence(channel) : Promise.resolve(undefined),
      opts.history ? o.sink.history(channel, Math.max(1, messages)) : Promise.resolve(undefined),
    ]);
    const subscribers = counts.counts.find((c) => c[0] === channel)?.[1] ?? 0;
    const nodes = (counts.byNode ?? []).map(([instance, n]) => ({ instance, id: idOf(instance, o), subscribers: n }));
    let presenceText = 'null';
    if (presence) {
      presenceText = `{"users":${presence.users},"connections":${presence.connections},"members":${presenceMembersJson(presence.members)},"truncated":${presence.truncated}}`;
    }
    let historyText = 'null';
    if (history) {
      const entries = historyEntriesJson(messages === 0 ? [] : history.frames);
      historyText = `{"epoch":${JSON.stringify(history.position.epoch)},"offset":${history.position.offset},"messages":${entries}}`;
    }
    const head = `{"channel":${JSON.stringify(channel)},"subscribers":${subscribers},"nodes":${JSON.stringify(nodes)}`;
    return json(200, `${head},"presence":${presenceText},"history":${historyText}}`);
  }

  async function publish(body: string): Promise<AdminResponse> {
    const v = parseBody(body);
    const channel = channelOf(v.channel, 'body.channel');
    const span = objectMembers(body).get('data');
    if (!('data' in v) || !span) throw new GatewayError('bad_request', 'body.data is required');
    const r = await o.sink.publishData(channel, body.slice(span.start, span.end));
    return json(200, JSON.stringify(r.offset === undefined ? { channel } : { channel, offset: r.offset }));
  }

  async function disconnect(body: string): Promise<AdminResponse> {
    const user = userOf(parseBody(body));
    await o.sink.disconnectUser(user);
    return json(200, JSON.stringify({ user }));
  }

  async function serverSubscription(op: 'subscribe' | 'unsubscribe', body: string): Promise<AdminResponse> {
    const v = parseBody(body);
    const user = userOf(v);
    const channel = channelOf(v.channel, 'body.channel');
    await o.sink.serverSubscription(op, user, channel);
    return json(200, JSON.stringify({ user, channel }));
  }

  return {
    preflight(head) {
      const { path, method } = head;
      if (off !== undefined) return { kind: 'answer', endpoint: 'other', response: adminError('not_found', off) };
      if (path === '/admin' || path === '/admin/' || STATIC[path] !== undefined) {
        if (method !== 'get' && method !== 'head') {
          return { kind: 'answer', endpoint: 'console', response: adminError('method_not_allowed', `${path} accepts GET only`, 405, { Allow: 'GET, HEAD' }) };
        }
        if (path === '/admin') {
          return { kind: 'answer', endpoint: 'console', response: { status: 308, body: '', headers: { ...ADMIN_HEADERS, Location: '/admin/' }, contentType: 'text/plain; charset=utf-8' } };
        }
        const file = o.files.get(STATIC[path] as string);
        if (!file) return { kind: 'answer', endpoint: 'console', response: adminError('not_found', 'the admin console files are not installed on this node') };
        return { kind: 'answer', endpoint: 'console', response: { status: 200, body: file.body, headers: ADMIN_HEADERS, contentType: file.type } };
      }
      if (!path.startsWith('/admin/api/') && path !== '/admin/api') return { kind: 'answer', endpoint: 'other', response: adminError('not_found', `no route for ${path.slice(0, 200)}`) };
      // The token first: without it nothing, not even which paths exist, is told.
      if (!authorized(head.authorization)) {
        return {
          kind: 'answer',
          endpoint: 'other',
          response: adminError('unauthorized', 'missing or wrong admin token (Authorization: Bearer <PUBGATE_ADMIN_TOKEN>)', 401, { 'WWW-Authenticate': 'Bearer realm="pubgate-admin"' }),
        };
      }
      const route = ROUTES[path];
      if (!route) return { kind: 'answer', endpoint: 'other', response: adminError('not_found', `no route for ${path.slice(0, 200)}`) };
      const { endpoint } = route;
      if (method !== route.method) {
        const allow = route.method.toUpperCase();
        return { kind: 'answer', endpoint, response: adminError('method_not_allowed', `${path} accepts ${allow} only`, 405, { Allow: allow }) };
      }
      if (route.method === 'get') return { kind: 'serve', endpoint, body: false };
      const mediaType = head.contentType.split(';')[0]?.trim().toLowerCase();
      if (mediaType !== 'application/json') return { kind: 'answer', endpoint, response: adminError('unsupported_media_type', 'Content-Type must be application/json', 415) };
      const len = head.contentLength === '' ? 0 : Number(head.contentLength);
      if (len > o.maxPublishBytes) return { kind: 'answer', endpoint, response: adminError('too_large', `body over ${o.maxPublishBytes} bytes`, 413) };
      return { kind: 'serve', endpoint, body: true };
    },

    async handle(endpoint, input) {
      try {
        switch (endpoint) {
          case 'overview':
            return await overview();
          case 'channels':
            return await busiest(input);
          case 'channel':
            return await inspect(input);
          case 'publish':
            return await publish(input);
          case 'disconnect':
            return await disconnect(input);
          case 'subscribe':
          case 'unsubscribe':
            return await serverSubscription(endpoint, input);
          default:
            return adminError('not_found', 'no such route');
        }
      } catch (e) {
        return fromError(e);
      }
    },
  };
}
