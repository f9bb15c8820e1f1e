// The connection machinery of the runner's WebSocket clients (ws-client.mjs
// for pubgate's protocol, pusher-client.mjs, socketio-client.mjs): many
// connections per process on raw TCP (node:net), a hand-written upgrade and
// frame parser, so that the client costs what it costs for every target.
//
// RawPool holds the connections and the counters the client processes report
// (messages, pings, errors, close codes, latency). RawConn dials with the
// client's upgrade request (binding the pool's local ports in turn), reads
// the 101 answer, and cuts the frames: a text frame whose first bytes say it
// is a message (`countsLead`, given at least `classifyBytes` of its payload
// or all of it) is counted and its payload skipped; any other frame is
// handed whole to the client's `frame()`, which leaves close and ping frames
// to `control()`. Unfragmented frames only (the
// servers send them so); no extensions are offered. ws-client.mjs reads its
// frames itself (permessage-deflate, bytes counted) and uses the rest.
import { randomBytes } from 'node:crypto';
import net from 'node:net';

/** One buffer for every read of this process: each read is consumed synchronously. */
const READ_BUF = Buffer.allocUnsafe(256 * 1024);

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

export function bump(obj, key) {
  obj[key] = (obj[key] ?? 0) + 1;
}

export class RawPool {
  /** @param {{host: string, port: number, localPorts?: [number, number]}} o */
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
    this.conns = new Set();
    this.messages = 0; // messages received
    this.lastRecvMs = 0;
    this.closedOpen = 0; // established connections that closed
    this.closeCodes = {};
    this.errors = {}; // socket errors, handshake statuses, protocol errors, bad frames
    this.pings = 0; // protocol pings answered
    // While latency is measured: a LatencyHistogram; each message is then read whole and its send time taken.
    this.latency = undefined;
    this.readNowMs = 0;
  }

  /**
   * Starts a measurement (the client processes' `count`): zeroes the counts
   * and measures latency into `latency` (a LatencyHistogram), or not (undefined).
   */
  startCount(latency) {
    this.messages = 0;
    this.lastRecvMs = 0;
    this.closedOpen = 0;
    this.closeCodes = {};
    this.latency = latency;
  }

  /** The counts the client processes report (their `stats`). */
  counts() {
    return {
      messages: this.messages,
      lastRecvMs: this.lastRecvMs,
      closedOpen: this.closedOpen,
      closeCodes: this.closeCodes,
      open: this.conns.size,
      latency: this.latency?.toSparse(),
      errors: this.errors,
    };
  }

  takeLocalPort() {
    if (!this.localPorts) return undefined;
    const [from, to] = this.localPorts;
    const p = this.nextLocalPort;
    this.nextLocalPort = p + 1 >= to ? from : p + 1;
    return p;
  }

  /** Closes every connection at once with a TCP reset (no TIME_WAIT left behind). */
  closeAll() {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}

export class RawConn {
  /**
   * @param {RawPool} pool
   * @param {number} classifyBytes payload bytes `countsLead` needs to tell a message from anything else
   */
  constructor(pool, classifyBytes) {
    this.pool = pool;
    this.classifyBytes = classifyBytes;
    this.sock = undefined;
    this.state = 0; // 0 new, 1 upgrading, 2 open (upgraded), 3 closed
    this.head = '';
    this.skip = 0; // payload bytes of the current frame still to come (skipped or collected)
    this.pend = null; // bytes of an incomplete frame header
    this.coll = null; // chunks of a payload being collected
    this.collOp = 0;
    this.waiters = new Map(); // the client's pending requests -> { resolve, reject }
    this.onReady = null; // the client calls it once the protocol's session is established
    this.onFail = null;
  }

  /** Whether the protocol's session was established (a close then counts in the pool's closedOpen). */
  established() {
    return false;
  }

  /**
   * Whether a text frame payload buf[from, to) (at least classifyBytes long,
   * or the whole payload) is a message by its first bytes, while latency is
   * not measured. False means "hand it to frame()".
   */
  countsLead(_buf, _from, _to) {
    return false;
  }

  /** A whole frame payload in buf[from, to) that was not counted from its lead. */
  frame(op, buf, from, to) {
    this.control(op, buf, from, to);
  }

