#!/usr/bin/env node
// pubgate churn benchmark: what a node does when many clients leave or arrive
// at once (a load-balancer restart, a deploy). 127.0.0.1 only; every phase has
// a deadline. See loadtest/README.md ("The churn benchmark").
//
//   node loadtest/bench/churn.mjs                       # both scenarios, 1 run each
//   node loadtest/bench/churn.mjs churn --connections 1000 --per-conn 100
//   node loadtest/bench/churn.mjs drain --drain-connections 19000
//   node loadtest/bench/churn.mjs all --pubgate-main /work/before/dist/main.js --pubgate-node /usr/bin/node
//
// churn: redis-server + one node. C connections subscribe to P distinct
//   channels each, all at once (the subscribes/s the node sustains into Redis:
//   client subscriptions confirmed per second, each a distinct Redis channel),
//   then every connection is dropped at once (TCP reset). Throughout, /readyz
//   is polled and a publisher keeps publishing; after the drop, INFO's
//   pubsub_channels is polled until every channel is released, and the node's
//   log lines are counted for --log-window s.
// drain: redis-server + nodes A and B. D connections on A hold K channels each
//   (out of a pool of --drain-pool); A gets SIGTERM (drains: 1001 closes spread
//   over PUBGATE_DRAIN_SECONDS) and every closed client reconnects to B and
//   subscribes to its channels again. Throughout, B's /readyz is polled and a
//   publisher keeps publishing to B.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { freePort, pinToClientCpus, sleepMs, startProcess, waitQuiet } from './lib/proc.mjs';
import { createPublisher } from './lib/publisher.mjs';
import { API_KEY, PUBGATE_MAIN, SECRET, cleanEnv, pubgateEnv } from './lib/targets.mjs';
import { forkWorkers, localPortRange, shares, stopWorkers } from './lib/workers.mjs';
import { nowMs } from './lib/ws-client.mjs';

const SCENARIOS = ['churn', 'drain'];
const USAGE = `usage: node loadtest/bench/churn.mjs [churn|drain|all] [options]
  --connections N          churn: connections (default 1000)
  --per-conn N             churn: distinct channels per connection (default 100)
  --drain-connections N    drain: connections on node A (default 19000, capped by the open-files limit)
  --drain-per-conn N       drain: channels per connection (default 5)
  --drain-pool N           drain: distinct channels they share (default 20000)
  --drain-seconds S        drain: node A's PUBGATE_DRAIN_SECONDS (default 10)
  --publish-rate N         publishes/s the publisher keeps up throughout (default 100)
  --log-window S           churn: node log lines are counted for S s after the drop (default 10)
  --runs N                 runs per scenario (default 1)
  --workers N              client processes (default max(2, ceil(connections / 5000)))
  --pubgate-main FILE      the pubgate entry to run (default dist/main.js)
  --pubgate-node FILE      the node binary that runs it (default this node; e.g. /usr/bin/node for an older build)
  --pubgate-env NAME=VALUE extra PUBGATE_* setting (repeatable)
  --server-cpus LIST       taskset CPU list for redis-server and the nodes (default 0)
  --client-cpus LIST       taskset CPU list for the runner and clients (default 1)
  --no-pin                 do not use taskset
  --quiet-wait S           before each run, wait up to S s for the cores to be idle (default 5; 0 skips)
  --profile DIR            run the nodes under --cpu-prof (profiles in DIR; summarise with profile-summary.mjs)
  --json FILE              also write every figure as JSON`;

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    connections: { type: 'string', default: '1000' },
    'per-conn': { type: 'string', default: '100' },
    'drain-connections': { type: 'string' },
    'drain-per-conn': { type: 'string', default: '5' },
    'drain-pool': { type: 'string', default: '20000' },
    'drain-seconds': { type: 'string', default: '10' },
    'publish-rate': { type: 'string', default: '100' },
    'log-window': { type: 'string', default: '10' },
    runs: { type: 'string', default: '1' },
    workers: { type: 'string' },
    'pubgate-main': { type: 'string', default: PUBGATE_MAIN },
    'pubgate-node': { type: 'string', default: process.execPath },
    'pubgate-env': { type: 'string', multiple: true },
    'server-cpus': { type: 'string', default: '0' },
    'client-cpus': { type: 'string', default: '1' },
    'no-pin': { type: 'boolean', default: false },
    'quiet-wait': { type: 'string', default: '5' },
    profile: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (o.help || positionals.length > 1) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(o.help ? 0 : 2);
}
const scenarios = !positionals[0] || positionals[0] === 'all' ? SCENARIOS : positionals[0].split(',');
for (const s of scenarios) {
  if (!SCENARIOS.includes(s)) {
    process.stderr.write(`unknown scenario ${s}\n${USAGE}\n`);
    process.exit(2);
  }
}

