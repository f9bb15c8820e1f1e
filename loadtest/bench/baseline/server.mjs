// The baseline: the WebSocket pub/sub server a team would write by hand with
// `ws`, `jose` and `ioredis`, speaking the same wire contract subset as pubgate
// (welcome, subscribe/unsubscribe/ping replies, message frames, the HTTP
// publish API), so the benchmark runs the same scenarios against both.
//
// - JWT (HS256) verified with jose in the HTTP upgrade handler; the token comes
//   from Authorization: Bearer, a `bearer.<jwt>` subprotocol entry or ?access_token=.
// - A Map of channel -> Set of sockets; each publish is JSON.stringify'd once
//   and sent to each socket with ws.send.
// - Without REDIS_URL, a publish is fanned out in process. With REDIS_URL it
//   goes through Redis PUBLISH, and each node SUBSCRIBEs to the channels it
//   has local subscribers for.
//
// Environment: PORT, HOST (127.0.0.1), JWT_SECRET, API_KEY, REDIS_URL, NODE_ID.
import http from 'node:http';
import { jwtVerify } from 'jose';
import { Redis } from 'ioredis';
import { WebSocket, WebSocketServer } from 'ws';

const PORT = Number(process.env.PORT ?? 8090);
const HOST = process.env.HOST ?? '127.0.0.1';
const API_KEY = process.env.API_KEY ?? '';
const NODE_ID = process.env.NODE_ID ?? `baseline-${process.pid}`;
const REDIS_URL = process.env.REDIS_URL;
const MAX_BODY = 64 * 1024;
const PING_SEC = 25;

if (!process.env.JWT_SECRET) {
  console.error('JWT_SECRET is required');
  process.exit(1);
}
const secret = new TextEncoder().encode(process.env.JWT_SECRET);

/** channel -> Set<WebSocket> of this node */
const channels = new Map();

let pub;
let sub;
if (REDIS_URL) {
  pub = new Redis(REDIS_URL);
  sub = new Redis(REDIS_URL);
  sub.on('message', (channel, text) => {
    const msg = JSON.parse(text);
    deliver(channel, msg.data);
  });
  await Promise.all([pub.ping(), sub.ping()]);
}

function deliver(channel, data) {
  const sockets = channels.get(channel);
  if (!sockets) return;
  const frame = JSON.stringify({ type: 'message', channel, data });
  for (const ws of sockets) {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame);
  }
}

async function publish(channel, data) {
  if (pub) await pub.publish(channel, JSON.stringify({ channel, data }));
  else deliver(channel, data);
}

const CHANNEL_RE = /^[A-Za-z0-9_:.@/=-]{1,200}$/;

function allowed(patterns, sub, channel) {
  for (const raw of patterns ?? []) {
    const p = raw.replaceAll('{sub}', sub);
    if (p.endsWith('*') ? channel.startsWith(p.slice(0, -1)) : channel === p) return true;
  }
  return false;
}

