/**
 * A fresh machine's test run: a missing required tool (redis-server,
 * redis-cli) fails the run at once with one message naming it and the command
 * that installs it; a test skipped for a missing optional tool is listed at the
 * end with its install command, and with CI set any skipped or todo test fails
 * the run (an expected failure, it.fails, does not).
 *
 * Tools are taken away through PATH: vitest runs, with the suite's own global
 * setup check and skip reporter, on the small files of test/fixtures/prereq/
 * (their config never includes this file), with a PATH holding only fake
 * executables. Needs no tool itself: it runs on a machine without Redis.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/gateway.js';
import { installCommand, needs, prerequisiteProblem, TOOLS } from '../helpers/tools.js';

const VITEST = path.join(ROOT, 'node_modules/vitest/vitest.mjs');
const CONFIG = 'test/fixtures/prereq/vitest.config.ts';
const REDIS_INSTALL = 'apt-get update && apt-get install -y redis-server redis-tools';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A directory to be the whole PATH, holding executables named `tools` that exit 1 (the check only looks for them). */
function binDir(tools: readonly string[]): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pubgate-prereq-bin-'));
  dirs.push(dir);
  for (const t of tools) {
    writeFileSync(path.join(dir, t), '#!/bin/sh\nexit 1\n');
    chmodSync(path.join(dir, t), 0o755);
  }
  return dir;
}

interface Run {
  readonly code: number | null;
  readonly out: string;
  readonly ms: number;
}

/** `vitest run` on the fixture files matching `filters`, with PATH = `bin` only. */
function runFixtures(bin: string, filters: readonly string[], ci: boolean): Promise<Run> {
  const env: Record<string, string> = { PATH: bin, HOME: os.homedir(), NO_COLOR: '1' };
  if (process.env.TMPDIR) env.TMPDIR = process.env.TMPDIR;
  if (ci) env.CI = 'true';
  const started = Date.now();
  const child = spawn(process.execPath, [VITEST, 'run', '--config', CONFIG, ...filters], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // A run that hangs is a failure of its own; never leave it behind.
  const guard = setTimeout(() => child.kill('SIGKILL'), 90_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(guard);
      resolve({ code, out, ms: Date.now() - started });
    });
  });
}

/** The last non-empty lines of the output. */
const tail = (out: string, n: number): string => out.split('\n').filter((l) => l.trim() !== '').slice(-n).join('\n');

