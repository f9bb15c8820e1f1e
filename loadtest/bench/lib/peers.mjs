// The peer targets of the delivery and connections scenarios (fanout,
// latency, channels, connections): real servers beside pubgate and the `ws`
// baseline, in the same runs, with the same publisher and the same client
// machinery (forked client processes of raw-TCP WebSocket clients).
//
//   soketi    Soketi 1.6 (Pusher protocol), installed outside this repository
//             (--soketi-dir, as the pusher scenarios; docs/benchmarks.md),
//             run under --soketi-node (a Node ≤ 20: its uWS build has no
//             binary for newer ones). Subscribers: the Pusher client
//             (pusher-client.mjs) on public channels, no auth (public
//             channels have none); publishes: its signed HTTP API
//             (POST /apps/{id}/events, or /batch_events for batches, with
//             SOKETI_EVENT_MAX_BATCH_SIZE raised to the batch). Channel names
//             are `bench-<n>` (Pusher names cannot hold ':').
//   socketio  Socket.IO 4 with @socket.io/redis-adapter and a redis-server
//             (peers/socketio-server.mjs, run under this Node), installed
//             outside this repository (--socketio-dir); subscribers: the
//             Engine.IO/Socket.IO client (socketio-client.mjs), a JWT in the
//             CONNECT verified by the server; publishes: the script's
//             /v1/publish and /v1/publish/batch (pubgate's request format).
//             Its redis-server runs on the server CPUs and its CPU time is
//             counted with the node's in the delivery scenarios.
//
// Each server runs with its V8 inspector on a loopback port, so that the
// connections scenario reads its memory after a full GC (inspectMemory).
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { freePort, sleepMs, startProcess } from './proc.mjs';
import { PEER_WORKER, PUSHER_APP, pusherEventBody, startSoketi } from './pusher.mjs';
import { signedPath } from './pusher-client.mjs';
import { API_KEY, ROOT, SECRET, cleanEnv, startRedis, startTopology } from './targets.mjs';

export const PEER_TARGETS = ['soketi', 'socketio'];
/** Where --socketio-dir points by default: a directory socketio-bench beside this checkout. */
export const DEFAULT_SOCKETIO_DIR = path.resolve(ROOT, '../socketio-bench');
export const SOCKETIO_MAIN = `${ROOT}loadtest/bench/peers/socketio-server.mjs`;
const SOCKETIO_PACKAGES = ['socket.io', '@socket.io/redis-adapter', 'redis'];

/** Why the socketio target cannot run (no install at `dir`), or undefined when it can. */
export function socketioMissing(dir) {
  const absent = SOCKETIO_PACKAGES.filter((p) => !existsSync(`${dir}/node_modules/${p}/package.json`));
  if (absent.length === 0) return undefined;
  return `no Socket.IO at ${dir} (${absent.join(', ')} missing): install it there as docs/benchmarks.md says ` +
    `(npm i socket.io@4 @socket.io/redis-adapter redis), or pass --socketio-dir`;
}

/** The channel-name prefix of the `mod` spec (channels scenario) for `target`. */
export function channelPrefix(target) {
  return target === 'soketi' ? 'bench-' : 'bench:';
}

/** The single channel of fanout and latency for `target` (the same for every target). */
export const ONE_CHANNEL = 'bench';

/** The client process script for `target` (undefined: worker.mjs) and what its init needs. */
export function clientOf(target) {
  if (target === 'soketi') return { script: PEER_WORKER, init: { proto: 'pusher', key: PUSHER_APP.key } };
  if (target === 'socketio') return { script: PEER_WORKER, init: { proto: 'socketio' } };
  return { script: undefined, init: {} };
}

/** Whether `target` is published to with pubgate's API key (the others sign their requests). */
export const usesApiKey = (target) => target !== 'soketi';

