/**
 * Requests to every node (hub/control.ts) on a broker double whose control
 * messages the test delivers by hand, and the control messages' wire form
 * (broker/control.ts): when a request is answered, and with what; acks for
 * unknown requests and for other nodes ignored; the pending bound; the
 * registry re-read that stops waiting for dead nodes; a node answering the
 * requests of others; count queries (the Pusher HTTP API's channel counts):
 * the answers summed, bounded and exact, and a node answering the queries of
 * others.
 */
import { describe, expect, it } from 'vitest';
import type { Broker, BrokerHandlers, BrokerStatus, ControlMessage } from '../../src/broker/broker.js';
import { encodeControl, parseControl } from '../../src/broker/control.js';
import { localNativeCounts } from '../../src/hub/native-counts.js';
import { CountSum, TopSum, createClusterControl, type ClusterControl, type ClusterControlDeps, type CountResult } from '../../src/hub/control.js';
import { GatewayError } from '../../src/errors.js';
import { silentLogger } from '../../src/observability/logger.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';

/** A broker double: `sent` records published control messages; `nodes` is what the registry answers. */
class FakeBroker implements Broker {
  readonly kind = 'redis' as const;
  readonly instance = 'me~1';
  readonly history = undefined;
  readonly presence = undefined;
  status: BrokerStatus = 'ready';
  readonly sent: ControlMessage[] = [];
  registry: string[] = ['me~1', 'other~2'];
  refusePublish = false;
  start(_h: BrokerHandlers): Promise<void> {
    return Promise.resolve();
  }
  publish(): Promise<void> {
    return Promise.resolve();
  }
  publishOnce(): Promise<boolean> {
    return Promise.resolve(true);
  }
  subscribe(): Promise<void> {
    return Promise.resolve();
  }
  unsubscribe(): Promise<void> {
    return Promise.resolve();
  }
  publishControl(msg: ControlMessage): Promise<void> {
    if (this.refusePublish) return Promise.reject(new GatewayError('unavailable', 'broker did not accept the publish'));
    this.sent.push(msg);
    return Promise.resolve();
  }
  nodes(): Promise<readonly string[]> {
    if (this.status !== 'ready') return Promise.reject(new GatewayError('unavailable', 'broker is not connected'));
    return Promise.resolve([...this.registry]);
  }
  subscribedCount(): number {
    return 0;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function sample(m: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const text = await m.render();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

interface Setup {
  b: FakeBroker;
  c: ClusterControl;
  m: Metrics;
  applied: Array<{ op: string; user: string; channel: string }>;
  disconnected: string[];
}

function setup(o: { apply?: () => Promise<boolean>; answer?: ClusterControlDeps['answer']; timeoutMs?: number; recheckMs?: number; maxPending?: number } = {}): Setup {
  const b = new FakeBroker();
  const m = createMetrics('test');
  const applied: Setup['applied'] = [];
  const disconnected: string[] = [];
  const c = createClusterControl({
    broker: b,
    apply: (op, user, channel) => {
      applied.push({ op, user, channel });
      return o.apply ? o.apply() : Promise.resolve(true);
    },
    disconnect: (user) => disconnected.push(user),
    ...(o.answer ? { answer: o.answer } : {}),
    metrics: m,
    log: silentLogger(),
    timeoutMs: o.timeoutMs ?? 60_000,
    recheckMs: o.recheckMs ?? 60_000,
    ...(o.maxPending !== undefined ? { maxPending: o.maxPending } : {}),
  });
  return { b, c, m, applied, disconnected };
}

/** Resolves once `cond` holds, checked every turn of the event loop (bounded). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never: ${what}`);
}

/** As until(), for a condition that takes a timer's time (checked every 10 ms, for at most 10 s). */
async function untilTimer(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`never: ${what}`);
}

/** The request the control published last. */
function lastRequest(b: FakeBroker): Extract<ControlMessage, { kind: 'subscribe' | 'unsubscribe' }> {
  const r = b.sent.filter((x) => x.kind === 'subscribe' || x.kind === 'unsubscribe').at(-1);
  if (!r || (r.kind !== 'subscribe' && r.kind !== 'unsubscribe')) throw new Error('no request sent');
  return r;
}

const ack = (id: string, node: string, ok = true, to = 'me~1'): ControlMessage => ({ kind: 'ack', id, to, node, ok });

/** Settles a promise into what it did, for assertions. */
function outcome<T = void>(p: Promise<T>): { done: boolean; error: GatewayError | undefined; value?: T } {
  const o: { done: boolean; error: GatewayError | undefined; value?: T } = { done: false, error: undefined };
  p.then(
    (v) => {
      o.done = true;
      o.value = v;
    },
    (e: unknown) => {
      o.done = true;
      o.error = e as GatewayError;
    },
  );
  return o;
}

describe('requests to every node (hub/control.ts)', () => {
  it('answers once every node of the registry answered ok, not before', async () => {
    const { b, c, m } = setup();
    const o = outcome(c.request('subscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    expect(lastRequest(b)).toEqual({ kind: 'subscribe', id: expect.any(String) as string, from: 'me~1', user: '42', channel: 'news' });
    const { id } = lastRequest(b);
    c.onControl(ack(id, 'me~1'));
    await until(() => c.pending() === 1, 'still waiting');
    expect(o.done).toBe(false);
    c.onControl(ack(id, 'other~2'));
    await until(() => o.done, 'the answer');
    expect(o.error).toBeUndefined();
    expect(c.pending()).toBe(0);
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'subscribe', result: 'ok' })).toBe(1);
    expect(await sample(m, 'pubgate_control_acks_total', { result: 'ok' })).toBe(2);
    expect(await sample(m, 'pubgate_cluster_nodes', {})).toBe(2);
  });

  it('waits for itself even when the registry does not list it yet', async () => {
    const { b, c } = setup();
    b.registry = ['other~2'];
    const o = outcome(c.request('unsubscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    c.onControl(ack(lastRequest(b).id, 'other~2'));
    await new Promise((r) => setImmediate(r));
    expect(o.done).toBe(false);
    c.onControl(ack(lastRequest(b).id, 'me~1'));
    await until(() => o.done, 'the answer');
    expect(o.error).toBeUndefined();
  });

  it('answers unavailable naming how many nodes could not apply it', async () => {
    const { b, c, m } = setup();
    const o = outcome(c.request('subscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    const { id } = lastRequest(b);
    c.onControl(ack(id, 'me~1'));
    c.onControl(ack(id, 'other~2', false));
    await until(() => o.done, 'the answer');
    expect(o.error).toBeInstanceOf(GatewayError);
    expect(o.error?.code).toBe('unavailable');
    expect(o.error?.retryAfterSec).toBe(1);
    expect(o.error?.message).toBe('1 node of 2 could not apply it (broker unavailable there); it may be applied on the others, and retrying is safe');
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'subscribe', result: 'failed' })).toBe(1);
  });

  it('answers unavailable after the timeout naming how many nodes did not answer', async () => {
    // Long enough that the ack below (sent right after the request) is always
    // in before the deadline, even on a loaded machine (30 ms was not).
    const { b, c, m } = setup({ timeoutMs: 2000 });
    b.registry = ['me~1', 'other~2', 'third~3'];
    const o = outcome(c.request('subscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    c.onControl(ack(lastRequest(b).id, 'me~1'));
    await untilTimer(() => o.done, 'the timeout');
    expect(o.error?.message).toBe('2 nodes of 3 did not answer within 2 s; it may be applied on the others, and retrying is safe');
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'subscribe', result: 'timeout' })).toBe(1);
    // A late answer is ignored and counted.
    c.onControl(ack(lastRequest(b).id, 'other~2'));
    expect(await sample(m, 'pubgate_control_acks_total', { result: 'late' })).toBe(1);
  });

  it('stops waiting for a node whose lease ran out (no longer in the registry)', async () => {
    const { b, c } = setup({ recheckMs: 5 });
    const o = outcome(c.request('subscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    c.onControl(ack(lastRequest(b).id, 'me~1'));
    b.registry = ['me~1'];
    await until(() => o.done, 'the answer without the dead node');
    expect(o.error).toBeUndefined();
  });

  it('refuses at once while the broker is down, and answers waiting requests when it goes down', async () => {
    const { b, c, m } = setup();
    b.status = 'down';
    await expect(c.request('subscribe', '42', 'news')).rejects.toMatchObject({ code: 'unavailable', message: 'broker is not connected' });
    expect(b.sent).toEqual([]);
    b.status = 'ready';
    const o = outcome(c.request('subscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    b.status = 'down';
    c.onBrokerStatus('down');
    await until(() => o.done, 'the answer');
    expect(o.error?.code).toBe('unavailable');
    expect(o.error?.message).toMatch(/broker connection was lost/);
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'subscribe', result: 'unavailable' })).toBe(2);
  });

  it('answers unavailable when the broker does not accept the request', async () => {
    const { b, c } = setup();
    b.refusePublish = true;
    await expect(c.request('subscribe', '42', 'news')).rejects.toMatchObject({ code: 'unavailable', message: 'broker did not accept the publish' });
    expect(c.pending()).toBe(0);
  });

  it('refuses requests beyond maxPending at once', async () => {
    const { b, c, m } = setup({ maxPending: 2 });
    const first = outcome(c.request('subscribe', 'a', 'news'));
    const second = outcome(c.request('subscribe', 'b', 'news'));
    await until(() => b.sent.length === 2, 'two requests');
    await expect(c.request('subscribe', 'c', 'news')).rejects.toMatchObject({ code: 'unavailable', retryAfterSec: 1 });
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'subscribe', result: 'overloaded' })).toBe(1);
    c.stop();
    await until(() => first.done && second.done, 'both answered by stop');
    expect([first.error?.message, second.error?.message]).toEqual(['node is shutting down; retrying is safe', 'node is shutting down; retrying is safe']);
  });

