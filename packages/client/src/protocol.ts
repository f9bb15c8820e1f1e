/**
 * The wire contract of pubgate, version 1, as the client sees it: frame types,
 * error codes and close codes. These are copies of the server's types in
 * `src/protocol/frames.ts`, `src/errors.ts` and `src/protocol/close-codes.ts`
 * (so this package's .d.ts stands alone); test/client/types.test.ts checks
 * that they match the server's.
 */

/** The subprotocol the client offers; the server selects it. */
export const SUBPROTOCOL = 'pubgate.v1';

/** Prefix of the subprotocol entry that carries the token (`bearer.<jwt>`). */
export const BEARER_PREFIX = 'bearer.';

/** Channel names: `^[A-Za-z0-9_:.@/=-]{1,200}$`. */
export const CHANNEL_RE = /^[A-Za-z0-9_:.@/=-]{1,200}$/;

export function isValidChannel(v: unknown): v is string {
  return typeof v === 'string' && CHANNEL_RE.test(v);
}

/** Every error code the gateway answers with, over HTTP or in a `reply` frame. */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'method_not_allowed',
  'unsupported_media_type',
  'too_large',
  'request_timeout',
  'rate_limited',
  'limit_exceeded',
  'origin_not_allowed',
  'overloaded',
  'draining',
  'unavailable',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** A position in a history channel: the offset of the last message seen, and the channel's epoch. */
export interface SinceOffset {
  readonly offset: number;
  readonly epoch: string;
}

/** Frames the client sends, as they travel on the wire. */
export type ClientFrame =
  /** `token`: a subscription token (contract 1.1). */
  /** `rewind` (1.1): the last `rewind` messages first (namespaces with `rewind`); never with `since`. */
  | { readonly type: 'subscribe'; readonly id: number; readonly channel: string; readonly since?: SinceOffset; readonly rewind?: number; readonly token?: string }
  | { readonly type: 'unsubscribe'; readonly id: number; readonly channel: string }
  /** `data` is any JSON value; subscribers receive it exactly as published. */
  | { readonly type: 'publish'; readonly id: number; readonly channel: string; readonly data: unknown; readonly echo?: boolean }
  | { readonly type: 'ping'; readonly id?: number }
  /** `token` may be left out only by connections accepted by the connect proxy (1.1): they refresh through it. */
  | { readonly type: 'refresh'; readonly id: number; readonly token?: string }
  | { readonly type: 'presence'; readonly id: number; readonly channel: string }
  | { readonly type: 'presence_stats'; readonly id: number; readonly channel: string };

export type ClientFrameType = ClientFrame['type'];

/** The first frame on every connection. */
export interface WelcomeFrame {
  readonly type: 'welcome';
  /** The node's name (`PUBGATE_NODE_ID`). */
  readonly node: string;
  /** This connection's id on that node. */
  readonly conn: string;
  /** The token's `sub` (`anonymous` for token-less connections). */
  readonly user: string;
  /** Seconds until the token expires; `null` for anonymous connections. */
  readonly expiresIn: number | null;
  /** Seconds between the server's WebSocket pings. */
  readonly ping: number;
  /** Server-side subscriptions made at connect (1.1): channel → its position on history channels, `{}` otherwise. */
  readonly subs?: Readonly<Record<string, { readonly offset?: number; readonly epoch?: string }>>;
}

/** One member in a `presence` reply: a user, with the info of its oldest connection present (no key without one). */
export interface PresenceMemberFrame {
  readonly user: string;
  readonly info?: Readonly<Record<string, unknown>>;
  readonly conns: number;
}

/** The answer to every client frame that carries an `id`. */
export interface ReplyFrame {
  readonly type: 'reply';
  readonly id: number;
  /** On a `subscribe` with `since`: whether every missed message was (or is being) replayed. */
  readonly recovered?: boolean;
  /** On a `subscribe` to a history channel: the channel's current offset (0 when empty). */
  readonly offset?: number;
  /** On a `subscribe` to a history channel: the channel's epoch. */
  readonly epoch?: string;
  /** `presence` replies. */
  readonly members?: readonly PresenceMemberFrame[];
  /** `presence` (only when members were cut at presenceMaxMembers). */
  readonly truncated?: boolean;
  /** `presence` and `presence_stats` replies: exact totals. */
  readonly users?: number;
  readonly connections?: number;
  readonly error?: { readonly code: ErrorCode; readonly message: string };
}

/** A published message. `offset` and `epoch` are present on history channels. */
export interface MessageFrame {
  readonly type: 'message';
  readonly channel: string;
  readonly offset?: number;
  readonly epoch?: string;
  readonly data: unknown;
}

/** A user's first connection subscribed to a joinLeave channel (anywhere in the cluster). */
export interface JoinFrame {
  readonly type: 'join';
  readonly channel: string;
  readonly user: string;
  readonly info?: Readonly<Record<string, unknown>>;
}

/** A user's last connection left a joinLeave channel (unsubscribe, disconnect, or its node's death). */
export interface LeaveFrame {
  readonly type: 'leave';
  readonly channel: string;
  readonly user: string;
}

/** A backend subscribed this connection (POST /v1/subscribe); position on history channels. */
export interface SubscribedFrame {
  readonly type: 'subscribed';
  readonly channel: string;
  readonly offset?: number;
  readonly epoch?: string;
}

/** A backend unsubscribed this connection (POST /v1/unsubscribe), or a server-side subscription went over maxSubscriptions (`reason`). */
export interface UnsubscribedFrame {
  readonly type: 'unsubscribed';
  readonly channel: string;
  readonly reason?: 'limit_exceeded';
}

export type ServerFrame = WelcomeFrame | ReplyFrame | MessageFrame | JoinFrame | LeaveFrame | SubscribedFrame | UnsubscribedFrame;

/**
 * WebSocket close codes the gateway uses. 4000–4499 means "reconnect",
 * 4500–4999 "do not reconnect".
 */
export const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  UNSUPPORTED_DATA: 1003,
  POLICY_VIOLATION: 1008,
  TOO_LARGE: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  TOKEN_EXPIRED: 4001,
  PING_TIMEOUT: 4002,
  SLOW_CONSUMER: 4008,
  MALFORMED: 4500,
  FORBIDDEN: 4501,
} as const;

export type CloseCode = (typeof CLOSE)[keyof typeof CLOSE];

/** 1006: the connection ended without a close frame (network loss, a killed node, a proxy timeout). */
export const ABNORMAL_CLOSURE = 1006;

/**
 * Whether a client should reconnect after this close code: 1001, 1006, 1008,
 * 1011, 1013 and 4000–4499. Anything else (1000, 1003, 1009, 4500–4999, codes
 * the contract does not name) means stop. The same rule as the server's
 * `shouldReconnect`.
 */
export function shouldReconnect(code: number): boolean {
  if (code >= 4000 && code <= 4499) return true;
  return code === 1001 || code === 1006 || code === 1011 || code === 1013 || code === 1008;
}
