// A Socket.IO client for the peer targets (socketio): Engine.IO v4 over a raw
// WebSocket (`GET /socket.io/?EIO=4&transport=websocket`, no HTTP long-polling
// first), Socket.IO protocol v5 on top, many connections per process on raw
// TCP (node:net) with a hand-written upgrade and frame parser (raw-conn.mjs,
// shared with ws-client.mjs and pusher-client.mjs), so that the client costs
// what it costs for the other targets (socket.io-client per connection would
// not).
//
// Per connection: upgrade, wait for the Engine.IO OPEN packet (`0{"sid":..}`),
// send the Socket.IO CONNECT to the main namespace with the bench JWT as its
// auth payload (`40{"token":"<jwt>"}`), wait for the CONNECT answer
// (`40{"sid":..}`; `44{..}` is a refusal). Subscribing is an event with an
// ack: `42<id>["subscribe","<channel>"]`, answered `43<id>[{"ok":true}]`.
// Engine.IO PINGs (`2`) are answered with PONGs (`3`).
//
// Hot path: every message the server emits is an EVENT packet `42["message",
// "<channel>",<data>]`, so a text frame whose payload starts with `42[` is
// counted from its first bytes and its payload skipped (when latency is
// measured it is read whole and the number after `"t":` is taken). Everything
// else is parsed (parseSioPacket). Unfragmented frames only (ws sends them
// so); no extensions are offered.
import { randomBytes } from 'node:crypto';
import { RawConn, RawPool, bump } from './raw-conn.mjs';
import { readNumberAfter } from './ws-client.mjs';

/** Payload bytes needed to tell an EVENT packet from anything else. */
export const SIO_CLASSIFY_BYTES = 3;
const T_KEY = Buffer.from('"t":');

/**
 * Whether a text frame payload buf[from, to) is a Socket.IO EVENT to the main
 * namespace without an ack id, by its first bytes `42[`. False means "parse
 * it", not "not an event".
 */
export function isSioEventLead(buf, from, to) {
  return to - from >= SIO_CLASSIFY_BYTES && buf[from] === 0x34 && buf[from + 1] === 0x32 && buf[from + 2] === 0x5b;
}

