/**
 * `GET /sse` (contract 1.1, "Server-Sent Events transport"): a one-way stream
 * on uWS's HTTP response streaming, served by the same hub as WebSocket.
 *
 * - Admission is the WebSocket handshake's (connect.ts): the channel list is
 *   checked first (none or an invalid name 400 bad_request, more than
 *   maxSubscriptions distinct names 400 limit_exceeded), then Origin, token,
 *   verification, capacity, and last the permission to subscribe to every
 *   named channel (403 forbidden).
 * - A stream is a hub Session whose socket (SseStream) writes the hub's
 *   frames as events: `message` (with `id:`), `join`, `leave`; other frames
 *   (replies, subscribed) have no SSE form and are not sent. `end` writes a
 *   final `close` event with the WebSocket close code, then completes the
 *   response; the heartbeat's ping writes a `: ping` comment.
 * - `welcome` is the first event: it goes out once every channel is live
 *   (recovered from Last-Event-ID, or held as server-side subscriptions are).
 *   Frames arriving before it are kept (bounded) and follow it.
 * - Fan-out: one event text per message and id shape (SseFanout.publish),
 *   written to every stream on the topic; a stream whose positions differ from
 *   the node's (still catching up, or skipped messages) gets its own id.
 * - Backpressure: our own accounting (uWS's write() buffers everything and
 *   only says whether it had to): while uWS holds unsent bytes the events wait
 *   in a queue here, and onWritable writes them. An event that would take the
 *   buffer over maxBackpressure is skipped, and the stream is a slow consumer
 *   from then on, exactly as a WebSocket whose uWS send was dropped
 *   (connection.ts: closed with 4008, or skipped until caught up).
 */
import type { Config } from '../config.js';
import type { Hub } from '../hub/hub.js';
import type { Metrics } from '../observability/metrics.js';
import type { Session, Socket } from '../hub/session.js';
import { CLOSE, type CloseCode } from '../protocol/close-codes.js';
import { CHANNEL_RE } from '../protocol/channel.js';
import type { HistoryPosition } from '../broker/history.js';
import type { ConnIds } from './conn-id.js';
import type { ConnectHandler, ConnectKind, ShapeResult } from './connect.js';
import type { ResponseState } from './http.js';
import {
  KIND_MESSAGE, PING_COMMENT, eventText, formatId, frameChannel, frameKind, framePosition, idShape, namedEvent, parseLastEventId,
  type IdShape, type Position,
} from './sse-events.js';
import type { HttpRequest, HttpResponse } from './uws.js';

/** What a stream needs of connection.ts: the same bookkeeping as a WebSocket. */
export interface StreamHooks {
  /** An event was skipped: the send buffer is over maxBackpressure. */
  dropped(ws: Socket): void;
  /** The send buffer shrank. */
  drain(ws: Socket): void;
  /** The stream ended (our close, or the client went away). */
  closed(ws: Socket, code: number, reason: string): void;
  /** Ends a stream with a catalog code (once). */
  close(ws: Socket, code: CloseCode): void;
}

/** Raw frames kept at most (their characters) while a stream's welcome waits for its recovery. */
export function preWelcomeLimit(maxBackpressure: number): number {
  return Math.max(8 * maxBackpressure, 8 * 1024 * 1024);
}

/** The close code a client sees when the stream's connection drops without our close event. */
const ABORTED = 1006;

/** Topic → SSE streams, the node's last live positions, and the once-per-message fan-out. */
export class SseFanout {
  private readonly topics = new Map<string, Set<SseStream>>();
  /** Streams with events written since the last flush (one flush per event-loop pass). */
  private readonly dirty = new Set<SseStream>();
  private flushing: NodeJS.Immediate | undefined;

  /**
   * A stream has events to send: they go out together once this pass of the
   * event loop is over (one cork, one string conversion and one send per
   * stream per pass, as uWS batches a topic's WebSocket messages), not one
   * send per event per stream.
   */
  schedule(s: SseStream): void {
    this.dirty.add(s);
    this.flushing ??= setImmediate(() => this.flush());
  }

