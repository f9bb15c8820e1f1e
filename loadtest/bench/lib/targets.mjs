// The servers under test. `pubgate` is `node dist/main.js` configured by
// PUBGATE_* variables; `baseline` is baseline/server.mjs (ws + jose + ioredis).
// A cluster is two nodes of the target and one redis-server on free ports.
import { existsSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { freePort, startProcess, sleepMs } from './proc.mjs';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const PUBGATE_MAIN = `${ROOT}dist/main.js`;
export const BASELINE_MAIN = `${ROOT}loadtest/bench/baseline/server.mjs`;
export const SECRET = 'pubgate-bench-secret-0123456789abcdef';
export const API_KEY = 'pubgate-bench-api-key';
/** Every target; the peers (soketi, socketio) are installed outside the repository (peers.mjs). */
export const TARGETS = ['pubgate', 'baseline', 'soketi', 'socketio'];
/** What --targets defaults to. */
export const DEFAULT_TARGETS = ['pubgate', 'baseline'];

/** The runner's environment without PUBGATE_* (pubgate refuses unknown ones). */
export function cleanEnv() {
  const out = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PUBGATE_') && !k.startsWith('BENCH_')) out[k] = v;
  return out;
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
 * pubgate's own view of its memory, from the admin port's Prometheus text
 * (bytes): V8 heap used/committed in total and for the old and new spaces
 * (new: also committed, which V8 resizes on its own, up to 32 MiB),
 * and external (ArrayBuffers and other off-heap memory V8 knows of).
 */
export function pubgateMemory(adminPort) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/metrics', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        const get = (re) => {
          const m = re.exec(text);
          return m ? Number(m[1]) : NaN;
        };
        resolve({
          heapUsed: get(/^nodejs_heap_size_used_bytes\{[^}]*\} (\S+)$/m),
          heapTotal: get(/^nodejs_heap_size_total_bytes\{[^}]*\} (\S+)$/m),
          oldUsed: get(/^nodejs_heap_space_size_used_bytes\{space="old"[^}]*\} (\S+)$/m),
          newUsed: get(/^nodejs_heap_space_size_used_bytes\{space="new"[^}]*\} (\S+)$/m),
          newTotal: get(/^nodejs_heap_space_size_total_bytes\{space="new"[^}]*\} (\S+)$/m),
          external: get(/^nodejs_external_memory_bytes\{[^}]*\} (\S+)$/m),
        });
      });
    });
    req.setTimeout(5000, () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

/**
 * A full garbage collection in a node started with `inspect` (startTopology):
 * HeapProfiler.collectGarbage over the inspector's WebSocket (Node 22's
 * global WebSocket). Resolves false when it could not be done within `timeoutMs`.
 */
export async function gcNode(inspectPort, timeoutMs = 10_000) {
  if (!inspectPort || typeof globalThis.WebSocket !== 'function') return false;
  const list = await new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: inspectPort, path: '/json/list', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text));
        } catch {
          resolve([]);
        }
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => resolve([]));
  });
  const url = list[0]?.webSocketDebuggerUrl;
  if (!url) return false;
  return new Promise((resolve) => {
    const ws = new globalThis.WebSocket(url);
    const done = (ok) => {
      clearTimeout(t);
      try {
        ws.close();
      } catch {
        // already closed
      }
      resolve(ok);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    ws.onopen = () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
    ws.onmessage = (e) => {
      if (JSON.parse(String(e.data)).id === 1) done(true);
    };
    ws.onerror = () => done(false);
  });
}

/**
 * Any Node process started with `--inspect=127.0.0.1:<port>` (pubgate through
 * startTopology's `inspect`, Soketi in the pusher scenarios): a full GC
 * (HeapProfiler.collectGarbage, as gcNode), then that process's own view of
 * its memory, read in the process (Runtime.evaluate): process.memoryUsage()
 * and the V8 heap spaces' committed bytes, so that two servers that are not
 * both pubgate are read the same way. Bytes; undefined when the inspector
 * could not be used within `timeoutMs`.
 */
export async function inspectMemory(inspectPort, timeoutMs = 15_000) {
  if (!inspectPort || typeof globalThis.WebSocket !== 'function') return undefined;
  const url = (await inspectorTargets(inspectPort, timeoutMs))[0]?.webSocketDebuggerUrl;
  if (!url) return undefined;
  // require is the inspector's command-line API (includeCommandLineAPI), in CommonJS and ES module programs alike.
  const expr = 'JSON.stringify({ m: process.memoryUsage(), s: require("v8").getHeapSpaceStatistics() })';
  return new Promise((resolve) => {
    const ws = new globalThis.WebSocket(url);
    const done = (v) => {
      clearTimeout(t);
      try {
        ws.close();
      } catch {
        // already closed
      }
      resolve(v);
    };
    const t = setTimeout(() => done(undefined), timeoutMs);
    ws.onopen = () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
    ws.onmessage = (e) => {
      const msg = JSON.parse(String(e.data));
      if (msg.id === 1) ws.send(JSON.stringify({ id: 2, method: 'Runtime.evaluate', params: { expression: expr, includeCommandLineAPI: true, returnByValue: true } }));
      else if (msg.id === 2) {
        const v = msg.result?.result?.value;
        if (typeof v !== 'string') return done(undefined);
        const { m, s } = JSON.parse(v);
        const space = (n) => s.find((x) => x.space_name === n);
        done({
          rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers,
          newTotal: space('new_space')?.space_size ?? NaN,
        });
      }
    };
    ws.onerror = () => done(undefined);
  });
}

