/**
 * Waiting for items that arrive as events (frames, log lines): a waiter holds
 * a predicate, and whoever receives an item hands it to the waiters it
 * matches. A wait that times out leaves the list and fails with the caller's
 * message.
 */
export interface Waiter<T> {
  readonly pred: (item: T) => boolean;
  readonly resolve: (item: T) => void;
}

/** Adds a waiter for an item matching `pred` to `waiters`; rejects with `timeoutError()` after `timeoutMs`. */
export function addWaiter<T>(waiters: Waiter<T>[], pred: (item: T) => boolean, timeoutMs: number, timeoutError: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const w: Waiter<T> = {
      pred,
      resolve: (item) => {
        clearTimeout(timer);
        resolve(item);
      },
    };
    const timer = setTimeout(() => {
      const i = waiters.indexOf(w);
      if (i >= 0) waiters.splice(i, 1);
      reject(timeoutError());
    }, timeoutMs);
    waiters.push(w);
  });
}
