// The presence scenarios (issue 13): what presence costs a subscribe, how fast
// join/leave frames fan out, and how a 10 000-member channel answers its
// presence reads and what it takes in Redis. pubgate only (the ws baseline
// has no presence); the legs of a run are the brokers (Redis: redis-server and
// the node(s) on the server CPUs; embedded: one node), alternated run by run.
//
//   presence-subscribe  C connections (distinct users) subscribe at once, then
//       unsubscribe at once, each to its own channel, on a plain channel, a
//       presence channel and a presence + joinLeave channel, in turn within
//       each round (the order rotates round by round), so the three are
//       measured in the same server process minutes apart. Two layouts:
//       "held", every channel already held on the node by another connection
//       (a holder: no broker SUBSCRIBE; on joinLeave channels each subscribe
//       sends one join, to the holder), and "fresh", nobody else on the channel
//       (the subscribe also takes the broker subscription, the unsubscribe
//       releases it). Server CPU (the node, and redis-server) per subscribe and
//       per unsubscribe, from /proc schedstat (ns) between the first frame and
//       the moment the server processes went idle. A phase during which a
//       presence lease tick ran (its renew/resync operations are in the node's
//       /metrics) is measured again: a tick renews every held presence channel
//       and is not the subscribe's cost.
//   presence-fanout  S subscribers (distinct users) on one joinLeave channel.
//       Repetitions, one at a time: a new user's connection subscribes (join
//       to all S), then unsubscribes (leave to all S). Per repetition: from the
//       subscribe frame sent to the last of the S joins received (and the
//       first), and the same for the leave; p50/p99 over the repetitions.
//       Server CPU in blocks of --reps repetitions, three kinds alternated:
//       join+leave on the joinLeave channel, the same subscribe+unsubscribe on
//       a presence channel without joinLeave (same S subscribers, no frames),
//       and one published message to the joinLeave channel's S subscribers:
//       (joinLeave block − presence block) ÷ deliveries is the CPU per join or
//       leave delivered, beside the CPU per message delivered.
//   presence-large  N connections (distinct users, each with an `info` claim
//       {"name":"User <n>"}) on one presence channel, over two nodes with
//       Redis (connections alternate between them): presence_stats (frame and
//       HTTP) on it and on a 10-member channel, and `presence` (frame and HTTP,
//       at most PUBGATE_PRESENCE_MAX_MEMBERS = 1000 members), called one at a
//       time in turn, p50/p99; Redis used_memory before and after the N
//       entries, and MEMORY USAGE of every presence key, per entry.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { coreBusy, coreTimes, procCpuNs, sleepMs, splitCores } from './proc.mjs';
import { createPublisher } from './publisher.mjs';
import { fmtNum, median } from './stats.mjs';
import { API_KEY, SECRET, startTopology } from './targets.mjs';
import { forkWorkers, localPortRange, shares, stopWorkers } from './workers.mjs';
import { nowMs } from './ws-client.mjs';

export const PRESENCE_SCENARIOS = ['presence-subscribe', 'presence-fanout', 'presence-large'];

/** The namespaces of every presence scenario: benchp:* presence, benchjl:* presence with join/leave; bench:* plain. */
export const PRESENCE_NAMESPACES = JSON.stringify([
  { pattern: 'benchp:*', presence: true },
  { pattern: 'benchjl:*', presence: true, joinLeave: true },
]);

const KINDS = [
  { kind: 'plain', prefix: 'bench' },
  { kind: 'presence', prefix: 'benchp' },
  { kind: 'joinLeave', prefix: 'benchjl' },
];
/** Channels a holder connection holds (PUBGATE_MAX_SUBSCRIPTIONS' default). */
const PER_HOLDER = 100;

// ---- small helpers ---------------------------------------------------------

/** Exact quantile of a list (nearest rank), NaN when empty. */
export function quantile(xs, q) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))];
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const cpuNs = (procs) => procs.map((p) => procCpuNs(p.pid));

/**
 * Waits until the server processes are idle (together < 1 ms of CPU in a 50 ms
 * window; at most `maxMs`): work a phase set off after its last reply (a
 * presence removal, join frames) is part of it. Resolves with their CPU ns then.
 */
async function settledCpu(procs, maxMs = 3000) {
  const deadline = Date.now() + maxMs;
  let a = cpuNs(procs);
  for (;;) {
    await sleepMs(50);
    const b = cpuNs(procs);
    if (sum(b) - sum(a) < 1e6 || Date.now() > deadline) return b;
    a = b;
  }
}

/**
 * The servers' own CPU while idle, ns per ms for each process (heartbeat
 * timers and the like): the median of three 500 ms windows during which no
 * presence lease tick ran. Subtracted from every measured window.
 */
export async function idleRate(procs, nodes) {
  const samples = [];
  for (let i = 0; i < 10 && samples.length < 3; i++) {
    const k0 = await ticksOf(nodes);
    const a = cpuNs(procs);
    const t0 = nowMs();
    await sleepMs(500);
    const b = cpuNs(procs);
    const t1 = nowMs();
    if ((await ticksOf(nodes)) === k0) samples.push(b.map((x, j) => (x - a[j]) / (t1 - t0)));
  }
  return procs.map((_, j) => median(samples.map((x) => x[j])) || 0);
}

