/**
 * Clients for tests that go through a load balancer or TLS: a WebSocket client
 * (the `ws` package) that takes TLS options (ca, servername) and a Host header,
 * counts the server's ping frames, and waits for frames, pings and closes as
 * events; and a plain HTTP(S) request with a chosen Host header and SNI name.
 */
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { frameInbox, upgradeRefusal, type Frame } from './client.js';
import { TEST_API_KEY } from './gateway.js';
import { checkAnswer, headerText } from './openapi.js';

export interface WireOptions {
  readonly token?: string;
  /** How the token travels: 'subprotocol' (default) or 'query'. */
  readonly via?: 'subprotocol' | 'query';
  readonly protocols?: readonly string[];
  readonly headers?: Readonly<Record<string, string>>;
  /** Host header (name-based virtual hosts on the proxy). */
  readonly host?: string;
  /** TLS: trusted certificate(s) and the SNI / verification name. */
  readonly ca?: string;
  readonly servername?: string;
  readonly rejectUnauthorized?: boolean;
}

export interface WireClient {
  readonly ws: WebSocket;
  readonly welcome: Frame;
  /** Ping frames received from the server so far. */
  readonly pings: () => number;
  /** The server certificate's SHA-256 fingerprint (wss:// only). */
  readonly peerFingerprint256: string | undefined;
  next(pred?: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  request(frame: Record<string, unknown> & { id: number }, timeoutMs?: number): Promise<Frame>;
  /** Resolves once `count` pings in total have arrived; rejects if the socket closes first. */
  waitPings(count: number, timeoutMs?: number): Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  isOpen(): boolean;
  close(): Promise<void>;
}

/** ws passes `servername` through to tls.connect; its typings leave it out. */
type ClientOptions = WebSocket.ClientOptions & { servername?: string };

function wsOptions(o: WireOptions): { url: (u: string) => string; protocols: string[]; opts: ClientOptions } {
  const protocols = [...(o.protocols ?? ['pubgate.v1'])];
  const via = o.via ?? 'subprotocol';
  if (o.token !== undefined && via === 'subprotocol') protocols.push(`bearer.${o.token}`);
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.host) headers.host = o.host;
  const opts: ClientOptions = { headers, perMessageDeflate: false, handshakeTimeout: 15_000 };
  if (o.ca !== undefined) opts.ca = o.ca;
  if (o.servername !== undefined) opts.servername = o.servername;
  if (o.rejectUnauthorized !== undefined) opts.rejectUnauthorized = o.rejectUnauthorized;
  const url = (u: string): string =>
    o.token !== undefined && via === 'query' ? `${u}${u.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(o.token)}` : u;
  return { url, protocols, opts };
}

