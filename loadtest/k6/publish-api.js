/* global __ENV */
// Publish API throughput: RATE requests per second to /v1/publish (MODE=single)
// or /v1/publish/batch with BATCH messages each (MODE=batch), spread over
// CHANNELS channels, for DURATION. Checks every answer is 200 with the
// contract's body, and puts thresholds on errors and request duration.
// No subscribers are needed (a publish to a channel nobody reads is accepted);
// run fanout.js or channels.js at the same time to load the delivery side too.
//
//   k6 run -e API_URL=http://api.internal:8080 -e API_KEY=... -e RATE=2000 -e MODE=single loadtest/k6/publish-api.js
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { cfg, messageData, num, publish, publishBatch } from './lib/pubgate.js';

const RATE = num('RATE', 500);
const MODE = __ENV.MODE || 'single';
const BATCH = Math.max(1, Math.min(num('BATCH', 100), 1000));
const CHANNELS = num('CHANNELS', 100);
const DURATION = __ENV.DURATION || '1m';
const channel = (i) => `${cfg.prefix}:api:${i % CHANNELS}`;

const messagesAccepted = new Counter('messages_accepted');

export const options = {
  scenarios: {
    publish: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(5, Math.ceil(RATE / 50)),
      maxVUs: Math.max(50, RATE),
    },
  },
  thresholds: {
    http_req_failed: [`rate<${__ENV.MAX_ERROR_RATE || 0.001}`],
    http_req_duration: [`p(95)<${__ENV.P95_MS || 50}`, `p(99)<${__ENV.P99_MS || 200}`],
    checks: ['rate>0.999'],
    dropped_iterations: [`count<=${__ENV.MAX_DROPPED_ITERATIONS || 0}`],
  },
};

let n = 0;

export default function () {
  if (MODE === 'batch') {
    const messages = [];
    for (let i = 0; i < BATCH; i++, n++) messages.push({ channel: channel(n), data: messageData(n) });
    const res = publishBatch(messages, { mode: 'batch' });
    const ok = check(res, {
      'batch answered 200': (r) => r.status === 200,
      'batch answered every message': (r) => r.status === 200 && JSON.parse(r.body).results.length === BATCH,
    });
    if (ok) messagesAccepted.add(BATCH);
    return;
  }
  const ch = channel(n);
  const res = publish(ch, messageData(n++), { mode: 'single' });
  const ok = check(res, {
    'publish answered 200': (r) => r.status === 200,
    'publish names the channel': (r) => r.status === 200 && JSON.parse(r.body).channel === ch,
  });
  if (ok) messagesAccepted.add(1);
}
