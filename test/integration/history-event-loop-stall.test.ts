/**
 * A node whose event loop really stalls (SIGSTOP) while another node keeps
 * publishing to channels it subscribes to. Redis buffers what the stopped node
 * does not read until the pubsub output-buffer limit (lowered to 256 kB on this
 * test's own redis-server) makes it cut the node's subscriber connection. After
 * SIGCONT the node must notice, reconnect, resubscribe and count the gap, never
 * leave a silent hole:
 *
 * - its history subscriber is closed with 1011 and recovers with `since`,
 *   getting every offset exactly once;
 * - its non-history subscriber stays connected and gets what is published
 *   after the node is back;
 * - `pubgate_broker_gaps_total` counts the gap, `/readyz` is 200 again, and the
 *   event-loop delay metrics show the stall.
 *
 * Every wait is on an event or a polled condition with a bound; the stopped
 * process is continued in `finally` and again in afterAll.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metric, type GatewayProcess } from '../helpers/gateway.js';
import { HistoryClient, closeClients, publishBatchH, publishOffset, range } from '../helpers/history.js';
import { logMark, startNodes, stopNodes, untilReadyz, waitForNewLog } from '../helpers/multinode.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';

const NODE_ENV = { PUBGATE_HISTORY_CHANNELS: 'h:*', PUBGATE_HISTORY_SIZE: '100000', PUBGATE_LOG_LEVEL: 'info' };
/** Redis client name of node A's subscriber connection (`pubgate-<nodeId>-sub`, src/broker/redis-broker.ts). */
const A_SUB = 'pubgate-stall-a-sub';
/** Filler per publish batch: 16 messages of 60 kB on the non-history channel. */
const FILLER = 'x'.repeat(60_000);
const FILLER_PER_BATCH = 16;
/** The stall lasts at least this long, so that it stands far above normal event-loop delays. */
const MIN_STALL_MS = 2000;

const nodes: GatewayProcess[] = [];
const clients: HistoryClient[] = [];
let redis: RedisServer | undefined;
let nodeA: GatewayProcess | undefined;
let nodeB: GatewayProcess | undefined;
/** pid of a process this file has stopped and not yet continued. */
let stoppedPid: number | undefined;