  /** Sends what every scheduled stream has pending (tests call it to skip the wait). */
  flush(): void {
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = undefined;
    const streams = [...this.dirty];
    this.dirty.clear();
    for (const s of streams) s.flushPending();
  }
  /** History channel → position of the last message fanned out to SSE streams on this node. */
  private readonly live = new Map<string, Position>();
  /** Event texts built by publish() (a test checks one per message and id shape). */
  eventsBuilt = 0;

  add(topic: string, s: SseStream): void {
    let set = this.topics.get(topic);
    if (!set) this.topics.set(topic, (set = new Set()));
    set.add(s);
  }

  remove(topic: string, s: SseStream): void {
    const set = this.topics.get(topic);
    if (!set?.delete(s) || set.size > 0) return;
    this.topics.delete(topic);
    this.live.delete(topic);
  }

  /** The node's last live position of a channel (undefined until a message went out to an SSE stream). */
  lastLive(channel: string): Position | undefined {
    return this.live.get(channel);
  }

  /**
   * Writes a message, join or leave frame to the topic's streams. The event
   * text is built once per message for every stream whose other channels are
   * at the node's live positions (nearly all), keyed by its id shape; others
   * get their own. Returns how many streams it was written to.
   */
  publish(topic: string, frame: string): number {
    const set = this.topics.get(topic);
    if (set === undefined) return 0;
    const kind = frameKind(frame);
    if (kind === 0) return 0;
    const pos = kind === KIND_MESSAGE ? framePosition(frame) : undefined;
    if (pos) this.live.set(topic, pos);
    let plain: string | undefined;
    let byShape: Map<string, string> | undefined;
    let n = 0;
    for (const s of set) {
      if (!s.getUserData().open) continue;
      if (s.waiting()) {
        // Joined the topic after its recovery, before its welcome: kept raw, rendered after the welcome.
        s.send(frame);
        n++;
        continue;
      }
      const shape = s.shape;
      let text: string;
      if (kind !== KIND_MESSAGE || shape === undefined) {
        if (plain === undefined) {
          plain = eventText(kind, frame, undefined);
          this.eventsBuilt++;
        }
        text = plain;
      } else if (s.inSync(this.live, topic)) {
        byShape ??= new Map();
        const cached = byShape.get(shape.key);
        if (cached === undefined) {
          text = eventText(kind, frame, formatId(shape, (c) => (c === topic && pos ? pos : this.live.get(c)!)));
          byShape.set(shape.key, text);
          this.eventsBuilt++;
        } else {
          text = cached;
        }
      } else {
        text = eventText(kind, frame, s.idWith(topic, pos));
        this.eventsBuilt++;
      }
      if (s.offer(text)) {
        if (pos) s.moveTo(topic, pos);
        n++;
      }
    }
    return n;
  }
}

export interface StreamOptions {
  readonly maxBackpressure: number;
  readonly hooks: StreamHooks;
  /** CORS headers for the stream's 200 (the request's Origin passed admission); none for same-origin requests. */
  readonly cors?: Readonly<Record<string, string>> | undefined;
}

/**
 * CORS for `/sse`: browsers on the app's origin read a stream served from the
 * `ws.` host. Only an Origin that passed admission (PUBGATE_ALLOWED_ORIGINS)
 * is echoed; credentials (cookies, for the connect proxy) are allowed only
 * when the list names origins (not `*`), so no site can read a stream opened
 * with a user's cookies.
 */
export function sseCors(origin: string, allowedOrigins: readonly string[]): Record<string, string> | undefined {
  if (origin === '') return undefined;
  const h: Record<string, string> = { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' };
  if (!allowedOrigins.includes('*')) h['Access-Control-Allow-Credentials'] = 'true';
  return h;
}

/** The preflight answer for `/sse` (fetch with Authorization or Last-Event-ID is not a simple request). */
export const SSE_PREFLIGHT_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Methods': 'GET',
  'Access-Control-Allow-Headers': 'Authorization, Last-Event-ID, Cache-Control, Accept',
  'Access-Control-Max-Age': '600',
};

