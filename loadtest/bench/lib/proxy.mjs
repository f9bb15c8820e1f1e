// The proxy scenario (issue 14): what the connect proxy and the subscribe
// proxy cost a node, against a local backend that answers at once
// (proxy-backend.mjs, a child process on the client CPUs). pubgate only; one
// node (embedded broker) configured with PUBGATE_CONNECT_PROXY_URL,
// PUBGATE_SUBSCRIBE_PROXY_URL, PUBGATE_PROXY_KEY and a namespace px:* with
// subscribeProxy. Within each round, in the same server process, the two
// kinds of each part are measured in turn (the order rotates round by round):
//
//   handshakes  N upgrades with an HS256 token in the Authorization header
//       ("jwt"), and N upgrades without a token carrying a session cookie
//       ("proxy": the node posts it to the connect proxy, which answers 200
//       with user, expiresIn and channels); every upgrade waits for its
//       welcome; at most --connect-concurrency per client process in flight.
//       Then they are dropped (TCP reset) before the next block.
//   subscribes  S connections (tokens allowing bench*), each subscribing to R
//       channels of its own one after another, all S at once: "plain" on
//       bench:* (the claims allow it), "proxy" on px:* (the claims do not,
//       the namespace has subscribeProxy: the node asks the backend, which
//       answers {"allow":true}). Then unsubscribed, outside the measure.
//
// Per block: the node's CPU (/proc schedstat, ns) from the moment the server
// and the backend were idle to the moment they were idle again, less their
// idle rate, per operation; the backend's CPU per request it received; the
// rate (operations ÷ first start to last welcome/reply). The node's CPU per
// proxied call is the difference between the two kinds of the same round.
// The backend counts the requests and the TCP connections it accepted: the
// node's fetch keeps its connections alive, so connections stay near the
// calls in flight, far under the requests. In-flight calls stay under
// PUBGATE_PROXY_CONCURRENCY (default 256) by construction; any call refused
// anyway (`unavailable`, pubgate_proxy_requests_total{result="overloaded"})
// is reported on its own, as is every failed handshake (uWS #1928: an async
// upgrade can be cut when the client sends `Connection: close`; these
// clients send `Connection: Upgrade`).
import { fork } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { checkAll, clients, coreMark, cpuWindow, idleRate, otherPct, table } from './presence.mjs';
import { fmtNum, median } from './stats.mjs';
import { SECRET, cleanEnv, startTopology } from './targets.mjs';
import { shares, stopWorkers } from './workers.mjs';

export const PROXY_SCENARIOS = ['proxy'];
/** The namespaces of the proxy scenario: px:* asks the subscribe proxy. */
export const PROXY_NAMESPACES = JSON.stringify([{ pattern: 'px:*', subscribeProxy: true }]);
export const PROXY_KEY = 'pubgate-bench-proxy-key';
const BACKEND = fileURLToPath(new URL('./proxy-backend.mjs', import.meta.url));

