/**
 * Integration: the issue 15 parts of @pubgate/client against real gateway
 * processes on a real redis-server: `subscribe(channel, { rewind })` (the last
 * N, then live; after a dropped connection a recovery with `since`, not a
 * second rewind), `publish(channel, data, { echo: false })` (every subscriber
 * but the publisher), and createApiClient (publish with `exclude`, history:
 * the last messages, pages after `since`, `recovery_failed`; an idempotency
 * key published once, also through a batch).
 *
 * Needs the server side of issue 15 (branches hist-api and idem).
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { useClientFixture } from '../helpers/client-probe.js';
import { TEST_API_KEY, type GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import { createApiClient, type PubgateApiClient, type PubgateApiError } from '../../packages/client/src/index.js';

const fx = useClientFixture();
const uid = (): string => randomUUID().slice(0, 8);

/** History with rewind on `feed:*`; `chat:*` plain (the gateway refuses echo:false on history channels for now). */
const NAMESPACES = JSON.stringify([{ pattern: 'feed:*', history: { size: 50, ttl: 300 }, rewind: true }]);

async function gateway(): Promise<{ gw: GatewayProcess; api: PubgateApiClient }> {
  const gw = await fx.gateway({ PUBGATE_NAMESPACES: NAMESPACES, PUBGATE_REDIS_URL: fx.redis().url });
  await untilReadyz(gw, 200);
  return { gw, api: createApiClient({ url: gw.http, apiKey: TEST_API_KEY, backoff: { minMs: 50, maxMs: 500 } }) };
}


describe('rewind through the client', () => {
  it('delivers the last N then live messages, and after a dropped connection recovers with since instead of rewinding again', async () => {
    const { gw, api } = await gateway();
    const lb = await fx.forwarder(gw.port);
    const ch = `feed:${uid()}`;
    for (let i = 1; i <= 5; i++) await api.publish(ch, i);
    const p = fx.probe({ url: lb.url('/ws'), token: await token({ sub: 'reader', channels: ['feed:*'] }) });
    const sub = p.subscribe(ch, { rewind: 3 });
    await expect(sub.ready).resolves.toMatchObject({ offset: 5 });
    await p.untilCount(ch, 3);
    await api.publish(ch, 6);
    await p.untilCount(ch, 4);
    expect(p.got(ch)).toEqual([3, 4, 5, 6]);

    lb.dropAll();
    await p.until(() => p.of('disconnected').length >= 1, 'the drop');
    await api.publish(ch, 7);
    await p.connections(2);
    await p.until(() => p.of('resubscribed').length >= 1, 'the resubscribe');
    expect(p.of('resubscribed'), p.trace()).toEqual([{ channel: ch, since: expect.objectContaining({ offset: 6 }) as unknown, recovered: true }]);
    await p.untilCount(ch, 5);
    await api.publish(ch, 8);
    await p.untilCount(ch, 6);
    expect(p.got(ch)).toEqual([3, 4, 5, 6, 7, 8]);
  });

  it('a channel whose namespace does not allow rewind refuses the subscription with bad_request', async () => {
    const { gw } = await gateway();
    const p = fx.probe({ url: gw.url, token: await token({ sub: 'reader', channels: ['*'] }) });
    await expect(p.subscribe(`chat:${uid()}`, { rewind: 2 }).ready).rejects.toMatchObject({ code: 'bad_request' });
  });
});

describe('echo: false and exclude through the client', () => {
  it('a publish with echo:false reaches the other subscriber and not the publisher; the next one without it reaches both', async () => {
    const { gw } = await gateway();
    const ch = `chat:${uid()}`;
    const a = fx.probe({ url: gw.url, token: await token({ sub: 'a', channels: ['chat:*'], publish: ['chat:*'] }) });
    const b = fx.probe({ url: gw.url, token: await token({ sub: 'b', channels: ['chat:*'] }) });
    await a.subscribe(ch).ready;
    await b.subscribe(ch).ready;
    await a.client.publish(ch, 'quiet', { echo: false });
    await a.client.publish(ch, 'loud');
    await b.untilCount(ch, 2);
    await a.untilCount(ch, 1);
    expect(b.got(ch)).toEqual(['quiet', 'loud']);
    expect(a.got(ch)).toEqual(['loud']);
  });

  it('api.publish with exclude skips that connection', async () => {
    const { gw, api } = await gateway();
    const ch = `chat:${uid()}`;
    const a = fx.probe({ url: gw.url, token: await token({ sub: 'a', channels: ['chat:*'] }) });
    const b = fx.probe({ url: gw.url, token: await token({ sub: 'b', channels: ['chat:*'] }) });
    await a.subscribe(ch).ready;
    await b.subscribe(ch).ready;
    await api.publish(ch, 'not for a', { exclude: a.client.welcome!.conn });
    await api.publish(ch, 'for all');
    await b.untilCount(ch, 2);
    await a.untilCount(ch, 1);
    expect(a.got(ch)).toEqual(['for all']);
  });
});

describe('createApiClient.history against a gateway', () => {
  it('reads the last messages, pages after since, and rejects a wrong epoch with recovery_failed', async () => {
    const { api } = await gateway();
    const ch = `feed:${uid()}`;
    const offsets: Array<number | undefined> = [];
    for (let i = 1; i <= 5; i++) offsets.push((await api.publish(ch, { n: i }, { idempotencyKey: `k${i}` })).offset);
    expect(offsets).toEqual([1, 2, 3, 4, 5]);
    const last = await api.history<{ n: number }>(ch, { limit: 2 });
    expect(last).toMatchObject({ channel: ch, offset: 5, messages: [{ offset: 4, data: { n: 4 } }, { offset: 5, data: { n: 5 } }] });
    const page = await api.history(ch, { since: { offset: 1, epoch: last.epoch }, limit: 2 });
    expect(page.messages.map((m) => m.offset)).toEqual([2, 3]);
    const e = await api.history(ch, { since: { offset: 1, epoch: 'not-the-epoch' } }).then(
      () => {
        throw new Error('resolved');
      },
      (err: unknown) => err as PubgateApiError,
    );
    expect(e).toMatchObject({ code: 'recovery_failed', status: 409 });
    await expect(api.history(`chat:${uid()}`)).rejects.toMatchObject({ code: 'bad_request', status: 400 });
  });
});

describe('createApiClient idempotency keys against a gateway', () => {
  it('the same key twice publishes once and answers the first offset, through publish and a batch', async () => {
    const { gw, api } = await gateway();
    const ch = `feed:${uid()}`;
    const p = fx.probe({ url: gw.url, token: await token({ sub: 'reader', channels: ['feed:*'] }) });
    await p.subscribe(ch).ready;
    const first = await api.publish(ch, 'one', { idempotencyKey: 'same' });
    expect(await api.publish(ch, 'two', { idempotencyKey: 'same' })).toEqual(first);
    expect(await api.publishBatch([{ channel: ch, data: 'three', idempotencyKey: 'same' }])).toEqual([first]);
    await api.publish(ch, 'four');
    await p.untilCount(ch, 2);
    expect(p.got(ch)).toEqual(['one', 'four']);
  });
});
