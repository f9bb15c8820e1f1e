// What the client processes (worker.mjs, peer-worker.mjs) share: their CPU
// clock, a bounded task runner, and the IPC loop that answers the runner's
// commands (workers.mjs) with the handler of each.

/** CPU time (user + system) this process spent since `mark` (a process.cpuUsage()), in ms. */
export const cpuMsSince = (mark) => {
  const d = process.cpuUsage(mark);
  return (d.user + d.system) / 1000;
};

/** Runs `count` tasks with at most `limit` at once; resolves when all settled. */
export async function bounded(count, limit, task) {
  let next = 0;
  const lanes = [];
  for (let l = 0; l < Math.min(limit, count); l++) {
    lanes.push((async () => {
      while (next < count) await task(next++);
    })());
  }
  await Promise.all(lanes);
}

/**
 * Answers each message { cmd, seq, ... } from the runner with
 * `handlers[cmd](message)`'s result plus { seq, status: 'ok' }, or
 * { seq, status: 'error', error }; the runner going away ends this process.
 */
export function serveCommands(handlers) {
  process.on('message', (m) => {
    Promise.resolve()
      .then(() => handlers[m.cmd](m))
      .then(
        (r) => process.send({ ...r, seq: m.seq, status: 'ok' }),
        (e) => process.send({ seq: m.seq, status: 'error', error: String(e?.stack ?? e) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
}
