// The webhook scenarios (issue 16). pubgate only; the legs of a run are the
// brokers (redis: one redis-server and the node(s) on the server CPUs;
// embedded: the node(s) alone), alternated run by run. The receiver
// (webhook-receiver.mjs) is a child of the runner on the client CPUs that
// answers 200 at once, verifies one signature in ten, and tallies events,
// batch sizes and lag.
//
//   webhooks-delivery  One node with webhooks on. C connections (distinct
//       users) each subscribe to R fresh channels, all at once, then
//       unsubscribe from them, all at once: C × R channel_occupied and as many
//       channel_vacated, 2·C·R events per block. The block ends once the
//       receiver has them all. Per block: events ÷ (first to last receipt) =
//       the delivery rate; events ÷ (first subscribe sent to last receipt);
//       the tail (last receipt − last unsubscribe answered: how long the
//       queue took to drain after the events stopped coming); node (and
//       Redis) CPU per event, from /proc schedstat, idle to idle less the
//       idle rate, which includes the subscribes and unsubscribes that made
//       the events; lag (receipt − time_ms) p50/p99/max; events per request.
//   webhooks-subscribe  Two nodes side by side in the same run (each with its
//       own redis-server on the redis leg), one with webhooks off and one
//       with them on, with C connections each (R channels each). Per round,
//       in turn (the order rotates round by round): every connection
//       subscribes to R fresh channels (each the channel's first subscriber,
//       the worst case: an occupancy store call per subscribe), then
//       unsubscribes. Node (+ Redis) CPU per subscribe and per unsubscribe,
//       idle to idle; on the webhook node the window lasts until the receiver
//       has the phase's events, so it includes delivering them (occupied
//       or vacated, one per channel). Ratio on ÷ off within the same round.
import { fork, spawnSync } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { checkAll, coreMark, cpuWindow, idleRate, otherPct, table } from './presence.mjs';
import { sleepMs } from './proc.mjs';
import { fmtNum, median } from './stats.mjs';
import { SECRET, cleanEnv, startTopology } from './targets.mjs';
import { BENCH_WEBHOOK_SECRET } from './webhook-receiver.mjs';
import { forkWorkers, localPortRange, shares, stopWorkers } from './workers.mjs';

export const WEBHOOKS_SCENARIOS = ['webhooks-delivery', 'webhooks-subscribe'];
const RECEIVER = fileURLToPath(new URL('./webhook-receiver.mjs', import.meta.url));
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** Forks the receiver; resolves once it listens. stats() answers its tally since the last reset(). */
export function startReceiver() {
  const p = fork(RECEIVER, [], { env: cleanEnv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  let seq = 0;
  let exited = false;
  p.on('exit', () => {
    exited = true;
    for (const w of waiting.values()) w.reject(new Error('webhook receiver exited'));
    waiting.clear();
  });
  const ask = (cmd) => {
    if (exited) return Promise.reject(new Error('webhook receiver exited'));
    const s = ++seq;
    return new Promise((res, rej) => {
      const guard = setTimeout(() => {
        waiting.delete(s);
        rej(new Error(`webhook receiver: ${cmd} timed out`));
      }, 10_000);
      waiting.set(s, { resolve: (v) => (clearTimeout(guard), res(v)), reject: (e) => (clearTimeout(guard), rej(e)) });
      p.send({ cmd, seq: s });
    });
  };
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('webhook receiver did not listen within 10 s')), 10_000);
    p.on('message', (m) => {
      if (m.port !== undefined) {
        clearTimeout(t);
        resolve({
          pid: p.pid,
          port: m.port,
          url: `http://127.0.0.1:${m.port}/hook`,
          stats: () => ask('stats'),
          reset: () => ask('reset'),
          async stop() {
            if (exited) return;
            const gone = new Promise((r) => p.once('exit', r));
            p.kill('SIGKILL');
            await gone;
          },
        });
        return;
      }
      const w = waiting.get(m.seq);
      if (w) {
        waiting.delete(m.seq);
        w.resolve(m.stats);
      }
    });
    p.once('exit', (code) => reject(new Error(`webhook receiver exited (${code}) before listening`)));
  });
}

