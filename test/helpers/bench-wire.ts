/**
 * The wire side of the benchmark runner's client tests (test/unit/bench-*):
 * the runner's modules by file name, server frames, the payloads of the
 * masked client frames, and a one-connection scripted WebSocket server that
 * answers the upgrade and leaves the rest of the script to the test.
 */
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { ROOT } from './gateway.js';

/** The URL of loadtest/bench/lib/`file`, for a dynamic import. */
export const benchLib = (file: string): string => pathToFileURL(`${ROOT}loadtest/bench/lib/${file}`).href;

/** A server frame: FIN, text (or `op`), RSV1 when `compressed`; 7-bit or 16-bit length. */
export function serverFrame(payload: Buffer | string, op = 1, compressed = false): Buffer {
  const p = Buffer.from(payload);
  const b0 = 0x80 | op | (compressed ? 0x40 : 0);
  if (p.length < 126) return Buffer.concat([Buffer.from([b0, p.length]), p]);
  const h = Buffer.from([b0, 126, 0, 0]);
  h.writeUInt16BE(p.length, 2);
  return Buffer.concat([h, p]);
}

export interface ClientFrame {
  op: number;
  text: string;
}

/** The payloads of the masked client frames in `buf` (whole frames only). */
export function clientPayloads(buf: Buffer): ClientFrame[] {
  const out: ClientFrame[] = [];
  let off = 0;
  while (off + 6 <= buf.length) {
    let len = buf[off + 1]! & 0x7f;
    let hl = 2;
    if (len === 126) {
      len = buf.readUInt16BE(off + 2);
      hl = 4;
    }
    if (off + hl + 4 + len > buf.length) break;
    const mask = buf.subarray(off + hl, off + hl + 4);
    const p = Buffer.from(buf.subarray(off + hl + 4, off + hl + 4 + len));
    for (let i = 0; i < p.length; i++) p[i] = p[i]! ^ mask[i & 3]!;
    out.push({ op: buf[off]! & 0x0f, text: p.toString() });
    off += hl + 4 + len;
  }
  return out;
}

/** Waits (a turn of the event loop at a time) until `cond` holds; fails after 10 s. */
export async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** Writes `bytes` in `size`-byte pieces, so that the client reads frames split at awkward places. */
export function writeInPieces(sock: net.Socket, bytes: Buffer, size: number): void {
  for (let i = 0; i < bytes.length; i += size) sock.write(bytes.subarray(i, i + size));
}

export interface WireScript {
  /** Response header lines after Connection: Upgrade, each ending in \r\n. */
  readonly headers?: string;
  /** The server's first frames, sent in the same write as the 101 answer. */
  readonly first: Buffer;
  /** Each read after the upgrade, with the client frames received so far (whole ones). */
  onData(sock: net.Socket, sent: ClientFrame[]): void;
}

export interface ScriptedServer {
  port: number;
  /** The client's upgrade request head. */
  request: Promise<string>;
  /** The client frames received so far. */
  sent: () => ClientFrame[];
}

const servers: net.Server[] = [];

/** Closes every scripted server (the test files' afterEach). */
export function closeScriptedServers(): void {
  for (const s of servers.splice(0)) s.close();
}

/** A one-connection WebSocket server on 127.0.0.1 that answers the upgrade and then follows `script`; records what the client sent. */
export async function scriptedServer(script: WireScript): Promise<ScriptedServer> {
  let gotRequest: (r: string) => void = () => undefined;
  const request = new Promise<string>((resolve) => (gotRequest = resolve));
  let fromClient = Buffer.alloc(0);
  const srv = net.createServer((sock) => {
    let head = '';
    let upgraded = false;
    sock.on('data', (d) => {
      if (!upgraded) {
        head += d.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        upgraded = true;
        gotRequest(head);
        sock.write(Buffer.concat([
          Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${script.headers ?? ''}\r\n`, 'latin1'),
          script.first,
        ]));
        return;
      }
      fromClient = Buffer.concat([fromClient, d]);
      script.onData(sock, clientPayloads(fromClient));
    });
    sock.on('error', () => undefined);
  });
  servers.push(srv);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { port: (srv.address() as net.AddressInfo).port, request, sent: () => clientPayloads(fromClient) };
}
