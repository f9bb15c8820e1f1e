/**
 * Requests to every node (hub/control.ts) on a broker double whose control
 * messages the test delivers by hand, and the control messages' wire form
 * (broker/control.ts): when a request is answered, and with what; acks for
 * unknown requests and for other nodes ignored; the pending bound; the
 * registry re-read that stops waiting for dead nodes; a node answering the
 * requests of others.
 */
import { describe, expect, it } from 'vitest';
import type { Broker, BrokerHandlers, BrokerStatus, ControlMessage } from '../../src/broker/broker.js';
import { encodeControl, parseControl } from '../../src/broker/control.js';
import { createClusterControl, type ClusterControl } from '../../src/hub/control.js';
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

function setup(o: { apply?: () => Promise<boolean>; timeoutMs?: number; recheckMs?: number; maxPending?: number } = {}): Setup {
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
function outcome(p: Promise<void>): { done: boolean; error: GatewayError | undefined } {
  const o: { done: boolean; error: GatewayError | undefined } = { done: false, error: undefined };
  p.then(
    () => {
      o.done = true;
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
      '{"kind":"other"}',
    ];
    for (const text of bad) expect(parseControl(text), text).toBeUndefined();
  });
});
