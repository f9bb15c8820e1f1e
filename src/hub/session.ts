/**
 * Per-connection state, kept in uWS's typed user data (`WebSocket<Session>`).
 * Sized for many connections: plain fields, no Set while there are no
 * channels, no per-session timers.
 */
/** Whether a connection whose token `sub` is `sub` may use `channel`. */
export type ChannelMatcher = (channel: string, sub: string) => boolean;

/** What a connection may do; one object serves every connection with the same claims. */
export interface Permissions {
  readonly subscribe: ChannelMatcher;
  readonly publish: ChannelMatcher;
}

export interface Session {
  /** Connection id, as sent in `welcome`. */
  readonly conn: string;
  /** Token `sub`, or `anonymous`. */
  readonly user: string;
  readonly anonymous: boolean;
  /** Client IP (after trusted-proxy resolution), for logs. */
  readonly ip: string;
  /** Token expiry, unix seconds; 0 for connections without one (anonymous). */
  exp: number;
  perms: Permissions;
  /**
   * Channels subscribed (or being subscribed) on this connection: NO_CHANNELS
   * while there are none. Only the hub changes it, with addChannel and deleteChannel.
   */
  channels: ReadonlySet<string>;
  /** False once the socket closed: nothing may be sent to it any more. */
  open: boolean;
  /** Last time (ms, monotonic clock) the client sent anything, a pong included. */
  lastSeenMs: number;
  /** Token bucket for client frames. */
  frameTokens: number;
  frameRefillMs: number;
  /** Consecutive frames refused by the rate limit. */
  strikes: number;
  /**
   * When (ms, monotonic) the send buffer first overflowed: under
   * slowConsumerPolicy=close the socket stops receiving and is closed with 4008
   * once its buffer drained enough for the close frame; 0 when not slow.
   */
  slowSinceMs: number;
  /** Messages skipped for this socket (slowConsumerPolicy=drop), for the close log. */
  droppedCount: number;
}

/**
 * The channels of every session that has none: one shared empty set instead
 * of an empty Set (~140 bytes) per connection.
 */
export const NO_CHANNELS: ReadonlySet<string> = new Set<string>();

export function addChannel(s: Session, channel: string): void {
  if (s.channels === NO_CHANNELS) s.channels = new Set([channel]);
  else (s.channels as Set<string>).add(channel);
}

/** Removes a channel; false when the session did not have it. */
export function deleteChannel(s: Session, channel: string): boolean {
  if (!s.channels.has(channel)) return false;
  if (s.channels.size === 1) s.channels = NO_CHANNELS;
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
}
