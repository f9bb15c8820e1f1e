/**
 * Records the join, leave and resubscribed events of a @pubgate/client
 * subscription, and waits on conditions that every event re-checks (bounded
 * by a hang guard, never a sleep). Used by the presence tests against real
 * gateways; not a test file itself.
 */
import type { JoinEvent, LeaveEvent, ResubscribeInfo, Subscription } from '../../packages/client/src/index.js';

export type PresenceLogEntry =
  | { readonly type: 'join'; readonly ev: JoinEvent }
  | { readonly type: 'leave'; readonly ev: LeaveEvent }
  | { readonly type: 'resubscribed'; readonly ev: ResubscribeInfo };

export class PresenceLog {
  readonly entries: PresenceLogEntry[] = [];
  readonly #checks = new Set<() => void>();

  constructor(sub: Subscription) {
    sub.on('join', (ev) => this.#add({ type: 'join', ev }));
    sub.on('leave', (ev) => this.#add({ type: 'leave', ev }));
    sub.on('resubscribed', (ev) => this.#add({ type: 'resubscribed', ev }));
  }

  #add(e: PresenceLogEntry): void {
    this.entries.push(e);
    for (const check of [...this.#checks]) check();
  }

  /** `join:user` / `leave:user` / `resubscribed`, in order. */
  get summary(): string[] {
    return this.entries.map((e) => (e.type === 'resubscribed' ? 'resubscribed' : `${e.type}:${e.ev.user}`));
  }

  /** Resolves once `cond` holds; checked now and after every event. */
  until(cond: (log: PresenceLog) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (cond(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond(this)) return;
        this.#checks.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#checks.delete(check);
        reject(new Error(`${what}: not within ${timeoutMs} ms; events: ${this.summary.join(' ') || 'none'}`));
      }, timeoutMs);
      this.#checks.add(check);
    });
  }

  /** Waits until `n` events have been recorded in total. */
  count(n: number, timeoutMs?: number): Promise<void> {
    return this.until((l) => l.entries.length >= n, `${n} presence event(s)`, timeoutMs);
  }
}
