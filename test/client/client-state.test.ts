/**
 * Unit: the @pubgate/client state machine against a scripted WebSocket, with
 * fake timers: connection states, resubscribe with `since`, recovery reports,
 * close-code rules, token expiry and refresh, request timeouts, bounded queues,
 * heartbeat.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { connect, type ClientEvents, type ConnectOptions, type PubgateClient, type PubgateError } from '../../packages/client/src/index.js';
import { fakeJwt, fakeServer, type FakeServer, type FakeSocket } from '../helpers/fake-websocket.js';

const nowSec = (): number => Math.floor(Date.now() / 1000);

interface Setup {
  readonly server: FakeServer;
  readonly client: PubgateClient;
  readonly events: Array<{ type: keyof ClientEvents; ev: unknown }>;
  readonly rnd: { value: number };
  of<K extends keyof ClientEvents>(type: K): ClientEvents[K][];
}

const clients: PubgateClient[] = [];

/** The WebSocket path only (transports: websocket): the SSE fallback has its own tests (sse-state.test.ts). */
function setup(o: Partial<ConnectOptions> = {}): Setup {
  const server = fakeServer();
  const rnd = { value: 0.5 };
  const client = connect({ url: 'ws://gw.test/ws', token: fakeJwt({ sub: 'u1', exp: nowSec() + 3600 }), WebSocket: server.WebSocket, random: () => rnd.value, transports: ['websocket'], ...o });
  clients.push(client);
  const events: Setup['events'] = [];
  const types: Array<keyof ClientEvents> = ['state', 'connecting', 'connected', 'disconnected', 'closed', 'resubscribed', 'refreshed', 'error'];
  for (const type of types) client.on(type, (ev) => events.push({ type, ev }));
  return {
    server,
    client,
    events,
    rnd,
    of: <K extends keyof ClientEvents>(type: K) => events.filter((e) => e.type === type).map((e) => e.ev as ClientEvents[K]),
  };
}

/** Lets pending promise callbacks run (no time passes). */
const flush = (): Promise<unknown> => vi.advanceTimersByTimeAsync(0);
const advance = async (ms: number): Promise<void> => {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
};

