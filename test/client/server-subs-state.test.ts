/**
 * Unit: server-side subscriptions (contract 1.1) in @pubgate/client against a
 * scripted WebSocket, with fake timers: welcome `subs` and `subscribed`
 * frames surfaced as subscriptions (the `subscribed` event), `unsubscribed`
 * frames, what a reconnect does to them (renewed with a recovery report when
 * the server makes them again, ended with `reconnected` when it does not;
 * never subscribed by the client), their mix with the application's own
 * subscriptions of the same channel, and invalid frames.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  type ClientEvents,
  type ConnectOptions,
  type PubgateClient,
  type PubgateError,
  type Subscription,
  type UnsubscribedEvent,
} from '../../packages/client/src/index.js';
import { type FakeServer, type FakeSocket } from '../helpers/fake-websocket.js';
import { advance, fakeClient, flush, useFakeClients } from '../helpers/client-fakes.js';

interface Setup {
  readonly server: FakeServer;
  readonly client: PubgateClient;
  /** Client events in order: subscribed (as its channel), unsubscribed, resubscribed, connected, error. */
  readonly log: Array<[string, unknown]>;
  readonly subs: Subscription[];
  readonly errors: PubgateError[];
}

function setup(o: Partial<ConnectOptions> = {}): Setup {
  const { server, client } = fakeClient(o);
  const log: Setup['log'] = [];
  const subs: Subscription[] = [];
  const errors: PubgateError[] = [];
  client.on('subscribed', (sub) => {
    subs.push(sub);
    log.push(['subscribed', sub.channel]);
  });
  for (const type of ['unsubscribed', 'resubscribed', 'connected'] as const) {
    client.on(type, (ev: ClientEvents[typeof type]) => log.push([type, type === 'connected' ? (ev as ClientEvents['connected']).welcome.conn : ev]));
  }
  client.on('error', (e) => errors.push(e));
  return { server, client, log, subs, errors };
}


async function online(s: Setup, welcome: Record<string, unknown> = {}): Promise<FakeSocket> {
  await flush();
  const ws = s.server.last();
  ws.welcome(welcome);
  await flush();
  return ws;
}

/** The connection drops (1006) and the next one is welcomed with `welcome`. */
async function reconnect(s: Setup, ws: FakeSocket, welcome: Record<string, unknown>): Promise<FakeSocket> {
  ws.end(1006);
  await advance(1000);
  return online(s, welcome);
}

/** Records every event of a subscription, in order. */
function record(sub: Subscription): Array<[string, unknown]> {
  const seen: Array<[string, unknown]> = [];
  for (const type of ['message', 'join', 'leave', 'resubscribed', 'unsubscribed'] as const) {
    sub.on(type, (ev: unknown) => seen.push([type, type === 'message' ? (ev as { data: unknown }).data : ev]));
  }
  return seen;
}

const msg = (channel: string, data: unknown, offset?: number, epoch = 'E'): Record<string, unknown> =>
  offset === undefined ? { type: 'message', channel, data } : { type: 'message', channel, offset, epoch, data };

useFakeClients();

