/* global __ENV, __VU */
// Shared helpers for the pubgate k6 scripts: configuration from the
// environment, HS256 tokens built by hand (k6/crypto + k6/encoding), the
// WebSocket connection (token passed the configured way, frames dispatched by
// type, closed on purpose after a while), the subscriber side of the delivery
// scripts (latency and dropped messages), and the publish API.
import { check, sleep } from 'k6';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import ws from 'k6/ws';

const env = (name, fallback) => (__ENV[name] !== undefined && __ENV[name] !== '' ? __ENV[name] : fallback);
export const num = (name, fallback) => Number(env(name, fallback));

/** Seconds in a k6 duration string ("90s", "2m", "1h", "1h30m"). */
export function durationSec(d) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let m;
  while ((m = re.exec(String(d))) !== null) total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
  return total;
}

export const cfg = {
  /** ws:// or wss:// URL of the WebSocket endpoint. */
  wsUrl: env('WS_URL', 'ws://127.0.0.1:8080/ws'),
  /** Base URL of the publish API (an internal host in production). */
  apiUrl: env('API_URL', 'http://127.0.0.1:8080'),
  apiKey: env('API_KEY', ''),
  /** HMAC secret to mint tokens in setup(); `kid:secret` sets the kid, as PUBGATE_JWT_SECRETS does. */
  jwtSecret: env('JWT_SECRET', ''),
  /** A ready token used by every connection instead (then JWT_SECRET is not needed). */
  token: env('TOKEN', ''),
  /** header (Authorization: Bearer), protocol (Sec-WebSocket-Protocol bearer.<jwt>) or query (?access_token=). */
  tokenIn: env('TOKEN_IN', 'protocol'),
  tokenTtlSec: num('TOKEN_TTL', 3600),
  /** Distinct tokens (distinct `sub`) minted in setup and shared round-robin by the VUs. */
  tokenPool: num('TOKEN_POOL', 100),
  /** Origin header to send (a browser always sends one; set it when allowedOrigins is configured). */
  origin: env('ORIGIN', ''),
  /** Channel name prefix, so a load test never touches real channels. */
  prefix: env('CHANNEL_PREFIX', 'loadtest'),
  /** Bytes of padding in each published `data`, to size messages. */
  padBytes: num('PAD_BYTES', 64),
};

function splitSecret(entry) {
  const colon = entry.indexOf(':');
  return colon > 0 ? { kid: entry.slice(0, colon), secret: entry.slice(colon + 1) } : { kid: '', secret: entry };
}

/** A compact HS256 JWS over `claims`. */
export function signJwt(claims, secret, kid) {
  const header = encoding.b64encode(JSON.stringify(kid ? { alg: 'HS256', typ: 'JWT', kid } : { alg: 'HS256', typ: 'JWT' }), 'rawurl');
  const payload = encoding.b64encode(JSON.stringify(claims), 'rawurl');
  const signature = crypto.hmac('sha256', secret, `${header}.${payload}`, 'base64rawurl');
  return `${header}.${payload}.${signature}`;
}

/** A token for `sub` that may read every load-test channel (`<prefix>:*`), valid for `ttlSec`. */
export function mintToken(sub, ttlSec = cfg.tokenTtlSec) {
  const { kid, secret } = splitSecret(cfg.jwtSecret);
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ sub, iat: now, exp: now + ttlSec, channels: [`${cfg.prefix}:*`] }, secret, kid);
}

/** Tokens for setup(): TOKEN when given, else TOKEN_POOL tokens (`sub` k6-user-<i>) minted from JWT_SECRET. */
export function mintTokens(ttlSec = cfg.tokenTtlSec) {
  if (cfg.token) return [cfg.token];
  if (!cfg.jwtSecret) throw new Error('set JWT_SECRET (to mint tokens) or TOKEN (a ready token)');
  const out = [];
  for (let i = 0; i < cfg.tokenPool; i++) out.push(mintToken(`k6-user-${i}`, ttlSec));
  return out;
}

/** URL and k6/ws params for a connection carrying `token` the configured way. */
export function connectArgs(token, tags) {
  const headers = {};
  if (cfg.origin) headers.Origin = cfg.origin;
  let url = cfg.wsUrl;
  if (cfg.tokenIn === 'header') {
    headers.Authorization = `Bearer ${token}`;
    headers['Sec-WebSocket-Protocol'] = 'pubgate.v1';
  } else if (cfg.tokenIn === 'query') {
    url += `${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(token)}`;
    headers['Sec-WebSocket-Protocol'] = 'pubgate.v1';
  } else {
    headers['Sec-WebSocket-Protocol'] = `pubgate.v1, bearer.${token}`;
  }
  return { url, params: { headers, tags } };
}

/** ws.connect with `token`; runs `onOpen(socket)` and returns whether the handshake answered 101 (a k6 check). */
export function connect(token, tags, onOpen) {
  const { url, params } = connectArgs(token, tags);
  const res = ws.connect(url, params, onOpen);
  return check(res, { 'handshake answered 101': (r) => r && r.status === 101 });
}

