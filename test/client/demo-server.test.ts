/**
 * The demo server (examples/demo/server.mjs) without a browser: it serves the
 * page and the built client as ES modules, mints tokens the gateway accepts
 * (with the info claim that presence shows), and publishes through the
 * gateway's API. The browser test drives the page.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientProbe } from '../helpers/client-probe.js';
import { buildClient } from '../helpers/client-build.js';
import { startDemo, type DemoServer } from '../helpers/demo-server.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { PresenceLog } from './presence-log.js';

/** What examples/demo/README.md tells to run the gateway with. */
const DEMO_NAMESPACES = '[{"pattern":"demo:*","presence":true,"joinLeave":true}]';

let dist = '';
let demo: DemoServer | undefined;
let gw: GatewayProcess | undefined;
const probes: ClientProbe[] = [];

beforeAll(async () => {
  dist = await buildClient();
  gw = await startGateway({ PUBGATE_NODE_ID: 'demo-gw', PUBGATE_NAMESPACES: DEMO_NAMESPACES });
  demo = await startDemo({ PUBGATE_WS_URL: gw.url, PUBGATE_API_URL: gw.http, DEMO_CLIENT_DIST: dist, DEMO_TOKEN_TTL: '120' });
}, 120_000);

afterAll(async () => {
  await Promise.allSettled(probes.map((p) => p.close()));
  await demo?.stop();
  await gw?.stop();
  if (dist) rmSync(dist, { recursive: true, force: true });
});

function d(): DemoServer {
  if (!demo) throw new Error('demo server did not start');
  return demo;
}

describe('demo server', () => {
  it('serves the page with an import map for @pubgate/client, and the client as JavaScript modules', async () => {
    const page = await fetch(d().url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('"@pubgate/client": "/client/index.js"');
    expect(html).toContain('<script type="module" src="/app.js"></script>');
    for (const path of ['/app.js', '/client/index.js', '/client/client.js']) {
      const res = await fetch(new URL(path, d().url));
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toMatch(/^text\/javascript/);
      await res.text();
    }
    expect(await (await fetch(new URL('/api/config', d().url))).json()).toEqual({ wsUrl: [gw!.url], channel: 'demo:chat', namespaces: DEMO_NAMESPACES });
  });

  it('never serves files outside the client build', async () => {
    for (const path of ['/client/../../../etc/passwd', '/client/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/client/..%2F..%2F..%2F..%2Fetc%2Fpasswd', '/client/%2Fetc%2Fpasswd', '/nope']) {
      const res = await fetch(new URL(path, d().url));
      expect(res.status, path).toBe(404);
      await res.text();
    }
  });

  it('mints tokens the gateway accepts (HS256 with the shared secret), for demo:* channels', async () => {
    const res = await fetch(new URL('/api/token?user=alice<script>', d().url));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; user: string; expiresIn: number };
    expect(body.user).toBe('alicescript');
    expect(body.expiresIn).toBe(120);
    const p = new ClientProbe({ url: gw!.url, token: body.token });
    probes.push(p);
    const welcome = await p.client.whenConnected(20_000);
    expect(welcome).toMatchObject({ user: 'alicescript' });
    expect(welcome.expiresIn).toBeGreaterThan(100);
    await expect(p.subscribe('demo:chat').ready).resolves.toEqual({});
    await expect(p.subscribe('other').ready).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('puts the name as typed in the info claim, and presence and join/leave show it', async () => {
    const tokenFor = async (name: string): Promise<{ token: string; user: string; info: unknown }> =>
      (await (await fetch(new URL(`/api/token?user=${encodeURIComponent(name)}`, d().url))).json()) as { token: string; user: string; info: unknown };
    const ann = await tokenFor('Ann Lee\u0007');
    expect(ann).toMatchObject({ user: 'AnnLee', info: { name: 'Ann Lee' } });
    const bob = await tokenFor('bob');
    expect(bob.info).toEqual({ name: 'bob' });

    const a = new ClientProbe({ url: gw!.url, token: ann.token });
    probes.push(a);
    const room = a.subscribe('demo:presence');
    const log = new PresenceLog(room);
    await room.ready;
    await expect(room.presence()).resolves.toEqual({ members: [{ user: 'AnnLee', info: { name: 'Ann Lee' }, conns: 1 }], users: 1, connections: 1, truncated: false });

    const b = new ClientProbe({ url: gw!.url, token: bob.token });
    probes.push(b);
    await b.subscribe('demo:presence').ready;
    await log.count(1);
    expect(log.entries).toEqual([{ type: 'join', ev: { channel: 'demo:presence', user: 'bob', info: { name: 'bob' } } }]);
    const r = await room.presence();
    expect([...r.members].sort((x, y) => x.user.localeCompare(y.user))).toEqual([
      { user: 'AnnLee', info: { name: 'Ann Lee' }, conns: 1 },
      { user: 'bob', info: { name: 'bob' }, conns: 1 },
    ]);
    await expect(room.presenceStats()).resolves.toEqual({ users: 2, connections: 2 });

    await b.close();
    await log.count(2);
    expect(log.entries[1]).toEqual({ type: 'leave', ev: { channel: 'demo:presence', user: 'bob' } });
    await expect(room.presenceStats()).resolves.toEqual({ users: 1, connections: 1 });
  });

  it('publishes the page messages through the gateway API, to demo:* channels only', async () => {
    const p = new ClientProbe({ url: gw!.url, getToken: async () => ((await (await fetch(new URL('/api/token', d().url))).json()) as { token: string }).token });
    probes.push(p);
    await p.subscribe('demo:chat').ready;
    const post = (body: unknown): Promise<Response> =>
      fetch(new URL('/api/publish', d().url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const ok = await post({ user: 'bob', text: '  hello  ' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ channel: 'demo:chat' });
    await p.untilCount('demo:chat', 1);
    expect(p.got('demo:chat')[0]).toMatchObject({ user: 'bob', text: 'hello' });
    const refused = await post({ channel: 'news', text: 'x' });
    expect(refused.status).toBe(403);
    await refused.text();
    const empty = await post({ text: '' });
    expect(empty.status).toBe(400);
    await empty.text();
  });
});