describe('welcome subs', () => {
  it('each channel is a server-side subscription, handed out before connected, with its position; nothing is sent', async () => {
    const s = setup();
    const ws = await online(s, { subs: { news: {}, 'feed:1': { offset: 9, epoch: 'h7Kq' } } });
    expect(s.log).toEqual([
      ['subscribed', 'news'],
      ['subscribed', 'feed:1'],
      ['connected', 'c1'],
    ]);
    expect(s.subs.map((x) => x.serverSide)).toEqual([true, true]);
    await expect(s.subs[0]!.ready).resolves.toEqual({});
    await expect(s.subs[1]!.ready).resolves.toEqual({ offset: 9, epoch: 'h7Kq' });
    expect(s.client.channels()).toEqual(['news', 'feed:1']);
    expect(s.client.serverSubscriptions()).toEqual(s.subs);
    expect(ws.sent).toEqual([]);
  });

  it('hands messages, join and leave to the subscription; positions continue from the welcome', async () => {
    const s = setup();
    const ws = await online(s, { subs: { 'feed:1': { offset: 9, epoch: 'E' } } });
    const seen = record(s.subs[0]!);
    ws.receive(msg('feed:1', 'old', 9)); // not newer than the welcome's position
    ws.receive(msg('feed:1', 'm10', 10));
    ws.receive({ type: 'join', channel: 'feed:1', user: 'u2' });
    ws.receive({ type: 'leave', channel: 'feed:1', user: 'u2' });
    ws.receive(msg('other', 'not ours'));
    expect(seen).toEqual([
      ['message', 'm10'],
      ['join', { channel: 'feed:1', user: 'u2' }],
      ['leave', { channel: 'feed:1', user: 'u2' }],
    ]);
  });

  it('a channel the application subscribed while connecting is not subscribed again, and is ready with the welcome position', async () => {
    const s = setup();
    const got: unknown[] = [];
    const own = s.client.subscribe('feed:2', (d) => got.push(d));
    const ws = await online(s, { subs: { 'feed:2': { offset: 4, epoch: 'E' } } });
    expect(ws.frames('subscribe')).toEqual([]);
    await expect(own.ready).resolves.toEqual({ offset: 4, epoch: 'E' });
    expect(own.serverSide).toBe(false);
    expect(s.log).toEqual([
      ['subscribed', 'feed:2'],
      ['connected', 'c1'],
    ]);
    const seen = record(s.subs[0]!);
    ws.receive(msg('feed:2', 'm5', 5));
    expect(got).toEqual(['m5']);
    expect(seen).toEqual([['message', 'm5']]);
  });

  it('an invalid subs is reported (protocol) and its bad entries skipped; the connection works', async () => {
    const s = setup();
    await online(s, { subs: { 'bad channel': {}, ok: {}, 'x:1': 5 } });
    expect(s.subs.map((x) => x.channel)).toEqual(['ok']);
    expect(s.errors.map((e) => e.code)).toEqual(['protocol']);
    expect(s.errors[0]!.message).toMatch(/invalid subs entry "bad channel"; invalid subs entry "x:1"/);
    expect(s.client.state).toBe('connected');

    const t = setup();
    await online(t, { subs: ['news'] });
    expect(t.subs).toEqual([]);
    expect(t.errors[0]!.message).toMatch(/subs is not an object/);
  });
});

describe('subscribed and unsubscribed frames', () => {
  it('a subscribed frame hands out a server-side subscription with its position', async () => {
    const s = setup();
    const ws = await online(s);
    ws.receive({ type: 'subscribed', channel: 'feed:3', offset: 2, epoch: 'E' });
    expect(s.log.slice(1)).toEqual([['subscribed', 'feed:3']]);
    const sub = s.subs[0]!;
    expect(sub.serverSide).toBe(true);
    await expect(sub.ready).resolves.toEqual({ offset: 2, epoch: 'E' });
    const seen = record(sub);
    ws.receive(msg('feed:3', 'm3', 3));
    expect(seen).toEqual([['message', 'm3']]);
    expect(ws.sent).toEqual([]);
  });

  it('a second subscribed frame for the channel hands out nothing new', async () => {
    const s = setup();
    const ws = await online(s);
    ws.receive({ type: 'subscribed', channel: 'news' });
    ws.receive({ type: 'subscribed', channel: 'news' });
    expect(s.subs).toHaveLength(1);
  });

  it('an unsubscribed frame ends the subscription: its event, the client event, no more messages', async () => {
    const s = setup();
    const ws = await online(s, { subs: { news: {} } });
    const sub = s.subs[0]!;
    const seen = record(sub);
    ws.receive({ type: 'unsubscribed', channel: 'news' });
    ws.receive(msg('news', 'after'));
    expect(seen).toEqual([['unsubscribed', { channel: 'news' }]]);
    expect(s.log.slice(-1)).toEqual([['unsubscribed', { channel: 'news' }]]);
    expect(s.client.channels()).toEqual([]);
    expect(s.client.serverSubscriptions()).toEqual([]);
    await expect(sub.presence()).rejects.toMatchObject({ code: 'unsubscribed' });
    expect(ws.sent).toEqual([]);
  });

  it('ends the application\'s own subscription of the channel too, and the client does not subscribe it again', async () => {
    const s = setup();
    let ws = await online(s);
    const own = s.client.subscribe('room:1', () => undefined);
    const seen = record(own);
    ws.reply('subscribe');
    ws.receive({ type: 'unsubscribed', channel: 'room:1' });
    expect(seen).toEqual([['unsubscribed', { channel: 'room:1' }]]);
    ws = await reconnect(s, ws, {});
    expect(ws.frames('subscribe')).toEqual([]);
    expect(s.client.channels()).toEqual([]);
  });

  it('rejects ready of an application subscription the server unsubscribes before confirming it', async () => {
    const s = setup();
    const ws = await online(s);
    const own = s.client.subscribe('room:2', () => undefined);
    ws.receive({ type: 'unsubscribed', channel: 'room:2' });
    await expect(own.ready).rejects.toMatchObject({ code: 'unsubscribed', channel: 'room:2' });
    ws.reply('subscribe'); // the late reply changes nothing
    expect(s.client.channels()).toEqual([]);
  });

  it('limit_exceeded: only the client event, with the reason; what the connection has is unchanged', async () => {
    const s = setup();
    const ws = await online(s, { subs: { news: {} } });
    const seen = record(s.subs[0]!);
    ws.receive({ type: 'unsubscribed', channel: 'extra', reason: 'limit_exceeded' });
    ws.receive({ type: 'unsubscribed', channel: 'news', reason: 'limit_exceeded' });
    expect(s.log.slice(-2)).toEqual([
      ['unsubscribed', { channel: 'extra', reason: 'limit_exceeded' }],
      ['unsubscribed', { channel: 'news', reason: 'limit_exceeded' }],
    ]);
    expect(seen).toEqual([]);
    expect(s.client.channels()).toEqual(['news']);
  });

  it('a subscribed frame while the application\'s own subscribe is under way confirms it; the late reply is ignored', async () => {
    const s = setup();
    const ws = await online(s);
    const own = s.client.subscribe('room:3', () => undefined);
    ws.receive({ type: 'subscribed', channel: 'room:3' });
    await expect(own.ready).resolves.toEqual({});
    ws.reply('subscribe', { error: { code: 'forbidden', message: 'not allowed' } });
    expect(s.client.channels()).toEqual(['room:3']);
    expect(s.errors).toEqual([]);
    expect(s.subs.map((x) => x.channel)).toEqual(['room:3']);
  });

  it('invalid subscribed and unsubscribed frames are reported (protocol) and change nothing', async () => {
    const s = setup();
    const ws = await online(s, { subs: { news: {} } });
    ws.receive({ type: 'subscribed', channel: 'bad channel' });
    ws.receive({ type: 'subscribed', channel: 'feed:1', offset: 'x', epoch: 'E' });
    ws.receive({ type: 'unsubscribed', channel: 7 });
    expect(s.errors.map((e) => e.code)).toEqual(['protocol', 'protocol', 'protocol']);
    expect(s.client.channels()).toEqual(['news']);
    expect(s.subs).toHaveLength(1);
  });
});

