/**
 * The presence and join/leave rules of contract 1.1, as one suite run on each
 * broker: `runPresenceRules('memory' | 'redis' | 'redis-cluster')` from a
 * test file. On Redis and on the Cluster there are two gateway nodes, and a
 * user's tabs, the observers and the sentinels are spread over both (node A
 * and node B); on the memory broker A and B are the same node.
 *
 * Absence (no second join, no leave while a tab remains, no own join) is
 * proven with sentinels: after the action whose frame must not come, another
 * user joins or leaves on the same node, and once that frame arrived the
 * sequence is checked whole.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { refused } from './client.js';
import { disconnectUser, publishOne } from './multinode.js';
import {
  PresenceNodes,
  channelQuery,
  expectedView,
  httpPresence,
  httpView,
  untilHttpView,
  infoOfBytes,
  metricOn,
  presenceEnv,
  presenceToken,
  uid,
  viewOf,
  type PresenceBackend,
  type PresenceClient,
  type PresenceView,
} from './presence.js';

/** Members listed at most, in this suite (small, to see truncation). */
const MAX_MEMBERS = 3;

export function runPresenceRules(kind: PresenceBackend): void {
  const ids = kind === 'memory' ? ['pr-mem'] : [`pr-${kind}-a`, `pr-${kind}-b`];
  const n = new PresenceNodes(kind);
  const where = kind === 'memory' ? 'on one node' : 'on two nodes';
  const A = () => n.node(0);
  const B = () => n.node(n.nodes.length - 1);

  describe(`presence and join/leave (${kind}, ${where})`, () => {
    beforeAll(() => n.start(ids, presenceEnv({ ttl: 4, maxMembers: MAX_MEMBERS })), n.setupMs);
    afterEach(() => n.closeClients());
    afterAll(() => n.stop());

    it('metrics: presence entries per node, join/leave frames per delivery, presence operations by op', async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const room = `room:${t}`;
      const nodes = n.nodes;
      /** Polls one sample per node until `want` holds (the entries gauge follows closes the node learns of asynchronously). */
      const untilMetric = async (name: string, want: (v: number[]) => boolean, what: string, labels: Record<string, string> = {}): Promise<number[]> => {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const v = await metricOn(nodes, name, labels);
          if (want(v)) return v;
          if (Date.now() > deadline) throw new Error(`${name}: ${what} not reached; last ${JSON.stringify(v)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      // First in the suite: no entry on any node yet.
      await untilMetric('pubgate_presence_entries', (v) => v.every((x) => x === 0), 'every node at 0');
      const join0 = await metricOn(nodes, 'pubgate_presence_frames_total', { type: 'join' });
      const leave0 = await metricOn(nodes, 'pubgate_presence_frames_total', { type: 'leave' });
      const ops = async (op: string): Promise<number> =>
        (await metricOn(nodes, 'pubgate_presence_operations_total', { op, result: 'ok' })).reduce((a, b) => a + b, 0);
      const ops0 = { add: await ops('add'), remove: await ops('remove'), presence: await ops('presence'), stats: await ops('stats') };

      const o1 = await n.open(A(), { user: `${t}-o1` });
      const o2 = await n.open(B(), { user: `${t}-o2` });
      await o1.subscribe(ch, room);
      await o2.subscribe(ch, room);
      await o1.untilEvent('join', ch, o2.user);
      const u = await n.open(A(), { user: `${t}-u` });
      await u.subscribe(ch, room);
      await o1.untilEvent('join', ch, u.user);
      await o2.untilEvent('join', ch, u.user);

      const delta = async (name: string, base: number[], labels: Record<string, string> = {}): Promise<number[]> =>
        (await metricOn(nodes, name, labels)).map((x, i) => x - (base[i] ?? 0));
      const perNode = (onA: number, onB: number): number[] => (kind === 'memory' ? [onA + onB] : [onA, onB]);
      // Entries: o1 and u on A, o2 on B, two presence channels each.
      expect(await metricOn(nodes, 'pubgate_presence_entries')).toEqual(perNode(4, 2));
      // join frames handed to sockets: o2's to o1 (on A); u's to o1 (A) and to o2 (B). room:* sends none.
      expect(await delta('pubgate_presence_frames_total', join0, { type: 'join' })).toEqual(perNode(2, 1));
      await u.close();
      await o1.untilEvent('leave', ch, u.user);
      await o2.untilEvent('leave', ch, u.user);
      expect(await delta('pubgate_presence_frames_total', leave0, { type: 'leave' })).toEqual(perNode(1, 1));
      await untilMetric('pubgate_presence_entries', (v) => JSON.stringify(v) === JSON.stringify(perNode(2, 2)), 'u gone');
      await o1.view(ch);
      await o1.presenceStats(room);
      for (const op of ['add', 'remove', 'presence', 'stats'] as const) expect(await ops(op), op).toBeGreaterThan(ops0[op]);

      // Every entry goes with its connection.
      await o1.terminate();
      await o2.close();
      await untilMetric('pubgate_presence_entries', (v) => v.every((x) => x === 0), 'every node back at 0');
    });

    it(`a user's second tab (${where}) is the same member with conns 2: no second join, and the subscribe answers only once presence lists it`, async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const obs = await n.open(A(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      const tab1 = await n.open(A(), { user: `${t}-u`, info: { tab: 1 } });
      await tab1.subscribe(ch);
      expect(await obs.view(ch)).toEqual(expectedView([obs, tab1]));
      await obs.untilEvent('join', ch, tab1.user);

      const tab2 = await n.open(B(), { user: `${t}-u`, info: { tab: 2 } });
      await tab2.subscribe(ch);
      expect(await obs.view(ch)).toEqual(expectedView([obs, tab1, tab2]));
      // Sentinel: another user joins on tab2's node after tab2's subscribe was answered.
      const v = await n.open(B(), { user: `${t}-v` });
      await v.subscribe(ch);
      await obs.untilEvent('join', ch, v.user);
      expect(obs.events(ch)).toEqual([
        { type: 'join', channel: ch, user: tab1.user, info: { tab: 1 } },
        { type: 'join', channel: ch, user: v.user },
      ]);
      await tab1.untilEvent('join', ch, v.user);
      await tab2.untilEvent('join', ch, v.user);
      expect(tab1.events(ch)).toEqual([{ type: 'join', channel: ch, user: v.user }]);
      expect(tab2.events(ch)).toEqual([{ type: 'join', channel: ch, user: v.user }]);

      const view = await v.view(ch);
      expect(view).toEqual({
        members: [
          { user: `${t}-obs`, conns: 1 },
          { user: `${t}-u`, info: { tab: 1 }, conns: 2 },
          { user: `${t}-v`, conns: 1 },
        ],
        users: 3,
        connections: 4,
      });
    });

    it(`closing one of a user's two tabs (${where}) produces no leave; closing the last one does`, async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const obs = await n.open(B(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      const tab1 = await n.open(A(), { user: `${t}-u`, info: { tab: 1 } });
      await tab1.subscribe(ch);
      const tab2 = await n.open(B(), { user: `${t}-u`, info: { tab: 2 } });
      await tab2.subscribe(ch);
      const v = await n.open(A(), { user: `${t}-v` });
      await v.subscribe(ch);
      await obs.untilEvent('join', ch, v.user);

      // Tab 1 closes (close handshake); once presence shows one connection left, the
      // sentinel leaves on tab 1's node: a leave of the user would have come before it.
      await tab1.close();
      await obs.untilView(ch, (w) => w.connections === 3, 'tab 1 gone');
      await v.unsubscribe(ch);
      await obs.untilEvent('leave', ch, v.user);
      expect(obs.events(ch)).toEqual([
        { type: 'join', channel: ch, user: tab1.user, info: { tab: 1 } },
        { type: 'join', channel: ch, user: v.user },
        { type: 'leave', channel: ch, user: v.user },
      ]);

      // The last tab drops without a close frame: now the user leaves.
      await tab2.terminate();
      await obs.untilEvent('leave', ch, tab2.user);
      expect(obs.events(ch).slice(3)).toEqual([{ type: 'leave', channel: ch, user: tab2.user }]);
      expect(await obs.view(ch)).toEqual(expectedView([obs]));
    });

    it(`a member's info is that of its oldest connection still present (tabs ${where})`, async () => {
      const t = uid();
      const ch = `room:${t}`;
      const user = `${t}-u`;
      const asker = await n.open(B(), { user: `${t}-asker` }); // asks without being subscribed
      const tab1 = await n.open(A(), { user, info: { tab: 1 } });
      await tab1.subscribe(ch);
      const tab2 = await n.open(B(), { user, info: { tab: 2 } });
      await tab2.subscribe(ch);
      const tab3 = await n.open(A(), { user, info: { tab: 3 } });
      await tab3.subscribe(ch);
      expect(await asker.view(ch)).toEqual({ members: [{ user, info: { tab: 1 }, conns: 3 }], users: 1, connections: 3 });

      await tab1.unsubscribe(ch);
      expect(await asker.untilView(ch, (w) => w.connections === 2, 'tab 1 unsubscribed')).toEqual(expectedView([tab2, tab3]));
      await tab2.close();
      expect(await asker.untilView(ch, (w) => w.connections === 1, 'tab 2 closed')).toEqual(expectedView([tab3]));
      // A newer tab does not take over the info.
      const tab4 = await n.open(B(), { user, info: { tab: 4 } });
      await tab4.subscribe(ch);
      expect(await asker.view(ch)).toEqual({ members: [{ user, info: { tab: 3 }, conns: 2 }], users: 1, connections: 2 });
    });

    it(`a subscribing connection never receives its own user's join, and receives the joins of users after it (${where})`, async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const u = await n.open(A(), { user: `${t}-u`, info: { name: 'U' } });
      await u.subscribe(ch);
      const v = await n.open(B(), { user: `${t}-v`, info: { name: 'V' } });
      await v.subscribe(ch);
      await u.untilEvent('join', ch, v.user);
      // Sentinel for v: a third user joins on v's node.
      const w = await n.open(B(), { user: `${t}-w` });
      await w.subscribe(ch);
      await v.untilEvent('join', ch, w.user);
      await u.untilEvent('join', ch, w.user);
      expect(u.events(ch)).toEqual([
        { type: 'join', channel: ch, user: v.user, info: { name: 'V' } },
        { type: 'join', channel: ch, user: w.user },
      ]);
      expect(v.events(ch)).toEqual([{ type: 'join', channel: ch, user: w.user }]);
      // w joined last: it receives nothing, proven by a later message on the channel.
      expect((await publishOne(A(), ch, 'after')).status).toBe(200);
      await w.untilMessage(ch, 'after');
      expect(w.events(ch)).toEqual([]);
    });

    it(`unsubscribe produces a leave and removes the member, a dropped socket and /v1/disconnect too; subscribing again joins again (${where})`, async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const other = `chat:${t}:other`;
      const obs = await n.open(A(), { user: `${t}-obs` });
      await obs.subscribe(ch, other);
      const u = await n.open(B(), { user: `${t}-u`, info: { k: 'u' } });
      await u.subscribe(ch, other);
      await obs.untilEvent('join', ch, u.user);
      await obs.untilEvent('join', other, u.user);

      await u.unsubscribe(ch);
      await obs.untilEvent('leave', ch, u.user);
      expect(await obs.untilView(ch, (w) => w.connections === 1, 'u unsubscribed')).toEqual(expectedView([obs]));
      // Still a member of the other channel, and still connected.
      expect(await obs.view(other)).toEqual(expectedView([obs, u]));
      expect(await u.alive()).toBe('open');

      await u.subscribe(ch);
      expect(await obs.view(ch)).toEqual(expectedView([obs, u]));
      await obs.until(() => obs.events(ch).length >= 3, 'the second join of u');
      expect(obs.events(ch)).toEqual([
        { type: 'join', channel: ch, user: u.user, info: { k: 'u' } },
        { type: 'leave', channel: ch, user: u.user },
        { type: 'join', channel: ch, user: u.user, info: { k: 'u' } },
      ]);

      // A dropped socket leaves both channels.
      await u.terminate();
      await obs.until(() => obs.events(ch).length === 4 && obs.events(other).length === 2, 'leaves after the drop');
      expect(obs.events(ch)[3]).toEqual({ type: 'leave', channel: ch, user: u.user });
      expect(obs.events(other)).toEqual([
        { type: 'join', channel: other, user: u.user, info: { k: 'u' } },
        { type: 'leave', channel: other, user: u.user },
      ]);

      // /v1/disconnect (sent to the other node) closes both tabs of a user: one leave.
      const d1 = await n.open(B(), { user: `${t}-d` });
      const d2 = await n.open(A(), { user: `${t}-d` });
      await d1.subscribe(ch);
      await d2.subscribe(ch);
      await obs.untilEvent('join', ch, d1.user);
      expect((await disconnectUser(A(), d1.user)).status).toBe(200);
      expect((await d1.closed).code).toBe(4501);
      expect((await d2.closed).code).toBe(4501);
      await obs.untilEvent('leave', ch, d1.user);
      // Once presence shows neither tab, a new user joins: a second leave would have come before its join.
      await obs.untilView(ch, (w) => w.connections === 1, 'both tabs of d gone');
      const s = await n.open(B(), { user: `${t}-s` });
      await s.subscribe(ch);
      await obs.untilEvent('join', ch, s.user);
      expect(obs.events(ch).slice(4)).toEqual([
        { type: 'join', channel: ch, user: d1.user },
        { type: 'leave', channel: ch, user: d1.user },
        { type: 'join', channel: ch, user: s.user },
      ]);
      expect(await obs.untilView(ch, (w) => w.connections === 2, 'd gone')).toEqual(expectedView([obs, s]));
    });

    it('subscribing twice to the same presence channel changes nothing: one connection, no second join', async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const obs = await n.open(A(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      const u = await n.open(B(), { user: `${t}-u` });
      await u.subscribe(ch);
      await u.subscribe(ch);
      expect(await obs.view(ch)).toEqual(expectedView([obs, u]));
      const v = await n.open(B(), { user: `${t}-v` });
      await v.subscribe(ch);
      await obs.untilEvent('join', ch, v.user);
      expect(obs.events(ch)).toEqual([
        { type: 'join', channel: ch, user: u.user },
        { type: 'join', channel: ch, user: v.user },
      ]);
      // One unsubscribe is enough to leave.
      await u.unsubscribe(ch);
      await obs.untilEvent('leave', ch, u.user);
      expect(await obs.untilView(ch, (w) => w.connections === 2, 'u gone')).toEqual(expectedView([obs, v]));
    });

    it('a subscribe and an unsubscribe sent together (the subscribe still in flight) leave no presence entry, nor a subscribe and a dropped socket; subscribe, unsubscribe, subscribe leaves one', async () => {
      const t = uid();
      const obs = await n.open(B(), { user: `${t}-obs` });
      const gone: PresenceClient[] = [];
      const kept: PresenceClient[] = [];
      const channels: string[] = [];
      // Ten fresh channels each (the node has to subscribe at the broker first), frames sent back to back, no wait.
      for (let i = 0; i < 10; i++) {
        const ch = `chat:${t}:${i}`;
        channels.push(ch);
        await obs.subscribe(ch);
        const g = await n.open(A(), { user: `${t}-gone${i}` });
        const k = await n.open(A(), { user: `${t}-kept${i}` });
        const ids = [g.sendRequest({ type: 'subscribe', channel: ch }), g.sendRequest({ type: 'unsubscribe', channel: ch })];
        const kids = [
          k.sendRequest({ type: 'subscribe', channel: ch }),
          k.sendRequest({ type: 'unsubscribe', channel: ch }),
          k.sendRequest({ type: 'subscribe', channel: ch }),
        ];
        // And one that subscribes and drops its socket at once.
        const d = await n.open(A(), { user: `${t}-dropped${i}` });
        d.sendRequest({ type: 'subscribe', channel: ch });
        d.ws.terminate();
        await g.until(() => ids.every((id) => g.replies.has(id)), 'replies of gone');
        await k.until(() => kids.every((id) => k.replies.has(id)), 'replies of kept');
        expect(g.replies.get(ids[1]!)?.error).toBeUndefined();
        expect(k.replies.get(kids[2]!)?.error).toBeUndefined();
        gone.push(g);
        kept.push(k);
      }
      for (const [i, ch] of channels.entries()) {
        // The node may still be removing: wait for the exact view (a leaked entry never goes).
        await untilHttpView(A(), ch, expectedView([obs, kept[i]!]), 20_000);
        expect(await httpView(B(), ch)).toEqual(expectedView([obs, kept[i]!]));
      }
      // Still the same once both connections close: the kept one leaves, nothing stays behind.
      await Promise.all([...gone, ...kept].map((c) => c.close()));
      for (const ch of channels) await untilHttpView(B(), ch, expectedView([obs]), 20_000);
    });

    it('user ids and info with quotes, backslashes, colons and non-ASCII text come back exactly in join, leave and presence', async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const obs = await n.open(A(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      // Two of them: with the observer, MAX_MEMBERS users (all listed).
      const odd = [`${t} "q" \\b:1`, `${t}:ü☃\u00e9\n\t{}`];
      const info = { name: 'Ann "the" \\ ☃', nested: [1, { a: null, b: true }], empty: {}, n: 1.5 };
      const cs: PresenceClient[] = [];
      for (const [i, user] of odd.entries()) {
        const c = await n.open(i % 2 ? B() : A(), { user, info: { ...info, i } });
        await c.subscribe(ch);
        cs.push(c);
      }
      // Two tabs of the same odd user, the second on the other node.
      const again = await n.open(B(), { user: odd[0]!, info: { other: true } });
      await again.subscribe(ch);
      for (const u of odd) await obs.untilEvent('join', ch, u);
      expect(obs.events(ch)).toEqual(odd.map((user, i) => ({ type: 'join', channel: ch, user, info: { ...info, i } })));
      const want = expectedView([obs, ...cs, again]);
      expect(await obs.view(ch)).toEqual(want);
      expect(await httpView(B(), ch)).toEqual(want);
      for (const c of [...cs, again]) await c.close();
      for (const u of odd) await obs.untilEvent('leave', ch, u);
      expect(obs.events(ch).slice(odd.length).map((e) => e.user).sort()).toEqual([...odd].sort());
      expect(await obs.untilView(ch, (v) => v.connections === 1, 'all gone')).toEqual(expectedView([obs]));
    });

    it('a presence channel without joinLeave keeps presence and sends no join or leave', async () => {
      const t = uid();
      const ch = `room:${t}`;
      const obs = await n.open(A(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      const u = await n.open(B(), { user: `${t}-u`, info: { a: 1 } });
      await u.subscribe(ch);
      expect(await obs.view(ch)).toEqual(expectedView([obs, u]));
      await u.unsubscribe(ch);
      expect(await obs.untilView(ch, (w) => w.connections === 1, 'u gone')).toEqual(expectedView([obs]));
      await u.close();
      // Sentinel: a message published after all of it.
      expect((await publishOne(B(), ch, 'sentinel')).status).toBe(200);
      await obs.untilMessage(ch, 'sentinel');
      expect(obs.frames.filter((f) => f.type !== 'reply' && f.type !== 'message')).toEqual([]);
      expect(obs.events()).toEqual([]);
    });

    it(`lists at most PRESENCE_MAX_MEMBERS (${MAX_MEMBERS}) members with truncated:true, with exact users and connections (frame and HTTP)`, async () => {
      const t = uid();
      const ch = `room:${t}`;
      const conns: PresenceClient[] = [];
      for (const [i, u] of ['a', 'b', 'c', 'd', 'e'].entries()) {
        const c = await n.open(i % 2 ? B() : A(), { user: `${t}-${u}`, info: { u } });
        await c.subscribe(ch);
        conns.push(c);
      }
      const extra = await n.open(B(), { user: `${t}-a`, info: { u: 'a2' } });
      await extra.subscribe(ch);
      conns.push(extra);
      const all = expectedView(conns);
      expect(all.users).toBe(5);

      const check = (v: PresenceView): void => {
        expect(v.users).toBe(5);
        expect(v.connections).toBe(6);
        expect(v.truncated).toBe(true);
        expect(v.members).toHaveLength(MAX_MEMBERS);
        expect(new Set(v.members.map((m) => m.user)).size).toBe(MAX_MEMBERS);
        for (const m of v.members) expect(all.members).toContainEqual(m);
      };
      check(await conns[0]!.view(ch));
      check(await httpView(A(), ch));
      check(await httpView(B(), ch));

      // Exactly MAX_MEMBERS users: everyone listed, no `truncated`.
      await conns[3]!.close();
      await conns[4]!.unsubscribe(ch);
      const rest = [conns[0]!, conns[1]!, conns[2]!, extra];
      const full = await conns[1]!.untilView(ch, (v) => v.users === MAX_MEMBERS, `${MAX_MEMBERS} users`);
      expect(full).toEqual(expectedView(rest));
      const reply = await conns[2]!.presence(ch);
      expect(reply).not.toHaveProperty('truncated');
      const http = await httpPresence(B(), channelQuery(ch));
      expect(http.body).not.toHaveProperty('truncated');
      expect(viewOf(http.body)).toEqual(expectedView(rest));
    });

    it('presence_stats answers the exact users and connections, also beyond PRESENCE_MAX_MEMBERS', async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const asker = await n.open(A(), { user: `${t}-asker` });
      expect(await asker.presenceStats(ch)).toEqual({ type: 'reply', id: expect.any(Number), users: 0, connections: 0 });
      for (let i = 0; i < MAX_MEMBERS + 2; i++) {
        const c = await n.open(i % 2 ? A() : B(), { user: `${t}-${i % (MAX_MEMBERS + 1)}` });
        await c.subscribe(ch);
      }
      expect(await asker.presenceStats(ch)).toEqual({ type: 'reply', id: expect.any(Number), users: MAX_MEMBERS + 1, connections: MAX_MEMBERS + 2 });
      const r = await asker.presence(ch);
      expect(r).toMatchObject({ type: 'reply', users: MAX_MEMBERS + 1, connections: MAX_MEMBERS + 2, truncated: true });
    });

    it('presence and presence_stats are forbidden on a channel the token may not subscribe to (checked first), bad_request on a channel without presence or an invalid one', async () => {
      const t = uid();
      const mine = `chat:${t}:mine`;
      const limited = await n.open(A(), { user: `${t}-l`, channels: [mine, `room:{sub}`] });
      const open = await n.open(B(), { user: `${t}-o` });
      for (const type of ['presence', 'presence_stats'] as const) {
        const ask = (c: PresenceClient, channel: unknown) => c.request(channel === undefined ? { type } : { type, channel });
        const code = (r: Record<string, unknown>): unknown => (r.error as { code?: unknown } | undefined)?.code;
        // Not allowed by the token: forbidden, whether or not the channel has presence.
        expect(code(await ask(limited, `chat:${t}:other`)), `${type} chat other`).toBe('forbidden');
        expect(code(await ask(limited, `plain:${t}`)), `${type} plain, not allowed`).toBe('forbidden');
        // Allowed: answered ({sub} in a pattern is the user), with no error.
        expect((await ask(limited, mine)).error, `${type} own`).toBeUndefined();
        expect((await ask(limited, `room:${t}-l`)).error, `${type} room:{sub}`).toBeUndefined();
        // Allowed but without presence, or not a channel at all: bad_request.
        expect(code(await ask(open, `plain:${t}`)), `${type} plain`).toBe('bad_request');
        expect(code(await ask(open, `chat:${t} bad`)), `${type} invalid name`).toBe('bad_request');
        expect(code(await ask(open, undefined)), `${type} no channel`).toBe('bad_request');
        expect(code(await ask(open, 7)), `${type} channel not a string`).toBe('bad_request');
      }
      // Both connections are still open: errors are replies, not closes.
      expect(await limited.alive()).toBe('open');
      expect(await open.alive()).toBe('open');
    });

    it('info of exactly 1024 bytes is accepted and listed as sent; 1025 bytes (also counted in UTF-8) and a non-object info are refused with 401', async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const obs = await n.open(B(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      const info = infoOfBytes(1024);
      const big = await n.open(A(), { user: `${t}-big`, info });
      await big.subscribe(ch);
      expect(await obs.untilEvent('join', ch, big.user)).toEqual({ type: 'join', channel: ch, user: big.user, info });
      expect(await obs.view(ch)).toEqual(expectedView([obs, big]));
      const wide = infoOfBytes(1024, 'é');
      const wideClient = await n.open(B(), { user: `${t}-wide`, info: wide });
      await wideClient.subscribe(ch);
      expect(await httpView(A(), ch)).toEqual(expectedView([obs, big, wideClient]));

      const refusedWith = async (infoClaim: unknown, what: string): Promise<void> => {
        const r = await refused(A().url, { token: await presenceToken({ user: `${t}-x`, info: infoClaim }) });
        expect({ status: r.status, code: r.body.error?.code }, what).toEqual({ status: 401, code: 'unauthorized' });
      };
      await refusedWith(infoOfBytes(1025), '1025 bytes');
      await refusedWith(infoOfBytes(1025, 'é'), '1025 bytes of UTF-8 in fewer characters');
      await refusedWith('a string', 'a string');
      await refusedWith([1, 2], 'an array');
      await refusedWith(42, 'a number');
    });

    it(`GET /v1/presence and /v1/presence/stats answer the contract's shapes from every node, with the API key`, async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const u1 = await n.open(A(), { user: `${t}-u`, info: { n: 1 } });
      const u2 = await n.open(B(), { user: `${t}-u`, info: { n: 2 } });
      const v = await n.open(B(), { user: `${t}-v` });
      for (const c of [u1, u2, v]) await c.subscribe(ch);
      for (const gw of n.nodes) {
        const p = await httpPresence(gw, channelQuery(ch));
        expect(p.status).toBe(200);
        expect(p.contentType).toMatch(/^application\/json/);
        expect(p.body).toEqual({ channel: ch, members: expect.any(Array), users: 2, connections: 3 });
        expect(viewOf(p.body)).toEqual(expectedView([u1, u2, v]));
        const s = await httpPresence(gw, channelQuery(ch), { stats: true });
        expect(s.status).toBe(200);
        expect(s.body).toEqual({ channel: ch, users: 2, connections: 3 });
      }
      // An empty presence channel.
      const empty = await httpPresence(A(), channelQuery(`chat:${t}:empty`));
      expect(empty.body).toEqual({ channel: `chat:${t}:empty`, members: [], users: 0, connections: 0 });
    });

    it('the HTTP presence API refuses a missing or unknown key (401), a missing, invalid or presence-less channel (400), and other methods (405)', async () => {
      const t = uid();
      const ch = `chat:${t}`;
      for (const stats of [false, true]) {
        const what = stats ? '/v1/presence/stats' : '/v1/presence';
        const status = async (query: string, o: { key?: string | null; method?: string } = {}): Promise<[number, unknown]> => {
          const r = await httpPresence(A(), query, { stats, ...o });
          return [r.status, (r.body.error as { code?: unknown } | undefined)?.code];
        };
        expect(await status(channelQuery(ch), { key: null }), `${what} no key`).toEqual([401, 'unauthorized']);
        expect(await status(channelQuery(ch), { key: 'not-a-key' }), `${what} unknown key`).toEqual([401, 'unauthorized']);
        expect(await status(''), `${what} no channel`).toEqual([400, 'bad_request']);
        expect(await status('channel='), `${what} empty channel`).toEqual([400, 'bad_request']);
        expect(await status(channelQuery(`${ch} x`)), `${what} invalid channel`).toEqual([400, 'bad_request']);
        expect(await status(channelQuery(`plain:${t}`)), `${what} no presence`).toEqual([400, 'bad_request']);
        expect((await status(channelQuery(ch), { method: 'POST' }))[0], `${what} POST`).toBe(405);
        expect((await status(channelQuery(ch), { method: 'DELETE' }))[0], `${what} DELETE`).toBe(405);
        expect(await status(channelQuery(ch)), `${what} ok`).toEqual([200, undefined]);
      }
    });

  });
}
