/**
 * Reading the files under deploy/ in tests: YAML (js-yaml, which the repo
 * already installs through eslint; loaded with createRequire so no type
 * package is needed), the defaults the configs must agree with, and the
 * metric names a PromQL expression uses.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { SETTINGS } from '../../src/config.js';
import { ROOT } from './gateway.js';

export const DEPLOY_DIR = path.join(ROOT, 'deploy');

function settingDefault(key: string): unknown {
  const s = SETTINGS.find((x) => x.key === key);
  if (!s) throw new Error(`no setting ${key}`);
  return s.def;
}

export const DEFAULT_PING_INTERVAL_SEC = settingDefault('pingInterval') as number;
export const DEFAULT_DRAIN_SECONDS = settingDefault('drainSeconds') as number;
export const DEFAULT_MAX_CONNECTIONS = settingDefault('maxConnections') as number;
export const DEFAULT_MAX_PUBLISH_BYTES = settingDefault('maxPublishBytes') as number;

interface JsYaml {
  load(text: string, opts?: { filename?: string }): unknown;
  loadAll(text: string, iterator?: undefined, opts?: { filename?: string }): unknown[];
}

let yaml: JsYaml | undefined;

function jsYaml(): JsYaml {
  if (!yaml) {
    try {
      yaml = createRequire(import.meta.url)('js-yaml') as JsYaml;
    } catch (e) {
      throw new Error(`js-yaml is not installed (add it to devDependencies): ${(e as Error).message}`, { cause: e });
    }
  }
  return yaml;
}

/** Every YAML document in a file (multi-document files split on ---). Throws with the file name on a syntax error. */
export function loadYamlDocs(file: string): unknown[] {
  return jsYaml().loadAll(readFileSync(file, 'utf8'), undefined, { filename: file }).filter((d) => d !== null && d !== undefined);
}

export function loadYaml(file: string): unknown {
  return jsYaml().load(readFileSync(file, 'utf8'), { filename: file });
}

/** Files under `dir` (recursively) whose names end with one of `exts`. */
export function filesUnder(dir: string, exts: readonly string[]): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && exts.some((x) => e.name.endsWith(x)))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

/** A loosely typed view of parsed YAML/JSON for structural checks. */
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export function obj(v: unknown, what: string): Record<string, Json> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what} is not a mapping`);
  return v as Record<string, Json>;
}

export function arr(v: unknown, what: string): Json[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a list`);
  return v as Json[];
}

// ---- PromQL ---------------------------------------------------------------------

const METRIC_PREFIXES = /^(pubgate|nodejs|process)_/;

/**
 * The exported metric names (pubgate_*, nodejs_*, process_*) an expression
 * uses. String literals are ignored, and so are recording rule names
 * (`pubgate:...`, with colons). Names are returned as written; map histogram
 * and summary suffixes with `metricFamily`.
 */
export function metricNames(expr: string): string[] {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  const names = new Set<string>();
  for (const m of noStrings.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const id = m[0];
    if (!id.includes(':') && METRIC_PREFIXES.test(id)) names.add(id);
  }
  return [...names].sort();
}

/** Label names used in `{...}` matchers right after a metric name, and in by()/without()/on()/ignoring() clauses. */
export function labelNames(expr: string): { selectors: { metric: string; labels: string[] }[]; grouping: string[] } {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
  const selectors: { metric: string; labels: string[] }[] = [];
  for (const m of noStrings.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const labels = [...m[2]!.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]!);
    selectors.push({ metric: m[1]!, labels });
  }
  const grouping: string[] = [];
  for (const m of noStrings.matchAll(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g)) {
    for (const l of m[1]!.split(',').map((s) => s.trim()).filter((s) => s !== '')) grouping.push(l);
  }
  return { selectors, grouping };
}

/** A scraped Prometheus text exposition: metric families with their types and the label names seen on samples. */
export interface Scrape {
  readonly families: Map<string, { type: string; labels: Set<string> }>;
  /** Sample name (with _bucket/_sum/_count/_total suffixes as exposed) → family. */
  readonly samples: Map<string, string>;
}

export function parseScrape(text: string): Scrape {
  const families = new Map<string, { type: string; labels: Set<string> }>();
  const samples = new Map<string, string>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) {
      families.set(t[1]!, { type: t[2]!, labels: new Set() });
      samples.set(t[1]!, t[1]!);
      if (t[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) samples.set(t[1]! + s, t[1]!);
      if (t[2] === 'summary') for (const s of ['_sum', '_count']) samples.set(t[1]! + s, t[1]!);
      continue;
    }
    if (line.startsWith('#') || line.trim() === '') continue;
    const s = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!s) continue;
    const fam = samples.get(s[1]!);
    if (fam === undefined) continue;
    for (const l of (s[3] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="/g)) families.get(fam)!.labels.add(l[1]!);
  }
  return { families, samples };
}
