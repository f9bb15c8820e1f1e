/**
 * The pubgate client: one logical connection that survives node restarts,
 * drains, network loss and token expiry.
 *
 * States: `connecting` (socket opening, waiting for `welcome`) → `connected`
 * → `disconnected` (waiting to reconnect) → `connecting` → ... and `closed`
 * (terminal: `close()`, or a close code that means "stop").
 */
import { DEFAULT_BACKOFF, backoffWindow, fullJitter, reconnectDelay, reconnectPlan, type BackoffOptions } from './backoff.js';
import { Emitter, rethrowLater } from './emitter.js';
import { PubgateError } from './errors.js';
import { joinEvent, leaveEvent, presenceResult, presenceStats, type PresenceInfo, type PresenceResult, type PresenceStats, type SubscriptionEvents } from './presence.js';
import {
  ABNORMAL_CLOSURE,
  BEARER_PREFIX,
  SUBPROTOCOL,
  isValidChannel,
  type JoinFrame,
  type LeaveFrame,
  type MessageFrame,
  type ReplyFrame,
  type ServerFrame,
  type SinceOffset,
  type SubscribedFrame,
  type UnsubscribedFrame,
  type WelcomeFrame,
} from './protocol.js';
import { SseSocket, globalFetch, sseUrlFor, type SseFetch } from './sse.js';
import { tokenExpiry } from './token.js';

/**
 * What the client needs of a WebSocket: the browser's `WebSocket`, Node 22's
 * global one, or the `ws` package's (Node 20). The `on…` handlers are typed
 * `unknown` so that every implementation fits without a cast.
 */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: unknown;
  onmessage: unknown;
  onclose: unknown;
  onerror: unknown;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** How the client talks to the gateway: a WebSocket (`/ws`), or a Server-Sent Events stream (`/sse`, receive only). */
export type Transport = 'websocket' | 'sse';

export interface ConnectOptions {
  /**
   * The gateway's WebSocket URL (`wss://ws.example.com/ws`), or several: each
   * new attempt takes the next one, round robin.
   */
  readonly url: string | readonly string[];
  /**
   * A JWT. Without `getToken` it cannot be renewed: expiry (4001) then closes
   * the client. With neither `token` nor `getToken` the connection is
   * anonymous, or accepted by the gateway's connect proxy from the cookies
   * (then it is refreshed without a token, and reconnects after a 4001).
   */
  readonly token?: string;
  /**
   * Returns a fresh JWT. Called before the first connection when `token` is
   * not given, after a 4001 close, before reconnecting with a token that has
   * expired, and to `refresh` the token on an open connection before it expires.
   */
  readonly getToken?: () => string | Promise<string>;
  /** A WebSocket constructor; default `globalThis.WebSocket` (browsers, Node ≥ 22). On Node 20 pass the `ws` package's. */
  readonly WebSocket?: WebSocketConstructor;
  /** How the token travels: the `bearer.<jwt>` subprotocol (default) or the `access_token` query parameter. */
  readonly tokenTransport?: 'subprotocol' | 'query';
  /** A request (publish, subscribe, unsubscribe, refresh, ping, presence) not answered within this many ms fails with `timeout`. Default 10 000. */
  readonly requestTimeoutMs?: number;
  /** An attempt that has no `welcome` within this many ms is abandoned (reported as 1006). Default 10 000. */
  readonly connectTimeoutMs?: number;
  /** Reconnect backoff window, ms: from `minMs` (default 500) doubling up to `maxMs` (default 20 000). */
  readonly backoff?: Partial<BackoffOptions>;
  /** A connection that lasted this long resets the backoff. Default 5 000 ms. */
  readonly stableAfterMs?: number;
  /** A publish while not connected: `queue` it (default, up to `maxQueuedPublishes`) or `reject` it at once. */
  readonly offlinePublish?: 'queue' | 'reject';
  /** Bound of the offline publish queue. Default 100; a publish beyond it fails with `queue_full`. */
  readonly maxQueuedPublishes?: number;
  /** Publish frames larger than this (UTF-8 bytes) fail with `too_large` instead of being sent (the gateway would close with 1009). Default 16 384, the gateway's default `maxPayloadLength`. */
  readonly maxFrameBytes?: number;
  /** Send `refresh` with a token from `getToken` before the current one expires. Default true. */
  readonly autoRefresh?: boolean;
  /** Send a `ping` frame when nothing arrived for one server ping interval, and reconnect when it gets no reply. Default true. */
  readonly heartbeat?: boolean;
  /** Random source in [0, 1) for the backoff jitter (tests). Default Math.random. */
  readonly random?: () => number;
  /**
   * Returns a subscription token for `channel` (contract 1.1): a JWT your
   * backend signs with `sub` (the user), `channel` and `exp`, and optionally
   * `info` (the user's presence info in that channel). When set, it is called
   * before every subscribe frame the client sends: the first one (unless the
   * subscription was given a `token`), each resubscribe after a reconnect and
   * each retry, so an expired or revoked token is never sent again. Return
   * `undefined`, `null` or `''` to subscribe without a token (channels the
   * connection's claims or the subscribe proxy allow). Throwing (or taking
   * longer than `requestTimeoutMs`) is retried with backoff; throwing a
   * `PubgateError` with code `forbidden` refuses the subscription for good.
   * Never called for server-side subscriptions.
   */
  readonly getSubscriptionToken?: (channel: string) => SubscriptionToken | Promise<SubscriptionToken>;
  /**
   * The transports to use, in order of preference. Default
   * `['websocket', 'sse']`: WebSocket, and Server-Sent Events when the
   * WebSocket cannot open (its handshake fails, or it closes with 1006
   * before `welcome`, twice in a row). Over SSE the client receives
   * everything as over WebSocket, but socket `publish()`, `ping()` and
   * presence queries fail with `transport_unsupported`; it tries the
   * WebSocket again every `wsRetryMs` and moves back when it works.
   * `['sse']` uses SSE only; `['websocket']` never falls back.
   */
  readonly transports?: readonly Transport[];
  /** The SSE URL(s); default derived from `url` (`wss://h/ws` → `https://h/sse`). */
  readonly sseUrl?: string | readonly string[];
  /** A fetch with streamed bodies for SSE; default `globalThis.fetch` (browsers, Node ≥ 18). */
  readonly fetch?: SseFetch;
  /** While on SSE, try a WebSocket in the background after this many ms (jittered up to twice that). Default 30 000. */
  readonly wsRetryMs?: number;
  /** Over SSE, subscribes and unsubscribes within this many ms reopen the stream once. Default 50. */
  readonly sseDebounceMs?: number;
  /** Largest SSE line or event data (characters); a larger one ends the stream (1006). Default 1 MiB. */
  readonly maxEventBytes?: number;
}

/** What `getSubscriptionToken` returns: a JWT, or nothing to subscribe without a token. */
export type SubscriptionToken = string | undefined | null;

/** What the server said when it confirmed a subscription. */
export interface SubscribeResult {
  /**
   * History channels: the channel's offset (last message) when the
   * subscription was confirmed; with `rewind`, the offset of the last message
   * of the rewind (live delivery continues after it).
   */
  readonly offset?: number;
  readonly epoch?: string;
  /** Present when the subscribe carried `since`. */
  readonly recovered?: boolean;
}

/** Reported after every resubscribe that follows a reconnect. */
export interface ResubscribeInfo {
  readonly channel: string;
  /** The position sent with `since`; undefined for channels without history. */
  readonly since: SinceOffset | undefined;
  /**
   * true: every message published meanwhile was replayed (or is being), in order.
   * false: the gap could not be filled (too old, or the history was lost):
   *   reload the channel's state from your backend. The subscription is live either way.
   * undefined: the channel keeps no history; messages published while
   *   disconnected are lost.
   */
  readonly recovered: boolean | undefined;
}

export interface SubscribeOptions {
  /**
   * A subscription token (contract 1.1) for the first subscribe. Later
   * subscribes (after a reconnect, retries) take a fresh one from the
   * client's `getSubscriptionToken` when it is set, and this one again otherwise.
   */
  readonly token?: string;
  /**
   * Deliver the last `rewind` messages of the channel (fewer if fewer are
   * held) before the live ones (contract 1.1; the channel's namespace must
   * allow `rewind`, otherwise the subscription is refused with `bad_request`).
   * A positive integer. Only the first subscribe asks for it: after a
   * reconnect the client resubscribes with `since` from the last message it
   * delivered, so nothing is delivered twice and nothing is skipped. It is
   * used only when this call starts the channel's subscription; a channel this
   * client already subscribes to (another `subscribe()` call, a server-side
   * subscription) is not rewound again, and this subscription gets the live
   * messages from now on.
   */
  readonly rewind?: number;
  /** Called after each resubscribe that follows a reconnect (see ResubscribeInfo). */
  readonly onResubscribe?: (info: ResubscribeInfo) => void;
  /** Called when the server refuses the subscription for good (`forbidden`, `bad_request`, `limit_exceeded`, ...); it is then removed. */
  readonly onError?: (error: PubgateError) => void;
}

export interface PublishOptions {
  /**
   * `false`: the gateway delivers the message to every subscriber except this
   * connection (contract 1.1, `"echo":false` on the publish frame), so a
   * sender that renders its own message at once does not get it twice. Default true.
   */
  readonly echo?: boolean;
}

export type MessageHandler<T = unknown> = (data: T, message: MessageFrame) => void;

/** A message as a subscription's `message` event hands it: the frame, with `data` typed. */
export interface SubscriptionMessage<T = unknown> extends MessageFrame {
  readonly data: T;
}

/**
 * The server ended a subscription, or did not make one a backend asked for:
 * - no `reason`: a backend unsubscribed this user (`POST /v1/unsubscribe`);
 * - `limit_exceeded`: a backend's `POST /v1/subscribe` found this connection
 *   at the gateway's `maxSubscriptions` (it was not subscribed);
 * - `reconnected` (the client's own): a server-side subscription that the
 *   new connection, after a reconnect, did not have (it came from
 *   `POST /v1/subscribe`, which does not outlive a connection, or the new
 *   token's `subs` no longer list it).
 */
export interface UnsubscribedEvent {
  readonly channel: string;
  readonly reason?: 'limit_exceeded' | 'reconnected';
}

/**
 * Call it to unsubscribe. `I` is the shape of the presence `info` your tokens
 * carry, `T` that of the messages' data (the server checks neither).
 *
 * A server-side subscription (`serverSide`, handed out by the client's
 * `subscribed` event) belongs to the server: calling it only stops this
 * object's listeners; the connection stays subscribed until a backend
 * unsubscribes it.
 */
