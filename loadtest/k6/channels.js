/* global __ENV, __VU */
// Many channels: SUBSCRIBERS connections each subscribe to PER_CONN of
// CHANNELS channels; a publisher sends BATCH messages per request to the batch
// endpoint, RATE requests per second, spread round-robin over every channel.
// Measures delivery latency, received and dropped messages per channel.
//
//   k6 run -e WS_URL=... -e API_URL=... -e API_KEY=... -e JWT_SECRET=... \
//          -e SUBSCRIBERS=2000 -e CHANNELS=2000 -e PER_CONN=1 -e RATE=20 -e BATCH=100 loadtest/k6/channels.js
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import ws from 'k6/ws';
import { cfg, connectArgs, createGapTracker, messageData, mintTokens, num, parseFrame, publishBatch, subscribeFrame } from './lib/pubgate.js';

const SUBSCRIBERS = num('SUBSCRIBERS', 1000);
const CHANNELS = num('CHANNELS', 1000);
const PER_CONN = Math.max(1, Math.min(num('PER_CONN', 1), 100));
const RATE = num('RATE', 10);
const BATCH = Math.max(1, Math.min(num('BATCH', 100), 1000));
const RAMP_S = num('RAMP', 30);
const PUBLISH_SEC = num('DURATION_S', 120);
const channel = (i) => `${cfg.prefix}:ch:${i % CHANNELS}`;

const deliveryLatency = new Trend('delivery_latency', true);
const received = new Counter('messages_received');
const dropped = new Counter('messages_dropped');
const subscribed = new Rate('subscribe_ok');
const unexpectedCloses = new Counter('unexpected_closes');
const publishOk = new Rate('publish_ok');
const published = new Counter('messages_published');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: `${RAMP_S + PUBLISH_SEC + 60}s`,
      exec: 'subscriber',
    },
    publisher: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${PUBLISH_SEC}s`,
      startTime: `${RAMP_S}s`,
      preAllocatedVUs: Math.max(2, Math.ceil(RATE / 5)),
      maxVUs: Math.max(10, RATE * 2),
      exec: 'publisher',
    },
  },
  setupTimeout: '300s',
  thresholds: {
    delivery_latency: [`p(95)<${__ENV.P95_MS || 100}`, `p(99)<${__ENV.P99_MS || 250}`],
    messages_dropped: [`count<=${__ENV.MAX_DROPPED || 0}`],
    subscribe_ok: ['rate>0.99'],
    publish_ok: ['rate>0.999'],
    unexpected_closes: [`count<=${__ENV.MAX_UNEXPECTED_CLOSES || 0}`],
  },
};

export function setup() {
  return { tokens: mintTokens(cfg.tokenPool, [`${cfg.prefix}:*`], cfg.tokenTtlSec) };
}

export function subscriber(data) {
  const token = data.tokens[(__VU - 1) % data.tokens.length];
  const { url, params } = connectArgs(token, { scenario: 'subscribers' });
  const gap = createGapTracker();
  const index = (__VU - 1) % SUBSCRIBERS;
  const startDelayMs = index * ((RAMP_S * 1000 * 0.8) / SUBSCRIBERS);
  const holdMs = RAMP_S * 1000 - startDelayMs + PUBLISH_SEC * 1000 + 5000;
  let closing = false;
  sleep(startDelayMs / 1000);
  const res = ws.connect(url, params, (socket) => {
    socket.on('message', (text) => {
      const f = parseFrame(text);
      if (!f) return;
      if (f.type === 'message') {
        received.add(1);
        const d = f.data;
        if (d && typeof d.t === 'number') deliveryLatency.add(Date.now() - d.t);
        if (d && d.pub !== undefined) {
          const lost = gap(f.channel, d.pub, d.seq);
          if (lost > 0) dropped.add(lost);
        }
      } else if (f.type === 'welcome') {
        // Subscription k of connection i: channel (i * PER_CONN + k), so every channel gets subscribers.
        for (let k = 0; k < PER_CONN; k++) socket.send(subscribeFrame(k + 1, channel(index * PER_CONN + k)));
      } else if (f.type === 'reply') {
        subscribed.add(!f.error);
      }
    });
    socket.on('close', (code) => {
      if (!closing) unexpectedCloses.add(1, { code: String(code) });
    });
    socket.setTimeout(() => {
      closing = true;
      socket.close(1000);
    }, holdMs);
  });
  check(res, { 'handshake answered 101': (r) => r && r.status === 101 });
}

let k = 0;

export function publisher() {
  // Message k of this VU goes to channel k % CHANNELS with sequence number
  // floor(k / CHANNELS): consecutive per (channel, VU), so subscribers can spot
  // gaps. A refused batch is sent again with the same numbers (not a drop).
  const pub = `vu${__VU}`;
  const k0 = k;
  const messages = [];
  for (let i = 0; i < BATCH; i++, k++) messages.push({ channel: channel(k % CHANNELS), data: messageData(pub, Math.floor(k / CHANNELS)) });
  const res = publishBatch(messages, { scenario: 'publisher' });
  const ok = res.status === 200;
  publishOk.add(ok);
  if (ok) published.add(BATCH);
  else k = k0;
}
