/**
 * A history channel published to from two nodes at once (several publishes in
 * flight per node) while a subscriber drops its connection mid-stream and
 * recovers on another node with `since`; and the checks on what it received.
 * Used by the multinode history tests on one Redis and on a Redis Cluster.
 */
import { expect } from 'vitest';
import type { Frame } from './client.js';
import type { GatewayProcess } from './gateway.js';
import { HistoryClient, publishH, range, type MessageFrame, type Position } from './history.js';

export interface StreamOptions {
  /** Messages published in all, half from each of the two publishing nodes. */
  readonly total: number;
  /** Concurrent publishes per node. */
  readonly inFlight: number;
  /** Messages received on the first node before it drops the connection. */
  readonly disconnectAt: number;
  /** The two nodes that publish. */
  readonly publishers: readonly [GatewayProcess, GatewayProcess];
  /** Every client opened here lands in this list (the caller closes them). */
  readonly clients: HistoryClient[];
}

/** Publishes `count` messages from `gw` with `inFlight` workers; records offset → data from every answer. */
async function publisher(gw: GatewayProcess, tag: string, count: number, inFlight: number, byOffset: Map<number, unknown>, ch: string): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const data = { from: tag, seq: next++ };
      const r = await publishH(gw, ch, data);
      if (r.status !== 200 || typeof r.body.offset !== 'number') throw new Error(`publish on ${tag}: ${r.status} ${JSON.stringify(r.body)}`);
      if (byOffset.has(r.body.offset)) throw new Error(`offset ${r.body.offset} answered twice`);
      byOffset.set(r.body.offset, data);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
}

export interface Move {
  readonly epoch: string;
  /** The position the client reconnected with. */
  readonly since: Position;
  readonly reply: Frame;
  /** Message frames before and after the move, in arrival order. */
  readonly received: MessageFrame[];
  /** offset → data, from the publish answers. */
  readonly byOffset: Map<number, unknown>;
}

/**
 * A client subscribed on `from` receives while both publishers publish `total`
 * messages; after `disconnectAt` it drops its connection (no close handshake)
 * and subscribes on `to` with since = the last message it got.
 */
export async function moveMidStream(ch: string, from: GatewayProcess, to: GatewayProcess, o: StreamOptions): Promise<Move> {
  const first = await HistoryClient.open(from.url);
  o.clients.push(first);
  const r0 = await first.subscribe(ch);
  expect(r0).toEqual({ type: 'reply', id: 1, offset: 0, epoch: expect.any(String) });
  const epoch = r0.epoch as string;

  const byOffset = new Map<number, unknown>();
  const half = o.total / 2;
  const publishing = Promise.all([
    publisher(o.publishers[0], 'a', half, o.inFlight, byOffset, ch),
    publisher(o.publishers[1], 'b', o.total - half, o.inFlight, byOffset, ch),
  ]);
  publishing.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile

  await first.until(() => first.messages(ch).length >= o.disconnectAt, `${o.disconnectAt} messages on the first node`);
  await first.terminate();
  const since = first.last(ch);
  const publishedWhenDropped = byOffset.size;

  const second = await HistoryClient.open(to.url);
  o.clients.push(second);
  const reply = await second.subscribe(ch, since);
  expect(reply).toMatchObject({ type: 'reply', id: 1, recovered: true, epoch });
  await publishing;
  // The move really happened mid-stream: messages were published after it.
  expect(publishedWhenDropped).toBeLessThan(o.total);
  expect(Number(reply.offset)).toBeLessThan(o.total);
  expect([...byOffset.keys()].sort((x, y) => x - y)).toEqual(range(1, o.total));
  await second.untilOffset(ch, o.total);
  expect(await second.alive()).toBe('open'); // anything repeated after offset N would have arrived by now
  return { epoch, since, reply, received: [...first.messages(ch), ...second.messages(ch)], byOffset };
}

/**
 * moveMidStream from `from` to `to` while a steady subscriber stays on `to`
 * for the whole run; both must end with offsets 1..total exactly once, in
 * order, in one epoch, each carrying the data its publish was answered with.
 */
export async function expectMoveInOrder(ch: string, from: GatewayProcess, to: GatewayProcess, o: StreamOptions): Promise<void> {
  // Live delivery alone is the offset order too.
  const steady = await HistoryClient.open(to.url);
  o.clients.push(steady);
  const r0 = await steady.subscribe(ch);

  const mv = await moveMidStream(ch, from, to, o);
  expect(mv.epoch).toBe(r0.epoch);
  expect(firstArrivals(mv.received)).toEqual(range(1, o.total));
  expect(mismatches(mv)).toEqual([]);
  // No duplicate: every offset exactly once, in order.
  expect(mv.received.map((m) => m.offset)).toEqual(range(1, o.total));

  await steady.untilOffset(ch, o.total);
  expect(steady.offsets(ch)).toEqual(range(1, o.total));
  // Both nodes' publishes were interleaved in the sequence.
  expect(new Set(mv.received.map((m) => (m.data as { from: string }).from))).toEqual(new Set(['a', 'b']));
}

/** Offsets in arrival order, each at its first arrival only. */
export function firstArrivals(received: readonly MessageFrame[]): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const m of received) {
    const o = Number(m.offset);
    if (!seen.has(o)) out.push(o);
    seen.add(o);
  }
  return out;
}

/** Offsets that arrived more than once (one entry per repeat). */
export function repeats(received: readonly MessageFrame[]): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const m of received) {
    const o = Number(m.offset);
    if (seen.has(o)) out.push(o);
    seen.add(o);
  }
  return out;
}

/** Every received message carries the channel's epoch and the data its offset was published with. */
export function mismatches(mv: Move): MessageFrame[] {
  return mv.received.filter((m) => m.epoch !== mv.epoch || JSON.stringify(m.data) !== JSON.stringify(mv.byOffset.get(Number(m.offset))));
}
