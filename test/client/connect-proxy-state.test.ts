/**
 * Unit: a connection of the gateway's connect proxy (contract 1.1: accepted
 * from its cookies, no token) in @pubgate/client against a scripted
 * WebSocket, with fake timers: a token-less `refresh` before expiry, and a
 * reconnect (not a stop) after 4001; anonymous and token connections keep
 * their behaviour.
 */
import { describe, expect, it } from 'vitest';
import { type ClientEvents, type ConnectOptions, type PubgateClient } from '../../packages/client/src/index.js';
import { type FakeServer, type FakeSocket } from '../helpers/fake-websocket.js';
import { advance, fakeClient, flush, useFakeClients } from '../helpers/client-fakes.js';

interface Setup {
  readonly server: FakeServer;
  readonly client: PubgateClient;
  readonly events: Array<[keyof ClientEvents, unknown]>;
}

function setup(o: Partial<ConnectOptions> = {}): Setup {
  const { server, client } = fakeClient({ heartbeat: false, ...o }, true);
  const events: Setup['events'] = [];
  for (const type of ['connected', 'disconnected', 'closed', 'refreshed', 'error'] as const) client.on(type, (ev) => events.push([type, ev]));
  return { server, client, events };
}


async function online(s: Setup, welcome: Record<string, unknown>): Promise<FakeSocket> {
  await flush();
  const ws = s.server.last();
  ws.welcome(welcome);
  await flush();
  return ws;
}

useFakeClients();

describe('a connection accepted by the connect proxy (no token, welcome with expiresIn)', () => {
  it('offers no token, and sends a refresh without a token before expiry, again after each success', async () => {
    const s = setup();
    const ws = await online(s, { expiresIn: 200 });
    expect(ws.bearer).toBeUndefined();
    // A quarter of the life (at most a minute) before expiry: 150 s in.
    await advance(149_000);
    expect(ws.frames('refresh')).toEqual([]);
    await advance(1000);
    expect(ws.frames('refresh')).toEqual([{ type: 'refresh', id: 1 }]);
    ws.reply('refresh');
    await flush();
    expect(s.events.filter(([t]) => t === 'refreshed')).toEqual([['refreshed', { expiresIn: undefined }]]);
    // Planned again with the welcome's expiresIn.
    await advance(150_000);
    expect(ws.frames('refresh')).toEqual([
      { type: 'refresh', id: 1 },
      { type: 'refresh', id: 2 },
    ]);
  });

  it('a refused refresh is reported; the 4001 at expiry makes it reconnect (the cookies go again), not stop', async () => {
    const s = setup();
    const ws = await online(s, { expiresIn: 200 });
    await advance(150_000);
    ws.reply('refresh', { error: { code: 'unauthorized', message: 'the connect proxy refused the refresh' } });
    await flush();
    expect(s.events.filter(([t]) => t === 'error')).toEqual([['error', expect.objectContaining({ code: 'unauthorized' })]]);
    ws.end(4001, 'token expired');
    expect(s.client.state).toBe('disconnected');
    await advance(1000);
    expect(s.server.sockets).toHaveLength(2);
    expect(s.server.last().bearer).toBeUndefined();
    await online(s, { expiresIn: 400 });
    expect(s.client.state).toBe('connected');
    expect(s.events.filter(([t]) => t === 'closed')).toEqual([]);
  });

  it('an anonymous connection (expiresIn null) sends no refresh', async () => {
    const s = setup();
    const ws = await online(s, { expiresIn: null });
    await advance(3_600_000);
    expect(ws.frames('refresh')).toEqual([]);
  });

  it('a token connection without getToken still stops at 4001', async () => {
    const s = setup({ token: 'a.b.c' });
    const ws = await online(s, { expiresIn: 400 });
    await advance(400_000);
    expect(ws.frames('refresh')).toEqual([]);
    ws.end(4001, 'token expired');
    expect(s.client.state).toBe('closed');
  });
});
