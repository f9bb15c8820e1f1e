/**
 * Real redis-server processes for integration tests: a standalone server on a
 * free loopback port (kill -9 and restart on the same port), and a 3-master /
 * 3-replica cluster (kill a master, wait for its replica to take over). The
 * server binary is an option (valkey-server takes the same arguments), and so
 * is a config file (redis-sentinel needs one: see sentinel.ts).
 *
 * Every process started here is tracked and SIGKILLed when the test process
 * exits, so a failing test never leaves a server behind; tests still stop
 * their servers in afterAll.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './ports.js';

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** SIGKILLs `p` if it still runs when the test process exits. */
export function trackProcess(p: ChildProcess): void {
  running.add(p);
  p.once('exit', () => running.delete(p));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const q of running) q.kill('SIGKILL');
    });
  }
}

/** Runs redis-cli (raw output) against 127.0.0.1:port; returns the non-empty lines. */
export function redisCli(port: number, ...args: string[]): Promise<string[]> {
  return redisCliAuth(port, undefined, ...args);
}

/** redisCli, authenticating with `password` when given (passed in the environment, not on the command line). */
export function redisCliAuth(port: number, password: string | undefined, ...args: string[]): Promise<string[]> {
  const env = password !== undefined ? { ...process.env, REDISCLI_AUTH: password } : process.env;
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--raw', ...args], { timeout: 10_000, env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli -p ${port} ${args.join(' ')} failed: ${err.message} ${stderr}`));
      else resolve(stdout.split('\n').filter((l) => l.length > 0));
    });
  });
}

/** True when a PING on 127.0.0.1:port is answered +PONG (after an AUTH with `password`, when given). */
export function ping(port: number, password?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    const auth = password !== undefined ? `AUTH ${JSON.stringify(password)}\r\n` : '';
    sock.once('connect', () => sock.write(`${auth}PING\r\n`));
    sock.on('data', (d) => {
      buf += d.toString();
      const lines = buf.split('\r\n');
      const want = password !== undefined ? 2 : 1;
      if (lines.length > want) done(lines[want - 1] === '+PONG');
    });
  });
}

/**
 * Polls `check` until it holds; fails with `what` after `guardMs` (a hang guard:
 * the condition is expected long before).
 */
