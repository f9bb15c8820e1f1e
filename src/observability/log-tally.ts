/**
 * Aggregated log lines: events that can come by the thousand (a failed
 * unsubscribe per channel when 1000 clients leave at once) are counted, and
 * one line per interval carries the counts, never one line per event.
 */
import type { Log } from './logger.js';

/** Default interval between aggregated lines. */
export const TALLY_INTERVAL_MS = 5000;

export class LogTally {
  private readonly counts = new Map<string, number>();
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  /**
   * @param fields bound into every line (e.g. `{ link: 'subscriber' }`)
   * @param intervalMs one line at most per interval, at its end, only when something was counted
   */
  constructor(
    private readonly log: Log,
    private readonly level: 'warn' | 'info' | 'debug',
    private readonly msg: string,
    private readonly fields: Record<string, unknown> = {},
    private readonly intervalMs = TALLY_INTERVAL_MS,
  ) {}

  /** Counts `n` events of `kind`; `err` (the latest error text) goes into the next line. */
  add(kind: string, n = 1, err?: string): void {
    if (n <= 0) return;
    // A bounded key space: callers pass fixed kinds, never channel names.
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + n);
    if (err !== undefined) this.lastError = err;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** Writes the pending line now (if any) and stops the timer. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.counts.size === 0) return;
    const counts = Object.fromEntries(this.counts);
    this.counts.clear();
    const line = { ...this.fields, counts, intervalMs: this.intervalMs, ...(this.lastError !== undefined ? { err: this.lastError } : {}) };
    this.lastError = undefined;
    this.log[this.level](line, this.msg);
  }
}
