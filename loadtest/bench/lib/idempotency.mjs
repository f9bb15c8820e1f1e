// The idempotency scenario (issue 15): what an Idempotency-Key and an
// `exclude` cost. pubgate only; one node + redis-server (the idempotency
// record lives in Redis, beside the publish), with PUBGATE_HISTORY_CHANNELS
// giving benchh:* a history. Within each round, in the same processes, the
// kinds of each part are measured in turn (the order rotates round by round):
//
//   publish   N POST /v1/publish requests, --concurrency in flight, to a
//       channel nobody subscribes to: "plain" (bench:*), "plain+key" (each
//       with a unique Idempotency-Key header), "history" (benchh:*),
//       "history+key". Rate = N ÷ wall time; CPU of the node and of Redis
//       per publish.
//   fanout    --subscribers connections on one channel; --reps publishes
//       one at a time, each waited for at every subscriber: "all" (no
//       exclude) and "exclude" ({"exclude":"<welcome.conn of subscriber 0>"},
//       so S − 1 deliveries). CPU of the node and Redis per delivery.
//
// CPU: /proc schedstat from idle to idle again, less the idle rate (as the
// presence scenarios). Every non-200 answer and every delivery count that is
// not the expected one fails the run.
import http from 'node:http';
import { checkAll, clients, coreMark, cpuWindow, idleRate, otherPct, table } from './presence.mjs';
import { sleepMs } from './proc.mjs';
import { fmtNum, median } from './stats.mjs';
import { API_KEY, SECRET, startTopology } from './targets.mjs';
import { shares, stopWorkers } from './workers.mjs';
import { nowMs } from './ws-client.mjs';

export const IDEMPOTENCY_SCENARIOS = ['idempotency'];
export const PARTS = { publish: ['plain', 'plain+key', 'history', 'history+key'], fanout: ['all', 'exclude'] };
const HISTORY_PATTERN = 'benchh:*';
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** The request body and headers of one publish of `kind` (pure). */
export function publishRequest(kind, seq, tag) {
  const channel = kind.startsWith('history') ? 'benchh:pub' : 'bench:pub';
  const headers = kind.endsWith('+key') ? { 'idempotency-key': `${tag}-${seq}` } : {};
  return { body: `{"channel":"${channel}","data":{"s":${seq}}}`, headers };
}

