/**
 * What the node sends to the proxies and how it reads their answers (pure: no
 * I/O). A backend's answer is input like a client's: every field is checked,
 * and an answer that is not what the contract says is `bad_response` (the
 * caller answers `unavailable`), with a reason for the log that never quotes
 * the answer itself.
 */
import { MAX_INFO_BYTES } from '../auth/verifier.js';
import { isValidChannel } from '../protocol/channel.js';
import { MAX_ANSWER_BYTES, type HttpAnswer, type Outcome } from './proxy-client.js';

/** The connect proxy's request: the upgrade's Cookie header, client IP and Origin ('' when absent). */
export interface ConnectRequest {
  readonly cookie: string;
  readonly ip: string;
  readonly origin: string;
}

/** What the connect proxy grants: claims, as a token would carry them. */
export interface ConnectGrant {
  readonly user: string;
  /** Seconds from now until the connection expires (closed with 4001 unless refreshed). */
  readonly expiresIn: number;
  readonly channels: readonly string[];
  readonly publish: readonly string[];
  /** Server-side subscriptions at connect (channel names); undefined without. */
  readonly subs: readonly string[] | undefined;
  /** Presence `info`, serialized JSON object (at most 1 KiB); undefined without. */
  readonly info: string | undefined;
}

/** The subscribe proxy's request; `info` is the connection's serialized info (left out without one). */
export interface SubscribeRequest {
  readonly user: string;
  readonly conn: string;
  readonly channel: string;
  readonly info: string | undefined;
}

/** What the subscribe proxy grants: optionally the `info` to show in this channel's presence. */
export interface SubscribeGrant {
  readonly info: string | undefined;
}

/** Largest `expiresIn` accepted: ten years, far beyond any session, and exact as seconds since the epoch. */
export const MAX_EXPIRES_IN_SEC = 10 * 365 * 24 * 3600;

export function encodeConnectRequest(r: ConnectRequest): string {
  return JSON.stringify({ cookie: r.cookie, ip: r.ip, origin: r.origin });
}

export function encodeSubscribeRequest(r: SubscribeRequest): string {
  // `info` is already JSON text (a checked object): spliced in as it is.
  const head = JSON.stringify({ user: r.user, conn: r.conn, channel: r.channel });
  return r.info === undefined ? head : `${head.slice(0, -1)},"info":${r.info}}`;
}

type Failure = { readonly result: 'bad_response'; readonly why: string };
const bad = (why: string): Failure => ({ result: 'bad_response', why });

/** A 200 answer's body as a JSON object, or why not. */
function objectBody(a: HttpAnswer): Record<string, unknown> | Failure {
  if (a.text === undefined) return bad(`answer body over ${MAX_ANSWER_BYTES} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(a.text);
  } catch {
    return bad('answer is not JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad('answer is not a JSON object');
  return v as Record<string, unknown>;
}

const isFailure = (v: unknown): v is Failure => typeof v === 'object' && v !== null && (v as Failure).result === 'bad_response';

/** An optional `info`: a JSON object of at most MAX_INFO_BYTES serialized. */
function infoField(v: unknown): string | undefined | Failure {
  if (v === undefined) return undefined;
  const why = `info must be a JSON object of at most ${MAX_INFO_BYTES} bytes`;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad(why);
  const text = JSON.stringify(v);
  return Buffer.byteLength(text, 'utf8') > MAX_INFO_BYTES ? bad(why) : text;
}

/** `{sub}` placeholders aside, a channel name or a prefix of one ending in `*`, as in the claims. */
const PATTERN_RE = /^[A-Za-z0-9_:.@/=-]{0,200}\*?$/;
export function isChannelPattern(p: unknown): p is string {
  return typeof p === 'string' && p !== '' && PATTERN_RE.test(p.replaceAll('{sub}', ''));
}

function patternList(v: unknown, name: string): readonly string[] | Failure {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every(isChannelPattern)) return bad(`${name} must be an array of channel patterns`);
  return Object.freeze([...v]);
}

function statusFailure(status: number): { readonly result: 'bad_status'; readonly why: string } {
  return { result: 'bad_status', why: `status ${status}` };
}

/** The connect proxy's answer: 200 with claims allows; 401 and 403 refuse; anything else is a failure. */
export function readConnectAnswer(a: HttpAnswer): Outcome<ConnectGrant> {
  if (a.status === 401 || a.status === 403) return { result: 'deny' };
  if (a.status !== 200) return statusFailure(a.status);
  const o = objectBody(a);
  if (isFailure(o)) return o;
  const { user, expiresIn } = o;
  if (typeof user !== 'string' || user === '') return bad('user must be a non-empty string');
  if (typeof expiresIn !== 'number' || !Number.isSafeInteger(expiresIn) || expiresIn <= 0 || expiresIn > MAX_EXPIRES_IN_SEC) {
    return bad(`expiresIn must be a whole number of seconds between 1 and ${MAX_EXPIRES_IN_SEC}`);
  }
  const channels = patternList(o.channels, 'channels');
  if (isFailure(channels)) return channels;
  const publish = patternList(o.publish, 'publish');
  if (isFailure(publish)) return publish;
  let subs: readonly string[] | undefined;
  if (o.subs !== undefined) {
    if (!Array.isArray(o.subs) || !o.subs.every((c): c is string => isValidChannel(c))) return bad('subs must be an array of channel names');
    subs = Object.freeze([...new Set(o.subs)]);
  }
  const info = infoField(o.info);
  if (isFailure(info)) return info;
  return { result: 'allow', value: { user, expiresIn, channels, publish, subs, info } };
}

/** The subscribe proxy's answer: 200 `{"allow":true}` allows, 200 `{"allow":false}` and 403 refuse, anything else is a failure. */
export function readSubscribeAnswer(a: HttpAnswer): Outcome<SubscribeGrant> {
  if (a.status === 403) return { result: 'deny' };
  if (a.status !== 200) return statusFailure(a.status);
  const o = objectBody(a);
  if (isFailure(o)) return o;
  if (typeof o.allow !== 'boolean') return bad('allow must be true or false');
  if (!o.allow) return { result: 'deny' };
  const info = infoField(o.info);
  if (isFailure(info)) return info;
  return { result: 'allow', value: { info } };
}
