#!/usr/bin/env node
/* global URLSearchParams */
/**
 * pubgate Pusher example: the backend a Pusher app already has, pointed at
 * pubgate instead of Pusher or Soketi. It serves a page that uses pusher-js
 * (its browser build, from node_modules: no CDN), authorizes the page's
 * private- and presence- channels with the `pusher` server library's
 * authorizeChannel, and triggers events with the same library. The gateway
 * serves none of this.
 *
 *   PUBGATE_PUSHER_APPS=app-id:app-key:app-secret npm start   # a gateway on 127.0.0.1:8080
 *   node examples/pusher/server.mjs                           # http://127.0.0.1:8092
 *
 * Environment (the PUSHER_* names are Laravel's .env names; defaults fit the line above):
 *   PUSHER_APP_ID / PUSHER_APP_KEY / PUSHER_APP_SECRET   the app in PUBGATE_PUSHER_APPS (app-id / app-key / app-secret)
 *   PUSHER_HOST / PUSHER_PORT                            the gateway (127.0.0.1 / 8080)
 *   PUSHER_SCHEME                                        http or https (http): https makes the page use wss
 *   EXAMPLE_HOST / EXAMPLE_PORT                          where this server listens (127.0.0.1 / 8092; 0 = any free port)
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Pusher from 'pusher';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const env = process.env;

const config = {
  appId: env.PUSHER_APP_ID ?? 'app-id',
  key: env.PUSHER_APP_KEY ?? 'app-key',
  secret: env.PUSHER_APP_SECRET ?? 'app-secret',
  host: env.PUSHER_HOST ?? '127.0.0.1',
  port: Number(env.PUSHER_PORT ?? 8080),
  useTLS: (env.PUSHER_SCHEME ?? 'http') === 'https',
  listenHost: env.EXAMPLE_HOST ?? '127.0.0.1',
  listenPort: Number(env.EXAMPLE_PORT ?? 8092),
};
/** The channels the page subscribes to: one of each kind pubgate authorizes. */
const CHANNELS = { public: 'example-feed', private: 'private-example', presence: 'presence-example' };

// The `pusher` server library, exactly as against Pusher or Soketi: only host/port/useTLS differ.
const pusher = new Pusher({
  appId: config.appId,
  key: config.key,
  secret: config.secret,
  host: config.host,
  port: String(config.port),
  useTLS: config.useTLS,
  timeout: 10_000,
});

/** pusher-js's browser build (dist/web), served to the page from node_modules. */
const PUSHER_JS = path.join(path.dirname(require.resolve('pusher-js/package.json')), 'dist/web/pusher.min.js');

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

async function sendFile(res, file) {
  try {
    send(res, 200, await readFile(file), TYPES[path.extname(file)] ?? 'application/octet-stream');
  } catch {
    send(res, 404, { error: 'not found' });
  }
}

/** The request body (bounded), as form fields (what pusher-js's auth request sends) or JSON. */
async function readBody(req, limit = 8192) {
  let size = 0;
  const chunks = [];
  for await (const c of req) {
    size += c.length;
    if (size > limit) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] ?? '').startsWith('application/json')) {
    try {
      return JSON.parse(text);
    } catch {
      throw Object.assign(new Error('invalid JSON'), { status: 400 });
    }
  }
  return Object.fromEntries(new URLSearchParams(text));
}

const cleanName = (s) => String(s ?? '').replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 32);

async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://example');
  const p = url.pathname;
  if (req.method === 'GET' && (p === '/' || p === '/index.html')) return sendFile(res, path.join(here, 'public/index.html'));
  if (req.method === 'GET' && (p === '/app.js' || p === '/style.css')) return sendFile(res, path.join(here, 'public', p.slice(1)));
  if (req.method === 'GET' && p === '/pusher.min.js') return sendFile(res, PUSHER_JS);
  if (req.method === 'GET' && p === '/healthz') return send(res, 200, { ok: true });
  if (req.method === 'GET' && p === '/api/config') {
    // What the page passes to `new Pusher(key, {...})`.
    return send(res, 200, { key: config.key, wsHost: config.host, wsPort: config.port, forceTLS: config.useTLS, channels: CHANNELS });
  }
  if (req.method === 'POST' && p === '/pusher/auth') {
    // pusher-js posts socket_id and channel_name (plus the page's `params`). A real backend
    // decides from its own session whether this user may have the channel; the example
    // lets anyone in and trusts the name the page sends.
    const body = await readBody(req);
    const socketId = String(body.socket_id ?? '');
    const channel = String(body.channel_name ?? '');
    if (channel !== CHANNELS.private && channel !== CHANNELS.presence) return send(res, 403, { error: 'not a channel of this example' });
    try {
      if (channel.startsWith('presence-')) {
        const user = cleanName(body.user) || `guest-${randomBytes(3).toString('hex')}`;
        return send(res, 200, pusher.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: user } }));
      }
      return send(res, 200, pusher.authorizeChannel(socketId, channel));
    } catch (e) {
      // The library refuses a malformed socket_id or channel name.
      return send(res, 400, { error: e instanceof Error ? e.message : String(e) });
    }
  }
  if (req.method === 'POST' && p === '/api/trigger') {
    // The page's "Trigger" button: the backend publishes with the `pusher` library.
    const body = await readBody(req);
    const channel = Object.values(CHANNELS).includes(body.channel) ? body.channel : CHANNELS.public;
    const text = String(body.text ?? '').trim().slice(0, 500) || 'hello';
    const r = await pusher.trigger(channel, 'example-event', { text, at: new Date().toISOString() });
    return send(res, r.status, await r.text());
  }
  return send(res, 404, { error: 'not found' });
}

const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    // The `pusher` library's RequestError carries the gateway's status and body.
    const status = typeof e?.status === 'number' ? e.status : 502;
    if (!res.headersSent) send(res, status >= 400 ? status : 502, { error: e instanceof Error ? e.message : String(e), body: e?.body });
    else res.destroy();
  });
});
server.requestTimeout = 15_000;

server.listen(config.listenPort, config.listenHost, () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listenPort;
  const url = `http://${config.listenHost}:${port}/`;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', url, port, gateway: `${config.host}:${config.port}`, appId: config.appId })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
