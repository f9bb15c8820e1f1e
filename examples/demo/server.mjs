#!/usr/bin/env node
/* global AbortSignal */
/**
 * pubgate demo server: serves the chat page and the built @pubgate/client
 * (packages/client/dist, as ES modules), mints tokens for the page with the
 * gateway's shared secret (HS256, node:crypto; with an `info` claim that
 * presence shows), and publishes the page's chat messages through the
 * gateway's POST /v1/publish with an API key. The gateway itself serves none
 * of this.
 *
 * The page lists who is in the room: the gateway needs presence and
 * join/leave on demo:* channels (GATEWAY_NAMESPACES below):
 *
 *   PUBGATE_NAMESPACES='[{"pattern":"demo:*","presence":true,"joinLeave":true}]' npm start
 *                                              # a gateway on 127.0.0.1:8080 (development config)
 *   npm run build:client                       # builds packages/client/dist
 *   node examples/demo/server.mjs              # http://127.0.0.1:8090
 *
 * Environment (defaults fit the development config, config/development.json):
 *   DEMO_HOST / DEMO_PORT      where this server listens (127.0.0.1 / 8090; 0 = any free port)
 *   PUBGATE_WS_URL             the gateway URL the page connects to; a comma-separated list rotates
 *                              (ws://127.0.0.1:8080/ws)
 *   PUBGATE_API_URL            the gateway's publish API (http://127.0.0.1:8080)
 *   PUBGATE_API_KEY            an API key of the gateway (first of apiKeys in config/development.json)
 *   PUBGATE_JWT_SECRET         an HMAC secret of the gateway, optionally kid:secret
 *                              (first of jwtSecrets in config/development.json)
 *   DEMO_TOKEN_TTL             seconds a page token lives (600); the client refreshes it before expiry
 *   DEMO_CHANNEL               the chat channel (demo:chat)
 *   DEMO_CLIENT_DIST           the built client to serve at /client/ (packages/client/dist)
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');

function devConfig() {
  try {
    return JSON.parse(readFileSync(path.join(root, 'config/development.json'), 'utf8'));
  } catch {
    return {};
  }
}
const first = (v) => (Array.isArray(v) ? v[0] : String(v ?? '').split(',')[0])?.trim() || undefined;
const dev = devConfig();
const env = process.env;

/** The namespaces the gateway needs for the demo's member list (its PUBGATE_NAMESPACES). */
const GATEWAY_NAMESPACES = '[{"pattern":"demo:*","presence":true,"joinLeave":true}]';

const config = {
  host: env.DEMO_HOST ?? '127.0.0.1',
  port: Number(env.DEMO_PORT ?? 8090),
  wsUrls: (env.PUBGATE_WS_URL ?? 'ws://127.0.0.1:8080/ws').split(',').map((s) => s.trim()).filter(Boolean),
  apiUrl: (env.PUBGATE_API_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, ''),
  apiKey: env.PUBGATE_API_KEY ?? first(dev.apiKeys),
  secret: env.PUBGATE_JWT_SECRET ?? first(dev.jwtSecrets),
  tokenTtl: Number(env.DEMO_TOKEN_TTL ?? 600),
  channel: env.DEMO_CHANNEL ?? 'demo:chat',
  clientDist: path.resolve(root, env.DEMO_CLIENT_DIST ?? 'packages/client/dist'),
};
if (!config.apiKey || !config.secret) {
  process.stderr.write('demo: set PUBGATE_API_KEY and PUBGATE_JWT_SECRET (or keep config/development.json)\n');
  process.exit(2);
}

/** An HS256 JWT (what the gateway verifies with PUBGATE_JWT_SECRETS). */
function signJwt(claims) {
  const colon = config.secret.indexOf(':');
  const [kid, secret] = colon > 0 ? [config.secret.slice(0, colon), config.secret.slice(colon + 1)] : [undefined, config.secret];
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT', ...(kid ? { kid } : {}) })}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json', '.ts': 'text/plain; charset=utf-8' };

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

/** A file under `dir`, never outside it. */
async function serveFile(res, dir, rel) {
  const file = path.resolve(dir, `.${path.posix.normalize(`/${rel}`)}`);
  if (!file.startsWith(dir + path.sep)) return send(res, 404, { error: 'not found' });
  try {
    const body = await readFile(file);
    send(res, 200, body, TYPES[path.extname(file)] ?? 'application/octet-stream');
  } catch {
    send(res, 404, { error: 'not found' }, 'application/json');
  }
}

async function readJson(req, limit = 8192) {
  let size = 0;
  const chunks = [];
  for await (const c of req) {
    size += c.length;
    if (size > limit) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw Object.assign(new Error('invalid JSON'), { status: 400 });
  }
}

const cleanName = (s) => String(s ?? '').replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 32);
/** The name shown in the member list: what was typed, without control characters, at most 32 characters. */
const displayName = (s) => String(s ?? '').replace(/[\p{Cc}\p{Cf}]/gu, '').trim().slice(0, 32);

async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://demo');
  const p = url.pathname;
  if (req.method === 'GET' && (p === '/' || p === '/index.html')) return serveFile(res, path.join(here, 'public'), 'index.html');
  if (req.method === 'GET' && (p === '/app.js' || p === '/style.css')) return serveFile(res, path.join(here, 'public'), p.slice(1));
  if (req.method === 'GET' && p.startsWith('/client/')) return serveFile(res, config.clientDist, decodeURIComponent(p.slice('/client/'.length)));
  if (req.method === 'GET' && p === '/healthz') return send(res, 200, { ok: true });
  if (req.method === 'GET' && p === '/api/config') return send(res, 200, { wsUrl: config.wsUrls, channel: config.channel, namespaces: GATEWAY_NAMESPACES });
  if (req.method === 'GET' && p === '/api/token') {
    // A real backend mints a token for the user of its session; the demo trusts the name it is given.
    const asked = url.searchParams.get('user');
    const user = cleanName(asked) || `guest-${randomBytes(3).toString('hex')}`;
    // `info` (a JSON object, at most 1 KiB) is what presence and join frames show of this connection.
    const info = { name: displayName(asked) || user };
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt({ sub: user, channels: ['demo:*'], info, iat: now, exp: now + config.tokenTtl });
    return send(res, 200, { token, user, info, expiresIn: config.tokenTtl });
  }
  if (req.method === 'POST' && p === '/api/publish') {
    const body = await readJson(req);
    const text = typeof body.text === 'string' ? body.text.trim() : '';
    if (!text || text.length > 500) return send(res, 400, { error: 'text must be 1 to 500 characters' });
    const channel = typeof body.channel === 'string' ? body.channel : config.channel;
    if (!channel.startsWith('demo:')) return send(res, 403, { error: 'the demo publishes to demo:* channels only' });
    const data = { user: cleanName(body.user) || 'anonymous', text, at: new Date().toISOString() };
    const upstream = await fetch(`${config.apiUrl}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${config.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
      signal: AbortSignal.timeout(10_000),
    });
    return send(res, upstream.status, await upstream.text());
  }
  return send(res, 404, { error: 'not found' });
}

const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    const status = typeof e?.status === 'number' ? e.status : 502;
    if (!res.headersSent) send(res, status, { error: e instanceof Error ? e.message : String(e) });
    else res.destroy();
  });
});

server.listen(config.port, config.host, () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const url = `http://${config.host}:${port}/`;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', url, port, gateway: config.wsUrls, api: config.apiUrl, clientDist: config.clientDist })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
