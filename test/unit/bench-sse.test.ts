/**
 * The sse-fanout benchmark's pieces that can rot without anyone running it:
 * the client processes' event-stream parser (loadtest/bench/lib/sse-client.mjs)
 * against a stream split at every awkward place, its SsePool against a
 * scripted server (Authorization, welcome, message counting, close event),
 * the scenario's figures (loadtest/bench/lib/sse.mjs), which the runner
 * lists as a scenario, and one tiny run of it against the built node.
 */
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/gateway.js';

interface Parser {
  messages: number;
  events: number;
  feed(text: string): void;
}
interface Stream {
  req: unknown;
}
interface Pool {
  messages: number;
  streams: Set<Stream>;
  closeEvents: Record<string, number>;
  endedOpen: number;
  open(token: string, channels: string[], timeoutMs?: number): Promise<Stream>;
  closeAll(): void;
}
interface SseClientModule {
  EventStreamParser: new (onEvent?: (name: string, data: string | undefined) => void, maxLine?: number) => Parser;
  SsePool: new (o: { host: string; port: number }) => Pool;
}
interface Range { median: number; min: number; max: number; n: number }
interface Block { run: number; round: number; kind: string; wallMs: number; nodeNs: number; deliveries: number }
interface Mem { gc: boolean; rssKbPerConn: number; heapKbPerConn: number }
interface SseModule {
  SSE_SCENARIOS: string[];
  runSseFanout(sc: Record<string, number>, leg: { first: string }, ctx: Record<string, unknown>): Promise<{
    ok: boolean; blocks: (Block & { sse: number; ws: number })[]; order: string[]; mem: { sse: Mem; ws: Mem };
  }>;
  deliveriesOf(kind: string, s: number): { sse: number; ws: number };
  sseFigures(blocks: Block[], mems?: unknown[]): {
    byKind: Record<string, { perSec: Range; nodeUs: Range; blocks: number; deliveries: number }>;
    ratio: Range;
    memory: Record<string, { rssKb: Range; heapKb: Range; gc: boolean }>;
  };
}

const lib = (file: string): string => pathToFileURL(`${ROOT}loadtest/bench/lib/${file}`).href;
const { EventStreamParser, SsePool } = (await import(lib('sse-client.mjs'))) as SseClientModule;
const sse = (await import(lib('sse.mjs'))) as SseModule;

/** What pubgate writes (docs/protocol.md, "Server-Sent Events"): welcome, messages with ids, a ping, join, close. */
const STREAM = [
  'event: welcome\nid: 0badf00d.e1:4\ndata: {"node":"n","conn":"c","user":"u","expiresIn":null,"ping":25}\n\n',
  'event: message\nid: 0badf00d.e1:5\ndata: {"channel":"a","offset":5,"epoch":"e1","data":{"x":"event: message"}}\n\n',
  ': ping\n\n',
  'event: message\ndata: {\ndata: "channel":"b","data":1}\n\n',
  'event: join\ndata: {"channel":"b","user":"v"}\n\n',
  'event: message\r\ndata: {"channel":"b","data":2}\r\n\r\n',
  'event: close\ndata: {"code":4501,"reason":"disconnected"}\n\n',
].join('');

function parse(chunks: string[]): { p: Parser; seen: [string, string | undefined][] } {
  const seen: [string, string | undefined][] = [];
  const p = new EventStreamParser((name, data) => seen.push([name, data]));
  for (const c of chunks) p.feed(c);
  return { p, seen };
}

const servers: http.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

describe('bench sse-client: the event-stream parser', () => {
  it('counts message events and reports the others with their first data line, whole or split at every character', () => {
    const expected: [string, string | undefined][] = [
      ['welcome', '{"node":"n","conn":"c","user":"u","expiresIn":null,"ping":25}'],
      ['join', '{"channel":"b","user":"v"}'],
      ['close', '{"code":4501,"reason":"disconnected"}'],
    ];
    const whole = parse([STREAM]);
    expect(whole.p.messages).toBe(3);
    expect(whole.p.events).toBe(6);
    expect(whole.seen).toEqual(expected);
    for (let cut = 1; cut < STREAM.length; cut++) {
      const two = parse([STREAM.slice(0, cut), STREAM.slice(cut)]);
      expect([two.p.messages, two.seen], `cut at ${cut}`).toEqual([3, expected]);
    }
    const bytes = parse([...STREAM]);
    expect([bytes.p.messages, bytes.seen]).toEqual([3, expected]);
  });

  it('refuses a line longer than its bound instead of growing without limit', () => {
    const p = new EventStreamParser(undefined, 64);
    expect(() => p.feed(`data: ${'x'.repeat(100)}`)).toThrow(/over 64/);
  });
});

