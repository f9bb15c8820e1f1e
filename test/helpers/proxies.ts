/**
 * The shipped load balancer configs (deploy/nginx, deploy/apache,
 * deploy/haproxy, deploy/compose) rendered into temp dirs for tests: the
 * deployment-specific values (gateway addresses, listen ports, certificate
 * paths, log and pid paths, timeouts) are replaced, everything else is the
 * file as shipped. Each replacement must match exactly as often as expected,
 * so a config that drifts from what the tests assume fails loudly instead of
 * being tested half-rendered.
 *
 * Also: a self-signed certificate made with openssl, and running each proxy as a
 * foreground child process that is killed when the test process exits.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './gateway.js';
import { pollUntil, trackProcess } from './redis.js';
import { findTool } from './tools.js';

export const DEPLOY = path.join(ROOT, 'deploy');

// ---- tools -------------------------------------------------------------------

// The tool list and lookup live in tools.ts; findTool and missingTool stay importable from here.
export { findTool, missingTool } from './tools.js';

export interface RunResult {
  readonly code: number | null;
  readonly output: string;
}

/** Runs a config check synchronously; output is stdout and stderr together. */
export function run(cmd: string, args: readonly string[], env?: Record<string, string>): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000, env: env ? { ...process.env, ...env } : process.env });
  return { code: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

// ---- files -------------------------------------------------------------------

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** A temp dir that worker processes running as another user can traverse. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

export function removeDir(dir: string | undefined): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
}

export function readDeploy(rel: string): string {
  return readFileSync(path.join(DEPLOY, rel), 'utf8');
}

/** Replaces every match of `pattern` (made global); throws unless it matched exactly `expected` times. */
export function replaceExactly(
  text: string,
  pattern: RegExp | string,
  replacement: string | ((m: string, ...groups: string[]) => string),
  expected: number,
  what: string,
): string {
  const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'g') : new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g');
  const found = text.match(re)?.length ?? 0;
  if (found !== expected) throw new Error(`${what}: expected ${expected} match(es) of ${String(pattern)}, found ${found}`);
  return typeof replacement === 'string' ? text.replace(re, () => replacement) : text.replace(re, (m: string, ...rest: unknown[]) => replacement(m, ...rest.filter((x): x is string => typeof x === 'string')));
}

// ---- certificates --------------------------------------------------------------

export interface Cert {
  readonly cert: string; // PEM file
  readonly key: string; // PEM file
  readonly combined: string; // cert then key in one file (HAProxy)
  readonly certPem: string;
  /** SHA-256 fingerprint as Node's TLS peer certificate reports it (AA:BB:...). */
  readonly fingerprint256: string;
}