/**
 * The publish request for `msgs` ([channel, data JSON text] pairs) to
 * `target`: pubgate's /v1/publish (one) or /v1/publish/batch (several),
 * which the baseline and the socketio script answer too; for soketi its
 * signed HTTP API, /apps/{id}/events (one; data sent as a JSON string, as the
 * Pusher libraries send it) or /apps/{id}/batch_events (several). Pure.
 */
export function publishRequest(target, msgs, nowSec = Math.floor(Date.now() / 1000)) {
  if (target === 'soketi') {
    if (msgs.length === 1) {
      const body = pusherEventBody(msgs[0][0], msgs[0][1]);
      return { path: signedPath(PUSHER_APP, 'POST', `/apps/${PUSHER_APP.id}/events`, body, nowSec), body };
    }
    const body = `{"batch":[${msgs.map(([c, d]) => `{"name":"bench","channel":"${c}","data":${JSON.stringify(d)}}`).join(',')}]}`;
    return { path: signedPath(PUSHER_APP, 'POST', `/apps/${PUSHER_APP.id}/batch_events`, body, nowSec), body };
  }
  const parts = msgs.map(([c, d]) => `{"channel":"${c}","data":${d}}`);
  return msgs.length === 1 ? { path: '/v1/publish', body: parts[0] } : { path: '/v1/publish/batch', body: `{"messages":[${parts.join(',')}]}` };
}

function httpStatus(port, p) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.setTimeout(1000, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** redis-server and the socketio script (with its inspector), both on the server CPUs. */
async function startSocketio(ctx) {
  const redis = await startRedis(ctx.serverCpus);
  let p;
  try {
    const port = await freePort();
    const inspectPort = await freePort();
    const env = {
      ...cleanEnv(),
      SOCKETIO_DIR: ctx.socketioDir,
      HOST: '127.0.0.1',
      PORT: String(port),
      REDIS_URL: redis.url,
      JWT_SECRET: SECRET,
      API_KEY,
    };
    p = await startProcess({ name: 'socketio', cmd: process.execPath, args: [`--inspect=127.0.0.1:${inspectPort}`, SOCKETIO_MAIN], env, cpus: ctx.serverCpus, readyPorts: [port, inspectPort] });
    const deadline = Date.now() + 15_000;
    while ((await httpStatus(port, '/healthz')) !== 200) {
      if (Date.now() > deadline || !p.alive) throw new Error(`socketio: /healthz did not answer 200 within 15 s:\n  ${p.tail.join('\n  ')}`);
      await sleepMs(50);
    }
    Object.assign(p, { port, inspectPort });
  } catch (e) {
    await p?.stop('SIGKILL');
    await redis.stop();
    throw e;
  }
  const procs = [p, redis];
  const stop = async () => {
    await p.stop('SIGKILL');
    await redis.stop();
  };
  const assertAlive = () => {
    for (const x of procs) if (!x.alive) throw new Error(`${x.name} exited during the run (${x.exitCode}); its last output:\n  ${x.tail.slice(-4).join('\n  ')}`);
  };
  return { nodes: [p], redis, procs, stop, assertAlive };
}

/**
 * Starts `target` for a delivery or connections run: pubgate and the baseline
 * through startTopology, the peers here. `batch` (messages per publish
 * request) raises Soketi's batch limit (10 by default) to it. Every server has
 * its inspector on when `inspect` (the peers always).
 */
export async function startTarget(target, { cluster = false, inspect = false, batch = 1, ctx }) {
  if (PEER_TARGETS.includes(target) && cluster) throw new Error(`${target}: the cluster scenario runs pubgate and the baseline only`);
  if (target === 'soketi') return startSoketi(ctx, batch > 10 ? { SOKETI_EVENT_MAX_BATCH_SIZE: String(batch) } : {});
  if (target === 'socketio') return startSocketio(ctx);
  return startTopology(target, {
    cluster, cpus: ctx.serverCpus, profileDir: ctx.profileDir, pubgateMain: ctx.pubgateMain, pubgateNode: ctx.pubgateNode, env: ctx.pubgateEnv, inspect,
  });
}