function poster(port, concurrency) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const post = (body, headers) => new Promise((resolve) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/v1/publish', method: 'POST', agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}`, 'content-length': Buffer.byteLength(body), ...headers },
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

/** sc: { requests, concurrency, subscribers, reps, rounds, workers } */
export async function runIdempotency(sc, leg, ctx) {
  const topo = await startTopology('pubgate', {
    cluster: false, redis: true, cpus: ctx.serverCpus, profileDir: ctx.profileDir, pubgateMain: ctx.pubgateMain, pubgateNode: ctx.pubgateNode,
    env: { PUBGATE_HISTORY_CHANNELS: HISTORY_PATTERN, ...ctx.pubgateEnv },
  });
  const node = topo.nodes[0];
  const S = sc.subscribers;
  const nW = sc.workers || 2;
  let wake = () => undefined;
  let workers = [];
  const pub = poster(node.port, sc.concurrency);
  try {
    workers = await clients(nW, topo.nodes, ctx, () => wake());
    const share = shares(S, nW);
    let base = 0;
    await Promise.all(workers.map((w, i) => {
      const b = base;
      base += share[i];
      return w.call('connect', { group: 'subs', count: share[i], base: b, secret: SECRET, concurrency: 32, timeoutMs: 15_000, phaseTimeoutMs: 120_000, retries: 3 }, 180_000)
        .then((r) => {
          if (r.ok < share[i]) throw new Error(`subscribers: only ${r.ok} of ${share[i]} opened: ${JSON.stringify(r.errors)}`);
        });
    }));
    const FAN = 'bench:fan';
    checkAll(await Promise.all(workers.map((w) => w.call('subscribeAll', { group: 'subs', spec: { channels: [FAN] }, timeoutMs: 30_000 }, 60_000))), 'subscribers');
    const { conn: excluded } = await workers[0].call('connId', { group: 'subs', index: 0 });
    if (!excluded) throw new Error('subscriber 0 has no welcome.conn');
    await Promise.all(workers.map((w) => w.call('count', { latency: false, progressMs: 2 })));
    const messagesNow = () => sum(workers.map((w) => w.progress));
    const until = (target, ms = 15_000) => new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        wake = () => undefined;
        reject(new Error(`waited ${ms} ms: ${messagesNow()} of ${target} deliveries`));
      }, ms);
      wake = () => {
        if (messagesNow() >= target) {
          clearTimeout(t);
          wake = () => undefined;
          resolve();
        }
      };
      wake();
    });

    const procs = [node, topo.redis];
    const idle = await idleRate(procs, topo.nodes);
    const blocks = [];
    let seq = 0;
    const tag = `k${process.pid}-${Date.now()}`;

    async function publishBlock(kind, round) {
      const reqs = Array.from({ length: sc.requests }, () => publishRequest(kind, seq++, tag));
      const win = await cpuWindow(procs, idle);
      const t0 = nowMs();
      let next = 0;
      const bad = {};
      await Promise.all(Array.from({ length: sc.concurrency }, async () => {
        while (next < reqs.length) {
          const r = reqs[next++];
          const res = await pub.post(r.body, r.headers);
          if (res.status !== 200) bad[res.status] = (bad[res.status] ?? 0) + 1;
        }
      }));
      const wallMs = nowMs() - t0;
      const { ns } = await win.end();
      topo.assertAlive();
      if (Object.keys(bad).length) throw new Error(`publish ${kind}: non-200 answers ${JSON.stringify(bad)}`);
      return { round, part: 'publish', kind, ops: sc.requests, wallMs, nodeNs: ns[0], redisNs: ns[1] };
    }

    async function fanoutBlock(kind, round) {
      const per = kind === 'exclude' ? S - 1 : S;
      const ex = kind === 'exclude' ? `,"exclude":"${excluded}"` : '';
      const win = await cpuWindow(procs, idle);
      const t0 = nowMs();
      for (let k = 0; k < sc.reps; k++) {
        const before = messagesNow();
        const res = await pub.post(`{"channel":"${FAN}","data":{"k":${k}}${ex}}`, {});
        if (res.status !== 200) throw new Error(`fanout ${kind}: publish answered ${res.status} ${res.text}`);
        await until(before + per);
        // The excluded subscriber must not get it, the others exactly once: a little later, nothing more has come.
        if (k === sc.reps - 1) {
          await sleepMs(100);
          if (messagesNow() !== before + per) throw new Error(`fanout ${kind}: ${messagesNow() - before} deliveries, expected ${per}`);
        }
      }
      const wallMs = nowMs() - t0;
      const { ns } = await win.end();
      topo.assertAlive();
      return { round, part: 'fanout', kind, ops: sc.reps * per, wallMs, nodeNs: ns[0], redisNs: ns[1] };
    }

    const mark = coreMark(procs, workers.map((w) => w.pid));
    for (let round = 0; round <= sc.rounds; round++) {
      // Round 0 warms up (JIT, Lua script loading) and is not counted.
      for (const [part, kinds] of Object.entries(PARTS)) {
        for (let j = 0; j < kinds.length; j++) {
          const kind = kinds[(j + round) % kinds.length];
          const b = part === 'publish' ? await publishBlock(kind, round) : await fanoutBlock(kind, round);
          if (round > 0) blocks.push(b);
        }
      }
    }
    const cores = mark(ctx);
    return { ok: true, blocks, cores, excluded };
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
 * The figures of the blocks (pure): per part and kind, the medians (min–max)
 * over the blocks of operations/s and node, Redis and node+Redis µs per
 * operation; and per kind other than the part's first, the ratio to the first
 * kind's node+Redis µs within the same run and round.
 */
