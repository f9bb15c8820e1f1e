/**
 * pubgate-check, the connection doctor shipped with @pubgate/client: the
 * built CLI against a real gateway (success, wrong path 404, bad and expired
 * tokens 401, bad origin 403, refused TCP, unknown host, TLS with an untrusted
 * and a trusted certificate), and the check against real nginx instances
 * configured right and wrong on purpose (stripped Upgrade headers, no route,
 * a short idle timeout, no upstream).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCS, anchor, runCheck, type CheckReport, type StepName } from '../../packages/client/src/check/check.js';
import { token } from '../helpers/client.js';
import { buildClient } from '../helpers/client-build.js';
import { ROOT, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { startNginx, type NginxChild } from '../helpers/nginx-child.js';
import { findTool, needs } from '../helpers/tools.js';

const ORIGIN = 'https://app.example.test';
const OPENSSL = findTool('openssl');

let dist = '';
const gateways: GatewayProcess[] = [];
const tmp: string[] = [];
let gw: GatewayProcess | undefined;

beforeAll(async () => {
  dist = await buildClient();
  // Pings every second: the idle step must answer them or the node closes it (4002) after two.
  gw = await startGateway({ PUBGATE_NODE_ID: 'check-gw', PUBGATE_ALLOWED_ORIGINS: ORIGIN, PUBGATE_PING_INTERVAL: '1' });
  gateways.push(gw);
}, 120_000);

afterAll(async () => {
  await Promise.allSettled(gateways.map((g) => g.stop('SIGKILL')));
  for (const d of [dist, ...tmp]) if (d) rmSync(d, { recursive: true, force: true });
});

function node(): GatewayProcess {
  if (!gw) throw new Error('gateway did not start');
  return gw;
}

interface CliResult {
  readonly code: number;
  readonly out: string;
}

/** Runs the built CLI (dist/check/cli.js, as `npx pubgate-check` would). */
function cli(args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(dist, 'check/cli.js'), ...args], { env: { ...process.env, PUBGATE_TOKEN: '', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

const docRef = (heading: string): string => `See docs/troubleshooting.md, "${heading}" (#${anchor(heading)})`;

function step(r: CheckReport, name: StepName): CheckReport['steps'][number] {
  const s = r.steps.find((x) => x.step === name);
  if (!s) throw new Error(`no ${name} step in ${JSON.stringify(r.steps, null, 2)}`);
  return s;
}

const goodToken = (): Promise<string> => token({ sub: 'checker', channels: ['news'] });

describe('pubgate-check against a gateway', () => {
  it('walks every step of a working connection, answering server pings while idle (exit 0)', async () => {
    const r = await cli([node().url, '--token', await goodToken(), '--origin', ORIGIN, '--idle', '3']);
    expect(r.out).toMatch(/✔ TCP +connected to 127\.0\.0\.1:/);
    expect(r.out).toContain('✔ Upgrade  101 Switching Protocols, Upgrade/Connection present, Sec-WebSocket-Accept correct');
    expect(r.out).toContain('✔ Protocol pubgate.v1');
    expect(r.out).toMatch(/✔ Welcome +node check-gw, user checker, token expires in \d+ s, server pings every 1 s/);
    expect(r.out).toMatch(/✔ Ping +reply in \d+ ms/);
    const pings = Number(/still open after 3 s idle \((\d+) server pings answered\)/.exec(r.out)?.[1]);
    expect(pings).toBeGreaterThanOrEqual(2);
    expect(r.out).toContain('OK: the connection works end to end.');
    expect(r.code).toBe(0);
  });

  it('wrong path: 404 from the gateway, pointing at "Wrong path (404)" (exit 1)', async () => {
    const r = await cli([node().url.replace(/\/ws$/, '/socket'), '--token', await goodToken(), '--idle', '0']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('✘ Upgrade  404 Not Found instead of 101 (answered by pubgate: not_found');
    expect(r.out).toContain('pubgate serves the WebSocket at /ws');
    expect(r.out).toContain(docRef(DOCS.path));
    expect(r.out).toContain('FAILED at Upgrade');
  });

  it('bad token: 401, with the likely causes and "Expired token" (exit 1)', async () => {
    const forged = await token({ sub: 'checker' }, { secret: 'not-the-gateway-secret-0123456789abcdef' });
    const r = await cli([node().url, '--token', forged, '--idle', '0']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('✔ Token    JWT, expires in');
    expect(r.out).toContain('✘ Upgrade  401 Unauthorized instead of 101 (answered by pubgate: unauthorized');
    expect(r.out).toContain('signed with a secret or key the gateway does not have');
    expect(r.out).toContain(docRef(DOCS.token));
  });

  it('expired token: flagged before connecting, and the 401 explained as expiry', async () => {
    const expired = await token({ sub: 'checker' }, { exp: Math.floor(Date.now() / 1000) - 600 });
    const r = await cli([node().url, '--token', expired, '--idle', '0']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/✘ Token +the token expired 10 min ago/);
    expect(r.out).toMatch(/Likely cause: the token expired 10 min ago/);
  });

  it('no token: 401 explained as a missing token', async () => {
    const r = await cli([node().url, '--idle', '0']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('no token was sent and anonymous connections are not allowed');
  });

  it('bad origin: 403 origin_not_allowed, pointing at "Origin rejected (403)" (exit 1)', async () => {
    const r = await cli([node().url, '--token', await goodToken(), '--origin', 'https://evil.example.test', '--idle', '0']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('✘ Upgrade  403 Forbidden instead of 101 (answered by pubgate: origin_not_allowed');
    expect(r.out).toContain('add https://evil.example.test to PUBGATE_ALLOWED_ORIGINS');
    expect(r.out).toContain(docRef(DOCS.origin));
  });

  it('nothing listening: fails at TCP with ECONNREFUSED', async () => {
    const port = await freePort();
    const r = await cli([`ws://127.0.0.1:${port}/ws`, '--idle', '0']);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`✘ TCP      cannot connect to 127.0.0.1:${port}`);
    expect(r.out).toContain('ECONNREFUSED');
    expect(r.out).toContain(docRef(DOCS.down));
  });

  it('unknown host: fails at DNS', async () => {
    const report = await runCheck({ url: 'wss://no-such-host.invalid/ws', idleSec: 0, timeoutMs: 10_000 });
    expect(report.ok).toBe(false);
    expect(step(report, 'dns').status).toBe('fail');
    expect(report.steps.map((s) => s.step)).toEqual(['url', 'token', 'dns']);
  });

  it('usage errors exit 2', async () => {
    expect((await cli([])).code).toBe(2);
    expect((await cli(['ws://x/ws', '--idle', 'soon'])).code).toBe(2);
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('usage: pubgate-check <ws-url>');
  });

  describe('TLS (the gateway serving wss:// with a self-signed certificate for localhost)', needs('openssl'), () => {
    let tlsGw: GatewayProcess | undefined;
    let cert = '';

    beforeAll(async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'pubgate-check-tls-'));
      tmp.push(dir);
      cert = path.join(dir, 'cert.pem');
      const key = path.join(dir, 'key.pem');
      await new Promise<void>((resolve, reject) => {
        execFile(OPENSSL!, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], (err, _o, stderr) =>
          err ? reject(new Error(`openssl failed: ${stderr}`)) : resolve(),
        );
      });
      tlsGw = await startGateway({ PUBGATE_NODE_ID: 'check-tls', PUBGATE_TLS_CERT: cert, PUBGATE_TLS_KEY: key });
      gateways.push(tlsGw);
    }, 60_000);

    it('an untrusted certificate for another name fails at TLS ("Certificate errors"), and the other steps are still checked', async () => {
      const r = await cli([`wss://127.0.0.1:${tlsGw!.port}/ws`, '--token', await goodToken(), '--idle', '0']);
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/✘ TLS +certificate problem: the certificate is self-signed/);
      expect(r.out).toContain('name mismatch: the certificate does not cover 127.0.0.1');
      expect(r.out).toContain(docRef(DOCS.cert));
      expect(r.out).toMatch(/✔ Welcome +node check-tls/);
      expect(r.out).toContain('FAILED at TLS');
    });

    it('a trusted certificate for the name passes', async () => {
      const r = await cli([`wss://localhost:${tlsGw!.port}/ws`, '--token', await goodToken(), '--idle', '0'], { NODE_EXTRA_CA_CERTS: cert });
      expect(r.out).toMatch(/✔ TLS +certificate valid for localhost/);
      expect(r.out).toContain('certificate for DNS:localhost');
      expect(r.code).toBe(0);
    });
  });
});