function inspectorTargets(inspectPort, timeoutMs) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: inspectPort, path: '/json/list', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text));
        } catch {
          resolve([]);
        }
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => resolve([]));
  });
}

/** The environment of a benchmarked pubgate node: loopback ports, the bench secret and key, no drain. */
export function pubgateEnv({ port, adminPort, nodeId, redisUrl }) {
  return {
    ...cleanEnv(),
    PUBGATE_HOST: '127.0.0.1',
    PUBGATE_PORT: String(port),
    PUBGATE_ADMIN_PORT: String(adminPort),
    PUBGATE_NODE_ID: nodeId,
    PUBGATE_JWT_SECRETS: SECRET,
    PUBGATE_API_KEYS: API_KEY,
    PUBGATE_LOG_LEVEL: 'info',
    PUBGATE_DRAIN_SECONDS: '0',
    ...(redisUrl ? { PUBGATE_REDIS_URL: redisUrl } : {}),
  };
}

async function waitReady(adminPort, name, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await httpStatus(adminPort, '/readyz')) === 200) return;
    await sleepMs(50);
  }
  throw new Error(`${name}: /readyz did not answer 200 within ${timeoutMs} ms`);
}

async function startNode(target, { cpus, redisUrl, nodeId, profileDir, env: extraEnv, pubgateMain = PUBGATE_MAIN, pubgateNode = process.execPath, inspect = false }) {
  const port = await freePort();
  if (target === 'pubgate') {
    if (!existsSync(pubgateMain)) throw new Error(`${pubgateMain} is missing: run npm run build first`);
    const adminPort = await freePort();
    const env = { ...pubgateEnv({ port, adminPort, nodeId, redisUrl }), ...extraEnv };
    // inspect (sse-fanout): the V8 inspector on a loopback port, for a full GC before memory readings (gcNode).
    const inspectPort = inspect ? await freePort() : undefined;
    const args = [
      ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      ...(inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : []),
      pubgateMain,
    ];
    const p = await startProcess({ name: `pubgate ${nodeId}`, cmd: pubgateNode, args, env, cpus, readyPorts: [port, adminPort, ...(inspectPort ? [inspectPort] : [])] });
    try {
      await waitReady(adminPort, `pubgate ${nodeId}`);
    } catch (e) {
      await p.stop();
      throw new Error(`${e.message}\n  ${p.tail.join('\n  ')}`, { cause: e });
    }
    // Profiling needs a clean exit (SIGTERM drains in 0 s, then the profile is written).
    const stop = p.stop;
    return Object.assign(p, { port, adminPort, inspectPort, stop: () => stop(profileDir ? 'SIGTERM' : 'SIGKILL', 20_000) });
  }
  const env = {
    ...cleanEnv(),
    HOST: '127.0.0.1',
    PORT: String(port),
    NODE_ID: nodeId,
    JWT_SECRET: SECRET,
    API_KEY,
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
  };
  // inspect (connections): the V8 inspector on a loopback port, for a full GC before memory readings (inspectMemory).
  const inspectPort = inspect ? await freePort() : undefined;
  const args = [...(inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : []), BASELINE_MAIN];
  const p = await startProcess({ name: `baseline ${nodeId}`, cmd: process.execPath, args, env, cpus, readyPorts: [port, ...(inspectPort ? [inspectPort] : [])] });
  const stop = p.stop;
  return Object.assign(p, { port, inspectPort, stop: () => stop('SIGKILL') });
}

export async function startRedis(cpus) {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning'];
  const p = await startProcess({ name: 'redis-server', cmd: 'redis-server', args, env: cleanEnv(), cpus, readyPorts: [port] });
  const stop = p.stop;
  return Object.assign(p, { port, url: `redis://127.0.0.1:${port}`, stop: () => stop('SIGKILL') });
}

/**
 * One node on the embedded broker, or (cluster) redis-server plus two nodes
 * using it, or (redis without cluster) redis-server and one node. Every server
 * process is pinned to `cpus`. `procs` lists them all (for CPU figures);
 * `nodes` the gateway nodes.
 */
export async function startTopology(target, { cluster, redis: withRedis = false, cpus, profileDir, env, pubgateMain, pubgateNode, inspect = false }) {
  const procs = [];
  // A server that exited during a run (crash, or a signal from another process) voids the run.
  const assertAlive = () => {
    for (const p of procs) {
      if (!p.alive) throw new Error(`${p.name} exited during the run (${p.exitCode}); its last output:\n  ${p.tail.slice(-4).join('\n  ')}`);
    }
  };
  const stopAll = async () => {
    for (const p of procs.reverse()) await p.stop().catch(() => undefined);
  };
  try {
    if (!cluster && !withRedis) {
      const n = await startNode(target, { cpus, nodeId: `${target}-1`, profileDir, env, pubgateMain, pubgateNode, inspect });
      procs.push(n);
      return { nodes: [n], procs, stop: stopAll, assertAlive };
    }
    const redis = await startRedis(cpus);
    procs.push(redis);
    const a = await startNode(target, { cpus, redisUrl: redis.url, nodeId: `${target}-a`, profileDir, env, pubgateMain, pubgateNode });
    procs.push(a);
    if (!cluster) return { nodes: [a], redis, procs, stop: stopAll, assertAlive };
    const b = await startNode(target, { cpus, redisUrl: redis.url, nodeId: `${target}-b`, profileDir, env, pubgateMain, pubgateNode });
    procs.push(b);
    return { nodes: [a, b], redis, procs, stop: stopAll, assertAlive };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