/** Connects the newest socket: welcome, and confirms every subscribe it sent. */
async function online(s: Setup, welcome: Record<string, unknown> = {}): Promise<FakeSocket> {
  await flush();
  const ws = s.server.last();
  ws.welcome(welcome);
  await flush();
  return ws;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(async () => {
  // close() waits up to 1 s for the socket's close event, which a fake socket never sends by itself.
  const closing = Promise.all(clients.splice(0).map((c) => c.close()));
  await vi.advanceTimersByTimeAsync(1000);
  await closing;
  vi.useRealTimers();
});

describe('connecting', () => {
  it('offers pubgate.v1 and the bearer token, and is connected only after welcome', async () => {
    const token = fakeJwt({ sub: 'u1', exp: nowSec() + 3600 });
    const s = setup({ token });
    expect(s.client.state).toBe('connecting');
    await flush();
    const ws = s.server.last();
    expect(ws.url).toBe('ws://gw.test/ws');
    expect(ws.protocols).toEqual(['pubgate.v1', `bearer.${token}`]);
    ws.accept();
    expect(s.client.state).toBe('connecting');
    ws.welcome({ node: 'gw-7', user: 'u1' });
    expect(s.client.state).toBe('connected');
    expect(s.client.welcome?.node).toBe('gw-7');
    expect(s.events.map((e) => e.type)).toEqual(['connecting', 'state', 'connected']);
    expect(s.of('connected')[0]?.url).toBe('ws://gw.test/ws');
    await expect(s.client.whenConnected()).resolves.toMatchObject({ node: 'gw-7' });
  });

  it('can send the token as the access_token query parameter instead', async () => {
    const s = setup({ token: 'abc.def.ghi', tokenTransport: 'query', url: 'ws://gw.test/ws?x=1' });
    await flush();
    expect(s.server.last().url).toBe('ws://gw.test/ws?x=1&access_token=abc.def.ghi');
    expect(s.server.last().protocols).toEqual(['pubgate.v1']);
  });

  it('connects anonymously without token or getToken', async () => {
    const s = setup({ token: undefined });
    await flush();
    expect(s.server.last().protocols).toEqual(['pubgate.v1']);
  });

  it('calls getToken for the first connection when no token is given', async () => {
    const token = fakeJwt({ sub: 'u1', exp: nowSec() + 3600 });
    const getToken = vi.fn(async () => token);
    const s = setup({ token: undefined, getToken });
    await flush();
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(s.server.last().bearer).toBe(token);
  });

  it('throws a clear error when there is no WebSocket implementation', () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    delete g.WebSocket;
    try {
      expect(() => connect({ url: 'ws://x/ws' })).toThrow(/no WebSocket implementation.*ws/);
    } finally {
      if (saved !== undefined) g.WebSocket = saved;
    }
  });

  it('abandons an attempt without welcome after connectTimeoutMs and reconnects (reported as 1006)', async () => {
    const s = setup({ connectTimeoutMs: 3000 });
    await flush();
    const ws = s.server.last();
    ws.accept();
    await advance(2999);
    expect(s.client.state).toBe('connecting');
    await advance(1);
    expect(ws.closedByClient?.code).toBe(4000);
    expect(s.of('disconnected')[0]).toMatchObject({ code: 1006, reason: 'no welcome within 3000 ms', reconnectInMs: 250 });
    await advance(250);
    expect(s.server.sockets).toHaveLength(2);
  });

  it('drops a connection whose first frame is not welcome', async () => {
    const s = setup();
    await flush();
    const ws = s.server.last();
    ws.accept();
    ws.receive({ type: 'reply', id: 1 });
    expect(s.client.state).toBe('disconnected');
    expect(s.of('disconnected')[0]?.reason).toMatch(/first frame was reply, not welcome/);
  });

  it('rotates through a URL list on each new attempt', async () => {
    const s = setup({ url: ['ws://a/ws', 'ws://b/ws', 'ws://c/ws'] });
    await online(s);
    s.server.last().end(1006);
    await advance(1000);
    s.server.last().end(1006);
    await advance(2000);
    s.server.last().end(1006);
    await advance(4000);
    expect(s.server.sockets.map((w) => w.url)).toEqual(['ws://a/ws', 'ws://b/ws', 'ws://c/ws', 'ws://a/ws']);
    expect(s.of('connecting').map((e) => e.url)).toEqual(['ws://a/ws', 'ws://b/ws', 'ws://c/ws', 'ws://a/ws']);
  });
});

