/**
 * Response validation against docs/openapi.yaml. Every answer a test receives
 * from a pubgate node (through `fetch`, or the node:http helpers that call
 * `checkAnswer`) on a documented path is checked: the status must be
 * documented for that path and method, the headers the document marks
 * required must be there (and match their schema), and a JSON body must
 * match the response's schema (ajv, JSON Schema 2020-12 as OpenAPI 3.1 uses).
 *
 * Only pubgate is checked: an answer counts when it comes from a port that
 * `startGateway` registered (`registerPubgate`), so the test fakes that serve
 * the same paths (the API client's scripted server, proxy backends, webhook
 * receivers) are never validated. Public paths are checked on public ports,
 * admin paths on admin ports.
 *
 * Violations are recorded; test/helpers/openapi-setup.ts (vitest setupFiles)
 * fails the test that received one in its afterEach.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// js-yaml without a type package, as test/helpers/deploy-files.ts loads it.
const yaml = createRequire(import.meta.url)('js-yaml') as { load(text: string, opts?: { filename?: string }): unknown };

export const OPENAPI_FILE = fileURLToPath(new URL('../../docs/openapi.yaml', import.meta.url));

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
type Method = (typeof METHODS)[number];
export type PortKind = 'public' | 'admin';

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** An answer as the validator sees it: header names lower case, the body when it was read. */
export interface Answer {
  readonly method: string;
  /** Path without the query. */
  readonly path: string;
  readonly status: number;
  readonly headers: (name: string) => string | null;
  /** The body text; undefined when it was not read (a stream). */
  readonly body?: string | undefined;
  /** Which port answered; undefined: either. */
  readonly port?: PortKind | undefined;
}

export interface Violation {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly problems: readonly string[];
}

interface ResponseSpec {
  readonly headers: readonly { name: string; validate: ValidateFunction; integer: boolean }[];
  /** Media type → body validator; an empty map: no body documented. */
  readonly content: ReadonlyMap<string, ValidateFunction | undefined>;
}

interface OperationSpec {
  readonly port: PortKind;
  readonly responses: ReadonlyMap<string, ResponseSpec>;
}

interface PathSpec {
  readonly re: RegExp;
  readonly template: string;
  readonly ops: ReadonlyMap<Method, OperationSpec>;
}

export interface OpenApiValidator {
  /** Whether a path (and port) is documented at all. */
  documents(path: string, port?: PortKind): boolean;
  /** The problems of one answer; [] when it conforms, undefined when the document does not cover it. */
  check(a: Answer): string[] | undefined;
  /** The JSON response examples of the document checked against their schemas: how many, and the ones that do not match. */
  examples(): { checked: number; problems: string[] };
}

const ADD_FORMATS = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const DOC_ID = 'urn:pubgate:openapi';

const SCHEMAS = '#/components/schemas/';

/** Points `#/components/schemas/...` references at the schemas' registered copy (as `$defs`). */
function rebase(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(rebase);
  if (!isObj(v)) return v;
  const out: Json = {};
  for (const [k, x] of Object.entries(v)) {
    out[k] = k === '$ref' && typeof x === 'string' && x.startsWith(SCHEMAS) ? `${DOC_ID}#/$defs/${x.slice(SCHEMAS.length)}` : rebase(x);
  }
  return out;
}

