/**
 * Records everything a `ws` socket receives, in order, independently of what
 * a test has already consumed through `Client.next` — so a test can prove that
 * something did NOT arrive (a second reply, a duplicate message) by checking
 * the full sequence after a later sentinel event. Also counts WebSocket pings
 * and opens sockets with options the Client helper does not expose (autoPong).
 */
import WebSocket from 'ws';
import type { Client, Frame } from './client.js';

export interface Recording {
  /** Every text frame received since recording started, parsed, in order. */
  readonly frames: readonly Frame[];
  /** The same frames as raw text. */
  readonly raw: readonly string[];
  /** WebSocket ping frames received since recording started. */
  readonly pings: number;
  /** Position to pass to `since`. */
  mark(): number;
  since(mark: number): Frame[];
  /** Resolves with the first frame at or after `from` that matches (past or future). */
  waitFor(pred: (f: Frame) => boolean, from?: number, timeoutMs?: number): Promise<Frame>;
  /** Resolves once `n` pings have been received in total. */
  waitForPings(n: number, timeoutMs?: number): Promise<void>;
}

export function record(ws: WebSocket): Recording {
  const frames: Frame[] = [];
  const raw: string[] = [];
  let pings = 0;
  const frameWaiters = new Set<() => void>();
  const pingWaiters = new Set<() => void>();
  ws.on('message', (data, isBinary) => {
    const text = data.toString();
    raw.push(text);
    // The server sends only JSON text; anything else is recorded so an assertion fails on it.
    let f: Frame;
    try {
      f = isBinary ? { type: '<binary>', text } : (JSON.parse(text) as Frame);
    } catch {
      f = { type: '<not json>', text };
    }
    frames.push(f);
    for (const w of [...frameWaiters]) w();
  });
  ws.on('ping', () => {
    pings++;
    for (const w of [...pingWaiters]) w();
  });

  function until(waiters: Set<() => void>, done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!done()) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${what} not seen within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.add(check);
    });
  }

  return {
    frames,
    raw,
    get pings() {
      return pings;
    },
    mark: () => frames.length,
    since: (m) => frames.slice(m),
    async waitFor(pred, from = 0, timeoutMs = 10_000) {
      let found: Frame | undefined;
      await until(frameWaiters, () => (found = frames.slice(from).find(pred)) !== undefined, timeoutMs, 'matching frame');
      return found!;
    },
    waitForPings: (n, timeoutMs = 10_000) => until(pingWaiters, () => pings >= n, timeoutMs, `${n} pings`),
  };
}

/** Rejects if `p` has not settled within `ms` (turns a hang into a readable failure). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Sends a ping with `id` and reports whether its reply or a close came first:
 * 'open' when the connection still answers, otherwise 'closed <code>'.
 */
export async function probe(c: Client, id: number, timeoutMs = 10_000): Promise<string> {
  if (c.ws.readyState !== WebSocket.OPEN) return `closed (readyState ${c.ws.readyState})`;
  const reply = c.request({ type: 'ping', id }, timeoutMs).then((f) => (f.error === undefined ? 'open' : `error reply ${JSON.stringify(f.error)}`));
  reply.catch(() => undefined); // the close may win the race; the reply's timeout must not go unhandled
  return Promise.race([reply, c.closed.then((x) => `closed ${x.code}`)]);
}

export interface RawSocket {
  readonly ws: WebSocket;
  readonly rec: Recording;
  readonly welcome: Frame;
  readonly closed: Promise<{ code: number; reason: string }>;
  send(frame: unknown): void;
}

/**
 * A `ws` socket with the token in the subprotocol, recording from before the
 * upgrade (the welcome included). `autoPong: false` makes a client that never
 * answers WebSocket pings (ws >= 8.14).
 */
export async function openSocket(url: string, jwt: string, opts: { autoPong?: boolean } = {}): Promise<RawSocket> {
  const ws = new WebSocket(url, ['pubgate.v1', `bearer.${jwt}`], { perMessageDeflate: false, autoPong: opts.autoPong ?? true });
  const rec = record(ws);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
  });
  ws.on('error', () => undefined); // a reset after close is reported through `closed`
  const welcome = await rec.waitFor((f) => f.type === 'welcome');
  return { ws, rec, welcome, closed, send: (f) => ws.send(typeof f === 'string' ? f : JSON.stringify(f)) };
}
