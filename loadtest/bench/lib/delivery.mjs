// The delivery scenarios (fanout, latency, channels, cluster): subscribers on
// client processes, a publisher in the runner, counts and CPU on both sides.
//
//   max mode   publishes as fast as the API accepts them, with at most
//              `concurrency` requests in flight and at most `window` messages
//              per subscriber published but not yet received (so a slow
//              client cannot turn into slow-consumer closes on the server).
//   rate mode  one /v1/publish every 1/rate s; each message carries its send
//              time and every receipt is timed (latency).
//
// The peer targets (soketi, socketio; peers.mjs) run the same phases with
// their own client (peer-worker.mjs) and publish request (publishRequest).
import { coreBusy, coreTimes, procCpuSec, sleepMs, splitCores } from './proc.mjs';
import { createPublisher, makeData, makeJsonData } from './publisher.mjs';
import { LatencyHistogram } from './stats.mjs';
import { ONE_CHANNEL, channelPrefix, clientOf, publishRequest, startTarget, usesApiKey } from './peers.mjs';
import { API_KEY, SECRET } from './targets.mjs';
import { forkWorkers, localPortRange, shares, stopWorkers } from './workers.mjs';
import { nowMs } from './ws-client.mjs';

const cpuMsSince = (mark) => {
  const d = process.cpuUsage(mark);
  return (d.user + d.system) / 1000;
};

/**
 * sc: { name, cluster, subscribers, channels (0: one channel "bench"), batch,
 *       durationSec, warmupSec, rate (rate mode when > 0), size, concurrency,
 *       window, workers, latency, data ('pad' | 'json': see publisher.mjs),
 *       deflate (clients offer permessage-deflate), inflateEvery }
 * ctx: { serverCpus, serverCores, clientCores, tokenIn, profileDir, log }
 */
