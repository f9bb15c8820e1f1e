/**
 * pubgate-check's SSE step and its verdict on which transports work, against
 * a scripted HTTP server on 127.0.0.1 that plays the gateway behind a proxy
 * that strips Upgrade (the upgrade is answered 426 with pubgate's body) and
 * serves `/sse` as it is configured per test. The same check against a real
 * gateway behind a real nginx is in check.test.ts.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { DOCS, formatStep, formatVerdict, runCheck, type CheckReport } from '../../packages/client/src/check/check.js';
import { fakeJwt } from '../helpers/fake-websocket.js';

type SseMode = 'welcome' | 'pubgate-404' | 'silent' | 'html';

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

interface Seen {
  url: string;
  authorization: string | undefined;
  accept: string | undefined;
}

async function scripted(sse: SseMode): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/sse')) {
      seen.push({ url: req.url, authorization: req.headers.authorization, accept: req.headers.accept });
      if (sse === 'pubgate-404') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"not_found","message":"no such route"}}');
      } else if (sse === 'html') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>app</html>');
      } else {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        if (sse === 'welcome') res.write(': hello\n\nevent: welcome\ndata: {"node":"gw-s","conn":"c1","user":"checker","expiresIn":60,"ping":25}\n\n');
        req.on('close', () => res.end());
      }
      return;
    }
    // A proxy that drops Upgrade/Connection: the gateway sees a plain GET /ws.
    const body = '{"error":{"code":"bad_request","message":"WebSocket upgrade expected"}}';
    res.writeHead(426, { 'content-type': 'application/json', 'content-length': String(body.length) }).end(body);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`, seen };
}

const tok = (): string => fakeJwt({ sub: 'checker', exp: Math.floor(Date.now() / 1000) + 600, channels: ['feed:*', 'user:{sub}'] });

function sseStep(r: CheckReport): CheckReport['steps'][number] {
  const s = r.steps.find((x) => x.step === 'sse');
  if (!s) throw new Error(`no sse step: ${JSON.stringify(r.steps)}`);
  return s;
}

describe('pubgate-check: the SSE transport', () => {
  it('WebSocket fails (stripped Upgrade) but SSE works: says so, with the cause and the proxy fix, and reports which transports work', async () => {
    const { url, seen } = await scripted('welcome');
    const token = tok();
    const r = await runCheck({ url, token, idleSec: 0, timeoutMs: 5000 });
    expect(r.ok).toBe(false);
    expect(r.transports).toEqual({ websocket: false, sse: true });
    expect(r.steps.find((s) => s.step === 'upgrade')?.status).toBe('fail');
    const s = sseStep(r);
    expect(s.status).toBe('ok');
    expect(s.summary).toMatch(/\/sse\?channel=feed%3Apubgate-check: welcome from node gw-s, user checker$/);
    const text = formatStep(s);
    expect(text).toContain('WebSocket fails (at Upgrade) but SSE works');
    expect(text).toContain('strips the Upgrade/Connection headers');
    expect(text).toContain('proxy_set_header Upgrade $http_upgrade');
    expect(text).toContain(DOCS.upgrade);
    expect(formatVerdict(r)).toMatch(/^FAILED at Upgrade: .*\nTransports: WebSocket fails, SSE works\. Clients fall back to SSE \(receive only\)/);
    expect(seen).toEqual([{ url: '/sse?channel=feed%3Apubgate-check', authorization: `Bearer ${token}`, accept: 'text/event-stream' }]);
  });

  it('names the channel given with --channel', async () => {
    const { url, seen } = await scripted('welcome');
    await runCheck({ url, token: tok(), idleSec: 0, timeoutMs: 5000, channel: 'news' });
    expect(seen.map((s) => s.url)).toEqual(['/sse?channel=news']);
  });

  it('a gateway without SSE (pubgate 404) is not a failure: the step is skipped', async () => {
    const { url } = await scripted('pubgate-404');
    const r = await runCheck({ url, token: tok(), idleSec: 0, timeoutMs: 5000 });
    expect(sseStep(r)).toMatchObject({ status: 'skip', summary: expect.stringContaining('does not serve SSE') as unknown });
    expect(r.transports).toEqual({ websocket: false, sse: undefined });
  });

  it('a stream that opens but sends no welcome (a buffering proxy) fails when the WebSocket failed too', async () => {
    const { url } = await scripted('silent');
    const r = await runCheck({ url, token: tok(), idleSec: 0, timeoutMs: 1500 });
    const s = sseStep(r);
    expect(s.status).toBe('fail');
    expect(s.summary).toMatch(/no welcome on .* within 1500 ms/);
    expect(s.cause).toContain('buffers');
    expect(r.transports).toEqual({ websocket: false, sse: false });
    expect(formatVerdict(r)).toContain('Transports: WebSocket fails, SSE fails.');
  });

  it('a 200 that is not an event stream (an SPA fallback) fails, pointing at the route', async () => {
    const { url } = await scripted('html');
    const r = await runCheck({ url, token: tok(), idleSec: 0, timeoutMs: 5000 });
    expect(sseStep(r)).toMatchObject({ status: 'fail', doc: DOCS.path, summary: expect.stringContaining('text/html, not text/event-stream') as unknown });
  });

  it('without a channel to name (anonymous, no --channel), the step is skipped; --skip-sse leaves it out', async () => {
    const { url } = await scripted('welcome');
    const r = await runCheck({ url, idleSec: 0, timeoutMs: 5000 });
    expect(sseStep(r)).toMatchObject({ status: 'skip', summary: expect.stringContaining('--channel') as unknown });
    const r2 = await runCheck({ url, token: tok(), idleSec: 0, timeoutMs: 5000, sse: false });
    expect(r2.steps.some((s) => s.step === 'sse')).toBe(false);
    expect(r2.transports).toEqual({ websocket: false, sse: undefined });
  });
});
