// A WebSocket client for benchmarks: raw TCP (node:net), a hand-written
// upgrade and frame parser, many connections per process.
//
// Hot path: every socket reads into one shared buffer (net's `onread`, so no
// Buffer and no 'data' event per read), and a `message` frame is counted from
// its header alone; its payload is skipped, or scanned for the embedded send
// timestamp when latency is measured. Other text frames (welcome, replies,
// and the presence scenarios' join and leave) are JSON-parsed.
//
// Assumes the server sends unfragmented frames (uWS and ws both do) whose
// payload starts with {"type":"<name>" as the pubgate contract's frames do.
//
// permessage-deflate (`deflate: true`): the client offers it without context
// takeover either way, so every compressed frame inflates on its own. Once a
// connection is open and subscribed, a compressed data frame (RSV1 set) is
// counted as a message from its header, like an uncompressed one (pubgate
// compresses only published messages); one in `inflateEvery` is inflated and
// checked (a JSON message frame), which keeps the client cheap. Bytes read on
// open connections are counted, so the wire cost per message can be compared.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';

/** One buffer for every read of this process: each read is consumed synchronously. */
const READ_BUF = Buffer.allocUnsafe(256 * 1024);
const T_KEY = Buffer.from('"t":');
const CHAR_M = 0x6d; // 'm' of {"type":"message"
const TYPE_AT = 9; // offset of that 'm' in the payload
const RSV1 = 0x40; // "compressed" bit of the first header byte (RFC 7692)
const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** What the client offers with `deflate: true`. */
export const DEFLATE_OFFER = 'permessage-deflate; client_no_context_takeover; server_no_context_takeover';

/**
 * Inflates one permessage-deflate message payload (RFC 7692 §7.2.2: append
 * 00 00 ff ff, inflate raw). Only valid without server context takeover,
 * which is what the client offers.
 */
export function inflateMessage(payload) {
  return inflateRawSync(Buffer.concat([payload, DEFLATE_TAIL]), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
}

/** The value of header `name` (lower case) in an HTTP response head, or undefined. */
export function headerValue(head, name) {
  for (const line of head.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && line.slice(0, i).trim().toLowerCase() === name) return line.slice(i + 1).trim();
  }
  return undefined;
}

// A monotonic clock shared by every process on the machine (CLOCK_MONOTONIC),
// read cheaply through performance.now() plus a per-process offset. The offset
// is taken after both clocks were read once (the first access to `performance`
// loads perf_hooks, ~0.1–0.7 ms, which would otherwise skew the offset of each
// process differently), from the tightest of a few readings.
function monotonicOffsetMs() {
  performance.now();
  process.hrtime.bigint();
  let best = Infinity;
  let offset = 0;
  for (let i = 0; i < 20; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint()) / 1e6;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = h - (a + b) / 2;
    }
  }
  return offset;
}
const OFFSET_MS = monotonicOffsetMs();
export const nowMs = () => performance.now() + OFFSET_MS;