/** A self-signed certificate (EC P-256, valid two days) for the given DNS names and IPs. */
export function makeCert(dir: string, names: readonly string[], file = 'server'): Cert {
  const openssl = findTool('openssl');
  if (!openssl) throw new Error('openssl not found (Debian package "openssl")');
  const cert = path.join(dir, `${file}.crt`);
  const key = path.join(dir, `${file}.key`);
  const san = names.map((n) => (net.isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  execFileSync(openssl, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-sha256', '-days', '2',
    '-keyout', key, '-out', cert, '-subj', `/CN=${names[0] ?? 'localhost'}`, '-addext', `subjectAltName=${san}`,
    '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
    '-addext', 'extendedKeyUsage=serverAuth',
  ], { stdio: 'pipe' });
  chmodSync(key, 0o644); // read by proxy processes that may run as another user
  const certPem = readFileSync(cert, 'utf8');
  const combined = path.join(dir, `${file}.pem`);
  writeFileSync(combined, certPem + readFileSync(key, 'utf8'));
  const fingerprint256 = new X509Certificate(certPem).fingerprint256;
  return { cert, key, combined, certPem, fingerprint256 };
}

// ---- processes -----------------------------------------------------------------

export interface ProxyProcess {
  readonly proc: ChildProcess;
  /** stdout and stderr so far (the last 16 KiB). */
  output(): string;
  /** Stops the process (SIGTERM, SIGKILL after 10 s) and waits for it to exit. */
  stop(): Promise<void>;
}

/** True once something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Starts a foreground proxy and waits until every port in `ports` accepts connections. */
export async function startProxy(cmd: string, args: readonly string[], ports: readonly number[], what: string): Promise<ProxyProcess> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  trackProcess(proc);
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-16_384);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
  };
  try {
    await pollUntil(async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${String(proc.exitCode ?? proc.signalCode)}): ${out}`);
      for (const p of ports) if (!(await portOpen(p))) return false;
      return true;
    }, `${what} to listen on ${ports.join(', ')}`, 20_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { proc, output: () => out, stop };
}

// ---- nginx ---------------------------------------------------------------------

export interface NginxOptions {
  /** Gateway public ports on 127.0.0.1, in place of the 10.0.1.x nodes. */
  readonly upstreams: readonly number[];
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly cert: Cert;
  /** Seconds, in place of the 75 s proxy_read_timeout of the /ws, /app/ (Pusher) and /sse locations. */
  readonly readTimeoutSec?: number;
  /** Drop the Upgrade/Connection proxy_set_header lines of the WebSocket locations, /ws and /app/ (HTTP/1.1 kept). */
  readonly withoutUpgradeHeaders?: boolean;
  /** Drop the WebSocket locations' proxy_http_version 1.1 (nginx then speaks HTTP/1.0 to the gateway). */
  readonly withoutHttp11?: boolean;
}

export interface RenderedNginx {
  readonly dir: string;
  readonly conf: string;
  readonly accessLog: string;
  readonly errorLog: string;
  /** Arguments for `nginx` (add -t to check, or run as is in the foreground). */
  readonly args: readonly string[];
}

/** The nginx main config's deployment-specific lines, rewritten for a test prefix `dir`. */
function renderNginxMain(text: string, dir: string): string {
  let t = replaceExactly(text, /^user www-data;$/m, isRoot ? 'user nobody nogroup;' : '# user: not root', 1, 'nginx.conf user');
  t = replaceExactly(t, /^pid \/run\/nginx\.pid;$/m, `pid ${dir}/nginx.pid;`, 1, 'nginx.conf pid');
  t = replaceExactly(t, /^error_log \S+ warn;$/m, `error_log ${dir}/error.log info;`, 1, 'nginx.conf error_log');
  t = replaceExactly(t, /^worker_processes auto;$/m, 'worker_processes 1;', 1, 'nginx.conf worker_processes');
  // Only root can raise the descriptor limit past the hard limit.
  if (!isRoot) t = replaceExactly(t, /^worker_rlimit_nofile \d+;$/m, '# worker_rlimit_nofile: not root', 1, 'nginx.conf worker_rlimit_nofile');
  // Debian's build puts temp files under /var/lib/nginx: keep them in the prefix.
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((k) => `    ${k}_temp_path ${dir}/tmp/${k};`)
    .join('\n');
  t = replaceExactly(t, /^http \{$/m, `http {\n${temps}`, 1, 'nginx.conf http block');
  return t;
}

function nginxArgs(dir: string, conf: string): string[] {
  return ['-p', `${dir}/`, '-c', conf, '-e', `${dir}/error.log`, '-g', 'daemon off;'];
}

/** deploy/nginx/nginx.conf + conf.d/pubgate.conf, rendered for 127.0.0.1 ports. */
export function renderNginx(o: NginxOptions): RenderedNginx {
  const dir = tempDir('pubgate-nginx-');
  mkdirSync(path.join(dir, 'conf.d'));
  mkdirSync(path.join(dir, 'tmp'));
  chmodSync(path.join(dir, 'tmp'), 0o777);
  const accessLog = path.join(dir, 'access.log');
  const main = renderNginxMain(readDeploy('nginx/nginx.conf'), dir);
  let site = readDeploy('nginx/conf.d/pubgate.conf');
  const servers = o.upstreams.map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=5s;`).join('\n');
  let first = true;
  site = replaceExactly(site, /^ {4}server 10\.0\.1\.\d+:8080 [^;\n]*;$/m, () => {
    const r = first ? servers : '';
    first = false;
    return r;
  }, 3, 'pubgate.conf upstream servers');
  site = replaceExactly(site, /^ {4}listen 443 ssl;$/m, `    listen 127.0.0.1:${o.httpsPort} ssl;`, 2, 'pubgate.conf listen 443');
  site = replaceExactly(site, /^ {4}listen \[::\]:443 ssl;\n/m, '', 2, 'pubgate.conf listen [::]:443');
  site = replaceExactly(site, /^ {4}listen 80;$/m, `    listen 127.0.0.1:${o.httpPort};`, 1, 'pubgate.conf listen 80');
  site = replaceExactly(site, /^ {4}listen \[::\]:80;\n/m, '', 1, 'pubgate.conf listen [::]:80');
  site = replaceExactly(site, /ssl_certificate {5}\S+;/, `ssl_certificate     ${o.cert.cert};`, 2, 'pubgate.conf ssl_certificate');
  site = replaceExactly(site, /ssl_certificate_key \S+;/, `ssl_certificate_key ${o.cert.key};`, 2, 'pubgate.conf ssl_certificate_key');
  site = replaceExactly(site, /access_log \/var\/log\/nginx\/pubgate-access\.log /, `access_log ${accessLog} `, 3, 'pubgate.conf access_log');
  if (o.readTimeoutSec !== undefined) {
    site = replaceExactly(site, 'proxy_read_timeout 75s;', `proxy_read_timeout ${o.readTimeoutSec}s;`, 3, 'pubgate.conf proxy_read_timeout (/ws, /app/ and /sse)');
  }
  if (o.withoutHttp11) {
    site = replaceExactly(site, /^ {8}proxy_http_version 1\.1;\n(?= {8}proxy_set_header Upgrade)/m, '', 2, 'pubgate.conf proxy_http_version (/ws and /app/)');
  }
  if (o.withoutUpgradeHeaders) {
    site = replaceExactly(site, /^ {8}proxy_set_header (Upgrade|Connection \$connection_upgrade)[^\n]*\n/m, '', 4, 'pubgate.conf upgrade headers (/ws and /app/)');
  }
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(conf, main);
  writeFileSync(path.join(dir, 'conf.d', 'pubgate.conf'), site);
  return { dir, conf, accessLog, errorLog: path.join(dir, 'error.log'), args: nginxArgs(dir, conf) };
}

