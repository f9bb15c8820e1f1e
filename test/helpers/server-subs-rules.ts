/**
 * The server-side subscription rules of contract 1.1, as one suite run on
 * each broker: `runServerSubsRules('memory' | 'redis' | 'redis-cluster')`. On
 * Redis and on the Cluster there are two gateway nodes and a user's tabs are
 * spread over both (node A and node B); on the memory broker A and B are the
 * same node.
 *
 * Absence (no `subscribed` for a connection already subscribed, no message
 * after an unsubscribe, nothing for later connections) is proven with
 * sentinels: after the publish that must not arrive, a publish that must
 * arrive on the same connection, and the whole sequence is checked once it came.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Frame } from './client.js';
import { metric, type GatewayProcess } from './gateway.js';
import { publishOne } from './multinode.js';
import { PresenceNodes, httpView, uid, type PresenceBackend } from './presence.js';
import { SubsClient, closeSubsClients, serverSub, serverSubOk, subsEnv, type OpenOptions, type SubsClaims } from './server-subs.js';

/** maxSubscriptions in this suite (small, to reach it). */
const MAX_SUBS = 4;

async function published(gw: GatewayProcess, channel: string, data: unknown): Promise<number | undefined> {
  const r = await publishOne(gw, channel, data);
  const body = (await r.json()) as { offset?: number };
  if (r.status !== 200) throw new Error(`publish to ${channel} on ${gw.http}: ${r.status} ${JSON.stringify(body)}`);
  return body.offset;
}

const typeAndChannel = (f: Frame): string => `${f.type}:${String(f.channel ?? '')}`;

