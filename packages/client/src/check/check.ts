/**
 * pubgate-check: walks one WebSocket connection to a pubgate gateway step by
 * step (DNS, TCP, TLS, HTTP upgrade, subprotocol, welcome, ping, idle) and
 * says where it breaks, why that usually happens, and what fixes it, with a
 * pointer into docs/troubleshooting.md; then opens the Server-Sent Events
 * stream (`/sse`, the client's fallback) and reports which transports work.
 */
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import tls from 'node:tls';
import { Session, expectedAccept, headerHas, newKey, parseHead, upgradeRequest, type Ended, type ResponseHead } from './wire.js';

/** Sections (headings) of docs/troubleshooting.md that the advice points to; a test checks they exist. */
export const DOCS = {
  path: 'Wrong URL or path (404)',
  upgrade: 'Proxy without Upgrade/Connection headers (400, 426 or 505)',
  apache: 'Apache: AH01144 no protocol handler (500)',
  firewall: 'Firewall or proxy blocking',
  down: 'Server down or unreachable',
  cert: 'Self-signed or mismatched certificates',
  origin: 'Origin rejected (403 origin_not_allowed)',
  token: 'Expired or invalid token (401 and close 4001)',
  subprotocol: "Subprotocol: \"Sent non-empty 'Sec-WebSocket-Protocol' header but no response was received\"",
  idle: 'Idle timeouts: 1006 after about 60 s',
  gatewayTimeout: 'Gateway timeouts (504)',
  capacity: '503 overloaded or draining',
  rateLimited: '429 rate_limited for everyone behind a load balancer',
  slow: 'Slow consumers: 4008 and dropped messages',
  redis: 'Redis down: /readyz 503, publishes 503',
} as const;

export const DOC_FILE = 'docs/troubleshooting.md';

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
export function anchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .trim()
    .replace(/\s/g, '-');
}

export type StepName = 'url' | 'token' | 'dns' | 'tcp' | 'tls' | 'upgrade' | 'subprotocol' | 'welcome' | 'ping' | 'idle' | 'sse';
export type StepStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface StepResult {
  readonly step: StepName;
  readonly status: StepStatus;
  readonly summary: string;
  readonly details?: readonly string[];
  /** The likely cause (warn/fail). */
  readonly cause?: string;
  /** What to change (warn/fail). */
  readonly fix?: string;
  /** A heading of docs/troubleshooting.md. */
  readonly doc?: string;
}

export interface CheckOptions {
  readonly url: string;
  readonly token?: string;
  readonly origin?: string;
  /** Seconds to keep the connection idle (answering pings) to catch proxy idle timeouts; 0 skips. Default 90. */
  readonly idleSec?: number;
  /** Timeout of each network step, ms. Default 10 000. */
  readonly timeoutMs?: number;
  /** Called with each step as soon as it is known. */
  readonly onStep?: (r: StepResult) => void;
  /** Also open the SSE stream (the client's fallback). Default true. */
  readonly sse?: boolean;
  /** The channel the SSE stream names (it needs one the token may read). Default: the first one the token's `channels` claim allows. */
  readonly channel?: string;
}

export interface CheckReport {
  /** No step failed: the WebSocket works end to end. */
  readonly ok: boolean;
  readonly steps: readonly StepResult[];
  /** Which transports work: the WebSocket (every step passed), SSE (the stream opened and sent welcome; undefined when not checked). */
  readonly transports: { readonly websocket: boolean; readonly sse: boolean | undefined };
}

const SUBPROTOCOL = 'pubgate.v1';

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function errCode(e: unknown): string {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(Object.assign(new Error(`${what}: no answer within ${ms} ms`), { code: 'ETIMEDOUT' })), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

interface Claims {
  readonly sub?: unknown;
  readonly exp?: unknown;
  readonly channels?: unknown;
}

function decodeClaims(token: string): Claims | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return undefined;
  try {
    const v = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as unknown;
    return v !== null && typeof v === 'object' ? (v as Claims) : undefined;
  } catch {
    return undefined;
  }
}

function ago(sec: number): string {
  const s = Math.abs(Math.round(sec));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
}

