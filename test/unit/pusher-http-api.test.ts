/**
 * The Pusher HTTP API module over a recording sink, requests signed by the
 * `pusher` library: what an event publishes (internal channel, native data,
 * the exclude of its socket_id), the socket id → connection mapping against
 * the node's own connection ids, a path the HTTP client percent-encoded, and
 * the channel queries' use of the cluster-wide counts (what they ask every
 * node, how they answer its sum, a node that did not answer).
 */
import Pusher from 'pusher';
import { describe, expect, it } from 'vitest';
import type { CountResult, QuestionOf } from '../../src/hub/control.js';
import type { PublishOptions } from '../../src/hub/hub.js';
import type { PresenceStats } from '../../src/presence/store.js';
import { GatewayError } from '../../src/errors.js';
import { parsePusherApps, PusherApps } from '../../src/pusher/apps.js';
import { connOfSocketId, createPusherHttpApi, eventData, type PusherApiRequest } from '../../src/pusher/http-api.js';
import { createConnIds } from '../../src/transport/conn-id.js';

const apps = new PusherApps(parsePusherApps(['7:k7:s7-secret', 'other:k8:s8-secret']));
const lib = new Pusher({ appId: '7', key: 'k7', secret: 's7-secret', host: '127.0.0.1' });

function setup(
  counts: (q: QuestionOf) => Promise<CountResult> = () => Promise.resolve({ counts: [], more: false }),
  presenceStats: () => Promise<PresenceStats> = () => Promise.reject(new Error('unused')),
) {
  const questions: QuestionOf[] = [];
  const published: { channel: string; raw: string; opts: PublishOptions | undefined }[] = [];
  const disconnected: string[] = [];
  const api = createPusherHttpApi({
    apps,
    maxBodyBytes: 65536,
    apiRate: 0,
    published: () => undefined,
    sink: {
      publishData: (channel, raw, opts) => {
        published.push({ channel, raw, opts });
        return Promise.resolve({});
      },
      presence: () => Promise.reject(new Error('unused')),
      presenceStats,
      channelCounts: (q) => {
        questions.push(q);
        return counts(q);
      },
      disconnectUser: (u) => {
        disconnected.push(u);
        return Promise.resolve();
      },
    },
  });
  async function call(method: 'GET' | 'POST', path: string, body?: unknown, wirePath = path) {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const query = lib.createSignedQueryString({ method, path, ...(text === undefined ? {} : { body: text }) });
    const req: PusherApiRequest = { method: method.toLowerCase(), path: wirePath, query };
    const r = api.route(req, String(text?.length ?? 0));
    if (!r.ok) return r.response;
    return api.handle(req, r, text ?? '');
  }
  /** A signed GET with query parameters. */
  async function get(path: string, params: Record<string, string>) {
    const req: PusherApiRequest = { method: 'get', path, query: lib.createSignedQueryString({ method: 'GET', path, params }) };
    const r = api.route(req, '0');
    if (!r.ok) return r.response;
    return api.handle(req, r, '');
  }
  return { published, disconnected, questions, call, get };
}

describe('connOfSocketId', () => {
  it('gives the connection text the node\'s connection ids give, from the socket id the Pusher side makes of it', () => {
    const ids = createConnIds();
    for (const n of [0, 1, 35, 36, 123_456_789]) {
      const name = ids.name(n);
      const node = parseInt(name.slice(0, 6), 16); // the Pusher side: prefix as a number, then the connection number
      expect(connOfSocketId(`${node}.${n}`)).toBe(name);
      expect(ids.parse(connOfSocketId(`${node}.${n}`)!)).toBe(n);
    }
  });

  it('names no connection for a node number past the prefix range or a malformed id', () => {
    expect(connOfSocketId(`${0x1000000}.1`)).toBeUndefined();
    expect(connOfSocketId('1.2.3')).toBeUndefined();
    expect(connOfSocketId('abc')).toBeUndefined();
  });
});

describe('eventData', () => {
  it('embeds JSON text as it was sent and other text as a string', () => {
    expect(JSON.parse(eventData('e', '{"a":[1,2]}'))).toEqual({ event: 'e', data: { a: [1, 2] } });
    expect(JSON.parse(eventData('e', '42'))).toEqual({ event: 'e', data: 42 });
    expect(JSON.parse(eventData('e', 'not json {'))).toEqual({ event: 'e', data: 'not json {' });
    expect(JSON.parse(eventData('e\n"x', ''))).toEqual({ event: 'e\n"x', data: '' });
  });
});

