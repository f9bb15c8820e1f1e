/**
 * The cork anchor (src/transport/cork-anchor.ts): asynchronous WebSocket
 * upgrades corked on another socket, so that uWS's post-cork check for uWS
 * issue #1928 never runs on the upgraded socket. On a real uWS app on
 * loopback: the anchor is taken, upgrades completed after an await through
 * it work (101, the open handler's frame, an echo), a second anchor request is
 * refused, and a lost anchor is made again while upgrades meanwhile fall back
 * to corking on themselves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asyncUpgrade, attemptUpgrade, echoBehavior } from '../helpers/raw-upgrade.js';
import { silentLogger } from '../../src/observability/logger.js';
import { createCorkAnchor, loopbackFor, type CorkAnchor } from '../../src/transport/cork-anchor.js';
import { App, us_listen_socket_close, us_socket_local_port, type us_listen_socket } from '../../src/transport/uws.js';

let listenSocket: us_listen_socket | undefined;
let port = 0;
let anchor: CorkAnchor;
/** How each asynchronous upgrade was corked: on the anchor, or on itself. */
const corkedOn: string[] = [];

beforeAll(async () => {
  const app = App();
  anchor = createCorkAnchor(app, silentLogger());
  // Completed after leaving the uWS callback, as the connect proxy's answer is.
  app.ws('/async', echoBehavior(asyncUpgrade((res, upgrade) => {
    corkedOn.push(anchor.held() ? 'anchor' : 'self');
    anchor.cork(res, upgrade);
  })));
  app.any('/*', (res) => {
    res.writeStatus('404 Not Found').end('');
  });
  await new Promise<void>((resolve, reject) => {
    app.listen('127.0.0.1', 0, (ls) => {
      if (!ls) return reject(new Error('cannot listen on 127.0.0.1'));
      listenSocket = ls;
      port = us_socket_local_port(ls);
      resolve();
    });
  });
});

afterAll(() => {
  anchor?.stop();
  if (listenSocket) us_listen_socket_close(listenSocket);
});

/** Polls a condition until it holds (the anchor's state has no event to wait on), failing after `ms`. */
async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const attempt = (connection: string): Promise<string> => attemptUpgrade(port, '/async', connection, 5000);

describe('cork anchor', () => {
  it('connects to a listener on any address through loopback', () => {
    expect(loopbackFor('0.0.0.0')).toBe('127.0.0.1');
    expect(loopbackFor('::')).toBe('::1');
    expect(loopbackFor('127.0.0.5')).toBe('127.0.0.5');
  });

  it('holds an anchor once started, and completes asynchronous upgrades corked on it', async () => {
    anchor.start('127.0.0.1', port);
    await waitUntil(() => anchor.held(), 5000, 'the anchor is held');
    corkedOn.length = 0;
    const outcomes: string[] = [];
    for (let i = 0; i < 40; i++) outcomes.push(await attempt(i % 2 === 0 ? 'Upgrade' : 'keep-alive, Upgrade'));
    expect(outcomes).toEqual(Array.from({ length: 40 }, () => 'ok'));
    expect(corkedOn).toEqual(Array.from({ length: 40 }, () => 'anchor'));
    expect(anchor.held()).toBe(true);
  });

  it('makes the anchor again after it was lost; upgrades meanwhile are corked on themselves and still work', async () => {
    anchor.stop(); // drops the anchor's connection: uWS aborts the held request
    await waitUntil(() => !anchor.held(), 5000, 'the anchor is released');
    corkedOn.length = 0;
    expect(await attempt('Upgrade')).toBe('ok');
    expect(corkedOn).toEqual(['self']);
    anchor.start('127.0.0.1', port);
    await waitUntil(() => anchor.held(), 5000, 'the anchor is held again');
    expect(await attempt('Upgrade')).toBe('ok');
    expect(corkedOn).toEqual(['self', 'anchor']);
  });
});