/** The node's webhook requests by result and events by result so far, from its /metrics. */
export function webhookCounts(adminPort) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/metrics', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve(parseWebhookCounts(text)));
    });
    req.setTimeout(5000, () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

/** pubgate_webhook_requests_total by result and pubgate_webhook_events_total by result (summed over names), from Prometheus text (pure). */
export function parseWebhookCounts(text) {
  const out = { requests: {}, events: {} };
  for (const m of text.matchAll(/^pubgate_webhook_requests_total\{([^}]*)\} (\S+)$/gm)) {
    const result = /result="([^"]*)"/.exec(m[1])?.[1];
    if (result && Number(m[2]) > 0) out.requests[result] = (out.requests[result] ?? 0) + Number(m[2]);
  }
  for (const m of text.matchAll(/^pubgate_webhook_events_total\{([^}]*)\} (\S+)$/gm)) {
    const result = /result="([^"]*)"/.exec(m[1])?.[1];
    if (result && Number(m[2]) > 0) out.events[result] = (out.events[result] ?? 0) + Number(m[2]);
  }
  return out;
}

/** Redis commands run so far (INFO commandstats): { command: calls } (pure parse). */
export function parseCommandStats(text) {
  const out = {};
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

function commandStats(redis) {
  if (!redis) return undefined;
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), 'INFO', 'commandstats'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? parseCommandStats(r.stdout) : undefined;
}

/** Redis calls per unit between two commandStats() snapshots, the busiest first (pure). */
export function callsPer(a, b, units) {
  if (!a || !b || !(units > 0)) return undefined;
  const out = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d > 0) out[k] = d / units;
  }
  return Object.fromEntries(Object.entries(out).sort((x, y) => y[1] - x[1]));
}

function webhookEnv(receiver) {
  return { PUBGATE_WEBHOOK_URL: receiver.url, PUBGATE_WEBHOOK_SECRET: BENCH_WEBHOOK_SECRET };
}

function topologyFor(leg, ctx, env) {
  return startTopology('pubgate', {
    cluster: false,
    redis: leg.broker === 'redis',
    cpus: ctx.serverCpus,
    profileDir: ctx.profileDir,
    pubgateMain: ctx.pubgateMain,
    pubgateNode: ctx.pubgateNode,
    // Each connection sends R subscribes and R unsubscribes at once: the per-connection frame rate (50/s) would refuse some.
    env: { PUBGATE_CLIENT_FRAME_RATE: '0', ...env, ...ctx.pubgateEnv },
  });
}

/** Client processes `from…from+n−1` of `total` (distinct local port ranges) on `node`. */
async function clientsOn(n, from, total, node, ctx) {
  const workers = forkWorkers(n);
  await Promise.all(workers.map((w, i) => w.call('init', { host: '127.0.0.1', port: node.port, tokenIn: ctx.tokenIn, localPorts: localPortRange(from + i, total) })));
  return workers;
}

/** Opens C connections of group `subs` spread over `workers`; throws unless all opened. */
async function openAll(workers, C, userPrefix) {
  const share = shares(C, workers.length);
  let base = 0;
  await Promise.all(workers.map((w, i) => {
    const b = base;
    base += share[i];
    return w.call('connect', { group: 'subs', count: share[i], base: b, secret: SECRET, userPrefix, concurrency: 32, timeoutMs: 15_000, phaseTimeoutMs: 120_000, retries: 3 }, 180_000)
      .then((r) => {
        if (r.ok < share[i]) throw new Error(`only ${r.ok} of ${share[i]} connections opened: ${JSON.stringify({ ...r.errors, ...r.socketErrors })}`);
      });
  }));
}

