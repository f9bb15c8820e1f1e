/**
 * The benchmark runner's raw WebSocket client (loadtest/bench/lib/ws-client.mjs)
 * with permessage-deflate: it offers the extension, refuses an answer it could
 * not sample from (server context takeover), counts compressed messages from
 * their header (RSV1), inflates one in `inflateEvery` and checks it is a
 * message frame, and counts the bytes read. A scripted TCP server plays the
 * gateway, splitting its frames at awkward places.
 */
import { constants as zlibConstants, deflateRawSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import type { ScriptedServer } from '../helpers/bench-wire.js';
import { benchLib, closeScriptedServers, scriptedServer, serverFrame, until, writeInPieces } from '../helpers/bench-wire.js';

interface Pool {
  messages: number;
  wireBytes: number;
  compressed: number;
  inflated: number;
  inflatedBytes: number;
  inflatedWire: number;
  inflateErrors: number;
  extensions: string | undefined;
  errors: Record<string, number>;
  latency: { n: number } | undefined;
  open(token: string, timeoutMs?: number): Promise<{ subscribe(channel: string, timeoutMs?: number): Promise<unknown> }>;
  closeAll(): void;
}
interface WsClientModule {
  WsPool: new (o: { host: string; port: number; deflate?: boolean; inflateEvery?: number }) => Pool;
  DEFLATE_OFFER: string;
  inflateMessage(payload: Buffer): Buffer;
  headerValue(head: string, name: string): string | undefined;
}
interface StatsModule {
  LatencyHistogram: new () => { n: number };
}

const client = (await import(benchLib('ws-client.mjs'))) as WsClientModule;
const { LatencyHistogram } = (await import(benchLib('stats.mjs'))) as StatsModule;

/** A server text frame, RSV1 when compressed. */
const frame = (payload: Buffer, compressed: boolean): Buffer => serverFrame(payload, 1, compressed);

/** What a permessage-deflate sender puts on the wire: deflate, sync flush, without the 00 00 ff ff tail. */
function deflated(text: string): Buffer {
  const out = deflateRawSync(Buffer.from(text), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
  expect([...out.subarray(-4)]).toEqual([0, 0, 0xff, 0xff]);
  return out.subarray(0, -4);
}

const message = (i: number, pad = 0): string => JSON.stringify({ type: 'message', channel: 'bench', data: { t: 1000 + i, seq: i, p: 'ab'.repeat(pad) } });

interface Script {
  /** The Sec-WebSocket-Extensions answer, or undefined for none. */
  readonly extensions: string | undefined;
  /** Bytes to send once the client's subscribe arrived. */
  readonly after: Buffer;
}

afterEach(closeScriptedServers);

/** A one-connection server: answers the upgrade (with the welcome in the same write), the subscribe, then sends `after` in small pieces. */
function wsServer(script: Script): Promise<ScriptedServer> {
  return scriptedServer({
    headers: script.extensions === undefined ? '' : `Sec-WebSocket-Extensions: ${script.extensions}\r\n`,
    first: frame(Buffer.from('{"type":"welcome","node":"n","conn":"c","user":"u","expiresIn":null,"ping":25}'), false),
    onData(sock) {
      // The subscribe (a masked client frame): reply, then the scripted bytes in 7-byte pieces.
      sock.write(frame(Buffer.from('{"type":"reply","id":1}'), false));
      writeInPieces(sock, script.after, 7);
    },
  });
}

const ANSWER = 'permessage-deflate; client_no_context_takeover; server_no_context_takeover';

describe('bench ws-client: permessage-deflate', () => {
  it('inflates a payload without its 00 00 ff ff tail, and reads response headers case-insensitively', () => {
    const text = message(1, 300);
    expect(client.inflateMessage(deflated(text)).toString()).toBe(text);
    expect(client.headerValue(`HTTP/1.1 101 OK\r\nsec-WEBSOCKET-extensions:  ${ANSWER} \r\nX: y`, 'sec-websocket-extensions')).toBe(ANSWER);
    expect(client.headerValue('HTTP/1.1 101 OK\r\nX: y', 'sec-websocket-extensions')).toBeUndefined();
  });

  it('offers the extension, counts compressed messages from their header, checks one in inflateEvery and counts wire bytes', async () => {
    const texts = Array.from({ length: 9 }, (_, i) => message(i, i % 2 ? 200 : 3)); // 7-bit and 16-bit lengths
    const frames = texts.map((t) => frame(deflated(t), true));
    const after = Buffer.concat(frames);
    const { port, request } = await wsServer({ extensions: ANSWER, after });
    const pool = new client.WsPool({ host: '127.0.0.1', port, deflate: true, inflateEvery: 3 });
    const c = await pool.open('tok');
    expect(await request).toContain(`\r\nSec-WebSocket-Extensions: ${client.DEFLATE_OFFER}\r\n`);
    expect(pool.extensions).toBe(ANSWER);
    await c.subscribe('bench');
    await until(() => pool.messages === 9, '9 messages');
    await until(() => pool.wireBytes >= after.length, 'every byte');

    expect(pool.compressed).toBe(9);
    // The 3rd, 6th and 9th were inflated and checked.
    expect(pool.inflated).toBe(3);
    expect(pool.inflateErrors).toBe(0);
    expect(pool.inflatedBytes).toBe([2, 5, 8].reduce((a, i) => a + Buffer.byteLength(texts[i]!), 0));
    expect(pool.inflatedWire).toBe([2, 5, 8].reduce((a, i) => a + frames[i]!.length - (frames[i]![1] === 126 ? 4 : 2), 0));
    // Everything after the head: the welcome, the reply and the messages.
    expect(pool.wireBytes).toBe(after.length + frame(Buffer.from('{"type":"reply","id":1}'), false).length + frame(Buffer.from('{"type":"welcome","node":"n","conn":"c","user":"u","expiresIn":null,"ping":25}'), false).length);
    pool.closeAll();
  });

  it('counts a sampled compressed frame that does not inflate, or is not a message frame, as an inflate error', async () => {
    const bad = frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00]), true);
    const notMessage = frame(deflated('{"type":"reply","id":7}'), true);
    const good = frame(deflated(message(1)), true);
    const { port } = await wsServer({ extensions: ANSWER, after: Buffer.concat([bad, notMessage, good]) });
    const pool = new client.WsPool({ host: '127.0.0.1', port, deflate: true, inflateEvery: 1 });
    const c = await pool.open('tok');
    await c.subscribe('bench');
    await until(() => pool.messages === 3 && pool.inflated + pool.inflateErrors === 3, 'three frames');
    expect(pool.inflated).toBe(1);
    expect(pool.inflateErrors).toBe(2);
    expect(pool.errors).toEqual({ compressed_frame_not_a_message: 1, 'inflate: Z_DATA_ERROR': 1 });
    pool.closeAll();
  });

  it('inflates every compressed message when timing them, and reads the send time from the inflated text', async () => {
    const { port } = await wsServer({ extensions: ANSWER, after: Buffer.concat([1, 2, 3].map((i) => frame(deflated(message(i)), true))) });
    const pool = new client.WsPool({ host: '127.0.0.1', port, deflate: true, inflateEvery: 0 });
    const c = await pool.open('tok');
    pool.latency = new LatencyHistogram();
    await c.subscribe('bench');
    await until(() => pool.messages === 3, '3 messages');
    expect(pool.compressed).toBe(3);
    expect(pool.latency.n).toBe(3);
    pool.closeAll();
  });

  it('refuses permessage-deflate with server context takeover (frames could not be inflated one by one), and one it did not offer', async () => {
    const takeover = await wsServer({ extensions: 'permessage-deflate; client_no_context_takeover', after: Buffer.alloc(0) });
    const pool = new client.WsPool({ host: '127.0.0.1', port: takeover.port, deflate: true });
    await expect(pool.open('tok', 5000)).rejects.toThrow(/Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover$/);

    const unasked = await wsServer({ extensions: ANSWER, after: Buffer.alloc(0) });
    const plain = new client.WsPool({ host: '127.0.0.1', port: unasked.port });
    await expect(plain.open('tok', 5000)).rejects.toThrow(/Sec-WebSocket-Extensions/);
    expect(await unasked.request).not.toContain('Sec-WebSocket-Extensions');
  });
});
