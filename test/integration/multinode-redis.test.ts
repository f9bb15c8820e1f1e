/**
 * Three real gateway processes on one real redis-server: cross-node fan-out,
 * Redis subscriptions following local reference counts, /v1/disconnect on
 * every node, the pub/sub self-probe. Redis faults (kill -9, a node started
 * while Redis is down) are in multinode-redis-outage.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { metric } from '../helpers/gateway.js';
import {
  NodeGroup,
  Subscriber,
  closeAll,
  disconnectUser,
  expectUnavailable,
  logMark,
  publishBatch,
  publishOne,
  readyz,
  seq,
  untilReadyz,
  waitForNewLog,
  type SubscriberOptions,
} from '../helpers/multinode.js';
import { within } from '../helpers/recorder.js';
import { pollUntil } from '../helpers/redis.js';

const IDS = ['mn-a', 'mn-b', 'mn-c'] as const;
const group = new NodeGroup();
const { nodes } = group;
const subs: Subscriber[] = [];

// A larger send buffer than the default: 10 000 messages arrive as fast as three
// nodes publish them, and this test is about fan-out, not about slow consumers.
beforeAll(() => group.startOnRedis(IDS, { PUBGATE_MAX_BACKPRESSURE: String(16 * 1024 * 1024) }), 120_000);

afterAll(async () => {
  await closeAll(subs);
  await group.stop();
});

/** Every test leaves no subscriber behind, and waits until every node released its channels. */
afterEach(async () => {
  await closeAll(subs);
  for (const n of nodes) {
    await pollUntil(async () => (await metric(n.admin, 'pubgate_channels')) === 0, `node ${n.admin} to release every channel`, 20_000);
  }
});

async function open(i: number, o: SubscriberOptions = {}): Promise<Subscriber> {
  const s = await Subscriber.open(group.node(i).url, o);
  subs.push(s);
  expect(s.welcome?.node).toBe(IDS[i]);
  return s;
}

