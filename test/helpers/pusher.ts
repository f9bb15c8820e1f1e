/**
 * The real Pusher libraries against a gateway: pusher-js (Node build) clients
 * that sign channel and user auth as the `pusher` server library does, the
 * `pusher` server library pointed at a gateway's HTTP API, and a receiver of
 * Pusher-format webhooks that verifies every request with the library's
 * `webhook(..).isValid()`.
 */
import { createServer, type Server } from 'node:http';
import PusherServer from 'pusher';
import PusherModule, { type ChannelAuthorizationCallback, type Options, type UserAuthenticationCallback } from 'pusher-js';
import type { GatewayProcess } from './gateway.js';
import { freePort } from './ports.js';

export interface PusherApp {
  readonly id: string;
  readonly key: string;
  readonly secret: string;
}

/** `PUBGATE_PUSHER_APPS` for these apps (the first is the default app), with the test-only switch. */
export function pusherEnv(apps: readonly PusherApp[]): Record<string, string> {
  return { PUBGATE_PUSHER_APPS: apps.map((a) => `${a.id}:${a.key}:${a.secret}`).join(',') };
}

// pusher-js's CommonJS build: its default export is the class (its types describe the ES form).
export interface PusherClient {
  connection: { socket_id: string; state: string; bind(event: string, fn: (x: never) => void): void };
  user: {
    bind(event: string, fn: (data: never) => void): void;
    serverToUserChannel: { readonly subscribed: boolean } | null;
  };
  subscribe(name: string): PusherChannel;
  channel(name: string): PusherChannel | undefined;
  signin(): void;
  bind_global(fn: (event: string, data: never) => void): void;
  disconnect(): void;
}
export interface PusherChannel {
  bind(event: string, fn: (data: never) => void): void;
  unbind(event: string, fn: (data: never) => void): void;
}
const PusherJs = PusherModule as unknown as new (key: string, opts: Options) => PusherClient;

export interface ConnectOptions {
  /** The presence channel_data user and the signin user. */
  readonly user?: { id: string; info?: unknown };
  /** Signs with this secret instead of the app's (a forged signature). */
  readonly secret?: string;
}

/**
 * pusher-js clients of a gateway; auth is signed in-process with the real
 * `pusher` library (authorizeChannel, authenticateUser), as an app's auth endpoint would.
 */
export class PusherClients {
  readonly #clients: PusherClient[] = [];

  connect(gw: GatewayProcess, app: PusherApp, opts: ConnectOptions = {}): PusherClient {
    const signer = new PusherServer({ appId: app.id, key: app.key, secret: opts.secret ?? app.secret, host: '127.0.0.1' });
    const p = new PusherJs(app.key, {
      cluster: '',
      wsHost: '127.0.0.1',
      wsPort: gw.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        transport: 'ajax',
        endpoint: '/unused',
        customHandler: ({ socketId, channelName }: { socketId: string; channelName: string }, cb: ChannelAuthorizationCallback) => {
          const presence = channelName.startsWith('presence-') ? { user_id: opts.user?.id ?? 'nobody', user_info: opts.user?.info as Record<string, unknown> | undefined } : undefined;
          cb(null, signer.authorizeChannel(socketId, channelName, presence) as { auth: string; channel_data?: string });
        },
      },
      userAuthentication: {
        transport: 'ajax',
        endpoint: '/unused',
        customHandler: ({ socketId }: { socketId: string }, cb: UserAuthenticationCallback) => {
          cb(null, signer.authenticateUser(socketId, { id: opts.user?.id ?? 'nobody' }) as { auth: string; user_data: string });
        },
      },
    });
    this.#clients.push(p);
    return p;
  }

  closeAll(): void {
    for (const c of this.#clients.splice(0)) c.disconnect();
  }
}

/** The `pusher` server library against a gateway's HTTP API, as `app`. */
export function pusherServer(gw: GatewayProcess, app: PusherApp): PusherServer {
  return new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(gw.port), useTLS: false });
}

export function connected(p: PusherClient): Promise<void> {
  return new Promise((resolve, reject) => {
    if (p.connection.state === 'connected') return resolve();
    p.connection.bind('connected', () => resolve());
    p.connection.bind('failed', () => reject(new Error('failed')));
  });
}

/** Subscribes; resolves with subscription_succeeded's data, rejects with subscription_error's (as `data`). */
export function subscribed(p: PusherClient, name: string): Promise<unknown> {
  const ch = p.subscribe(name);
  return new Promise((resolve, reject) => {
    ch.bind('pusher:subscription_succeeded', (d: unknown) => resolve(d));
    ch.bind('pusher:subscription_error', (e: unknown) => reject(Object.assign(new Error('subscription_error'), { data: e })));
  });
}

