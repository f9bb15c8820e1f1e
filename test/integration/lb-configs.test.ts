/**
 * The shipped load balancer and Prometheus configs pass their own tools'
 * checks (nginx -t, apache2 -t, haproxy -c, promtool check/test), rendered
 * with test ports, a generated certificate and temp paths, and keep the
 * settings WebSockets through them depend on. A test whose tool is missing is
 * skipped (needs(), listed with the install command at the end of the run);
 * CI installs them all and fails on any skip.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MAX_PUBLISH_BYTES, DEFAULT_PING_INTERVAL_SEC } from '../helpers/deploy-files.js';
import {
  DEPLOY, makeCert, readDeploy, removeDir, renderApache, renderComposeNginx, renderHaproxy, renderNginx,
  run, shortOutput, tempDir, type Cert,
} from '../helpers/proxies.js';
import { findTool, needs } from '../helpers/tools.js';

const NGINX = findTool('nginx');
const APACHE = findTool('apache2');
const HAPROXY = findTool('haproxy');
const PROMTOOL = findTool('promtool');

/** Placeholder ports: config checks bind nothing. */
const PORTS = { https: 18443, http: 18080, upstreams: [18081, 18082, 18083] as const };

let dir: string;
let cert: Cert;
const rendered: string[] = [];

beforeAll(() => {
  dir = tempDir('pubgate-lbcheck-');
  // The proxies' checks load it (they also need openssl); the shipped-text tests do not.
  if (findTool('openssl')) cert = makeCert(dir, ['ws.example.com', 'api.example.com']);
});

afterAll(() => {
  removeDir(dir);
  for (const d of rendered.splice(0)) removeDir(d);
});

