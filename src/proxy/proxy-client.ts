/**
 * The HTTP client of the connect and subscribe proxies (contract 1.1,
 * "Subscription tokens and the proxies"): one per node, shared by both.
 *
 * Bounded in every direction:
 * - at most `concurrency` calls in flight on the node (both proxies together);
 *   a call beyond that is answered `overloaded` at once, without a request, so
 *   a slow backend costs each waiting client one timeout, never a queue;
 * - each call has `timeoutMs` from the request to the last byte of the answer
 *   (one timer covering the connection, the head and the body read);
 * - an answer body is read up to `maxAnswerBytes` (64 KiB): a declared
 *   Content-Length over that is refused unread, a chunked body is cut there,
 *   and the answer counts as over the limit.
 * It is `node:http`/`node:https` `request`, not `fetch`: undici through the
 * WHATWG layer cost the node about 200 µs of CPU per call, `request` about 45
 * (docs/benchmarks.md, "Proxies (issue 14)"). Connections to the backends are
 * kept alive by one Agent per scheme (its pools are per origin); a call that
 * ends before its answer was read whole (timeout, abort, body over the limit,
 * a cut answer) destroys its connection, so a reused one never carries a
 * stale answer. Redirects are never followed (http.request does not): a 3xx
 * is an answer of its own, `bad_status`, and the key never goes elsewhere.
 * Nothing is cached: every subscribe and every upgrade asks again. A call
 * never rejects: it resolves with the backend's decision or why there is none,
 * counted in `pubgate_proxy_requests_total{proxy,result}`. Failures are logged
 * aggregated (one `warn` line per interval with the counts per proxy and
 * result and the latest reason), never with a cookie, a token or the key.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { Metrics, ProxyKind, ProxyResult } from '../observability/metrics.js';

/** Largest answer body read from a backend. */
export const MAX_ANSWER_BYTES = 64 * 1024;
/** One aggregated failure line at most per this interval. */
export const FAILURE_LOG_INTERVAL_MS = 10_000;
/**
 * An idle kept-alive connection is closed after this long: below the 5 s of
 * Node's http server (and most others), so the node closes first instead of
 * racing the backend's close with a new request. (The Agent also honours a
 * shorter `Keep-Alive: timeout=` hint from the backend.)
 */
export const IDLE_CONNECTION_MS = 4000;
/** Parsed targets kept; the node has two proxy URLs, the bound is for callers with more. */
const MAX_TARGETS = 64;

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
  /** Writes the pending failure line now, if any. */
  flush(): void;
  /**
   * Shutdown: writes the pending failure line and destroys every connection; a call still in flight
   * ends as `error` (written at once), a later one too, without a request.
   */
  close(): void;
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

/** Where a URL's calls go, parsed once. */
interface Target {
  readonly request: typeof httpRequest;
  readonly agent: HttpAgent;
  readonly hostname: string;
  readonly port: string;
  readonly path: string;
}

/** How the HTTP exchange of one call ended, before the answer is read for a decision. */
type Exchange = { readonly answer: HttpAnswer } | { readonly result: 'timeout' | 'aborted' | 'error'; readonly why?: string };

/** An error as one short line: its code when it has one (ECONNREFUSED ...), and its message. */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
}

