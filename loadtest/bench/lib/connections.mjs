// The connections scenario: C idle authenticated connections to one node.
// Measures handshakes per second (first connect to last welcome), the server
// CPU per handshake, and the server's RSS growth per connection (VmRSS before
// and after, once the connections are idle). Every target runs with its V8
// inspector on a loopback port, and both readings are taken right after a
// full GC in the server process (inspectMemory), so that garbage left from
// the handshakes and V8's young generation grown meanwhile are not counted
// as what a connection keeps. The peer targets (peers.mjs) connect with their
// own client: Soketi's Pusher connection (no auth: a public app key), Socket.IO's
// CONNECT with the bench JWT, which its server verifies.
import { coreBusy, coreTimes, procCpuSec, procRssKb, sleepMs, splitCores } from './proc.mjs';
import { clientOf, startTarget } from './peers.mjs';
import { SECRET, inspectMemory, pubgateMemory } from './targets.mjs';
import { forkWorkers, localPortRange, shares, stopWorkers } from './workers.mjs';

const cpuMsSince = (mark) => {
  const d = process.cpuUsage(mark);
  return (d.user + d.system) / 1000;
};

/** sc: { connections, workers, connectConcurrency, settleSec, settleBeforeSec }; ctx as in delivery.mjs */
export async function runConnections(sc, target, ctx) {
  const topo = await startTarget(target, { inspect: true, ctx });
  const srv = topo.nodes[0];
  const client = clientOf(target);
  const nWorkers = sc.workers || Math.max(2, Math.ceil(sc.connections / 5000));
  const workers = forkWorkers(nWorkers, undefined, client.script);
  try {
    await Promise.all(workers.map((w, i) => w.call('init', { host: '127.0.0.1', port: srv.port, tokenIn: ctx.tokenIn, localPorts: localPortRange(i, nWorkers), ...client.init })));
    // Warm-up: the handshake path is compiled and the allocator has its first pages before the "before" figure.
    await Promise.all(workers.map((w, i) => w.call('connect', {
      count: 200, base: 1_000_000 + i * 200, secret: SECRET, concurrency: 16, timeoutMs: 10_000, phaseTimeoutMs: 30_000,
    }, 60_000)));
    await Promise.all(workers.map((w) => w.call('drop')));
    await sleepMs((sc.settleBeforeSec ?? 1) * 1000);

    // A full GC in the server, then its VmRSS and its own view of its heap (undefined: no inspector answer, RSS as it is).
    const gc0 = await inspectMemory(srv.inspectPort);
    const mem0 = srv.adminPort ? await pubgateMemory(srv.adminPort) : undefined;
    const rss0 = procRssKb(srv.pid);
    const cpu0 = procCpuSec(srv.pid);
    const cores0 = coreTimes();
    const main0 = process.cpuUsage();
    const share = shares(sc.connections, nWorkers);
    let base = 0;
    const res = await Promise.all(workers.map((w, i) => {
      const b = base;
      base += share[i];
      return w.call('connect', {
        count: share[i], base: b, secret: SECRET, concurrency: sc.connectConcurrency, timeoutMs: 15_000, phaseTimeoutMs: 90_000,
      }, 120_000);
    }));
    const cpu1 = procCpuSec(srv.pid);
    const cores1 = coreTimes();
    const rssPeak = procRssKb(srv.pid);
    const mainCpuMs = cpuMsSince(main0);

    const ok = res.reduce((a, r) => a + r.ok, 0);
    const failed = res.reduce((a, r) => a + r.failed, 0);
    const errors = {};
    for (const r of res) for (const [k, v] of Object.entries({ ...r.errors, ...r.socketErrors })) errors[k] = (errors[k] ?? 0) + v;
    const t0 = Math.min(...res.map((r) => r.t0));
    const t1 = Math.max(...res.map((r) => r.t1));
    const wallSec = (t1 - t0) / 1000;
    const serverCpuSec = cpu1 - cpu0;
    const clientCpuSec = (res.reduce((a, r) => a + r.cpuMs, 0) + mainCpuMs) / 1000;
    const cores = coreBusy(cores0, cores1);
    const serverCoreFrac = serverCpuSec / wallSec / ctx.serverCores;
    const clientCoreFrac = clientCpuSec / wallSec / ctx.clientCores;

    // Idle: let the server settle, then read its RSS and check every connection is still open.
    await sleepMs(sc.settleSec * 1000);
    const gc1 = await inspectMemory(srv.inspectPort);
    const rss1 = procRssKb(srv.pid);
    const mem1 = srv.adminPort ? await pubgateMemory(srv.adminPort) : undefined;
    // Per connection, in KiB: what the server's V8 heap and external memory grew by; the
    // rest of the RSS growth is native (uWS sockets, malloc) plus heap pages not yet reused.
    let memPerConn;
    if (mem0 && mem1 && ok > 0) {
      const per = (k) => (mem1[k] - mem0[k]) / 1024 / ok;
      memPerConn = {
        heapUsed: per('heapUsed'), heapTotal: per('heapTotal'), oldUsed: per('oldUsed'), newUsed: per('newUsed'), newTotal: per('newTotal'), external: per('external'),
      };
    }
    topo.assertAlive();
    const still = await Promise.all(workers.map((w) => w.call('count', { latency: false }).then(() => w.call('stats'))));
    const open = still.reduce((a, s) => a + s.open, 0);
    return {
      ok: true,
      connections: ok,
      failed,
      errors,
      open,
      handshakesPerSec: ok / wallSec,
      wallSec,
      serverCpuSec,
      usPerHandshake: ok > 0 ? (serverCpuSec * 1e6) / ok : NaN,
      serverCoreFrac,
      clientCpuSec,
      clientCoreFrac,
      cores,
      serverCores: splitCores(cores, ctx.serverCpuList, serverCoreFrac),
      clientCores: splitCores(cores, ctx.clientCpuList, clientCoreFrac),
      rss0Kb: rss0,
      rssPeakKb: rssPeak,
      rss1Kb: rss1,
      kbPerConn: ok > 0 ? (rss1 - rss0) / ok : NaN,
      // Whether both readings followed a full GC; the V8 heap (used) and external memory per connection, from the process itself.
      gc: Boolean(gc0 && gc1),
      heapKbPerConn: gc0 && gc1 && ok > 0 ? (gc1.heapUsed - gc0.heapUsed) / 1024 / ok : NaN,
      externalKbPerConn: gc0 && gc1 && ok > 0 ? (gc1.external - gc0.external) / 1024 / ok : NaN,
      memPerConn,
    };
  } finally {
    await stopWorkers(workers);
    await topo.stop();
  }
}
