/**
 * The client's SSE fallback against a scripted WebSocket and a scripted SSE
 * endpoint (fake fetch): when it moves to SSE, what it sends (channels,
 * Authorization, Last-Event-ID built from the positions it tracks), that the
 * application sees the same events, that socket-only operations fail with
 * transport_unsupported, channel changes reopening the stream, close events,
 * and the move back to WebSocket without a lost or repeated history message.
 */
import { describe, expect, it } from 'vitest';
import { PubgateError, type MessageFrame, type PubgateClient } from '../../packages/client/src/index.js';
import { historyHash } from '../../packages/client/src/sse.js';
import { advance, fakeClient, flush, useFakeClients } from '../helpers/client-fakes.js';
import { fakeSse, type FakeSse } from '../helpers/fake-sse.js';
import type { FakeServer } from '../helpers/fake-websocket.js';

useFakeClients();

/** A client with both transports on scripted endpoints; `seen` records every message its subscriptions deliver. */
function both(o: Parameters<typeof fakeClient>[0] = {}): { server: FakeServer; sse: FakeSse; client: PubgateClient; events: Array<{ type: string; ev: unknown }> } {
  const sse = fakeSse();
  const { server, client } = fakeClient({ transports: ['websocket', 'sse'], fetch: sse.fetch, wsRetryMs: 30_000, backoff: { minMs: 100, maxMs: 1000 }, ...o });
  const events: Array<{ type: string; ev: unknown }> = [];
  for (const type of ['connecting', 'connected', 'disconnected', 'closed', 'resubscribed', 'error'] as const) client.on(type, (ev) => events.push({ type, ev }));
  return { server, sse, client, events };
}

/** Fails the WebSocket handshake twice (1006 before welcome): the next attempt is SSE. */
async function failWsTwice(server: FakeServer): Promise<void> {
  await flush();
  server.last().end(1006);
  await advance(1000);
  server.last().end(1006);
  await advance(1000);
}

const msg = (channel: string, offset: number, data: unknown): Record<string, unknown> => ({ channel, offset, epoch: 'E', data });

