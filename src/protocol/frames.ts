/**
 * The frames of the wire contract: types, parsing of client frames and encoding
 * of server frames. Pure: no I/O. The client SDK shares these types.
 */
import type { ErrorCode } from '../errors.js';
import { isValidChannel } from './channel.js';
import { objectMembers } from './json-scan.js';

export interface SinceOffset {
  readonly offset: number;
  readonly epoch: string;
}

export type ClientFrame =
  /** `token`: a subscription token (contract 1.1). */
  /** `rewind` (1.1): deliver the last `rewind` messages first; never with `since`. */
  | { readonly type: 'subscribe'; readonly id: number; readonly channel: string; readonly since?: SinceOffset; readonly rewind?: number; readonly token?: string }
  | { readonly type: 'unsubscribe'; readonly id: number; readonly channel: string }
  /** `data` is the raw JSON text of the value, forwarded byte-for-byte. */
  | { readonly type: 'publish'; readonly id: number; readonly channel: string; readonly data: string; readonly echo?: boolean }
  | { readonly type: 'ping'; readonly id: number | undefined }
  /** `token` may be left out only by connections accepted by the connect proxy (1.1): they refresh through it. */
  | { readonly type: 'refresh'; readonly id: number; readonly token?: string }
  | { readonly type: 'presence'; readonly id: number; readonly channel: string }
  | { readonly type: 'presence_stats'; readonly id: number; readonly channel: string };

export type ClientFrameType = ClientFrame['type'];

export interface WelcomeFrame {
  readonly type: 'welcome';
  readonly node: string;
  readonly conn: string;
  readonly user: string;
  readonly expiresIn: number | null;
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

export interface ReplyFrame {
  readonly type: 'reply';
  readonly id: number;
  readonly recovered?: boolean;
  readonly offset?: number;
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

/** Result of parsing one client text frame. */
export type ParseResult =
  | { readonly ok: true; readonly frame: ClientFrame }
  /** Invalid but answerable: reply `bad_request` to `id`. */
  | { readonly ok: false; readonly id: number; readonly message: string }
  /** Unanswerable: close the connection with 4500. */
  | { readonly ok: false; readonly id: undefined; readonly message: string };

/** Longest subscription token, as for connection tokens (auth/token.ts MAX_TOKEN_LENGTH). */
export const MAX_FRAME_TOKEN_LENGTH = 8192;

function isToken(v: unknown): v is string {
  return typeof v === 'string' && v !== '' && v.length <= MAX_FRAME_TOKEN_LENGTH;
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
}

/**
 * Parses a client frame. A frame that is not JSON, or is invalid and carries no
 * usable id, yields `id: undefined` (the caller closes with 4500).
 */
export function parseClientFrame(text: string): ParseResult {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, id: undefined, message: 'frame is not valid JSON' };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    return { ok: false, id: undefined, message: 'frame must be a JSON object' };
  }
  const o = v as Record<string, unknown>;
  const id = isId(o.id) ? o.id : undefined;
  const bad = (message: string): ParseResult =>
    id === undefined ? { ok: false, id: undefined, message } : { ok: false, id, message };

