/** Small helpers for uWS HTTP responses: corked JSON writes and bounded body reads. */
import type { HttpResponse } from './uws.js';

const STATUS_TEXT: Readonly<Record<number, string>> = {
  200: 'OK', 308: 'Permanent Redirect', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 408: 'Request Timeout', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 426: 'Upgrade Required',
  429: 'Too Many Requests', 500: 'Internal Server Error', 503: 'Service Unavailable',
};

export function statusLine(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? 'Unknown'}`;
}

/** Tracks whether the client went away, so nothing is written to a dead response. */
export interface ResponseState {
  aborted: boolean;
  done: boolean;
  /** Called once when uWS reports the client gone (set by readBody while it waits). */
  onAbort: (() => void) | undefined;
}

export function watch(res: HttpResponse): ResponseState {
  const st: ResponseState = { aborted: false, done: false, onAbort: undefined };
  res.onAborted(() => {
    st.aborted = true;
    st.onAbort?.();
  });
  return st;
}

export function send(
  res: HttpResponse,
  st: ResponseState,
  status: number,
  body: string | Buffer,
  headers?: Readonly<Record<string, string>>,
  contentType = 'application/json',
  closeConnection = false,
): void {
  if (st.aborted || st.done) return;
  st.done = true;
  res.cork(() => {
    res.writeStatus(statusLine(status));
    // A 204 has no content, so no content type (OPTIONS /sse's preflight answer).
    if (status !== 204) res.writeHeader('Content-Type', contentType);
    if (headers) for (const [k, v] of Object.entries(headers)) res.writeHeader(k, v);
    res.end(body, closeConnection);
  });
}

/**
 * Resolves on a later turn of the event loop (a `setImmediate`), outside every
 * uWS callback.
 *
 * uWS keeps the socket whose event it is dispatching corked while the JS
 * handler runs, and the microtasks the handler queued run before uWS returns,
 * so an `await` does not leave that context. Only one socket per loop can be
 * corked: a publish fan-out from there cannot cork the subscriber sockets, and
 * once uWS's topic tree holds 32 messages for a subscriber it sends them one
 * frame per `send()` system call. Code that publishes many messages from an
 * HTTP handler (the batch endpoint) runs after this, where uWS corks each
 * subscriber and sends its queued frames together. The caller answers the
 * request afterwards with `send`, which corks the response itself.
 */
export function outsideUwsCallback(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** How a body read ended: the text, or why there is none. */
export type BodyRead =
  | { readonly kind: 'body'; readonly text: string }
  /** The body grew past the limit: the caller answers 413 and closes. */
  | { readonly kind: 'too_large' }
  /** The whole body did not arrive within the deadline: the caller answers 408 and closes. */
  | { readonly kind: 'timeout' }
  /** The client went away first: nothing can be answered. */
  | { readonly kind: 'aborted' };

/**
 * Reads a request body of at most `limit` bytes that must arrive whole within
 * `timeoutMs`. Always settles, exactly once: with the text, or with why not
 * (over the limit, past the deadline, or the client went away), so the caller's
 * bookkeeping (the in-flight count) runs on every path. Never rejects.
 */
export function readBody(res: HttpResponse, st: ResponseState, limit: number, timeoutMs: number): Promise<BodyRead> {
  return new Promise((resolve) => {
    if (st.aborted) return resolve({ kind: 'aborted' });
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (r: BodyRead): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      st.onAbort = undefined;
      chunks.length = 0;
      resolve(r);
    };
    const timer = setTimeout(() => settle({ kind: 'timeout' }), timeoutMs);
    st.onAbort = () => settle({ kind: 'aborted' });
    res.onData((ab, isLast) => {
      if (settled) return;
      size += ab.byteLength;
      if (size > limit) return settle({ kind: 'too_large' });
      // The ArrayBuffer is reused by uWS after this callback: copy it.
      chunks.push(Buffer.from(new Uint8Array(ab).slice()));
      if (isLast) settle({ kind: 'body', text: Buffer.concat(chunks, size).toString('utf8') });
    });
  });
}
