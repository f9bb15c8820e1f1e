/**
 * Publish API bodies that do not arrive, and clients that go away, on raw TCP
 * sockets against real gateways (docs/protocol.md "Publish API", "Lifecycle"):
 * a stalled or too slow body gets 408 `request_timeout` within
 * PUBGATE_HTTP_BODY_TIMEOUT_MS and its connection is closed; a request whose
 * client goes away (mid-body, or after the whole body but before the answer)
 * leaves nothing in flight, so a drain after it finishes at once instead of
 * waiting out its deadline.
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_API_KEY, metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { logAfter, logMark, waitUntil } from '../helpers/handshake.js';
import { within } from '../helpers/recorder.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

/** A request on its own TCP connection: the test writes the bytes, the answer is read until the server closes. */
interface RawRequest {
  readonly socket: Socket;
  /** Everything the server sent, and when (ms after `rawRequest` was called) the connection closed. */
  readonly ended: Promise<{ text: string; atMs: number }>;
}

const BODY = JSON.stringify({ channel: 'raw', data: 'x'.repeat(200) });

/** Opens a connection and sends the head of a POST announcing `contentLength` body bytes, then `firstBytes` of the body. */
function rawRequest(port: number, firstBytes: string, contentLength = Buffer.byteLength(BODY), path = '/v1/publish'): RawRequest {
  const t0 = performance.now();
  const socket = tcpConnect(port, '127.0.0.1');
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (text += d));
  socket.on('error', () => undefined); // writes after the server closed; the close is what counts
  const ended = new Promise<{ text: string; atMs: number }>((resolve) => socket.once('close', () => resolve({ text, atMs: performance.now() - t0 })));
  socket.write(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TEST_API_KEY}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n${firstBytes}`,
  );
  return { socket, ended };
}

/** Status, headers (lower-case names) and JSON body of a raw HTTP/1.1 answer. */
function parseAnswer(text: string): { status: number; headers: Map<string, string>; body: unknown } {
  const split = text.indexOf('\r\n\r\n');
  expect(split, `a whole HTTP answer, got ${JSON.stringify(text.slice(0, 200))}`).toBeGreaterThan(0);
  const [statusLine, ...lines] = text.slice(0, split).split('\r\n');
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? '')?.[1]), headers, body: JSON.parse(text.slice(split + 4)) };
}

const inflight = (gw: GatewayProcess): Promise<number> => metric(gw.admin, 'pubgate_api_requests_in_flight');

describe('a body that does not arrive in time (PUBGATE_HTTP_BODY_TIMEOUT_MS=1000)', () => {
  const TIMEOUT_MS = 1000;
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ PUBGATE_HTTP_BODY_TIMEOUT_MS: String(TIMEOUT_MS) });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('answers a stalled body 408 request_timeout with the JSON error body, counts it, and closes the connection', async () => {
    const before = await metric(gw.admin, 'pubgate_api_requests_total', { endpoint: 'publish', status: '408' });
    const mark = logMark(gw);
    // Head and 10 bytes of the body, then nothing.
    const r = rawRequest(gw.port, BODY.slice(0, 10));
    // The server closes the connection itself (uWS's own idle cut would come after ~10 s, without an answer).
    const { text, atMs } = await within(r.ended, 15_000, 'the server to close the stalled request');
    const answer = parseAnswer(text);
    expect(answer.status).toBe(408);
    expect(answer.headers.get('content-type')).toBe('application/json');
    expect(answer.body).toEqual({ error: { code: 'request_timeout', message: expect.stringContaining(`${TIMEOUT_MS} ms`) } });
    // Not before the bound; well before uWS's own ~10 s cut (generous for a loaded machine).
    expect(atMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(atMs).toBeLessThan(TIMEOUT_MS + 5000);
    expect(await metric(gw.admin, 'pubgate_api_requests_total', { endpoint: 'publish', status: '408' })).toBe(before + 1);
    const line = await logAfter(gw, mark, (l) => l.msg === 'api request rejected');
    expect(line).toMatchObject({ level: 'warn', status: 408, endpoint: 'publish' });
    expect(await inflight(gw)).toBe(0);
  });

  it('bounds a body that keeps arriving too slowly: 408 at the same bound, while bytes are still coming', async () => {
    const r = rawRequest(gw.port, '');
    // One byte every 50 ms: the body (~230 bytes) would take ~12 s. Bounded: stops at the close or after 400 bytes.
    let sent = 0;
    const trickle = setInterval(() => {
      if (r.socket.destroyed || sent >= 400) return clearInterval(trickle);
      r.socket.write(BODY.charAt(sent++));
    }, 50);
    const { text, atMs } = await within(r.ended, 15_000, 'the server to close the slow request');
    const sentWhenClosed = sent;
    clearInterval(trickle);
    expect(parseAnswer(text).status).toBe(408);
    expect(parseAnswer(text).body).toMatchObject({ error: { code: 'request_timeout' } });
    expect(atMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
    expect(atMs).toBeLessThan(TIMEOUT_MS + 5000);
    // The body was still progressing when it was cut: the bound is on the whole body, not on silence.
    expect(sentWhenClosed).toBeGreaterThanOrEqual(5);
    expect(sentWhenClosed).toBeLessThan(Buffer.byteLength(BODY));
    expect(await inflight(gw)).toBe(0);
  });

  it('still answers a body that arrives whole within the bound, in pieces', async () => {
    const r = rawRequest(gw.port, BODY.slice(0, 20));
    await waitUntil(async () => (await inflight(gw)) === 1, 'the request to be in flight');
    r.socket.end(BODY.slice(20));
    const { text } = await within(r.ended, 15_000, 'the answer');
    expect(parseAnswer(text)).toMatchObject({ status: 200, body: { channel: 'raw' } });
  });
});

describe('aborted requests, then SIGTERM (PUBGATE_DRAIN_SECONDS=20: a drain deadline of 24 s)', () => {
  const DRAIN_SECONDS = 20;
  const DEADLINE_MS = DRAIN_SECONDS * 1000 + 4000;
  let redis: RedisServer;
  let gw: GatewayProcess;
  beforeAll(async () => {
    redis = await startRedis();
    // A body timeout far beyond the test: only the aborts can release these requests.
    gw = await startGateway({ PUBGATE_REDIS_URL: redis.url, PUBGATE_DRAIN_SECONDS: String(DRAIN_SECONDS), PUBGATE_HTTP_BODY_TIMEOUT_MS: '600000' });
    await waitUntil(async () => (await fetch(`${gw.admin}/readyz`)).status === 200, 'the gateway to be ready');
  });
  afterAll(async () => {
    await gw?.stop('SIGKILL');
    await redis?.stop();
  });

  it('releases every aborted request, so the drain after them exits at once', async () => {
    const aborted = (phase: string): Promise<number> => metric(gw.admin, 'pubgate_api_requests_aborted_total', { endpoint: 'publish', phase });

    // Three requests whose body never completes: head only, head and part of the body, part of the body.
    const headOnly = rawRequest(gw.port, '');
    const partReset = rawRequest(gw.port, BODY.slice(0, 40));
    const partFin = rawRequest(gw.port, BODY.slice(0, 40));
    await waitUntil(async () => (await inflight(gw)) === 3, 'three requests in flight, reading their bodies');
    headOnly.socket.destroy(); // the client closes before any body byte
    partReset.socket.resetAndDestroy(); // TCP RST mid-body
    partFin.socket.end(); // FIN mid-body: the rest never comes
    await waitUntil(async () => (await inflight(gw)) === 0, 'the aborted requests to leave the in-flight count');
    expect(await aborted('body')).toBe(3);

    // A whole request whose answer is held up: Redis holds PUBLISH while it is
    // paused, so the request sits in flight, past its body, until the client
    // leaves; then Redis goes on, the publish completes with no one to answer.
    await redis.cli('CLIENT', 'PAUSE', '1500', 'WRITE');
    const held = rawRequest(gw.port, BODY);
    await waitUntil(async () => (await inflight(gw)) === 1, 'the whole request to be in flight, waiting for Redis');
    held.socket.destroy();
    await within(held.ended, 5_000, 'the client side to close');
    await waitUntil(async () => (await aborted('response')) === 1, 'the request aborted after its body to be counted', 10_000);
    expect(await inflight(gw)).toBe(0);
    expect(await aborted('body')).toBe(3);

    // Nothing in flight, no connections: the drain has nothing to wait for.
    const mark = logMark(gw);
    const t0 = performance.now();
    gw.proc.kill('SIGTERM');
    const code = await within(gw.exited, DEADLINE_MS + 5_000, 'the process to exit after SIGTERM');
    const exitMs = performance.now() - t0;
    expect(code).toBe(0);
    // "At once": a generous margin under the 24 s a leaked request would hold it for.
    expect(exitMs, `exit ${exitMs.toFixed(0)} ms after SIGTERM`).toBeLessThan(DEADLINE_MS / 3);
    expect(await logAfter(gw, mark, (l) => l.msg === 'draining')).toMatchObject({ connections: 0, requests: 0 });
    expect(gw.lines.slice(mark).some((l) => l.msg.startsWith('drain deadline passed'))).toBe(false);
  });
});
