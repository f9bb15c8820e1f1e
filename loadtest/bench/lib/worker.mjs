// A client process (child_process.fork): holds many WebSocket connections to
// one server and answers the runner's commands over IPC. Several run side by
// side because one process may hold at most ~20 000 open files.
import { benchToken } from './jwt.mjs';
import { SsePool } from './sse-client.mjs';
import { LatencyHistogram } from './stats.mjs';
import { bounded, cpuMsSince, serveCommands } from './worker-ipc.mjs';
import { WsPool, nowMs } from './ws-client.mjs';

let pool;
/** sse-fanout: Server-Sent Events streams to the same server. */
let ssePool;
let progressTimer;
let cpuMark = process.cpuUsage();

function channelOf(spec, i) {
  return spec.kind === 'one' ? spec.name : `${spec.prefix}${i % spec.count}`;
}

/**
 * The channels of connection `index`: `spec.channels` (the same list for
 * every connection), or (churn) `perConn` consecutive ones, modulo `total`.
 */
function channelsOf(spec, index) {
  if (spec.channels) return spec.channels;
  return Array.from({ length: spec.perConn }, (_, j) => `${spec.prefix}${(index * spec.perConn + j) % spec.total}`);
}

/**
 * Connections by group (presence scenarios: subscribers, joiners, askers),
 * each group by connection index; the churn and delivery scenarios use the
 * default group "main" only.
 */
const groups = new Map();
function groupOf(name) {
  let g = groups.get(name);
  if (!g) groups.set(name, (g = new Map()));
  return g;
}
const openIn = (name) => [...groupOf(name).values()].filter((c) => c.state === 2);

/** presence scenarios: join/leave frames received, per type and user: count, first and last receipt (ms). */
let seen = new Map();
function trackPresence(f) {
  const key = `${f.type} ${f.user}`;
  const t = nowMs();
  const e = seen.get(key);
  if (e) {
    e.n++;
    e.last = t;
  } else seen.set(key, { n: 1, first: t, last: t });
}

/** Subscribes one connection to its channels, all frames at once; resolves with the failures (0 when all ok). */
async function subscribeMany(c, channels, timeoutMs, errors, failedOut) {
  const res = await Promise.allSettled(channels.map((ch) => c.subscribe(ch, timeoutMs)));
  let failed = 0;
  for (const [i, r] of res.entries()) {
    if (r.status === 'rejected') {
      failed++;
      errors[r.reason.message] = (errors[r.reason.message] ?? 0) + 1;
      failedOut?.push(channels[i]);
    }
  }
  return failed;
}

/** churn: clients reconnecting elsewhere after the server closed them (drain). */
let reconnect;

