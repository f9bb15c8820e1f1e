/**
 * Unit: createApiClient of @pubgate/client against a scripted HTTP server on
 * 127.0.0.1: the request of every method (path, query, headers, body), the
 * answers it returns, the errors it raises, and which requests it retries
 * (a publish only with an idempotency key, a batch only when every message
 * has one; reads, subscribe/unsubscribe and disconnect always) and which not.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createApiClient, type ApiClientOptions, type PubgateApiClient, type PubgateApiError } from '../../packages/client/src/index.js';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

/** An answer: status, JSON body (or text), headers; `hang` never answers. */
type Answer = { status: number; body?: unknown; headers?: Record<string, string> } | 'hang';

interface Fake {
  readonly seen: Seen[];
  readonly url: string;
  /** Answers for the next requests, in order; when empty, 200 `{}`. */
  readonly answers: Answer[];
}

const servers: Server[] = [];
const hanging: ServerResponse[] = [];

async function fake(): Promise<Fake> {
  const seen: Seen[] = [];
  const answers: Answer[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const a = answers.shift() ?? { status: 200, body: {} };
      if (a === 'hang') {
        hanging.push(res);
        return;
      }
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
      res.end(typeof a.body === 'string' ? a.body : JSON.stringify(a.body ?? {}));
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { seen, answers, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

function api(f: Fake, o: Partial<ApiClientOptions> = {}): PubgateApiClient {
  return createApiClient({ url: f.url, apiKey: 'k-123', backoff: { minMs: 1, maxMs: 5 }, ...o });
}

const errorBody = (code: string, message = code): { error: { code: string; message: string } } => ({ error: { code, message } });

afterEach(async () => {
  for (const res of hanging.splice(0)) res.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

describe('createApiClient: requests and answers', () => {
  it('publish posts the channel and data with the bearer key, and resolves with the channel and offset', async () => {
    const f = await fake();
    f.answers.push({ status: 200, body: { channel: 'news', offset: 42 } });
    await expect(api(f).publish('news', { headline: 'é' })).resolves.toEqual({ channel: 'news', offset: 42 });
    const [r] = f.seen;
    expect(r).toMatchObject({ method: 'POST', url: '/v1/publish', body: '{"channel":"news","data":{"headline":"é"}}' });
    expect(r!.headers.authorization).toBe('Bearer k-123');
    expect(r!.headers['content-type']).toBe('application/json');
    expect(r!.headers['idempotency-key']).toBeUndefined();
  });

  it('publish sends the idempotency key as the Idempotency-Key header and exclude in the body; no offset on a channel without history', async () => {
    const f = await fake();
    f.answers.push({ status: 200, body: { channel: 'chat:1' } });
    await expect(api(f).publish('chat:1', 1, { idempotencyKey: 'order-7 ok', exclude: 'c9f1' })).resolves.toEqual({ channel: 'chat:1' });
    expect(f.seen[0]!.headers['idempotency-key']).toBe('order-7 ok');
    expect(JSON.parse(f.seen[0]!.body)).toEqual({ channel: 'chat:1', data: 1, exclude: 'c9f1' });
  });

  it('publishBatch posts the messages with their idempotencyKey and exclude, and maps the results in order', async () => {
    const f = await fake();
    f.answers.push({ status: 200, body: { results: [{ channel: 'a', offset: 1 }, { channel: 'b' }] } });
    const r = await api(f).publishBatch([
      { channel: 'a', data: 'x', idempotencyKey: 'k1' },
      { channel: 'b', data: null, exclude: 'c2' },
    ]);
    expect(r).toEqual([{ channel: 'a', offset: 1 }, { channel: 'b' }]);
    expect(f.seen[0]).toMatchObject({ method: 'POST', url: '/v1/publish/batch' });
    expect(JSON.parse(f.seen[0]!.body)).toEqual({ messages: [{ channel: 'a', data: 'x', idempotencyKey: 'k1' }, { channel: 'b', data: null, exclude: 'c2' }] });
  });

  it('history asks for the last limit messages, or those after since with its epoch, and resolves with the answer', async () => {
    const f = await fake();
    const answer = { channel: 'feed:1', epoch: 'h7 Kq', offset: 9, messages: [{ offset: 8, data: { a: 1 } }, { offset: 9, data: 'b' }] };
    f.answers.push({ status: 200, body: answer }, { status: 200, body: { ...answer, messages: [] } });
    const client = api(f);
    await expect(client.history('feed:1', { limit: 2 })).resolves.toEqual(answer);
    await expect(client.history('feed:1', { since: { offset: 9, epoch: 'h7 Kq' } })).resolves.toEqual({ ...answer, messages: [] });
    expect(f.seen.map((r) => [r.method, r.url])).toEqual([
      ['GET', '/v1/history?channel=feed%3A1&limit=2'],
      ['GET', '/v1/history?channel=feed%3A1&since=9&epoch=h7%20Kq'],
    ]);
    expect(f.seen[0]!.headers.authorization).toBe('Bearer k-123');
    expect(f.seen[0]!.headers['content-type']).toBeUndefined();
  });

  it('history rejects with recovery_failed (409) when the gateway no longer holds the messages, without retrying', async () => {
    const f = await fake();
    f.answers.push({ status: 409, body: errorBody('recovery_failed', 'offset 3 is no longer held') });
    const e = await api(f).history('feed:1', { since: { offset: 3, epoch: 'x' } }).then(
      () => {
        throw new Error('resolved');
      },
      (err: unknown) => err as PubgateApiError,
    );
    expect(e).toMatchObject({ name: 'PubgateApiError', code: 'recovery_failed', status: 409 });
    expect(e.message).toContain('offset 3 is no longer held');
    expect(f.seen).toHaveLength(1);
  });

  it('presence, presenceStats, subscribeUser, unsubscribeUser and disconnect call their endpoints', async () => {
    const f = await fake();
    f.answers.push(
      { status: 200, body: { channel: 'chat:1', members: [{ user: '42', info: { name: 'Ann' }, conns: 2 }], users: 1, connections: 2 } },
      { status: 200, body: { channel: 'chat:1', users: 1, connections: 2 } },
    );
    const client = api(f);
    await expect(client.presence('chat:1')).resolves.toEqual({
      channel: 'chat:1',
      members: [{ user: '42', info: { name: 'Ann' }, conns: 2 }],
      users: 1,
      connections: 2,
      truncated: false,
    });
    await expect(client.presenceStats('chat:1')).resolves.toEqual({ channel: 'chat:1', users: 1, connections: 2 });
    await client.subscribeUser('42', 'news');
    await client.unsubscribeUser('42', 'news');
    await client.disconnect('42');
    expect(f.seen.map((r) => [r.method, r.url, r.body])).toEqual([
      ['GET', '/v1/presence?channel=chat%3A1', ''],
      ['GET', '/v1/presence/stats?channel=chat%3A1', ''],
      ['POST', '/v1/subscribe', '{"user":"42","channel":"news"}'],
      ['POST', '/v1/unsubscribe', '{"user":"42","channel":"news"}'],
      ['POST', '/v1/disconnect', '{"user":"42"}'],
    ]);
  });
});

describe('createApiClient: retries', () => {
  it('a publish with an idempotency key is retried after a 503 with the same key and body, and resolves with the answer', async () => {
    const f = await fake();
    f.answers.push({ status: 503, body: errorBody('unavailable'), headers: { 'retry-after': '0' } }, { status: 200, body: { channel: 'n', offset: 5 } });
    await expect(api(f).publish('n', 'x', { idempotencyKey: 'k' })).resolves.toEqual({ channel: 'n', offset: 5 });
    expect(f.seen).toHaveLength(2);
    expect(f.seen[1]!.headers['idempotency-key']).toBe('k');
    expect(f.seen[1]!.body).toBe(f.seen[0]!.body);
  });

  it('a publish without a key is sent once: a 503 rejects with unavailable, saying it may or may not have been published', async () => {
    const f = await fake();
    f.answers.push({ status: 503, body: errorBody('unavailable', 'broker down'), headers: { 'retry-after': '2' } });
    const e = await api(f).publish('n', 'x').then(
      () => {
        throw new Error('resolved');
      },
      (err: unknown) => err as PubgateApiError,
    );
    expect(e).toMatchObject({ code: 'unavailable', status: 503, retryAfter: 2 });
    expect(e.message).toMatch(/may or may not/);
    expect(f.seen).toHaveLength(1);
  });

  it('a publish that gets no answer: with a key it is tried 1 + retries times, then rejects with timeout; without a key once', async () => {
    const f = await fake();
    f.answers.push('hang', 'hang', 'hang');
    const client = api(f, { timeoutMs: 150, retries: 1 });
    await expect(client.publish('n', 1, { idempotencyKey: 'k' })).rejects.toMatchObject({ code: 'timeout' });
    expect(f.seen).toHaveLength(2);
    await expect(client.publish('n', 2)).rejects.toMatchObject({ code: 'timeout', message: expect.stringMatching(/may or may not/) as unknown });
    expect(f.seen).toHaveLength(3);
  });

  it('a batch is retried only when every message has a key', async () => {
    const f = await fake();
    const busy: Answer = { status: 503, body: errorBody('unavailable'), headers: { 'retry-after': '0' } };
    f.answers.push(busy, { status: 200, body: { results: [{ channel: 'a' }] } }, busy);
    const client = api(f);
    await expect(client.publishBatch([{ channel: 'a', data: 1, idempotencyKey: 'k' }])).resolves.toEqual([{ channel: 'a' }]);
    expect(f.seen).toHaveLength(2);
    await expect(client.publishBatch([{ channel: 'a', data: 1, idempotencyKey: 'k' }, { channel: 'b', data: 2 }])).rejects.toMatchObject({ code: 'unavailable' });
    expect(f.seen).toHaveLength(3);
  });

  it('reads are retried after 429 and 503 up to `retries` times; a 4xx other than 429 is not retried', async () => {
    const f = await fake();
    const busy = (status: number): Answer => ({ status, body: errorBody(status === 429 ? 'rate_limited' : 'unavailable'), headers: { 'retry-after': '0' } });
    f.answers.push(busy(429), busy(503), busy(503));
    await expect(api(f, { retries: 2 }).presenceStats('chat:1')).rejects.toMatchObject({ code: 'unavailable', status: 503 });
    expect(f.seen).toHaveLength(3);
    f.answers.push({ status: 400, body: errorBody('bad_request', 'chat:1 has no presence') });
    await expect(api(f).presence('chat:1')).rejects.toMatchObject({ code: 'bad_request', status: 400 });
    expect(f.seen).toHaveLength(4);
  });

  it('a status without the gateway error body gets the code of its status', async () => {
    const f = await fake();
    f.answers.push({ status: 401, body: 'nope' }, { status: 502, body: '<html>bad gateway</html>' });
    await expect(api(f).disconnect('42')).rejects.toMatchObject({ code: 'unauthorized', status: 401 });
    await expect(api(f, { retries: 0 }).disconnect('42')).rejects.toMatchObject({ code: 'unavailable', status: 502 });
  });

  it('a gateway that is not listening rejects with network after the retries of a safe call', async () => {
    const f = await fake();
    const url = f.url;
    await new Promise((resolve) => servers.pop()!.close(resolve));
    await expect(createApiClient({ url, apiKey: 'k', retries: 1, backoff: { minMs: 1, maxMs: 2 } }).history('feed:1')).rejects.toMatchObject({ code: 'network' });
  });
});

describe('createApiClient: checks before sending', () => {
  it('rejects an invalid idempotency key, channel, limit or since with bad_request and sends nothing', async () => {
    const f = await fake();
    const client = api(f);
    for (const key of ['', 'x'.repeat(129), 'clé', 'a\nb']) {
      await expect(client.publish('n', 1, { idempotencyKey: key })).rejects.toMatchObject({ code: 'bad_request' });
      await expect(client.publishBatch([{ channel: 'n', data: 1, idempotencyKey: key }])).rejects.toMatchObject({ code: 'bad_request' });
    }
    await expect(client.publish('n', 1, { idempotencyKey: 'x'.repeat(128) })).resolves.toEqual({ channel: 'n' });
    await expect(client.publish('bad channel', 1)).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.publishBatch([])).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.history('feed:1', { limit: 0 })).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.history('feed:1', { since: { offset: 1, epoch: '' } })).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.disconnect('')).rejects.toMatchObject({ code: 'bad_request' });
    expect(f.seen).toHaveLength(1);
  });

  it('refuses to start in a browser (the API key would be readable) unless dangerouslyAllowBrowser is set', () => {
    const g = globalThis as { document?: unknown };
    g.document = {};
    try {
      expect(() => createApiClient({ url: 'http://127.0.0.1:1', apiKey: 'k' })).toThrow(/browser/);
      expect(() => createApiClient({ url: 'http://127.0.0.1:1', apiKey: 'k', dangerouslyAllowBrowser: true })).not.toThrow();
    } finally {
      delete g.document;
    }
  });

  it('throws a TypeError for a missing key, a URL that is not http(s), or retries out of range', () => {
    expect(() => createApiClient({ url: 'http://127.0.0.1:1', apiKey: '' })).toThrow(TypeError);
    expect(() => createApiClient({ url: 'ws://127.0.0.1:1', apiKey: 'k' })).toThrow(TypeError);
    expect(() => createApiClient({ url: 'http://127.0.0.1:1', apiKey: 'k', retries: 11 })).toThrow(TypeError);
  });
});
