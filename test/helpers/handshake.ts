/**
 * Handshake test helpers: a raw HTTP upgrade (any headers, including invalid
 * ones the `ws` client will not send), a condition poller, and log lookups
 * scoped to what happened after a mark.
 */
import { randomBytes } from 'node:crypto';
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { expect } from 'vitest';
import { startGateway, type GatewayProcess, type LogLine } from './gateway.js';

export interface RawAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** Response body text ('' for a 101). */
  readonly body: string;
}

/**
 * Sends one `GET` with WebSocket upgrade headers (version 13, a fresh key)
 * plus `headers`; a header set to `undefined` is left out. Resolves with the
 * status and headers of the answer; a 101 socket is destroyed at once.
 */
export function rawUpgrade(url: string, headers: Record<string, string | undefined> = {}): Promise<RawAnswer> {
  const all: Record<string, string | undefined> = {
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': randomBytes(16).toString('base64'),
    ...headers,
  };
  const sent: Record<string, string> = {};
  for (const [k, v] of Object.entries(all)) if (v !== undefined) sent[k] = v;
  const u = new URL(url.replace(/^ws/, 'http'));
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'GET', headers: sent, agent: false });
    req.once('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' });
    });
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

/**
 * The text of a `GET /ws` upgrade request: Host, Upgrade, Connection, version
 * 13 and a key (fresh unless given), then `lines` as written (repeated names,
 * odd spellings and all), then `body` after the blank line. Nothing is
 * normalised.
 */
export function upgradeRequestText(o: { host: string; key?: string; lines?: readonly string[]; body?: string }): string {
  const head = [
    'GET /ws HTTP/1.1',
    `Host: ${o.host}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    'Sec-WebSocket-Version: 13',
    `Sec-WebSocket-Key: ${o.key ?? randomBytes(16).toString('base64')}`,
    ...(o.lines ?? []),
  ];
  return `${head.join('\r\n')}\r\n\r\n${o.body ?? ''}`;
}

export interface RawExchange {
  /** Status of the first response (0 when none came). */
  readonly status: number;
  /** Its header lines, names lower-cased. */
  readonly headers: Readonly<Record<string, string>>;
  /** Its body (by Content-Length). */
  readonly body: string;
  /** Everything the server sent. */
  readonly raw: string;
  /** True when the server closed the connection (after a non-101 answer), false for a 101 or when it stayed open. */
  readonly closedByServer: boolean;
}

/**
 * Writes `text` as is on a new TCP connection and reads the answer. A 101
 * resolves at once (the socket is destroyed); any other answer resolves when
 * the server closes the connection, or after `openMs` with `closedByServer`
 * false if it keeps it open.
 */
export function rawExchange(port: number, text: string, o: { host?: string; openMs?: number } = {}): Promise<RawExchange> {
  return new Promise((resolve, reject) => {
    const sock = tcpConnect(port, o.host ?? '127.0.0.1', () => sock.write(text));
    let raw = '';
    let settled = false;
    const finish = (closedByServer: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const end = raw.indexOf('\r\n\r\n');
      const headLines = (end < 0 ? raw : raw.slice(0, end)).split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(headLines[0] ?? '')?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const l of headLines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const rest = end < 0 ? '' : raw.slice(end + 4);
      const body = headers['content-length'] !== undefined ? rest.slice(0, Number(headers['content-length'])) : rest;
      resolve({ status, headers, body, raw, closedByServer });
    };
    const timer = setTimeout(() => finish(false), o.openMs ?? 5_000);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      raw += d;
      if (raw.startsWith('HTTP/1.1 101') && raw.includes('\r\n\r\n')) finish(false);
    });
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    // A reset after an answer is still a close by the server ('close' follows); before any answer it is an error.
    sock.on('error', (e) => {
      if (!settled && raw === '') {
        settled = true;
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}

/**
 * Starts several gateways at once; if one cannot
 * start, stops the others before throwing, so no process outlives the file.
 */
export async function startGateways<const T extends readonly Record<string, string>[]>(
  envs: T,
): Promise<{ -readonly [K in keyof T]: GatewayProcess }> {
  const results = await Promise.allSettled(envs.map((env) => startGateway(env)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(results.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    throw failed.reason;
  }
  return results.map((r) => (r as PromiseFulfilledResult<GatewayProcess>).value) as { -readonly [K in keyof T]: GatewayProcess };
}

/** Polls `check` until it returns true; fails after `timeoutMs`. For state with no event (metrics). */
export async function waitUntil(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A position in the gateway's log: lines after it are what the next action caused. */
export const logMark = (gw: GatewayProcess): number => gw.lines.length;

/** Waits for a log line written after `mark` that matches. */
export function logAfter(gw: GatewayProcess, mark: number, pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine> {
  return gw.waitForLog((l) => gw.lines.indexOf(l) >= mark && pred(l), timeoutMs);
}

/**
 * Waits for the `handshake rejected` line written after `mark`, and checks its
 * code (and reason). The line is `warn` for the first rejection of its reason
 * in a 10 s interval and `debug` for the others (src/transport/admission.ts;
 * the test gateways log at debug, so every rejection has its line).
 */
export async function expectRejectLogged(gw: GatewayProcess, mark: number, code: string, reason?: string): Promise<LogLine> {
  const line = await logAfter(gw, mark, (l) => l.msg === 'handshake rejected');
  expect(['warn', 'debug']).toContain(line.level);
  expect(line.code).toBe(code);
  if (reason !== undefined) expect(line.reason).toBe(reason);
  return line;
}
