// A client process (child_process.fork) of the pusher scenarios: holds many
// Pusher-protocol connections to one server (pusher-client.mjs) and answers
// the runner's commands over IPC, with the same commands and answers as
// worker.mjs where the pusher scenarios use them (init, connect, count,
// stats, drop, exit), so that workers.mjs drives either.
import { PusherPool } from './pusher-client.mjs';
import { nowMs } from './ws-client.mjs';

let pool;
let progressTimer;
let cpuMark = process.cpuUsage();

const cpuMsSince = (mark) => {
  const d = process.cpuUsage(mark);
  return (d.user + d.system) / 1000;
};

/** Runs `count` tasks with at most `limit` at once; resolves when all settled. */
async function bounded(count, limit, task) {
  let next = 0;
  const lanes = [];
  for (let l = 0; l < Math.min(limit, count); l++) {
    lanes.push((async () => {
      while (next < count) await task(next++);
    })());
  }
  await Promise.all(lanes);
}

const handlers = {
  init(m) {
    pool = new PusherPool({ host: m.host, port: m.port, key: m.key, localPorts: m.localPorts });
    return {};
  },

  /** Opens m.count connections, each subscribed to m.subscribe.name; retried m.retries times each. */
  async connect(m) {
    const errors = {};
    let ok = 0;
    let failed = 0;
    let retried = 0;
    const cpu0 = process.cpuUsage();
    const t0 = nowMs();
    let t1 = t0;
    const deadline = t0 + m.phaseTimeoutMs;
    await bounded(m.count, m.concurrency, async () => {
      for (let attempt = 0; ; attempt++) {
        if (nowMs() > deadline) {
          failed++;
          errors.phase_timeout = (errors.phase_timeout ?? 0) + 1;
          return;
        }
        try {
          const c = await pool.open(m.timeoutMs);
          if (m.subscribe) await c.subscribe(m.subscribe.name, m.timeoutMs);
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
    pool.messages = 0;
    pool.lastRecvMs = 0;
    pool.closedOpen = 0;
    pool.closeCodes = {};
    cpuMark = process.cpuUsage();
    clearInterval(progressTimer);
    progressTimer = setInterval(() => process.send({ progress: pool.messages }), m.progressMs ?? 20);
    return {};
  },

  stats() {
    clearInterval(progressTimer);
    return {
      messages: pool.messages,
      lastRecvMs: pool.lastRecvMs,
      closedOpen: pool.closedOpen,
      closeCodes: pool.closeCodes,
      open: pool.conns.size,
      cpuMs: cpuMsSince(cpuMark),
      errors: pool.errors,
      pings: pool.pings,
    };
  },

  exit() {
    clearInterval(progressTimer);
    pool?.closeAll();
    setTimeout(() => process.exit(0), 10);
    return {};
  },
};

process.on('message', (m) => {
  Promise.resolve()
    .then(() => handlers[m.cmd](m))
    .then(
      (r) => process.send({ ...r, seq: m.seq, status: 'ok' }),
      (e) => process.send({ seq: m.seq, status: 'error', error: String(e?.stack ?? e) }),
    );
});
// The runner going away ends this process too.
process.on('disconnect', () => process.exit(0));