/** Waits until the receiver has at least `n` events (at most `ms`); answers its stats then. */
async function receiverHas(receiver, n, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = await receiver.stats();
    if (s.events >= n) return s;
    if (Date.now() > deadline) throw new Error(`the receiver got ${s.events} of ${n} events within ${ms} ms`);
    await sleepMs(20);
  }
}

function checkReceived(s, expected, what) {
  if (s.events !== expected) throw new Error(`${what}: the receiver got ${s.events} events, expected ${expected}`);
  if (s.duplicates > 0) throw new Error(`${what}: ${s.duplicates} duplicate events`);
  if (s.refused > 0) throw new Error(`${what}: ${s.refused} signatures refused by the reference verifier`);
  if (s.unreadable > 0) throw new Error(`${what}: ${s.unreadable} unreadable requests`);
}

// ---- webhooks-delivery ------------------------------------------------------

/** sc: { connections, perConn, rounds, workers, drainMs }; leg: { broker } */
async function runDeliveryBlocks(sc, leg, ctx) {
  const receiver = await startReceiver();
  let topo;
  let workers = [];
  try {
    topo = await topologyFor(leg, ctx, webhookEnv(receiver));
    const node = topo.nodes[0];
    const nW = sc.workers || 2;
    workers = await clientsOn(nW, 0, nW, node, ctx);
    await openAll(workers, sc.connections, 'bench-wh-');
    const procs = topo.redis ? [node, topo.redis] : [node];
    const idle = await idleRate(procs, []);
    const N = sc.connections * sc.perConn;
    const blocks = [];
    const mark = coreMark([...procs, receiver], workers.map((w) => w.pid));
    let cmd0;
    for (let round = 0; round <= sc.rounds; round++) {
      if (round === 1) cmd0 = commandStats(topo.redis);
      // Round 0 warms up (JIT, Lua scripts, the deliverer's connections) and is not counted.
      const spec = { prefix: `bench:wd${round}:`, perConn: sc.perConn, total: N };
      await receiver.reset();
      const win = await cpuWindow(procs, idle);
      const t0 = Date.now();
      checkAll(await Promise.all(workers.map((w) => w.call('subscribeAll', { group: 'subs', spec, timeoutMs: 60_000 }, 90_000))), 'subscribe');
      const tSub = Date.now();
      checkAll(await Promise.all(workers.map((w) => w.call('unsubscribeAll', { group: 'subs', spec, timeoutMs: 60_000 }, 90_000))), 'unsubscribe');
      const tProd = Date.now();
      const s = await receiverHas(receiver, 2 * N, sc.drainMs);
      const { ns } = await win.end();
      topo.assertAlive();
      // Anything more (a duplicate, a stray retry) would have come by now.
      const after = await receiver.stats();
      checkReceived(after, 2 * N, `round ${round}`);
      if (round > 0) {
        blocks.push({
          round, channels: N, events: s.events, requests: s.requests, batch: s.batch, lag: s.lag, byName: s.byName,
          subMs: tSub - t0, prodMs: tProd - t0, deliveryMs: s.last - s.first, totalMs: s.last - t0, tailMs: s.last - tProd,
          nodeNs: ns[0], redisNs: topo.redis ? ns[1] : 0,
        });
      }
    }
    const cores = mark(ctx);
    const counts = await webhookCounts(node.adminPort);
    const redisCalls = callsPer(cmd0, commandStats(topo.redis), sum(blocks.map((b) => b.events)));
    return { ok: true, blocks, cores, counts, redisCalls, redisCallsPer: 'event' };
  } finally {
    await stopWorkers(workers);
    await topo?.stop();
    await receiver.stop();
  }
}

/** Medians (min–max) of a list (pure). */
export function mmm(xs) {
  const v = xs.filter((x) => Number.isFinite(x));
  return { median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN, n: v.length };
}

