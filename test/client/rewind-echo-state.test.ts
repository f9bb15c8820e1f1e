/**
 * Unit: `subscribe(channel, { rewind })` and `publish(channel, data, { echo: false })`
 * in @pubgate/client (contract 1.1) against a scripted WebSocket, with fake
 * timers: what goes on the wire, that rewind is asked only by the first
 * subscribe (a resubscribe after a reconnect recovers with `since`), that it
 * is never sent with `since`, and the argument checks.
 */
import { describe, expect, it, vi } from 'vitest';
import { type ConnectOptions, type PubgateClient, type PubgateError } from '../../packages/client/src/index.js';
import { type FakeServer, type FakeSocket } from '../helpers/fake-websocket.js';
import { fakeClient, flush, useFakeClients } from '../helpers/client-fakes.js';

interface Setup {
  readonly server: FakeServer;
  readonly client: PubgateClient;
  readonly errors: PubgateError[];
}

function setup(o: Partial<ConnectOptions> = {}): Setup {
  const { server, client } = fakeClient(o);
  const errors: PubgateError[] = [];
  client.on('error', (e) => errors.push(e));
  return { server, client, errors };
}


async function online(s: Setup): Promise<FakeSocket> {
  await flush();
  const ws = s.server.last();
  ws.welcome();
  await flush();
  return ws;
}

/** Drops the connection and lets the client reconnect; returns the new socket, welcomed. */
async function reconnect(s: Setup, ws: FakeSocket): Promise<FakeSocket> {
  const before = s.server.sockets.length;
  ws.end(1006);
  // Step to the reconnect (the backoff is at most 20 s), and welcome the new socket at once.
  for (let i = 0; i < 250 && s.server.sockets.length === before; i++) await vi.advanceTimersByTimeAsync(100);
  const next = s.server.last();
  expect(next).not.toBe(ws);
  next.welcome();
  await flush();
  return next;
}

const msg = (offset: number, data: unknown = offset): Record<string, unknown> => ({ type: 'message', channel: 'feed:1', offset, epoch: 'e1', data });

useFakeClients();

describe('subscribe with rewind', () => {
  it('sends rewind on the first subscribe, delivers the rewound messages, and ready carries the last offset of the rewind', async () => {
    const s = setup();
    const ws = await online(s);
    const got: unknown[] = [];
    const sub = s.client.subscribe('feed:1', (d) => got.push(d), { rewind: 3 });
    expect(ws.last('subscribe')).toEqual({ type: 'subscribe', id: 1, channel: 'feed:1', rewind: 3 });
    for (const o of [8, 9, 10]) ws.receive(msg(o));
    ws.reply('subscribe', { offset: 10, epoch: 'e1' });
    await expect(sub.ready).resolves.toEqual({ offset: 10, epoch: 'e1' });
    ws.receive(msg(11));
    expect(got).toEqual([8, 9, 10, 11]);
    expect(s.errors).toEqual([]);
  });

  it('a subscribe made while disconnected carries rewind when the connection opens', async () => {
    const s = setup();
    const sub = s.client.subscribe('feed:1', { rewind: 5 });
    const ws = await online(s);
    expect(ws.last('subscribe')).toMatchObject({ channel: 'feed:1', rewind: 5 });
    ws.reply('subscribe', { offset: 0, epoch: 'e1' });
    await expect(sub.ready).resolves.toEqual({ offset: 0, epoch: 'e1' });
  });

  it('resubscribes after a reconnect with since from the last message, not with rewind', async () => {
    const s = setup();
    const ws = await online(s);
    const got: unknown[] = [];
    s.client.subscribe('feed:1', (d) => got.push(d), { rewind: 2 });
    ws.receive(msg(4));
    ws.receive(msg(5));
    ws.reply('subscribe', { offset: 5, epoch: 'e1' });
    await flush();
    ws.receive(msg(6));
    const ws2 = await reconnect(s, ws);
    const again = ws2.last('subscribe');
    expect(again).toEqual({ type: 'subscribe', id: again.id, channel: 'feed:1', since: { offset: 6, epoch: 'e1' } });
    expect('rewind' in again).toBe(false);
    ws2.receive(msg(7));
    ws2.reply('subscribe', { recovered: true, offset: 7, epoch: 'e1' });
    expect(got).toEqual([4, 5, 6, 7]);
  });

  it('an empty channel resubscribes with since offset 0 from the reply, not with rewind', async () => {
    const s = setup();
    const ws = await online(s);
    s.client.subscribe('feed:1', { rewind: 10 });
    ws.reply('subscribe', { offset: 0, epoch: 'e1' });
    await flush();
    const ws2 = await reconnect(s, ws);
    expect(ws2.last('subscribe')).toMatchObject({ channel: 'feed:1', since: { offset: 0, epoch: 'e1' } });
    expect('rewind' in ws2.last('subscribe')).toBe(false);
  });

  it('a connection lost before the reply asks for the rewind again when nothing was delivered, and recovers with since when part of it was', async () => {
    const s = setup();
    const ws = await online(s);
    const got: unknown[] = [];
    s.client.subscribe('feed:1', (d) => got.push(d), { rewind: 3 });
    const ws2 = await reconnect(s, ws);
    expect(ws2.last('subscribe')).toMatchObject({ channel: 'feed:1', rewind: 3 });
    expect('since' in ws2.last('subscribe')).toBe(false);
    ws2.receive(msg(8));
    const ws3 = await reconnect(s, ws2);
    const third = ws3.last('subscribe');
    expect(third).toMatchObject({ channel: 'feed:1', since: { offset: 8, epoch: 'e1' } });
    expect('rewind' in third).toBe(false);
    ws3.receive(msg(9));
    ws3.receive(msg(10));
    ws3.reply('subscribe', { recovered: true, offset: 10, epoch: 'e1' });
    expect(got).toEqual([8, 9, 10]);
  });

  it('a transient refusal is retried with rewind while nothing was delivered', async () => {
    const s = setup();
    const ws = await online(s);
    s.client.subscribe('feed:1', { rewind: 4 });
    ws.reply('subscribe', { error: { code: 'unavailable', message: 'broker down' } });
    for (let i = 0; i < 100 && ws.frames('subscribe').length < 2; i++) await vi.advanceTimersByTimeAsync(100);
    const frames = ws.frames('subscribe');
    expect(frames).toHaveLength(2);
    expect(frames[1]).toMatchObject({ channel: 'feed:1', rewind: 4 });
    expect('since' in frames[1]!).toBe(false);
  });

  it('a channel whose namespace does not allow rewind refuses the subscription with bad_request', async () => {
    const s = setup();
    const ws = await online(s);
    const refused: PubgateError[] = [];
    const sub = s.client.subscribe('news', { rewind: 1, onError: (e) => refused.push(e) });
    ws.reply('subscribe', { error: { code: 'bad_request', message: 'rewind is not allowed on news' } });
    await expect(sub.ready).rejects.toMatchObject({ code: 'bad_request', channel: 'news' });
    expect(refused.map((e) => e.code)).toEqual(['bad_request']);
    expect(s.client.channels()).toEqual([]);
  });

  it('a second subscribe() to a channel already subscribed sends nothing: it is not rewound again', async () => {
    const s = setup();
    const ws = await online(s);
    s.client.subscribe('feed:1', () => undefined);
    ws.reply('subscribe', { offset: 3, epoch: 'e1' });
    const second = s.client.subscribe('feed:1', { rewind: 5 });
    await expect(second.ready).resolves.toEqual({ offset: 3, epoch: 'e1' });
    expect(ws.frames('subscribe')).toHaveLength(1);
  });

  it('throws a TypeError for a rewind that is not a positive integer, and sends nothing', async () => {
    const s = setup();
    const ws = await online(s);
    for (const rewind of [0, -1, 1.5, Number.NaN, '3', null]) {
      expect(() => s.client.subscribe('feed:1', { rewind: rewind as number })).toThrow(/rewind must be a positive integer/);
    }
    expect(ws.frames('subscribe')).toEqual([]);
    expect(s.client.channels()).toEqual([]);
  });
});