export function createOpenApiValidator(doc: Json): OpenApiValidator {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, validateFormats: true });
  ADD_FORMATS(ajv);
  ajv.addKeyword({ keyword: 'example' });
  const components = isObj(doc.components) ? doc.components : {};
  ajv.addSchema({ $id: DOC_ID, $defs: rebase(components.schemas ?? {}) });

  /** Follows an OpenAPI (not schema) reference: responses, headers, parameters. */
  const deref = (v: unknown): Json => {
    let cur = v;
    for (let i = 0; i < 10 && isObj(cur) && typeof cur.$ref === 'string'; i++) {
      const parts = cur.$ref.replace(/^#\//, '').split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
      cur = parts.reduce<unknown>((o, p) => (isObj(o) ? o[p] : undefined), doc);
    }
    if (!isObj(cur)) throw new Error(`openapi: unresolvable reference ${JSON.stringify(v)}`);
    return cur;
  };
  const compile = (schema: unknown): ValidateFunction => ajv.compile(rebase(schema) as Json);
  const examples: { where: string; validate: ValidateFunction; value: unknown }[] = [];

  const paths: PathSpec[] = [];
  for (const [template, rawItem] of Object.entries(isObj(doc.paths) ? doc.paths : {})) {
    const item = deref(rawItem);
    const ops = new Map<Method, OperationSpec>();
    for (const m of METHODS) {
      const op = item[m];
      if (!isObj(op)) continue;
      const servers = Array.isArray(op.servers) ? op.servers : Array.isArray(item.servers) ? item.servers : [];
      const port: PortKind = servers.some((s) => isObj(s) && typeof s.url === 'string' && s.url.includes('{adminPort}')) ? 'admin' : 'public';
      const responses = new Map<string, ResponseSpec>();
      for (const [status, rawRes] of Object.entries(isObj(op.responses) ? op.responses : {})) {
        const res = deref(rawRes);
        const headers = Object.entries(isObj(res.headers) ? res.headers : {}).flatMap(([name, raw]) => {
          const h = deref(raw);
          if (h.required !== true) return [];
          const schema = isObj(h.schema) ? h.schema : {};
          return [{ name: name.toLowerCase(), validate: compile(schema), integer: schema.type === 'integer' }];
        });
        const content = new Map<string, ValidateFunction | undefined>();
        for (const [media, rawMedia] of Object.entries(isObj(res.content) ? res.content : {})) {
          const mt = isObj(rawMedia) ? rawMedia : {};
          const validate = media === 'application/json' && mt.schema !== undefined ? compile(mt.schema) : undefined;
          content.set(media, validate);
          if (validate === undefined) continue;
          const where = `${m.toUpperCase()} ${template} ${status}`;
          if ('example' in mt) examples.push({ where, validate, value: mt.example });
          for (const [name, ex] of Object.entries(isObj(mt.examples) ? mt.examples : {})) {
            examples.push({ where: `${where} (${name})`, validate, value: deref(ex).value });
          }
        }
        responses.set(status, { headers, content });
      }
      ops.set(m, { port, responses });
    }
    const re = new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '[^/]+')}$`);
    paths.push({ re, template, ops });
  }

  const find = (path: string, port: PortKind | undefined): { p: PathSpec; ops: [Method, OperationSpec][] } | undefined => {
    for (const p of paths) {
      if (!p.re.test(path)) continue;
      const ops = [...p.ops].filter(([, o]) => port === undefined || o.port === port);
      if (ops.length > 0) return { p, ops };
    }
    return undefined;
  };

  const errorsText = (v: ValidateFunction): string => (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`).join('; ');

  function check(a: Answer): string[] | undefined {
    const found = find(a.path, a.port);
    if (!found) return undefined;
    const method = a.method.toLowerCase() as Method;
    let op = found.p.ops.get(method);
    const status = String(a.status);
    if (!op || (a.port !== undefined && op.port !== a.port)) {
      // A method the path does not document: checked against the 405 answer the path documents, if any.
      op = found.ops.map(([, o]) => o).find((o) => o.responses.has('405'));
      if (!op) return undefined;
      if (status !== '405') return [`${a.method.toUpperCase()} is not documented for ${found.p.template}: expected 405, got ${status}`];
    }
    const res = op.responses.get(status) ?? op.responses.get(`${status[0]}XX`) ?? op.responses.get('default');
    if (!res) return [`status ${status} is not documented (documented: ${[...op.responses.keys()].join(', ')})`];
    const problems: string[] = [];
    for (const h of res.headers) {
      const raw = a.headers(h.name);
      if (raw === null) {
        problems.push(`required header ${h.name} is missing`);
        continue;
      }
      const value = h.integer && /^-?[0-9]+$/.test(raw.trim()) ? Number(raw.trim()) : raw;
      if (!h.validate(value)) problems.push(`header ${h.name}: ${JSON.stringify(raw)} ${errorsText(h.validate)}`);
    }
    if (method === 'head') return problems;
    const contentType = (a.headers('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (res.content.size === 0) {
      // A Content-Type on an empty body (uWS answers 204 with one) says nothing: only a body counts.
      if (a.body !== undefined && a.body !== '') problems.push(`a body (${contentType || 'no content-type'}) was answered but none is documented: ${a.body.slice(0, 200)}`);
      return problems;
    }
    // No Content-Type at all (uWS's own 431): nothing to check unless JSON was documented.
    if (contentType === '' && !res.content.has('application/json')) return problems;
    if (!res.content.has(contentType)) {
      problems.push(`content-type ${JSON.stringify(contentType)} is not documented (documented: ${[...res.content.keys()].join(', ')})`);
      return problems;
    }
    const validate = res.content.get(contentType);
    if (validate === undefined || a.body === undefined) return problems;
    let body: unknown;
    try {
      body = JSON.parse(a.body);
    } catch {
      problems.push(`body is not JSON: ${a.body.slice(0, 200)}`);
      return problems;
    }
    if (!validate(body)) problems.push(`body ${a.body.slice(0, 300)} does not match the schema: ${errorsText(validate)}`);
    return problems;
  }

  return {
    documents: (path, port) => find(path, port) !== undefined,
    check,
    examples: () => ({
      checked: examples.length,
      problems: examples.filter((e) => !e.validate(e.value)).map((e) => `${e.where}: ${errorsText(e.validate)}`),
    }),
  };
}

let shared: OpenApiValidator | undefined;

/** The validator of docs/openapi.yaml, built once per test file. */
export function openApiValidator(): OpenApiValidator {
  shared ??= createOpenApiValidator(yaml.load(readFileSync(OPENAPI_FILE, 'utf8'), { filename: OPENAPI_FILE }) as Json);
  return shared;
}

