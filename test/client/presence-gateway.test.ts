/**
 * Integration: presence and join/leave through @pubgate/client (in Node, on
 * the `ws` package) against real gateway processes: members per user with
 * conns and info, the refusals, no join for a second tab and no leave while
 * one remains, truncated lists, and, on two nodes sharing a real
 * redis-server, a client whose node is killed (SIGKILL) reading the exact set
 * again after it resubscribes on the other node.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { useClientFixture, type ClientProbe } from '../helpers/client-probe.js';
import type { GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import type { PresenceMember, PresenceResult } from '../../packages/client/src/index.js';
import { PresenceLog } from './presence-log.js';

const fx = useClientFixture();

const NAMESPACES = JSON.stringify([
  { pattern: 'room:*', presence: true, joinLeave: true },
  { pattern: 'quiet:*', presence: true },
]);

async function probe(url: string | string[], sub: string, info?: Record<string, unknown>): Promise<ClientProbe> {
  const jwt = await token({ sub, channels: ['room:*', 'quiet:*', 'plain:*'], ...(info ? { info } : {}) });
  return fx.probe({ url, token: jwt });
}

const chan = (prefix: string): string => `${prefix}:${randomUUID().slice(0, 8)}`;

/** Members sorted by user (the server's order is not part of the contract). */
function sorted(r: PresenceResult): PresenceMember[] {
  return [...r.members].sort((a, b) => a.user.localeCompare(b.user));
}

