/**
 * Pusher compatibility end to end with the real libraries on both sides
 * (pusher-js clients, the `pusher` server library), on one node with a real
 * redis-server: socket_id exclusion, user authentication and
 * pusher.sendToUser, apps as separate channel and user spaces (terminate
 * included), and delivery across the two protocols on the default app.
 *
 * Absence is proven behind sentinels: a later event on the same channel (or
 * user channel) arrives in order, so an earlier one would have been seen.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { publishOne } from '../helpers/multinode.js';
import { PresenceClient, closePresenceClients, uid } from '../helpers/presence.js';
import {
  connected, nextEvent, PusherClients, pusherEnv, pusherServer, recordEvents, subscribed, type PusherApp, type PusherClient,
} from '../helpers/pusher.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const A: PusherApp = { id: '301', key: 'key-a', secret: 'secret-a-value' }; // the default app
const B: PusherApp = { id: '302', key: 'key-b', secret: 'secret-b-value' };
const C: PusherApp = { id: '303', key: 'key-c', secret: 'secret-c-value' };

/** Resolves when the client's connection leaves `connected` (closed by the server); the pusher:error code it was told, if any. */
function closedByServer(p: PusherClient): Promise<number | undefined> {
  let code: number | undefined;
  p.connection.bind('error', (e: { data?: { code?: number } }) => {
    code = e?.data?.code ?? code;
  });
  return new Promise((resolve) => {
    p.connection.bind('state_change', (s: { current: string }) => {
      if (s.current !== 'connected') resolve(code);
    });
  });
}

/** The next event `event` on the client's user channel (pusher-js's `user.bind`). */
function nextUserEvent(p: PusherClient, event: string): Promise<unknown> {
  return new Promise((resolve) => p.user.bind(event, (d: unknown) => resolve(d)));
}

