/* global __ENV, __VU */
// Many channels: SUBSCRIBERS connections each subscribe to PER_CONN of
// CHANNELS channels; a publisher sends BATCH messages per request to the batch
// endpoint, RATE requests per second, spread round-robin over every channel.
// Measures delivery latency, received and dropped messages per channel.
//
//   k6 run -e WS_URL=... -e API_URL=... -e API_KEY=... -e JWT_SECRET=... \
//          -e SUBSCRIBERS=2000 -e CHANNELS=2000 -e PER_CONN=1 -e RATE=20 -e BATCH=100 loadtest/k6/channels.js
import { Counter, Rate } from 'k6/metrics';
import { cfg, messageData, mintTokens, num, publishBatch, staggeredStart, subscribeAndHold, subscriberMetrics } from './lib/pubgate.js';

const SUBSCRIBERS = num('SUBSCRIBERS', 1000);
const CHANNELS = num('CHANNELS', 1000);
const PER_CONN = Math.max(1, Math.min(num('PER_CONN', 1), 100));
const RATE = num('RATE', 10);
const BATCH = Math.max(1, Math.min(num('BATCH', 100), 1000));
const RAMP_S = num('RAMP', 30);
const PUBLISH_SEC = num('DURATION_S', 120);
const channel = (i) => `${cfg.prefix}:ch:${i % CHANNELS}`;

const metrics = subscriberMetrics();
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
  return { tokens: mintTokens() };
}

export function subscriber(data) {
  const token = data.tokens[(__VU - 1) % data.tokens.length];
  const index = (__VU - 1) % SUBSCRIBERS;
  const holdMs = staggeredStart(index, SUBSCRIBERS, RAMP_S, PUBLISH_SEC);
  // Subscription k of connection i: channel (i * PER_CONN + k), so every channel gets subscribers.
  const channels = [];
  for (let k = 0; k < PER_CONN; k++) channels.push(channel(index * PER_CONN + k));
  subscribeAndHold(token, channels, holdMs, metrics);
}

let k = 0;

export function publisher() {
  // Message k of this VU goes to channel k % CHANNELS with sequence number
  // floor(k / CHANNELS): consecutive per (channel, VU), so subscribers can spot
  // gaps. A refused batch is sent again with the same numbers (not a drop).
  const k0 = k;
  const messages = [];
  for (let i = 0; i < BATCH; i++, k++) messages.push({ channel: channel(k % CHANNELS), data: messageData(Math.floor(k / CHANNELS)) });
  const res = publishBatch(messages, { scenario: 'publisher' });
  const ok = res.status === 200;
  publishOk.add(ok);
  if (ok) published.add(BATCH);
  else k = k0;
}
