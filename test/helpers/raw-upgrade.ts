/**
 * One WebSocket upgrade over a raw TCP socket, for tests of uWS's upgrade
 * paths themselves (the #1928 canary, the cork anchor): the server under test
 * sends `hello` from its open handler and echoes text messages. 'ok' once the
 * hello arrived and a message sent after it came back (the WebSocket works);
 * 'closed_after_open' when the server ended the connection after the 101;
 * 'refused' without a 101; 'timeout' after `timeoutMs`.
 */
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import type { HttpResponse, WebSocketBehavior } from 'uWebSockets.js';

export type UpgradeOutcome = 'ok' | 'closed_after_open' | 'refused' | 'timeout';

/** A masked client text frame (payload under 126 bytes). */
export function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
}

export function attemptUpgrade(port: number, path: string, connection: string, timeoutMs: number): Promise<UpgradeOutcome> {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const done = (o: UpgradeOutcome): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    socket.on('error', () => undefined); // the end of the connection is what counts
    // After the 101 the server has run `open` (which sends hello): any end now is after open.
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
      // Unmasked server text frames, each under 126 bytes here.
      while (buf.length >= 2 && buf.length >= 2 + (buf[1]! & 0x7f)) {
        const text = buf.subarray(2, 2 + (buf[1]! & 0x7f)).toString('utf8');
        buf = buf.subarray(2 + (buf[1]! & 0x7f));
        if (text === 'hello') socket.write(textFrame('echo me'));
        else if (text === 'echo me') return done('ok');
      }
    });
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: ${connection}\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
    );
  });
}

type Behavior = WebSocketBehavior<unknown>;

/**
 * An upgrade handler that completes the upgrade after leaving the uWS
 * callback, as a handler that verifies a token asynchronously would: headers
 * copied first, onAborted registered, then (setImmediate: a resolved promise
 * alone would not leave the callback, uWS runs the handler's microtasks before
 * it returns) `complete(res, upgrade)`, which must cork and call `upgrade`.
 */
export function asyncUpgrade(complete: (res: HttpResponse, upgrade: () => void) => void): NonNullable<Behavior['upgrade']> {
  return (res, req, context) => {
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    setImmediate(() => {
      if (!aborted) complete(res, () => res.upgrade({}, key, protocol, extensions, context));
    });
  };
}

/** The server attemptUpgrade expects: `hello` on open, every text message echoed. */
export function echoBehavior(upgrade: Behavior['upgrade'], hooks: Pick<Behavior, 'open' | 'close'> = {}): Behavior {
  return {
    idleTimeout: 0,
    maxPayloadLength: 1024,
    upgrade,
    open: (ws) => {
      hooks.open?.(ws);
      ws.send('hello', false);
    },
    message: (ws, message) => {
      ws.send(Buffer.from(message).toString('utf8'), false);
    },
    ...(hooks.close ? { close: hooks.close } : {}),
  };
}
