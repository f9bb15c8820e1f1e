/**
 * Pusher Channels protocol 7 on /app/{key} (contract 1.1), with the real
 * pusher-js (Node build) against real gateways; publishing through the native
 * /v1/publish (which is also native → Pusher interop). Presence across two
 * nodes on one redis-server.
 */
import { createHmac } from 'node:crypto';
import PusherModule, { type ChannelAuthorizationCallback, type Options } from 'pusher-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { rawUpgrade } from '../helpers/handshake.js';
import { NodeGroup, publishOne } from '../helpers/multinode.js';

// pusher-js's CommonJS build: its default export is the class (its types describe the ES form).
interface PusherClient {
  connection: { socket_id: string; bind(event: string, fn: (x: never) => void): void };
  subscribe(name: string): PusherChannel;
  channel(name: string): PusherChannel | undefined;
  send_event(event: string, data: unknown): boolean;
  bind_global(fn: (event: string, data: never) => void): void;
  disconnect(): void;
}
interface PusherChannel {
  bind(event: string, fn: (data: never) => void): void;
  bind_global(fn: (event: string, data: never) => void): void;
  unbind(event: string, fn: (data: never) => void): void;
  trigger(event: string, data: unknown): boolean;
}
const Pusher = PusherModule as unknown as new (key: string, opts: Options) => PusherClient;

const APP = { id: '101', key: 'app-key', secret: 'app-secret-value' };
const ENV = { PUBGATE_PUSHER_APPS: `${APP.id}:${APP.key}:${APP.secret}` };

const sign = (text: string, secret = APP.secret): string => `${APP.key}:${createHmac('sha256', secret).update(text).digest('hex')}`;

type Client = PusherClient;
const clients: Client[] = [];

/** A pusher-js client that signs channel auth as the `pusher` library's authorizeChannel would (or with `secret`). */
function connect(gw: GatewayProcess, opts: { key?: string; user?: { id: string; info?: unknown }; secret?: string } = {}): Client {
  const p = new Pusher(opts.key ?? APP.key, {
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
        if (channelName.startsWith('presence-')) {
          const channelData = JSON.stringify({ user_id: opts.user?.id ?? 'nobody', user_info: opts.user?.info });
          cb(null, { auth: sign(`${socketId}:${channelName}:${channelData}`, opts.secret), channel_data: channelData });
        } else {
          cb(null, { auth: sign(`${socketId}:${channelName}`, opts.secret) });
        }
      },
    },
  });
  clients.push(p);
  return p;
}

function connected(p: Client): Promise<void> {
  return new Promise((resolve, reject) => {
    p.connection.bind('connected', () => resolve());
    p.connection.bind('failed', () => reject(new Error('failed')));
  });
}

function subscribed(p: Client, name: string): Promise<unknown> {
  const ch = p.subscribe(name);
  return new Promise((resolve, reject) => {
    ch.bind('pusher:subscription_succeeded', (d: unknown) => resolve(d));
    ch.bind('pusher:subscription_error', (e: unknown) => reject(Object.assign(new Error('subscription_error'), { data: e })));
  });
}

function nextEvent(p: Client, channel: string, event: string): Promise<unknown> {
  return new Promise((resolve) => {
    const ch = p.channel(channel)!;
    const f = (d: unknown): void => {
      ch.unbind(event, f);
      resolve(d);
    };
    ch.bind(event, f);
  });
}

afterAll(() => {
  for (const c of clients) c.disconnect();
});

