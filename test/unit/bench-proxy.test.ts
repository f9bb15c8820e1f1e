/**
 * What the proxy benchmark (loadtest/bench/lib/proxy.mjs) relies on: its
 * backend's answers (the connect proxy's claims from the session cookie, the
 * subscribe proxy's allow, refusals without the key), the raw client's
 * token-less cookie upgrade, and the per-round figures it reports (rates,
 * CPU per operation, and the proxied kind against the other one of the same
 * run and round).
 */
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/gateway.js';

interface Answer {
  readonly status: number;
  readonly body: string;
  readonly counted: string;
}
interface BackendModule {
  backendAnswer(path: string, body: string, authorization: string | undefined, key: string): Answer;
  cookieValue(header: string, name: string): string | undefined;
}
interface Range {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}
interface KindFigures {
  readonly perSec: Range;
  readonly nodeUs: Range;
  readonly backendUs: Range;
  readonly ops: number;
  readonly failed: number;
  readonly errors: Record<string, number>;
}
interface PartFigures {
  readonly kinds: Record<string, KindFigures>;
  readonly rateRatio: Range;
  readonly cpuRatio: Range;
  readonly diffUs: Range;
  readonly pairs: readonly unknown[];
}
interface ProxyModule {
  proxyFigures(blocks: readonly Record<string, unknown>[]): Record<string, PartFigures>;
}
interface WsClientModule {
  WsPool: new (o: { host: string; port: number; tokenIn?: string }) => { request(token: string, tokenIn?: string): string };
}

const lib = (file: string): string => pathToFileURL(`${ROOT}loadtest/bench/lib/${file}`).href;
const { backendAnswer, cookieValue } = (await import(lib('proxy-backend.mjs'))) as BackendModule;
const { proxyFigures } = (await import(lib('proxy.mjs'))) as ProxyModule;
const { WsPool } = (await import(lib('ws-client.mjs'))) as WsClientModule;

describe('bench proxy backend', () => {
  it('answers the connect proxy with the session cookie\'s user, an expiry and the bench channels', () => {
    const a = backendAnswer('/connect', JSON.stringify({ cookie: 'theme=dark; bench_session=bench-hs-7', ip: '127.0.0.1', origin: '' }), 'Bearer k', 'k');
    expect(a.status).toBe(200);
    expect(a.counted).toBe('connect');
    expect(JSON.parse(a.body)).toEqual({ user: 'bench-hs-7', expiresIn: 3600, channels: ['bench*'] });
  });

  it('allows every subscribe', () => {
    const a = backendAnswer('/subscribe', JSON.stringify({ user: 'u', conn: 'c1', channel: 'px:s1' }), 'Bearer k', 'k');
    expect(a).toEqual({ status: 200, body: '{"allow":true}', counted: 'subscribe' });
  });

  it('refuses a request without the key, a body it cannot read, a cookie without a session and another path', () => {
    expect(backendAnswer('/subscribe', '{"user":"u","channel":"px:1"}', 'Bearer other', 'k').status).toBe(401);
    expect(backendAnswer('/subscribe', '{"user":"u","channel":"px:1"}', undefined, 'k').counted).toBe('unauthorized');
    expect(backendAnswer('/subscribe', 'not json', 'Bearer k', 'k').counted).toBe('bad_request');
    expect(backendAnswer('/connect', '{"cookie":"theme=dark","ip":"","origin":""}', 'Bearer k', 'k').counted).toBe('bad_request');
    expect(backendAnswer('/other', '{}', 'Bearer k', 'k').status).toBe(404);
  });

  it('reads one cookie out of a Cookie header', () => {
    expect(cookieValue('a=1; bench_session=x=y ; b=2', 'bench_session')).toBe('x=y');
    expect(cookieValue('a=1', 'bench_session')).toBeUndefined();
    expect(cookieValue('', 'bench_session')).toBeUndefined();
  });
});