const nproc = os.cpus().length;
const pin = pinToClientCpus(o['client-cpus'], o['no-pin']);
const serverCpus = pin ? o['server-cpus'] : undefined;
const nofile = Number(spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout) || 1024;
const num = (v, d) => (v === undefined ? d : Number(v));
const extraEnv = Object.fromEntries((o['pubgate-env'] ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));

// ---- processes ----------------------------------------------------------------

async function startRedis() {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning'];
  const p = await startProcess({ name: 'redis-server', cmd: 'redis-server', args, env: cleanEnv(), cpus: serverCpus, readyPorts: [port] });
  return Object.assign(p, { port, url: `redis://127.0.0.1:${port}` });
}

/** A pubgate node whose stdout lines are counted (and the last ones kept). */
async function startNode(nodeId, redisUrl, env = {}) {
  const port = await freePort();
  const adminPort = await freePort();
  const p = await startProcess({
    name: `pubgate ${nodeId}`,
    cmd: o['pubgate-node'],
    args: o.profile ? ['--cpu-prof', `--cpu-prof-dir=${o.profile}`, o['pubgate-main']] : [o['pubgate-main']],
    cpus: serverCpus,
    readyPorts: [port, adminPort],
    env: {
      ...pubgateEnv({ port, adminPort, nodeId, redisUrl }),
      PUBGATE_MAX_CONNECTIONS: '100000',
      PUBGATE_MAX_SUBSCRIPTIONS: '1000',
      PUBGATE_CLIENT_FRAME_RATE: '1000',
      ...extraEnv,
      ...env,
    },
  });
  // Lines counted by level and msg (all of them), the first 5000 kept for CHURN_DUMP.
  const log = { count: 0, kept: [], kinds: new Map(), partial: '' };
  p.proc.stdout.on('data', (d) => {
    const text = log.partial + String(d);
    const lines = text.split('\n');
    log.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      log.count++;
      if (log.kept.length < 5000) log.kept.push(line);
      const k = lineKind(line);
      log.kinds.set(k, (log.kinds.get(k) ?? 0) + 1);
    }
  });
  // A profile is written on a clean exit only (SIGTERM drains, then exits).
  const stop = p.stop;
  const node = Object.assign(p, { port, adminPort, nodeId, log, stop: (sig, grace) => stop(sig ?? (o.profile ? 'SIGTERM' : 'SIGKILL'), grace ?? 30_000) });
  const deadline = Date.now() + 20_000;
  while ((await httpStatus(adminPort, '/readyz')) !== 200) {
    if (!p.alive || Date.now() > deadline) {
      await p.stop();
      throw new Error(`${nodeId} did not become ready:\n  ${p.tail.join('\n  ')}`);
    }
    await sleepMs(50);
  }
  return node;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
