/**
 * The subscription batcher (src/broker/sub-batcher.ts) against a fake
 * connection that records every command and answers when the test says so:
 * coalescing per event-loop turn, bounded command size and window, one slot
 * per command, subscribe/unsubscribe of one channel in one turn, order across
 * turns, stalls and error replies (never a reconnect), aggregated warnings.
 */
import { describe, expect, it } from 'vitest';
import { SubscriptionBatcher, type SubOp } from '../../src/broker/sub-batcher.js';
import { GatewayError } from '../../src/errors.js';
import { memoryLog, type MemoryLog } from '../helpers/broker-contract.js';

interface Sent {
  readonly op: SubOp;
  readonly channels: string[];
  answer(): void;
  fail(e: Error): void;
  settled: boolean;
}

/** One event-loop turn: the batcher writes its commands in setImmediate. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Lets promise callbacks and the next turn run (answers go out, the pump writes again). */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await turn();
}

function fake(o: { maxBatch?: number; window?: number; stallMs?: number; retryMs?: number; batchKey?: (ch: string) => number; tallyMs?: number } = {}): {
  b: SubscriptionBatcher;
  sent: Sent[];
  log: MemoryLog;
  changes: () => number;
  /** Answers every command written and not yet answered, in order. */
  answerAll(): void;
  open(): Sent[];
} {
  const sent: Sent[] = [];
  const log = memoryLog();
  let changes = 0;
  const b = new SubscriptionBatcher({
    name: 'test',
    log,
    stallMs: o.stallMs ?? 10_000,
    retryMs: o.retryMs ?? 20,
    tallyMs: o.tallyMs ?? 50,
    ...(o.maxBatch !== undefined ? { maxBatch: o.maxBatch } : {}),
    ...(o.window !== undefined ? { window: o.window } : {}),
    ...(o.batchKey ? { batchKey: o.batchKey } : {}),
    onChange: () => {
      changes += 1;
    },
    send: (op, channels) =>
      new Promise<void>((resolve, reject) => {
        const s: Sent = {
          op,
          channels: [...channels],
          settled: false,
          answer: () => {
            s.settled = true;
            resolve();
          },
          fail: (e) => {
            s.settled = true;
            reject(e);
          },
        };
        sent.push(s);
      }),
  });
  const open = (): Sent[] => sent.filter((s) => !s.settled);
  return {
    b,
    sent,
    log,
    changes: () => changes,
    open,
    answerAll: () => {
      for (const s of open()) s.answer();
    },
  };
}

/** Resolves to 'resolved' or the rejection's GatewayError code, without waiting longer than the promise takes. */
function outcome(p: Promise<void>): Promise<string> {
  return p.then(
    () => 'resolved',
    (e: unknown) => (e instanceof GatewayError ? e.code : String(e)),
  );
}

