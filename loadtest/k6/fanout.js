/* global __ENV, __VU */
// Fan-out: SUBSCRIBERS connections subscribe to one channel; a publisher
// posts RATE messages per second to the publish API. Every message carries
// its send time, publisher and sequence number, so each subscriber measures
// delivery latency (publish call → receipt) and counts dropped messages.
//
//   k6 run -e WS_URL=... -e API_URL=... -e API_KEY=... -e JWT_SECRET=... \
//          -e SUBSCRIBERS=2000 -e RATE=50 -e DURATION=2m loadtest/k6/fanout.js
//
// Latency compares clocks of the k6 machine with itself, so it is exact on
// one k6 instance; across several load generators their clocks must be in sync.
import exec from 'k6/execution';
import { Rate } from 'k6/metrics';
import { cfg, durationSec, messageData, mintTokens, num, publish, staggeredStart, subscribeAndHold, subscriberMetrics } from './lib/pubgate.js';

const SUBSCRIBERS = num('SUBSCRIBERS', 1000);
const RATE = num('RATE', 50);
const RAMP_S = num('RAMP', 30);
const DURATION = __ENV.DURATION || '2m';
const PUBLISH_SEC = durationSec(DURATION);
const CHANNEL = `${cfg.prefix}:fanout`;

const metrics = subscriberMetrics();
const publishOk = new Rate('publish_ok');

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
      duration: DURATION,
      startTime: `${RAMP_S}s`,
      preAllocatedVUs: Math.max(2, Math.ceil(RATE / 20)),
      maxVUs: Math.max(10, RATE),
      exec: 'publisher',
    },
  },
  setupTimeout: '300s',
  thresholds: {
    delivery_latency: [`p(95)<${__ENV.P95_MS || 50}`, `p(99)<${__ENV.P99_MS || 100}`],
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
  // Connect spread over RAMP seconds, then stay until publishing ended and in-flight messages arrived.
  const holdMs = staggeredStart((__VU - 1) % SUBSCRIBERS, SUBSCRIBERS, RAMP_S, PUBLISH_SEC);
  subscribeAndHold(token, [CHANNEL], holdMs, metrics);
}

let seq = 0;

export function publisher() {
  const res = publish(CHANNEL, messageData(seq), { scenario: 'publisher' });
  const ok = res.status === 200;
  publishOk.add(ok);
  // A refused publish is not a drop: the next one reuses its sequence number.
  if (ok) seq++;
  else if (exec.vu.iterationInScenario < 5) console.warn(`publish answered ${res.status}: ${res.body}`);
}