/**
 * A CPU measure of the server processes, started once they are idle; end()
 * waits until they are idle again and answers each one's ns over the window,
 * less its idle rate (idleRate) for the window's length.
 */
export async function cpuWindow(procs, idle) {
  const a = await settledCpu(procs);
  const t0 = nowMs();
  return {
    async end() {
      const b = await settledCpu(procs);
      const ms = nowMs() - t0;
      return { ns: b.map((x, j) => Math.max(0, x - a[j] - idle[j] * ms)), ms };
    },
  };
}

function getText(port, path, agent, headers = {}) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, text: e.message }));
  });
}

const ticksOf = async (nodes) => sum(await Promise.all(nodes.map(tickOps)));

/** Presence lease work the node has done so far (renew + resync operations, from its /metrics). */
async function tickOps(node) {
  if (!node.adminPort) return 0;
  const { text } = await getText(node.adminPort, '/metrics', undefined);
  let n = 0;
  for (const m of text.matchAll(/^pubgate_presence_operations_total\{([^}]*)\} (\S+)$/gm)) {
    if (/op="(renew|resync)"/.test(m[1])) n += Number(m[2]);
  }
  return n;
}

function redisCli(port, args) {
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

function usedMemory(port) {
  return Number(/^used_memory:(\d+)/m.exec(redisCli(port, ['INFO', 'memory']))?.[1] ?? NaN);
}

/** Every key with its exact MEMORY USAGE (SAMPLES 0) and type, grouped by the part before the hash tag. */
function presenceKeyMemory(port) {
  const keys = redisCli(port, ['--scan']).split('\n').filter(Boolean);
  const byKind = {};
  let total = 0;
  for (const k of keys) {
    const bytes = Number(redisCli(port, ['MEMORY', 'USAGE', k, 'SAMPLES', '0']).trim());
    const type = redisCli(port, ['TYPE', k]).trim();
    const kind = `${k.replace(/\{.*$/, '{…}')}${k.includes('}:') ? ':<node>' : ''} ${type}`;
    byKind[kind] = (byKind[kind] ?? 0) + bytes;
    total += bytes;
  }
  return { keys: keys.length, total, byKind };
}

/** Forks `n` client workers on `nodes` (worker i on node i % nodes) and initialises them. */
export async function clients(n, nodes, ctx, onProgress, trackPresence = false) {
  const workers = forkWorkers(n, onProgress);
  await Promise.all(workers.map((w, i) => w.call('init', {
    host: '127.0.0.1', port: nodes[i % nodes.length].port, tokenIn: ctx.tokenIn, localPorts: localPortRange(i, n), trackPresence,
  })));
  return workers;
}

/** Opens `count` connections of `group` (indices base…base+count−1) on `w`; throws unless all opened. */
async function open(w, group, count, base, opts = {}) {
  const r = await w.call('connect', {
    group, count, base, secret: SECRET, concurrency: 32, timeoutMs: 15_000, phaseTimeoutMs: 120_000, retries: 3, ...opts,
  }, 180_000);
  if (r.ok < count) throw new Error(`${group}: only ${r.ok} of ${count} connections opened: ${JSON.stringify({ ...r.errors, ...r.socketErrors })}`);
  return r;
}

/** Spreads `total` connections of `group` over `workers` with consecutive indices from 0. */
async function openSpread(workers, group, total, opts = {}) {
  const share = shares(total, workers.length);
  let base = 0;
  await Promise.all(workers.map((w, i) => {
    const b = base;
    base += share[i];
    return share[i] > 0 ? open(w, group, share[i], b, opts) : undefined;
  }));
}

export function checkAll(results, what) {
  const failed = sum(results.map((r) => r.failed));
  if (failed > 0) {
    const errors = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    throw new Error(`${what}: ${failed} failed: ${JSON.stringify(errors)}`);
  }
}

function topologyFor(leg, ctx, nodes = 1) {
  return startTopology('pubgate', {
    cluster: leg.broker === 'redis' && nodes === 2,
    redis: leg.broker === 'redis',
    cpus: ctx.serverCpus,
    profileDir: ctx.profileDir,
    pubgateMain: ctx.pubgateMain,
    pubgateNode: ctx.pubgateNode,
    env: { PUBGATE_NAMESPACES: PRESENCE_NAMESPACES, ...ctx.pubgateEnv },
  });
}

/**
 * A mark to measure how busy the server and client cores were from, and what
 * share of that other processes took (not the servers, not the runner and its
 * client processes).
 */
export function coreMark(procs, clientPids) {
  const own = () => ({ server: sum(cpuNs(procs)), client: sum(clientPids.map((pid) => procCpuNs(pid))) + process.cpuUsage().user * 1000 + process.cpuUsage().system * 1000 });
  const c0 = coreTimes();
  const o0 = own();
  const t0 = nowMs();
  return (ctx) => {
    const cores = coreBusy(c0, coreTimes());
    const o1 = own();
    const sec = (nowMs() - t0) / 1000;
    return {
      serverCores: splitCores(cores, ctx.serverCpuList, (o1.server - o0.server) / 1e9 / sec / ctx.serverCores),
      clientCores: splitCores(cores, ctx.clientCpuList, (o1.client - o0.client) / 1e9 / sec / ctx.clientCores),
    };
  };
}

// ---- presence-subscribe -----------------------------------------------------

/** sc: { connections, rounds, layouts, workers }; leg: { broker } */
async function runSubscribe(sc, leg, ctx) {
  const topo = await topologyFor(leg, ctx);
  const node = topo.nodes[0];
  const C = sc.connections;
  const nW = sc.workers || Math.max(2, Math.ceil(C / 5000));
  const workers = await clients(nW, topo.nodes, ctx);
  try {
    await openSpread(workers, 'subs', C);
    // Holders: every "held" channel of each kind is held by one of them (100 channels each).
    if (sc.layouts.includes('held')) {
      const holders = Math.ceil(C / PER_HOLDER);
      for (const { kind, prefix } of KINDS) {
        const g = `hold-${kind}`;
        await open(workers[0], g, holders, 0, { userPrefix: `bench-holder-${kind}-` });
        const r = await workers[0].call('subscribeAll', { group: g, spec: { prefix: `${prefix}:h:`, perConn: PER_HOLDER, total: C }, timeoutMs: 30_000 }, 60_000);
        checkAll([r], `holders of ${kind}`);
      }
    }
    const phases = [];
    let retried = 0;
    const idle = await idleRate(topo.procs, topo.nodes);
    /** One phase: every connection (un)subscribes to its channel at once; measured until the server is idle again. */
    async function phase(cmd, kind, prefix, layout) {
      const spec = { prefix: `${prefix}:${layout[0]}:`, perConn: 1, total: C };
      for (let attempt = 0; ; attempt++) {
        const ticks0 = await tickOps(node);
        const win = await cpuWindow(topo.procs, idle);
        const res = await Promise.all(workers.map((w) => w.call(cmd, { group: 'subs', spec, timeoutMs: 30_000 }, 60_000)));
        checkAll(res, `${cmd} ${kind} ${layout}`);
        const { ns } = await win.end();
        const ticks1 = await tickOps(node);
        topo.assertAlive();
        if (ticks1 !== ticks0 && attempt < 3) {
          retried++;
          // Back to where the phase started, then measure it again.
          const undo = cmd === 'subscribeAll' ? 'unsubscribeAll' : 'subscribeAll';
          checkAll(await Promise.all(workers.map((w) => w.call(undo, { group: 'subs', spec, timeoutMs: 30_000 }, 60_000))), `${undo} ${kind} ${layout}`);
          continue;
        }
        const ops = sum(res.map((r) => r.ok));
        const wallMs = Math.max(...res.map((r) => r.t1)) - Math.min(...res.map((r) => r.t0));
        return {
          ops,
          nodeUs: ns[topo.procs.indexOf(node)] / 1000 / ops,
          redisUs: topo.redis ? ns[topo.procs.indexOf(topo.redis)] / 1000 / ops : 0,
          perSec: ops / (wallMs / 1000),
          tickDuring: ticks1 !== ticks0,
        };
      }
    }
    const mark = coreMark(topo.procs, workers.map((w) => w.pid));
    const t0 = nowMs();
    for (let round = 0; round <= sc.rounds; round++) {
      // Round 0 warms up (JIT, Lua scripts loaded, buffers) and is not counted.
      for (const layout of sc.layouts) {
        for (let j = 0; j < KINDS.length; j++) {
          const { kind, prefix } = KINDS[(j + round) % KINDS.length];
          const sub = await phase('subscribeAll', kind, prefix, layout);
          const unsub = await phase('unsubscribeAll', kind, prefix, layout);
          if (round > 0) phases.push({ round, layout, kind, sub, unsub });
        }
      }
    }
    const wallSec = (nowMs() - t0) / 1000;
    const cores = mark(ctx);
    return { ok: true, phases, retried, cores, wallSec, connections: C, idleUsPerSec: sum(idle) };
  } finally {
    await stopWorkers(workers);
    await topo.stop();
  }
}

function summarizeSubscribe(runs, sc) {
  const lines = [];
  const out = {};
  for (const layout of sc.layouts) {
    lines.push(`  layout ${layout}: ${layout === 'held'
      ? 'every channel already held on the node by a holder connection (joinLeave: one join/leave frame per (un)subscribe, to the holder)'
      : 'nobody else on the channel (subscribe takes the broker subscription, unsubscribe releases it)'}`);
    const header = ['broker', 'kind', 'sub µs node', 'sub µs redis', 'sub µs total', 'unsub µs total', 'subscribes/s', 'ratio sub to plain (per round)', 'rounds'];
    const rows = [];
    for (const broker of [...new Set(runs.map((x) => x.target))]) {
      const ph = runs.filter((x) => x.target === broker && x.r.ok).flatMap((x) => x.r.phases.map((p) => ({ ...p, run: x.run }))).filter((p) => p.layout === layout);
      const tot = (p) => p.nodeUs + p.redisUs;
      for (const { kind } of KINDS) {
        const mine = ph.filter((p) => p.kind === kind);
        if (mine.length === 0) continue;
        // Ratio per round: this kind's subscribe against the plain one of the same round and run.
        const ratios = mine.map((p) => {
          const plain = ph.find((q) => q.kind === 'plain' && q.run === p.run && q.round === p.round);
          return plain ? tot(p.sub) / tot(plain.sub) : NaN;
        });
        const f = {
          subNode: median(mine.map((p) => p.sub.nodeUs)), subRedis: median(mine.map((p) => p.sub.redisUs)), sub: median(mine.map((p) => tot(p.sub))),
          unsub: median(mine.map((p) => tot(p.unsub))), unsubNode: median(mine.map((p) => p.unsub.nodeUs)), perSec: median(mine.map((p) => p.sub.perSec)),
          ratio: median(ratios), ratios, rounds: mine.length,
        };
        (out[layout] ??= {})[`${broker} ${kind}`] = f;
        rows.push([broker, kind, fmtNum(f.subNode, 1), fmtNum(f.subRedis, 1), fmtNum(f.sub, 1), fmtNum(f.unsub, 1), fmtNum(f.perSec),
          kind === 'plain' ? '1' : `${fmtNum(f.ratio, 2)}× (${fmtNum(Math.min(...ratios), 2)}–${fmtNum(Math.max(...ratios), 2)})`, f.rounds]);
      }
    }
    lines.push(table(header, rows));
  }
  for (const x of runs) {
    if (!x.r.ok) lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
    else {
      lines.push(`  run ${x.run} ${x.target}: ${x.r.retried} phases measured again (a lease tick ran during them); servers idle ${fmtNum(x.r.idleUsPerSec)} µs/s (subtracted); ` +
        `other processes took ${otherPct(x.r.cores.serverCores)} of the server core(s), ${otherPct(x.r.cores.clientCores)} of the client core(s) over the run`);
    }
  }
  return { text: lines.join('\n'), summary: out };
}

// ---- presence-fanout --------------------------------------------------------

/** sc: { subscribers, reps, rounds, workers }; leg: { broker } */
async function runFanout(sc, leg, ctx) {
  const topo = await topologyFor(leg, ctx);
  const node = topo.nodes[0];
  const S = sc.subscribers;
  const nW = sc.workers || Math.max(2, Math.ceil(S / 5000));
  let wake = () => undefined;
  // Subscribers on workers 0…nW−1; the joining connections on a worker of their own.
  const subs = await clients(nW, topo.nodes, ctx, () => wake(), true);
  const [joinW] = await clients(1, topo.nodes, ctx);
  const pub = createPublisher({ port: node.port, apiKey: API_KEY, concurrency: 1 });
  const JL = 'benchjl:fan';
  const P = 'benchp:fan';
  try {
    await openSpread(subs, 'subs', S);
    // Each subscriber in both channels; the joinLeave one sends ~S²/2 joins while they arrive.
    const r = await Promise.all(subs.map((w) => w.call('subscribeAll', { group: 'subs', spec: { channels: [JL, P] }, timeoutMs: 30_000 }, 60_000)));
    checkAll(r, 'subscribers');
    const joinersPerKind = (sc.rounds + 1) * sc.reps;
    await open(joinW, 'join', 2 * joinersPerKind, 0, { userPrefix: 'bench-joiner-', info: true });
    await Promise.all(subs.map((w) => w.call('count', { latency: false, progressMs: 2 })));
    // The setup's joins have all arrived once nothing more comes for 500 ms.
    const presenceNow = () => sum(subs.map((w) => w.presence));
    const messagesNow = () => sum(subs.map((w) => w.progress));
    for (let last = -1, t = Date.now(); Date.now() - t < 30_000;) {
      await sleepMs(500);
      if (presenceNow() === last) break;
      last = presenceNow();
    }
    await Promise.all(subs.map((w) => w.call('presenceSeen')));

    /** Resolves once `get()` reaches `target` (checked on every progress report), or rejects after `ms`. */
    const until = (get, target, ms = 15_000) => new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        wake = () => undefined;
        reject(new Error(`waited ${ms} ms: ${get()} of ${target}`));
      }, ms);
      wake = () => {
        if (get() >= target) {
          clearTimeout(t);
          wake = () => undefined;
          resolve();
        }
      };
      wake();
    });

    const idle = await idleRate(topo.procs, topo.nodes);
    let nextJoiner = 0;
    const reps = [];
    const msgAll = [];
    const blocks = [];
    const req = (index, type, channel) => joinW.call('request', { group: 'join', index, type, channel });
    /** One block of `sc.reps` repetitions of `kind`; answers its server CPU. */
    async function block(kind, round) {
      const win = await cpuWindow(topo.procs, idle);
      for (let k = 0; k < sc.reps; k++) {
        if (kind === 'message') {
          const before = messagesNow();
          const t0 = nowMs();
          const res = await pub.post('/v1/publish', `{"channel":"${JL}","data":{"k":${k},"t":${t0.toFixed(3)}}}`);
          if (res.status !== 200) throw new Error(`publish answered ${res.status} ${res.text}`);
          await until(messagesNow, before + S);
          // Nothing else arrives meanwhile: each process's last receipt is this message's.
          if (round > 0) msgAll.push(Math.max(...(await Promise.all(subs.map((w) => w.call('lastRecv')))).map((x) => x.ms)) - t0);
          continue;
        }
        const j = nextJoiner++;
        const ch = kind === 'joinLeave' ? JL : P;
        const before = presenceNow();
        const sub = await req(j, 'subscribe', ch);
        if (kind === 'joinLeave') await until(presenceNow, before + S);
        const unsub = await req(j, 'unsubscribe', ch);
        if (kind === 'joinLeave') {
          await until(presenceNow, before + 2 * S);
          if (round > 0) reps.push({ user: `bench-joiner-${j}`, sub, unsub });
        }
      }
      const { ns, ms: wallMs } = await win.end();
      topo.assertAlive();
      if (round > 0) {
        blocks.push({
          round, kind, nodeNs: ns[topo.procs.indexOf(node)], redisNs: topo.redis ? ns[topo.procs.indexOf(topo.redis)] : 0, wallMs,
        });
      }
    }
    const mark = coreMark(topo.procs, [...subs, joinW].map((w) => w.pid));
    for (let round = 0; round <= sc.rounds; round++) {
      // Round 0 warms up and is not counted; the order of the three blocks rotates.
      const order = ['joinLeave', 'presence', 'message'];
      for (let j = 0; j < order.length; j++) await block(order[(j + round) % order.length], round);
    }
    const cores = mark(ctx);
    // Join and leave receipts, per joining user, from every subscriber process.
    const seen = new Map();
    for (const s of await Promise.all(subs.map((w) => w.call('presenceSeen')))) {
      for (const e of s.seen) {
        const k = `${e.type} ${e.user}`;
        const cur = seen.get(k);
        if (!cur) seen.set(k, { n: e.n, first: e.first, last: e.last });
        else {
          cur.n += e.n;
          cur.first = Math.min(cur.first, e.first);
          cur.last = Math.max(cur.last, e.last);
        }
      }
    }
    const lat = { joinAll: [], joinFirst: [], leaveAll: [], leaveFirst: [], subReply: [], unsubReply: [], msgAll };
    let incomplete = 0;
    for (const x of reps) {
      const j = seen.get(`join ${x.user}`);
      const l = seen.get(`leave ${x.user}`);
      if (!j || !l || j.n !== S || l.n !== S) {
        incomplete++;
        continue;
      }
      lat.joinAll.push(j.last - x.sub.t0);
      lat.joinFirst.push(j.first - x.sub.t0);
      lat.leaveAll.push(l.last - x.unsub.t0);
      lat.leaveFirst.push(l.first - x.unsub.t0);
      lat.subReply.push(x.sub.t1 - x.sub.t0);
      lat.unsubReply.push(x.unsub.t1 - x.unsub.t0);
    }
    return { ok: true, reps: reps.length, incomplete, lat, blocks, subscribers: S, repsPerBlock: sc.reps, cores, idleUsPerSec: sum(idle) };
  } finally {
    wake = () => undefined;
    pub.close();
    await stopWorkers([...subs, joinW]);
    await topo.stop();
  }
}