describe('SubscriptionBatcher', () => {
  it('coalesces the subscribes of one turn into commands of at most maxBatch channels, each channel once', async () => {
    const f = fake({ maxBatch: 500 });
    f.b.connectionUp();
    const channels = Array.from({ length: 1234 }, (_, i) => `c${i}`);
    const waits = channels.map((ch) => f.b.add(ch));
    // Twice in the same turn: still one subscribe.
    f.b.add('c7').catch(() => undefined);
    expect(f.sent).toHaveLength(0); // nothing written before the turn ends
    await turn();
    expect(f.sent.map((s) => [s.op, s.channels.length])).toEqual([
      ['subscribe', 500],
      ['subscribe', 500],
      ['subscribe', 234],
    ]);
    expect(f.sent.flatMap((s) => s.channels).sort()).toEqual([...channels].sort());
    expect(f.b.isConfirmed('c0')).toBe(false);
    f.answerAll();
    expect(await Promise.all(waits.map(outcome))).toEqual(channels.map(() => 'resolved'));
    expect(channels.every((ch) => f.b.isConfirmed(ch))).toBe(true);
    expect(f.b.live()).toBe(true);
  });

  it('releases 100 000 channels dropped in one turn with 200 commands, at most `window` in flight, and never refuses meanwhile', async () => {
    const f = fake({ maxBatch: 500, window: 32 });
    f.b.connectionUp();
    const channels = Array.from({ length: 100_000 }, (_, i) => `ch:${i}`);
    const subs = channels.map((ch) => f.b.add(ch));
    await turn();
    while (f.open().length > 0) {
      f.answerAll();
      await settle();
    }
    await Promise.all(subs);
    const subscribeCommands = f.sent.length;
    expect(subscribeCommands).toBe(200);

    const releases = channels.map((ch) => f.b.remove(ch));
    await turn();
    let maxOpen = 0;
    let released = false;
    const all = Promise.all(releases).then(() => {
      released = true;
    });
    let mid: Promise<string> | undefined;
    while (f.open().length > 0) {
      maxOpen = Math.max(maxOpen, f.open().length);
      // The releases resolve only once Redis answered every one of them.
      expect(released).toBe(false);
      // A client subscribing in the middle of the churn is answered, not refused.
      mid ??= outcome(f.b.add('mid-churn'));
      f.answerAll();
      await settle();
    }
    await all;
    expect(await mid).toBe('resolved');
    expect(f.b.isConfirmed('mid-churn')).toBe(true);
    const unsubs = f.sent.slice(subscribeCommands).filter((s) => s.op === 'unsubscribe');
    expect(f.sent.slice(subscribeCommands).filter((s) => s.op === 'subscribe').map((s) => s.channels)).toEqual([['mid-churn']]);
    expect(unsubs.every((s) => s.channels.length <= 500)).toBe(true);
    expect(unsubs).toHaveLength(200);
    expect(maxOpen).toBeLessThanOrEqual(32);
    expect(new Set(unsubs.flatMap((s) => s.channels)).size).toBe(100_000);
    expect(f.b.live()).toBe(true);
    expect(f.b.backlog()).toEqual({ queued: 0, inFlight: 0, waiting: 0 });
  });

  it('writes at most `window` commands until answers come back', async () => {
    const f = fake({ maxBatch: 10, window: 3 });
    f.b.connectionUp();
    const waits = Array.from({ length: 100 }, (_, i) => f.b.add(`w${i}`));
    await turn();
    expect(f.sent).toHaveLength(3);
    expect(f.b.backlog()).toEqual({ queued: 70, inFlight: 3, waiting: 100 });
    f.sent[0]?.answer();
    await settle();
    expect(f.sent).toHaveLength(4);
    while (f.open().length > 0) {
      f.answerAll();
      await settle();
    }
    await Promise.all(waits);
    expect(f.sent).toHaveLength(10);
  });

  it('cancels a subscribe and an unsubscribe of one channel in the same turn (nothing is written)', async () => {
    const f = fake();
    f.b.connectionUp();
    const sub = f.b.add('x');
    const unsub = f.b.remove('x');
    await turn();
    expect(f.sent).toEqual([]);
    // The subscribe was superseded by the release the same caller asked for.
    expect(await outcome(sub)).toBe('resolved');
    expect(await outcome(unsub)).toBe('resolved');
    expect(f.b.isConfirmed('x')).toBe(false);
  });

  it('ends subscribed after subscribe, unsubscribe, subscribe in one turn (one SUBSCRIBE)', async () => {
    const f = fake();
    f.b.connectionUp();
    const first = f.b.add('y');
    void f.b.remove('y');
    const second = f.b.add('y');
    await turn();
    expect(f.sent.map((s) => [s.op, s.channels])).toEqual([['subscribe', ['y']]]);
    f.answerAll();
    expect(await outcome(first)).toBe('resolved');
    expect(await outcome(second)).toBe('resolved');
    expect(f.b.isConfirmed('y')).toBe(true);
  });

  it('keeps a confirmed channel when it is released and taken again in one turn (nothing is written)', async () => {
    const f = fake();
    f.b.connectionUp();
    const p = f.b.add('z');
    await turn();
    f.answerAll();
    await p;
    const release = f.b.remove('z');
    expect(f.b.isConfirmed('z')).toBe(false);
    expect(await outcome(f.b.add('z'))).toBe('resolved');
    await turn();
    expect(f.sent).toHaveLength(1);
    expect(await outcome(release)).toBe('resolved');
    expect(f.b.isConfirmed('z')).toBe(true);
  });

  it('orders changes across turns: a subscribe answered after a later unsubscribe was written does not confirm', async () => {
    const f = fake();
    f.b.connectionUp();
    const sub = f.b.add('q');
    await turn();
    const release = f.b.remove('q');
    await turn();
    const again = f.b.add('q');
    await turn();
    expect(f.sent.map((s) => [s.op, s.channels])).toEqual([
      ['subscribe', ['q']],
      ['unsubscribe', ['q']],
      ['subscribe', ['q']],
    ]);
    expect(await outcome(sub)).toBe('resolved'); // superseded by the release
    f.sent[0]?.answer();
    await settle();
    // Redis holds q after the first SUBSCRIBE, but the UNSUBSCRIBE after it is not answered yet.
    expect(f.b.isConfirmed('q')).toBe(false);
    let released = false;
    void release.then(() => (released = true));
    await settle();
    expect(released).toBe(false); // resolves only once Redis answered the release
    f.sent[1]?.answer();
    await settle();
    expect(released).toBe(true);
    expect(f.b.isConfirmed('q')).toBe(false);
    f.sent[2]?.answer();
    expect(await outcome(again)).toBe('resolved');
    expect(f.b.isConfirmed('q')).toBe(true);
  });

  it('tracks the wanted set like a model under interleaved calls over many turns', async () => {
    const f = fake({ maxBatch: 7, window: 2 });
    f.b.connectionUp();
    const model = new Set<string>();
    const ops: Array<Promise<void>> = [];
    for (let i = 0; i < 2000; i++) {
      const ch = `r${(i * 7) % 23}`;
      if ((i * 13) % 5 < 3) {
        model.add(ch);
        ops.push(f.b.add(ch));
      } else {
        model.delete(ch);
        ops.push(f.b.remove(ch));
      }
      if (i % 37 === 0) {
        await turn();
        f.open()[0]?.answer();
      }
    }
    while (f.open().length > 0 || f.b.backlog().queued > 0) {
      f.answerAll();
      await settle();
    }
    await Promise.all(ops);
    // Redis' state: replay every command in order.
    const atRedis = new Set<string>();
    for (const s of f.sent) {
      for (const ch of s.channels) {
        if (s.op === 'subscribe') atRedis.add(ch);
        else atRedis.delete(ch);
      }
    }
    expect([...atRedis].sort()).toEqual([...model].sort());
    expect([...f.b.wanted].sort()).toEqual([...model].sort());
    for (const ch of model) expect(f.b.isConfirmed(ch)).toBe(true);
    expect(f.sent.every((s) => s.channels.length <= 7)).toBe(true);
    expect(f.b.live()).toBe(true);
  });

  it('never puts channels with different batch keys (cluster slots) in one command', async () => {
    const f = fake({ maxBatch: 4, batchKey: (ch) => Number(ch.split(':')[0]) });
    f.b.connectionUp();
    for (let i = 0; i < 30; i++) void f.b.add(`${i % 3}:${i}`);
    await turn();
    for (const s of f.sent) expect(new Set(s.channels.map((ch) => ch.split(':')[0])).size).toBe(1);
    expect(f.sent.every((s) => s.channels.length <= 4)).toBe(true);
    expect(f.sent.flatMap((s) => s.channels)).toHaveLength(30);
  });

  it('writes subscribes before unsubscribes queued earlier (a client waits for those)', async () => {
    const f = fake({ maxBatch: 2, window: 1 });
    f.b.connectionUp();
    const setup = ['a', 'b', 'c', 'd'].map((ch) => f.b.add(ch));
    await turn();
    while (f.open().length > 0) {
      f.answerAll();
      await settle();
    }
    await Promise.all(setup);
    for (const ch of ['a', 'b', 'c', 'd']) void f.b.remove(ch);
    await turn();
    const fresh = f.b.add('new');
    await turn();
    // The first release went out before 'new' was asked for; the next command is the subscribe.
    f.answerAll();
    await settle();
    const ops = f.sent.slice(2).map((s) => s.op);
    expect(ops.slice(0, 2)).toEqual(['unsubscribe', 'subscribe']);
    f.answerAll();
    expect(await outcome(fresh)).toBe('resolved');
  });

  it('refuses the waiting subscribes when Redis answers nothing for stallMs, without dropping anything, and recovers on the next answer', async () => {
    const f = fake({ stallMs: 60 });
    f.b.connectionUp();
    f.b.pin('probe');
    const other = f.b.add('other');
    await turn();
    f.answerAll();
    await other;
    expect(f.b.live()).toBe(true);
    const waiting = f.b.add('slow');
    const release = f.b.remove('other');
    await turn();
    expect(f.open().map((s) => s.op)).toEqual(['subscribe', 'unsubscribe']);
    expect(await outcome(waiting)).toBe('unavailable');
    expect(await outcome(release)).toBe('resolved');
    const warns = f.log.lines.filter((l) => l.level === 'warn');
    expect(warns.map((l) => l.msg)).toEqual(["redis subscriber connection not answering; refusing the subscribes waiting for it"]);
    // While stalled, new subscribes are refused at once; the established ones stay live (the self-probe decides).
    expect(await outcome(f.b.add('later'))).toBe('unavailable');
    // ...but a channel the connection holds already is confirmed.
    expect(await outcome(f.b.add('probe'))).toBe('resolved');
    expect(f.b.live()).toBe(true);
    f.answerAll();
    await settle();
    expect(f.log.lines.some((l) => l.msg === 'redis subscriber connection answering again')).toBe(true);
    // 'slow' was confirmed by Redis after all, and is still wanted: it counts as confirmed.
    expect(f.b.isConfirmed('slow')).toBe(true);
    const next = f.b.add('fresh');
    await turn();
    f.answerAll();
    expect(await outcome(next)).toBe('resolved');
  });

  it('logs a slow spell once when it starts and once when it ends, however many commands stall in turn', async () => {
    const f = fake({ stallMs: 40 });
    f.b.connectionUp();
    // Three pinned channels (nobody waits on them), written 60 ms apart, each answered 150 ms after it was written.
    const answered: Array<Promise<void>> = [];
    for (const ch of ['a', 'b', 'c']) {
      f.b.pin(ch);
      await turn();
      const cmd = f.open().at(-1);
      answered.push(new Promise((resolve) => setTimeout(() => resolve(cmd?.answer()), 150)));
      await new Promise((r) => setTimeout(r, 60));
    }
    await Promise.all(answered);
    await settle();
    expect(f.b.live()).toBe(true);
    const lines = f.log.lines.map((l) => `${l.level} ${l.msg}`);
    expect(lines).toEqual([
      'info redis subscriber connection not answering; new subscribes are refused until it does',
      'info redis subscriber connection answering again',
    ]);
    expect((f.log.lines[1]?.obj as { stalls: number }).stalls).toBeGreaterThanOrEqual(2);
  });

  it('refuses the waiters of a command answered with an error, subscribes a still wanted channel again, and logs one aggregated line', async () => {
    const f = fake({ retryMs: 20, tallyMs: 40 });
    f.b.connectionUp();
    f.b.pin('pinned');
    const waits = Array.from({ length: 50 }, (_, i) => f.b.add(`e${i}`));
    await turn();
    for (const s of f.open()) s.fail(new Error('MOVED 1234 127.0.0.1:7001'));
    expect(await Promise.all(waits.map(outcome))).toEqual(waits.map(() => 'unavailable'));
    expect(f.b.live()).toBe(false);
    // The pinned channel (and the user channels nobody released) are tried again.
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (f.open().length > 0) {
          clearInterval(t);
          resolve();
        }
      }, 5);
    });
    expect(f.open().flatMap((s) => s.channels)).toContain('pinned');
    f.answerAll();
    await settle();
    expect(f.b.live()).toBe(true);
    await new Promise((r) => setTimeout(r, 60)); // one tally interval
    const warns = f.log.lines.filter((l) => l.level === 'warn');
    expect(warns).toHaveLength(1);
    expect(warns[0]?.msg).toBe('redis (un)subscribe commands answered with an error');
    expect(warns[0]?.obj).toMatchObject({ counts: { subscribe: 51 }, err: 'MOVED 1234 127.0.0.1:7001' });
  });

  it('on a dropped connection refuses the waiters, resolves the releases, and resubscribes every wanted channel in bounded commands', async () => {
    const f = fake({ maxBatch: 100, window: 4 });
    f.b.connectionUp();
    const held = Array.from({ length: 950 }, (_, i) => f.b.add(`h${i}`));
    await turn();
    while (f.open().length > 0) {
      f.answerAll();
      await settle();
    }
    await Promise.all(held);
    const pending = f.b.add('pending');
    const release = f.b.remove('h0');
    await turn();
    f.b.connectionDown('broker subscriber connection dropped');
    expect(await outcome(pending)).toBe('unavailable');
    expect(await outcome(release)).toBe('resolved');
    expect(f.b.live()).toBe(false);
    expect(await outcome(f.b.add('while-down'))).toBe('unavailable');
    const before = f.sent.length;
    f.b.connectionUp();
    await turn();
    // Answers to commands of the old connection change nothing.
    for (const s of f.sent.slice(0, before)) if (!s.settled) s.answer();
    expect(f.sent.length - before).toBe(4);
    expect(f.b.live()).toBe(false);
    while (f.open().length > 0) {
      f.answerAll();
      await settle();
    }
    const resent = f.sent.slice(before);
    expect(resent.every((s) => s.op === 'subscribe' && s.channels.length <= 100)).toBe(true);
    // 'pending' is still wanted here: the broker above releases a channel whose subscribe was refused.
    expect(resent.flatMap((s) => s.channels).sort()).toEqual([...Array.from({ length: 949 }, (_, i) => `h${i + 1}`), 'pending'].sort());
    expect(f.b.live()).toBe(true);
  });
});