describe('Pusher /app/{key} on one node', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ ...ENV, PUBGATE_ALLOWED_ORIGINS: 'https://ok.example' });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('connects with a socket_id and delivers a /v1/publish on a public channel as the event data.event', async () => {
    const p = connect(gw);
    await connected(p);
    expect(p.connection.socket_id).toMatch(/^\d+\.\d+$/);
    await subscribed(p, 'news');
    const got = nextEvent(p, 'news', 'price');
    const plain = nextEvent(p, 'news', 'message');
    expect((await publishOne(gw, 'news', { event: 'price', data: { v: 1 } })).status).toBe(200);
    expect(await got).toEqual({ v: 1 });
    expect((await publishOne(gw, 'news', { hello: 'world' })).status).toBe(200);
    expect(await plain).toEqual({ hello: 'world' });
  });

  it('subscribes a private channel with a valid signature and refuses a forged one', async () => {
    const good = connect(gw);
    await connected(good);
    await subscribed(good, 'private-room');
    const forged = connect(gw, { secret: 'not-the-secret' });
    await connected(forged);
    const err = await subscribed(forged, 'private-room').then(() => undefined, (e: { data: unknown }) => e.data);
    expect(err).toMatchObject({ type: 'AuthError', status: 401 });
    // The forged one receives nothing published there.
    const seen: unknown[] = [];
    forged.bind_global((e: string, d: unknown) => {
      if (e === 'ev') seen.push(d);
    });
    const got = nextEvent(good, 'private-room', 'ev');
    await publishOne(gw, 'private-room', { event: 'ev', data: 1 });
    expect(await got).toBe(1);
    expect(seen).toEqual([]);
  });

  it('sends client events to the other subscribers, not back to the sender, and only on private and presence channels', async () => {
    const a = connect(gw);
    const b = connect(gw);
    await Promise.all([connected(a), connected(b)]);
    await Promise.all([subscribed(a, 'private-chat'), subscribed(b, 'private-chat')]);
    const echoed: unknown[] = [];
    a.channel('private-chat')!.bind('client-typing', (d: unknown) => echoed.push(d));
    const atB = nextEvent(b, 'private-chat', 'client-typing');
    expect(a.channel('private-chat')!.trigger('client-typing', { who: 'a' })).toBe(true);
    expect(await atB).toEqual({ who: 'a' });
    // b answers; when a has it, a's own event would have come before it.
    const atA = nextEvent(a, 'private-chat', 'client-reply');
    b.channel('private-chat')!.trigger('client-reply', { ok: true });
    expect(await atA).toEqual({ ok: true });
    expect(echoed).toEqual([]);
  });

  it('counts open Pusher sockets in pubgate_connections{transport="pusher"}', async () => {
    const p = connect(gw);
    await connected(p);
    expect(await metric(gw.admin, 'pubgate_connections', { transport: 'pusher' })).toBeGreaterThanOrEqual(1);
  });

  it('answers pusher:ping with pusher:pong', async () => {
    const p = connect(gw);
    await connected(p);
    const pong = new Promise<void>((resolve) => p.connection.bind('message', (m: { event: string }) => m.event === 'pusher:pong' && resolve()));
    p.send_event('pusher:ping', {});
    await pong;
  });

  it('tells an unknown app key 4001 and closes', async () => {
    const res = await new Promise<{ code: number }>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/app/nope?protocol=7`);
      let code = 0;
      ws.onmessage = (m) => {
        const f = JSON.parse(String(m.data)) as { event: string; data: { code: number } };
        if (f.event === 'pusher:error') code = f.data.code;
      };
      ws.onclose = (e) => resolve({ code: code === e.code ? code : -e.code });
    });
    expect(res.code).toBe(4001);
  });

  it('refuses a disallowed Origin at the upgrade with 403', async () => {
    const url = `ws://127.0.0.1:${gw.port}/app/${APP.key}?protocol=7`;
    const res = await rawUpgrade(url, { origin: 'https://evil.example' });
    expect(res.status).toBe(403);
    expect((JSON.parse(res.body) as { error: { code: string } }).error.code).toBe('origin_not_allowed');
    expect((await rawUpgrade(url, { origin: 'https://ok.example' })).status).toBe(101);
  });
});

describe('Pusher presence across two nodes on Redis', () => {
  const group = new NodeGroup();
  beforeAll(async () => {
    await group.startOnRedis(['p1', 'p2'], ENV);
  });
  afterAll(async () => {
    await group.stop();
  });

  it('lists members, announces added/removed once per user, with the same user twice', async () => {
    const alice = connect(group.node(0), { user: { id: 'alice', info: { name: 'A' } } });
    await connected(alice);
    const first = (await subscribed(alice, 'presence-lobby')) as { count: number; members: Record<string, unknown> };
    expect(first.count).toBe(1);
    expect(first.members).toEqual({ alice: { name: 'A' } });

    const added = nextEvent(alice, 'presence-lobby', 'pusher:member_added');
    const bob = connect(group.node(1), { user: { id: 'bob', info: { name: 'B' } } });
    await connected(bob);
    const atBob = (await subscribed(bob, 'presence-lobby')) as { count: number; members: Record<string, unknown> };
    expect(atBob.count).toBe(2);
    expect(atBob.members).toEqual({ alice: { name: 'A' }, bob: { name: 'B' } });
    expect(await added).toEqual({ id: 'bob', info: { name: 'B' } });

    // Bob's second connection adds no member; its leave removes none while the first stays.
    const events: string[] = [];
    alice.channel('presence-lobby')!.bind_global((e: string, d: { id?: string }) => {
      if (e === 'pusher:member_added' || e === 'pusher:member_removed') events.push(`${e}:${d.id}`);
    });
    const bob2 = connect(group.node(0), { user: { id: 'bob' } });
    await connected(bob2);
    await subscribed(bob2, 'presence-lobby');
    bob2.disconnect();
    const removed = nextEvent(alice, 'presence-lobby', 'pusher:member_removed');
    bob.disconnect();
    expect(await removed).toEqual({ id: 'bob', info: { name: 'B' } });
    expect(events).toEqual(['pusher:member_removed:bob']);
  });
});
