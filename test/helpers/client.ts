/**
 * A test WebSocket client (the `ws` package): waits for frames and closes as
 * events, never by sleeping. A wait that times out fails the test.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { TEST_SECRET } from './gateway.js';
import { addWaiter, type Waiter } from './waiters.js';

export interface Frame {
  readonly type: string;
  readonly [k: string]: unknown;
}

export interface ConnectOptions {
  readonly token?: string;
  /** How the token travels: 'subprotocol' (default), 'header' or 'query'. */
  readonly via?: 'subprotocol' | 'header' | 'query';
  readonly protocols?: string[];
  readonly origin?: string;
  readonly headers?: Record<string, string>;
  readonly perMessageDeflate?: boolean;
}

export interface Client {
  readonly ws: WebSocket;
  readonly welcome: Frame;
  readonly frames: Frame[];
  /** Next frame (past unread or future) matching `pred`. */
  next(pred?: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  /** Sends a frame and waits for the reply with its id. */
  request(frame: Record<string, unknown> & { id: number }, timeoutMs?: number): Promise<Frame>;
  send(frame: unknown): void;
  readonly closed: Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

function buildUrl(url: string, o: ConnectOptions): { url: string; protocols: string[]; headers: Record<string, string> } {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  const protocols = [...(o.protocols ?? ['pubgate.v1'])];
  if (o.origin !== undefined) headers.origin = o.origin;
  let u = url;
  if (o.token !== undefined) {
    const via = o.via ?? 'subprotocol';
    if (via === 'subprotocol') protocols.push(`bearer.${o.token}`);
    else if (via === 'header') headers.authorization = `Bearer ${o.token}`;
    else u += `${u.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(o.token)}`;
  }
  return { url: u, protocols, headers };
}

/**
 * The frames of `ws` not read yet. `next` takes the first one that matches,
 * or waits for it: a frame that arrives while a wait matches it goes to that
 * wait instead of `frames`. `closedInfo` (once the socket closed) goes into
 * the timeout message.
 */
export function frameInbox(
  ws: WebSocket,
  closedInfo: () => { code: number; reason: string } | undefined,
): { frames: Frame[]; next(pred?: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame> } {
  const frames: Frame[] = [];
  const waiters: Waiter<Frame>[] = [];
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString()) as Frame;
    const i = waiters.findIndex((w) => w.pred(f));
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(f);
    else frames.push(f);
  });
  const next = (pred: (f: Frame) => boolean = () => true, timeoutMs = 10_000): Promise<Frame> => {
    const i = frames.findIndex(pred);
    if (i >= 0) return Promise.resolve(frames.splice(i, 1)[0]!);
    return addWaiter(waiters, pred, timeoutMs, () => {
      const c = closedInfo();
      return new Error(`no matching frame within ${timeoutMs} ms${c ? `; socket closed ${c.code} ${c.reason}` : ''}`);
    });
  };
  return { frames, next };
}

export async function connect(url: string, o: ConnectOptions = {}): Promise<Client> {
  const b = buildUrl(url, o);
  const ws = new WebSocket(b.url, b.protocols, { headers: b.headers, perMessageDeflate: o.perMessageDeflate ?? false, maxPayload: 64 * 1024 * 1024 });
  let closedInfo: { code: number; reason: string } | undefined;
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => {
      closedInfo = { code, reason: reason.toString() };
      resolve(closedInfo);
    });
  });
  const { frames, next } = frameInbox(ws, () => closedInfo);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
  });
  ws.on('error', () => undefined); // a reset after close is reported through `closed`
  const welcome = await next((f) => f.type === 'welcome');
  return {
    ws,
    welcome,
    frames,
    next,
    send: (f) => ws.send(typeof f === 'string' ? f : JSON.stringify(f)),
    request(frame, timeoutMs) {
      ws.send(JSON.stringify(frame));
      return next((f) => f.type === 'reply' && f.id === frame.id, timeoutMs);
    },
    closed,
    async close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
      await closed;
    },
  };
}

export interface Refusal {
  readonly status: number;
  readonly body: { error?: { code: string; message: string } };
  readonly headers: Record<string, string | string[] | undefined>;
}

/** The HTTP answer to the upgrade `ws` attempts, which must be refused (rejects if it is accepted). */
export function upgradeRefusal(ws: WebSocket): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('upgrade was accepted'));
    });
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    ws.once('error', reject);
  });
}

/** Attempts an upgrade that must be refused; resolves with the HTTP answer, its JSON body parsed. */
export async function refused(url: string, o: ConnectOptions = {}): Promise<Refusal> {
  const b = buildUrl(url, o);
  const answer = await upgradeRefusal(new WebSocket(b.url, b.protocols, { headers: b.headers }));
  let body: Refusal['body'];
  try {
    body = JSON.parse(answer.body) as Refusal['body'];
  } catch {
    body = {};
  }
  return { status: answer.status, body, headers: answer.headers };
}

export interface TokenOptions {
  readonly secret?: string;
  readonly alg?: string;
  readonly kid?: string;
  readonly ttlSec?: number;
  readonly exp?: number;
}

export async function token(claims: Record<string, unknown>, o: TokenOptions = {}): Promise<string> {
  const header: { alg: string; kid?: string } = { alg: o.alg ?? 'HS256' };
  if (o.kid) header.kid = o.kid;
  const jwt = new SignJWT(claims).setProtectedHeader(header).setIssuedAt();
  if (claims.exp === undefined) jwt.setExpirationTime(o.exp ?? Math.floor(Date.now() / 1000) + (o.ttlSec ?? 3600));
  return jwt.sign(new TextEncoder().encode(o.secret ?? TEST_SECRET));
}