export interface Subscription<I = PresenceInfo, T = unknown> {
  (): Promise<void>;
  readonly channel: string;
  /** Made by the server (the token's `subs`, or a backend's `POST /v1/subscribe`), not by `subscribe()`. */
  readonly serverSide: boolean;
  /** Resolves when the server first confirms the subscription; rejects when it refuses it or the client closes. */
  readonly ready: Promise<SubscribeResult>;
  /**
   * Who is in the channel now (its namespace needs `presence`): one member
   * per user, and the exact `users` and `connections` counts. Rejects with a
   * PubgateError: `bad_request` (the channel has no presence), `forbidden`,
   * `unavailable`, `timeout`, `disconnected` (not connected now), `unsubscribed`
   * (this subscription has ended), `closed`.
   */
  presence(): Promise<PresenceResult<I>>;
  /** The exact `users` and `connections` counts, without the list (same errors as `presence()`). */
  presenceStats(): Promise<PresenceStats>;
  /**
   * Adds a listener for `message`, `join`, `leave` (channels whose namespace
   * has `joinLeave`), `resubscribed` or `unsubscribed`; returns a function
   * that removes it. They stop when the subscription ends.
   */
  on<K extends keyof SubscriptionEvents<I, T>>(type: K, fn: (ev: SubscriptionEvents<I, T>[K]) => void): () => void;
  once<K extends keyof SubscriptionEvents<I, T>>(type: K, fn: (ev: SubscriptionEvents<I, T>[K]) => void): () => void;
  off<K extends keyof SubscriptionEvents<I, T>>(type: K, fn: (ev: SubscriptionEvents<I, T>[K]) => void): void;
}

export interface ClientEvents {
  /** Every state change. */
  state: { readonly state: ConnectionState; readonly previous: ConnectionState };
  /** A connection attempt starts. `attempt` counts failed attempts since the last stable connection. */
  connecting: { readonly url: string; readonly attempt: number };
  /** `welcome` arrived; resubscribes and queued publishes have been sent. `transport`: how (SSE after a fallback). */
  connected: { readonly url: string; readonly welcome: WelcomeFrame; readonly transport: Transport };
  /** The connection ended and the client will reconnect after `reconnectInMs`. */
  disconnected: { readonly url: string; readonly code: number; readonly reason: string; readonly reconnectInMs: number };
  /** The client stopped for good: `close()` (1000) or a close code that means stop (1003, 1009, 4500–4999, 4001 without getToken on a token connection, ...). */
  closed: { readonly code: number; readonly reason: string };
  /** A channel was resubscribed after a reconnect (server-side subscriptions included). */
  resubscribed: ResubscribeInfo;
  /**
   * The server subscribed this connection (contract 1.1): a channel of the
   * token's `subs` (listed in `welcome`), or a backend's `POST /v1/subscribe`.
   * Attach `message`, `join` and `leave` listeners to the subscription. Once
   * per server-side subscription: one the server makes again after a
   * reconnect keeps its object (it gets `resubscribed`).
   */
  subscribed: Subscription;
  /** The server ended a subscription, or refused one a backend asked for (see UnsubscribedEvent). */
  unsubscribed: UnsubscribedEvent;
  /** The token was refreshed on the open connection (`expiresIn` is unknown for a connection of the connect proxy). */
  refreshed: { readonly expiresIn: number | undefined };
  /** Something failed that the client handles itself (a refused subscription, a failed refresh, a bad frame, a handler or listener that threw). */
  error: PubgateError;
}

export interface PubgateClient {
  readonly state: ConnectionState;
  /** The last `welcome` (node, user, expiresIn, ping). */
  readonly welcome: WelcomeFrame | undefined;
  /** The URL of the current (or last) attempt. */
  readonly url: string | undefined;
  /** The transport of the current (or next) connection. */
  readonly transport: Transport;
  /**
   * Subscribes `onMessage` to `channel` (several handlers may share one). The
   * subscription survives reconnects: it is renewed on every new connection,
   * with `since` on history channels. Throws a TypeError for an invalid channel name.
   * `T` types the messages' data, `I` the presence `info` (neither is checked).
   */
  subscribe<T = unknown, I = PresenceInfo>(channel: string, onMessage: MessageHandler<T>, options?: SubscribeOptions): Subscription<I, T>;
  /** The same without a handler: attach `message` listeners to the subscription. */
  subscribe<T = unknown, I = PresenceInfo>(channel: string, options?: SubscribeOptions): Subscription<I, T>;
  /**
   * Publishes over the socket (the token's `publish` claim must allow it).
   * Resolves with the reply; rejects with a PubgateError (`forbidden`,
   * `timeout`, `disconnected`, `queue_full`, `too_large`, ...). While not
   * connected the publish waits in a bounded queue (see `offlinePublish`).
   * `{ echo: false }`: not delivered back to this connection.
   */
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<ReplyFrame>;
  /** Round trip of a `ping` frame, in ms. Rejects with `disconnected` when not connected. */
  ping(): Promise<number>;
  /** The channels subscribed (confirmed or not), server-side ones included. */
  channels(): string[];
  /** The server-side subscriptions alive now (those the `subscribed` event handed out and the server has not ended). */
  serverSubscriptions(): Subscription[];
  /** Resolves with the `welcome` once connected (now, or at the next connection); rejects when the client closes or after `timeoutMs`. */
  whenConnected(timeoutMs?: number): Promise<WelcomeFrame>;
  on<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void;
  once<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): void;
  /** Closes the connection (1000) and stops reconnecting. Pending requests fail with `closed`. */
  close(): Promise<void>;
}

interface Host {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  WebSocket?: WebSocketConstructor;
}

/** Read at each call, so that fake timers installed later are used. */
function host(): Host {
  return globalThis as unknown as Host;
}

function later(fn: () => void, ms: number): unknown {
  return host().setTimeout(fn, ms);
}

function cancel(handle: unknown): void {
  if (handle !== undefined) host().clearTimeout(handle);
}

/** Rejects when `p` does not settle within `ms` (a getToken that hangs must not stall the client). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = later(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    p.then(
      (v) => {
        cancel(timer);
        resolve(v);
      },
      (e: unknown) => {
        cancel(timer);
        reject(e);
      },
    );
  });
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** UTF-8 length of a string. */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

type RequestKind = 'publish' | 'subscribe' | 'unsubscribe' | 'refresh' | 'ping' | 'presence' | 'presence_stats';

interface Request {
  readonly kind: RequestKind;
  readonly channel: string | undefined;
  /** The frame text for an id. */
  readonly build: (id: number) => string;
  id: number | undefined;
  timer: unknown;
  readonly resolve: (reply: ReplyFrame) => void;
  readonly reject: (err: PubgateError) => void;
}

interface SubRecord {
  readonly handler: MessageHandler | undefined;
  readonly options: SubscribeOptions | undefined;
  /** Handed out by the `subscribed` event (the server owns it), not by `subscribe()`. */
  readonly server: boolean;
  /** message, join, leave, resubscribed and unsubscribed listeners of this subscription. */
  readonly events: Emitter<SubscriptionEvents>;
  /** Until `ready` settles. */
  settle: { resolve: (r: SubscribeResult) => void; reject: (e: PubgateError) => void } | undefined;
  /** The object handed out for this record. */
  handle: Subscription | undefined;
}

interface Channel {
  readonly name: string;
  /** Every subscription object of the channel: `subscribe()`'s and at most one server-side one. */
  readonly subs: Set<SubRecord>;
  /**
   * The server subscribed the connection (welcome `subs` or a `subscribed`
   * frame) on the current connection, or on the last one while disconnected.
   * Such a channel is never subscribed or unsubscribed by the client: the
   * server owns it, and the entry stays (with its position) while the server
   * keeps it, even when no subscription object is left.
   */
  server: boolean;
  /** A subscription token given to `subscribe()`, for the first subscribe. */
  token: string | undefined;
  tokenUsed: boolean;
  /** `unauthorized` replies in a row, each retried with a fresh token from getSubscriptionToken. */
  authRetries: number;
  /** Counts subscribe attempts: a getSubscriptionToken answer for an older one is dropped. */
  attempt: number;
  /** Last position seen (message or subscribe reply), for `since`. */
  pos: SinceOffset | undefined;
  /** On the current connection. */
  status: 'idle' | 'subscribing' | 'active';
  reqId: number | undefined;
  /** `since` sent with the current subscribe. */
  since: SinceOffset | undefined;
  /** `rewind` of the subscribe() call that created the channel: sent until the channel is first confirmed, never with `since`. */
  rewind: number | undefined;
  /** Confirmed on some connection before: the next confirmation is a resubscribe. */
  everActive: boolean;
  retryTimer: unknown;
  retries: number;
}

/** What a welcome's `subs` changed, reported once the connection is set up. */
interface ServerSubChanges {
  /** Invalid entries (skipped). */
  readonly problems: string[];
  /** Server-side subscriptions of the last connection the new one does not have. */
  readonly lost: Array<{ readonly channel: string; readonly recs: SubRecord[] }>;
  /** New server-side subscription objects. */
  readonly made: SubRecord[];
  /** Channels active before the reconnect, made again by the server. */
  readonly renewed: Array<{ readonly ch: Channel; readonly info: ResubscribeInfo; readonly recs: SubRecord[] }>;
}

/** Reply codes after which a subscribe is retried on the same connection (`token`: getSubscriptionToken failed). */
const TRANSIENT = new Set<string>(['timeout', 'unavailable', 'rate_limited', 'internal', 'token']);

/** The server holds this channel now (welcome subs, a subscribed frame): active, no own subscribe pending or retried. */
function serverTakesOver(ch: Channel): void {
  cancel(ch.retryTimer);
  ch.retryTimer = undefined;
  ch.server = true;
  ch.status = 'active';
  ch.reqId = undefined;
  ch.retries = 0;
  ch.authRetries = 0;
  ch.everActive = true;
}

/**
 * `unauthorized` (an expired subscription token) is retried with a fresh token
 * this many times in a row when getSubscriptionToken is set: a token can
 * expire between the backend signing it and the gateway reading it, or the
 * clocks differ; a backend that keeps signing expired tokens is a bug to report.
 */
const MAX_AUTH_RETRIES = 2;

function newChannel(name: string): Channel {
  return {
    name,
    subs: new Set(),
    pos: undefined,
    status: 'idle',
    reqId: undefined,
    since: undefined,
    rewind: undefined,
    everActive: false,
    retryTimer: undefined,
    retries: 0,
    server: false,
    token: undefined,
    tokenUsed: false,
    authRetries: 0,
    attempt: 0,
  };
}