function resume(): void {
  if (stoppedPid === undefined) return;
  try {
    process.kill(stoppedPid, 'SIGCONT');
  } catch (e) {
    // Already gone: nothing to continue.
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  stoppedPid = undefined;
}

beforeAll(async () => {
  redis = await startRedis();
  // Only this test's own redis-server: a subscriber more than 256 kB behind is cut at once.
  expect(await redis.cli('CONFIG', 'SET', 'client-output-buffer-limit', 'pubsub 256kb 0 0')).toEqual(['OK']);
  // A: a send buffer large enough that the backlog it reads after the stall
  // never makes its own subscribers slow consumers (that is another test).
  // B: batches of ~1 MB through the publish API.
  [nodeA] = await startNodes(['stall-a'], { ...NODE_ENV, PUBGATE_REDIS_URL: redis.url, PUBGATE_MAX_BACKPRESSURE: String(256 * 1024 * 1024) }, nodes);
  [nodeB] = await startNodes(['stall-b'], { ...NODE_ENV, PUBGATE_REDIS_URL: redis.url, PUBGATE_MAX_PUBLISH_BYTES: String(4 * 1024 * 1024) }, nodes);
  await Promise.all(nodes.map((n) => untilReadyz(n, 200)));
}, 60_000);

afterAll(async () => {
  resume();
  await closeClients(clients);
  await stopNodes(nodes);
  await redis?.stop();
});

/** The process state letter from /proc/<pid>/stat (R, S, T for stopped, ...). */
function procState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

async function clientNames(r: RedisServer): Promise<string[]> {
  return (await r.cli('CLIENT', 'LIST')).map((l) => / name=(\S*) /.exec(l)?.[1] ?? '');
}

describe("a node's event loop stalls until Redis cuts its subscriber connection for output-buffer overflow", () => {
  it('notices after the stall, reconnects, resubscribes and counts the gap; history subscribers recover every offset once', async () => {
    const r = redis;
    const a = nodeA;
    const b = nodeB;
    if (!r || !a || !b) throw new Error('set-up did not complete');
    const id = randomUUID().slice(0, 8);
    const hCh = `h:stall:${id}`;
    const pCh = `p:stall:${id}`;

    const hist = await HistoryClient.open(a.url);
    clients.push(hist);
    const epoch = (await hist.subscribe(hCh)).epoch as string;
    const plain = await HistoryClient.open(a.url);
    clients.push(plain);
    await plain.subscribe(pCh);
    expect(await clientNames(r)).toContain(A_SUB);

    // Live before the stall.
    let total = 0;
    for (let i = 0; i < 5; i++) total = await publishOffset(b, hCh, { seq: i });
    await hist.untilOffset(hCh, total);

    // Nothing scrapes A's /metrics before the stall: a scrape resets the
    // event-loop delay histogram and its delta clock, so a stall that began
    // within one monitor interval (10 ms) of a scrape would not be recorded.
    // The gap and reconnect counters start at 0 and A has not lost Redis so far.
    const mark = logMark(a);
    expect(a.lines.some((l) => l.msg.startsWith('broker subscriptions restored'))).toBe(false);

    const pid = a.proc.pid!;
    stoppedPid = pid;
    process.kill(pid, 'SIGSTOP');
    let stallMs: number;
    let fillerBytes = 0;
    try {
      await pollUntil(() => procState(pid) === 'T', 'node A to be stopped', 10_000);
      const stallStart = performance.now();

      // B publishes one history message and ~1 MB of filler per batch until Redis
      // has cut A's subscriber connection (a bound keeps a broken limit from running forever).
      const publishRound = async (withFiller: boolean): Promise<void> => {
        const messages = [{ channel: hCh, data: { seq: total } }, ...(withFiller ? Array.from({ length: FILLER_PER_BATCH }, () => ({ channel: pCh, data: FILLER })) : [])];
        const res = await publishBatchH(b, messages);
        const results = res.body.results as Array<{ offset?: number }> | undefined;
        if (res.status !== 200 || typeof results?.[0]?.offset !== 'number') throw new Error(`publish through B: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
        total = results[0].offset;
        if (withFiller) fillerBytes += FILLER_PER_BATCH * FILLER.length;
      };
      while ((await clientNames(r)).includes(A_SUB)) {
        if (fillerBytes > 512 * 1024 * 1024) throw new Error(`Redis did not cut A's subscriber connection after ${fillerBytes} bytes of filler`);
        await publishRound(true);
      }
      // Published after the cut, while A is still stopped: only recovery brings these.
      for (let i = 0; i < 5; i++) await publishRound(false);
      // The stall's length is chosen, not waited for: keep A stopped for at least MIN_STALL_MS.
      const rest = MIN_STALL_MS - (performance.now() - stallStart);
      if (rest > 0) await new Promise((resolve) => setTimeout(resolve, rest));
      stallMs = performance.now() - stallStart;
    } finally {
      resume();
    }
    expect(r.output()).toMatch(new RegExp(`name=${A_SUB} .*overcoming of output buffer limits`));

    // The history subscriber got a gap-free prefix (what was in flight before the
    // cut), then the 1011 close that tells it to recover.
    await hist.until(() => hist.closeInfo !== undefined, 'the history subscriber on A to be closed after the gap', 30_000);
    expect(hist.closeInfo?.code).toBe(1011);
    const before = hist.offsets(hCh);
    expect(before).toEqual(range(1, before.length));
    expect(before.length).toBeLessThan(total);

    // The node noticed, reconnected and resubscribed, and said so.
    const restored = await waitForNewLog(a, mark, (l) => l.msg.startsWith('broker subscriptions restored after a loss'), 30_000);
    // Its channels then: the non-history one (the history subscriber, closed first, released its channel).
    expect(restored).toMatchObject({ level: 'warn', channels: 1 });
    expect(await waitForNewLog(a, mark, (l) => l.msg.startsWith('closed history-channel subscribers with 1011'))).toMatchObject({ connections: 1 });
    // The first scrape since A started. The delay monitor's timer ran once the
    // loop ran again, at least the stall after its previous run (the histogram
    // keeps 3 significant digits).
    const lagMaxSec = await metric(a.admin, 'nodejs_eventloop_lag_max_seconds');
    expect(lagMaxSec).toBeGreaterThanOrEqual((stallMs / 1000) * 0.99);
    expect(await metric(a.admin, 'pubgate_broker_gaps_total')).toBe(1);
    expect(await metric(a.admin, 'pubgate_broker_reconnects_total')).toBeGreaterThanOrEqual(1);
    await untilReadyz(a, 200, 30_000, 'after the stall');
    expect(await clientNames(r)).toContain(A_SUB);

    // The non-history subscriber was not closed and gets what is published now.
    expect(plain.closeInfo).toBeUndefined();
    expect(await plain.alive()).toBe('open');
    await publishBatchH(b, [{ channel: pCh, data: { after: 'stall' } }]);
    await plain.untilData(pCh, (d) => (d as { after?: string }).after === 'stall');

    // Recovery from the last offset the closed subscriber got: every later one, once, then live.
    const back = await HistoryClient.open(a.url);
    clients.push(back);
    const last = hist.last(hCh);
    expect(last).toEqual({ offset: before.length, epoch });
    expect(await back.subscribe(hCh, last)).toEqual({ type: 'reply', id: 1, recovered: true, offset: total, epoch });
    await back.untilOffset(hCh, total);
    const live = await publishOffset(b, hCh, { after: 'stall' });
    await back.untilOffset(hCh, live);
    expect([...before, ...back.offsets(hCh)]).toEqual(range(1, live));
    expect(fillerBytes).toBeGreaterThan(256 * 1024);
  });
});
