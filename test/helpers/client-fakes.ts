/**
 * Shared by the client SDK's scripted-socket tests (test/client/*-state.test.ts):
 * a client connected to a fake server, fake timers around each test, and
 * every client closed afterwards.
 */
import { afterEach, beforeEach, vi } from 'vitest';
import { connect, type ConnectOptions, type PubgateClient } from '../../packages/client/src/index.js';
import { fakeJwt, fakeServer, type FakeServer } from './fake-websocket.js';

const clients: PubgateClient[] = [];

/** Lets pending timers of 0 ms and promise callbacks run. */
export const flush = (): Promise<unknown> => vi.advanceTimersByTimeAsync(0);

/** Moves the fake clock on by `ms`, then flushes. */
export async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
}

/** A token for user u1, valid for an hour of the (fake) clock. */
export function userToken(): string {
  return fakeJwt({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + 3600 });
}

/**
 * A client on a new scripted server, closed after the test. Without `o.token`, it has userToken() unless `tokenless`.
 * WebSocket only unless `o.transports` says otherwise: these tests script the WebSocket, and the SSE fallback would
 * otherwise reach the real fetch after two failed attempts (test/client/sse-state.test.ts scripts both).
 */
export function fakeClient(o: Partial<ConnectOptions> = {}, tokenless = false): { server: FakeServer; client: PubgateClient } {
  const server = fakeServer();
  const client = connect({
    url: 'ws://gw.test/ws',
    ...(tokenless ? {} : { token: userToken() }),
    WebSocket: server.WebSocket,
    random: () => 0.5,
    transports: ['websocket'],
    ...o,
  });
  clients.push(client);
  return { server, client };
}

/** Fake timers for each test of the file, and every fakeClient() closed after it. */
export function useFakeClients(): void {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(async () => {
    const closing = Promise.all(clients.splice(0).map((c) => c.close()));
    await vi.advanceTimersByTimeAsync(1000);
    await closing;
    vi.useRealTimers();
  });
}
