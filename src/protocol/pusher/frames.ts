/**
 * Pusher Channels protocol 7 frames (pure: no sockets, no state). Every
 * frame is a JSON object `{"event","channel"?,"data"}`; from the server,
 * `data` is a JSON string (JSON text inside a string) except where Pusher's
 * own frames carry an object, as pusher-js expects them.
 */
import { objectMembers } from '../json-scan.js';

/** Pusher's error codes the gateway uses (pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol). */
export const PUSHER_CODE = {
  /** Application does not exist: refused, no reconnect. */
  UNKNOWN_APP: 4001,
  /** Unsupported protocol version. */
  BAD_PROTOCOL: 4007,
  /** Connection unauthorized (also: terminated by the app, and malformed frames). */
  UNAUTHORIZED: 4009,
  /** Over capacity / too fast: reconnect with backoff. */
  BACKOFF: 4100,
  /** Generic reconnect immediately (draining, broker gap). */
  RECONNECT: 4200,
  /** Pong reply not received. */
  PONG_TIMEOUT: 4201,
  /** Client event rejected due to rate limit (an error frame, the connection stays). */
  CLIENT_EVENT_RATE: 4301,
} as const;

/**
 * The close code a Pusher socket gets for a native close (protocol/close-codes.ts):
 * the native 4000–4499 "reconnect" range means something else to pusher-js
 * (4000–4099 refused), so each is mapped to the Pusher code with the same advice.
 */
export function pusherCloseCode(native: number): number {
  switch (native) {
    case 1001: // draining
    case 1011: // broker gap
    case 1013:
      return PUSHER_CODE.RECONNECT;
    case 1008: // rate limit exceeded repeatedly
    case 4008: // slow consumer
      return PUSHER_CODE.BACKOFF;
    case 4002:
      return PUSHER_CODE.PONG_TIMEOUT;
    case 4500: // malformed frame
    case 4501: // disconnected by the backend
      return PUSHER_CODE.UNAUTHORIZED;
    default:
      return native;
  }
}

export interface PusherClientFrame {
  readonly event: string;
  readonly channel: string | undefined;
  /** `data` as parsed (pusher-js sends objects; some clients send JSON strings). */
  readonly data: unknown;
}

/** Parses a client frame; undefined when it is not a Pusher frame (not JSON, not an object, no string `event`). */
export function parsePusherFrame(text: string): PusherClientFrame | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as { event?: unknown; channel?: unknown; data?: unknown };
  if (typeof o.event !== 'string') return undefined;
  let data = o.data;
  // Some clients send `data` as JSON text, as the server does.
  if (typeof data === 'string' && (data.startsWith('{') || data.startsWith('['))) {
    try {
      data = JSON.parse(data);
    } catch {
      // kept as the string
    }
  }
  return { event: o.event, channel: typeof o.channel === 'string' ? o.channel : undefined, data };
}

const str = JSON.stringify;

export function encodeConnectionEstablished(socketId: string, activityTimeout: number): string {
  return `{"event":"pusher:connection_established","data":${str(str({ socket_id: socketId, activity_timeout: activityTimeout }))}}`;
}

/** `pusher:error`: data is an object (as Pusher sends it); `code` null for errors without one. */
export function encodePusherError(code: number | null, message: string): string {
  return `{"event":"pusher:error","data":${str({ code, message })}}`;
}

export function encodePong(): string {
  return '{"event":"pusher:pong","data":"{}"}';
}

export function encodePing(): string {
  return '{"event":"pusher:ping","data":"{}"}';
}

/** `pusher_internal:subscription_succeeded`; `data` is the JSON text of the presence data, or `{}`. */
export function encodeSubscriptionSucceeded(channel: string, dataJson = '{}'): string {
  return `{"event":"pusher_internal:subscription_succeeded","channel":${str(channel)},"data":${str(dataJson)}}`;
}

