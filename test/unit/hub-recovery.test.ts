/**
 * Recovery in the hub, paced by the socket's send buffer: the real hub and the
 * embedded broker's history, with a socket double whose send buffer the test
 * fills and drains (a uWS socket's buffer only moves with a real peer, which
 * the integration tests use; here every step is deterministic).
 */
import { describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { frameOffset, type History } from '../../src/broker/history.js';
import { createMemoryBroker } from '../../src/broker/memory-broker.js';
import { createHub, type HubWithBroker } from '../../src/hub/hub.js';
import { NO_CHANNELS, type Session, type Socket } from '../../src/hub/session.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { silentLogger } from '../../src/observability/logger.js';
import { NO_OPTIONS } from '../../src/channels/namespaces.js';

const CH = 'h:room';

function session(): Session {
  return {
    id: 1,
    user: 'u1',
    exp: 0,
    perms: { subscribe: () => true, publish: () => true },
    channels: NO_CHANNELS,
    open: true,
    idleBeats: 0,
    frameFullAtMs: 0,
    extra: undefined,
  };
}

/** A socket whose send buffer grows with every send until the test drains it. */
class FakeSocket implements Socket {
  readonly s = session();
  readonly sent: string[] = [];
  readonly topics = new Set<string>();
  buffered = 0;
  /** Sends that found the buffer non-empty and went over the limit: a paced replay makes none. */
  overLimit = 0;
  constructor(private readonly limit: number) {}
  getUserData(): Session {
    return this.s;
  }
  subscribe(topic: string): boolean {
    this.topics.add(topic);
    return true;
  }
  unsubscribe(topic: string): boolean {
    return this.topics.delete(topic);
  }
  send(message: string): number {
    if (!this.s.open) throw new Error('send on a closed socket');
    if (this.buffered > 0 && this.buffered + message.length > this.limit) this.overLimit++;
    this.sent.push(message);
    this.buffered += message.length;
    return 1;
  }
  end(): void {
    this.s.open = false;
  }
  ping(): number {
    return 1;
  }
  getBufferedAmount(): number {
    if (!this.s.open) throw new Error('getBufferedAmount on a closed socket');
    return this.buffered;
  }
  isSubscribed(topic: string): boolean {
    return this.topics.has(topic);
  }
  offsets(): number[] {
    return this.sent.map(frameOffset);
  }
}

interface Setup {
  hub: HubWithBroker;
  broker: Broker;
  history: History;
  ws: FakeSocket;
  closes: number[];
  /** The peer reads everything buffered; the hub hears the drain. */
  drain(): void;
}

async function setup(opts: { historySize: number; page: number; maxRecoveryBuffer: number; limit: number }): Promise<Setup> {
  const broker = createMemoryBroker({ history: { size: opts.historySize, ttlSec: 60 } });
  const ws = new FakeSocket(opts.limit);
  const sockets = [ws];
  const closes: number[] = [];
  const hub = createHub({
    broker,
    topics: {
      publish(topic, frame) {
        let n = 0;
        for (const s of sockets) {
          if (s.s.open && s.topics.has(topic)) {
            s.send(frame);
            n++;
          }
        }
        return n;
      },
      sendTo: (sock, frame) => void sock.send(frame),
    },
    metrics: createMetrics('test'),
    log: silentLogger(),
    closeSocket: (sock, code) => {
      closes.push(code);
      sock.getUserData().open = false;
      hub.remove(sock);
    },
    channelOptions: (c) => (c.startsWith('h:') ? { ...NO_OPTIONS, history: { size: opts.historySize, ttl: 60 } } : NO_OPTIONS),
    maxRecoveryBuffer: opts.maxRecoveryBuffer,
    maxBackpressure: opts.limit,
    recoveryPageSize: opts.page,
  });
  await broker.start({ onMessage: (c, f) => hub.deliver(c, f), onStatus: () => undefined, onControl: (m) => hub.control(m) });
  hub.add(ws);
  if (!broker.history) throw new Error('no history');
  return {
    hub,
    broker,
    history: broker.history,
    ws,
    closes,
    drain() {
      ws.buffered = 0;
      hub.drained(ws);
    },
  };
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const FRAME_DATA = JSON.stringify({ pad: 'x'.repeat(80) });

/** Lets pending promise continuations run (the memory history answers through resolved promises). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Drains until `done` holds; fails instead of looping for ever. */
async function drainUntil(t: Setup, done: () => boolean): Promise<number> {
  let rounds = 0;
  while (!done()) {
    if (++rounds > 10_000) throw new Error('the replay did not finish');
    t.drain();
    await settle();
  }
  return rounds;
}

describe('hub recovery, paced by the send buffer', () => {
  it('sends no more than fits under maxBackpressure, goes on at each drain, and ends with every offset once, then live', async () => {
    const t = await setup({ historySize: 1000, page: 50, maxRecoveryBuffer: 1000, limit: 2000 });
    for (let i = 0; i < 1000; i++) await t.history.publish(CH, FRAME_DATA);
    const epoch = (await t.history.position(CH)).epoch;
    let result: Awaited<ReturnType<HubWithBroker['recover']>> | undefined;
    void t.hub.recover(t.ws, CH, { offset: 0, epoch }).then((r) => (result = r));
    await settle();
    // Stalled on a full buffer: a frame or so over 2000 bytes, not the whole replay.
    expect(t.ws.sent.length).toBeGreaterThan(0);
    expect(t.ws.sent.length).toBeLessThan(30);
    expect(result).toBeUndefined();
    const rounds = await drainUntil(t, () => result !== undefined);
    expect(rounds).toBeGreaterThan(20);
    expect(t.ws.overLimit).toBe(0);
    expect(result).toEqual({ recovered: true, position: { offset: 1000, epoch }, replayed: 1000 });
    expect(t.ws.offsets()).toEqual(range(1, 1000));
    // Live from here, through the topic.
    await t.history.publish(CH, FRAME_DATA);
    expect(t.ws.topics.has(CH)).toBe(true);
    expect(t.ws.offsets()).toEqual(range(1, 1001));
  });

  it('reads live messages from history again when more arrive during the replay than it holds', async () => {
    const t = await setup({ historySize: 2000, page: 50, maxRecoveryBuffer: 10, limit: 2000 });
    for (let i = 0; i < 520; i++) await t.history.publish(CH, FRAME_DATA);
    const epoch = (await t.history.position(CH)).epoch;
    let result: Awaited<ReturnType<HubWithBroker['recover']>> | undefined;
    void t.hub.recover(t.ws, CH, { offset: 0, epoch }).then((r) => (result = r));
    // Into the last page (501..520), read before the live messages below were published.
    await drainUntil(t, () => t.ws.sent.length > 505);
    expect(result).toBeUndefined();
    // 100 live messages while the replay waits for the buffer: ten times what it holds.
    for (let i = 0; i < 100; i++) await t.history.publish(CH, FRAME_DATA);
    await drainUntil(t, () => result !== undefined);
    expect(result).toMatchObject({ recovered: true, position: { offset: 620, epoch } });
    expect(t.ws.offsets()).toEqual(range(1, 620));
    await t.history.publish(CH, FRAME_DATA);
    expect(t.ws.offsets()).toEqual(range(1, 621));
    expect(t.closes).toEqual([]);
  });

  it('closes with 4008 a socket whose replay history moved past (too slow for the channel)', async () => {
    const t = await setup({ historySize: 100, page: 10, maxRecoveryBuffer: 1000, limit: 500 });
    for (let i = 0; i < 100; i++) await t.history.publish(CH, FRAME_DATA);
    const epoch = (await t.history.position(CH)).epoch;
    let result: Awaited<ReturnType<HubWithBroker['recover']>> | undefined;
    void t.hub.recover(t.ws, CH, { offset: 0, epoch }).then((r) => (result = r));
    await settle();
    const got = t.ws.sent.length;
    expect(got).toBeLessThan(10);
    // 150 more: history now holds 151..250, past what the socket has read.
    for (let i = 0; i < 150; i++) await t.history.publish(CH, FRAME_DATA);
    await drainUntil(t, () => result !== undefined);
    expect(t.closes).toEqual([4008]);
    expect(result?.recovered).toBe(false);
    // What it did get is a gap-free prefix; the client recovers from there and learns it is too late.
    expect(t.ws.offsets()).toEqual(range(1, t.ws.sent.length));
    expect(t.ws.sent.length).toBeLessThan(100);
    expect(t.hub.channelCount()).toBe(0);
  });

  it('stops a replay when the client unsubscribes, and when the socket closes', async () => {
    const t = await setup({ historySize: 1000, page: 20, maxRecoveryBuffer: 1000, limit: 1000 });
    for (let i = 0; i < 300; i++) await t.history.publish(CH, FRAME_DATA);
    const epoch = (await t.history.position(CH)).epoch;

    let first: Awaited<ReturnType<HubWithBroker['recover']>> | undefined;
    void t.hub.recover(t.ws, CH, { offset: 0, epoch }).then((r) => (first = r));
    await settle();
    const before = t.ws.sent.length;
    t.hub.unsubscribe(t.ws, CH);
    await drainUntil(t, () => first !== undefined);
    expect(t.ws.sent.length).toBe(before);
    expect(t.ws.topics.has(CH)).toBe(false);
    expect(t.hub.channelCount()).toBe(0);

    t.ws.sent.length = 0;
    let second: Awaited<ReturnType<HubWithBroker['recover']>> | undefined;
    void t.hub.recover(t.ws, CH, { offset: 0, epoch }).then((r) => (second = r));
    await settle();
    expect(t.ws.sent.length).toBeGreaterThan(0);
    // The socket closes while the replay waits for its buffer: the wait ends with it.
    t.ws.s.open = false;
    t.hub.remove(t.ws);
    await settle();
    expect(second).toMatchObject({ recovered: false });
    expect(t.hub.channelCount()).toBe(0);
  });

  it('answers recovered:false at once (no replay) for a wrong epoch, and goes live', async () => {
    const t = await setup({ historySize: 100, page: 10, maxRecoveryBuffer: 1000, limit: 500 });
    for (let i = 0; i < 30; i++) await t.history.publish(CH, FRAME_DATA);
    const r = await t.hub.recover(t.ws, CH, { offset: 5, epoch: 'not-it' });
    expect(r).toMatchObject({ recovered: false, position: { offset: 30 }, replayed: 0 });
    expect(t.ws.sent).toEqual([]);
    await t.history.publish(CH, FRAME_DATA);
    expect(t.ws.offsets()).toEqual([31]);
  });
});
