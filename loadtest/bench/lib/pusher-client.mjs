// A Pusher-protocol (7) client for the pusher scenarios, the same for every
// target (pubgate's /app/{key}, Soketi): raw TCP (node:net), a hand-written
// upgrade and frame parser, many connections per process, like ws-client.mjs.
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
import net from 'node:net';
import { clientFrame, nowMs, readNumberAfter } from './ws-client.mjs';

/** One buffer for every read of this process: each read is consumed synchronously. */
const READ_BUF = Buffer.allocUnsafe(256 * 1024);
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

function bump(obj, key) {
  obj[key] = (obj[key] ?? 0) + 1;
}

export class PusherPool {
  /** @param {{host: string, port: number, key: string, localPorts?: [number, number]}} o */
  constructor(o) {
    this.host = o.host;
    this.port = o.port;
    this.key = o.key;
    // Local ports to bind, in turn (see ws-client.mjs: the kernel's own choice gets slow with many connections).
    this.localPorts = o.localPorts;
    this.nextLocalPort = o.localPorts ? o.localPorts[0] : 0;
    this.conns = new Set();
    this.messages = 0; // app events received
    this.lastRecvMs = 0;
    this.closedOpen = 0; // established connections that closed
    this.closeCodes = {};
    this.errors = {}; // socket errors, handshake statuses, pusher:error codes, bad frames
    this.pings = 0; // pusher:ping frames answered
    // While latency is measured (the peer targets' latency scenario): a
    // LatencyHistogram; each event is then read whole and its send time taken.
    this.latency = undefined;
    this.readNowMs = 0;
  }