async function published(gw: GatewayProcess, channel: string, data: unknown): Promise<void> {
  const res = await fetch(`${gw.http}/v1/publish`, {
    method: 'POST',
    headers: { authorization: 'Bearer test-api-key-1', 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`publish to ${channel} answered ${res.status} ${text}`);
}

describe('presence through @pubgate/client', () => {
  it('lists one member per user with conns and info; join for the first tab only, leave after the last', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'pres-1', PUBGATE_NAMESPACES: NAMESPACES });
    const ch = chan('room');
    const watcher = await probe(gw.url, 'w');
    const room = watcher.subscribe(ch);
    const log = new PresenceLog(room);
    await room.ready;
    await expect(room.presence()).resolves.toEqual({ members: [{ user: 'w', conns: 1 }], users: 1, connections: 1, truncated: false });

    const ann1 = await probe(gw.url, 'ann', { name: 'Ann' });
    const ann1Sub = ann1.subscribe(ch);
    const ann1Log = new PresenceLog(ann1Sub);
    await ann1Sub.ready;
    await log.count(1);
    const ann2 = await probe(gw.url, 'ann', { name: 'Ann (phone)' });
    await ann2.subscribe(ch).ready;
    const bob = await probe(gw.url, 'bob');
    const bobSub = bob.subscribe(ch);
    await bobSub.ready;
    await log.count(2);
    // The second tab of ann made no join; bob's join has no info key.
    expect(log.entries).toEqual([
      { type: 'join', ev: { channel: ch, user: 'ann', info: { name: 'Ann' } } },
      { type: 'join', ev: { channel: ch, user: 'bob' } },
    ]);
    // A connection does not get its own user's join.
    await ann1Log.count(1);
    expect(ann1Log.summary).toEqual(['join:bob']);

    const r = await room.presence();
    expect(sorted(r)).toEqual([
      { user: 'ann', info: { name: 'Ann' }, conns: 2 }, // the oldest connection's info
      { user: 'bob', conns: 1 },
      { user: 'w', conns: 1 },
    ]);
    expect('info' in sorted(r)[1]!).toBe(false);
    expect(r).toMatchObject({ users: 3, connections: 4, truncated: false });
    await expect(room.presenceStats()).resolves.toEqual({ users: 3, connections: 4 });

    // One of ann's two tabs unsubscribes: no leave (bob's leave, later on the server, comes first).
    // Then ann's last tab disconnects: leave.
    await ann1Sub();
    await bobSub();
    await log.count(3);
    expect(log.summary).toEqual(['join:ann', 'join:bob', 'leave:bob']);
    await expect(room.presenceStats()).resolves.toEqual({ users: 2, connections: 2 });
    await ann2.close();
    await log.count(4);
    expect(log.summary).toEqual(['join:ann', 'join:bob', 'leave:bob', 'leave:ann']);
    await expect(room.presence()).resolves.toEqual({ members: [{ user: 'w', conns: 1 }], users: 1, connections: 1, truncated: false });
  });

  it('keeps presence without join/leave frames on a namespace without joinLeave', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'pres-2', PUBGATE_NAMESPACES: NAMESPACES });
    const ch = chan('quiet');
    const watcher = await probe(gw.url, 'w');
    const sub = watcher.subscribe(ch);
    const log = new PresenceLog(sub);
    await sub.ready;
    const other = await probe(gw.url, 'x', { name: 'X' });
    await other.subscribe(ch).ready;
    await expect(sub.presence()).resolves.toMatchObject({ users: 2, connections: 2 });
    // A join would have been fanned out before this later message.
    await published(gw, ch, 'marker');
    await watcher.untilCount(ch, 1);
    expect(log.entries).toEqual([]);
  });

  it('refuses presence of a channel without presence (bad_request) and of one the connection may not subscribe to (forbidden)', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'pres-3', PUBGATE_NAMESPACES: NAMESPACES });
    const p = await probe(gw.url, 'u');
    const plain = p.subscribe(chan('plain'));
    await plain.ready;
    await expect(plain.presence()).rejects.toMatchObject({ name: 'PubgateError', code: 'bad_request' });
    await expect(plain.presenceStats()).rejects.toMatchObject({ code: 'bad_request' });
    await p.client.whenConnected(20_000);
    // Asked while the subscribe is in flight: the gateway refuses both.
    const secret = p.subscribe('secret:1');
    const asked = secret.presence();
    await expect(secret.ready).rejects.toMatchObject({ code: 'forbidden' });
    await expect(asked).rejects.toMatchObject({ code: 'forbidden', channel: 'secret:1' });
    // Once refused, the subscription has ended.
    await expect(secret.presence()).rejects.toMatchObject({ code: 'unsubscribed' });
    expect(p.client.state).toBe('connected');
  });

  it('says truncated when there are more users than PUBGATE_PRESENCE_MAX_MEMBERS, with exact totals', async () => {
    const gw = await fx.gateway({ PUBGATE_NODE_ID: 'pres-4', PUBGATE_NAMESPACES: NAMESPACES, PUBGATE_PRESENCE_MAX_MEMBERS: '2' });
    const ch = chan('room');
    const probes = await Promise.all(['a', 'b', 'c'].map((u) => probe(gw.url, u)));
    const subs = probes.map((p) => p.subscribe(ch));
    await Promise.all(subs.map((s) => s.ready));
    const r = await subs[0]!.presence();
    expect(r.members).toHaveLength(2);
    expect(r).toMatchObject({ users: 3, connections: 3, truncated: true });
    for (const m of r.members) expect(['a', 'b', 'c']).toContain(m.user);
  });

  it('after its node is killed, the client resubscribes on the other node and presence() there is the exact set', async () => {
    const env = { PUBGATE_REDIS_URL: fx.redis().url, PUBGATE_NAMESPACES: NAMESPACES, PUBGATE_PRESENCE_TTL: '3' };
    const [a, b] = await Promise.all([fx.gateway({ ...env, PUBGATE_NODE_ID: 'pres-a' }), fx.gateway({ ...env, PUBGATE_NODE_ID: 'pres-b' })]);
    await untilReadyz(a!, 200);
    await untilReadyz(b!, 200);
    const ch = chan('room');
    // w starts on node a and moves to b; dave lives on a and dies with it; carol stays on b.
    const w = await probe([a!.url, b!.url], 'w');
    const wSub = w.subscribe(ch);
    const wLog = new PresenceLog(wSub);
    await wSub.ready;
    expect(w.client.welcome?.node).toBe('pres-a');
    const dave = await probe(a!.url, 'dave', { name: 'Dave' });
    await dave.subscribe(ch).ready;
    const carol = await probe(b!.url, 'carol');
    const carolSub = carol.subscribe(ch);
    const carolLog = new PresenceLog(carolSub);
    await carolSub.ready;
    await wLog.count(2);
    expect(wLog.summary).toEqual(['join:dave', 'join:carol']);

    await a!.stop('SIGKILL');
    await wLog.until((l) => l.summary.includes('resubscribed'), 'resubscribed on node b');
    expect(w.client.welcome?.node).toBe('pres-b');
    // dave's node died: its leave comes within PUBGATE_PRESENCE_TTL + 5 s, to carol who never moved.
    await carolLog.until((l) => l.summary.includes('leave:dave'), 'leave of dave', 20_000);
    expect(carolLog.summary.filter((e) => e.endsWith(':dave'))).toEqual(['leave:dave']);
    // The set read on the new node is exact: w's old connection on node a is gone too.
    const r = await wSub.presence();
    expect(sorted(r)).toEqual([
      { user: 'carol', conns: 1 },
      { user: 'w', conns: 1 },
    ]);
    expect(r).toMatchObject({ users: 2, connections: 2, truncated: false });
  });
});
