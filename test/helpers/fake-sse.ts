/**
 * A scripted SSE endpoint for unit tests of @pubgate/client: a fetch() double
 * whose responses the test plays (status, event-stream text in chunks of its
 * choosing, the end of the stream); every request the client makes is
 * recorded with its URL, channels and headers, and whether the client aborted it.
 */
import type { SseFetch, SseResponseLike } from '../../packages/client/src/index.js';

interface Read {
  resolve(r: { done: boolean; value?: Uint8Array }): void;
  reject(e: unknown): void;
}

export class FakeSseRequest {
  readonly channels: string[];
  readonly query: URLSearchParams;
  /** The client aborted the request (reopen, move, close). */
  aborted = false;
  #respond: ((r: SseResponseLike) => void) | undefined;
  #fail: ((e: unknown) => void) | undefined;
  readonly #chunks: Uint8Array[] = [];
  #reads: Read[] = [];
  #done = false;
  readonly #encoder = new TextEncoder();

  constructor(
    readonly url: string,
    readonly headers: Record<string, string>,
    signal: unknown,
  ) {
    const u = new URL(url);
    this.query = u.searchParams;
    this.channels = u.searchParams.getAll('channel');
    const s = signal as { addEventListener?(type: string, fn: () => void): void } | undefined;
    s?.addEventListener?.('abort', () => {
      this.aborted = true;
      const err = Object.assign(new Error('This operation was aborted'), { name: 'AbortError' });
      this.#fail?.(err);
      for (const r of this.#reads.splice(0)) r.reject(err);
    });
  }

  get lastEventId(): string | undefined {
    return this.headers['last-event-id'];
  }

  /** @internal */
  bind(resolve: (r: SseResponseLike) => void, reject: (e: unknown) => void): void {
    this.#respond = resolve;
    this.#fail = reject;
  }

  /** 200 text/event-stream; then write() the stream. */
  open(contentType = 'text/event-stream'): this {
    const reader = {
      read: (): Promise<{ done: boolean; value?: Uint8Array }> => {
        const c = this.#chunks.shift();
        if (c) return Promise.resolve({ done: false, value: c });
        if (this.#done) return Promise.resolve({ done: true });
        if (this.aborted) return Promise.reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
        return new Promise((resolve, reject) => this.#reads.push({ resolve, reject }));
      },
      cancel: (): Promise<void> => {
        this.#done = true;
        for (const r of this.#reads.splice(0)) r.resolve({ done: true });
        return Promise.resolve();
      },
    };
    this.#respond?.({ status: 200, headers: { get: (n) => (n.toLowerCase() === 'content-type' ? contentType : null) }, body: { getReader: () => reader }, text: () => Promise.resolve('') });
    return this;
  }

  /** A refusal with pubgate's JSON error body. */
  refuse(status: number, code: string): void {
    const body = JSON.stringify({ error: { code, message: code } });
    this.#respond?.({ status, headers: { get: () => 'application/json' }, body: null, text: () => Promise.resolve(body) });
  }

  /** The request fails at the network level (fetch rejects). */
  networkError(): void {
    this.#fail?.(new TypeError('fetch failed'));
  }

  /** Raw event-stream text, as one chunk (or bytes split where the test wants). */
  write(text: string | Uint8Array): void {
    const chunk = typeof text === 'string' ? this.#encoder.encode(text) : text;
    const r = this.#reads.shift();
    if (r) r.resolve({ done: false, value: chunk });
    else this.#chunks.push(chunk);
  }

  /** One event. */
  event(event: string, data: unknown, id?: string): void {
    this.write(`event: ${event}\n${id !== undefined ? `id: ${id}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  }

  welcome(over: Record<string, unknown> = {}, id?: string): this {
    if (!this.#respond) throw new Error('no request to answer');
    this.event('welcome', { node: 'gw-1', conn: 's1', user: 'u1', expiresIn: 3600, ping: 25, ...over }, id);
    return this;
  }

  /** The server ends the response. */
  end(): void {
    this.#done = true;
    for (const r of this.#reads.splice(0)) r.resolve({ done: true });
  }
}

export interface FakeSse {
  readonly fetch: SseFetch;
  readonly requests: FakeSseRequest[];
  /** The newest request (fails when none was made). */
  last(): FakeSseRequest;
}

export function fakeSse(): FakeSse {
  const requests: FakeSseRequest[] = [];
  const fetch: SseFetch = (url, init) => {
    const req = new FakeSseRequest(url, init.headers, init.signal);
    requests.push(req);
    return new Promise<SseResponseLike>((resolve, reject) => req.bind(resolve, reject));
  };
  return {
    fetch,
    requests,
    last() {
      const r = requests[requests.length - 1];
      if (!r) throw new Error('the client made no SSE request');
      return r;
    },
  };
}
