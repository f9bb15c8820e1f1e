/**
 * The Pusher HTTP API's route on the public port (`/apps/*`): copies the
 * request head, asks the API's route, reads the body (bounded in size and in
 * time, as the native API's route does), answers, and counts every answer in
 * pubgate_pusher_api_requests_total{endpoint,result}.
 *
 * Requests in flight are counted (a drain waits for them with the native
 * API's); each is released exactly once by the promise chain that serves it.
 */
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { outsideUwsCallback, readBody, send, watch } from '../transport/http.js';
import type { HttpRequest, HttpResponse } from '../transport/uws.js';
import { pusherError, type PusherApiEndpoint, type PusherApiResponse, type PusherHttpApi } from './http-api.js';

export interface PusherRouteDeps {
  readonly api: PusherHttpApi;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly maxBodyBytes: number;
  readonly bodyTimeoutMs: number;
}

export interface PusherHttpRoute {
  readonly handle: (res: HttpResponse, req: HttpRequest) => void;
  readonly inflight: () => number;
}

export function createPusherHttpRoute(deps: PusherRouteDeps): PusherHttpRoute {
  const { api, metrics, log, maxBodyBytes, bodyTimeoutMs } = deps;
  let inflight = 0;

  function handle(res: HttpResponse, req: HttpRequest): void {
    const head = { method: req.getMethod(), path: req.getUrl(), query: req.getQuery() ?? '' };
    const contentLength = req.getHeader('content-length');
    const st = watch(res);
    const respond = (endpoint: PusherApiEndpoint, r: PusherApiResponse, closeConn = false): void => {
      if (st.aborted) return;
      send(res, st, r.status, r.body, r.headers, r.contentType, closeConn);
      metrics.pusherApiRequest(endpoint, r.result);
      // The path only: the query holds the signature, the body the data.
      if (r.status >= 400) log.warn({ path: head.path.slice(0, 200), status: r.status, endpoint, reason: r.result }, 'pusher api request rejected');
    };
    const route = api.route(head, contentLength);
    if (!route.ok) {
      // Close the connection after a POST: its unread body must not be taken for the next request.
      respond(route.endpoint, route.response, head.method !== 'get' && head.method !== 'head');
      return;
    }
    inflight++;
    const serve = async (): Promise<void> => {
      let body = '';
      if (route.body) {
        const read = await readBody(res, st, maxBodyBytes, bodyTimeoutMs);
        if (read.kind === 'aborted') return;
        if (read.kind === 'too_large') return respond(route.endpoint, pusherError('too_large', `Request Entity Too Large: body over ${maxBodyBytes} bytes`), true);
        if (read.kind === 'timeout') return respond(route.endpoint, pusherError('request_timeout', `Request Timeout: body not received whole within ${bodyTimeoutMs} ms`), true);
        body = read.text;
      }
      // Publish outside the HTTP callback, where uWS can cork each subscriber (transport/http.ts).
      await outsideUwsCallback();
      respond(route.endpoint, await api.handle(head, route, body));
    };
    void serve()
      .catch((e: unknown) => {
        log.error({ err: e, path: head.path.slice(0, 200) }, 'pusher api request failed');
        respond(route.endpoint, pusherError('internal', 'Internal Server Error'));
      })
      .finally(() => {
        inflight--;
      });
  }

  return { handle, inflight: () => inflight };
}