function httpStatus(port, path) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.setTimeout(2000, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** A few samples of the node's /metrics: event-loop lag max since the last scrape, broker publish errors by reason. */
function nodeMetrics(node) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: node.adminPort, path: '/metrics', agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        const publishErrors = {};
        for (const m of text.matchAll(/^pubgate_broker_publish_errors_total\{[^}]*reason="([^"]+)"[^}]*\} (\S+)$/gm)) publishErrors[m[1]] = Number(m[2]);
        const lag = /^nodejs_eventloop_lag_max_seconds\{[^}]*\} (\S+)$/m.exec(text);
        const gaps = /^pubgate_broker_gaps_total\{[^}]*\} (\S+)$/m.exec(text);
        resolve({ lagMaxSec: lag ? Number(lag[1]) : NaN, publishErrors, gaps: gaps ? Number(gaps[1]) : NaN });
      });
    });
    req.setTimeout(5000, () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

// ---- monitors -------------------------------------------------------------------

/**
 * Polls /readyz every `everyMs` until stopped; counts answers by status:
 * `notReady` an answer other than 200, `noAnswer` none within 2 s (the
 * node's event loop was busy that long), and remembers when it was not 200.
 */
function watchReady(node, everyMs = 20) {
  const st = { polls: 0, notReady: 0, noAnswer: 0, byStatus: {}, firstNotReadyMs: 0, lastNotReadyMs: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const s = await httpStatus(node.adminPort, '/readyz');
      st.polls++;
      st.byStatus[s] = (st.byStatus[s] ?? 0) + 1;
      if (s === 0) st.noAnswer++;
      else if (s !== 200) st.notReady++;
      if (s !== 200) {
        const t = nowMs();
        if (st.firstNotReadyMs === 0) st.firstNotReadyMs = t;
        st.lastNotReadyMs = t;
      }
      await sleepMs(everyMs);
    }
  })();
  return { st, stop: async () => { running = false; await loop; return st; } };
}

/** Publishes at `rate`/s (at most 8 in flight) to `node` until stopped; counts answers by status. */
function keepPublishing(node, rate) {
  const pub = createPublisher({ port: node.port, apiKey: API_KEY, concurrency: 8 });
  const st = { sent: 0, ok: 0, refused: 0, byStatus: {}, skipped: 0 };
  let running = true;
  const inflight = new Set();
  const loop = (async () => {
    const t0 = nowMs();
    while (running) {
      const due = Math.floor(((nowMs() - t0) * rate) / 1000);
      while (st.sent + st.skipped < due) {
        if (pub.inflight >= 8) {
          st.skipped++;
          continue;
        }
        st.sent++;
        const body = JSON.stringify({ channel: 'bench:pub', data: { n: st.sent } });
        const p = pub.post('/v1/publish', body).then((r) => {
          st.byStatus[r.status] = (st.byStatus[r.status] ?? 0) + 1;
          if (r.status === 200) st.ok++;
          else st.refused++;
          inflight.delete(p);
        });
        inflight.add(p);
      }
      await sleepMs(Math.max(1, 1000 / rate / 2));
    }
  })();
  return {
    st,
    stop: async () => {
      running = false;
      await loop;
      await Promise.all(inflight);
      pub.close();
      return st;
    },
  };
}

/** INFO stats' pubsub_channels over one raw RESP connection. */
function redisInfoClient(port) {
  const sock = net.connect({ host: '127.0.0.1', port });
  let buf = '';
  let waiting;
  sock.setEncoding('utf8');
  sock.on('data', (d) => {
    buf += d;
    const nl = buf.indexOf('\r\n');
    if (nl < 0 || !waiting) return;
    const len = Number(buf.slice(1, nl));
    if (buf.length < nl + 2 + len + 2) return;
    const body = buf.slice(nl + 2, nl + 2 + len);
    buf = buf.slice(nl + 2 + len + 2);
    const w = waiting;
    waiting = undefined;
    w(body);
  });
  const ready = new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return {
    async channels() {
      await ready;
      const body = await new Promise((resolve) => {
        waiting = resolve;
        sock.write('*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n');
      });
      return Number(/pubsub_channels:(\d+)/.exec(body)?.[1] ?? NaN);
    },
    close: () => sock.destroy(),
  };
}

/** Polls pubsub_channels every `everyMs` until `done(n)` holds or `guardMs` passed; resolves with the time it held (or undefined) and the last count. */
async function untilChannels(redisInfo, done, guardMs, everyMs = 10) {
  const deadline = nowMs() + guardMs;
  let n;
  for (;;) {
    n = await redisInfo.channels();
    if (done(n)) return { atMs: nowMs(), n };
    if (nowMs() > deadline) return { atMs: undefined, n };
    await sleepMs(everyMs);
  }
}

/** "level msg" of a JSON log line (the line itself when it is not JSON). */
function lineKind(line) {
  try {
    const j = JSON.parse(line);
    return `${j.level} ${j.msg}`;
  } catch {
    return line.slice(0, 200);
  }
}

