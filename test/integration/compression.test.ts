/**
 * PUBGATE_COMPRESSION: with `shared`, permessage-deflate is negotiated when the
 * client offers it, published messages reach compressing and plain clients
 * alike, and decompressed client frames are bounded (a deflate bomb is cut
 * without the node's memory growing). With `off` nothing is negotiated.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token } from '../helpers/client.js';
import { metric, publish, type GatewayProcess } from '../helpers/gateway.js';
import { logMark, logAfter, startGateways } from '../helpers/handshake.js';
import { record, within, type Recording } from '../helpers/recorder.js';

let shared: GatewayProcess;
let off: GatewayProcess;
/** Compresses every frame (threshold 0), and keeps history on h:*. */
let everything: GatewayProcess;

beforeAll(async () => {
  [shared, off, everything] = await startGateways([
    { PUBGATE_COMPRESSION: 'shared' },
    { PUBGATE_COMPRESSION: 'off' },
    { PUBGATE_COMPRESSION: 'shared', PUBGATE_COMPRESSION_THRESHOLD: '0', PUBGATE_HISTORY_CHANNELS: 'h:*' },
  ]);
});
afterAll(async () => {
  await Promise.all([shared, off, everything].map((g) => g?.stop()));
});

/** Memory of a process from /proc (Linux), bytes: resident now and its peak (high-water mark). */
function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

interface Opened {
  readonly ws: WebSocket;
  readonly rec: Recording;
  /** The server's Sec-WebSocket-Extensions response header (undefined when absent). */
  readonly extensionsHeader: string | undefined;
  /** The TCP socket under the WebSocket, to count bytes on the wire. */
  readonly socket: Socket;
  readonly closed: Promise<{ code: number; reason: string }>;
}

