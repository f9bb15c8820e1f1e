/**
 * The Pusher example (examples/pusher) end to end in headless Chromium
 * (Debian's /usr/bin/chromium, driven by playwright-core, as
 * test/client/browser.test.ts does): a real gateway with the Pusher mode on
 * and the app of examples/pusher/README.md in PUBGATE_PUSHER_APPS, the
 * example server (its auth endpoint signs with the `pusher` library's
 * authorizeChannel) as a child process, and the page loading pusher-js's
 * browser build from the example server. The page subscribes to a public,
 * a private and a presence channel; the test triggers events with the
 * `pusher` server library, through the page's own Trigger button and with
 * the example's trigger.mjs, and reads what the page received from its state
 * (`globalThis.pusherExample`).
 *
 * Everything waits on page or process state with deadlines; nothing sleeps.
 * Artifacts: test-artifacts/pusher-example.json (the page's state) and .png.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import Pusher from 'pusher';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { pollUntil } from '../helpers/redis.js';
import { needs } from '../helpers/tools.js';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const DEADLINE_MS = 30_000;

/** The example's defaults (examples/pusher/README.md runs the gateway with these). */
const APP = { id: 'app-id', key: 'app-key', secret: 'app-secret' };
const CHANNELS = { public: 'example-feed', private: 'private-example', presence: 'presence-example' };

/** The page's state: examples/pusher/public/app.js. */
interface PageState {
  state: string;
  socketId: string | null;
  channels: Record<string, string>;
  events: { channel: string; event: string; data: unknown }[];
  members: string[];
  errors: string[];
}

interface ExampleServer {
  origin: string;
  proc: ChildProcess;
  output: string[];
  stop(): Promise<void>;
}