/** One SSE response as a hub socket. */
export class SseStream implements Socket {
  readonly transport = 'sse' as const;
  /** Positions of the stream's history channels (by shape index): what its last event's id said. */
  private readonly offsets: number[];
  private readonly epochs: string[];
  private readonly topics = new Set<string>();
  /** Raw frames that came before the welcome (undefined once it went out). */
  private pre: string[] | undefined = [];
  private preChars = 0;
  /** Events waiting while uWS holds unsent bytes. */
  private queue: string[] = [];
  private queued = 0;
  /** uWS's last write() had to buffer: `blockedChars` (at most) are still in uWS's buffer. */
  private blocked = false;
  private blockedChars = 0;
  private headersSent = false;
  private ended = false;
  /** Written this pass, sent by the fanout's flush at its end (counted as buffered). */
  private pending: string[] = [];
  private pendingChars = 0;

  constructor(
    private readonly res: HttpResponse,
    private readonly st: ResponseState,
    private readonly session: Session,
    readonly shape: IdShape | undefined,
    private readonly fanout: SseFanout,
    private readonly opts: StreamOptions,
  ) {
    const n = shape?.channels.length ?? 0;
    this.offsets = new Array<number>(n).fill(0);
    this.epochs = new Array<string>(n).fill('');
    st.onAbort = () => this.aborted();
    res.onWritable(() => this.writable());
  }

  getUserData(): Session {
    return this.session;
  }

  subscribe(topic: string): boolean {
    if (this.ended || this.topics.has(topic)) return false;
    this.topics.add(topic);
    this.fanout.add(topic, this);
    return true;
  }

  unsubscribe(topic: string): boolean {
    if (!this.topics.delete(topic)) return false;
    this.fanout.remove(topic, this);
    return true;
  }

  isSubscribed(topic: string): boolean {
    return this.topics.has(topic);
  }

  /** A frame for this stream only (replays, held frames): rendered with its own id. */
  send(frame: string): number {
    if (this.ended) return 0;
    if (this.pre !== undefined) {
      this.pre.push(frame);
      this.preChars += frame.length;
      // Recovery replays while the welcome waits: bounded, past it the stream ends (1011).
      if (this.preChars > preWelcomeLimit(this.opts.maxBackpressure)) this.opts.hooks.close(this, CLOSE.INTERNAL_ERROR);
      return 1;
    }
    return this.deliver(frame, false) ? 1 : 2;
  }

  /** Renders a frame with this stream's id and writes it (`force`: past maxBackpressure too); false when skipped. */
  private deliver(frame: string, force: boolean): boolean {
    const kind = frameKind(frame);
    if (kind === 0) return true;
    const channel = kind === KIND_MESSAGE ? frameChannel(frame) : '';
    const pos = kind === KIND_MESSAGE ? framePosition(frame) : undefined;
    const text = eventText(kind, frame, kind === KIND_MESSAGE ? this.idWith(channel, pos) : undefined);
    if (force) this.write(text);
    else if (!this.offer(text)) return false;
    if (pos) this.moveTo(channel, pos);
    return true;
  }

  /** The heartbeat: a comment line. An SSE client never sends, so its silence never counts (contract). */
  ping(): number {
    this.session.idleBeats = 0;
    if (this.ended || this.pre !== undefined) return 0;
    this.write(PING_COMMENT);
    return 1;
  }

  end(code?: number, reason?: string): void {
    if (this.ended) return;
    this.ended = true;
    const c = code ?? CLOSE.NORMAL;
    const r = reason ?? '';
    if (!this.st.aborted) {
      // Queued (uWS was full) before pending (written this pass): the order they were written in.
      const tail = this.queue.join('') + this.pending.join('') + namedEvent('close', JSON.stringify({ code: c, reason: r }));
      this.queue = [];
      this.queued = 0;
      this.pending = [];
      this.pendingChars = 0;
      this.res.cork(() => {
        this.head();
        this.res.write(tail);
        // The connection closes once this is sent (Connection: close went with the head): a client
        // reconnects on a new one (a drained node's, too). Not end(…, true): see head().
        this.res.end();
      });
    }
    this.forget();
    this.opts.hooks.closed(this, c, r);
  }