/** A history position from a welcome `subs` entry or a `subscribed` frame, when it has a valid one. */
function positionOf(v: { offset?: unknown; epoch?: unknown }): SinceOffset | undefined {
  return typeof v.offset === 'number' && Number.isSafeInteger(v.offset) && v.offset >= 0 && typeof v.epoch === 'string' ? { offset: v.offset, epoch: v.epoch } : undefined;
}

function resultOf(pos: SinceOffset | undefined): SubscribeResult {
  return pos ? { offset: pos.offset, epoch: pos.epoch } : {};
}

interface Resolved {
  readonly getToken: (() => string | Promise<string>) | undefined;
  readonly WebSocket: WebSocketConstructor;
  readonly tokenTransport: 'subprotocol' | 'query';
  readonly requestTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly backoff: BackoffOptions;
  readonly stableAfterMs: number;
  readonly offlinePublish: 'queue' | 'reject';
  readonly maxQueuedPublishes: number;
  readonly maxFrameBytes: number;
  readonly autoRefresh: boolean;
  readonly heartbeat: boolean;
  readonly random: () => number;
  readonly getSubscriptionToken: ((channel: string) => SubscriptionToken | Promise<SubscriptionToken>) | undefined;
  readonly transports: readonly Transport[];
  readonly sseUrls: readonly string[];
  readonly fetch: SseFetch | undefined;
  readonly wsRetryMs: number;
  readonly sseDebounceMs: number;
  readonly maxEventBytes: number;
}

/** WebSocket attempts in a row that end before `welcome` with 1006 before the client moves to SSE. */
const WS_FAILURES_BEFORE_SSE = 2;
/**
 * During a move from SSE back to WebSocket, how long the SSE stream is kept
 * after every channel is confirmed on the WebSocket, for a channel without
 * history whose stream has not yet shown a message the WebSocket also
 * delivered (the two connections are not ordered with each other).
 */
const HANDOVER_SETTLE_MS = 2000;
/** Copies per channel without history held for matching during the move; past it the move ends (the stream is closed). */
const HANDOVER_MAX_PENDING = 1000;

/**
 * The SSE stream kept during a move back to WebSocket. For each channel
 * without history, the copies delivered from one connection that the other
 * has not shown yet (keyed by their data): a copy the other connection brings
 * later is the same message and is not delivered again. `caughtUp` holds the
 * channels whose stream brought a copy the WebSocket had already delivered:
 * everything published before the WebSocket subscription went live has come.
 */
interface Handover {
  readonly sse: WebSocketLike;
  readonly timer: unknown;
  settle: unknown;
  readonly plain: Map<string, { sse: string[]; ws: string[] }>;
  readonly caughtUp: Set<string>;
}

class Client implements PubgateClient {
  readonly #o: Resolved;
  readonly #events = new Emitter<ClientEvents>();
  readonly #urls: readonly string[];
  #urlIndex = 0;
  #url: string | undefined;
  #state: ConnectionState = 'connecting';
  #welcome: WelcomeFrame | undefined;
  #ws: WebSocketLike | undefined;
  /** Incremented for every socket and when one ends: callbacks of an older generation are ignored. */
  #gen = 0;
  #attempt = 0;
  #connectedAt = 0;
  #lastFrameAt = 0;
  #token: string | undefined;
  #tokenExp: number | undefined;
  /** How far the server's clock is ahead of ours (from welcome.expiresIn and the token's exp). */
  #clockAheadMs = 0;
  #nextId = 1;
  readonly #pending = new Map<number, Request>();
  readonly #queue: Request[] = [];
  readonly #channels = new Map<string, Channel>();
  #reconnectTimer: unknown;
  #connectTimer: unknown;
  #refreshTimer: unknown;
  #heartbeatTimer: unknown;
  #heartbeatInFlight = false;
  /**
   * The connection was accepted without a token but expires: the gateway's
   * connect proxy accepted it from its cookies (contract 1.1). It refreshes
   * with a token-less `refresh`, and after a 4001 the client reconnects (the
   * cookies go again) instead of stopping.
   */
  #proxied = false;
  #transport: Transport;
  /** WebSocket attempts in a row that ended with 1006 before welcome. */
  #wsFailures = 0;
  /** The last SSE `id:` and the channel set it is for. */
  #sseLastId: { id: string; channels: readonly string[] } | undefined;
  /** false once the gateway's SSE ids turned out not to be in the encoding the client builds. */
  #sseEncode = true;
  /** An SSE stream of this client got a welcome since it last moved to SSE: its failures are not a reason to go back. */
  #sseWorked = false;
  /** The first WebSocket attempt after a move to SSE is made at once (the move may have been a restart's race). */
  #probeSoon = false;
  /** While on SSE: the background WebSocket attempt, and its timer. */
  #probe: WebSocketLike | undefined;
  #probeTimer: unknown;
  /** The SSE stream kept during a move back to WebSocket, until every channel is resubscribed there. */
  #handover: Handover | undefined;

  constructor(o: ConnectOptions) {
    const urls = typeof o.url === 'string' ? [o.url] : [...o.url];
    if (urls.length === 0 || urls.some((u) => typeof u !== 'string' || u === '')) throw new TypeError('connect: url must be a URL or a non-empty list of URLs');
    const transports = o.transports === undefined ? undefined : [...o.transports];
    if (transports !== undefined && (transports.length === 0 || transports.some((t) => t !== 'websocket' && t !== 'sse') || new Set(transports).size !== transports.length)) {
      throw new TypeError("connect: transports must list 'websocket' and/or 'sse', each once");
    }
    const fetchFn = o.fetch ?? globalFetch();
    const wantWs = transports === undefined || transports.includes('websocket');
    const Ctor = o.WebSocket ?? host().WebSocket;
    if (wantWs && typeof Ctor !== 'function') {
      throw new TypeError('connect: no WebSocket implementation: pass { WebSocket } (on Node.js 20, the `ws` package: import WebSocket from "ws")');
    }
    if (transports?.includes('sse') && typeof fetchFn !== 'function') throw new TypeError('connect: no fetch for the SSE transport: pass { fetch }');
    // By default SSE is the fallback where fetch exists.
    const usable = (transports ?? (typeof fetchFn === 'function' ? ['websocket', 'sse'] : ['websocket'])) as Transport[];
    const sseUrls = o.sseUrl === undefined ? urls.map(sseUrlFor) : typeof o.sseUrl === 'string' ? [o.sseUrl] : [...o.sseUrl];
    if (sseUrls.length === 0 || sseUrls.some((u) => typeof u !== 'string' || u === '')) throw new TypeError('connect: sseUrl must be a URL or a non-empty list of URLs');
    this.#transport = usable[0]!;
    this.#urls = urls;
    this.#o = {
      transports: usable,
      sseUrls,
      fetch: fetchFn,
      wsRetryMs: o.wsRetryMs ?? 30_000,
      sseDebounceMs: o.sseDebounceMs ?? 50,
      maxEventBytes: o.maxEventBytes ?? 1 << 20,
      getToken: o.getToken,
      WebSocket: Ctor as WebSocketConstructor,
      tokenTransport: o.tokenTransport ?? 'subprotocol',
      requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
      connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
      backoff: { minMs: o.backoff?.minMs ?? DEFAULT_BACKOFF.minMs, maxMs: o.backoff?.maxMs ?? DEFAULT_BACKOFF.maxMs },
      stableAfterMs: o.stableAfterMs ?? 5_000,
      offlinePublish: o.offlinePublish ?? 'queue',
      maxQueuedPublishes: o.maxQueuedPublishes ?? 100,
      maxFrameBytes: o.maxFrameBytes ?? 16_384,
      autoRefresh: o.autoRefresh ?? true,
      heartbeat: o.heartbeat ?? true,
      random: o.random ?? Math.random,
      getSubscriptionToken: o.getSubscriptionToken,
    };
    if (o.getSubscriptionToken !== undefined && typeof o.getSubscriptionToken !== 'function') throw new TypeError('connect: getSubscriptionToken must be a function');
    if (o.token !== undefined) this.#setToken(o.token);
    // Start after the caller had a chance to add listeners.
    void Promise.resolve().then(() => this.#open());
  }

  get state(): ConnectionState {
    return this.#state;
  }

  get welcome(): WelcomeFrame | undefined {
    return this.#welcome;
  }

  get url(): string | undefined {
    return this.#url;
  }

  get transport(): Transport {
    return this.#transport;
  }

  on<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void {
    return this.#events.on(type, fn);
  }

  once<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void {
    return this.#events.once(type, fn);
  }