/** deploy/compose/nginx-pubgate.conf inside a minimal main config, gw1..gw3 → 127.0.0.1 ports. */
export function renderComposeNginx(upstreams: readonly [number, number, number], httpPort: number): RenderedNginx {
  const dir = tempDir('pubgate-nginx-compose-');
  mkdirSync(path.join(dir, 'tmp'));
  chmodSync(path.join(dir, 'tmp'), 0o777);
  const accessLog = path.join(dir, 'access.log');
  let site = readDeploy('compose/nginx-pubgate.conf');
  site = replaceExactly(site, /server gw([123]):8080/, (_m, n) => `server 127.0.0.1:${upstreams[Number(n) - 1]}`, 3, 'compose nginx upstreams');
  site = replaceExactly(site, /^ {4}listen 80( default_server)?;$/m, (m) => m.replace('listen 80', `listen 127.0.0.1:${httpPort}`), 3, 'compose nginx listen');
  site = replaceExactly(site, 'access_log /dev/stdout ', `access_log ${accessLog} `, 1, 'compose nginx access_log');
  const main = [
    isRoot ? 'user nobody nogroup;' : '',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log info;`,
    'events { worker_connections 1024; }',
    'http {',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/tmp/${k};`),
    '  include pubgate.conf;',
    '}',
    '',
  ].join('\n');
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(conf, main);
  writeFileSync(path.join(dir, 'pubgate.conf'), site);
  return { dir, conf, accessLog, errorLog: path.join(dir, 'error.log'), args: nginxArgs(dir, conf) };
}

// ---- Apache ----------------------------------------------------------------------

export interface ApacheOptions {
  readonly upstreams: readonly number[];
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly cert: Cert;
  /** Seconds, in place of the WebSocket workers' timeout=75. */
  readonly tunnelTimeoutSec?: number;
  /** Seconds, in place of the Server-Sent Events workers' timeout=75. */
  readonly sseTimeoutSec?: number;
  /**
   * 'shipped': the file as it is. 'legacy-ws-scheme': the pre-2.4.47 form
   * (`ProxyPass /ws ws://...`, no balancer) — with or without mod_proxy_wstunnel.
   */
  readonly variant?: 'shipped' | 'legacy-ws-scheme';
  /** Modules to leave out of what `a2enmod` in the config's header enables (e.g. ['proxy_wstunnel']). */
  readonly withoutModules?: readonly string[];
}

export interface RenderedApache {
  readonly dir: string;
  readonly conf: string;
  readonly accessLog: string;
  readonly errorLog: string;
  readonly args: readonly string[];
}

