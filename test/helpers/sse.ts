/**
 * A raw Server-Sent Events client for tests: node:http streaming, the event
 * stream parsed line by line as the HTML spec does (event, id, data fields;
 * comments kept). No reconnection of its own: a test reconnects explicitly,
 * with the Last-Event-ID it chose.
 */
import http, { type IncomingHttpHeaders } from 'node:http';
import { checkAnswer, headerText } from './openapi.js';
import { addWaiter, type Waiter } from './waiters.js';

export interface SseEvent {
  /** `message` when the stream gave no `event:` field; `comment` for a comment line. */
  readonly event: string;
  /** The `id:` field of this event, when it had one. */
  readonly id: string | undefined;
  /** The data lines joined with `\n` (the comment text for a comment). */
  readonly data: string;
}

export interface SseStreamClient {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** Every event and comment so far, in order. */
  readonly events: SseEvent[];
  /** The body of a non-200 answer (whole), or '' for a stream. */
  readonly body: string;
  /** The last `id:` seen (what EventSource would send as Last-Event-ID). */
  lastId(): string | undefined;
  /** Resolves with the first event (past or future) that matches. */
  waitFor(pred: (e: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent>;
  /** Resolves when the response ended (the server completed it or the connection closed). */
  readonly ended: Promise<void>;
  /** Stops reading (the socket's receive buffer then fills: a slow reader). */
  pause(): void;
  resume(): void;
  close(): void;
}

export interface SseOptions {
  readonly channels?: readonly string[];
  readonly token?: string;
  /** Token in the access_token query parameter instead of the Authorization header. */
  readonly queryToken?: boolean;
  readonly headers?: Readonly<Record<string, string>>;
  /** Extra raw query text appended (e.g. `channel=a%20b`). */
  readonly query?: string;
  /** A small receive buffer (bytes), for slow-reader tests. */
  readonly recvBuffer?: number;
}

/** Opens GET /sse on `base` (http://127.0.0.1:port) and resolves once the status line arrived (and, when not 200, the body). */
export function openSse(base: string, o: SseOptions = {}): Promise<SseStreamClient> {
  const params = new URLSearchParams();
  for (const c of o.channels ?? []) params.append('channel', c);
  if (o.token !== undefined && o.queryToken) params.set('access_token', o.token);
  let query = params.toString();
  if (o.query) query = query ? `${query}&${o.query}` : o.query;
  const url = new URL(`/sse${query ? `?${query}` : ''}`, base);
  const headers: Record<string, string> = { accept: 'text/event-stream', ...o.headers };
  if (o.token !== undefined && !o.queryToken) headers.authorization = `Bearer ${o.token}`;
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const events: SseEvent[] = [];
      const waiters: Waiter<SseEvent>[] = [];
      let body = '';
      let pending = '';
      let event = '';
      let id: string | undefined;
      let data: string[] = [];
      let last: string | undefined;
      const emit = (e: SseEvent): void => {
        events.push(e);
        for (const w of [...waiters]) {
          if (!w.pred(e)) continue;
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      };
      const line = (l: string): void => {
        if (l === '') {
          if (data.length > 0 || event !== '') emit({ event: event || 'message', id, data: data.join('\n') });
          event = '';
          id = undefined;
          data = [];
          return;
        }
        if (l.startsWith(':')) return emit({ event: 'comment', id: undefined, data: l.slice(1).trimStart() });
        const colon = l.indexOf(':');
        const field = colon < 0 ? l : l.slice(0, colon);
        let value = colon < 0 ? '' : l.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id') {
          id = value;
          last = value;
        }
      };
      const stream = res.statusCode === 200;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (!stream) {
          body += chunk;
          return;
        }
        pending += chunk;
        for (;;) {
          const nl = pending.search(/\r\n|\r|\n/);
          if (nl < 0) break;
          const sep = pending.startsWith('\r\n', nl) ? 2 : 1;
          line(pending.slice(0, nl));
          pending = pending.slice(nl + sep);
        }
      });
      const ended = new Promise<void>((done) => {
        res.on('end', done);
        res.on('close', done);
        res.on('error', () => done());
      });
      const client: SseStreamClient = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        get body() {
          return body;
        },
        lastId: () => last,
        waitFor: (pred, timeoutMs = 10_000) => {
          const past = events.find(pred);
          if (past) return Promise.resolve(past);
          return addWaiter(waiters, pred, timeoutMs, () => new Error(`no matching SSE event within ${timeoutMs} ms; got ${JSON.stringify(events.slice(-5).map((e) => ({ ...e, data: e.data.slice(0, 200) })))}`));
        },
        ended,
        pause: () => res.pause(),
        resume: () => res.resume(),
        close: () => req.destroy(),
      };
      // Checked against docs/openapi.yaml when a pubgate node answered: a stream by its head, a refusal with its body.
      const check = (text: string | undefined): void => {
        checkAnswer(url, { method: 'GET', status: client.status, headers: (n) => headerText(res.headers[n.toLowerCase()]), body: text });
      };
      if (stream) {
        check(undefined);
        resolve(client);
      } else {
        void ended.then(() => {
          check(body);
          resolve(client);
        });
      }
    });
    if (o.recvBuffer !== undefined) {
      const size = o.recvBuffer;
      req.on('socket', (sock) => {
        sock.on('connect', () => {
          (sock as unknown as { setRecvBufferSize?: (n: number) => void }).setRecvBufferSize?.(size);
        });
      });
    }
    req.on('error', reject);
  });
}

/** The JSON of an event's data. */
export function json<T = Record<string, unknown>>(e: SseEvent): T {
  return JSON.parse(e.data) as T;
}
