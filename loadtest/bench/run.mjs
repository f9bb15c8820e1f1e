#!/usr/bin/env node
// pubgate benchmark runner: runs scenarios against pubgate and the ws baseline
// (and, when installed outside the repository, the peers Soketi and Socket.IO)
// on this machine (127.0.0.1 only), alternating targets run by run, and prints
// every run, medians, min–max, ratios and which side limited each figure.
//
//   node loadtest/bench/run.mjs fanout --subscribers 2000 --runs 3 --targets pubgate,baseline
//   node loadtest/bench/run.mjs fanout,latency,connections,channels --targets peers --runs 3 --rotate
//   node loadtest/bench/run.mjs all
//   npm run bench -- latency --runs 5
//
// See loadtest/README.md for every scenario and option.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { runConnections } from './lib/connections.mjs';
import { runDelivery } from './lib/delivery.mjs';
import { DEFAULT_SOCKETIO_DIR, PEER_TARGETS, socketioMissing } from './lib/peers.mjs';
import { IDEMPOTENCY_SCENARIOS, formatIdempotency, idempotencyShort, runIdempotency } from './lib/idempotency.mjs';
import { PRESENCE_SCENARIOS, formatPresence, presenceShort, runPresence } from './lib/presence.mjs';
import { cpuList, pinToClientCpus, waitQuiet } from './lib/proc.mjs';
import { PROXY_SCENARIOS, formatProxy, proxyShort, runProxy } from './lib/proxy.mjs';
import { DEFAULT_SOKETI_DIR, PUSHER_LEGS, PUSHER_SCENARIOS, formatPusher, pusherShort, runPusher, soketiMissing } from './lib/pusher.mjs';
import { formatScenario, targetChecks } from './lib/report.mjs';
import { SSE_SCENARIOS, formatSse, runSseFanout, sseShort } from './lib/sse.mjs';
import { DEFAULT_TARGETS, ROOT, TARGETS } from './lib/targets.mjs';
import { WEBHOOKS_SCENARIOS, formatWebhooks, runWebhooks, webhooksShort } from './lib/webhooks.mjs';