/** Enabled in a fresh Debian apache2 install (those the configs need; the rest are compiled in). */
const APACHE_DEBIAN_DEFAULTS = ['mpm_event', 'authz_core', 'authz_host', 'alias', 'mime', 'setenvif'];
/** What a2enmod enables along with a module (the `# Depends:` lines of Debian's mods-available/*.load). */
const APACHE_DEPENDS: Readonly<Record<string, readonly string[]>> = {
  ssl: ['setenvif', 'mime', 'socache_shmcb'],
  proxy_http: ['proxy'],
  proxy_wstunnel: ['proxy'],
  proxy_balancer: ['proxy', 'alias', 'slotmem_shm'],
  lbmethod_bybusyness: ['proxy_balancer'],
  lbmethod_byrequests: ['proxy_balancer'],
};

/** The modules the config's own `a2enmod ...` line enables, with their dependencies and Debian's defaults. */
function apacheModules(site: string): string[] {
  const line = /^#\s+a2enmod (.+)$/m.exec(site)?.[1];
  if (!line) throw new Error('deploy/apache/pubgate.conf: no "# a2enmod ..." line');
  const out = new Set(APACHE_DEBIAN_DEFAULTS);
  for (const m of line.trim().split(/\s+/)) {
    for (const d of APACHE_DEPENDS[m] ?? []) out.add(d);
    out.add(m);
  }
  return [...out];
}

/** A minimal main config (what Debian's apache2.conf + a2enmod would give) including deploy/apache/pubgate.conf. */
export function renderApache(o: ApacheOptions): RenderedApache {
  const dir = tempDir('pubgate-apache-');
  let site = readDeploy('apache/pubgate.conf');
  const enabled = apacheModules(site);
  let first = true;
  site = replaceExactly(site, /^ {4}BalancerMember "http:\/\/10\.0\.1\.\d+:8080" upgrade=websocket timeout=75 [^\n]*$/m, () => {
    const timeout = o.tunnelTimeoutSec ?? 75;
    const r = first
      ? o.upstreams.map((p) => `    BalancerMember "http://127.0.0.1:${p}" upgrade=websocket timeout=${timeout} connectiontimeout=5 retry=5`).join('\n')
      : '';
    first = false;
    return r;
  }, 3, 'apache ws balancer members');
  first = true;
  site = replaceExactly(site, /^ {4}BalancerMember "http:\/\/10\.0\.1\.\d+:8080" flushpackets=on timeout=75 [^\n]*$/m, () => {
    const timeout = o.sseTimeoutSec ?? 75;
    const r = first
      ? o.upstreams.map((p) => `    BalancerMember "http://127.0.0.1:${p}" flushpackets=on timeout=${timeout} connectiontimeout=5 retry=5`).join('\n')
      : '';
    first = false;
    return r;
  }, 3, 'apache sse balancer members');
  first = true;
  site = replaceExactly(site, /^ {4}BalancerMember "http:\/\/10\.0\.1\.\d+:8080" timeout=30 [^\n]*$/m, () => {
    const r = first ? o.upstreams.map((p) => `    BalancerMember "http://127.0.0.1:${p}" timeout=30 connectiontimeout=5 retry=5`).join('\n') : '';
    first = false;
    return r;
  }, 3, 'apache api balancer members');
  site = replaceExactly(site, '<VirtualHost *:443>', `<VirtualHost *:${o.httpsPort}>`, 2, 'apache vhost 443');
  site = replaceExactly(site, '<VirtualHost *:80>', `<VirtualHost *:${o.httpPort}>`, 2, 'apache vhost 80');
  site = replaceExactly(site, /SSLCertificateFile {4}\S+/, `SSLCertificateFile    ${o.cert.cert}`, 2, 'apache SSLCertificateFile');
  site = replaceExactly(site, /SSLCertificateKeyFile \S+/, `SSLCertificateKeyFile ${o.cert.key}`, 2, 'apache SSLCertificateKeyFile');
  if (o.variant === 'legacy-ws-scheme') {
    site = replaceExactly(site, 'ProxyPass "/ws" "balancer://pubgate_ws/ws"', `ProxyPass "/ws" "ws://127.0.0.1:${o.upstreams[0]}/ws"`, 1, 'apache ProxyPass /ws');
  }
  const modules = enabled.filter((m) => !(o.withoutModules ?? []).includes(m));
  const main = [
    `ServerRoot "${dir}"`,
    `DefaultRuntimeDir "${dir}"`,
    `PidFile "${dir}/apache2.pid"`,
    `Mutex file:${dir} default`,
    `Define APACHE_LOG_DIR ${dir}`,
    ...modules.map((m) => `LoadModule ${m}_module /usr/lib/apache2/modules/mod_${m}.so`),
    ...(isRoot ? ['User nobody', 'Group nogroup'] : []),
    'ServerName localhost',
    `ErrorLog "${dir}/error.log"`,
    'LogLevel warn',
    `Listen 127.0.0.1:${o.httpsPort}`,
    `Listen 127.0.0.1:${o.httpPort}`,
    'Timeout 60',
    'TypesConfig /dev/null',
    'SSLSessionCache none',
    `Include "${dir}/pubgate.conf"`,
    '',
  ].join('\n');
  const conf = path.join(dir, 'apache2.conf');
  writeFileSync(conf, main);
  writeFileSync(path.join(dir, 'pubgate.conf'), site);
  return {
    dir,
    conf,
    accessLog: path.join(dir, 'pubgate-access.log'),
    errorLog: path.join(dir, 'pubgate-error.log'),
    args: ['-f', conf, '-d', dir, '-DFOREGROUND'],
  };
}

