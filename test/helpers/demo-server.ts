/**
 * Runs the demo server (examples/demo/server.mjs) as a child process on a free
 * port and reads its `listening` line. Stopped by its own PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ROOT, TEST_API_KEY, TEST_SECRET } from './gateway.js';

export interface DemoServer {
  readonly url: string; // http://127.0.0.1:port/
  readonly origin: string; // http://127.0.0.1:port
  readonly port: number;
  readonly proc: ChildProcess;
  readonly output: string[];
  stop(): Promise<void>;
}

export async function startDemo(env: Record<string, string>): Promise<DemoServer> {
  const proc = spawn(process.execPath, [`${ROOT}examples/demo/server.mjs`], {
    env: { ...process.env, DEMO_HOST: '127.0.0.1', DEMO_PORT: '0', PUBGATE_API_KEY: TEST_API_KEY, PUBGATE_JWT_SECRET: TEST_SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  proc.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const listening = new Promise<{ port: number; url: string }>((resolve) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      output.push(line);
      try {
        const l = JSON.parse(line) as { msg?: string; port?: number; url?: string };
        if (l.msg === 'listening' && typeof l.port === 'number' && typeof l.url === 'string') resolve({ port: l.port, url: l.url });
      } catch {
        // not a log line
      }
    });
  });
  const started = await Promise.race([listening, exited.then((code) => ({ exitCode: code }))]);
  if ('exitCode' in started) throw new Error(`demo server exited with ${String(started.exitCode)}: ${output.join('\n')}`);
  return {
    url: started.url,
    origin: started.url.replace(/\/$/, ''),
    port: started.port,
    proc,
    output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
