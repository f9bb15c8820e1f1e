/**
 * `exclude` on the publish API and `echo:false` on publish frames (contract
 * 1.1, "Idempotent publish and exclude"): every subscriber but the named
 * connection receives the message, on the embedded broker and across two
 * nodes on Redis (the excluded connection on either node); validation; the
 * metric. History channels refuse them in this release (docs/protocol.md).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TEST_API_KEY, metric, type GatewayProcess } from '../helpers/gateway.js';
import { HistoryClient, closeClients, useHistoryGateway } from '../helpers/history.js';
import { NodeGroup } from '../helpers/multinode.js';

const uid = (): string => randomUUID().slice(0, 8);
const CLAIMS = { channels: ['p:*', 'h:*'], publish: ['p:*', 'h:*'] };

async function post(gw: GatewayProcess, path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gw.http}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const dataOf = (c: HistoryClient, ch: string): unknown[] => c.messages(ch).map((m) => m.data);
const connOf = (c: HistoryClient): string => String(c.welcome?.conn);

/** The rules, on two nodes `a` and `b` (the same node on the embedded broker). */
function rules(nodes: () => { a: GatewayProcess; b: GatewayProcess }): void {
  const clients: HistoryClient[] = [];
  const open = async (gw: GatewayProcess): Promise<HistoryClient> => {
    const c = await HistoryClient.open(gw.url, CLAIMS);
    clients.push(c);
    return c;
  };
  afterEach(async () => {
    await closeClients(clients);
  });

  /** Subscribers a1, a2 on a and b1 on b, all on a fresh plain channel. */
  async function three(): Promise<{ ch: string; a1: HistoryClient; a2: HistoryClient; b1: HistoryClient }> {
    const ch = `p:ex:${uid()}`;
    const { a, b } = nodes();
    const [a1, a2, b1] = await Promise.all([open(a), open(a), open(b)]);
    for (const c of [a1, a2, b1]) await c.subscribe(ch);
    return { ch, a1, a2, b1 };
  }

  /** Publishes an unexcluded marker through `gw` and waits until every client has it: what was published before has arrived. */
  async function settle(gw: GatewayProcess, ch: string, cs: readonly HistoryClient[]): Promise<void> {
    expect((await post(gw, '/v1/publish', { channel: ch, data: 'end' })).status).toBe(200);
    await Promise.all(cs.map((c) => c.untilData(ch, (d) => d === 'end')));
  }

  it('exclude on /v1/publish and batches skips that connection only, whichever node holds it or receives the publish', async () => {
    const { a, b } = nodes();
    const { ch, a1, a2, b1 } = await three();
    const before = await metric(a.admin, 'pubgate_excluded_deliveries_total');
    expect(await post(b, '/v1/publish', { channel: ch, data: 1, exclude: connOf(a1) })).toEqual({ status: 200, body: { channel: ch } });
    expect(await post(a, '/v1/publish', { channel: ch, data: 2, exclude: connOf(b1) })).toEqual({ status: 200, body: { channel: ch } });
    const batch = await post(a, '/v1/publish/batch', {
      messages: [
        { channel: ch, data: 3, exclude: connOf(a2) },
        { channel: ch, data: 4 },
        // A connection no node holds: everyone receives it.
        { channel: ch, data: 5, exclude: 'zzzzzz0' },
      ],
    });
    expect(batch).toEqual({ status: 200, body: { results: [{ channel: ch }, { channel: ch }, { channel: ch }] } });
    await settle(b, ch, [a1, a2, b1]);
    expect(dataOf(a1, ch)).toEqual([2, 3, 4, 5, 'end']);
    expect(dataOf(a2, ch)).toEqual([1, 2, 4, 5, 'end']);
    expect(dataOf(b1, ch)).toEqual([1, 3, 4, 5, 'end']);
    // Still subscribed afterwards, and counted where the excluded connection lives.
    expect(await metric(a.admin, 'pubgate_excluded_deliveries_total')).toBe(before + (a === b ? 3 : 2));
  });

  it('echo:false on a publish frame skips the publishing connection only; echo:true and no echo deliver to it', async () => {
    const { b } = nodes();
    const { ch, a1, a2, b1 } = await three();
    expect(await a1.request({ type: 'publish', channel: ch, data: 'quiet', echo: false })).toEqual({ type: 'reply', id: 2 });
    expect(await a1.request({ type: 'publish', channel: ch, data: 'loud', echo: true })).toEqual({ type: 'reply', id: 3 });
    expect(await a1.request({ type: 'publish', channel: ch, data: 'plain' })).toEqual({ type: 'reply', id: 4 });
    await settle(b, ch, [a1, a2, b1]);
    expect(dataOf(a1, ch)).toEqual(['loud', 'plain', 'end']);
    expect(dataOf(a2, ch)).toEqual(['quiet', 'loud', 'plain', 'end']);
    expect(dataOf(b1, ch)).toEqual(['quiet', 'loud', 'plain', 'end']);
  });

  it('refuses an invalid exclude or echo, publishing nothing', async () => {
    const { a } = nodes();
    const { ch, a1 } = await three();
    for (const exclude of [7, '', 'a b', 'x'.repeat(65), 'a\nb', null]) {
      const r = await post(a, '/v1/publish', { channel: ch, data: 'no', exclude });
      expect(r.status, JSON.stringify(exclude)).toBe(400);
      expect((r.body.error as { code: string }).code).toBe('bad_request');
      const rb = await post(a, '/v1/publish/batch', { messages: [{ channel: ch, data: 'no' }, { channel: ch, data: 'no', exclude }] });
      expect(rb.status, JSON.stringify(exclude)).toBe(400);
    }
    for (const echo of ['no', 0, null]) {
      expect((await a1.request({ type: 'publish', channel: ch, data: 'no', echo })).error).toMatchObject({ code: 'bad_request' });
    }
    await settle(a, ch, [a1]);
    expect(dataOf(a1, ch)).toEqual(['end']);
  });

  it('excludes on history channels too: the others get the message with its offset, history keeps it for everyone', async () => {
    const { a, b } = nodes();
    const ch = `h:ex:${uid()}`;
    const [a1, a2, b1] = await Promise.all([open(a), open(a), open(b)]);
    for (const c of [a1, a2, b1]) await c.subscribe(ch);
    expect(await post(b, '/v1/publish', { channel: ch, data: 1, exclude: connOf(a1) })).toEqual({ status: 200, body: { channel: ch, offset: 1 } });
    expect((await a2.request({ type: 'publish', channel: ch, data: 2, echo: false })).error).toBeUndefined();
    await settle(a, ch, [a1, a2, b1]);
    expect(dataOf(a1, ch)).toEqual([2, 'end']);
    expect(dataOf(a2, ch)).toEqual([1, 'end']);
    expect(dataOf(b1, ch)).toEqual([1, 2, 'end']);
    expect(b1.offsets(ch)).toEqual([1, 2, 3]);
    // History holds the excluded messages as plain frames: a recovery from 0 replays all three.
    const epoch = b1.last(ch).epoch;
    const late = await open(a);
    expect(await late.subscribe(ch, { offset: 0, epoch })).toMatchObject({ recovered: true, offset: 3 });
    await late.untilOffset(ch, 3);
    expect(dataOf(late, ch)).toEqual([1, 2, 'end']);
  });
}

describe('exclude and echo:false on the memory broker', () => {
  const { gw } = useHistoryGateway('memory', {});
  rules(() => ({ a: gw(), b: gw() }));
});

describe('exclude and echo:false across two nodes on Redis', () => {
  const group = new NodeGroup();
  beforeAll(async () => {
    await group.startOnRedis(['ex-a', 'ex-b'], { PUBGATE_HISTORY_CHANNELS: 'h:*' });
  }, 60_000);
  afterAll(async () => {
    await group.stop();
  });
  rules(() => ({ a: group.node(0), b: group.node(1) }));
});