/** Presence data of subscription_succeeded: `{"presence":{"ids","hash","count"}}` as JSON text. */
export function presenceData(members: readonly { readonly user: string; readonly info: string | undefined }[]): string {
  const ids = members.map((m) => m.user);
  const hash = members.map((m) => `${str(m.user)}:${m.info ?? 'null'}`).join(',');
  return `{"presence":{"ids":${str(ids)},"hash":{${hash}},"count":${members.length}}}`;
}

export type SubscriptionErrorType = 'AuthError' | 'InvalidChannel' | 'LimitReached' | 'Unavailable';

export function encodeSubscriptionError(channel: string, type: SubscriptionErrorType, error: string, status: number): string {
  return `{"event":"pusher:subscription_error","channel":${str(channel)},"data":${str({ type, error, status })}}`;
}

export function encodeSigninSuccess(userDataJson: string): string {
  return `{"event":"pusher:signin_success","data":${str({ user_data: userDataJson })}}`;
}

/** An event on a channel; `dataJson` is JSON text, sent as a string. */
export function encodeEvent(event: string, channel: string, dataJson: string, userId?: string): string {
  const u = userId === undefined ? '' : `,"user_id":${str(userId)}`;
  return `{"event":${str(event)},"channel":${str(channel)},"data":${str(dataJson)}${u}}`;
}

/**
 * The Pusher frame for a native server frame (message, join, leave) on the
 * channel Pusher clients know as `channel`; undefined for frames Pusher
 * clients do not get. Contract: a message's event is `data.event` when that is
 * a string (else `message`), its data the JSON text of `data.data` when
 * present, else of `data`. Event names Pusher reserves (`pusher:`,
 * `pusher_internal:`) are never taken from a publish: such a message is
 * delivered as `message`. `data.user_id` (a string) on a `client-` event is
 * passed on as Pusher's `user_id`. Runs once per message per channel.
 * `userPrefix` (the app's hub-user prefix, pusher/users.ts; no character in it
 * needs JSON escaping) is taken off the users of join and leave frames.
 */
export function nativeToPusher(frame: string, channel: string, userPrefix = ''): string | undefined {
  const m = objectMembers(frame);
  const type = m.get('type');
  if (type === undefined) return undefined;
  const t = frame.slice(type.start, type.end);
  if (t === '"message"') {
    const d = m.get('data');
    if (d === undefined) return undefined;
    let event = 'message';
    let data = frame.slice(d.start, d.end);
    let userId: string | undefined;
    if (frame.charCodeAt(d.start) === 0x7b) {
      const dm = objectMembers(frame, d);
      const e = dm.get('event');
      const ev = e === undefined ? undefined : (JSON.parse(frame.slice(e.start, e.end)) as unknown);
      if (typeof ev === 'string' && !ev.startsWith('pusher:') && !ev.startsWith('pusher_internal:')) {
        event = ev;
        const inner = dm.get('data');
        if (inner !== undefined) data = frame.slice(inner.start, inner.end);
        const u = dm.get('user_id');
        const uid = u === undefined || !ev.startsWith('client-') ? undefined : (JSON.parse(frame.slice(u.start, u.end)) as unknown);
        if (typeof uid === 'string') userId = uid;
      }
    }
    return encodeEvent(event, channel, data, userId);
  }
  const u = m.get('user');
  if (u === undefined) return undefined;
  let user = frame.slice(u.start, u.end); // a JSON string
  if (userPrefix !== '' && user.startsWith(`"${userPrefix}`)) user = `"${user.slice(userPrefix.length + 1)}`;
  if (t === '"join"') {
    const i = m.get('info');
    const info = i === undefined ? 'null' : frame.slice(i.start, i.end);
    return `{"event":"pusher_internal:member_added","channel":${str(channel)},"data":${str(`{"user_id":${user},"user_info":${info}}`)}}`;
  }
  if (t === '"leave"') {
    return `{"event":"pusher_internal:member_removed","channel":${str(channel)},"data":${str(`{"user_id":${user}}`)}}`;
  }
  return undefined;
}