describe('prerequisite check (global setup)', () => {
  it('a PATH without redis-server and redis-cli fails the run in seconds, with one message naming both and the install command', async () => {
    const r = await runFixtures(binDir([]), [], false);
    expect(r.code, r.out).toBe(1);
    // Seconds, not a timeout per file (generous: the machine is shared).
    expect(r.ms, r.out).toBeLessThan(20_000);
    expect(r.out).toContain('Missing required test tools: redis-server, redis-cli');
    expect(r.out).toContain(REDIS_INSTALL);
    expect(r.out).toContain('.ci/run');
    expect(r.out.split('Missing required test tools').length - 1, r.out).toBe(1);
    // Nothing ran: no spawn failure, no stack frames.
    expect(r.out).not.toMatch(/ENOENT|redis\.fixture\.ts|\n\s+❯ /);
  }, 60_000);

  it('names only what is missing', () => {
    const saved = process.env.PATH;
    try {
      process.env.PATH = binDir(['redis-server']);
      const msg = prerequisiteProblem(['test/integration/x.test.ts'], ROOT);
      expect(msg).toContain('Missing required test tool: redis-cli (not found on PATH).');
      expect(msg).toContain('apt-get update && apt-get install -y redis-tools');
      expect(msg).not.toMatch(/redis-server/);
      process.env.PATH = binDir(['redis-server', 'redis-cli']);
      expect(prerequisiteProblem(['test/integration/x.test.ts'], ROOT)).toBeUndefined();
    } finally {
      process.env.PATH = saved;
    }
  });

  it('a run of unit tests only needs no tool', () => {
    const saved = process.env.PATH;
    try {
      process.env.PATH = binDir([]);
      expect(prerequisiteProblem([path.join(ROOT, 'test/unit/a.test.ts'), 'test/unit/b.test.ts'], ROOT)).toBeUndefined();
      expect(prerequisiteProblem(['test/unit/a.test.ts', 'test/client/c.test.ts'], ROOT)).toContain(REDIS_INSTALL);
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe('tools', () => {
  it('the fixture run reports like the suite (same reporters, in the same order)', async () => {
    const main = (await import('../../vitest.config.js')).default;
    const fixture = (await import('../fixtures/prereq/vitest.config.js')).default;
    expect(fixture.test?.reporters).toEqual(main.test?.reporters);
  });

  it('every required tool is looked up on PATH only (it is run by bare name)', () => {
    for (const t of TOOLS.filter((x) => x.required)) expect(t.bareName, t.name).toBe(true);
  });

  it('.ci/run installs every tool of TOOLS from its package, and nothing else', () => {
    const script = readFileSync(path.join(ROOT, '.ci/run'), 'utf8');
    const installed = [...script.matchAll(/^have (\S+) \|\| need\+=\((\S+)\)$/gm)].map((m) => `${m[1]} ${m[2]}`);
    const backports = [...script.matchAll(/^have (\S+) \|\| backports=yes$/gm)].map((m) => m[1]);
    expect(installed.sort()).toEqual(TOOLS.filter((t) => !t.aptRelease).map((t) => `${t.name} ${t.pkg}`).sort());
    expect(backports).toEqual(TOOLS.filter((t) => t.aptRelease).map((t) => t.name));
    for (const t of TOOLS.filter((x) => x.aptRelease)) expect(script).toContain(`-t ${t.aptRelease} ${t.pkg}`);
    // CI fails on any skip: .ci/run runs the tests with CI set.
    expect(script).toMatch(/^CI="\$\{CI:-true\}" npm test$/m);
  });

  it('installs backports packages with -t, after the others', () => {
    const valkey = TOOLS.find((t) => t.name === 'valkey-server')!;
    const nginx = TOOLS.find((t) => t.name === 'nginx')!;
    expect(installCommand([valkey, nginx])).toBe('apt-get update && apt-get install -y nginx && apt-get install -y -t bookworm-backports valkey-server');
  });

  it('needs(): skips and records the missing tools, or adds nothing', () => {
    const saved = process.env.PATH;
    try {
      process.env.PATH = binDir(['openssl']);
      expect(needs('openssl')).toEqual({});
      expect(needs('openssl', 'promtool')).toEqual({ skip: true, meta: { missingTools: ['promtool'] } });
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe('skipped tests in the summary', () => {
  it('a test skipped for a missing optional tool is listed with the install command; the run passes', async () => {
    const r = await runFixtures(binDir(['redis-server', 'redis-cli']), ['tools.fixture'], false);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(' Did not run: 1 test\n  openssl not found: 1 test\n    test/fixtures/prereq/tools.fixture.ts > needs openssl > finds openssl');
    expect(r.out).toContain('apt-get update && apt-get install -y openssl');
    expect(r.out).not.toContain('expected failure (it.fails), not a skip');
    // vitest's own summary stays the last lines.
    expect(tail(r.out, 5)).toMatch(/Test Files {2}1 passed \(1\)\n\s+Tests {2}1 passed \| 1 expected fail \| 1 skipped \(3\)\n/);
  }, 60_000);

  it('with CI=true a skipped or todo test fails the run, listed; an expected failure does not', async () => {
    const r = await runFixtures(binDir(['redis-server', 'redis-cli']), ['tools.fixture', 'todo.fixture'], true);
    expect(r.code, r.out).toBe(1);
    expect(r.out).toContain('CI: 2 tests did not run, and CI must run every test: this run fails.');
    expect(r.out).toContain('test/fixtures/prereq/tools.fixture.ts > needs openssl > finds openssl');
    expect(r.out).toContain('todo (not written yet): 1 test\n    test/fixtures/prereq/todo.fixture.ts > is not written yet');
    expect(r.out).not.toContain('expected failure (it.fails), not a skip');
    expect(tail(r.out, 5)).toMatch(/Tests {2}2 passed \| 1 expected fail \| 1 skipped \| 1 todo \(5\)/);
  }, 60_000);

  it('with CI=true and every tool present nothing is skipped and the run passes', async () => {
    const r = await runFixtures(binDir(['redis-server', 'redis-cli', 'openssl']), ['tools.fixture'], true);
    expect(r.code, r.out).toBe(0);
    expect(r.out).not.toContain('Did not run');
    expect(tail(r.out, 5)).toMatch(/Tests {2}2 passed \| 1 expected fail \(3\)/);
  }, 60_000);
});
