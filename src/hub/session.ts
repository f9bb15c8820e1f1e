/**
 * Per-connection state, kept in uWS's typed user data (`WebSocket<Session>`).
 *
 * Sized for many idle connections. uWS copies these fields onto its
 * WebSocket object at the upgrade (`getUserData()` returns that object), where
 * V8 keeps them in one property array grown 3 slots at a time: 9 fields take
 * 88 bytes, 12 take 112, 15 take 136. So: nine fields, nothing derivable
 * (the connection's text id, `anonymous`), objects shared between connections
 * where they are alike (Permissions, NO_CHANNELS), one channel without a Set
 * (OneChannel), what only a misbehaving
 * connection needs (and the token's presence `info`) in `extra`, created on first use, small integers rather
 * than times where that says the same (a number that is not a small integer
 * costs a 16-byte box), no per-session timers.
 */
/** Whether a connection whose token `sub` is `sub` may use `channel`. */
export type ChannelMatcher = (channel: string, sub: string) => boolean;

/** What a connection may do; one object serves every connection with the same claims. */
export interface Permissions {
  readonly subscribe: ChannelMatcher;
  readonly publish: ChannelMatcher;
}

export interface Session {
  /** Connection number on this node; the transport turns it into the `conn` text of `welcome` and logs. */
  readonly id: number;
  /** Token `sub`, or `anonymous`. */
  readonly user: string;
  /** Token expiry, unix seconds; 0 for anonymous connections (the only ones without). */
  exp: number;
  perms: Permissions;
  /**
   * Channels subscribed (or being subscribed) on this connection: NO_CHANNELS
   * while there are none, a OneChannel with one, a Set with more. Only the hub changes it, with addChannel and deleteChannel.
   */
  channels: ReadonlySet<string>;
  /** False once the socket closed: nothing may be sent to it any more. */
  open: boolean;
  /** Heartbeat ticks (four per ping interval) since the client last sent anything (a frame or a pong). */
  idleBeats: number;
  /** The client frame rate limit's token bucket: when (ms, monotonic) it is full again; 0 is full (limits/rate.ts takeToken). */
  frameFullAtMs: number;
  /**
   * Rate-limit strikes, slow-consumer state and the token's `info` claim:
   * undefined until the connection first needs them (or has an `info`).
   */
  extra: Extra | undefined;
}

export interface Extra {
  /** Consecutive frames refused by the rate limit. */
  strikes: number;
  /**
   * When (ms, monotonic) the send buffer first overflowed: under
   * slowConsumerPolicy=close the socket stops receiving and is closed with 4008
   * once its buffer drained enough for the close frame; 0 when not slow.
   */
  slowSinceMs: number;
  /** Messages skipped for this socket (slowConsumerPolicy=drop), for the close log. */
  dropped: number;
  /** The token's `info` claim, serialized (a JSON object, at most 1 KiB), shown in presence; undefined without one. */
  info: string | undefined;
  /** Server-side subscriptions to make at connect (the `subs` claim, or the connect proxy's answer), until they are made. */
  subs?: readonly string[] | undefined;
  /** The upgrade's Cookie header, kept for connections accepted by the connect proxy (their refresh asks it again). */
  cookie?: string | undefined;
  /**
   * Client frames (their text) that arrived while the welcome waited for the
   * server-side subscriptions, handled in order once it went out; undefined
   * when not waiting.
   */
  held?: string[] | undefined;
  /** With `cookie`: the client IP and Origin the connect proxy was told at the upgrade, told again at each refresh. */
  connectFrom?: { readonly ip: string; readonly origin: string } | undefined;
}

export function extraOf(s: Session): Extra {
  return (s.extra ??= { strikes: 0, slowSinceMs: 0, dropped: 0, info: undefined, subs: undefined, cookie: undefined });
}

/**
 * The channels of every session that has none: one shared empty set instead
 * of an empty Set (~140 bytes) per connection.
 */
export const NO_CHANNELS: ReadonlySet<string> = new Set<string>();

/**
 * The channels of a session with exactly one: most connections (an idle
 * subscriber of one channel) keep this 32-byte object instead of a Set with its
 * hash table (~150 bytes). Immutable: adding a second channel replaces it
 * with a Set, removing the channel with NO_CHANNELS, so an iteration under
 * way (hub.remove) still sees the channel it started with.
 */
export class OneChannel implements ReadonlySet<string> {
  constructor(private readonly channel: string) {}
  get size(): number {
    return 1;
  }
  has(value: string): boolean {
    return value === this.channel;
  }
  forEach(fn: (value: string, key: string, set: ReadonlySet<string>) => void, thisArg?: unknown): void {
    fn.call(thisArg, this.channel, this.channel, this);
  }
  *values(): SetIterator<string> {
    yield this.channel;
  }
  keys(): SetIterator<string> {
    return this.values();
  }
  *entries(): SetIterator<[string, string]> {
    yield [this.channel, this.channel];
  }
  [Symbol.iterator](): SetIterator<string> {
    return this.values();
  }
}

export function addChannel(s: Session, channel: string): void {
  if (s.channels === NO_CHANNELS) s.channels = new OneChannel(channel);
  else if (s.channels instanceof OneChannel) {
    if (!s.channels.has(channel)) s.channels = new Set([...s.channels, channel]);
  } else (s.channels as Set<string>).add(channel);
}

/** Removes a channel; false when the session did not have it. */
export function deleteChannel(s: Session, channel: string): boolean {
  if (!s.channels.has(channel)) return false;
  if (s.channels.size === 1) s.channels = NO_CHANNELS; // a OneChannel, or a Set down to its last
  else (s.channels as Set<string>).delete(channel);
  return true;
}

/** The socket surface the hub uses; uWS's WebSocket<Session> satisfies it. */
export interface Socket {
  getUserData(): Session;
  subscribe(topic: string): boolean;
  unsubscribe(topic: string): boolean;
  send(message: string, isBinary?: boolean, compress?: boolean): number;
  end(code?: number, shortMessage?: string): void;
  ping(message?: string): number;
  getBufferedAmount(): number;
  isSubscribed(topic: string): boolean;
  /** `sse` on a Server-Sent Events stream (transport/sse.ts), `pusher` on a Pusher socket (pusher/socket.ts); absent on a native WebSocket. */
  readonly transport?: 'sse' | 'pusher';
}