/** A `ws` client offering permessage-deflate or not, keeping the upgrade response. */
async function open(url: string, jwt: string, perMessageDeflate: boolean): Promise<Opened> {
  const ws = new WebSocket(url, ['pubgate.v1', `bearer.${jwt}`], { perMessageDeflate, maxPayload: 64 * 1024 * 1024 });
  const rec = record(ws);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  const upgraded = new Promise<{ header: string | undefined; socket: Socket }>((resolve, reject) => {
    ws.once('upgrade', (res) => {
      const h = res.headers['sec-websocket-extensions'];
      resolve({ header: Array.isArray(h) ? h.join(', ') : h, socket: res.socket as Socket });
    });
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
  });
  const { header, socket } = await upgraded;
  await new Promise<void>((resolve, reject) => {
    if (ws.readyState === WebSocket.OPEN) resolve();
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.on('error', () => undefined); // a reset after close is reported through `closed`
  await rec.waitFor((f) => f.type === 'welcome');
  return { ws, rec, extensionsHeader: header, socket, closed };
}

const subscribe = async (c: Opened, id: number, channel: string): Promise<void> => {
  const from = c.rec.mark();
  c.ws.send(JSON.stringify({ type: 'subscribe', id, channel }));
  expect(await c.rec.waitFor((f) => f.type === 'reply' && f.id === id, from)).toEqual({ type: 'reply', id });
};

/** Publishes over the HTTP API and returns, per client, the message's data and the bytes its socket read meanwhile. */
async function publishAndReceive(gw: GatewayProcess, channel: string, data: unknown, clients: Opened[]): Promise<{ data: unknown; wireBytes: number }[]> {
  const marks = clients.map((c) => ({ from: c.rec.mark(), bytes: c.socket.bytesRead }));
  expect((await publish(gw, { channel, data })).status).toBe(200);
  return Promise.all(clients.map(async (c, i) => {
    const f = await c.rec.waitFor((x) => x.type === 'message' && x.channel === channel, marks[i]!.from);
    return { data: f.data, wireBytes: c.socket.bytesRead - marks[i]!.bytes };
  }));
}

const LARGE_TEXT = 'compressible '.repeat(2500); // ~32 KB of JSON that deflates to well under 1 KB

describe('PUBGATE_COMPRESSION=shared', () => {
  it('negotiates permessage-deflate with a client that offers it and delivers published messages compressed and intact', async () => {
    const jwt = await token({ sub: 'deflate', channels: ['z:*'] });
    const deflate = await open(shared.url, jwt, true);
    expect(deflate.extensionsHeader).toMatch(/^permessage-deflate\b/);
    expect(deflate.ws.extensions).toMatch(/^permessage-deflate\b/);
    await subscribe(deflate, 1, 'z:one');

    const [big] = await publishAndReceive(shared, 'z:one', { text: LARGE_TEXT }, [deflate]);
    expect(big!.data).toEqual({ text: LARGE_TEXT });
    // It travelled compressed: far fewer bytes on the wire than the ~32 KB frame.
    expect(big!.wireBytes).toBeLessThan(4096);

    // Non-ASCII, numbers as written, and several messages in a row (each decodes on its own).
    const values = [{ u: '日本語 🎉 é' }, [1, 2.5, -3e-7], 'plain', { text: LARGE_TEXT.slice(0, 5000) }];
    for (const v of values) {
      const [got] = await publishAndReceive(shared, 'z:one', v, [deflate]);
      expect(got!.data).toEqual(v);
    }
    deflate.ws.close(1000);
    await deflate.closed;
  });

  it('serves a client that does not offer it on the same node, uncompressed, alongside a compressing one', async () => {
    const jwt = await token({ sub: 'mixed', channels: ['z:*'], publish: ['z:*'] });
    const plain = await open(shared.url, jwt, false);
    const deflate = await open(shared.url, jwt, true);
    expect(plain.extensionsHeader).toBeUndefined();
    expect(plain.ws.extensions).toBe('');
    expect(deflate.extensionsHeader).toMatch(/^permessage-deflate\b/);
    await subscribe(plain, 1, 'z:mixed');
    await subscribe(deflate, 1, 'z:mixed');

    const [p, d] = await publishAndReceive(shared, 'z:mixed', { text: LARGE_TEXT }, [plain, deflate]);
    expect(p!.data).toEqual({ text: LARGE_TEXT });
    expect(d!.data).toEqual({ text: LARGE_TEXT });
    expect(p!.wireBytes).toBeGreaterThan(LARGE_TEXT.length);
    expect(d!.wireBytes).toBeLessThan(4096);

    // A compressed client frame under maxPayloadLength (once inflated) is read and
    // handled: a 10 KB publish over the socket reaches both.
    const text = 'x'.repeat(10_000);
    const fromP = plain.rec.mark();
    const fromD = deflate.rec.mark();
    deflate.ws.send(JSON.stringify({ type: 'publish', id: 2, channel: 'z:mixed', data: { text } }));
    expect(await deflate.rec.waitFor((f) => f.type === 'reply' && f.id === 2, fromD)).toEqual({ type: 'reply', id: 2 });
    expect((await plain.rec.waitFor((f) => f.type === 'message', fromP)).data).toEqual({ text });
    expect((await deflate.rec.waitFor((f) => f.type === 'message', fromD)).data).toEqual({ text });

    for (const c of [plain, deflate]) c.ws.close(1000);
    await Promise.all([plain.closed, deflate.closed]);
  });

  it('closes with 1009 a compressed frame that inflates past maxPayloadLength (16 KiB) but within uWS\'s own limit', async () => {
    const c = await open(shared.url, await token({ sub: 'inflate-40k', channels: ['news'] }), true);
    // ~40 KB of JSON that compresses to a few hundred bytes: the wire frame is small, the message is not.
    c.ws.send(JSON.stringify({ type: 'ping', id: 1, pad: '0'.repeat(40_000) }));
    expect((await within(c.closed, 10_000, 'close after a 40 KB inflated frame')).code).toBe(1009);
  });

  it('cuts a deflate bomb (10 MB of zeros in a few KB) with 1006, keeps its memory flat, and keeps serving other clients', async () => {
    const jwt = await token({ sub: 'bomb', channels: ['news'] });
    const bystander = await open(shared.url, await token({ sub: 'bystander', channels: ['news'] }), true);
    await subscribe(bystander, 1, 'news');
    const pid = shared.proc.pid!;
    const before = memory(pid);
    const closes1006 = await metric(shared.admin, 'pubgate_disconnects_total', { code: '1006' });
    const mark = logMark(shared);

    // Four bombers at once: three 10 MB bombs and one of 60 MB (still under uWS's
    // compressed-frame limit of 80 KiB: deflate shrinks zeros ~1000x). If the
    // node inflated them whole, its peak RSS would grow by well over 50 MB.
    const sizes = [10, 10, 10, 60].map((mb) => mb * 1024 * 1024);
    const bombers = await Promise.all(sizes.map(() => open(shared.url, jwt, true)));
    for (const b of bombers) expect(b.extensionsHeader).toMatch(/^permessage-deflate\b/);
    bombers.forEach((b, i) => b.ws.send('0'.repeat(sizes[i]!)));
    const codes = await within(Promise.all(bombers.map((b) => b.closed)), 20_000, 'every bomber closed');

    // uWS inflates with a cap of its own maxPayloadLength (uwsPayloadLimit: 80 KiB
    // at the default 16 KiB) and, past it, drops the TCP connection without a
    // close frame: the client sees 1006 and the node logs uWS's reason.
    expect(codes.map((c) => c.code)).toEqual([1006, 1006, 1006, 1006]);
    const line = await logAfter(shared, mark, (l) => l.msg === 'connection closed' && l.code === 1006);
    expect(String(line.reason)).toMatch(/too big|inflation/i);
    expect(await metric(shared.admin, 'pubgate_disconnects_total', { code: '1006' })).toBe(closes1006 + 4);

    // Memory: resident set and its high-water mark grew by less than 50 MB.
    const after = memory(pid);
    expect(after.rss - before.rss, `RSS grew ${((after.rss - before.rss) / 1e6).toFixed(1)} MB`).toBeLessThan(50 * 1024 * 1024);
    expect(after.hwm - before.hwm, `peak RSS grew ${((after.hwm - before.hwm) / 1e6).toFixed(1)} MB`).toBeLessThan(50 * 1024 * 1024);

    // Still serving: the bystander receives, and a new client connects.
    const [got] = await publishAndReceive(shared, 'news', { after: 'bomb' }, [bystander]);
    expect(got!.data).toEqual({ after: 'bomb' });
    const fresh = await connect(shared.url, { token: await token({ sub: 'fresh', channels: ['news'] }), perMessageDeflate: true });
    expect(fresh.welcome).toMatchObject({ type: 'welcome', user: 'fresh' });
    expect(shared.proc.exitCode).toBeNull();
    await fresh.close();
    bystander.ws.close(1000);
    await bystander.closed;
  });
});

describe('PUBGATE_COMPRESSION_THRESHOLD', () => {
  // 'a' × n deflates to a few bytes: a frame that went out compressed takes far
  // fewer bytes on the wire than its length, a plain one at least its length.
  const frameLength = (channel: string, data: unknown): number => JSON.stringify({ type: 'message', channel, data }).length;

  it('sends frames shorter than the threshold (default 256) plain, and longer ones compressed', async () => {
    const c = await open(shared.url, await token({ sub: 'threshold', channels: ['z:*'] }), true);
    expect(c.extensionsHeader).toMatch(/^permessage-deflate\b/);
    await subscribe(c, 1, 'z:thr');
    const small = { text: 'a'.repeat(150) };
    expect(frameLength('z:thr', small)).toBeLessThan(256);
    const [s] = await publishAndReceive(shared, 'z:thr', small, [c]);
    expect(s!.data).toEqual(small);
    expect(s!.wireBytes).toBeGreaterThanOrEqual(frameLength('z:thr', small));
    const medium = { text: 'a'.repeat(400) };
    const [m] = await publishAndReceive(shared, 'z:thr', medium, [c]);
    expect(m!.data).toEqual(medium);
    expect(m!.wireBytes).toBeLessThan(100);
    c.ws.close(1000);
    await c.closed;
  });

  it('with threshold 0 compresses every frame, history replays included', async () => {
    const jwt = await token({ sub: 'threshold-0', channels: ['z:*', 'h:*'] });
    const c = await open(everything.url, jwt, true);
    await subscribe(c, 1, 'z:thr0');
    const small = { text: 'a'.repeat(150) };
    const [s] = await publishAndReceive(everything, 'z:thr0', small, [c]);
    expect(s!.data).toEqual(small);
    expect(s!.wireBytes).toBeLessThan(100);

    // Five 5 KB messages in history, then a client recovering them from offset 0.
    let from = c.rec.mark();
    c.ws.send(JSON.stringify({ type: 'subscribe', id: 2, channel: 'h:thr0' }));
    const first = await c.rec.waitFor((f) => f.type === 'reply' && f.id === 2, from);
    expect(first).toMatchObject({ offset: 0, epoch: expect.any(String) });
    const text = 'b'.repeat(5000);
    for (let i = 1; i <= 5; i++) expect((await publish(everything, { channel: 'h:thr0', data: { i, text } })).status).toBe(200);
    const r = await open(everything.url, jwt, true);
    const bytes0 = r.socket.bytesRead;
    from = r.rec.mark();
    r.ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel: 'h:thr0', since: { offset: 0, epoch: first.epoch } }));
    expect(await r.rec.waitFor((f) => f.type === 'reply' && f.id === 1, from)).toEqual({ type: 'reply', id: 1, recovered: true, offset: 5, epoch: first.epoch });
    const replayed = r.rec.since(from).filter((f) => f.type === 'message');
    expect(replayed.map((f) => (f.data as { i: number }).i)).toEqual([1, 2, 3, 4, 5]);
    expect(replayed.every((f) => (f.data as { text: string }).text === text)).toBe(true);
    // 25 KB of frames, compressed on the wire (the reply is a few dozen bytes).
    expect(r.socket.bytesRead - bytes0).toBeLessThan(2000);
    for (const x of [c, r]) x.ws.close(1000);
    await Promise.all([c.closed, r.closed]);
  });
});

describe('PUBGATE_COMPRESSION=off', () => {
  it('does not negotiate permessage-deflate with a client that offers it, and sends uncompressed', async () => {
    const c = await open(off.url, await token({ sub: 'no-deflate', channels: ['news'] }), true);
    expect(c.extensionsHeader).toBeUndefined();
    expect(c.ws.extensions).toBe('');
    await subscribe(c, 1, 'news');
    const [got] = await publishAndReceive(off, 'news', { text: LARGE_TEXT }, [c]);
    expect(got!.data).toEqual({ text: LARGE_TEXT });
    expect(got!.wireBytes).toBeGreaterThan(LARGE_TEXT.length);
    c.ws.close(1000);
    await c.closed;
  });
});
