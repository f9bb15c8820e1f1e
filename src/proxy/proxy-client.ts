/**
 * The HTTP client of the connect and subscribe proxies (contract 1.1,
 * "Subscription tokens and the proxies"): one per node, shared by both.
 *
 * Bounded in every direction:
 * - at most `concurrency` calls in flight on the node (both proxies together);
 *   a call beyond that is answered `overloaded` at once, without a request, so
 *   a slow backend costs each waiting client one timeout, never a queue;
 * - each call has `timeoutMs` from the request to the last byte of the answer
 *   (AbortSignal.timeout on fetch, which also aborts the body read);
 * - an answer body is read up to `maxAnswerBytes` (64 KiB): past that the read
 *   stops and the answer counts as over the limit.
 * Node's fetch (undici) keeps connections to the backend alive between calls.
 * Nothing is cached: every subscribe and every upgrade asks again. A call
 * never rejects: it resolves with the backend's decision or why there is none,
 * counted in `pubgate_proxy_requests_total{proxy,result}`. Failures are logged
 * aggregated (one `warn` line per interval with the counts per proxy and
 * result and the latest reason), never with a cookie, a token or the key.
 */
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { Metrics, ProxyKind, ProxyResult } from '../observability/metrics.js';

/** Largest answer body read from a backend. */
export const MAX_ANSWER_BYTES = 64 * 1024;
/** One aggregated failure line at most per this interval. */
export const FAILURE_LOG_INTERVAL_MS = 10_000;

/** A backend's answer: its status, and its body text, or undefined when the body was over the limit. */
export interface HttpAnswer {
  readonly status: number;
  readonly text: string | undefined;
}

/** How a call ended: the backend allowed (with what it gave), or anything else, with a reason for the log. */
export type Outcome<T> =
  | { readonly result: 'allow'; readonly value: T }
  | { readonly result: Exclude<ProxyResult, 'allow'>; readonly why?: string };

/** Reads an answer into an outcome; pure, never throws. */
export type AnswerReader<T> = (answer: HttpAnswer) => Outcome<T>;

export interface ProxyClient {
  /**
   * POSTs `body` (JSON text) to `url` and reads the answer with `read`.
   * `signal` aborts the call (the client went away): the outcome is then `aborted`.
   */
  call<T>(proxy: ProxyKind, url: string, body: string, read: AnswerReader<T>, signal?: AbortSignal): Promise<Outcome<T>>;
  /** Calls in flight now. */
  inFlight(): number;
  /** Writes the pending failure line now, if any (shutdown). */
  flush(): void;
}

export interface ProxyClientOptions {
  /** Sent as `Authorization: Bearer <key>` when set. */
  readonly key: string | undefined;
  readonly timeoutMs: number;
  readonly concurrency: number;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly maxAnswerBytes?: number;
  readonly logIntervalMs?: number;
}

/** A fetch failure as one short line: undici says "fetch failed" and puts the reason (ECONNREFUSED ...) in `cause`. */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return `${e.message}: ${typeof code === 'string' ? code : cause.message}`;
  }
  return e.message;
}

/** Reads a body of at most `limit` bytes; undefined (and the rest left unread) when it is larger. */
async function readBounded(res: Response, limit: number): Promise<string | undefined> {
  const body = res.body;
  if (body === null) return '';
  const declared = Number(res.headers.get('content-length') ?? '0');
  const reader = body.getReader();
  const stop = (): undefined => {
    // Cancelling closes the connection instead of reading megabytes to keep it.
    reader.cancel().catch(() => undefined);
    return undefined;
  };
  if (declared > limit) return stop();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) return stop();
    chunks.push(value);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

export function createProxyClient(o: ProxyClientOptions): ProxyClient {
  const { metrics } = o;
  const limit = o.maxAnswerBytes ?? MAX_ANSWER_BYTES;
  const failures = new LogTally(o.log.child({ component: 'proxy' }), 'warn', 'proxy calls failed', {}, o.logIntervalMs ?? FAILURE_LOG_INTERVAL_MS);
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (o.key !== undefined) headers.authorization = `Bearer ${o.key}`;
  let inFlight = 0;

  function done<T>(proxy: ProxyKind, outcome: Outcome<T>, t0: number | undefined): Outcome<T> {
    metrics.proxyRequest(proxy, outcome.result, t0 === undefined ? undefined : (performance.now() - t0) / 1000);
    // A decision is not a failure, and an abort is the client's doing.
    if (outcome.result !== 'allow' && outcome.result !== 'deny' && outcome.result !== 'aborted') {
      failures.add(`${proxy}:${outcome.result}`, 1, outcome.why);
    }
    return outcome;
  }

  return {
    async call(proxy, url, body, read, signal) {
      const gone = (): boolean => signal?.aborted === true;
      if (gone()) return done(proxy, { result: 'aborted' }, undefined);
      if (inFlight >= o.concurrency) return done(proxy, { result: 'overloaded', why: `${o.concurrency} proxy calls in flight (PUBGATE_PROXY_CONCURRENCY)` }, undefined);
      inFlight++;
      metrics.proxyInFlight(proxy, 1);
      const t0 = performance.now();
      const timeout = AbortSignal.timeout(o.timeoutMs);
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers,
          body,
          signal: signal ? AbortSignal.any([timeout, signal]) : timeout,
          // A redirect is an answer of its own (bad_status), never followed with the key.
          redirect: 'manual',
        });
        const text = await readBounded(res, limit);
        return done(proxy, read({ status: res.status, text }), t0);
      } catch (e) {
        if (timeout.aborted) return done(proxy, { result: 'timeout', why: `no answer within ${o.timeoutMs} ms` }, t0);
        if (gone()) return done(proxy, { result: 'aborted' }, t0);
        return done(proxy, { result: 'error', why: describe(e) }, t0);
      } finally {
        inFlight--;
        metrics.proxyInFlight(proxy, -1);
      }
    },
    inFlight: () => inFlight,
    flush: () => failures.flush(),
  };
}
