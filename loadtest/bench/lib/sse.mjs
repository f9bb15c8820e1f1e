// The sse-fanout scenario (issue 17): what a Server-Sent Events delivery and an
// idle SSE stream cost the server, against a WebSocket's, in the same process.
// pubgate only; one node on the embedded broker (CPU 0), the runner and its
// client processes on CPU 1. In each run:
//
//   memory  S SSE streams (`GET /sse?channel=bench:sse&channel=bench:both`,
//       token in Authorization) and S WebSocket connections (subscribed to
//       bench:ws and bench:both) are opened, one transport after the other
//       (the leg says which first: legs alternate run by run), after a
//       warm-up of both that is closed again. Before and after each
//       transport's S: a full GC of the node (HeapProfiler.collectGarbage
//       through its inspector), its VmRSS and V8 heap: RSS delta ÷ S and
//       heap delta ÷ S per idle connection.
//   fan-out  then, with all 2S open side by side, blocks of --reps
//       POST /v1/publish (--concurrency in flight; 1: one after another)
//       in turn (the order rotates round by round): "sse" to bench:sse (S SSE
//       deliveries a message), "ws" to bench:ws (S WebSocket deliveries),
//       "both" to bench:both (S of each). A block ends once every delivery
//       was counted by the clients; node CPU from /proc schedstat from idle
//       to idle again, less its idle rate (as the presence scenarios), ÷
//       deliveries. The SSE ÷ WS ratio is per run and round.
//
// Every delivery count must be exact (checked after the last block), and no
// stream or connection may end during the run.
import http from 'node:http';
import { checkAll, clients, coreMark, cpuWindow, idleRate, otherPct, table } from './presence.mjs';
import { procRssKb, sleepMs } from './proc.mjs';
import { makeData } from './publisher.mjs';
import { fmtNum, median } from './stats.mjs';
import { API_KEY, SECRET, gcNode, pubgateMemory, startTopology } from './targets.mjs';
import { shares, stopWorkers } from './workers.mjs';
import { nowMs } from './ws-client.mjs';

export const SSE_SCENARIOS = ['sse-fanout'];
export const KINDS = ['sse', 'ws', 'both'];
export const CHANNEL = { sse: 'bench:sse', ws: 'bench:ws', both: 'bench:both' };
/** The channels each transport's clients are on. */
export const SSE_CHANNELS = [CHANNEL.sse, CHANNEL.both];
export const WS_CHANNELS = [CHANNEL.ws, CHANNEL.both];
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** Deliveries of one message per transport for a block kind, with S clients of each (pure). */
export function deliveriesOf(kind, S) {
  return { sse: kind === 'ws' ? 0 : S, ws: kind === 'sse' ? 0 : S };
}

function poster(port, concurrency) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const post = (body) => new Promise((resolve) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/v1/publish', method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}`, 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, text: e.message }));
    req.end(body);
  });
  return { post, close: () => agent.destroy() };
}

/** The node's memory after a full GC: VmRSS and V8 heap (KiB), and whether the GC ran. */
async function memoryOf(node) {
  const gc = await gcNode(node.inspectPort);
  const m = await pubgateMemory(node.adminPort);
  return { gc, rssKb: procRssKb(node.pid), heapUsedKb: (m?.heapUsed ?? NaN) / 1024, externalKb: (m?.external ?? NaN) / 1024 };
}