describe('bench ws-client: cookie upgrade', () => {
  it('sends the cookie and no token when told to, and the token otherwise', () => {
    const pool = new WsPool({ host: '127.0.0.1', port: 1, tokenIn: 'header' });
    const withCookie = pool.request('bench_session=u1', 'cookie');
    expect(withCookie).toContain('\r\nCookie: bench_session=u1\r\n');
    expect(withCookie).not.toMatch(/authorization|bearer|access_token/i);
    expect(withCookie).toMatch(/\r\n\r\n$/);
    const withToken = pool.request('a.b.c');
    expect(withToken).toContain('\r\nAuthorization: Bearer a.b.c\r\n');
    expect(withToken).not.toContain('Cookie:');
  });
});

describe('bench proxy: figures', () => {
  const block = (run: number, round: number, part: string, kind: string, ops: number, wallMs: number, nodeNs: number, extra = {}): Record<string, unknown> => ({
    run, round, part, kind, ops, failed: 0, errors: {}, wallMs, nodeNs, backendNs: 0, backendReqs: 0, backendConns: 0, ...extra,
  });

  it('compares the proxied kind with the other kind of the same run and round', () => {
    const f = proxyFigures([
      block(1, 1, 'handshake', 'jwt', 1000, 100, 50e6), // 10 000/s, 50 µs
      block(1, 1, 'handshake', 'proxy', 1000, 400, 250e6, { backendNs: 40e6, backendReqs: 1000 }), // 2 500/s, 250 µs
      block(1, 2, 'handshake', 'proxy', 1000, 500, 300e6, { backendNs: 20e6, backendReqs: 1000 }), // 2 000/s, 300 µs
      block(1, 2, 'handshake', 'jwt', 1000, 200, 60e6), // 5 000/s, 60 µs
      // Another run's round 1: paired with its own jwt block only.
      block(2, 1, 'handshake', 'proxy', 500, 100, 100e6, { failed: 2, errors: { 'handshake answered 503': 2 } }),
      block(2, 1, 'handshake', 'jwt', 500, 50, 20e6),
    ]);
    const h = f.handshake!;
    expect(f.subscribe).toBeUndefined();
    expect(h.pairs).toHaveLength(3);
    expect(h.diffUs.median).toBeCloseTo(200, 6); // 200, 240, 160
    expect(h.diffUs.min).toBeCloseTo(160, 6);
    expect(h.diffUs.max).toBeCloseTo(240, 6);
    expect(h.rateRatio.median).toBeCloseTo(0.4, 6); // 0.25, 0.4, 0.5
    expect(h.cpuRatio.median).toBeCloseTo(5, 6); // 5, 5, 5
    expect(h.kinds.jwt!.nodeUs.median).toBeCloseTo(50, 6); // 50, 60, 40
    expect(h.kinds.proxy!.backendUs.median).toBeCloseTo(30, 6); // 40, 20 (and a block without requests)
    expect(h.kinds.proxy!.backendUs.n).toBe(2);
    expect(h.kinds.proxy!.ops).toBe(2500);
    expect(h.kinds.proxy!.failed).toBe(2);
    expect(h.kinds.proxy!.errors).toEqual({ 'handshake answered 503': 2 });
  });

  it('leaves a block without operations out of the per-operation figures', () => {
    const f = proxyFigures([
      block(1, 1, 'subscribe', 'plain', 0, 0, 5e6),
      block(1, 1, 'subscribe', 'proxy', 100, 50, 20e6),
      block(1, 2, 'subscribe', 'plain', 100, 10, 2e6),
      block(1, 2, 'subscribe', 'proxy', 100, 50, 22e6),
    ]);
    const s = f.subscribe!;
    expect(s.kinds.plain!.nodeUs.n).toBe(1);
    expect(s.kinds.plain!.perSec.n).toBe(1);
    expect(s.diffUs.n).toBe(1);
    expect(s.diffUs.median).toBeCloseTo(200, 6);
  });
});