describe('server-side subscriptions across reconnects', () => {
  it('made again by the server: the same object, resubscribed with recovered true when nothing was missed; no subscribe sent', async () => {
    const s = setup();
    let ws = await online(s, { subs: { 'feed:1': { offset: 9, epoch: 'E' }, news: {} } });
    const [feed, news] = s.subs as [Subscription, Subscription];
    const seen = record(feed);
    ws.receive(msg('feed:1', 'm10', 10));
    s.log.length = 0;
    ws = await reconnect(s, ws, { subs: { 'feed:1': { offset: 10, epoch: 'E' }, news: {} } });
    expect(s.log).toEqual([
      ['resubscribed', { channel: 'feed:1', since: { offset: 10, epoch: 'E' }, recovered: true }],
      ['resubscribed', { channel: 'news', since: undefined, recovered: undefined }],
      ['connected', 'c1'],
    ]);
    expect(s.client.serverSubscriptions()).toEqual([feed, news]);
    expect(ws.sent).toEqual([]);
    ws.receive(msg('feed:1', 'm11', 11));
    expect(seen).toEqual([
      ['message', 'm10'],
      ['resubscribed', { channel: 'feed:1', since: { offset: 10, epoch: 'E' }, recovered: true }],
      ['message', 'm11'],
    ]);
  });

  it('reports recovered false when messages were published meanwhile or the epoch changed, and continues from the new position', async () => {
    const s = setup();
    let ws = await online(s, { subs: { 'feed:1': { offset: 9, epoch: 'E' }, 'feed:2': { offset: 3, epoch: 'E' } } });
    const seen = record(s.subs[0]!);
    ws = await reconnect(s, ws, { subs: { 'feed:1': { offset: 12, epoch: 'E' }, 'feed:2': { offset: 3, epoch: 'F' } } });
    expect(s.log.filter(([t]) => t === 'resubscribed')).toEqual([
      ['resubscribed', { channel: 'feed:1', since: { offset: 9, epoch: 'E' }, recovered: false }],
      ['resubscribed', { channel: 'feed:2', since: { offset: 3, epoch: 'E' }, recovered: false }],
    ]);
    ws.receive(msg('feed:1', 'm12', 12)); // not newer than the new position
    ws.receive(msg('feed:1', 'm13', 13));
    expect(seen).toEqual([
      ['resubscribed', { channel: 'feed:1', since: { offset: 9, epoch: 'E' }, recovered: false }],
      ['message', 'm13'],
    ]);
  });

  it('not made again (it came from POST /v1/subscribe): ended with reason reconnected; the client does not subscribe it', async () => {
    const s = setup();
    let ws = await online(s, { subs: { news: {} } });
    ws.receive({ type: 'subscribed', channel: 'alerts' });
    const alerts = s.subs[1]!;
    const seen = record(alerts);
    s.log.length = 0;
    ws = await reconnect(s, ws, { subs: { news: {} } });
    expect(s.log).toEqual([
      ['unsubscribed', { channel: 'alerts', reason: 'reconnected' }],
      ['resubscribed', { channel: 'news', since: undefined, recovered: undefined }],
      ['connected', 'c1'],
    ]);
    expect(seen).toEqual([['unsubscribed', { channel: 'alerts', reason: 'reconnected' }]]);
    expect(ws.sent).toEqual([]);
    expect(s.client.channels()).toEqual(['news']);
  });

  it('a channel the application also subscribed itself is subscribed again by the client (with since) when the server does not make it again', async () => {
    const s = setup();
    let ws = await online(s);
    const got: unknown[] = [];
    s.client.subscribe('feed:5', (d) => got.push(d));
    ws.reply('subscribe', { offset: 1, epoch: 'E' });
    ws.receive({ type: 'subscribed', channel: 'feed:5', offset: 1, epoch: 'E' });
    const server = s.subs[0]!;
    const seen = record(server);
    ws.receive(msg('feed:5', 'm2', 2));
    ws = await reconnect(s, ws, {});
    expect(seen).toEqual([
      ['message', 'm2'],
      ['unsubscribed', { channel: 'feed:5', reason: 'reconnected' }],
    ]);
    expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: 2, channel: 'feed:5', since: { offset: 2, epoch: 'E' } }]);
    ws.reply('subscribe', { recovered: true, offset: 2, epoch: 'E' });
    ws.receive(msg('feed:5', 'm3', 3));
    expect(got).toEqual(['m2', 'm3']);
    expect(s.client.serverSubscriptions()).toEqual([]);
  });

  it('a channel the application subscribed itself that the new connection has in subs is not subscribed again; the recovery comes from the welcome', async () => {
    const s = setup();
    let ws = await online(s);
    const infos: unknown[] = [];
    const own = s.client.subscribe('feed:6', () => undefined, { onResubscribe: (i) => infos.push(i) });
    ws.reply('subscribe', { offset: 4, epoch: 'E' });
    await own.ready;
    ws = await reconnect(s, ws, { subs: { 'feed:6': { offset: 4, epoch: 'E' } } });
    expect(ws.frames('subscribe')).toEqual([]);
    expect(infos).toEqual([{ channel: 'feed:6', since: { offset: 4, epoch: 'E' }, recovered: true }]);
    // The token's subs made it server-side now.
    expect(s.log.filter(([t]) => t === 'subscribed')).toEqual([['subscribed', 'feed:6']]);
  });
});