export function runServerSubsRules(kind: PresenceBackend): void {
  const ids = kind === 'memory' ? ['ss-mem'] : [`ss-${kind}-a`, `ss-${kind}-b`];
  const n = new PresenceNodes(kind);
  const clients: SubsClient[] = [];
  const where = kind === 'memory' ? 'on one node' : 'on two nodes';
  const A = (): GatewayProcess => n.node(0);
  const B = (): GatewayProcess => n.node(n.nodes.length - 1);

  async function open(gw: GatewayProcess, c: SubsClaims, o?: OpenOptions): Promise<SubsClient> {
    const client = await SubsClient.open(gw.url, c, o);
    clients.push(client);
    return client;
  }

  describe(`server-side subscriptions (${kind}, ${where})`, () => {
    beforeAll(() => n.start(ids, subsEnv({ PUBGATE_MAX_SUBSCRIPTIONS: String(MAX_SUBS) })), n.setupMs);
    afterEach(() => closeSubsClients(clients));
    afterAll(() => n.stop());

    it('subscribes the channels of the subs claim before the welcome, which lists them with positions on history channels', async () => {
      const t = uid();
      const feed = `feed:${t}`;
      const news = `news:${t}`;
      for (let i = 1; i <= 3; i++) expect(await published(A(), feed, { before: i })).toBe(i);
      // No `channels` permission at all: server-side subscriptions need none.
      const c = await open(B(), { user: `${t}-u`, subs: [news, feed] });
      expect(c.all[0]?.type).toBe('welcome');
      const subs = c.welcomeSubs!;
      expect(Object.keys(subs).sort()).toEqual([feed, news].sort());
      expect(subs[news]).toEqual({});
      expect(subs[feed]).toEqual({ offset: 3, epoch: expect.any(String) as string });
      expect(await published(A(), feed, { after: 1 })).toBe(4);
      await published(A(), news, { after: 1 });
      const m = await c.untilMessage(feed, { after: 1 });
      expect(m).toMatchObject({ offset: 4, epoch: subs[feed]!.epoch });
      await c.untilMessage(news, { after: 1 });
      // What came before the subscription is not delivered: the position says where to recover from.
      expect(c.data(feed)).toEqual([{ after: 1 }]);
      // The client's own subscribe to it changes nothing; its unsubscribe ends it; then it needs the permission.
      expect((await c.subscribe(news)).error).toBeUndefined();
      expect((await c.request({ type: 'unsubscribe', channel: news })).error).toBeUndefined();
      expect((await c.subscribe(news)).error).toMatchObject({ code: 'forbidden' });
    });

    it('keeps the welcome first while messages flow on its subs, then delivers every message after the announced position once, in order', async () => {
      const t = uid();
      const feed = `feed:${t}`;
      const news = `news:${t}`;
      const total = 150;
      let sent = 0;
      const publisher = (async () => {
        for (let i = 1; i <= total; i++) {
          await published(A(), feed, i);
          await published(A(), news, i);
          sent = i;
        }
      })();
      const tabs: SubsClient[] = [];
      // Connections open while the publisher runs; each sends a ping and a subscribe before its welcome.
      while (sent < total && tabs.length < 8) {
        tabs.push(await open(tabs.length % 2 === 0 ? B() : A(), { user: `${t}-u${tabs.length}`, channels: [`news:${t}-own`], subs: [feed, news] }, {
          early: [{ type: 'ping' }, { type: 'subscribe', channel: `news:${t}-own` }],
        }));
      }
      await publisher;
      expect(tabs.length).toBeGreaterThan(1);
      for (const c of tabs) {
        await c.until(() => c.of('message', feed).some((f) => f.data === total), `message ${total} on ${feed} at ${c.user}`);
        await c.until(() => c.of('message', news).some((f) => f.data === total), `message ${total} on ${news} at ${c.user}`);
        await c.until(() => c.replies.size === 2, `the replies to the early frames at ${c.user}`);
        expect(c.all[0]?.type).toBe('welcome');
        expect([...c.replies.values()].map((r) => r.error)).toEqual([undefined, undefined]);
        const from = c.welcomeSubs![feed]!.offset!;
        const offsets = c.of('message', feed).map((f) => f.offset as number);
        // Every offset after the announced position, once, in order: none lost while held, none twice.
        expect(offsets).toEqual(Array.from({ length: total - from }, (_, i) => from + 1 + i));
        const newsData = c.data(news) as number[];
        expect(newsData).toEqual(Array.from({ length: newsData.length }, (_, i) => total - newsData.length + 1 + i));
      }
    });

    it('subscribes only the first maxSubscriptions names of the subs claim, and lists only those', async () => {
      const t = uid();
      const names = Array.from({ length: MAX_SUBS + 2 }, (_, i) => `news:${t}-${i}`);
      const c = await open(A(), { user: `${t}-u`, subs: names });
      expect(Object.keys(c.welcomeSubs!).sort()).toEqual(names.slice(0, MAX_SUBS).sort());
      await published(B(), names[MAX_SUBS]!, 'beyond');
      await published(B(), names[0]!, 'sentinel');
      await c.untilMessage(names[0]!, 'sentinel');
      expect(c.of('message').map((f) => f.data)).toEqual(['sentinel']);
    });

    it('subscribes every open connection of the user on every node, so that a publish right after the 200 reaches each of them', async () => {
      const t = uid();
      const user = `${t}-u`;
      const tabs = [await open(A(), { user }), await open(B(), { user }), await open(B(), { user })];
      const other = await open(A(), { user: `${t}-x`, subs: [`news:${t}-x`] });
      for (let i = 0; i < 8; i++) {
        // Fresh channels each round: every node must subscribe at the broker before it answers.
        const channel = i % 2 === 0 ? `news:${t}-${i}` : `feed:${t}-${i}`;
        await serverSubOk(i % 2 === 0 ? A() : B(), 'subscribe', user, channel);
        const offset = await published(i % 2 === 0 ? B() : A(), channel, { round: i });
        for (const c of tabs) {
          await c.untilMessage(channel, { round: i });
          const before = c.framesBefore(channel, { round: i }).filter((f) => f.channel === channel);
          if (channel.startsWith('feed:')) {
            expect(before).toEqual([{ type: 'subscribed', channel, offset: 0, epoch: expect.any(String) as string }]);
            expect(offset).toBe(1);
          } else {
            expect(before).toEqual([{ type: 'subscribed', channel }]);
          }
        }
        // Unsubscribed again (the tabs stay under maxSubscriptions): each tab hears of it.
        await serverSubOk(i % 2 === 0 ? B() : A(), 'unsubscribe', user, channel);
        for (const c of tabs) await c.untilFrame((f) => f.type === 'unsubscribed' && f.channel === channel, `unsubscribed ${channel}`);
      }
      await published(B(), `news:${t}-x`, 'sentinel');
      await other.untilMessage(`news:${t}-x`, 'sentinel');
      expect(other.all.map(typeAndChannel)).toEqual(['welcome:', `message:news:${t}-x`]);
    });

    it('leaves the connections the user opens later alone', async () => {
      const t = uid();
      const user = `${t}-u`;
      const channel = `news:${t}`;
      const early = await open(B(), { user });
      await serverSubOk(A(), 'subscribe', user, channel);
      await early.untilFrame((f) => f.type === 'subscribed', 'subscribed');
      const later = await open(B(), { user, subs: [`news:${t}-own`] });
      await published(A(), channel, 'after');
      await published(A(), `news:${t}-own`, 'sentinel');
      await early.untilMessage(channel, 'after');
      await later.untilMessage(`news:${t}-own`, 'sentinel');
      expect(later.all.map(typeAndChannel)).toEqual(['welcome:', `message:news:${t}-own`]);
    });

    it('sends nothing to a connection already subscribed, and nothing for a repeated request', async () => {
      const t = uid();
      const user = `${t}-u`;
      const channel = `news:${t}`;
      const own = await open(A(), { user, channels: ['news:*'] });
      expect((await own.subscribe(channel)).error).toBeUndefined();
      const fresh = await open(B(), { user });
      await serverSubOk(B(), 'subscribe', user, channel);
      await serverSubOk(A(), 'subscribe', user, channel);
      await published(A(), channel, 'm1');
      for (const c of [own, fresh]) await c.untilMessage(channel, 'm1');
      expect(own.of('subscribed')).toEqual([]);
      expect(fresh.of('subscribed')).toEqual([{ type: 'subscribed', channel }]);
      // The user's connection subscribed at connect through `subs` is already subscribed too.
      const bySubs = await open(A(), { user, subs: [channel] });
      await serverSubOk(A(), 'subscribe', user, channel);
      await published(B(), channel, 'm2');
      await bySubs.untilMessage(channel, 'm2');
      expect(bySubs.of('subscribed')).toEqual([]);
      expect(fresh.of('subscribed')).toHaveLength(1);
    });

    it('unsubscribes every connection of the user with an unsubscribed frame, and nothing for one not subscribed', async () => {
      const t = uid();
      const user = `${t}-u`;
      const channel = `feed:${t}`;
      const sentinel = `news:${t}-s`;
      const bySubs = await open(A(), { user, subs: [channel, sentinel] });
      const byClient = await open(B(), { user, channels: ['feed:*'], subs: [sentinel] });
      expect((await byClient.subscribe(channel)).error).toBeUndefined();
      const none = await open(B(), { user, subs: [sentinel] });
      await serverSubOk(B(), 'unsubscribe', user, channel);
      await published(A(), channel, 'gone');
      await published(A(), sentinel, 's1');
      for (const c of [bySubs, byClient]) {
        await c.untilMessage(sentinel, 's1');
        expect(c.all.filter((f) => f.channel === channel)).toEqual([{ type: 'unsubscribed', channel }]);
      }
      await none.untilMessage(sentinel, 's1');
      expect(none.all.map(typeAndChannel)).toEqual(['welcome:', `message:${sentinel}`]);
      // Again: nobody is subscribed any more, nobody hears of it.
      await serverSubOk(A(), 'unsubscribe', user, channel);
      await published(B(), sentinel, 's2');
      for (const c of [bySubs, byClient]) {
        await c.untilMessage(sentinel, 's2');
        expect(c.of('unsubscribed')).toHaveLength(1);
      }
    });

    it('answers unsubscribed with reason limit_exceeded to a connection at maxSubscriptions, and subscribes the others', async () => {
      const t = uid();
      const user = `${t}-u`;
      const full = Array.from({ length: MAX_SUBS }, (_, i) => `news:${t}-${i}`);
      const channel = `news:${t}-new`;
      const atLimit = await open(A(), { user, subs: full });
      const roomy = await open(B(), { user, subs: [full[0]!] });
      await serverSubOk(A(), 'subscribe', user, channel);
      await published(B(), channel, 'm');
      await published(B(), full[0]!, 'sentinel');
      await roomy.untilMessage(channel, 'm');
      expect(roomy.of('subscribed')).toEqual([{ type: 'subscribed', channel }]);
      await atLimit.untilMessage(full[0]!, 'sentinel');
      expect(atLimit.all.filter((f) => f.type !== 'welcome')).toEqual([
        { type: 'unsubscribed', channel, reason: 'limit_exceeded' },
        { type: 'message', channel: full[0], data: 'sentinel' },
      ]);
    });

    it('enters presence for channels subscribed through subs and through the API, with the connection token\u2019s info', async () => {
      const t = uid();
      const chat = `chat:${t}`;
      const watcher = await open(A(), { user: `${t}-w`, channels: ['chat:*'] });
      expect((await watcher.subscribe(chat)).error).toBeUndefined();
      const ann = await open(B(), { user: `${t}-ann`, subs: [chat], info: { name: 'Ann' } });
      const join = await watcher.untilFrame((f) => f.type === 'join' && f.user === ann.user, 'join of Ann');
      expect(join).toEqual({ type: 'join', channel: chat, user: ann.user, info: { name: 'Ann' } });
      const bob = await open(A(), { user: `${t}-bob`, info: { name: 'Bob' } });
      await serverSubOk(B(), 'subscribe', bob.user, chat);
      await watcher.untilFrame((f) => f.type === 'join' && f.user === bob.user, 'join of Bob');
      // Ann, subscribed earlier, hears Bob join; Bob does not hear his own join.
      await ann.untilFrame((f) => f.type === 'join' && f.user === bob.user, 'join of Bob at Ann');
      const view = await httpView(A(), chat);
      expect(view.members).toEqual(
        [
          { user: watcher.user, conns: 1 },
          { user: ann.user, info: { name: 'Ann' }, conns: 1 },
          { user: bob.user, info: { name: 'Bob' }, conns: 1 },
        ].sort((a, b) => (a.user < b.user ? -1 : 1)),
      );
      await serverSubOk(A(), 'unsubscribe', bob.user, chat);
      await watcher.untilFrame((f) => f.type === 'leave' && f.user === bob.user, 'leave of Bob');
      expect(bob.all.filter((f) => f.channel === chat).map((f) => f.type)).toEqual(['subscribed', 'unsubscribed']);
    });

    it('answers 200 for a user with no connection anywhere', async () => {
      await serverSubOk(A(), 'subscribe', `${uid()}-nobody`, 'news:x');
      await serverSubOk(B(), 'unsubscribe', `${uid()}-nobody`, 'news:x');
    });

    it('refuses invalid bodies with 400, a missing or unknown key with 401, other methods with 405 and other types with 415', async () => {
      for (const op of ['subscribe', 'unsubscribe'] as const) {
        const bad: unknown[] = [
          'not json',
          [],
          null,
          {},
          { channel: 'news' },
          { user: '', channel: 'news' },
          { user: 42, channel: 'news' },
          { user: 'x'.repeat(1025), channel: 'news' },
          { user: '42' },
          { user: '42', channel: '' },
          { user: '42', channel: 'bad name' },
          { user: '42', channel: 'c'.repeat(201) },
          { user: '42', channel: ['news'] },
        ];
        for (const body of bad) {
          const r = await serverSub(A(), op, body);
          expect({ body, status: r.status, code: (r.body.error as { code?: string } | undefined)?.code }).toEqual({ body, status: 400, code: 'bad_request' });
        }
        // 1024 characters and a 200-character channel are fine.
        expect((await serverSub(A(), op, { user: 'x'.repeat(1024), channel: 'c'.repeat(200) })).status).toBe(200);
        for (const key of [null, 'wrong-key']) {
          const r = await serverSub(A(), op, { user: '42', channel: 'news' }, { key });
          expect(r.status).toBe(401);
          expect(r.body).toMatchObject({ error: { code: 'unauthorized' } });
          expect(r.headers.get('www-authenticate')).toBe('Bearer');
        }
        const get = await serverSub(A(), op, undefined, { method: 'GET' });
        expect(get.status).toBe(405);
        expect(get.headers.get('allow')).toBe('POST');
        expect((await serverSub(A(), op, { user: '42', channel: 'news' }, { contentType: 'text/plain' })).status).toBe(415);
      }
    });

    it('counts requests, answers and server-side subscriptions in the metrics', async () => {
      const t = uid();
      const user = `${t}-u`;
      const value = (gw: GatewayProcess, name: string, labels: Record<string, string>): Promise<number> => metric(gw.admin, name, labels);
      const ok0 = await value(A(), 'pubgate_control_requests_total', { op: 'subscribe', result: 'ok' });
      const subscribed0 = await value(B(), 'pubgate_server_subscriptions_total', { source: 'api', result: 'subscribed' });
      const connect0 = await value(B(), 'pubgate_server_subscriptions_total', { source: 'connect', result: 'subscribed' });
      const applied0 = await value(B(), 'pubgate_control_applied_total', { op: 'subscribe', result: 'ok' });
      const c = await open(B(), { user, subs: [`news:${t}-a`, `news:${t}-b`] });
      await serverSubOk(A(), 'subscribe', user, `news:${t}`);
      await c.untilFrame((f) => f.type === 'subscribed', 'subscribed');
      expect(await value(A(), 'pubgate_control_requests_total', { op: 'subscribe', result: 'ok' })).toBe(ok0 + 1);
      expect(await value(B(), 'pubgate_server_subscriptions_total', { source: 'api', result: 'subscribed' })).toBe(subscribed0 + 1);
      expect(await value(B(), 'pubgate_server_subscriptions_total', { source: 'connect', result: 'subscribed' })).toBe(connect0 + 2);
      expect(await value(B(), 'pubgate_control_applied_total', { op: 'subscribe', result: 'ok' })).toBe(applied0 + 1);
      expect(await value(A(), 'pubgate_control_requests_pending', {})).toBe(0);
      expect(await value(A(), 'pubgate_cluster_nodes', {})).toBe(n.nodes.length);
    });
  });
}
