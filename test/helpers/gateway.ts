/**
 * Starts real gateway processes (`node dist/main.js`) configured by env only,
 * on free loopback ports, and reads their JSON log lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { registerPubgate, unregisterPubgate } from './openapi.js';
import { addWaiter, type Waiter } from './waiters.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MAIN = `${ROOT}dist/main.js`;
export const TEST_SECRET = 'test-secret-0123456789abcdef0123456789';
export const TEST_API_KEY = 'test-api-key-1';

export interface LogLine {
  readonly level: string;
  readonly msg: string;
  readonly [k: string]: unknown;
}

export interface GatewayProcess {
  readonly port: number;
  readonly adminPort: number;
  readonly url: string; // ws://127.0.0.1:port/ws
  readonly http: string; // http://127.0.0.1:port
  readonly admin: string; // http://127.0.0.1:adminPort
  readonly proc: ChildProcess;
  readonly lines: LogLine[];
  readonly stderr: string[];
  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export const BASE_ENV: Readonly<Record<string, string>> = {
  PUBGATE_HOST: '127.0.0.1',
  PUBGATE_JWT_SECRETS: TEST_SECRET,
  PUBGATE_API_KEYS: TEST_API_KEY,
  PUBGATE_LOG_LEVEL: 'debug',
  PUBGATE_DRAIN_SECONDS: '0',
};

/** The environment without any PUBGATE_* variable of the caller's shell. */
function cleanEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PUBGATE_') && v !== undefined) out[k] = v;
  return out;
}

/** Runs the gateway with `env` (on top of BASE_ENV unless `bare`), waits until it listens. */
export async function startGateway(env: Record<string, string> = {}, opts: { bare?: boolean } = {}): Promise<GatewayProcess> {
  // Port 0: the gateway binds free ports itself (no window in which another
  // process can take a port picked here) and logs them in its `listening` line.
  const fullEnv = { ...cleanEnv(), ...(opts.bare ? {} : BASE_ENV), PUBGATE_PORT: '0', PUBGATE_ADMIN_PORT: '0', ...env };
  const proc = spawn(process.execPath, [MAIN], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: LogLine[] = [];
  const stderr: string[] = [];
  const waiters: Waiter<LogLine>[] = [];
  createInterface({ input: proc.stdout! }).on('line', (text) => {
    let l: LogLine;
    try {
      l = JSON.parse(text) as LogLine;
    } catch {
      l = { level: 'raw', msg: text };
    }
    lines.push(l);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!;
      if (w.pred(l)) {
        waiters.splice(i, 1);
        w.resolve(l);
      }
    }
  });
  createInterface({ input: proc.stderr! }).on('line', (t) => stderr.push(t));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));

  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> => {
    const found = lines.find(pred);
    if (found) return Promise.resolve(found);
    return addWaiter(waiters, pred, timeoutMs, () => new Error(`log line not seen in ${timeoutMs} ms; stderr: ${stderr.join('\n')}`));
  };

  const started = waitForLog((l) => l.msg === 'listening');
  const result = await Promise.race([started, exited.then((code) => ({ exitCode: code }))]);
  if ('exitCode' in result) {
    throw new Error(`gateway exited with ${String(result.exitCode)} before listening: ${stderr.join('\n')}`);
  }
  const port = Number(result.port);
  const adminPort = Number(result.adminPort);
  // Its answers are checked against docs/openapi.yaml (test/helpers/openapi.ts) until it exits.
  registerPubgate(port, 'public', proc);
  registerPubgate(adminPort, 'admin', proc);
  void exited.then(() => {
    unregisterPubgate(port, proc);
    unregisterPubgate(adminPort, proc);
  });
  return {
    port,
    adminPort,
    url: `ws://127.0.0.1:${port}/ws`,
    http: `http://127.0.0.1:${port}`,
    admin: `http://127.0.0.1:${adminPort}`,
    proc,
    lines,
    stderr,
    waitForLog,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Runs `node dist/main.js` to completion (for invalid-config tests). */
export async function runGateway(env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const proc = spawn(process.execPath, [MAIN], { env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const [code] = (await once(proc, 'exit')) as [number | null];
  return { code, stderr, stdout };
}

/** Reads one Prometheus sample value (sum over series that match all labels). */
export async function metric(admin: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

export function publish(gw: GatewayProcess, body: unknown, key = TEST_API_KEY): Promise<Response> {
  return fetch(`${gw.http}/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