describe('ending a server-side subscription from the client', () => {
  it('calling it only stops its listeners: nothing is sent, the channel stays, and a later subscribe() is ready at once', async () => {
    const s = setup();
    const ws = await online(s, { subs: { 'feed:1': { offset: 9, epoch: 'E' } } });
    const sub = s.subs[0]!;
    const seen = record(sub);
    await sub();
    ws.receive(msg('feed:1', 'm10', 10));
    expect(seen).toEqual([]);
    expect(ws.sent).toEqual([]);
    expect(s.client.channels()).toEqual(['feed:1']);
    expect(s.client.serverSubscriptions()).toEqual([]);
    const got: unknown[] = [];
    const own = s.client.subscribe('feed:1', (d) => got.push(d));
    await expect(own.ready).resolves.toEqual({ offset: 10, epoch: 'E' });
    ws.receive(msg('feed:1', 'm11', 11));
    expect(got).toEqual(['m11']);
    // The application's own subscription ending does not unsubscribe what the server owns.
    await own();
    expect(ws.sent).toEqual([]);
  });
});

describe('types', () => {
  it('the subscribed and unsubscribed events are typed', () => {
    expectTypeOf<ClientEvents['subscribed']>().toEqualTypeOf<Subscription>();
    expectTypeOf<ClientEvents['unsubscribed']>().toEqualTypeOf<UnsubscribedEvent>();
    expectTypeOf<UnsubscribedEvent['reason']>().toEqualTypeOf<'limit_exceeded' | 'reconnected' | undefined>();
    // @ts-expect-error a subscription has no `foo` event
    expectTypeOf<Subscription['on']>().toBeCallableWith('foo', () => undefined);
  });
});
