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
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import ws from 'k6/ws';
import { cfg, connectArgs, createGapTracker, durationSec, messageData, mintTokens, num, parseFrame, publish, subscribeFrame } from './lib/pubgate.js';

const SUBSCRIBERS = num('SUBSCRIBERS', 1000);
const RATE = num('RATE', 50);
const RAMP_S = num('RAMP', 30);
const DURATION = __ENV.DURATION || '2m';
const PUBLISH_SEC = durationSec(DURATION);
const CHANNEL = `${cfg.prefix}:fanout`;

const deliveryLatency = new Trend('delivery_latency', true);
const received = new Counter('messages_received');
const dropped = new Counter('messages_dropped');
const subscribed = new Rate('subscribe_ok');
const unexpectedCloses = new Counter('unexpected_closes');
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
  return { tokens: mintTokens(cfg.tokenPool, [`${cfg.prefix}:*`], cfg.tokenTtlSec) };
}

export function subscriber(data) {
  const token = data.tokens[(__VU - 1) % data.tokens.length];
  const { url, params } = connectArgs(token, { scenario: 'subscribers' });
  const gap = createGapTracker();
  // Connect spread over RAMP seconds, then stay until publishing ended and in-flight messages arrived.
  const startDelayMs = ((__VU - 1) % SUBSCRIBERS) * ((RAMP_S * 1000 * 0.8) / SUBSCRIBERS);
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
        socket.send(subscribeFrame(1, CHANNEL));
      } else if (f.type === 'reply' && f.id === 1) {
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

let seq = 0;

export function publisher() {
  const res = publish(CHANNEL, messageData(`vu${__VU}`, seq), { scenario: 'publisher' });
  const ok = res.status === 200;
  publishOk.add(ok);
  // A refused publish is not a drop: the next one reuses its sequence number.
  if (ok) seq++;
  else if (exec.vu.iterationInScenario < 5) console.warn(`publish answered ${res.status}: ${res.body}`);
}
