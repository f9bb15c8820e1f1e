/**
 * End to end in headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core): the demo page loads the built @pubgate/client as ES
 * modules, connects through a load-balancer stand-in to a real gateway,
 * shows a message published over HTTP and one sent from its own form through
 * the demo backend, lists who is in the room (itself, a second page joining
 * and leaving), survives a restart of the gateway node (1001, reconnect,
 * resubscribe, the member list read again), and leaves a screenshot in
 * test-artifacts/.
 *
 * Skips only when chromium is not installed (needs(): the run's skip summary
 * says so, with the install command).
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClient } from '../helpers/client-build.js';
import { startDemo, type DemoServer } from '../helpers/demo-server.js';
import { ROOT, TEST_API_KEY, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { startForwarder, type Forwarder } from '../helpers/tcp-forwarder.js';
import { needs } from '../helpers/tools.js';


const ARTIFACTS = path.join(ROOT, 'test-artifacts');

let dist = '';
let lb: Forwarder | undefined;
let demo: DemoServer | undefined;
let browser: Browser | undefined;
const gateways: GatewayProcess[] = [];

async function gateway(id: string): Promise<GatewayProcess> {
  if (!demo) throw new Error('demo server did not start');
  const g = await startGateway({
    PUBGATE_NODE_ID: id,
    PUBGATE_ALLOWED_ORIGINS: demo.origin,
    PUBGATE_REQUIRE_ORIGIN: 'true',
    // What examples/demo/README.md tells to run the gateway with.
    PUBGATE_NAMESPACES: '[{"pattern":"demo:*","presence":true,"joinLeave":true}]',
  });
  gateways.push(g);
  return g;
}

async function publishHttp(gw: GatewayProcess, data: unknown): Promise<void> {
  const res = await fetch(`${gw.http}/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel: 'demo:chat', data }),
  });
  expect(res.status, await res.text()).toBe(200);
}

describe('demo page in headless Chromium', needs('chromium'), () => {
  beforeAll(async () => {
    dist = await buildClient();
    lb = await startForwarder();
    demo = await startDemo({ PUBGATE_WS_URL: lb.url(), PUBGATE_API_URL: lb.http, DEMO_CLIENT_DIST: dist });
    lb.setTarget((await gateway('browser-1')).port);
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
    await Promise.allSettled(gateways.splice(0).map((g) => g.stop('SIGKILL')));
    await lb?.close();
    if (dist) rmSync(dist, { recursive: true, force: true });
  });

  it('subscribes, shows HTTP and form publishes, lists who is in the room, survives a gateway node restart, and is screenshotted', async () => {
    if (!browser || !demo || !lb) throw new Error('set-up failed');
    const page: Page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(m.text());
    });
    const message = (text: string) => page.locator('#messages li', { hasText: text });
    // The first matching line: after a node restart the client may come back over SSE and then move to
    // WebSocket (the fallback of issue 17), logging a transition such as 'resubscribed' twice.
    const logLine = (text: string) => page.locator('#log li', { hasText: text }).first();
    const member = (p: Page, user: string) => p.locator(`#members li[data-user="${user}"]`);

    await page.goto(demo.url);
    await page.locator('#state[data-state="connected"]').waitFor({ timeout: 20_000 });
    await logLine('subscribed to demo:chat').waitFor({ timeout: 20_000 });
    expect(await page.locator('#node').textContent()).toContain('node browser-1');

    // Who is in the room: the page itself (from presence()), then a second page joining and leaving.
    const me = await page.evaluate(() => (globalThis as unknown as { pubgateDemo: { client: { welcome: { user: string } } } }).pubgateDemo.client.welcome.user);
    await member(page, me).waitFor({ timeout: 20_000 });
    expect(await member(page, me).textContent()).toBe(`${me}(you)`);
    const other = await browser.newPage();
    await other.addInitScript(() => sessionStorage.setItem('pubgate-demo-name', 'sam w.'));
    await other.goto(demo.url);
    await member(page, 'samw.').waitFor({ timeout: 20_000 }); // a join
    expect(await member(page, 'samw.').textContent()).toBe('sam w.'); // the token's info.name
    await logLine('sam w. joined').waitFor({ timeout: 20_000 });
    await member(other, me).waitFor({ timeout: 20_000 }); // the second page's presence() lists both
    expect(await other.locator('#members li').count()).toBe(2);
    expect(await page.locator('#member-count').textContent()).toBe('(2)');
    await other.close();
    await member(page, 'samw.').waitFor({ state: 'detached', timeout: 20_000 }); // a leave
    await logLine('sam w. left').waitFor({ timeout: 20_000 });
    expect(await page.locator('#members li').count()).toBe(1);

    // A message published over the gateway's HTTP API.
    const first = gateways[0]!;
    await publishHttp(first, { user: 'backend', text: 'hello from HTTP' });
    await message('hello from HTTP').waitFor({ timeout: 20_000 });

    // A message sent from the page: demo backend → POST /v1/publish → back to the page.
    await page.fill('#name', 'pat');
    await page.fill('#text', 'hello from the page');
    await page.click('#send button');
    await message('hello from the page').waitFor({ timeout: 20_000 });
    expect(await message('hello from the page').locator('.who').textContent()).toBe('pat');

    // Restart the node behind the same URL: drain (1001), no backend for a moment, a new node.
    lb.setTarget(undefined);
    expect(await first.stop('SIGTERM')).toBe(0);
    await logLine('disconnected (1001').waitFor({ timeout: 20_000 });
    await page.locator('#members[data-stale="true"]').waitFor({ timeout: 20_000 });
    const second = await gateway('browser-2');
    lb.setTarget(second.port);
    await logLine('resubscribed to demo:chat').waitFor({ timeout: 30_000 });
    await page.locator('#state[data-state="connected"]').waitFor({ timeout: 20_000 });
    expect(await page.locator('#node').textContent()).toContain('node browser-2');
    // The member list was read again on the new node.
    await page.locator('#members[data-stale="false"]').waitFor({ timeout: 20_000 });
    await member(page, me).waitFor({ timeout: 20_000 });

    await publishHttp(second, { user: 'backend', text: 'after the restart' });
    await message('after the restart').waitFor({ timeout: 20_000 });
    expect(await page.locator('#messages li').count()).toBe(3);
    expect(await page.evaluate(() => (globalThis as unknown as { pubgateDemo: { client: { state: string } } }).pubgateDemo.client.state)).toBe('connected');

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'demo-chat.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(existsSync(shot)).toBe(true);
    // Failed WebSocket attempts while no node was up are logged by Chromium itself; anything else is a page error.
    expect(pageErrors.filter((e) => !/WebSocket connection to .* failed/.test(e))).toEqual([]);
    await page.close();
  }, 120_000);
});
