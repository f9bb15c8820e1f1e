/**
 * The Server-Sent Events transport of the client (contract 1.1, `GET /sse`):
 * an event-stream parser (WHATWG rules), the codec of the stream's `id:`
 * positions, and SseSocket, which reads one stream with fetch() and plays a
 * WebSocket towards the client, so that resubscribes, `since`, deduplication
 * and the close-code rules are the WebSocket path's, unchanged.
 *
 * fetch() rather than EventSource: it streams in browsers and in Node ≥ 18,
 * it can send `Authorization` (EventSource cannot: its only options are the
 * URL and cookies), it lets us set `Last-Event-ID` ourselves (needed when the
 * channel set changes or when coming from the WebSocket), and it shows the
 * HTTP status of a refusal.
 */
import { ABNORMAL_CLOSURE, type SinceOffset } from './protocol.js';

// ---- the event-stream parser ------------------------------------------------

/** One dispatched event. `id` is the stream's last event id at dispatch (the WHATWG "last event ID"). */
export interface SseEvent {
  readonly event: string;
  readonly data: string;
  readonly id: string;
}

export interface SseParserOptions {
  readonly onEvent: (ev: SseEvent) => void;
  /** A comment line (`: ping`): liveness only. */
  readonly onComment?: (text: string) => void;
  /** A `retry:` field (ms). */
  readonly onRetry?: (ms: number) => void;
  /** Largest line and largest event data, in characters. Default 1 MiB: the parser never buffers more than about twice that. */
  readonly maxBytes?: number;
}

/** The stream broke a bound; the reader ends the stream. */
export class SseTooLarge extends Error {}

/**
 * Parses text chunks of an event stream (decoded UTF-8) per the WHATWG
 * rules: lines end with CRLF, LF or CR (a CR at the end of a chunk may be
 * the first half of a CRLF); `:` starts a comment; `field: value` drops one
 * space after the colon; `data` lines join with LF; an empty line dispatches
 * (nothing when no data came); `id` with a NUL is ignored; `event` defaults to
 * `message`; unknown fields are ignored.
 */
export class SseParser {
  private readonly o: SseParserOptions;
  private readonly max: number;
  private buf = '';
  private crPending = false;
  private data = '';
  private hasData = false;
  private event = '';
  private lastId = '';

  constructor(o: SseParserOptions) {
    this.o = o;
    this.max = o.maxBytes ?? 1 << 20;
  }

  /** The stream's last event id so far (what a reconnect sends as Last-Event-ID). */
  get lastEventId(): string {
    return this.lastId;
  }

  push(chunk: string): void {
    let s = chunk;
    if (this.crPending && s.startsWith('\n')) s = s.slice(1);
    this.crPending = false;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.buf + s.slice(start, i);
      this.buf = '';
      if (c === 13) {
        if (i + 1 < s.length) {
          if (s.charCodeAt(i + 1) === 10) i++;
        } else this.crPending = true;
      }
      start = i + 1;
      this.line(line);
    }
    this.buf += s.slice(start);
    if (this.buf.length > this.max) throw new SseTooLarge(`an event-stream line over ${this.max} characters`);
  }

  private line(line: string): void {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) {
      this.o.onComment?.(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data += this.hasData ? `\n${value}` : value;
        this.hasData = true;
        if (this.data.length > this.max) throw new SseTooLarge(`an event's data over ${this.max} characters`);
        return;
      case 'event':
        this.event = value;
        return;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        return;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.o.onRetry?.(Number(value));
        return;
      default:
        return;
    }
  }

  private dispatch(): void {
    const { data, hasData, event } = this;
    this.data = '';
    this.hasData = false;
    this.event = '';
    if (!hasData) return;
    this.o.onEvent({ event: event || 'message', data, id: this.lastId });
  }
}

// ---- positions in `id:` -------------------------------------------------------

/**
 * FNV-1a (32 bits, over UTF-16 code units) of the sorted history channel
 * names joined with a space, as 8 lower-case hex digits: the prefix of an
 * `id:` that says which channels its positions belong to (the gateway's
 * src/transport/sse-events.ts). Synchronous (browsers' crypto.subtle is not).
 */