/** examples/pusher/server.mjs as a child process on `port`, ready when it logs `listening`. */
async function startExample(port: number, gw: GatewayProcess): Promise<ExampleServer> {
  const proc = spawn(process.execPath, [path.join(ROOT, 'examples/pusher/server.mjs')], {
    env: { ...process.env, EXAMPLE_HOST: '127.0.0.1', EXAMPLE_PORT: String(port), PUSHER_HOST: '127.0.0.1', PUSHER_PORT: String(gw.port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  proc.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const listening = new Promise<string>((resolve) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      output.push(line);
      try {
        const l = JSON.parse(line) as { msg?: string; url?: string };
        if (l.msg === 'listening' && typeof l.url === 'string') resolve(l.url.replace(/\/$/, ''));
      } catch {
        // not a log line
      }
    });
  });
  const started = await Promise.race([listening, exited.then((code) => ({ exitCode: code }))]);
  if (typeof started !== 'string') throw new Error(`examples/pusher/server.mjs exited with ${String(started.exitCode)}: ${output.join('\n')}`);
  return {
    origin: started,
    proc,
    output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Runs examples/pusher/trigger.mjs against `gw`; its exit code and output. */
async function runTrigger(gw: GatewayProcess, channel: string, text: string): Promise<{ code: number | null; output: string }> {
  const proc = spawn(process.execPath, [path.join(ROOT, 'examples/pusher/trigger.mjs'), channel, text], {
    env: { ...process.env, PUSHER_HOST: '127.0.0.1', PUSHER_PORT: String(gw.port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  return { code, output };
}

async function pageState(page: Page): Promise<PageState | undefined> {
  return page.evaluate(() => {
    const s = (globalThis as unknown as { pusherExample?: unknown }).pusherExample;
    return s === undefined ? undefined : (JSON.parse(JSON.stringify(s)) as PageState);
  });
}

/** Waits until `pred` holds for the page's state (deadline), polling it. */
async function until(page: Page, what: string, pred: (s: PageState) => boolean): Promise<PageState> {
  let last: PageState | undefined;
  try {
    await pollUntil(async () => {
      last = await pageState(page);
      return last !== undefined && pred(last);
    }, what, DEADLINE_MS);
  } catch (e) {
    const failed = await page.evaluate(() => (globalThis as unknown as { pusherExampleError?: string }).pusherExampleError).catch(() => undefined);
    throw new Error(`${(e as Error).message}; the page's state: ${JSON.stringify(last) ?? 'none'}${failed ? `; page error: ${failed}` : ''}`, { cause: e });
  }
  return last!;
}

const received = (s: PageState, channel: string, text: string): boolean =>
  s.events.some((e) => e.channel === channel && e.event === 'example-event' && (e.data as { text?: unknown } | null)?.text === text);

describe('the Pusher example page in headless Chromium', needs('chromium'), () => {
  let gw: GatewayProcess | undefined;
  let example: ExampleServer | undefined;
  let browser: Browser | undefined;

  beforeAll(async () => {
    const port = await freePort();
    gw = await startGateway({
      PUBGATE_NODE_ID: 'pusher-example',
      PUBGATE_PUSHER_APPS: `${APP.id}:${APP.key}:${APP.secret}`,
      PUBGATE_ALLOWED_ORIGINS: `http://127.0.0.1:${port}`,
      PUBGATE_REQUIRE_ORIGIN: 'true',
    });
    example = await startExample(port, gw);
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await example?.stop();
    await gw?.stop('SIGKILL');
  });

  it('subscribes pusher-js to a public, a private and a presence channel through the example\'s auth endpoint, and shows events triggered with the pusher library, from its Trigger button and by trigger.mjs', async () => {
    if (!browser || !example || !gw) throw new Error('set-up failed');
    const page = await browser.newPage({ viewport: { width: 1000, height: 650 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    try {
      await page.goto(`${example.origin}/?user=alice`);
      const ready = await until(page, 'connected and subscribed to the three channels', (s) =>
        s.state === 'connected' && Object.values(CHANNELS).every((c) => s.channels[c] === 'subscribed'));
      expect(ready.socketId).toMatch(/^\d+\.\d+$/);
      // The presence channel lists this page's user (channel_data from the example's authorizeChannel).
      expect(ready.members).toEqual(['alice']);

      // The backend's side: the `pusher` library with only host/port/useTLS changed.
      const lib = new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(gw.port), useTLS: false });
      await lib.trigger(CHANNELS.public, 'example-event', { text: 'to the public channel' });
      await lib.trigger(CHANNELS.private, 'example-event', { text: 'to the private channel' });
      await until(page, 'the two triggered events', (s) =>
        received(s, CHANNELS.public, 'to the public channel') && received(s, CHANNELS.private, 'to the private channel'));

      // The page's Trigger button: the example server triggers with the library.
      await page.selectOption('#channel', CHANNELS.private);
      await page.fill('#text', 'from the button');
      await page.click('#trigger button');
      await until(page, 'the event triggered from the page', (s) => received(s, CHANNELS.private, 'from the button'));

      // The README's third command: examples/pusher/trigger.mjs, as a backend would run it.
      const script = await runTrigger(gw, CHANNELS.public, 'from trigger.mjs');
      expect(script.code, script.output).toBe(0);
      expect(script.output).toMatch(/^200 /);
      const done = await until(page, 'the event of trigger.mjs', (s) => received(s, CHANNELS.public, 'from trigger.mjs'));

      // Each event arrived once, on its own channel only.
      expect(done.events.map((e) => [e.channel, (e.data as { text: string }).text])).toEqual([
        [CHANNELS.public, 'to the public channel'],
        [CHANNELS.private, 'to the private channel'],
        [CHANNELS.private, 'from the button'],
        [CHANNELS.public, 'from trigger.mjs'],
      ]);
      expect(await page.textContent('#events')).toContain('from the button');
      expect(done.errors).toEqual([]);
      expect(pageErrors).toEqual([]);
    } finally {
      mkdirSync(ARTIFACTS, { recursive: true });
      const state = await pageState(page).catch((e: unknown) => ({ unreadable: String(e) }));
      writeFileSync(path.join(ARTIFACTS, 'pusher-example.json'), `${JSON.stringify({ page: state, server: example.output }, null, 2)}\n`);
      await page.screenshot({ path: path.join(ARTIFACTS, 'pusher-example.png'), fullPage: true }).catch(() => undefined);
      await page.close();
    }
  }, 120_000);
});