/** The log line kinds counted since `before` (a copy of log.kinds), most frequent first. */
function kindsSince(log, before) {
  const out = [];
  for (const [k, n] of log.kinds) if (n - (before.get(k) ?? 0) > 0) out.push([k, n - (before.get(k) ?? 0)]);
  return out.sort((a, b) => b[1] - a[1]);
}

const merge = (into, from) => {
  for (const [k, v] of Object.entries(from ?? {})) into[k] = (into[k] ?? 0) + v;
  return into;
};

// ---- scenarios ----------------------------------------------------------------------

async function connectAll(workers, node, count, phaseTimeoutMs) {
  const share = shares(count, workers.length);
  let base = 0;
  const res = await Promise.all(workers.map((w, i) => {
    const b = base;
    base += share[i];
    return w.call('connect', { count: share[i], base: b, secret: SECRET, concurrency: 64, timeoutMs: 15_000, phaseTimeoutMs, retries: 3 }, phaseTimeoutMs + 30_000);
  }));
  const ok = res.reduce((a, r) => a + r.ok, 0);
  if (ok < count) throw new Error(`only ${ok} of ${count} connections opened: ${JSON.stringify(res.map((r) => ({ ...r.errors, ...r.socketErrors })))}`);
}

async function runChurn() {
  const C = num(o.connections, 1000);
  const P = num(o['per-conn'], 100);
  const total = C * P;
  const logWindowMs = num(o['log-window'], 10) * 1000;
  const redis = await startRedis();
  const procs = [redis];
  const nWorkers = num(o.workers, Math.max(2, Math.ceil(C / 5000)));
  const workers = forkWorkers(nWorkers);
  const info = redisInfoClient(redis.port);
  try {
    const a = await startNode('churn-a', redis.url);
    procs.push(a);
    await Promise.all(workers.map((w, i) => w.call('init', { host: '127.0.0.1', port: a.port, tokenIn: 'header', localPorts: localPortRange(i, nWorkers) })));
    await connectAll(workers, a, C, 120_000);
    const baseline = await info.channels();
    await nodeMetrics(a); // resets the event-loop lag window
    const ready = watchReady(a);
    const pub = keepPublishing(a, num(o['publish-rate'], 100));
    await sleepMs(500);

    // Subscribe: every connection asks for its P channels at once.
    const spec = { prefix: 'bench:churn:', perConn: P, total };
    const subKinds0 = new Map(a.log.kinds);
    const subRes = await Promise.all(workers.map((w) => w.call('subscribeAll', { spec, timeoutMs: 60_000, topUpConcurrency: 4 }, 600_000)));
    const subOk = subRes.reduce((x, r) => x + r.ok, 0);
    const topUpOk = subRes.reduce((x, r) => x + r.topUp.ok, 0);
    const topUpFailed = subRes.reduce((x, r) => x + r.topUp.failed, 0);
    const subFailed = subRes.reduce((x, r) => x + r.failed, 0);
    const subErrors = subRes.reduce((x, r) => merge(x, r.errors), {});
    const subT0 = Math.min(...subRes.map((r) => r.t0));
    const subT1 = Math.max(...subRes.map((r) => r.t1));
    const held = await untilChannels(info, (n) => n >= baseline + total, 30_000);
    const readyAfterSubscribe = { ...ready.st, byStatus: { ...ready.st.byStatus } };
    const metricsAfterSubscribe = await nodeMetrics(a);
    const pubAfterSubscribe = { ...pub.st, byStatus: { ...pub.st.byStatus } };
    await sleepMs(1000);

    // Drop every connection at once.
    const linesBefore = a.log.count;
    const dropKinds0 = new Map(a.log.kinds);
    const readyBefore = ready.st.notReady;
    const noAnswerBefore = ready.st.noAnswer;
    const refusedBefore = pub.st.refused;
    const tDrop = nowMs();
    await Promise.all(workers.map((w) => w.call('drop')));
    const released = await untilChannels(info, (n) => n <= baseline, 30_000);
    const rest = tDrop + logWindowMs - nowMs();
    if (rest > 0) await sleepMs(rest);
    const logLines = a.log.count - linesBefore;
    const readySt = await ready.stop();
    const pubSt = await pub.stop();
    const metricsAfterDrop = await nodeMetrics(a);
    if (!a.alive) throw new Error(`node exited: ${a.tail.join('\n  ')}`);
    if (process.env.CHURN_DUMP) writeFileSync(process.env.CHURN_DUMP, a.log.kept.join('\n'));
    return {
      ok: true,
      connections: C,
      perConn: P,
      channels: total,
      subscribe: {
        ok: subOk,
        failed: subFailed,
        errors: subErrors,
        seconds: (subT1 - subT0) / 1000,
        perSec: subOk / ((subT1 - subT0) / 1000),
        heldInRedis: held.n - baseline,
        topUpOk,
        topUpFailed,
        notReadyPolls: readyAfterSubscribe.notReady,
        noAnswerPolls: readyAfterSubscribe.noAnswer,
        publishesRefused: pubAfterSubscribe.refused,
        lines: [...dropKinds0.values()].reduce((x, n) => x + n, 0) - [...subKinds0.values()].reduce((x, n) => x + n, 0),
        lineKinds: kindsSince({ kinds: dropKinds0 }, subKinds0).slice(0, 8),
        metrics: metricsAfterSubscribe,
      },
      drop: {
        releasedMs: released.atMs === undefined ? undefined : released.atMs - tDrop,
        leftInRedis: released.n - baseline,
        notReadyPolls: readySt.notReady - readyBefore,
        noAnswerPolls: readySt.noAnswer - noAnswerBefore,
        publishesRefused: pubSt.refused - refusedBefore,
        logLines,
        logWindowSec: logWindowMs / 1000,
        lineKinds: kindsSince(a.log, dropKinds0).slice(0, 8),
        metrics: metricsAfterDrop,
      },
      readyz: readySt,
      publisher: pubSt,
    };
  } finally {
    info.close();
    await stopWorkers(workers);
    for (const p of procs.reverse()) await p.stop().catch(() => undefined);
  }
}