  request() {
    const key = randomBytes(16).toString('base64');
    return `GET /app/${this.key}?protocol=7&client=pubgate-bench&version=1.0 HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
  }

  takeLocalPort() {
    if (!this.localPorts) return undefined;
    const [from, to] = this.localPorts;
    const p = this.nextLocalPort;
    this.nextLocalPort = p + 1 >= to ? from : p + 1;
    return p;
  }

  /** Opens one connection; resolves with it once pusher:connection_established arrived. */
  open(timeoutMs = 10_000) {
    const c = new PusherConn(this);
    return c.open(timeoutMs).then(() => c);
  }

  /** Closes every connection at once with a TCP reset (no TIME_WAIT left behind). */
  closeAll() {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}

export class PusherConn {
  constructor(pool) {
    this.pool = pool;
    this.sock = undefined;
    this.state = 0; // 0 new, 1 upgrading, 2 open (upgraded), 3 closed
    this.head = '';
    this.skip = 0; // payload bytes of the current frame still to come (skipped or collected)
    this.pend = null; // bytes of an incomplete frame header
    this.coll = null; // chunks of a payload being collected
    this.collOp = 0;
    this.socketId = undefined;
    this.waiters = new Map(); // channel -> { resolve, reject }
    this.onEstablished = null;
    this.onFail = null;
  }

  open(timeoutMs) {
    const pool = this.pool;
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => fail('timeout'), timeoutMs);
      const fail = (why) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.destroy();
        reject(new Error(why));
      };
      this.onFail = fail;
      this.onEstablished = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve();
      };
      let tries = 0;
      const dial = () => {
        const localPort = pool.takeLocalPort();
        const sock = net.connect({
          host: pool.host,
          port: pool.port,
          ...(localPort ? { localAddress: pool.host, localPort } : {}),
          onread: { buffer: READ_BUF, callback: (n, buf) => this.read(buf, n) },
        });
        this.sock = sock;
        sock.setNoDelay(true);
        sock.once('connect', () => sock.write(pool.request()));
        sock.on('error', (e) => {
          if ((e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL') && localPort && !sock.bytesWritten && tries++ < 100) {
            sock.removeAllListeners('close');
            sock.destroy();
            dial();
            return;
          }
          bump(pool.errors, e.code ?? 'error');
          fail(e.code ?? 'socket error');
        });
        sock.on('close', () => {
          if (this.socketId !== undefined && this.state === 2) pool.closedOpen++;
          this.state = 3;
          pool.conns.delete(this);
          for (const w of this.waiters.values()) w.reject(new Error('closed'));
          this.waiters.clear();
          fail('closed before connection_established');
        });
      };
      this.state = 1;
      pool.conns.add(this);
      dial();
    });
  }

  destroy() {
    if (this.sock && !this.sock.destroyed) this.sock.resetAndDestroy();
  }

  send(text) {
    if (this.state === 2) this.sock.write(clientFrame(1, Buffer.from(text)));
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

  read(buf, n) {
    if (this.state === 2) {
      const pool = this.pool;
      if (pool.latency) pool.readNowMs = nowMs();
      const before = pool.messages;
      this.feed(buf, 0, n);
      if (pool.messages !== before) pool.lastRecvMs = pool.latency ? pool.readNowMs : nowMs();
      return true;
    }
    if (this.state !== 1) return true;
    this.head += buf.toString('latin1', 0, n);
    const i = this.head.indexOf('\r\n\r\n');
    if (i < 0) {
      if (this.head.length > 16384) this.onFail('response head too long');
      return true;
    }
    if (!this.head.startsWith('HTTP/1.1 101')) {
      const status = this.head.slice(9, 12);
      bump(this.pool.errors, `http_${status}`);
      this.onFail(`handshake answered ${status}`);
      return true;
    }
    const rest = this.head.length - (i + 4);
    this.head = '';
    this.state = 2;
    if (rest > 0) this.feed(buf, n - rest, n);
    return true;
  }

  feed(buf, off, end) {
    if (this.pend !== null) {
      buf = Buffer.concat([this.pend, buf.subarray(off, end)]);
      this.pend = null;
      off = 0;
      end = buf.length;
    }
    const pool = this.pool;
    while (off < end) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, end - off);
        if (this.coll !== null) this.coll.push(Buffer.from(buf.subarray(off, off + take)));
        this.skip -= take;
        off += take;
        if (this.skip === 0 && this.coll !== null) {
          const payload = Buffer.concat(this.coll);
          this.coll = null;
          this.frame(this.collOp, payload, 0, payload.length);
        }
        continue;
      }
      const avail = end - off;
      let len = avail >= 2 ? buf[off + 1] & 0x7f : 0;
      const hl = len === 126 ? 4 : len === 127 ? 10 : 2;
      // A header, and enough payload to classify the frame (or all of it), or wait for more.
      if (avail < hl || (len === 126 && avail < 4)) {
        this.pend = Buffer.from(buf.subarray(off, end));
        return;
      }
      if (len === 126) len = buf.readUInt16BE(off + 2);
      else if (len === 127) len = buf.readUInt32BE(off + 2) * 2 ** 32 + buf.readUInt32BE(off + 6);
      if (avail - hl < Math.min(len, CLASSIFY_BYTES)) {
        this.pend = Buffer.from(buf.subarray(off, end));
        return;
      }
      const op = buf[off] & 0x0f;
      off += hl;
      const have = end - off;
      if (op === 1 && pool.latency === undefined && isAppEventLead(buf, off, off + Math.min(len, have))) {
        // An app event, counted from its first bytes: skip the payload.
        pool.messages++;
        if (have >= len) off += len;
        else {
          this.skip = len - have;
          off = end;
        }
      } else if (have >= len) {
        this.frame(op, buf, off, off + len);
        off += len;
      } else {
        this.coll = [Buffer.from(buf.subarray(off, end))];
        this.collOp = op;
        this.skip = len - have;
        off = end;
      }
    }
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
          this.onEstablished?.();
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
    } else if (op === 8) {
      bump(pool.closeCodes, to - from >= 2 ? buf.readUInt16BE(from) : 1005);
      this.destroy();
    } else if (op === 9) {
      this.sock.write(clientFrame(10, Buffer.from(buf.subarray(from, to))));
    }
  }
}
