// The Pusher scenarios (issue 18): pubgate's Pusher protocol beside Soketi 1.6
// and beside pubgate's native protocol, on the same machine, alternated run by
// run. The legs:
//
//   pusher  pubgate (dist/main.js) with one app in PUBGATE_PUSHER_APPS;
//           Pusher clients on /app/{key}, events
//           through the Pusher HTTP API (signed POST /apps/{id}/events).
//   soketi  Soketi 1.6 from npm, installed OUTSIDE this repository (not a
//           dependency of pubgate; see docs/benchmarks.md for the install),
//           found through --soketi-dir; the same Pusher clients and the same
//           signed requests. Run under --soketi-node (default /usr/bin/node
//           when present): its uWS build has no binary for newer Node ABIs,
//           and falls back to a JavaScript implementation there, which the
//           run refuses rather than measure.
//   native  pubgate on its own protocol (/ws + JWT, POST /v1/publish): the
//           reference for what the Pusher layer costs.
//
// Per run and leg, one server process on the server CPUs:
//   1. 100 connections per client process, subscribed, then dropped (warm-up);
//      after --settle-before s, a full GC of the server (through its V8
//      inspector on a loopback port, for Soketi as for pubgate), then its
//      VmRSS and V8 heap are the "before" figures.
//   2. --subscribers connections (default 2000), each subscribed to the one
//      channel `bench`; connect+subscribe rate and server CPU per connection.
//   3. After --settle s idle, a full GC again, then VmRSS and V8 heap:
//      (after − before) ÷ connections is the memory per idle (subscribed)
//      connection. The GC takes out what neither server keeps (garbage of the
//      handshakes, V8's young generation grown during the burst), which
//      otherwise decides a figure as much as what a connection keeps.
//   4. (pusher-fanout) publishing as fast as accepted (bounded in flight and by
//      a window of undelivered messages, as the fanout scenario), warm-up then
//      --duration s measured: deliveries/s and server CPU per delivery.
// pusher-connections is steps 1–3 alone, by default with 10 000 connections.
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from './presence.mjs';
import { coreBusy, coreTimes, freePort, procCpuNs, procCpuSec, procRssKb, sleepMs, splitCores, startProcess } from './proc.mjs';
import { createPublisher, makeData } from './publisher.mjs';
import { signedPath } from './pusher-client.mjs';
import { fmtNum, median, range } from './stats.mjs';
import { API_KEY, ROOT, SECRET, cleanEnv, inspectMemory, startTopology } from './targets.mjs';
import { forkWorkers, localPortRange, shares, stopWorkers } from './workers.mjs';
import { nowMs } from './ws-client.mjs';

export const PUSHER_SCENARIOS = ['pusher-fanout', 'pusher-connections'];
export const PUSHER_LEGS = ['pusher', 'soketi', 'native'];
/** The one app both Pusher servers are given. */
export const PUSHER_APP = { id: 'bench-app', key: 'bench-key', secret: 'bench-secret-0123456789abcdef' };
/** Where --soketi-dir points by default: a directory soketi-bench beside this checkout. */
export const DEFAULT_SOKETI_DIR = path.resolve(ROOT, '../soketi-bench');
export const PEER_WORKER = fileURLToPath(new URL('./peer-worker.mjs', import.meta.url));
const CHANNEL = 'bench';
const EVENT = 'bench';
const SOKETI_ENTRY = 'node_modules/@soketi/soketi/bin/server.js';

/** Why the soketi leg cannot run (no install at `dir`), or undefined when it can. */
export function soketiMissing(dir) {
  if (existsSync(`${dir}/${SOKETI_ENTRY}`)) return undefined;
  return `no Soketi at ${dir} (${SOKETI_ENTRY} is missing): install it there as docs/benchmarks.md says, or pass --soketi-dir`;
}

/** The Pusher HTTP API body of one event on `channel` with `dataJson` (JSON text, sent as a string, as the libraries do). */
export function pusherEventBody(channel, dataJson) {
  return `{"name":"${EVENT}","channels":["${channel}"],"data":${JSON.stringify(dataJson)}}`;
}

