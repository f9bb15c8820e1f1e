// The runner's side of the client processes: fork, call with a deadline,
// and the running message count each one reports every few milliseconds.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const WORKER = fileURLToPath(new URL('./worker.mjs', import.meta.url));

class Worker {
  constructor(index, onProgress, script = WORKER) {
    this.index = index;
    this.progress = 0;
    this.presence = 0; // join/leave frames received (presence scenarios)
    this.sse = 0; // SSE message events received (sse-fanout)
    this.seq = 0;
    this.pending = new Map();
    this.proc = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.exited = false;
    this.proc.on('message', (m) => {
      if (m.progress !== undefined) {
        this.progress = m.progress;
        this.presence = m.presence ?? 0;
        this.sse = m.sse ?? 0;
        onProgress?.();
        return;
      }
      const p = this.pending.get(m.seq);
      if (!p) return;
      this.pending.delete(m.seq);
      clearTimeout(p.timer);
      if (m.status === 'ok') p.resolve(m);
      else p.reject(new Error(`client ${this.index}: ${m.error}`));
    });
    this.proc.on('exit', (code) => {
      this.exited = true;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`client ${this.index} exited (${code})`));
      }
      this.pending.clear();
    });
  }

  get pid() {
    return this.proc.pid;
  }

  call(cmd, args = {}, timeoutMs = 30_000) {
    if (this.exited) return Promise.reject(new Error(`client ${this.index} has exited`));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`client ${this.index}: ${cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
      this.proc.send({ ...args, cmd, seq });
    });
  }

  async stop() {
    if (this.exited) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    await this.call('exit', {}, 5000).catch(() => this.proc.kill('SIGKILL'));
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
}

/** `script`: the client process to fork (default worker.mjs; the pusher scenarios and the peer targets soketi and socketio: peer-worker.mjs). */
export function forkWorkers(n, onProgress, script = WORKER) {
  return Array.from({ length: n }, (_, i) => new Worker(i, onProgress, script));
}

export function stopWorkers(workers) {
  return Promise.all(workers.map((w) => w.stop()));
}

/** Splits `total` into `parts` near-equal shares. */
export function shares(total, parts) {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}

/**
 * The local ports client process `i` of `n` binds its connections to: a share
 * of 10000–32767, below Linux's default ephemeral range (32768–60999), so the
 * servers' own ports (picked by the OS) never collide with them.
 */
export function localPortRange(i, n, from = 10_000, to = 32_768) {
  const size = Math.floor((to - from) / n);
  return [from + i * size, from + (i + 1) * size];
}