  off<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): void {
    this.#events.off(type, fn);
  }

  channels(): string[] {
    return [...this.#channels.keys()];
  }

  serverSubscriptions(): Subscription[] {
    const out: Subscription[] = [];
    for (const ch of this.#channels.values()) {
      for (const rec of ch.subs) if (rec.server && rec.handle) out.push(rec.handle);
    }
    return out;
  }

  // ---- connection ------------------------------------------------------------

  #setState(s: ConnectionState): void {
    const previous = this.#state;
    if (previous === s) return;
    this.#state = s;
    this.#events.emit('state', { state: s, previous });
  }

  #setToken(t: string): void {
    this.#token = t;
    this.#tokenExp = tokenExpiry(t);
  }

  /** The token's remaining life as the server counts it, ms (undefined when unknown). */
  #serverRemainingMs(): number | undefined {
    return this.#tokenExp === undefined ? undefined : this.#tokenExp * 1000 - (Date.now() + this.#clockAheadMs);
  }

  async #currentToken(): Promise<string | undefined> {
    const { getToken } = this.#o;
    if (!getToken) return this.#token;
    const remaining = this.#serverRemainingMs();
    if (this.#token !== undefined && (remaining === undefined || remaining > 1000)) return this.#token;
    const t = await within(Promise.resolve().then(getToken), this.#o.connectTimeoutMs, 'getToken');
    if (typeof t !== 'string' || t === '') throw new Error('getToken returned no token');
    this.#setToken(t);
    return t;
  }

  async #open(): Promise<void> {
    if (this.#state === 'closed') return;
    const gen = ++this.#gen;
    const sse = this.#transport === 'sse';
    const urls = sse ? this.#o.sseUrls : this.#urls;
    const url = urls[this.#urlIndex % urls.length]!;
    this.#url = url;
    this.#setState('connecting');
    this.#events.emit('connecting', { url, attempt: this.#attempt });
    let token: string | undefined;
    try {
      token = await this.#currentToken();
    } catch (e) {
      if (gen !== this.#gen) return;
      this.#emitError(new PubgateError('token', `getToken failed: ${describe(e)}`, undefined, { cause: e }));
      this.#lost(gen, ABNORMAL_CLOSURE, 'getToken failed');
      return;
    }
    if (gen !== this.#gen) return;
    if (sse) {
      this.#openSse(gen, url, token);
      return;
    }
    const { target, protocols } = this.#wsTarget(url, token);
    let ws: WebSocketLike;
    try {
      ws = new this.#o.WebSocket(target, protocols);
    } catch (e) {
      const err = new PubgateError('closed', `cannot open a WebSocket to ${url}: ${describe(e)}`, undefined, { cause: e });
      this.#emitError(err);
      this.#terminate(ABNORMAL_CLOSURE, err.message);
      return;
    }
    this.#attach(gen, ws);
  }

  /** The URL and subprotocols of a WebSocket carrying `token`. */
  #wsTarget(url: string, token: string | undefined): { target: string; protocols: string[] } {
    const protocols = [SUBPROTOCOL];
    let target = url;
    if (token !== undefined) {
      if (this.#o.tokenTransport === 'query') target = `${url}${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(token)}`;
      else protocols.push(BEARER_PREFIX + token);
    }
    return { target, protocols };
  }

  // ---- back to WebSocket from SSE ------------------------------------------------

  /** While connected over SSE: a WebSocket attempt in the background after wsRetryMs (jittered up to twice that). */
  #scheduleProbe(): void {
    this.#stopProbe();
    if (this.#transport !== 'sse' || !this.#o.transports.includes('websocket')) return;
    // Right after the move, one attempt at once: a gateway that was restarting (and refused both WebSocket attempts) takes the
    // client back within a round trip; a proxy that breaks WebSocket costs one more failed handshake.
    const delay = this.#probeSoon ? 0 : Math.floor(this.#o.wsRetryMs * (1 + this.#o.random()));
    this.#probeSoon = false;
    this.#probeTimer = later(() => {
      this.#probeTimer = undefined;
      void this.#probeWs();
    }, delay);
  }

  #stopProbe(): void {
    cancel(this.#probeTimer);
    this.#probeTimer = undefined;
    const p = this.#probe;
    this.#probe = undefined;
    if (p) {
      this.#detach(p);
      try {
        p.close(1000, 'client: probe abandoned');
      } catch {
        // already closed
      }
    }
  }

  /** Opens a WebSocket beside the SSE stream; its welcome moves the client back to it (#adopt). */
  async #probeWs(): Promise<void> {
    const gen = this.#gen;
    if (this.#state !== 'connected' || this.#transport !== 'sse') return;
    let token: string | undefined;
    try {
      token = await this.#currentToken();
    } catch {
      if (gen !== this.#gen) return;
      this.#rejectQueued();
      this.#scheduleProbe();
      return;
    }
    if (gen !== this.#gen || this.#state !== 'connected' || this.#transport !== 'sse') return;
    const url = this.#urls[this.#urlIndex % this.#urls.length]!;
    const { target, protocols } = this.#wsTarget(url, token);
    let ws: WebSocketLike;
    try {
      ws = new this.#o.WebSocket(target, protocols);
    } catch {
      this.#scheduleProbe();
      return;
    }
    this.#probe = ws;
    const failed = (): void => {
      if (this.#probe !== ws) return;
      this.#probe = undefined;
      this.#detach(ws);
      try {
        ws.close(1000, 'client: probe failed');
      } catch {
        // already closed
      }
      if (gen !== this.#gen) return;
      this.#rejectQueued();
      this.#scheduleProbe();
    };
    const timer = later(failed, this.#o.connectTimeoutMs);
    ws.onopen = () => undefined;
    ws.onerror = () => undefined;
    ws.onclose = () => {
      cancel(timer);
      failed();
    };
    ws.onmessage = (ev: { data: unknown }) => {
      cancel(timer);
      if (this.#probe !== ws) return;
      let f: ServerFrame | undefined;
      try {
        f = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data)) as ServerFrame;
      } catch {
        f = undefined;
      }
      if (!f || f.type !== 'welcome' || gen !== this.#gen || this.#state !== 'connected') {
        failed();
        return;
      }
      this.#probe = undefined;
      this.#adopt(ws, url, f);
    };
  }

  /** Publishes queued while disconnected, when the client stays on SSE: they cannot be sent. */
  #rejectQueued(): void {
    for (const r of this.#queue.splice(0)) {
      cancel(r.timer);
      r.reject(this.#sseUnsupported('publish', r.channel));
    }
  }

  /**
   * The background WebSocket got its welcome: it becomes the connection. The
   * SSE stream stays open until every channel is resubscribed on the
   * WebSocket (with `since`): meanwhile its history messages are delivered
   * through the same offset check (nothing twice, nothing skipped); its
   * messages on channels without history are delivered until the channel is
   * confirmed on the WebSocket (#onHandoverData).
   */
  #adopt(ws: WebSocketLike, url: string, welcome: WelcomeFrame): void {
    const old = this.#ws;
    this.#gen++;
    const gen = this.#gen;
    this.#ws = undefined;
    this.#clearConnectionTimers();
    this.#failInFlight(new PubgateError('disconnected', 'moved from SSE to WebSocket before the reply'));
    for (const ch of this.#channels.values()) {
      cancel(ch.retryTimer);
      ch.retryTimer = undefined;
      ch.status = 'idle';
      ch.reqId = undefined;
    }
    this.#endHandover();
    if (old) {
      const timer = later(() => this.#endHandover(), this.#o.requestTimeoutMs);
      const plain = new Map<string, { sse: string[]; ws: string[] }>();
      for (const ch of this.#channels.values()) if (!ch.pos) plain.set(ch.name, { sse: [], ws: [] });
      this.#handover = { sse: old, timer, settle: undefined, plain, caughtUp: new Set() };
      old.onclose = () => this.#endHandover();
      old.onerror = () => undefined;
      old.onmessage = (ev: { data: unknown }) => this.#onHandoverData(old, ev.data);
    }
    this.#transport = 'websocket';
    this.#wsFailures = 0;
    this.#url = url;
    this.#attach(gen, ws);
    this.#lastFrameAt = Date.now();
    // Not through #onData: the state is already `connected`, where a welcome would be ignored.
    this.#onWelcome(welcome);
    this.#maybeEndHandover();
  }

  #onHandoverData(sse: WebSocketLike, raw: unknown): void {
    if (this.#handover?.sse !== sse) return;
    let f: ServerFrame;
    try {
      f = JSON.parse(typeof raw === 'string' ? raw : String(raw)) as ServerFrame;
    } catch {
      return;
    }
    if (f === null || typeof f !== 'object' || f.type !== 'message' || typeof f.channel !== 'string') return;
    // History messages: the offset check makes them exactly once.
    if (typeof f.offset === 'number' && typeof f.epoch === 'string') this.#onMessage(f);
    else if (this.#matchHandover(f, 'sse')) this.#onMessage(f);
  }

  /**
   * A message without history during the move, from the SSE stream or the
   * WebSocket: true when it is to be delivered. The same message may come on
   * both connections (published after the WebSocket subscription went live,
   * before the stream was closed), in either order: a copy matching one
   * already delivered from the other connection is not delivered again.
   * Nothing published during the move is lost, unless its stream copy comes
   * later than HANDOVER_SETTLE_MS after the last confirmation; the order of
   * two messages may differ from the publish order.
   */
  #matchHandover(f: MessageFrame, from: 'sse' | 'ws'): boolean {
    const h = this.#handover;
    const pending = h?.plain.get(f.channel);
    if (!h || !pending) return true;
    const key = JSON.stringify(f.data) ?? '';
    const other = from === 'sse' ? pending.ws : pending.sse;
    const at = other.indexOf(key);
    if (at >= 0) {
      other.splice(at, 1);
      if (from === 'sse') {
        h.caughtUp.add(f.channel);
        this.#maybeEndHandover();
      }
      return false;
    }
    const mine = from === 'sse' ? pending.sse : pending.ws;
    mine.push(key);
    if (mine.length > HANDOVER_MAX_PENDING) this.#endHandover();
    return true;
  }

  /**
   * Every channel is subscribed on the WebSocket, and each without history
   * has shown on the stream a message the WebSocket also brought, or the
   * settle time after the last confirmation has passed: the SSE stream kept
   * for the move is closed.
   */
  #maybeEndHandover(): void {
    const h = this.#handover;
    if (!h) return;
    for (const ch of this.#channels.values()) if (ch.status !== 'active') return;
    let waiting = false;
    for (const name of h.plain.keys()) if (this.#channels.has(name) && !h.caughtUp.has(name)) waiting = true;
    if (!waiting) return this.#endHandover();
    if (h.settle !== undefined) return;
    h.settle = later(() => {
      if (this.#handover === h) this.#endHandover();
    }, HANDOVER_SETTLE_MS);
  }

  #endHandover(): void {
    const h = this.#handover;
    if (!h) return;
    this.#handover = undefined;
    cancel(h.timer);
    cancel(h.settle);
    this.#detach(h.sse);
    try {
      h.sse.close(1000, 'client: moved to WebSocket');
    } catch {
      // already closed
    }
  }

  /** Opens the SSE stream of the channels subscribed now, recovering every history channel from its last position. */
  #openSse(gen: number, url: string, token: string | undefined): void {
    const channels: string[] = [];
    const positions = new Map<string, SinceOffset>();
    const plain = new Set<string>();
    for (const ch of this.#channels.values()) {
      // Server-side subscriptions are WebSocket's: the stream names only the channels the application subscribed.
      if (ch.server && [...ch.subs].every((r) => r.server)) continue;
      channels.push(ch.name);
      if (ch.pos) positions.set(ch.name, ch.pos);
      else if (ch.everActive) plain.add(ch.name); // confirmed without a position: no history
    }
    const sorted = [...channels].sort();
    const last = this.#sseLastId;
    const sameSet = last !== undefined && last.channels.length === sorted.length && last.channels.every((c, i) => c === sorted[i]);
    const sock = new SseSocket({
      url,
      fetch: this.#o.fetch!,
      token,
      tokenTransport: this.#o.tokenTransport === 'query' ? 'query' : 'header',
      channels,
      positions,
      plain,
      lastEventId: sameSet ? last.id : undefined,
      encode: this.#sseEncode,
      debounceMs: this.#o.sseDebounceMs,
      maxEventBytes: this.#o.maxEventBytes,
      onForeignId: () => {
        this.#sseEncode = false;
        this.#emitError(new PubgateError('protocol', "the gateway's SSE ids are not in the encoding this client knows: after a channel change or a move from WebSocket, history channels report recovered:false"));
      },
      onLastEventId: (id, chans) => {
        this.#sseLastId = { id, channels: chans };
      },
    });
    this.#attach(gen, sock);
  }

  /** Listens to the connection of generation `gen`, and bounds the wait for its welcome. */
  #attach(gen: number, ws: WebSocketLike): void {
    this.#ws = ws;
    ws.onopen = () => undefined;
    ws.onerror = () => undefined; // a close event follows
    ws.onmessage = (ev: { data: unknown }) => {
      if (gen === this.#gen) this.#onData(ev.data);
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (gen === this.#gen) this.#lost(gen, typeof ev.code === 'number' ? ev.code : ABNORMAL_CLOSURE, typeof ev.reason === 'string' ? ev.reason : '');
    };
    this.#connectTimer = later(() => {
      if (gen === this.#gen && this.#state === 'connecting') this.#drop(`no welcome within ${this.#o.connectTimeoutMs} ms`);
    }, this.#o.connectTimeoutMs);
  }

  /** Stops listening to a socket. onerror stays a function: the `ws` package throws on an error event nobody listens to. */
  #detach(ws: WebSocketLike | undefined): void {
    if (!ws) return;
    const noop = (): void => undefined;
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onclose = noop;
    ws.onerror = noop;
  }

  /** The client decided the connection is dead: close the socket and handle it as a 1006. */
  #drop(reason: string): void {
    const ws = this.#ws;
    const gen = this.#gen;
    this.#detach(ws);
    try {
      ws?.close(4000, `client: ${reason}`.slice(0, 120));
    } catch {
      // the socket may already be closed
    }
    this.#lost(gen, ABNORMAL_CLOSURE, reason);
  }

  #clearConnectionTimers(): void {
    cancel(this.#connectTimer);
    cancel(this.#refreshTimer);
    cancel(this.#heartbeatTimer);
    this.#connectTimer = this.#refreshTimer = this.#heartbeatTimer = undefined;
    this.#heartbeatInFlight = false;
  }

  /** The connection of generation `gen` ended with `code`: reconnect or stop. */
  #lost(gen: number, code: number, reason: string): void {
    if (gen !== this.#gen || this.#state === 'closed') return;
    this.#gen++;
    const ws = this.#ws;
    this.#ws = undefined;
    this.#detach(ws);
    const wasConnected = this.#state === 'connected';
    this.#clearConnectionTimers();
    this.#failInFlight(new PubgateError('disconnected', `connection lost (${code}${reason ? ` ${reason}` : ''}) before the reply`));
    for (const ch of this.#channels.values()) {
      cancel(ch.retryTimer);
      ch.retryTimer = undefined;
      ch.status = 'idle';
      ch.reqId = undefined;
    }
    if (wasConnected && Date.now() - this.#connectedAt >= this.#o.stableAfterMs) this.#attempt = 0;
    this.#stopProbe();
    let switched = false;
    const both = this.#o.transports.length === 2;
    if (both && this.#transport === 'websocket' && !wasConnected && code === ABNORMAL_CLOSURE) {
      // The handshake failed (browsers report every refused upgrade as 1006) or the connection died before welcome: a proxy
      // that breaks WebSocket. Twice in a row: receive over SSE instead, and try the WebSocket again later.
      if (++this.#wsFailures >= WS_FAILURES_BEFORE_SSE) {
        this.#transport = 'sse';
        this.#wsFailures = 0;
        this.#sseWorked = false;
        this.#probeSoon = true;
        switched = true;
      }
    } else if (both && this.#transport === 'sse' && !wasConnected && !this.#sseWorked) {
      // SSE did not open either (the gateway is down or restarting, not a proxy breaking WebSocket): alternate, one WebSocket
      // attempt and one SSE attempt, until one of them gets a welcome.
      this.#transport = 'websocket';
      this.#wsFailures = WS_FAILURES_BEFORE_SSE - 1;
      switched = true;
    }
    const plan = reconnectPlan(code);
    if (!plan.reconnect) {
      this.#terminate(code, reason);
      return;
    }
    if (plan.newToken && !this.#proxied) {
      if (!this.#o.getToken) {
        this.#terminate(code, `${reason || 'token expired'} (no getToken to get a new one)`);
        return;
      }
      this.#token = undefined;
      this.#tokenExp = undefined;
    }
    const delay = reconnectDelay(code, this.#attempt, this.#o.backoff, this.#o.random);
    this.#attempt++;
    if (!switched) this.#urlIndex++;
    this.#setState('disconnected');
    this.#events.emit('disconnected', { url: this.#url ?? '', code, reason, reconnectInMs: delay });
    if (this.#state !== 'disconnected') return; // a listener closed the client
    this.#reconnectTimer = later(() => {
      this.#reconnectTimer = undefined;
      void this.#open();
    }, delay);
  }

  /** Requests sent on a connection that ended. Queued publishes wait for the next one. */
  #failInFlight(err: PubgateError): void {
    const reqs = [...this.#pending.values()];
    this.#pending.clear();
    for (const r of reqs) {
      cancel(r.timer);
      if (r.kind === 'subscribe') continue; // the channel is renewed on the next connection
      if (r.kind === 'unsubscribe') r.resolve({ type: 'reply', id: r.id ?? 0 }); // the next connection will not have it
      else r.reject(err);
    }
  }

  #terminate(code: number, reason: string): void {
    if (this.#state === 'closed') return;
    this.#gen++;
    this.#detach(this.#ws);
    this.#ws = undefined;
    cancel(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#clearConnectionTimers();
    this.#stopProbe();
    this.#endHandover();
    const err = new PubgateError('closed', `the client is closed (${code}${reason ? ` ${reason}` : ''})`);
    this.#failInFlight(err);
    for (const r of this.#queue.splice(0)) {
      cancel(r.timer);
      r.reject(err);
    }
    for (const ch of this.#channels.values()) {
      cancel(ch.retryTimer);
      ch.retryTimer = undefined;
      ch.status = 'idle';
      for (const rec of ch.subs) this.#settle(rec, undefined, err);
    }
    this.#setState('closed');
    this.#events.emit('closed', { code, reason });
  }

  #onData(raw: unknown): void {
    const text = typeof raw === 'string' ? raw : String(raw);
    let f: ServerFrame;
    try {
      f = JSON.parse(text) as ServerFrame;
    } catch {
      this.#emitError(new PubgateError('protocol', `the server sent a frame that is not JSON: ${text.slice(0, 80)}`));
      return;
    }
    if (f === null || typeof f !== 'object') {
      this.#emitError(new PubgateError('protocol', `the server sent a frame that is not an object: ${text.slice(0, 80)}`));
      return;
    }
    this.#lastFrameAt = Date.now();
    if (this.#state !== 'connected') {
      if (f.type === 'welcome') this.#onWelcome(f);
      else this.#drop(`protocol error: the first frame was ${String((f as { type?: unknown }).type)}, not welcome`);
      return;
    }
    switch (f.type) {
      case 'message':
        if (this.#handover && (typeof f.offset !== 'number' || typeof f.epoch !== 'string') && !this.#matchHandover(f, 'ws')) return;
        this.#onMessage(f);
        return;
      case 'reply':
        this.#onReply(f);
        return;
      case 'join':
      case 'leave':
        this.#onPresenceFrame(f);
        return;
      case 'subscribed':
        this.#onSubscribedFrame(f);
        return;
      case 'unsubscribed':
        this.#onUnsubscribedFrame(f);
        return;
      default:
        return; // a later welcome, or a frame type from a newer protocol: ignored
    }
  }

  #onWelcome(w: WelcomeFrame): void {
    const gen = this.#gen;
    cancel(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#welcome = w;
    this.#connectedAt = Date.now();
    this.#proxied = this.#token === undefined && !this.#o.getToken && typeof w.expiresIn === 'number';
    if (typeof w.expiresIn === 'number' && this.#tokenExp !== undefined) {
      this.#clockAheadMs = this.#tokenExp * 1000 - Date.now() - w.expiresIn * 1000;
    }
    if (this.#transport === 'websocket') this.#wsFailures = 0;
    else this.#sseWorked = true;
    this.#setState('connected');
    if (gen !== this.#gen) return; // a state listener closed the client
    // Server-side subscriptions first: the channels they cover need no subscribe of the client's.
    const serverSubs = this.#applyWelcomeSubs(w);
    for (const ch of [...this.#channels.values()]) {
      if (gen !== this.#gen) return;
      if (ch.status === 'idle') this.#sendSubscribe(ch);
    }
    // Over SSE the queued publishes wait for the first WebSocket attempt (#probeWs), which is made at once.
    for (const r of this.#transport === 'sse' ? [] : this.#queue.splice(0)) {
      if (gen !== this.#gen) {
        this.#queue.push(r); // the connection ended meanwhile: keep the rest for the next one
        continue;
      }
      this.#sendRequest(r);
    }
    if (gen !== this.#gen) return;
    this.#scheduleRefresh(typeof w.expiresIn === 'number' ? this.#serverRemainingMs() ?? w.expiresIn * 1000 : undefined);
    // Over SSE the stream watches its own liveness (the gateway's `: ping` comments), and a ping frame cannot be sent.
    if (this.#transport === 'websocket') this.#scheduleHeartbeat(gen, w.ping);
    else this.#scheduleProbe();
    this.#reportWelcomeSubs(serverSubs, gen);
    if (gen !== this.#gen) return;
    this.#events.emit('connected', { url: this.#url ?? '', welcome: w, transport: this.#transport });
  }

  // ---- requests --------------------------------------------------------------

  /** Sends a frame on the open connection; a send that throws ends the connection. */
  #send(text: string): boolean {
    const ws = this.#ws;
    if (!ws || this.#state !== 'connected') return false;
    try {
      ws.send(text);
      return true;
    } catch (e) {
      this.#drop(`send failed: ${describe(e)}`);
      return false;
    }
  }

  #sendRequest(r: Request, id: number = this.#nextId++): void {
    r.id = id;
    this.#pending.set(id, r);
    this.#send(r.build(id));
  }

  /** A request sent now (not queued): fails with `disconnected` when not connected. */
  #request(kind: RequestKind, build: (id: number) => string, channel?: string): Promise<ReplyFrame> {
    return new Promise((resolve, reject) => {
      if (this.#state !== 'connected') {
        reject(new PubgateError(this.#state === 'closed' ? 'closed' : 'disconnected', `not connected (${this.#state})`, channel));
        return;
      }
      const r: Request = { kind, channel, build, id: undefined, timer: undefined, resolve, reject };
      r.timer = later(() => {
        if (r.id !== undefined) this.#pending.delete(r.id);
        reject(new PubgateError('timeout', `no reply to ${kind} within ${this.#o.requestTimeoutMs} ms`, channel));
      }, this.#o.requestTimeoutMs);
      this.#sendRequest(r);
    });
  }

  #onReply(f: ReplyFrame): void {
    const r = this.#pending.get(f.id);
    if (!r) return;
    this.#pending.delete(f.id);
    cancel(r.timer);
    if (r.kind !== 'subscribe' && f.error) r.reject(new PubgateError(f.error.code, f.error.message, r.channel));
    else r.resolve(f);
  }

  publish(channel: string, data: unknown, options?: PublishOptions): Promise<ReplyFrame> {
    if (this.#state === 'closed') return Promise.reject(new PubgateError('closed', 'the client is closed', channel));
    if (!isValidChannel(channel)) return Promise.reject(new PubgateError('bad_request', `invalid channel name: ${JSON.stringify(channel)}`, channel));
    const echo = options?.echo;
    if (echo !== undefined && typeof echo !== 'boolean') return Promise.reject(new PubgateError('bad_request', 'publish: echo must be a boolean', channel));
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (e) {
      return Promise.reject(new PubgateError('bad_request', `data cannot be serialized as JSON: ${describe(e)}`, channel));
    }
    if (json === undefined) return Promise.reject(new PubgateError('bad_request', 'data must be a JSON value', channel));
    if ((this.#transport === 'sse' && this.#state === 'connected') || !this.#o.transports.includes('websocket')) return Promise.reject(this.#sseUnsupported('publish', channel));
    const dataJson = json;
    // `"echo":false` only: true is the gateway's default, and a version 1 gateway need not know the field.
    const tail = echo === false ? ',"echo":false}' : '}';
    const build = (id: number): string => `{"type":"publish","id":${id},"channel":${JSON.stringify(channel)},"data":${dataJson}${tail}`;
    const size = utf8Length(build(Number.MAX_SAFE_INTEGER));
    if (size > this.#o.maxFrameBytes) {
      return Promise.reject(new PubgateError('too_large', `publish frame of ${size} bytes is over maxFrameBytes (${this.#o.maxFrameBytes})`, channel));
    }
    return new Promise((resolve, reject) => {
      const r: Request = { kind: 'publish', channel, build, id: undefined, timer: undefined, resolve, reject };
      if (this.#state === 'connected') {
        r.timer = this.#requestTimer(r);
        this.#sendRequest(r);
      } else if (this.#o.offlinePublish === 'reject') {
        reject(new PubgateError('disconnected', `not connected (${this.#state}); offlinePublish is 'reject'`, channel));
      } else if (this.#queue.length >= this.#o.maxQueuedPublishes) {
        reject(new PubgateError('queue_full', `not connected, and ${this.#queue.length} publishes are already waiting (maxQueuedPublishes)`, channel));
      } else {
        r.timer = this.#requestTimer(r);
        this.#queue.push(r);
      }
    });
  }

  #sseUnsupported(what: string, channel: string | undefined): PubgateError {
    const why = this.#o.transports.includes('websocket')
      ? `this client receives over Server-Sent Events now (the WebSocket failed) and tries the WebSocket again every ${Math.round(this.#o.wsRetryMs / 1000)} s`
      : "this client uses Server-Sent Events only (transports: ['sse'])";
    return new PubgateError('transport_unsupported', `${what} needs the WebSocket transport; ${why}. Publish from your backend with the HTTP API instead.`, channel);
  }

  /** The timeout of a publish: counted from the call, queued or not. */
  #requestTimer(r: Request): unknown {
    return later(() => {
      const q = this.#queue.indexOf(r);
      if (q >= 0) this.#queue.splice(q, 1);
      if (r.id !== undefined) this.#pending.delete(r.id);
      r.reject(
        new PubgateError(
          'timeout',
          q >= 0
            ? `not connected within ${this.#o.requestTimeoutMs} ms; the message was not sent`
            : `no reply within ${this.#o.requestTimeoutMs} ms; the message may or may not have been published`,
          r.channel,
        ),
      );
    }, this.#o.requestTimeoutMs);
  }

  async ping(): Promise<number> {
    const t0 = Date.now();
    await this.#request('ping', (id) => `{"type":"ping","id":${id}}`);
    return Date.now() - t0;
  }

  whenConnected(timeoutMs?: number): Promise<WelcomeFrame> {
    if (this.#state === 'connected' && this.#welcome) return Promise.resolve(this.#welcome);
    if (this.#state === 'closed') return Promise.reject(new PubgateError('closed', 'the client is closed'));
    return new Promise((resolve, reject) => {
      let timer: unknown;
      const done = (): void => {
        offConnected();
        offClosed();
        cancel(timer);
      };
      const offConnected = this.#events.on('connected', (ev) => {
        done();
        resolve(ev.welcome);
      });
      const offClosed = this.#events.on('closed', (ev) => {
        done();
        reject(new PubgateError('closed', `the client is closed (${ev.code} ${ev.reason})`));
      });
      if (timeoutMs !== undefined) {
        timer = later(() => {
          done();
          reject(new PubgateError('timeout', `not connected within ${timeoutMs} ms (${this.#state})`));
        }, timeoutMs);
      }
    });
  }

  // ---- token refresh -----------------------------------------------------------

  #scheduleRefresh(remainingMs: number | undefined): void {
    cancel(this.#refreshTimer);
    this.#refreshTimer = undefined;
    if (remainingMs === undefined || !(this.#o.getToken || this.#proxied) || !this.#o.autoRefresh) return;
    // Refresh when a quarter of the remaining life is left, at most a minute before expiry.
    const lead = Math.min(60_000, remainingMs / 4);
    const gen = this.#gen;
    this.#refreshTimer = later(() => void this.#refresh(gen), Math.max(0, remainingMs - lead));
  }

  async #refresh(gen: number): Promise<void> {
    if (this.#proxied) return this.#refreshProxied(gen);
    const getToken = this.#o.getToken;
    if (!getToken || gen !== this.#gen || this.#state !== 'connected') return;
    let t: string;
    try {
      t = await within(Promise.resolve().then(getToken), this.#o.requestTimeoutMs, 'getToken');
      if (typeof t !== 'string' || t === '') throw new Error('getToken returned no token');
    } catch (e) {
      if (gen !== this.#gen) return;
      this.#emitError(new PubgateError('token', `getToken failed, the token was not refreshed: ${describe(e)}`, undefined, { cause: e }));
      this.#retryRefresh(gen);
      return;
    }
    if (gen !== this.#gen) {
      this.#setToken(t); // for the next connection
      return;
    }
    try {
      await this.#request('refresh', (id) => JSON.stringify({ type: 'refresh', id, token: t }));
    } catch (e) {
      if (gen !== this.#gen) return;
      this.#emitError(e instanceof PubgateError ? e : new PubgateError('token', describe(e)));
      this.#retryRefresh(gen);
      return;
    }
    if (gen !== this.#gen) return;
    this.#setToken(t);
    const remaining = this.#serverRemainingMs();
    this.#scheduleRefresh(remaining);
    this.#events.emit('refreshed', { expiresIn: remaining === undefined ? undefined : Math.floor(remaining / 1000) });
  }

  /**
   * A connection of the connect proxy: a `refresh` without a token makes the
   * gateway ask the proxy again with the connection's cookies. The reply does
   * not say the new expiry: the next refresh is planned with the welcome's
   * `expiresIn` (a proxy usually grants the same); a shorter one ends in a
   * 4001, after which the client reconnects.
   */
  async #refreshProxied(gen: number): Promise<void> {
    if (gen !== this.#gen || this.#state !== 'connected') return;
    try {
      await this.#request('refresh', (id) => `{"type":"refresh","id":${id}}`);
    } catch (e) {
      if (gen !== this.#gen) return;
      this.#emitError(e instanceof PubgateError ? e : new PubgateError('token', describe(e)));
      return; // the 4001 at expiry takes over: the client reconnects through the proxy
    }
    if (gen !== this.#gen) return;
    const granted = this.#welcome?.expiresIn;
    this.#scheduleRefresh(typeof granted === 'number' ? granted * 1000 : undefined);
    this.#events.emit('refreshed', { expiresIn: undefined });
  }

  /** After a failed refresh: try again while the token has time left; otherwise the 4001 close takes over. */
  #retryRefresh(gen: number): void {
    const remaining = this.#serverRemainingMs();
    if (remaining === undefined || remaining <= 2000) return;
    this.#refreshTimer = later(() => void this.#refresh(gen), Math.min(remaining / 2, 30_000));
  }

  // ---- heartbeat ---------------------------------------------------------------

  #scheduleHeartbeat(gen: number, pingSec: number): void {
    if (!this.#o.heartbeat || !(pingSec > 0)) return;
    const every = Math.max(1000, pingSec * 1000);
    const beat = (): void => {
      if (gen !== this.#gen || this.#state !== 'connected') return;
      if (!this.#heartbeatInFlight && Date.now() - this.#lastFrameAt >= every) {
        this.#heartbeatInFlight = true;
        this.#request('ping', (id) => `{"type":"ping","id":${id}}`).then(
          () => {
            if (gen === this.#gen) this.#heartbeatInFlight = false;
          },
          (e: unknown) => {
            if (gen !== this.#gen) return;
            this.#heartbeatInFlight = false;
            if (e instanceof PubgateError && e.code === 'timeout') this.#drop(`no reply to a ping within ${this.#o.requestTimeoutMs} ms`);
          },
        );
      }
      this.#heartbeatTimer = later(beat, every);
    };
    this.#heartbeatTimer = later(beat, every);
  }

  // ---- subscriptions -----------------------------------------------------------

  subscribe<T = unknown, I = PresenceInfo>(channel: string, onMessage: MessageHandler<T>, options?: SubscribeOptions): Subscription<I, T>;
  subscribe<T = unknown, I = PresenceInfo>(channel: string, options?: SubscribeOptions): Subscription<I, T>;
  subscribe<T = unknown, I = PresenceInfo>(channel: string, a?: MessageHandler<T> | SubscribeOptions, b?: SubscribeOptions): Subscription<I, T> {
    if (!isValidChannel(channel)) throw new TypeError(`invalid channel name: ${JSON.stringify(channel)} (allowed: ^[A-Za-z0-9_:.@/=-]{1,200}$)`);
    if (a !== undefined && typeof a !== 'function' && (a === null || typeof a !== 'object')) {
      throw new TypeError('subscribe: the second argument must be a message handler or the options');
    }
    const onMessage = typeof a === 'function' ? (a as MessageHandler) : undefined;
    const options = typeof a === 'function' ? b : a;
    const token = options?.token;
    if (token !== undefined && (typeof token !== 'string' || token === '')) throw new TypeError('subscribe: token must be a non-empty string');
    const rewind = options?.rewind;
    if (rewind !== undefined && (typeof rewind !== 'number' || !Number.isSafeInteger(rewind) || rewind < 1)) throw new TypeError('subscribe: rewind must be a positive integer');
    const { rec, ready } = this.#newRecord(channel, onMessage, options, false);
    let ch = this.#channels.get(channel);
    if (this.#state === 'closed') {
      this.#settle(rec, undefined, new PubgateError('closed', 'the client is closed', channel));
    } else if (!ch) {
      ch = newChannel(channel);
      ch.subs.add(rec);
      ch.token = token;
      ch.rewind = rewind;
      this.#channels.set(channel, ch);
      if (this.#state === 'connected') this.#sendSubscribe(ch);
    } else {
      ch.subs.add(rec);
      // A token given now is used when the client has to subscribe the channel itself later.
      if (ch.token === undefined && token !== undefined) ch.token = token;
      if (ch.status === 'active') this.#settle(rec, resultOf(ch.pos));
    }
    return this.#handle(rec, ready, channel, ch) as unknown as Subscription<I, T>;
  }

  #newRecord(channel: string, handler: MessageHandler | undefined, options: SubscribeOptions | undefined, server: boolean): { rec: SubRecord; ready: Promise<SubscribeResult> } {
    const events = new Emitter<SubscriptionEvents>((e) => this.#handlerFailed(e, `a listener of ${channel} threw`, channel));
    const rec: SubRecord = { handler, options, server, events, settle: undefined, handle: undefined };
    const ready = new Promise<SubscribeResult>((resolve, reject) => {
      rec.settle = { resolve, reject };
    });
    ready.catch(() => undefined); // rejections are for those who await `ready`
    return { rec, ready };
  }

  /** The object handed out for a record: the unsubscribe function with the subscription's members. */
  #handle(rec: SubRecord, ready: Promise<SubscribeResult>, channel: string, entry: Channel | undefined): Subscription {
    const events = rec.events;
    const handle: Subscription = Object.assign((): Promise<void> => (entry ? this.#unsubscribe(entry, rec) : Promise.resolve()), {
      channel,
      serverSide: rec.server,
      ready,
      presence: async (): Promise<PresenceResult> => presenceResult(await this.#presenceRequest('presence', entry, rec, channel), channel),
      presenceStats: async (): Promise<PresenceStats> => presenceStats(await this.#presenceRequest('presence_stats', entry, rec, channel), channel),
      on: <K extends keyof SubscriptionEvents>(type: K, fn: (ev: SubscriptionEvents[K]) => void) => events.on(type, fn),
      once: <K extends keyof SubscriptionEvents>(type: K, fn: (ev: SubscriptionEvents[K]) => void) => events.once(type, fn),
      off: <K extends keyof SubscriptionEvents>(type: K, fn: (ev: SubscriptionEvents[K]) => void) => events.off(type, fn),
    });
    rec.handle = handle;
    return handle;
  }

  /** A server-side subscription object for `ch`, confirmed at once. */
  #serverRecord(ch: Channel): SubRecord {
    const { rec, ready } = this.#newRecord(ch.name, undefined, undefined, true);
    ch.subs.add(rec);
    this.#settle(rec, resultOf(ch.pos));
    this.#handle(rec, ready, ch.name, ch);
    return rec;
  }

  /** A `presence` or `presence_stats` request for a subscription that is still on. */
  #presenceRequest(kind: 'presence' | 'presence_stats', ch: Channel | undefined, rec: SubRecord, channel: string): Promise<ReplyFrame> {
    if (this.#state === 'closed') return Promise.reject(new PubgateError('closed', 'the client is closed', channel));
    if (!ch || !ch.subs.has(rec) || this.#channels.get(channel) !== ch) {
      return Promise.reject(new PubgateError('unsubscribed', `the subscription to ${channel} has ended (unsubscribed or refused)`, channel));
    }
    return this.#request(kind, (id) => JSON.stringify({ type: kind, id, channel }), channel);
  }

  #settle(rec: SubRecord, result: SubscribeResult | undefined, err?: PubgateError): void {
    const s = rec.settle;
    if (!s) return;
    rec.settle = undefined;
    if (err) s.reject(err);
    else s.resolve(result ?? {});
  }

  /**
   * Subscribes `ch` on the open connection. Its token: the one given to
   * `subscribe()` the first time (and every time without
   * getSubscriptionToken), else a fresh one from getSubscriptionToken for
   * every attempt, else none.
   */
  #sendSubscribe(ch: Channel): void {
    cancel(ch.retryTimer);
    ch.retryTimer = undefined;
    ch.status = 'subscribing';
    ch.reqId = undefined;
    const attempt = ++ch.attempt;
    const getToken = this.#o.getSubscriptionToken;
    if (ch.token !== undefined && (!ch.tokenUsed || !getToken)) {
      ch.tokenUsed = true;
      this.#sendSubscribeFrame(ch, ch.token);
      return;
    }
    if (!getToken) {
      this.#sendSubscribeFrame(ch, undefined);
      return;
    }
    const gen = this.#gen;
    // While the token is fetched the connection may end, the channel be unsubscribed or made server-side, or a newer attempt start.
    const wanted = (): boolean => gen === this.#gen && this.#state === 'connected' && this.#channels.get(ch.name) === ch && ch.status === 'subscribing' && ch.attempt === attempt;
    within(
      Promise.resolve().then(() => getToken(ch.name)),
      this.#o.requestTimeoutMs,
      'getSubscriptionToken',
    ).then(
      (t) => {
        if (!wanted()) return;
        if (t !== undefined && t !== null && typeof t !== 'string') {
          this.#subscribeFailed(ch, new PubgateError('token', `getSubscriptionToken(${ch.name}) returned a ${typeof t}, not a token`, ch.name), gen);
          return;
        }
        this.#sendSubscribeFrame(ch, t || undefined);
      },
      (e: unknown) => {
        if (!wanted()) return;
        // A PubgateError says what to do (forbidden: give up); anything else is retried.
        const err = e instanceof PubgateError ? e : new PubgateError('token', `getSubscriptionToken(${ch.name}) failed: ${describe(e)}`, ch.name, { cause: e });
        this.#subscribeFailed(ch, err, gen);
      },
    );
  }

  #sendSubscribeFrame(ch: Channel, token: string | undefined): void {
    const gen = this.#gen;
    const since = ch.pos;
    ch.since = since;
    // Rewind only until the first confirmation, and never with `since` (bad_request): a resubscribe recovers from the last position instead.
    const rewind = since === undefined && !ch.everActive ? ch.rewind : undefined;
    const r: Request = {
      kind: 'subscribe',
      channel: ch.name,
      build: (id) =>
        JSON.stringify({
          type: 'subscribe',
          id,
          channel: ch.name,
          ...(since ? { since } : {}),
          ...(token !== undefined ? { token } : {}),
          ...(rewind !== undefined ? { rewind } : {}),
        }),
      id: undefined,
      timer: undefined,
      resolve: (reply) => this.#onSubscribeReply(ch, reply.id, reply),
      reject: (e) => this.#onSubscribeFailed(ch, r.id, e, gen),
    };
    r.timer = later(() => {
      if (r.id !== undefined) this.#pending.delete(r.id);
      r.reject(new PubgateError('timeout', `no reply to subscribe within ${this.#o.requestTimeoutMs} ms`, ch.name));
    }, this.#o.requestTimeoutMs);
    // Set before sending: a send that fails ends the connection, which resets the channel.
    const id = this.#nextId++;
    ch.reqId = id;
    this.#sendRequest(r, id);
  }

  #current(ch: Channel, id: number | undefined): boolean {
    return this.#channels.get(ch.name) === ch && id !== undefined && ch.reqId === id;
  }

  #onSubscribeReply(ch: Channel, id: number, reply: ReplyFrame): void {
    if (!this.#current(ch, id)) return;
    if (reply.error) {
      this.#onSubscribeFailed(ch, id, new PubgateError(reply.error.code, reply.error.message, ch.name), this.#gen);
      return;
    }
    ch.reqId = undefined;
    ch.status = 'active';
    ch.retries = 0;
    ch.authRetries = 0;
    if (typeof reply.offset === 'number' && typeof reply.epoch === 'string') {
      // Replayed or live messages may have arrived before the reply: keep the later position.
      if (!ch.pos || ch.pos.epoch !== reply.epoch || reply.offset > ch.pos.offset) ch.pos = { offset: reply.offset, epoch: reply.epoch };
    }
    const result: { offset?: number; epoch?: string; recovered?: boolean } = {};
    if (typeof reply.offset === 'number') result.offset = reply.offset;
    if (typeof reply.epoch === 'string') result.epoch = reply.epoch;
    if (ch.since !== undefined) result.recovered = reply.recovered === true;
    const report = ch.everActive || ch.since !== undefined;
    ch.everActive = true;
    this.#maybeEndHandover();
    for (const rec of [...ch.subs]) this.#settle(rec, result);
    if (!report) return;
    // `since` was sent: a reply without `recovered` cannot prove there is no gap.
    this.#reportResubscribe(ch, { channel: ch.name, since: ch.since, recovered: ch.since === undefined ? undefined : reply.recovered === true }, [...ch.subs]);
  }

  /** The `resubscribed` event, and each subscription's `onResubscribe` and `resubscribed` (those of `recs` still on). */
  #reportResubscribe(ch: Channel, info: ResubscribeInfo, recs: readonly SubRecord[]): void {
    this.#events.emit('resubscribed', info);
    for (const rec of recs) {
      if (!ch.subs.has(rec)) continue;
      if (rec.options?.onResubscribe) {
        try {
          rec.options.onResubscribe(info);
        } catch (e) {
          rethrowLater(e);
        }
      }
      rec.events.emit('resubscribed', info);
    }
  }

  #onSubscribeFailed(ch: Channel, id: number | undefined, err: PubgateError, gen: number): void {
    if (!this.#current(ch, id)) return;
    this.#subscribeFailed(ch, err, gen);
  }

  /** The current subscribe attempt of `ch` failed (a reply, a timeout, or getSubscriptionToken): retry, or give up. */
  #subscribeFailed(ch: Channel, err: PubgateError, gen: number): void {
    ch.reqId = undefined;
    ch.status = 'idle';
    // An expired subscription token: a fresh one may do.
    const freshToken = err.code === 'unauthorized' && this.#o.getSubscriptionToken !== undefined && ch.authRetries < MAX_AUTH_RETRIES;
    const transient = TRANSIENT.has(err.code) || freshToken;
    if (transient && gen === this.#gen && this.#state === 'connected') {
      // The broker is down, the connection is rate limited, or the token could not be had: try again on this connection.
      if (freshToken) ch.authRetries++;
      ch.retries++;
      const delay = Math.max(this.#o.backoff.minMs / 2, fullJitter(ch.retries, this.#o.backoff, this.#o.random));
      this.#emitError(new PubgateError(err.code, `subscribe to ${ch.name} failed (${err.message}); retrying in ${delay} ms`, ch.name, { cause: err }));
      ch.retryTimer = later(() => {
        ch.retryTimer = undefined;
        if (gen === this.#gen && this.#state === 'connected' && this.#channels.get(ch.name) === ch && ch.status === 'idle') this.#sendSubscribe(ch);
      }, Math.min(delay, backoffWindow(ch.retries, this.#o.backoff)));
      return;
    }
    if (transient) return; // the connection ended: the channel is renewed on the next one
    this.#channels.delete(ch.name);
    this.#maybeEndHandover();
    for (const rec of [...ch.subs]) {
      this.#settle(rec, undefined, err);
      if (!rec.options?.onError) continue;
      try {
        rec.options.onError(err);
      } catch (e) {
        rethrowLater(e);
      }
    }
    this.#emitError(err);
  }

  #onMessage(f: MessageFrame): void {
    const ch = this.#channels.get(f.channel);
    if (!ch) return;
    if (typeof f.offset === 'number' && typeof f.epoch === 'string') {
      if (ch.pos && ch.pos.epoch === f.epoch && f.offset <= ch.pos.offset) return; // already delivered
      ch.pos = { offset: f.offset, epoch: f.epoch };
    }
    for (const rec of [...ch.subs]) {
      if (rec.handler) {
        try {
          rec.handler(f.data, f);
        } catch (e) {
          this.#handlerFailed(e, `a message handler for ${f.channel} threw`, f.channel);
        }
      }
      rec.events.emit('message', f);
    }
  }

  /** An application callback threw: an `error` event (code `handler`) when someone listens, else rethrown from a fresh task. */
  #handlerFailed(e: unknown, what: string, channel: string): void {
    if (this.#events.listenerCount('error') > 0) this.#emitError(new PubgateError('handler', `${what}: ${describe(e)}`, channel, { cause: e }));
    else rethrowLater(e);
  }

  /** A `join` or `leave` push: to every subscription of the channel. */
  #onPresenceFrame(f: JoinFrame | LeaveFrame): void {
    const ch = this.#channels.get(f.channel);
    if (!ch) return;
    if (f.type === 'join') {
      const ev = joinEvent(f);
      if (!ev) return this.#emitError(new PubgateError('protocol', `the server sent an invalid join frame: ${JSON.stringify(f).slice(0, 120)}`, ch.name));
      for (const rec of [...ch.subs]) rec.events.emit('join', ev);
    } else {
      const ev = leaveEvent(f);
      if (!ev) return this.#emitError(new PubgateError('protocol', `the server sent an invalid leave frame: ${JSON.stringify(f).slice(0, 120)}`, ch.name));
      for (const rec of [...ch.subs]) rec.events.emit('leave', ev);
    }
  }

  async #unsubscribe(ch: Channel, rec: SubRecord): Promise<void> {
    if (!ch.subs.delete(rec)) return;
    this.#settle(rec, undefined, new PubgateError('unsubscribed', 'unsubscribed before the server confirmed the subscription', ch.name));
    if (this.#channels.get(ch.name) !== ch) return;
    // The server owns a server-side subscription: only a backend ends it. The entry stays, with its position.
    if (ch.server || ch.subs.size > 0) return;
    // Still fetching its token: nothing was sent, there is nothing to undo.
    const unsent = ch.status === 'subscribing' && ch.reqId === undefined;
    this.#channels.delete(ch.name);
    cancel(ch.retryTimer);
    ch.retryTimer = undefined;
    ch.status = 'idle';
    ch.reqId = undefined;
    if (this.#state !== 'connected' || unsent) return; // the next connection simply does not subscribe
    await this.#request('unsubscribe', (id) => JSON.stringify({ type: 'unsubscribe', id, channel: ch.name }), ch.name);
  }

  // ---- server-side subscriptions (contract 1.1) -----------------------------------

  /**
   * A new connection's welcome `subs`: the server-side subscriptions it has.
   * Those channels are active at once (the client sends no subscribe for
   * them); a server-side subscription of the last connection that is not
   * listed has ended. Returns what to report once the connection is set up.
   */
  #applyWelcomeSubs(w: WelcomeFrame): ServerSubChanges {
    const changes: ServerSubChanges = { problems: [], lost: [], made: [], renewed: [] };
    const subs = new Map<string, SinceOffset | undefined>();
    const raw: unknown = w.subs;
    if (raw !== undefined && (raw === null || typeof raw !== 'object' || Array.isArray(raw))) {
      changes.problems.push(`subs is not an object: ${JSON.stringify(raw)?.slice(0, 80)}`);
    } else if (raw !== undefined) {
      for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
        if (!isValidChannel(name) || v === null || typeof v !== 'object') {
          changes.problems.push(`invalid subs entry ${JSON.stringify(name).slice(0, 80)}`);
          continue;
        }
        subs.set(name, positionOf(v as { offset?: unknown; epoch?: unknown }));
      }
    }
    for (const ch of [...this.#channels.values()]) {
      if (!ch.server || subs.has(ch.name)) continue;
      // Made by the server on the last connection, not on this one (POST /v1/subscribe lasts one connection).
      ch.server = false;
      const recs = [...ch.subs].filter((r) => r.server);
      for (const r of recs) ch.subs.delete(r);
      // Those the application subscribed itself are subscribed again by the client, with `since`.
      if (ch.subs.size === 0) this.#channels.delete(ch.name);
      changes.lost.push({ channel: ch.name, recs });
    }
    for (const [name, pos] of subs) {
      let ch = this.#channels.get(name);
      if (!ch) this.#channels.set(name, (ch = newChannel(name)));
      const renewed = ch.everActive;
      // The handshake carries no position, so the gateway cannot replay: a gap since the last message is reported, not filled.
      const since = renewed ? ch.pos : undefined;
      const recovered = since === undefined ? undefined : pos !== undefined && pos.epoch === since.epoch && pos.offset === since.offset;
      const recs = [...ch.subs];
      serverTakesOver(ch);
      if (pos) ch.pos = pos;
      const result: SubscribeResult = recovered === undefined ? resultOf(pos) : { ...resultOf(pos), recovered };
      for (const rec of recs) this.#settle(rec, result);
      if (!recs.some((r) => r.server)) changes.made.push(this.#serverRecord(ch));
      if (renewed) changes.renewed.push({ ch, info: { channel: name, since, recovered }, recs });
    }
    return changes;
  }

  /** Reports what the welcome changed: ended, new, and renewed server-side subscriptions (a listener may close the client). */
  #reportWelcomeSubs(c: ServerSubChanges, gen: number): void {
    if (c.problems.length > 0) this.#emitError(new PubgateError('protocol', `the server sent an invalid welcome subs: ${c.problems.slice(0, 3).join('; ')}`));
    for (const { channel, recs } of c.lost) {
      if (gen !== this.#gen) return;
      const ev: UnsubscribedEvent = { channel, reason: 'reconnected' };
      for (const rec of recs) rec.events.emit('unsubscribed', ev);
      this.#events.emit('unsubscribed', ev);
    }
    for (const rec of c.made) {
      if (gen !== this.#gen) return;
      if (rec.handle) this.#events.emit('subscribed', rec.handle);
    }
    for (const { ch, info, recs } of c.renewed) {
      if (gen !== this.#gen) return;
      if (this.#channels.get(ch.name) === ch) this.#reportResubscribe(ch, info, recs);
    }
  }

  /** A backend subscribed this connection (POST /v1/subscribe). */
  #onSubscribedFrame(f: SubscribedFrame): void {
    const pos = positionOf(f);
    if (!isValidChannel(f.channel) || ((f.offset !== undefined || f.epoch !== undefined) && !pos)) {
      this.#emitError(new PubgateError('protocol', `the server sent an invalid subscribed frame: ${JSON.stringify(f).slice(0, 120)}`));
      return;
    }
    let ch = this.#channels.get(f.channel);
    if (!ch) this.#channels.set(f.channel, (ch = newChannel(f.channel)));
    // A subscribe of the client's own that is under way is superseded: its reply is ignored.
    serverTakesOver(ch);
    if (pos && (!ch.pos || ch.pos.epoch !== pos.epoch || pos.offset > ch.pos.offset)) ch.pos = pos;
    for (const rec of [...ch.subs]) this.#settle(rec, resultOf(ch.pos));
    if ([...ch.subs].some((r) => r.server)) return;
    const rec = this.#serverRecord(ch);
    if (rec.handle) this.#events.emit('subscribed', rec.handle);
  }

  /** A backend unsubscribed this connection (POST /v1/unsubscribe), or could not subscribe it (limit_exceeded). */
  #onUnsubscribedFrame(f: UnsubscribedFrame): void {
    if (!isValidChannel(f.channel)) {
      this.#emitError(new PubgateError('protocol', `the server sent an invalid unsubscribed frame: ${JSON.stringify(f).slice(0, 120)}`));
      return;
    }
    // limit_exceeded: the backend's subscribe did not happen here; what this connection has is unchanged.
    const ev: UnsubscribedEvent = f.reason === 'limit_exceeded' ? { channel: f.channel, reason: 'limit_exceeded' } : { channel: f.channel };
    const ch = ev.reason === undefined ? this.#channels.get(f.channel) : undefined;
    if (ch) {
      // Every subscription of the channel ends, the application's own included: the backend decided.
      this.#channels.delete(ch.name);
      cancel(ch.retryTimer);
      ch.retryTimer = undefined;
      ch.status = 'idle';
      ch.reqId = undefined;
      ch.server = false;
      const err = new PubgateError('unsubscribed', `the server unsubscribed this connection from ${ch.name}`, ch.name);
      for (const rec of [...ch.subs]) {
        this.#settle(rec, undefined, err);
        rec.events.emit('unsubscribed', ev);
      }
    }
    this.#events.emit('unsubscribed', ev);
  }

  // ---- errors and close ----------------------------------------------------------

  #emitError(err: PubgateError): void {
    this.#events.emit('error', err);
  }

  close(): Promise<void> {
    if (this.#state === 'closed') return Promise.resolve();
    const ws = this.#ws;
    this.#terminate(1000, 'closed by the client');
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = later(resolve, 1000);
      ws.onclose = () => {
        cancel(timer);
        resolve();
      };
      try {
        ws.close(1000, 'client closed');
      } catch {
        cancel(timer);
        resolve();
      }
    });
  }
}

/** Creates a client and starts connecting (after the current task, so listeners added now see every event). */
export function connect(options: ConnectOptions): PubgateClient {
  return new Client(options);
}