/** Seconds in an nginx/HAProxy time value ("75s", "75", "2m"). */
function seconds(v: string): number {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(v);
  if (!m) throw new Error(`not a time: ${v}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : m[2] === 'h' ? n * 3600 : n;
}

/** The body of the first `location <spec> { ... }` (no nested blocks in ours). */
function nginxLocation(conf: string, spec: string, from = 0): string {
  const start = conf.indexOf(`location ${spec} {`, from);
  expect(start, `location ${spec}`).toBeGreaterThanOrEqual(0);
  return conf.slice(start, conf.indexOf('}', start));
}

/** A location body's directives, sorted, without comments and its `location ... {` line. */
function nginxDirectives(block: string): string[] {
  return block.split('\n').slice(1).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).sort();
}

const NGINX_FILES = ['nginx/conf.d/pubgate.conf', 'compose/nginx-pubgate.conf'];

describe('nginx configs (shipped text)', () => {
  for (const file of NGINX_FILES) {
    it(`${file} proxies /ws as a WebSocket with a read timeout above the ping interval`, () => {
      const conf = readDeploy(file);
      expect(conf).toMatch(/map \$http_upgrade \$connection_upgrade \{\s*default\s+upgrade;\s*''\s+close;\s*\}/);
      const ws = nginxLocation(conf, '= /ws');
      expect(ws).toMatch(/proxy_http_version 1\.1;/);
      expect(ws).toMatch(/proxy_set_header Upgrade \$http_upgrade;/);
      expect(ws).toMatch(/proxy_set_header Connection \$connection_upgrade;/);
      expect(ws).toMatch(/proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;/);
      expect(ws).toMatch(/proxy_next_upstream [^;]*http_503/);
      const read = /proxy_read_timeout (\S+);/.exec(ws)?.[1];
      expect(read, 'proxy_read_timeout').toBeDefined();
      expect(seconds(read!)).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
      expect(conf).toMatch(/large_client_header_buffers 4 16k;/);
    });

    it(`${file} streams /sse unbuffered and uncompressed over keep-alive HTTP/1.1, with a read timeout of 2-3 ping intervals`, () => {
      const conf = readDeploy(file);
      const sse = nginxLocation(conf, '= /sse');
      expect(sse).toMatch(/proxy_pass http:\/\/pubgate_gateways;/);
      expect(sse).toMatch(/proxy_http_version 1\.1;/);
      // Connection cleared (keep-alive upstream), and no Upgrade: an event stream is not a WebSocket.
      expect(sse).toMatch(/proxy_set_header Connection "";/);
      expect(sse.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n')).not.toMatch(/Upgrade/);
      expect(sse).toMatch(/proxy_buffering off;/);
      expect(sse).toMatch(/gzip off;/);
      expect(sse).not.toMatch(/proxy_ignore_headers[^;]*X-Accel-Buffering/);
      expect(sse).toMatch(/proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;/);
      expect(sse).toMatch(/proxy_next_upstream [^;]*http_503/);
      const read = /proxy_read_timeout (\S+);/.exec(sse)?.[1];
      expect(read, 'proxy_read_timeout').toBeDefined();
      expect(seconds(read!)).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
      // On the ws. host, beside /ws.
      const server = conf.slice(conf.lastIndexOf('server {', conf.indexOf('location = /sse')), conf.indexOf('location = /sse'));
      expect(server).toMatch(/server_name ws\.(example\.com|localhost);/);
      expect(server).toMatch(/location = \/ws \{/);
    });

    it(`${file} proxies the Pusher WebSocket /app/ on the ws. host exactly as /ws (upgrade headers, timeouts, retry of a draining node)`, () => {
      const conf = readDeploy(file);
      const app = nginxLocation(conf, '/app/');
      // Every directive of /ws, and nothing else (comments aside).
      expect(nginxDirectives(app)).toEqual(nginxDirectives(nginxLocation(conf, '= /ws')));
      expect(app).toMatch(/proxy_set_header Upgrade \$http_upgrade;/);
      expect(app).toMatch(/proxy_set_header Connection \$connection_upgrade;/);
      expect(app).not.toMatch(/proxy_buffering on/);
      const server = conf.slice(conf.lastIndexOf('server {', conf.indexOf('location /app/')), conf.indexOf('location /app/'));
      expect(server).toMatch(/server_name ws\.(example\.com|localhost);/);
      // A prefix: /app/{key}, never the HTTP API's /apps/ (an exact or regex location would miss the key or catch /apps/).
      expect(conf).not.toMatch(/location (=|~\*?)\s+\^?\/apps?\b/);
    });

    it(`${file} proxies the Pusher HTTP API /apps/ on the api. host exactly as /v1/ (same server, body limit above PUBGATE_MAX_PUBLISH_BYTES, timeouts)`, () => {
      const conf = readDeploy(file);
      const apps = nginxLocation(conf, '/apps/');
      expect(nginxDirectives(apps)).toEqual(nginxDirectives(nginxLocation(conf, '/v1/')));
      expect(apps).not.toMatch(/Upgrade/);
      const at = conf.indexOf('location /apps/');
      const serverStart = conf.lastIndexOf('server {', at);
      expect(conf.slice(serverStart, at)).toMatch(/server_name api\.(example\.com|localhost);/);
      // The server's body limit covers both, a guard above pubgate's own (PUBGATE_MAX_PUBLISH_BYTES, which answers 413 itself).
      const limit = /client_max_body_size (\d+)m;/.exec(conf.slice(serverStart, at))?.[1];
      expect(limit, 'client_max_body_size').toBeDefined();
      expect(Number(limit) * 1024 * 1024).toBeGreaterThan(DEFAULT_MAX_PUBLISH_BYTES);
      // /v1/ in the same server block.
      expect(conf.lastIndexOf('server {', conf.indexOf('location /v1/'))).toBe(serverStart);
    });

    it(`${file} logs no query strings (tokens travel in ?access_token=)`, () => {
      const conf = readDeploy(file);
      const format = /log_format \w+[^;]*;/s.exec(conf)?.[0];
      expect(format, 'log_format').toBeDefined();
      for (const leaky of ['$request ', '$request"', '$request_uri', '$args', '$query_string', '$arg_', '$http_referer', '$http_authorization', '$http_sec_websocket_protocol']) {
        expect(format!.includes(leaky), `log_format uses ${leaky}`).toBe(false);
      }
      expect(format).toContain('$uri');
      for (const m of conf.matchAll(/access_log \S+ (\S+);/g)) expect(m[1]).toBe(/log_format (\w+)/.exec(format!)![1]);
    });
  }

  it('keeps /apps/ behind the api. host\'s allow list (backends only, as /v1/)', () => {
    const conf = readDeploy('nginx/conf.d/pubgate.conf');
    const api = conf.slice(conf.indexOf('server_name api.example.com;', conf.indexOf('listen 443 ssl;')));
    expect(api).toMatch(/deny all;/);
    expect(api.indexOf('deny all;')).toBeLessThan(api.indexOf('location /apps/'));
  });

  it('terminates TLS for wss:// on the ws. and api. hosts', () => {
    const conf = readDeploy('nginx/conf.d/pubgate.conf');
    expect(conf.match(/listen 443 ssl;/g)).toHaveLength(2);
    expect(conf).toMatch(/server_name ws\.example\.com;/);
    expect(conf).toMatch(/server_name api\.example\.com;/);
  });
});

describe('nginx -t', needs('nginx', 'openssl'), () => {
  it('accepts deploy/nginx (nginx.conf + conf.d/pubgate.conf)', () => {
    const r = renderNginx({ upstreams: PORTS.upstreams, httpsPort: PORTS.https, httpPort: PORTS.http, cert });
    rendered.push(r.dir);
    const out = run(NGINX!, ['-t', ...r.args]);
    expect(out.code, shortOutput(out)).toBe(0);
    expect(out.output).toMatch(/syntax is ok/);
    expect(out.output).toMatch(/test is successful/);
  });

  it('accepts deploy/compose/nginx-pubgate.conf', () => {
    const r = renderComposeNginx(PORTS.upstreams, PORTS.http);
    rendered.push(r.dir);
    const out = run(NGINX!, ['-t', ...r.args]);
    expect(out.code, shortOutput(out)).toBe(0);
  });
});

describe('Apache config (shipped text)', () => {
  const conf = readDeploy('apache/pubgate.conf');

  it('tunnels /ws with upgrade=websocket and an idle timeout above the ping interval', () => {
    const members = [...conf.matchAll(/BalancerMember "[^"]+" upgrade=websocket timeout=(\d+)/g)];
    expect(members).toHaveLength(3);
    for (const m of members) expect(Number(m[1])).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
    expect(conf).toMatch(/ProxyPass "\/ws" "balancer:\/\/pubgate_ws\/ws"/);
    expect(conf).toMatch(/a2enmod [^\n]*proxy_wstunnel/);
    expect(conf).toMatch(/LimitRequestFieldSize 16384/);
  });

  it('streams /sse on the ws. host through mod_proxy_http with flushpackets=on, an idle timeout above the ping interval, and no compression', () => {
    const members = [...conf.matchAll(/^ {4}BalancerMember "[^"]+" flushpackets=on timeout=(\d+)/gm)];
    expect(members).toHaveLength(3);
    for (const m of members) expect(Number(m[1])).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
    const balancer = conf.slice(conf.indexOf('<Proxy "balancer://pubgate_sse">'), conf.indexOf('</Proxy>', conf.indexOf('<Proxy "balancer://pubgate_sse">')));
    expect(balancer).not.toMatch(/upgrade=/);
    expect(balancer).toMatch(/failonstatus=503/);
    const wsHost = conf.slice(conf.indexOf('ServerName ws.example.com', conf.indexOf('<VirtualHost *:443>')), conf.indexOf('ServerName api.example.com', conf.indexOf('<VirtualHost *:443>')));
    expect(wsHost).toMatch(/ProxyPass "\/sse" "balancer:\/\/pubgate_sse\/sse"/);
    expect(wsHost).toMatch(/ProxyPass "\/ws" "balancer:\/\/pubgate_ws\/ws"/);
    expect(wsHost).toMatch(/SetEnvIf Request_URI "\^\/sse\$" no-gzip=1/);
    // The 404 catch-all leaves /ws and /sse (and /app/, below) alone.
    expect(wsHost).toMatch(/RedirectMatch 404 "\^\/\(\?!\(ws\|sse\)\$/);
    expect(conf).toMatch(/a2enmod [^\n]*\bsetenvif\b/);
  });

  it('tunnels the Pusher WebSocket /app/ through the upgrade=websocket balancer on the ws. host, and the Pusher HTTP API /apps/ through the API balancer behind its allow list', () => {
    const vhosts = conf.split('<VirtualHost *:443>').slice(1);
    const wsHost = vhosts.find((v) => /ServerName ws\.example\.com/.test(v))!;
    const apiHost = vhosts.find((v) => /ServerName api\.example\.com/.test(v))!;
    expect(wsHost).toMatch(/^ {4}ProxyPass "\/app\/" "balancer:\/\/pubgate_ws\/app\/"$/m);
    expect(apiHost).toMatch(/^ {4}ProxyPass "\/apps\/" "balancer:\/\/pubgate_api\/apps\/"$/m);
    expect(wsHost).not.toMatch(/ProxyPass "\/apps/);
    // The 404 catch-alls let the new paths through and nothing else.
    const catchAll = (host: string): RegExp => new RegExp(/RedirectMatch 404 "(.*)"/.exec(host)![1]!);
    const wsCatch = catchAll(wsHost);
    const apiCatch = catchAll(apiHost);
    for (const p of ['/ws', '/sse', '/app/app-key']) expect(wsCatch.test(p), p).toBe(false);
    for (const p of ['/apps/1/events', '/v1/publish', '/', '/app', '/wss']) expect(wsCatch.test(p), p).toBe(true);
    for (const p of ['/v1/publish', '/apps/1/events']) expect(apiCatch.test(p), p).toBe(false);
    for (const p of ['/app/app-key', '/ws', '/']) expect(apiCatch.test(p), p).toBe(true);
    // Backends only, for both APIs.
    const allow = /<LocationMatch "(.*)">\s*Require ip ([^\n]+)\s*<\/LocationMatch>/.exec(apiHost);
    expect(allow, 'the API host\'s allow list').not.toBeNull();
    for (const p of ['/v1/publish', '/apps/1/events']) expect(new RegExp(allow![1]!).test(p), p).toBe(true);
    expect(allow![2]).toMatch(/^10\.0\.0\.0\/8 /);
  });

  it('logs no query strings', () => {
    const formats = [...conf.matchAll(/^LogFormat "(.*)" (\w+)$/gm)];
    expect(formats).toHaveLength(1);
    expect(formats[0]![1]).not.toMatch(/%r|%q|%\{Referer\}i|%\{Authorization\}i|%\{Sec-WebSocket-Protocol\}i/i);
    expect(formats[0]![1]).toContain('%U');
    for (const m of conf.matchAll(/CustomLog \S+ (\S+)/g)) expect(m[1]).toBe(formats[0]![2]);
  });

  it('does not copy the CORS and response-header advice that does nothing for WebSockets', () => {
    const directives = conf.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
    expect(directives).not.toMatch(/Access-Control-Allow-Origin/);
    expect(directives).not.toMatch(/Header (always )?set (Upgrade|Connection)/);
  });
});

describe('apache2 -t', needs('apache2', 'openssl'), () => {
  it('accepts deploy/apache/pubgate.conf with the modules a2enmod enables', () => {
    const r = renderApache({ upstreams: PORTS.upstreams, httpsPort: PORTS.https, httpPort: PORTS.http, cert });
    rendered.push(r.dir);
    const out = run(APACHE!, ['-t', ...r.args.filter((a) => a !== '-DFOREGROUND')]);
    expect(out.code, shortOutput(out)).toBe(0);
    expect(out.output).toMatch(/Syntax OK/);
  });
});

describe('HAProxy config (shipped text)', () => {
  const conf = readDeploy('haproxy/haproxy.cfg');

  it('keeps idle WebSockets with timeout tunnel above the ping interval', () => {
    const tunnel = /^\s*timeout tunnel (\S+)$/m.exec(conf)?.[1];
    expect(tunnel).toBeDefined();
    expect(seconds(tunnel!)).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
    expect(conf).toMatch(/http-check send meth GET uri \/readyz ver HTTP\/1\.1 /);
    expect(conf).not.toMatch(/http-check send (?!.* ver HTTP\/1\.1)/);
    expect(conf).toMatch(/http-request set-header X-Forwarded-For %\[src\]/);
    expect(conf).toMatch(/tune\.bufsize 32768/);
  });

  it('routes /sse on the ws. host to a backend whose timeout server (not tunnel) outlasts the ping interval, without http-server-close', () => {
    expect(conf).toMatch(/^\s*acl path_sse path \/sse$/m);
    expect(conf).toMatch(/^\s*use_backend pubgate_sse if host_ws path_sse$/m);
    const start = conf.indexOf('\nbackend pubgate_sse\n');
    expect(start).toBeGreaterThan(-1);
    const backend = conf.slice(start, conf.indexOf('\nbackend ', start + 1));
    const server = /^\s*timeout server (\S+)$/m.exec(backend)?.[1];
    expect(server, 'timeout server in pubgate_sse').toBeDefined();
    expect(seconds(server!)).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
    expect(backend).toMatch(/http-check send meth GET uri \/readyz /);
    const directives = conf.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
    expect(directives).not.toMatch(/option (http-server-close|httpclose)/);
    expect(directives).not.toMatch(/compression type[^\n]*event-stream/);
  });

  it('routes the Pusher WebSocket /app/ on the ws. host to pubgate_ws and the Pusher HTTP API /apps/ on the api. host to pubgate_api, backends only', () => {
    expect(conf).toMatch(/^\s*acl path_pusher_ws\s+path_beg \/app\/$/m);
    expect(conf).toMatch(/^\s*acl path_pusher_api path_beg \/apps\/$/m);
    expect(conf).toMatch(/^\s*use_backend pubgate_ws\s+if host_ws path_pusher_ws$/m);
    expect(conf).toMatch(/^\s*use_backend pubgate_api if host_api path_pusher_api backends$/m);
  });

  it('logs no query strings', () => {
    const format = /^\s*log-format "(.*)"$/m.exec(conf)?.[1];
    expect(format).toBeDefined();
    expect(format).not.toMatch(/%\{[^}]*\}r|%r\b|%HU|%HQ|%hr/);
    expect(format).toContain('%HP');
    expect(conf).not.toMatch(/option httplog/);
  });
});

describe('haproxy -c', needs('haproxy', 'openssl'), () => {
  it('accepts deploy/haproxy/haproxy.cfg', () => {
    const r = renderHaproxy({
      upstreams: PORTS.upstreams.map((p) => ({ port: p, adminPort: p + 1000 })),
      httpsPort: PORTS.https,
      httpPort: PORTS.http,
      cert,
    });
    rendered.push(r.dir);
    const out = run(HAPROXY!, ['-c', '-f', r.conf]);
    expect(out.code, shortOutput(out)).toBe(0);
    expect(out.output).toMatch(/Configuration file is valid/);
    expect(out.output).not.toMatch(/\[WARNING\]/);
  });
});

describe('promtool', needs('promtool'), () => {
  const rules = readdirSync(path.join(DEPLOY, 'prometheus/rules')).filter((f) => f.endsWith('.yml')).map((f) => path.join(DEPLOY, 'prometheus/rules', f));
  const tests = readdirSync(path.join(DEPLOY, 'prometheus/tests')).filter((f) => f.endsWith('.yml')).map((f) => path.join(DEPLOY, 'prometheus/tests', f));

  it('check rules: accepts every rule file', () => {
    expect(rules.length).toBeGreaterThan(0);
    const out = run(PROMTOOL!, ['check', 'rules', ...rules]);
    expect(out.code, shortOutput(out)).toBe(0);
    expect(out.output).toMatch(/SUCCESS/);
  });

  it('check config: accepts prometheus.yml and the rule files it loads', () => {
    const out = run(PROMTOOL!, ['check', 'config', path.join(DEPLOY, 'prometheus/prometheus.yml')]);
    expect(out.code, shortOutput(out)).toBe(0);
  });

  it('test rules: the alerts fire (and stay quiet) as their unit tests say', () => {
    expect(tests.length).toBeGreaterThan(0);
    const out = run(PROMTOOL!, ['test', 'rules', ...tests]);
    expect(out.code, shortOutput(out)).toBe(0);
    expect(out.output).toMatch(/SUCCESS/);
  });

  it('the connection-limit recording rule matches PUBGATE_MAX_CONNECTIONS in the Kubernetes Deployment', () => {
    const rulesText = rules.map((f) => readFileSync(f, 'utf8')).join('\n');
    const limit = /record: pubgate:connections_limit\s+expr: vector\((\d+)\)/.exec(rulesText)?.[1];
    expect(limit).toBeDefined();
    const deployment = readDeploy('kubernetes/deployment.yaml');
    const env = /name: PUBGATE_MAX_CONNECTIONS\s+value: "(\d+)"/.exec(deployment)?.[1];
    expect(env).toBe(limit);
  });
});
