/**
 * The admin console (src/admin/console/, served on the admin port under
 * /admin/) end to end in headless Chromium (Debian's /usr/bin/chromium driven
 * by playwright-core, as test/e2e/sse-browser.test.ts does), on TWO real
 * gateway nodes sharing a real redis-server, both with PUBGATE_ADMIN_TOKEN:
 *
 * 1. A wrong token: the login form says the token was refused, the console
 *    stays hidden, nothing is kept in sessionStorage; a kept token that the
 *    API refuses (401 on the first refresh) brings the login form back.
 * 2. The right token (typed, submitted with Enter): the nodes table shows both
 *    nodes with the connection counts of real WebSocket clients, the totals
 *    and the busiest channel; the inspector shows subscribers per node and
 *    presence; a publish from the console reaches real subscribers on both
 *    nodes (and shows its answer; an invalid channel shows the standard error
 *    body); a subscribe from the console makes a user's connection receive a
 *    channel; the disconnect dialog opens on Cancel and Escape sends nothing;
 *    a confirmed disconnect closes the user's connections on both nodes with
 *    4501; a hidden tab pauses the refresh and a visible one resumes it; sign
 *    out forgets the token. Every form control has a label. The token never appears in a
 *    URL, every API request carries it as a bearer token, and the page has no
 *    CSP violation or script error.
 *
 * Everything waits on page or socket state with deadlines; nothing sleeps.
 * Artifacts: test-artifacts/admin-console.png (wide), admin-console-narrow.png
 * (a phone-sized viewport), admin-console-login.png (a refused token) and
 * admin-console-last.png (the page when the test ended, passed or not).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/gateway.js';
import { NodeGroup, Subscriber, closeAll, publishOne } from '../helpers/multinode.js';
import { pollUntil } from '../helpers/redis.js';
import { needs } from '../helpers/tools.js';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef';
const WRONG_TOKEN = 'e2e-wrong-token-0123456789abcdef';
const NODE_A = 'console-a';
const NODE_B = 'console-b';
const ROOM = 'room:lobby';
const EXTRA = 'room:extra';
const DEADLINE_MS = 30_000;

/** What the page-side functions use (the test is compiled without the DOM library). */
interface PageGlobals {
  document: { querySelector(selector: string): { textContent: string | null } | null };
}

