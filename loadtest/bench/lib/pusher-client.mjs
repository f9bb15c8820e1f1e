// A Pusher-protocol (7) client for the pusher scenarios, the same for every
// target (pubgate's /app/{key}, Soketi): raw TCP (node:net), a hand-written
// upgrade and frame parser, many connections per process, like ws-client.mjs
// (the connection and frame machinery is raw-conn.mjs, shared with
// ws-client.mjs and socketio-client.mjs).
//
// Per connection: GET /app/{key}?protocol=7, wait for
// pusher:connection_established, send pusher:subscribe for a public channel,
// wait for pusher_internal:subscription_succeeded, then count events.
//
// Hot path: an app event is counted from the first bytes of its frame, which
// both servers start with {"event":"<name>" (pubgate's encodeEvent, Soketi's
// JSON.stringify({event, channel, data})): a name not starting with `pusher`
// is an app event and its payload is skipped. Everything else (pusher:*,
// pusher_internal:*, or a frame led by another key) is JSON-parsed; a parsed
// frame with an app event is counted too, so a server that orders its keys
// differently is still counted, only more slowly. Unfragmented frames only
// (uWS sends them so); no extensions are offered. While latency is measured
// (the `soketi` peer target in the latency scenario) an event is read whole
// and the send time inside its data string (`{\"t\":<ms>,...`) is taken.
//
// Also: the signing of Pusher HTTP API requests (auth_key, auth_timestamp,
// auth_version 1.0, body_md5, auth_signature), done here rather than with the
// `pusher` library so that the runner needs no dependency and its cost per
// request stays small and the same for every target.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { RawConn, RawPool, bump } from './raw-conn.mjs';
import { readNumberAfter } from './ws-client.mjs';

const EVENT_LEAD = Buffer.from('{"event":"');
const PUSHER = Buffer.from('pusher');
/** The send time inside an event's data, which travels as a JSON string: {\"t\":<ms>,... */
const T_ESCAPED_KEY = Buffer.from('\\"t\\":');
/** Payload bytes needed to tell an app event from a control frame. */
export const CLASSIFY_BYTES = EVENT_LEAD.length + PUSHER.length;

/**
 * Whether a text frame payload (buf[from, to), at least CLASSIFY_BYTES long,
 * or the whole payload) is an app event by its first bytes: {"event":" then a
 * name not starting with `pusher`. False means "parse it" (a control frame,
 * or a frame led by another key), not "not an event".
 */
export function isAppEventLead(buf, from, to) {
  if (to - from < CLASSIFY_BYTES) return false;
  if (buf.compare(EVENT_LEAD, 0, EVENT_LEAD.length, from, from + EVENT_LEAD.length) !== 0) return false;
  return buf.compare(PUSHER, 0, PUSHER.length, from + EVENT_LEAD.length, from + CLASSIFY_BYTES) !== 0;
}

/**
 * A parsed server frame, as the client sees it: { kind, ... } where kind is
 * established (socketId, activityTimeout), subscribed (channel), subError
 * (channel, status), error (code, message), ping, event (name, channel), other
 * (an event the client ignores, e.g. pusher:pong), bad (not a Pusher frame).
 */
export function parsePusherFrame(text) {
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    return { kind: 'bad' };
  }
  if (f === null || typeof f !== 'object' || typeof f.event !== 'string') return { kind: 'bad' };
  const data = () => {
    if (typeof f.data !== 'string') return f.data ?? {};
    try {
      return JSON.parse(f.data);
    } catch {
      return {};
    }
  };
  switch (f.event) {
    case 'pusher:connection_established': {
      const d = data();
      return { kind: 'established', socketId: d.socket_id, activityTimeout: d.activity_timeout };
    }
    case 'pusher_internal:subscription_succeeded':
      return { kind: 'subscribed', channel: f.channel };
    case 'pusher:subscription_error':
      return { kind: 'subError', channel: f.channel, status: data().status };
    case 'pusher:error': {
      const d = data();
      return { kind: 'error', code: d.code, message: d.message };
    }
    case 'pusher:ping':
      return { kind: 'ping' };
    default:
      if (f.event.startsWith('pusher:') || f.event.startsWith('pusher_internal:')) return { kind: 'other', name: f.event };
      return { kind: 'event', name: f.event, channel: f.channel };
  }
}

