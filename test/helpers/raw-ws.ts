/**
 * A WebSocket client on a raw TCP socket, for frames no WebSocket library will
 * send: unmasked, reserved bits or opcodes, fragmented control frames, a header
 * announcing more payload than ever comes. It does the handshake (token in the
 * subprotocol), waits for `welcome`, then writes whatever bytes the test builds
 * with `clientFrame`, and records what the server sends back (frames, pings,
 * the close frame) and when the connection ended.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Frame } from './client.js';

export const OP = { CONTINUATION: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const;

export interface FrameOptions {
  /** FIN bit; default true. */
  readonly fin?: boolean;
  /** MASK bit and a masking key; default true (a client must mask). */
  readonly mask?: boolean;
  /** RSV1..RSV3 as a 3-bit number (4 = RSV1); default 0. */
  readonly rsv?: number;
  /** Payload length written in the header; default the payload's. A larger one makes a frame that never completes. */
  readonly declaredLength?: number;
}

/** One client frame: header (7-, 16- or 64-bit length), masking key when masked, payload (masked). */
export function clientFrame(opcode: number, payload: string | Buffer = '', o: FrameOptions = {}): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const n = o.declaredLength ?? body.length;
  const mask = o.mask ?? true;
  const first = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  const m = mask ? 0x80 : 0;
  let head: Buffer;
  if (n < 126) head = Buffer.from([first, m | n]);
  else if (n < 65536) {
    head = Buffer.from([first, m | 126, 0, 0]);
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.from([first, m | 127, 0, 0, 0, 0, 0, 0, 0, 0]);
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  if (!mask) return Buffer.concat([head, body]);
  const key = randomBytes(4);
  return Buffer.concat([head, key, body.map((b, i) => b ^ key[i % 4]!)]);
}

export interface ServerFrame {
  readonly opcode: number;
  readonly payload: Buffer;
}

export interface RawWs {
  readonly socket: Socket;
  readonly welcome: Frame;
  /** Every frame the server sent after the 101, welcome included. */
  readonly frames: ServerFrame[];
  /** The close frame, if the server sent one. */
  closeFrame(): { code: number; reason: string } | undefined;
  /** Resolves at the next ping frame from the server (rejects if the connection ends first). */
  nextPing(): Promise<void>;
  /** Resolves with the next frame from the server that is not a ping (rejects if the connection ends first). */
  nextFrame(): Promise<ServerFrame>;
  /** Resolves when the TCP connection is gone, with `performance.now()` at that moment. */
  readonly ended: Promise<number>;
  write(bytes: Buffer): void;
}

/** Connects to `ws://127.0.0.1:port/ws` with `token` in the subprotocol; resolves once `welcome` arrived. */
export function openRawWs(port: number, token: string, timeoutMs = 10_000): Promise<RawWs> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const frames: ServerFrame[] = [];
    const pingWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
    const frameWaiters: { resolve: (f: ServerFrame) => void; reject: (e: Error) => void }[] = [];
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let gone = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no welcome within ${timeoutMs} ms`));
    }, timeoutMs);
    const ended = new Promise<number>((res) => {
      socket.once('close', () => {
        gone = true;
        clearTimeout(timer);
        for (const w of pingWaiters.splice(0)) w.reject(new Error('the connection ended before the next ping'));
        for (const w of frameWaiters.splice(0)) w.reject(new Error('the connection ended before the next frame'));
        reject(new Error(upgraded ? 'the connection ended before welcome' : `upgrade refused: ${buf.toString('latin1').slice(0, 200)}`));
        res(performance.now());
      });
    });
    socket.on('error', () => undefined); // a reset is reported through `ended`
    const raw: RawWs = {
      socket,
      get welcome(): Frame {
        return JSON.parse(frames[0]!.payload.toString('utf8')) as Frame;
      },
      frames,
      closeFrame() {
        const f = frames.find((x) => x.opcode === OP.CLOSE);
        if (!f) return undefined;
        return { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005, reason: f.payload.subarray(2).toString('utf8') };
      },
      nextPing: () => (gone ? Promise.reject(new Error('the connection has ended')) : new Promise((res, rej) => pingWaiters.push({ resolve: res, reject: rej }))),
      nextFrame: () => (gone ? Promise.reject(new Error('the connection has ended')) : new Promise((res, rej) => frameWaiters.push({ resolve: res, reject: rej }))),
      ended,
      write: (bytes) => {
        socket.write(bytes);
      },
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!buf.subarray(0, end).toString('latin1').startsWith('HTTP/1.1 101 ')) return socket.destroy();
        upgraded = true;
        buf = buf.subarray(end + 4);
      }
      // Server frames are unmasked; lengths here fit in 7 or 16 bits.
      for (;;) {
        if (buf.length < 2) return;
        let n = buf[1]! & 0x7f;
        let off = 2;
        if (n === 126) {
          if (buf.length < 4) return;
          n = buf.readUInt16BE(2);
          off = 4;
        }
        if (buf.length < off + n) return;
        const f = { opcode: buf[0]! & 0x0f, payload: Buffer.from(buf.subarray(off, off + n)) };
        buf = buf.subarray(off + n);
        frames.push(f);
        if (frames.length === 1) {
          clearTimeout(timer);
          resolve(raw);
        }
        if (f.opcode === OP.PING) for (const w of pingWaiters.splice(0)) w.resolve();
        else for (const w of frameWaiters.splice(0)) w.resolve(f);
      }
    });
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Protocol: pubgate.v1, bearer.${token}\r\n\r\n`,
    );
  });
}