  /**
   * Dials the pool's server and sends `request` (the upgrade request);
   * resolves once the client calls onReady, rejects on a failure, a timeout,
   * or a close before that (with `closedWhy`). An established connection that
   * closes later is counted in the pool's closedOpen and handed to its
   * onClosed, when it has one.
   */
  dial(request, timeoutMs, closedWhy) {
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
      this.onReady = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve();
      };
      let tries = 0;
      const connect = () => {
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
            connect();
            return;
          }
          bump(pool.errors, e.code ?? 'error');
          fail(e.code ?? 'socket error');
        });
        sock.on('close', onClose);
      };
      const onClose = () => {
        const wasOpen = this.state === 2 && this.established();
        if (wasOpen) pool.closedOpen++;
        this.state = 3;
        pool.conns.delete(this);
        for (const w of this.waiters.values()) w.reject(new Error('closed'));
        this.waiters.clear();
        fail(closedWhy);
        // The churn scenario reconnects a client the server closed (drain) elsewhere.
        if (wasOpen) pool.onClosed?.(this);
      };
      this.state = 1;
      pool.conns.add(this);
      connect();
    });
  }

  destroy() {
    if (this.sock && !this.sock.destroyed) this.sock.resetAndDestroy();
  }

  send(text) {
    if (this.state === 2) this.sock.write(clientFrame(1, Buffer.from(text)));
  }

  read(buf, n) {
    const pool = this.pool;
    if (this.state === 2) {
      if (pool.latency) pool.readNowMs = nowMs();
      const before = pool.messages;
      this.feed(buf, 0, n);
      if (pool.messages !== before) pool.lastRecvMs = pool.latency ? pool.readNowMs : nowMs();
      return true;
    }
    if (this.state !== 1) return true;
    const at = this.upgrade(buf, n);
    if (at >= 0 && at < n) this.feed(buf, at, n);
    return true;
  }

  /**
   * Reads buf[0, n) as part of the answer to the upgrade request. Once the
   * head is whole and a 101 the client `accept`s, the connection is open and
   * the answer is where its first frame starts in buf (n when none came yet);
   * -1 while the head is incomplete, or when it failed the connection.
   */
  upgrade(buf, n) {
    this.head += buf.toString('latin1', 0, n);
    const i = this.head.indexOf('\r\n\r\n');
    if (i < 0) {
      if (this.head.length > 16384) this.onFail('response head too long');
      return -1;
    }
    if (!this.head.startsWith('HTTP/1.1 101')) {
      const status = this.head.slice(9, 12);
      bump(this.pool.errors, `http_${status}`);
      this.onFail(`handshake answered ${status}`);
      return -1;
    }
    if (!this.accept(this.head.slice(0, i))) return -1;
    const rest = this.head.length - (i + 4);
    this.head = '';
    this.state = 2;
    return n - rest;
  }

  /** Whether the client takes a 101 answer with this head (status line and headers); false fails the connection itself. */
  accept(_head) {
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
      if (avail < hl) {
        this.pend = Buffer.from(buf.subarray(off, end));
        return;
      }
      if (len === 126) len = buf.readUInt16BE(off + 2);
      else if (len === 127) len = buf.readUInt32BE(off + 2) * 2 ** 32 + buf.readUInt32BE(off + 6);
      if (avail - hl < Math.min(len, this.classifyBytes)) {
        this.pend = Buffer.from(buf.subarray(off, end));
        return;
      }
      const op = buf[off] & 0x0f;
      off += hl;
      const have = end - off;
      if (op === 1 && pool.latency === undefined && this.countsLead(buf, off, off + Math.min(len, have))) {
        // A message, counted from its first bytes: skip the payload.
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

  /** A close frame (its code counted, the connection reset) or a ping (answered with a pong); other opcodes are left alone. */
  control(op, buf, from, to) {
    if (op === 8) {
      bump(this.pool.closeCodes, to - from >= 2 ? buf.readUInt16BE(from) : 1005);
      this.destroy();
    } else if (op === 9) {
      this.sock.write(clientFrame(10, Buffer.from(buf.subarray(from, to))));
    }
  }
}