/** What `all` runs. */
const SCENARIOS = ['fanout', 'latency', 'connections', 'channels', 'cluster'];
/** The scenarios the peer targets (soketi, socketio) run in; the others run pubgate and the baseline only. */
const PEER_SCENARIOS = ['fanout', 'latency', 'connections', 'channels'];
/** --targets peers: every target, pubgate first. */
const PEERS_ALIAS = ['pubgate', 'soketi', 'socketio', 'baseline'];
/** Run only when named. */
const EXTRA_SCENARIOS = ['compression', ...PRESENCE_SCENARIOS, ...PROXY_SCENARIOS, ...IDEMPOTENCY_SCENARIOS, ...WEBHOOKS_SCENARIOS, ...SSE_SCENARIOS, ...PUSHER_SCENARIOS];
const USAGE = `usage: node loadtest/bench/run.mjs <${[...SCENARIOS, ...EXTRA_SCENARIOS].join('|')}|all>[,...] [options]
  all runs ${SCENARIOS.join(', ')}; compression runs pubgate with PUBGATE_COMPRESSION=off and =shared
  alternately (clients offer permessage-deflate), once per --size (default 100,1024)
  presence-subscribe, presence-fanout, presence-large: pubgate only, with PUBGATE_NAMESPACES giving benchp:*
  presence and benchjl:* presence + joinLeave; the legs alternated run by run are the brokers (--brokers)
  (what each measures: loadtest/bench/lib/presence.mjs)
  proxy: pubgate only, one node with the connect and subscribe proxies pointed at a local backend that answers
  at once; JWT against connect-proxy handshakes, and claim-allowed against subscribe-proxy subscribes, in turn
  within each round (loadtest/bench/lib/proxy.mjs)
  idempotency: pubgate only, one node + redis, benchh:* with history; per round POST /v1/publish blocks of --requests
  plain / plain+key / history / history+key (unique Idempotency-Key headers), then --reps publishes to --subscribers
  (default 2000) without and with "exclude" (one subscriber's conn), in turn (loadtest/bench/lib/idempotency.mjs)
  webhooks-delivery: pubgate only, one node with webhooks to a local receiver (answers 200 at once, verifies 1 request
  in 10); per round --connections (default 200) each subscribe to --reps (default 50) fresh channels, then unsubscribe:
  2 events per channel; events/s at the receiver, node CPU per event, lag, events per request
  webhooks-subscribe: pubgate only, a node with webhooks off and one with them on side by side, --connections (default
  2000) × --reps (default 1) fresh channels subscribed then unsubscribed, off/on in turn; µs per subscribe+unsubscribe
  (both: --brokers redis,embedded, alternated run by run; loadtest/bench/lib/webhooks.mjs)
  sse-fanout: pubgate only, one node (embedded broker), --subscribers (default 2000) SSE streams and as many
  WebSockets side by side (memory per idle connection of each, after a full GC through the node's inspector);
  then blocks of --reps (default 100) publishes, --concurrency in flight (default 1), to the SSE streams' channel,
  the WebSockets' and one both are on, in turn, --rounds (default 4) after a warm-up; legs sse-first and
  ws-first (which transport opens first) alternate run by run (loadtest/bench/lib/sse.mjs)
  pusher-fanout: --subscribers (default 2000) Pusher-protocol clients on one public channel, events through the
  signed Pusher HTTP API as fast as accepted; legs (--legs, default pusher,soketi,native, alternated run by run):
  pubgate's /app/{key} (PUBGATE_PUSHER_APPS), Soketi 1.6 (--soketi-dir, skipped with a message when
  absent), pubgate's native /ws + /v1/publish; deliveries/s, server µs/delivery, KiB RSS per idle subscribed
  connection, and issue 18's targets against Soketi. pusher-connections: the connection and memory part alone
  (--subscribers default 10000) (loadtest/bench/lib/pusher.mjs)
  --legs LIST                  pusher scenarios: which of pusher,soketi,native (default all three)
  --soketi-dir DIR             a directory with Soketi installed by npm (default ${DEFAULT_SOKETI_DIR},
                               or env BENCH_SOKETI_DIR); see docs/benchmarks.md for the install
  --soketi-node PATH           the node binary for Soketi (default /usr/bin/node when present: its uWS build
                               has binaries up to Node 20 and falls back to JavaScript above, which is refused)
  --requests N                 idempotency: publish requests per block (default 3000), --concurrency in flight (default 32)
  --targets LIST               which servers, alternated run by run (default pubgate,baseline): pubgate, baseline,
                               soketi (Soketi 1.6, Pusher protocol), socketio (Socket.IO 4 + @socket.io/redis-adapter
                               and a redis-server); "peers" = pubgate,soketi,socketio,baseline. soketi and socketio
                               run in ${PEER_SCENARIOS.join(', ')} only, are installed outside the repository, and are
                               skipped with a message when absent (loadtest/bench/lib/peers.mjs, docs/benchmarks.md)
  --socketio-dir DIR           a directory with socket.io@4, @socket.io/redis-adapter and redis installed by npm
                               (default ${DEFAULT_SOCKETIO_DIR}, or env BENCH_SOCKETIO_DIR)
  --quick                      a smoke check: 1 run, 200 fanout / 100 latency subscribers, 100 channels,
                               1000 connections, 2-3 s of publishing, no quiet wait (explicit options still win)
  --runs N                     runs per target (default 3; presence-large 1)
  --subscribers N              fanout/cluster 2000, latency 1000, channels = --channels
  --channels N                 channels scenario: channels, one subscriber each (default 1000)
  --connections N              connections scenario (default 19000, capped by the open-files limit);
                               presence-subscribe (default 2000), presence-large (default 10000);
                               proxy: handshakes per block (default 2000)
  --brokers LIST               presence scenarios: redis,embedded (default both; presence-large redis, on 2 nodes)
  --rounds N                   presence-subscribe/-fanout, proxy: measured rounds per run after one warm-up round (default 4)
  --reps N                     presence-fanout: repetitions per block (default 50); --subscribers default 1000;
                               proxy: subscribes per connection per block, one after another (default 20),
                               by --subscribers connections at once (default 128)
  --layouts LIST               presence-subscribe: held,fresh (default both)
  --calls N                    presence-large: calls of each read kind (default 200)
  --duration S                 measured publishing time (fanout/channels/cluster 5, latency 10)
  --warmup S                   unmeasured publishing before it (default 1)
  --batch N                    messages per publish request: 1 uses /v1/publish, more /v1/publish/batch
                               (fanout 1, cluster 100, channels 200, latency 1)
  --size BYTES                 delivered frame size (default 100; compression: a list, default 100,1024)
  --data pad|json              message data: {"t":..,"p":"xxx..."} padding, or realistic JSON (chat message
                               under 300 bytes, a batch of trades above) (default pad; compression json)
  --inflate-every N            compression: inflate and check one compressed message in N per client process
                               (default 61, prime: not in step with the 64 payload variants; 0 checks none)
  --rate N                     publishes/s: fixed-rate mode with latency (latency 50; others max)
  --concurrency N              publish requests in flight (fanout 32, latency 16, others 4)
  --window N                   messages per subscriber published but not yet received (default 500)
  --workers N                  client processes (default max(2, ceil(connections / 5000)))
  --connect-concurrency N      handshakes in flight per client process (default 64; proxy: --workers default 2,
                               and workers × this must stay under PUBGATE_PROXY_CONCURRENCY, 256)
  --settle S                   connections: idle time before the "after" RSS (default 2; pusher scenarios: then a full GC)
  --settle-before S            connections: idle time after the warm-up before the "before" RSS (default 1);
                               give both ~30 s to compare settled heaps (V8 usually shrinks its
                               young generation 10-30 s after allocation stops, not always)
  --token-in header|protocol|query   where the JWT travels (default header)
  --server-cpus LIST           taskset CPU list for servers (default 0)
  --client-cpus LIST           taskset CPU list for the runner and clients (default 1)
  --no-pin                     do not use taskset
  --profile                    run pubgate under --cpu-prof; profiles in loadtest/bench/profiles/
  --json FILE                  also write every figure as JSON
  --timeout S                  hard limit per scenario run (default 180; presence scenarios and proxy 600)
  --pubgate-main FILE          the pubgate entry to run (default dist/main.js; e.g. another build to compare)
  --pubgate-env NAME=VALUE     extra PUBGATE_* setting for pubgate (repeatable)
  --pubgate-only-env NAME=VALUE  the same, for the pubgate target only, not for --compare-main's (repeatable;
                               e.g. PUBGATE_NAMESPACES, which a build before it refuses)
  --compare-main FILE          also run this pubgate entry as a third target, "before", in the same runs
                               (e.g. the build of an older commit in a git worktree), with ratios pubgate/before
  --compare-node PATH          the node binary for --compare-main (default this one; e.g. an older Node.js)
  --rotate                     run k starts with the (k−1)-th target in turn, so that none always runs first
  --quiet-wait S               before each run, wait up to S s for the cores to be ≥ 85% idle (default 5; 0 skips)`;

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    targets: { type: 'string', default: DEFAULT_TARGETS.join(',') },
    'socketio-dir': { type: 'string' },
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    brokers: { type: 'string' },
    rounds: { type: 'string' },
    requests: { type: 'string' },
    reps: { type: 'string' },
    layouts: { type: 'string' },
    calls: { type: 'string' },
    subscribers: { type: 'string' },
    channels: { type: 'string' },
    connections: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    batch: { type: 'string' },
    size: { type: 'string' },
    data: { type: 'string' },
    'inflate-every': { type: 'string' },
    rate: { type: 'string' },
    concurrency: { type: 'string' },
    window: { type: 'string' },
    workers: { type: 'string' },
    'connect-concurrency': { type: 'string' },
    settle: { type: 'string' },
    'settle-before': { type: 'string' },
    'token-in': { type: 'string', default: 'header' },
    'server-cpus': { type: 'string', default: '0' },
    'client-cpus': { type: 'string', default: '1' },
    'no-pin': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    json: { type: 'string' },
    timeout: { type: 'string' },
    'quiet-wait': { type: 'string' },
    rotate: { type: 'boolean', default: false },
    'pubgate-main': { type: 'string' },
    'pubgate-env': { type: 'string', multiple: true },
    'pubgate-only-env': { type: 'string', multiple: true },
    'compare-main': { type: 'string' },
    'compare-node': { type: 'string' },
    legs: { type: 'string' },
    'soketi-dir': { type: 'string' },
    'soketi-node': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