describe('bench sse-client: SsePool', () => {
  it('opens a stream with the token in Authorization, resolves on the welcome and counts messages and the close event', async () => {
    let seenUrl = '';
    let seenAuth = '';
    const srv = http.createServer((req, res) => {
      seenUrl = req.url ?? '';
      seenAuth = req.headers.authorization ?? '';
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // The welcome and the first message in pieces, then the rest at once.
      res.write(STREAM.slice(0, 10));
      setTimeout(() => res.end(STREAM.slice(10)), 20);
    });
    servers.push(srv);
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const pool = new SsePool({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port });
    await pool.open('tok', ['bench:sse', 'bench:both']);
    expect(seenUrl).toBe('/sse?channel=bench%3Asse&channel=bench%3Aboth');
    expect(seenAuth).toBe('Bearer tok');
    const deadline = Date.now() + 10_000;
    while (pool.endedOpen === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(pool.messages).toBe(3);
    expect(pool.closeEvents).toEqual({ 4501: 1 });
    expect(pool.endedOpen).toBe(1);
    expect(pool.streams.size).toBe(0);
  });

  it('rejects a stream answered with another status', async () => {
    const srv = http.createServer((_req, res) => {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"forbidden"}}');
    });
    servers.push(srv);
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const pool = new SsePool({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port });
    await expect(pool.open('tok', ['x'])).rejects.toThrow('status 403');
    expect(pool.streams.size).toBe(0);
  });
});

describe('bench sse-fanout: figures', () => {
  it('counts deliveries per transport for each block kind', () => {
    expect(sse.deliveriesOf('sse', 2000)).toEqual({ sse: 2000, ws: 0 });
    expect(sse.deliveriesOf('ws', 2000)).toEqual({ sse: 0, ws: 2000 });
    expect(sse.deliveriesOf('both', 2000)).toEqual({ sse: 2000, ws: 2000 });
  });

  it('gives µs per delivery per kind, the SSE ÷ WS ratio of the same run and round, and memory per connection', () => {
    const blocks: Block[] = [
      { run: 1, round: 1, kind: 'sse', wallMs: 1000, nodeNs: 4e6, deliveries: 2000 },
      { run: 1, round: 1, kind: 'ws', wallMs: 500, nodeNs: 2e6, deliveries: 2000 },
      { run: 1, round: 1, kind: 'both', wallMs: 1000, nodeNs: 6e6, deliveries: 4000 },
      { run: 1, round: 2, kind: 'sse', wallMs: 1000, nodeNs: 9e6, deliveries: 3000 },
      { run: 1, round: 2, kind: 'ws', wallMs: 1000, nodeNs: 3e6, deliveries: 3000 },
    ];
    const mem = (sseKb: number, wsKb: number): unknown => ({
      sse: { gc: true, rssKbPerConn: sseKb, heapKbPerConn: 1, externalKbPerConn: 0 },
      ws: { gc: true, rssKbPerConn: wsKb, heapKbPerConn: 0.5, externalKbPerConn: 0 },
    });
    const f = sse.sseFigures(blocks, [mem(2, 1), mem(4, 1)]);
    expect(f.byKind.sse!.nodeUs).toEqual({ median: 2.5, min: 2, max: 3, n: 2 });
    expect(f.byKind.ws!.nodeUs.median).toBe(1);
    expect(f.byKind.both!.nodeUs.median).toBe(1.5);
    expect(f.byKind.ws!.perSec.min).toBe(3000);
    expect(f.ratio).toEqual({ median: 2.5, min: 2, max: 3, n: 2 });
    expect(f.memory.sse!.rssKb.median).toBe(3);
    expect(f.memory.ws!.heapKb.median).toBe(0.5);
    expect(f.memory.sse!.gc).toBe(true);
  });

  it('is a scenario the runner knows', () => {
    expect(sse.SSE_SCENARIOS).toEqual(['sse-fanout']);
    const r = spawnSync(process.execPath, [`${ROOT}loadtest/bench/run.mjs`, '--help'], { encoding: 'utf8', env: { ...process.env, BENCH_PINNED: '1' } });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('sse-fanout');
  });
});

describe('bench sse-fanout: a tiny run', () => {
  it('delivers every block exactly to its transport and reads memory after a GC, in the leg\'s order', async () => {
    const r = await sse.runSseFanout({ subscribers: 6, reps: 3, rounds: 1, concurrency: 2, size: 100, settleSec: 0, workers: 2 }, { first: 'ws' }, { tokenIn: 'header' });
    expect(r.ok).toBe(true);
    expect(r.order).toEqual(['ws', 'sse']);
    // The measured round: one block of each kind; 3 messages to 6 clients of each transport it names.
    expect(r.blocks.map((b) => [b.kind, b.sse, b.ws]).sort()).toEqual([['both', 18, 18], ['sse', 18, 0], ['ws', 0, 18]]);
    expect(r.mem.sse.gc && r.mem.ws.gc).toBe(true);
    expect(Number.isFinite(r.mem.sse.heapKbPerConn) && Number.isFinite(r.mem.ws.rssKbPerConn)).toBe(true);
  }, 60_000);
});
