/**
 * The admin console's route on the admin port (`/admin`, `/admin/*`):
 * copies the request head, asks the admin API's preflight, reads a POST body
 * (bounded in size and in time), answers, and counts every answer in
 * pubgate_admin_requests_total. The logic is in src/admin/admin-api.ts.
 */
import type { AdminApi, AdminEndpoint, AdminRequestHead, AdminResponse } from '../admin/admin-api.js';
import { ADMIN_HEADERS } from '../admin/admin-api.js';
import { errorBody } from '../errors.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { outsideUwsCallback, readBody, send, watch } from './http.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export interface AdminRouteDeps {
  readonly api: AdminApi;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly maxBodyBytes: number;
  readonly bodyTimeoutMs: number;
}

export function createAdminRoute(deps: AdminRouteDeps): (res: HttpResponse, req: HttpRequest) => void {
  const { api, metrics, log, maxBodyBytes, bodyTimeoutMs } = deps;

  return (res, req) => {
    const head: AdminRequestHead = {
      method: req.getMethod(),
      path: req.getUrl(),
      query: req.getQuery() ?? '',
      authorization: req.getHeader('authorization'),
      contentType: req.getHeader('content-type'),
      contentLength: req.getHeader('content-length'),
    };
    const st = watch(res);
    const pre = api.preflight(head);
    const respond = (endpoint: AdminEndpoint, r: AdminResponse, closeConn = false): void => {
      if (st.aborted) return;
      send(res, st, r.status, r.body, r.headers, r.contentType ?? 'application/json', closeConn);
      metrics.adminRequest(endpoint, r.status);
      // The path only: never the query, never the token.
      if (r.status >= 400) log.warn({ path: head.path.slice(0, 200), status: r.status, endpoint }, 'admin request rejected');
    };
    if (pre.kind === 'answer') {
      // An unread body must not be taken for the next request.
      respond(pre.endpoint, pre.response, head.method !== 'get' && head.method !== 'head');
      return;
    }
    const { endpoint } = pre;
    void (async () => {
      let input = head.query;
      if (pre.body) {
        const read = await readBody(res, st, maxBodyBytes, bodyTimeoutMs);
        if (read.kind === 'aborted') return;
        if (read.kind === 'too_large') {
          return respond(endpoint, { status: 413, body: errorBody('too_large', `body over ${maxBodyBytes} bytes`), headers: ADMIN_HEADERS }, true);
        }
        if (read.kind === 'timeout') {
          return respond(endpoint, { status: 408, body: errorBody('request_timeout', `request body not received whole within ${bodyTimeoutMs} ms`), headers: ADMIN_HEADERS }, true);
        }
        input = read.text;
      }
      // Outside the HTTP callback, as the publish API (transport/http.ts outsideUwsCallback).
      await outsideUwsCallback();
      respond(endpoint, await api.handle(endpoint, input));
    })().catch((e: unknown) => {
      log.error({ err: e, path: head.path.slice(0, 200) }, 'admin request failed');
      respond(endpoint, { status: 500, body: errorBody('internal', 'internal error'), headers: ADMIN_HEADERS });
    });
  };
}
