/**
 * The hub's reference counts through the subscription batcher: the real hub
 * on a broker double whose subscriptions go through SubscriptionBatcher to a
 * fake connection that records every command. A mass disconnect releases
 * exactly the channels nobody holds any more, each once, in commands of at
 * most 500 channels; channels still held stay subscribed; a release and a
 * new subscriber of one channel in the same turn send nothing.
 */
import { describe, expect, it } from 'vitest';
import type { Broker, BrokerHandlers } from '../../src/broker/broker.js';
import { SubscriptionBatcher, type SubOp } from '../../src/broker/sub-batcher.js';
import { createHub } from '../../src/hub/hub.js';
import { NO_CHANNELS, type Session, type Socket } from '../../src/hub/session.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { silentLogger } from '../../src/observability/logger.js';
import { NO_OPTIONS } from '../../src/channels/namespaces.js';

const POOL = 1000;
const PER_SOCKET = 20;

let nextId = 0;

/** A socket as the hub sees it. */
function socket(): Socket {
  const s: Session = {
    id: nextId++, user: `u${nextId}`, exp: 0, perms: { subscribe: () => true, publish: () => true }, channels: NO_CHANNELS,
    open: true, idleBeats: 0, frameFullAtMs: 0, extra: undefined,
  };
  return {
    getUserData: () => s,
    subscribe: () => true,
    unsubscribe: () => true,
    send: () => 1,
    end: () => {
      s.open = false;
    },
    ping: () => 1,
    getBufferedAmount: () => 0,
    isSubscribed: () => false,
  };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

function setup(): {
  hub: ReturnType<typeof createHub>;
  batcher: SubscriptionBatcher;
  sent: Array<{ op: SubOp; channels: string[] }>;
  answerAll(): Promise<void>;
} {
  const sent: Array<{ op: SubOp; channels: string[] }> = [];
  const open: Array<() => void> = [];
  const batcher = new SubscriptionBatcher({
    name: 'test',
    log: silentLogger(),
    stallMs: 60_000,
    onChange: () => undefined,
    send: (op, channels) =>
      new Promise<void>((resolve) => {
        sent.push({ op, channels: [...channels] });
        open.push(resolve);
      }),
  });
  batcher.connectionUp();
  let handlers: BrokerHandlers | undefined;
  const broker: Broker = {
    kind: 'redis',
    instance: 'churn',
    history: undefined,
    presence: undefined,
    status: 'ready',
    start: (h) => {
      handlers = h;
      h.onStatus('ready');
      return Promise.resolve();
    },
    publish: () => Promise.resolve(),
    publishOnce: () => Promise.resolve(true),
    subscribe: (ch) => batcher.add(ch),
    unsubscribe: (ch) => batcher.remove(ch),
    publishControl: () => Promise.resolve(),
    nodes: () => Promise.resolve(['churn']),
    subscribedCount: () => batcher.wanted.size,
    close: () => Promise.resolve(),
  };
  const hub = createHub({
    broker,
    topics: { publish: () => 0, sendTo: () => undefined },
    metrics: createMetrics('test'),
    log: silentLogger(),
    closeSocket: () => undefined,
    channelOptions: () => NO_OPTIONS,
    maxBackpressure: 1 << 20,
    maxRecoveryBuffer: 10,
  });
  void broker.start({ onMessage: () => undefined, onStatus: () => undefined, onControl: () => undefined });
  expect(handlers).toBeDefined();
  return {
    hub,
    batcher,
    sent,
    /** Answers every command written, until nothing is in flight or queued. */
    async answerAll() {
      for (let i = 0; i < 1000; i++) {
        await turn();
        if (open.length === 0 && batcher.backlog().queued === 0) return;
        for (const r of open.splice(0)) r();
      }
      throw new Error('the batcher did not settle');
    },
  };
}

/** Socket i's channels: overlapping, so most channels have several holders. */
const channelsOf = (i: number): string[] => Array.from({ length: PER_SOCKET }, (_, j) => `c${(i * 7 + j * 13) % POOL}`);

describe('hub reference counts through the subscription batcher', () => {
  it('a mass disconnect releases exactly the channels nobody holds any more, each once, in bounded commands', async () => {
    const { hub, batcher, sent, answerAll } = setup();
    const sockets = Array.from({ length: 300 }, () => socket());
    for (const ws of sockets) hub.add(ws);
    const subs = sockets.flatMap((ws, i) => channelsOf(i).map((ch) => hub.subscribe(ws, ch)));
    await answerAll();
    await Promise.all(subs);
    const all = new Set(sockets.flatMap((_, i) => channelsOf(i)));
    expect(hub.channelCount()).toBe(all.size);
    // Each channel subscribed once however many sockets asked for it.
    const subscribed = sent.filter((c) => c.op === 'subscribe').flatMap((c) => c.channels);
    expect(subscribed.sort()).toEqual([...all].sort());

    // 250 of them drop in one turn.
    const before = sent.length;
    for (const ws of sockets.slice(0, 250)) {
      ws.end(1006);
      hub.remove(ws);
    }
    await answerAll();
    const survivors = new Set(sockets.slice(250).flatMap((_, k) => channelsOf(250 + k)));
    const released = sent.slice(before).flatMap((c) => {
      expect(c.op).toBe('unsubscribe');
      expect(c.channels.length).toBeLessThanOrEqual(500);
      return c.channels;
    });
    expect(new Set(released).size).toBe(released.length);
    expect(released.sort()).toEqual([...all].filter((ch) => !survivors.has(ch)).sort());
    expect(sent.length - before).toBe(Math.ceil(released.length / 500));
    expect([...batcher.wanted].sort()).toEqual([...survivors].sort());
    for (const ch of survivors) expect(batcher.isConfirmed(ch)).toBe(true);
    expect(hub.channelCount()).toBe(survivors.size);
  });

  it('a channel released by its last holder and taken by a new one in the same turn sends nothing and stays confirmed', async () => {
    const { hub, batcher, sent, answerAll } = setup();
    const a = socket();
    hub.add(a);
    const p = hub.subscribe(a, 'shared');
    await answerAll();
    await p;
    const before = sent.length;
    const b = socket();
    hub.add(b);
    hub.unsubscribe(a, 'shared');
    const q = hub.subscribe(b, 'shared');
    await answerAll();
    await q;
    expect(sent.slice(before)).toEqual([]);
    expect(batcher.isConfirmed('shared')).toBe(true);
    expect(hub.channelCount()).toBe(1);
  });
});