/** A masked client frame (RFC 6455 §5.3); payloads under 64 KiB. */
export function clientFrame(opcode, payload) {
  const len = payload.length;
  const hl = len < 126 ? 2 : 4;
  const out = Buffer.allocUnsafe(hl + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  }
  const mask = randomBytes(4);
  mask.copy(out, hl);
  for (let i = 0; i < len; i++) out[hl + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

function bump(obj, key) {
  obj[key] = (obj[key] ?? 0) + 1;
}

/** Reads the number after `"t":` in buf[from, to), or NaN. */
function readT(buf, from, to) {
  return readNumberAfter(buf, T_KEY, from, to);
}

/**
 * Reads the number right after the first `key` (a Buffer, e.g. `"t":`) in
 * buf[from, to), or NaN: the send time a published message carries, found
 * without parsing the frame (the peer clients use it with their own keys).
 */
export function readNumberAfter(buf, key, from, to) {
  const k = buf.indexOf(key, from);
  if (k < 0 || k + key.length >= to) return NaN;
  let e = k + key.length;
  while (e < to) {
    const c = buf[e];
    if ((c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x65 || c === 0x2b) e++;
    else break;
  }
  return Number(buf.toString('latin1', k + key.length, e));
}

export class WsPool {
  /** @param {{host: string, port: number, path?: string, tokenIn?: 'header'|'protocol'|'query', localPorts?: [number, number], deflate?: boolean, inflateEvery?: number}} o */
  constructor(o) {
    this.host = o.host;
    this.port = o.port;
    // Local ports this process binds its connections to, in turn. Leaving the
    // choice to the kernel gets slow once half the ephemeral range is in use
    // towards one server port (connect() then scans for a free port: ~1 ms per
    // connection past ~14 000 connections here), which would make the client
    // the bottleneck of the connections scenario.
    this.localPorts = o.localPorts;
    this.nextLocalPort = o.localPorts ? o.localPorts[0] : 0;
    this.path = o.path ?? '/ws';
    this.tokenIn = o.tokenIn ?? 'header';
    this.conns = new Set();
    this.messages = 0; // message frames received
    this.lastRecvMs = 0;
    this.latency = undefined; // a LatencyHistogram while latency is measured
    this.readNowMs = 0;
    this.closedOpen = 0; // open connections that closed
    this.closeCodes = {};
    this.errors = {};
    this.deflate = o.deflate ?? false; // offer permessage-deflate
    // Inflate and check one compressed message in this many (0: none). The default is
    // prime, so that it does not keep hitting the same of the publisher's 64 payloads.
    this.inflateEvery = o.inflateEvery ?? 61;
    this.extensions = undefined; // Sec-WebSocket-Extensions of the first accepted upgrade ('' when none)
    this.onClosed = undefined; // (conn) => void: an open connection closed (not called for closeAll's resets)
    this.presenceFrames = 0; // join and leave frames received
    this.onPresence = undefined; // (frame, conn) => void: a join or leave frame arrived
    this.resetCounts();
  }

  /** Zeroes what is counted per measurement (messages and lastRecvMs are the caller's). */
  resetCounts() {
    this.wireBytes = 0; // bytes read on open connections (frame headers and payloads)
    this.compressed = 0; // data frames with RSV1 set
    this.inflated = 0; // of those, inflated and found to be a JSON message frame
    this.inflatedBytes = 0; // their inflated size
    this.inflatedWire = 0; // their compressed payload size
    this.inflateErrors = 0; // did not inflate, or were not a message frame
    this.sampleTick = 0;
  }

  /**
   * The upgrade request. `tokenIn` 'cookie' (the proxy scenario) sends
   * `token` as the Cookie header and no token at all, so that the connect
   * proxy decides the upgrade.
   */
  request(token, tokenIn = this.tokenIn) {
    const key = randomBytes(16).toString('base64');
    let path = this.path;
    let auth = 'Sec-WebSocket-Protocol: pubgate.v1\r\n';
    if (tokenIn === 'cookie') auth += `Cookie: ${token}\r\n`;
    else if (tokenIn === 'header') auth += `Authorization: Bearer ${token}\r\n`;
    else if (tokenIn === 'protocol') auth = `Sec-WebSocket-Protocol: pubgate.v1, bearer.${token}\r\n`;
    else path += `?access_token=${token}`;
    const ext = this.deflate ? `Sec-WebSocket-Extensions: ${DEFLATE_OFFER}\r\n` : '';
    return `GET ${path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n${ext}${auth}\r\n`;
  }

  takeLocalPort() {
    if (!this.localPorts) return undefined;
    const [from, to] = this.localPorts;
    const p = this.nextLocalPort;
    this.nextLocalPort = p + 1 >= to ? from : p + 1;
    return p;
  }

  /** Opens one connection; resolves with it once the server's welcome frame arrived. */
  open(token, timeoutMs = 10_000, tokenIn = this.tokenIn) {
    const c = new Conn(this);
    return c.open(this.request(token, tokenIn), timeoutMs).then(() => c);
  }

  /** Closes every connection at once with a TCP reset (no TIME_WAIT left behind). */
  closeAll() {
    this.onClosed = undefined;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}

const COLL_FRAME = 0; // an uncompressed frame, handled whole
const COLL_INFLATED = 1; // a compressed frame, inflated and then handled whole
const COLL_SAMPLE = 2; // a compressed message already counted, inflated to check it

class Conn {
  constructor(pool) {
    this.pool = pool;
    this.sock = undefined;
    this.state = 0; // 0 connecting, 1 upgrading, 2 open, 3 closed
    this.head = '';
    this.skip = 0; // payload bytes of the current frame still to come
    this.pend = null; // bytes of an incomplete frame header
    this.coll = null; // chunks of a payload being collected
    this.collOp = 0;
    this.collKind = 0; // what the collected payload is for: COLL_FRAME, COLL_INFLATED or COLL_SAMPLE
    this.deflate = false; // permessage-deflate was negotiated
    this.welcomed = false;
    this.nextId = 1;
    this.waiters = new Map();
    this.onWelcome = null;
    this.onFail = null;
  }

  open(request, timeoutMs) {
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
      this.onWelcome = () => {
        this.welcomed = true;
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
        sock.once('connect', () => sock.write(request));
        sock.on('error', (e) => {
          // A local port someone else holds: take the next one.
          if ((e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL') && localPort && !sock.bytesWritten && tries++ < 100) {
            sock.removeAllListeners('close');
            sock.destroy();
            dial();
            return;
          }
          bump(pool.errors, e.code ?? 'error');
          fail(e.code ?? 'socket error');
        });
        sock.on('close', onClose);
      };
      const onClose = () => {
        const wasOpen = this.state === 2;
        if (wasOpen) pool.closedOpen++;
        this.state = 3;
        pool.conns.delete(this);
        for (const w of this.waiters.values()) w.reject(new Error('closed'));
        this.waiters.clear();
        fail('closed before welcome');
        // The churn scenario reconnects a client the server closed (drain) elsewhere.
        if (wasOpen) pool.onClosed?.(this);
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

  /**
   * Sends a client frame of `type` on `channel` (subscribe, unsubscribe,
   * presence, presence_stats) and resolves with its reply; a reply with an
   * error rejects with "reply error <code>".
   */
  request(type, channel, timeoutMs = 10_000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`${type} timeout`));
      }, timeoutMs);
      this.waiters.set(id, {
        resolve: (v) => (clearTimeout(t), resolve(v)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.send(`{"type":"${type}","id":${id},"channel":"${channel}"}`);
    });
  }

  subscribe(channel, timeoutMs = 10_000) {
    return this.request('subscribe', channel, timeoutMs);
  }

  unsubscribe(channel, timeoutMs = 10_000) {
    return this.request('unsubscribe', channel, timeoutMs);
  }

  read(buf, n) {
    if (this.state === 2) {
      const pool = this.pool;
      pool.wireBytes += n;
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
    const ext = headerValue(this.head.slice(0, i), 'sec-websocket-extensions');
    if (this.pool.extensions === undefined) this.pool.extensions = ext ?? '';
    if (ext !== undefined && /permessage-deflate/i.test(ext)) {
      // Without server_no_context_takeover a message could only be inflated after every earlier one.
      if (!this.pool.deflate || !/server_no_context_takeover/i.test(ext)) {
        bump(this.pool.errors, 'unexpected_extension');
        this.onFail(`server answered Sec-WebSocket-Extensions: ${ext}`);
        return true;
      }
      this.deflate = true;
    }
    const rest = this.head.length - (i + 4);
    this.head = '';
    this.state = 2;
    if (rest > 0) {
      this.pool.wireBytes += rest;
      this.feed(buf, n - rest, n);
    }
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
          this.collected(this.collKind, this.collOp, payload, 0, payload.length);
        }
        continue;
      }
      const avail = end - off;
      if (avail < 2) {
        this.pend = Buffer.from(buf.subarray(off, end));
        return;
      }
      const b0 = buf[off];
      let len = buf[off + 1] & 0x7f;
      let hl = 2;
      if (len === 126) {
        if (avail < 4) {
          this.pend = Buffer.from(buf.subarray(off, end));
          return;
        }
        len = buf.readUInt16BE(off + 2);
        hl = 4;
      } else if (len === 127) {
        if (avail < 10) {
          this.pend = Buffer.from(buf.subarray(off, end));
          return;
        }
        len = buf.readUInt32BE(off + 2) * 2 ** 32 + buf.readUInt32BE(off + 6);
        hl = 10;
      }
      off += hl;
      const op = b0 & 0x0f;
      const have = end - off;
      let kind = COLL_FRAME;
      if ((b0 & RSV1) !== 0 && op <= 2) {
        kind = COLL_INFLATED;
        // Open, subscribed, not timing: a compressed data frame is a message,
        // counted from its header; one in `inflateEvery` is checked.
        if (this.welcomed && this.waiters.size === 0 && pool.latency === undefined) {
          pool.messages++;
          pool.compressed++;
          kind = pool.inflateEvery > 0 && ++pool.sampleTick >= pool.inflateEvery ? COLL_SAMPLE : -1;
          if (kind === COLL_SAMPLE) pool.sampleTick = 0;
        }
      } else if (op <= 2 && len > TYPE_AT && have > TYPE_AT && buf[off + TYPE_AT] === CHAR_M && pool.latency === undefined) {
        // A message frame, counted from its header: skip the payload.
        pool.messages++;
        kind = -1;
      }
      if (kind === -1) {
        if (have >= len) off += len;
        else {
          this.skip = len - have;
          off = end;
        }
      } else if (have >= len) {
        this.collected(kind, op, buf, off, off + len);
        off += len;
      } else {
        this.coll = [Buffer.from(buf.subarray(off, end))];
        this.collOp = op;
        this.collKind = kind;
        this.skip = len - have;
        off = end;
      }
    }
  }

  /** A whole payload in buf[from, to), collected for `kind`. */
  collected(kind, op, buf, from, to) {
    if (kind === COLL_FRAME) {
      this.frame(op, buf, from, to);
      return;
    }
    const pool = this.pool;
    let raw;
    try {
      raw = inflateMessage(buf.subarray(from, to));
    } catch (e) {
      pool.inflateErrors++;
      bump(pool.errors, `inflate: ${e.code ?? e.message}`);
      return;
    }
    if (kind === COLL_INFLATED) {
      pool.compressed++;
      this.frame(op, raw, 0, raw.length);
      return;
    }
    // COLL_SAMPLE: already counted as a message; it must be one.
    let f;
    try {
      f = JSON.parse(raw.toString('utf8'));
    } catch {
      f = undefined;
    }
    if (f?.type !== 'message' || typeof f.channel !== 'string' || !('data' in f)) {
      pool.inflateErrors++;
      bump(pool.errors, 'compressed_frame_not_a_message');
      return;
    }
    pool.inflated++;
    pool.inflatedBytes += raw.length;
    pool.inflatedWire += to - from;
  }

  /** A whole (uncompressed or inflated) frame payload in buf[from, to). */
  frame(op, buf, from, to) {
    const pool = this.pool;
    if (op <= 2) {
      if (to - from > TYPE_AT && buf[from + TYPE_AT] === CHAR_M) {
        pool.messages++;
        if (pool.latency !== undefined) {
          const t = readT(buf, from, to);
          if (t === t) pool.latency.add(pool.readNowMs - t);
        }
        return;
      }
      this.text(buf.toString('utf8', from, to));
    } else if (op === 8) {
      const code = to - from >= 2 ? buf.readUInt16BE(from) : 1005;
      bump(pool.closeCodes, code);
      this.destroy();
    } else if (op === 9) {
      this.sock.write(clientFrame(10, Buffer.from(buf.subarray(from, to))));
    }
  }

  text(s) {
    let f;
    try {
      f = JSON.parse(s);
    } catch {
      bump(this.pool.errors, 'bad_json_frame');
      return;
    }
    if (f.type === 'welcome') {
      // welcome.conn: what a publish's `exclude` names (the idempotency scenario).
      this.connId = f.conn;
      this.onWelcome?.();
    }
    else if (f.type === 'join' || f.type === 'leave') {
      this.pool.presenceFrames++;
      this.pool.onPresence?.(f, this);
    } else if (f.type === 'reply') {
      const w = this.waiters.get(f.id);
      if (!w) return;
      this.waiters.delete(f.id);
      if (f.error) w.reject(new Error(`reply error ${f.error.code}`));
      else w.resolve(f);
    }
  }
}