describe('three gateway nodes on one Redis', () => {
  it('fans out 10 000 messages over 20 channels, published round-robin on every node, to a subscriber on every node: per-channel publish order, no loss, no duplicate', async () => {
    const tag = randomUUID().slice(0, 8);
    const channels = seq(20).map((i) => `mn:fan:${tag}:${i}`);
    const listeners = await Promise.all(nodes.map((_, i) => open(i)));
    for (const l of listeners) await l.subscribe(...channels);
    const delivered0 = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_messages_delivered_total')));
    const published0 = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_messages_published_total')));

    const TOTAL = 10_000;
    const BATCH = 1000;
    const PER_CHANNEL = TOTAL / channels.length;
    // Batches go out one after the other (each awaited), node A, B, C, A, ...: the
    // publish order of each channel is the order of its messages across the batches.
    for (let b = 0; b < TOTAL / BATCH; b++) {
      const messages = seq(BATCH).map((j) => {
        const k = b * BATCH + j;
        return { channel: channels[k % channels.length] ?? '', data: Math.floor(k / channels.length) };
      });
      const res = await publishBatch(group.node(b % nodes.length), messages);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { results: Array<{ channel: string }> };
      expect(body.results.map((r) => r.channel)).toEqual(messages.map((m) => m.channel));
    }
    // One more message per channel: any duplicate or late copy of an earlier one would show before it.
    expect((await publishBatch(group.node(1), channels.map((channel) => ({ channel, data: 'end' })))).status).toBe(200);

    await Promise.all(
      listeners.map((l) =>
        l.until(() => channels.every((ch) => l.got(ch).length >= PER_CHANNEL + 1), `all ${TOTAL + channels.length} messages on ${String(l.welcome?.node)}`, 120_000),
      ),
    );
    const expected = [...seq(PER_CHANNEL), 'end'];
    for (const l of listeners) {
      for (const ch of channels) expect(l.got(ch), `${ch} on ${String(l.welcome?.node)}`).toEqual(expected);
      expect(l.isOpen).toBe(true);
    }
    // Each node handed each message to its one subscriber exactly once, and counted what it published.
    for (const [i, n] of nodes.entries()) {
      expect((await metric(n.admin, 'pubgate_messages_delivered_total')) - (delivered0[i] ?? 0)).toBe(TOTAL + channels.length);
    }
    const publishedNow = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_messages_published_total')));
    expect(publishedNow.reduce((a, b) => a + b, 0) - published0.reduce((a, b) => a + b, 0)).toBe(TOTAL + channels.length);
  }, 240_000);

  it('holds pubgate:ch:<x> in Redis once per node with local listeners and releases it with the last one (PUBSUB NUMSUB / CHANNELS, pubgate_broker_channels)', async () => {
    const r = group.redis();
    const tag = randomUUID().slice(0, 8);
    const ch = `mn:rc:${tag}`;
    const other = `mn:rc:${tag}:other`;
    const numsub = async (c: string): Promise<number> => Number((await r.cli('PUBSUB', 'NUMSUB', `pubgate:ch:${c}`))[1]);
    const listed = async (): Promise<string[]> => (await r.cli('PUBSUB', 'CHANNELS', `pubgate:ch:mn:rc:${tag}*`)).sort();
    /** pubgate_broker_channels (confirmed at the broker) equals the channels with local listeners, and `n`. */
    const expectChannels = async (i: number, n: number): Promise<void> => {
      expect(await metric(group.node(i).admin, 'pubgate_broker_channels'), `pubgate_broker_channels on ${IDS[i]}`).toBe(n);
      expect(await metric(group.node(i).admin, 'pubgate_channels'), `pubgate_channels on ${IDS[i]}`).toBe(n);
    };

    const a1 = await open(0);
    const a2 = await open(0);
    const b1 = await open(1);
    await a1.subscribe(ch);
    await a2.subscribe(ch);
    await b1.subscribe(ch);
    expect(await numsub(ch)).toBe(2); // one subscriber connection per node, not per client
    expect(await listed()).toEqual([`pubgate:ch:${ch}`]);
    await expectChannels(0, 1);
    await expectChannels(1, 1);
    await expectChannels(2, 0);

    // One of node A's two listeners leaves: A keeps the channel. A later SUBSCRIBE on
    // A's subscriber connection is confirmed only after any UNSUBSCRIBE sent before it,
    // so once `other` is confirmed, a wrongful release would already show.
    await a1.unsubscribe(ch);
    await a1.subscribe(other);
    expect(await numsub(ch)).toBe(2);
    expect(await numsub(other)).toBe(1);
    await expectChannels(0, 2);

    // The last listener on node A leaves.
    await a2.unsubscribe(ch);
    await pollUntil(async () => (await numsub(ch)) === 1, 'NUMSUB 1 once node A has no listener left', 10_000);
    await expectChannels(0, 1);

    // Node B's only listener disconnects (TCP drop, no close frame).
    await b1.terminate();
    await pollUntil(async () => (await numsub(ch)) === 0, 'NUMSUB 0 once node B lost its listener', 10_000);
    expect(await listed()).toEqual([`pubgate:ch:${other}`]);
    await expectChannels(1, 0);

    // The remaining channel still delivers, from another node.
    expect((await publishOne(group.node(2), other, 'still here')).status).toBe(200);
    await a1.untilCount(other, 1);
    expect(a1.got(other)).toEqual(['still here']);
    expect(a1.got(ch)).toEqual([]);

    await a1.close();
    await pollUntil(async () => (await listed()).length === 0, 'every mn:rc channel gone from PUBSUB CHANNELS', 10_000);
    await expectChannels(0, 0);
  });

  it('POST /v1/disconnect on node C closes a user\'s connections on nodes A and B with 4501; other users stay connected', async () => {
    const tag = randomUUID().slice(0, 8);
    const user = `mn-dis-${tag}`;
    const onA = await open(0, { user });
    const onB = await open(1, { user });
    const others = await Promise.all(nodes.map((_, i) => open(i, { user: `mn-stay-${tag}` })));
    const closes0 = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_disconnects_total', { code: '4501' })));

    const res = await disconnectUser(group.node(2), user);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    const [ca, cb] = await Promise.all([within(onA.closed, 10_000, 'close on node A'), within(onB.closed, 10_000, 'close on node B')]);
    expect(ca.code).toBe(4501);
    expect(cb.code).toBe(4501);
    // The control message reached every node before this ping: the other user's sockets are untouched.
    for (const o of others) expect(await o.alive()).toBe('open');
    const closes = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_disconnects_total', { code: '4501' })));
    expect(closes.map((c, i) => c - (closes0[i] ?? 0))).toEqual([1, 1, 0]);
  });

  // Readiness counts only channels Redis confirmed once (and the internal ones):
  // a first SUBSCRIBE in flight must not make a healthy node look down.
  it('stays ready while clients subscribe to new channels: no "broker status down" while Redis is healthy', async () => {
    const gw = group.node(0);
    const tag = randomUUID().slice(0, 8);
    const s = await open(0);
    const mark = logMark(gw);
    // Twenty subscribe frames in one TCP write: the node has them all in flight at once.
    for (let round = 0; round < 4; round++) await s.subscribeBurst(seq(20).map((i) => `mn:flap:${tag}:${round}:${i}`));
    const ch = `mn:flap:${tag}:0:0`;
    expect((await publishOne(gw, ch, 'x')).status).toBe(200);
    await s.untilCount(ch, 1);
    const flaps = gw.lines.filter((l) => !mark.has(l) && l.msg === 'broker status' && l.status !== 'ready');
    expect(flaps.map((l) => `${String(l.time)} ${String(l.status)}`)).toEqual([]);
  });

  it('runs the pub/sub self-probe on every node (pubgate_broker_probe_rtt_seconds_count grows)', async () => {
    const before = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_broker_probe_rtt_seconds_count')));
    await Promise.all(
      nodes.map((n, i) =>
        pollUntil(async () => (await metric(n.admin, 'pubgate_broker_probe_rtt_seconds_count')) >= (before[i] ?? 0) + 2, `two more probe round trips on ${IDS[i]}`, 20_000),
      ),
    );
    for (const n of nodes) expect(await metric(n.admin, 'pubgate_broker_up')).toBe(1);
  });

  it('marks every node not ready when its self-probe stops coming back (CLIENT PAUSE WRITE blocks PUBLISH) and ready again once it does', async () => {
    const r = group.redis();
    const ch = `mn:pause:${randomUUID().slice(0, 8)}`;
    const listener = await open(2);
    await listener.subscribe(ch);
    const marks = nodes.map(logMark);
    const lost0 = await Promise.all(nodes.map((n) => metric(n.admin, 'pubgate_broker_probe_lost_total')));

    // Connections stay up and PING is answered, but PUBLISH (the probe) blocks in the server.
    await r.cli('CLIENT', 'PAUSE', '120000', 'WRITE');
    try {
      await Promise.all(
        nodes.map((n, i) => waitForNewLog(n, marks[i] ?? new Set(), (l) => l.msg === 'broker self-probe is not coming back; marking down', 20_000)),
      );
      for (const [i, n] of nodes.entries()) {
        await untilReadyz(n, 503, 10_000, 'after the probe-down log line');
        expect(await metric(n.admin, 'pubgate_broker_up')).toBe(0);
        expect(await metric(n.admin, 'pubgate_broker_probe_lost_total')).toBeGreaterThan(lost0[i] ?? 0);
        await expectUnavailable(await publishOne(n, ch, `paused-${i}`));
      }
      expect(listener.isOpen).toBe(true);
    } finally {
      await r.cli('CLIENT', 'UNPAUSE');
    }

    await Promise.all(nodes.map((n, i) => waitForNewLog(n, marks[i] ?? new Set(), (l) => l.msg === 'broker self-probe is back', 20_000)));
    await Promise.all(nodes.map((n) => untilReadyz(n, 200, 20_000, 'after CLIENT UNPAUSE')));
    for (const n of nodes) {
      expect(await readyz(n)).toBe(200);
      expect(await metric(n.admin, 'pubgate_broker_up')).toBe(1);
    }
    expect((await publishOne(group.node(0), ch, 'after')).status).toBe(200);
    await listener.untilCount(ch, 1);
    // Nothing refused during the pause was delivered later.
    expect(listener.got(ch)).toEqual(['after']);
    expect(listener.isOpen).toBe(true);
  });
});