  getBufferedAmount(): number {
    // Before the welcome nothing is written (a recovery is paced by this: it must not wait).
    return this.pre !== undefined ? 0 : this.unsent() + this.pendingChars;
  }

  /** What uWS could not take yet (the part that makes a stream slow; this pass's pending events go out at its end). */
  private unsent(): number {
    return this.queued + (this.blocked ? this.blockedChars : 0);
  }

  /** The fanout's flush: this pass's events in one write. */
  flushPending(): void {
    if (this.pending.length === 0) return;
    const text = this.pending.length === 1 ? this.pending[0]! : this.pending.join('');
    this.pending = [];
    this.pendingChars = 0;
    if (this.ended || this.st.aborted) return;
    if (this.blocked) {
      this.queue.push(text);
      this.queued += text.length;
      return;
    }
    let ok = true;
    this.res.cork(() => {
      this.head();
      ok = this.res.write(text);
    });
    if (!ok) {
      this.blocked = true;
      this.blockedChars = text.length;
    } else {
      // Counted as buffered until now: a replay paced on it (hub room()) goes on.
      this.opts.hooks.drain(this);
    }
  }

  /** Whether every other history channel of this stream is at the node's live position (the shared id applies). */
  inSync(live: ReadonlyMap<string, Position>, topic: string): boolean {
    const shape = this.shape!;
    for (let i = 0; i < shape.channels.length; i++) {
      const c = shape.channels[i]!;
      if (c === topic) continue;
      const l = live.get(c);
      if (l === undefined || l.offset !== this.offsets[i] || l.epoch !== this.epochs[i]) return false;
    }
    return true;
  }

  /** This stream's id after a message on `channel` at `pos` (undefined for a stream without history channels). */
  idWith(channel: string, pos: Position | undefined): string | undefined {
    const shape = this.shape;
    if (shape === undefined) return undefined;
    return formatId(shape, (c, i) => (c === channel && pos ? pos : { offset: this.offsets[i]!, epoch: this.epochs[i]! }));
  }

  moveTo(channel: string, pos: Position): void {
    const i = this.shape?.index.get(channel);
    if (i === undefined) return;
    this.offsets[i] = pos.offset;
    this.epochs[i] = pos.epoch;
  }

  /**
   * Sends `welcome` (with the positions the stream starts from) and then what
   * came before it, in order. The caller releases held subscriptions right
   * after, in the same turn.
   */
  welcome(data: string, positions: ReadonlyMap<string, Position>): void {
    if (this.ended || this.pre === undefined) return;
    for (const [c, p] of positions) this.moveTo(c, p);
    const pre = this.pre;
    this.pre = undefined;
    this.preChars = 0;
    const id = this.shape ? formatId(this.shape, (c, i) => ({ offset: this.offsets[i]!, epoch: this.epochs[i]! })) : undefined;
    this.write(namedEvent('welcome', data, id));
    // What came before the welcome (a recovery's replay: already bounded by
    // preWelcomeLimit) is written whole, not skipped past maxBackpressure:
    // the replay was not paced by the buffer, so it must not make the stream slow.
    for (const f of pre) {
      if (this.ended) return;
      this.deliver(f, true);
    }
  }

  /** Whether the welcome has not gone out yet. */
  waiting(): boolean {
    return this.pre !== undefined && !this.ended;
  }

  /** The raw frames kept before the welcome (to find the first position of each channel). */
  preFrames(): readonly string[] {
    return this.pre ?? [];
  }

  /**
   * Writes an event unless that takes the buffer over maxBackpressure (an
   * empty buffer takes any event): then it is skipped and the stream is
   * reported slow. False when skipped.
   */
  offer(text: string): boolean {
    if (this.ended || this.pre !== undefined) return false;
    const buffered = this.unsent();
    if (buffered > 0 && buffered + text.length > this.opts.maxBackpressure) {
      this.opts.hooks.dropped(this);
      return false;
    }
    this.write(text);
    return true;
  }