export function createProxyClient(o: ProxyClientOptions): ProxyClient {
  const { metrics } = o;
  const limit = o.maxAnswerBytes ?? MAX_ANSWER_BYTES;
  const failures = new LogTally(o.log.child({ component: 'proxy' }), 'warn', 'proxy calls failed', {}, o.logIntervalMs ?? FAILURE_LOG_INTERVAL_MS);
  const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', accept: 'application/json' };
  if (o.key !== undefined) headers.authorization = `Bearer ${o.key}`;
  /*
   * One keep-alive Agent per scheme; an Agent pools connections per origin, so
   * each backend has its own pool, shared by both proxies when they are on the
   * same one. maxSockets (and maxTotalSockets) is the concurrency bound: the
   * bound answers `overloaded` before the Agent would ever queue a call for a
   * connection, so a call's time is the backend's. 'lifo' reuses the connection
   * freed last: under a light load the calls stay on a few hot connections and
   * the others idle out (IDLE_CONNECTION_MS), so the pool follows the load; and
   * the connection reused is the one least likely to be closed by the backend's
   * own idle timeout at that moment. 'fifo' would rotate every call through all
   * the connections of the peak, keeping them all open, each one idle longest.
   */
  const agentOptions = {
    keepAlive: true,
    maxSockets: o.concurrency,
    maxTotalSockets: o.concurrency,
    maxFreeSockets: o.concurrency,
    scheduling: 'lifo',
    timeout: IDLE_CONNECTION_MS,
  } as const;
  let httpAgent: HttpAgent | undefined;
  let httpsAgent: HttpsAgent | undefined;
  const targets = new Map<string, Target>();
  let inFlight = 0;
  let closed = false;

  /** The parsed URL and its Agent; throws on a URL fetch also refused (another scheme, credentials in it). */
  function target(url: string): Target {
    const known = targets.get(url);
    if (known) return known;
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`unsupported scheme ${u.protocol}`);
    if (u.username !== '' || u.password !== '') throw new Error('credentials in the proxy URL');
    const https = u.protocol === 'https:';
    const t: Target = {
      request: https ? httpsRequest : httpRequest,
      agent: https ? (httpsAgent ??= new HttpsAgent(agentOptions)) : (httpAgent ??= new HttpAgent(agentOptions)),
      // URL keeps the brackets of an IPv6 host; request wants the bare address.
      hostname: u.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: u.port,
      path: `${u.pathname}${u.search}`,
    };
    if (targets.size >= MAX_TARGETS) targets.delete(targets.keys().next().value!);
    targets.set(url, t);
    return t;
  }

  /**
   * POSTs `body` and reads the answer, bounded by the timeout and the size
   * limit; settles once. A call that ends before its answer was read whole is
   * cut: the request is destroyed with its connection, which never goes back
   * to the pool half-read.
   */
  function exchange(t: Target, body: string, signal: AbortSignal | undefined): Promise<Exchange> {
    return new Promise((resolve) => {
      let settled = false;
      const req = t.request({
        agent: t.agent,
        hostname: t.hostname,
        port: t.port,
        path: t.path,
        method: 'POST',
        headers: { ...headers, 'content-length': Buffer.byteLength(body) },
      });
      const end = (x: Exchange): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(x);
      };
      const cut = (x: Exchange): void => {
        end(x);
        req.destroy();
      };
      const onAbort = (): void => cut({ result: 'aborted' });
      // From the request to the last byte of the answer: connecting, the head and the body alike.
      const timer = setTimeout(() => cut({ result: 'timeout', why: `no answer within ${o.timeoutMs} ms` }), o.timeoutMs);
      timer.unref();
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => end({ result: 'error', why: describe(e) }));
      req.on('response', (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        const over = (): void => cut({ answer: { status, text: undefined } });
        // Refused unread: reading megabytes to keep the connection is not worth it.
        if (Number(res.headers['content-length'] ?? '0') > limit) return over();
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          if (settled) return;
          size += d.length;
          if (size > limit) return over();
          chunks.push(d);
        });
        res.on('end', () => end({ answer: { status, text: Buffer.concat(chunks, size).toString('utf8') } }));
        // The backend closed the connection before the end of its answer.
        res.on('error', (e) => end({ result: 'error', why: `answer cut off: ${describe(e)}` }));
        res.on('close', () => end({ result: 'error', why: 'answer cut off' }));
      });
      req.end(body);
    });
  }

  function done<T>(proxy: ProxyKind, outcome: Outcome<T>, t0: number | undefined): Outcome<T> {
    metrics.proxyRequest(proxy, outcome.result, t0 === undefined ? undefined : (performance.now() - t0) / 1000);
    // A decision is not a failure, and an abort is the client's doing.
    if (outcome.result !== 'allow' && outcome.result !== 'deny' && outcome.result !== 'aborted') {
      failures.add(`${proxy}:${outcome.result}`, 1, outcome.why);
      // After close no flush will come: the calls it cut are written as they end.
      if (closed) failures.flush();
    }
    return outcome;
  }

  return {
    async call(proxy, url, body, read, signal) {
      if (signal?.aborted === true) return done(proxy, { result: 'aborted' }, undefined);
      if (inFlight >= o.concurrency) return done(proxy, { result: 'overloaded', why: `${o.concurrency} proxy calls in flight (PUBGATE_PROXY_CONCURRENCY)` }, undefined);
      if (closed) return done(proxy, { result: 'error', why: 'the node is shutting down' }, undefined);
      inFlight++;
      metrics.proxyInFlight(proxy, 1);
      const t0 = performance.now();
      try {
        const x = await exchange(target(url), body, signal);
        return done(proxy, 'answer' in x ? read(x.answer) : x, t0);
      } catch (e) {
        // A URL the request cannot be made to; everything else settles the exchange.
        return done(proxy, { result: 'error', why: describe(e) }, t0);
      } finally {
        inFlight--;
        metrics.proxyInFlight(proxy, -1);
      }
    },
    inFlight: () => inFlight,
    flush: () => failures.flush(),
    close() {
      closed = true;
      failures.flush();
      httpAgent?.destroy();
      httpsAgent?.destroy();
    },
  };
}