export async function pollUntil(check: () => Promise<boolean> | boolean, what: string, guardMs = 30_000): Promise<void> {
  const deadline = Date.now() + guardMs;
  let lastErr: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${lastErr instanceof Error ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly running: boolean;
  /** Starts the server (again) on its port and waits until PING answers. */
  start(): Promise<void>;
  /** SIGKILL, then wait for the process to be gone. */
  kill9(): Promise<void>;
  /** kill -9 and start again on the same port (empty state). */
  restart(): Promise<void>;
  /** Stops the server and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
  /** SIGSTOP: the process hangs with its sockets open (no FIN), like a frozen host. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  cli(...args: string[]): Promise<string[]>;
  /** The last lines the server printed (for failure messages). */
  output(): string;
}

export interface RedisServerOptions {
  readonly port?: number;
  /** Extra redis-server arguments (`--name value` pairs). */
  readonly args?: readonly string[];
  /** false: allocate the port only; call start() later. Default true. */
  readonly start?: boolean;
  /** The server executable: a name on PATH or a path. Default redis-server (valkey-server takes the same arguments). */
  readonly binary?: string;
  /** Lines of a config file written to the server's dir and passed as its first argument (redis-sentinel needs one). */
  readonly config?: readonly string[];
  /** requirepass of the server: cli() and the PING check authenticate with it. */
  readonly password?: string;
}

/** A redis-server on a free loopback port, no persistence, in a temp dir. */
export async function startRedis(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(path.join(os.tmpdir(), `pubgate-redis-${port}-`));
  const binary = opts.binary ?? 'redis-server';
  const configFile = path.join(dir, 'redis.conf');
  if (opts.config) writeFileSync(configFile, opts.config.join('\n') + '\n');
  let proc: ChildProcess | undefined;
  let out = '';
  let exited: Promise<void> = Promise.resolve();

  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    },
    async start() {
      if (server.running) return;
      const p = spawn(
        binary,
        [
          ...(opts.config ? [configFile] : []),
          '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
          ...(opts.password !== undefined ? ['--requirepass', opts.password] : []),
          ...(opts.args ?? []),
        ],
        { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      trackProcess(p);
      proc = p;
      const keep = (d: Buffer): void => {
        out = (out + d.toString()).slice(-4000);
      };
      p.stdout?.on('data', keep);
      p.stderr?.on('data', keep);
      exited = new Promise((resolve) => p.once('exit', () => resolve()));
      await pollUntil(async () => {
        if (p.exitCode !== null || p.signalCode !== null) throw new Error(`${binary} exited: ${out}`);
        return ping(port, opts.password);
      }, `${binary} on port ${port} to answer PING`);
    },
    pause() {
      if (server.running) proc?.kill('SIGSTOP');
    },
    resume() {
      if (server.running) proc?.kill('SIGCONT');
    },
    async kill9() {
      if (!proc || !server.running) return;
      proc.kill('SIGKILL');
      await exited;
    },
    async restart() {
      await server.kill9();
      await server.start();
    },
    async stop() {
      await server.kill9();
      rmSync(dir, { recursive: true, force: true });
    },
    cli: (...args) => redisCliAuth(port, opts.password, ...args),
    output: () => out,
  };
  if (opts.start !== false) {
    try {
      await server.start();
    } catch (e) {
      await server.stop();
      throw e;
    }
  }
  return server;
}

// ---- cluster --------------------------------------------------------------

export interface ClusterNodeView {
  readonly id: string;
  readonly port: number;
  readonly flags: readonly string[];
  readonly masterId: string | undefined;
  readonly slots: readonly string[];
}

export interface RedisCluster {
  readonly nodes: readonly RedisServer[];
  /** `127.0.0.1:port` of every node, for createRedisBroker({ cluster }). */
  readonly seeds: readonly string[];
  /** CLUSTER NODES as seen from a running node. */
  view(): Promise<ClusterNodeView[]>;
  /** Running masters that own slots. */
  masters(): Promise<ClusterNodeView[]>;
  /** Port of the master that owns a key's slot. */
  ownerOf(key: string): Promise<number>;
  /** SIGKILLs a master and waits until its replica is master and the cluster is ok again. */
  killMaster(port: number): Promise<{ killed: number; promoted: number }>;
  /** Waits until the replicas of a master have acknowledged everything it wrote so far (replication is asynchronous). */
  untilReplicated(port: number): Promise<void>;
  stop(): Promise<void>;
}

function parseNodes(text: string): ClusterNodeView[] {
  return text
    .split('\n')
    .filter((l) => l.trim().length > 0)
    .map((l) => {
      const f = l.trim().split(' ');
      const addr = f[1] ?? '';
      const port = Number(addr.split('@')[0]?.split(':').pop());
      return {
        id: f[0] ?? '',
        port,
        flags: (f[2] ?? '').split(','),
        masterId: f[3] === '-' ? undefined : f[3],
        slots: f.slice(8),
      };
    });
}

/** Three masters and three replicas on loopback, created with redis-cli --cluster create. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const nodes: RedisServer[] = [];
  const cleanup = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.stop()));
  };
  try {
    for (let i = 0; i < 6; i++) {
      const busPort = await freePort();
      nodes.push(
        await startRedis({
          args: [
            '--cluster-enabled', 'yes',
            '--cluster-config-file', 'nodes.conf',
            '--cluster-node-timeout', '2000',
            '--cluster-port', String(busPort),
          ],
        }),
      );
    }
    const seeds = nodes.map((n) => `127.0.0.1:${n.port}`);
    await new Promise<void>((resolve, reject) => {
      execFile('redis-cli', ['--cluster', 'create', ...seeds, '--cluster-replicas', '1', '--cluster-yes'], { timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`redis-cli --cluster create failed: ${err.message}\n${stdout}\n${stderr}`));
        else resolve();
      });
    });
    const clusterOk = async (n: RedisServer): Promise<boolean> => {
      const info = (await n.cli('CLUSTER', 'INFO')).join('\n');
      return info.includes('cluster_state:ok') && info.includes('cluster_known_nodes:6') && info.includes('cluster_slots_assigned:16384');
    };
    for (const n of nodes) await pollUntil(() => clusterOk(n), `cluster_state:ok on ${n.port}`, 60_000);
    // Replicas must be in sync, or a failover may refuse to happen.
    for (const n of nodes) {
      await pollUntil(async () => {
        const repl = (await n.cli('INFO', 'replication')).join('\n');
        return repl.includes('role:master') || repl.includes('master_link_status:up');
      }, `replication link on ${n.port}`, 60_000);
    }
    await pollUntil(async () => {
      const views = await Promise.all(nodes.map(async (n) => parseNodes((await n.cli('CLUSTER', 'NODES')).join('\n'))));
      return views.every((v) => v.filter((x) => x.flags.includes('master')).length === 3 && v.filter((x) => x.flags.includes('slave')).length === 3);
    }, 'every node to see 3 masters and 3 replicas', 60_000);

    const anyRunning = (): RedisServer => {
      const n = nodes.find((x) => x.running);
      if (!n) throw new Error('no cluster node is running');
      return n;
    };
    const view = async (): Promise<ClusterNodeView[]> => parseNodes((await anyRunning().cli('CLUSTER', 'NODES')).join('\n'));

    const cluster: RedisCluster = {
      nodes,
      seeds,
      view,
      async masters() {
        const v = await view();
        return v.filter((x) => x.flags.includes('master') && !x.flags.includes('fail') && x.slots.length > 0);
      },
      async ownerOf(key) {
        const slot = Number((await anyRunning().cli('CLUSTER', 'KEYSLOT', key))[0]);
        for (const m of await cluster.masters()) {
          for (const r of m.slots) {
            const [a, b] = r.split('-').map(Number);
            if (a !== undefined && slot >= a && slot <= (b ?? a)) return m.port;
          }
        }
        throw new Error(`no master owns slot ${slot}`);
      },
      async killMaster(port) {
        const before = await view();
        const master = before.find((x) => x.port === port);
        if (!master || !master.flags.includes('master')) throw new Error(`${port} is not a master`);
        const replica = before.find((x) => x.masterId === master.id);
        if (!replica) throw new Error(`master ${port} has no replica`);
        const node = nodes.find((n) => n.port === port);
        await node?.kill9();
        const survivors = nodes.filter((n) => n.running);
        await pollUntil(async () => {
          for (const n of survivors) {
            const v = parseNodes((await n.cli('CLUSTER', 'NODES')).join('\n'));
            const r = v.find((x) => x.id === replica.id);
            if (!r || !r.flags.includes('master')) return false;
            const info = (await n.cli('CLUSTER', 'INFO')).join('\n');
            if (!info.includes('cluster_state:ok')) return false;
          }
          return true;
        }, `replica ${replica.port} to take over from master ${port}`, 60_000);
        return { killed: port, promoted: replica.port };
      },
      async untilReplicated(port) {
        const node = nodes.find((n) => n.port === port);
        if (!node) throw new Error(`no cluster node on ${port}`);
        const info = (await node.cli('INFO', 'replication')).join('\n');
        const target = Number(/master_repl_offset:(\d+)/.exec(info)?.[1]);
        await pollUntil(async () => {
          const now = (await node.cli('INFO', 'replication')).join('\n');
          const acked = [...now.matchAll(/^slave\d+:.*,offset=(\d+),/gm)].map((m) => Number(m[1]));
          return acked.length > 0 && acked.every((o) => o >= target);
        }, `the replicas of ${port} to reach replication offset ${target}`);
      },
      stop: cleanup,
    };
    return cluster;
  } catch (e) {
    await cleanup();
    throw e;
  }
}
