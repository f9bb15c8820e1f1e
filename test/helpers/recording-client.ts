/**
 * The base of the test clients that record what a socket receives (the
 * history client and the multinode Subscriber): replies by id, the welcome,
 * the close. Waits are on events (each frame or the close re-evaluates the
 * condition), bounded by a hang guard. Subclasses say what they keep of each
 * frame in `onFrame`.
 */
import WebSocket from 'ws';
import type { Frame } from './client.js';
import { token } from './client.js';

export interface ClientClaims {
  readonly user: string;
  readonly channels: readonly string[];
  readonly publish?: readonly string[];
}

export abstract class RecordingClient {
  readonly replies = new Map<number, Frame>();
  closeInfo: { code: number; reason: string } | undefined;
  readonly closed: Promise<{ code: number; reason: string }>;
  welcome: Frame | undefined;
  /** The last socket error (e.g. a protocol error that ended the connection). */
  lastError: Error | undefined;
  private readonly waiters = new Set<() => void>();
  protected nextId = 1;

  protected constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      });
    });
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      if (f.type === 'reply') this.replies.set(Number(f.id), f);
      else if (f.type === 'welcome') this.welcome = f;
      this.onFrame(f);
      this.wake();
    });
  }

  /** What the subclass keeps of each frame (called before waiters re-check). */
  protected abstract onFrame(f: Frame): void;

  /** Opens a socket with a token for `claims`, builds the client on it, and waits for the welcome. */
  protected static async connect<T extends RecordingClient>(url: string, claims: ClientClaims, make: (ws: WebSocket) => T): Promise<T> {
    const jwt = await token({ sub: claims.user, channels: claims.channels, publish: claims.publish ?? [] });
    const ws = new WebSocket(url, ['pubgate.v1', `bearer.${jwt}`], { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    const c = make(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
    });
    ws.on('error', (e) => {
      c.lastError = e; // a reset after close is reported through `closed`
    });
    await c.until(() => c.welcome !== undefined, 'welcome');
    return c;
  }

  get isOpen(): boolean {
    return this.closeInfo === undefined && this.ws.readyState === WebSocket.OPEN;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once `cond` holds (checked now and after every frame and the close). */
  until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        const closed = this.closeInfo ? `; socket closed ${this.closeInfo.code} ${this.closeInfo.reason}` : '';
        reject(new Error(`${what}: not within ${timeoutMs} ms${closed}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  /** Sends a frame with a fresh id without waiting; returns the id. */
  sendRequest(frame: Record<string, unknown>): number {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ ...frame, id }));
    return id;
  }

  /** Sends a frame with a fresh id and resolves with its reply (fails if the socket closes first). */
  async request(frame: Record<string, unknown>, timeoutMs = 30_000): Promise<Frame> {
    const id = this.sendRequest(frame);
    await this.until(() => this.replies.has(id) || this.closeInfo !== undefined, `reply to ${String(frame.type)} ${id}`, timeoutMs);
    const reply = this.replies.get(id);
    if (!reply) throw new Error(`socket closed ${this.closeInfo?.code ?? '?'} before the reply to ${String(frame.type)} ${id}`);
    return reply;
  }

  /** 'open' when a ping frame is answered on this very connection, otherwise how it ended. */
  async alive(): Promise<string> {
    if (!this.isOpen) return `closed ${this.closeInfo?.code ?? `readyState ${this.ws.readyState}`}${this.lastError ? ` (${this.lastError.message})` : ''}`;
    try {
      const r = await this.request({ type: 'ping' }, 10_000);
      return r.error === undefined ? 'open' : `error ${JSON.stringify(r.error)}`;
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    await this.closed;
  }

  /** Drops the TCP connection without a close handshake. */
  async terminate(): Promise<void> {
    this.ws.terminate();
    await this.closed;
  }
}