/** Opens a WebSocket and waits for `welcome`; rejects with the HTTP status if the upgrade is refused. */
export async function openClient(url: string, o: WireOptions = {}): Promise<WireClient> {
  const b = wsOptions(o);
  const ws = new WebSocket(b.url(url), b.protocols, b.opts);
  let pings = 0;
  const pingWaiters: { count: number; resolve: () => void }[] = [];
  let closedInfo: { code: number; reason: string } | undefined;
  const onClosed: (() => void)[] = [];
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => {
      closedInfo = { code, reason: reason.toString() };
      resolve(closedInfo);
      for (const f of onClosed.splice(0)) f();
    });
  });
  ws.on('ping', () => {
    pings++;
    for (let i = pingWaiters.length - 1; i >= 0; i--) {
      if (pings >= pingWaiters[i]!.count) pingWaiters.splice(i, 1)[0]!.resolve();
    }
  });
  const { next } = frameInbox(ws, () => closedInfo);
  let peerFingerprint256: string | undefined;
  await new Promise<void>((resolve, reject) => {
    ws.once('upgrade', (res) => {
      const sock = res.socket as TLSSocket;
      if (typeof sock.getPeerCertificate === 'function') peerFingerprint256 = sock.getPeerCertificate().fingerprint256;
    });
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => reject(Object.assign(new Error(`upgrade refused with ${res.statusCode}: ${text.slice(0, 300)}`), { status: res.statusCode, body: text })));
    });
  });
  ws.on('error', () => undefined); // a reset after open is reported through `closed`
  const welcome = await next((f) => f.type === 'welcome');
  return {
    ws,
    welcome,
    pings: () => pings,
    peerFingerprint256,
    next,
    request(frame, timeoutMs) {
      ws.send(JSON.stringify(frame));
      return next((f) => f.type === 'reply' && f.id === frame.id, timeoutMs);
    },
    waitPings(count, timeoutMs = 30_000) {
      if (pings >= count) return Promise.resolve();
      if (closedInfo) return Promise.reject(new Error(`socket closed ${closedInfo.code} after ${pings} pings`));
      return new Promise((resolve, reject) => {
        const w = {
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        const timer = setTimeout(() => reject(new Error(`only ${pings} of ${count} pings within ${timeoutMs} ms`)), timeoutMs);
        pingWaiters.push(w);
        onClosed.push(() => {
          const i = pingWaiters.indexOf(w);
          if (i < 0) return;
          pingWaiters.splice(i, 1);
          clearTimeout(timer);
          reject(new Error(`socket closed ${closedInfo?.code ?? '?'} after ${pings} of ${count} pings`));
        });
      });
    },
    closed,
    isOpen: () => ws.readyState === WebSocket.OPEN,
    async close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
      await closed;
    },
  };
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** Attempts an upgrade that must be refused; resolves with the HTTP answer. */
export function refusedUpgrade(url: string, o: WireOptions = {}): Promise<HttpAnswer> {
  const b = wsOptions(o);
  return upgradeRefusal(new WebSocket(b.url(url), b.protocols, b.opts));
}

export interface RequestOptions {
  readonly tls: boolean;
  readonly port: number;
  readonly method?: string;
  readonly path: string;
  readonly host?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  readonly ca?: string;
  readonly servername?: string;
}

/** One HTTP(S) request to 127.0.0.1:port (no connection reuse). */
export function request(o: RequestOptions): Promise<HttpAnswer> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.host) headers.host = o.host;
  if (o.body !== undefined) headers['content-length'] = String(Buffer.byteLength(o.body));
  const base = { host: '127.0.0.1', port: o.port, method: o.method ?? 'GET', path: o.path, headers, agent: false as const };
  return new Promise((resolve, reject) => {
    const onRes = (res: http.IncomingMessage): void => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        const answer = { status: res.statusCode ?? 0, headers: res.headers, body: text };
        // Checked against docs/openapi.yaml when a pubgate node answered (not a proxy in front of it).
        checkAnswer(new URL(`${o.tls ? 'https' : 'http'}://127.0.0.1:${o.port}${o.path}`), {
          method: base.method, status: answer.status, headers: (n) => headerText(res.headers[n.toLowerCase()]), body: text,
        });
        resolve(answer);
      });
      res.on('error', reject);
    };
    const req = o.tls
      ? https.request({ ...base, ...(o.ca !== undefined ? { ca: o.ca } : {}), ...(o.servername !== undefined ? { servername: o.servername } : {}) }, onRes)
      : http.request(base, onRes);
    req.setTimeout(15_000, () => req.destroy(new Error(`no answer from ${o.host ?? '127.0.0.1'}:${o.port}${o.path} within 15 s`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** POST /v1/publish with the test API key. */
export function publishVia(o: Omit<RequestOptions, 'path' | 'method' | 'body'>, channel: string, data: unknown): Promise<HttpAnswer> {
  return request({
    ...o,
    method: 'POST',
    path: '/v1/publish',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json', ...(o.headers ?? {}) },
    body: JSON.stringify({ channel, data }),
  });
}
