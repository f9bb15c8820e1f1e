/**
 * Token expiry without a timer per connection: sockets are filed in one-second
 * buckets by `exp`, and one interval walks the seconds that came due.
 */
export interface ExpiryWheel<T> {
  add(item: T, expSec: number): void;
  remove(item: T, expSec: number): void;
  stop(): void;
}

export function createExpiryWheel<T>(onDue: (item: T) => void, nowSec: () => number): ExpiryWheel<T> {
  const buckets = new Map<number, Set<T>>();
  /** Every second up to and including `done` has been processed. */
  let done = Math.floor(nowSec()) - 1;

  const timer = setInterval(() => {
    const now = Math.floor(nowSec());
    while (done < now) {
      done++;
      const set = buckets.get(done);
      if (!set) continue;
      buckets.delete(done);
      for (const item of set) onDue(item);
    }
  }, 250);
  timer.unref();

  /** Items already due are filed in the next second to be processed. */
  const slot = (expSec: number): number => Math.max(Math.ceil(expSec), done + 1);

  return {
    add(item, expSec) {
      const sec = slot(expSec);
      let set = buckets.get(sec);
      if (!set) {
        set = new Set();
        buckets.set(sec, set);
      }
      set.add(item);
    },
    remove(item, expSec) {
      const sec = slot(expSec);
      const set = buckets.get(sec);
      if (!set) return;
      set.delete(item);
      if (set.size === 0) buckets.delete(sec);
    },
    stop: () => clearInterval(timer),
  };
}
