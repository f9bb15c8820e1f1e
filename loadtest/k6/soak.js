/* global __ENV, __VU */
// Soak: SUBSCRIBERS connections held for the whole DURATION (reconnecting
// when closed), each on PER_CONN of CHANNELS channels, while publishers post
// RATE messages per second round-robin over the channels. Tokens are minted
// with a short TTL and refreshed over the socket (`refresh` frame) every
// REFRESH seconds when JWT_SECRET is given. The thresholds are the pass/fail
// verdict: p95/p99 delivery latency, handshake and publish error rates,
// dropped messages, unexpected closes.
//
//   k6 run -e WS_URL=... -e API_URL=... -e API_KEY=... -e JWT_SECRET=... \
//          -e SUBSCRIBERS=5000 -e CHANNELS=500 -e RATE=200 -e DURATION=1h loadtest/k6/soak.js
import { sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import {
  cfg, closeAfter, connect, deliveryRecorder, durationSec, messageData, mintToken, mintTokens, num, onFrames, publish, refreshFrame, subscribeFrame,
  subscriberMetrics,
} from './lib/pubgate.js';

const SUBSCRIBERS = num('SUBSCRIBERS', 1000);
const CHANNELS = num('CHANNELS', 100);
const PER_CONN = Math.max(1, Math.min(num('PER_CONN', 1), 100));
const RATE = num('RATE', 100);
const DURATION = __ENV.DURATION || '30m';
const RAMP_S = num('RAMP', 60);
const REFRESH_S = num('REFRESH', 0);
// Without refresh the tokens must outlive the test; with it they may be short.
const TOKEN_TTL = REFRESH_S > 0 ? REFRESH_S * 2 + 60 : cfg.tokenTtlSec;
const channel = (i) => `${cfg.prefix}:soak:${i % CHANNELS}`;

const metrics = subscriberMetrics();
const handshakeOk = new Rate('handshake_ok');
const refreshed = new Rate('refresh_ok');
const reconnects = new Counter('reconnects');
const publishOk = new Rate('publish_ok');
const wsErrors = new Rate('ws_errors');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: `${RAMP_S}s`, target: SUBSCRIBERS },
        { duration: DURATION, target: SUBSCRIBERS },
      ],
      gracefulRampDown: '10s',
      gracefulStop: '10s',
      exec: 'subscriber',
    },
    publisher: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      startTime: `${RAMP_S}s`,
      preAllocatedVUs: Math.max(2, Math.ceil(RATE / 20)),
      maxVUs: Math.max(20, RATE),
      exec: 'publisher',
    },
  },
  setupTimeout: '300s',
  thresholds: {
    delivery_latency: [`p(95)<${__ENV.P95_MS || 50}`, `p(99)<${__ENV.P99_MS || 150}`],
    messages_dropped: [`count<=${__ENV.MAX_DROPPED || 0}`],
    handshake_ok: [`rate>${1 - Number(__ENV.MAX_ERROR_RATE || 0.001)}`],
    ws_errors: [`rate<${__ENV.MAX_ERROR_RATE || 0.001}`],
    publish_ok: [`rate>${1 - Number(__ENV.MAX_ERROR_RATE || 0.001)}`],
    subscribe_ok: ['rate>0.999'],
    refresh_ok: ['rate>0.999'],
    unexpected_closes: [`count<=${__ENV.MAX_UNEXPECTED_CLOSES || 0}`],
  },
};

export function setup() {
  // Connections close themselves just before the end, so only earlier closes count as unexpected.
  const endAt = Date.now() + (RAMP_S + durationSec(DURATION)) * 1000 - 2000;
  return { tokens: mintTokens(TOKEN_TTL), endAt };
}

// One iteration holds one connection until it closes; the next iteration reconnects.
let iteration = 0;

export function subscriber(data) {
  if (Date.now() >= data.endAt) {
    sleep(5);
    return;
  }
  const index = (__VU - 1) % SUBSCRIBERS;
  const sub = `k6-user-${index % data.tokens.length}`;
  const token = iteration > 0 && cfg.jwtSecret ? mintToken(sub, TOKEN_TTL) : data.tokens[index % data.tokens.length];
  if (iteration++ > 0) reconnects.add(1);
  const recordDelivery = deliveryRecorder(metrics);
  let nextId = 1;
  const ok = connect(token, { scenario: 'subscribers' }, (socket) => {
    onFrames(socket, {
      message: recordDelivery,
      welcome: () => {
        for (let k = 0; k < PER_CONN; k++) socket.send(subscribeFrame(nextId++, channel(index * PER_CONN + k)));
      },
      reply: (f) => {
        if (f.id <= PER_CONN) metrics.subscribed.add(!f.error);
        else refreshed.add(!f.error);
      },
    });
    socket.on('error', () => wsErrors.add(1));
    closeAfter(socket, Math.max(0, data.endAt - Date.now()), metrics.unexpectedCloses);
    if (REFRESH_S > 0 && cfg.jwtSecret) {
      socket.setInterval(() => socket.send(refreshFrame(nextId++, mintToken(sub, TOKEN_TTL))), REFRESH_S * 1000);
    }
  });
  handshakeOk.add(ok);
  wsErrors.add(!ok);
  if (!ok) sleep(1 + Math.random() * 2);
}

let seq = 0;

export function publisher() {
  const k = seq;
  const res = publish(channel(k), messageData(Math.floor(k / CHANNELS)), { scenario: 'publisher' });
  const ok = res.status === 200;
  publishOk.add(ok);
  if (ok) seq++;
}
