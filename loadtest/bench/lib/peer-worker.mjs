// A client process (child_process.fork) for the servers that do not speak
// pubgate's protocol: the pusher scenarios (Pusher protocol, pusher-client.mjs:
// pubgate's /app/{key} and Soketi) and the peer targets of the delivery and
// connections scenarios (`soketi`: Pusher protocol; `socketio`: Engine.IO v4 /
// Socket.IO v5 over a raw WebSocket, socketio-client.mjs). It holds many
// connections to one server and answers the runner's commands over IPC, with
// the same commands and answers as worker.mjs where those scenarios use them
// (init, connect, count, stats, drop, exit), so that workers.mjs drives either.
import { benchToken } from './jwt.mjs';
import { PusherPool } from './pusher-client.mjs';
import { SioPool } from './socketio-client.mjs';
import { LatencyHistogram } from './stats.mjs';
import { bounded, cpuMsSince, serveCommands } from './worker-ipc.mjs';
import { nowMs } from './ws-client.mjs';

let pool;
/** 'pusher' (default) or 'socketio'. */
let proto = 'pusher';
let progressTimer;
let cpuMark = process.cpuUsage();

/** The channel of connection `i`: spec { kind: 'one', name } or { kind: 'mod', prefix, count } (as worker.mjs). */
function channelOf(spec, i) {
  return spec.kind === 'mod' ? `${spec.prefix}${i % spec.count}` : spec.name;
}

const handlers = {
  init(m) {
    proto = m.proto ?? 'pusher';
    pool = proto === 'socketio'
      ? new SioPool({ host: m.host, port: m.port, localPorts: m.localPorts })
      : new PusherPool({ host: m.host, port: m.port, key: m.key, localPorts: m.localPorts });
    return {};
  },

  /**
   * Opens m.count connections (users m.base…), each subscribed to its channel
   * of m.subscribe when given; retried m.retries times each. socketio: each
   * connection authenticates with a bench JWT (minted before the clock starts).
   */
  async connect(m) {
    const tokens = proto === 'socketio' ? Array.from({ length: m.count }, (_, i) => benchToken(m.secret, `bench-user-${m.base + i}`, 3600)) : [];
    const errors = {};
    let ok = 0;
    let failed = 0;
    let retried = 0;
    const cpu0 = process.cpuUsage();
    const t0 = nowMs();
    let t1 = t0;
    const deadline = t0 + m.phaseTimeoutMs;
    await bounded(m.count, m.concurrency, async (i) => {
      for (let attempt = 0; ; attempt++) {
        if (nowMs() > deadline) {
          failed++;
          errors.phase_timeout = (errors.phase_timeout ?? 0) + 1;
          return;
        }
        try {
          const c = proto === 'socketio' ? await pool.open(tokens[i], m.timeoutMs) : await pool.open(m.timeoutMs);
          if (m.subscribe) await c.subscribe(channelOf(m.subscribe, m.base + i), m.timeoutMs);
          ok++;
          t1 = nowMs();
          return;
        } catch (e) {
          errors[e.message] = (errors[e.message] ?? 0) + 1;
          if (attempt >= (m.retries ?? 0)) {
            failed++;
            return;
          }
          retried++;
        }
      }
    });
    return { ok, failed, retried, errors, socketErrors: pool.errors, closeCodes: pool.closeCodes, t0, t1, cpuMs: cpuMsSince(cpu0), open: pool.conns.size };
  },

  drop() {
    pool.closeAll();
    return {};
  },

  count(m) {
    pool.startCount(m.latency ? new LatencyHistogram() : undefined);
    cpuMark = process.cpuUsage();
    clearInterval(progressTimer);
    progressTimer = setInterval(() => process.send({ progress: pool.messages }), m.progressMs ?? 20);
    return {};
  },

  stats() {
    clearInterval(progressTimer);
    const cpuMs = cpuMsSince(cpuMark); // before the latency histogram is serialized, as ever
    return { ...pool.counts(), cpuMs, pings: pool.pings };
  },

  exit() {
    clearInterval(progressTimer);
    pool?.closeAll();
    setTimeout(() => process.exit(0), 10);
    return {};
  },
};

serveCommands(handlers);
