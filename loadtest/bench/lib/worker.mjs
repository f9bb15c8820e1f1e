// A client process (child_process.fork): holds many WebSocket connections to
// one server and answers the runner's commands over IPC. Several run side by
// side because one process may hold at most ~20 000 open files.
import { benchToken } from './jwt.mjs';
import { LatencyHistogram } from './stats.mjs';
import { WsPool, nowMs } from './ws-client.mjs';

let pool;
let progressTimer;
let cpuMark = process.cpuUsage();

const cpuMsSince = (mark) => {
  const d = process.cpuUsage(mark);
  return (d.user + d.system) / 1000;
};

function channelOf(spec, i) {
  return spec.kind === 'one' ? spec.name : `${spec.prefix}${i % spec.count}`;
}

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
    pool = new WsPool({ host: m.host, port: m.port, tokenIn: m.tokenIn, localPorts: m.localPorts, deflate: m.deflate, inflateEvery: m.inflateEvery });
    return {};
  },

  async connect(m) {
    // Tokens are minted before the clock starts: signing is not part of the measure.
    const tokens = [];
    for (let i = 0; i < m.count; i++) tokens.push(benchToken(m.secret, `bench-user-${m.base + i}`));
    const errors = {};
    let ok = 0;
    let failed = 0;
    let retried = 0;
    const cpu0 = process.cpuUsage();
    const t0 = nowMs();
    let t1 = t0;
    const deadline = t0 + m.phaseTimeoutMs;
    await bounded(m.count, m.concurrency, async (i) => {
      if (nowMs() > deadline) {
        failed++;
        errors.phase_timeout = (errors.phase_timeout ?? 0) + 1;
        return;
      }
      // A subscriber that fails is retried (m.retries times) so a delivery scenario
      // starts with every subscriber; each failure is still counted and reported.
      for (let attempt = 0; ; attempt++) {
        try {
          const c = await pool.open(tokens[i], m.timeoutMs);
          if (m.subscribe) await c.subscribe(channelOf(m.subscribe, m.base + i), m.timeoutMs);
          ok++;
          t1 = nowMs();
          return;
        } catch (e) {
          errors[e.message] = (errors[e.message] ?? 0) + 1;
          if (attempt >= (m.retries ?? 0) || nowMs() > deadline) {
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
    pool.resetCounts();
    pool.latency = m.latency ? new LatencyHistogram() : undefined;
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
      latency: pool.latency?.toSparse(),
      extensions: pool.extensions,
      wireBytes: pool.wireBytes,
      compressed: pool.compressed,
      inflated: pool.inflated,
      inflatedBytes: pool.inflatedBytes,
      inflatedWire: pool.inflatedWire,
      inflateErrors: pool.inflateErrors,
      errors: pool.errors,
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