describe('reconnect and backoff', () => {
  it('reconnects after 1006 with full jitter; the window doubles per failed attempt up to 20 s', async () => {
    const s = setup();
    s.rnd.value = 0.999_999;
    await online(s);
    s.server.last().end(1006);
    const windows = [500, 1000, 2000, 4000, 8000, 16_000, 20_000, 20_000];
    for (const [i, w] of windows.entries()) {
      const ev = s.of('disconnected')[i];
      expect(ev?.reconnectInMs).toBe(w - 1);
      await advance(w - 2);
      expect(s.server.sockets).toHaveLength(i + 1);
      await advance(1);
      expect(s.server.sockets).toHaveLength(i + 2);
      s.server.last().end(1006); // the node is still down
    }
    expect(s.of('connecting').map((e) => e.attempt)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('resets the backoff after a connection that stayed up (stableAfterMs), not after a short one', async () => {
    const s = setup({ stableAfterMs: 5000 });
    s.rnd.value = 0.999_999;
    await online(s);
    s.server.last().end(1006);
    await advance(500);
    await online(s); // attempt 1 succeeded, but closes at once
    s.server.last().end(1011);
    expect(s.of('disconnected')[1]?.reconnectInMs).toBe(999);
    await advance(1000);
    await online(s);
    await advance(5000);
    s.server.last().end(1001);
    expect(s.of('disconnected')[2]?.reconnectInMs).toBe(499);
  });

  it.each([1000, 1003, 1009, 4500, 4501])('does not reconnect after %i', async (code) => {
    const s = setup();
    await online(s);
    s.server.last().end(code, 'bye');
    expect(s.client.state).toBe('closed');
    expect(s.of('closed')).toEqual([{ code, reason: 'bye' }]);
    expect(s.of('disconnected')).toEqual([]);
    await advance(60_000);
    expect(s.server.sockets).toHaveLength(1);
    await expect(s.client.publish('news', 1)).rejects.toMatchObject({ code: 'closed' });
    await expect(s.client.whenConnected()).rejects.toMatchObject({ code: 'closed' });
  });

  it.each([1001, 1006, 1011, 1013, 4002, 4008, 4321])('reconnects after %i', async (code) => {
    const s = setup();
    await online(s);
    s.server.last().end(code);
    expect(s.client.state).toBe('disconnected');
    await advance(500);
    expect(s.server.sockets).toHaveLength(2);
    await online(s);
    expect(s.client.state).toBe('connected');
  });

  it('1008: backs off at least 4 s before reconnecting', async () => {
    const s = setup();
    s.rnd.value = 0;
    await online(s);
    s.server.last().end(1008);
    expect(s.of('disconnected')[0]?.reconnectInMs).toBe(4000);
    await advance(3999);
    expect(s.server.sockets).toHaveLength(1);
    await advance(1);
    expect(s.server.sockets).toHaveLength(2);
  });

  it('close() stops everything: socket closed with 1000, pending requests fail, no reconnect', async () => {
    const s = setup();
    const ws = await online(s);
    const p = s.client.publish('chat:1', { text: 'hi' });
    const closing = s.client.close();
    expect(ws.closedByClient).toEqual({ code: 1000, reason: 'client closed' });
    ws.end(1000);
    await closing;
    await expect(p).rejects.toMatchObject({ code: 'closed' });
    expect(s.client.state).toBe('closed');
    expect(s.of('closed')).toEqual([{ code: 1000, reason: 'closed by the client' }]);
    await advance(60_000);
    expect(s.server.sockets).toHaveLength(1);
  });

  it('close() while waiting to reconnect cancels the reconnect', async () => {
    const s = setup();
    await online(s);
    s.server.last().end(1006);
    await s.client.close();
    await advance(60_000);
    expect(s.server.sockets).toHaveLength(1);
    expect(s.client.state).toBe('closed');
  });
});

describe('subscriptions', () => {
  it('subscribes once per channel, delivers to every handler, unsubscribes with the last one', async () => {
    const s = setup();
    const ws = await online(s);
    const a: unknown[] = [];
    const b: unknown[] = [];
    const offA = s.client.subscribe('news', (d) => a.push(d));
    const offB = s.client.subscribe('news', (d) => b.push(d));
    expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: 1, channel: 'news' }]);
    ws.reply('subscribe');
    await expect(offA.ready).resolves.toEqual({});
    await expect(offB.ready).resolves.toEqual({});
    ws.receive({ type: 'message', channel: 'news', data: { h: 1 } });
    ws.receive({ type: 'message', channel: 'other', data: 'x' });
    expect(a).toEqual([{ h: 1 }]);
    expect(b).toEqual([{ h: 1 }]);
    await offA();
    expect(ws.frames('unsubscribe')).toEqual([]);
    const done = offB();
    expect(ws.last('unsubscribe')).toMatchObject({ channel: 'news' });
    ws.reply('unsubscribe');
    await done;
    expect(s.client.channels()).toEqual([]);
    ws.receive({ type: 'message', channel: 'news', data: 2 });
    expect(a).toHaveLength(1);
  });

  it('subscriptions made while connecting are sent after welcome', async () => {
    const s = setup();
    const off = s.client.subscribe('news', () => undefined);
    await flush();
    const ws = s.server.last();
    ws.accept();
    expect(ws.sent).toEqual([]);
    ws.welcome();
    expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: 1, channel: 'news' }]);
    ws.reply('subscribe', { offset: 5, epoch: 'e1' });
    await expect(off.ready).resolves.toEqual({ offset: 5, epoch: 'e1' });
  });

  it('rejects invalid channel names synchronously', () => {
    const s = setup();
    expect(() => s.client.subscribe('bad channel', () => undefined)).toThrow(TypeError);
    expect(() => s.client.subscribe('x'.repeat(201), () => undefined)).toThrow(TypeError);
  });

  it('resubscribes every channel after a reconnect, with since from the last message', async () => {
    const s = setup();
    let ws = await online(s);
    const got: unknown[] = [];
    const infos: unknown[] = [];
    s.client.subscribe('hist:a', (d) => got.push(d), { onResubscribe: (i) => infos.push(i) });
    s.client.subscribe('plain', () => undefined);
    ws.reply(ws.frames('subscribe')[0]!, { offset: 40, epoch: 'E' });
    ws.reply(ws.frames('subscribe')[1]!);
    ws.receive({ type: 'message', channel: 'hist:a', offset: 41, epoch: 'E', data: 'm41' });
    ws.end(1006);
    await advance(250);
    ws = await online(s);
    expect(ws.frames('subscribe')).toEqual([
      { type: 'subscribe', id: 3, channel: 'hist:a', since: { offset: 41, epoch: 'E' } },
      { type: 'subscribe', id: 4, channel: 'plain' },
    ]);
    // The replay may come before the reply.
    ws.receive({ type: 'message', channel: 'hist:a', offset: 42, epoch: 'E', data: 'm42' });
    ws.reply(ws.frames('subscribe')[0]!, { recovered: true, offset: 42, epoch: 'E' });
    ws.reply(ws.frames('subscribe')[1]!);
    ws.receive({ type: 'message', channel: 'hist:a', offset: 43, epoch: 'E', data: 'm43' });
    expect(got).toEqual(['m41', 'm42', 'm43']);
    expect(infos).toEqual([{ channel: 'hist:a', since: { offset: 41, epoch: 'E' }, recovered: true }]);
    expect(s.of('resubscribed')).toEqual([
      { channel: 'hist:a', since: { offset: 41, epoch: 'E' }, recovered: true },
      { channel: 'plain', since: undefined, recovered: undefined },
    ]);
  });

  it('uses the subscribe reply position as since when no message arrived yet', async () => {
    const s = setup();
    let ws = await online(s);
    s.client.subscribe('hist:b', () => undefined);
    ws.reply('subscribe', { offset: 0, epoch: 'Z' });
    ws.end(1001);
    await advance(250);
    ws = await online(s);
    expect(ws.last('subscribe')).toEqual({ type: 'subscribe', id: 2, channel: 'hist:b', since: { offset: 0, epoch: 'Z' } });
  });

  it('reports recovered:false (event and callback) and continues from the new position', async () => {
    const s = setup();
    let ws = await online(s);
    const infos: unknown[] = [];
    const got: unknown[] = [];
    s.client.subscribe('hist:c', (d) => got.push(d), { onResubscribe: (i) => infos.push(i) });
    ws.reply('subscribe', { offset: 7, epoch: 'old' });
    ws.end(4008);
    await advance(250);
    ws = await online(s);
    ws.reply('subscribe', { recovered: false, offset: 3, epoch: 'new' });
    expect(infos).toEqual([{ channel: 'hist:c', since: { offset: 7, epoch: 'old' }, recovered: false }]);
    expect(s.of('resubscribed')).toEqual(infos);
    ws.receive({ type: 'message', channel: 'hist:c', offset: 4, epoch: 'new', data: 'n4' });
    expect(got).toEqual(['n4']);
    ws.end(1006);
    await advance(1000);
    ws = await online(s);
    expect(ws.last('subscribe')).toMatchObject({ since: { offset: 4, epoch: 'new' } });
  });

  it('treats a reply to since without a recovered field as not recovered', async () => {
    const s = setup();
    let ws = await online(s);
    s.client.subscribe('hist:d', () => undefined);
    ws.reply('subscribe', { offset: 1, epoch: 'e' });
    ws.end(1006);
    await advance(250);
    ws = await online(s);
    ws.reply('subscribe');
    expect(s.of('resubscribed')).toEqual([{ channel: 'hist:d', since: { offset: 1, epoch: 'e' }, recovered: false }]);
  });

  it('drops a message it already delivered (same epoch, offset not newer)', async () => {
    const s = setup();
    const ws = await online(s);
    const got: unknown[] = [];
    s.client.subscribe('hist:e', (d) => got.push(d));
    ws.reply('subscribe', { offset: 10, epoch: 'e' });
    for (const [offset, epoch] of [[10, 'e'], [11, 'e'], [11, 'e'], [9, 'e'], [12, 'e'], [1, 'f']] as const) {
      ws.receive({ type: 'message', channel: 'hist:e', offset, epoch, data: `${epoch}${offset}` });
    }
    expect(got).toEqual(['e11', 'e12', 'f1']);
  });

  it('a refused subscription rejects ready, calls onError, emits error and is forgotten', async () => {
    const s = setup();
    const ws = await online(s);
    const errors: PubgateError[] = [];
    const sub = s.client.subscribe('secret', () => undefined, { onError: (e) => errors.push(e) });
    ws.reply('subscribe', { error: { code: 'forbidden', message: 'not allowed to subscribe to secret' } });
    await expect(sub.ready).rejects.toMatchObject({ code: 'forbidden', channel: 'secret' });
    expect(errors.map((e) => e.code)).toEqual(['forbidden']);
    expect(s.of('error').map((e) => e.code)).toEqual(['forbidden']);
    expect(s.client.channels()).toEqual([]);
  });

  it('retries a subscription refused with unavailable (broker down) on the same connection', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('news', () => undefined);
    ws.reply('subscribe', { error: { code: 'unavailable', message: 'broker down' } });
    expect(s.of('error')[0]).toMatchObject({ code: 'unavailable', channel: 'news' });
    await advance(1000);
    expect(ws.frames('subscribe')).toHaveLength(2);
    ws.reply('subscribe');
    await expect(sub.ready).resolves.toEqual({});
  });

  it('a subscribe without a reply within requestTimeoutMs is sent again', async () => {
    const s = setup({ requestTimeoutMs: 2000 });
    const ws = await online(s);
    s.client.subscribe('news', () => undefined);
    await advance(2000);
    await advance(1000);
    expect(ws.frames('subscribe').map((f) => f.id)).toEqual([1, 2]);
  });

  it('an onMessage that throws is reported and does not stop the other handlers', async () => {
    const s = setup();
    const ws = await online(s);
    const got: unknown[] = [];
    s.client.subscribe('news', () => {
      throw new Error('boom');
    });
    s.client.subscribe('news', (d) => got.push(d));
    ws.reply('subscribe');
    ws.receive({ type: 'message', channel: 'news', data: 1 });
    expect(got).toEqual([1]);
    expect(s.of('error')[0]).toMatchObject({ code: 'handler', channel: 'news' });
  });
});

