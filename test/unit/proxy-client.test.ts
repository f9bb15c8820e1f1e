/**
 * The proxies' HTTP client against a real local backend: the bearer key, the
 * per-call timeout, the node-wide concurrency bound (answered at once beyond
 * it), the bounded answer body, connection errors, aborts, keep-alive and no
 * caching, connections never reused after a call cut short, shutdown, and
 * what it counts and logs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Log } from '../../src/observability/logger.js';
import { createMetrics, type Metrics, type ProxyResult } from '../../src/observability/metrics.js';
import { readSubscribeAnswer } from '../../src/proxy/answers.js';
import { createProxyClient, type ProxyClient } from '../../src/proxy/proxy-client.js';
import { freePort } from '../helpers/ports.js';
import { startBackend, type Backend } from '../helpers/proxy-backend.js';

const KEY = 'proxy-key-0123456789';
const BODY = JSON.stringify({ user: '42', conn: 'c1', channel: 'room:1' });

/** A Metrics that records proxy calls, over the real one for everything else. */
function recordingMetrics(): { metrics: Metrics; results: ProxyResult[]; seconds: Array<number | undefined>; inFlight: () => number } {
  const base = createMetrics('unit');
  const results: ProxyResult[] = [];
  const seconds: Array<number | undefined> = [];
  let inFlight = 0;
  return {
    metrics: {
      ...base,
      proxyRequest: (_p, r, s) => {
        results.push(r);
        seconds.push(s);
      },
      proxyInFlight: (_p, d) => {
        inFlight += d;
      },
    },
    results,
    seconds,
    inFlight: () => inFlight,
  };
}

