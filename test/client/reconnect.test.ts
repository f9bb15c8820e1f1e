/**
 * Integration: @pubgate/client (in Node, on the `ws` package) against real
 * gateway processes and a real redis-server: publish and subscribe, a node
 * killed (1006) or drained (1001) with the client moving to another node, a
 * node restarted behind one URL, a Redis restart, token expiry (4001) and
 * refresh, 4501, and publishes queued while disconnected.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { useClientFixture, type ClientProbe } from '../helpers/client-probe.js';
import { publish, type GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import { pollUntil } from '../helpers/redis.js';
import type { Forwarder } from '../helpers/tcp-forwarder.js';
import type { ConnectOptions } from '../../packages/client/src/index.js';

const fx = useClientFixture();

/** Nodes on the shared Redis, ready (broker connected). */
async function nodes(...ids: string[]): Promise<GatewayProcess[]> {
  const list = await Promise.all(ids.map((id) => fx.gateway({ PUBGATE_NODE_ID: id, PUBGATE_REDIS_URL: fx.redis().url })));
  for (const g of list) await untilReadyz(g, 200);
  return list;
}

async function probe(url: string | string[], o: Partial<ConnectOptions> = {}): Promise<ClientProbe> {
  const jwt = await token({ sub: 'client-user', channels: ['cl:*'], publish: ['cl:pub:*'] });
  return fx.probe({ url, token: jwt, ...o });
}