describe('publish', () => {
  it('sends the data as JSON and resolves with the reply; a refused publish rejects with the gateway code', async () => {
    const s = setup();
    const ws = await online(s);
    const ok = s.client.publish('chat:1', { text: 'hé', n: [1, 2] });
    expect(ws.last('publish')).toEqual({ type: 'publish', id: 1, channel: 'chat:1', data: { text: 'hé', n: [1, 2] } });
    ws.reply('publish');
    await expect(ok).resolves.toEqual({ type: 'reply', id: 1 });
    const refused = s.client.publish('news', 1);
    ws.reply('publish', { error: { code: 'forbidden', message: 'not allowed to publish to news' } });
    await expect(refused).rejects.toMatchObject({ name: 'PubgateError', code: 'forbidden', channel: 'news' });
  });

  it('rejects with timeout when no reply comes within requestTimeoutMs', async () => {
    const s = setup({ requestTimeoutMs: 3000 });
    await online(s);
    const p = s.client.publish('chat:1', 1);
    const check = expect(p).rejects.toMatchObject({ code: 'timeout' });
    await advance(3000);
    await check;
  });

  it('rejects in-flight publishes with disconnected when the connection drops', async () => {
    const s = setup();
    const ws = await online(s);
    const p = s.client.publish('chat:1', 1);
    ws.end(1006);
    await expect(p).rejects.toMatchObject({ code: 'disconnected' });
  });

  it('queues publishes while disconnected (bounded), and sends them after welcome, in order', async () => {
    const s = setup({ maxQueuedPublishes: 2 });
    const p1 = s.client.publish('chat:1', 'a');
    const p2 = s.client.publish('chat:1', 'b');
    await expect(s.client.publish('chat:1', 'c')).rejects.toMatchObject({ code: 'queue_full' });
    const ws = await online(s);
    expect(ws.frames('publish').map((f) => f.data)).toEqual(['a', 'b']);
    ws.reply(ws.frames('publish')[0]!);
    ws.reply(ws.frames('publish')[1]!);
    await expect(Promise.all([p1, p2])).resolves.toHaveLength(2);
  });

  it('a queued publish still fails with timeout when no connection comes in time', async () => {
    const s = setup({ requestTimeoutMs: 5000 });
    const p = s.client.publish('chat:1', 'a');
    const check = expect(p).rejects.toMatchObject({ code: 'timeout', message: /not connected within 5000 ms/ });
    await advance(5000);
    await check;
    await online(s);
    expect(s.server.last().frames('publish')).toEqual([]);
  });

  it("offlinePublish: 'reject' fails a publish at once while not connected", async () => {
    const s = setup({ offlinePublish: 'reject' });
    await expect(s.client.publish('chat:1', 'a')).rejects.toMatchObject({ code: 'disconnected' });
  });

  it('refuses what the gateway would refuse, without sending it', async () => {
    const s = setup({ maxFrameBytes: 100 });
    const ws = await online(s);
    await expect(s.client.publish('chat:1', 'x'.repeat(100))).rejects.toMatchObject({ code: 'too_large' });
    await expect(s.client.publish('bad name', 1)).rejects.toMatchObject({ code: 'bad_request' });
    await expect(s.client.publish('chat:1', undefined)).rejects.toMatchObject({ code: 'bad_request' });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await expect(s.client.publish('chat:1', cyclic)).rejects.toMatchObject({ code: 'bad_request' });
    expect(ws.frames('publish')).toEqual([]);
  });
});

