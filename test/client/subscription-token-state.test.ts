/**
 * Unit: subscription tokens (contract 1.1) in @pubgate/client against a
 * scripted WebSocket, with fake timers: `subscribe(channel, { token })`, the
 * client's getSubscriptionToken called before every subscribe frame (first,
 * after each reconnect, each retry) and never for server-side subscriptions,
 * a fresh token after `unauthorized` (bounded), refusals, a callback that
 * fails, hangs or answers late.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  PubgateError,
  connect,
  type ConnectOptions,
  type PubgateClient,
  type Subscription,
  type SubscriptionMessage,
  type SubscriptionToken,
} from '../../packages/client/src/index.js';
import { fakeServer, type FakeServer, type FakeSocket } from '../helpers/fake-websocket.js';
import { advance, fakeClient, flush, useFakeClients } from '../helpers/client-fakes.js';

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


async function online(s: Setup, welcome: Record<string, unknown> = {}): Promise<FakeSocket> {
  await flush();
  const ws = s.server.last();
  ws.welcome(welcome);
  await flush();
  return ws;
}

/** A getSubscriptionToken that answers `tok-<channel>-<n>` (n counts calls) and records each call. */
function minter(): { fn: (channel: string) => Promise<string>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    fn: async (channel: string) => {
      calls.push(channel);
      return `tok-${channel}-${calls.length}`;
    },
  };
}

useFakeClients();

describe('subscribe(channel, { token })', () => {
  it('sends the token in the subscribe frame', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('room:5', () => undefined, { token: 'sub.jwt.1' });
    expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: 1, channel: 'room:5', token: 'sub.jwt.1' }]);
    ws.reply('subscribe');
    await expect(sub.ready).resolves.toEqual({});
  });

  it('takes the options as second argument, and hands messages to message listeners', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe<{ n: number }>('room:6', { token: 'sub.jwt.2' });
    const got: Array<SubscriptionMessage<{ n: number }>> = [];
    sub.on('message', (m) => got.push(m));
    expect(ws.last('subscribe')).toEqual({ type: 'subscribe', id: 1, channel: 'room:6', token: 'sub.jwt.2' });
    ws.reply('subscribe', { offset: 3, epoch: 'E' });
    ws.receive({ type: 'message', channel: 'room:6', offset: 4, epoch: 'E', data: { n: 4 } });
    expect(got).toEqual([{ type: 'message', channel: 'room:6', offset: 4, epoch: 'E', data: { n: 4 } }]);
    expectTypeOf(got[0]!.data.n).toEqualTypeOf<number>();
    expectTypeOf(sub).toEqualTypeOf<Subscription<Readonly<Record<string, unknown>>, { n: number }>>();
  });

  it('without getSubscriptionToken, sends the same token again after a reconnect', async () => {
    const s = setup();
    let ws = await online(s);
    s.client.subscribe('room:7', () => undefined, { token: 'sub.jwt.3' });
    ws.reply('subscribe', { offset: 1, epoch: 'E' });
    ws.end(1006);
    await advance(250);
    ws = await online(s);
    expect(ws.last('subscribe')).toEqual({ type: 'subscribe', id: 2, channel: 'room:7', since: { offset: 1, epoch: 'E' }, token: 'sub.jwt.3' });
  });

  it('refuses an empty token and a second argument that is neither a handler nor options, synchronously', () => {
    const s = setup();
    expect(() => s.client.subscribe('room:1', { token: '' })).toThrow(/token must be a non-empty string/);
    expect(() => s.client.subscribe('room:1', 'x' as unknown as () => void)).toThrow(/message handler or the options/);
    expect(s.client.channels()).toEqual([]);
  });

  it('on a closed client, returns a subscription of that channel whose ready rejects with closed', async () => {
    const s = setup();
    await online(s);
    const closing = s.client.close();
    await advance(1000); // close() waits up to 1 s for a close event the fake socket never sends
    await closing;
    const sub = s.client.subscribe('room:2', { token: 't' });
    expect(sub.channel).toBe('room:2');
    expect(sub.serverSide).toBe(false);
    await expect(sub.ready).rejects.toMatchObject({ code: 'closed' });
  });

  it('a forbidden reply (invalid or mismatched token) rejects ready and calls onError, without a retry', async () => {
    const s = setup();
    const ws = await online(s);
    const seen: string[] = [];
    const sub = s.client.subscribe('room:8', () => undefined, { token: 'wrong', onError: (e) => seen.push(e.code) });
    ws.reply('subscribe', { error: { code: 'forbidden', message: 'invalid subscription token' } });
    await expect(sub.ready).rejects.toMatchObject({ code: 'forbidden', channel: 'room:8' });
    expect(seen).toEqual(['forbidden']);
    await advance(30_000);
    expect(ws.frames('subscribe')).toHaveLength(1);
  });

  it('without getSubscriptionToken, unauthorized (an expired token) is final', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('room:9', () => undefined, { token: 'expired' });
    ws.reply('subscribe', { error: { code: 'unauthorized', message: 'subscription token expired' } });
    await expect(sub.ready).rejects.toMatchObject({ code: 'unauthorized' });
    await advance(30_000);
    expect(ws.frames('subscribe')).toHaveLength(1);
  });
});

