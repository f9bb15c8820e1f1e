/**
 * A scripted WebSocket for unit tests of @pubgate/client: the test plays the
 * server (open, frames, close) and reads what the client sent. Implements the
 * client's WebSocketLike; every socket the client creates is recorded.
 */
import type { WebSocketConstructor, WebSocketLike } from '../../packages/client/src/index.js';

export interface SentFrame {
  readonly type: string;
  readonly id?: number;
  readonly [k: string]: unknown;
}

type Handler = ((ev: unknown) => void) | null;

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  protocol = '';
  onopen: unknown = null;
  onmessage: unknown = null;
  onclose: unknown = null;
  onerror: unknown = null;
  readonly sent: string[] = [];
  /** What the client passed to close(), if it did. */
  closedByClient: { code: number | undefined; reason: string | undefined } | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string | string[] | undefined,
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 2;
  }

  #call(name: 'onopen' | 'onmessage' | 'onclose' | 'onerror', ev: unknown): void {
    const h = this[name] as Handler;
    if (typeof h === 'function') h(ev);
  }

  // ---- the server's side ----

  /** The handshake succeeded. */
  accept(protocol = 'pubgate.v1'): this {
    this.readyState = 1;
    this.protocol = protocol;
    this.#call('onopen', {});
    return this;
  }

  /** Accepts and sends a welcome. */
  welcome(over: Record<string, unknown> = {}): this {
    if (this.readyState === 0) this.accept();
    this.receive({ type: 'welcome', node: 'gw-1', conn: 'c1', user: 'u1', expiresIn: 3600, ping: 25, ...over });
    return this;
  }

  receive(frame: Record<string, unknown> | string): void {
    this.#call('onmessage', { data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }

  /** The connection ends with `code` (1006: no close frame). */
  end(code: number, reason = ''): void {
    this.readyState = 3;
    if (code === 1006) this.#call('onerror', {});
    this.#call('onclose', { code, reason, wasClean: code !== 1006 });
  }

  /** Frames the client sent, parsed. */
  frames(type?: string): SentFrame[] {
    const all = this.sent.map((t) => JSON.parse(t) as SentFrame);
    return type === undefined ? all : all.filter((f) => f.type === type);
  }

  /** The last frame of a type the client sent (fails when there is none). */
  last(type: string): SentFrame {
    const list = this.frames(type);
    const f = list[list.length - 1];
    if (!f) throw new Error(`the client sent no ${type} frame; sent: ${this.sent.join(' ')}`);
    return f;
  }

  /** Replies to the last frame of `type` (or to a given frame). */
  reply(to: string | SentFrame, extra: Record<string, unknown> = {}): void {
    const f = typeof to === 'string' ? this.last(to) : to;
    this.receive({ type: 'reply', id: f.id, ...extra });
  }

  /** The `bearer.` subprotocol entry, if any. */
  get bearer(): string | undefined {
    const list = typeof this.protocols === 'string' ? [this.protocols] : (this.protocols ?? []);
    const b = list.find((p) => p.startsWith('bearer.'));
    return b?.slice('bearer.'.length);
  }
}

export interface FakeServer {
  readonly WebSocket: WebSocketConstructor;
  readonly sockets: FakeSocket[];
  /** The newest socket (fails when none was created). */
  last(): FakeSocket;
}

export function fakeServer(): FakeServer {
  const sockets: FakeSocket[] = [];
  class Ctor extends FakeSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  return {
    WebSocket: Ctor,
    sockets,
    last() {
      const s = sockets[sockets.length - 1];
      if (!s) throw new Error('the client created no socket');
      return s;
    },
  };
}

/** An unsigned JWT-shaped token with these claims (the client only reads `exp`). */
export function fakeJwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.c2ln`;
}
