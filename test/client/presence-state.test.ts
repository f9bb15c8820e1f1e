/**
 * Unit: presence and join/leave in @pubgate/client against a scripted
 * WebSocket, with fake timers: the presence and presence_stats requests and
 * their results and refusals, join/leave events per subscription, the
 * resubscribed event that says when to read presence again, and frames of
 * unknown types.
 */
import { describe, expect, it } from 'vitest';
import {
  type ConnectOptions,
  type JoinEvent,
  type LeaveEvent,
  type PubgateClient,
  type PubgateError,
  type ResubscribeInfo,
} from '../../packages/client/src/index.js';
import { type FakeServer, type FakeSocket } from '../helpers/fake-websocket.js';
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


async function online(s: Setup): Promise<FakeSocket> {
  await flush();
  const ws = s.server.last();
  ws.welcome();
  await flush();
  return ws;
}

/** Records the join, leave and resubscribed events of a subscription, in order. */
function record(sub: { on: (type: 'join' | 'leave' | 'resubscribed', fn: (ev: unknown) => void) => () => void }): Array<[string, unknown]> {
  const seen: Array<[string, unknown]> = [];
  for (const type of ['join', 'leave', 'resubscribed'] as const) sub.on(type, (ev) => seen.push([type, ev]));
  return seen;
}

useFakeClients();

describe('presence()', () => {
  it('sends a presence frame for the channel and resolves with members, users, connections and truncated', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe<unknown, { name: string }>('chat:1', () => undefined);
    ws.reply('subscribe');
    await sub.ready;
    const p = sub.presence();
    expect(ws.last('presence')).toEqual({ type: 'presence', id: 2, channel: 'chat:1' });
    ws.reply('presence', { members: [{ user: '42', info: { name: 'Ann' }, conns: 2 }, { user: '7', conns: 1 }], users: 2, connections: 3 });
    const r = await p;
    expect(r).toEqual({ members: [{ user: '42', info: { name: 'Ann' }, conns: 2 }, { user: '7', conns: 1 }], users: 2, connections: 3, truncated: false });
    expect('info' in r.members[1]!).toBe(false);
    const name: string | undefined = r.members[0]?.info?.name;
    expect(name).toBe('Ann');

    const q = sub.presence();
    ws.reply('presence', { members: [{ user: '42', conns: 1 }], users: 5, connections: 9, truncated: true });
    await expect(q).resolves.toEqual({ members: [{ user: '42', conns: 1 }], users: 5, connections: 9, truncated: true });
  });

  it('presenceStats() sends presence_stats and resolves with the counts only', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    const p = sub.presenceStats();
    expect(ws.last('presence_stats')).toEqual({ type: 'presence_stats', id: 2, channel: 'chat:1' });
    ws.reply('presence_stats', { users: 1, connections: 2 });
    await expect(p).resolves.toEqual({ users: 1, connections: 2 });
  });

  it('rejects with the gateway code (bad_request, forbidden, unavailable); the subscription stays', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('news', () => undefined);
    ws.reply('subscribe');
    for (const code of ['bad_request', 'forbidden', 'unavailable'] as const) {
      const p = sub.presence();
      ws.reply('presence', { error: { code, message: `${code} for news` } });
      await expect(p).rejects.toMatchObject({ name: 'PubgateError', code, channel: 'news', message: `${code} for news` });
      const q = sub.presenceStats();
      ws.reply('presence_stats', { error: { code, message: code } });
      await expect(q).rejects.toMatchObject({ code, channel: 'news' });
    }
    expect(s.client.channels()).toEqual(['news']);
    expect(s.errors).toEqual([]);
  });

  it('rejects a reply it cannot read with protocol', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    const bad: Array<Record<string, unknown>> = [
      {},
      { members: [], users: 1 },
      { members: {}, users: 0, connections: 0 },
      { members: [{ user: 42, conns: 1 }], users: 1, connections: 1 },
      { members: [{ user: '42', conns: 1, info: 'Ann' }], users: 1, connections: 1 },
      { members: [], users: -1, connections: 0 },
    ];
    for (const extra of bad) {
      const p = sub.presence();
      ws.reply('presence', extra);
      await expect(p, JSON.stringify(extra)).rejects.toMatchObject({ code: 'protocol', channel: 'chat:1' });
    }
    const q = sub.presenceStats();
    ws.reply('presence_stats', { users: '1', connections: 1 });
    await expect(q).rejects.toMatchObject({ code: 'protocol' });
  });

  it('rejects with disconnected when not connected, or when the connection drops before the reply', async () => {
    const s = setup();
    const sub = s.client.subscribe('chat:1', () => undefined);
    await expect(sub.presence()).rejects.toMatchObject({ code: 'disconnected', channel: 'chat:1' });
    const ws = await online(s);
    ws.reply('subscribe');
    const p = sub.presence();
    const q = sub.presenceStats();
    ws.end(1006);
    await expect(p).rejects.toMatchObject({ code: 'disconnected' });
    await expect(q).rejects.toMatchObject({ code: 'disconnected' });
    await expect(sub.presence()).rejects.toMatchObject({ code: 'disconnected' });
  });

  it('rejects with timeout when no reply comes within requestTimeoutMs', async () => {
    const s = setup({ requestTimeoutMs: 2000 });
    const ws = await online(s);
    const sub = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    const p = sub.presence();
    const check = expect(p).rejects.toMatchObject({ code: 'timeout', channel: 'chat:1' });
    await advance(2000);
    await check;
  });

  it('rejects with unsubscribed after the subscription ended, and with closed after close()', async () => {
    const s = setup();
    const ws = await online(s);
    const a = s.client.subscribe('chat:1', () => undefined);
    const b = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    await a();
    await expect(a.presence()).rejects.toMatchObject({ code: 'unsubscribed', channel: 'chat:1' });
    await expect(a.presenceStats()).rejects.toMatchObject({ code: 'unsubscribed' });
    // The other subscription of the channel still asks.
    const p = b.presenceStats();
    ws.reply('presence_stats', { users: 1, connections: 1 });
    await expect(p).resolves.toEqual({ users: 1, connections: 1 });

    const refused = s.client.subscribe('secret', () => undefined);
    ws.reply('subscribe', { error: { code: 'forbidden', message: 'no' } });
    await expect(refused.ready).rejects.toMatchObject({ code: 'forbidden' });
    await expect(refused.presence()).rejects.toMatchObject({ code: 'unsubscribed', channel: 'secret' });

    const closing = s.client.close();
    await advance(1000);
    await closing;
    await expect(b.presence()).rejects.toMatchObject({ code: 'closed' });
  });
});