export function historyHash(historyChannels: readonly string[]): string {
  const text = [...new Set(historyChannels)].sort().join(' ');
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * `<hash of the sorted history channels>.<epoch>:<offset>,...`, one part per
 * history channel of the stream in sorted order: the gateway's encoding, so
 * that the client can recover after a change of the channel set or a move
 * from WebSocket (see docs/protocol.md "Client SDK: SSE fallback").
 * Only the channels with a known position are in it: a channel added since
 * (its history or not unknown yet) is not covered and starts live. The
 * gateway matches the id against the stream's history channels: a channel
 * added that keeps no history leaves it valid; one that keeps history makes
 * it cover nothing unless the gateway reads an id for part of its history
 * channels (see docs/protocol.md "Client SDK: SSE fallback"). Undefined
 * without any position.
 */
export function encodePosition(channels: readonly string[], history: ReadonlyMap<string, SinceOffset>): string | undefined {
  const names = [...new Set(channels)].filter((n) => history.has(n)).sort();
  if (names.length === 0) return undefined;
  return `${historyHash(names)}.${names.map((n) => `${history.get(n)!.epoch}:${history.get(n)!.offset}`).join(',')}`;
}

/** Subsets tried when finding which channels an id's hash names: bounded work for a stream with many unknown channels. */
const MAX_SUBSETS = 4096;

/**
 * The positions an `id:` of a stream of `channels` gives, per history
 * channel; undefined when it is not in this encoding or for another set.
 * The gateway does not say which channels keep history: the hash does.
 * Channels with a known position (`history`) are tried first, with as many
 * of the undecided ones (neither known history nor `plain`) as the id has
 * parts left, within MAX_SUBSETS tries.
 */
export function decodePosition(id: string, channels: readonly string[], history: ReadonlySet<string> = new Set(), plain: ReadonlySet<string> = new Set()): Map<string, SinceOffset> | undefined {
  const dot = id.indexOf('.');
  if (dot !== 8) return undefined;
  const prefix = id.slice(0, 8);
  const parts: SinceOffset[] = [];
  for (const part of id.slice(dot + 1).split(',')) {
    const colon = part.lastIndexOf(':');
    const digits = part.slice(colon + 1);
    if (colon <= 0 || !/^[0-9]{1,15}$/.test(digits)) return undefined;
    parts.push({ epoch: part.slice(0, colon), offset: Number(digits) });
  }
  const all = [...new Set(channels)].sort();
  const sure = all.filter((c) => history.has(c) && !plain.has(c));
  const open = all.filter((c) => !history.has(c) && !plain.has(c));
  const need = parts.length - sure.length;
  if (need < 0 || need > open.length) return undefined;
  let tries = 0;
  const pick: string[] = [];
  const found = (start: number): string[] | undefined => {
    if (pick.length === need) {
      if (++tries > MAX_SUBSETS) return undefined;
      const names = [...sure, ...pick].sort();
      return historyHash(names) === prefix ? names : undefined;
    }
    for (let i = start; i <= open.length - (need - pick.length) && tries <= MAX_SUBSETS; i++) {
      pick.push(open[i]!);
      const r = found(i + 1);
      pick.pop();
      if (r) return r;
    }
    return undefined;
  };
  const names = found(0);
  if (!names) return undefined;
  return new Map(names.map((n, i) => [n, parts[i]!]));
}

// ---- the stream as a WebSocket ----------------------------------------------------

/** A streamed response as fetch() gives it: only what SseSocket reads. */
export interface SseResponseLike {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  readonly body: { getReader(): { read(): Promise<{ done: boolean; value?: Uint8Array }>; cancel(reason?: unknown): Promise<void> } } | null;
  text(): Promise<string>;
}

/** The subset of `fetch` the SSE transport calls (the global one in browsers and Node ≥ 18, or a test double). */
export type SseFetch = (
  url: string,
  init: { method: 'GET'; headers: Record<string, string>; signal?: unknown; credentials?: 'include' | 'same-origin'; cache?: 'no-store' },
) => Promise<SseResponseLike>;

interface TextDecoderLike {
  decode(input?: Uint8Array, options?: { stream?: boolean }): string;
}
interface Globals {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  TextDecoder?: new (label?: string) => TextDecoderLike;
  AbortController?: new () => { readonly signal: unknown; abort(): void };
  fetch?: SseFetch;
}
function g(): Globals {
  return globalThis as unknown as Globals;
}

/** The global fetch when there is one. */
export function globalFetch(): SseFetch | undefined {
  const f = g().fetch;
  return typeof f === 'function' ? f.bind(globalThis) : undefined;
}

/** `ws://h/p/ws?x` → `http://h/p/sse?x`; `wss:` → `https:`. A URL whose path does not end in /ws gets /sse in its place anyway. */
export function sseUrlFor(wsUrl: string): string {
  const m = /^(wss?|https?):\/\/([^/?#]*)([^?#]*)(\?[^#]*)?/i.exec(wsUrl);
  if (!m) return wsUrl;
  const scheme = m[1]!.toLowerCase();
  const http = scheme === 'wss' || scheme === 'https' ? 'https' : 'http';
  const path = (m[3] ?? '').replace(/\/ws\/?$/, '') + '/sse';
  return `${http}://${m[2]}${path.startsWith('/') ? path : `/${path}`}${m[4] ?? ''}`;
}

export interface SseSocketOptions {
  /** The `/sse` URL (without channels). */
  readonly url: string;
  readonly fetch: SseFetch;
  readonly token: string | undefined;
  readonly tokenTransport: 'header' | 'query';
  /** The channels the stream starts with, and the positions known for them. */
  readonly channels: readonly string[];
  readonly positions: ReadonlyMap<string, SinceOffset>;
  /** Channels known to keep no history (confirmed without a position). */
  readonly plain: ReadonlySet<string>;
  /** A Last-Event-ID the gateway gave for exactly this channel set (preferred over one built from positions). */
  readonly lastEventId: string | undefined;
  /** Whether positions may be encoded by the client (false once the gateway was seen to use another encoding). */
  readonly encode: boolean;
  /** Channel set changes within this many ms make one reopen. */
  readonly debounceMs: number;
  /** Bound of lines and event data. */
  readonly maxEventBytes: number;
  /** Called when the gateway's id could not be read with the client's encoding (the client then stops encoding). */
  readonly onForeignId?: () => void;
  /** Called with the last id the stream gave and its channels, whenever it changes. */
  readonly onLastEventId?: (id: string, channels: readonly string[]) => void;
}

/** Client frames SseSocket answers itself (with a `reply`), without the gateway. */
const UNSUPPORTED = new Set(['publish', 'presence', 'presence_stats', 'ping']);

/**
 * One logical SSE connection that looks like a WebSocket to the client:
 * - the gateway's events become frames (`welcome`, `message`, `join`,
 *   `leave` with their `type` put back); `event: close` becomes the close
 *   event with the gateway's code; a stream that ends without one, a network
 *   error, or silence for three ping intervals is a 1006;
 * - `subscribe`/`unsubscribe` frames change the channel set: after
 *   `debounceMs` the stream is reopened with the new set and a
 *   Last-Event-ID that covers every history channel, and the subscribes are
 *   answered when the new stream's welcome arrives; `refresh` reopens it with
 *   the new token;
 * - `publish`, `presence`, `presence_stats` and `ping` are answered with
 *   `transport_unsupported` (they need the WebSocket).
 * Positions are tracked from the messages that pass through, so each reopen
 * recovers from the last message delivered.
 */
export class SseSocket {
  readyState = 0;
  readonly protocol = 'sse';
  onopen: unknown = null;
  onmessage: unknown = null;
  onclose: unknown = null;
  onerror: unknown = null;

  readonly #o: SseSocketOptions;
  #token: string | undefined;
  /** Channels of the open (or opening) stream. */
  #streamChannels: string[] = [];
  /** Channels wanted now. */
  readonly #wanted: Set<string>;
  readonly #pos = new Map<string, SinceOffset>();
  readonly #plain = new Set<string>();
  #lastId: string | undefined;
  #lastIdChannels: string[] = [];
  #encode: boolean;
  /** Subscribe frames answered when the next stream's welcome arrives. */
  #pendingSubs: Array<{ id: number; channel: string; since: SinceOffset | undefined }> = [];
  #refreshIds: number[] = [];
  #welcomed = false;
  /** Channels of the last stream the gateway accepted. */
  #accepted: string[] = [];
  /** Adding channels one per reopen, after a 403 for several. */
  #oneByOne = false;
  #closed = false;
  #abort: { abort(): void } | undefined;
  #streamGen = 0;
  #debounce: unknown;
  #watchdog: unknown;
  #lastByteAt = 0;
  #pingSec = 0;

  constructor(o: SseSocketOptions) {
    this.#o = o;
    this.#token = o.token;
    this.#wanted = new Set(o.channels);
    for (const [k, v] of o.positions) this.#pos.set(k, v);
    for (const c of o.plain) this.#plain.add(c);
    this.#lastId = o.lastEventId;
    this.#lastIdChannels = [...o.channels].sort();
    this.#encode = o.encode;
    void Promise.resolve().then(() => this.#openStream());
  }

  /** Channels of the current stream (tests and the client's bookkeeping). */
  get channels(): readonly string[] {
    return this.#streamChannels;
  }

  send(text: string): void {
    if (this.#closed) throw new Error('the SSE stream is closed');
    let f: { type?: unknown; id?: unknown; channel?: unknown; since?: unknown; token?: unknown };
    try {
      f = JSON.parse(text) as typeof f;
    } catch {
      return;
    }
    const id = typeof f.id === 'number' ? f.id : undefined;
    const type = String(f.type);
    if (UNSUPPORTED.has(type)) {
      if (id !== undefined) this.#reply(id, { error: { code: 'transport_unsupported', message: `${type} needs the WebSocket transport; this client is on Server-Sent Events now` } });
      return;
    }
    const channel = typeof f.channel === 'string' ? f.channel : undefined;
    if (type === 'subscribe' && id !== undefined && channel !== undefined) {
      const since = f.since as SinceOffset | undefined;
      if (since && typeof since.offset === 'number' && typeof since.epoch === 'string') {
        const known = this.#pos.get(channel);
        if (!known || known.epoch !== since.epoch || known.offset < since.offset) this.#pos.set(channel, since);
      }
      this.#wanted.add(channel);
      if (this.#welcomed && this.#streamChannels.includes(channel)) {
        this.#reply(id, this.#subscribeReply(channel, since));
        return;
      }
      this.#pendingSubs.push({ id, channel, since });
      this.#scheduleReopen();
      return;
    }
    if (type === 'unsubscribe' && id !== undefined && channel !== undefined) {
      this.#wanted.delete(channel);
      this.#pos.delete(channel);
      this.#plain.delete(channel);
      this.#pendingSubs = this.#pendingSubs.filter((p) => p.channel !== channel);
      this.#reply(id, {});
      this.#scheduleReopen();
      return;
    }
    if (type === 'refresh' && id !== undefined) {
      if (typeof f.token === 'string') this.#token = f.token;
      this.#refreshIds.push(id);
      this.#scheduleReopen();
      return;
    }
    if (id !== undefined) this.#reply(id, { error: { code: 'bad_request', message: `${type} is not supported over Server-Sent Events` } });
  }

  /** Aborts the request; the close event follows (as a WebSocket's does after close()). */
  close(code?: number, reason?: string): void {
    if (this.#closed) return;
    this.#shut();
    this.readyState = 3;
    void Promise.resolve().then(() => {
      const h = this.onclose;
      if (typeof h === 'function') (h as (ev: { code: number; reason: string }) => void)({ code: code ?? 1000, reason: reason ?? '' });
    });
  }

  // ---- internals ----

  #deliver(text: string): void {
    const h = this.onmessage;
    if (typeof h === 'function') (h as (ev: { data: string }) => void)({ data: text });
  }

  #reply(id: number, extra: Record<string, unknown>): void {
    // Asynchronously, like a server's reply: the client registers its request before it expects an answer.
    void Promise.resolve().then(() => {
      if (!this.#closed) this.#deliver(JSON.stringify({ type: 'reply', id, ...extra }));
    });
  }

  #subscribeReply(channel: string, since: SinceOffset | undefined): Record<string, unknown> {
    const p = this.#pos.get(channel);
    const out: Record<string, unknown> = {};
    if (p) {
      out.offset = p.offset;
      out.epoch = p.epoch;
    }
    if (since) out.recovered = this.#recovered && p !== undefined && p.epoch === since.epoch;
    return out;
  }

  #recovered = false;

  #shut(): void {
    this.#closed = true;
    this.#streamGen++;
    g().clearTimeout(this.#debounce);
    g().clearTimeout(this.#watchdog);
    this.#debounce = this.#watchdog = undefined;
    try {
      this.#abort?.abort();
    } catch {
      // already aborted
    }
    this.#abort = undefined;
  }

  /** The connection ended: report it once, as a WebSocket close. */
  #end(code: number, reason: string): void {
    if (this.#closed) return;
    this.#shut();
    this.readyState = 3;
    if (code === ABNORMAL_CLOSURE && typeof this.onerror === 'function') (this.onerror as (ev: unknown) => void)({});
    const h = this.onclose;
    if (typeof h === 'function') (h as (ev: { code: number; reason: string }) => void)({ code, reason });
  }

  #scheduleReopen(): void {
    if (this.#debounce !== undefined || this.#closed) return;
    this.#debounce = g().setTimeout(() => {
      this.#debounce = undefined;
      this.#reopen();
    }, this.#o.debounceMs);
  }

  #reopen(): void {
    if (this.#closed) return;
    const wanted = [...this.#wanted].sort();
    const same = wanted.length === this.#streamChannels.length && wanted.every((c, i) => c === this.#streamChannels[i]);
    // The same set: subscribes waiting for it are answered by the current stream's welcome; only a refresh reopens it.
    if (same && this.#refreshIds.length === 0) {
      this.#oneByOne = false;
      return;
    }
    this.#streamGen++;
    try {
      this.#abort?.abort();
    } catch {
      // already aborted
    }
    this.#abort = undefined;
    void this.#openStream();
  }

  /** Last-Event-ID for a stream of `channels`: the gateway's own id for that set, else one built from the positions. */
  #lastEventIdFor(channels: string[]): string | undefined {
    const same = channels.length === this.#lastIdChannels.length && channels.every((c, i) => c === this.#lastIdChannels[i]);
    // Built from the positions when it can be (they include `since` and every message delivered); else the gateway's own id.
    if (this.#encode) {
      const built = encodePosition(channels, this.#pos);
      if (built !== undefined) return built;
    }
    return same ? this.#lastId : undefined;
  }

  async #openStream(): Promise<void> {
    if (this.#closed) return;
    const gen = ++this.#streamGen;
    let channels = [...this.#wanted].sort();
    if (this.#oneByOne) {
      // Looking for the channel the gateway refuses: the accepted ones and one more.
      const next = channels.find((c) => !this.#accepted.includes(c));
      channels = channels.filter((c) => this.#accepted.includes(c) || c === next);
      if (next === undefined) this.#oneByOne = false;
    }
    this.#streamChannels = channels;
    this.#welcomed = false;
    const refreshes = this.#refreshIds.splice(0);
    if (channels.length === 0) {
      // Nothing to read: no stream (the gateway refuses one without channels). Subscribes made later open one.
      for (const id of refreshes) this.#reply(id, {});
      if (this.readyState === 0) this.#welcomeLocal();
      return;
    }
    const qs = channels.map((c) => `channel=${encodeURIComponent(c)}`);
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.#token !== undefined) {
      if (this.#o.tokenTransport === 'query') qs.push(`access_token=${encodeURIComponent(this.#token)}`);
      else headers.authorization = `Bearer ${this.#token}`;
    }
    const lastId = this.#lastEventIdFor(channels);
    if (lastId !== undefined) headers['last-event-id'] = lastId;
    const url = `${this.#o.url}${this.#o.url.includes('?') ? '&' : '?'}${qs.join('&')}`;
    const Abort = g().AbortController;
    const ac = Abort ? new Abort() : undefined;
    this.#abort = ac;
    let res: SseResponseLike;
    try {
      res = await this.#o.fetch(url, {
        method: 'GET',
        headers,
        cache: 'no-store',
        // Cookies only matter without a token (the gateway's connect proxy reads them).
        credentials: this.#token === undefined ? 'include' : 'same-origin',
        ...(ac ? { signal: ac.signal } : {}),
      });
    } catch (e) {
      if (gen === this.#streamGen) this.#end(ABNORMAL_CLOSURE, `SSE request failed: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (gen !== this.#streamGen) {
      void res.body?.getReader().cancel().catch(() => undefined);
      return;
    }
    if (res.status !== 200 || !res.body) {
      let code = '';
      try {
        const j = JSON.parse((await res.text()).slice(0, 8192)) as { error?: { code?: unknown } };
        code = typeof j.error?.code === 'string' ? j.error.code : '';
      } catch {
        // not pubgate's JSON
      }
      if (gen !== this.#streamGen) return;
      this.#refused(res.status, code);
      return;
    }
    const type = res.headers.get('content-type') ?? '';
    if (!/^text\/event-stream/i.test(type)) {
      this.#end(ABNORMAL_CLOSURE, `the SSE response is ${type || 'untyped'}, not text/event-stream`);
      return;
    }
    for (const id of refreshes) this.#reply(id, {});
    await this.#read(res, gen, channels);
  }

  /**
   * A refused request. The gateway refuses the whole stream (403
   * `forbidden`) for one channel the token does not allow, without saying
   * which, where a WebSocket refuses only that subscribe. So: with one
   * channel added since the last accepted stream, that channel's subscribe
   * gets `forbidden` and the stream reopens without it; with several, they
   * are added back one at a time (a reopen each) until the culprit is found.
   * A refusal of the first stream is handled the same way once the client
   * has sent its subscribes (a welcome of our own stands in). Anything else
   * is a 1006, as a failed WebSocket handshake is.
   */
  #refused(status: number, code: string): void {
    if (status === 403 && code === 'forbidden') {
      if (this.readyState === 0) {
        this.#oneByOne = true;
        this.#streamChannels = [];
        this.#accepted = [];
        this.#welcomeLocal();
        return;
      }
      const added = this.#streamChannels.filter((c) => !this.#accepted.includes(c));
      if (added.length === 1) {
        const channel = added[0]!;
        this.#wanted.delete(channel);
        for (const p of this.#pendingSubs.filter((q) => q.channel === channel)) {
          this.#reply(p.id, { error: { code: 'forbidden', message: `the gateway refused the SSE stream with ${channel}` } });
        }
        this.#pendingSubs = this.#pendingSubs.filter((q) => q.channel !== channel);
        void this.#openStream();
        return;
      }
      if (added.length > 1) {
        this.#oneByOne = true;
        void this.#openStream();
        return;
      }
    }
    this.#end(ABNORMAL_CLOSURE, `SSE request answered ${status}${code ? ` ${code}` : ''}`);
  }

  async #read(res: SseResponseLike, gen: number, channels: string[]): Promise<void> {
    const Decoder = g().TextDecoder;
    if (!Decoder || !res.body) {
      this.#end(ABNORMAL_CLOSURE, 'no TextDecoder: cannot read an event stream here');
      return;
    }
    const decoder = new Decoder('utf-8');
    const reader = res.body.getReader();
    let closeSeen: { code: number; reason: string } | undefined;
    const parser = new SseParser({
      maxBytes: this.#o.maxEventBytes,
      onComment: () => undefined,
      onEvent: (ev) => {
        if (gen !== this.#streamGen) return;
        const c = this.#onEvent(ev, channels);
        if (c) closeSeen = c;
      },
    });
    this.#lastByteAt = Date.now();
    for (;;) {
      let chunk: { done: boolean; value?: Uint8Array };
      try {
        chunk = await reader.read();
      } catch (e) {
        if (gen === this.#streamGen) this.#end(closeSeen?.code ?? ABNORMAL_CLOSURE, closeSeen?.reason ?? `SSE stream broke: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      if (gen !== this.#streamGen) {
        void reader.cancel().catch(() => undefined);
        return;
      }
      this.#lastByteAt = Date.now();
      try {
        if (chunk.value) parser.push(decoder.decode(chunk.value, { stream: true }));
        if (chunk.done) parser.push(decoder.decode());
      } catch (e) {
        void reader.cancel().catch(() => undefined);
        if (gen === this.#streamGen) this.#end(ABNORMAL_CLOSURE, e instanceof Error ? e.message : String(e));
        return;
      }
      if (gen !== this.#streamGen) return;
      if (closeSeen || chunk.done) {
        void reader.cancel().catch(() => undefined);
        this.#end(closeSeen?.code ?? ABNORMAL_CLOSURE, closeSeen?.reason ?? 'the SSE stream ended without a close event');
        return;
      }
    }
  }

  /** One event of the current stream; returns the close it announces. */
  #onEvent(ev: SseEvent, channels: string[]): { code: number; reason: string } | undefined {
    if (ev.id !== '' && ev.id !== this.#lastId) {
      this.#lastId = ev.id;
      this.#lastIdChannels = channels;
      this.#o.onLastEventId?.(ev.id, channels);
    }
    switch (ev.event) {
      case 'welcome':
        this.#onWelcome(ev, channels);
        return undefined;
      case 'message':
      case 'join':
      case 'leave': {
        if (!this.#welcomed || !ev.data.startsWith('{')) return undefined;
        const text = `{"type":"${ev.event}",${ev.data.slice(1).trimStart()}`;
        if (ev.event === 'message') this.#track(ev.data);
        this.#deliver(text.endsWith(',}') ? text.replace(/,}$/, '}') : text);
        return undefined;
      }
      case 'close': {
        let code: number = ABNORMAL_CLOSURE;
        let reason = '';
        try {
          const j = JSON.parse(ev.data) as { code?: unknown; reason?: unknown };
          if (typeof j.code === 'number' && Number.isInteger(j.code)) code = j.code;
          if (typeof j.reason === 'string') reason = j.reason;
        } catch {
          // an unreadable close: a 1006
        }
        return { code, reason };
      }
      default:
        return undefined; // event types from a newer gateway
    }
  }

  /** Positions from a message's data (`channel`, `offset`, `epoch` come first; the rest is the application's). */
  #track(data: string): void {
    let f: { channel?: unknown; offset?: unknown; epoch?: unknown };
    try {
      f = JSON.parse(data) as typeof f;
    } catch {
      return;
    }
    if (typeof f.channel !== 'string') return;
    if (typeof f.offset !== 'number' || typeof f.epoch !== 'string') {
      this.#plain.add(f.channel);
      return;
    }
    const p = this.#pos.get(f.channel);
    if (!p || p.epoch !== f.epoch || f.offset > p.offset) this.#pos.set(f.channel, { offset: f.offset, epoch: f.epoch });
  }

  #onWelcome(ev: SseEvent, channels: string[]): void {
    let w: Record<string, unknown>;
    try {
      w = JSON.parse(ev.data) as Record<string, unknown>;
    } catch {
      this.#end(ABNORMAL_CLOSURE, 'the SSE welcome is not JSON');
      return;
    }
    this.#recovered = w.recovered === true;
    // Positions at subscribe time, for the channels we know nothing of (a recovered channel's replay follows: it moves them on).
    if (ev.id !== '') {
      const parts = decodePosition(ev.id, channels, new Set(this.#pos.keys()), this.#plain);
      if (!parts) {
        if (this.#encode) {
          this.#encode = false;
          this.#o.onForeignId?.();
        }
      } else {
        // Now known: which channels keep history (and their positions at subscribe time), and which do not.
        for (const c of channels) if (!parts.has(c)) this.#plain.add(c);
        for (const [c, p] of parts) {
          const known = this.#pos.get(c);
          if (!known || known.epoch !== p.epoch) this.#pos.set(c, p);
        }
      }
    } else {
      for (const c of channels) this.#plain.add(c); // no id on the welcome: the stream has no history channel
    }
    this.#welcomed = true;
    this.#accepted = channels;
    this.#pingSec = typeof w.ping === 'number' && w.ping > 0 ? w.ping : 0;
    this.#armWatchdog(this.#streamGen);
    const first = this.readyState === 0;
    this.readyState = 1;
    if (first) {
      if (typeof this.onopen === 'function') (this.onopen as (ev: unknown) => void)({});
      delete w.recovered;
      this.#deliver(JSON.stringify({ type: 'welcome', ...w }));
    }
    for (const p of this.#pendingSubs.splice(0)) {
      if (channels.includes(p.channel)) this.#reply(p.id, this.#subscribeReply(p.channel, p.since));
      else this.#pendingSubs.push(p);
    }
    if (this.#oneByOne) this.#scheduleReopen();
  }

  /** A welcome of our own for a connection with no channels (no stream to read yet). */
  #welcomeLocal(): void {
    this.readyState = 1;
    this.#welcomed = true;
    if (typeof this.onopen === 'function') (this.onopen as (ev: unknown) => void)({});
    this.#deliver(JSON.stringify({ type: 'welcome', node: '', conn: '', user: '', expiresIn: null, ping: 0, transport: 'sse' }));
  }

  /** The gateway sends `: ping` every `ping` seconds: three intervals without a byte means the stream is dead. */
  #armWatchdog(gen: number): void {
    g().clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    if (!(this.#pingSec > 0)) return;
    const limit = this.#pingSec * 3000;
    const check = (): void => {
      if (gen !== this.#streamGen || this.#closed) return;
      const quiet = Date.now() - this.#lastByteAt;
      if (quiet >= limit) {
        this.#end(ABNORMAL_CLOSURE, `no data on the SSE stream for ${Math.round(quiet / 1000)} s`);
        return;
      }
      this.#watchdog = g().setTimeout(check, Math.max(1000, limit - quiet));
    };
    this.#watchdog = g().setTimeout(check, limit);
  }
}