describe('pubgate-check through nginx', needs('nginx'), () => {
  const proxies: NginxChild[] = [];
  const nginx = async (upstreamPort: number, server: string): Promise<NginxChild> => {
    const n = await startNginx(upstreamPort, server);
    proxies.push(n);
    return n;
  };
  afterAll(async () => {
    await Promise.allSettled(proxies.map((p) => p.stop()));
  });

  const WS_LOCATION = (extra = ''): string => `
    location /ws {
      proxy_pass http://pubgate;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      ${extra}
    }`;

  it('a correct WebSocket proxy: every step passes, pings flow through while idle', async () => {
    const n = await nginx(node().port, WS_LOCATION('proxy_read_timeout 1h; proxy_send_timeout 1h;'));
    const report = await runCheck({ url: n.url(), token: await goodToken(), origin: ORIGIN, idleSec: 3 });
    expect(report.steps.filter((s) => s.status === 'fail'), n.errorLog()).toEqual([]);
    expect(report.ok).toBe(true);
    expect(step(report, 'idle').summary).toMatch(/still open after 3 s idle/);
  });

  it('a proxy that speaks HTTP/1.0 upstream (nginx without proxy_http_version 1.1): 505, reported as "Proxy strips Upgrade headers"', async () => {
    const n = await nginx(node().port, '    location /ws { proxy_pass http://pubgate; }');
    const report = await runCheck({ url: n.url(), token: await goodToken(), idleSec: 0 });
    const s = step(report, 'upgrade');
    expect(s.status).toBe('fail');
    expect(s.summary).toMatch(/^505 HTTP Version Not Supported instead of 101/);
    expect(s.cause).toContain('speaks HTTP/1.0 to its upstream');
    expect(s.fix).toContain('proxy_http_version 1.1');
    expect(s.doc).toBe(DOCS.upgrade);
  });

  it('a proxy that does not forward Upgrade/Connection: the gateway answers 426, reported as "Proxy strips Upgrade headers"', async () => {
    const n = await nginx(node().port, '    location /ws { proxy_pass http://pubgate; proxy_http_version 1.1; }');
    const report = await runCheck({ url: n.url(), token: await goodToken(), idleSec: 0 });
    const s = step(report, 'upgrade');
    expect(s.status).toBe('fail');
    expect(s.summary).toMatch(/^426 .* \(answered by pubgate: bad_request/);
    expect(s.cause).toContain('a proxy in between did not forward them');
    expect(s.fix).toContain('proxy_set_header Upgrade $http_upgrade');
    expect(s.doc).toBe(DOCS.upgrade);
  });

  it('no route for the path: nginx answers 404 itself, reported as "Wrong path (404)" with the server that answered', async () => {
    const n = await nginx(node().port, WS_LOCATION().replace('location /ws', 'location /socket'));
    const report = await runCheck({ url: n.url(), token: await goodToken(), idleSec: 0 });
    const s = step(report, 'upgrade');
    expect(s.status).toBe('fail');
    expect(s.summary).toMatch(/^404 Not Found instead of 101 \(answered by "nginx\/[\d.]+"\)/);
    expect(s.cause).toBe('the proxy has no route to the gateway for /ws');
    expect(s.doc).toBe(DOCS.path);
  });

  it('an idle timeout shorter than the ping interval: cut without a close frame, reported as "Idle timeout (1006 after ~60 s)"', async () => {
    const quiet = await startGateway({ PUBGATE_NODE_ID: 'check-quiet' }); // pings every 25 s
    gateways.push(quiet);
    const n = await nginx(quiet.port, WS_LOCATION('proxy_read_timeout 2s; proxy_send_timeout 2s;'));
    const report = await runCheck({ url: n.url(), token: await goodToken(), idleSec: 10 });
    const s = step(report, 'idle');
    expect(s.status).toBe('fail');
    expect(s.summary).toMatch(/^the idle connection was cut after ~[2-4] s without a close frame \(1006; 0 server pings answered\)/);
    expect(s.cause).toContain('before the gateway\'s next ping (every 25 s)');
    expect(s.fix).toContain('proxy_read_timeout');
    expect(s.doc).toBe(DOCS.idle);
    expect(step(report, 'ping').status).toBe('ok');
  });

  it('an upstream that is down: 502 from nginx, explained as the proxy not reaching the gateway', async () => {
    const n = await nginx(await freePort(), WS_LOCATION());
    const report = await runCheck({ url: n.url(), token: await goodToken(), idleSec: 0 });
    const s = step(report, 'upgrade');
    expect(s.status).toBe('fail');
    expect(s.summary).toMatch(/^502 Bad Gateway instead of 101 \(answered by "nginx/);
    expect(s.cause).toContain('the proxy cannot reach the gateway');
  });
});

describe('troubleshooting sections', () => {
  it('every section the advice points to is a heading of docs/troubleshooting.md, with the anchor GitHub gives it', () => {
    const doc = readFileSync(path.join(ROOT, 'docs/troubleshooting.md'), 'utf8');
    const headings = [...doc.matchAll(/^## (.+)$/gm)].map((m) => m[1]!.trim());
    for (const heading of Object.values(DOCS)) expect(headings, heading).toContain(heading);
    // The anchors the CLI prints are the ones the guide links to itself.
    const links = new Set([...doc.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]));
    for (const heading of Object.values(DOCS)) expect(links, heading).toContain(anchor(heading));
    expect(anchor(DOCS.upgrade)).toBe('proxy-without-upgradeconnection-headers-400-426-or-505');
    expect(anchor(DOCS.origin)).toBe('origin-rejected-403-origin_not_allowed');
    expect(anchor(DOCS.subprotocol)).toBe('subprotocol-sent-non-empty-sec-websocket-protocol-header-but-no-response-was-received');
  });
});
