/**
 * A test backend for the connect and subscribe proxies: an HTTP server on
 * 127.0.0.1 that records every call (body, headers, the TCP connection it
 * came on, whether the caller went away before the answer) and answers as
 * the test says, per path: JSON, any status, a raw or huge body, or nothing
 * at all until the test releases it.
 */
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { listenOnLoopback } from './ports.js';
import { addWaiter, type Waiter } from './waiters.js';

/** How the backend answers a call. */
export type Answer =
  | { readonly status?: number; readonly json: unknown }
  | { readonly status?: number; readonly body: string | Buffer; readonly contentType?: string }
  /** `bytes` of JSON-looking filler, sent in 64 KiB chunks without Content-Length (chunked). */
  | { readonly status?: number; readonly streamBytes: number }
  /** The head and the start of a body at once, the rest never (until the caller gives up). */
  | { readonly status?: number; readonly partial: string }
  /** No answer until `release` (or the caller gives up). */
  | 'hold';

export interface BackendCall {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Record<string, unknown>;
  /** Number of the TCP connection it came on (1, 2, ...): equal numbers mean a kept-alive connection. */
  readonly connection: number;
  /** True once the caller closed the connection before the answer was complete. */
  readonly abandoned: boolean;
  /** Resolves when the caller closes the connection before the answer was complete. */
  readonly gone: Promise<void>;
}

export interface Backend {
  readonly url: string;
  /** Every call so far, in arrival order. */
  readonly calls: BackendCall[];
  /** Sets how calls to `path` are answered (default: 500). */
  on(path: string, answer: Answer | ((call: BackendCall) => Answer)): void;
  /** Resolves once `n` calls to `path` (any path when undefined) have arrived. */
  waitForCalls(n: number, path?: string, timeoutMs?: number): Promise<void>;
  /** Answers every held call with `answer`; returns how many were still waiting. */
  release(answer: Exclude<Answer, 'hold' | { readonly partial: string }>): number;
  /** Calls held and not answered yet (their callers may have gone). */
  held(): number;
  close(): Promise<void>;
}

interface Held {
  readonly res: ServerResponse;
  readonly call: BackendCall;
}

function write(res: ServerResponse, a: Exclude<Answer, 'hold'>): void {
  // A partial answer was written already: its caller is waiting for the rest, which never comes.
  if (res.headersSent) return void res.destroy();
  if (res.destroyed || res.writableEnded) return;
  const status = a.status ?? 200;
  if ('json' in a) {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(a.json));
  } else if ('body' in a) {
    res.writeHead(status, { 'content-type': a.contentType ?? 'application/json', 'content-length': Buffer.byteLength(a.body) }).end(a.body);
  } else if ('partial' in a) {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.write(a.partial);
  } else {
    res.writeHead(status, { 'content-type': 'application/json' });
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let left = a.streamBytes;
    const pump = (): void => {
      while (left > 0 && !res.destroyed) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void res.once('drain', pump);
      }
      if (!res.destroyed) res.end();
    };
    res.write('{"user":"');
    pump();
  }
}

export async function startBackend(): Promise<Backend> {
  const calls: BackendCall[] = [];
  const answers = new Map<string, Answer | ((call: BackendCall) => Answer)>();
  const holding: Held[] = [];
  const waiters: Waiter<BackendCall>[] = [];
  const connIds = new WeakMap<Socket, number>();
  let nextConn = 1;

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        body = { unparsed: Buffer.concat(chunks).toString('utf8') };
      }
      let abandoned = false;
      let markGone: () => void = () => undefined;
      const gone = new Promise<void>((resolve) => (markGone = resolve));
      const call: BackendCall = {
        path: req.url ?? '',
        headers: req.headers,
        body,
        connection: connIds.get(req.socket) ?? 0,
        get abandoned() {
          return abandoned;
        },
        gone,
      };
      res.on('close', () => {
        if (!res.writableFinished) {
          abandoned = true;
          markGone();
        }
      });
      calls.push(call);
      const spec = answers.get(call.path) ?? { status: 500, json: { error: 'no answer set' } };
      const a = typeof spec === 'function' ? spec(call) : spec;
      if (a === 'hold') holding.push({ res, call });
      else write(res, a);
      // Waiters count calls: wake each whose count is reached.
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!;
        if (w.pred(call)) {
          waiters.splice(i, 1);
          w.resolve(call);
        }
      }
    });
  });
  server.on('connection', (socket) => connIds.set(socket, nextConn++));
  const port = await listenOnLoopback(server);

  const count = (path: string | undefined): number => calls.filter((c) => path === undefined || c.path === path).length;

  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    on(path, answer) {
      answers.set(path, answer);
    },
    async waitForCalls(n, path, timeoutMs = 15_000) {
      if (count(path) >= n) return;
      await addWaiter(waiters, () => count(path) >= n, timeoutMs, () => new Error(`backend: ${count(path)} of ${n} calls to ${path ?? 'any path'} within ${timeoutMs} ms`));
    },
    release(answer) {
      const waiting = holding.splice(0);
      let n = 0;
      for (const h of waiting) {
        if (!h.call.abandoned) n++;
        write(h.res, answer);
      }
      return n;
    },
    held: () => holding.filter((h) => !h.call.abandoned).length,
    async close() {
      for (const h of holding.splice(0)) h.res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
