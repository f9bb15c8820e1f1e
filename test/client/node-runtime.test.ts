/**
 * The built @pubgate/client in a plain Node process that has a global
 * WebSocket (Node 22, or Node 20 with --experimental-websocket: undici's
 * implementation, as in browsers) and is given no WebSocket option: it
 * connects, subscribes, receives a message published over HTTP and publishes.
 */
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { buildClient } from '../helpers/client-build.js';
import { publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';

let dist = '';
let gw: GatewayProcess | undefined;

beforeAll(async () => {
  dist = await buildClient();
  gw = await startGateway({ PUBGATE_NODE_ID: 'node-runtime' });
}, 120_000);

afterAll(async () => {
  await gw?.stop();
  if (dist) rmSync(dist, { recursive: true, force: true });
});

const CHILD = `
import { connect } from './index.js';
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
if (typeof globalThis.WebSocket !== 'function') { out({ error: 'no global WebSocket' }); process.exit(1); }
const client = connect({ url: process.env.URL, token: process.env.TOKEN });
client.on('connected', ({ welcome }) => out({ connected: welcome.node }));
const sub = client.subscribe('rt:in', async (data) => {
  out({ got: data });
  await client.publish('rt:out', { echo: data });
  out({ published: true });
  await client.close();
  out({ state: client.state });
});
await sub.ready;
out({ ready: true });
`;

describe('@pubgate/client on the runtime global WebSocket', () => {
  it('connects without a WebSocket option, subscribes, receives and publishes', async () => {
    const script = path.join(dist, 'runtime-child.mjs');
    writeFileSync(script, CHILD);
    const jwt = await token({ sub: 'rt-user', channels: ['rt:*'], publish: ['rt:out'] });
    const major = Number(process.versions.node.split('.')[0]);
    const args = major < 22 ? ['--experimental-websocket', script] : [script];
    const child = spawn(process.execPath, args, { env: { ...process.env, URL: gw!.url, TOKEN: jwt }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines: Array<Record<string, unknown>> = [];
    const waiters: Array<() => void> = [];
    createInterface({ input: child.stdout }).on('line', (l) => {
      lines.push(JSON.parse(l) as Record<string, unknown>);
      for (const w of waiters.splice(0)) w();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const until = async (pred: (l: Record<string, unknown>) => boolean): Promise<void> => {
      const deadline = Date.now() + 20_000;
      while (!lines.some(pred)) {
        if (child.exitCode !== null) throw new Error(`child exited ${child.exitCode}: ${JSON.stringify(lines)} ${stderr}`);
        if (Date.now() > deadline) throw new Error(`no matching line: ${JSON.stringify(lines)} ${stderr}`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, 1000);
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
    };
    try {
      await until((l) => l.ready === true);
      expect(lines).toContainEqual({ connected: 'node-runtime' });
      const res = await publish(gw!, { channel: 'rt:in', data: { n: 1 } });
      expect(res.status).toBe(200);
      await until((l) => l.state === 'closed');
      expect(lines).toContainEqual({ got: { n: 1 } });
      expect(lines).toContainEqual({ published: true });
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  }, 60_000);
});