async function published(gw: GatewayProcess | Forwarder, channel: string, data: unknown): Promise<void> {
  const res = await fetch(`${gw.http}/v1/publish`, {
    method: 'POST',
    headers: { authorization: 'Bearer test-api-key-1', 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`publish to ${channel} answered ${res.status} ${text}`);
}

const chan = (name: string): string => `cl:${name}:${randomUUID().slice(0, 8)}`;

describe('@pubgate/client against real gateways', () => {
  it('subscribes, receives HTTP publishes, publishes over the socket, and gets refusals as PubgateErrors', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'solo' });
    const p = await probe(gw.url);
    const ch = chan('basic');
    const pubCh = `cl:pub:${randomUUID().slice(0, 8)}`;
    const sub = p.subscribe(ch);
    const pubSub = p.subscribe(pubCh);
    await expect(sub.ready).resolves.toEqual({});
    await pubSub.ready;
    expect(p.client.state, p.trace()).toBe('connected');
    expect(p.client.welcome, p.trace()).toMatchObject({ type: 'welcome', node: 'solo', user: 'client-user', ping: 25 });
    expect(p.of('connecting'), p.trace()).toEqual([{ url: gw.url, attempt: 0 }]);

    await published(gw, ch, { headline: 'hello', n: 1.5 });
    await p.untilCount(ch, 1);
    expect(p.got(ch), p.trace()).toEqual([{ headline: 'hello', n: 1.5 }]);

    await expect(p.client.publish(pubCh, { text: 'über' })).resolves.toMatchObject({ type: 'reply' });
    await p.untilCount(pubCh, 1);
    expect(p.got(pubCh), p.trace()).toEqual([{ text: 'über' }]);

    await expect(p.client.publish(ch, 1)).rejects.toMatchObject({ name: 'PubgateError', code: 'forbidden' });
    const refused = p.subscribe('other:x');
    await expect(refused.ready).rejects.toMatchObject({ code: 'forbidden', channel: 'other:x' });
    await expect(p.client.ping()).resolves.toBeGreaterThanOrEqual(0);

    await sub();
    await published(gw, ch, 'after unsubscribe');
    await published(gw, pubCh, 'marker'); // same connection, later: once it arrives, the other would have too
    await p.untilCount(pubCh, 2);
    expect(p.got(ch), p.trace()).toHaveLength(1);
    await p.close();
    expect(p.client.state, p.trace()).toBe('closed');
  });

  it('a node killed with SIGKILL: 1006, the client moves to the next URL (another node), resubscribes and receives new messages', async () => {
    const [a, b] = await nodes('kill-a', 'kill-b');
    const p = await probe([a!.url, b!.url]);
    const ch = chan('kill');
    await p.subscribe(ch).ready;
    expect(p.client.welcome?.node, p.trace()).toBe('kill-a');
    await published(b!, ch, 'before');
    await p.untilCount(ch, 1);

    a!.proc.kill('SIGKILL');
    await a!.exited;
    await p.until(() => p.of('disconnected').length > 0, 'disconnected');
    expect(p.of('disconnected')[0], p.trace()).toMatchObject({ code: 1006, url: a!.url });
    await p.until(() => p.of('resubscribed').some((r) => r.channel === ch), 'resubscribed');
    expect(p.client.welcome?.node, p.trace()).toBe('kill-b');
    expect(p.of('resubscribed'), p.trace()).toEqual([{ channel: ch, since: undefined, recovered: undefined }]);

    await published(b!, ch, 'after');
    await p.untilCount(ch, 2);
    expect(p.got(ch), p.trace()).toEqual(['before', 'after']);
  });

  it('a node drained with SIGTERM: 1001, the client reconnects at once to another node and resubscribes', async () => {
    const [a, b] = await nodes('drain-a', 'drain-b');
    const p = await probe([a!.url, b!.url]);
    const ch = chan('drain');
    await p.subscribe(ch).ready;
    expect(p.client.welcome?.node, p.trace()).toBe('drain-a');
    expect(p.of('connecting'), p.trace()).toHaveLength(1); // first attempt: the backoff window is minMs

    const stopped = a!.stop('SIGTERM');
    await p.until(() => p.of('disconnected').length > 0, 'disconnected');
    expect(p.of('disconnected')[0], p.trace()).toMatchObject({ code: 1001, url: a!.url });
    expect(p.of('disconnected')[0]!.reconnectInMs).toBeLessThan(100); // backoff window minMs: "at once, with jitter"
    await p.until(() => p.of('resubscribed').length > 0, 'resubscribed');
    expect(p.client.welcome?.node, p.trace()).toBe('drain-b');
    expect(await stopped).toBe(0);

    await published(b!, ch, 'on b');
    await p.untilCount(ch, 1);
    expect(p.got(ch), p.trace()).toEqual(['on b']);
  });

  it('one URL (a load balancer) while its node is killed and a new node starts behind it: the client keeps retrying and comes back', async () => {
    const first = await fx.gateway({ PUBGATE_NODE_ID: 'lb-1' });
    const lb = await fx.forwarder(first.port);
    const p = await probe(lb.url());
    const ch = chan('lb');
    await p.subscribe(ch).ready;
    expect(p.client.welcome?.node, p.trace()).toBe('lb-1');

    lb.setTarget(undefined); // no healthy backend
    first.proc.kill('SIGKILL');
    await first.exited;
    await p.until(() => p.of('disconnected').length >= 3, 'three failed attempts');
    expect(p.of('disconnected').every((d) => d.code === 1006 && d.url === lb.url()), p.trace()).toBe(true);
    expect(p.of('connecting').map((c) => c.attempt).slice(0, 3), p.trace()).toEqual([0, 1, 2]);

    const second = await fx.gateway({ PUBGATE_NODE_ID: 'lb-2' });
    lb.setTarget(second.port);
    await p.until(() => p.of('resubscribed').length > 0, 'resubscribed on the new node');
    expect(p.client.welcome?.node, p.trace()).toBe('lb-2');
    await published(second, ch, 'back');
    await p.untilCount(ch, 1);
    expect(p.got(ch), p.trace()).toEqual(['back']);
  });

  it('publishes made while the node is down wait in the queue and go out after the reconnect', async () => {
    const first = await fx.gateway({ PUBGATE_NODE_ID: 'q-1' });
    const lb = await fx.forwarder(first.port);
    const p = await probe(lb.url(), { requestTimeoutMs: 30_000 });
    const ch = `cl:pub:${randomUUID().slice(0, 8)}`;
    await p.subscribe(ch).ready;
    lb.setTarget(undefined);
    first.proc.kill('SIGKILL');
    await p.until(() => p.client.state !== 'connected', 'connection lost');

    const pending = [p.client.publish(ch, 'q1'), p.client.publish(ch, 'q2')];
    const second = await fx.gateway({ PUBGATE_NODE_ID: 'q-2' });
    lb.setTarget(second.port);
    await expect(Promise.all(pending)).resolves.toHaveLength(2);
    await p.untilCount(ch, 2);
    expect(p.got(ch), p.trace()).toEqual(['q1', 'q2']);
  });

  it('Redis restarts: the subscriber ends up connected and subscribed, and receives messages published afterwards on another node', async () => {
    const [a, b] = await nodes('redis-a', 'redis-b');
    const p = await probe([a!.url, b!.url]);
    const ch = chan('redis');
    await p.subscribe(ch).ready;
    await published(b!, ch, 'before');
    await p.untilCount(ch, 1);

    await fx.redis().restart();
    for (const g of [a!, b!]) await pollUntil(async () => (await fetch(`${g.admin}/readyz`)).status === 200, `${g.admin} ready after the Redis restart`);
    // Publish until one arrives: the node may still be renewing its Redis subscriptions (503) right after readiness.
    let n = 0;
    await pollUntil(async () => {
      if (p.got(ch).length > 1) return true;
      const res = await publish(b!, { channel: ch, data: `after-${n++}` });
      await res.text();
      if (res.status === 200) await p.until(() => p.got(ch).length > 1, 'a message after the restart', 1000).catch(() => undefined);
      return p.got(ch).length > 1;
    }, 'a message published after the Redis restart to arrive');
    expect(p.client.state, p.trace()).toBe('connected');
    expect(p.client.channels(), p.trace()).toEqual([ch]);
    // Either the connection stayed (no disconnect), or the client reconnected and resubscribed.
    const drops = p.of('disconnected').length;
    expect(p.of('resubscribed').filter((r) => r.channel === ch), p.trace()).toHaveLength(drops);
    expect(p.got(ch)[1]).toMatch(/^after-/);
  });

  it('4001 at token expiry: the client calls getToken, reconnects with the new token and resubscribes', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'exp', PUBGATE_JWT_CLOCK_TOLERANCE: '0' });
    const tokens: string[] = [];
    const getToken = async (): Promise<string> => {
      const t = await token({ sub: 'client-user', channels: ['cl:*'] }, { ttlSec: 3600 });
      tokens.push(t);
      return t;
    };
    const short = await token({ sub: 'client-user', channels: ['cl:*'] }, { ttlSec: 2 });
    const p = await probe(gw.url, { token: short, getToken, autoRefresh: false });
    const ch = chan('exp');
    await p.subscribe(ch).ready;
    await p.until(() => p.of('disconnected').length > 0, 'the 4001 close', 20_000);
    expect(p.of('disconnected')[0], p.trace()).toMatchObject({ code: 4001 });
    await p.until(() => p.of('resubscribed').length > 0, 'resubscribed with a new token');
    expect(tokens).toHaveLength(1);
    await published(gw, ch, 'fresh');
    await p.untilCount(ch, 1);
  });

  it('refreshes the token on the open connection before it expires, and the connection outlives the first token', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'refresh', PUBGATE_JWT_CLOCK_TOLERANCE: '0' });
    const getToken = (): Promise<string> => token({ sub: 'client-user', channels: ['cl:*'] }, { ttlSec: 3600 });
    const ttlSec = 3;
    const short = await token({ sub: 'client-user', channels: ['cl:*'] }, { ttlSec });
    const expAtMs = (Math.floor(Date.now() / 1000) + ttlSec) * 1000;
    const p = await probe(gw.url, { token: short, getToken });
    const ch = chan('refresh');
    await p.subscribe(ch).ready;
    await p.until(() => p.of('refreshed').length > 0, 'refreshed');
    expect(p.of('refreshed')[0]!.expiresIn).toBeGreaterThan(3000);
    // The subject of this test is the clock: wait until the first token is well past its exp.
    await new Promise((r) => setTimeout(r, Math.max(0, expAtMs + 1500 - Date.now())));
    await expect(p.client.ping()).resolves.toBeGreaterThanOrEqual(0);
    await published(gw, ch, 'still here');
    await p.untilCount(ch, 1);
    expect(p.of('disconnected'), p.trace()).toEqual([]);
    expect(p.of('connected'), p.trace()).toHaveLength(1);
  });

  it('4501 from POST /v1/disconnect closes the client for good', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'kick' });
    const p = await probe(gw.url);
    await p.client.whenConnected(20_000);
    const res = await fetch(`${gw.http}/v1/disconnect`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-api-key-1', 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'client-user' }),
    });
    expect(res.status).toBe(200);
    await p.until(() => p.client.state === 'closed', 'closed');
    expect(p.of('closed'), p.trace()).toEqual([{ code: 4501, reason: 'disconnected' }]);
    expect(p.of('disconnected'), p.trace()).toEqual([]);
    await expect(p.client.publish('cl:pub:x', 1)).rejects.toMatchObject({ code: 'closed' });
  });
});