/** Reads the response head (and whatever body follows, for refusals). */
function readResponse(sock: net.Socket, timeoutMs: number): Promise<{ head: ResponseHead; rest: Buffer; raw: string }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const cleanup = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.off('error', onError);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(Object.assign(new Error(`no HTTP response within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > 65_536) {
          cleanup();
          reject(new Error('response head over 64 KiB'));
        }
        return;
      }
      cleanup();
      const raw = buf.subarray(0, end).toString('latin1');
      try {
        resolve({ head: parseHead(raw), rest: buf.subarray(end + 4), raw });
      } catch (e) {
        reject(e);
      }
    };
    const onClose = (): void => {
      cleanup();
      reject(Object.assign(new Error(buf.length > 0 ? `connection closed after a partial response: ${JSON.stringify(buf.toString('latin1').slice(0, 120))}` : 'connection closed without any HTTP response'), { code: 'ECONNRESET' }));
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    sock.on('data', onData);
    sock.on('close', onClose);
    sock.on('error', onError);
  });
}

/** The body of a refusal: up to Content-Length or 8 KiB, waiting at most `ms`. */
function readBody(sock: net.Socket, head: ResponseHead, rest: Buffer, ms: number): Promise<string> {
  const want = Math.min(8192, Number(head.headers['content-length'] ?? 8192) || 0);
  return new Promise((resolve) => {
    let buf = rest;
    const done = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', done);
      resolve(buf.subarray(0, want).toString('utf8'));
    };
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= want) done();
    };
    const timer = setTimeout(done, ms);
    if (buf.length >= want) {
      done();
      return;
    }
    sock.on('data', onData);
    sock.on('close', done);
  });
}

interface Target {
  readonly secure: boolean;
  readonly host: string;
  readonly port: number;
  readonly hostHeader: string;
  readonly path: string;
}

function parseTarget(raw: string): { target?: Target; result: StepResult } {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return { result: { step: 'url', status: 'fail', summary: `not a URL: ${raw}`, fix: 'give the full WebSocket URL, e.g. wss://ws.example.com/ws' } };
  }
  const scheme = u.protocol.replace(/:$/, '');
  const map: Record<string, boolean> = { ws: false, wss: true, http: false, https: true };
  if (!(scheme in map)) {
    return { result: { step: 'url', status: 'fail', summary: `unsupported scheme ${scheme}:`, fix: 'use ws:// (plain) or wss:// (TLS)' } };
  }
  const secure = map[scheme]!;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = u.port ? Number(u.port) : secure ? 443 : 80;
  const path = `${u.pathname || '/'}${u.search}`;
  const target: Target = { secure, host, port, hostHeader: u.host, path };
  const details: string[] = [];
  let status: StepStatus = 'ok';
  if (scheme === 'http' || scheme === 'https') {
    status = 'warn';
    details.push(`${scheme}:// taken as ${secure ? 'wss' : 'ws'}://; browsers need ws:// or wss:// in new WebSocket()`);
  }
  if (!secure && !['localhost', '127.0.0.1', '::1'].includes(host)) {
    status = 'warn';
    details.push('plain ws:// over the network: pages served over https:// cannot open it (mixed content), and proxies on the way may break it; use wss://');
  }
  if (u.search.includes('access_token=')) details.push('the URL carries access_token: it will appear in proxy access logs; prefer --token (sent as the bearer. subprotocol)');
  return { target, result: { step: 'url', status, summary: `${secure ? 'wss' : 'ws'}://${u.host}${path}`, details } };
}

function tokenStep(token: string | undefined): StepResult {
  if (token === undefined) {
    return {
      step: 'token',
      status: 'skip',
      summary: 'no token given: connecting anonymously (works only with PUBGATE_ALLOW_ANONYMOUS=true)',
    };
  }
  const claims = decodeClaims(token);
  if (!claims) {
    return { step: 'token', status: 'warn', summary: 'the token is not a JWT (three base64url parts)', cause: 'pubgate takes JWTs only', doc: DOCS.token };
  }
  const details: string[] = [];
  if (typeof claims.sub === 'string') details.push(`sub ${claims.sub}`);
  else details.push('no sub claim: pubgate requires a string sub');
  if (Array.isArray(claims.channels)) details.push(`channels ${claims.channels.map(String).join(', ') || '(none)'}`);
  if (token.length > 8192) {
    return { step: 'token', status: 'fail', summary: `the token has ${token.length} characters; pubgate refuses tokens over 8192`, details, fix: 'put fewer claims in the token', doc: DOCS.token };
  }
  if (typeof claims.exp !== 'number') {
    return { step: 'token', status: 'fail', summary: 'the token has no exp claim: pubgate requires one (expect 401)', details, fix: 'issue tokens with an expiry', doc: DOCS.token };
  }
  const left = claims.exp - Date.now() / 1000;
  if (left <= 0) {
    return {
      step: 'token',
      status: 'fail',
      summary: `the token expired ${ago(left)} ago (exp ${new Date(claims.exp * 1000).toISOString()}): expect 401`,
      details,
      cause: 'an expired token (or this machine\'s clock is wrong)',
      fix: 'get a fresh token from your backend; clients should call getToken before reconnecting',
      doc: DOCS.token,
    };
  }
  return { step: 'token', status: 'ok', summary: `JWT, expires in ${ago(left)}`, details };
}

async function dnsStep(t: Target, timeoutMs: number): Promise<{ addresses: string[]; result: StepResult }> {
  if (net.isIP(t.host)) return { addresses: [t.host], result: { step: 'dns', status: 'skip', summary: `${t.host} is an IP address` } };
  const t0 = Date.now();
  try {
    const list = await withTimeout(lookup(t.host, { all: true }), timeoutMs, `DNS lookup of ${t.host}`);
    const addresses = list.map((a) => a.address);
    return { addresses, result: { step: 'dns', status: 'ok', summary: `${t.host} → ${addresses.join(', ')} (${Date.now() - t0} ms)` } };
  } catch (e) {
    const code = errCode(e);
    return {
      addresses: [],
      result: {
        step: 'dns',
        status: 'fail',
        summary: `cannot resolve ${t.host} (${code || message(e)})`,
        cause: code === 'ENOTFOUND' ? 'the name does not exist in DNS (typo, or the ws. record was never created)' : 'the resolver did not answer (network or DNS server problem)',
        fix: `check the host name and its DNS record (dig ${t.host}); the gateway is usually served on a ws. subdomain`,
      },
    };
  }
}

async function tcpStep(t: Target, addresses: string[], timeoutMs: number): Promise<{ sock?: net.Socket; result: StepResult }> {
  const failures: string[] = [];
  let lastCode = '';
  for (const address of addresses) {
    const t0 = Date.now();
    try {
      const sock = await withTimeout(
        new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ host: address, port: t.port });
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        }),
        timeoutMs,
        `TCP connect to ${address}:${t.port}`,
      );
      sock.setNoDelay(true);
      const details = failures.length > 0 ? failures : undefined;
      return { sock, result: { step: 'tcp', status: 'ok', summary: `connected to ${address}:${t.port} (${Date.now() - t0} ms)`, ...(details ? { details } : {}) } };
    } catch (e) {
      lastCode = errCode(e);
      failures.push(`${address}:${t.port}: ${lastCode || message(e)}`);
    }
  }
  const causes: Record<string, string> = {
    ECONNREFUSED: `nothing listens on port ${t.port}: the gateway or load balancer is down, or this is the wrong port`,
    ETIMEDOUT: 'the packets are dropped: a firewall or security group blocks the port, or the host is down',
    EHOSTUNREACH: 'no route to the host',
    ENETUNREACH: 'no route to the network',
  };
  return {
    result: {
      step: 'tcp',
      status: 'fail',
      summary: `cannot connect to ${t.host}:${t.port}`,
      details: failures,
      cause: causes[lastCode] ?? 'the TCP connection failed',
      fix: `check that the gateway (PUBGATE_PORT, default 8080) or its load balancer listens on ${t.port} and that the firewall allows it`,
      doc: lastCode === 'ECONNREFUSED' ? DOCS.down : DOCS.firewall,
    },
  };
}

