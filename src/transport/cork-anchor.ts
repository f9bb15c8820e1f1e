/**
 * Asynchronous WebSocket upgrades without uWS issue #1928.
 *
 * An upgrade completed after an `await` (the connect proxy's answer, a JWKS
 * lookup) must be corked. `res.cork(() => res.upgrade(...))` is what uWS
 * documents, but in the uWS build pubgate ships (uws-pack 20.0.8, upstream
 * ~v20.49) `HttpResponse::cork` decides whether the socket was upgraded by
 * comparing addresses, and the upgrade reallocates the socket smaller, in
 * place: the check misses, and uWS reads the HTTP state of what is now a
 * WebSocket from memory the reallocation freed. When the bytes there happen
 * to say "Connection: close, response done", uWS shuts the new WebSocket down
 * right after its `open` (the client sees its welcome, then 1006). Fixed
 * upstream by uWebSockets PR #1929 (uWebSockets.js >= v20.69), which we
 * cannot install (test/integration/uws-canary.test.ts).
 *
 * The post-upgrade check only runs when the response corks ITSELF. So the
 * upgrade is done while ANOTHER socket is corked: `anchor.cork(() =>
 * res.upgrade(...))`. uWS then writes the 101 and the `open` handler's
 * frames to the upgraded socket directly (one or two more syscalls), and the
 * post-cork logic runs for the anchor, a genuine HTTP socket whose state is
 * real. The anchor is a request this node makes to itself on the admin port,
 * at a path with a random secret made at start, which is never answered (uWS
 * keeps an unanswered GET open without a timeout). If the anchor is lost, it
 * is re-made (backoff 0.1 s to 30 s); meanwhile upgrades fall back to
 * `res.cork`, as before, and the fallbacks are logged (aggregated).
 *
 * Bounded: one anchor; the route refuses a second while one is held.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket as NetSocket } from 'node:net';
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { HttpResponse, TemplatedApp } from './uws.js';

/** Runs `fn` (which upgrades `res`) corked on another socket when one is available, else corked on `res`. */
export type AsyncCork = (res: HttpResponse, fn: () => void) => void;

export interface CorkAnchor {
  readonly cork: AsyncCork;
  /** Connects to the anchor route at host:port (the admin listener) and keeps it connected until stop(). */
  start(host: string, port: number): void;
  stop(): void;
  /** Whether an anchor is held now. */
  held(): boolean;
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 30_000;

/** The address to reach a listener bound to `host` from this process. */
export function loopbackFor(host: string): string {
  if (host === '' || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::' || host === '[::]') return '::1';
  return host;
}

/** Registers the anchor route on `app` (call before any catch-all route). */
export function createCorkAnchor(app: TemplatedApp, log: Log): CorkAnchor {
  const path = `/__pubgate/cork-anchor/${randomBytes(16).toString('hex')}`;
  let anchor: HttpResponse | undefined;
  let socket: NetSocket | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let retryMs = RETRY_MIN_MS;
  let target: { host: string; port: number } | undefined;
  const fallbacks = new LogTally(log, 'warn', 'asynchronous upgrades corked on themselves (no cork anchor: uWS #1928 may cut them)', { component: 'transport' });

  app.get(path, (res) => {
    if (anchor !== undefined) {
      res.cork(() => res.writeStatus('409 Conflict').end('', true));
      return;
    }
    const held = res;
    anchor = held;
    retryMs = RETRY_MIN_MS;
    held.onAborted(() => {
      if (anchor === held) anchor = undefined;
    });
  });

  function reconnectLater(): void {
    if (!running || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      open();
    }, retryMs);
    timer.unref();
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  }

  function open(): void {
    if (!running || target === undefined) return;
    const s = connect({ host: target.host, port: target.port });
    socket = s;
    s.unref();
    s.setNoDelay(true);
    s.on('error', (e) => log.debug({ err: e }, 'cork anchor connection failed'));
    s.on('data', () => undefined); // never answered; anything else is ignored
    s.on('close', () => {
      if (socket === s) socket = undefined;
      reconnectLater();
    });
    s.write(`GET ${path} HTTP/1.1\r\nHost: ${target.host.includes(':') ? `[${target.host}]` : target.host}\r\n\r\n`);
  }

  return {
    cork(res, fn) {
      const a = anchor;
      if (a === undefined) {
        if (running) fallbacks.add('no_anchor', 1, 'the anchor connection is being re-made');
        res.cork(fn);
        return;
      }
      a.cork(fn);
    },
    start(host, port) {
      running = true;
      target = { host: loopbackFor(host), port };
      open();
    },
    stop() {
      running = false;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      socket?.destroy();
      socket = undefined;
      fallbacks.flush();
    },
    held: () => anchor !== undefined,
  };
}
