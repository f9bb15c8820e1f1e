// Server processes (pubgate, the ws baseline, redis-server): start pinned to a
// core, wait until they accept connections, read their CPU and memory from
// /proc, and stop them. Every wait here has a deadline.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

const running = new Set();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

let tasksetOk;
export function hasTaskset() {
  if (tasksetOk === undefined) {
    const r = spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    tasksetOk = r.status === 0;
  }
  return tasksetOk;
}

/**
 * Pins this script to `clientCpus` (its forked clients inherit the affinity):
 * on the first call in an unpinned process it re-runs the script under
 * taskset and exits with its status. Returns whether the run is pinned.
 */
export function pinToClientCpus(clientCpus, noPin) {
  if (process.env.BENCH_PINNED === '1') return true;
  if (noPin || os.cpus().length < 2 || !hasTaskset()) return false;
  const r = spawnSync('taskset', ['-c', clientCpus, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_PINNED: '1' },
  });
  process.exit(r.status ?? 1);
}

let clkTck;
function ticksPerSec() {
  if (clkTck === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    clkTck = Number(r.stdout) > 0 ? Number(r.stdout) : 100;
  }
  return clkTck;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `cmd args` (under `taskset -c cpus` when given and available) and
 * resolves once every port in `readyPorts` accepts TCP connections. Rejects
 * with the tail of its output when it exits first or after `timeoutMs`.
 */
export async function startProcess({ name, cmd, args, env, cpus, readyPorts, timeoutMs = 15_000 }) {
  const pinned = cpus !== undefined && hasTaskset();
  const argv = pinned ? ['-c', String(cpus), cmd, ...args] : args;
  const p = spawn(pinned ? 'taskset' : cmd, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(p);
  const tail = [];
  const keep = (d) => {
    for (const line of String(d).split('\n')) if (line.trim()) tail.push(line.slice(0, 400));
    while (tail.length > 30) tail.shift();
  };
  p.stdout.on('data', keep);
  p.stderr.on('data', keep);
  let exitCode;
  const exited = new Promise((resolve) => p.once('exit', (code, sig) => {
    running.delete(p);
    exitCode = code ?? sig;
    resolve(exitCode);
  }));
  const deadline = Date.now() + timeoutMs;
  for (const port of readyPorts) {
    for (;;) {
      if (exitCode !== undefined) throw new Error(`${name} exited (${exitCode}) before listening:\n  ${tail.join('\n  ')}`);
      if (await canConnect(port)) break;
      if (Date.now() > deadline) {
        p.kill('SIGKILL');
        throw new Error(`${name} did not listen on ${port} within ${timeoutMs} ms:\n  ${tail.join('\n  ')}`);
      }
      await sleep(50);
    }
  }
  return {
    name,
    pid: p.pid,
    proc: p,
    pinned,
    tail,
    exited,
    get alive() {
      return exitCode === undefined;
    },
    get exitCode() {
      return exitCode;
    },
    async stop(signal = 'SIGKILL', graceMs = 10_000) {
      if (exitCode !== undefined) return exitCode;
      p.kill(signal);
      const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
      return exitCode;
    },
  };
}

/** CPU seconds (user + system, every thread) the process has used so far. */
export function procCpuSec(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // Fields after the command: state(0) ... utime(11) stime(12).
    return (Number(f[11]) + Number(f[12])) / ticksPerSec();
  } catch {
    return NaN;
  }
}

/**
 * CPU nanoseconds the process has run so far, summed over its threads from
 * /proc/<pid>/task/<tid>/schedstat (nanosecond resolution, where the
 * /proc/<pid>/stat figure moves in 10 ms ticks): for phases of a few hundred
 * milliseconds. Falls back to procCpuSec when schedstat is not there.
 */
export function procCpuNs(pid) {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // a thread that exited meanwhile
      }
    }
    return ns;
  } catch {
    return procCpuSec(pid) * 1e9;
  }
}

/** Resident set size in KiB (VmRSS). */
export function procRssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Per-core jiffies from /proc/stat: busy (all but idle and iowait), interrupts (irq + softirq), total. */
export function coreTimes() {
  const out = {};
  try {
    for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
      const m = /^cpu(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const v = m[2].split(/\s+/).map(Number);
      const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
      out[m[1]] = { busy: total - v[3] - v[4], irq: v[5] + v[6], total };
    }
  } catch {
    // not Linux: no per-core figures
  }
  return out;
}

/** Per core between two coreTimes() snapshots: { busy, irq } as fractions of that core. */
export function coreBusy(a, b) {
  const out = {};
  for (const k of Object.keys(b)) {
    if (!a[k]) continue;
    const dt = b[k].total - a[k].total;
    out[k] = dt > 0 ? { busy: (b[k].busy - a[k].busy) / dt, irq: (b[k].irq - a[k].irq) / dt } : { busy: NaN, irq: NaN };
  }
  return out;
}

/**
 * Waits (at most `maxMs`) until the given cores were at least `idleFrac` idle
 * over a 500 ms window: other work on a shared machine skews throughput.
 * Resolves with the idle fractions of the last window.
 */
export async function waitQuiet(cores, maxMs, idleFrac = 0.85) {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const a = coreTimes();
    await sleep(500);
    const busy = coreBusy(a, coreTimes());
    const idle = cores.map((c) => 1 - (busy[c]?.busy ?? 0));
    if (idle.every((x) => x >= idleFrac) || Date.now() >= deadline) return idle;
  }
}

export function sleepMs(ms) {
  return sleep(ms);
}

/** Expands a taskset CPU list ("0", "0,2", "0-3") into core numbers as strings. */
export function cpuList(list) {
  const out = [];
  for (const part of String(list).split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) out.push(String(c));
  }
  return out;
}

/**
 * How busy a group of cores was, split into our own processes (`ownFrac`, CPU
 * seconds per second per core), interrupts (softirq: on loopback the kernel's
 * TCP work) and everything else on the machine ("other").
 */
export function splitCores(busy, cpus, ownFrac) {
  if (!cpus || cpus.length === 0 || cpus.some((c) => !busy[c])) return undefined;
  const avg = (f) => cpus.reduce((a, c) => a + f(busy[c]), 0) / cpus.length;
  const b = avg((x) => x.busy);
  const irq = avg((x) => x.irq);
  return { busy: b, irq, own: ownFrac, other: Math.max(0, b - irq - ownFrac) };
}
