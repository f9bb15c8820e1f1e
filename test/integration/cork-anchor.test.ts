/**
 * The cork anchor (src/transport/cork-anchor.ts): asynchronous WebSocket
 * upgrades corked on another socket, so that uWS's post-cork check for uWS
 * issue #1928 never runs on the upgraded socket. On a real uWS app on
 * loopback: the anchor is taken, upgrades completed after an await through
 * it work (101, the open handler's frame, an echo), a second anchor request is
 * refused, and a lost anchor is made again while upgrades meanwhile fall back
 * to corking on themselves.
 */
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { createCorkAnchor, loopbackFor, type CorkAnchor } from '../../src/transport/cork-anchor.js';
import { App, us_listen_socket_close, us_socket_local_port, type HttpResponse, type us_listen_socket } from '../../src/transport/uws.js';

let listenSocket: us_listen_socket | undefined;
let port = 0;
let anchor: CorkAnchor;
/** How each asynchronous upgrade was corked: on the anchor, or on itself. */
const corkedOn: string[] = [];

beforeAll(async () => {
  const app = App();
  anchor = createCorkAnchor(app, silentLogger());
  app.ws('/async', {
    idleTimeout: 0,
    maxPayloadLength: 1024,
    upgrade: (res, req, context) => {
      const key = req.getHeader('sec-websocket-key');
      const protocol = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      // Leave the uWS callback, as the connect proxy's answer does.
      setImmediate(() => {
        if (aborted) return;
        corkedOn.push(anchor.held() ? 'anchor' : 'self');
        anchor.cork(res as HttpResponse, () => res.upgrade({}, key, protocol, extensions, context));
      });
    },
    open: (ws) => {
      ws.send('hello', false);
    },
    message: (ws, message) => {
      ws.send(Buffer.from(message).toString('utf8'), false);
    },
  });
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

function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
}

/** One asynchronous upgrade: 'ok' once the open handler's hello arrived and an echo came back. */
function attempt(connection: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const done = (o: string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done('timeout'), 5000);
    socket.on('error', () => undefined);
    socket.on('close', () => done(upgraded ? 'closed_after_open' : 'refused'));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!buf.subarray(0, end).toString('latin1').startsWith('HTTP/1.1 101 ')) return done('refused');
        upgraded = true;
        buf = buf.subarray(end + 4);
      }
      while (buf.length >= 2 && buf.length >= 2 + (buf[1]! & 0x7f)) {
        const text = buf.subarray(2, 2 + (buf[1]! & 0x7f)).toString('utf8');
        buf = buf.subarray(2 + (buf[1]! & 0x7f));
        if (text === 'hello') socket.write(textFrame('echo me'));
        else if (text === 'echo me') return done('ok');
      }
    });
    socket.write(
      `GET /async HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: ${connection}\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
    );
  });
}

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
