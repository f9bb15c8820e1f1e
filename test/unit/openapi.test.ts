/**
 * docs/openapi.yaml: it lints clean with @redocly/cli (recommended rules,
 * redocly.yaml), its examples match its schemas, and the response validator
 * the whole suite runs (test/helpers/openapi.ts, installed by setupFiles)
 * reports answers that do not match it, directly and through the fetch
 * wrapper, while answers from servers that are not pubgate nodes are left alone.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';
import { ROOT } from '../helpers/gateway.js';
import { OPENAPI_FILE, openApiValidator, registerPubgate, takeViolations, unregisterPubgate, type Answer } from '../helpers/openapi.js';

const REDOCLY = `${ROOT}node_modules/@redocly/cli/bin/cli.js`;

function run(file: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...args], { cwd: ROOT, timeout: 50_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: `${stdout}\n${stderr}` });
    });
  });
}

const headers = (h: Record<string, string>) => (name: string): string | null => h[name.toLowerCase()] ?? null;
const json = { 'content-type': 'application/json' };

describe('docs/openapi.yaml', () => {
  it('lints clean with redocly (recommended rules): exit 0, no errors, no warnings', async () => {
    const r = await run(REDOCLY, ['lint', OPENAPI_FILE, '--format=summary']);
    expect(r.out).not.toMatch(/^error /m);
    expect(r.out).not.toMatch(/^warning /m);
    expect(r.out).toContain('Your API description is valid');
    expect(r.code, r.out).toBe(0);
  });

  it('lists exactly the error codes of src/errors.ts', () => {
    const yaml = createRequire(import.meta.url)('js-yaml') as { load(text: string): unknown };
    const doc = yaml.load(readFileSync(OPENAPI_FILE, 'utf8')) as { components: { schemas: { ErrorCode: { enum: string[] } } } };
    expect(doc.components.schemas.ErrorCode.enum).toEqual([...ERROR_CODES]);
  });

  it('has examples that match their schemas', () => {
    const { checked, problems } = openApiValidator().examples();
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThan(80);
  });
});

describe('the response validator', () => {
  const v = openApiValidator();
  const answer = (a: Partial<Answer> & Pick<Answer, 'path' | 'status'>): Answer => ({
    method: 'POST', headers: headers(json), body: '{}', port: 'public', ...a,
  });

  it('accepts answers the document describes', () => {
    expect(v.check(answer({ path: '/v1/publish', status: 200, body: '{"channel":"feed:1","offset":3}' }))).toEqual([]);
    expect(v.check(answer({
      path: '/v1/publish', status: 401, headers: headers({ ...json, 'www-authenticate': 'Bearer' }),
      body: '{"error":{"code":"unauthorized","message":"missing or unknown API key"}}',
    }))).toEqual([]);
    expect(v.check(answer({
      path: '/v1/publish', status: 429, headers: headers({ ...json, 'retry-after': '2' }),
      body: '{"error":{"code":"rate_limited","message":"slow down"}}',
    }))).toEqual([]);
    expect(v.check(answer({ method: 'GET', path: '/readyz', port: 'admin', status: 503, body: '{"status":"draining"}' }))).toEqual([]);
    expect(v.check(answer({ method: 'GET', path: '/metrics', port: 'admin', status: 200, headers: headers({ 'content-type': 'text/plain; version=0.0.4' }), body: undefined }))).toEqual([]);
    // uWS's own 431: an HTML body without a Content-Type.
    expect(v.check(answer({ path: '/v1/publish', status: 431, headers: headers({ connection: 'close' }), body: '<h1>Request Header Fields Too Large</h1>' }))).toEqual([]);
  });

  it('reports a body of the wrong shape, with the schema errors', () => {
    const p = v.check(answer({ path: '/v1/publish', status: 200, body: '{"channel":"news","offset":"3","extra":1}' }));
    expect(p).toHaveLength(1);
    expect(p![0]).toMatch(/offset/);
    expect(p![0]).toMatch(/additionalProperties|must NOT have additional properties/);
  });

  it('reports an error body whose code is not in the catalog', () => {
    const p = v.check(answer({ path: '/v1/publish', status: 400, body: '{"error":{"code":"nope","message":"x"}}' }));
    expect(p?.join()).toMatch(/allowed values/);
  });

  it('reports an undocumented status, a missing required header, an undocumented content type', () => {
    expect(v.check(answer({ path: '/v1/publish', status: 404, body: '{"error":{"code":"not_found","message":"x"}}' }))?.join()).toMatch(/status 404 is not documented/);
    expect(v.check(answer({ path: '/v1/publish', status: 401, body: '{"error":{"code":"unauthorized","message":"x"}}' }))?.join()).toMatch(/www-authenticate is missing/);
    expect(v.check(answer({
      path: '/v1/publish', status: 503, headers: headers({ ...json, 'retry-after': 'soon' }), body: '{"error":{"code":"unavailable","message":"x"}}',
    }))?.join()).toMatch(/header retry-after/);
    expect(v.check(answer({ path: '/v1/publish', status: 200, headers: headers({ 'content-type': 'text/plain' }), body: 'ok' }))?.join()).toMatch(/content-type "text\/plain" is not documented/);
  });

  it('checks another method on a path against its documented 405', () => {
    const body = '{"error":{"code":"method_not_allowed","message":"/v1/publish accepts POST only"}}';
    expect(v.check(answer({ method: 'GET', path: '/v1/publish', status: 405, headers: headers({ ...json, allow: 'POST' }), body }))).toEqual([]);
    expect(v.check(answer({ method: 'GET', path: '/v1/publish', status: 405, body }))?.join()).toMatch(/allow is missing/);
    expect(v.check(answer({ method: 'GET', path: '/v1/publish', status: 200, body: '{}' }))?.join()).toMatch(/expected 405/);
  });

  it('does not cover undocumented paths, nor public paths on the admin port', () => {
    expect(v.check(answer({ path: '/apps/1/events', status: 200 }))).toBeUndefined();
    expect(v.check(answer({ path: '/v1/publish', port: 'admin', status: 404 }))).toBeUndefined();
    expect(v.check(answer({ method: 'GET', path: '/healthz', port: 'public', status: 404 }))).toBeUndefined();
  });
});

describe('the fetch wrapper', () => {
  const servers: Server[] = [];

  /** A server that answers every request with 200 and `body`. */
  async function serve(body: string): Promise<number> {
    const s = createServer((_req, res) => {
      res.writeHead(200, json);
      res.end(body);
    });
    servers.push(s);
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    return (s.address() as AddressInfo).port;
  }

  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });

  it('reports a pubgate port answering a documented path with a wrong shape; the test still reads the body', async () => {
    const port = await serve('{"channel":42}');
    registerPubgate(port, 'public');
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v1/publish`, { method: 'POST', headers: json, body: '{"channel":"news","data":1}' });
      expect(await res.json()).toEqual({ channel: 42 });
      const found = await takeViolations();
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({ method: 'POST', path: '/v1/publish', status: 200 });
      expect(found[0]!.problems.join()).toMatch(/\/channel must be string/);
    } finally {
      unregisterPubgate(port);
    }
  });

  it('leaves alone servers that are not pubgate nodes, and paths the document does not describe', async () => {
    const fake = await serve('{"channel":42}');
    await (await fetch(`http://127.0.0.1:${fake}/v1/publish`, { method: 'POST', headers: json, body: '{}' })).text();
    const node = await serve('{"whatever":true}');
    registerPubgate(node, 'public');
    try {
      await (await fetch(`http://127.0.0.1:${node}/apps/1/events`, { method: 'POST', headers: json, body: '{}' })).text();
      expect(await takeViolations()).toEqual([]);
    } finally {
      unregisterPubgate(node);
    }
  });
});
