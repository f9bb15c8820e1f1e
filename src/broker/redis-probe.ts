/**
 * The self-probe: every interval the node publishes to its own probe channel
 * and expects it back on its subscriber connection. When the last PROBE_MISSES
 * probes did not come back although both connections look fine (a stalled
 * server, a path that drops without FIN), the broker counts as down.
 *
 * Misses are counted in ticks, not wall time, so an event loop that was
 * blocked for a while does not read as a lost probe. A probe still missing at
 * a tick is judged in that iteration's check phase (setImmediate), after its
 * poll phase read the sockets: a reply Redis sent while this process was busy
 * with a long burst of I/O (a poll phase full of client frames, after the
 * subscriber socket had been read) is not taken for a lost probe.
 */
import type { Log } from '../observability/logger.js';
import { errorText, type Publisher, type SubRouter } from './redis-conn.js';

/** Consecutive intervals without the probe coming back before the broker counts as down. */
export const PROBE_MISSES = 3;

export interface ProbeOptions {
  readonly channel: string;
  readonly intervalMs: number;
  readonly publisher: Publisher;
  readonly router: SubRouter;
  readonly log: Log;
  /** Round trip in seconds, or undefined for an interval in which the probe did not come back. */
  readonly onProbe: (rttSec: number | undefined) => void;
  /** `stale` changed. */
  readonly onChange: () => void;
}

export class SelfProbe {
  /** True while probes stopped coming back over healthy-looking connections. */
  stale = false;
  private readonly nonce = Math.random().toString(36).slice(2, 10);
  private seq = 0;
  /** seq → send time (ms) of probes not yet back, oldest first (at most 8). */
  private readonly sent = new Map<number, number>();
  private unanswered = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ProbeOptions) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A message arrived on the probe channel. */
  received(payload: string): void {
    const [nonce, seqText] = payload.split(':');
    if (nonce !== this.nonce) return; // another process using the same node id
    const seq = Number(seqText);
    const sentAt = this.sent.get(seq);
    for (const s of [...this.sent.keys()]) if (s <= seq) this.sent.delete(s);
    this.unanswered = 0;
    if (sentAt !== undefined) this.o.onProbe((performance.now() - sentAt) / 1000);
    if (this.stale) {
      this.stale = false;
      this.o.log.info({}, 'broker self-probe is back');
      this.o.onChange();
    }
  }

  /** A probe sent before the last tick (seq <= `upTo`) has not come back, even after this turn's I/O was read. */
  private judge(upTo: number): void {
    if (this.timer === undefined) return; // stopped
    let missing = false;
    for (const s of this.sent.keys()) if (s <= upTo) missing = true;
    if (!missing) return;
    this.unanswered += 1;
    this.o.onProbe(undefined);
    if (this.unanswered >= PROBE_MISSES && !this.stale) {
      this.stale = true;
      this.o.log.warn({ missed: this.unanswered, intervalMs: this.o.intervalMs }, 'broker self-probe is not coming back; marking down');
      this.o.onChange();
    }
  }

  private tick(): void {
    const { publisher, router } = this.o;
    if (!publisher.ready() || !router.confirmed(this.o.channel)) {
      // A connection is down, which explains any silence; start afresh once it is back.
      this.sent.clear();
      this.unanswered = 0;
      if (this.stale) {
        this.stale = false;
        this.o.onChange();
      }
      return;
    }
    if (this.sent.size > 0) {
      const before = this.seq;
      setImmediate(() => this.judge(before));
    }
    this.seq += 1;
    this.sent.set(this.seq, performance.now());
    if (this.sent.size > 8) this.sent.delete(this.sent.keys().next().value as number);
    publisher.publish(this.o.channel, `${this.nonce}:${this.seq}`).catch((e: unknown) => {
      this.o.log.debug({ err: errorText(e) }, 'probe publish failed');
    });
  }
}
