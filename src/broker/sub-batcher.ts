/**
 * The subscription state of one subscriber connection, and the commands that
 * bring Redis to it: SUBSCRIBE/UNSUBSCRIBE (or SSUBSCRIBE/SUNSUBSCRIBE)
 * coalesced per event-loop turn into multi-channel commands of bounded size.
 *
 * - Every add/remove/pin only records the wanted state; once per turn
 *   (setImmediate) the difference between what is wanted and what the last
 *   command written for each channel left at Redis goes out as commands of at
 *   most `maxBatch` channels, all with one batch key (cluster: one slot). A
 *   subscribe and an unsubscribe of one channel in the same turn cancel out.
 * - Commands on one connection run in the order written, so a channel's state
 *   at Redis is that of the last command written for it; at most one change
 *   per channel waits to be written, and at most `window` commands await their
 *   answer at once (the rest wait here), so each is answered promptly however
 *   many channels change at once. Subscribes are written before unsubscribes.
 * - An unsubscribe is fire-and-forget for the caller's state: the channel is
 *   no longer wanted at once, and a message that still arrives for it is
 *   dropped by the broker (it delivers only wanted channels). Its promise
 *   resolves when Redis answered (or the connection dropped, or stalled).
 * - Nothing here is a broker loss: a slow answer never drops the connection.
 *   When Redis answers nothing for `stallMs` while commands wait for it, the
 *   subscribes waiting are refused (their callers get 'unavailable') and new
 *   ones are refused until an answer comes; whether the broker is down is the
 *   self-probe's call. The connection dropping (`down`) is a loss.
 *
 * Pending state is bounded: one queued change per channel, `window` commands
 * in flight, one waiter per wanted channel, one release promise per turn.
 */
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import { errorText, unavailable } from './redis-conn.js';

export type SubOp = 'subscribe' | 'unsubscribe';

export interface BatcherOptions {
  /** For logs. */
  readonly name: string;
  /**
   * Writes one command for these channels on the connection; resolves once
   * Redis answered for every channel, rejects on an error reply or a dropped
   * connection. Must not time out on its own (the batcher watches for stalls).
   */
  readonly send: (op: SubOp, channels: string[]) => Promise<unknown>;
  /** Channels with the same key may share one command (cluster: the slot). */
  readonly batchKey?: (channel: string) => number;
  /** Redis answering nothing for this long while commands wait for it is a stall. */
  readonly stallMs: number;
  readonly log: Log;
  /** Confirmations changed (live() or isConfirmed() may differ). */
  readonly onChange: () => void;
  /** Channels per command; default MAX_BATCH. */
  readonly maxBatch?: number;
  /** Commands awaiting their answer at once; default WINDOW. */
  readonly window?: number;
  /** After an error reply, a still wanted channel is subscribed again after this long; default 1000. */
  readonly retryMs?: number;
  /** Interval of the aggregated warning lines; default TALLY_INTERVAL_MS. */
  readonly tallyMs?: number;
}

/** Channels per (S)SUBSCRIBE/(S)UNSUBSCRIBE command. */
export const MAX_BATCH = 500;
/** Commands awaiting their answer at once on one connection. */
export const WINDOW = 32;

interface Waiter {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(e: Error): void;
}

/** What the remove() calls of one turn wait for: every unsubscribe they queued answered. */
interface Release {
  pending: number;
  sealed: boolean;
  done: boolean;
  readonly promise: Promise<void>;
  resolve(): void;
}

const RESOLVED: Promise<void> = Promise.resolve();