describe('events through the module', () => {
  it('publishes on the internal channel of each channel, excluding the connection of socket_id', async () => {
    const t = setup();
    const r = await t.call('POST', '/apps/7/events', { name: 'ev', data: '{"x":1}', channels: ['a', 'b'], socket_id: '255.36' });
    expect(r.status).toBe(200);
    expect(t.published.map((p) => p.channel).sort()).toEqual(['a', 'b']);
    for (const p of t.published) {
      expect(JSON.parse(p.raw)).toEqual({ event: 'ev', data: { x: 1 } });
      expect(p.opts).toEqual({ exclude: '0000ff10' });
    }
  });

  it('publishes a channel outside the native grammar under the app prefix', async () => {
    const t = setup();
    expect((await t.call('POST', '/apps/7/events', { name: 'ev', data: 'x', channel: 'semi;colon' })).status).toBe(200);
    expect(t.published[0]?.channel).toBe('#7#semi;colon');
  });

  it('verifies a path the HTTP client percent-encoded against the path the library signed', async () => {
    const t = setup();
    const r = await t.call('POST', '/apps/7/users/a b/terminate_connections', {}, '/apps/7/users/a%20b/terminate_connections');
    expect(r.status).toBe(200);
    expect(t.disconnected).toEqual(['a b']);
  });
});

describe('channel queries over the cluster-wide counts', () => {
  it('lists the summed channels of a prefix query, with their subscription counts, and says when more are left out', async () => {
    const t = setup(() => Promise.resolve({ counts: [['chat-a', 3], ['chat-b', 1]], more: true }));
    const r = await t.call('GET', '/apps/7/channels', undefined);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ channels: { 'chat-a': {}, 'chat-b': {} } });
    expect(r.headers?.['X-Pubgate-More-Channels']).toBe('true');
    expect(t.questions).toEqual([{ app: '7', prefix: '' }]);
  });

  it('passes filter_by_prefix to the query and answers subscription_count from the sum', async () => {
    const t = setup(() => Promise.resolve({ counts: [['chat-a', 3]], more: false }));
    const r = await t.get('/apps/7/channels', { filter_by_prefix: 'chat-', info: 'subscription_count' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ channels: { 'chat-a': { subscription_count: 3 } } });
    expect(r.headers).toBeUndefined();
    expect(t.questions).toEqual([{ app: '7', prefix: 'chat-' }]);
  });

  it('asks every node about one channel for /channels/{name} and answers occupied from the sum', async () => {
    const t = setup((q) => Promise.resolve({ counts: 'channels' in q && q.channels.includes('room') ? [['room', 2]] : [], more: false }));
    const r = await t.get('/apps/7/channels/room', { info: 'subscription_count' });
    expect(JSON.parse(r.body)).toEqual({ occupied: true, subscription_count: 2 });
    expect(t.questions).toEqual([{ app: '7', channels: ['room'] }]);
    const empty = await t.call('GET', '/apps/7/channels/other-room', undefined);
    expect(JSON.parse(empty.body)).toEqual({ occupied: false });
  });

  it('does not ask the nodes about a presence channel (the presence store counts it)', async () => {
    const t = setup(undefined, () => Promise.resolve({ users: 2, connections: 3 }));
    const r = await t.get('/apps/7/channels/presence-room', { info: 'user_count,subscription_count' });
    expect(JSON.parse(r.body)).toEqual({ occupied: true, user_count: 2, subscription_count: 3 });
    expect(t.questions).toEqual([]);
  });

  it('answers 503 with Retry-After when a node does not answer the query', async () => {
    const t = setup(() => Promise.reject(new GatewayError('unavailable', '1 node of 2 did not answer within 5 s; retrying is safe', 1)));
    const r = await t.call('GET', '/apps/7/channels/room', undefined);
    expect(r.status).toBe(503);
    expect(r.body).toContain('did not answer');
    expect(r.headers?.['Retry-After']).toBe('1');
  });
});

