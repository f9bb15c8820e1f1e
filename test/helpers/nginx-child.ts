/**
 * A throwaway nginx for tests: its own prefix directory and config, one
 * process (master_process off, daemon off) on a free loopback port, run and
 * stopped like the other proxy processes (startProxy). Used to put a correctly
 * or deliberately wrongly configured reverse proxy in front of a gateway, and
 * to fix it while it runs (reload(): new server block, `nginx -s reload`;
 * needs `masterProcess`: a single-process nginx stops serving after a reload).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';
import { startProxy } from './proxies.js';
import { pollUntil } from './redis.js';
import { findTool } from './tools.js';

export const NGINX = findTool('nginx');

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

export interface NginxChild {
  readonly port: number;
  readonly dir: string;
  url(pathname?: string): string;
  errorLog(): string;
  /**
   * Replaces the server block's body, checks it (nginx -t) and reloads
   * (nginx -s reload). Resolves once the master has started a worker on the
   * new config (the old worker may still accept for a moment: check the
   * effect); requests already in flight (an event stream) stay on the old one.
   */
  reload(server: string): Promise<void>;
  stop(): Promise<void>;
}

export interface NginxChildOptions {
  /** Listen on this port (default: a free one), e.g. one chosen before the gateway is told its Origin. */
  readonly port?: number;
  /**
   * Run a master process with one worker (still in the foreground), as nginx
   * runs in production, so that reload() works: the master starts new workers
   * on the new config and the old worker keeps its open connections (an
   * event stream) until they end.
   */
  readonly masterProcess?: boolean;
}

/**
 * Starts nginx with `server` as the body of its one `server {}` block (after
 * the listen line). `$upstream` in it is replaced by the upstream name
 * `pubgate`, which points at 127.0.0.1:upstreamPort.
 */
export async function startNginx(upstreamPort: number, server: string, opts: NginxChildOptions = {}): Promise<NginxChild> {
  if (!NGINX) throw new Error('nginx is not installed');
  const nginx = NGINX;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pubgate-nginx-'));
  for (const d of ['tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi', 'logs']) mkdirSync(path.join(dir, d), { recursive: true });
  const port = opts.port ?? (await freePort());
  const render = (body: string): string => `
daemon off;
master_process ${opts.masterProcess ? 'on' : 'off'};
${opts.masterProcess && isRoot ? '# The worker reads the test\'s temp dirs (mode 0700) as the user that made them.\nuser root root;' : ''}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log info;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  upstream pubgate { server 127.0.0.1:${upstreamPort}; }
  server {
    listen 127.0.0.1:${port};
${body}
  }
}
`;
  const file = path.join(dir, 'nginx.conf');
  const base = ['-p', dir, '-e', `${dir}/logs/error.log`, '-c', file];
  const writeChecked = (body: string): void => {
    writeFileSync(file, render(body));
    const test = spawnSync(nginx, [...base, '-t'], { encoding: 'utf8' });
    if (test.status !== 0) throw new Error(`nginx -t failed: ${test.stderr}`);
  };
  writeChecked(server);
  const proc = await startProxy(nginx, base, [port], 'nginx');
  // The master logs this for every worker it starts: once at start, once per reload.
  const workersStarted = (): number => (readFileSync(`${dir}/logs/error.log`, 'utf8').match(/start worker process/g) ?? []).length;
  return {
    port,
    dir,
    url: (pathname = '/ws') => `ws://127.0.0.1:${port}${pathname}`,
    errorLog: () => spawnSync('tail', ['-n', '30', `${dir}/logs/error.log`], { encoding: 'utf8' }).stdout,
    async reload(body: string) {
      if (!opts.masterProcess) throw new Error('reload() needs startNginx(..., { masterProcess: true })');
      writeChecked(body);
      const before = workersStarted();
      const r = spawnSync(nginx, [...base, '-s', 'reload'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`nginx -s reload failed: ${r.stderr}`);
      await pollUntil(() => workersStarted() > before, 'nginx to start a worker on the new config after -s reload', 10_000);
    },
    async stop() {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