  if (o.id !== undefined && id === undefined) return bad('id must be a positive integer');
  switch (o.type) {
    case 'ping':
      return { ok: true, frame: { type: 'ping', id } };
    case 'subscribe': {
      if (id === undefined) return bad('subscribe needs an id');
      if (!isValidChannel(o.channel)) return bad('invalid channel name');
      // A subscription token (1.1): its signature and claims are checked when the claims do not allow the channel.
      if (o.token !== undefined && !isToken(o.token)) return bad(`token must be a non-empty string of at most ${MAX_FRAME_TOKEN_LENGTH} characters`);
      const token = o.token === undefined ? {} : { token: o.token };
      if (o.rewind !== undefined) {
        if (!isId(o.rewind)) return bad('rewind must be a positive integer');
        if (o.since !== undefined) return bad('rewind and since cannot be combined');
        return { ok: true, frame: { type: 'subscribe', id, channel: o.channel, rewind: o.rewind, ...token } };
      }
      if (o.since === undefined) return { ok: true, frame: { type: 'subscribe', id, channel: o.channel, ...token } };
      const since = o.since as Record<string, unknown> | null;
      if (
        since === null || typeof since !== 'object' ||
        typeof since.offset !== 'number' || !Number.isSafeInteger(since.offset) || since.offset < 0 ||
        typeof since.epoch !== 'string' || since.epoch.length > 64
      ) {
        return bad('since must be {"offset": integer >= 0, "epoch": string}');
      }
      return { ok: true, frame: { type: 'subscribe', id, channel: o.channel, since: { offset: since.offset, epoch: since.epoch }, ...token } };
    }
    case 'unsubscribe':
      if (id === undefined) return bad('unsubscribe needs an id');
      if (!isValidChannel(o.channel)) return bad('invalid channel name');
      return { ok: true, frame: { type: 'unsubscribe', id, channel: o.channel } };
    case 'publish': {
      if (id === undefined) return bad('publish needs an id');
      if (!isValidChannel(o.channel)) return bad('invalid channel name');
      if (!('data' in o)) return bad('publish needs data');
      const span = objectMembers(text).get('data');
      if (!span) return bad('publish needs data');
      if (o.echo !== undefined && typeof o.echo !== 'boolean') return bad('echo must be true or false');
      const data = text.slice(span.start, span.end);
      // `echo:false`: every subscriber but this connection receives it (1.1).
      return { ok: true, frame: o.echo === false ? { type: 'publish', id, channel: o.channel, data, echo: false } : { type: 'publish', id, channel: o.channel, data } };
    }
    case 'presence':
    case 'presence_stats':
      if (id === undefined) return bad(`${o.type} needs an id`);
      if (!isValidChannel(o.channel)) return bad('invalid channel name');
      return { ok: true, frame: { type: o.type, id, channel: o.channel } };
    case 'refresh':
      if (id === undefined) return bad('refresh needs an id');
      // A connection accepted by the connect proxy refreshes without a token (connection.ts); the others need one.
      if (o.token === undefined) return { ok: true, frame: { type: 'refresh', id } };
      if (typeof o.token !== 'string' || o.token === '') return bad('refresh needs a token');
      return { ok: true, frame: { type: 'refresh', id, token: o.token } };
    default:
      return bad(o.type === undefined ? 'frame has no type' : 'unknown frame type');
  }
}

/**
 * The `message` frame text for a publish, built once per publish and fanned out
 * as bytes. `rawData` is JSON text; channel names need no escaping (their
 * alphabet has no quote or backslash).
 */
export function encodeMessage(channel: string, rawData: string, offset?: number, epoch?: string): string {
  const pos = offset === undefined ? '' : `,"offset":${offset},"epoch":${JSON.stringify(epoch ?? '')}`;
  return `{"type":"message","channel":"${channel}"${pos},"data":${rawData}}`;
}

export function encodeReply(id: number, extra?: Omit<ReplyFrame, 'type' | 'id' | 'error'>): string {
  return JSON.stringify({ type: 'reply', id, ...extra });
}

/** A `presence` reply; `info` texts are JSON objects, spliced in as they are. */
export function encodePresenceReply(
  id: number,
  p: { readonly members: readonly { readonly user: string; readonly info: string | undefined; readonly conns: number }[]; readonly users: number; readonly connections: number; readonly truncated: boolean },
): string {
  return `{"type":"reply","id":${id},${presenceBody(p)}}`;
}

/** `"members":[...],"users":n,"connections":n` (+ `"truncated":true`), shared by the frame and the HTTP API. */
export function presenceBody(p: Parameters<typeof encodePresenceReply>[1]): string {
  return `"members":${presenceMembersJson(p.members)},"users":${p.users},"connections":${p.connections}${p.truncated ? ',"truncated":true' : ''}`;
}

/** A presence member list as JSON, each `info` inserted as stored (already JSON). */
export function presenceMembersJson(members: Parameters<typeof encodePresenceReply>[1]['members']): string {
  return `[${members.map((m) => `{"user":${JSON.stringify(m.user)}${m.info !== undefined ? `,"info":${m.info}` : ''},"conns":${m.conns}}`).join(',')}]`;
}

export function encodeErrorReply(id: number, code: ErrorCode, message: string): string {
  return JSON.stringify({ type: 'reply', id, error: { code, message } });
}

export function encodeWelcome(w: Omit<WelcomeFrame, 'type'>): string {
  return JSON.stringify({ type: 'welcome', ...w });
}

/** A position on a history channel, as `welcome.subs` and `subscribed` carry it. */
export interface SubPosition {
  readonly offset: number;
  readonly epoch: string;
}

/** `{"type":"subscribed","channel":..}`, with `offset`/`epoch` on history channels. */
export function encodeSubscribed(channel: string, pos?: SubPosition): string {
  const f: SubscribedFrame = pos ? { type: 'subscribed', channel, offset: pos.offset, epoch: pos.epoch } : { type: 'subscribed', channel };
  return JSON.stringify(f);
}

/** `{"type":"unsubscribed","channel":..}`, with `reason` when a server-side subscription went over maxSubscriptions. */
export function encodeUnsubscribed(channel: string, reason?: 'limit_exceeded'): string {
  const f: UnsubscribedFrame = reason ? { type: 'unsubscribed', channel, reason } : { type: 'unsubscribed', channel };
  return JSON.stringify(f);
}