function tokenOf(req) {
  const auth = req.headers.authorization;
  if (auth && auth.toLowerCase().startsWith('bearer ')) return auth.slice(7).trim();
  const protocols = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
  const fromProtocol = protocols.find((p) => p.startsWith('bearer.'));
  if (fromProtocol) return fromProtocol.slice(7);
  return new URL(req.url, 'http://localhost').searchParams.get('access_token') ?? undefined;
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

const wss = new WebSocketServer({
  noServer: true,
  maxPayload: 16 * 1024,
  handleProtocols: (protocols) => (protocols.has('pubgate.v1') ? 'pubgate.v1' : false),
});

let connSeq = 0;

function onConnection(ws, claims) {
  const subs = new Set();
  ws.isAlive = true;
  ws.send(JSON.stringify({
    type: 'welcome',
    node: NODE_ID,
    conn: (connSeq++).toString(36),
    user: claims.sub,
    expiresIn: claims.exp - Math.floor(Date.now() / 1000),
    ping: PING_SEC,
  }));
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('message', async (raw, isBinary) => {
    if (isBinary) return ws.close(1003);
    let msg;
    try {
      msg = JSON.parse(raw.toString());
    } catch {
      return ws.close(4500, 'malformed frame');
    }
    const reply = (extra) => ws.send(JSON.stringify({ type: 'reply', id: msg.id, ...extra }));
    const error = (code, message) => reply({ error: { code, message } });
    switch (msg.type) {
      case 'subscribe': {
        if (typeof msg.channel !== 'string' || !CHANNEL_RE.test(msg.channel)) return error('bad_request', 'invalid channel');
        if (!allowed(claims.channels, claims.sub, msg.channel)) return error('forbidden', 'not allowed');
        let sockets = channels.get(msg.channel);
        if (!sockets) {
          sockets = new Set();
          channels.set(msg.channel, sockets);
          if (sub) await sub.subscribe(msg.channel);
        }
        sockets.add(ws);
        subs.add(msg.channel);
        return reply();
      }
      case 'unsubscribe':
        leave(ws, msg.channel);
        subs.delete(msg.channel);
        return reply();
      case 'ping':
        return reply();
      default:
        return error('bad_request', 'unknown frame type');
    }
  });
  ws.on('close', () => {
    for (const channel of subs) leave(ws, channel);
  });
}

function leave(ws, channel) {
  const sockets = channels.get(channel);
  if (!sockets) return;
  sockets.delete(ws);
  if (sockets.size === 0) {
    channels.delete(channel);
    if (sub) sub.unsubscribe(channel).catch((e) => console.error('unsubscribe failed', e));
  }
}

const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_SEC * 1000);
heartbeat.unref();

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path !== '/v1/publish' && path !== '/v1/publish/batch') return sendJson(res, 404, { error: { code: 'not_found', message: 'no route' } });
  if (req.method !== 'POST') return sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'POST only' } });
  if (!API_KEY || req.headers.authorization !== `Bearer ${API_KEY}`) {
    return sendJson(res, 401, { error: { code: 'unauthorized', message: 'missing or unknown API key' } });
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => {
    body += chunk;
    if (body.length > MAX_BODY) {
      sendJson(res, 413, { error: { code: 'too_large', message: 'body too large' } });
      req.destroy();
    }
  });
  req.on('end', async () => {
    let v;
    try {
      v = JSON.parse(body);
    } catch {
      return sendJson(res, 400, { error: { code: 'bad_request', message: 'invalid JSON' } });
    }
    const valid = (m) => m && typeof m.channel === 'string' && CHANNEL_RE.test(m.channel) && 'data' in m;
    try {
      if (path === '/v1/publish') {
        if (!valid(v)) return sendJson(res, 400, { error: { code: 'bad_request', message: 'invalid message' } });
        await publish(v.channel, v.data);
        return sendJson(res, 200, { channel: v.channel });
      }
      const msgs = v?.messages;
      if (!Array.isArray(msgs) || msgs.length < 1 || msgs.length > 1000 || !msgs.every(valid)) {
        return sendJson(res, 400, { error: { code: 'bad_request', message: 'invalid batch' } });
      }
      await Promise.all(msgs.map((m) => publish(m.channel, m.data)));
      return sendJson(res, 200, { results: msgs.map((m) => ({ channel: m.channel })) });
    } catch (e) {
      console.error('publish failed', e);
      return sendJson(res, 503, { error: { code: 'unavailable', message: 'publish failed' } });
    }
  });
});

server.on('upgrade', async (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  let claims;
  try {
    ({ payload: claims } = await jwtVerify(tokenOf(req) ?? '', secret, { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] }));
  } catch {
    socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n' +
      '{"error":{"code":"unauthorized","message":"invalid token"}}');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, claims));
});

server.listen(PORT, HOST, () => console.log(`baseline ${NODE_ID} listening on ${HOST}:${PORT}${REDIS_URL ? ' (redis)' : ''}`));