export async function runDelivery(sc, target, ctx) {
  const topo = await startTarget(target, { cluster: sc.cluster, batch: sc.batch, ctx });
  const client = clientOf(target);
  const nWorkers = sc.workers || Math.max(2, Math.ceil(sc.subscribers / 5000));
  let pump = () => undefined;
  const workers = forkWorkers(nWorkers, () => pump(), client.script);
  const pub = createPublisher({ port: topo.nodes[0].port, apiKey: usesApiKey(target) ? API_KEY : undefined, concurrency: sc.concurrency });
  try {
    // Subscribers: worker i connects to node i % nodes (cluster: half on each node).
    await Promise.all(workers.map((w, i) => w.call('init', {
      host: '127.0.0.1', port: topo.nodes[i % topo.nodes.length].port, tokenIn: ctx.tokenIn, localPorts: localPortRange(i, nWorkers),
      deflate: sc.deflate ?? false, inflateEvery: sc.inflateEvery ?? 61, ...client.init,
    })));
    const share = shares(sc.subscribers, nWorkers);
    const prefix = channelPrefix(target);
    const spec = sc.channels > 0 ? { kind: 'mod', prefix, count: sc.channels } : { kind: 'one', name: ONE_CHANNEL };
    let base = 0;
    const connected = await Promise.all(workers.map((w, i) => {
      const b = base;
      base += share[i];
      return w.call('connect', { count: share[i], base: b, secret: SECRET, concurrency: 32, timeoutMs: 10_000, phaseTimeoutMs: 60_000, subscribe: spec, retries: 3 }, 90_000);
    }));
    const subscribed = connected.reduce((a, r) => a + r.ok, 0);
    const setupErrors = {};
    for (const r of connected) for (const [k, v] of Object.entries(r.errors)) setupErrors[k] = (setupErrors[k] ?? 0) + v;
    if (subscribed < sc.subscribers) {
      const errs = connected.map((r) => JSON.stringify({ ...r.errors, ...r.socketErrors, closeFrames: r.closeCodes })).join(' ');
      throw new Error(`only ${subscribed} of ${sc.subscribers} subscribers connected: ${errs}`);
    }

    // Channel of the k-th message, and how many subscribers it reaches.
    const nCh = sc.channels > 0 ? sc.channels : 1;
    const subsOf = Array.from({ length: nCh }, (_, c) => (sc.channels > 0 ? Math.floor((sc.subscribers - 1 - c) / nCh) + 1 : sc.subscribers));
    const chName = Array.from({ length: nCh }, (_, c) => (sc.channels > 0 ? `${prefix}${c}` : ONE_CHANNEL));
    const data = (sc.data === 'json' ? makeJsonData : makeData)(sc.size);
    // The delivered frame is {"type":"message","channel":<channel>,"data":<data>}.
    const frameOverhead = '{"type":"message","channel":"","data":}'.length;
    let seq = 0;
    const received = () => workers.reduce((a, w) => a + w.progress, 0);

    /** Publishes for `durationMs`; resolves when every request was answered. */
    async function publishPhase(durationMs) {
      const st = { accepted: 0, expected: 0, sentDeliveries: 0, requests: 0, errors: {}, skipped: 0, frameBytes: 0 };
      const windowDeliveries = sc.window * sc.subscribers;
      const rcv0 = received();
      const send = () => {
        const t = nowMs();
        const msgs = [];
        let deliveries = 0;
        let frameBytes = 0;
        for (let j = 0; j < sc.batch; j++) {
          const c = seq++ % nCh;
          const d = data(t, chName[c]);
          msgs.push([chName[c], d]);
          deliveries += subsOf[c];
          frameBytes += frameOverhead + chName[c].length + d.length;
        }
        const { path, body } = publishRequest(target, msgs);
        st.sentDeliveries += deliveries;
        st.requests++;
        return pub.post(path, body).then((r) => {
          if (r.status === 200) {
            st.accepted += sc.batch;
            st.expected += deliveries;
            st.frameBytes += frameBytes;
          } else {
            st.sentDeliveries -= deliveries;
            const k = `${r.status} ${r.text.slice(0, 80)}`;
            st.errors[k] = (st.errors[k] ?? 0) + 1;
          }
        });
      };
      const t0 = nowMs();
      const end = t0 + durationMs;
      if (sc.rate > 0) {
        const interval = 1000 / sc.rate;
        let i = 0;
        const pending = [];
        while (nowMs() < end) {
          const due = t0 + i * interval;
          const wait = due - nowMs();
          if (wait > 0) await sleepMs(wait);
          if (pub.inflight < sc.concurrency) pending.push(send());
          else st.skipped++;
          i++;
        }
        await Promise.all(pending);
      } else {
        await new Promise((resolve) => {
          let stopped = false;
          const stopTimer = setTimeout(() => {
            stopped = true;
            if (pub.inflight === 0) resolve();
          }, durationMs);
          pump = () => {
            if (stopped) return;
            while (pub.inflight < sc.concurrency && st.sentDeliveries - (received() - rcv0) < windowDeliveries && nowMs() < end) {
              send().then(() => {
                if (stopped && pub.inflight === 0) resolve();
                else pump();
              });
            }
          };
          pump();
          void stopTimer;
        });
        pump = () => undefined;
      }
      st.publishMs = nowMs() - t0;
      return st;
    }

    /** Waits until `expected` messages arrived, or nothing arrived for `stallMs`, or `maxMs` passed. */
    async function drain(expected, stallMs = 2000, maxMs = 15_000) {
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
    }

    // Warm-up (JIT, buffers), then the measured phase.
    await Promise.all(workers.map((w) => w.call('count', { latency: false })));
    const warm = await publishPhase(sc.warmupSec * 1000);
    // Everything from the warm-up must have arrived before counting starts, or it would be counted as measured.
    await drain(warm.expected, 5000, 30_000);
    const warmStats = await Promise.all(workers.map((w) => w.call('stats')));
    const warmupMissing = warm.expected - warmStats.reduce((a, x) => a + x.messages, 0);

    await Promise.all(workers.map((w) => w.call('count', { latency: sc.latency })));
    for (const w of workers) w.progress = 0;
    const srv0 = topo.procs.map((p) => procCpuSec(p.pid));
    const cores0 = coreTimes();
    const main0 = process.cpuUsage();
    const tStart = nowMs();
    const st = await publishPhase(sc.durationSec * 1000);
    await drain(st.expected);
    const stats = await Promise.all(workers.map((w) => w.call('stats', {}, 60_000)));
    const cores1 = coreTimes();
    const srv1 = topo.procs.map((p) => procCpuSec(p.pid));
    const mainCpuMs = cpuMsSince(main0);
    topo.assertAlive();

    const deliveries = stats.reduce((a, s) => a + s.messages, 0);
    const tEnd = Math.max(tStart + st.publishMs, ...stats.map((s) => s.lastRecvMs || 0));
    const wallSec = (tEnd - tStart) / 1000;
    const serverProcs = topo.procs.map((p, i) => ({ name: p.name, cpuSec: srv1[i] - srv0[i] }));
    const serverCpuSec = serverProcs.reduce((a, p) => a + p.cpuSec, 0);
    const clientCpuSec = (stats.reduce((a, s) => a + s.cpuMs, 0) + mainCpuMs) / 1000;
    let latency;
    if (sc.latency) {
      const h = new LatencyHistogram();
      for (const s of stats) if (s.latency) h.mergeSparse(s.latency);
      latency = { n: h.n, p50: h.quantile(0.5), p90: h.quantile(0.9), p99: h.quantile(0.99), p999: h.quantile(0.999), max: h.max, mean: h.mean() };
    }
    const cores = coreBusy(cores0, cores1);
    const serverCoreFrac = serverCpuSec / wallSec / ctx.serverCores;
    const clientCoreFrac = clientCpuSec / wallSec / ctx.clientCores;
    const closeCodes = {};
    for (const s of stats) for (const [k, v] of Object.entries(s.closeCodes)) closeCodes[k] = (closeCodes[k] ?? 0) + v;
    const sum = (key) => stats.reduce((a, s) => a + (s[key] ?? 0), 0);
    const wireBytes = sum('wireBytes');
    const clientErrors = {};
    for (const s of stats) for (const [k, v] of Object.entries(s.errors ?? {})) clientErrors[k] = (clientErrors[k] ?? 0) + v;
    return {
      ok: true,
      deliveries,
      perSec: deliveries / wallSec,
      published: st.accepted,
      publishedPerSec: st.accepted / wallSec,
      requests: st.requests,
      expected: st.expected,
      lost: st.expected - deliveries,
      lossPct: st.expected > 0 ? (100 * (st.expected - deliveries)) / st.expected : 0,
      pubErrors: st.errors,
      skipped: st.skipped,
      closed: stats.reduce((a, s) => a + s.closedOpen, 0),
      closeCodes,
      wallSec,
      serverProcs,
      serverCpuSec,
      serverCoreFrac,
      usPerDelivery: deliveries > 0 ? (serverCpuSec * 1e6) / deliveries : NaN,
      clientUsPerDelivery: deliveries > 0 ? (clientCpuSec * 1e6) / deliveries : NaN,
      // permessage-deflate and bytes on the wire (WebSocket frames, TCP payload)
      extensions: stats[0]?.extensions ?? '',
      frameBytesPerMsg: st.accepted > 0 ? st.frameBytes / st.accepted : NaN,
      wireBytes,
      wireBytesPerDelivery: deliveries > 0 ? wireBytes / deliveries : NaN,
      compressed: sum('compressed'),
      inflated: sum('inflated'),
      inflatedBytes: sum('inflatedBytes'),
      inflatedWire: sum('inflatedWire'),
      inflateErrors: sum('inflateErrors'),
      clientErrors,
      clientCpuSec,
      clientCoreFrac,
      cores,
      serverCores: splitCores(cores, ctx.serverCpuList, serverCoreFrac),
      clientCores: splitCores(cores, ctx.clientCpuList, clientCoreFrac),
      latency,
      subscribers: subscribed,
      setupRetries: connected.reduce((a, r) => a + r.retried, 0),
      warmupMissing,
      setupErrors,
      nodes: topo.nodes.length,
    };
  } finally {
    pump = () => undefined;
    pub.close();
    await stopWorkers(workers);
    await topo.stop();
  }
}