/** Signs in and waits (bounded) until pusher-js has its user channel subscribed (it subscribes after signin_success). */
async function signedIn(p: PusherClient): Promise<void> {
  p.signin();
  const deadline = Date.now() + 15_000;
  while (p.user.serverToUserChannel?.subscribed !== true) {
    if (Date.now() > deadline) throw new Error('the user channel was not subscribed after signin');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('Pusher compatibility with the real libraries (redis)', () => {
  let redis: RedisServer;
  let gw: GatewayProcess;
  const clients = new PusherClients();
  const natives: PresenceClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    gw = await startGateway({ ...pusherEnv([A, B, C]), PUBGATE_REDIS_URL: redis.url, PUBGATE_LOG_LEVEL: 'info' });
  }, 60_000);
  afterEach(async () => {
    clients.closeAll();
    await closePresenceClients(natives.splice(0));
  });
  afterAll(async () => {
    await gw?.stop();
    await redis?.stop();
  });

  it('does not send a trigger with the sender\'s socket_id to the sender; the other subscribers get it', async () => {
    const ch = `excl-${uid()}`;
    const sender = clients.connect(gw, A);
    const other = clients.connect(gw, A);
    await Promise.all([connected(sender), connected(other)]);
    await Promise.all([subscribed(sender, ch), subscribed(other, ch)]);
    const seen = recordEvents(sender);
    const api = pusherServer(gw, A);
    const atOther = nextEvent(other, ch, 'ev');
    await api.trigger(ch, 'ev', { n: 1 }, { socket_id: sender.connection.socket_id });
    expect(await atOther).toEqual({ n: 1 });
    // Sentinel: the next event (without socket_id) reaches the sender; the first one never did.
    const sentinel = nextEvent(sender, ch, 'ev');
    await api.trigger(ch, 'ev', { n: 2 });
    expect(await sentinel).toEqual({ n: 2 });
    expect(seen.filter((e) => e.event === 'ev').map((e) => e.data)).toEqual([{ n: 2 }]);
  }, 30_000);

  it('signs a user in with a valid signature and delivers pusher.sendToUser to that user only', async () => {
    const t = uid();
    const alice = clients.connect(gw, B, { user: { id: `alice${t}` } });
    const bob = clients.connect(gw, B, { user: { id: `bob${t}` } });
    await Promise.all([connected(alice), connected(bob)]);
    await Promise.all([signedIn(alice), signedIn(bob)]);
    const api = pusherServer(gw, B);
    const bobSeen = recordEvents(bob);
    const got = nextUserEvent(alice, 'note');
    await api.sendToUser(`alice${t}`, 'note', { hi: 1 });
    expect(await got).toEqual({ hi: 1 });
    // Sentinel for bob: his own event arrives, alice's never did.
    const bobGot = nextUserEvent(bob, 'note');
    await api.sendToUser(`bob${t}`, 'note', { hi: 2 });
    expect(await bobGot).toEqual({ hi: 2 });
    expect(bobSeen.filter((e) => e.event === 'note').map((e) => e.data)).toEqual([{ hi: 2 }]);
  }, 30_000);

  it('closes a connection whose pusher:signin carries a forged signature with 4009', async () => {
    const p = clients.connect(gw, B, { user: { id: `mallory${uid()}` }, secret: 'not-the-secret' });
    await connected(p);
    const closed = closedByServer(p);
    p.signin();
    expect(await closed).toBe(4009);
  }, 30_000);

  it('keeps two apps\' channels of the same name apart, and the default app\'s channel shared with native subscribers', async () => {
    const ch = `news-${uid()}`;
    const onA = clients.connect(gw, A);
    const onB = clients.connect(gw, B);
    await Promise.all([connected(onA), connected(onB)]);
    await Promise.all([subscribed(onA, ch), subscribed(onB, ch)]);
    const native = await PresenceClient.open(gw.url, { user: `n-${ch}`, channels: ['news-*'] });
    natives.push(native);
    await native.subscribe(ch);
    const aSeen = recordEvents(onA);
    const bSeen = recordEvents(onB);
    const atB = nextEvent(onB, ch, 'ev');
    await pusherServer(gw, B).trigger(ch, 'ev', { app: 'B' });
    expect(await atB).toEqual({ app: 'B' });
    // Sentinel: the default app's trigger reaches A's client and the native one; B's never did.
    const atA = nextEvent(onA, ch, 'ev');
    await pusherServer(gw, A).trigger(ch, 'ev', { app: 'A' });
    expect(await atA).toEqual({ app: 'A' });
    await native.untilMessage(ch, { event: 'ev', data: { app: 'A' } });
    expect(aSeen.filter((e) => e.event === 'ev').map((e) => e.data)).toEqual([{ app: 'A' }]);
    expect(native.messages(ch).map((m) => m.data)).toEqual([{ event: 'ev', data: { app: 'A' } }]);
    // And B's client never got A's event (its sentinel: another B event after it).
    const atB2 = nextEvent(onB, ch, 'ev');
    await pusherServer(gw, B).trigger(ch, 'ev', { app: 'B2' });
    expect(await atB2).toEqual({ app: 'B2' });
    expect(bSeen.filter((e) => e.event === 'ev').map((e) => e.data)).toEqual([{ app: 'B' }, { app: 'B2' }]);
  }, 30_000);

  it('keeps presence members of the same user id apart per app', async () => {
    const t = uid();
    const ch = `presence-lobby-${t}`;
    const onB = clients.connect(gw, B, { user: { id: '42', info: { app: 'B' } } });
    const onC = clients.connect(gw, C, { user: { id: '42', info: { app: 'C' } } });
    const onC2 = clients.connect(gw, C, { user: { id: '7' } });
    await Promise.all([connected(onB), connected(onC), connected(onC2)]);
    await subscribed(onB, ch);
    await subscribed(onC, ch);
    const list = (await subscribed(onC2, ch)) as { count: number; members: Record<string, unknown> };
    expect(list.count).toBe(2);
    expect(list.members).toEqual({ 42: { app: 'C' }, 7: null });
    expect((await pusherServer(gw, B).get({ path: `/channels/${ch}/users` }).then((r) => r.json())) as unknown).toEqual({ users: [{ id: '42' }] });
  }, 30_000);

  it('terminates a user\'s connections in its own app only; on the default app the native user of that id is the same user', async () => {
    const t = uid();
    const user = `u${t}`;
    const ch = `presence-t-${t}`;
    const onA = clients.connect(gw, A, { user: { id: user } });
    const onB = clients.connect(gw, B, { user: { id: user } });
    const onC = clients.connect(gw, C, { user: { id: user } });
    await Promise.all([connected(onA), connected(onB), connected(onC)]);
    await Promise.all([subscribed(onA, ch), subscribed(onB, ch), subscribed(onC, ch)]);
    const native = await PresenceClient.open(gw.url, { user, channels: ['news-*'] });
    natives.push(native);
    const bClosed = closedByServer(onB);
    await pusherServer(gw, B).terminateUserConnections(user);
    await bClosed;
    // Still live: each gets something sent after the terminate (a close would have come first on its connection).
    const atA = nextEvent(onA, ch, 'ev');
    const atC = nextEvent(onC, ch, 'ev');
    await pusherServer(gw, A).trigger(ch, 'ev', 'a');
    await pusherServer(gw, C).trigger(ch, 'ev', 'c');
    expect([await atA, await atC]).toEqual(['a', 'c']);
    expect(await native.alive()).toBe('open');
    expect([onA.connection.state, onC.connection.state]).toEqual(['connected', 'connected']);
    // The default app's user is the native user of the same id: terminate there closes both, not C's.
    const aClosed = closedByServer(onA);
    await pusherServer(gw, A).terminateUserConnections(user);
    await aClosed;
    expect((await native.closed).code).toBe(4501);
    expect(onC.connection.state).toBe('connected');
  }, 30_000);

  it('delivers a pusher trigger and a /v1/publish on a default-app channel to both pusher-js and native subscribers', async () => {
    const ch = `both-${uid()}`;
    const p = clients.connect(gw, A);
    await connected(p);
    await subscribed(p, ch);
    const native = await PresenceClient.open(gw.url, { user: `n-${ch}`, channels: ['both-*'] });
    natives.push(native);
    await native.subscribe(ch);
    const fromPusher = nextEvent(p, ch, 'greet');
    await pusherServer(gw, A).trigger(ch, 'greet', { via: 'pusher' });
    expect(await fromPusher).toEqual({ via: 'pusher' });
    await native.untilMessage(ch, { event: 'greet', data: { via: 'pusher' } });
    const fromNative = nextEvent(p, ch, 'greet');
    expect((await publishOne(gw, ch, { event: 'greet', data: { via: 'native' } })).status).toBe(200);
    expect(await fromNative).toEqual({ via: 'native' });
    await native.untilMessage(ch, { event: 'greet', data: { via: 'native' } });
  }, 30_000);
});