describe('getSubscriptionToken', () => {
  it('is called with the channel before the subscribe, and its token is sent', async () => {
    const m = minter();
    const s = setup({ getSubscriptionToken: m.fn });
    const ws = await online(s);
    const sub = s.client.subscribe('room:1', () => undefined);
    expect(ws.frames('subscribe')).toEqual([]); // the token is on its way
    await flush();
    expect(m.calls).toEqual(['room:1']);
    expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: 1, channel: 'room:1', token: 'tok-room:1-1' }]);
    ws.reply('subscribe');
    await expect(sub.ready).resolves.toEqual({});
  });

  it('is called again for every resubscribe after a reconnect: a fresh token each time, since kept', async () => {
    const m = minter();
    const s = setup({ getSubscriptionToken: m.fn });
    let ws = await online(s);
    s.client.subscribe('room:2', () => undefined);
    await flush();
    ws.reply('subscribe', { offset: 10, epoch: 'E' });
    for (let i = 2; i <= 3; i++) {
      ws.end(1006);
      await advance(20_000);
      ws = await online(s);
      expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: i, channel: 'room:2', since: { offset: 10, epoch: 'E' }, token: `tok-room:2-${i}` }]);
      ws.reply('subscribe', { recovered: true, offset: 10, epoch: 'E' });
    }
    expect(m.calls).toEqual(['room:2', 'room:2', 'room:2']);
  });

  it('subscribes without a token when it answers undefined, null or an empty string', async () => {
    const answers: SubscriptionToken[] = [undefined, null, ''];
    const s = setup({ getSubscriptionToken: (channel) => answers[Number(channel.slice(-1))] });
    const ws = await online(s);
    for (const c of ['pub:0', 'pub:1', 'pub:2']) s.client.subscribe(c, () => undefined);
    await flush();
    expect(ws.frames('subscribe')).toEqual([
      { type: 'subscribe', id: 1, channel: 'pub:0' },
      { type: 'subscribe', id: 2, channel: 'pub:1' },
      { type: 'subscribe', id: 3, channel: 'pub:2' },
    ]);
  });

  it('a token given to subscribe() is used first; resubscribes take getSubscriptionToken', async () => {
    const m = minter();
    const s = setup({ getSubscriptionToken: m.fn });
    let ws = await online(s);
    s.client.subscribe('room:3', () => undefined, { token: 'given' });
    expect(ws.last('subscribe')).toEqual({ type: 'subscribe', id: 1, channel: 'room:3', token: 'given' });
    expect(m.calls).toEqual([]);
    ws.reply('subscribe');
    ws.end(1001);
    await advance(1000);
    ws = await online(s);
    expect(ws.last('subscribe')).toEqual({ type: 'subscribe', id: 2, channel: 'room:3', token: 'tok-room:3-1' });
  });

  it('unauthorized (an expired token) is retried with a fresh token, at most twice in a row, then final', async () => {
    const m = minter();
    const s = setup({ getSubscriptionToken: m.fn });
    const ws = await online(s);
    const sub = s.client.subscribe('room:4', () => undefined);
    await flush();
    for (let i = 1; i <= 3; i++) {
      expect(ws.frames('subscribe')).toHaveLength(i);
      expect(ws.last('subscribe').token).toBe(`tok-room:4-${i}`);
      ws.reply('subscribe', { error: { code: 'unauthorized', message: 'subscription token expired' } });
      await advance(2000);
    }
    await expect(sub.ready).rejects.toMatchObject({ code: 'unauthorized', channel: 'room:4' });
    await advance(30_000);
    expect(ws.frames('subscribe')).toHaveLength(3);
    expect(s.client.channels()).toEqual([]);
  });

  it('the unauthorized count starts over after a success', async () => {
    const m = minter();
    const s = setup({ getSubscriptionToken: m.fn });
    let ws = await online(s);
    const sub = s.client.subscribe('room:5', () => undefined);
    await flush();
    ws.reply('subscribe', { error: { code: 'unauthorized', message: 'expired' } });
    await advance(2000);
    ws.reply('subscribe', { error: { code: 'unauthorized', message: 'expired' } });
    await advance(2000);
    ws.reply('subscribe');
    await expect(sub.ready).resolves.toEqual({});
    ws.end(1006);
    await advance(1000);
    ws = await online(s);
    for (let i = 0; i < 2; i++) {
      ws.reply('subscribe', { error: { code: 'unauthorized', message: 'expired' } });
      await advance(2000);
    }
    ws.reply('subscribe');
    expect(s.client.channels()).toEqual(['room:5']);
    expect(ws.frames('subscribe')).toHaveLength(3);
  });

  it('a callback that throws is reported (code token) and retried with backoff on the same connection', async () => {
    let fail = true;
    const s = setup({
      getSubscriptionToken: async () => {
        if (fail) throw new Error('backend down');
        return 'ok.jwt';
      },
    });
    const ws = await online(s);
    const sub = s.client.subscribe('room:6', () => undefined);
    await flush();
    expect(ws.frames('subscribe')).toEqual([]);
    expect(s.errors).toHaveLength(1);
    expect(s.errors[0]).toMatchObject({ code: 'token', channel: 'room:6' });
    expect(s.errors[0]!.message).toMatch(/getSubscriptionToken\(room:6\) failed: backend down.*retrying/);
    fail = false;
    await advance(1000);
    expect(ws.frames('subscribe')).toEqual([{ type: 'subscribe', id: 1, channel: 'room:6', token: 'ok.jwt' }]);
    ws.reply('subscribe');
    await expect(sub.ready).resolves.toEqual({});
  });

  it('a callback that throws a PubgateError forbidden refuses the subscription for good', async () => {
    const calls: string[] = [];
    const s = setup({
      getSubscriptionToken: (channel) => {
        calls.push(channel);
        throw new PubgateError('forbidden', 'the backend says no');
      },
    });
    const ws = await online(s);
    const sub = s.client.subscribe('room:7', () => undefined);
    await expect(sub.ready).rejects.toMatchObject({ code: 'forbidden', message: 'the backend says no' });
    await advance(30_000);
    expect(calls).toEqual(['room:7']);
    expect(ws.frames('subscribe')).toEqual([]);
    expect(s.client.channels()).toEqual([]);
  });

  it('a callback that answers something other than a string is reported and retried', async () => {
    let answer: unknown = 42;
    const s = setup({ getSubscriptionToken: () => answer as string });
    const ws = await online(s);
    s.client.subscribe('room:8', () => undefined);
    await flush();
    expect(s.errors[0]).toMatchObject({ code: 'token', channel: 'room:8' });
    expect(s.errors[0]!.message).toMatch(/returned a number/);
    answer = 'good';
    await advance(1000);
    expect(ws.last('subscribe')).toMatchObject({ channel: 'room:8', token: 'good' });
  });

  it('a callback that does not settle within requestTimeoutMs is reported and asked again', async () => {
    let calls = 0;
    const s = setup({
      requestTimeoutMs: 3000,
      getSubscriptionToken: () => {
        calls++;
        return calls === 1 ? new Promise<string>(() => undefined) : 'late.but.ok';
      },
    });
    const ws = await online(s);
    s.client.subscribe('room:9', () => undefined);
    await advance(2999);
    expect(s.errors).toEqual([]);
    await advance(1);
    expect(s.errors[0]).toMatchObject({ code: 'token', channel: 'room:9' });
    expect(s.errors[0]!.message).toMatch(/did not settle within 3000 ms/);
    await advance(1000);
    expect(calls).toBe(2);
    expect(ws.last('subscribe')).toMatchObject({ channel: 'room:9', token: 'late.but.ok' });
  });

  it('a token that arrives after the subscription was cancelled is not used', async () => {
    let release: (t: string) => void = () => undefined;
    const s = setup({ getSubscriptionToken: () => new Promise<string>((r) => (release = r)) });
    const ws = await online(s);
    const sub = s.client.subscribe('room:10', () => undefined);
    await flush();
    await sub();
    release('too.late');
    await flush();
    expect(ws.frames('subscribe')).toEqual([]);
    expect(ws.frames('unsubscribe')).toEqual([]); // nothing was subscribed on the server
    await expect(sub.ready).rejects.toMatchObject({ code: 'unsubscribed' });
  });

  it('a token that arrives after the connection ended is not sent; the next connection asks again', async () => {
    const pending: Array<(t: string) => void> = [];
    const s = setup({ getSubscriptionToken: () => new Promise<string>((r) => pending.push(r)) });
    const ws1 = await online(s);
    s.client.subscribe('room:11', () => undefined);
    await flush();
    ws1.end(1006);
    pending[0]!('for.the.old.connection');
    await advance(1000);
    const ws2 = await online(s);
    expect(ws1.frames('subscribe')).toEqual([]);
    expect(ws2.frames('subscribe')).toEqual([]);
    expect(pending).toHaveLength(2);
    pending[1]!('fresh');
    await flush();
    expect(ws2.frames('subscribe')).toEqual([{ type: 'subscribe', id: 1, channel: 'room:11', token: 'fresh' }]);
  });

  it('is not called for server-side subscriptions', async () => {
    const m = minter();
    const s = setup({ getSubscriptionToken: m.fn });
    const ws = await online(s, { subs: { news: {} } });
    ws.receive({ type: 'subscribed', channel: 'alerts' });
    ws.end(1006);
    await advance(1000);
    await online(s, { subs: { news: {} } });
    expect(m.calls).toEqual([]);
    expect(s.server.sockets.flatMap((w) => w.frames('subscribe'))).toEqual([]);
  });

  it('must be a function', () => {
    expect(() => connect({ url: 'ws://gw.test/ws', WebSocket: fakeServer().WebSocket, getSubscriptionToken: 'x' as unknown as () => string })).toThrow(
      /getSubscriptionToken must be a function/,
    );
  });
});