  it('ignores acks for unknown ids and acks addressed to other nodes', async () => {
    const { b, c, m } = setup();
    const o = outcome(c.request('subscribe', '42', 'news'));
    await until(() => b.sent.length === 1, 'the request');
    const { id } = lastRequest(b);
    c.onControl(ack('unknown', 'other~2'));
    c.onControl(ack(id, 'other~2', true, 'someone-else'));
    c.onControl(ack(id, 'me~1'));
    await new Promise((r) => setImmediate(r));
    expect(o.done).toBe(false);
    expect(await sample(m, 'pubgate_control_acks_total', { result: 'late' })).toBe(1);
    c.onControl(ack(id, 'other~2'));
    await until(() => o.done, 'the answer');
    expect(o.error).toBeUndefined();
  });

  it('applies the requests of any node and answers the asker, ok false when it could not', async () => {
    let result: () => Promise<boolean> = () => Promise.resolve(true);
    const { b, c, applied, disconnected } = setup({ apply: () => result() });
    c.onControl({ kind: 'subscribe', id: 'r1', from: 'asker~9', user: '42', channel: 'news' });
    await until(() => b.sent.length === 1, 'the ack');
    expect(b.sent[0]).toEqual({ kind: 'ack', id: 'r1', to: 'asker~9', node: 'me~1', ok: true });
    result = () => Promise.resolve(false);
    c.onControl({ kind: 'unsubscribe', id: 'r2', from: 'asker~9', user: '42', channel: 'news' });
    await until(() => b.sent.length === 2, 'the second ack');
    expect(b.sent[1]).toEqual({ kind: 'ack', id: 'r2', to: 'asker~9', node: 'me~1', ok: false });
    result = () => Promise.reject(new Error('boom'));
    c.onControl({ kind: 'subscribe', id: 'r3', from: 'asker~9', user: '42', channel: 'news' });
    await until(() => b.sent.length === 3, 'the third ack');
    expect(b.sent[2]).toEqual({ kind: 'ack', id: 'r3', to: 'asker~9', node: 'me~1', ok: false });
    expect(applied).toEqual([
      { op: 'subscribe', user: '42', channel: 'news' },
      { op: 'unsubscribe', user: '42', channel: 'news' },
      { op: 'subscribe', user: '42', channel: 'news' },
    ]);
    c.onControl({ kind: 'disconnect', user: '7' });
    expect(disconnected).toEqual(['7']);
  });
});

