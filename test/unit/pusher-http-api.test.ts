/**
 * The Pusher HTTP API module over a recording sink, requests signed by the
 * `pusher` library: what an event publishes (internal channel, native data,
 * the exclude of its socket_id), the socket id → connection mapping against
 * the node's own connection ids, and a path the HTTP client percent-encoded.
 */
import Pusher from 'pusher';
import { describe, expect, it } from 'vitest';
import type { PublishOptions } from '../../src/hub/hub.js';
import { parsePusherApps, PusherApps } from '../../src/pusher/apps.js';
import { connOfSocketId, createPusherHttpApi, eventData, type PusherApiRequest } from '../../src/pusher/http-api.js';
import { createConnIds } from '../../src/transport/conn-id.js';

const apps = new PusherApps(parsePusherApps(['7:k7:s7-secret', 'other:k8:s8-secret']));
const lib = new Pusher({ appId: '7', key: 'k7', secret: 's7-secret', host: '127.0.0.1' });

function setup() {
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
      presenceStats: () => Promise.reject(new Error('unused')),
      localSubscribers: () => 0,
      localChannels: () => [],
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
  return { published, disconnected, call };
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