// ---- HAProxy ----------------------------------------------------------------------

export interface HaproxyOptions {
  readonly upstreams: readonly { port: number; adminPort: number }[];
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly cert: Cert;
  /** Seconds, in place of `timeout tunnel 75s`. */
  readonly tunnelTimeoutSec?: number;
  /** Seconds, in place of the Server-Sent Events backend's `timeout server 75s`. */
  readonly sseServerTimeoutSec?: number;
}

export interface RenderedHaproxy {
  readonly dir: string;
  readonly conf: string;
  readonly args: readonly string[];
}

export function renderHaproxy(o: HaproxyOptions): RenderedHaproxy {
  const dir = tempDir('pubgate-haproxy-');
  let t = readDeploy('haproxy/haproxy.cfg');
  t = replaceExactly(t, /^ {4}log \/dev\/log local0$/m, '    log stdout format raw local0', 1, 'haproxy log');
  t = replaceExactly(t, /^ {4}(chroot|stats socket|user|group|daemon)\b[^\n]*\n/m, '', 5, 'haproxy process settings');
  t = replaceExactly(t, /^ {4}bind :80$/m, `    bind 127.0.0.1:${o.httpPort}`, 1, 'haproxy bind 80');
  t = replaceExactly(t, /^ {4}bind :443 ssl crt \S+/m, `    bind 127.0.0.1:${o.httpsPort} ssl crt ${o.cert.combined}`, 1, 'haproxy bind 443');
  // Each backend lists gw1..gw3: the first line of each list becomes the test's servers.
  t = replaceExactly(t, /^ {4}server gw(\d) 10\.0\.1\.\d+:8080\n/m, (_m, n) =>
    n === '1' ? o.upstreams.map((u, k) => `    server gw${k + 1} 127.0.0.1:${u.port} port ${u.adminPort}\n`).join('') : '', 9, 'haproxy servers');
  if (o.tunnelTimeoutSec !== undefined) {
    t = replaceExactly(t, 'timeout tunnel 75s', `timeout tunnel ${o.tunnelTimeoutSec}s`, 1, 'haproxy timeout tunnel');
  }
  if (o.sseServerTimeoutSec !== undefined) {
    t = replaceExactly(t, /^ {4}timeout server 75s$/m, `    timeout server ${o.sseServerTimeoutSec}s`, 1, 'haproxy pubgate_sse timeout server');
  }
  // Health checks every 2 s are the shipped value; tests want the state soon.
  t = replaceExactly(t, 'check port 9091 inter 2s fall 2 rise 2', 'check inter 200ms fall 2 rise 1', 3, 'haproxy default-server');
  const conf = path.join(dir, 'haproxy.cfg');
  writeFileSync(conf, t);
  return { dir, conf, args: ['-db', '-f', conf] };
}

/** Shortcut: a proxy's config check result. */
export function shortOutput(r: RunResult): string {
  return r.output.split('\n').filter((l) => l.trim() !== '').slice(-20).join('\n');
}
