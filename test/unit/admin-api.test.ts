/**
 * The admin API (src/admin/admin-api.ts) on doubles: the token checked before
 * the route, the console off, what other nodes reported validated field by
 * field, the busiest channels counted exactly in a second step, and the
 * broker's refusals answered 503 with Retry-After.
 */
import { describe, expect, it } from 'vitest';
import { createAdminApi, type AdminApiOptions, type AdminRequestHead } from '../../src/admin/admin-api.js';
import type { PublishSink } from '../../src/api/publish-api.js';
import type { NodeReport } from '../../src/broker/broker.js';
import { NO_OPTIONS } from '../../src/channels/namespaces.js';
import { GatewayError } from '../../src/errors.js';
import type { QuestionOf } from '../../src/hub/control.js';

const TOKEN = 'unit-admin-token-0123456789abcdef';

const sink: PublishSink = {
  publishData: () => Promise.resolve({}),
  disconnectUser: () => Promise.resolve(),
  serverSubscription: () => Promise.resolve(),
  presence: () => Promise.reject(new Error('no presence')),
  presenceStats: () => Promise.reject(new Error('no presence')),
  history: () => Promise.reject(new Error('no history')),
  channels: () => Promise.resolve({ counts: [], more: false }),
};

function api(o: Partial<AdminApiOptions> = {}): ReturnType<typeof createAdminApi> {
  return createAdminApi({
    enabled: true,
    token: TOKEN,
    maxPublishBytes: 1024,
    files: new Map([['index.html', { body: Buffer.from('<html>'), type: 'text/html; charset=utf-8' }]]),
    sink,
    nodes: () => Promise.resolve([]),
    counts: () => Promise.resolve({ counts: [], more: false, byNode: [] }),
    channelOptions: () => NO_OPTIONS,
    self: 'me~1',
    selfId: 'me',
    brokerKind: 'redis',
    now: () => Date.parse('2026-01-01T00:00:00Z'),
    ...o,
  });
}

const head = (path: string, o: Partial<AdminRequestHead> = {}): AdminRequestHead => ({
  method: 'get', path, query: '', authorization: `Bearer ${TOKEN}`, contentType: '', contentLength: '', ...o,
});

describe('admin API preflight', () => {
  it('checks the token before the route: an unknown path is 401 without it, 404 with it', () => {
    const a = api();
    for (const auth of ['', 'Bearer nope', `Bearer ${TOKEN}x`, `bearer  ${TOKEN.slice(1)}`, TOKEN]) {
      const p = a.preflight(head('/admin/api/nope', { authorization: auth }));
      expect(p.kind).toBe('answer');
      if (p.kind === 'answer') {
        expect(p.response.status, auth).toBe(401);
        expect(p.response.headers?.['WWW-Authenticate']).toBe('Bearer realm="pubgate-admin"');
      }
    }
    const ok = a.preflight(head('/admin/api/nope'));
    expect(ok.kind === 'answer' && ok.response.status).toBe(404);
    // Case-insensitive scheme, as the publish API.
    expect(a.preflight(head('/admin/api/overview', { authorization: `bearer ${TOKEN}` }))).toEqual({ kind: 'serve', endpoint: 'overview', body: false });
  });

  it('answers 404 saying why when the console is off or has no token, on every path', () => {
    for (const [o, message] of [
      [{ token: undefined }, 'the admin console is off: set PUBGATE_ADMIN_TOKEN'],
      [{ enabled: false }, 'the admin console is off on this node (PUBGATE_ADMIN_CONSOLE=false)'],
    ] as const) {
      for (const path of ['/admin', '/admin/', '/admin/api/overview']) {
        const p = api(o).preflight(head(path));
        expect(p.kind === 'answer' && p.response.status).toBe(404);
        expect(p.kind === 'answer' && JSON.parse(String(p.response.body))).toEqual({ error: { code: 'not_found', message } });
      }
    }
  });

  it('refuses a POST body that is not JSON or is over the limit before reading it', () => {
    const a = api();
    const post = (o: Partial<AdminRequestHead>): number => {
      const p = a.preflight(head('/admin/api/publish', { method: 'post', contentType: 'application/json', ...o }));
      return p.kind === 'answer' ? p.response.status : 0;
    };
    expect(post({ contentType: 'text/plain' })).toBe(415);
    expect(post({ contentLength: '1025' })).toBe(413);
    expect(post({ contentLength: '1024' })).toBe(0);
  });
});

