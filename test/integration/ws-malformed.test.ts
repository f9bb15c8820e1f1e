/**
 * Malformed WebSocket frames on raw sockets against a real gateway, and what
 * happens to them (docs/protocol.md, Frames): uWS cuts most protocol errors
 * itself, at once and without a close frame (1006); what it waits for instead
 * (a frame that never completes, an unmasked frame, a fragmented message never
 * finished) is closed by pubgate's heartbeat with 4002 two intervals after the
 * client's last complete frame (at most a quarter interval later).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { metric, startGateway, type GatewayProcess, type LogLine } from '../helpers/gateway.js';
import { within } from '../helpers/recorder.js';
import { OP, clientFrame, openRawWs, type RawWs } from '../helpers/raw-ws.js';
import { uwsPayloadLimit } from '../../src/transport/server.js';

const PING_INTERVAL_SEC = 2;
const INTERVAL_MS = PING_INTERVAL_SEC * 1000;
const MAX_PAYLOAD = 1024;
/** What uWS itself accepts before cutting the connection (4x ours, at least ours + 64 KiB). */
const UWS_LIMIT = uwsPayloadLimit(MAX_PAYLOAD);
const PING_FRAME = '{"type":"ping","id":1}';

let gw: GatewayProcess;
let jwt: string;

beforeAll(async () => {
  gw = await startGateway({ PUBGATE_PING_INTERVAL: String(PING_INTERVAL_SEC), PUBGATE_MAX_PAYLOAD_LENGTH: String(MAX_PAYLOAD) });
  jwt = await token({ sub: 'raw', channels: ['raw'] });
});
afterAll(async () => {
  await gw?.stop();
});

const open = (): Promise<RawWs> => openRawWs(gw.port, jwt);
const disconnects = (code: number): Promise<number> => metric(gw.admin, 'pubgate_disconnects_total', { code: String(code) });

/** The node's `connection closed` log line for this connection. */
function closedLine(ws: RawWs): Promise<LogLine> {
  const conn = ws.welcome.conn;
  return gw.waitForLog((l) => l.msg === 'connection closed' && l.conn === conn, 10_000);
}

describe('frames uWS cuts itself: at once, no close frame, counted as 1006', () => {
  const cases: [string, () => Buffer, RegExp][] = [
    ['RSV1 set without permessage-deflate', () => clientFrame(OP.TEXT, PING_FRAME, { rsv: 4 }), /^Received invalid WebSocket frame$/],
    ['RSV2 set', () => clientFrame(OP.TEXT, PING_FRAME, { rsv: 2 }), /^Received invalid WebSocket frame$/],
    ['RSV3 set', () => clientFrame(OP.TEXT, PING_FRAME, { rsv: 1 }), /^Received invalid WebSocket frame$/],
    ['reserved data opcode 3', () => clientFrame(3, 'x'), /^Received invalid WebSocket frame$/],
    ['reserved control opcode 11', () => clientFrame(11, 'x'), /^Received invalid WebSocket frame$/],
    ['a fragmented ping (FIN clear on a control frame)', () => clientFrame(OP.PING, 'x', { fin: false }), /^Received invalid WebSocket frame$/],
    ['a ping with 126 bytes of payload', () => clientFrame(OP.PING, 'x'.repeat(126)), /^Received invalid WebSocket frame$/],
    ['a continuation frame without a first fragment', () => clientFrame(OP.CONTINUATION, 'x'), /^Received invalid WebSocket frame$/],
    [
      'a new text frame inside an unfinished fragmented message',
      () => Buffer.concat([clientFrame(OP.TEXT, '{"type"', { fin: false }), clientFrame(OP.TEXT, PING_FRAME)]),
      /^Received invalid WebSocket frame$/,
    ],
    ['a header announcing one byte over uWS\'s limit (no payload follows)', () => clientFrame(OP.TEXT, '', { declaredLength: UWS_LIMIT + 1 }), /^Received too big message$/],
    ['a header announcing 2^62 bytes', () => clientFrame(OP.TEXT, '', { declaredLength: 2 ** 62 }), /^Received too big message$/],
    // uWS reads 4 masking-key bytes after an unmasked header anyway, so a
    // second unmasked frame is read from the wrong offset: here its bytes make
    // invalid UTF-8 (other bytes may make an invalid frame, or a frame pubgate
    // refuses, or one that waits for the heartbeat, below).
    [
      'two unmasked text frames in a row',
      () => Buffer.concat([clientFrame(OP.TEXT, PING_FRAME, { mask: false }), clientFrame(OP.TEXT, PING_FRAME, { mask: false })]),
      /^Received invalid (UTF-8|WebSocket frame)$/,
    ],
  ];

  it.each(cases)('%s', async (_name, bytes, reason) => {
    const before = await disconnects(1006);
    const ws = await open();
    const t0 = performance.now();
    ws.write(bytes());
    const endedAt = await within(ws.ended, 10_000, 'the connection to end');
    // Well before the heartbeat could have acted (two intervals): this is uWS.
    expect(endedAt - t0).toBeLessThan(INTERVAL_MS);
    expect(ws.closeFrame()).toBeUndefined();
    expect(ws.frames.map((f) => f.opcode)).toEqual([OP.TEXT]); // welcome only: no reply, no close frame
    const line = await closedLine(ws);
    expect(line.code).toBe(1006);
    expect(String(line.reason)).toMatch(reason);
    expect(await disconnects(1006)).toBe(before + 1);
  });
});

