import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token, type Client } from '../helpers/client.js';
import { TEST_API_KEY, metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';

let gw: GatewayProcess;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

beforeAll(async () => {
  gw = await startGateway({ PUBGATE_API_KEYS: `other-key,${TEST_API_KEY}`, PUBGATE_MAX_PUBLISH_BYTES: '65536' });
});
afterAll(async () => {
  await gw?.stop();
});

function post(path: string, body: string, headers: Record<string, string> = {}, method = 'POST'): Promise<Response> {
  return fetch(`${gw.http}${path}`, {
    method,
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json', ...headers },
    body: method === 'GET' || method === 'HEAD' ? undefined : body,
  });
}

async function expectError(res: Response, status: number, code: string): Promise<void> {
  expect(res.status).toBe(status);
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(0);
}

async function subscriber(channels: string[]): Promise<Client> {
  const c = await connect(gw.url, { token: await token({ sub: 'api-sub', channels }) });
  for (const [i, ch] of channels.entries()) expect(await c.request({ type: 'subscribe', id: i + 1, channel: ch })).toEqual({ type: 'reply', id: i + 1 });
  return c;
}

describe('POST /v1/publish', () => {
  it('answers 200 with the channel and delivers data exactly as published', async () => {
    const c = await subscriber(['api:rt']);
    const values = ['"plain"', '{"u":"日本語 🎉 \\ud83c\\udf89","esc":"\\"q\\" \\\\ \\n"}', '[1,2.50,-3e-7,0.1]', 'null', 'true', '{"a":{"b":{"c":{"d":[[[]]]}}},"e":{}}', '12345678901234567890123'];
    for (const v of values) {
      const res = await publish(gw, `{"channel":"api:rt","data":${v}}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ channel: 'api:rt' });
    }
    for (const v of values) {
      const f = await c.next((x) => x.type === 'message');
      expect(f.channel).toBe('api:rt');
      expect(JSON.stringify(f.data)).toBe(JSON.stringify(JSON.parse(v)));
    }
    await c.close();
  });

  it('accepts Content-Type parameters such as charset', async () => {
    const res = await post('/v1/publish', '{"channel":"x","data":1}', { 'content-type': 'application/json; charset=utf-8' });
    expect(res.status).toBe(200);
  });

  it('answers 401 for a missing, malformed or unknown key, and accepts every configured key', async () => {
    await expectError(await post('/v1/publish', '{"channel":"x","data":1}', { authorization: '' }), 401, 'unauthorized');
    await expectError(await post('/v1/publish', '{"channel":"x","data":1}', { authorization: 'Basic abc' }), 401, 'unauthorized');
    await expectError(await post('/v1/publish', '{"channel":"x","data":1}', { authorization: 'Bearer test-api-key-2' }), 401, 'unauthorized');
    await expectError(await post('/v1/publish', '{"channel":"x","data":1}', { authorization: `Bearer ${TEST_API_KEY}x` }), 401, 'unauthorized');
    expect((await post('/v1/publish', '{"channel":"x","data":1}', { authorization: 'Bearer other-key' })).status).toBe(200);
  });

  it('answers 400 bad_request for invalid JSON, wrong shapes and invalid channels', async () => {
    const bad = ['', '{', 'not json', '[]', '"str"', '{"data":1}', '{"channel":"x"}', '{"channel":"","data":1}', '{"channel":"a b","data":1}',
      `{"channel":"${'a'.repeat(201)}","data":1}`, '{"channel":"x*","data":1}', '{"channel":5,"data":1}'];
    for (const b of bad) await expectError(await post('/v1/publish', b), 400, 'bad_request');
  });

  it('answers 404 for unknown paths and 405 with Allow for other methods', async () => {
    await expectError(await post('/v1/nope', '{}'), 404, 'not_found');
    await expectError(await post('/metrics', '{}', {}, 'GET'), 404, 'not_found');
    const res = await post('/v1/publish', '', {}, 'GET');
    expect(res.headers.get('allow')).toBe('POST');
    await expectError(res, 405, 'method_not_allowed');
    await expectError(await post('/v1/publish/batch', '{}', {}, 'PUT'), 405, 'method_not_allowed');
  });

  it('answers 415 for a Content-Type other than application/json', async () => {
    await expectError(await post('/v1/publish', '{"channel":"x","data":1}', { 'content-type': 'text/plain' }), 415, 'unsupported_media_type');
    await expectError(await post('/v1/publish', 'channel=x', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
  });

  it('answers 413 for a body over maxPublishBytes, declared or streamed', async () => {
    const big = `{"channel":"x","data":"${'a'.repeat(70_000)}"}`;
    await expectError(await post('/v1/publish', big), 413, 'too_large');
    // Chunked, with no Content-Length: the limit is counted while reading.
    const stream = new ReadableStream({
      start(ctl) {
        ctl.enqueue(new TextEncoder().encode(big));
        ctl.close();
      },
    });
    const res = await fetch(`${gw.http}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    await expectError(res, 413, 'too_large');
    // Exactly at the limit is fine.
    const exact = `{"channel":"x","data":"${'a'.repeat(65536 - 25)}"}`;
    expect(Buffer.byteLength(exact)).toBe(65536);
    expect((await post('/v1/publish', exact)).status).toBe(200);
  });

  it('counts published messages and API requests by status', async () => {
    const before = await metric(gw.admin, 'pubgate_messages_published_total');
    const rejected = await metric(gw.admin, 'pubgate_api_requests_total', { endpoint: 'publish', status: '415' });
    expect((await publish(gw, { channel: 'count', data: 1 })).status).toBe(200);
    await post('/v1/publish', '{}', { 'content-type': 'text/plain' });
    expect(await metric(gw.admin, 'pubgate_messages_published_total')).toBe(before + 1);
    expect(await metric(gw.admin, 'pubgate_api_requests_total', { endpoint: 'publish', status: '415' })).toBe(rejected + 1);
  });
});

describe('POST /v1/publish/batch', () => {
  it('publishes up to 1000 messages and answers results in order', async () => {
    const c = await subscriber(['b:1', 'b:2']);
    const messages = Array.from({ length: 1000 }, (_, i) => ({ channel: i % 2 === 0 ? 'b:1' : 'b:2', data: { i } }));
    const res = await post('/v1/publish/batch', JSON.stringify({ messages }));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { results: { channel: string }[] };
    expect(body.results).toEqual(messages.map((m) => ({ channel: m.channel })));
    for (let i = 0; i < 1000; i++) {
      const f = await c.next((x) => x.type === 'message');
      expect(f.data).toEqual({ i });
    }
    await c.close();
  });

  it('delivers batch and single publishes in order, each before anything the subscriber is sent after its 200', async () => {
    const c = await subscriber(['b:order']);
    // Batches over 32 messages: uWS queues at most 32 per subscriber before it sends them.
    const batch = (from: number, n: number) => ({ messages: range(n).map((k) => ({ channel: 'b:order', data: { i: from + k } })) });
    expect((await post('/v1/publish/batch', JSON.stringify(batch(0, 100)))).status).toBe(200);
    expect((await publish(gw, { channel: 'b:order', data: { i: 100 } })).status).toBe(200);
    expect((await post('/v1/publish/batch', JSON.stringify(batch(101, 40)))).status).toBe(200);
    // The ping reply goes out after every 200 above: the messages must already be ahead of it.
    expect(await c.request({ type: 'ping', id: 9 })).toEqual({ type: 'reply', id: 9 });
    expect(c.frames.filter((f) => f.type === 'message').map((f) => (f.data as { i: number }).i)).toEqual(range(141));
    await c.close();
  });

  it('keeps each request\'s order when batch and single publishes to one channel run concurrently', async () => {
    const c = await subscriber(['b:conc']);
    const tags = ['a', 'b', 'c', 'd'];
    const requests = tags.map((t) =>
      post('/v1/publish/batch', JSON.stringify({ messages: range(60).map((k) => ({ channel: 'b:conc', data: { t, k } })) })));
    const singles = range(20).map((k) => publish(gw, { channel: 'b:conc', data: { t: 's', k } }));
    for (const r of await Promise.all([...requests, ...singles])) expect(r.status).toBe(200);
    expect(await c.request({ type: 'ping', id: 3 })).toEqual({ type: 'reply', id: 3 });
    const got = c.frames.filter((f) => f.type === 'message').map((f) => f.data as { t: string; k: number });
    expect(got).toHaveLength(4 * 60 + 20);
    for (const t of tags) expect(got.filter((d) => d.t === t).map((d) => d.k)).toEqual(range(60));
    // Single publishes on separate connections have no order among themselves; each arrives once.
    expect(got.filter((d) => d.t === 's').map((d) => d.k).sort((x, y) => x - y)).toEqual(range(20));
    await c.close();
  });

  it('answers 400 for 0 or 1001 messages or one invalid message, and publishes nothing then', async () => {
    const before = await metric(gw.admin, 'pubgate_messages_published_total');
    await expectError(await post('/v1/publish/batch', '{"messages":[]}'), 400, 'bad_request');
    const many = Array.from({ length: 1001 }, () => ({ channel: 'x', data: 0 }));
    await expectError(await post('/v1/publish/batch', JSON.stringify({ messages: many })), 400, 'bad_request');
    await expectError(await post('/v1/publish/batch', '{"messages":[{"channel":"ok","data":1},{"channel":"bad name","data":2}]}'), 400, 'bad_request');
    await expectError(await post('/v1/publish/batch', '{"messages":"no"}'), 400, 'bad_request');
    expect(await metric(gw.admin, 'pubgate_messages_published_total')).toBe(before);
  });
});

describe('POST /v1/disconnect', () => {
  it('answers {} and closes that user\'s connections with 4501, and no one else\'s', async () => {
    const a1 = await connect(gw.url, { token: await token({ sub: 'dis-a', channels: [] }) });
    const a2 = await connect(gw.url, { token: await token({ sub: 'dis-a', channels: [] }) });
    const b = await connect(gw.url, { token: await token({ sub: 'dis-b', channels: [] }) });
    const res = await post('/v1/disconnect', '{"user":"dis-a"}');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    expect((await a1.closed).code).toBe(4501);
    expect((await a2.closed).code).toBe(4501);
    expect(await b.request({ type: 'ping', id: 9 })).toEqual({ type: 'reply', id: 9 });
    await b.close();
  });

  it('answers 400 without a user', async () => {
    await expectError(await post('/v1/disconnect', '{}'), 400, 'bad_request');
    await expectError(await post('/v1/disconnect', '{"user":7}'), 400, 'bad_request');
  });
});

describe('publish API without keys', () => {
  it('answers every request 401', async () => {
    const bare = await startGateway({ PUBGATE_API_KEYS: '' });
    try {
      const res = await publish(bare, { channel: 'x', data: 1 });
      await expectError(res, 401, 'unauthorized');
      const res2 = await publish(bare, { channel: 'x', data: 1 }, '');
      expect(res2.status).toBe(401);
    } finally {
      await bare.stop();
    }
  });
});