export function idempotencyFigures(blocks) {
  const out = {};
  for (const [part, kinds] of Object.entries(PARTS)) {
    const mine = blocks.filter((b) => b.part === part);
    if (mine.length === 0) continue;
    const perSec = (b) => (b.wallMs > 0 ? b.ops / (b.wallMs / 1000) : NaN);
    const us = (b, k) => (b.ops > 0 ? b[k] / 1000 / b.ops : NaN);
    const both = (b) => us(b, 'nodeNs') + us(b, 'redisNs');
    const byKind = {};
    for (const kind of kinds) {
      const ks = mine.filter((b) => b.kind === kind);
      // Against the part's first kind of the same run and round (history+key against history).
      const ref = kind === 'history+key' ? 'history' : kinds[0];
      const ratio = ks.map((b) => {
        const q = mine.find((x) => x.kind === ref && x.run === b.run && x.round === b.round);
        return q ? both(b) / both(q) : NaN;
      });
      byKind[kind] = {
        perSec: mmm(ks.map(perSec)), nodeUs: mmm(ks.map((b) => us(b, 'nodeNs'))), redisUs: mmm(ks.map((b) => us(b, 'redisNs'))),
        totalUs: mmm(ks.map(both)), ref, ratio: kind === ref ? undefined : mmm(ratio), blocks: ks.length, ops: sum(ks.map((b) => b.ops)),
      };
    }
    out[part] = byKind;
  }
  return out;
}

const rng = (m, d) => `${fmtNum(m.median, d)} (${fmtNum(m.min, d)}–${fmtNum(m.max, d)})`;

export function idempotencyShort(r) {
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  const f = idempotencyFigures(r.blocks);
  const p = (k) => `${k} ${fmtNum(f.publish[k].perSec.median)}/s ${fmtNum(f.publish[k].totalUs.median, 1)} µs`;
  return `${PARTS.publish.map(p).join(', ')}; fan-out all ${fmtNum(f.fanout.all.totalUs.median, 3)} µs/delivery, exclude ${fmtNum(f.fanout.exclude.totalUs.median, 3)}`;
}

export function formatIdempotency(title, sc, runs) {
  const lines = [`\n== ${title}`];
  const ok = runs.filter((x) => x.r.ok);
  const f = idempotencyFigures(ok.flatMap((x) => x.r.blocks.map((b) => ({ ...b, run: x.run }))));
  const what = {
    publish: `${sc.requests} POST /v1/publish per block, ${sc.concurrency} in flight, no subscriber`,
    fanout: `${sc.subscribers} subscribers on one channel, ${sc.reps} publishes one at a time per block, each waited for at every subscriber`,
  };
  for (const [part, byKind] of Object.entries(f)) {
    const n = Object.values(byKind)[0].blocks;
    lines.push(`  ${part}: ${what[part]}; medians (min–max) over ${n} blocks of each kind`);
    const unit = part === 'publish' ? 'publish' : 'delivery';
    const d = part === 'publish' ? 1 : 3;
    lines.push(table(['kind', `${unit === 'delivery' ? 'deliveries' : 'publishes'}/s`, `node µs/${unit}`, `redis µs/${unit}`, `node+redis µs/${unit}`, 'node+redis × same round'],
      Object.entries(byKind).map(([k, x]) => [k, rng(x.perSec, 0), rng(x.nodeUs, d), rng(x.redisUs, d), rng(x.totalUs, d), x.ratio ? `×${rng(x.ratio, 2)} vs ${x.ref}` : ''])));
  }
  for (const x of runs) {
    if (!x.r.ok) {
      lines.push(`  run ${x.run} did not run: ${x.r.error.split('\n').join('\n    ')}`);
      continue;
    }
    lines.push(`  run ${x.run}: excluded conn ${x.r.excluded}; other processes took ${otherPct(x.r.cores.serverCores)} of the server core(s), ${otherPct(x.r.cores.clientCores)} of the client core(s)`);
  }
  return { text: lines.join('\n'), summary: { figures: f } };
}
