/**
 * The publish API route's in-flight count (transport/api-route.ts) against a
 * fake uWS response: every request that passed the preflight is released
 * exactly once, whatever ends it (answer, handler error, 413, 408, the client
 * going away before or after its body), also when uWS reports more events
 * after the end (an abort after the 408, data after an abort).
 * test/integration/api-body.test.ts checks the same on real sockets.
 */
import { describe, expect, it } from 'vitest';
import type { ApiResponse, PublishApi } from '../../src/api/publish-api.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { silentLogger } from '../../src/observability/logger.js';
import { createApiRoute, type ApiRoute } from '../../src/transport/api-route.js';
import type { HttpRequest, HttpResponse } from '../../src/transport/uws.js';

/** A uWS response as the route uses it; `ended` resolves with the status line and body written. */
class FakeResponse {
  onAbortedCb: (() => void) | undefined;
  onDataCb: ((ab: ArrayBuffer, isLast: boolean) => void) | undefined;
  status = '';
  readonly ended: Promise<{ status: string; body: string; close: boolean }>;
  private resolveEnded!: (v: { status: string; body: string; close: boolean }) => void;
  constructor() {
    this.ended = new Promise((r) => (this.resolveEnded = r));
  }
  onAborted(cb: () => void): this {
    this.onAbortedCb = cb;
    return this;
  }
  onData(cb: (ab: ArrayBuffer, isLast: boolean) => void): this {
    this.onDataCb = cb;
    return this;
  }
  cork(f: () => void): this {
    f();
    return this;
  }
  writeStatus(s: string): this {
    this.status = s;
    return this;
  }
  writeHeader(): this {
    return this;
  }
  end(body: string, close: boolean): this {
    this.resolveEnded({ status: this.status, body, close });
    return this;
  }
  data(text: string, isLast: boolean): void {
    const b = Buffer.from(text);
    this.onDataCb?.(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer, isLast);
  }
  abort(): void {
    this.onAbortedCb?.();
  }
}

const request = (): HttpRequest =>
  ({
    getMethod: () => 'post',
    getUrl: () => '/v1/publish',
    getQuery: () => undefined,
    getHeader: () => '',
    forEach: () => undefined,
  }) as unknown as HttpRequest;

interface Setup {
  route: ApiRoute;
  /** Resolves at the next apiAborted count, with its phase. */
  nextAbort: () => Promise<string>;
  /** Every value the in-flight count took (must never go below 0). */
  seen: number[];
}

function setup(handle: (body: string) => Promise<ApiResponse>, bodyTimeoutMs = 10_000): Setup {
  const aborts: ((phase: string) => void)[] = [];
  const base = createMetrics('unit');
  const metrics: Metrics = { ...base, apiAborted: (_e, phase) => aborts.shift()?.(phase) };
  const api: PublishApi = {
    preflight: () => ({ ok: true, endpoint: 'publish', key: 'k', body: true }),
    handle: (_endpoint, body) => handle(body),
  };
  const route = createApiRoute({ api, metrics, log: silentLogger(), maxPublishBytes: 100, bodyTimeoutMs });
  const seen: number[] = [];
  const wrapped: ApiRoute = {
    handle: (res, req) => {
      route.handle(res, req);
      seen.push(route.inflight());
    },
    inflight: () => {
      const n = route.inflight();
      seen.push(n);
      return n;
    },
  };
  return { route: wrapped, nextAbort: () => new Promise((r) => aborts.push(r)), seen };
}

const start = (s: Setup): FakeResponse => {
  const res = new FakeResponse();
  s.route.handle(res as unknown as HttpResponse, request());
  return res;
};

/** Lets the route's promise chain (including its setImmediate) run to its end. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(() => setImmediate(r)));

describe('publish API route: in-flight count', () => {
  it('counts a request from its head and releases it once answered', async () => {
    const s = setup(async () => ({ status: 200, body: '{}' }));
    const res = start(s);
    expect(s.route.inflight()).toBe(1);
    res.data('{"channel":"a","data":1}', true);
    expect((await res.ended).status).toBe('200 OK');
    await settle();
    expect(s.route.inflight()).toBe(0);
  });

  it('releases a request whose handler throws, after answering 500', async () => {
    const s = setup(() => Promise.reject(new Error('bug')));
    const res = start(s);
    res.data('{}', true);
    expect((await res.ended).status).toBe('500 Internal Server Error');
    await settle();
    expect(s.route.inflight()).toBe(0);
  });

  it('releases a request whose body grows past the limit, after answering 413 and closing', async () => {
    const s = setup(async () => ({ status: 200, body: '{}' }));
    const res = start(s);
    res.data('x'.repeat(101), false);
    expect(await res.ended).toMatchObject({ status: '413 Payload Too Large', close: true });
    await settle();
    expect(s.route.inflight()).toBe(0);
  });

  it('releases a request whose body does not arrive in time, after answering 408 and closing; a later abort changes nothing', async () => {
    const s = setup(async () => ({ status: 200, body: '{}' }), 20);
    const res = start(s);
    res.data('{"chan', false);
    const end = await res.ended;
    expect(end).toMatchObject({ status: '408 Request Timeout', close: true });
    expect(JSON.parse(end.body)).toEqual({ error: { code: 'request_timeout', message: 'request body not received whole within 20 ms' } });
    await settle();
    res.abort();
    res.data('nel":"a"}', true);
    await settle();
    expect(s.route.inflight()).toBe(0);
  });

  it('releases a request whose client goes away mid-body; data after that is ignored', async () => {
    const s = setup(async () => ({ status: 200, body: '{}' }));
    const res = start(s);
    res.data('{"chan', false);
    const phase = s.nextAbort();
    res.abort();
    expect(await phase).toBe('body');
    res.data('nel":"a"}', true);
    await settle();
    expect(s.route.inflight()).toBe(0);
  });

  it('releases a request whose client goes away after its body, once the handler is done, without answering', async () => {
    let finish!: () => void;
    const s = setup(() => new Promise((r) => (finish = () => r({ status: 200, body: '{}' }))));
    const res = start(s);
    res.data('{}', true);
    await settle(); // the handler runs
    res.abort();
    expect(s.route.inflight()).toBe(1); // the publish is still going on
    const phase = s.nextAbort();
    finish();
    expect(await phase).toBe('response');
    await settle();
    expect(s.route.inflight()).toBe(0);
    expect(res.status).toBe(''); // nothing written to the dead response
  });

  it('never counts below zero across many requests ended every way', async () => {
    const s = setup(async (body) => (body === 'throw' ? Promise.reject(new Error('x')) : { status: 200, body: '{}' }), 20);
    const ends: Promise<unknown>[] = [];
    for (let i = 0; i < 30; i++) {
      const res = start(s);
      const way = i % 5;
      if (way === 0) res.data('{}', true);
      else if (way === 1) res.data('throw', true);
      else if (way === 2) res.abort();
      else if (way === 3) res.data('x'.repeat(101), false);
      // way 4: left to time out
      if (way !== 2) ends.push(res.ended);
    }
    expect(s.route.inflight()).toBe(30);
    await Promise.all(ends);
    await settle();
    expect(s.route.inflight()).toBe(0);
    expect(Math.min(...s.seen)).toBe(0);
  });
});
