/**
 * Handshake test helpers: a raw HTTP upgrade (any headers, including invalid
 * ones the `ws` client will not send), a condition poller, and log lookups
 * scoped to what happened after a mark.
 */
import { randomBytes } from 'node:crypto';
import { request, type IncomingHttpHeaders } from 'node:http';
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

/** Waits for the `handshake rejected` warn line written after `mark`, and checks its code (and reason). */
export async function expectRejectLogged(gw: GatewayProcess, mark: number, code: string, reason?: string): Promise<LogLine> {
  const line = await logAfter(gw, mark, (l) => l.msg === 'handshake rejected');
  expect(line.level).toBe('warn');
  expect(line.code).toBe(code);
  if (reason !== undefined) expect(line.reason).toBe(reason);
  return line;
}