describe('control messages on the wire (broker/control.ts)', () => {
  it('round-trips every kind with exactly its fields', () => {
    const all: ControlMessage[] = [
      { kind: 'disconnect', user: '42' },
      { kind: 'subscribe', id: 'a1', from: 'gw-1~x', user: 'u"\\', channel: 'news:1' },
      { kind: 'unsubscribe', id: 'a-_2', from: 'gw-1~x', user: '42', channel: 'news' },
      { kind: 'ack', id: 'a1', to: 'gw-1~x', node: 'gw-2~y', ok: false },
      { kind: 'query', id: 'q1', from: 'gw-1~x', app: 'app.1', prefix: 'chat-' },
      { kind: 'query', id: 'q2', from: 'gw-1~x', app: '7', prefix: '' },
      { kind: 'query', id: 'q3', from: 'gw-1~x', app: '7', channels: ['room', 'private-x'] },
      { kind: 'answer', id: 'q1', to: 'gw-1~x', node: 'gw-2~y', counts: [['chat-a', 2], ['chat-b', 1]], more: true },
      { kind: 'answer', id: 'q3', to: 'gw-1~x', node: 'gw-2~y', counts: [], more: false },
    ];
    for (const m of all) expect(parseControl(encodeControl(m))).toEqual(m);
    expect(encodeControl({ ...all[0], extra: 1 } as unknown as ControlMessage)).toBe('{"kind":"disconnect","user":"42"}');
  });

  it('refuses control messages with missing or invalid fields', () => {
    const bad = [
      '{"kind":"subscribe","id":"a","from":"n","user":"42"}',
      '{"kind":"subscribe","id":"a","from":"n","user":"42","channel":"bad name"}',
      '{"kind":"subscribe","id":"a b","from":"n","user":"42","channel":"news"}',
      `{"kind":"subscribe","id":"${'a'.repeat(65)}","from":"n","user":"42","channel":"news"}`,
      '{"kind":"subscribe","id":"a","from":"","user":"42","channel":"news"}',
      `{"kind":"unsubscribe","id":"a","from":"n","user":"${'u'.repeat(1025)}","channel":"news"}`,
      '{"kind":"ack","id":"a","to":"n","node":"m","ok":"yes"}',
      '{"kind":"ack","id":"a","to":"n","ok":true}',
      '{"kind":"ack","id":7,"to":"n","node":"m","ok":true}',
      '{"kind":"query","id":"q","from":"n","app":"7"}',
      '{"kind":"query","id":"q","from":"n","app":"7","prefix":"a","channels":["a"]}',
      '{"kind":"query","id":"q","from":"n","app":"bad app","prefix":""}',
      `{"kind":"query","id":"q","from":"n","app":"7","prefix":"${'p'.repeat(165)}"}`,
      '{"kind":"query","id":"q","from":"n","app":"7","channels":[]}',
      '{"kind":"query","id":"q","from":"n","app":"7","channels":["bad name"]}',
      `{"kind":"query","id":"q","from":"n","app":"7","channels":${JSON.stringify(Array.from({ length: 101 }, (_, i) => `c${i}`))}}`,
      '{"kind":"answer","id":"q","to":"n","node":"m","counts":[["a",1]]}',
      '{"kind":"answer","id":"q","to":"n","node":"m","counts":[["a",0]],"more":false}',
      '{"kind":"answer","id":"q","to":"n","node":"m","counts":[["a",1.5]],"more":false}',
      '{"kind":"answer","id":"q","to":"n","node":"m","counts":[["bad name",1]],"more":false}',
      '{"kind":"answer","id":"q","to":"n","node":"m","counts":[["a"]],"more":false}',
      '{"kind":"answer","id":"q","to":"n","node":"m","counts":{"a":1},"more":false}',
      `{"kind":"answer","id":"q","to":"n","node":"m","counts":${JSON.stringify(Array.from({ length: 1001 }, (_, i) => [`c${i}`, 1]))},"more":true}`,
      '{"kind":"other"}',
    ];
    for (const text of bad) expect(parseControl(text), text).toBeUndefined();
  });
});

