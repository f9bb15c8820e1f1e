/**
 * A raw Server-Sent Events reader for proxy tests: one GET over http or
 * https (with the Host / SNI / CA of a rendered proxy config), the response
 * parsed into events as bytes arrive (WHATWG rules, minus retry), comment
 * lines counted (pubgate's `: ping`). Waits are bounded; nothing sleeps.
 */
import http from 'node:http';
import https from 'node:https';
import { checkAnswer, headerText } from './openapi.js';
import { addWaiter, type Waiter } from './waiters.js';

export interface SseEvent {
  readonly event: string;
  readonly data: string;
  readonly id: string | undefined;
}

export interface SseReaderOptions {
  /** Host header (and TLS servername) when the URL's host is an address. */
  readonly host?: string;
  readonly ca?: string;
  readonly token?: string;
  readonly lastEventId?: string;
}

export interface SseReader {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly events: SseEvent[];
  /** Comment lines seen so far (pubgate's pings). */
  pings(): number;
  isOpen(): boolean;
  next(pred: (e: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent>;
  waitPings(n: number, timeoutMs?: number): Promise<void>;
  /** Resolves when the response ends or the connection closes. */
  readonly ended: Promise<void>;
  close(): void;
}

/** Opens `url`; resolves once the response head is in (any status: check `status`). */
export function openSse(url: string, o: SseReaderOptions = {}): Promise<SseReader> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  const headers: Record<string, string> = { accept: 'text/event-stream' };
  if (o.host) headers.host = o.host;
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.lastEventId !== undefined) headers['last-event-id'] = o.lastEventId;
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method: 'GET', headers, ...(u.protocol === 'https:' ? { servername: o.host, ca: o.ca } : {}) }, (res) => {
      req.setTimeout(0); // the head is in: a stream may be quiet for long
      // Status and headers checked against docs/openapi.yaml when a pubgate node answered (not a proxy).
      checkAnswer(u, { method: 'GET', status: res.statusCode ?? 0, headers: (n) => headerText(res.headers[n.toLowerCase()]) });
      const events: SseEvent[] = [];
      const eventWaiters: Waiter<SseEvent>[] = [];
      const pingWaiters: { n: number; resolve: () => void }[] = [];
      let pings = 0;
      let open = true;
      let buf = '';
      let cur: { event: string; data: string[]; id: string | undefined } = { event: 'message', data: [], id: undefined };
      const dispatch = (): void => {
        if (cur.data.length === 0) {
          cur = { event: 'message', data: [], id: undefined };
          return;
        }
        const e: SseEvent = { event: cur.event, data: cur.data.join('\n'), id: cur.id };
        cur = { event: 'message', data: [], id: undefined };
        events.push(e);
        for (let i = eventWaiters.length - 1; i >= 0; i--) {
          const w = eventWaiters[i]!;
          if (w.pred(e)) {
            eventWaiters.splice(i, 1);
            w.resolve(e);
          }
        }
      };
      const line = (l: string): void => {
        if (l === '') return dispatch();
        if (l.startsWith(':')) {
          pings++;
          for (let i = pingWaiters.length - 1; i >= 0; i--) {
            if (pings >= pingWaiters[i]!.n) pingWaiters.splice(i, 1)[0]!.resolve();
          }
          return;
        }
        const colon = l.indexOf(':');
        const field = colon === -1 ? l : l.slice(0, colon);
        const value = colon === -1 ? '' : l.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') cur.event = value;
        else if (field === 'data') cur.data.push(value);
        else if (field === 'id') cur.id = value;
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (let nl = buf.search(/\r\n|\n|\r/); nl !== -1; nl = buf.search(/\r\n|\n|\r/)) {
          const len = buf.startsWith('\r\n', nl) ? 2 : 1;
          line(buf.slice(0, nl));
          buf = buf.slice(nl + len);
        }
      });
      const ended = new Promise<void>((done) => {
        const end = (): void => {
          open = false;
          done();
        };
        res.once('end', end);
        res.once('close', end);
        res.once('error', end);
      });
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        pings: () => pings,
        isOpen: () => open,
        next(pred, timeoutMs = 15_000) {
          const found = events.find(pred);
          if (found) return Promise.resolve(found);
          return addWaiter(eventWaiters, pred, timeoutMs, () => new Error(`no matching SSE event in ${timeoutMs} ms; got: ${JSON.stringify(events).slice(0, 500)}`));
        },
        waitPings(n, timeoutMs = 30_000) {
          if (pings >= n) return Promise.resolve();
          return new Promise<void>((ok, fail) => {
            const t = setTimeout(() => fail(new Error(`saw ${pings} of ${n} pings in ${timeoutMs} ms (stream ${open ? 'open' : 'ended'})`)), timeoutMs);
            pingWaiters.push({ n, resolve: () => { clearTimeout(t); ok(); } });
          });
        },
        ended,
        close() {
          req.destroy();
        },
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`no response head from ${url} in 15 s`)));
    req.once('error', reject);
    req.end();
  });
}