function parseJson(text) {
  try {
    return { ok: true, v: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

/**
 * One Engine.IO v4 packet as text (a WebSocket text frame), and the Socket.IO
 * v5 packet inside it when it is an Engine.IO MESSAGE: { kind, ... } where
 * kind is open (sid, pingInterval, pingTimeout), close, ping, pong, noop,
 * upgrade, connect (sid, nsp), disconnect (nsp), event (nsp, id, name, args),
 * ack (nsp, id, args), connectError (nsp, message), binary (a binary event or
 * ack: not used here), or bad (not a packet this client understands).
 */
export function parseSioPacket(text) {
  if (text.length === 0) return { kind: 'bad' };
  switch (text[0]) {
    case '0': {
      const j = parseJson(text.slice(1));
      if (!j.ok || j.v === null || typeof j.v !== 'object' || typeof j.v.sid !== 'string') return { kind: 'bad' };
      return { kind: 'open', sid: j.v.sid, pingInterval: j.v.pingInterval, pingTimeout: j.v.pingTimeout };
    }
    case '1':
      return { kind: 'close' };
    case '2':
      return { kind: 'ping', probe: text.slice(1) === 'probe' };
    case '3':
      return { kind: 'pong' };
    case '5':
      return { kind: 'upgrade' };
    case '6':
      return { kind: 'noop' };
    case '4':
      return parseSocketPacket(text, 1);
    default:
      return { kind: 'bad' };
  }
}

/** The Socket.IO v5 packet in text[at..]: type digit, optional "/nsp,", optional ack id digits, optional JSON payload. */
function parseSocketPacket(text, at) {
  const type = text.charCodeAt(at) - 0x30;
  if (!(type >= 0 && type <= 6)) return { kind: 'bad' };
  let i = at + 1;
  if (type === 5 || type === 6) {
    // BINARY_EVENT / BINARY_ACK: "<attachments>-" follows; this client never asks for binary data.
    return { kind: 'binary' };
  }
  let nsp = '/';
  if (text[i] === '/') {
    const comma = text.indexOf(',', i);
    if (comma < 0) {
      nsp = text.slice(i);
      i = text.length;
    } else {
      nsp = text.slice(i, comma);
      i = comma + 1;
    }
  }
  let id;
  const idStart = i;
  while (i < text.length && text.charCodeAt(i) >= 0x30 && text.charCodeAt(i) <= 0x39) i++;
  if (i > idStart) id = Number(text.slice(idStart, i));
  const rest = text.slice(i);
  const j = rest === '' ? { ok: true, v: undefined } : parseJson(rest);
  if (!j.ok) return { kind: 'bad' };
  const v = j.v;
  switch (type) {
    case 0:
      return { kind: 'connect', nsp, sid: v && typeof v === 'object' ? v.sid : undefined };
    case 1:
      return { kind: 'disconnect', nsp };
    case 2:
      if (!Array.isArray(v) || v.length === 0 || typeof v[0] !== 'string') return { kind: 'bad' };
      return { kind: 'event', nsp, id, name: v[0], args: v.slice(1) };
    case 3:
      if (!Array.isArray(v) || id === undefined) return { kind: 'bad' };
      return { kind: 'ack', nsp, id, args: v };
    case 4:
      return { kind: 'connectError', nsp, message: v && typeof v === 'object' ? v.message : typeof v === 'string' ? v : undefined };
    default:
      return { kind: 'bad' };
  }
}

/** The client's Socket.IO CONNECT packet to the main namespace, with `auth` as its payload (Engine.IO MESSAGE 4 + CONNECT 0). */
export function sioConnectPacket(auth) {
  return auth === undefined ? '40' : `40${JSON.stringify(auth)}`;
}

/** An EVENT with ack id `id`: 42<id>[name, ...args]. */
export function sioEventPacket(id, name, ...args) {
  return `42${id ?? ''}${JSON.stringify([name, ...args])}`;
}

/**
 * The Socket.IO connections of a client process: `messages` counts EVENT
 * packets, `errors` connect errors too, `pings` the Engine.IO PINGs answered.
 */
export class SioPool extends RawPool {
  request() {
    const key = randomBytes(16).toString('base64');
    return `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
  }

  /** Opens one connection with `token` as its auth; resolves with it once the Socket.IO CONNECT was answered. */
  open(token, timeoutMs = 10_000) {
    const c = new SioConn(this);
    return c.open(token, timeoutMs).then(() => c);
  }
}

export class SioConn extends RawConn {
  constructor(pool) {
    super(pool, SIO_CLASSIFY_BYTES);
    this.sid = undefined; // the Socket.IO session id, once connected
    this.nextId = 1;
    // this.waiters: ack id -> { resolve, reject }
  }

  open(token, timeoutMs) {
    this.token = token;
    return this.dial(this.pool.request(), timeoutMs, 'closed before connect');
  }

  established() {
    return this.sid !== undefined;
  }

  countsLead(buf, from, to) {
    return this.sid !== undefined && isSioEventLead(buf, from, to);
  }

  /** Joins the room `channel` through the peer script's `subscribe` event; resolves on its ack. */
  subscribe(channel, timeoutMs = 10_000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error('subscribe timeout'));
      }, timeoutMs);
      this.waiters.set(id, {
        resolve: (args) => {
          clearTimeout(t);
          if (args[0]?.ok === true) resolve();
          else reject(new Error(`subscribe refused: ${JSON.stringify(args[0])}`));
        },
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.send(sioEventPacket(id, 'subscribe', channel));
    });
  }

  /** A whole frame payload in buf[from, to) that was not counted from its lead. */
  frame(op, buf, from, to) {
    const pool = this.pool;
    if (op === 1) {
      if (this.sid !== undefined && isSioEventLead(buf, from, to)) {
        pool.messages++;
        if (pool.latency !== undefined) {
          const t = readNumberAfter(buf, T_KEY, from, to);
          if (t === t) pool.latency.add(pool.readNowMs - t);
        }
        return;
      }
      const p = parseSioPacket(buf.toString('utf8', from, to));
      switch (p.kind) {
        case 'open':
          this.send(sioConnectPacket({ token: this.token }));
          break;
        case 'connect':
          this.sid = p.sid;
          this.onReady?.();
          break;
        case 'connectError':
          bump(pool.errors, `connect_error ${p.message}`);
          this.onFail?.(`connect_error ${p.message}`);
          break;
        case 'ack': {
          const w = this.waiters.get(p.id);
          this.waiters.delete(p.id);
          w?.resolve(p.args);
          break;
        }
        case 'ping':
          pool.pings++;
          this.send('3');
          break;
        case 'event':
          // An event with an ack id or to another namespace: not one the peer script sends.
          bump(pool.errors, `unexpected_event ${p.name}`);
          break;
        case 'close':
        case 'disconnect':
          bump(pool.closeCodes, p.kind === 'close' ? 'eio_close' : 'sio_disconnect');
          this.destroy();
          break;
        case 'bad':
          bump(pool.errors, 'bad_frame');
          break;
        default:
          break;
      }
    } else if (op === 2) {
      bump(pool.errors, 'binary_frame');
    } else {
      this.control(op, buf, from, to);
    }
  }
}
