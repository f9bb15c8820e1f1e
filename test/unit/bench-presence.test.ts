/**
 * What the presence benchmarks (loadtest/bench/lib/presence.mjs) rely on in
 * the runner's raw WebSocket client: a reply resolves the frame that asked for
 * it (and an error reply rejects it), join and leave frames are counted and
 * handed to `onPresence` with the connection, while message frames are still
 * counted from their header; and the nearest-rank quantile the latency
 * figures use. A scripted TCP server plays the gateway.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { benchLib, closeScriptedServers, scriptedServer, serverFrame as frame, until, writeInPieces } from '../helpers/bench-wire.js';

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

const client = (await import(benchLib('ws-client.mjs'))) as WsClientModule;
const { quantile } = (await import(benchLib('presence.mjs'))) as PresenceModule;

afterEach(closeScriptedServers);

/**
 * A one-connection server: upgrade and welcome, then each client frame is
 * recorded and answered by `answer` (bytes sent in 5-byte pieces, so frames
 * arrive split at awkward places).
 */
async function presenceServer(answer: (f: { type: string; id: number; channel: string }) => Buffer): Promise<{ port: number; got: string[] }> {
  const got: string[] = [];
  const { port } = await scriptedServer({
    first: frame('{"type":"welcome","node":"n","conn":"c","user":"u","expiresIn":null,"ping":25}'),
    onData(sock, sent) {
      for (const f of sent.slice(got.length)) {
        got.push(f.text);
        writeInPieces(sock, answer(JSON.parse(f.text) as { type: string; id: number; channel: string }), 5);
      }
    },
  });
  return { port, got };
}

describe('bench ws-client: presence frames', () => {
  it('resolves each request with its own reply and rejects one answered with an error', async () => {
    const { port, got } = await presenceServer((f) => {
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
    const { port } = await presenceServer((f) => Buffer.concat([frame(`{"type":"reply","id":${f.id}}`), after]));
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