async function runDrain() {
  const D = num(o['drain-connections'], Math.min(19_000, nofile - 1000));
  const K = num(o['drain-per-conn'], 5);
  const pool = num(o['drain-pool'], 20_000);
  const drainSec = num(o['drain-seconds'], 10);
  const redis = await startRedis();
  const procs = [redis];
  const nWorkers = num(o.workers, Math.max(2, Math.ceil(D / 5000)));
  const workers = forkWorkers(nWorkers);
  const info = redisInfoClient(redis.port);
  try {
    const a = await startNode('drain-a', redis.url, { PUBGATE_DRAIN_SECONDS: String(drainSec) });
    procs.push(a);
    const b = await startNode('drain-b', redis.url);
    procs.push(b);
    await Promise.all(workers.map((w, i) => w.call('init', { host: '127.0.0.1', port: a.port, tokenIn: 'header', localPorts: localPortRange(i, nWorkers) })));
    await connectAll(workers, a, D, 180_000);
    const spec = { prefix: 'bench:drain:', perConn: K, total: pool };
    const subRes = await Promise.all(workers.map((w) => w.call('subscribeAll', { spec, timeoutMs: 60_000 }, 120_000)));
    const subFailed = subRes.reduce((x, r) => x + r.failed, 0);
    if (subFailed > 0) throw new Error(`${subFailed} subscribes on A failed: ${JSON.stringify(subRes.map((r) => r.errors))}`);
    await Promise.all(workers.map((w) => w.call('armReconnect', { host: '127.0.0.1', port: b.port, tokenIn: 'header', spec, timeoutMs: 30_000, retries: 3 })));

    await nodeMetrics(b); // resets the event-loop lag window
    const ready = watchReady(b);
    const pub = keepPublishing(b, num(o['publish-rate'], 100));
    await sleepMs(500);
    const linesBefore = b.log.count;
    const kinds0 = new Map(b.log.kinds);
    const tTerm = nowMs();
    const aExit = a.stop('SIGTERM', (drainSec + 30) * 1000);
    // Every client is back on B with all its channels, or the guard ends the wait.
    const guard = tTerm + (drainSec + 60) * 1000;
    let stats;
    for (;;) {
      stats = await Promise.all(workers.map((w) => w.call('reconnectStats')));
      const done = stats.reduce((x, s) => x + s.resubscribed + s.failed, 0);
      if (done >= D || nowMs() > guard) break;
      await sleepMs(100);
    }
    const tDone = nowMs();
    await aExit;
    await sleepMs(1000);
    const readySt = await ready.stop();
    const pubSt = await pub.stop();
    const sum = (k) => stats.reduce((x, s) => x + (s[k] ?? 0), 0);
    const firstClose = Math.min(...stats.map((s) => s.firstCloseMs || Infinity));
    const lastClose = Math.max(...stats.map((s) => s.lastCloseMs || 0));
    const lastDone = Math.max(...stats.map((s) => s.lastDoneMs || 0));
    const back = stats.flatMap((s) => s.backMs ?? []).sort((x, y) => x - y);
    const pct = (q) => (back.length > 0 ? back[Math.min(back.length - 1, Math.floor(q * back.length))] / 1000 : NaN);
    const channelsOnB = await info.channels();
    const bMetrics = await nodeMetrics(b);
    if (!b.alive) throw new Error(`node B exited: ${b.tail.join('\n  ')}`);
    return {
      ok: true,
      connections: D,
      perConn: K,
      pool,
      drainSeconds: drainSec,
      closed: sum('closed'),
      reconnected: sum('reconnected'),
      resubscribed: sum('resubscribed'),
      failed: sum('failed'),
      retried: sum('retried'),
      errors: stats.reduce((x, s) => merge(x, s.errors), {}),
      closeCodes: stats.reduce((x, s) => merge(x, s.closeCodes), {}),
      firstCloseSec: (firstClose - tTerm) / 1000,
      lastCloseSec: (lastClose - tTerm) / 1000,
      backSec: { p50: pct(0.5), p99: pct(0.99), max: back.length > 0 ? back[back.length - 1] / 1000 : NaN },
      lastResubscribedSec: (lastDone - tTerm) / 1000,
      waitedSec: (tDone - tTerm) / 1000,
      bNotReadyPolls: readySt.notReady,
      bNoAnswerPolls: readySt.noAnswer,
      bPublishesRefused: pubSt.refused,
      bLogLines: b.log.count - linesBefore,
      bLineKinds: kindsSince(b.log, kinds0).slice(0, 8),
      bMetrics,
      channelsInRedis: channelsOnB,
      readyz: readySt,
      publisher: pubSt,
    };
  } finally {
    info.close();
    await stopWorkers(workers);
    for (const p of procs.reverse()) await p.stop().catch(() => undefined);
  }
}