/** The figures of webhooks-delivery blocks (pure): rates, CPU per event, lag, batch sizes; medians (min–max) over blocks. */
export function deliveryFigures(blocks) {
  const per = (b, k) => (b.events > 0 ? b[k] / 1000 / b.events : NaN);
  return {
    blocks: blocks.length,
    events: sum(blocks.map((b) => b.events)),
    requests: sum(blocks.map((b) => b.requests)),
    deliveryPerSec: mmm(blocks.map((b) => (b.deliveryMs > 0 ? b.events / (b.deliveryMs / 1000) : NaN))),
    endToEndPerSec: mmm(blocks.map((b) => (b.totalMs > 0 ? b.events / (b.totalMs / 1000) : NaN))),
    prodMs: mmm(blocks.map((b) => b.prodMs)),
    tailMs: mmm(blocks.map((b) => b.tailMs)),
    nodeUs: mmm(blocks.map((b) => per(b, 'nodeNs'))),
    redisUs: mmm(blocks.map((b) => per(b, 'redisNs'))),
    lagP50: mmm(blocks.map((b) => b.lag.p50)),
    lagP99: mmm(blocks.map((b) => b.lag.p99)),
    lagMax: mmm(blocks.map((b) => b.lag.max)),
    batchMean: mmm(blocks.map((b) => b.batch.mean)),
    batchP50: mmm(blocks.map((b) => b.batch.p50)),
    batchMin: Math.min(...blocks.map((b) => b.batch.min)),
    batchMax: Math.max(...blocks.map((b) => b.batch.max)),
    fullShare: blocks.length ? sum(blocks.map((b) => b.batch.full)) / sum(blocks.map((b) => b.requests)) : NaN,
  };
}

// ---- webhooks-subscribe -----------------------------------------------------

/** sc: { connections, perConn, rounds, workers, drainMs }; leg: { broker } */
async function runSubscribeBlocks(sc, leg, ctx) {
  const receiver = await startReceiver();
  const topos = {};
  const workers = {};
  try {
    topos.off = await topologyFor(leg, ctx, {});
    topos.on = await topologyFor(leg, ctx, webhookEnv(receiver));
    const nW = sc.workers || 1;
    workers.off = await clientsOn(nW, 0, 2 * nW, topos.off.nodes[0], ctx);
    workers.on = await clientsOn(nW, nW, 2 * nW, topos.on.nodes[0], ctx);
    await openAll(workers.off, sc.connections, 'bench-whs-');
    await openAll(workers.on, sc.connections, 'bench-whs-');
    const procsOf = (k) => (topos[k].redis ? [topos[k].nodes[0], topos[k].redis] : [topos[k].nodes[0]]);
    const idle = { off: await idleRate(procsOf('off'), []), on: await idleRate(procsOf('on'), []) };
    const N = sc.connections * sc.perConn;
    const blocks = [];

    async function phase(kind, cmd, spec, what) {
      const procs = procsOf(kind);
      if (kind === 'on') await receiver.reset();
      const win = await cpuWindow(procs, idle[kind]);
      checkAll(await Promise.all(workers[kind].map((w) => w.call(cmd, { group: 'subs', spec, timeoutMs: 60_000 }, 90_000))), what);
      if (kind === 'on') await receiverHas(receiver, N, sc.drainMs);
      const { ns } = await win.end();
      topos[kind].assertAlive();
      if (kind === 'on') checkReceived(await receiver.stats(), N, what);
      return { nodeNs: ns[0], redisNs: procs.length > 1 ? ns[1] : 0 };
    }

    const allProcs = [...procsOf('off'), ...procsOf('on'), receiver];
    const mark = coreMark(allProcs, [...workers.off, ...workers.on].map((w) => w.pid));
    const kinds = ['off', 'on'];
    let cmd0;
    for (let round = 0; round <= sc.rounds; round++) {
      if (round === 1) cmd0 = commandStats(topos.on.redis);
      // Round 0 warms up and is not counted.
      for (let j = 0; j < kinds.length; j++) {
        const kind = kinds[(j + round) % kinds.length];
        const spec = { prefix: `bench:ws${round}:`, perConn: sc.perConn, total: N };
        const sub = await phase(kind, 'subscribeAll', spec, `subscribe ${kind} round ${round}`);
        const unsub = await phase(kind, 'unsubscribeAll', spec, `unsubscribe ${kind} round ${round}`);
        if (round > 0) blocks.push({ round, kind, ops: N, sub, unsub });
      }
    }
    const cores = mark(ctx);
    const counts = await webhookCounts(topos.on.nodes[0].adminPort);
    const redisCalls = callsPer(cmd0, commandStats(topos.on.redis), sum(blocks.filter((b) => b.kind === 'on').map((b) => b.ops)));
    return { ok: true, blocks, cores, counts, redisCalls, redisCallsPer: 'subscribe+unsubscribe with webhooks on' };
  } finally {
    for (const k of ['off', 'on']) if (workers[k]) await stopWorkers(workers[k]);
    for (const k of ['off', 'on']) await topos[k]?.stop();
    await receiver.stop();
  }
}