/** Calls `handlers[frame.type](frame)` for each JSON frame the server sends; other types are ignored. */
export function onFrames(socket, handlers) {
  socket.on('message', (text) => {
    const f = parseFrame(text);
    if (f && Object.prototype.hasOwnProperty.call(handlers, f.type)) handlers[f.type](f);
  });
}

/** Closes `socket` (1000) after `ms`; a close before that is added to `unexpectedCloses`, tagged with its code. */
export function closeAfter(socket, ms, unexpectedCloses) {
  let closing = false;
  socket.on('close', (code) => {
    if (!closing) unexpectedCloses.add(1, { code: String(code) });
  });
  socket.setTimeout(() => {
    closing = true;
    socket.close(1000);
  }, ms);
}

export const subscribeFrame = (id, channel) => JSON.stringify({ type: 'subscribe', id, channel });
export const refreshFrame = (id, token) => JSON.stringify({ type: 'refresh', id, token });

const PAD = 'x'.repeat(Math.max(0, cfg.padBytes));

/** `data` of a published message: send time, publisher (this VU) and sequence number (for drop detection), padding. */
export function messageData(seq) {
  return { t: Date.now(), pub: `vu${__VU}`, seq, p: PAD };
}

const apiHeaders = () => ({ Authorization: `Bearer ${cfg.apiKey}`, 'Content-Type': 'application/json' });

export function publish(channel, data, tags) {
  return http.post(`${cfg.apiUrl}/v1/publish`, JSON.stringify({ channel, data }), { headers: apiHeaders(), tags });
}

export function publishBatch(messages, tags) {
  return http.post(`${cfg.apiUrl}/v1/publish/batch`, JSON.stringify({ messages }), { headers: apiHeaders(), tags });
}

/**
 * Tracks the last sequence number seen per (channel, publisher). A jump means
 * messages were lost in between; returns how many. The first message of each
 * pair only sets the starting point (a subscriber joins mid-stream).
 */
function createGapTracker() {
  const last = {};
  return (channel, pub, seq) => {
    const key = `${channel}|${pub}`;
    const prev = last[key];
    last[key] = prev === undefined ? seq : Math.max(prev, seq);
    return prev !== undefined && seq > prev + 1 ? seq - prev - 1 : 0;
  };
}

/** Parses a server frame; undefined for anything that is not JSON. */
export function parseFrame(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The subscriber-side metrics of the delivery scripts (fanout, channels, soak).
 * Call it in the init context: k6 creates metrics nowhere else.
 */
export function subscriberMetrics() {
  return {
    deliveryLatency: new Trend('delivery_latency', true),
    received: new Counter('messages_received'),
    dropped: new Counter('messages_dropped'),
    subscribed: new Rate('subscribe_ok'),
    unexpectedCloses: new Counter('unexpected_closes'),
  };
}

/**
 * A handler for one connection's `message` frames: counts the message, records
 * its delivery latency (now − `data.t`) and the messages lost before it.
 */
export function deliveryRecorder(metrics) {
  const gap = createGapTracker();
  return (f) => {
    metrics.received.add(1);
    const d = f.data;
    if (d && typeof d.t === 'number') metrics.deliveryLatency.add(Date.now() - d.t);
    if (d && d.pub !== undefined) {
      const lost = gap(f.channel, d.pub, d.seq);
      if (lost > 0) metrics.dropped.add(lost);
    }
  };
}

/**
 * Spreads `count` subscribers' connects over the first 80% of `rampSec`: sleeps
 * for subscriber `index`'s turn, then returns how long it should stay connected
 * (until publishing, `publishSec` from the end of the ramp, has ended, plus 5 s
 * for messages in flight).
 */
export function staggeredStart(index, count, rampSec, publishSec) {
  const startDelayMs = index * ((rampSec * 1000 * 0.8) / count);
  sleep(startDelayMs / 1000);
  return rampSec * 1000 - startDelayMs + publishSec * 1000 + 5000;
}

/**
 * One subscriber of fanout.js and channels.js: connects, subscribes to
 * `channels` (ids 1..n) on `welcome`, records every message and the subscribe
 * replies, and closes after `holdMs`.
 */
export function subscribeAndHold(token, channels, holdMs, metrics) {
  const recordDelivery = deliveryRecorder(metrics);
  connect(token, { scenario: 'subscribers' }, (socket) => {
    onFrames(socket, {
      message: recordDelivery,
      welcome: () => channels.forEach((channel, i) => socket.send(subscribeFrame(i + 1, channel))),
      reply: (f) => {
        if (f.id >= 1 && f.id <= channels.length) metrics.subscribed.add(!f.error);
      },
    });
    closeAfter(socket, holdMs, metrics.unexpectedCloses);
  });
}