  private head(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.res.writeStatus('200 OK');
    this.res.writeHeader('Content-Type', 'text/event-stream');
    this.res.writeHeader('Cache-Control', 'no-cache');
    this.res.writeHeader('X-Accel-Buffering', 'no');
    for (const [k, v] of Object.entries(this.opts.cors ?? {})) this.res.writeHeader(k, v);
    // Said up front: the stream's connection is not reused (a reconnect opens a
    // new one, which a load balancer may send to another node). uWS's own
    // end(…, closeConnection) would write this header after the body has
    // started, inside the chunked body, where clients and proxies reject it.
    this.res.writeHeader('Connection', 'close');
  }

  private write(text: string): void {
    if (this.ended || this.st.aborted) return;
    if (this.blocked) {
      this.queue.push(text);
      this.queued += text.length;
      return;
    }
    if (this.pending.length === 0) this.fanout.schedule(this);
    this.pending.push(text);
    this.pendingChars += text.length;
  }

  /** uWS's buffer drained enough to write again: the queue goes out in one write. */
  private writable(): boolean {
    if (this.ended || this.st.aborted) return true;
    this.blocked = false;
    this.blockedChars = 0;
    if (this.queue.length > 0) {
      const text = this.queue.join('');
      this.queue = [];
      this.queued = 0;
      if (!this.res.write(text)) {
        this.blocked = true;
        this.blockedChars = text.length;
      }
    }
    this.opts.hooks.drain(this);
    return true;
  }

  private aborted(): void {
    if (this.ended) return;
    this.ended = true;
    this.session.open = false;
    this.forget();
    this.opts.hooks.closed(this, ABORTED, 'client went away');
  }

  private forget(): void {
    for (const t of this.topics) this.fanout.remove(t, this);
    this.topics.clear();
    this.queue = [];
    this.queued = 0;
    this.pending = [];
    this.pendingChars = 0;
    this.pre = undefined;
  }
}

/** What the route asks for: distinct channels, in request order, and the Last-Event-ID. */
interface SseShape {
  readonly channels: readonly string[];
  readonly lastEventId: string;
  readonly origin: string;
}

export interface SseRouteDeps {
  readonly config: Config;
  readonly hub: Hub;
  readonly connIds: ConnIds;
  readonly connect: ConnectHandler;
  readonly fanout: SseFanout;
  readonly metrics: Metrics;
  readonly hooks: StreamHooks & { opened(ws: Socket): void };
}

/** The channel list of a `/sse` query: refused, or its distinct names in order. */
export function readChannels(query: string, maxSubscriptions: number): ShapeResult<readonly string[]> {
  const names = new URLSearchParams(query).getAll('channel');
  if (names.length === 0) {
    return { refusal: { code: 'bad_request', message: 'name at least one channel: /sse?channel=<name>', reason: 'no_channel' } };
  }
  // Counted before each name is checked: a request naming thousands is refused without looking at them.
  const distinct = [...new Set(names)];
  if (distinct.length > maxSubscriptions) {
    return { refusal: { code: 'limit_exceeded', message: `at most ${maxSubscriptions} channels per stream`, reason: 'too_many_channels' } };
  }
  const bad = distinct.find((c) => !CHANNEL_RE.test(c));
  if (bad !== undefined) return { refusal: { code: 'bad_request', message: `invalid channel name ${JSON.stringify(bad.slice(0, 200))}`, reason: 'bad_channel' } };
  return { value: distinct };
}

/** The position to announce for a held channel: the live one, or just before the first message held meanwhile. */
function announced(pos: HistoryPosition, firstHeld: number | undefined): Position {
  const offset = firstHeld !== undefined && firstHeld - 1 < pos.offset ? firstHeld - 1 : pos.offset;
  return { offset, epoch: pos.epoch };
}

