/**
 * The system tools the test suite runs, in one place: where each comes from
 * (its Debian package), and whether a run can go without it.
 *
 * - REQUIRED tools (redis-server, redis-cli): most integration files start
 *   real Redis servers. The global setup (test/global-setup.ts) checks them
 *   before anything else and fails the run at once, naming every missing one
 *   and the command that installs them (prerequisiteProblem).
 * - OPTIONAL tools: a few tests each. Those tests declare what they need with
 *   `needs(...)` (describe/it options): they skip when a tool is missing, and
 *   the skip reporter (test/helpers/skip-reporter.ts) lists them at the end of the run
 *   with the install command; with CI set, any skip fails the run.
 *
 * No process is spawned here: every check is a few stat calls.
 */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import type { TestOptions } from 'vitest';

declare module 'vitest' {
  interface TaskMeta {
    /** Set by needs(): the tools that were missing when the test was collected (it is skipped). */
    missingTools?: string[];
  }
}

export type ToolName =
  | 'redis-server'
  | 'redis-cli'
  | 'nginx'
  | 'apache2'
  | 'haproxy'
  | 'promtool'
  | 'chromium'
  | 'openssl'
  | 'redis-sentinel'
  | 'valkey-server';

export interface Tool {
  readonly name: ToolName;
  /** The Debian package that installs it. */
  readonly pkg: string;
  /** Without it the run fails at once (most integration files need it); otherwise the tests that need it skip. */
  readonly required: boolean;
  /** What needs it (shown in messages). */
  readonly usedBy: string;
  /** Run by bare name (spawn('redis-server')), so it must be on PATH: the sbin dirs are not searched for it. */
  readonly bareName?: boolean;
  /** Install with `-t <release>` (a backports suite that must be enabled first). */
  readonly aptRelease?: string;
}

export const TOOLS: readonly Tool[] = [
  { name: 'redis-server', pkg: 'redis-server', required: true, bareName: true, usedBy: 'integration tests (every Redis and Redis Cluster test, most gateway tests)' },
  { name: 'redis-cli', pkg: 'redis-tools', required: true, bareName: true, usedBy: 'integration tests (Redis Cluster creation, Redis inspection)' },
  { name: 'nginx', pkg: 'nginx', required: false, usedBy: 'load balancer config checks, nginx end-to-end tests, pubgate-check through nginx' },
  { name: 'apache2', pkg: 'apache2', required: false, usedBy: 'load balancer config checks, Apache end-to-end tests' },
  { name: 'haproxy', pkg: 'haproxy', required: false, usedBy: 'load balancer config checks, HAProxy end-to-end tests' },
  { name: 'promtool', pkg: 'prometheus', required: false, usedBy: 'alert rule and dashboard query checks' },
  { name: 'chromium', pkg: 'chromium', required: false, usedBy: 'the browser end-to-end test' },
  { name: 'openssl', pkg: 'openssl', required: false, usedBy: 'TLS tests (self-signed certificates)' },
  { name: 'redis-sentinel', pkg: 'redis-sentinel', required: false, usedBy: 'Redis Sentinel failover tests' },
  { name: 'valkey-server', pkg: 'valkey-server', required: false, aptRelease: 'bookworm-backports', usedBy: 'the broker contract suite against Valkey' },
];

/** Installs everything the tests need on a fresh Debian machine, then builds and tests. */
export const CI_SCRIPT = '.ci/run';

const SBIN = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

function pathDirs(): string[] {
  return (process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== '');
}