describe('admin API answers', () => {
  it('validates what other nodes reported, field by field, and sorts the nodes by id', async () => {
    const reports: NodeReport[] = [
      { instance: 'zz~2', info: { id: 'b', connections: { websocket: 2, sse: 1, pusher: -4 }, subscriptions: 'x', broker: 'weird', draining: 'yes', version: 7 }, reportedAtMs: 1000 },
      { instance: 'me~1', info: { id: 'a', connections: { total: 5, websocket: 5, sse: 0, pusher: 0 }, subscriptions: 9, channels: 3, broker: 'ready', draining: true, version: '1.2.3', startedAt: '2025-12-31T23:00:00Z', uptimeSeconds: 3600 }, reportedAtMs: 2000 },
      { instance: 'old-node~3', info: undefined, reportedAtMs: 0 },
    ];
    const r = await api({ nodes: () => Promise.resolve(reports) }).handle('overview', '');
    expect(r.status).toBe(200);
    const o = JSON.parse(String(r.body)) as { broker: string; totals: unknown; nodes: Array<Record<string, unknown>> };
    expect(o.broker).toBe('redis');
    expect(o.nodes.map((n) => n.id)).toEqual(['a', 'b', 'old-node']);
    expect(o.totals).toEqual({ nodes: 3, connections: 8, subscriptions: 9 });
    expect(o.nodes[0]).toMatchObject({ instance: 'me~1', self: true, draining: true, version: '1.2.3', startedAt: '2025-12-31T23:00:00.000Z', uptimeSeconds: 3600, reportedAt: '1970-01-01T00:00:02.000Z' });
    expect(o.nodes[1]).toMatchObject({ connections: { total: 3, websocket: 2, sse: 1, pusher: 0 }, subscriptions: 0, broker: 'ready', draining: false, version: 'unknown', self: false });
    expect(o.nodes[2]).toMatchObject({ id: 'old-node', connections: { total: 0, websocket: 0, sse: 0, pusher: 0 }, reportedAt: '2026-01-01T00:00:00.000Z' });
  });

  it('lists the busiest channels with exact counts from a second query', async () => {
    const asked: QuestionOf[] = [];
    const counts = (q: QuestionOf): ReturnType<AdminApiOptions['counts']> => {
      asked.push(q);
      if ('top' in q && q.top !== undefined) return Promise.resolve({ counts: [['a', 5], ['b', 4], ['c', 1]], more: false, byNode: [] });
      return Promise.resolve({ counts: [['a', 5], ['b', 7]], more: false, byNode: [] });
    };
    const r = await api({ counts }).handle('channels', 'limit=2&prefix=x');
    expect(JSON.parse(String(r.body))).toEqual({ channels: [{ channel: 'b', subscribers: 7 }, { channel: 'a', subscribers: 5 }], more: true });
    expect(asked).toEqual([{ app: '', prefix: 'x', top: 1000 }, { app: '', channels: ['a', 'b'] }]);
    const bad = await api().handle('channels', 'limit=0');
    expect(bad.status).toBe(400);
  });

  it('answers a broker refusal 503 unavailable with Retry-After', async () => {
    const down = (): Promise<never> => Promise.reject(new GatewayError('unavailable', 'broker is not connected', 1));
    for (const [endpoint, input, o] of [
      ['overview', '', { nodes: down }],
      ['channels', '', { counts: down }],
      ['channel', 'channel=a', { counts: down }],
      ['publish', '{"channel":"a","data":1}', { sink: { ...sink, publishData: down } }],
      ['disconnect', '{"user":"u"}', { sink: { ...sink, disconnectUser: down } }],
      ['subscribe', '{"user":"u","channel":"a"}', { sink: { ...sink, serverSubscription: down } }],
    ] as const) {
      const r = await api(o as Partial<AdminApiOptions>).handle(endpoint, input);
      expect(r.status, endpoint).toBe(503);
      expect(r.headers?.['Retry-After'], endpoint).toBe('1');
      expect(JSON.parse(String(r.body)).error.code).toBe('unavailable');
    }
  });

  it('publishes the data byte for byte as sent', async () => {
    let got = '';
    const r = await api({ sink: { ...sink, publishData: (_c, raw) => ((got = raw), Promise.resolve({ offset: 4 })) } })
      .handle('publish', '{"channel":"a","data": {"x" : 1.50}}');
    expect(got).toBe('{"x" : 1.50}');
    expect(JSON.parse(String(r.body))).toEqual({ channel: 'a', offset: 4 });
  });
});
