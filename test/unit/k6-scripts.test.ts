/**
 * The k6 scripts cannot run here (no k6), so CI checks what it can: each one
 * parses as an ES module (`node --check`), imports only k6 modules or the
 * shared helpers, and has what k6 needs to run it (options with thresholds, an
 * entry function). The benchmark runner's files get the same syntax check.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, type Node } from 'acorn';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const K6_DIR = join(ROOT, 'loadtest/k6');
const BENCH_DIR = join(ROOT, 'loadtest/bench');

function files(dir: string, ext: RegExp): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && ext.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

const k6Scripts = readdirSync(K6_DIR).filter((f) => f.endsWith('.js')).map((f) => join(K6_DIR, f));
const k6Libs = files(join(K6_DIR, 'lib'), /\.js$/);
const benchFiles = files(BENCH_DIR, /\.mjs$/);

interface ModuleNode extends Node {
  body: (Node & { source?: { value: string }; declaration?: Node & { declarations?: { id: { name: string } }[]; id?: { name: string } } })[];
}

function parseModule(file: string): ModuleNode {
  return parse(readFileSync(file, 'utf8'), { ecmaVersion: 'latest', sourceType: 'module' }) as ModuleNode;
}

function exportedNames(ast: ModuleNode): string[] {
  const names: string[] = [];
  for (const n of ast.body) {
    if (n.type === 'ExportDefaultDeclaration') names.push('default');
    if (n.type === 'ExportNamedDeclaration' && n.declaration) {
      if (n.declaration.declarations) names.push(...n.declaration.declarations.map((d) => d.id.name));
      else if (n.declaration.id) names.push(n.declaration.id.name);
    }
  }
  return names;
}

const K6_MODULES = /^k6(\/(ws|http|crypto|encoding|metrics|execution|timers|websockets))?$/;

describe('k6 scripts', () => {
  it('finds the documented scripts', () => {
    const names = k6Scripts.map((f) => f.slice(K6_DIR.length + 1));
    expect(names).toEqual(expect.arrayContaining(['connect-ramp.js', 'fanout.js', 'channels.js', 'publish-api.js', 'soak.js']));
  });

  it.each([...k6Scripts, ...k6Libs])('%s parses as an ES module (node --check)', (file) => {
    expect(() => execFileSync(process.execPath, ['--check', file], { stdio: 'pipe' })).not.toThrow();
  });

  it.each([...k6Scripts, ...k6Libs])('%s imports only k6 modules and the shared helpers', (file) => {
    for (const n of parseModule(file).body) {
      if (n.type !== 'ImportDeclaration') continue;
      const from = n.source!.value;
      expect(K6_MODULES.test(from) || from.startsWith('./'), `${file} imports ${from}`).toBe(true);
    }
  });

  it.each(k6Scripts)('%s exports options with thresholds and an entry function', (file) => {
    const names = exportedNames(parseModule(file));
    expect(names).toContain('options');
    expect(readFileSync(file, 'utf8')).toMatch(/thresholds:\s*\{/);
    // Either a default function or the functions its scenarios name with `exec`.
    const execs = [...readFileSync(file, 'utf8').matchAll(/exec:\s*'(\w+)'/g)].map((m) => m[1]);
    if (execs.length === 0) expect(names).toContain('default');
    for (const e of execs) expect(names, `${file} scenario exec ${e}`).toContain(e);
  });
});

describe('benchmark runner', () => {
  it.each(benchFiles)('%s parses (node --check)', (file) => {
    expect(() => execFileSync(process.execPath, ['--check', file], { stdio: 'pipe' })).not.toThrow();
  });

  it('prints its usage and exits 0 on --help', () => {
    const r = spawnSync(process.execPath, [join(BENCH_DIR, 'run.mjs'), '--help'], { encoding: 'utf8', timeout: 10_000 });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/usage: node loadtest\/bench\/run\.mjs/);
  });

  it('refuses an unknown scenario', () => {
    const r = spawnSync(process.execPath, [join(BENCH_DIR, 'run.mjs'), 'nope'], { encoding: 'utf8', timeout: 10_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown scenario nope/);
  });
});
