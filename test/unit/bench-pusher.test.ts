/**
 * The pusher scenarios' pieces (loadtest/bench/lib/pusher-client.mjs,
 * pusher.mjs), so that the benchmark cannot rot unnoticed: the client counts
 * app events from their first bytes in the frames pubgate encodes (its own
 * encoders) and Soketi sends (JSON.stringify of {event, channel, data}),
 * parses the control frames, answers pings; its signed HTTP API requests pass
 * pubgate's own signature check; the summary decides the issue's targets.
 * A scripted TCP server plays the Pusher server, splitting its frames at
 * awkward places. Soketi itself is not run here.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { encodeConnectionEstablished, encodeEvent, encodePing, encodeSubscriptionSucceeded } from '../../src/protocol/pusher/frames.js';
import { verifySignedRequest } from '../../src/pusher/signing.js';
import type { ScriptedServer } from '../helpers/bench-wire.js';
import { benchLib, closeScriptedServers, scriptedServer, serverFrame as frame, until, writeInPieces } from '../helpers/bench-wire.js';

interface Parsed {
  kind: string;
  socketId?: string;
  channel?: string;
  name?: string;
  code?: number;
  status?: number;
}
interface Conn {
  socketId: string | undefined;
  subscribe(channel: string, timeoutMs?: number): Promise<void>;
}
interface Pool {
  messages: number;
  pings: number;
  errors: Record<string, number>;
  open(timeoutMs?: number): Promise<Conn>;
  closeAll(): void;
}
interface ClientModule {
  CLASSIFY_BYTES: number;
  isAppEventLead(buf: Buffer, from: number, to: number): boolean;
  parsePusherFrame(text: string): Parsed;
  signedPath(app: { key: string; secret: string }, method: string, path: string, body: string, nowSec?: number): string;
  PusherPool: new (o: { host: string; port: number; key: string }) => Pool;
}
interface Run {
  run: number;
  target: string;
  r: { ok: boolean; perSec?: number; usPerDelivery?: number; kbPerConn?: number; connectsPerSec?: number; usPerConnect?: number };
}
interface PusherModule {
  pusherEventBody(channel: string, dataJson: string): string;
  pusherSummary(p: { publish: boolean }, runs: Run[]): { targets: { what: string; ratio: number; met: boolean | undefined }[] };
  soketiMissing(dir: string): string | undefined;
}

const client = (await import(benchLib('pusher-client.mjs'))) as ClientModule;
const bench = (await import(benchLib('pusher.mjs'))) as PusherModule;

afterEach(closeScriptedServers);

/**
 * A one-connection Pusher server: answers the upgrade with connection_established in the same write, the
 * subscribe with subscription_succeeded, then sends `after` in 5-byte pieces; records what the client sent.
 */
function pusherServer(after: Buffer): Promise<ScriptedServer> {
  let subscribed = false;
  return scriptedServer({
    first: frame(encodeConnectionEstablished('1.7', 120)),
    onData(sock) {
      if (subscribed) return;
      subscribed = true;
      sock.write(frame(encodeSubscriptionSucceeded('bench')));
      writeInPieces(sock, after, 5);
    },
  });
}

const lead = (text: string): boolean => {
  const b = Buffer.from(text);
  return client.isAppEventLead(b, 0, Math.min(b.length, client.CLASSIFY_BYTES));
};

describe('bench pusher client: frames', () => {
  it('tells app events from control frames by their first bytes, as pubgate and Soketi encode them', () => {
    const data = '{"t":12.5,"p":"xx"}';
    expect(lead(encodeEvent('bench', 'bench', data))).toBe(true);
    expect(lead(JSON.stringify({ event: 'bench', channel: 'bench', data }))).toBe(true);
    expect(lead(encodeConnectionEstablished('1.2', 30))).toBe(false);
    expect(lead(encodeSubscriptionSucceeded('bench'))).toBe(false);
    expect(lead(encodePing())).toBe(false);
    // Led by another key: not counted from the lead, left to the parser.
    expect(lead(JSON.stringify({ channel: 'bench', event: 'bench', data }))).toBe(false);
  });

  it('parses control frames and counts an event whatever the order of its keys', () => {
    expect(client.parsePusherFrame(encodeConnectionEstablished('3.4', 120))).toMatchObject({ kind: 'established', socketId: '3.4' });
    expect(client.parsePusherFrame(encodeSubscriptionSucceeded('bench'))).toMatchObject({ kind: 'subscribed', channel: 'bench' });
    expect(client.parsePusherFrame(encodePing())).toMatchObject({ kind: 'ping' });
    expect(client.parsePusherFrame('{"event":"pusher:error","data":{"code":4001,"message":"x"}}')).toMatchObject({ kind: 'error', code: 4001 });
    expect(client.parsePusherFrame('{"event":"pusher:subscription_error","channel":"c","data":{"type":"AuthError","status":401}}'))
      .toMatchObject({ kind: 'subError', channel: 'c', status: 401 });
    expect(client.parsePusherFrame('{"channel":"bench","event":"bench","data":"{}"}')).toMatchObject({ kind: 'event', name: 'bench' });
    expect(client.parsePusherFrame('{"event":"pusher:pong","data":"{}"}').kind).toBe('other');
    expect(client.parsePusherFrame('not json').kind).toBe('bad');
  });
});