function executableIn(dirs: readonly string[], name: string): string | undefined {
  for (const dir of dirs) {
    const p = path.join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** Absolute path of an executable on PATH or in the sbin dirs (where Debian puts nginx, apache2, haproxy), or undefined. */
export function findTool(name: string): string | undefined {
  const spec = TOOLS.find((t) => t.name === name);
  return executableIn(spec?.bareName ? pathDirs() : [...pathDirs(), ...SBIN], name);
}

export function tool(name: string): Tool | undefined {
  return TOOLS.find((t) => t.name === name);
}

/** The tools of TOOLS that are not installed. */
export function missingTools(filter: 'required' | 'optional' | 'all' = 'all'): Tool[] {
  return TOOLS.filter((t) => (filter === 'all' || t.required === (filter === 'required')) && findTool(t.name) === undefined);
}

/** The command that installs `tools` on Debian (apt-get update first; backports packages on a line of their own). */
export function installCommand(tools: readonly Tool[]): string {
  const plain = [...new Set(tools.filter((t) => !t.aptRelease).map((t) => t.pkg))];
  const cmds = plain.length > 0 ? [`apt-get install -y ${plain.join(' ')}`] : [];
  const releases = [...new Set(tools.flatMap((t) => (t.aptRelease ? [t.aptRelease] : [])))];
  for (const r of releases) {
    cmds.push(`apt-get install -y -t ${r} ${tools.filter((t) => t.aptRelease === r).map((t) => t.pkg).join(' ')}`);
  }
  return cmds.length === 0 ? '' : ['apt-get update', ...cmds].join(' && ');
}

/** The note for tools installed from a backports suite (it must be enabled first), or ''. */
export function backportsNote(tools: readonly Tool[]): string {
  const releases = [...new Set(tools.flatMap((t) => (t.aptRelease ? [t.aptRelease] : [])))];
  return releases.length === 0 ? '' : `(${releases.join(', ')} must be in the apt sources; ${CI_SCRIPT} adds it)`;
}

/** The message a test shows when it is skipped because a tool is missing. */
export function missingTool(name: string, debianPackage: string): string {
  return `skipped: ${name} not found (install the Debian package "${debianPackage}": apt-get install -y ${debianPackage})`;
}

/** Parses the tool name out of a missingTool() message (tests that still put it in their names), or undefined. */
export function toolInMessage(text: string): string | undefined {
  return /skipped: (\S+) not found \(install the Debian package/.exec(text)?.[1];
}

/**
 * Options for describe/it: skip unless every tool named is installed, and
 * record which were missing for the skip reporter.
 *
 *     describe('nginx -t', needs('nginx'), () => { ... });
 */
export function needs(...names: ToolName[]): TestOptions {
  const missing = names.filter((n) => findTool(n) === undefined);
  return missing.length === 0 ? {} : { skip: true, meta: { missingTools: missing } };
}

/** Test files under this directory need no system tool: a run of only these is not held to the REQUIRED ones. */
export const UNIT_DIR = 'test/unit/';

/**
 * What the run cannot do without, as one message (undefined when nothing is
 * missing): the missing REQUIRED tools, what needs them, and the command that
 * installs them. `files`: the test files of the run (absolute or relative to
 * `root`); a run of unit tests only needs no tool.
 */
export function prerequisiteProblem(files: readonly string[], root: string): string | undefined {
  const rel = files.map((f) => path.relative(root, path.resolve(root, f)).split(path.sep).join('/'));
  if (rel.length > 0 && rel.every((f) => f.startsWith(UNIT_DIR))) return undefined;
  const missing = missingTools('required');
  if (missing.length === 0) return undefined;
  const width = Math.max(...missing.map((t) => t.name.length));
  return [
    `Missing required test tool${missing.length > 1 ? 's' : ''}: ${missing.map((t) => t.name).join(', ')} (not found on PATH).`,
    ...missing.map((t) => `  ${t.name.padEnd(width)}  Debian package ${t.pkg}; needed by ${t.usedBy}`),
    'Install (Debian/Ubuntu, as root):',
    `  ${installCommand(missing)}`,
    `or run ${CI_SCRIPT}, which installs every tool the tests use (the optional ones too), builds and runs the suite.`,
    `Nothing was run. (Unit tests alone need no tool: npx vitest run ${UNIT_DIR})`,
  ].join('\n');
}