/** A Log that keeps its lines. */
function recordingLog(): { log: Log; lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const log: Log = {
    fatal: (obj, msg) => lines.push({ level: 'fatal', obj: obj as Record<string, unknown>, msg }),
    error: (obj, msg) => lines.push({ level: 'error', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    info: (obj, msg) => lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    debug: (obj, msg) => lines.push({ level: 'debug', obj: obj as Record<string, unknown>, msg }),
    child: () => log,
    isLevelEnabled: () => true,
  };
  return { log, lines };
}

describe('the proxy client', () => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await startBackend();
  });
  afterAll(async () => {
    await backend.close();
  });

  function client(o: { timeoutMs?: number; concurrency?: number; key?: string } = {}): ReturnType<typeof recordingMetrics> & ReturnType<typeof recordingLog> & { c: ProxyClient } {
    const m = recordingMetrics();
    const l = recordingLog();
    const c = createProxyClient({ key: o.key, timeoutMs: o.timeoutMs ?? 5000, concurrency: o.concurrency ?? 8, metrics: m.metrics, log: l.log, logIntervalMs: 60_000 });
    return { ...m, ...l, c };
  }

  it('posts the JSON body with the bearer key and reads the decision', async () => {
    backend.on('/allow', { json: { allow: true, info: { seat: 1 } } });
    const { c, results, seconds } = client({ key: KEY });
    expect(await c.call('subscribe', `${backend.url}/allow`, BODY, readSubscribeAnswer)).toEqual({ result: 'allow', value: { info: '{"seat":1}' } });
    const call = backend.calls.at(-1)!;
    expect(call.body).toEqual(JSON.parse(BODY));
    expect(call.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(call.headers['content-type']).toBe('application/json');
    expect(results).toEqual(['allow']);
    expect(seconds[0]).toBeGreaterThan(0);
  });

  it('sends no Authorization header without a key', async () => {
    backend.on('/nokey', { json: { allow: false } });
    const { c } = client();
    expect((await c.call('subscribe', `${backend.url}/nokey`, BODY, readSubscribeAnswer)).result).toBe('deny');
    expect(backend.calls.at(-1)!.headers.authorization).toBeUndefined();
  });

  it('asks the backend every time (nothing cached), over kept-alive connections', async () => {
    backend.on('/again', { json: { allow: true } });
    const { c } = client();
    const before = backend.calls.length;
    for (let i = 0; i < 6; i++) expect((await c.call('subscribe', `${backend.url}/again`, BODY, readSubscribeAnswer)).result).toBe('allow');
    const mine = backend.calls.slice(before);
    expect(mine).toHaveLength(6);
    // One call at a time: the connection is back in the pool before the next call.
    expect(new Set(mine.map((x) => x.connection)).size).toBe(1);
  });

  it('gives up after the timeout, and the backend sees the caller go away', async () => {
    backend.on('/slow', 'hold');
    const { c, results, lines } = client({ timeoutMs: 200 });
    const o = await c.call('subscribe', `${backend.url}/slow`, BODY, readSubscribeAnswer);
    expect(o).toEqual({ result: 'timeout', why: 'no answer within 200 ms' });
    expect(results).toEqual(['timeout']);
    await backend.calls.at(-1)!.gone;
    c.flush();
    expect(lines).toEqual([expect.objectContaining({ level: 'warn', msg: 'proxy calls failed', obj: expect.objectContaining({ counts: { 'subscribe:timeout': 1 } }) })]);
  });

  it('times out a body that trickles in past the deadline', async () => {
    backend.on('/trickle', { partial: '{"allow":' });
    const { c } = client({ timeoutMs: 200 });
    expect((await c.call('subscribe', `${backend.url}/trickle`, BODY, readSubscribeAnswer)).result).toBe('timeout');
    await backend.calls.at(-1)!.gone;
  });

  it('answers overloaded at once, without a request, beyond the concurrency bound, and frees the slots afterwards', async () => {
    backend.on('/held', 'hold');
    const { c, results, seconds, inFlight } = client({ concurrency: 3 });
    const before = backend.calls.length;
    const held = [1, 2, 3].map(() => c.call('subscribe', `${backend.url}/held`, BODY, readSubscribeAnswer));
    await backend.waitForCalls(before + 3);
    expect(c.inFlight()).toBe(3);
    expect(inFlight()).toBe(3);
    const over = await Promise.all([1, 2].map(() => c.call('subscribe', `${backend.url}/held`, BODY, readSubscribeAnswer)));
    expect(over.map((o) => o.result)).toEqual(['overloaded', 'overloaded']);
    expect(backend.calls.length).toBe(before + 3);
    expect(backend.release({ json: { allow: true } })).toBe(3);
    expect((await Promise.all(held)).map((o) => o.result)).toEqual(['allow', 'allow', 'allow']);
    expect(c.inFlight()).toBe(0);
    expect(inFlight()).toBe(0);
    expect(results.filter((r) => r === 'overloaded')).toHaveLength(2);
    // An overloaded call made no request: it has no duration.
    expect(seconds.filter((s, i) => results[i] === 'overloaded')).toEqual([undefined, undefined]);
    backend.on('/held', { json: { allow: true } });
    expect((await c.call('subscribe', `${backend.url}/held`, BODY, readSubscribeAnswer)).result).toBe('allow');
  });

  it('stops reading an answer over 64 KiB: declared, or chunked without a length', async () => {
    backend.on('/big', { body: Buffer.alloc(10 * 1024 * 1024, 'x') });
    backend.on('/stream', { streamBytes: 10 * 1024 * 1024 });
    const { c, results } = client();
    expect(await c.call('subscribe', `${backend.url}/big`, BODY, readSubscribeAnswer)).toEqual({ result: 'bad_response', why: 'answer body over 65536 bytes' });
    expect((await c.call('subscribe', `${backend.url}/stream`, BODY, readSubscribeAnswer)).result).toBe('bad_response');
    expect(results).toEqual(['bad_response', 'bad_response']);
  });

  it('reads a 64 KiB answer whole', async () => {
    const json = JSON.stringify({ allow: true, pad: 'p'.repeat(64 * 1024 - 23) });
    expect(Buffer.byteLength(json)).toBe(64 * 1024);
    backend.on('/edge', { body: json });
    const { c } = client();
    expect((await c.call('subscribe', `${backend.url}/edge`, BODY, readSubscribeAnswer)).result).toBe('allow');
  });

  it('reports a refused connection as error, with the reason in the log line and not the key', async () => {
    const { c, results, lines } = client({ key: KEY });
    const o = await c.call('subscribe', `http://127.0.0.1:${await freePort()}/x`, BODY, readSubscribeAnswer);
    expect(o.result).toBe('error');
    expect(results).toEqual(['error']);
    c.flush();
    expect(lines).toHaveLength(1);
    expect(lines[0]!.obj).toMatchObject({ counts: { 'subscribe:error': 1 }, err: expect.stringMatching(/ECONNREFUSED/) });
    expect(JSON.stringify(lines)).not.toContain(KEY);
  });

  it('does not follow a redirect: it is an unexpected status', async () => {
    backend.on('/moved', { status: 307, body: '', contentType: 'text/plain' });
    const { c } = client({ key: KEY });
    const before = backend.calls.length;
    expect(await c.call('subscribe', `${backend.url}/moved`, BODY, readSubscribeAnswer)).toEqual({ result: 'bad_status', why: 'status 307' });
    expect(backend.calls.length).toBe(before + 1);
  });

  it('ends an aborted call as aborted, uncounted as a failure, and the backend sees it go', async () => {
    backend.on('/abort', 'hold');
    const { c, results, lines } = client();
    const ctl = new AbortController();
    const before = backend.calls.length;
    const p = c.call('connect', `${backend.url}/abort`, BODY, readSubscribeAnswer, ctl.signal);
    await backend.waitForCalls(before + 1);
    ctl.abort();
    expect(await p).toEqual({ result: 'aborted' });
    await backend.calls.at(-1)!.gone;
    expect(results).toEqual(['aborted']);
    expect(await c.call('connect', `${backend.url}/abort`, BODY, readSubscribeAnswer, ctl.signal)).toEqual({ result: 'aborted' });
    expect(backend.calls.length).toBe(before + 1);
    c.flush();
    expect(lines).toEqual([]);
  });

  it('logs failures aggregated: one line per interval with the counts per proxy and result', async () => {
    backend.on('/500', { status: 500, json: { error: 'boom' } });
    const { c, lines } = client();
    for (let i = 0; i < 5; i++) await c.call('subscribe', `${backend.url}/500`, BODY, readSubscribeAnswer);
    await c.call('connect', `${backend.url}/500`, BODY, readSubscribeAnswer);
    expect(lines).toEqual([]);
    c.flush();
    expect(lines).toHaveLength(1);
    expect(lines[0]!.obj).toMatchObject({ counts: { 'subscribe:bad_status': 5, 'connect:bad_status': 1 }, err: 'status 500' });
  });

  it('destroys the connection of a call timed out mid-body: the next call gets its own answer on a new connection', async () => {
    backend.on('/warm', { json: { allow: true, info: { n: 1 } } });
    backend.on('/half', { partial: '{"allow":true,"info":{"n":' });
    backend.on('/next', { json: { allow: true, info: { n: 2 } } });
    const { c } = client({ timeoutMs: 200 });
    expect((await c.call('subscribe', `${backend.url}/warm`, BODY, readSubscribeAnswer)).result).toBe('allow');
    const warm = backend.calls.at(-1)!;
    expect((await c.call('subscribe', `${backend.url}/half`, BODY, readSubscribeAnswer)).result).toBe('timeout');
    const half = backend.calls.at(-1)!;
    // The timed-out call went over the kept-alive connection of the first one.
    expect(half.connection).toBe(warm.connection);
    await half.gone;
    expect(await c.call('subscribe', `${backend.url}/next`, BODY, readSubscribeAnswer)).toEqual({ result: 'allow', value: { info: '{"n":2}' } });
    expect(backend.calls.at(-1)!.connection).not.toBe(half.connection);
  });

  it('destroys the connection of an aborted call: its answer, sent late, reaches no other call', async () => {
    backend.on('/warm2', { json: { allow: true, info: { n: 1 } } });
    backend.on('/held2', 'hold');
    backend.on('/next2', { json: { allow: true, info: { n: 3 } } });
    const { c } = client();
    expect((await c.call('connect', `${backend.url}/warm2`, BODY, readSubscribeAnswer)).result).toBe('allow');
    const warm = backend.calls.at(-1)!;
    const ctl = new AbortController();
    const before = backend.calls.length;
    const p = c.call('connect', `${backend.url}/held2`, BODY, readSubscribeAnswer, ctl.signal);
    await backend.waitForCalls(before + 1);
    const held = backend.calls.at(-1)!;
    expect(held.connection).toBe(warm.connection);
    ctl.abort();
    expect(await p).toEqual({ result: 'aborted' });
    await held.gone;
    backend.release({ json: { allow: true, info: { n: 'stale' } } });
    expect(await c.call('connect', `${backend.url}/next2`, BODY, readSubscribeAnswer)).toEqual({ result: 'allow', value: { info: '{"n":3}' } });
    expect(backend.calls.at(-1)!.connection).not.toBe(held.connection);
  });

  it('destroys the connection of an answer over the limit: the next call gets its own answer on a new connection', async () => {
    backend.on('/warm3', { json: { allow: true } });
    backend.on('/big3', { body: Buffer.alloc(1024 * 1024, 'x') });
    backend.on('/stream3', { streamBytes: 1024 * 1024 });
    backend.on('/next3', { json: { allow: true, info: { n: 4 } } });
    const { c } = client();
    for (const path of ['/big3', '/stream3']) {
      expect((await c.call('subscribe', `${backend.url}/warm3`, BODY, readSubscribeAnswer)).result).toBe('allow');
      const warm = backend.calls.at(-1)!;
      expect((await c.call('subscribe', `${backend.url}${path}`, BODY, readSubscribeAnswer)).result).toBe('bad_response');
      const big = backend.calls.at(-1)!;
      expect(big.connection).toBe(warm.connection);
      expect(await c.call('subscribe', `${backend.url}/next3`, BODY, readSubscribeAnswer)).toEqual({ result: 'allow', value: { info: '{"n":4}' } });
      expect(backend.calls.at(-1)!.connection).not.toBe(big.connection);
    }
  });

  it('on close, ends a call in flight as error, makes no request afterwards, and writes each failure at once', async () => {
    backend.on('/closing', 'hold');
    const { c, results, lines } = client();
    const before = backend.calls.length;
    const p = c.call('subscribe', `${backend.url}/closing`, BODY, readSubscribeAnswer);
    await backend.waitForCalls(before + 1);
    c.close();
    expect((await p).result).toBe('error');
    await backend.calls.at(-1)!.gone;
    expect(await c.call('subscribe', `${backend.url}/closing`, BODY, readSubscribeAnswer)).toEqual({ result: 'error', why: 'the node is shutting down' });
    expect(backend.calls.length).toBe(before + 1);
    expect(results).toEqual(['error', 'error']);
    expect(c.inFlight()).toBe(0);
    // After close, each failure is written at once: no later flush will come.
    expect(lines.map((l) => l.obj.counts)).toEqual([{ 'subscribe:error': 1 }, { 'subscribe:error': 1 }]);
  });

  it('reports a malformed URL as error without a request', async () => {
    const { c, results } = client();
    expect((await c.call('subscribe', 'ftp://127.0.0.1/x', BODY, readSubscribeAnswer)).result).toBe('error');
    expect((await c.call('subscribe', `http://user:pw@127.0.0.1:1/x`, BODY, readSubscribeAnswer)).result).toBe('error');
    expect(results).toEqual(['error', 'error']);
  });
});
