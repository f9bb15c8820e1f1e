/* global __ENV */
// Shared helpers for the pubgate k6 scripts: configuration from the
// environment, HS256 tokens built by hand (k6/crypto + k6/encoding), the
// WebSocket connect parameters for each way of passing the token, frames, the
// publish API, and per-publisher sequence tracking for dropped messages.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';

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

/** A token for `sub` that may read `channels` (patterns), valid for `ttlSec`. */
export function mintToken(sub, channels, ttlSec) {
  const { kid, secret } = splitSecret(cfg.jwtSecret);
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ sub, iat: now, exp: now + ttlSec, channels }, secret, kid);
}

/** Tokens for setup(): TOKEN when given, else `count` tokens minted from JWT_SECRET. */
export function mintTokens(count, channels, ttlSec = cfg.tokenTtlSec) {
  if (cfg.token) return [cfg.token];
  if (!cfg.jwtSecret) throw new Error('set JWT_SECRET (to mint tokens) or TOKEN (a ready token)');
  const out = [];
  for (let i = 0; i < count; i++) out.push(mintToken(`k6-user-${i}`, channels, ttlSec));
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

export const subscribeFrame = (id, channel) => JSON.stringify({ type: 'subscribe', id, channel });
export const refreshFrame = (id, token) => JSON.stringify({ type: 'refresh', id, token });

const PAD = 'x'.repeat(Math.max(0, cfg.padBytes));

/** `data` of a published message: send time, publisher id and sequence number (for drop detection), padding. */
export function messageData(pub, seq) {
  return { t: Date.now(), pub, seq, p: PAD };
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
export function createGapTracker() {
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