describe('join and leave', () => {
  it('delivers join and leave frames to every subscription of the channel, info only when present', async () => {
    const s = setup();
    const ws = await online(s);
    const a = s.client.subscribe<unknown, { name: string }>('chat:1', () => undefined);
    const b = s.client.subscribe('chat:1', () => undefined);
    const other = s.client.subscribe('chat:2', () => undefined);
    const seenA = record(a);
    const seenB = record(b);
    const seenOther = record(other);
    const names: string[] = [];
    a.on('join', (ev: JoinEvent<{ name: string }>) => names.push(ev.info?.name ?? ev.user));
    ws.reply(ws.frames('subscribe')[0]!);
    ws.reply(ws.frames('subscribe')[1]!);
    ws.receive({ type: 'join', channel: 'chat:1', user: '42', info: { name: 'Ann' } });
    ws.receive({ type: 'join', channel: 'chat:1', user: '7' });
    ws.receive({ type: 'leave', channel: 'chat:1', user: '42' });
    ws.receive({ type: 'join', channel: 'nobody-here', user: '9' });
    const expected = [
      ['join', { channel: 'chat:1', user: '42', info: { name: 'Ann' } }],
      ['join', { channel: 'chat:1', user: '7' }],
      ['leave', { channel: 'chat:1', user: '42' }],
    ];
    expect(seenA).toEqual(expected);
    expect(seenB).toEqual(expected);
    expect('info' in (seenA[1]![1] as object)).toBe(false);
    expect(names).toEqual(['Ann', '7']);
    expect(seenOther).toEqual([]);
    expect(s.errors).toEqual([]);
  });

  it('stops delivering to a listener removed with off() or its returned function, and to an ended subscription', async () => {
    const s = setup();
    const ws = await online(s);
    const a = s.client.subscribe('chat:1', () => undefined);
    const b = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    const viaOff: LeaveEvent[] = [];
    const viaReturn: LeaveEvent[] = [];
    const once: LeaveEvent[] = [];
    const fn = (ev: LeaveEvent): void => void viaOff.push(ev);
    a.on('leave', fn);
    const remove = a.on('leave', (ev) => viaReturn.push(ev));
    b.once('leave', (ev) => once.push(ev));
    const ofB = record(b);
    ws.receive({ type: 'leave', channel: 'chat:1', user: '1' });
    a.off('leave', fn);
    remove();
    ws.receive({ type: 'leave', channel: 'chat:1', user: '2' });
    expect(viaOff.map((e) => e.user)).toEqual(['1']);
    expect(viaReturn.map((e) => e.user)).toEqual(['1']);
    expect(once.map((e) => e.user)).toEqual(['1']);
    expect(ofB.map(([, ev]) => (ev as LeaveEvent).user)).toEqual(['1', '2']);
    await b();
    ws.receive({ type: 'leave', channel: 'chat:1', user: '3' });
    expect(ofB.map(([, ev]) => (ev as LeaveEvent).user)).toEqual(['1', '2']);
  });

  it('delivers join frames that arrive before the subscribe reply (the server subscribed first)', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('chat:1', () => undefined);
    const seen = record(sub);
    ws.receive({ type: 'join', channel: 'chat:1', user: '42' });
    ws.reply('subscribe');
    await sub.ready;
    expect(seen).toEqual([['join', { channel: 'chat:1', user: '42' }]]);
  });

  it('emits resubscribed on each subscription after a reconnect (the moment to read presence again), and join/leave go on', async () => {
    const s = setup();
    let ws = await online(s);
    const sub = s.client.subscribe('chat:1', () => undefined);
    const seen = record(sub);
    ws.reply('subscribe');
    await sub.ready;
    expect(seen).toEqual([]); // the first confirmation is `ready`, not a resubscribe
    ws.receive({ type: 'join', channel: 'chat:1', user: 'a' });
    ws.end(1006);
    await advance(250);
    ws = await online(s);
    const reread = new Promise<unknown>((resolve) => sub.once('resubscribed', () => resolve(sub.presence())));
    ws.reply('subscribe');
    await flush();
    expect(ws.last('presence')).toMatchObject({ channel: 'chat:1' });
    ws.reply('presence', { members: [{ user: 'b', conns: 1 }], users: 1, connections: 1 });
    await expect(reread).resolves.toEqual({ members: [{ user: 'b', conns: 1 }], users: 1, connections: 1, truncated: false });
    ws.receive({ type: 'leave', channel: 'chat:1', user: 'b' });
    const info: ResubscribeInfo = { channel: 'chat:1', since: undefined, recovered: undefined };
    expect(seen).toEqual([
      ['join', { channel: 'chat:1', user: 'a' }],
      ['resubscribed', info],
      ['leave', { channel: 'chat:1', user: 'b' }],
    ]);
  });

  it('a listener that throws is reported as a handler error and does not stop the others', async () => {
    const s = setup();
    const ws = await online(s);
    const a = s.client.subscribe('chat:1', () => undefined);
    const b = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    a.on('join', () => {
      throw new Error('boom');
    });
    const got: string[] = [];
    a.on('join', (ev) => got.push(`a:${ev.user}`));
    b.on('join', (ev) => got.push(`b:${ev.user}`));
    ws.receive({ type: 'join', channel: 'chat:1', user: '42' });
    expect(got).toEqual(['a:42', 'b:42']);
    expect(s.errors).toHaveLength(1);
    expect(s.errors[0]).toMatchObject({ code: 'handler', channel: 'chat:1' });
    expect(s.errors[0]!.message).toContain('boom');
  });

  it('reports malformed join or leave frames as protocol errors and delivers nothing', async () => {
    const s = setup();
    const ws = await online(s);
    const sub = s.client.subscribe('chat:1', () => undefined);
    ws.reply('subscribe');
    const seen = record(sub);
    ws.receive({ type: 'join', channel: 'chat:1', user: 42 });
    ws.receive({ type: 'join', channel: 'chat:1', user: '42', info: ['not', 'an', 'object'] });
    ws.receive({ type: 'leave', channel: 'chat:1' });
    expect(seen).toEqual([]);
    expect(s.errors.map((e) => e.code)).toEqual(['protocol', 'protocol', 'protocol']);
    expect(s.client.state).toBe('connected');
  });

  it('ignores frame types it does not know, on a connection that stays up', async () => {
    const s = setup();
    const ws = await online(s);
    const got: unknown[] = [];
    const sub = s.client.subscribe('chat:1', (d) => got.push(d));
    const seen = record(sub);
    ws.reply('subscribe');
    ws.receive({ type: 'subscribed', channel: 'news' });
    ws.receive({ type: 'something_new', channel: 'chat:1', user: '42' });
    ws.receive({ type: 'message', channel: 'chat:1', data: 'after' });
    expect(got).toEqual(['after']);
    expect(seen).toEqual([]);
    expect(s.errors).toEqual([]);
    expect(s.client.state).toBe('connected');
  });
});
