// The `socketio` peer target: a Socket.IO 4 server with @socket.io/redis-adapter
// connected to a redis-server, written the way its documentation shows, plus
// the same HTTP publish API as pubgate and the baseline, so that the runner
// publishes to it exactly as it publishes to them.
//
// Socket.IO is NOT a dependency of this repository: it is installed in a
// directory outside it (SOCKETIO_DIR; see docs/benchmarks.md) and loaded from
// there.
//
// - Transport: WebSocket only (`transports: ['websocket']`; the bench client
//   connects straight to /socket.io/?EIO=4&transport=websocket), Socket.IO's
//   default WebSocket server (`ws`), no per-message deflate (its default).
// - Auth: the client's CONNECT carries {"token":"<HS256 JWT>"}; a middleware
//   verifies it (HMAC-SHA256 with node:crypto, `exp` checked), as pubgate and
//   the baseline verify theirs in the upgrade.
// - Subscribe: the client emits `subscribe` with the channel and an ack; the
//   server joins the socket to the room of that name and acks {"ok":true}.
// - Publish: POST /v1/publish {"channel","data"} and POST /v1/publish/batch
//   {"messages":[...]}, Bearer API_KEY; each message is
//   io.to(channel).emit('message', channel, data): the adapter encodes the
//   packet once, writes it to every local socket of the room, and publishes it
//   to Redis for other nodes (there are none here; the node ignores its own
//   messages coming back from Redis). Answered once emitted, like pubgate.
//   Publishing in this process rather than through @socket.io/redis-emitter
//   keeps it what the other targets do: an HTTP request to the node that holds
//   the subscribers (the emitter would be a second process, a Redis hop, and
//   its JSON parsing done outside the measured server).
// - GET /healthz: 200 once the Redis clients are connected.
//
// Environment: SOCKETIO_DIR, PORT, HOST (127.0.0.1), REDIS_URL, JWT_SECRET, API_KEY.
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';

const DIR = process.env.SOCKETIO_DIR;
const PORT = Number(process.env.PORT ?? 8091);
const HOST = process.env.HOST ?? '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL;
const SECRET = process.env.JWT_SECRET ?? '';
const API_KEY = process.env.API_KEY ?? '';
const MAX_BODY = 1024 * 1024;
if (!DIR || !REDIS_URL || !SECRET) {
  console.error('SOCKETIO_DIR, REDIS_URL and JWT_SECRET are required');
  process.exit(1);
}
const require = createRequire(path.join(DIR, 'package.json'));
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

/** The claims of a valid HS256 JWT signed with SECRET, or undefined. */
function verifyJwt(token) {
  if (typeof token !== 'string') return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const sig = Buffer.from(parts[2], 'base64url');
  const want = createHmac('sha256', SECRET).update(`${parts[0]}.${parts[1]}`).digest();
  if (sig.length !== want.length || !timingSafeEqual(sig, want)) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    if (header.alg !== 'HS256') return undefined;
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return undefined;
    return claims;
  } catch {
    return undefined;
  }
}

const pubClient = createClient({ url: REDIS_URL });
const subClient = pubClient.duplicate();
pubClient.on('error', (e) => console.error(`redis: ${e.message}`));
subClient.on('error', (e) => console.error(`redis: ${e.message}`));
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    return;
  }
  if (req.method !== 'POST' || (req.url !== '/v1/publish' && req.url !== '/v1/publish/batch')) {
    res.writeHead(404).end();
    return;
  }
  if (req.headers.authorization !== `Bearer ${API_KEY}`) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"unauthorized"}');
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (d) => {
    size += d.length;
    if (size > MAX_BODY) req.destroy();
    else chunks.push(d);
  });
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"bad json"}');
      return;
    }
    const messages = req.url === '/v1/publish' ? [body] : body?.messages;
    if (!Array.isArray(messages) || messages.some((m) => typeof m?.channel !== 'string' || !('data' in m))) {
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"bad message"}');
      return;
    }
    for (const m of messages) io.to(m.channel).emit('message', m.channel, m.data);
    res.writeHead(200, { 'content-type': 'application/json' }).end(`{"ok":true,"published":${messages.length}}`);
  });
});

const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  adapter: createAdapter(pubClient, subClient),
});

io.use((socket, next) => {
  const claims = verifyJwt(socket.handshake.auth?.token);
  if (!claims) {
    next(new Error('unauthorized'));
    return;
  }
  socket.data.sub = claims.sub;
  next();
});

io.on('connection', (socket) => {
  socket.on('subscribe', (channel, ack) => {
    if (typeof ack !== 'function') return;
    if (typeof channel !== 'string' || !channel.startsWith('bench')) {
      ack({ ok: false, error: 'forbidden' });
      return;
    }
    socket.join(channel);
    ack({ ok: true });
  });
});

httpServer.listen(PORT, HOST, () => console.log(`socketio-server listening on ${HOST}:${PORT} (socket.io ${require('socket.io/package.json').version})`));