/** sc: { subscribers, reps, rounds, concurrency, size, settleSec, workers }; leg: { first: 'sse' | 'ws' } */
export async function runSseFanout(sc, leg, ctx) {
  const topo = await startTopology('pubgate', {
    cluster: false, cpus: ctx.serverCpus, profileDir: ctx.profileDir, pubgateMain: ctx.pubgateMain, pubgateNode: ctx.pubgateNode,
    env: ctx.pubgateEnv, inspect: true,
  });
  const node = topo.nodes[0];
  const S = sc.subscribers;
  const nW = sc.workers || 2;
  let wake = () => undefined;
  let workers = [];
  const pub = poster(node.port, Math.max(1, sc.concurrency));
  try {
    workers = await clients(nW, topo.nodes, ctx, () => wake());
    const share = shares(S, nW);
    const opened = { sse: 0, ws: 0 };

    /** Opens `count[i]` clients of `transport` on worker i, users from `from`; throws unless all opened. */
    async function openAll(transport, counts, from, channels, group) {
      let base = from;
      await Promise.all(workers.map(async (w, i) => {
        const b = base;
        base += counts[i];
        if (counts[i] === 0) return;
        const common = { count: counts[i], base: b, secret: SECRET, concurrency: 32, timeoutMs: 15_000, phaseTimeoutMs: 120_000, retries: 3 };
        if (transport === 'sse') {
          const r = await w.call('sseConnect', { ...common, channels }, 180_000);
          if (r.ok < counts[i]) throw new Error(`SSE streams: only ${r.ok} of ${counts[i]} opened: ${JSON.stringify({ ...r.errors, ...r.socketErrors })}`);
        } else {
          const r = await w.call('connect', { ...common, group }, 180_000);
          if (r.ok < counts[i]) throw new Error(`WebSockets: only ${r.ok} of ${counts[i]} opened: ${JSON.stringify({ ...r.errors, ...r.socketErrors })}`);
        }
      }));
      if (transport === 'ws') {
        checkAll(await Promise.all(workers.map((w) => w.call('subscribeAll', { group, spec: { channels }, timeoutMs: 30_000 }, 60_000))), `${group} subscribes`);
      }
    }

    // Warm-up: both transports' handshake, subscribe and delivery paths run before the first reading; then closed.
    const warm = shares(Math.min(100, S), nW);
    await openAll('sse', warm, 1_000_000, ['bench:warm'], 'warm');
    await openAll('ws', warm, 1_000_000, ['bench:warm'], 'warm');
    for (let k = 0; k < 20; k++) {
      const res = await pub.post(`{"channel":"bench:warm","data":{"k":${k}}}`);
      if (res.status !== 200) throw new Error(`warm-up publish answered ${res.status} ${res.text}`);
    }
    await sleepMs(200);
    await Promise.all(workers.map((w) => w.call('sseDrop').then(() => w.call('drop'))));
    await sleepMs(sc.settleSec * 1000);

    // Memory: one transport, then the other (the leg's order), each from its own reading.
    const mem = { before: await memoryOf(node) };
    const order = leg.first === 'ws' ? ['ws', 'sse'] : ['sse', 'ws'];
    let prev = mem.before;
    for (const t of order) {
      await openAll(t, share, t === 'sse' ? 0 : 100_000, t === 'sse' ? SSE_CHANNELS : WS_CHANNELS, 'subs');
      opened[t] = S;
      await sleepMs(sc.settleSec * 1000);
      const now = await memoryOf(node);
      mem[t] = {
        ...now,
        rssKbPerConn: (now.rssKb - prev.rssKb) / S,
        heapKbPerConn: (now.heapUsedKb - prev.heapUsedKb) / S,
        externalKbPerConn: (now.externalKb - prev.externalKb) / S,
      };
      prev = now;
    }
    topo.assertAlive();

    await Promise.all(workers.map((w) => w.call('count', { latency: false, progressMs: 2 })));
    const got = () => ({ sse: sum(workers.map((w) => w.sse)), ws: sum(workers.map((w) => w.progress)) });
    const until = (target, ms = 60_000) => new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        wake = () => undefined;
        reject(new Error(`waited ${ms} ms: ${JSON.stringify(got())} of ${JSON.stringify(target)} deliveries`));
      }, ms);
      wake = () => {
        const g = got();
        if (g.sse >= target.sse && g.ws >= target.ws) {
          clearTimeout(t);
          wake = () => undefined;
          resolve();
        }
      };
      wake();
    });

    const procs = [node];
    const idle = await idleRate(procs, topo.nodes);
    const data = makeData(sc.size);
    const blocks = [];
    let seq = 0;

    async function block(kind, round) {
      const ch = CHANNEL[kind];
      const per = deliveriesOf(kind, S);
      const before = got();
      const bodies = Array.from({ length: sc.reps }, () => `{"channel":"${ch}","data":${data(seq++, ch)}}`);
      const win = await cpuWindow(procs, idle);
      const t0 = nowMs();
      let next = 0;
      const bad = {};
      await Promise.all(Array.from({ length: Math.max(1, sc.concurrency) }, async () => {
        while (next < bodies.length) {
          const res = await pub.post(bodies[next++]);
          const k = `${res.status} ${res.text.slice(0, 80)}`;
          if (res.status !== 200) bad[k] = (bad[k] ?? 0) + 1;
        }
      }));
      if (Object.keys(bad).length) throw new Error(`${kind}: non-200 publish answers ${JSON.stringify(bad)}`);
      await until({ sse: before.sse + per.sse * sc.reps, ws: before.ws + per.ws * sc.reps });
      const wallMs = nowMs() - t0;
      const { ns } = await win.end();
      topo.assertAlive();
      const after = got();
      return {
        round, kind, wallMs, nodeNs: ns[0], messages: sc.reps,
        sse: after.sse - before.sse, ws: after.ws - before.ws, deliveries: sc.reps * (per.sse + per.ws),
      };
    }

    const mark = coreMark(procs, workers.map((w) => w.pid));
    for (let round = 0; round <= sc.rounds; round++) {
      // Round 0 warms up and is not counted.
      for (let j = 0; j < KINDS.length; j++) {
        const b = await block(KINDS[(j + round) % KINDS.length], round);
        if (round > 0) blocks.push(b);
      }
    }
    const cores = mark(ctx);
    // Exactly once: a little later nothing more has come, and every stream and connection is still open.
    await sleepMs(200);
    const stats = await Promise.all(workers.map((w) => w.call('stats')));
    const total = got();
    const expected = { sse: 0, ws: 0 };
    for (let round = 0; round <= sc.rounds; round++) {
      for (const kind of KINDS) {
        const per = deliveriesOf(kind, S);
        expected.sse += per.sse * sc.reps;
        expected.ws += per.ws * sc.reps;
      }
    }
    const open = { sse: sum(stats.map((s) => s.sse.open)), ws: sum(stats.map((s) => s.open)) };
    const closes = { sse: sum(stats.map((s) => s.sse.endedOpen)), ws: sum(stats.map((s) => s.closedOpen)) };
    if (total.sse !== expected.sse || total.ws !== expected.ws) throw new Error(`deliveries ${JSON.stringify(total)}, expected ${JSON.stringify(expected)}`);
    if (open.sse !== S || open.ws !== S || closes.sse + closes.ws > 0) {
      throw new Error(`open at the end: ${JSON.stringify(open)} of ${S} each; ended during the run: ${JSON.stringify(closes)}`);
    }
    return { ok: true, blocks, mem, order, cores, subscribers: S };
  } finally {
    wake = () => undefined;
    pub.close();
    await stopWorkers(workers);
    await topo.stop();
  }
}