function summarizeFanout(runs, sc) {
  const lines = [];
  const out = {};
  const header = ['broker', 'join→all p50 ms', 'p99', 'max', 'join→first p50', 'leave→all p50', 'p99', 'subscribe reply p50', 'message→all p50', 'p99', 'reps'];
  const rows = [];
  const cpuRows = [];
  for (const broker of [...new Set(runs.map((x) => x.target))]) {
    const ok = runs.filter((x) => x.target === broker && x.r.ok).map((x) => x.r);
    if (ok.length === 0) continue;
    const all = (k) => ok.flatMap((r) => r.lat[k]);
    const f = {
      joinAll: { p50: quantile(all('joinAll'), 0.5), p99: quantile(all('joinAll'), 0.99), max: Math.max(...all('joinAll')) },
      joinFirst: { p50: quantile(all('joinFirst'), 0.5) },
      leaveAll: { p50: quantile(all('leaveAll'), 0.5), p99: quantile(all('leaveAll'), 0.99), max: Math.max(...all('leaveAll')) },
      subReply: { p50: quantile(all('subReply'), 0.5), p99: quantile(all('subReply'), 0.99) },
      msgAll: { p50: quantile(all('msgAll'), 0.5), p99: quantile(all('msgAll'), 0.99) },
      reps: all('joinAll').length,
      incomplete: sum(ok.map((r) => r.incomplete)),
    };
    rows.push([broker, fmtNum(f.joinAll.p50, 2), fmtNum(f.joinAll.p99, 2), fmtNum(f.joinAll.max, 2), fmtNum(f.joinFirst.p50, 2),
      fmtNum(f.leaveAll.p50, 2), fmtNum(f.leaveAll.p99, 2), fmtNum(f.subReply.p50, 2), fmtNum(f.msgAll.p50, 2), fmtNum(f.msgAll.p99, 2), f.reps]);
    // CPU per round: (joinLeave − presence) per join/leave delivered; message per delivery.
    const S = ok[0].subscribers;
    const B = ok[0].repsPerBlock;
    const perRound = [];
    for (const r of ok) {
      for (const round of [...new Set(r.blocks.map((b) => b.round))]) {
        const b = (kind) => r.blocks.find((x) => x.round === round && x.kind === kind);
        const tot = (x) => x.nodeNs + x.redisNs;
        const jl = b('joinLeave');
        const p = b('presence');
        const m = b('message');
        perRound.push({
          grossUs: tot(jl) / 1000 / (2 * S * B),
          netUs: (tot(jl) - tot(p)) / 1000 / (2 * S * B),
          netNodeUs: (jl.nodeNs - p.nodeNs) / 1000 / (2 * S * B),
          netRedisUs: (jl.redisNs - p.redisNs) / 1000 / (2 * S * B),
          msgUs: tot(m) / 1000 / (S * B),
          presenceRepUs: tot(p) / 1000 / B,
        });
      }
    }
    const med = (k) => median(perRound.map((x) => x[k]));
    f.cpu = { grossUs: med('grossUs'), netUs: med('netUs'), netNodeUs: med('netNodeUs'), netRedisUs: med('netRedisUs'), msgUs: med('msgUs'), presenceRepUs: med('presenceRepUs'), rounds: perRound.length, perRound };
    cpuRows.push([broker, fmtNum(f.cpu.netUs, 3), fmtNum(f.cpu.netNodeUs, 3), fmtNum(f.cpu.netRedisUs, 3), fmtNum(f.cpu.grossUs, 3), fmtNum(f.cpu.msgUs, 3),
      fmtNum(f.cpu.presenceRepUs, 1), perRound.map((x) => fmtNum(x.netUs, 3)).join(', ')]);
    out[broker] = f;
  }
  lines.push('  latency over every counted repetition of every run: from the subscribe (unsubscribe) frame sent to the last (first) of the subscribers\' join (leave) frames received;');
  lines.push('  message→all: from the /v1/publish request sent to the last subscriber\'s receipt of that message (same subscribers, same pace)');
  lines.push(table(header, rows));
  lines.push('');
  lines.push('  server CPU (node + redis-server), median over the rounds of (joinLeave block − presence block) ÷ join/leave frames delivered:');
  lines.push(table(['broker', 'µs/join delivery', 'node', 'redis', 'gross (incl. sub+unsub)', 'µs/message delivery', 'µs per presence sub+unsub', 'per round'], cpuRows));
  for (const x of runs) {
    if (!x.r.ok) lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
    else {
      if (x.r.incomplete > 0) lines.push(`  run ${x.run} ${x.target}: ${x.r.incomplete} repetitions did not reach every subscriber exactly once`);
      const l = x.r.lat;
      lines.push(`  run ${x.run} ${x.target}: join→all p50 ${fmtNum(quantile(l.joinAll, 0.5), 2)} p99 ${fmtNum(quantile(l.joinAll, 0.99), 2)} ms, ` +
        `leave→all p50 ${fmtNum(quantile(l.leaveAll, 0.5), 2)} p99 ${fmtNum(quantile(l.leaveAll, 0.99), 2)} ms, message→all p50 ${fmtNum(quantile(l.msgAll, 0.5), 2)} p99 ${fmtNum(quantile(l.msgAll, 0.99), 2)} ms; ` +
        `servers idle ${fmtNum(x.r.idleUsPerSec)} µs/s (subtracted); other processes took ${otherPct(x.r.cores.serverCores)} of the server core(s), ${otherPct(x.r.cores.clientCores)} of the client core(s)`);
    }
  }
  void sc;
  return { text: lines.join('\n'), summary: out };
}