if (o.help || positionals.length !== 1) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(o.help ? 0 : 2);
}
const scenarios = positionals[0] === 'all' ? SCENARIOS : positionals[0].split(',');
for (const s of scenarios) {
  if (!SCENARIOS.includes(s) && !EXTRA_SCENARIOS.includes(s)) {
    process.stderr.write(`unknown scenario ${s}\n${USAGE}\n`);
    process.exit(2);
  }
}
const targets = o.targets === 'peers' ? [...PEERS_ALIAS] : o.targets.split(',').map((t) => t.trim());
for (const t of targets) {
  if (!TARGETS.includes(t)) {
    process.stderr.write(`unknown target ${t} (${TARGETS.join(', ')})\n`);
    process.exit(2);
  }
}
if (o.data !== undefined && !['pad', 'json'].includes(o.data)) {
  process.stderr.write(`--data must be pad or json\n${USAGE}\n`);
  process.exit(2);
}

// os.cpus(), not availableParallelism(): the latter shrinks once this process is pinned.
const nproc = os.cpus().length;
// The runner (the publisher) and its forked clients run on the client CPUs.
const pin = pinToClientCpus(o['client-cpus'], o['no-pin']);

const num = (v, d) => (v === undefined ? d : Number(v));
const nofile = Number(spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout) || 1024;
const ctx = {
  serverCpus: pin ? o['server-cpus'] : undefined,
  serverCpuList: pin ? cpuList(o['server-cpus']) : undefined,
  clientCpuList: pin ? cpuList(o['client-cpus']) : undefined,
  serverCores: pin ? cpuList(o['server-cpus']).length : 1,
  clientCores: pin ? cpuList(o['client-cpus']).length : nproc,
  tokenIn: o['token-in'],
  profileDir: o.profile ? `${ROOT}loadtest/bench/profiles` : undefined,
  pubgateMain: o['pubgate-main'],
  pubgateEnv: envList(o['pubgate-env']),
  soketiDir: o['soketi-dir'] ?? process.env.BENCH_SOKETI_DIR ?? DEFAULT_SOKETI_DIR,
  soketiNode: o['soketi-node'] ?? (existsSync('/usr/bin/node') ? '/usr/bin/node' : process.execPath),
  socketioDir: o['socketio-dir'] ?? process.env.BENCH_SOCKETIO_DIR ?? DEFAULT_SOCKETIO_DIR,
};
// A peer target that is not installed is left out, with a message (as the pusher scenarios' soketi leg).
const peerSkipped = {};
for (const t of targets.filter((x) => PEER_TARGETS.includes(x))) {
  const missing = t === 'soketi' ? soketiMissing(ctx.soketiDir) : socketioMissing(ctx.socketioDir);
  if (missing) {
    peerSkipped[t] = missing;
    process.stderr.write(`skipping the ${t} target: ${missing}\n`);
  }
}
const quick = o.quick;
function envList(list) {
  return Object.fromEntries((list ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}
if (ctx.profileDir) mkdirSync(ctx.profileDir, { recursive: true });

function deliveryParams(name) {
  const d = {
    fanout: { subscribers: 2000, channels: 0, batch: 1, duration: 5, rate: 0, concurrency: 32 },
    latency: { subscribers: 1000, channels: 0, batch: 1, duration: 10, rate: 50, concurrency: 16 },
    channels: { subscribers: undefined, channels: 1000, batch: 200, duration: 5, rate: 0, concurrency: 4 },
    cluster: { subscribers: 2000, channels: 0, batch: 100, duration: 5, rate: 0, concurrency: 4 },
    compression: { subscribers: 2000, channels: 0, batch: 1, duration: 5, rate: 0, concurrency: 32 },
  }[name];
  // --quick: small and short, a smoke check that every target and phase works.
  if (quick) Object.assign(d, { subscribers: d.subscribers === undefined ? undefined : name === 'latency' ? 100 : 200, channels: d.channels > 0 ? 100 : 0, duration: name === 'latency' ? 3 : 2 });
  const channels = num(o.channels, d.channels);
  const rate = num(o.rate, d.rate);
  return {
    name,
    cluster: name === 'cluster',
    channels,
    subscribers: num(o.subscribers, d.subscribers ?? channels),
    batch: num(o.batch, rate > 0 ? 1 : d.batch),
    durationSec: num(o.duration, d.duration),
    warmupSec: num(o.warmup, quick ? 0.5 : 1),
    rate,
    latency: rate > 0,
    size: num(o.size, 100),
    data: o.data ?? 'pad',
    concurrency: num(o.concurrency, d.concurrency),
    window: num(o.window, 500),
    workers: num(o.workers, 0),
  };
}

/**
 * compression: a fanout per size, run against pubgate with compression off and
 * shared alternately; clients always offer permessage-deflate.
 */
function compressionParams() {
  const sizes = (o.size ?? '100,1024').split(',').map(Number);
  return sizes.map((size) => ({
    ...deliveryParams('compression'),
    size,
    data: o.data ?? 'json',
    deflate: true,
    inflateEvery: num(o['inflate-every'], 61),
    legs: ['off', 'shared'].map((c) => ({ label: c, target: 'pubgate', env: { PUBGATE_COMPRESSION: c } })),
    pair: ['shared', 'off'],
  }));
}

/** The proxy scenario: pubgate only, one leg; in-flight proxy calls stay under PUBGATE_PROXY_CONCURRENCY. */
function proxyParams() {
  const p = {
    name: 'proxy',
    proxy: true,
    connections: num(o.connections, 2000),
    connectConcurrency: num(o['connect-concurrency'], 64),
    subscribers: num(o.subscribers, 128),
    reps: num(o.reps, 20),
    rounds: num(o.rounds, 4),
    workers: num(o.workers, 2),
    legs: [{ label: 'pubgate', target: 'pubgate', env: {} }],
  };
  const env = { ...envList(o['pubgate-env']), ...envList(o['pubgate-only-env']) };
  const limit = Number(env.PUBGATE_PROXY_CONCURRENCY ?? 256);
  const most = Math.max(p.workers * p.connectConcurrency, p.subscribers);
  // Past the bound the node answers `unavailable` at once: still reported (apart), but not what this measures.
  if (most >= limit) process.stderr.write(`proxy: up to ${most} proxy calls in flight, PUBGATE_PROXY_CONCURRENCY is ${limit}: some will be refused (reported as failed)\n`);
  return p;
}

/** The idempotency scenario: pubgate only, one leg. */
function idempotencyParams() {
  return {
    name: 'idempotency',
    idempotency: true,
    requests: num(o.requests, 3000),
    concurrency: num(o.concurrency, 32),
    subscribers: num(o.subscribers, 2000),
    reps: num(o.reps, 50),
    rounds: num(o.rounds, 4),
    workers: num(o.workers, 2),
    legs: [{ label: 'pubgate', target: 'pubgate', env: {} }],
  };
}

/** The webhook scenarios: one leg per broker, pubgate only. */
function webhooksParams(name) {
  const delivery = name === 'webhooks-delivery';
  return {
    name,
    webhooks: true,
    connections: num(o.connections, delivery ? 200 : 2000),
    perConn: num(o.reps, delivery ? 50 : 1),
    rounds: num(o.rounds, delivery ? 3 : 4),
    workers: num(o.workers, 0),
    // How long a block waits at most for the receiver to have all its events.
    drainMs: 120_000,
    legs: brokerList('redis,embedded').map((b) => ({ label: b, target: 'pubgate', env: {}, broker: b })),
  };
}

function brokerList(dflt) {
  const brokers = (o.brokers ?? dflt).split(',').map((b) => b.trim());
  for (const b of brokers) {
    if (!['redis', 'embedded'].includes(b)) {
      process.stderr.write(`--brokers: unknown broker ${b} (redis, embedded)\n`);
      process.exit(2);
    }
  }
  return brokers;
}

/** The sse-fanout scenario: pubgate only; the legs say which transport's connections open first. */
function sseParams() {
  return {
    name: 'sse-fanout',
    sse: true,
    subscribers: num(o.subscribers, 2000),
    reps: num(o.reps, 100),
    rounds: num(o.rounds, 4),
    concurrency: num(o.concurrency, 1),
    size: num(o.size, 100),
    settleSec: num(o.settle, 2),
    workers: num(o.workers, 2),
    defaultRuns: 2,
    legs: ['sse', 'ws'].map((t) => ({ label: `${t}-first`, target: 'pubgate', env: {}, first: t })),
  };
}

/** The presence scenarios: one leg per broker, pubgate only. */
function presenceParams(name) {
  const large = name === 'presence-large';
  const brokers = (o.brokers ?? (large ? 'redis' : 'redis,embedded')).split(',').map((b) => b.trim());
  for (const b of brokers) {
    if (!['redis', 'embedded'].includes(b)) {
      process.stderr.write(`--brokers: unknown broker ${b} (redis, embedded)\n`);
      process.exit(2);
    }
  }
  const layouts = (o.layouts ?? 'held,fresh').split(',').map((l) => l.trim());
  if (layouts.some((l) => !['held', 'fresh'].includes(l))) {
    process.stderr.write('--layouts must list held and/or fresh\n');
    process.exit(2);
  }
  return {
    name,
    presence: true,
    connections: num(o.connections, large ? 10_000 : 2000),
    subscribers: num(o.subscribers, 1000),
    rounds: num(o.rounds, 4),
    reps: num(o.reps, 50),
    layouts,
    calls: num(o.calls, 200),
    small: 10,
    askers: 20,
    workers: num(o.workers, 0),
    defaultRuns: large ? 1 : 3,
    legs: brokers.map((b) => ({ label: b, target: 'pubgate', env: {}, broker: b })),
  };
}

/** The pusher scenarios: one leg per server (pusher, soketi, native); soketi left out, with a message, when not installed. */
function pusherParams(name) {
  const publish = name === 'pusher-fanout';
  let legs = (o.legs ?? PUSHER_LEGS.join(',')).split(',').map((l) => l.trim());
  for (const l of legs) {
    if (!PUSHER_LEGS.includes(l)) {
      process.stderr.write(`--legs: unknown leg ${l} (${PUSHER_LEGS.join(', ')})\n`);
      process.exit(2);
    }
  }
  const missing = legs.includes('soketi') ? soketiMissing(ctx.soketiDir) : undefined;
  if (missing) {
    process.stderr.write(`${name}: skipping the soketi leg: ${missing}\n`);
    legs = legs.filter((l) => l !== 'soketi');
  }
  return {
    name,
    pusher: true,
    publish,
    subscribers: num(o.subscribers, publish ? 2000 : 10_000),
    durationSec: num(o.duration, 5),
    warmupSec: num(o.warmup, 1),
    size: num(o.size, 100),
    concurrency: num(o.concurrency, 32),
    window: num(o.window, 500),
    workers: num(o.workers, 0),
    connectConcurrency: num(o['connect-concurrency'], 32),
    settleSec: num(o.settle, 2),
    settleBeforeSec: num(o['settle-before'], 1),
    skipped: missing,
    legs: legs.map((l) => ({ label: l, target: l, env: {} })),
  };
}

function connectionParams() {
  return {
    name: 'connections',
    connections: num(o.connections, quick ? 1000 : Math.min(19_000, nofile - 1000)),
    workers: num(o.workers, 0),
    connectConcurrency: num(o['connect-concurrency'], 64),
    settleSec: num(o.settle, quick ? 1 : 2),
    settleBeforeSec: num(o['settle-before'], 1),
  };
}

function title(p) {
  const where = pin ? `servers on CPU ${o['server-cpus']}, runner and clients on CPU ${o['client-cpus']}` : 'not pinned';
  if (p.name === 'presence-subscribe') {
    return `presence-subscribe: ${p.connections} connections (distinct users) (un)subscribe at once, each to its own channel, plain / presence / presence+joinLeave in turn, ` +
      `layouts ${p.layouts.join(', ')}, ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.name === 'presence-fanout') {
    return `presence-fanout: ${p.subscribers} subscribers of one joinLeave channel; a new user subscribes (join) and unsubscribes (leave), one at a time; ` +
      `blocks of ${p.reps} (joinLeave / presence without joinLeave / a message), ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.name === 'presence-large') {
    return `presence-large: ${p.connections} connections (distinct users, info claim) on one presence channel (redis: 2 nodes), ${p.calls} calls of each read, ${where}`;
  }
  if (p.name === 'proxy') {
    return `proxy: one node, backend on the client CPUs answering at once; per round ${p.connections} handshakes jwt / connect proxy (cookie), ` +
      `${p.subscribers} × ${p.reps} subscribes plain (claims) / subscribe proxy, in turn, ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.name === 'idempotency') {
    return `idempotency: one node + redis; per round ${p.requests} publishes plain / plain+key / history / history+key, ` +
      `${p.reps} publishes to ${p.subscribers} subscribers without / with exclude, in turn, ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.name === 'webhooks-delivery') {
    return `webhooks-delivery: one node, receiver on the client CPUs answering 200 at once; per round ${p.connections} connections × ${p.perConn} fresh channels ` +
      `subscribed then unsubscribed (${2 * p.connections * p.perConn} events), ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.name === 'webhooks-subscribe') {
    return `webhooks-subscribe: a node with webhooks off and one with webhooks on, side by side; per round ${p.connections} connections × ${p.perConn} fresh channels ` +
      `subscribed then unsubscribed, off / on in turn, ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.pusher) {
    const what = p.publish
      ? `${p.subscribers} Pusher subscribers on one public channel, events through the signed Pusher HTTP API as fast as accepted, ${p.concurrency} requests in flight, ~${p.size}-byte frames, ${p.durationSec} s`
      : `${p.subscribers} idle Pusher connections, each subscribed to one public channel`;
    return `${p.name}: ${what}; legs ${p.legs.map((l) => l.label).join(', ')}${p.skipped ? ' (soketi skipped: not installed)' : ''}; ${where}`;
  }
  if (p.name === 'sse-fanout') {
    return `sse-fanout: one node (embedded broker), ${p.subscribers} SSE streams and ${p.subscribers} WebSockets side by side; per round ${p.reps} publishes ` +
      `(${p.concurrency} in flight, ~${p.size}-byte frames) to the SSE channel / the WebSocket channel / a channel of both, in turn, ${p.rounds} rounds after a warm-up, ${where}`;
  }
  if (p.name === 'connections') return `connections: ${p.connections} idle authenticated connections (token in ${ctx.tokenIn}; soketi: none, socketio: in its CONNECT), memory after a full GC, ${where}`;
  const subs = p.channels > 0 ? `${p.subscribers} subscribers over ${p.channels} channels` : `${p.subscribers} subscribers on one channel`;
  const mode = p.rate > 0 ? `${p.rate} publishes/s of batch ${p.batch}` : `as fast as accepted, batch ${p.batch}, ${p.concurrency} requests in flight`;
  const frames = `~${p.size}-byte frames${p.data === 'json' ? ' of JSON' : ''}`;
  const deflate = p.deflate ? ', clients offer permessage-deflate, PUBGATE_COMPRESSION off vs shared' : '';
  return `${p.name}: ${subs}${p.cluster ? ' split over 2 nodes + redis, publishing to node A' : ''}${deflate}, ${mode}, ${frames}, ${p.durationSec} s, ${where}`;
}

function withTimeout(promise, sec, what) {
  let t;
  const guard = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} exceeded ${sec} s`)), sec * 1000);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(t));
}

const short = (r, p) => {
  if (p.pusher) return pusherShort(r, p);
  if (p.presence) return presenceShort(r, p);
  if (p.proxy) return proxyShort(r);
  if (p.idempotency) return idempotencyShort(r);
  if (p.webhooks) return webhooksShort(r, p);
  if (p.sse) return sseShort(r);
  if (!r.ok) return `failed: ${r.error.split('\n')[0]}`;
  if (p.name === 'connections') return `${Math.round(r.handshakesPerSec)} handshakes/s, ${r.kbPerConn.toFixed(2)} KiB/conn`;
  if (p.rate > 0) return `p50 ${r.latency.p50.toFixed(2)} ms, p99 ${r.latency.p99.toFixed(2)} ms, lost ${r.lost}`;
  const wire = p.deflate ? `, ${r.wireBytesPerDelivery.toFixed(1)} wire bytes/delivery` : '';
  return `${Math.round(r.perSec)} deliveries/s${wire}, lost ${r.lost}`;
};

const results = [];
const cpuModel = (os.cpus()[0]?.model ?? 'unknown').trim();
process.stdout.write(`pubgate bench: ${nproc} CPUs (${cpuModel}), node ${process.version}, ` +
  `${pin ? `taskset: servers ${o['server-cpus']}, clients ${o['client-cpus']}` : 'no CPU pinning'}, open-files limit ${nofile}\n`);
const paramsOf = (name) => {
  if (name === 'connections') return [connectionParams()];
  if (name === 'compression') return compressionParams();
  if (PRESENCE_SCENARIOS.includes(name)) return [presenceParams(name)];
  if (PROXY_SCENARIOS.includes(name)) return [proxyParams()];
  if (IDEMPOTENCY_SCENARIOS.includes(name)) return [idempotencyParams()];
  if (WEBHOOKS_SCENARIOS.includes(name)) return [webhooksParams(name)];
  if (PUSHER_SCENARIOS.includes(name)) return [pusherParams(name)];
  if (SSE_SCENARIOS.includes(name)) return [sseParams()];
  return [deliveryParams(name)];
};
for (const name of scenarios) for (const p of paramsOf(name)) {
  const runs = [];
  const runs_n = num(o.runs, quick ? 1 : p.defaultRuns ?? 3);
  // Each run runs every leg: the targets, or (compression) pubgate with each setting.
  // The peers run in PEER_SCENARIOS only, and only when installed.
  const legTargets = targets.filter((t) => !peerSkipped[t] && (!PEER_TARGETS.includes(t) || PEER_SCENARIOS.includes(name)));
  for (const t of targets.filter((x) => PEER_TARGETS.includes(x) && !peerSkipped[x] && !PEER_SCENARIOS.includes(name))) {
    if (!p.legs) process.stdout.write(`\n${name}: the ${t} target does not run in this scenario (peers run in ${PEER_SCENARIOS.join(', ')} only)\n`);
  }
  const legs = p.legs ?? legTargets.map((t) => ({ label: t, target: t, env: {} }));
  if (o['compare-main'] && !p.legs) legs.push({ label: 'before', target: 'pubgate', env: {}, pubgateMain: o['compare-main'], pubgateNode: o['compare-node'] });
  for (let run = 1; run <= runs_n; run++) {
    const shift = o.rotate ? (run - 1) % legs.length : 0;
    for (const leg of [...legs.slice(shift), ...legs.slice(0, shift)]) {
      const target = leg.label;
      // --pubgate-only-env: the pubgate target's, not --compare-main's ("before").
      const onlyEnv = leg.label === 'before' ? {} : envList(o['pubgate-only-env']);
      const legCtx = { ...ctx, pubgateEnv: { ...ctx.pubgateEnv, ...onlyEnv, ...leg.env }, pubgateMain: leg.pubgateMain ?? ctx.pubgateMain, pubgateNode: leg.pubgateNode };
      const waitSec = num(o['quiet-wait'], quick ? 0 : 5);
      const idle = waitSec > 0 ? await waitQuiet(Object.keys(os.cpus()).map(String), waitSec * 1000) : [];
      process.stderr.write(`[${name}${p.deflate ? ` ${p.size} B` : ''}] run ${run}/${runs_n} ${target} (idle before: ${idle.map((x) => `${Math.round(x * 100)}%`).join(' ') || 'n/a'}) ... `);
      let r;
      // A run whose server exited under it (e.g. a signal from another process on a shared machine) is run again, once.
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          let job;
          if (p.pusher) job = runPusher(p, leg.target, legCtx);
          else if (p.presence) job = runPresence(p, leg, legCtx);
          else if (p.proxy) job = runProxy(p, leg, legCtx);
          else if (p.idempotency) job = runIdempotency(p, leg, legCtx);
          else if (p.webhooks) job = runWebhooks(p, leg, legCtx);
          else if (p.sse) job = runSseFanout(p, leg, legCtx);
          else job = name === 'connections' ? runConnections(p, leg.target, legCtx) : runDelivery(p, leg.target, legCtx);
          r = await withTimeout(job, num(o.timeout, p.presence || p.proxy || p.idempotency || p.webhooks || p.sse ? 600 : p.pusher ? 300 : 180), `${name} run ${run} ${target}`);
        } catch (e) {
          r = { ok: false, error: String(e?.message ?? e) };
          if (/exceeded \d+ s$/.test(r.error)) {
            process.stderr.write(`${r.error}: stopping\n`);
            process.exit(3);
          }
        }
        if (r.ok || !/exited during the run/.test(r.error) || attempt > 0) break;
        process.stderr.write(`${r.error.split('\n')[0]}; running it again ... `);
      }
      process.stderr.write(`${short(r, p)}\n`);
      r.idleBefore = idle;
      runs.push({ run, target, r });
    }
  }
  const { text, summary } = p.pusher ? formatPusher(title(p), p, runs) : p.presence ? formatPresence(title(p), p, runs)
    : p.sse ? formatSse(title(p), p, runs)
    : p.proxy ? formatProxy(title(p), p, runs) : p.webhooks ? formatWebhooks(title(p), p, runs) : p.idempotency ? formatIdempotency(title(p), p, runs) : formatScenario(title(p), name, runs, p.rate > 0, p.pair);
  process.stdout.write(`${text}\n`);
  if (legs.some((l) => l.label === 'before')) {
    const { text: vs } = formatScenario(`${title(p)}: pubgate against --compare-main`, name, runs.filter((x) => x.target !== 'baseline'), p.rate > 0, ['pubgate', 'before']);
    process.stdout.write(`${vs.split('\n').filter((l) => l.startsWith('  ratio ')).join('\n')}\n`);
  }
  if (p.deflate) {
    // Deflating once per published message would add a cost per message that
    // shrinks per delivery as subscribers grow; once per subscriber adds the
    // same cost to every delivery, whatever the subscriber count.
    const us = (t) => summary.targets[t]?.['server µs/delivery']?.median;
    const extra = us('shared') - us('off');
    if (Number.isFinite(extra)) {
      process.stdout.write(`  compression costs the server ${extra.toFixed(3)} µs more per delivery (medians), ` +
        `${(extra * p.subscribers).toFixed(1)} µs more per published message reaching ${p.subscribers} subscribers\n`);
    }
  }
  results.push({ name, params: p, runs, summary });
}
// --quick runs are smoke checks, not measures: no verdict on the issue's targets.
if (!quick) process.stdout.write(`${targetChecks(results)}\n`);
if (ctx.profileDir) process.stdout.write(`\nCPU profiles of pubgate: ${ctx.profileDir} (summarise with node loadtest/bench/profile-summary.mjs <file>)\n`);
if (o.json) {
  writeFileSync(o.json, JSON.stringify({ machine: { nproc, cpuModel, node: process.version, pin, ctx }, results }, null, 2));
  process.stdout.write(`figures written to ${o.json}\n`);
}
process.exit(0);
