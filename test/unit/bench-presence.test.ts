/**
 * What the presence benchmarks (loadtest/bench/lib/presence.mjs) rely on in
 * the runner's raw WebSocket client: a reply resolves the frame that asked for
 * it (and an error reply rejects it), join and leave frames are counted and
 * handed to `onPresence` with the connection, while message frames are still
 * counted from their header; and the nearest-rank quantile the latency
 * figures use. A scripted TCP server plays the gateway.
 */
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/gateway.js';

interface Reply {
  readonly id: number;
  readonly users?: number;
  readonly connections?: number;
}
interface Conn {
  request(type: string, channel: string, timeoutMs?: number): Promise<Reply>;
  subscribe(channel: string, timeoutMs?: number): Promise<Reply>;
  unsubscribe(channel: string, timeoutMs?: number): Promise<Reply>;
}
interface Pool {
  messages: number;
  presenceFrames: number;
  onPresence: ((f: { type: string; user: string; channel: string }, c: Conn) => void) | undefined;
  open(token: string, timeoutMs?: number): Promise<Conn>;
  closeAll(): void;
}
interface WsClientModule {
  WsPool: new (o: { host: string; port: number }) => Pool;
}
interface PresenceModule {
  quantile(xs: readonly number[], q: number): number;
}

const lib = (file: string): string => pathToFileURL(`${ROOT}loadtest/bench/lib/${file}`).href;
const client = (await import(lib('ws-client.mjs'))) as WsClientModule;
const { quantile } = (await import(lib('presence.mjs'))) as PresenceModule;

/** An unmasked server text frame, 7-bit or 16-bit length. */
function frame(text: string): Buffer {
  const payload = Buffer.from(text);
  if (payload.length < 126) return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
  const h = Buffer.from([0x81, 126, 0, 0]);
  h.writeUInt16BE(payload.length, 2);
  return Buffer.concat([h, payload]);
}

/** Reads masked client frames (payloads under 64 KiB) from `buf`; answers the whole frames' texts and what is left. */
function clientFrames(buf: Buffer): { texts: string[]; rest: Buffer } {
  const texts: string[] = [];
  let off = 0;
  for (;;) {
    if (buf.length - off < 2) break;
    let len = buf[off + 1]! & 0x7f;
    let hl = 2;
    if (len === 126) {
      if (buf.length - off < 4) break;
      len = buf.readUInt16BE(off + 2);
      hl = 4;
    }
    if (buf.length - off < hl + 4 + len) break;
    const mask = buf.subarray(off + hl, off + hl + 4);
    const p = Buffer.from(buf.subarray(off + hl + 4, off + hl + 4 + len));
    for (let i = 0; i < p.length; i++) p[i]! ^= mask[i & 3]!;
    texts.push(p.toString());
    off += hl + 4 + len;
  }
  return { texts, rest: buf.subarray(off) };
}

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/**
 * A one-connection server: upgrade and welcome, then each client frame is
 * recorded and answered by `answer` (bytes sent in 5-byte pieces, so frames
 * arrive split at awkward places).
 */