const answer = (id: string, node: string, counts: [string, number][], more = false, to = 'me~1'): ControlMessage => ({ kind: 'answer', id, to, node, counts, more });

function lastQuery(b: FakeBroker): Extract<ControlMessage, { kind: 'query' }> {
  const q = b.sent.filter((x) => x.kind === 'query').at(-1);
  if (!q || q.kind !== 'query') throw new Error('no query sent');
  return q;
}

describe('count queries to every node (hub/control.ts)', () => {
  it('sums the answers of every node of the registry, once all answered', async () => {
    const { b, c, m } = setup();
    const o = outcome<CountResult>(c.query({ app: '7', prefix: 'chat-' }));
    await until(() => b.sent.length === 1, 'the query');
    const { id, ...rest } = lastQuery(b);
    expect(rest).toEqual({ kind: 'query', from: 'me~1', app: '7', prefix: 'chat-' });
    c.onControl(answer(id, 'me~1', [['chat-a', 2], ['chat-c', 1]]));
    await new Promise((r) => setImmediate(r));
    expect(o.done).toBe(false);
    c.onControl(answer(id, 'other~2', [['chat-a', 3], ['chat-b', 1]]));
    await until(() => o.done, 'the sum');
    expect(o.value).toEqual({ counts: [['chat-a', 5], ['chat-b', 1], ['chat-c', 1]], more: false });
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'query', result: 'ok' })).toBe(1);
  });

  it('counts one answer per node (a repeat is late) and ignores acks for a query', async () => {
    const { b, c, m } = setup();
    const o = outcome<CountResult>(c.query({ app: '7', channels: ['room'] }));
    await until(() => b.sent.length === 1, 'the query');
    const { id } = lastQuery(b);
    c.onControl(answer(id, 'me~1', [['room', 2]]));
    c.onControl(answer(id, 'me~1', [['room', 2]]));
    c.onControl(ack(id, 'other~2'));
    await new Promise((r) => setImmediate(r));
    expect(o.done).toBe(false);
    expect(await sample(m, 'pubgate_control_acks_total', { result: 'late' })).toBe(2);
    c.onControl(answer(id, 'other~2', []));
    await until(() => o.done, 'the sum');
    expect(o.value).toEqual({ counts: [['room', 2]], more: false });
  });

  it('answers unavailable after the timeout when a node does not answer (a sum without it would be wrong)', async () => {
    const { b, c, m } = setup({ timeoutMs: 2000 });
    const o = outcome<CountResult>(c.query({ app: '7', prefix: '' }));
    await until(() => b.sent.length === 1, 'the query');
    c.onControl(answer(lastQuery(b).id, 'me~1', [['a', 1]]));
    await untilTimer(() => o.done, 'the timeout');
    expect(o.error?.code).toBe('unavailable');
    expect(o.error?.message).toBe('1 node of 2 did not answer within 2 s; retrying is safe');
    expect(await sample(m, 'pubgate_control_requests_total', { op: 'query', result: 'timeout' })).toBe(1);
  });

  it('sums without a node whose lease ran out', async () => {
    const { b, c } = setup({ recheckMs: 5 });
    const o = outcome<CountResult>(c.query({ app: '7', prefix: '' }));
    await until(() => b.sent.length === 1, 'the query');
    c.onControl(answer(lastQuery(b).id, 'me~1', [['a', 1]]));
    b.registry = ['me~1'];
    await until(() => o.done, 'the sum without the dead node');
    expect(o.value).toEqual({ counts: [['a', 1]], more: false });
  });

  it('answers the queries of any node with this node\'s counts, addressed to the asker', async () => {
    const { b, c, m } = setup({ answer: (q) => ({ counts: q.prefix === 'x' ? [['x1', 4]] : [], more: false }) });
    c.onControl({ kind: 'query', id: 'q1', from: 'asker~9', app: '7', prefix: 'x' });
    c.onControl({ kind: 'answer', id: 'q1', to: 'asker~9', node: 'other~2', counts: [['x1', 1]], more: false });
    await until(() => b.sent.length === 1, 'the answer');
    expect(b.sent[0]).toEqual({ kind: 'answer', id: 'q1', to: 'asker~9', node: 'me~1', counts: [['x1', 4]], more: false });
    expect(await sample(m, 'pubgate_control_applied_total', { op: 'query', result: 'ok' })).toBe(1);
    expect(await sample(m, 'pubgate_control_acks_total', { result: 'late' })).toBe(0);
  });

  it('answers no channels without an answer function (a node without Pusher apps)', async () => {
    const { b, c } = setup();
    c.onControl({ kind: 'query', id: 'q1', from: 'asker~9', app: '7', prefix: '' });
    await until(() => b.sent.length === 1, 'the answer');
    expect(b.sent[0]).toEqual({ kind: 'answer', id: 'q1', to: 'asker~9', node: 'me~1', counts: [], more: false });
  });
});