/** Hex MD5 of a body (`body_md5`). */
export function md5Hex(body) {
  return createHash('md5').update(body, 'utf8').digest('hex');
}

/**
 * The path and signed query of a Pusher HTTP API request: `path` (e.g.
 * /apps/1/events) + ?auth_key&auth_timestamp&auth_version&body_md5&auth_signature,
 * the signature being HMAC-SHA256(secret, "METHOD\npath\nsorted query").
 */
export function signedPath(app, method, path, body, nowSec = Math.floor(Date.now() / 1000)) {
  const params = [['auth_key', app.key], ['auth_timestamp', String(nowSec)], ['auth_version', '1.0']];
  if (body !== '') params.push(['body_md5', md5Hex(body)]);
  // Already sorted by key; the values need no escaping (key: [A-Za-z0-9_.-], digits, hex).
  const query = params.map(([k, v]) => `${k}=${v}`).join('&');
  const sig = createHmac('sha256', app.secret).update(`${method.toUpperCase()}\n${path}\n${query}`, 'utf8').digest('hex');
  return `${path}?${query}&auth_signature=${sig}`;
}

/**
 * The Pusher connections of a client process: `messages` counts app events,
 * `errors` pusher:error codes too, `pings` the pusher:ping frames answered;
 * `latency` is set while the peer targets' latency scenario measures it.
 */
export class PusherPool extends RawPool {
  /** @param {{host: string, port: number, key: string, localPorts?: [number, number]}} o */
  constructor(o) {
    super(o);
    this.key = o.key;
  }

  request() {
    const key = randomBytes(16).toString('base64');
    return `GET /app/${this.key}?protocol=7&client=pubgate-bench&version=1.0 HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
  }

  /** Opens one connection; resolves with it once pusher:connection_established arrived. */
  open(timeoutMs = 10_000) {
    const c = new PusherConn(this);
    return c.open(timeoutMs).then(() => c);
  }
}

export class PusherConn extends RawConn {
  constructor(pool) {
    super(pool, CLASSIFY_BYTES);
    this.socketId = undefined;
    // this.waiters: channel -> { resolve, reject }
  }

  open(timeoutMs) {
    return this.dial(this.pool.request(), timeoutMs, 'closed before connection_established');
  }

  established() {
    return this.socketId !== undefined;
  }

  countsLead(buf, from, to) {
    return isAppEventLead(buf, from, to);
  }

  /** Subscribes to a public channel; resolves on subscription_succeeded, rejects on subscription_error. */
  subscribe(channel, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(channel);
        reject(new Error('subscribe timeout'));
      }, timeoutMs);
      this.waiters.set(channel, {
        resolve: () => (clearTimeout(t), resolve()),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel } }));
    });
  }

  /** A whole frame payload in buf[from, to) that was not counted from its lead. */
  frame(op, buf, from, to) {
    const pool = this.pool;
    if (op === 1 && pool.latency !== undefined && isAppEventLead(buf, from, to)) {
      pool.messages++;
      const t = readNumberAfter(buf, T_ESCAPED_KEY, from, to);
      if (t === t) pool.latency.add(pool.readNowMs - t);
      return;
    }
    if (op === 1 || op === 2) {
      const f = parsePusherFrame(buf.toString('utf8', from, to));
      switch (f.kind) {
        case 'event':
          pool.messages++;
          break;
        case 'established':
          this.socketId = f.socketId;
          this.onReady?.();
          break;
        case 'subscribed':
          this.waiters.get(f.channel)?.resolve();
          this.waiters.delete(f.channel);
          break;
        case 'subError':
          bump(pool.errors, `subscription_error ${f.status}`);
          this.waiters.get(f.channel)?.reject(new Error(`subscription_error ${f.status}`));
          this.waiters.delete(f.channel);
          break;
        case 'error':
          bump(pool.errors, `pusher:error ${f.code}`);
          if (this.socketId === undefined) this.onFail?.(`pusher:error ${f.code}`);
          break;
        case 'ping':
          pool.pings++;
          this.send('{"event":"pusher:pong","data":{}}');
          break;
        case 'bad':
          bump(pool.errors, 'bad_frame');
          break;
        default:
          break;
      }
    } else {
      this.control(op, buf, from, to);
    }
  }
}