// ---- report -----------------------------------------------------------------------

const fmtLag = (m) => (m && Number.isFinite(m.lagMaxSec) ? `${(m.lagMaxSec * 1000).toFixed(0)} ms` : 'n/a');

function printChurn(r) {
  if (!r.ok) return `  failed: ${r.error}`;
  const s = r.subscribe;
  const d = r.drop;
  return [
    `  subscribe: ${s.ok} of ${r.channels} confirmed (${s.failed} refused${s.failed ? ` ${JSON.stringify(s.errors)}` : ''}) in ${s.seconds.toFixed(2)} s = ${Math.round(s.perSec)} subscribes/s into Redis; ` +
      `${s.failed ? `refused ones subscribed again 4 connections at a time: ${s.topUpOk} ok, ${s.topUpFailed} not; ` : ''}` +
      `${s.heldInRedis} channels held in Redis; /readyz 503 on ${s.notReadyPolls} polls, no answer within 2 s on ${s.noAnswerPolls}; ${s.publishesRefused} publishes refused; ${s.lines} log lines`,
    `    node: event-loop lag max ${fmtLag(s.metrics)}, broker publish errors ${JSON.stringify(s.metrics?.publishErrors ?? {})}, gaps ${s.metrics?.gaps}`,
    ...s.lineKinds.map(([k, n]) => `    ${String(n).padStart(6)} x ${k}`),
    `  drop of ${r.connections} connections x ${r.perConn} channels: ${d.releasedMs === undefined ? `NOT all released (${d.leftInRedis} left after 30 s)` : `all released in ${(d.releasedMs / 1000).toFixed(2)} s`}; ` +
      `/readyz 503 on ${d.notReadyPolls} of ${r.readyz.polls} polls, no answer within 2 s on ${d.noAnswerPolls}; ${d.publishesRefused} of ${r.publisher.sent} publishes refused; ${d.logLines} log lines in ${d.logWindowSec} s`,
    `    node: event-loop lag max ${fmtLag(d.metrics)}, broker publish errors (total) ${JSON.stringify(d.metrics?.publishErrors ?? {})}, gaps ${d.metrics?.gaps}`,
    ...d.lineKinds.map(([k, n]) => `    ${String(n).padStart(6)} x ${k}`),
  ].join('\n');
}

