/** A minimal typed event emitter (no dependency on Node's or the DOM's). */
export class Emitter<Events extends object> {
  // A TS-private field, not #private: the emitted .d.ts then has no `#private;` member for linters to flag.
  private readonly listeners = new Map<keyof Events, Set<(ev: never) => void>>();
  private readonly onListenerError: (e: unknown) => void;

  /** `onListenerError` gets what a listener throws (default: rethrown from a fresh task). */
  constructor(onListenerError: (e: unknown) => void = rethrowLater) {
    this.onListenerError = onListenerError;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn as (ev: never) => void);
    return () => this.off(type, fn);
  }

  /** Adds a listener that runs once. */
  once<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): () => void {
    const off = this.on(type, (ev) => {
      off();
      fn(ev);
    });
    return off;
  }

  off<K extends keyof Events>(type: K, fn: (ev: Events[K]) => void): void {
    this.listeners.get(type)?.delete(fn as (ev: never) => void);
  }

  listenerCount(type: keyof Events): number {
    return this.listeners.get(type)?.size ?? 0;
  }

  /** Calls every listener; one that throws does not stop the others (its error goes to `onListenerError`). */
  emit<K extends keyof Events>(type: K, ev: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as (ev: Events[K]) => void)(ev);
      } catch (e) {
        this.onListenerError(e);
      }
    }
  }
}

/** Reports an application error without breaking the client's own state: thrown from a fresh task. */
export function rethrowLater(e: unknown): void {
  (globalThis as unknown as { setTimeout(fn: () => void, ms: number): unknown }).setTimeout(() => {
    throw e;
  }, 0);
}