async function tlsStep(t: Target, sock: net.Socket, timeoutMs: number): Promise<{ sock?: tls.TLSSocket; result: StepResult }> {
  let secured: tls.TLSSocket;
  const t0 = Date.now();
  try {
    secured = await withTimeout(
      new Promise<tls.TLSSocket>((resolve, reject) => {
        const s = tls.connect({ socket: sock, servername: net.isIP(t.host) ? undefined : t.host, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
        s.once('secureConnect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      }),
      timeoutMs,
      'TLS handshake',
    );
  } catch (e) {
    const text = message(e);
    const plain = /wrong version number|packet length too long|unknown protocol|http request/i.test(text);
    sock.destroy();
    return {
      result: {
        step: 'tls',
        status: 'fail',
        summary: `TLS handshake failed: ${text}`,
        cause: plain ? `port ${t.port} does not speak TLS (plain HTTP answered)` : 'the server or a proxy refused the TLS handshake (protocol version, ciphers, or SNI)',
        fix: plain ? 'use ws:// for this port, or point wss:// at the port that terminates TLS (443 on the load balancer, or PUBGATE_TLS_CERT/PUBGATE_TLS_KEY on the gateway)' : 'check the TLS listener configuration',
        doc: DOCS.cert,
      },
    };
  }
  const cert = secured.getPeerCertificate();
  const details: string[] = [];
  const problems: string[] = [];
  details.push(`${secured.getProtocol() ?? 'TLS'}${secured.alpnProtocol ? `, ALPN ${secured.alpnProtocol}` : ''}`);
  if (cert && Object.keys(cert).length > 0) {
    const names = cert.subjectaltname ?? (cert.subject?.CN ? `CN=${String(cert.subject.CN)}` : '(no names)');
    details.push(`certificate for ${names}`);
    details.push(`issued by ${String(cert.issuer?.O ?? cert.issuer?.CN ?? '?')}, valid ${cert.valid_from} – ${cert.valid_to}`);
    const mismatch = tls.checkServerIdentity(t.host, cert);
    if (mismatch) problems.push(`name mismatch: the certificate does not cover ${t.host} (${mismatch.message})`);
    const daysLeft = (Date.parse(cert.valid_to) - Date.now()) / 86_400_000;
    if (Number.isFinite(daysLeft) && daysLeft > 0 && daysLeft < 14 && secured.authorized) details.push(`expires in ${Math.floor(daysLeft)} days`);
  } else {
    problems.push('the server sent no certificate');
  }
  const authErr = secured.authorizationError ? String(secured.authorizationError) : undefined;
  const authCause: Record<string, string> = {
    CERT_HAS_EXPIRED: 'the certificate has expired: renew it (and check that the renewal job reloads the proxy)',
    CERT_NOT_YET_VALID: "the certificate is not valid yet (or this machine's clock is wrong)",
    DEPTH_ZERO_SELF_SIGNED_CERT: 'the certificate is self-signed: browsers refuse it (fine only for local tests with a trusted CA)',
    SELF_SIGNED_CERT_IN_CHAIN: 'the chain ends in a CA this machine does not trust',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the chain is incomplete: serve the intermediate certificates too (fullchain.pem, not cert.pem)',
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the chain is incomplete or its CA is not trusted here: serve the full chain',
  };
  if (authErr && authErr !== 'ERR_TLS_CERT_ALTNAME_INVALID') problems.unshift(authCause[authErr] ?? `the certificate is not trusted (${authErr})`);
  if (problems.length > 0) {
    return {
      sock: secured,
      result: {
        step: 'tls',
        status: 'fail',
        summary: `certificate problem: ${problems[0]}`,
        details: [...details, ...problems.slice(1)],
        cause: 'browsers refuse this certificate, so the WebSocket fails before any HTTP (in the console: "WebSocket connection to ... failed", with no status)',
        fix: 'serve a certificate from a public CA that covers this host name, with its full chain',
        doc: DOCS.cert,
      },
    };
  }
  const soon = details.find((d) => d.startsWith('expires in'));
  return {
    sock: secured,
    result: {
      step: 'tls',
      status: soon ? 'warn' : 'ok',
      summary: `certificate valid for ${t.host} (${Date.now() - t0} ms)`,
      details,
      ...(soon ? { cause: `the certificate ${soon}`, fix: 'renew it soon', doc: DOCS.cert } : {}),
    },
  };
}

function describeRefusal(t: Target, head: ResponseHead, body: string, o: CheckOptions): StepResult {
  let code: string | undefined;
  let msg: string | undefined;
  try {
    const j = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    if (j.error && typeof j.error.code === 'string') {
      code = j.error.code;
      msg = typeof j.error.message === 'string' ? j.error.message : undefined;
    }
  } catch {
    // not pubgate's JSON
  }
  const server = head.headers.server;
  const by = code !== undefined ? 'answered by pubgate' : `answered by ${server ? `"${server}"` : 'something that is not pubgate (no JSON error body)'}`;
  const summary = `${head.status} ${head.statusText}`.trim() + ` instead of 101 (${by}${code ? `: ${code}${msg ? `, "${msg}"` : ''}` : ''})`;
  const details: string[] = [];
  if (code === undefined && body.trim()) details.push(`body: ${body.replace(/\s+/g, ' ').trim().slice(0, 160)}`);
  if (head.headers['retry-after']) details.push(`Retry-After: ${head.headers['retry-after']}`);
  const r = (cause: string, fix: string, doc?: string): StepResult => ({ step: 'upgrade', status: 'fail', summary, details, cause, fix, ...(doc ? { doc } : {}) });

  switch (head.status) {
    case 401: {
      if (o.token === undefined) return r('no token was sent and anonymous connections are not allowed', 'pass --token <jwt> (clients send it as the bearer.<jwt> subprotocol)', DOCS.token);
      const claims = decodeClaims(o.token);
      if (claims && typeof claims.exp === 'number' && claims.exp <= Date.now() / 1000) {
        return r(`the token expired ${ago(claims.exp - Date.now() / 1000)} ago`, 'get a fresh token; clients must call getToken before reconnecting and refresh before expiry', DOCS.token);
      }
      return r(
        'the token was refused: signed with a secret or key the gateway does not have (PUBGATE_JWT_SECRETS, kid), an algorithm outside PUBGATE_JWT_ALGORITHMS, a wrong iss/aud, no sub or exp, or a clock difference beyond the tolerance',
        "sign tokens with a secret in PUBGATE_JWT_SECRETS (with its kid when secrets have kids), and check iss/aud against PUBGATE_JWT_ISSUER/PUBGATE_JWT_AUDIENCE",
        DOCS.token,
      );
    }
    case 403:
      if (code === 'origin_not_allowed') {
        return r(
          o.origin === undefined ? 'no Origin was sent and PUBGATE_REQUIRE_ORIGIN=true' : `the Origin ${o.origin} is not in PUBGATE_ALLOWED_ORIGINS`,
          o.origin === undefined ? 'pass --origin with the page origin (browsers always send one)' : `add ${o.origin} to PUBGATE_ALLOWED_ORIGINS (exact scheme://host[:port], or a one-label wildcard https://*.example.com)`,
          DOCS.origin,
        );
      }
      return r('a proxy or firewall in front of the gateway refused the request (access rules, WAF)', 'check the access rules of the proxy that answered', DOCS.origin);
    case 404:
      return r(
        code !== undefined ? `the gateway has nothing at ${t.path.split('?')[0]}: pubgate serves the WebSocket at /ws` : `the proxy has no route to the gateway for ${t.path.split('?')[0]}`,
        code !== undefined ? 'connect to /ws (wss://ws.example.com/ws)' : 'add a location for this path that proxies to the gateway, e.g. nginx: location /ws { proxy_pass http://pubgate; ... }',
        DOCS.path,
      );
    case 426:
    case 400:
      if (code !== undefined) {
        return r(
          'the gateway received the request without its WebSocket headers (Upgrade, Connection, Sec-WebSocket-*): a proxy in between did not forward them',
          'nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; (Apache: mod_proxy_wstunnel, or ProxyPass with upgrade=websocket)',
          DOCS.upgrade,
        );
      }
      return r('a proxy refused the upgrade request', 'check that the proxy supports WebSocket upgrades on this path', DOCS.upgrade);
    case 505:
      return r(
        'the gateway was asked in HTTP/1.0, which cannot carry a WebSocket upgrade: the proxy in front of it speaks HTTP/1.0 to its upstream (nginx does by default)',
        'nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";',
        DOCS.upgrade,
      );
    case 429:
      return r('too many handshakes from this IP (PUBGATE_IP_HANDSHAKE_RATE)', 'wait for Retry-After; behind a proxy, set PUBGATE_TRUSTED_PROXIES so that the real client IP is used', DOCS.rateLimited);
    case 502:
      return r('the proxy cannot reach the gateway (no node up, or a wrong upstream address or port)', 'check the proxy upstream (proxy_pass) against the gateway address, and that the gateway is running (/healthz on its admin port)', DOCS.down);
    case 504:
      return r('the proxy gave up waiting for the gateway (the node is overloaded or a firewall drops the connection to it)', 'check that the proxy reaches the gateway port and the node is healthy', DOCS.gatewayTimeout);
    case 503:
      if (code === 'draining') return r('this node is shutting down', 'connect again: clients reconnect to another node (close 1001 / 503 draining is normal during deploys)', DOCS.capacity);
      if (code === 'overloaded') return r('the node holds PUBGATE_MAX_CONNECTIONS connections', 'add nodes or raise PUBGATE_MAX_CONNECTIONS', DOCS.capacity);
      if (code === 'unavailable') return r('the gateway cannot verify tokens right now (JWKS endpoint unreachable) or its broker is down', 'check PUBGATE_JWT_JWKS_URL and Redis', DOCS.redis);
      return r('the proxy has no healthy upstream, or the service is down', 'check the gateway nodes and the proxy health checks (/readyz)', DOCS.down);
    case 500:
      if (code === undefined && /apache/i.test(server ?? '')) {
        return r('Apache has no handler for the upgrade (AH01144: mod_proxy_wstunnel missing, or ProxyPass without upgrade=websocket)', 'a2enmod proxy_wstunnel, or ProxyPass /ws ws://gateway:8080/ws upgrade=websocket', DOCS.apache);
      }
      return r('the server failed while answering the upgrade', 'see the server that answered (its error log)');
    default:
      if (head.status >= 300 && head.status < 400) {
        return r(
          `a redirect${head.headers.location ? ` to ${head.headers.location}` : ''}: WebSocket clients do not follow redirects`,
          'use the final URL (often wss:// instead of ws://, or a path with or without a trailing slash)',
          DOCS.path,
        );
      }
      if (head.status === 200) {
        return r(
          'a plain HTTP response: the request reached a web server or application (an SPA fallback, a default site), not the gateway, or a proxy dropped the Upgrade headers',
          'route this host and path to the gateway with WebSocket headers forwarded',
          DOCS.upgrade,
        );
      }
      return r('the handshake was refused', 'see the status and body above');
  }
}

/** Runs every step of the WebSocket, then the SSE stream; reports which transports work. */
export async function runCheck(o: CheckOptions): Promise<CheckReport> {
  const steps: StepResult[] = [];
  const add = (r: StepResult): StepResult => {
    steps.push(r);
    o.onStep?.(r);
    return r;
  };
  const target = await walkWebSocket(o, add);
  const websocket = steps.every((s) => s.status !== 'fail');
  let sse: boolean | undefined;
  // Only when HTTP reached something: with the URL, DNS, TCP or TLS broken, SSE cannot work either.
  if (o.sse !== false && target && steps.some((s) => s.step === 'upgrade')) {
    const r = add(await sseStep(o, target, steps.find((s) => s.status === 'fail')));
    sse = r.status === 'skip' ? undefined : r.status !== 'fail';
  }
  return { ok: steps.every((s) => s.status !== 'fail'), steps, transports: { websocket, sse } };
}

/** The WebSocket steps; stops at the first failure that makes the next steps impossible. Returns the target when the URL was usable. */
async function walkWebSocket(o: CheckOptions, add: (r: StepResult) => StepResult): Promise<Target | undefined> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const idleSec = o.idleSec ?? 90;
  const parsed = parseTarget(o.url);
  add(parsed.result);
  const t = parsed.target;
  const report = (): Target | undefined => t;
  if (!t) return report();
  add(tokenStep(o.token));

  const dns = await dnsStep(t, timeoutMs);
  add(dns.result);
  if (dns.addresses.length === 0) return report();

  const tcp = await tcpStep(t, dns.addresses, timeoutMs);
  add(tcp.result);
  if (!tcp.sock) return report();
  let sock: net.Socket = tcp.sock;

  if (t.secure) {
    const r = await tlsStep(t, sock, timeoutMs);
    add(r.result);
    if (!r.sock) return report();
    sock = r.sock;
  } else {
    add({ step: 'tls', status: 'skip', summary: 'ws:// (no TLS)' });
  }

  // ---- HTTP upgrade ----
  const key = newKey();
  const protocols = [SUBPROTOCOL, ...(o.token !== undefined ? [`bearer.${o.token}`] : [])];
  sock.on('error', () => undefined); // reported through the reads below
  sock.write(upgradeRequest({ host: t.hostHeader, path: t.path, key, protocols, ...(o.origin !== undefined ? { origin: o.origin } : {}) }));
  let resp: { head: ResponseHead; rest: Buffer; raw: string };
  try {
    resp = await readResponse(sock, timeoutMs);
  } catch (e) {
    add({
      step: 'upgrade',
      status: 'fail',
      summary: `no usable HTTP answer to the upgrade request: ${message(e)}`,
      cause: t.secure ? 'the TLS endpoint does not speak HTTP/1.1 here, or a proxy cut the connection' : 'the port does not speak HTTP (TLS expected? try wss://), or a proxy cut the connection',
      fix: 'check the scheme and port, and the proxy in front of the gateway',
    });
    sock.destroy();
    return report();
  }
  const { head } = resp;
  if (head.status !== 101) {
    const body = await readBody(sock, head, resp.rest, 2000);
    add(describeRefusal(t, head, body, o));
    sock.destroy();
    return report();
  }
  const upgradeProblems: string[] = [];
  if (!headerHas(head.headers.upgrade, 'websocket')) upgradeProblems.push(`the 101 response has ${head.headers.upgrade === undefined ? 'no Upgrade header' : `Upgrade: ${head.headers.upgrade}`}`);
  if (!headerHas(head.headers.connection, 'upgrade')) upgradeProblems.push(`the 101 response has ${head.headers.connection === undefined ? 'no Connection header' : `Connection: ${head.headers.connection}`}`);
  const accept = head.headers['sec-websocket-accept'];
  if (accept !== expectedAccept(key)) upgradeProblems.push(accept === undefined ? 'no Sec-WebSocket-Accept header' : `Sec-WebSocket-Accept is ${accept}, expected ${expectedAccept(key)}`);
  if (upgradeProblems.length > 0) {
    add({
      step: 'upgrade',
      status: 'fail',
      summary: `101 Switching Protocols, but ${upgradeProblems[0]}`,
      details: upgradeProblems.slice(1),
      cause: 'a proxy rewrote or dropped the handshake headers on the way back: browsers fail such a handshake',
      fix: 'forward the upgrade end to end (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"), and do not strip response headers',
      doc: DOCS.upgrade,
    });
    sock.destroy();
    return report();
  }
  add({ step: 'upgrade', status: 'ok', summary: '101 Switching Protocols, Upgrade/Connection present, Sec-WebSocket-Accept correct' });

  const selected = head.headers['sec-websocket-protocol'];
  const ext = head.headers['sec-websocket-extensions'];
  if (selected !== undefined && selected.startsWith('bearer.')) {
    add({ step: 'subprotocol', status: 'fail', summary: 'the response echoes the bearer.<token> entry as the subprotocol', cause: 'the token is echoed back (and browsers expect pubgate.v1): something in between rewrote the header', fix: 'let the gateway choose the subprotocol; do not set Sec-WebSocket-Protocol in the proxy', doc: DOCS.subprotocol });
  } else if (selected !== undefined && selected !== SUBPROTOCOL) {
    add({ step: 'subprotocol', status: 'fail', summary: `the server selected "${selected}", which the client did not offer`, cause: 'browsers fail a handshake that selects a subprotocol they did not offer', fix: 'do not set Sec-WebSocket-Protocol in the proxy', doc: DOCS.subprotocol });
  } else if (selected === undefined) {
    add({
      step: 'subprotocol',
      status: 'fail',
      summary: 'no subprotocol selected, though pubgate.v1 was offered (pubgate always selects it)',
      cause: 'a proxy dropped the Sec-WebSocket-Protocol response header, or this endpoint is not pubgate: browsers fail such a connection ("Sent non-empty \'Sec-WebSocket-Protocol\' header but no response was received"), and so does the ws package',
      fix: 'forward the Sec-WebSocket-Protocol header both ways',
      doc: DOCS.subprotocol,
    });
  } else if (ext !== undefined) {
    add({ step: 'subprotocol', status: 'fail', summary: `pubgate.v1, but the response enables extensions that were not offered: ${ext}`, cause: 'browsers fail a handshake with extensions they did not offer', fix: 'do not add Sec-WebSocket-Extensions in the proxy' });
  } else {
    add({ step: 'subprotocol', status: 'ok', summary: 'pubgate.v1' });
  }

  // ---- WebSocket session ----
  const ws = new Session(sock, resp.rest);
  const endedText = (e: Ended): string =>
    e.closeFrame ? `closed by the server with ${e.closeFrame.code}${e.closeFrame.reason ? ` "${e.closeFrame.reason}"` : ''}` : `cut without a close frame (1006${e.error ? `, ${e.error}` : ''})`;
  const first = await ws.next(() => true, timeoutMs);
  if (!('text' in first)) {
    add({
      step: 'welcome',
      status: 'fail',
      summary: 'timeout' in first ? `no frame within ${timeoutMs} ms after the upgrade` : `no welcome: the connection was ${endedText(first.ended)}`,
      cause: 'the gateway sends welcome at once; a proxy that buffers responses (proxy_buffering for this location) or a different server would explain silence',
      fix: 'proxy WebSockets without buffering, straight to the gateway',
      doc: DOCS.upgrade,
    });
    await ws.close();
    return report();
  }
  let welcome: { type?: unknown; node?: unknown; user?: unknown; expiresIn?: unknown; ping?: unknown };
  try {
    welcome = JSON.parse(first.text) as typeof welcome;
  } catch {
    welcome = {};
  }
  if (welcome.type !== 'welcome') {
    add({ step: 'welcome', status: 'fail', summary: `the first frame is not a welcome: ${first.text.slice(0, 120)}`, cause: 'this endpoint is not pubgate (or not version 1)', fix: 'check the URL' });
    await ws.close();
    return report();
  }
  const pingSec = typeof welcome.ping === 'number' ? welcome.ping : undefined;
  const expiresIn = typeof welcome.expiresIn === 'number' ? welcome.expiresIn : undefined;
  const welcomeWarn = pingSec !== undefined && pingSec >= 60;
  add({
    step: 'welcome',
    status: welcomeWarn ? 'warn' : 'ok',
    summary: `node ${String(welcome.node)}, user ${String(welcome.user)}, ${expiresIn === undefined ? 'no token expiry (anonymous)' : `token expires in ${expiresIn} s`}, server pings every ${pingSec ?? '?'} s`,
    ...(welcomeWarn
      ? {
          cause: `the server pings every ${pingSec} s: load balancers with a 60 s idle timeout cut quiet connections before the next ping`,
          fix: 'set PUBGATE_PING_INTERVAL below the smallest idle timeout on the path (25 s is the default)',
          doc: DOCS.idle,
        }
      : {}),
  });

  // ---- ping round trip ----
  const t0 = Date.now();
  ws.sendText('{"type":"ping","id":1}');
  const isReply = (id: number) => (text: string): boolean => {
    try {
      const f = JSON.parse(text) as { type?: unknown; id?: unknown };
      return f.type === 'reply' && f.id === id;
    } catch {
      return false;
    }
  };
  const pong = await ws.next(isReply(1), timeoutMs);
  if (!('text' in pong)) {
    add({
      step: 'ping',
      status: 'fail',
      summary: 'timeout' in pong ? `no reply to {"type":"ping","id":1} within ${timeoutMs} ms` : `no reply to ping: the connection was ${endedText(pong.ended)}`,
      cause: 'frames from the client do not reach the gateway (a proxy that does not pass client data after the upgrade)',
      fix: 'proxy WebSockets end to end without buffering',
      doc: DOCS.upgrade,
    });
    await ws.close();
    return report();
  }
  add({ step: 'ping', status: 'ok', summary: `reply in ${Date.now() - t0} ms` });

  // ---- idle ----
  if (idleSec <= 0) {
    add({ step: 'idle', status: 'skip', summary: 'skipped (--idle 0)' });
    await ws.close();
    return report();
  }
  const ended = await ws.wait(idleSec * 1000);
  if (ended) {
    const after = Math.round(ended.afterMs / 1000);
    if (!ended.closeFrame) {
      add({
        step: 'idle',
        status: 'fail',
        summary: `the idle connection was cut after ~${after} s without a close frame (1006; ${ws.pingsAnswered} server pings answered)`,
        cause: `something on the path closes connections idle for about ${after} s (nginx proxy_read_timeout defaults to 60 s; cloud load balancers 60 s) before the gateway's next ping${pingSec ? ` (every ${pingSec} s)` : ''}`,
        fix: 'raise the idle timeout of the proxy/load balancer for WebSocket routes (nginx: proxy_read_timeout 1h; proxy_send_timeout 1h), or set PUBGATE_PING_INTERVAL below it',
        doc: DOCS.idle,
      });
    } else {
      const code = ended.closeFrame.code;
      const why: Record<number, { cause: string; fix: string; doc?: string }> = {
        4002: { cause: 'the gateway heard nothing for two ping intervals: its pings or our pongs are not getting through', fix: 'proxies must pass WebSocket control frames; check for a proxy that terminates and re-originates WebSockets', doc: DOCS.idle },
        4001: { cause: 'the token expired during the idle test', fix: 'use a token that lives longer than --idle, or shorten --idle; clients refresh before expiry', doc: DOCS.token },
        1001: { cause: 'the node is shutting down (deploy or scale-in)', fix: 'nothing: clients reconnect to another node; run the check again', doc: DOCS.capacity },
        4008: { cause: 'the gateway found this connection too slow to read its messages', fix: 'nothing on the path, usually: clients reconnect and recover with since', doc: DOCS.slow },
        1011: { cause: 'the node lost its broker (Redis) and closed history subscribers so that they recover', fix: 'check Redis; clients reconnect and recover with since', doc: DOCS.redis },
        4501: { cause: 'the user was disconnected through POST /v1/disconnect', fix: 'nothing to fix on the path' },
      };
      const w = why[code] ?? { cause: 'the server closed the connection', fix: 'see docs/errors.md for this close code' };
      add({ step: 'idle', status: 'fail', summary: `the connection was ${endedText(ended)} after ~${after} s of idle`, cause: w.cause, fix: w.fix, ...(w.doc ? { doc: w.doc } : {}) });
    }
    return report();
  }
  ws.sendText('{"type":"ping","id":2}');
  const after = await ws.next(isReply(2), timeoutMs);
  if (!('text' in after)) {
    add({
      step: 'idle',
      status: 'fail',
      summary: `open after ${idleSec} s, but a ping got no reply: the connection is dead without having been closed`,
      cause: 'a proxy or NAT dropped the idle connection silently (half-open TCP)',
      fix: 'raise the idle timeout on the path, or set PUBGATE_PING_INTERVAL below it',
      doc: DOCS.idle,
    });
    await ws.close();
    return report();
  }
  add({ step: 'idle', status: 'ok', summary: `still open after ${idleSec} s idle (${ws.pingsAnswered} server pings answered), and a ping is answered` });
  await ws.close();
  return report();
}

/** The channel the SSE step names: --channel, else the first the token's `channels` claim allows (a pattern's prefix + "pubgate-check"). */
function sseChannel(o: CheckOptions): string | undefined {
  if (o.channel !== undefined) return o.channel;
  const claims = o.token !== undefined ? decodeClaims(o.token) : undefined;
  const list = Array.isArray(claims?.channels) ? claims.channels.filter((c): c is string => typeof c === 'string') : [];
  const sub = typeof claims?.sub === 'string' ? claims.sub : '';
  for (const raw of list) {
    const p = raw.split('{sub}').join(sub);
    const name = p.endsWith('*') ? `${p.slice(0, -1)}pubgate-check` : p;
    if (/^[A-Za-z0-9_:.@/=-]{1,200}$/.test(name)) return name;
  }
  return undefined;
}

/** `ws://h/ws` → `http://h/sse` (the query kept). */
function sseUrlOf(t: Target): string {
  const [path, query] = t.path.split('?', 2) as [string, string | undefined];
  const base = path.replace(/\/ws\/?$/, '').replace(/\/$/, '');
  return `${t.secure ? 'https' : 'http'}://${t.hostHeader}${base}/sse${query ? `?${query}&` : '?'}`;
}

/**
 * Opens `GET /sse?channel=…` the way @pubgate/client does when it falls
 * back (fetch, Authorization header) and waits for `event: welcome`. When the
 * WebSocket failed and this works, says so: the symptom of a proxy that
 * strips Upgrade, with its fix.
 */
async function sseStep(o: CheckOptions, t: Target, wsFailure: StepResult | undefined): Promise<StepResult> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const channel = sseChannel(o);
  if (channel === undefined) {
    return { step: 'sse', status: 'skip', summary: 'not tried: the stream names a channel; give --channel (or a token whose channels claim lists one)' };
  }
  const url = `${sseUrlOf(t)}channel=${encodeURIComponent(channel)}`;
  const shown = url.replace(/access_token=[^&]*/, 'access_token=…');
  const headers: Record<string, string> = { accept: 'text/event-stream' };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (o.origin !== undefined) headers.origin = o.origin;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const bad = (summary: string, cause: string, fix: string, doc?: string): StepResult => ({
    step: 'sse',
    status: wsFailure ? 'fail' : 'warn',
    summary,
    details: [wsFailure ? 'no transport works: neither WebSocket nor SSE' : 'WebSocket works; the SSE fallback would not'],
    cause,
    fix,
    ...(doc ? { doc } : {}),
  });
  try {
    const res = await fetch(url, { headers, signal: ac.signal });
    if (res.status !== 200) {
      const body = (await res.text()).slice(0, 8192);
      let code: string | undefined;
      try {
        const j = JSON.parse(body) as { error?: { code?: unknown } };
        code = typeof j.error?.code === 'string' ? j.error.code : undefined;
      } catch {
        // not pubgate's JSON
      }
      const what = `${res.status} ${res.statusText}`.trim() + ` from ${shown}${code ? ` (answered by pubgate: ${code})` : ''}`;
      if (res.status === 404 && code !== undefined) {
        return { step: 'sse', status: 'skip', summary: `${what}: this gateway does not serve SSE (PUBGATE_SSE=false, or a version before 1.1)` };
      }
      if (res.status === 404) return bad(what, 'the proxy has no route to the gateway for /sse', 'route /sse to the gateway like /ws, without buffering (nginx: location /sse { proxy_pass http://pubgate; proxy_buffering off; proxy_read_timeout 1h; })', DOCS.path);
      if (res.status === 403 && code === 'forbidden') return bad(what, `the token may not read ${channel}`, 'give --channel with a channel the token allows');
      if (res.status === 401) return bad(what, 'the token was refused (see the token step)', 'as for the WebSocket: a valid, unexpired token', DOCS.token);
      if (res.status === 403 && code === 'origin_not_allowed') return bad(what, `the Origin ${o.origin ?? '(none)'} is not allowed`, 'add it to PUBGATE_ALLOWED_ORIGINS', DOCS.origin);
      return bad(what, 'the request was refused', 'see the status and body');
    }
    const type = res.headers.get('content-type') ?? '';
    if (!/^text\/event-stream/i.test(type)) {
      await res.body?.cancel().catch(() => undefined);
      return bad(`200 from ${shown}, but ${type || 'no Content-Type'}, not text/event-stream`, 'the request reached something that is not the gateway (an SPA fallback, a default site)', 'route /sse to the gateway', DOCS.path);
    }
    // Read up to the welcome (bounded: 64 KiB).
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let welcome: { node?: unknown; user?: unknown } | undefined;
    while (welcome === undefined && text.length < 65_536) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      const m = /(?:^|\n)event: ?welcome\r?\n(?:[^\r\n]*\r?\n)*?data: ?([^\r\n]*)\r?\n/.exec(text);
      if (m) {
        try {
          welcome = JSON.parse(m[1]!) as typeof welcome;
        } catch {
          welcome = {};
        }
      }
    }
    await reader.cancel().catch(() => undefined);
    if (welcome === undefined) {
      return bad(`the stream opened (200 text/event-stream) but sent no welcome`, 'a proxy buffers the response (nginx proxy_buffering on for /sse), or this is not pubgate', 'turn response buffering off for /sse (nginx: proxy_buffering off; the gateway also sends X-Accel-Buffering: no)', DOCS.upgrade);
    }
    const summary = `${shown}: welcome from node ${String(welcome.node)}, user ${String(welcome.user)}`;
    if (!wsFailure) return { step: 'sse', status: 'ok', summary };
    return {
      step: 'sse',
      status: 'ok',
      summary,
      details: [
        `WebSocket fails (at ${LABEL[wsFailure.step]}) but SSE works: @pubgate/client falls back to SSE by itself and receives everything, but socket publish(), ping() and presence need the WebSocket.`,
        'Likely cause: a proxy on the path strips the Upgrade/Connection headers (or blocks WebSocket) while plain HTTP passes.',
        `Fix: ${wsFailure.fix ?? 'forward the upgrade (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade")'}`,
        `See ${DOC_FILE}, "${DOCS.upgrade}" (#${anchor(DOCS.upgrade)})`,
      ],
    };
  } catch (e) {
    const timedOut = ac.signal.aborted;
    return bad(
      timedOut ? `no welcome on ${shown} within ${timeoutMs} ms` : `the SSE request to ${shown} failed: ${message(e)}`,
      timedOut ? 'a proxy buffers the stream (nginx proxy_buffering), or the gateway is slow to answer' : 'the request did not complete (certificate, connection reset, proxy)',
      timedOut ? 'turn response buffering off for /sse' : 'see the TLS and TCP steps',
      timedOut ? DOCS.upgrade : undefined,
    );
  } finally {
    clearTimeout(timer);
  }
}

const MARK: Record<StepStatus, string> = { ok: '✔', warn: '!', fail: '✘', skip: '-' };
const LABEL: Record<StepName, string> = {
  url: 'URL',
  token: 'Token',
  dns: 'DNS',
  tcp: 'TCP',
  tls: 'TLS',
  upgrade: 'Upgrade',
  subprotocol: 'Protocol',
  welcome: 'Welcome',
  ping: 'Ping',
  idle: 'Idle',
  sse: 'SSE',
};

/** One step as text lines (the CLI prints them as the steps complete). */
export function formatStep(r: StepResult): string {
  const lines = [`  ${MARK[r.status]} ${LABEL[r.step].padEnd(9)}${r.summary}`];
  for (const d of r.details ?? []) lines.push(`      ${d}`);
  if (r.status === 'fail' || r.status === 'warn') {
    if (r.cause) lines.push(`      Likely cause: ${r.cause}`);
    if (r.fix) lines.push(`      Fix: ${r.fix}`);
    if (r.doc) lines.push(`      See ${DOC_FILE}, "${r.doc}" (#${anchor(r.doc)})`);
  }
  return lines.join('\n');
}

export function formatVerdict(report: CheckReport): string {
  const { websocket, sse } = report.transports;
  const transports = `Transports: WebSocket ${websocket ? 'works' : 'fails'}${sse === undefined ? '' : `, SSE ${sse ? 'works' : 'fails'}`}.`;
  return `${verdictLine(report)}\n${transports}${!websocket && sse ? ' Clients fall back to SSE (receive only) until the WebSocket path is fixed.' : ''}`;
}

function verdictLine(report: CheckReport): string {
  const failed = report.steps.find((s) => s.status === 'fail');
  if (!failed) {
    const warned = report.steps.filter((s) => s.status === 'warn').length;
    return warned > 0 ? `OK, with ${warned} warning${warned > 1 ? 's' : ''}: the connection works end to end.` : 'OK: the connection works end to end.';
  }
  return `FAILED at ${LABEL[failed.step]}: ${failed.summary}`;
}