/** The two kinds of each part: the first is the one without a proxy. */
export const PARTS = { handshake: ['jwt', 'proxy'], subscribe: ['plain', 'proxy'] };

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** Forks the backend; resolves once it listens. stats() answers its counts so far. */
function startBackend() {
  const p = fork(BACKEND, [], { env: { ...cleanEnv(), BENCH_PROXY_KEY: PROXY_KEY }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  let seq = 0;
  let exited = false;
  p.on('exit', () => {
    exited = true;
    for (const w of waiting.values()) w.reject(new Error('proxy backend exited'));
    waiting.clear();
  });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('proxy backend did not listen within 10 s')), 10_000);
    p.on('message', (m) => {
      if (m.port !== undefined) {
        clearTimeout(t);
        resolve({
          pid: p.pid,
          port: m.port,
          stats() {
            if (exited) return Promise.reject(new Error('proxy backend exited'));
            const s = ++seq;
            return new Promise((res, rej) => {
              const guard = setTimeout(() => {
                waiting.delete(s);
                rej(new Error('proxy backend stats timed out'));
              }, 10_000);
              waiting.set(s, { resolve: (v) => (clearTimeout(guard), res(v)), reject: (e) => (clearTimeout(guard), rej(e)) });
              p.send({ cmd: 'stats', seq: s });
            });
          },
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
    p.once('exit', (code) => reject(new Error(`proxy backend exited (${code}) before listening`)));
  });
}

/** The node's proxy calls and refused handshakes so far, from its /metrics. */
function nodeCounts(adminPort) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/metrics', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        const out = { proxy: {}, handshakeRejections: {} };
        for (const m of text.matchAll(/^pubgate_proxy_requests_total\{([^}]*)\} (\S+)$/gm)) {
          const proxy = /proxy="([^"]*)"/.exec(m[1])?.[1];
          const result = /result="([^"]*)"/.exec(m[1])?.[1];
          if (Number(m[2]) > 0) out.proxy[`${proxy} ${result}`] = Number(m[2]);
        }
        for (const m of text.matchAll(/^pubgate_handshake_rejections_total\{reason="([^"]*)"[^}]*\} (\S+)$/gm)) {
          if (Number(m[2]) > 0) out.handshakeRejections[m[1]] = Number(m[2]);
        }
        resolve(out);
      });
    });
    req.setTimeout(5000, () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

const addErrors = (into, from) => {
  for (const [k, v] of Object.entries(from ?? {})) into[k] = (into[k] ?? 0) + v;
  return into;
};

/** sc: { connections, connectConcurrency, subscribers, reps, rounds, workers }; leg: { label } */
export async function runProxy(sc, leg, ctx) {
  const backend = await startBackend();
  let topo;
  let workers = [];
  try {
    const url = (path) => `http://127.0.0.1:${backend.port}${path}`;
    topo = await startTopology('pubgate', {
      cluster: false,
      cpus: ctx.serverCpus,
      profileDir: ctx.profileDir,
      pubgateMain: ctx.pubgateMain,
      pubgateNode: ctx.pubgateNode,
      env: {
        PUBGATE_CONNECT_PROXY_URL: url('/connect'),
        PUBGATE_SUBSCRIBE_PROXY_URL: url('/subscribe'),
        PUBGATE_PROXY_KEY: PROXY_KEY,
        PUBGATE_NAMESPACES: PROXY_NAMESPACES,
        // R subscribes and R unsubscribes per connection and kind, rounds apart by well under a second:
        // the per-connection frame rate (50/s) would refuse some; it costs both kinds the same.
        PUBGATE_CLIENT_FRAME_RATE: '0',
        ...ctx.pubgateEnv,
      },
    });
    const node = topo.nodes[0];
    const nW = sc.workers || 2;
    workers = await clients(nW, topo.nodes, ctx);
    // The backend is measured beside the node: both must be idle for a window to start and end.
    const procs = [node, backend];
    const idle = await idleRate(procs, topo.nodes);
    const blocks = [];

    /** N upgrades of `kind` (jwt: token; proxy: cookie), spread over the workers; then dropped. */
    async function handshakes(kind, round) {
      const share = shares(sc.connections, nW);
      const b0 = await backend.stats();
      const win = await cpuWindow(procs, idle);
      let base = 0;
      const res = await Promise.all(workers.map((w, i) => {
        const b = base;
        base += share[i];
        return w.call('connect', {
          group: 'hs', count: share[i], base: b, secret: SECRET, cookie: kind === 'proxy', userPrefix: 'bench-hs-',
          concurrency: sc.connectConcurrency, timeoutMs: 15_000, phaseTimeoutMs: 90_000, retries: 0,
        }, 120_000);
      }));
      const { ns } = await win.end();
      const b1 = await backend.stats();
      await Promise.all(workers.map((w) => w.call('dropGroup', { group: 'hs' })));
      topo.assertAlive();
      const errors = {};
      for (const r of res) addErrors(errors, r.errors);
      return {
        round, part: 'handshake', kind,
        ops: sum(res.map((r) => r.ok)),
        failed: sum(res.map((r) => r.failed)),
        errors,
        wallMs: Math.max(...res.map((r) => r.t1)) - Math.min(...res.map((r) => r.t0)),
        nodeNs: ns[0],
        backendNs: ns[1],
        backendReqs: b1.connect - b0.connect,
        backendConns: b1.connections - b0.connections,
      };
    }

    /** Every subscriber subscribes to its R channels of `kind` one after another, all at once; then unsubscribes. */
    async function subscribes(kind, round) {
      const spec = { prefix: kind === 'proxy' ? 'px:s' : 'bench:s', perConn: sc.reps, total: sc.subscribers * sc.reps };
      const b0 = await backend.stats();
      const win = await cpuWindow(procs, idle);
      const res = await Promise.all(workers.map((w) => w.call('subscribeAll', { group: 'subs', spec, oneAtATime: true, timeoutMs: 30_000 }, 120_000)));
      const { ns } = await win.end();
      const b1 = await backend.stats();
      checkAll(await Promise.all(workers.map((w) => w.call('unsubscribeAll', { group: 'subs', spec, timeoutMs: 30_000 }, 120_000))), `unsubscribe ${kind}`);
      topo.assertAlive();
      const errors = {};
      for (const r of res) addErrors(errors, r.errors);
      return {
        round, part: 'subscribe', kind,
        ops: sum(res.map((r) => r.ok)),
        failed: sum(res.map((r) => r.failed)),
        errors,
        wallMs: Math.max(...res.map((r) => r.t1)) - Math.min(...res.map((r) => r.t0)),
        nodeNs: ns[0],
        backendNs: ns[1],
        backendReqs: b1.subscribe - b0.subscribe,
        backendConns: b1.connections - b0.connections,
      };
    }

    // The subscribers: JWT connections held for the whole run, spread over the workers.
    const sshare = shares(sc.subscribers, nW);
    let sbase = 0;
    await Promise.all(workers.map((w, i) => {
      const b = sbase;
      sbase += sshare[i];
      return w.call('connect', { group: 'subs', count: sshare[i], base: b, secret: SECRET, concurrency: 32, timeoutMs: 15_000, phaseTimeoutMs: 60_000, retries: 3 }, 120_000)
        .then((r) => {
          if (r.ok < sshare[i]) throw new Error(`subscribers: only ${r.ok} of ${sshare[i]} connections opened: ${JSON.stringify(r.errors)}`);
        });
    }));

    const mark = coreMark([node], [...workers.map((w) => w.pid), backend.pid]);
    let backend0;
    for (let round = 0; round <= sc.rounds; round++) {
      // Round 0 warms up (JIT, the backend's keep-alive connections) and is not counted.
      if (round === 1) backend0 = await backend.stats();
      for (const [part, kinds] of Object.entries(PARTS)) {
        for (let j = 0; j < kinds.length; j++) {
          const kind = kinds[(j + round) % kinds.length];
          const b = part === 'handshake' ? await handshakes(kind, round) : await subscribes(kind, round);
          if (round > 0) blocks.push(b);
        }
      }
    }
    backend0 ??= await backend.stats();
    const cores = mark(ctx);
    const backendEnd = await backend.stats();
    const counts = await nodeCounts(node.adminPort);
    return {
      ok: true,
      blocks,
      backend: {
        // Over the measured rounds (round 0 and the subscribers' setup left out).
        connect: backendEnd.connect - backend0.connect,
        subscribe: backendEnd.subscribe - backend0.subscribe,
        connections: backendEnd.connections - backend0.connections,
        // Over the whole run.
        total: backendEnd,
      },
      node: counts,
      cores,
      idleUsPerSec: sum(idle),
      inFlight: { handshakes: nW * sc.connectConcurrency, subscribes: sc.subscribers },
    };
  } finally {
    await stopWorkers(workers);
    await topo?.stop();
    await backend.stop();
  }
}

/** Median and range of a list, ignoring what is not a finite number. */
function mmm(xs) {
  const v = xs.filter((x) => Number.isFinite(x));
  return { median: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN, n: v.length };
}

/**
 * The figures of the blocks of one or more runs (pure): per part, per kind
 * the medians over the blocks of operations/s, node µs and backend µs per
 * operation, and what failed; and over the rounds (same run, same round: the
 * two kinds measured minutes apart at most) the proxy kind against the other
 * one: the ratio of their rates, the ratio of their node CPU per operation,
 * and the difference of their node CPU (µs per proxied call).
 * blocks: [{ run, round, part, kind, ops, failed, errors, wallMs, nodeNs, backendNs, backendReqs, backendConns }]
 */
export function proxyFigures(blocks) {
  const out = {};
  for (const [part, [base, proxied]] of Object.entries(PARTS)) {
    const mine = blocks.filter((b) => b.part === part);
    if (mine.length === 0) continue;
    const perSec = (b) => (b.wallMs > 0 ? b.ops / (b.wallMs / 1000) : NaN);
    const nodeUs = (b) => (b.ops > 0 ? b.nodeNs / 1000 / b.ops : NaN);
    const backendUs = (b) => (b.backendReqs > 0 ? b.backendNs / 1000 / b.backendReqs : NaN);
    const kinds = {};
    for (const kind of [base, proxied]) {
      const ks = mine.filter((b) => b.kind === kind);
      const errors = {};
      for (const b of ks) addErrors(errors, b.errors);
      kinds[kind] = {
        perSec: mmm(ks.map(perSec)),
        nodeUs: mmm(ks.map(nodeUs)),
        backendUs: mmm(ks.map(backendUs)),
        ops: sum(ks.map((b) => b.ops)),
        failed: sum(ks.map((b) => b.failed)),
        errors,
        backendReqs: sum(ks.map((b) => b.backendReqs)),
        backendConns: sum(ks.map((b) => b.backendConns)),
        blocks: ks.length,
      };
    }
    const pairs = [];
    for (const p of mine.filter((b) => b.kind === proxied)) {
      const q = mine.find((b) => b.kind === base && b.run === p.run && b.round === p.round);
      if (!q) continue;
      pairs.push({
        run: p.run, round: p.round,
        rateRatio: perSec(p) / perSec(q),
        cpuRatio: nodeUs(p) / nodeUs(q),
        diffUs: nodeUs(p) - nodeUs(q),
      });
    }
    out[part] = {
      base, proxied, kinds, pairs,
      rateRatio: mmm(pairs.map((x) => x.rateRatio)),
      cpuRatio: mmm(pairs.map((x) => x.cpuRatio)),
      diffUs: mmm(pairs.map((x) => x.diffUs)),
    };
  }
  return out;
}

const rng = (m, d) => `${fmtNum(m.median, d)} (${fmtNum(m.min, d)}–${fmtNum(m.max, d)})`;

export function proxyShort(r) {
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  const f = proxyFigures(r.blocks);
  const h = f.handshake;
  const s = f.subscribe;
  return `handshakes/s jwt ${fmtNum(h.kinds.jwt.perSec.median)} proxy ${fmtNum(h.kinds.proxy.perSec.median)}, ` +
    `node +${fmtNum(h.diffUs.median, 1)} µs per proxied handshake; subscribes/s plain ${fmtNum(s.kinds.plain.perSec.median)} proxy ${fmtNum(s.kinds.proxy.perSec.median)}, ` +
    `+${fmtNum(s.diffUs.median, 1)} µs per proxied subscribe`;
}

export function formatProxy(title, sc, runs) {
  const lines = [`\n== ${title}`];
  const ok = runs.filter((x) => x.r.ok);
  const all = ok.flatMap((x) => x.r.blocks.map((b) => ({ ...b, run: x.run })));
  const f = proxyFigures(all);
  const what = {
    handshake: `${fmtNum(sc.connections)} upgrades per block, each to its welcome, ≤ ${sc.workers || 2} × ${sc.connectConcurrency} in flight`,
    subscribe: `${sc.subscribers} connections × ${sc.reps} subscribes one after another per block (≤ ${sc.subscribers} in flight)`,
  };
  for (const [part, p] of Object.entries(f)) {
    lines.push(`  ${part}s: ${what[part]}; medians (min–max) over ${p.kinds[p.proxied].blocks} blocks of each kind`);
    const rows = [p.base, p.proxied].map((k) => {
      const x = p.kinds[k];
      return [k, rng(x.perSec, 0), rng(x.nodeUs, 1), k === p.base ? '' : rng(x.backendUs, 1), fmtNum(x.ops), fmtNum(x.backendReqs), fmtNum(x.backendConns),
        x.failed === 0 ? '0' : `${x.failed} ${JSON.stringify(x.errors)}`];
    });
    lines.push(table(['kind', `${part}s/s`, `node µs/${part}`, 'backend µs/request', 'ok', 'backend requests', 'backend TCP conns', 'failed'], rows));
    lines.push(`  ${p.proxied} against ${p.base}, per round (same process, same round): rate ×${rng(p.rateRatio, 2)}, node CPU ×${rng(p.cpuRatio, 2)}, ` +
      `node CPU per proxied call +${rng(p.diffUs, 1)} µs (${p.pairs.length} rounds)`);
  }
  const out = { figures: f, runs: {} };
  for (const x of runs) {
    if (!x.r.ok) {
      lines.push(`  run ${x.run} ${x.target} did not run: ${x.r.error.split('\n').join('\n    ')}`);
      continue;
    }
    const r = x.r;
    const one = proxyFigures(r.blocks.map((b) => ({ ...b, run: x.run })));
    const nonAllow = Object.entries(r.node?.proxy ?? {}).filter(([k]) => !k.endsWith(' allow'));
    const conns = r.backend.connections;
    lines.push(`  run ${x.run}: handshake node CPU jwt ${fmtNum(one.handshake.kinds.jwt.nodeUs.median, 1)} µs, proxy ${fmtNum(one.handshake.kinds.proxy.nodeUs.median, 1)} µs; ` +
      `subscribe plain ${fmtNum(one.subscribe.kinds.plain.nodeUs.median, 1)} µs, proxy ${fmtNum(one.subscribe.kinds.proxy.nodeUs.median, 1)} µs; ` +
      `backend received ${fmtNum(r.backend.connect)} connect + ${fmtNum(r.backend.subscribe)} subscribe requests in the measured rounds over ` +
      `${conns === 0 ? 'no new TCP connection (kept alive since the warm-up)' : `${fmtNum(conns)} new TCP connections`} ` +
      `(whole run ${fmtNum(r.backend.total.connect + r.backend.total.subscribe)} requests over ${fmtNum(r.backend.total.connections)} TCP connections, ` +
      `at most ${r.backend.total.maxOpen} open at once, ${r.backend.total.unauthorized + r.backend.total.bad_request + r.backend.total.not_found} refused); ` +
      `node proxy calls not allowed: ${nonAllow.length ? JSON.stringify(Object.fromEntries(nonAllow)) : 'none'}; ` +
      `handshake rejections: ${Object.keys(r.node?.handshakeRejections ?? {}).length ? JSON.stringify(r.node.handshakeRejections) : 'none'}; ` +
      `servers idle ${fmtNum(r.idleUsPerSec)} µs/s (subtracted); other processes took ${otherPct(r.cores.serverCores)} of the server core(s), ${otherPct(r.cores.clientCores)} of the client core(s)`);
    out.runs[x.run] = { figures: one, backend: r.backend, node: r.node };
  }
  return { text: lines.join('\n'), summary: out };
}