describe('publish with echo', () => {
  it('{ echo: false } puts "echo":false on the publish frame; no option and echo: true leave it out', async () => {
    const s = setup();
    const ws = await online(s);
    const p1 = s.client.publish('chat:1', { text: 'hi' }, { echo: false });
    expect(ws.sent[ws.sent.length - 1]).toBe('{"type":"publish","id":1,"channel":"chat:1","data":{"text":"hi"},"echo":false}');
    ws.reply('publish');
    await expect(p1).resolves.toEqual({ type: 'reply', id: 1 });
    const p2 = s.client.publish('chat:1', 1, { echo: true });
    const p3 = s.client.publish('chat:1', 2);
    const [f2, f3] = ws.frames('publish').slice(1);
    expect(f2).toEqual({ type: 'publish', id: 2, channel: 'chat:1', data: 1 });
    expect(f3).toEqual({ type: 'publish', id: 3, channel: 'chat:1', data: 2 });
    ws.reply(f2!);
    ws.reply(f3!);
    await Promise.all([p2, p3]);
  });

  it('a queued publish keeps "echo":false when it is sent after connecting', async () => {
    const s = setup();
    const p = s.client.publish('chat:1', 'x', { echo: false });
    const ws = await online(s);
    expect(ws.last('publish')).toEqual({ type: 'publish', id: 1, channel: 'chat:1', data: 'x', echo: false });
    ws.reply('publish');
    await p;
  });

  it('counts "echo":false in the frame size checked against maxFrameBytes', async () => {
    // The frame at the largest id, with 10 characters of data, fits exactly; ',"echo":false' makes it 13 bytes too large.
    const data = 'a'.repeat(10);
    const s = setup({ maxFrameBytes: `{"type":"publish","id":${Number.MAX_SAFE_INTEGER},"channel":"c","data":"${data}"}`.length });
    const ws = await online(s);
    const plain = s.client.publish('c', data);
    await expect(s.client.publish('c', data, { echo: false })).rejects.toMatchObject({ code: 'too_large' });
    ws.reply('publish');
    await plain;
    expect(ws.frames('publish')).toHaveLength(1);
  });

  it('rejects an echo that is not a boolean with bad_request, sending nothing', async () => {
    const s = setup();
    const ws = await online(s);
    await expect(s.client.publish('chat:1', 1, { echo: 'no' as unknown as boolean })).rejects.toMatchObject({ code: 'bad_request' });
    expect(ws.frames('publish')).toEqual([]);
  });
});