describe('bench pusher client: HTTP API signing', () => {
  it('signs requests that pubgate\'s signature check accepts, and a changed body fails it', () => {
    const app = { key: 'bench-key', secret: 'bench-secret-0123456789abcdef' };
    const body = bench.pusherEventBody('bench', '{"t":1,"p":"x"}');
    expect(JSON.parse(body)).toEqual({ name: 'bench', channels: ['bench'], data: '{"t":1,"p":"x"}' });
    const now = 1_800_000_000;
    const full = client.signedPath(app, 'POST', '/apps/bench-app/events', body, now);
    const [path, query] = full.split('?') as [string, string];
    expect(path).toBe('/apps/bench-app/events');
    expect(verifySignedRequest({ method: 'POST', path, query, body }, app, now)).toMatchObject({ ok: true });
    expect(verifySignedRequest({ method: 'POST', path, query, body: body.replace('bench', 'other') }, app, now)).toMatchObject({ ok: false, reason: 'body_md5' });
    expect(verifySignedRequest({ method: 'POST', path, query, body }, { ...app, secret: 'another' }, now)).toMatchObject({ ok: false, reason: 'bad_signature' });
  });
});

describe('bench pusher client: a connection', () => {
  it('connects to /app/{key}, subscribes, counts events split across reads, answers pings and ignores control frames', async () => {
    const data = '{"t":1,"p":"' + 'x'.repeat(150) + '"}'; // 16-bit lengths
    const after = Buffer.concat([
      frame(encodeEvent('bench', 'bench', data)),
      frame(encodePing()),
      frame(encodeEvent('bench', 'bench', '{"t":2}')),
      frame('{"event":"pusher:pong","data":"{}"}'),
      frame(JSON.stringify({ channel: 'bench', event: 'bench', data: '{}' })),
      frame(Buffer.from('ab'), 9), // a WebSocket ping
      frame(encodeEvent('bench', 'bench', data)),
    ]);
    const { port, request, sent } = await pusherServer(after);
    const pool = new client.PusherPool({ host: '127.0.0.1', port, key: 'bench-key' });
    try {
      const c = await pool.open();
      expect(await request).toMatch(/^GET \/app\/bench-key\?protocol=7&/);
      expect(c.socketId).toBe('1.7');
      await c.subscribe('bench');
      await until(() => pool.messages === 4 && sent().length === 3, '4 events and 3 client frames');
      const frames = sent();
      expect(JSON.parse(frames[0]!.text)).toEqual({ event: 'pusher:subscribe', data: { channel: 'bench' } });
      expect(frames[1]).toEqual({ op: 1, text: '{"event":"pusher:pong","data":{}}' });
      expect(frames[2]).toEqual({ op: 10, text: 'ab' });
      expect(pool.pings).toBe(1);
      expect(pool.errors).toEqual({});
    } finally {
      pool.closeAll();
    }
  });
});

describe('bench pusher scenario: summary', () => {
  const run = (n: number, target: string, perSec: number, us: number, kb: number): Run => ({
    run: n, target, r: { ok: true, perSec, usPerDelivery: us, kbPerConn: kb, connectsPerSec: 1000, usPerConnect: 100 },
  });

  it('checks the issue\'s targets on the ratios of medians, and leaves a non-positive memory figure undecided', () => {
    const met = bench.pusherSummary({ publish: true }, [
      run(1, 'pusher', 600, 1, 1), run(1, 'soketi', 100, 5, 6),
      run(2, 'pusher', 500, 1, 1), run(2, 'soketi', 100, 4, 5),
    ]).targets;
    expect(met.map((t) => [t.ratio, t.met])).toEqual([[5.5, true], [0.2222222222222222, true], [0.18181818181818182, true]]);
    const missed = bench.pusherSummary({ publish: true }, [run(1, 'pusher', 400, 2, 2), run(1, 'soketi', 100, 4, 5)]).targets;
    expect(missed.map((t) => t.met)).toEqual([false, false, false]);
    const noise = bench.pusherSummary({ publish: false }, [run(1, 'pusher', 0, 0, 0.5), run(1, 'soketi', 0, 0, -0.2)]).targets;
    expect(noise).toHaveLength(1);
    expect(noise[0]!.met).toBeUndefined();
  });

  it('names what is missing when Soketi is not installed', () => {
    expect(bench.soketiMissing('/nonexistent/soketi-bench')).toMatch(/no Soketi at \/nonexistent\/soketi-bench/);
  });
});