function mmm(xs) {
  const v = xs.filter((x) => Number.isFinite(x));
  return { median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN, n: v.length };
}

/**
 * The figures (pure): per block kind, medians (min–max) over the blocks of
 * deliveries/s (block wall time, first publish to last delivery counted) and
 * node µs per delivery; the SSE ÷ WS ratio of node µs per delivery within the
 * same run and round; and per transport the memory per idle connection over
 * the runs (`mems`: each run's r.mem).
 */
export function sseFigures(blocks, mems = []) {
  const perSec = (b) => (b.wallMs > 0 ? b.deliveries / (b.wallMs / 1000) : NaN);
  const us = (b) => (b.deliveries > 0 ? b.nodeNs / 1000 / b.deliveries : NaN);
  const byKind = {};
  for (const kind of KINDS) {
    const ks = blocks.filter((b) => b.kind === kind);
    byKind[kind] = { perSec: mmm(ks.map(perSec)), nodeUs: mmm(ks.map(us)), blocks: ks.length, deliveries: sum(ks.map((b) => b.deliveries)) };
  }
  const ratio = blocks.filter((b) => b.kind === 'sse').map((b) => {
    const w = blocks.find((x) => x.kind === 'ws' && x.run === b.run && x.round === b.round);
    return w ? us(b) / us(w) : NaN;
  });
  const memory = {};
  for (const t of ['sse', 'ws']) {
    const ms = mems.map((m) => m?.[t]).filter(Boolean);
    memory[t] = {
      rssKb: mmm(ms.map((m) => m.rssKbPerConn)), heapKb: mmm(ms.map((m) => m.heapKbPerConn)), externalKb: mmm(ms.map((m) => m.externalKbPerConn)),
      gc: ms.length > 0 && ms.every((m) => m.gc),
    };
  }
  return { byKind, ratio: mmm(ratio), memory };
}

