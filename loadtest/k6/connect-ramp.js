/* global __ENV, __VU */
// Connection ramp: VUs ramp up to VUS concurrent WebSocket connections, each
// authenticated in the handshake (token in the subprotocol, header or query),
// waits for `welcome`, subscribes to one channel and holds the connection for
// HOLD seconds, then reconnects. Measures handshake success, time to welcome
// and to the subscribe reply, and unexpected closes.
//
//   k6 run -e WS_URL=wss://ws.example.com/ws -e JWT_SECRET=... -e VUS=5000 loadtest/k6/connect-ramp.js
import { sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { cfg, closeAfter, connect, mintTokens, num, onFrames, subscribeFrame } from './lib/pubgate.js';

const VUS = num('VUS', 1000);
const RAMP = __ENV.RAMP || '60s';
const STEADY = __ENV.STEADY || '60s';
const HOLD_MS = num('HOLD', 30) * 1000;
const CHANNEL = `${cfg.prefix}:ramp`;

const handshakeOk = new Rate('handshake_ok');
const welcomeMs = new Trend('welcome_ms', true);
const subscribeMs = new Trend('subscribe_reply_ms', true);
const subscribeOk = new Rate('subscribe_ok');
const unexpectedCloses = new Counter('unexpected_closes');

export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: VUS },
        { duration: STEADY, target: VUS },
        { duration: '10s', target: 0 },
      ],
      gracefulRampDown: `${Math.ceil(HOLD_MS / 1000) + 5}s`,
    },
  },
  setupTimeout: '300s',
  thresholds: {
    handshake_ok: [`rate>${__ENV.MIN_HANDSHAKE_OK || 0.99}`],
    subscribe_ok: [`rate>${__ENV.MIN_SUBSCRIBE_OK || 0.99}`],
    welcome_ms: [`p(95)<${__ENV.WELCOME_P95_MS || 1000}`],
    ws_connecting: [`p(95)<${__ENV.CONNECT_P95_MS || 1000}`],
    unexpected_closes: [`count<=${__ENV.MAX_UNEXPECTED_CLOSES || 0}`],
  },
};

export function setup() {
  return { tokens: mintTokens() };
}

export default function (data) {
  const token = data.tokens[(__VU - 1) % data.tokens.length];
  const t0 = Date.now();
  let tWelcome = 0;
  const ok = connect(token, { scenario: 'ramp' }, (socket) => {
    onFrames(socket, {
      welcome: () => {
        tWelcome = Date.now();
        welcomeMs.add(tWelcome - t0);
        socket.send(subscribeFrame(1, CHANNEL));
      },
      reply: (f) => {
        if (f.id !== 1) return;
        subscribeOk.add(!f.error);
        if (!f.error) subscribeMs.add(Date.now() - tWelcome);
      },
    });
    closeAfter(socket, HOLD_MS, unexpectedCloses);
  });
  handshakeOk.add(ok);
  if (!ok) sleep(1);
}