describe('CountSum', () => {
  it('adds the counts of each name over the answers, in name order', () => {
    const s = new CountSum(10);
    s.add([['b', 1], ['c', 2]], false);
    s.add([['a', 5], ['c', 3]], false);
    expect(s.result()).toEqual({ counts: [['a', 5], ['b', 1], ['c', 5]], more: false });
  });

  it('drops names after the last one of a node that cut its list: their sums would miss that node', () => {
    const s = new CountSum(10);
    s.add([['a', 1], ['d', 1], ['e', 1]], false);
    s.add([['b', 1], ['c', 1]], true); // this node has more after c: maybe d or e too
    s.add([['c', 1], ['f', 1]], false);
    expect(s.result()).toEqual({ counts: [['a', 1], ['b', 1], ['c', 2]], more: true });
  });

  it('lists at most max names, the first ones, and says more', () => {
    const s = new CountSum(2);
    s.add([['c', 1], ['d', 1]], false);
    s.add([['a', 1], ['b', 1]], false);
    expect(s.result()).toEqual({ counts: [['a', 1], ['b', 1]], more: true });
  });

  it('keeps at most 2 × max names whatever the number of answers, and stays exact for those it lists', () => {
    const s = new CountSum(3);
    for (let node = 0; node < 50; node++) s.add([[`n${String(node).padStart(2, '0')}`, 1], ['a', 1]], false);
    expect((s as unknown as { sums: Map<string, number> }).sums.size).toBeLessThanOrEqual(6);
    expect(s.result()).toEqual({ counts: [['a', 50], ['n00', 1], ['n01', 1]], more: true });
  });
});