/**
 * The figures of webhooks-subscribe blocks (pure): per kind, node, Redis and
 * node+Redis µs per subscribe, per unsubscribe and per pair; per run and
 * round, on ÷ off of the pair (node+Redis) and on − off (µs).
 */
export function subscribeFigures(blocks) {
  const us = (b, ph, k) => (b.ops > 0 ? b[ph][k] / 1000 / b.ops : NaN);
  const pair = (b) => us(b, 'sub', 'nodeNs') + us(b, 'sub', 'redisNs') + us(b, 'unsub', 'nodeNs') + us(b, 'unsub', 'redisNs');
  const kinds = {};
  for (const kind of ['off', 'on']) {
    const ks = blocks.filter((b) => b.kind === kind);
    kinds[kind] = {
      blocks: ks.length,
      subNode: mmm(ks.map((b) => us(b, 'sub', 'nodeNs'))),
      unsubNode: mmm(ks.map((b) => us(b, 'unsub', 'nodeNs'))),
      pairNode: mmm(ks.map((b) => us(b, 'sub', 'nodeNs') + us(b, 'unsub', 'nodeNs'))),
      pairRedis: mmm(ks.map((b) => us(b, 'sub', 'redisNs') + us(b, 'unsub', 'redisNs'))),
      pair: mmm(ks.map(pair)),
    };
  }
  const ratio = [];
  const diff = [];
  const nodeRatio = [];
  for (const b of blocks.filter((x) => x.kind === 'on')) {
    const q = blocks.find((x) => x.kind === 'off' && x.run === b.run && x.round === b.round);
    if (!q) continue;
    ratio.push(pair(b) / pair(q));
    diff.push(pair(b) - pair(q));
    nodeRatio.push((us(b, 'sub', 'nodeNs') + us(b, 'unsub', 'nodeNs')) / (us(q, 'sub', 'nodeNs') + us(q, 'unsub', 'nodeNs')));
  }
  return { kinds, ratio: mmm(ratio), diffUs: mmm(diff), nodeRatio: mmm(nodeRatio) };
}

// ---- the runner's side ---------------------------------------------------------

/** Runs one run of a webhook scenario on one leg (broker). */
export function runWebhooks(sc, leg, ctx) {
  return sc.name === 'webhooks-delivery' ? runDeliveryBlocks(sc, leg, ctx) : runSubscribeBlocks(sc, leg, ctx);
}

const rng = (m, d = 0) => `${fmtNum(m.median, d)} (${fmtNum(m.min, d)}–${fmtNum(m.max, d)})`;

export function webhooksShort(r, sc) {
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  if (sc.name === 'webhooks-delivery') {
    const f = deliveryFigures(r.blocks);
    return `${fmtNum(f.deliveryPerSec.median)} events/s, node ${fmtNum(f.nodeUs.median, 1)} µs/event, lag p50 ${fmtNum(f.lagP50.median)} ms p99 ${fmtNum(f.lagP99.median)} ms, ${fmtNum(f.batchMean.median, 1)} events/request`;
  }
  const f = subscribeFigures(r.blocks.map((b) => ({ ...b, run: 0 })));
  return `sub+unsub off ${fmtNum(f.kinds.off.pair.median, 1)} µs, on ${fmtNum(f.kinds.on.pair.median, 1)} µs, ×${fmtNum(f.ratio.median, 2)}`;
}