describe('admin console in headless Chromium on two nodes', needs('chromium'), () => {
  const group = new NodeGroup();
  const subs: Subscriber[] = [];
  let browser: Browser | undefined;

  beforeAll(async () => {
    await group.startOnRedis([NODE_A, NODE_B], {
      PUBGATE_ADMIN_TOKEN: ADMIN_TOKEN,
      PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'room:*', presence: true, history: { size: 100 } }]),
    });
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await closeAll(subs);
    await group.stop();
  });

  /** A page on node A's console, recording what must never happen (script errors, CSP violations) and every request. */
  async function openConsole(width = 1200, height = 900): Promise<{ page: Page; problems: string[]; requests: { url: string; auth: string | undefined }[]; polls: { inFlight: number; max: number } }> {
    const context = await browser!.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    const problems: string[] = [];
    const requests: { url: string; auth: string | undefined }[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (/Content[- ]Security[- ]Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
    // The most overview requests in flight at once (the console never overlaps its rounds).
    const polls = { inFlight: 0, max: 0 };
    page.on('request', (r) => {
      if (!isOverviewUrl(r.url())) return;
      polls.inFlight++;
      polls.max = Math.max(polls.max, polls.inFlight);
    });
    const done = (r: { url(): string }): void => {
      if (isOverviewUrl(r.url())) polls.inFlight--;
    };
    page.on('requestfinished', done);
    page.on('requestfailed', done);
    const res = await page.goto(`${group.node(0).admin}/admin/`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("default-src 'self'");
    // The script enables the form once it runs.
    await page.waitForSelector('#token:enabled', { timeout: DEADLINE_MS });
    // Every form control has a label (hidden ones included: the console is in the page from the start).
    const unlabelled = await page.evaluate(() => {
      const doc = (globalThis as unknown as { document: { querySelectorAll(s: string): ArrayLike<{ id: string; labels: ArrayLike<unknown> | null }> } }).document;
      return Array.from(doc.querySelectorAll('input, select, textarea'))
        .filter((e) => (e.labels?.length ?? 0) === 0)
        .map((e) => e.id);
    });
    expect(unlabelled).toEqual([]);
    return { page, problems, requests, polls };
  }

  /** Waits until the element's text satisfies `pred` (checked in the page); fails with the text it last had. */
  async function untilText(page: Page, selector: string, what: string, pred: (text: string) => boolean): Promise<string> {
    const deadline = Date.now() + DEADLINE_MS;
    for (;;) {
      const handle = await page.waitForSelector(selector, { state: 'attached', timeout: Math.max(1, deadline - Date.now()) });
      const last = (await handle.textContent()) ?? '';
      if (pred(last)) return last;
      if (Date.now() > deadline) throw new Error(`${what}: ${selector} still reads ${JSON.stringify(last)} after ${DEADLINE_MS} ms`);
      // The next change of the page (the console re-renders at most every 2 s) or a short guard.
      await page
        .waitForFunction(([sel, before]) => (globalThis as unknown as PageGlobals).document.querySelector(sel)?.textContent !== before, [selector, last] as const, { timeout: Math.max(1, Math.min(5_000, deadline - Date.now())) })
        .catch(() => undefined);
    }
  }

  const isOverviewUrl = (url: string): boolean => new URL(url).pathname === '/admin/api/overview';

  const nodeCell = (id: string, col: string): string => `#nodes tr[data-node="${id}"] td[data-col="${col}"]`;

  async function signIn(page: Page, value: string): Promise<void> {
    await page.focus('#token');
    await page.keyboard.type(value);
    await page.keyboard.press('Enter');
  }

  /** Makes the page see itself hidden or visible (document.hidden, visibilityState and the visibilitychange event). */
  async function setHidden(page: Page, hidden: boolean): Promise<void> {
    await page.evaluate((h) => {
      const doc = (globalThis as unknown as { document: object & { dispatchEvent(e: unknown): boolean } }).document;
      Object.defineProperty(doc, 'hidden', { configurable: true, get: () => h });
      Object.defineProperty(doc, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
      doc.dispatchEvent(new (globalThis as unknown as { Event: new (type: string) => unknown }).Event('visibilitychange'));
    }, hidden);
  }

  async function sessionToken(page: Page): Promise<string | null> {
    return page.evaluate(() => (globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }).sessionStorage.getItem('pubgate-admin-token'));
  }

  async function shoot(page: Page, name: string): Promise<void> {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true }).catch(() => undefined);
  }

  it('a wrong token shows the login error and keeps nothing', async () => {
    const { page, problems, requests } = await openConsole();
    try {
      await signIn(page, WRONG_TOKEN);
      const message = await untilText(page, '#login-error', 'the login error', (t) => t !== '');
      expect(message).toMatch(/refused/i);
      expect(await page.isVisible('#app')).toBe(false);
      expect(await page.isVisible('#login')).toBe(true);
      expect(await sessionToken(page)).toBeNull();
      expect(requests.some((r) => r.url.includes('/admin/api/') && r.auth === `Bearer ${WRONG_TOKEN}`)).toBe(true);
      expect(requests.filter((r) => r.url.includes(WRONG_TOKEN))).toEqual([]);

      // A kept token that is no longer valid (e.g. rotated): the first refresh is refused, back to the login form with the message.
      await page.evaluate((t) => (globalThis as unknown as { sessionStorage: { setItem(k: string, v: string): void } }).sessionStorage.setItem('pubgate-admin-token', t), WRONG_TOKEN);
      await page.reload();
      await page.waitForSelector('#token:enabled', { timeout: DEADLINE_MS });
      expect(await untilText(page, '#login-error', 'the login error after a refused refresh', (t) => t !== '')).toMatch(/refused/i);
      expect(await page.isVisible('#login')).toBe(true);
      expect(await page.isVisible('#app')).toBe(false);
      expect(await sessionToken(page)).toBeNull();
      expect(problems).toEqual([]);
    } finally {
      await shoot(page, 'admin-console-login');
      await page.context().close();
    }
  }, 60_000);

  it('shows both nodes and their connections, publishes to real subscribers, subscribes a user, disconnects a user with 4501 on both nodes, signs out', async () => {
    const a = group.node(0);
    const b = group.node(1);
    const claims = { channels: ['room:*'] };
    // Node A: reader + victim (2); node B: victim + two bystander connections (3). All on ROOM.
    const reader = await Subscriber.open(a.url, { ...claims, user: 'reader' });
    const victimA = await Subscriber.open(a.url, { ...claims, user: 'victim' });
    const victimB = await Subscriber.open(b.url, { ...claims, user: 'victim' });
    const bystanders = [await Subscriber.open(b.url, { ...claims, user: 'bystander' }), await Subscriber.open(b.url, { ...claims, user: 'bystander' })];
    subs.push(reader, victimA, victimB, ...bystanders);
    for (const s of subs) await s.subscribe(ROOM);

    const { page, problems, requests, polls } = await openConsole();
    try {
      await signIn(page, ADMIN_TOKEN);
      await page.waitForSelector('#app', { state: 'visible', timeout: DEADLINE_MS });
      expect(await sessionToken(page)).toBe(ADMIN_TOKEN);
      expect(await page.inputValue('#token')).toBe('');

      // Nodes, connection counts and totals (the registry's node info is refreshed with each lease renewal).
      await untilText(page, nodeCell(NODE_A, 'total'), 'node A connections', (t) => t === '2');
      await untilText(page, nodeCell(NODE_B, 'total'), 'node B connections', (t) => t === '3');
      expect(await page.textContent(nodeCell(NODE_A, 'websocket'))).toBe('2');
      expect(await page.textContent(nodeCell(NODE_B, 'websocket'))).toBe('3');
      expect(await page.textContent(nodeCell(NODE_A, 'sse'))).toBe('0');
      expect(await page.textContent(nodeCell(NODE_A, 'broker'))).toBe('ready');
      expect(await page.locator('#nodes tbody tr').count()).toBe(2);
      await untilText(page, '#totals', 'the totals', (t) => t.startsWith('2 nodes · 5 connections'));
      expect(await page.textContent(`#nodes tr[data-node="${NODE_A}"] th`)).toContain('this node');

      // Busiest channels: ROOM with its 5 subscribers; clicking it opens the inspector.
      const button = `button[data-channel="${ROOM}"]`;
      const busiest = `#channels ${button}`;
      await page.waitForSelector(busiest, { timeout: DEADLINE_MS });
      await untilText(page, `#channels li:has(${button}) .count`, 'the busiest channel count', (t) => t === '5 subscribers');
      await page.click(busiest);
      await untilText(page, '#inspect-summary', 'the inspector', (t) => t.startsWith(`${ROOM}: 5 subscribers`));
      expect((await page.locator('#inspect-nodes li').allTextContents()).sort()).toEqual([`${NODE_A}: 2`, `${NODE_B}: 3`]);
      expect(await page.textContent('#inspect-presence')).toBe('3 users, 5 connections');

      // Publish from the console: every subscriber on both nodes receives it; the answer is shown.
      const data = { from: 'console', n: 1 };
      await page.fill('#publish-channel', ROOM);
      await page.fill('#publish-data', JSON.stringify(data));
      await page.click('#publish-form button[type=submit]');
      const answer = await untilText(page, '#publish-out', 'the publish answer', (t) => t.startsWith('Published') || t.startsWith('Error'));
      expect(answer.startsWith('Published: '), answer).toBe(true);
      expect(JSON.parse(answer.slice('Published: '.length))).toMatchObject({ channel: ROOM, offset: 1 }); // history channel: its offset
      await Promise.all(subs.map((s) => s.untilCount(ROOM, 1)));
      for (const s of subs) expect(s.got(ROOM)).toEqual([data]);

      // The inspector shows it in the history.
      await page.click('#inspect-form button[type=submit]');
      await untilText(page, '#inspect-history', 'the history head', (t) => t.endsWith('head offset 1'));
      expect(await page.locator('#inspect-msgs li code').allTextContents()).toEqual([JSON.stringify(data)]);

      // An invalid channel: the standard error body is shown.
      await page.fill('#publish-channel', 'not a channel!');
      await page.click('#publish-form button[type=submit]');
      expect(await untilText(page, '#publish-out', 'the publish error', (t) => t.startsWith('Error'))).toMatch(/^Error: bad_request: .+ \(HTTP 400\)$/);

      // Subscribe a user from the console: the reader's connection receives EXTRA.
      await page.fill('#user', 'reader');
      await page.fill('#user-channel', EXTRA);
      await page.click('#user-subscribe');
      expect(await untilText(page, '#user-out', 'the subscribe answer', (t) => t.startsWith('Done') || t.startsWith('Error'))).toBe(
        `Done (subscribe): ${JSON.stringify({ user: 'reader', channel: EXTRA })}`,
      );
      expect((await publishOne(b, EXTRA, { extra: true })).status).toBe(200);
      await reader.untilCount(EXTRA, 1);
      expect(reader.got(EXTRA)).toEqual([{ extra: true }]);

      // Disconnect, after the confirmation: the victim's connections close with 4501 on both nodes.
      // With the keyboard first: Enter opens the dialog on Cancel, Escape closes it, nothing is sent.
      await page.fill('#user', 'victim');
      await page.focus('#user-disconnect');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#confirm[open]', { timeout: DEADLINE_MS });
      expect(await page.evaluate(() => (globalThis as unknown as { document: { activeElement: { textContent: string } | null } }).document.activeElement?.textContent)).toBe('Cancel');
      await page.keyboard.press('Escape');
      await page.waitForSelector('#confirm', { state: 'hidden', timeout: DEADLINE_MS });
      expect(requests.filter((r) => r.url.includes('/admin/api/disconnect'))).toEqual([]);
      await page.click('#user-disconnect');
      await page.waitForSelector('#confirm[open]', { timeout: DEADLINE_MS });
      expect(await page.textContent('#confirm-text')).toContain('"victim"');
      expect(victimA.isOpen && victimB.isOpen).toBe(true); // nothing happens before the confirmation
      await page.click('#confirm-ok');
      const [closeA, closeB] = await Promise.all([victimA.closed, victimB.closed]);
      expect(closeA.code).toBe(4501);
      expect(closeB.code).toBe(4501);
      expect(await untilText(page, '#user-out', 'the disconnect answer', (t) => t.startsWith('Done') || t.startsWith('Error'))).toBe('Done (disconnect): {"user":"victim"}');
      expect(reader.isOpen).toBe(true);
      for (const s of bystanders) expect(s.isOpen).toBe(true);
      await untilText(page, nodeCell(NODE_A, 'total'), 'node A connections after the disconnect', (t) => t === '1');
      await untilText(page, nodeCell(NODE_B, 'total'), 'node B connections after the disconnect', (t) => t === '2');
      await untilText(page, '#live', 'the live status', (t) => t === 'Live');
      await shoot(page, 'admin-console');
      await page.setViewportSize({ width: 360, height: 740 });
      await shoot(page, 'admin-console-narrow');

      // The token only ever travelled in the Authorization header.
      const api = requests.filter((r) => r.url.includes('/admin/api/'));
      expect(api.length).toBeGreaterThan(0);
      expect(api.every((r) => r.auth === `Bearer ${ADMIN_TOKEN}`)).toBe(true);
      expect(requests.filter((r) => r.url.includes(ADMIN_TOKEN))).toEqual([]);
      expect(page.url()).not.toContain(ADMIN_TOKEN);
      expect(requests.filter((r) => isOverviewUrl(r.url)).length).toBeGreaterThan(2); // it polled
      expect(polls.max).toBe(1);

      // A hidden tab pauses the refresh; visible again, it resumes at once.
      await setHidden(page, true);
      await untilText(page, '#live', 'the paused status', (t) => t === 'Paused (tab hidden)');
      await pollUntil(async () => polls.inFlight === 0, 'the last overview request to end', DEADLINE_MS);
      const overviews = requests.filter((r) => isOverviewUrl(r.url)).length;
      await setHidden(page, false);
      await untilText(page, '#live', 'the live status after the pause', (t) => t === 'Live');
      await pollUntil(async () => requests.filter((r) => isOverviewUrl(r.url)).length > overviews, 'an overview request after the pause', DEADLINE_MS);

      // Sign out: back to the login form, the token forgotten.
      await page.setViewportSize({ width: 1200, height: 900 });
      await page.click('#signout');
      await page.waitForSelector('#login', { state: 'visible', timeout: DEADLINE_MS });
      expect(await page.isVisible('#app')).toBe(false);
      expect(await page.textContent('#live')).toBe('Signed out');
      expect(await sessionToken(page)).toBeNull();
      expect(problems).toEqual([]);
    } finally {
      await shoot(page, 'admin-console-last');
      await page.context().close();
    }
  }, 180_000);
});
