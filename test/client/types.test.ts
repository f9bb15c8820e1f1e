/**
 * The @pubgate/client package as published: it builds with its own
 * tsconfigs, its .d.ts stands alone (no DOM, no Node types, nothing outside
 * the package), and the frame and close-code types it carries match the
 * server's (test/client/types-match.ts, compiled here by tsc).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as client from '../../packages/client/src/protocol.js';
import { ERROR_CODES } from '../../src/errors.js';
import { CLOSE } from '../../src/protocol/close-codes.js';
import { CHANNEL_RE } from '../../src/protocol/channel.js';
import { CLIENT_DIR, buildClient, tsc } from '../helpers/client-build.js';
import { ROOT } from '../helpers/gateway.js';

let out = '';
const tmp: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'pubgate-client-types-'));
  tmp.push(d);
  return d;
}

beforeAll(async () => {
  out = await buildClient(tempDir());
}, 120_000);

afterAll(() => {
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

describe('@pubgate/client package', () => {
  it('package.json: @pubgate/client, ESM, types, the pubgate-check bin, no runtime dependencies', () => {
    const pkg = JSON.parse(readFileSync(path.join(CLIENT_DIR, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg.name).toBe('@pubgate/client');
    expect(pkg.type).toBe('module');
    expect(pkg.dependencies).toBeUndefined();
    expect(pkg.exports).toEqual({ '.': { types: './dist/index.d.ts', import: './dist/index.js' }, './package.json': './package.json' });
    // A committed shim, so npm links the bin on install, before the build.
    expect(pkg.bin).toEqual({ 'pubgate-check': './bin/pubgate-check.js' });
  });

  it('emits ESM JavaScript and declarations, and the CLI with its shebang', () => {
    const files = walk(out).map((f) => path.relative(out, f));
    for (const f of ['index.js', 'index.d.ts', 'client.js', 'client.d.ts', 'protocol.d.ts', 'check/cli.js']) expect(files).toContain(f);
    expect(readFileSync(path.join(out, 'index.js'), 'utf8')).toMatch(/export \{ connect \} from '\.\/client\.js';/);
    expect(readFileSync(path.join(out, 'check/cli.js'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('the library imports nothing outside the package (no Node built-ins, no dependencies)', () => {
    for (const f of walk(out).filter((x) => x.endsWith('.js') && !x.includes(`${path.sep}check${path.sep}`))) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+'([^']+)'/g)) {
        expect(m[1], `${path.relative(out, f)} imports ${m[1]}`).toMatch(/^\.\.?\//);
      }
      expect(text).not.toMatch(/\brequire\(|\bprocess\.|\bBuffer\b/);
    }
  });

  it('its .d.ts compiles alone: ES2022 only, no DOM, no @types, skipLibCheck off', async () => {
    for (const f of walk(out).filter((x) => x.endsWith('.d.ts'))) {
      const text = readFileSync(f, 'utf8');
      expect(text, f).not.toMatch(/\/\/\/ <reference/);
      for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?from\s+'([^']+)'/gm)) expect(m[1], `${f} imports ${m[1]}`).toMatch(/^\.\.?\//);
      expect(text, f).not.toMatch(/import\(/);
    }
    const dir = tempDir();
    const index = path.join(out, 'index.js').replaceAll('\\', '/');
    writeFileSync(
      path.join(dir, 'consumer.ts'),
      `import { connect, PubgateError, CLOSE, shouldReconnect, type PubgateClient, type WebSocketConstructor, type MessageFrame, type ResubscribeInfo, type JoinEvent, type LeaveEvent, type PresenceResult, type PresenceStats } from '${index}';
declare const WS: WebSocketConstructor;
const c: PubgateClient = connect({ url: ['wss://a/ws', 'wss://b/ws'], getToken: async () => 'jwt', WebSocket: WS });
const off = c.subscribe<{ text: string }>('chat:1', (data: { text: string }, m: MessageFrame) => void [data.text, m.offset], {
  onResubscribe: (i: ResubscribeInfo) => void i.recovered,
});
c.on('disconnected', (e) => void [e.code, e.reconnectInMs]);
c.on('closed', (e) => void e.reason);
void off.ready.then((r) => r.recovered);
const room = c.subscribe<unknown, { name: string }>('chat:1', () => undefined);
void room.presence().then((r: PresenceResult<{ name: string }>) => [r.users, r.connections, r.truncated, r.members.map((m) => [m.user, m.conns, m.info?.name])]);
void room.presenceStats().then((s: PresenceStats) => s.users + s.connections);
const offJoin: () => void = room.on('join', (e: JoinEvent<{ name: string }>) => void [e.channel, e.user, e.info?.name]);
room.once('leave', (e: LeaveEvent) => void e.user);
room.on('resubscribed', () => void room.presence());
offJoin();
void c.publish('chat:1', { text: 'hi' }).catch((e: unknown) => e instanceof PubgateError && e.code === 'timeout');
export const codes: boolean = shouldReconnect(CLOSE.GOING_AWAY);
`,
    );
    writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022'], types: [], strict: true, noEmit: true, skipLibCheck: false },
        files: ['consumer.ts'],
      }),
    );
    const r = await tsc(['-p', path.join(dir, 'tsconfig.json')]);
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  }, 120_000);

  it('the ws package and the DOM WebSocket both fit the WebSocket option without a cast', async () => {
    const dir = tempDir();
    const index = path.join(out, 'index.js').replaceAll('\\', '/');
    writeFileSync(
      path.join(dir, 'ws-consumer.ts'),
      `import WS from 'ws';
import { connect } from '${index}';
connect({ url: 'ws://x/ws', WebSocket: WS });
connect({ url: 'ws://x/ws', WebSocket: globalThis.WebSocket });
`,
    );
    writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'DOM'], types: ['ws'], strict: true, noEmit: true, skipLibCheck: true, esModuleInterop: true,
          typeRoots: [path.join(ROOT, 'node_modules/@types')],
          paths: { ws: [path.join(ROOT, 'node_modules/@types/ws')] },
        },
        files: ['ws-consumer.ts'],
      }),
    );
    const r = await tsc(['-p', path.join(dir, 'tsconfig.json')]);
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  }, 120_000);

  it("its frame, error-code and close-code types are the server's (type-level, compiled by tsc)", async () => {
    const dir = tempDir();
    writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        extends: path.join(ROOT, 'tsconfig.json'),
        compilerOptions: { noEmit: true, rootDir: ROOT, typeRoots: [path.join(ROOT, 'node_modules/@types')] },
        include: [],
        files: [path.join(ROOT, 'test/client/types-match.ts')],
      }),
    );
    const r = await tsc(['-p', path.join(dir, 'tsconfig.json')]);
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  }, 120_000);

  it("its runtime tables are the server's: error codes, close codes, channel names, the reconnect rule", () => {
    expect([...client.ERROR_CODES]).toEqual([...ERROR_CODES]);
    expect({ ...client.CLOSE }).toEqual({ ...CLOSE });
    expect(client.CHANNEL_RE.source).toBe(CHANNEL_RE.source);
  });
});