async function scriptedServer(answer: (f: { type: string; id: number; channel: string }) => Buffer): Promise<{ port: number; got: string[] }> {
  const got: string[] = [];
  const srv = net.createServer((sock) => {
    let head = '';
    let upgraded = false;
    let pending = Buffer.alloc(0);
    sock.on('data', (d) => {
      if (!upgraded) {
        head += d.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        upgraded = true;
        sock.write(Buffer.concat([
          Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', 'latin1'),
          frame('{"type":"welcome","node":"n","conn":"c","user":"u","expiresIn":null,"ping":25}'),
        ]));
        return;
      }
      const { texts, rest } = clientFrames(Buffer.concat([pending, d]));
      pending = Buffer.from(rest);
      for (const t of texts) {
        got.push(t);
        const out = answer(JSON.parse(t) as { type: string; id: number; channel: string });
        for (let i = 0; i < out.length; i += 5) sock.write(out.subarray(i, i + 5));
      }
    });
    sock.on('error', () => undefined);
  });
  servers.push(srv);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { port: (srv.address() as net.AddressInfo).port, got };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('bench ws-client: presence frames', () => {
  it('resolves each request with its own reply and rejects one answered with an error', async () => {
    const { port, got } = await scriptedServer((f) => {
      if (f.type === 'presence') return frame(`{"type":"reply","id":${f.id},"error":{"code":"bad_request","message":"no presence"}}`);
      if (f.type === 'presence_stats') return frame(`{"type":"reply","id":${f.id},"users":${f.id * 10},"connections":${f.id * 11}}`);
      return frame(`{"type":"reply","id":${f.id}}`);
    });
    const pool = new client.WsPool({ host: '127.0.0.1', port });
    const c = await pool.open('tok');
    await c.subscribe('benchp:a');
    const [stats2, stats3] = await Promise.all([c.request('presence_stats', 'benchp:a'), c.request('presence_stats', 'benchp:b')]);
    expect(stats2).toMatchObject({ id: 2, users: 20, connections: 22 });
    expect(stats3).toMatchObject({ id: 3, users: 30, connections: 33 });
    await expect(c.request('presence', 'bench:plain')).rejects.toThrow('reply error bad_request');
    await c.unsubscribe('benchp:a');
    expect(got.map((t) => JSON.parse(t) as unknown)).toEqual([
      { type: 'subscribe', id: 1, channel: 'benchp:a' },
      { type: 'presence_stats', id: 2, channel: 'benchp:a' },
      { type: 'presence_stats', id: 3, channel: 'benchp:b' },
      { type: 'presence', id: 4, channel: 'bench:plain' },
      { type: 'unsubscribe', id: 5, channel: 'benchp:a' },
    ]);
    pool.closeAll();
  });

  it('counts join and leave frames and hands each to onPresence, while message frames are counted from their header', async () => {
    const info = JSON.stringify({ name: 'x'.repeat(200) }); // a join over 125 bytes: a 16-bit length
    const after = Buffer.concat([
      frame(`{"type":"join","channel":"benchjl:f","user":"u1","info":${info}}`),
      frame('{"type":"message","channel":"benchjl:f","data":{"t":1}}'),
      frame('{"type":"leave","channel":"benchjl:f","user":"u1"}'),
      frame('{"type":"join","channel":"benchjl:f","user":"u2"}'),
    ]);
    const { port } = await scriptedServer((f) => Buffer.concat([frame(`{"type":"reply","id":${f.id}}`), after]));
    const pool = new client.WsPool({ host: '127.0.0.1', port });
    const seen: string[] = [];
    let from: Conn | undefined;
    pool.onPresence = (f, c) => {
      seen.push(`${f.type} ${f.user} ${f.channel}`);
      from = c;
    };
    const c = await pool.open('tok');
    await c.subscribe('benchjl:f');
    await until(() => pool.presenceFrames === 3 && pool.messages === 1, 'three presence frames and a message');
    expect(seen).toEqual(['join u1 benchjl:f', 'leave u1 benchjl:f', 'join u2 benchjl:f']);
    expect(from).toBe(c);
    pool.closeAll();
  });
});

describe('bench presence: quantile', () => {
  it('answers the nearest-rank quantile, ignoring values that are not finite', () => {
    const xs = [5, 1, 4, 2, 3, NaN, Infinity];
    expect(quantile(xs, 0.5)).toBe(3);
    expect(quantile(xs, 0.99)).toBe(5);
    expect(quantile(xs, 0.2)).toBe(1);
    expect(quantile(xs, 0.21)).toBe(2);
    expect(quantile(Array.from({ length: 200 }, (_, i) => i + 1), 0.99)).toBe(198);
    expect(quantile([], 0.5)).toBeNaN();
  });
});