// ---- presence-large ---------------------------------------------------------

/** sc: { connections, calls, small, askers, workers }; leg: { broker } */
async function runLarge(sc, leg, ctx) {
  const nodes = leg.broker === 'redis' ? 2 : 1;
  const topo = await topologyFor(leg, ctx, nodes);
  const N = sc.connections;
  const nW = sc.workers || Math.max(2 * nodes, 2 * Math.ceil(N / 5000));
  const workers = await clients(nW, topo.nodes, ctx);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const LARGE = 'benchp:large';
  const SMALL = 'benchp:small';
  const auth = { authorization: `Bearer ${API_KEY}` };
  try {
    // The small channel (its members on the last worker) and the askers (on worker 0) first:
    // their calls load every Lua script before the "before" memory figure.
    const smallW = workers[nW - 1];
    await open(smallW, 'small', sc.small, 0, { info: true, userPrefix: 'bench-small-' });
    checkAll([await smallW.call('subscribeAll', { group: 'small', spec: { channels: [SMALL] }, timeoutMs: 30_000 })], 'small channel');
    await open(workers[0], 'ask', sc.askers, 0, { userPrefix: 'bench-asker-' });
    for (const type of ['presence_stats', 'presence']) await workers[0].call('request', { group: 'ask', index: 0, type, channel: SMALL });
    await openSpread(workers, 'subs', N, { info: true });
    const idle = await idleRate(topo.procs, topo.nodes);
    const mem0 = topo.redis ? usedMemory(topo.redis.port) : NaN;
    const win = await cpuWindow(topo.procs, idle);
    const t0 = nowMs();
    const res = await Promise.all(workers.map((w) => w.call('subscribeAll', { group: 'subs', spec: { channels: [LARGE] }, timeoutMs: 60_000 }, 120_000)));
    checkAll(res, 'large channel');
    const subWallMs = Math.max(...res.map((r) => r.t1)) - t0;
    const { ns: subNs } = await win.end();
    await sleepMs(1000);
    const mem1 = topo.redis ? usedMemory(topo.redis.port) : NaN;
    const keys = topo.redis ? presenceKeyMemory(topo.redis.port) : undefined;

    // Presence reads, one at a time, the kinds in turn.
    const node = topo.nodes[0];
    // Frames go round-robin over the askers, each well under PUBGATE_CLIENT_FRAME_RATE's burst.
    let asker = 0;
    const frame = (type, channel) => () => workers[0].call('request', { group: 'ask', index: asker++ % sc.askers, type, channel })
      .then(undefined, (e) => ({ error: e.message }));
    const kinds = [
      ['stats frame, large', frame('presence_stats', LARGE)],
      ['stats frame, small', frame('presence_stats', SMALL)],
      ['stats HTTP, large', () => getText(node.port, `/v1/presence/stats?channel=${LARGE}`, agent, auth)],
      ['stats HTTP, small', () => getText(node.port, `/v1/presence/stats?channel=${SMALL}`, agent, auth)],
      ['presence frame, large', frame('presence', LARGE)],
      ['presence frame, small', frame('presence', SMALL)],
      ['presence HTTP, large', () => getText(node.port, `/v1/presence?channel=${LARGE}`, agent, auth)],
    ];
    const lat = Object.fromEntries(kinds.map(([k]) => [k, []]));
    const mark = coreMark(topo.procs, workers.map((w) => w.pid));
    const checks = Object.fromEntries(kinds.map(([k]) => [k, '']));
    for (let i = 0; i < sc.calls + 5; i++) {
      for (const [k, call] of kinds) {
        const isFrame = k.includes('frame');
        const t = nowMs();
        const r = await call();
        const ms = isFrame ? r.t1 - r.t0 : nowMs() - t;
        if (isFrame && r.error) throw new Error(`${k}: ${r.error}`);
        if (!isFrame && r.status !== 200) throw new Error(`${k}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
        if (i >= 5) lat[k].push(ms); // the first 5 of each warm up
        if (i === 5) {
          if (isFrame) checks[k] = `users ${r.users}, connections ${r.connections}${r.members !== undefined ? `, members ${r.members}${r.truncated ? ', truncated' : ''}` : ''}`;
          else {
            const b = JSON.parse(r.text);
            checks[k] = `users ${b.users}, connections ${b.connections}${b.members ? `, members ${b.members.length}${b.truncated ? ', truncated' : ''}` : ''}, ${r.text.length} bytes`;
          }
        }
      }
    }
    const cores = mark(ctx);
    // Server CPU of one call of each frame kind: blocks of calls from every asker at once (dense,
    // so that the idle rate subtracted is a small part), the kinds in turn, three blocks each.
    const frameKinds = [
      ['stats frame, large', 'presence_stats', LARGE], ['stats frame, small', 'presence_stats', SMALL],
      ['presence frame, large', 'presence', LARGE], ['presence frame, small', 'presence', SMALL],
    ];
    const blocks = Object.fromEntries(frameKinds.map(([k]) => [k, []]));
    const perConn = Math.max(1, Math.round(sc.calls / sc.askers / 2));
    for (let b = 0; b < 3; b++) {
      for (const [k, type, channel] of frameKinds) {
        const w = await cpuWindow(topo.procs, idle);
        const r = await workers[0].call('requestMany', { group: 'ask', type, channel, perConn }, 120_000);
        if (r.failed > 0) throw new Error(`${k}: ${r.failed} failed: ${JSON.stringify(r.errors)}`);
        const { ns } = await w.end();
        blocks[k].push({
          // The node the askers are on (the other one has no part in the call).
          nodeUs: ns[topo.procs.indexOf(node)] / 1000 / r.ok,
          redisUs: topo.redis ? ns[topo.procs.indexOf(topo.redis)] / 1000 / r.ok : 0,
        });
      }
    }
    const perCall = Object.fromEntries(Object.entries(blocks).map(([k, v]) => [k, {
      nodesUs: median(v.map((x) => x.nodeUs)), redisUs: median(v.map((x) => x.redisUs)), calls: perConn * sc.askers,
    }]));
    topo.assertAlive();
    const stats = await workers[0].call('request', { group: 'ask', index: 0, type: 'presence_stats', channel: LARGE });
    return {
      ok: true,
      connections: N,
      nodes,
      entries: stats.connections,
      users: stats.users,
      subscribe: {
        wallMs: subWallMs,
        perSec: N / (subWallMs / 1000),
        nodesUs: sum(topo.nodes.map((n) => subNs[topo.procs.indexOf(n)])) / 1000 / N,
        redisUs: topo.redis ? subNs[topo.procs.indexOf(topo.redis)] / 1000 / N : 0,
      },
      redis: topo.redis ? { before: mem0, after: mem1, perEntry: (mem1 - mem0) / stats.connections, keys, keysPerEntry: keys.total / stats.connections } : undefined,
      lat: Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, { p50: quantile(v, 0.5), p99: quantile(v, 0.99), max: Math.max(...v), n: v.length }])),
      checks,
      perCall,
      cores,
      idleUsPerSec: sum(idle),
    };
  } finally {
    agent.destroy();
    await stopWorkers(workers);
    await topo.stop();
  }
}

function summarizeLarge(runs) {
  const lines = [];
  const out = {};
  for (const x of runs) {
    if (!x.r.ok) {
      lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
      continue;
    }
    const r = x.r;
    out[`${x.target} ${x.run}`] = r;
    lines.push(`  run ${x.run} ${x.target}: ${fmtNum(r.entries)} entries (${fmtNum(r.users)} users) on ${r.nodes} node(s); ` +
      `the ${fmtNum(r.connections)} subscribes at once took ${fmtNum(r.subscribe.wallMs)} ms (${fmtNum(r.subscribe.perSec)}/s), ` +
      `server CPU ${fmtNum(r.subscribe.nodesUs, 1)} µs (nodes) + ${fmtNum(r.subscribe.redisUs, 1)} µs (redis) per subscribe`);
    lines.push(table(['call', 'p50 ms', 'p99 ms', 'max ms', 'calls', 'answer', 'server µs/call (node + redis)'], Object.entries(r.lat).map(([k, v]) => [
      k, fmtNum(v.p50, 3), fmtNum(v.p99, 3), fmtNum(v.max, 3), v.n, r.checks[k],
      r.perCall[k] ? `${fmtNum(r.perCall[k].nodesUs, 1)} + ${fmtNum(r.perCall[k].redisUs, 1)} (${r.perCall[k].calls} at a time, median of 3)` : '',
    ])));
    lines.push(`  servers idle ${fmtNum(r.idleUsPerSec)} µs/s (subtracted from the CPU figures); during the calls other processes took ${otherPct(r.cores.serverCores)} of the server core(s), ${otherPct(r.cores.clientCores)} of the client core(s)`);
    if (r.redis) {
      lines.push(`  redis used_memory ${fmtNum(r.redis.before)} → ${fmtNum(r.redis.after)} bytes: ${fmtNum(r.redis.perEntry, 1)} bytes per entry; ` +
        `MEMORY USAGE of the ${r.redis.keys.keys} keys ${fmtNum(r.redis.keys.total)} bytes: ${fmtNum(r.redis.keysPerEntry, 1)} bytes per entry`);
      for (const [k, v] of Object.entries(r.redis.keys.byKind)) lines.push(`    ${k.padEnd(40)} ${fmtNum(v).padStart(12)} bytes  ${fmtNum(v / r.entries, 1).padStart(7)} per entry`);
    }
  }
  return { text: lines.join('\n'), summary: out };
}

// ---- shared ------------------------------------------------------------------

export const otherPct = (split) => (split ? `${Math.round(split.other * 100)}%` : 'n/a');

export function table(header, rows) {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `  ${cells.map((c, i) => (i < 2 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ')}`;
  return [line(header), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

/** Runs one presence scenario run on one leg (broker). */
export function runPresence(sc, leg, ctx) {
  if (sc.name === 'presence-subscribe') return runSubscribe(sc, leg, ctx);
  if (sc.name === 'presence-fanout') return runFanout(sc, leg, ctx);
  return runLarge(sc, leg, ctx);
}

/** One line per run for the progress output. */
export function presenceShort(r, sc) {
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  if (sc.name === 'presence-subscribe') {
    const held = r.phases.filter((p) => p.layout === sc.layouts[0]);
    const m = (kind) => median(held.filter((p) => p.kind === kind).map((p) => p.sub.nodeUs + p.sub.redisUs));
    return `${sc.layouts[0]}: subscribe ${KINDS.map(({ kind }) => `${kind} ${fmtNum(m(kind), 1)} µs`).join(', ')}`;
  }
  if (sc.name === 'presence-fanout') {
    return `join to all ${r.subscribers}: p50 ${fmtNum(quantile(r.lat.joinAll, 0.5), 2)} ms, p99 ${fmtNum(quantile(r.lat.joinAll, 0.99), 2)} ms over ${r.reps} reps`;
  }
  const s = r.lat['stats frame, large'];
  return `presence_stats frame p50 ${fmtNum(s.p50, 3)} ms p99 ${fmtNum(s.p99, 3)} ms; ${r.redis ? `${fmtNum(r.redis.perEntry, 0)} B/entry in redis` : 'embedded'}`;
}

export function formatPresence(title, sc, runs) {
  const f = sc.name === 'presence-subscribe' ? summarizeSubscribe(runs, sc) : sc.name === 'presence-fanout' ? summarizeFanout(runs, sc) : summarizeLarge(runs);
  return { text: `\n== ${title}\n${f.text}`, summary: f.summary };
}