const countsText = (c) => (c ? `requests ${JSON.stringify(c.requests)}, events ${JSON.stringify(c.events)}` : 'metrics n/a');

export function formatWebhooks(title, sc, runs) {
  const lines = [`\n== ${title}`];
  const summary = {};
  for (const broker of [...new Set(runs.map((x) => x.target))]) {
    const ok = runs.filter((x) => x.target === broker && x.r.ok);
    const blocks = ok.flatMap((x) => x.r.blocks.map((b) => ({ ...b, run: x.run })));
    if (blocks.length === 0) {
      lines.push(`  ${broker}: no run completed`);
      continue;
    }
    if (sc.name === 'webhooks-delivery') {
      const f = deliveryFigures(blocks);
      summary[broker] = f;
      lines.push(`  ${broker}: medians (min–max) over ${f.blocks} blocks of ${fmtNum(2 * sc.connections * sc.perConn)} events (${fmtNum(f.events)} events in ${fmtNum(f.requests)} requests)`);
      lines.push(table(['figure', 'value'], [
        ['events/s delivered (first to last receipt)', rng(f.deliveryPerSec)],
        ['events/s end to end (first subscribe to last receipt)', rng(f.endToEndPerSec)],
        ['ms producing (subscribes + unsubscribes answered)', rng(f.prodMs)],
        ['ms of delivery after the last unsubscribe answered', rng(f.tailMs)],
        ['node µs/event (incl. the sub/unsub that made it)', rng(f.nodeUs, 1)],
        ['redis µs/event', rng(f.redisUs, 1)],
        ['lag p50 ms (receipt − time_ms)', rng(f.lagP50)],
        ['lag p99 ms', rng(f.lagP99)],
        ['lag max ms', rng(f.lagMax)],
        ['events/request mean', rng(f.batchMean, 1)],
        ['events/request p50', rng(f.batchP50)],
        ['events/request min / max', `${f.batchMin} / ${f.batchMax}`],
        ['requests of 100 events', `${fmtNum(f.fullShare * 100, 1)}%`],
      ]));
    } else {
      const f = subscribeFigures(blocks);
      summary[broker] = f;
      lines.push(`  ${broker}: µs of server CPU per fresh channel, medians (min–max) over ${f.kinds.on.blocks} blocks of ${fmtNum(sc.connections * sc.perConn)} channels each`);
      lines.push(table(['webhooks', 'node µs/subscribe', 'node µs/unsubscribe', 'node µs/pair', 'redis µs/pair', 'node+redis µs/pair'],
        ['off', 'on'].map((k) => {
          const x = f.kinds[k];
          return [k, rng(x.subNode, 1), rng(x.unsubNode, 1), rng(x.pairNode, 1), rng(x.pairRedis, 1), rng(x.pair, 1)];
        })));
      lines.push(`  on ÷ off, same round: node+redis ×${rng(f.ratio, 2)}, node alone ×${rng(f.nodeRatio, 2)}; on − off ${rng(f.diffUs, 1)} µs per subscribe+unsubscribe (incl. delivering its 2 events)`);
    }
  }
  for (const x of runs) {
    if (!x.r.ok) {
      lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
      continue;
    }
    const calls = x.r.redisCalls ? `; Redis calls per ${x.r.redisCallsPer}: ${Object.entries(x.r.redisCalls).map(([k, v]) => `${k} ${fmtNum(v, 2)}`).join(', ')}` : '';
    lines.push(`  run ${x.run} ${x.target}: node metrics ${countsText(x.r.counts)}${calls}; other processes took ${otherPct(x.r.cores.serverCores)} of the server core(s), ${otherPct(x.r.cores.clientCores)} of the client core(s)`);
  }
  return { text: lines.join('\n'), summary };
}