const handlers = {
  init(m) {
    pool = new WsPool({ host: m.host, port: m.port, tokenIn: m.tokenIn, localPorts: m.localPorts, deflate: m.deflate, inflateEvery: m.inflateEvery });
    if (m.trackPresence) pool.onPresence = trackPresence;
    ssePool = new SsePool({ host: m.host, port: m.port });
    return {};
  },

  /**
   * sse-fanout: opens `count` SSE streams (users base…base+count−1) on
   * `channels`, `concurrency` at a time; a failed one is retried `retries`
   * times. Resolves with how many are open (welcome received).
   */
  async sseConnect(m) {
    const tokens = [];
    for (let i = 0; i < m.count; i++) tokens.push(benchToken(m.secret, `${m.userPrefix ?? 'bench-sse-'}${m.base + i}`, 3600));
    const errors = {};
    let ok = 0;
    let failed = 0;
    const t0 = nowMs();
    const deadline = t0 + m.phaseTimeoutMs;
    await bounded(m.count, m.concurrency, async (i) => {
      for (let attempt = 0; ; attempt++) {
        if (nowMs() > deadline) {
          failed++;
          errors.phase_timeout = (errors.phase_timeout ?? 0) + 1;
          return;
        }
        try {
          await ssePool.open(tokens[i], m.channels, m.timeoutMs);
          ok++;
          return;
        } catch (e) {
          errors[e.message] = (errors[e.message] ?? 0) + 1;
          if (attempt >= (m.retries ?? 0)) {
            failed++;
            return;
          }
        }
      }
    });
    return { ok, failed, errors, socketErrors: ssePool.errors, t0, t1: nowMs(), open: ssePool.streams.size };
  },

  /** sse-fanout: closes every SSE stream at once. */
  sseDrop() {
    ssePool.closeAll();
    return {};
  },

  async connect(m) {
    // Tokens are minted before the clock starts: signing is not part of the measure.
    // m.info: each token carries an `info` claim {"name":"User <n>"} (presence scenarios).
    // m.cookie (the proxy scenario): no token, a session cookie naming the user, for the connect proxy.
    const tokens = [];
    const prefix = m.userPrefix ?? 'bench-user-';
    for (let i = 0; i < m.count; i++) {
      tokens.push(m.cookie
        ? `bench_session=${prefix}${m.base + i}`
        : benchToken(m.secret, `${prefix}${m.base + i}`, 3600, m.info ? { name: `User ${m.base + i}` } : undefined));
    }
    const group = groupOf(m.group ?? 'main');
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
          const c = await pool.open(tokens[i], m.timeoutMs, m.cookie ? 'cookie' : undefined);
          c.index = m.base + i;
          c.token = tokens[i];
          group.set(c.index, c);
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
    groups.clear();
    return {};
  },

  /** The proxy scenario: closes the connections of `group` with a TCP reset, leaving the others open. */
  dropGroup(m) {
    for (const c of groupOf(m.group).values()) c.destroy();
    groups.delete(m.group);
    return {};
  },

  /**
   * churn: every open connection subscribes to its `spec.perConn` channels,
   * all at once; resolves once every reply came (or timed out).
   */
  async subscribeAll(m) {
    const errors = {};
    const conns = m.group === undefined ? [...pool.conns] : openIn(m.group);
    const left = new Map(conns.map((c) => [c, []]));
    const t0 = nowMs();
    // m.oneAtATime (the proxy scenario): each connection sends its next subscribe once the last was answered,
    // so that at most one per connection is in flight (under PUBGATE_PROXY_CONCURRENCY).
    const failed = await Promise.all(conns.map(async (c) => {
      if (!m.oneAtATime) return subscribeMany(c, channelsOf(m.spec, c.index), m.timeoutMs, errors, left.get(c));
      let n = 0;
      for (const ch of channelsOf(m.spec, c.index)) n += await subscribeMany(c, [ch], m.timeoutMs, errors, left.get(c));
      return n;
    }));
    const t1 = nowMs();
    const bad = failed.reduce((a, n) => a + n, 0);
    // Optionally the refused ones again, a few connections at a time, so that
    // the next phase starts with every channel held (an older build may refuse
    // much of a burst).
    const topUp = { ok: 0, failed: 0, errors: {} };
    if (m.topUpConcurrency > 0 && bad > 0) {
      const todo = conns.filter((c) => left.get(c).length > 0);
      await bounded(todo.length, m.topUpConcurrency, async (i) => {
        const c = todo[i];
        for (let attempt = 0; attempt < 5 && left.get(c).length > 0; attempt++) {
          const again = [];
          await subscribeMany(c, left.get(c), m.timeoutMs, topUp.errors, again);
          left.set(c, again);
        }
        topUp.failed += left.get(c).length;
      });
      topUp.ok = bad - topUp.failed;
    }
    return { conns: conns.length, ok: conns.length * m.spec.perConn - bad, failed: bad, errors, t0, t1, topUp };
  },

  /** presence scenarios: every open connection of `group` unsubscribes from its channels, all at once. */
  async unsubscribeAll(m) {
    const errors = {};
    const conns = openIn(m.group);
    const t0 = nowMs();
    const res = await Promise.all(conns.map((c) => Promise.allSettled(channelsOf(m.spec, c.index).map((ch) => c.unsubscribe(ch, m.timeoutMs)))));
    const t1 = nowMs();
    let ok = 0;
    let failed = 0;
    for (const r of res.flat()) {
      if (r.status === 'fulfilled') ok++;
      else {
        failed++;
        errors[r.reason.message] = (errors[r.reason.message] ?? 0) + 1;
      }
    }
    return { conns: conns.length, ok, failed, errors, t0, t1 };
  },

  /**
   * presence scenarios: connection `index` of `group` sends one `type` frame
   * (subscribe, unsubscribe, presence, presence_stats) on `channel`; answers
   * when it was sent and answered (ms) and what the reply said.
   */
  async request(m) {
    const c = groupOf(m.group).get(m.index);
    if (!c || c.state !== 2) throw new Error(`no open connection ${m.index} in group ${m.group}`);
    const t0 = nowMs();
    const r = await c.request(m.type, m.channel, m.timeoutMs ?? 10_000);
    const t1 = nowMs();
    return { t0, t1, users: r.users, connections: r.connections, members: r.members?.length, truncated: r.truncated === true };
  },

  /** presence scenarios: every open connection of `group` sends `perConn` `type` frames on `channel`, one after another, all connections at once. */
  async requestMany(m) {
    const errors = {};
    let ok = 0;
    let failed = 0;
    const t0 = nowMs();
    await Promise.all(openIn(m.group).map(async (c) => {
      for (let i = 0; i < m.perConn; i++) {
        try {
          await c.request(m.type, m.channel, m.timeoutMs ?? 30_000);
          ok++;
        } catch (e) {
          failed++;
          errors[e.message] = (errors[e.message] ?? 0) + 1;
        }
      }
    }));
    return { ok, failed, errors, t0, t1: nowMs() };
  },

  /** idempotency scenario: the welcome.conn of connection `index` of `group`. */
  connId(m) {
    return { conn: groupOf(m.group).get(m.index)?.connId };
  },

  /** presence scenarios: when the last message frame arrived (ms). */
  lastRecv() {
    return { ms: pool.lastRecvMs };
  },

  /** presence scenarios: the join/leave frames received since the last call (per type and user), then forgets them. */
  presenceSeen() {
    const out = [...seen.entries()].map(([k, e]) => {
      const sp = k.indexOf(' ');
      return { type: k.slice(0, sp), user: k.slice(sp + 1), ...e };
    });
    seen = new Map();
    return { seen: out };
  },

  /**
   * churn: from now on a connection the server closes reconnects to `port`
   * (same token) and subscribes to its channels again, retried up to `retries`
   * times; counted in reconnectStats.
   */
  armReconnect(m) {
    const target = new WsPool({ host: m.host, port: m.port, tokenIn: m.tokenIn });
    // backMs: per client, from its close to its last channel confirmed again.
    const st = { closed: 0, reconnected: 0, resubscribed: 0, failed: 0, retried: 0, errors: {}, firstCloseMs: 0, lastCloseMs: 0, lastDoneMs: 0, backMs: [] };
    reconnect = { target, st };
    pool.onClosed = (c) => {
      st.closed++;
      const closedAt = nowMs();
      if (st.firstCloseMs === 0) st.firstCloseMs = closedAt;
      st.lastCloseMs = closedAt;
      void (async () => {
        for (let attempt = 0; ; attempt++) {
          try {
            const n = await target.open(c.token, m.timeoutMs);
            if (attempt === 0) st.reconnected++;
            const failed = await subscribeMany(n, channelsOf(m.spec, c.index), m.timeoutMs, st.errors);
            if (failed > 0) {
              n.destroy();
              throw new Error('resubscribe failed');
            }
            st.resubscribed++;
            st.lastDoneMs = nowMs();
            st.backMs.push(st.lastDoneMs - closedAt);
            return;
          } catch (e) {
            st.errors[e.message] = (st.errors[e.message] ?? 0) + 1;
            if (attempt >= m.retries) {
              st.failed++;
              return;
            }
            st.retried++;
          }
        }
      })();
    };
    return {};
  },

  reconnectStats() {
    if (!reconnect) return { closed: 0 };
    const { target, st } = reconnect;
    return { ...st, open: target.conns.size, socketErrors: target.errors, closeCodes: pool.closeCodes };
  },

  count(m) {
    pool.startCount(m.latency ? new LatencyHistogram() : undefined);
    pool.resetCounts();
    if (ssePool) {
      ssePool.messages = 0;
      ssePool.closeEvents = {};
      ssePool.endedOpen = 0;
    }
    cpuMark = process.cpuUsage();
    clearInterval(progressTimer);
    progressTimer = setInterval(() => process.send({ progress: pool.messages, presence: pool.presenceFrames, sse: ssePool?.messages ?? 0 }), m.progressMs ?? 20);
    return {};
  },

  stats() {
    clearInterval(progressTimer);
    const cpuMs = cpuMsSince(cpuMark); // before the latency histogram is serialized, as ever
    return {
      ...pool.counts(),
      cpuMs,
      extensions: pool.extensions,
      wireBytes: pool.wireBytes,
      compressed: pool.compressed,
      inflated: pool.inflated,
      inflatedBytes: pool.inflatedBytes,
      inflatedWire: pool.inflatedWire,
      inflateErrors: pool.inflateErrors,
      sse: ssePool && { messages: ssePool.messages, open: ssePool.streams.size, endedOpen: ssePool.endedOpen, closeEvents: ssePool.closeEvents, errors: ssePool.errors },
    };
  },

  exit() {
    clearInterval(progressTimer);
    pool?.closeAll();
    ssePool?.closeAll();
    reconnect?.target.closeAll();
    setTimeout(() => process.exit(0), 10);
    return {};
  },
};

serveCommands(handlers);
