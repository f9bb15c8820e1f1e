/**
 * Just enough of HTTP/1.1 and RFC 6455 for pubgate-check to walk a handshake
 * by hand: the upgrade request, the response head, and WebSocket frames
 * (masked client frames, fragmented server frames, control frames).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';

export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa } as const;

export function newKey(): string {
  return randomBytes(16).toString('base64');
}

export function expectedAccept(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

export interface UpgradeRequest {
  readonly host: string;
  readonly path: string;
  readonly key: string;
  readonly protocols: readonly string[];
  readonly origin?: string;
}

export function upgradeRequest(r: UpgradeRequest): string {
  const lines = [
    `GET ${r.path} HTTP/1.1`,
    `Host: ${r.host}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${r.key}`,
    'Sec-WebSocket-Version: 13',
    `Sec-WebSocket-Protocol: ${r.protocols.join(', ')}`,
    'User-Agent: pubgate-check/0.1',
  ];
  if (r.origin !== undefined) lines.push(`Origin: ${r.origin}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

export interface ResponseHead {
  readonly status: number;
  readonly statusText: string;
  /** Lower-cased names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
}

export function parseHead(text: string): ResponseHead {
  const [statusLine = '', ...rest] = text.split('\r\n');
  const m = /^HTTP\/\d(?:\.\d)?\s+(\d{3})\s*(.*)$/.exec(statusLine);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const headers: Record<string, string> = {};
  for (const line of rest) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { status: Number(m[1]), statusText: m[2] ?? '', headers };
}

/** Whether a comma-separated header holds `token` (case-insensitive). */
export function headerHas(value: string | undefined, token: string): boolean {
  return value !== undefined && value.split(',').some((v) => v.trim().toLowerCase() === token.toLowerCase());
}

/** A client frame: always masked (RFC 6455 §5.3). */
export function encodeFrame(opcode: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65_536 ? 4 : 10;
  const out = Buffer.alloc(head + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65_536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = randomBytes(4);
  mask.copy(out, head);
  for (let i = 0; i < len; i++) out[head + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

export function encodeClose(code: number, reason = ''): Buffer {
  const r = Buffer.from(reason);
  const p = Buffer.alloc(2 + r.length);
  p.writeUInt16BE(code, 0);
  r.copy(p, 2);
  return encodeFrame(OP.CLOSE, p);
}

export interface Frame {
  readonly opcode: number;
  readonly payload: Buffer;
}

/** Reassembles server frames from TCP chunks; data frames are joined across continuations. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);
  #fragments: Buffer[] = [];
  #fragOpcode = 0;

  push(chunk: Buffer): Frame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      const fin = (b[0]! & 0x80) !== 0;
      const opcode = b[0]! & 0x0f;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      const maskOff = off;
      if (masked) off += 4;
      if (b.length < off + len) break;
      let payload = b.subarray(off, off + len);
      if (masked) {
        const m = b.subarray(maskOff, maskOff + 4);
        payload = Buffer.from(payload.map((x, i) => x ^ m[i & 3]!));
      }
      this.#buf = b.subarray(off + len);
      if (opcode >= 0x8) {
        frames.push({ opcode, payload: Buffer.from(payload) });
        continue;
      }
      if (opcode !== OP.CONT) this.#fragOpcode = opcode;
      this.#fragments.push(Buffer.from(payload));
      if (fin) {
        frames.push({ opcode: this.#fragOpcode, payload: Buffer.concat(this.#fragments) });
        this.#fragments = [];
      }
    }
    return frames;
  }
}

export interface Ended {
  /** A close frame arrived (code 1005 when it had no code). */
  readonly closeFrame: { readonly code: number; readonly reason: string } | undefined;
  /** ms since the WebSocket session started. */
  readonly afterMs: number;
  readonly error: string | undefined;
}

/**
 * A WebSocket session over a socket that already completed the upgrade:
 * answers pings, queues data frames, and records how it ended.
 */
export class Session {
  readonly #sock: Socket;
  readonly #reader = new FrameReader();
  readonly #frames: string[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #t0 = Date.now();
  #closeFrame: Ended['closeFrame'];
  #ended: Ended | undefined;
  #error: string | undefined;
  pingsAnswered = 0;
  readonly ended: Promise<Ended>;

  constructor(sock: Socket, rest: Buffer) {
    this.#sock = sock;
    this.ended = new Promise((resolve) => {
      sock.on('close', () => {
        this.#ended = { closeFrame: this.#closeFrame, afterMs: Date.now() - this.#t0, error: this.#error };
        resolve(this.#ended);
        this.#wake();
      });
    });
    sock.on('error', (e) => {
      this.#error = e.message;
    });
    sock.on('data', (d: Buffer) => this.#onData(d));
    if (rest.length > 0) this.#onData(rest);
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  #onData(d: Buffer): void {
    for (const f of this.#reader.push(d)) {
      if (f.opcode === OP.PING) {
        this.pingsAnswered++;
        this.#write(encodeFrame(OP.PONG, f.payload));
      } else if (f.opcode === OP.CLOSE) {
        const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
        this.#closeFrame = { code, reason: f.payload.subarray(2).toString('utf8') };
        this.#write(encodeClose(code === 1005 ? 1000 : code));
        this.#sock.end();
      } else if (f.opcode === OP.TEXT) {
        this.#frames.push(f.payload.toString('utf8'));
      } else if (f.opcode === OP.BINARY) {
        this.#frames.push(`<binary frame of ${f.payload.length} bytes>`);
      }
    }
    this.#wake();
  }

  #write(b: Buffer): void {
    if (!this.#sock.destroyed && this.#sock.writable) this.#sock.write(b);
  }

  sendText(text: string): void {
    this.#write(encodeFrame(OP.TEXT, Buffer.from(text)));
  }

  get isEnded(): boolean {
    return this.#ended !== undefined;
  }

  /** The next text frame, or undefined when the connection ended or `timeoutMs` passed first. */
  next(pred: (text: string) => boolean, timeoutMs: number): Promise<{ text: string } | { ended: Ended } | { timeout: true }> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const i = this.#frames.findIndex(pred);
        if (i >= 0) {
          done({ text: this.#frames.splice(i, 1)[0]! });
          return true;
        }
        if (this.#ended) {
          done({ ended: this.#ended });
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => done({ timeout: true }), timeoutMs);
      const done = (r: { text: string } | { ended: Ended } | { timeout: true }): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(r);
      };
      const waiter = (): void => void check();
      if (!check()) this.#waiters.add(waiter);
    });
  }

  /** Resolves after `ms`, or earlier when the connection ends. */
  wait(ms: number): Promise<Ended | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), ms);
      void this.ended.then((e) => {
        clearTimeout(timer);
        resolve(e);
      });
    });
  }

  /** Sends a close frame and waits (briefly) for the socket to close. */
  async close(): Promise<void> {
    if (this.#ended) return;
    this.#write(encodeClose(1000, 'pubgate-check done'));
    const t = setTimeout(() => this.#sock.destroy(), 2000);
    await this.ended;
    clearTimeout(t);
  }
}