/** The next `event` on a subscribed channel. */
export function nextEvent(p: PusherClient, channel: string, event: string): Promise<unknown> {
  return new Promise((resolve) => {
    const ch = p.channel(channel)!;
    const f = (d: unknown): void => {
      ch.unbind(event, f);
      resolve(d);
    };
    ch.bind(event, f);
  });
}

/** Records every event a client gets (any channel), for absence checks behind a sentinel. */
export function recordEvents(p: PusherClient): { event: string; data: unknown }[] {
  const seen: { event: string; data: unknown }[] = [];
  p.bind_global((event: string, data: unknown) => {
    seen.push({ event, data });
  });
  return seen;
}

/** A Pusher webhook event as Pusher sends it. */
export interface PusherHookEvent {
  readonly name: string;
  readonly channel: string;
  readonly user_id?: string;
}

export interface PusherHookRequest {
  readonly key: string;
  readonly body: string;
  readonly timeMs: number;
  readonly events: PusherHookEvent[];
  readonly status: number;
}

/**
 * A receiver of Pusher-format webhooks on 127.0.0.1. Each request is verified
 * with the `pusher` library's webhook(...).isValid() for the app its
 * X-Pusher-Key names (an unknown key, or a request valid for another app's
 * secret too, is a problem). `failFor(channel, n)` answers the next n requests
 * that carry an event of `channel` with 500.
 */
export class PusherHookReceiver {
  readonly requests: PusherHookRequest[] = [];
  readonly problems: string[] = [];
  #fail: { channel: string; n: number } | undefined;
  readonly #waiters = new Set<() => void>();

  #server: Server | undefined;

  private constructor(readonly port: number) {}

  static async start(apps: readonly PusherApp[]): Promise<PusherHookReceiver> {
    const port = await freePort();
    const verifiers = new Map(apps.map((a) => [a.key, new PusherServer({ appId: a.id, key: a.key, secret: a.secret, host: '127.0.0.1' })]));
    const self = new PusherHookReceiver(port);
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r = self;
        const rawBody = Buffer.concat(chunks).toString('utf8');
        const headers = req.headers as Record<string, string>;
        const key = headers['x-pusher-key'] ?? '';
        const v = verifiers.get(key);
        if (v === undefined) r.problems.push(`unknown X-Pusher-Key ${key}`);
        else if (!v.webhook({ headers, rawBody }).isValid()) r.problems.push(`a request of ${key} does not verify`);
        for (const [k, other] of verifiers) {
          if (k !== key && other.webhook({ headers: { ...headers, 'x-pusher-key': k }, rawBody }).isValid()) r.problems.push(`a request of ${key} verifies with the secret of ${k}`);
        }
        let parsed: { time_ms?: unknown; events?: unknown } = {};
        try {
          parsed = JSON.parse(rawBody) as typeof parsed;
        } catch {
          r.problems.push('a body is not JSON');
        }
        if (typeof parsed.time_ms !== 'number' || !Array.isArray(parsed.events)) r.problems.push('a body is not {time_ms, events}');
        const events = (Array.isArray(parsed.events) ? parsed.events : []) as PusherHookEvent[];
        const f = r.#fail;
        const fail = f !== undefined && f.n > 0 && events.some((e) => e.channel === f.channel);
        if (fail) f.n--;
        const status = fail ? 500 : 200;
        if (events.length > 100) r.problems.push(`${events.length} events in one request`);
        r.requests.push({ key, body: rawBody, timeMs: Number(parsed.time_ms), events, status });
        res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'no');
        for (const w of [...r.#waiters]) w();
      });
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    self.#server = server;
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/pusher-hooks`;
  }

  failFor(channel: string, n: number): void {
    this.#fail = { channel, n };
  }

  /** Events of answered-200 requests of app `key`, in arrival order. */
  accepted(key: string): PusherHookEvent[] {
    return this.requests.filter((r) => r.status === 200 && r.key === key).flatMap((r) => r.events);
  }

  /** Every copy received (retries included), of any app. */
  all(): PusherHookEvent[] {
    return this.requests.flatMap((r) => r.events);
  }

  /** Waits (bounded) until `cond` holds after a request. */
  until(cond: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.requests.map((r) => [r.key, r.status, r.events]))}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** `{name} {channel}[ {user_id}]`, for readable comparisons. */
export function hookText(e: PusherHookEvent): string {
  return `${e.name} ${e.channel}${e.user_id !== undefined ? ` ${e.user_id}` : ''}`;
}