function httpStatus(port, path) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.setTimeout(1000, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/**
 * Soketi, one process, the bench app, its metrics server on another loopback
 * port (it always listens), its V8 inspector on a third; `extraEnv` adds
 * SOKETI_* settings (the peer target's channels scenario raises the batch limit).
 */
export async function startSoketi(ctx, extraEnv = {}) {
  const port = await freePort();
  const metricsPort = await freePort();
  const inspectPort = await freePort();
  const env = {
    ...cleanEnv(),
    SOKETI_HOST: '127.0.0.1',
    SOKETI_PORT: String(port),
    SOKETI_METRICS_HOST: '127.0.0.1',
    SOKETI_METRICS_SERVER_PORT: String(metricsPort),
    SOKETI_DEFAULT_APP_ID: PUSHER_APP.id,
    SOKETI_DEFAULT_APP_KEY: PUSHER_APP.key,
    SOKETI_DEFAULT_APP_SECRET: PUSHER_APP.secret,
    SOKETI_DEBUG: '0',
    ...extraEnv,
  };
  const p = await startProcess({ name: 'soketi', cmd: ctx.soketiNode, args: [`--inspect=127.0.0.1:${inspectPort}`, `${ctx.soketiDir}/${SOKETI_ENTRY}`, 'start'], env, cpus: ctx.serverCpus, readyPorts: [port, metricsPort, inspectPort] });
  const stop = () => p.stop('SIGKILL');
  const deadline = Date.now() + 15_000;
  while ((await httpStatus(port, '/ready')) !== 200) {
    if (Date.now() > deadline || !p.alive) {
      await stop();
      throw new Error(`soketi: /ready did not answer 200 within 15 s:\n  ${p.tail.join('\n  ')}`);
    }
    await sleepMs(50);
  }
  // uws-js-unofficial loads a JavaScript fallback when it has no binary for this Node: not what is measured.
  if (p.tail.some((l) => /Falling back to a NodeJS implementation/.test(l))) {
    await stop();
    throw new Error(`soketi under ${ctx.soketiNode} runs uWS's JavaScript fallback (no native binary for that Node's ABI): pass --soketi-node with a Node 20 (or 18)`);
  }
  const procs = [Object.assign(p, { port, inspectPort })];
  const assertAlive = () => {
    if (!p.alive) throw new Error(`soketi exited during the run (${p.exitCode}); its last output:\n  ${p.tail.slice(-4).join('\n  ')}`);
  };
  return { nodes: procs, procs, stop, assertAlive };
}

function startServer(leg, ctx) {
  if (leg === 'soketi') return startSoketi(ctx);
  const env = leg === 'pusher'
    ? { ...ctx.pubgateEnv, PUBGATE_PUSHER_APPS: `${PUSHER_APP.id}:${PUSHER_APP.key}:${PUSHER_APP.secret}` }
    : ctx.pubgateEnv;
  return startTopology('pubgate', { cluster: false, cpus: ctx.serverCpus, profileDir: ctx.profileDir, pubgateMain: ctx.pubgateMain, env, inspect: true });
}

/**
 * sc: { name, subscribers, publish (false: pusher-connections), durationSec, warmupSec, size,
 *       concurrency, window, workers, connectConcurrency, settleSec, settleBeforeSec }
 * ctx: as in delivery.mjs, plus soketiDir, soketiNode.
 */
export async function runPusher(sc, leg, ctx) {
  const topo = await startServer(leg, ctx);
  const srv = topo.nodes[0];
  const pusherProto = leg !== 'native';
  const nWorkers = sc.workers || Math.max(2, Math.ceil(sc.subscribers / 5000));
  let pump = () => undefined;
  const workers = forkWorkers(nWorkers, () => pump(), pusherProto ? PEER_WORKER : undefined);
  const pub = createPublisher({ port: srv.port, apiKey: pusherProto ? undefined : API_KEY, concurrency: sc.concurrency });
  try {
    await Promise.all(workers.map((w, i) => w.call('init', {
      host: '127.0.0.1', port: srv.port, key: PUSHER_APP.key, tokenIn: ctx.tokenIn, localPorts: localPortRange(i, nWorkers),
    })));
    const subscribe = { kind: 'one', name: CHANNEL };
    // Warm-up: the handshake and subscribe paths compiled, the allocator's first pages taken.
    await Promise.all(workers.map((w, i) => w.call('connect', {
      count: 100, base: 1_000_000 + i * 100, secret: SECRET, concurrency: 16, timeoutMs: 10_000, phaseTimeoutMs: 30_000, subscribe,
    }, 60_000)));
    await Promise.all(workers.map((w) => w.call('drop')));
    await sleepMs(sc.settleBeforeSec * 1000);

    // After a full GC in the server (either server: the inspector), its VmRSS and its own view of its heap.
    const mem0 = await inspectMemory(srv.inspectPort);
    if (!mem0) throw new Error(`${leg}: no full GC and heap reading through the inspector on port ${srv.inspectPort}`);
    const rss0 = procRssKb(srv.pid);
    const cpu0 = procCpuNs(srv.pid);
    const share = shares(sc.subscribers, nWorkers);
    let base = 0;
    const connected = await Promise.all(workers.map((w, i) => {
      const b = base;
      base += share[i];
      return w.call('connect', {
        count: share[i], base: b, secret: SECRET, concurrency: sc.connectConcurrency, timeoutMs: 15_000, phaseTimeoutMs: 90_000, subscribe, retries: 3,
      }, 120_000);
    }));
    const connectCpuSec = (procCpuNs(srv.pid) - cpu0) / 1e9;
    const subscribed = connected.reduce((a, r) => a + r.ok, 0);
    const setupErrors = {};
    for (const r of connected) for (const [k, v] of Object.entries(r.errors)) setupErrors[k] = (setupErrors[k] ?? 0) + v;
    if (subscribed < sc.subscribers) {
      throw new Error(`only ${subscribed} of ${sc.subscribers} subscribers connected: ${JSON.stringify(setupErrors)} ${connected.map((r) => JSON.stringify({ ...r.socketErrors, closeFrames: r.closeCodes })).join(' ')}`);
    }
    const connectSec = (Math.max(...connected.map((r) => r.t1)) - Math.min(...connected.map((r) => r.t0))) / 1000;
    await sleepMs(sc.settleSec * 1000);
    const mem1 = await inspectMemory(srv.inspectPort);
    if (!mem1) throw new Error(`${leg}: no full GC and heap reading through the inspector on port ${srv.inspectPort}`);
    const rss1 = procRssKb(srv.pid);
    topo.assertAlive();
    const per = (k) => (mem1[k] - mem0[k]) / 1024 / subscribed;
    const memPerConn = { heapTotal: per('heapTotal'), heapUsed: per('heapUsed'), newTotal: per('newTotal'), external: per('external') };
    const out = {
      ok: true,
      subscribers: subscribed,
      setupRetries: connected.reduce((a, r) => a + r.retried, 0),
      setupErrors,
      connectsPerSec: subscribed / connectSec,
      usPerConnect: (connectCpuSec * 1e6) / subscribed,
      rss0Kb: rss0,
      rss1Kb: rss1,
      kbPerConn: (rss1 - rss0) / subscribed,
      heapKbPerConn: memPerConn.heapUsed,
      memPerConn,
    };
    if (!sc.publish) {
      const still = await Promise.all(workers.map((w) => w.call('count', { latency: false }).then(() => w.call('stats'))));
      return { ...out, open: still.reduce((a, s) => a + s.open, 0) };
    }

    const data = makeData(sc.size);
    const app = PUSHER_APP;
    const eventsPath = `/apps/${app.id}/events`;
    const received = () => workers.reduce((a, w) => a + w.progress, 0);
    /** One publish request: the Pusher HTTP API (signed per request, as a server library does) or /v1/publish. */
    const send = (st) => {
      const d = data(nowMs(), CHANNEL);
      let req;
      if (pusherProto) {
        const body = pusherEventBody(CHANNEL, d);
        req = pub.post(signedPath(app, 'POST', eventsPath, body), body);
      } else req = pub.post('/v1/publish', `{"channel":"${CHANNEL}","data":${d}}`);
      st.sentDeliveries += subscribed;
      st.requests++;
      return req.then((r) => {
        if (r.status === 200) {
          st.accepted++;
          st.expected += subscribed;
        } else {
          st.sentDeliveries -= subscribed;
          const k = `${r.status} ${r.text.slice(0, 80)}`;
          st.errors[k] = (st.errors[k] ?? 0) + 1;
        }
      });
    };
    /** Publishes for `durationMs`, at most `concurrency` requests in flight and `window` messages per subscriber undelivered. */
    const publishPhase = async (durationMs) => {
      const st = { accepted: 0, expected: 0, sentDeliveries: 0, requests: 0, errors: {} };
      const windowDeliveries = sc.window * subscribed;
      const rcv0 = received();
      const t0 = nowMs();
      const end = t0 + durationMs;
      await new Promise((resolve) => {
        let stopped = false;
        setTimeout(() => {
          stopped = true;
          if (pub.inflight === 0) resolve();
        }, durationMs);
        pump = () => {
          if (stopped) return;
          while (pub.inflight < sc.concurrency && st.sentDeliveries - (received() - rcv0) < windowDeliveries && nowMs() < end) {
            send(st).then(() => {
              if (stopped && pub.inflight === 0) resolve();
              else pump();
            });
          }
        };
        pump();
      });
      pump = () => undefined;
      st.publishMs = nowMs() - t0;
      return st;
    };
    /** Waits until `expected` events arrived, or nothing arrived for `stallMs`, or `maxMs` passed. */
    const drain = async (expected, stallMs = 2000, maxMs = 15_000) => {
      const t0 = Date.now();
      let last = received();
      let lastChange = Date.now();
      while (received() < expected && Date.now() - t0 < maxMs && Date.now() - lastChange < stallMs) {
        await sleepMs(20);
        const r = received();
        if (r !== last) {
          last = r;
          lastChange = Date.now();
        }
      }
    };

    await Promise.all(workers.map((w) => w.call('count', { latency: false })));
    const warm = await publishPhase(sc.warmupSec * 1000);
    await drain(warm.expected, 5000, 30_000);
    const warmStats = await Promise.all(workers.map((w) => w.call('stats')));
    const warmupMissing = warm.expected - warmStats.reduce((a, x) => a + x.messages, 0);

    await Promise.all(workers.map((w) => w.call('count', { latency: false })));
    for (const w of workers) w.progress = 0;
    const srv0 = procCpuSec(srv.pid);
    const cores0 = coreTimes();
    const main0 = process.cpuUsage();
    const tStart = nowMs();
    const st = await publishPhase(sc.durationSec * 1000);
    await drain(st.expected);
    const stats = await Promise.all(workers.map((w) => w.call('stats', {}, 60_000)));
    const cores1 = coreTimes();
    const serverCpuSec = procCpuSec(srv.pid) - srv0;
    const mainCpu = process.cpuUsage(main0);
    topo.assertAlive();

    const deliveries = stats.reduce((a, s) => a + s.messages, 0);
    const tEnd = Math.max(tStart + st.publishMs, ...stats.map((s) => s.lastRecvMs || 0));
    const wallSec = (tEnd - tStart) / 1000;
    const clientCpuSec = (stats.reduce((a, s) => a + s.cpuMs, 0) + (mainCpu.user + mainCpu.system) / 1000) / 1000;
    const cores = coreBusy(cores0, cores1);
    const serverCoreFrac = serverCpuSec / wallSec / ctx.serverCores;
    const clientCoreFrac = clientCpuSec / wallSec / ctx.clientCores;
    const closeCodes = {};
    const clientErrors = {};
    for (const s of stats) {
      for (const [k, v] of Object.entries(s.closeCodes)) closeCodes[k] = (closeCodes[k] ?? 0) + v;
      for (const [k, v] of Object.entries(s.errors ?? {})) clientErrors[k] = (clientErrors[k] ?? 0) + v;
    }
    return {
      ...out,
      deliveries,
      perSec: deliveries / wallSec,
      published: st.accepted,
      requests: st.requests,
      expected: st.expected,
      lost: st.expected - deliveries,
      pubErrors: st.errors,
      closed: stats.reduce((a, s) => a + s.closedOpen, 0),
      closeCodes,
      clientErrors,
      wallSec,
      serverCpuSec,
      serverCoreFrac,
      usPerDelivery: deliveries > 0 ? (serverCpuSec * 1e6) / deliveries : NaN,
      clientUsPerDelivery: deliveries > 0 ? (clientCpuSec * 1e6) / deliveries : NaN,
      clientCoreFrac,
      serverCores: splitCores(cores, ctx.serverCpuList, serverCoreFrac),
      clientCores: splitCores(cores, ctx.clientCpuList, clientCoreFrac),
      warmupMissing,
    };
  } finally {
    pump = () => undefined;
    pub.close();
    await stopWorkers(workers);
    await topo.stop();
  }
}

export function pusherShort(r, p) {
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  const mem = `${r.kbPerConn.toFixed(2)} KiB RSS/conn, ${r.heapKbPerConn.toFixed(2)} KiB heap/conn (after a full GC)`;
  if (!p.publish) return `${Math.round(r.connectsPerSec)} connects+subscribes/s, ${mem}`;
  return `${Math.round(r.perSec)} deliveries/s, ${r.usPerDelivery.toFixed(3)} µs/delivery, lost ${r.lost}, ${mem}`;
}

const pct = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a');
const coreCell = (split, own) => (split ? `${pct(split.busy)} (own ${Math.round(split.own * 100)} irq ${Math.round(split.irq * 100)} oth ${Math.round(split.other * 100)})` : pct(own));

/** [label, getter, digits, higher is better]: the figures summarised per leg. */
function figures(p) {
  const f = [
    ['KiB RSS/idle conn', (r) => r.kbPerConn, 2, false],
    ['KiB heap/idle conn', (r) => r.heapKbPerConn, 2, false],
    ['connects+subs/s', (r) => r.connectsPerSec, 0, true],
    ['server µs/connect', (r) => r.usPerConnect, 1, false],
  ];
  if (!p.publish) return f;
  return [
    ['deliveries/s', (r) => r.perSec, 0, true],
    ['server µs/delivery', (r) => r.usPerDelivery, 3, false],
    ...f,
  ];
}

/**
 * Medians [min–max] per leg, the ratios pusher ÷ soketi and pusher ÷ native
 * (of the medians, and per run), and the issue's targets, checked on the
 * medians: ≥ 5× Soketi's deliveries/s, ≤ 1/4 of its server CPU per delivery,
 * ≤ 1/5 of its memory per idle connection. Pure: runs [{ run, target, r }].
 */
export function pusherSummary(p, runs) {
  const legs = [...new Set(runs.map((x) => x.target))];
  const ok = (t) => runs.filter((x) => x.target === t && x.r.ok).map((x) => x.r);
  const out = { legs: {}, ratios: {}, targets: [] };
  for (const [label, get] of figures(p)) {
    for (const t of legs) {
      const v = ok(t).map(get);
      out.legs[t] ??= {};
      out.legs[t][label] = { median: median(v), min: range(v)[0], max: range(v)[1], n: v.length };
    }
    for (const other of ['soketi', 'native']) {
      if (!legs.includes('pusher') || !legs.includes(other)) continue;
      const perRun = [];
      for (const x of runs.filter((y) => y.target === 'pusher' && y.r.ok)) {
        const y = runs.find((z) => z.target === other && z.run === x.run && z.r.ok);
        if (y) perRun.push(get(x.r) / get(y.r));
      }
      out.ratios[`${other} ${label}`] = { ofMedians: out.legs.pusher[label].median / out.legs[other][label].median, perRun };
    }
  }
  const ratio = (label) => out.ratios[`soketi ${label}`]?.ofMedians;
  const check = (label, ok, what) => {
    const v = ratio(label);
    // A figure at or below 0 (RSS noise over too few connections) decides nothing.
    const positive = out.legs.pusher?.[label]?.median > 0 && out.legs.soketi?.[label]?.median > 0;
    if (Number.isFinite(v)) out.targets.push({ what, ratio: v, met: positive ? ok(v) : undefined });
  };
  if (p.publish) {
    check('deliveries/s', (v) => v >= 5, '≥ 5× Soketi\'s deliveries/s');
    check('server µs/delivery', (v) => v <= 0.25, '≤ 1/4 of Soketi\'s server CPU per delivery');
  }
  check('KiB RSS/idle conn', (v) => v <= 0.2, '≤ 1/5 of Soketi\'s memory per idle connection');
  return out;
}

export function formatPusher(title, p, runs) {
  const header = p.publish
    ? ['run', 'target', 'deliveries/s', 'msgs published', 'lost', 'srv µs/delivery', 'KiB/idle conn', 'RSS before→after MiB', 'conn+sub/s', 'server core', 'client core']
    : ['run', 'target', 'conns', 'conn+sub/s', 'srv µs/conn', 'RSS before→after MiB', 'KiB RSS/idle conn', 'KiB heap/idle conn', 'open after'];
  const rows = runs.map((x) => {
    const r = x.r;
    if (!r.ok) return [x.run, x.target, 'error', r.error.split('\n')[0], ...header.slice(4).map(() => '')];
    const rss = `${fmtNum(r.rss0Kb / 1024, 1)}→${fmtNum(r.rss1Kb / 1024, 1)}`;
    if (!p.publish) return [x.run, x.target, fmtNum(r.subscribers), fmtNum(r.connectsPerSec), fmtNum(r.usPerConnect, 1), rss, fmtNum(r.kbPerConn, 2), fmtNum(r.heapKbPerConn, 2), fmtNum(r.open)];
    return [
      x.run, x.target, fmtNum(r.perSec), fmtNum(r.published), `${fmtNum(r.lost)}${r.closed ? ` (${r.closed} closed)` : ''}`, fmtNum(r.usPerDelivery, 3),
      fmtNum(r.kbPerConn, 2), rss, fmtNum(r.connectsPerSec), coreCell(r.serverCores, r.serverCoreFrac), coreCell(r.clientCores, r.clientCoreFrac),
    ];
  });
  const sum = pusherSummary(p, runs);
  const lines = [`\n== ${title}`, table(header, rows), '', 'summary: median [min–max] over the successful runs'];
  for (const [label, , digits] of figures(p)) {
    for (const [t, f] of Object.entries(sum.legs)) {
      const m = f[label];
      if (m.n > 0) lines.push(`  ${t.padEnd(7)} ${label.padEnd(19)} ${fmtNum(m.median, digits).padStart(12)}  [${fmtNum(m.min, digits)}–${fmtNum(m.max, digits)}]  (${m.n} runs)`);
    }
    for (const other of ['soketi', 'native']) {
      const q = sum.ratios[`${other} ${label}`];
      if (q && Number.isFinite(q.ofMedians)) lines.push(`  ratio pusher/${other} ${label}: ${fmtNum(q.ofMedians, 3)}×  (per run: ${q.perRun.map((v) => fmtNum(v, 3)).join(', ')})`);
    }
  }
  for (const x of runs.filter((y) => !y.r.ok)) lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
  for (const x of runs.filter((y) => y.r.ok && y.r.warmupMissing > 0)) lines.push(`  run ${x.run} ${x.target}: ${x.r.warmupMissing} warm-up deliveries had not arrived when counting started`);
  for (const x of runs.filter((y) => y.r.ok && y.r.setupRetries)) lines.push(`  run ${x.run} ${x.target}: ${x.r.setupRetries} connections retried while connecting: ${JSON.stringify(x.r.setupErrors)}`);
  for (const x of runs.filter((y) => y.r.ok && y.r.memPerConn)) {
    const m = x.r.memPerConn;
    lines.push(`  run ${x.run} ${x.target} per connection (KiB, after a full GC, from the process): RSS ${fmtNum(x.r.kbPerConn, 2)} = V8 heap committed ${fmtNum(m.heapTotal, 2)} ` +
      `(of which the young generation resized ${fmtNum(m.newTotal, 2)}; used ${fmtNum(m.heapUsed, 2)}) + external ${fmtNum(m.external, 2)} + native/other ${fmtNum(x.r.kbPerConn - m.heapTotal - m.external, 2)}`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.pubErrors && Object.keys(y.r.pubErrors).length)) lines.push(`  run ${x.run} ${x.target} publish errors: ${JSON.stringify(x.r.pubErrors)}`);
  for (const x of runs.filter((y) => y.r.ok && y.r.clientErrors && Object.keys(y.r.clientErrors).length)) lines.push(`  run ${x.run} ${x.target} client errors: ${JSON.stringify(x.r.clientErrors)}`);
  for (const x of runs.filter((y) => y.r.ok && y.r.closeCodes && Object.keys(y.r.closeCodes).length)) lines.push(`  run ${x.run} ${x.target} close frames received: ${JSON.stringify(x.r.closeCodes)}`);
  if (sum.targets.length) {
    lines.push('  issue 18 targets (ratios of medians, pusher ÷ soketi):');
    for (const t of sum.targets) {
      const verdict = t.met === undefined ? 'UNDECIDED (a median is not positive: RSS noise, use more connections)' : t.met ? 'MET   ' : 'MISSED';
      lines.push(`    ${verdict} ${t.what}: ${fmtNum(t.ratio, 3)}×`);
    }
  }
  return { text: lines.join('\n'), summary: sum };
}
