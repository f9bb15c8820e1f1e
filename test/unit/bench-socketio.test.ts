/**
 * The peer targets' pieces of the benchmark runner (loadtest/bench/lib/
 * socketio-client.mjs, peers.mjs), so that the comparison cannot rot
 * unnoticed: the Engine.IO v4 / Socket.IO v5 packet parser, the lead test that
 * counts a message from its first bytes, a client connection against a
 * scripted server that splits its frames at awkward places (CONNECT with the
 * token, subscribe with an ack, events counted, pings answered, send times
 * read when latency is measured), and the publish requests each target is
 * sent (Soketi's signed ones pass pubgate's own signature check). Neither
 * Socket.IO nor Soketi is run here: the wire strings are the protocols' own.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { verifySignedRequest } from '../../src/pusher/signing.js';
import type { ScriptedServer } from '../helpers/bench-wire.js';
import { benchLib, closeScriptedServers, scriptedServer, serverFrame as frame, until, writeInPieces } from '../helpers/bench-wire.js';

interface Packet {
  kind: string;
  sid?: string;
  nsp?: string;
  id?: number;
  name?: string;
  args?: unknown[];
  message?: string;
  pingInterval?: number;
  probe?: boolean;
}
interface Histogram {
  n: number;
  max: number;
}
interface Conn {
  sid: string | undefined;
  subscribe(channel: string, timeoutMs?: number): Promise<void>;
}
interface Pool {
  messages: number;
  pings: number;
  errors: Record<string, number>;
  latency: Histogram | undefined;
  readNowMs: number;
  open(token: string, timeoutMs?: number): Promise<Conn>;
  closeAll(): void;
}
interface SioModule {
  SIO_CLASSIFY_BYTES: number;
  isSioEventLead(buf: Buffer, from: number, to: number): boolean;
  parseSioPacket(text: string): Packet;
  sioConnectPacket(auth?: unknown): string;
  sioEventPacket(id: number | undefined, name: string, ...args: unknown[]): string;
  SioPool: new (o: { host: string; port: number }) => Pool;
}
interface PeersModule {
  publishRequest(target: string, msgs: [string, string][], nowSec?: number): { path: string; body: string };
  channelPrefix(target: string): string;
  socketioMissing(dir: string): string | undefined;
}
interface WsClientModule {
  readNumberAfter(buf: Buffer, key: Buffer, from: number, to: number): number;
}
interface StatsModule {
  LatencyHistogram: new () => Histogram;
}

const sio = (await import(benchLib('socketio-client.mjs'))) as SioModule;
const peers = (await import(benchLib('peers.mjs'))) as PeersModule;
const wsClient = (await import(benchLib('ws-client.mjs'))) as WsClientModule;
const stats = (await import(benchLib('stats.mjs'))) as StatsModule;

afterEach(closeScriptedServers);

/**
 * A one-connection Socket.IO server as it looks on the wire: answers the
 * upgrade with the Engine.IO OPEN packet in the same write, the client's
 * CONNECT with `40{"sid":..}` (or `connectAnswer`), the subscribe event with
 * its ack, then sends `after` in 5-byte pieces; records what the client sent.
 */