describe('native channel queries (app \'\': GET /v1/channels, the admin console)', () => {
  it('round-trips native queries (prefix, top, channels) and answers with native names', () => {
    const all: ControlMessage[] = [
      { kind: 'query', id: 'q1', from: 'gw-1~x', app: '', prefix: 'chat:' },
      { kind: 'query', id: 'q2', from: 'gw-1~x', app: '', prefix: '', top: 20 },
      { kind: 'query', id: 'q3', from: 'gw-1~x', app: '', channels: ['chat:1', 'a/b@c=d'] },
      { kind: 'answer', id: 'q3', to: 'gw-1~x', node: 'gw-2~y', counts: [['chat:1', 2], ['a/b@c=d', 1]], more: false },
    ];
    for (const m of all) expect(parseControl(encodeControl(m))).toEqual(m);
  });

  it('refuses top outside 1..1000, on a Pusher app, or with channels; native names only with app \'\'', () => {
    const bad = [
      '{"kind":"query","id":"q","from":"n","app":"","prefix":"","top":0}',
      '{"kind":"query","id":"q","from":"n","app":"","prefix":"","top":1001}',
      '{"kind":"query","id":"q","from":"n","app":"","prefix":"","top":1.5}',
      '{"kind":"query","id":"q","from":"n","app":"7","prefix":"","top":5}',
      '{"kind":"query","id":"q","from":"n","app":"","channels":["a"],"top":5}',
      '{"kind":"query","id":"q","from":"n","app":"7","channels":["chat:1"]}',
      '{"kind":"query","id":"q","from":"n","app":"","channels":["bad name"]}',
      `{"kind":"query","id":"q","from":"n","app":"","prefix":"${'p'.repeat(201)}"}`,
    ];
    for (const text of bad) expect(parseControl(text), text).toBeUndefined();
    // A native prefix may be up to 200 characters (a Pusher one 164).
    expect(parseControl(`{"kind":"query","id":"q","from":"n","app":"","prefix":"${'p'.repeat(200)}"}`)).toBeDefined();
  });

  it('sums a top query by subscriptions, most first, and says more when a node cut its list', async () => {
    const { b, c } = setup();
    const o = outcome<CountResult>(c.query({ app: '', prefix: '', top: 2 }));
    await until(() => b.sent.length === 1, 'the query');
    const { id, ...rest } = lastQuery(b);
    expect(rest).toEqual({ kind: 'query', from: 'me~1', app: '', prefix: '', top: 2 });
    c.onControl(answer(id, 'me~1', [['b', 5], ['a', 1]], true));
    c.onControl(answer(id, 'other~2', [['a', 5], ['c', 3]]));
    await until(() => o.done, 'the sum');
    expect(o.value).toEqual({ counts: [['a', 6], ['b', 5]], more: true });
  });

  it('gives each answering node\'s total with queryByNode (the inspector\'s per-node counts)', async () => {
    const { b, c } = setup();
    const o = outcome<CountResult>(c.queryByNode({ app: '', channels: ['chat:1'] }));
    await until(() => b.sent.length === 1, 'the query');
    const { id } = lastQuery(b);
    c.onControl(answer(id, 'other~2', [['chat:1', 3]]));
    c.onControl(answer(id, 'me~1', []));
    await until(() => o.done, 'the sum');
    expect(o.value).toEqual({ counts: [['chat:1', 3]], more: false, byNode: [['me~1', 0], ['other~2', 3]] });
  });
});