// ---- Which ports are pubgate's ----------------------------------------------

const pubgatePorts = new Map<number, { kind: PortKind; owner: object }>();

/**
 * Called by startGateway once a node listens: its answers on `port` are
 * checked until `unregisterPubgate` with the same owner (a node restarted on
 * the same port registers again with a new owner, and the old node's exit
 * does not undo that).
 */
export function registerPubgate(port: number, kind: PortKind, owner: object = {}): void {
  pubgatePorts.set(port, { kind, owner });
}

export function unregisterPubgate(port: number, owner?: object): void {
  if (owner === undefined || pubgatePorts.get(port)?.owner === owner) pubgatePorts.delete(port);
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** The kind of pubgate port a URL points at; undefined when it is not a known pubgate node. */
export function pubgatePort(url: URL): PortKind | undefined {
  if (!LOOPBACK.has(url.hostname)) return undefined;
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  return pubgatePorts.get(port)?.kind;
}

// ---- Recording --------------------------------------------------------------

const violations: Violation[] = [];
/** Answers checked in this file, by method, path and status (PUBGATE_OPENAPI_STATS=1 prints them). */
const checked = new Map<string, number>();

export function checkedAnswers(): ReadonlyMap<string, number> {
  return checked;
}
const pending = new Set<Promise<void>>();

/**
 * Checks one answer from `url` and records what is wrong with it. Nothing
 * happens for an answer from something that is not a registered pubgate
 * port, or on a path the document does not describe.
 */
export function checkAnswer(url: URL, a: Omit<Answer, 'path' | 'port'>): void {
  const port = pubgatePort(url);
  if (port === undefined) return;
  const problems = openApiValidator().check({ ...a, path: url.pathname, port });
  if (problems) checked.set(`${a.method.toUpperCase()} ${url.pathname} ${a.status}`, (checked.get(`${a.method.toUpperCase()} ${url.pathname} ${a.status}`) ?? 0) + 1);
  if (problems && problems.length > 0) violations.push({ method: a.method.toUpperCase(), path: url.pathname + url.search, status: a.status, problems });
}

/** A node:http header value as `Headers.get` gives it. */
export function headerText(v: string | string[] | number | undefined): string | null {
  if (v === undefined) return null;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

/** Adds a violation found elsewhere (tests of the validator use it). */
export function recordViolation(v: Violation): void {
  violations.push(v);
}

/**
 * Waits (at most `waitMs`) for the bodies still being read, then returns and
 * forgets the violations so far. A body still unread then (a node stopped
 * mid-answer) is judged by nobody.
 */
export async function takeViolations(waitMs = 5000): Promise<Violation[]> {
  if (pending.size > 0) {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    await Promise.race([Promise.allSettled([...pending]), late]);
    clearTimeout(timer);
    pending.clear();
  }
  return violations.splice(0);
}

export function formatViolations(vs: readonly Violation[]): string {
  return vs.map((v) => `${v.method} ${v.path} -> ${v.status}:\n  - ${v.problems.join('\n  - ')}`).join('\n');
}

// ---- The fetch wrapper -------------------------------------------------------

const ORIGINAL = Symbol.for('pubgate.openapi.originalFetch');
type Fetch = typeof globalThis.fetch;

function requestOf(input: Parameters<Fetch>[0], init: Parameters<Fetch>[1]): { url: URL; method: string } | undefined {
  try {
    if (input instanceof Request) return { url: new URL(input.url), method: (init?.method ?? input.method).toUpperCase() };
    return { url: new URL(String(input)), method: (init?.method ?? 'GET').toUpperCase() };
  } catch {
    return undefined;
  }
}

/** Reads what a response needs for its check: the body only when it is JSON (never a stream). */
async function inspect(url: URL, method: string, res: Response): Promise<void> {
  const type = (res.headers.get('content-type') ?? '').toLowerCase();
  const json = type.startsWith('application/json');
  let body: string | undefined;
  if (json && method !== 'HEAD') {
    try {
      body = await res.clone().text();
    } catch {
      return; // the test aborted the request or the node went away mid-body: nothing to judge
    }
  }
  checkAnswer(url, { method, status: res.status, headers: (n) => res.headers.get(n), body });
}

/** Wraps globalThis.fetch (once per realm) so that every answer from a pubgate node is checked. */
export function installFetchValidation(): void {
  const g = globalThis as typeof globalThis & { [ORIGINAL]?: Fetch };
  if (g[ORIGINAL]) return;
  const original = g.fetch;
  g[ORIGINAL] = original;
  g.fetch = async (input, init) => {
    const res = await original(input, init);
    const req = requestOf(input, init);
    if (req && pubgatePort(req.url) !== undefined && openApiValidator().documents(req.url.pathname)) {
      const p = inspect(req.url, req.method, res).finally(() => pending.delete(p));
      pending.add(p);
    }
    return res;
  };
}
