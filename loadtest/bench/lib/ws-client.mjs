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
//
// The dialling, the pool's local ports, and close and ping frames are
// raw-conn.mjs's, shared with the peer clients; reading and frames are this
// client's own.
import { randomBytes } from 'node:crypto';
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { RawConn, RawPool, bump, clientFrame, nowMs } from './raw-conn.mjs';

// The clock and the client frame, where the runner's modules have always found them.
export { clientFrame, nowMs };

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

/** The pubgate connections of a client process: `messages` counts message frames, `closedOpen` open connections that closed. */
export class WsPool extends RawPool {
  /** @param {{host: string, port: number, path?: string, tokenIn?: 'header'|'protocol'|'query', localPorts?: [number, number], deflate?: boolean, inflateEvery?: number}} o */
  constructor(o) {
    super(o);
    this.path = o.path ?? '/ws';
    this.tokenIn = o.tokenIn ?? 'header';
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

  /** Opens one connection; resolves with it once the server's welcome frame arrived. */
  open(token, timeoutMs = 10_000, tokenIn = this.tokenIn) {
    const c = new Conn(this);
    return c.open(this.request(token, tokenIn), timeoutMs).then(() => c);
  }

  /** Closes every connection at once with a TCP reset (no TIME_WAIT left behind). */
  closeAll() {
    this.onClosed = undefined;
    super.closeAll();
  }
}

const COLL_FRAME = 0; // an uncompressed frame, handled whole
const COLL_INFLATED = 1; // a compressed frame, inflated and then handled whole
const COLL_SAMPLE = 2; // a compressed message already counted, inflated to check it

class Conn extends RawConn {
  constructor(pool) {
    super(pool, 0); // frames are classified by this client's own feed()
    this.collKind = 0; // what the collected payload is for: COLL_FRAME, COLL_INFLATED or COLL_SAMPLE
    this.deflate = false; // permessage-deflate was negotiated
    this.welcomed = false;
    this.nextId = 1;
    // this.waiters: request id -> { resolve, reject }
  }

  open(request, timeoutMs) {
    return this.dial(request, timeoutMs, 'closed before welcome');
  }

  /** Any open connection that closes counts in closedOpen (and, churn, is handed to pool.onClosed). */
  established() {
    return true;
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
    const at = this.upgrade(buf, n);
    if (at >= 0 && at < n) {
      this.pool.wireBytes += n - at;
      this.feed(buf, at, n);
    }
    return true;
  }

  /** The extension the server answered: permessage-deflate only as offered (no server context takeover). */
  accept(head) {
    const ext = headerValue(head, 'sec-websocket-extensions');
    if (this.pool.extensions === undefined) this.pool.extensions = ext ?? '';
    if (ext !== undefined && /permessage-deflate/i.test(ext)) {
      // Without server_no_context_takeover a message could only be inflated after every earlier one.
      if (!this.pool.deflate || !/server_no_context_takeover/i.test(ext)) {
        bump(this.pool.errors, 'unexpected_extension');
        this.onFail(`server answered Sec-WebSocket-Extensions: ${ext}`);
        return false;
      }
      this.deflate = true;
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
    } else {
      this.control(op, buf, from, to);
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
      this.welcomed = true;
      this.onReady?.();
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