describe(`frames uWS waits for: closed by the heartbeat with 4002 (ping interval ${PING_INTERVAL_SEC} s)`, () => {
  const cases: [string, () => Buffer][] = [
    // uWS does not check the MASK bit: it takes the first 4 payload bytes as
    // the masking key and waits for 4 bytes more than the frame holds.
    ['an unmasked text frame', () => clientFrame(OP.TEXT, PING_FRAME, { mask: false })],
    ['a header announcing more than maxPayloadLength but less than uWS\'s limit, payload never sent', () => clientFrame(OP.TEXT, 'abc', { declaredLength: 4 * MAX_PAYLOAD - 1 })],
    ['a 100-byte frame of which 3 bytes arrive', () => clientFrame(OP.TEXT, 'abc', { declaredLength: 100 })],
    ['half a frame header', () => Buffer.from([0x81])],
    ['the first fragment of a message that is never finished', () => clientFrame(OP.TEXT, '{"type":"ping"', { fin: false })],
  ];

  it('closes each with 4002 between 2 and 2.25 intervals after its last complete frame, plus slack for a loaded machine', async () => {
    const before = await disconnects(4002);
    const results = await Promise.all(cases.map(async ([name, bytes]) => {
      const ws = await open();
      // Answer the first ping with a pong, and send the bad bytes right behind
      // it: the pong is the client's last complete frame, its silence starts here.
      await within(ws.nextPing(), 2 * INTERVAL_MS, `${name}: the first ping`);
      const t0 = performance.now();
      ws.write(Buffer.concat([clientFrame(OP.PONG), bytes()]));
      const endedAt = await within(ws.ended, 6 * INTERVAL_MS, `${name}: the connection to end`);
      return { name, ws, afterMs: endedAt - t0 };
    }));
    for (const { name, ws, afterMs } of results) {
      expect(ws.closeFrame(), name).toEqual({ code: 4002, reason: 'no pong within two ping intervals' });
      const line = await closedLine(ws);
      expect(line.code, name).toBe(4002);
      // Never before two intervals of silence; at most a quarter interval
      // after them by design, plus 1 s of slack for a loaded machine (a check
      // that ran once per interval would take up to three intervals).
      expect(afterMs, `${name}: closed after ${afterMs.toFixed(0)} ms`).toBeGreaterThanOrEqual(2 * INTERVAL_MS - 50);
      expect(afterMs, `${name}: closed after ${afterMs.toFixed(0)} ms`).toBeLessThan(2.25 * INTERVAL_MS + 1000);
    }
    expect(await disconnects(4002)).toBe(before + cases.length);
  });
});

describe('what uWS does with the MASK bit', () => {
  it('reads 4 masking-key bytes after an unmasked header anyway: an unmasked frame followed by 4 more bytes is taken as a frame', async () => {
    // Header: FIN + text, MASK clear, length 22. Then 4 zero bytes, which uWS
    // takes as the masking key (XOR with zero changes nothing), then the 22
    // payload bytes. An RFC 6455 server would close the connection (§5.1).
    const ws = await open();
    const answer = ws.nextFrame();
    ws.write(Buffer.concat([clientFrame(OP.TEXT, Buffer.alloc(0), { mask: false, declaredLength: PING_FRAME.length }), Buffer.alloc(4), Buffer.from(PING_FRAME)]));
    const f = await within(answer, 5_000, 'an answer to the unmasked frame');
    expect(f.opcode).toBe(OP.TEXT);
    expect(JSON.parse(f.payload.toString('utf8'))).toEqual({ type: 'reply', id: 1 });
    ws.socket.destroy();
  });
});