function printDrain(r) {
  if (!r.ok) return `  failed: ${r.error}`;
  return [
    `  drain of ${r.connections} connections x ${r.perConn} channels (pool ${r.pool}), PUBGATE_DRAIN_SECONDS=${r.drainSeconds}: ` +
      `${r.resubscribed} of ${r.connections} clients reconnected to B and resubscribed (${r.failed} failed, ${r.retried} retries${Object.keys(r.errors).length ? ` ${JSON.stringify(r.errors)}` : ''}); ` +
      `${r.closed} closed by A, close codes ${JSON.stringify(r.closeCodes)}`,
    `  1001s from ${r.firstCloseSec.toFixed(2)} s to ${r.lastCloseSec.toFixed(2)} s after SIGTERM, last client resubscribed at ${r.lastResubscribedSec.toFixed(2)} s; ` +
      `close to resubscribed per client p50 ${r.backSec.p50.toFixed(3)} s, p99 ${r.backSec.p99.toFixed(3)} s, max ${r.backSec.max.toFixed(3)} s; ` +
      `B: /readyz 503 on ${r.bNotReadyPolls} of ${r.readyz.polls} polls (no answer within 2 s on ${r.bNoAnswerPolls}), ${r.bPublishesRefused} of ${r.publisher.sent} publishes refused, ${r.bLogLines} log lines`,
    `    B: event-loop lag max ${fmtLag(r.bMetrics)}, broker publish errors ${JSON.stringify(r.bMetrics?.publishErrors ?? {})}, gaps ${r.bMetrics?.gaps}`,
    ...r.bLineKinds.map(([k, n]) => `    ${String(n).padStart(6)} x ${k}`),
  ].join('\n');
}

process.stdout.write(`pubgate churn bench: ${nproc} CPUs, runner node ${process.version}, pubgate ${o['pubgate-main']} on ${o['pubgate-node']}, ` +
  `${pin ? `taskset: servers ${o['server-cpus']}, clients ${o['client-cpus']}` : 'no CPU pinning'}, open-files limit ${nofile}\n`);
const results = [];
for (const name of scenarios) {
  for (let run = 1; run <= num(o.runs, 1); run++) {
    const waitSec = num(o['quiet-wait'], 5);
    const idle = waitSec > 0 ? await waitQuiet(Object.keys(os.cpus()).map(String), waitSec * 1000) : [];
    process.stderr.write(`[${name}] run ${run} (idle before: ${idle.map((x) => `${Math.round(x * 100)}%`).join(' ') || 'n/a'}) ...\n`);
    let r;
    try {
      r = name === 'churn' ? await runChurn() : await runDrain();
    } catch (e) {
      r = { ok: false, error: String(e?.message ?? e) };
    }
    r.idleBefore = idle;
    results.push({ name, run, r });
    process.stdout.write(`${name} run ${run}:\n${name === 'churn' ? printChurn(r) : printDrain(r)}\n`);
  }
}
if (o.json) {
  writeFileSync(o.json, JSON.stringify({ machine: { nproc, node: process.version, pin, pubgateMain: o['pubgate-main'], pubgateNode: o['pubgate-node'] }, results }, null, 2));
  process.stdout.write(`figures written to ${o.json}\n`);
}
process.exit(results.every((x) => x.r.ok) ? 0 : 1);
