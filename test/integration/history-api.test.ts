/**
 * GET /v1/history (contract 1.1, "History API and rewind") on the embedded
 * broker, Redis and Redis Cluster: the last `limit` messages (default and
 * clamp: the history size), pages after `since`+`epoch`, 409
 * recovery_failed, the 400s, 401 and 405, data byte-for-byte, the metric.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TEST_API_KEY, metric, type GatewayProcess } from '../helpers/gateway.js';
import { BROKERS_AND_CLUSTER, publishBatchOffsets, range, useHistoryGateway } from '../helpers/history.js';

const SIZE = 5;
const uid = (): string => randomUUID().slice(0, 8);

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly body: Record<string, unknown>;
}

async function getHistory(gw: GatewayProcess, query: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(`${gw.http}/v1/history?${query}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` }, ...init });
  const text = await res.text();
  return { status: res.status, text, body: JSON.parse(text) as Record<string, unknown> };
}

const msgs = (offsets: readonly number[]): Array<{ offset: number; data: { n: number } }> => offsets.map((n) => ({ offset: n, data: { n } }));

describe.each(BROKERS_AND_CLUSTER)('GET /v1/history on the %s broker', (kind) => {
  const { gw } = useHistoryGateway(kind, { PUBGATE_HISTORY_SIZE: String(SIZE) });

  it('answers the last limit messages oldest first, the history size by default and as the clamp, and the current position', async () => {
    const ch = `h:api:${uid()}`;
    const empty = await getHistory(gw(), `channel=${ch}`);
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual({ channel: ch, epoch: expect.any(String), offset: 0, messages: [] });
    const epoch = empty.body.epoch as string;

    await publishBatchOffsets(gw(), ch, range(1, 8).map((n) => ({ n })));
    expect((await getHistory(gw(), `channel=${ch}&limit=3`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: msgs([6, 7, 8]) });
    expect((await getHistory(gw(), `channel=${ch}`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: msgs(range(4, 8)) });
    expect((await getHistory(gw(), `channel=${ch}&limit=1000`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: msgs(range(4, 8)) });
  });

  it('pages after since with the epoch, and answers 409 recovery_failed when since is no longer held or the epoch differs', async () => {
    const ch = `h:api:${uid()}`;
    await publishBatchOffsets(gw(), ch, range(1, 8).map((n) => ({ n })));
    const epoch = (await getHistory(gw(), `channel=${ch}&limit=1`)).body.epoch as string;
    expect((await getHistory(gw(), `channel=${ch}&limit=2&since=4&epoch=${epoch}`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: msgs([5, 6]) });
    expect((await getHistory(gw(), `channel=${ch}&limit=2&since=6&epoch=${epoch}`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: msgs([7, 8]) });
    expect((await getHistory(gw(), `channel=${ch}&since=8&epoch=${epoch}`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: [] });
    expect((await getHistory(gw(), `channel=${ch}&since=3&epoch=${epoch}`)).body).toEqual({ channel: ch, epoch, offset: 8, messages: msgs(range(4, 8)) });

    for (const q of [`since=2&epoch=${epoch}`, 'since=5&epoch=other', `since=9&epoch=${epoch}`]) {
      const r = await getHistory(gw(), `channel=${ch}&${q}`);
      expect(r.status, q).toBe(409);
      expect(r.body, q).toEqual({ error: { code: 'recovery_failed', message: expect.any(String) } });
    }
  });

  it('answers data exactly as published (no re-serialization)', async () => {
    const ch = `h:api:${uid()}`;
    const raw = '{"x":1.0,"y":"\\u00e9","z":1e400,"w":[ 1 , 2 ]}';
    const res = await fetch(`${gw().http}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: `{"channel":"${ch}","data":${raw}}`,
    });
    expect(res.status).toBe(200);
    const r = await getHistory(gw(), `channel=${ch}`);
    expect(r.text).toContain(`"messages":[{"offset":1,"data":${raw}}]`);
  });

  it('refuses bad requests with 400, a missing key with 401, and other methods with 405, counting them under endpoint history', async () => {
    const ch = `h:api:${uid()}`;
    const before400 = await metric(gw().admin, 'pubgate_api_requests_total', { endpoint: 'history', status: '400' });
    const bad = [
      '',
      'channel=',
      'channel=bad%20name',
      `channel=p:${uid()}`,
      `channel=${ch}&limit=0`,
      `channel=${ch}&limit=-1`,
      `channel=${ch}&limit=abc`,
      `channel=${ch}&since=3`,
      `channel=${ch}&epoch=e`,
      `channel=${ch}&since=x&epoch=e`,
    ];
    for (const q of bad) {
      const r = await getHistory(gw(), q);
      expect(r.status, q).toBe(400);
      expect((r.body.error as { code: string }).code, q).toBe('bad_request');
    }
    expect(await metric(gw().admin, 'pubgate_api_requests_total', { endpoint: 'history', status: '400' })).toBe(before400 + bad.length);

    const before401 = await metric(gw().admin, 'pubgate_api_requests_total', { endpoint: 'history', status: '401' });
    const before405 = await metric(gw().admin, 'pubgate_api_requests_total', { endpoint: 'history', status: '405' });
    const noKey = await fetch(`${gw().http}/v1/history?channel=${ch}`);
    expect(noKey.status).toBe(401);
    await noKey.text();
    const post = await fetch(`${gw().http}/v1/history?channel=${ch}`, { method: 'POST', headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' }, body: '{}' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET');
    await post.text();
    expect(await metric(gw().admin, 'pubgate_api_requests_total', { endpoint: 'history', status: '401' })).toBe(before401 + 1);
    expect(await metric(gw().admin, 'pubgate_api_requests_total', { endpoint: 'history', status: '405' })).toBe(before405 + 1);
  });
});
