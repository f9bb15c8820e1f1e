/**
 * The publish API's route on the public port: copies the request head, asks
 * the API's preflight, reads the body (bounded in size and in time), answers.
 *
 * It also counts the requests in flight, which a drain waits for. A request is
 * counted once it passed the preflight and released exactly once, by the one
 * promise chain that serves it, whatever ends it: an answer (200, 4xx, 5xx), a
 * body over the limit (413), a body that did not arrive in time (408), or a
 * client that went away (readBody settles then too, instead of waiting for
 * data that will never come).
 */
import type { ApiRequestHead, PublishApi } from '../api/publish-api.js';
import { errorBody } from '../errors.js';
import type { Log } from '../observability/logger.js';
import type { ApiEndpoint, Metrics } from '../observability/metrics.js';
import { outsideUwsCallback, readBody, send, watch, type ResponseState } from './http.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export interface ApiRouteDeps {
  readonly api: PublishApi;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly maxPublishBytes: number;
  /** The whole body must arrive within this many ms of the head, or the request gets 408. */
  readonly bodyTimeoutMs: number;
}

export interface ApiRoute {
  /** The uWS handler for every path on the public port but /ws. */
  readonly handle: (res: HttpResponse, req: HttpRequest) => void;
  /** Requests that passed the preflight and are not finished yet. */
  readonly inflight: () => number;
}

type Respond = (status: number, body: string, headers?: Readonly<Record<string, string>>, closeConn?: boolean) => void;

/**
 * The Idempotency-Key header: undefined when absent, '' when present and
 * empty (an error). getHeader gives '' for both, so only then are the headers
 * walked to tell them apart.
 */
function idempotencyHeader(req: HttpRequest): string | undefined {
  const v = req.getHeader('idempotency-key');
  if (v !== '') return v;
  let present = false;
  req.forEach((k) => {
    if (k === 'idempotency-key') present = true;
  });
  return present ? '' : undefined;
}

export function createApiRoute(deps: ApiRouteDeps): ApiRoute {
  const { api, metrics, log, maxPublishBytes, bodyTimeoutMs } = deps;
  let inflight = 0;
  metrics.observeApiInflight(() => inflight);

  function aborted(endpoint: ApiEndpoint, phase: 'body' | 'response', path: string): void {
    metrics.apiAborted(endpoint, phase);
    log.debug({ path, endpoint, phase }, 'api request aborted by the client');
  }

  /** Reads the body and answers. Settles once the request is over, on every path. */
  async function serve(
    res: HttpResponse,
    st: ResponseState,
    endpoint: ApiEndpoint,
    path: string,
    respond: Respond,
    query: string | undefined,
    idempotencyKey: string | undefined,
  ): Promise<void> {
    try {
      if (query !== undefined) {
        // A read (GET): no body to wait for.
        await outsideUwsCallback();
        const r = await api.handle(endpoint, query);
        if (st.aborted) return aborted(endpoint, 'response', path);
        return respond(r.status, r.body, r.headers);
      }
      const read = await readBody(res, st, maxPublishBytes, bodyTimeoutMs);
      if (read.kind === 'aborted') return aborted(endpoint, 'body', path);
      // Both close the connection: the rest of the body may still be on its way
      // and must not be taken for the next request.
      if (read.kind === 'too_large') return respond(413, errorBody('too_large', `body over ${maxPublishBytes} bytes`), undefined, true);
      if (read.kind === 'timeout') {
        return respond(408, errorBody('request_timeout', `request body not received whole within ${bodyTimeoutMs} ms`), undefined, true);
      }
      // Publish outside the HTTP callback, where uWS can cork each subscriber
      // (see outsideUwsCallback); the answer still waits for the fan-out. A
      // client that leaves now has sent a whole request: it is still published.
      await outsideUwsCallback();
      const r = await api.handle(endpoint, read.text, idempotencyKey);
      if (st.aborted) return aborted(endpoint, 'response', path);
      respond(r.status, r.body, r.headers);
    } catch (e) {
      log.error({ err: e, path }, 'api request failed');
      respond(500, errorBody('internal', 'internal error'));
    }
  }

  function handle(res: HttpResponse, req: HttpRequest): void {
    const t0 = performance.now();
    const head: ApiRequestHead = {
      method: req.getMethod(),
      path: req.getUrl(),
      query: req.getQuery() ?? '',
      authorization: req.getHeader('authorization'),
      contentType: req.getHeader('content-type'),
      contentLength: req.getHeader('content-length'),
      idempotencyKey: idempotencyHeader(req),
    };
    const st = watch(res);
    const pre = api.preflight(head);
    const respond: Respond = (status, body, headers, closeConn = false) => {
      if (st.aborted) return;
      send(res, st, status, body, headers, 'application/json', closeConn);
      metrics.apiRequest(pre.endpoint, status, (performance.now() - t0) / 1000);
      if (status >= 400) log.warn({ path: head.path, status, endpoint: pre.endpoint }, 'api request rejected');
    };
    if (!pre.ok) {
      // Answer before reading a body we will not use; close the connection so
      // an unread body cannot be taken for the next request.
      const closeConn = head.method !== 'get' && head.method !== 'head';
      respond(pre.response.status, pre.response.body, pre.response.headers, closeConn);
      return;
    }
    inflight++;
    void serve(res, st, pre.endpoint, head.path, respond, pre.body ? undefined : head.query, pre.idempotencyKey)
      .catch((e: unknown) => log.error({ err: e, path: head.path }, 'api request failed while answering'))
      .finally(() => {
        inflight--;
      });
  }

  return { handle, inflight: () => inflight };
}
