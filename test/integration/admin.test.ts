/**
 * The admin console's backend (docs/admin.md) on real gateway processes: two
 * nodes on one real redis-server (a third one killed), and single nodes on the
 * embedded broker for the switches.
 *
 * - the overview lists both nodes with the connections (by transport) and
 *   subscriptions of each, and a node killed with SIGKILL drops out once its
 *   registry lease runs out;
 * - the busiest channels and GET /v1/channels sum every node's subscriptions;
 * - the inspector gives a channel's subscribers per node, its presence and its
 *   last history messages;
 * - an admin publish reaches a real WebSocket subscriber on the other node; an
 *   admin disconnect closes the user's sockets with 4501 on both nodes; an
 *   admin subscribe subscribes them on both;
 * - every /admin/api/* path answers 401 without the token or with a wrong one
 *   (unknown paths too), the public port answers 404 for /admin/*;
 * - the static console files with their security headers; the console off
 *   (no token, or PUBGATE_ADMIN_CONSOLE=false) answers 404 saying so; with
 *   NODE_ENV=production a missing or short token stops the process (exit 1).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { metric, runGateway, startGateway, TEST_API_KEY, TEST_SECRET, type GatewayProcess } from '../helpers/gateway.js';
import { closeAll, NodeGroup, startNodes, Subscriber, publishOne } from '../helpers/multinode.js';
import { uid } from '../helpers/presence.js';
import { pollUntil, redisCli } from '../helpers/redis.js';
import { openSse, type SseStreamClient } from '../helpers/sse.js';

const ADMIN_TOKEN = 'admin-test-token-0123456789abcdef';
const ENV = {
  PUBGATE_ADMIN_TOKEN: ADMIN_TOKEN,
  PUBGATE_LOG_LEVEL: 'info',
  PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'room:*', presence: true, history: { size: 50 } }]),
};

const group = new NodeGroup();
const subs: Subscriber[] = [];
const streams: SseStreamClient[] = [];
let a: GatewayProcess;
let b: GatewayProcess;

interface AdminNode {
  instance: string;
  id: string;
  version: string;
  connections: { total: number; websocket: number; sse: number; pusher: number };
  subscriptions: number;
  channels: number;
  broker: string;
  draining: boolean;
  self: boolean;
  uptimeSeconds: number;
  startedAt: string;
  reportedAt: string;
}
interface Overview {
  generatedAt: string;
  broker: string;
  totals: { nodes: number; connections: number; subscriptions: number };
  nodes: AdminNode[];
}

function adminGet(gw: GatewayProcess, path: string, tok = ADMIN_TOKEN): Promise<Response> {
  return fetch(`${gw.admin}${path}`, { headers: { authorization: `Bearer ${tok}` } });
}

function adminPost(gw: GatewayProcess, path: string, body: unknown, tok = ADMIN_TOKEN): Promise<Response> {
  return fetch(`${gw.admin}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function okJson<T>(res: Promise<Response>): Promise<T> {
  const r = await res;
  const text = await r.text();
  if (r.status !== 200) throw new Error(`expected 200, got ${r.status} ${text}`);
  return JSON.parse(text) as T;
}

const overview = (gw: GatewayProcess): Promise<Overview> => okJson<Overview>(adminGet(gw, '/admin/api/overview'));
const nodeById = (o: Overview, id: string): AdminNode | undefined => o.nodes.find((n) => n.id === id);

async function open(gw: GatewayProcess, user: string, ...channels: string[]): Promise<Subscriber> {
  const s = await Subscriber.open(gw.url, { user, channels: ['mn:*', 'room:*', 'adm:*'] });
  subs.push(s);
  if (channels.length > 0) await s.subscribe(...channels);
  return s;
}

beforeAll(async () => {
  await group.startOnRedis(['adm-a', 'adm-b'], ENV);
  [a, b] = [group.node(0), group.node(1)];
});

afterAll(async () => {
  await closeAll(subs);
  for (const s of streams.splice(0)) s.close();
  await group.stop();
});

describe('the overview', () => {
  it('lists both nodes with their connections by transport and their subscriptions', async () => {
    const tag = uid();
    await open(a, 'ov-1', `mn:${tag}:1`, `mn:${tag}:2`);
    await open(a, 'ov-2', `mn:${tag}:1`);
    await open(b, 'ov-3', `mn:${tag}:1`);
    const jwt = await token({ sub: 'ov-sse', channels: ['mn:*'] });
    const sse = await openSse(b.http, { token: jwt, channels: [`mn:${tag}:sse`] });
    streams.push(sse);
    expect(sse.status).toBe(200);
    await sse.waitFor((e) => e.event === 'welcome' || e.event === 'subscribed');
    const want = (o: Overview): boolean => {
      const na = nodeById(o, 'adm-a');
      const nb = nodeById(o, 'adm-b');
      return na?.connections.websocket === 2 && na.subscriptions === 3 && nb?.connections.websocket === 1 && nb.connections.sse === 1 && nb.subscriptions === 2;
    };
    // Each node reports at its lease renewal (every second): wait for the reports that include these connections.
    let last: Overview | undefined;
    await pollUntil(async () => want((last = await overview(a))), 'both nodes reporting their connections');
    const o = last!;
    expect(o.broker).toBe('redis');
    expect(o.totals).toEqual({ nodes: 2, connections: 4, subscriptions: 5 });
    expect(o.nodes.map((n) => n.id)).toEqual(['adm-a', 'adm-b']);
    const na = nodeById(o, 'adm-a')!;
    const nb = nodeById(o, 'adm-b')!;
    expect(na).toMatchObject({ connections: { total: 2, websocket: 2, sse: 0, pusher: 0 }, channels: 2, broker: 'ready', draining: false, self: true, version: '0.1.0' });
    expect(nb).toMatchObject({ connections: { total: 2, websocket: 1, sse: 1, pusher: 0 }, channels: 2, self: false });
    expect(na.instance).toMatch(/^adm-a~/);
    for (const n of o.nodes) {
      expect(Number.isNaN(Date.parse(n.startedAt))).toBe(false);
      expect(Number.isNaN(Date.parse(n.reportedAt))).toBe(false);
      expect(Number.isSafeInteger(n.uptimeSeconds)).toBe(true);
    }
    // Asked on the other node: the same nodes, that one is `self`.
    const fromB = await overview(b);
    expect(nodeById(fromB, 'adm-b')?.self).toBe(true);
    expect(nodeById(fromB, 'adm-a')?.self).toBe(false);
  });

  it('drops a node killed with SIGKILL once its registry lease runs out', async () => {
    const [c] = await startNodes(['adm-c'], { ...ENV, PUBGATE_REDIS_URL: group.redis().url }, group.nodes);
    await pollUntil(async () => nodeById(await overview(a), 'adm-c') !== undefined, 'the new node in the overview');
    const instance = nodeById(await overview(a), 'adm-c')!.instance;
    // Its info is stored beside its lease (docs/protocol.md, "Channel list and the admin console").
    const infoFields = (): Promise<string[]> => redisCli(group.redis().port, 'HKEYS', '{pubgate:nodes}info');
    expect(await infoFields()).toContain(instance);
    await c!.stop('SIGKILL');
    await pollUntil(async () => nodeById(await overview(a), 'adm-c') === undefined, 'the killed node gone from the overview', 20_000);
    expect((await overview(a)).nodes.map((n) => n.id)).toEqual(['adm-a', 'adm-b']);
    // Swept with its lease.
    expect(await infoFields()).not.toContain(instance);
    expect((await infoFields()).length).toBe(2);
  });
});

describe('channel lists across nodes', () => {
  it('sums every node\'s subscribers in the busiest channels and in GET /v1/channels', async () => {
    const tag = uid();
    const [hot, warm, cold] = [`mn:${tag}:hot`, `mn:${tag}:warm`, `mn:${tag}:cold`];
    await open(a, 'ch-1', hot, warm);
    await open(a, 'ch-2', hot);
    await open(b, 'ch-3', hot, warm, cold);
    const busiest = await okJson<unknown>(adminGet(a, `/admin/api/channels?prefix=${encodeURIComponent(`mn:${tag}:`)}`));
    expect(busiest).toEqual({ channels: [{ channel: hot, subscribers: 3 }, { channel: warm, subscribers: 2 }, { channel: cold, subscribers: 1 }], more: false });
    expect(await okJson<unknown>(adminGet(b, `/admin/api/channels?limit=1&prefix=${encodeURIComponent(`mn:${tag}:`)}`)))
      .toEqual({ channels: [{ channel: hot, subscribers: 3 }], more: true });

    const list = (gw: GatewayProcess, q: string): Promise<Response> => fetch(`${gw.http}/v1/channels?${q}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    expect(await okJson<unknown>(list(b, `prefix=${encodeURIComponent(`mn:${tag}:`)}`)))
      .toEqual({ channels: [{ channel: cold, subscribers: 1 }, { channel: hot, subscribers: 3 }, { channel: warm, subscribers: 2 }], more: false });
    expect(await okJson<unknown>(list(a, `limit=2&prefix=${encodeURIComponent(`mn:${tag}:`)}`)))
      .toEqual({ channels: [{ channel: cold, subscribers: 1 }, { channel: hot, subscribers: 3 }], more: true });
    expect(await metric(a.admin, 'pubgate_api_requests_total', { endpoint: 'channels', status: '200' })).toBeGreaterThanOrEqual(1);

    for (const [res, code] of [
      [await list(a, 'limit=0'), 400],
      [await list(a, 'limit=1001'), 400],
      [await fetch(`${a.http}/v1/channels`), 401],
      [await adminGet(a, '/admin/api/channels?limit=101'), 400],
      [await adminGet(a, '/admin/api/channels?limit=x'), 400],
      [await adminGet(a, `/admin/api/channels?prefix=${'p'.repeat(201)}`), 400],
    ] as const) {
      const body = (await res.json()) as { error?: { code?: string } };
      expect(res.status, JSON.stringify(body)).toBe(code);
      expect(body.error?.code).toBe(code === 400 ? 'bad_request' : 'unauthorized');
    }
  });
});

describe('the channel inspector', () => {
  it('gives the subscribers per node, the presence and the last history messages', async () => {
    const room = `room:${uid()}`;
    await open(a, 'insp-1', room);
    await open(a, 'insp-1', room);
    await open(b, 'insp-2', room);
    for (let i = 1; i <= 3; i++) expect((await publishOne(a, room, { n: i })).status).toBe(200);
    const r = await okJson<{
      channel: string;
      subscribers: number;
      nodes: { instance: string; id: string; subscribers: number }[];
      presence: { users: number; connections: number; members: { user: string; conns: number }[]; truncated: boolean };
      history: { epoch: string; offset: number; messages: { offset: number; data: unknown }[] };
    }>(adminGet(b, `/admin/api/channel?channel=${encodeURIComponent(room)}&messages=2`));
    expect(r.channel).toBe(room);
    expect(r.subscribers).toBe(3);
    expect(r.nodes.map((n) => [n.id, n.subscribers])).toEqual([['adm-a', 2], ['adm-b', 1]]);
    expect(r.presence).toMatchObject({ users: 2, connections: 3, truncated: false });
    expect([...r.presence.members].sort((x, y) => (x.user < y.user ? -1 : 1))).toEqual([{ user: 'insp-1', conns: 2 }, { user: 'insp-2', conns: 1 }]);
    expect(r.history.offset).toBe(3);
    expect(typeof r.history.epoch).toBe('string');
    expect(r.history.messages).toEqual([{ offset: 2, data: { n: 2 } }, { offset: 3, data: { n: 3 } }]);

    // A channel without presence or history; one nobody is subscribed to.
    const plain = await okJson<Record<string, unknown>>(adminGet(a, `/admin/api/channel?channel=mn:${uid()}`));
    expect(plain).toMatchObject({ subscribers: 0, presence: null, history: null });
    expect((plain.nodes as { subscribers: number }[]).map((n) => n.subscribers)).toEqual([0, 0]);
    for (const q of ['', 'channel=bad%20name', 'channel=mn:x&messages=101']) {
      const res = await adminGet(a, `/admin/api/channel?${q}`);
      expect(res.status, q).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('bad_request');
    }
  });
});

describe('admin writes', () => {
  it('publishes to a real WebSocket subscriber on the other node', async () => {
    const ch = `adm:${uid()}`;
    const s = await open(b, 'pub-1', ch);
    expect(await okJson<unknown>(adminPost(a, '/admin/api/publish', { channel: ch, data: { hello: 'world', n: 1 } }))).toEqual({ channel: ch });
    await s.untilCount(ch, 1);
    expect(s.got(ch)).toEqual([{ hello: 'world', n: 1 }]);
    // On a history channel the answer has the offset.
    const room = `room:${uid()}`;
    expect(await okJson<unknown>(adminPost(a, '/admin/api/publish', { channel: room, data: 1 }))).toEqual({ channel: room, offset: 1 });
  });

  it('disconnects the user\'s sockets with 4501 on both nodes, and leaves others open', async () => {
    const user = `victim-${uid()}`;
    const onA = await open(a, user);
    const onB = await open(b, user);
    const other = await open(b, `bystander-${uid()}`);
    expect(await okJson<unknown>(adminPost(b, '/admin/api/disconnect', { user }))).toEqual({ user });
    expect((await onA.closed).code).toBe(4501);
    expect((await onB.closed).code).toBe(4501);
    expect(other.isOpen).toBe(true);
  });

  it('subscribes and unsubscribes the user\'s sockets on every node', async () => {
    const user = `srv-${uid()}`;
    const ch = `adm:${uid()}`;
    const onA = await open(a, user);
    const onB = await open(b, user);
    expect(await okJson<unknown>(adminPost(a, '/admin/api/subscribe', { user, channel: ch }))).toEqual({ user, channel: ch });
    expect((await publishOne(b, ch, 'one')).status).toBe(200);
    await onA.untilCount(ch, 1);
    await onB.untilCount(ch, 1);
    expect(await okJson<unknown>(adminPost(b, '/admin/api/unsubscribe', { user, channel: ch }))).toEqual({ user, channel: ch });
    const list = await okJson<{ channels: unknown[] }>(adminGet(a, `/admin/api/channels?prefix=${encodeURIComponent(ch)}`));
    expect(list.channels).toEqual([]);
  });

  it('refuses bad bodies: 400, 415, and 413 over PUBGATE_MAX_PUBLISH_BYTES', async () => {
    const cases: Array<[Promise<Response>, number, string]> = [
      [adminPost(a, '/admin/api/publish', '{"channel":"bad name","data":1}'), 400, 'bad_request'],
      [adminPost(a, '/admin/api/publish', '{"channel":"adm:x"}'), 400, 'bad_request'],
      [adminPost(a, '/admin/api/publish', 'not json'), 400, 'bad_request'],
      [adminPost(a, '/admin/api/disconnect', { user: '' }), 400, 'bad_request'],
      [adminPost(a, '/admin/api/subscribe', { user: 'u' }), 400, 'bad_request'],
      [fetch(`${a.admin}/admin/api/publish`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'text/plain' }, body: '{}' }), 415, 'unsupported_media_type'],
      [adminPost(a, '/admin/api/publish', { channel: 'adm:x', data: 'x'.repeat(70_000) }), 413, 'too_large'],
      [fetch(`${a.admin}/admin/api/overview`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }), 405, 'method_not_allowed'],
      [adminGet(a, '/admin/api/publish'), 405, 'method_not_allowed'],
      [adminGet(a, '/admin/api/nope'), 404, 'not_found'],
    ];
    for (const [p, status, code] of cases) {
      const res = await p;
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(body.error.code).toBe(code);
      expect(body.error.message.length).toBeGreaterThan(0);
    }
    expect(await metric(a.admin, 'pubgate_admin_requests_total', { endpoint: 'publish', status: '400' })).toBeGreaterThanOrEqual(2);
    expect(await metric(a.admin, 'pubgate_admin_requests_total', { endpoint: 'overview', status: '200' })).toBeGreaterThanOrEqual(1);
  });
});

describe('access', () => {
  const PATHS: Array<['GET' | 'POST', string]> = [
    ['GET', '/admin/api/overview'],
    ['GET', '/admin/api/channels'],
    ['GET', '/admin/api/channel?channel=mn:x'],
    ['POST', '/admin/api/publish'],
    ['POST', '/admin/api/disconnect'],
    ['POST', '/admin/api/subscribe'],
    ['POST', '/admin/api/unsubscribe'],
    ['GET', '/admin/api/unknown'],
    ['POST', '/admin/api/'],
  ];

  it('answers 401 with WWW-Authenticate on every admin API path without the token or with a wrong one', async () => {
    const headerSets: Array<Record<string, string>> = [
      {},
      { authorization: 'Bearer wrong-token-0123456789abcdefgh' },
      { authorization: `Bearer ${ADMIN_TOKEN}x` },
      { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` },
      { authorization: `Bearer ${TEST_API_KEY}` },
    ];
    for (const [method, path] of PATHS) {
      for (const h of headerSets) {
        const res = await fetch(`${a.admin}${path}`, {
          method,
          headers: { ...h, 'content-type': 'application/json' },
          ...(method === 'POST' ? { body: JSON.stringify({ channel: 'adm:x', data: 1, user: 'u' }) } : {}),
        });
        const body = (await res.json()) as { error: { code: string } };
        expect(res.status, `${method} ${path} ${JSON.stringify(h)}`).toBe(401);
        expect(body.error.code).toBe('unauthorized');
        expect(res.headers.get('www-authenticate')).toBe('Bearer realm="pubgate-admin"');
      }
    }
    expect(await metric(a.admin, 'pubgate_admin_requests_total', { status: '401' })).toBeGreaterThanOrEqual(PATHS.length * headerSets.length);
  });

  it('answers 404 for /admin/* on the public port, token or not', async () => {
    for (const path of ['/admin', '/admin/', '/admin/console.js', '/admin/api/overview']) {
      const res = await fetch(`${a.http}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found');
    }
  });

  it('serves the console files without a token, with the security headers, and redirects /admin to /admin/', async () => {
    const redirect = await fetch(`${a.admin}/admin`, { redirect: 'manual' });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get('location')).toBe('/admin/');
    for (const [path, type] of [['/admin/', 'text/html'], ['/admin/console.js', 'text/javascript'], ['/admin/console.css', 'text/css']] as const) {
      const res = await fetch(`${a.admin}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type')).toContain(type);
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect((await res.text()).length).toBeGreaterThan(0);
    }
    expect((await fetch(`${a.admin}/admin/other.txt`)).status).toBe(404);
    expect((await fetch(`${a.admin}/admin/`, { method: 'POST' })).status).toBe(405);
  });
});

describe('switches', () => {
  const started: GatewayProcess[] = [];
  afterAll(async () => {
    await Promise.allSettled(started.splice(0).map((g) => g.stop()));
  });

  it('answers 404 saying so when the token is unset, and warns at start', async () => {
    const gw = await startGateway({});
    started.push(gw);
    for (const path of ['/admin/', '/admin/api/overview', '/admin/api/nope']) {
      const res = await adminGet(gw, path);
      expect(res.status, path).toBe(404);
      expect(await res.json()).toEqual({ error: { code: 'not_found', message: 'the admin console is off: set PUBGATE_ADMIN_TOKEN' } });
    }
    await gw.waitForLog((l) => l.level === 'warn' && l.msg.startsWith('the admin console is off'));
  });

  it('answers 404 saying so with PUBGATE_ADMIN_CONSOLE=false, token or not', async () => {
    const gw = await startGateway({ PUBGATE_ADMIN_CONSOLE: 'false', PUBGATE_ADMIN_TOKEN: ADMIN_TOKEN });
    started.push(gw);
    const res = await adminGet(gw, '/admin/api/overview');
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe('the admin console is off on this node (PUBGATE_ADMIN_CONSOLE=false)');
  });

  it('gives the one node of the embedded broker, and never logs the token', async () => {
    const gw = await startGateway({ PUBGATE_ADMIN_TOKEN: ADMIN_TOKEN, PUBGATE_NODE_ID: 'solo' });
    started.push(gw);
    await open(gw, 'solo-user', `mn:${uid()}`);
    const o = await overview(gw);
    expect(o.broker).toBe('memory');
    expect(o.totals).toEqual({ nodes: 1, connections: 1, subscriptions: 1 });
    expect(o.nodes[0]).toMatchObject({ id: 'solo', self: true, connections: { total: 1, websocket: 1, sse: 0, pusher: 0 } });
    await adminGet(gw, '/admin/api/overview', 'wrong-token-0123456789abcdefgh');
    expect(JSON.stringify(gw.lines)).not.toContain(ADMIN_TOKEN);
  });

  it('stops the process (exit 1) with NODE_ENV=production and no token, or a short one', async () => {
    const base = { NODE_ENV: 'production', PUBGATE_HOST: '127.0.0.1', PUBGATE_PORT: '0', PUBGATE_ADMIN_PORT: '0', PUBGATE_JWT_SECRETS: TEST_SECRET, PUBGATE_API_KEYS: 'production-api-key-0123456789' };
    const none = await runGateway(base);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('PUBGATE_ADMIN_TOKEN: the admin console without a token is refused when NODE_ENV=production; set it or PUBGATE_ADMIN_CONSOLE=false');
    const short = await runGateway({ ...base, PUBGATE_ADMIN_TOKEN: 'too-short-token' });
    expect(short.code).toBe(1);
    expect(short.stderr).toContain('PUBGATE_ADMIN_TOKEN: must be at least 24 characters');
    expect(short.stderr).not.toContain('too-short-token');
  });
});