describe('TopSum', () => {
  it('orders by sum, ties by name, lists at most top and says more', () => {
    const s = new TopSum(3);
    s.add([['x', 2], ['b', 2]], false);
    s.add([['a', 2], ['x', 1], ['c', 1]], false);
    expect(s.result()).toEqual({ counts: [['x', 3], ['a', 2], ['b', 2]], more: true });
    const t = new TopSum(5);
    t.add([['a', 1]], false);
    expect(t.result()).toEqual({ counts: [['a', 1]], more: false });
  });

  it('keeps a bounded number of sums whatever the number of answers', () => {
    const s = new TopSum(2);
    for (let node = 0; node < 30; node++) s.add(Array.from({ length: 500 }, (_, i) => [`n${node}-${i}`, 1] as [string, number]).concat([['hot', 10]]), false);
    expect((s as unknown as { sums: Map<string, number> }).sums.size).toBeLessThanOrEqual(10_000);
    expect(s.result().counts[0]).toEqual(['hot', 300]);
    expect(s.result().more).toBe(true);
  });
});

describe('localNativeCounts (hub/native-counts.ts)', () => {
  const hub = {
    channels: [['chat:2', 1], ['chat:1', 4], ['#app2#room', 9], ['news', 2], ['empty', 0]] as [string, number][],
    localSubscribers(ch: string): number {
      return this.channels.find((c) => c[0] === ch)?.[1] ?? 0;
    },
    localChannels(): [string, number][] {
      return this.channels;
    },
  };
  const q = (o: Partial<Extract<ControlMessage, { kind: 'query' }>>): Extract<ControlMessage, { kind: 'query' }> => ({ kind: 'query', id: 'q', from: 'n', app: '', ...o });

  it('lists native channels with subscribers in name order, by prefix, never another Pusher app\'s internal names', () => {
    expect(localNativeCounts(hub, q({ prefix: '' }))).toEqual({ counts: [['chat:1', 4], ['chat:2', 1], ['news', 2]], more: false });
    expect(localNativeCounts(hub, q({ prefix: 'chat:' }))).toEqual({ counts: [['chat:1', 4], ['chat:2', 1]], more: false });
    expect(localNativeCounts(hub, q({ prefix: '' }), 2)).toEqual({ counts: [['chat:1', 4], ['chat:2', 1]], more: true });
  });

  it('lists the top channels by subscriptions, and the named channels', () => {
    expect(localNativeCounts(hub, q({ prefix: '', top: 2 }))).toEqual({ counts: [['chat:1', 4], ['news', 2]], more: true });
    expect(localNativeCounts(hub, q({ prefix: 'chat:', top: 5 }))).toEqual({ counts: [['chat:1', 4], ['chat:2', 1]], more: false });
    expect(localNativeCounts(hub, q({ channels: ['news', 'nope', 'news'] }))).toEqual({ counts: [['news', 2]], more: false });
  });
});