describe('tokens', () => {
  it('4001: calls getToken, then reconnects with the new token and resubscribes', async () => {
    const first = fakeJwt({ sub: 'u1', exp: nowSec() + 3600 });
    const second = fakeJwt({ sub: 'u1', exp: nowSec() + 7200 });
    const getToken = vi.fn(async () => second);
    const s = setup({ token: first, getToken, autoRefresh: false });
    let ws = await online(s);
    s.client.subscribe('news', () => undefined);
    ws.reply('subscribe');
    ws.end(4001, 'token expired');
    expect(getToken).not.toHaveBeenCalled();
    expect(s.of('disconnected')[0]).toMatchObject({ code: 4001 });
    await advance(250);
    expect(getToken).toHaveBeenCalledTimes(1);
    ws = s.server.last();
    expect(ws.bearer).toBe(second);
    ws = await online(s);
    expect(ws.last('subscribe')).toMatchObject({ channel: 'news' });
  });

  it('4001 without getToken closes the client', async () => {
    const s = setup();
    await online(s);
    s.server.last().end(4001, 'token expired');
    expect(s.client.state).toBe('closed');
    expect(s.of('closed')[0]).toMatchObject({ code: 4001, reason: expect.stringMatching(/no getToken/) });
  });

  it('refreshes the token before it expires, from welcome.expiresIn, and again from the new token', async () => {
    const first = fakeJwt({ sub: 'u1', exp: nowSec() + 100 });
    const second = fakeJwt({ sub: 'u1', exp: nowSec() + 1000 });
    const getToken = vi.fn(async () => second);
    const s = setup({ token: first, getToken, heartbeat: false });
    const ws = await online(s, { expiresIn: 100 });
    await advance(74_000);
    expect(ws.frames('refresh')).toEqual([]);
    await advance(1000); // a quarter of the life left
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(ws.last('refresh')).toMatchObject({ token: second });
    ws.reply('refresh');
    await flush();
    expect(s.of('refreshed')).toHaveLength(1);
    expect(s.of('refreshed')[0]?.expiresIn).toBeGreaterThan(900);
    // Next refresh: 1000 s after the start, one minute before expiry.
    await advance(1000_000 - 75_000 - 61_000);
    expect(ws.frames('refresh')).toHaveLength(1);
    await advance(2000);
    expect(ws.frames('refresh')).toHaveLength(2);
  });

  it('a refused refresh is reported and retried while the token has time left', async () => {
    const getToken = vi.fn(async () => fakeJwt({ sub: 'u1', exp: nowSec() + 1000 }));
    const s = setup({ token: fakeJwt({ sub: 'u1', exp: nowSec() + 100 }), getToken, heartbeat: false });
    const ws = await online(s, { expiresIn: 100 });
    await advance(75_000);
    ws.reply('refresh', { error: { code: 'forbidden', message: 'a refresh token must carry the same sub' } });
    await flush();
    expect(s.of('error').map((e) => e.code)).toEqual(['forbidden']);
    await advance(13_000); // half of the 25 s left
    expect(ws.frames('refresh')).toHaveLength(2);
  });

  it('a getToken that fails or hangs is reported, and the attempt is retried with backoff', async () => {
    let calls = 0;
    const good = fakeJwt({ sub: 'u1', exp: nowSec() + 3600 });
    const getToken = vi.fn((): Promise<string> => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('backend down'));
      if (calls === 2) return new Promise<string>(() => undefined); // never settles
      return Promise.resolve(good);
    });
    const s = setup({ token: undefined, getToken, connectTimeoutMs: 4000 });
    await flush();
    expect(s.of('error')[0]).toMatchObject({ code: 'token', message: 'getToken failed: backend down' });
    expect(s.of('disconnected')[0]).toMatchObject({ code: 1006, reason: 'getToken failed' });
    expect(s.server.sockets).toHaveLength(0);
    await advance(250);
    expect(getToken).toHaveBeenCalledTimes(2);
    await advance(4000);
    expect(s.of('error')[1]?.message).toMatch(/getToken did not settle within 4000 ms/);
    await advance(1000);
    expect(getToken).toHaveBeenCalledTimes(3);
    expect(s.server.last().bearer).toBe(good);
  });

  it('gets a new token before reconnecting when the current one has expired meanwhile', async () => {
    const getToken = vi.fn(async () => fakeJwt({ sub: 'u1', exp: nowSec() + 3600 }));
    const s = setup({ token: fakeJwt({ sub: 'u1', exp: nowSec() + 30 }), getToken, autoRefresh: false });
    await online(s, { expiresIn: 30 });
    s.server.last().end(1006);
    s.rnd.value = 0;
    await advance(40_000); // the node stays down past the token's expiry
    for (let i = 0; i < 5 && s.server.sockets.length < 2; i++) await advance(1000);
    expect(getToken).toHaveBeenCalled();
    expect(s.server.last().bearer).toBe(await getToken.mock.results[0]!.value);
  });
});

describe('heartbeat', () => {
  it('pings after one quiet ping interval and reconnects when the ping gets no reply', async () => {
    const s = setup({ requestTimeoutMs: 5000 });
    const ws = await online(s, { ping: 25 });
    await advance(25_000);
    expect(ws.frames('ping')).toHaveLength(1);
    ws.reply('ping');
    await advance(10_000);
    ws.receive({ type: 'message', channel: 'x', data: 1 }); // traffic: no ping needed
    await advance(15_000);
    expect(ws.frames('ping')).toHaveLength(1);
    await advance(25_000);
    expect(ws.frames('ping')).toHaveLength(2);
    await advance(5000);
    expect(s.of('disconnected')[0]).toMatchObject({ code: 1006, reason: 'no reply to a ping within 5000 ms' });
    expect(ws.closedByClient?.code).toBe(4000);
  });

  it('ping() measures a round trip', async () => {
    const s = setup();
    const ws = await online(s);
    const p = s.client.ping();
    await advance(7);
    ws.reply('ping');
    await expect(p).resolves.toBe(7);
  });
});