describe('SSE fallback', () => {
  it('moves to SSE after two WebSocket attempts that end with 1006 before welcome, and delivers the same messages as over WebSocket', async () => {
    const { server, sse, client, events } = both();
    const got: Array<[unknown, MessageFrame]> = [];
    const sub = client.subscribe('news', (d, m) => got.push([d, m]));
    await failWsTwice(server);
    expect(server.sockets).toHaveLength(2);
    expect(sse.requests).toHaveLength(1);
    const req = sse.last();
    expect(req.url.startsWith('http://gw.test/sse?')).toBe(true);
    expect(req.channels).toEqual(['news']);
    expect(req.headers.authorization).toMatch(/^Bearer ey/);
    expect(req.headers.accept).toBe('text/event-stream');
    expect(req.lastEventId).toBeUndefined(); // nothing known about `news` yet
    req.open().welcome();
    await flush();
    expect(client.state).toBe('connected');
    expect(client.transport).toBe('sse');
    expect(events.find((e) => e.type === 'connected')?.ev).toMatchObject({ transport: 'sse', welcome: { type: 'welcome', node: 'gw-1', conn: 's1' } });
    await expect(sub.ready).resolves.toEqual({});
    req.event('message', { channel: 'news', data: { headline: 'h' } });
    req.write(': ping\n\n');
    req.event('message', { channel: 'other', data: 1 });
    await flush();
    expect(got).toEqual([[{ headline: 'h' }, { type: 'message', channel: 'news', data: { headline: 'h' } }]]);
  });

  it('does not move after one failed attempt, nor after a connection that had its welcome ends with 1006', async () => {
    const { server, sse, client } = both();
    await flush();
    server.last().end(1006);
    await advance(1000);
    server.last().welcome();
    await flush();
    server.last().end(1006); // after welcome: not a broken WebSocket
    await advance(1000);
    server.last().end(1006); // the first failure before welcome since the last success
    await advance(1000);
    expect(sse.requests).toHaveLength(0);
    expect(client.transport).toBe('websocket');
    expect(server.sockets).toHaveLength(4);
  });

  it("over SSE, publish, ping and presence fail with transport_unsupported; publishes queued before the move fail once the WebSocket is tried again and fails", async () => {
    const { server, sse, client } = both();
    const sub = client.subscribe('chat:1');
    await flush();
    const queued = client.publish('chat:1', 'queued').catch((e: unknown) => e);
    server.last().end(1006);
    await advance(1000);
    server.last().end(1006);
    await advance(1000);
    sse.last().open().welcome();
    await flush();
    expect(server.sockets).toHaveLength(3); // the WebSocket tried again at once
    server.last().end(1006);
    await flush();
    expect(await queued).toMatchObject({ name: 'PubgateError', code: 'transport_unsupported', channel: 'chat:1' });
    const err = await client.publish('chat:1', { text: 'hi' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PubgateError);
    expect(err).toMatchObject({ code: 'transport_unsupported' });
    expect((err as Error).message).toMatch(/WebSocket/);
    await expect(client.ping()).rejects.toMatchObject({ code: 'transport_unsupported' });
    await expect(sub.presence()).rejects.toMatchObject({ code: 'transport_unsupported' });
    expect(client.state).toBe('connected');
  });

  it('keeps the positions of history channels across the move: the SSE request recovers them with Last-Event-ID', async () => {
    const { server, sse, client, events } = both();
    const got: unknown[] = [];
    client.subscribe('feed:1', (d) => got.push(d));
    client.subscribe('news', (d) => got.push(d));
    await flush();
    const ws = server.last().welcome();
    await flush();
    ws.reply(ws.frames('subscribe').find((f) => f.channel === 'feed:1')!, { offset: 3, epoch: 'E' });
    ws.reply(ws.frames('subscribe').find((f) => f.channel === 'news')!);
    ws.receive({ type: 'message', ...msg('feed:1', 4, 'four') });
    await flush();
    ws.end(1006); // the proxy broke: the next two handshakes fail
    await advance(1000);
    await failWsTwice(server);
    const req = sse.last();
    expect(req.channels.sort()).toEqual(['feed:1', 'news']);
    expect(req.lastEventId).toBe(`${historyHash(['feed:1'])}.E:4`);
    req.open().welcome({ recovered: true }, `${historyHash(['feed:1'])}.E:4`);
    req.event('message', msg('feed:1', 5, 'five'), `${historyHash(['feed:1'])}.E:5`);
    await flush();
    expect(got).toEqual(['four', 'five']);
    expect(events.filter((e) => e.type === 'resubscribed').map((e) => e.ev)).toEqual([
      { channel: 'feed:1', since: { offset: 4, epoch: 'E' }, recovered: true },
      { channel: 'news', since: undefined, recovered: undefined },
    ]);
  });

  it('a subscribe or unsubscribe over SSE reopens the stream once per burst with the new set, recovering the history channels', async () => {
    const { server, sse, client } = both({ sseDebounceMs: 50 });
    client.subscribe('feed:1');
    await failWsTwice(server);
    const first = sse.last();
    const h1 = historyHash(['feed:1']);
    first.open().welcome({}, `${h1}.E:10`);
    await flush();
    server.last().end(1006); // the WebSocket tried at once after the move fails: stay on SSE
    await flush();
    first.event('message', msg('feed:1', 11, 'x'), `${h1}.E:11`);
    await flush();
    const a = client.subscribe('feed:2');
    const b = client.subscribe('news');
    await advance(49);
    expect(sse.requests).toHaveLength(1);
    await advance(1);
    expect(sse.requests).toHaveLength(2);
    expect(first.aborted).toBe(true);
    const second = sse.last();
    expect(second.channels).toEqual(['feed:1', 'feed:2', 'news']);
    // feed:2 and news: not known yet, so the id covers feed:1 only; the gateway starts them live.
    expect(second.lastEventId).toBe(`${historyHash(['feed:1'])}.E:11`);
    const h2 = historyHash(['feed:1', 'feed:2']);
    // The welcome's id (positions at subscribe time) says, through its hash, that feed:2 keeps history and news does not.
    second.open().welcome({ recovered: false }, `${h2}.E:11,F:0`);
    await flush();
    await expect(a.ready).resolves.toEqual({ offset: 0, epoch: 'F' });
    await expect(b.ready).resolves.toEqual({});
    second.event('message', { channel: 'news', data: 'n' }, `${h2}.E:11,F:0`);
    await flush();
    await a();
    await advance(50);
    const third = sse.last();
    expect(third.channels).toEqual(['feed:1', 'news']);
    expect(third.lastEventId).toBe(`${historyHash(['feed:1'])}.E:11`);
  });

  it('a close event decides as the WebSocket close code does: 1001 reconnects over SSE with Last-Event-ID, 4501 stops', async () => {
    const { server, sse, client, events } = both();
    client.subscribe('feed:1');
    await failWsTwice(server);
    const h = historyHash(['feed:1']);
    sse.last().open().welcome({}, `${h}.E:2`);
    await flush();
    server.last().end(1006);
    await flush();
    sse.last().event('message', msg('feed:1', 3, 'c'), `${h}.E:3`);
    sse.last().event('close', { code: 1001, reason: 'draining' });
    sse.last().end();
    await flush();
    expect(events.filter((e) => e.type === 'disconnected').pop()?.ev).toMatchObject({ code: 1001, reason: 'draining', url: 'http://gw.test/sse' });
    await advance(1000);
    expect(sse.requests).toHaveLength(2);
    expect(sse.last().lastEventId).toBe(`${h}.E:3`);
    sse.last().open().welcome({ recovered: true }, `${h}.E:3`);
    await flush();
    sse.last().event('close', { code: 4501, reason: 'disconnected by the API' });
    await flush();
    expect(client.state).toBe('closed');
    expect(events.find((e) => e.type === 'closed')?.ev).toEqual({ code: 4501, reason: 'disconnected by the API' });
  });

  it('a stream that ends without a close event, or stays silent for three ping intervals, is a 1006 and reconnects', async () => {
    const { server, sse, events } = both();
    await flush();
    server.last().end(1006);
    await advance(1000);
    server.last().end(1006);
    await advance(1000);
    // No channels: no stream is opened, the connection is up at once.
    expect(sse.requests).toHaveLength(0);
    const { client: c2, sse: sse2, server: server2, events: ev2 } = both();
    c2.subscribe('news');
    await failWsTwice(server2);
    sse2.last().open().welcome({ ping: 10 });
    await flush();
    server2.last().end(1006);
    await flush();
    await advance(29_000);
    expect(ev2.filter((e) => e.type === 'disconnected')).toHaveLength(2);
    await advance(1_000);
    expect(ev2.filter((e) => e.type === 'disconnected').pop()?.ev).toMatchObject({ code: 1006 });
    expect(events.filter((e) => e.type === 'connected').pop()?.ev).toMatchObject({ transport: 'sse' });
  });

  it('when the SSE request fails too (the gateway is down), the next attempt is a WebSocket again', async () => {
    const { server, sse, client } = both();
    client.subscribe('news');
    await failWsTwice(server);
    sse.last().networkError();
    await advance(1000);
    expect(server.sockets).toHaveLength(3);
    server.last().welcome();
    await flush();
    expect(client.transport).toBe('websocket');
    expect(client.state).toBe('connected');
  });

  it("with transports ['sse'] the client opens no WebSocket, and publish() fails at once even while connecting", async () => {
    const { server, sse, client } = both({ transports: ['sse'] });
    client.subscribe('news');
    await expect(client.publish('news', 1)).rejects.toMatchObject({ code: 'transport_unsupported', message: expect.stringContaining("transports: ['sse']") as unknown });
    await flush();
    sse.last().open().welcome();
    await advance(60_000);
    expect(server.sockets).toHaveLength(0);
    expect(client.transport).toBe('sse');
  });

  it('close() over SSE aborts the stream and resolves at once', async () => {
    const { server, sse, client, events } = both();
    client.subscribe('news');
    await failWsTwice(server);
    sse.last().open().welcome();
    await flush();
    let done = false;
    void client.close().then(() => (done = true));
    await flush();
    expect(done).toBe(true);
    expect(sse.last().aborted).toBe(true);
    expect(events.find((e) => e.type === 'closed')?.ev).toEqual({ code: 1000, reason: 'closed by the client' });
  });

  it('a 401 on the SSE request is handled as a failed handshake (1006 with the status in the reason)', async () => {
    const { sse, client, events } = both({ transports: ['sse'] });
    client.subscribe('news');
    await flush();
    sse.last().refuse(401, 'unauthorized');
    await flush();
    expect(events.find((e) => e.type === 'disconnected')?.ev).toMatchObject({ code: 1006, reason: 'SSE request answered 401 unauthorized' });
  });

  it('a channel the token does not allow is refused alone: the stream the gateway refuses (403) is retried one added channel at a time', async () => {
    const { sse, client } = both({ transports: ['sse'] });
    const ok = client.subscribe('news');
    const bad = client.subscribe('secret');
    await flush();
    expect(sse.last().channels).toEqual(['news', 'secret']);
    sse.last().refuse(403, 'forbidden');
    await advance(50);
    expect(sse.last().channels).toEqual(['news']);
    sse.last().open().welcome();
    await advance(50);
    await expect(ok.ready).resolves.toEqual({});
    expect(sse.last().channels).toEqual(['news', 'secret']);
    sse.last().refuse(403, 'forbidden');
    await advance(50);
    await expect(bad.ready).rejects.toMatchObject({ code: 'forbidden', channel: 'secret' });
    expect(client.channels()).toEqual(['news']);
    expect(sse.last().channels).toEqual(['news']);
    sse.last().open().welcome();
    await advance(50);
    const later = client.subscribe('feed:9');
    await advance(50);
    expect(sse.last().channels).toEqual(['feed:9', 'news']);
    sse.last().open().welcome();
    await flush();
    await expect(later.ready).resolves.toEqual({});
    expect(client.state).toBe('connected');
  });

  it("leaves the server-side subscriptions of the last WebSocket out of the stream: they end with 'reconnected'", async () => {
    const { server, sse, client } = both();
    const ended: unknown[] = [];
    client.on('unsubscribed', (e) => ended.push(e));
    client.subscribe('news');
    await flush();
    const ws = server.last().welcome({ subs: { 'feed:s': { offset: 1, epoch: 'E' } } });
    await flush();
    ws.reply('subscribe');
    await flush();
    expect(client.channels().sort()).toEqual(['feed:s', 'news']);
    ws.end(1006);
    await advance(1000);
    await failWsTwice(server);
    expect(sse.last().channels).toEqual(['news']);
    sse.last().open().welcome();
    await flush();
    expect(ended).toEqual([{ channel: 'feed:s', reason: 'reconnected' }]);
    expect(client.channels()).toEqual(['news']);
  });

  it('moves back to WebSocket when a background attempt gets its welcome, without losing or repeating a history message, taking one without history from the stream, then drops the SSE stream once the settle time after the confirmations has passed', async () => {
    const { server, sse, client, events } = both();
    const got: unknown[] = [];
    client.subscribe('feed:1', (d) => got.push(d));
    client.subscribe('news', (d) => got.push(d));
    await failWsTwice(server);
    const h = historyHash(['feed:1']);
    const stream = sse.last();
    stream.open().welcome({}, `${h}.E:5`);
    await flush();
    server.last().end(1006); // the immediate retry fails: the proxy is still broken
    await flush();
    stream.event('message', msg('feed:1', 6, 6), `${h}.E:6`);
    stream.event('message', { channel: 'news', data: 'n1' }, `${h}.E:6`);
    await flush();
    await advance(44_999); // wsRetryMs 30 000 × (1 + 0.5)
    expect(server.sockets).toHaveLength(3);
    await advance(1);
    expect(server.sockets).toHaveLength(4);
    const ws = server.last();
    ws.welcome();
    await flush();
    expect(client.transport).toBe('websocket');
    const subFeed = ws.frames('subscribe').find((f) => f.channel === 'feed:1')!;
    expect(subFeed.since).toEqual({ offset: 6, epoch: 'E' });
    expect(stream.aborted).toBe(false); // kept until every channel is subscribed on the WebSocket
    // Both deliver 7: once. SSE goes on to 8 before the WebSocket replays it.
    stream.event('message', msg('feed:1', 7, 7), `${h}.E:7`);
    ws.receive({ type: 'message', ...msg('feed:1', 7, 7) });
    stream.event('message', msg('feed:1', 8, 8), `${h}.E:8`);
    stream.event('message', { channel: 'news', data: 'n2' }, `${h}.E:8`);
    await flush();
    ws.receive({ type: 'message', ...msg('feed:1', 8, 8) });
    ws.reply(subFeed, { recovered: true, offset: 8, epoch: 'E' });
    ws.reply(ws.frames('subscribe').find((f) => f.channel === 'news')!);
    await flush();
    // `news` has no history and its stream has not yet shown a message the WebSocket brought: a copy published before
    // the WebSocket subscription went live may still be on its way on the stream.
    expect(stream.aborted).toBe(false);
    stream.event('message', { channel: 'news', data: 'n3' }, `${h}.E:8`);
    await flush();
    await advance(1999);
    expect(stream.aborted).toBe(false);
    await advance(1);
    expect(stream.aborted).toBe(true);
    // After the settle time a late copy on the stream is not delivered (the stream is closed and detached).
    stream.event('message', { channel: 'news', data: 'n4' }, `${h}.E:8`);
    ws.receive({ type: 'message', ...msg('feed:1', 9, 9) });
    await flush();
    // n2 and n3 (no history) came on the SSE stream alone during the move: delivered.
    expect(got).toEqual([6, 'n1', 7, 8, 'n2', 'n3', 9]);
    expect(events.filter((e) => e.type === 'connected').map((e) => (e.ev as { transport: string }).transport)).toEqual(['sse', 'websocket']);
    const published = client.publish('feed:1', 'ok-now');
    ws.reply('publish');
    await expect(published).resolves.toMatchObject({ type: 'reply' });
  });

  it('during the move, a message without history that comes on both connections is delivered once, in either order, and the stream is dropped as soon as it shows one the WebSocket brought', async () => {
    const { server, sse, client } = both();
    const got: unknown[] = [];
    client.subscribe('news', (d) => got.push(d));
    await failWsTwice(server);
    const stream = sse.last();
    stream.open().welcome();
    await flush();
    server.last().end(1006);
    await flush();
    await advance(45_000);
    const ws = server.last();
    ws.welcome();
    await flush();
    expect(client.transport).toBe('websocket');
    // Published before the WebSocket subscription went live: on the stream only, and late (after the confirmation).
    ws.reply(ws.frames('subscribe').find((f) => f.channel === 'news')!);
    await flush();
    // Published after: on both. The WebSocket copy of `b` comes first, then the stream brings `a` and `b`.
    ws.receive({ type: 'message', channel: 'news', data: { n: 'b' } });
    await flush();
    expect(stream.aborted).toBe(false);
    stream.event('message', { channel: 'news', data: { n: 'a' } });
    await flush();
    expect(stream.aborted).toBe(false);
    stream.event('message', { channel: 'news', data: { n: 'b' } });
    await flush();
    // The stream showed `b`, which the WebSocket had brought: everything before the WebSocket went live has come.
    expect(stream.aborted).toBe(true);
    ws.receive({ type: 'message', channel: 'news', data: { n: 'c' } });
    await flush();
    expect(got).toEqual([{ n: 'b' }, { n: 'a' }, { n: 'c' }]);
  });

  it('during the move, equal messages are told apart by count: a stream copy first, then the WebSocket copy, is one message; two published are two', async () => {
    const { server, sse, client } = both();
    const got: unknown[] = [];
    client.subscribe('news', (d) => got.push(d));
    await failWsTwice(server);
    const stream = sse.last();
    stream.open().welcome();
    await flush();
    server.last().end(1006);
    await flush();
    await advance(45_000);
    const ws = server.last();
    ws.welcome();
    await flush();
    ws.reply(ws.frames('subscribe').find((f) => f.channel === 'news')!);
    await flush();
    // `x` twice: the first before the WebSocket went live (stream only), the second after (both connections).
    stream.event('message', { channel: 'news', data: 'x' });
    stream.event('message', { channel: 'news', data: 'x' });
    await flush();
    ws.receive({ type: 'message', channel: 'news', data: 'x' });
    await flush();
    expect(got).toEqual(['x', 'x']);
    await advance(2000);
    expect(stream.aborted).toBe(true);
  });
});