export function createSseRoute(deps: SseRouteDeps): (res: HttpResponse, req: HttpRequest) => void {
  const { config, hub, fanout, hooks, metrics } = deps;

  /** One channel made live for the stream: recovered from `since`, or held until the welcome. */
  interface Made {
    readonly channel: string;
    /** Recovery result (channels the Last-Event-ID covered). */
    readonly recovered?: boolean;
    /** The position the stream starts from on a history channel (before its first held or replayed message). */
    readonly at?: Position;
    /** Held: released right after the welcome. */
    readonly held: boolean;
  }

  async function start(stream: SseStream, channels: readonly string[], lastEventId: string): Promise<void> {
    const s = stream.getUserData();
    const since = parseLastEventId(lastEventId, stream.shape);
    try {
      const made = await Promise.all(channels.map(async (channel): Promise<Made> => {
        const from = since?.get(channel);
        if (from !== undefined) {
          let r: Awaited<ReturnType<Hub['recover']>>;
          try {
            r = await hub.recover(stream, channel, from);
          } catch (e) {
            metrics.recovery(undefined, 0);
            throw e;
          }
          metrics.recovery(r.recovered, r.replayed);
          return { channel, recovered: r.recovered, at: r.recovered ? from : r.position, held: false };
        }
        await hub.subscribe(stream, channel, { hold: true });
        const pos = hub.isHistory(channel) ? await hub.position(channel) : undefined;
        return pos ? { channel, held: true, at: pos } : { channel, held: true };
      }));
      if (!s.open) return;
      // From here to the releases, one synchronous step: nothing is delivered in between.
      const positions = new Map<string, Position>();
      for (const m of made) {
        if (m.held) {
          const held = hub.peekHeld(stream, m.channel);
          if (!held || held.overflow) throw new Error(held ? 'more frames arrived than could be held' : 'the subscription was lost');
          if (m.at) positions.set(m.channel, announced(m.at as HistoryPosition, held.firstOffset));
        } else if (m.at) {
          positions.set(m.channel, m.at);
        }
      }
      // A recovered channel starts just before the first of its messages kept for after the welcome.
      for (const f of stream.preFrames()) {
        if (frameKind(f) !== KIND_MESSAGE) continue;
        const c = frameChannel(f);
        const p = framePosition(f);
        const at = positions.get(c);
        if (p && at && !made.find((m) => m.channel === c)?.held && p.offset - 1 < at.offset) positions.set(c, { offset: p.offset - 1, epoch: p.epoch });
      }
      const history = made.filter((m) => hub.isHistory(m.channel));
      const recovered = lastEventId === ''
        ? undefined
        : history.length > 0 && history.every((m) => m.recovered === true);
      const welcome = JSON.stringify({
        node: config.nodeId,
        conn: deps.connIds.name(s.id),
        user: s.user,
        expiresIn: s.exp > 0 ? Math.max(0, Math.round(s.exp - Date.now() / 1000)) : null,
        ping: config.pingInterval,
        ...(recovered === undefined ? {} : { recovered }),
      });
      stream.welcome(welcome, positions);
      for (const m of made) if (m.held) hub.release(stream, m.channel, positions.get(m.channel)?.offset);
    } catch {
      // Broker down, history unreadable, or frames lost while held: the client reconnects (1011).
      if (s.open) hooks.close(stream, CLOSE.INTERNAL_ERROR);
    }
  }

  const kind: ConnectKind<SseShape> = {
    transport: 'sse',
    shape(head, query) {
      const r = readChannels(query, config.maxSubscriptions);
      return 'refusal' in r ? r : { value: { channels: r.value, lastEventId: head.lastEventId, origin: head.origin } };
    },
    authorize(shape, session) {
      for (const c of shape.channels) {
        if (!session.perms.subscribe(c, session.user)) {
          return { code: 'forbidden', message: `not allowed to subscribe to ${c}`, reason: 'channel_forbidden' };
        }
      }
      return undefined;
    },
    accept(session, shape, { res, st }) {
      // The token's `subs` are WebSocket's: a stream carries exactly the channels it names.
      if (session.extra) session.extra.subs = undefined;
      const ids = idShape(shape.channels.filter((c) => hub.isHistory(c)));
      const stream = new SseStream(res, st, session, ids, fanout, {
        maxBackpressure: config.maxBackpressure,
        hooks,
        cors: sseCors(shape.origin, config.allowedOrigins),
      });
      hooks.opened(stream);
      void start(stream, shape.channels, shape.lastEventId);
    },
  };

  return (res, req) => deps.connect(res, req, kind);
}
