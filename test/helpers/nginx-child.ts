/**
 * A throwaway nginx for tests: its own prefix directory and config, one
 * process (master_process off, daemon off) on a free loopback port, run and
 * stopped like the other proxy processes (startProxy). Used to put a correctly
 * or deliberately wrongly configured reverse proxy in front of a gateway.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';
import { startProxy } from './proxies.js';
import { findTool } from './tools.js';

export const NGINX = findTool('nginx');

export interface NginxChild {
  readonly port: number;
  readonly dir: string;
  url(pathname?: string): string;
  errorLog(): string;
  stop(): Promise<void>;
}

/**
 * Starts nginx with `server` as the body of its one `server {}` block (after
 * the listen line). `$upstream` in it is replaced by the upstream name
 * `pubgate`, which points at 127.0.0.1:upstreamPort.
 */
export async function startNginx(upstreamPort: number, server: string): Promise<NginxChild> {
  if (!NGINX) throw new Error('nginx is not installed');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pubgate-nginx-'));
  for (const d of ['tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi', 'logs']) mkdirSync(path.join(dir, d), { recursive: true });
  const port = await freePort();
  const conf = `
daemon off;
master_process off;
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
${server}
  }
}
`;
  const file = path.join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const test = spawnSync(NGINX, ['-p', dir, '-e', `${dir}/logs/error.log`, '-c', file, '-t'], { encoding: 'utf8' });
  if (test.status !== 0) throw new Error(`nginx -t failed: ${test.stderr}`);
  const proc = await startProxy(NGINX, ['-p', dir, '-e', `${dir}/logs/error.log`, '-c', file], [port], 'nginx');
  return {
    port,
    dir,
    url: (pathname = '/ws') => `ws://127.0.0.1:${port}${pathname}`,
    errorLog: () => spawnSync('tail', ['-n', '30', `${dir}/logs/error.log`], { encoding: 'utf8' }).stdout,
    async stop() {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