const rng = (m, d) => `${fmtNum(m.median, d)} (${fmtNum(m.min, d)}–${fmtNum(m.max, d)})`;

export function sseShort(r) {
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  const f = sseFigures(r.blocks, [r.mem]);
  return `sse ${fmtNum(f.byKind.sse.nodeUs.median, 3)} µs/delivery, ws ${fmtNum(f.byKind.ws.nodeUs.median, 3)}, ×${fmtNum(f.ratio.median, 2)}; ` +
    `idle: sse ${fmtNum(r.mem.sse.rssKbPerConn, 2)} KiB RSS/conn, ws ${fmtNum(r.mem.ws.rssKbPerConn, 2)}`;
}

export function formatSse(title, sc, runs) {
  const lines = [`\n== ${title}`];
  const ok = runs.filter((x) => x.r.ok);
  const f = sseFigures(ok.flatMap((x) => x.r.blocks.map((b) => ({ ...b, run: x.run, leg: x.target }))), ok.map((x) => x.r.mem));
  const n = f.byKind.sse.blocks;
  lines.push(`  fan-out: ${sc.reps} publishes per block, ${sc.concurrency} in flight; medians (min–max) over ${n} blocks of each kind`);
  const what = { sse: `${sc.subscribers} SSE`, ws: `${sc.subscribers} WebSocket`, both: `${sc.subscribers} SSE + ${sc.subscribers} WebSocket` };
  lines.push(table(['block', 'subscribers', 'deliveries/s', 'node µs/delivery'],
    KINDS.map((k) => [k, what[k], rng(f.byKind[k].perSec, 0), rng(f.byKind[k].nodeUs, 3)])));
  lines.push(`  SSE ÷ WS node µs/delivery, same run and round: ×${rng(f.ratio, 2)}`);
  const gc = f.memory.sse.gc && f.memory.ws.gc ? 'after a full GC' : 'NOT after a GC (inspector unavailable)';
  lines.push(`  memory per idle connection (${sc.subscribers} of each, ${gc}, ${sc.settleSec} s settle), medians (min–max) over ${ok.length} runs, KiB:`);
  lines.push(table(['transport', 'RSS', 'V8 heap used', 'external'],
    ['sse', 'ws'].map((t) => [t, rng(f.memory[t].rssKb, 2), rng(f.memory[t].heapKb, 2), rng(f.memory[t].externalKb, 2)])));
  for (const x of runs) {
    if (!x.r.ok) {
      lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
      continue;
    }
    const m = x.r.mem;
    lines.push(`  run ${x.run} ${x.target}: opened ${x.r.order.join(' then ')}; RSS ${fmtNum(m.before.rssKb)} → ${x.r.order.map((t) => fmtNum(m[t].rssKb)).join(' → ')} KiB; ` +
      `other processes took ${otherPct(x.r.cores.serverCores)} of the server core(s), ${otherPct(x.r.cores.clientCores)} of the client core(s)`);
  }
  return { text: lines.join('\n'), summary: { figures: f } };
}