function sioServer(after: Buffer, connectAnswer = '40{"sid":"s-1"}'): Promise<ScriptedServer> {
  let answered = 0;
  return scriptedServer({
    first: frame('0{"sid":"e-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'),
    onData(sock, got) {
      if (answered === 0 && got.length >= 1) {
        answered = 1;
        sock.write(frame(connectAnswer));
      } else if (answered === 1 && got.length >= 2) {
        answered = 2;
        const id = /^42(\d+)\[/.exec(got[1]!.text)?.[1] ?? '0';
        sock.write(frame(`43${id}[{"ok":true}]`));
        writeInPieces(sock, after, 5);
      }
    },
  });
}

const lead = (text: string): boolean => {
  const b = Buffer.from(text);
  return sio.isSioEventLead(b, 0, Math.min(b.length, sio.SIO_CLASSIFY_BYTES));
};

describe('bench socketio client: packets', () => {
  it('parses Engine.IO packets', () => {
    expect(sio.parseSioPacket('0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}'))
      .toMatchObject({ kind: 'open', sid: 'abc', pingInterval: 25000 });
    expect(sio.parseSioPacket('1').kind).toBe('close');
    expect(sio.parseSioPacket('2')).toMatchObject({ kind: 'ping', probe: false });
    expect(sio.parseSioPacket('2probe')).toMatchObject({ kind: 'ping', probe: true });
    expect(sio.parseSioPacket('3').kind).toBe('pong');
    expect(sio.parseSioPacket('6').kind).toBe('noop');
    expect(sio.parseSioPacket('0not json').kind).toBe('bad');
    expect(sio.parseSioPacket('').kind).toBe('bad');
    expect(sio.parseSioPacket('9').kind).toBe('bad');
  });

  it('parses the Socket.IO packets inside an Engine.IO message', () => {
    expect(sio.parseSioPacket('40{"sid":"s-9"}')).toMatchObject({ kind: 'connect', nsp: '/', sid: 's-9' });
    expect(sio.parseSioPacket('40/admin,{"sid":"s-2"}')).toMatchObject({ kind: 'connect', nsp: '/admin', sid: 's-2' });
    expect(sio.parseSioPacket('41').kind).toBe('disconnect');
    expect(sio.parseSioPacket('42["message","bench",{"t":1.5}]')).toMatchObject({ kind: 'event', nsp: '/', id: undefined, name: 'message', args: ['bench', { t: 1.5 }] });
    expect(sio.parseSioPacket('4212["subscribe","c"]')).toMatchObject({ kind: 'event', id: 12, name: 'subscribe', args: ['c'] });
    expect(sio.parseSioPacket('42/chat,7["x"]')).toMatchObject({ kind: 'event', nsp: '/chat', id: 7, name: 'x' });
    expect(sio.parseSioPacket('437[{"ok":true}]')).toMatchObject({ kind: 'ack', id: 7, args: [{ ok: true }] });
    expect(sio.parseSioPacket('44{"message":"unauthorized"}')).toMatchObject({ kind: 'connectError', message: 'unauthorized' });
    expect(sio.parseSioPacket('451-["x",{"_placeholder":true,"num":0}]').kind).toBe('binary');
    // An event needs a name; an ack needs an id; the payload must be JSON.
    expect(sio.parseSioPacket('42[]').kind).toBe('bad');
    expect(sio.parseSioPacket('43[1]').kind).toBe('bad');
    expect(sio.parseSioPacket('42["x"').kind).toBe('bad');
    expect(sio.parseSioPacket('4x').kind).toBe('bad');
  });

  it('tells a message from everything else by its first bytes', () => {
    expect(lead('42["message","bench",{"t":1}]')).toBe(true);
    expect(lead('43["x"]')).toBe(false);
    expect(lead('4212["x"]')).toBe(false); // an event with an ack id: parsed
    expect(lead('42/chat,["x"]')).toBe(false); // another namespace: parsed
    expect(lead('2')).toBe(false);
    expect(lead('40{"sid":"a"}')).toBe(false);
  });

  it('builds the client packets', () => {
    expect(sio.sioConnectPacket({ token: 'a.b.c' })).toBe('40{"token":"a.b.c"}');
    expect(sio.sioConnectPacket()).toBe('40');
    expect(sio.sioEventPacket(3, 'subscribe', 'bench')).toBe('423["subscribe","bench"]');
    expect(sio.sioEventPacket(undefined, 'x')).toBe('42["x"]');
  });

  it('reads the send time after a key, plain or inside a JSON string', () => {
    const plain = Buffer.from('42["message","bench",{"t":1234.567,"p":"xx"}]');
    expect(wsClient.readNumberAfter(plain, Buffer.from('"t":'), 0, plain.length)).toBe(1234.567);
    const escaped = Buffer.from(JSON.stringify({ event: 'bench', channel: 'bench', data: '{"t":99.5,"p":"x"}' }));
    expect(wsClient.readNumberAfter(escaped, Buffer.from('\\"t\\":'), 0, escaped.length)).toBe(99.5);
    expect(wsClient.readNumberAfter(plain, Buffer.from('"q":'), 0, plain.length)).toBeNaN();
  });
});

describe('bench socketio client: a connection', () => {
  it('connects over /socket.io/?EIO=4&transport=websocket with its token, subscribes, counts messages split across reads, answers pings', async () => {
    const big = `42["message","bench",{"t":1,"p":"${'x'.repeat(150)}"}]`; // 16-bit length
    const after = Buffer.concat([
      frame('42["message","bench",{"t":1,"p":"x"}]'),
      frame('2'),
      frame(big),
      frame('6'),
      frame(Buffer.from('ab'), 9), // a WebSocket ping
      frame('42["message","bench",{"t":2}]'),
      frame('4299["unexpected"]'),
      frame(big),
    ]);
    const { port, request, sent } = await sioServer(after);
    const pool = new sio.SioPool({ host: '127.0.0.1', port });
    try {
      const c = await pool.open('tok.en.x');
      expect(await request).toMatch(/^GET \/socket\.io\/\?EIO=4&transport=websocket HTTP\/1\.1\r\n/);
      expect(c.sid).toBe('s-1');
      await c.subscribe('bench');
      await until(() => pool.messages === 4 && pool.pings === 1 && sent().some((f) => f.op === 10), 'the messages, the ping answers');
      const texts = sent().filter((f) => f.op === 1).map((f) => f.text);
      expect(texts[0]).toBe('40{"token":"tok.en.x"}');
      expect(texts[1]).toMatch(/^42\d+\["subscribe","bench"\]$/);
      expect(texts).toContain('3');
      expect(sent().find((f) => f.op === 10)?.text).toBe('ab');
      expect(pool.errors).toEqual({ 'unexpected_event unexpected': 1 });
    } finally {
      pool.closeAll();
    }
  });

  it('reads each message whole and times it while latency is measured', async () => {
    const after = Buffer.concat([frame('42["message","bench",{"t":1000.25,"p":"x"}]'), frame('42["message","bench",{"t":1001.75}]')]);
    const { port } = await sioServer(after);
    const pool = new sio.SioPool({ host: '127.0.0.1', port });
    pool.latency = new stats.LatencyHistogram();
    try {
      const c = await pool.open('t');
      await c.subscribe('bench');
      await until(() => pool.messages === 2, 'the messages');
      expect(pool.latency.n).toBe(2);
      expect(pool.latency.max).toBeGreaterThan(0);
    } finally {
      pool.closeAll();
    }
  });

  it('fails the open on a CONNECT refusal', async () => {
    const { port } = await sioServer(Buffer.alloc(0), '44{"message":"unauthorized"}');
    const pool = new sio.SioPool({ host: '127.0.0.1', port });
    try {
      await expect(pool.open('bad')).rejects.toThrow('connect_error unauthorized');
      expect(pool.errors['connect_error unauthorized']).toBe(1);
    } finally {
      pool.closeAll();
    }
  });
});

describe('bench peers: publish requests', () => {
  it('sends pubgate\'s request format to pubgate, the baseline and the socketio script', () => {
    for (const t of ['pubgate', 'baseline', 'socketio']) {
      expect(peers.publishRequest(t, [['bench', '{"t":1}']])).toEqual({ path: '/v1/publish', body: '{"channel":"bench","data":{"t":1}}' });
      const batch = peers.publishRequest(t, [['bench:0', '{"t":1}'], ['bench:1', '{"t":2}']]);
      expect(batch.path).toBe('/v1/publish/batch');
      expect(JSON.parse(batch.body)).toEqual({ messages: [{ channel: 'bench:0', data: { t: 1 } }, { channel: 'bench:1', data: { t: 2 } }] });
      expect(peers.channelPrefix(t)).toBe('bench:');
    }
  });

  it('signs Soketi\'s events and batch_events requests so that a Pusher signature check accepts them', () => {
    const app = { key: 'bench-key', secret: 'bench-secret-0123456789abcdef' };
    const now = 1_800_000_000;
    const one = peers.publishRequest('soketi', [['bench', '{"t":1,"p":"x"}']], now);
    const [path1, query1] = one.path.split('?') as [string, string];
    expect(path1).toBe('/apps/bench-app/events');
    expect(JSON.parse(one.body)).toEqual({ name: 'bench', channels: ['bench'], data: '{"t":1,"p":"x"}' });
    expect(verifySignedRequest({ method: 'POST', path: path1, query: query1, body: one.body }, app, now)).toMatchObject({ ok: true });

    const two = peers.publishRequest('soketi', [['bench-0', '{"t":1}'], ['bench-1', '{"t":2}']], now);
    const [path2, query2] = two.path.split('?') as [string, string];
    expect(path2).toBe('/apps/bench-app/batch_events');
    expect(JSON.parse(two.body)).toEqual({ batch: [{ name: 'bench', channel: 'bench-0', data: '{"t":1}' }, { name: 'bench', channel: 'bench-1', data: '{"t":2}' }] });
    expect(verifySignedRequest({ method: 'POST', path: path2, query: query2, body: two.body }, app, now)).toMatchObject({ ok: true });
    // Pusher channel names cannot hold ':'.
    expect(peers.channelPrefix('soketi')).toBe('bench-');
  });

  it('says what is missing when Socket.IO is not installed', () => {
    expect(peers.socketioMissing('/nonexistent-socketio-dir')).toMatch(/socket\.io, @socket\.io\/redis-adapter, redis missing/);
  });
});