function waiter(): Waiter {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A waiter nobody awaits any more (its caller left) must not be an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

export class SubscriptionBatcher {
  /** Channels this connection must hold (user and pinned). */
  readonly wanted = new Set<string>();
  /** Wanted channels Redis confirmed on the current connection. */
  private readonly confirmedSet = new Set<string>();
  /**
   * Channels that must be confirmed for the link to be live: pinned ones, and
   * every wanted channel Redis confirmed once (which a reconnect must restore).
   * A first subscribe still in flight is not in it, so new channels do not make
   * a healthy node look down. Always a superset of confirmedSet.
   */
  private readonly established = new Set<string>();
  /** Channels whose last command written on this connection is a SUBSCRIBE → that command. */
  private readonly onWire = new Map<string, object>();
  /** Of those, the ones whose SUBSCRIBE Redis answered. */
  private readonly acked = new Set<string>();
  /** Callers of add() waiting for a channel's confirmation (one shared waiter per channel). */
  private readonly waiters = new Map<string, Waiter>();
  /** Changes not written yet, by batch key: channels to subscribe, and channels to release with their release. */
  private readonly toSub = new Map<number, Set<string>>();
  private readonly toUnsub = new Map<number, Map<string, Release>>();
  private queuedCount = 0;
  private inFlight = 0;
  /** Releases not yet resolved (resolved all at once on a stall or a drop). */
  private readonly openReleases = new Set<Release>();
  private turnRelease: Release | undefined;
  /** Wanted channels whose subscribe was answered with an error: tried again after retryMs. */
  private readonly retry = new Set<string>();
  private retryTimer: NodeJS.Timeout | undefined;
  private up = false;
  private epoch = 0;
  private scheduled = false;
  /** Write times of the commands in flight, oldest first (answers come in order); at most `window`. */
  private readonly writtenAt: number[] = [];
  /** Commands answered on this connection so far (the stall watchdog's progress mark). */
  private answered = 0;
  private stalled = false;
  /**
   * A slow spell: from the first stall until nothing is in flight any more.
   * Logged once when it starts and once when it ends (however many stalls it
   * has: with answers coming late, each command in flight may stall in turn).
   */
  private slowSpell: { readonly startMs: number; stalls: number; refused: number } | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private readonly maxBatch: number;
  private readonly window: number;
  private readonly failures: LogTally;
  private readonly refusals: LogTally;

  constructor(private readonly o: BatcherOptions) {
    this.maxBatch = Math.max(1, o.maxBatch ?? MAX_BATCH);
    this.window = Math.max(1, o.window ?? WINDOW);
    this.failures = new LogTally(o.log, 'warn', 'redis (un)subscribe commands answered with an error', { link: o.name }, o.tallyMs);
    this.refusals = new LogTally(o.log, 'warn', 'subscribes refused: redis subscriber connection not answering', { link: o.name }, o.tallyMs);
  }

  // ---- state ----------------------------------------------------------------

  /** Every established channel is confirmed on the connection (which is up). */
  live(): boolean {
    return this.up && this.confirmedSet.size === this.established.size;
  }

  isConfirmed(ch: string): boolean {
    return this.confirmedSet.has(ch);
  }

  /** Channels queued, commands in flight, callers waiting (for tests and logs). */
  backlog(): { queued: number; inFlight: number; waiting: number } {
    return { queued: this.queuedCount, inFlight: this.inFlight, waiting: this.waiters.size };
  }

  // ---- calls ------------------------------------------------------------------

  /** Wants a channel; resolves once Redis confirmed it, rejects with 'unavailable' when it cannot be. */
  add(ch: string): Promise<void> {
    if (!this.up) return Promise.reject(unavailable('broker subscriber connection is down'));
    if (this.stalled && !this.acked.has(ch)) {
      this.refusals.add('refused');
      return Promise.reject(unavailable('broker subscriber connection is not answering'));
    }
    this.wanted.add(ch);
    this.mark(ch);
    if (this.acked.has(ch)) {
      // Held on this connection already (perhaps released in this very turn: the release is cancelled).
      this.confirm(ch);
      return RESOLVED;
    }
    let w = this.waiters.get(ch);
    if (!w) this.waiters.set(ch, (w = waiter()));
    return w.promise;
  }

  /** Keeps a channel subscribed from now on, across reconnects (no promise). */
  pin(ch: string): void {
    this.wanted.add(ch);
    this.established.add(ch);
    this.mark(ch);
    if (this.acked.has(ch)) this.confirmedSet.add(ch);
    this.o.onChange();
  }

  /** Drops a channel. Resolves once Redis answered the release (at once when nothing had to be sent); never rejects. */
  remove(ch: string): Promise<void> {
    this.wanted.delete(ch);
    this.retry.delete(ch);
    const wasConfirmed = this.confirmedSet.delete(ch);
    const wasEstablished = this.established.delete(ch);
    const w = this.waiters.get(ch);
    if (w) {
      // Superseded by this release: the caller asked for both.
      this.waiters.delete(ch);
      w.resolve();
    }
    const r = this.mark(ch);
    if (wasEstablished && !wasConfirmed) this.o.onChange();
    return r ? r.promise : RESOLVED;
  }

  // ---- connection ---------------------------------------------------------------

  /** The connection is ready (first time or again): subscribe every wanted channel. */
  connectionUp(): void {
    this.up = true;
    this.stalled = false;
    for (const ch of this.wanted) this.mark(ch);
  }

  /** The connection dropped (or is being closed): Redis holds nothing for it any more. */
  connectionDown(reason: string): void {
    this.up = false;
    this.epoch += 1;
    this.inFlight = 0;
    this.writtenAt.length = 0;
    this.stalled = false;
    this.slowSpell = undefined;
    this.scheduled = false;
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retry.clear();
    this.onWire.clear();
    this.acked.clear();
    this.confirmedSet.clear();
    this.toSub.clear();
    this.toUnsub.clear();
    this.queuedCount = 0;
    this.turnRelease = undefined;
    this.resolveReleases();
    this.rejectWaiters(unavailable(reason));
  }

  /** Writes any aggregated warning now (closing). */
  flushLogs(): void {
    this.failures.flush();
    this.refusals.flush();
  }

  // ---- queue ----------------------------------------------------------------------

  /**
   * Recomputes the change a channel needs (SUBSCRIBE, UNSUBSCRIBE or none),
   * replacing one queued earlier; returns the release an UNSUBSCRIBE joined.
   */
  private mark(ch: string): Release | undefined {
    const key = this.o.batchKey ? this.o.batchKey(ch) : 0;
    const subs = this.toSub.get(key);
    if (subs?.delete(ch)) {
      this.queuedCount -= 1;
      if (subs.size === 0) this.toSub.delete(key);
    }
    const unsubs = this.toUnsub.get(key);
    const was = unsubs?.get(ch);
    if (unsubs && was) {
      unsubs.delete(ch);
      this.queuedCount -= 1;
      if (unsubs.size === 0) this.toUnsub.delete(key);
      this.settle(was);
    }
    if (!this.up) return undefined;
    const want = this.wanted.has(ch);
    const wired = this.onWire.has(ch);
    if (want && !wired) {
      let s = this.toSub.get(key);
      if (!s) this.toSub.set(key, (s = new Set()));
      s.add(ch);
      this.queuedCount += 1;
      this.schedule();
      return undefined;
    }
    if (!want && wired) {
      let m = this.toUnsub.get(key);
      if (!m) this.toUnsub.set(key, (m = new Map()));
      const r = this.currentRelease();
      r.pending += 1;
      m.set(ch, r);
      this.queuedCount += 1;
      this.schedule();
      return r;
    }
    return undefined;
  }

  private currentRelease(): Release {
    if (this.turnRelease) return this.turnRelease;
    let resolve!: () => void;
    const promise = new Promise<void>((res) => {
      resolve = res;
    });
    const r: Release = { pending: 0, sealed: false, done: false, promise, resolve };
    this.openReleases.add(r);
    this.turnRelease = r;
    return r;
  }

  private settle(r: Release, n = 1): void {
    r.pending -= n;
    if (r.sealed && r.pending <= 0 && !r.done) {
      r.done = true;
      this.openReleases.delete(r);
      r.resolve();
    }
  }

  private resolveReleases(): void {
    for (const r of this.openReleases) {
      r.done = true;
      r.resolve();
    }
    this.openReleases.clear();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.pump());
  }

  /** Once per turn: seal the turn's release, then write commands while the window has room. */
  private pump(): void {
    if (!this.scheduled) return; // the connection dropped since
    this.scheduled = false;
    const r = this.turnRelease;
    this.turnRelease = undefined;
    if (r) {
      r.sealed = true;
      this.settle(r, 0);
    }
    this.fill();
  }

  /**
   * Writes queued changes while the window has room. Called at the end of a
   * turn and whenever an answer frees a place, so Redis has work while this
   * process is busy reading a burst of client frames.
   */
  private fill(): void {
    while (this.up && this.inFlight < this.window) {
      if (!this.writeNext()) break;
    }
  }

  /** Writes the next command (subscribes first: a client waits for those); false when nothing is queued. */
  private writeNext(): boolean {
    for (const [key, set] of this.toSub) {
      const chs = this.take(set);
      if (set.size === 0) this.toSub.delete(key);
      this.writeSubscribe(chs);
      return true;
    }
    for (const [key, m] of this.toUnsub) {
      const chs: string[] = [];
      const rels: Release[] = [];
      for (const [ch, r] of m) {
        m.delete(ch);
        chs.push(ch);
        rels.push(r);
        if (chs.length >= this.maxBatch) break;
      }
      if (m.size === 0) this.toUnsub.delete(key);
      this.queuedCount -= chs.length;
      this.writeUnsubscribe(chs, rels);
      return true;
    }
    return false;
  }

  private take(set: Set<string>): string[] {
    const chs: string[] = [];
    for (const ch of set) {
      set.delete(ch);
      chs.push(ch);
      if (chs.length >= this.maxBatch) break;
    }
    this.queuedCount -= chs.length;
    return chs;
  }

  private writeSubscribe(chs: string[]): void {
    const cmd = {};
    const epoch = this.epoch;
    for (const ch of chs) {
      this.onWire.set(ch, cmd);
      this.acked.delete(ch);
    }
    this.begin();
    this.o.send('subscribe', chs).then(
      () => this.subscribed(epoch, cmd, chs),
      (e: unknown) => this.subscribeFailed(epoch, cmd, chs, e),
    );
  }

  private writeUnsubscribe(chs: string[], rels: Release[]): void {
    const epoch = this.epoch;
    for (const ch of chs) {
      this.onWire.delete(ch);
      this.acked.delete(ch);
    }
    this.begin();
    const done = (e?: unknown): void => {
      if (epoch !== this.epoch) return;
      this.progress();
      // Redis releases a channel it answered with an error for anyway (SUNSUBSCRIBE
      // after its slot moved: the server dropped it already); nothing to undo.
      if (e !== undefined) this.failures.add('unsubscribe', chs.length, errorText(e));
      for (const r of rels) this.settle(r);
      this.fill();
    };
    this.o.send('unsubscribe', chs).then(
      () => done(),
      (e: unknown) => done(e ?? new Error('unsubscribe failed')),
    );
  }

  private subscribed(epoch: number, cmd: object, chs: readonly string[]): void {
    if (epoch !== this.epoch) return;
    this.progress();
    for (const ch of chs) {
      // A later UNSUBSCRIBE (or another SUBSCRIBE) written for it decides instead.
      if (this.onWire.get(ch) !== cmd) continue;
      this.acked.add(ch);
      if (this.wanted.has(ch)) this.confirm(ch);
    }
    this.o.onChange();
    this.fill();
  }

  private subscribeFailed(epoch: number, cmd: object, chs: readonly string[], e: unknown): void {
    if (epoch !== this.epoch) return; // the connection dropped: connectionDown handled every channel
    this.progress();
    const err = unavailable('broker did not confirm the subscription');
    let again = 0;
    for (const ch of chs) {
      if (this.onWire.get(ch) !== cmd) continue;
      this.onWire.delete(ch);
      const w = this.waiters.get(ch);
      if (w) {
        this.waiters.delete(ch);
        w.reject(err);
      }
      if (this.wanted.has(ch)) {
        this.retry.add(ch);
        again += 1;
      }
    }
    this.failures.add('subscribe', chs.length, errorText(e));
    if (again > 0 && !this.retryTimer) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        const todo = [...this.retry];
        this.retry.clear();
        for (const ch of todo) if (this.wanted.has(ch)) this.mark(ch);
      }, this.o.retryMs ?? 1000);
      this.retryTimer.unref();
    }
    this.o.onChange();
    this.fill();
  }

  private confirm(ch: string): void {
    this.confirmedSet.add(ch);
    this.established.add(ch);
    const w = this.waiters.get(ch);
    if (w) {
      this.waiters.delete(ch);
      w.resolve();
    }
  }

  private rejectWaiters(err: Error): void {
    const all = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of all) w.reject(err);
  }

  // ---- stall watchdog -------------------------------------------------------------
  //
  // A stall is the oldest command in flight unanswered stallMs after it was
  // written, and still unanswered once this process has read its sockets
  // again. The verdict waits for a check phase (setImmediate) one loop
  // iteration after the suspicion: that iteration's poll phase reads whatever
  // Redis sent meanwhile, so a long burst of work of our own (a poll phase
  // full of client frames) is not taken for a silent Redis.

  private begin(): void {
    this.inFlight += 1;
    this.writtenAt.push(performance.now());
    this.arm();
  }

  private progress(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
    this.writtenAt.shift();
    this.answered += 1;
    this.stalled = false;
    const spell = this.slowSpell;
    if (spell && this.inFlight === 0) {
      this.slowSpell = undefined;
      const line = { link: this.o.name, lastedMs: Math.round(performance.now() - spell.startMs), stalls: spell.stalls, refusedSubscribes: spell.refused };
      this.o.log.info(line, 'redis subscriber connection answering again');
    }
    this.arm();
  }

  private arm(): void {
    const oldest = this.writtenAt[0];
    if (this.watchdog || this.stalled || oldest === undefined) return;
    const due = oldest + this.o.stallMs - performance.now();
    this.watchdog = setTimeout(() => setImmediate(() => this.suspect()), Math.max(1, due));
    this.watchdog.unref();
  }

  private suspect(): void {
    this.watchdog = undefined;
    const oldest = this.writtenAt[0];
    if (!this.up || this.stalled || oldest === undefined) return;
    const age = performance.now() - oldest;
    if (age < this.o.stallMs) {
      this.arm();
      return;
    }
    const mark = this.answered;
    const epoch = this.epoch;
    // Scheduled from a check phase: runs in the next iteration's, after its poll phase.
    setImmediate(() => {
      if (epoch !== this.epoch || this.stalled || !this.up) return;
      if (this.answered === mark && this.inFlight > 0) this.stall(performance.now() - oldest);
      else this.arm();
    });
  }

  /** Redis answered nothing for stallMs: refuse the subscribes waiting (and new ones until it answers). */
  private stall(unansweredMs: number): void {
    this.stalled = true;
    const waiting = this.waiters.size;
    if (this.slowSpell) {
      this.slowSpell.stalls += 1;
      this.slowSpell.refused += waiting;
    } else {
      this.slowSpell = { startMs: performance.now() - unansweredMs, stalls: 1, refused: waiting };
      const line = { link: this.o.name, unansweredMs: Math.round(unansweredMs), commandsInFlight: this.inFlight, queued: this.queuedCount, waiting };
      // Slow releases alone hurt nobody (no caller waits on them): info. Refused subscribes: warn.
      if (waiting > 0) this.o.log.warn(line, 'redis subscriber connection not answering; refusing the subscribes waiting for it');
      else this.o.log.info(line, 'redis subscriber connection not answering; new subscribes are refused until it does');
    }
    this.rejectWaiters(unavailable('broker did not confirm the subscription in time'));
    this.resolveReleases();
    this.turnRelease = undefined;
  }
}
