/**
 * Subscription tokens (contract 1.1, "Subscription tokens and the proxies")
 * against real gateways: a `subscribe` with a `token` the connection's claims
 * do not cover. Mismatches (user, channel, expiry, key, algorithm confusion,
 * kid), the token's `info` in presence (subscribe and recovery with `since`),
 * the frame checks, the order (claims first), `maxSubscriptions`, metrics;
 * on the embedded broker, and the token's `info` seen from another node
 * through Redis.
 */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token, type Client } from '../helpers/client.js';
import { TEST_SECRET, metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { hmacJwt, nowSec, publicPem, signAsym, tempDir, unsignedJwt } from '../helpers/keys.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';
import { httpView, uid } from '../helpers/presence.js';

const K2 = 'kid2-secret-0123456789-abcdefghijklmnopq';
const OTHER = 'other-secret-0123456789-abcdefghijklmno';
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });

const NAMESPACES = JSON.stringify([
  { pattern: 'room:*', presence: true },
  { pattern: 'feed:*', presence: true, history: { size: 50, ttl: 300 } },
]);

/** A subscription token for `user` and `channel` (HS256, the test secret unless told). */
const subToken = (user: string, channel: string, extra: Record<string, unknown> = {}, o: { secret?: string; kid?: string } = {}): Promise<string> =>
  token({ sub: user, channel, ...extra }, o);

let nextId = 1;
const id = (): number => nextId++;

async function subscribe(c: Client, channel: string, tok?: unknown, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  return c.request({ type: 'subscribe', id: id(), channel, ...(tok !== undefined ? { token: tok } : {}), ...extra });
}

const errorOf = (reply: Record<string, unknown>): { code: string; message: string } | undefined => reply.error as { code: string; message: string } | undefined;

describe('subscription tokens (embedded broker)', () => {
  let gw: GatewayProcess;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const clients: Client[] = [];

  async function open(user: string, claims: Record<string, unknown> = {}): Promise<Client> {
    const c = await connect(gw.url, { token: await token({ sub: user, channels: [], ...claims }) });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    dir = await tempDir();
    gw = await startGateway({
      PUBGATE_NAMESPACES: NAMESPACES,
      PUBGATE_JWT_ALGORITHMS: 'HS256,RS256',
      PUBGATE_JWT_SECRETS: `${TEST_SECRET},k2:${K2}`,
      PUBGATE_JWT_PUBLIC_KEYS: await dir.file('keys.pem', publicPem(rsa)),
      PUBGATE_MAX_SUBSCRIPTIONS: '3',
    });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await gw?.stop();
    await dir?.cleanup();
  });

  it('allows a subscribe the claims do not allow with a token for this user and channel, and delivers its messages', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u1');
    expect(errorOf(await subscribe(c, ch))?.code).toBe('forbidden');
    const reply = await subscribe(c, ch, await subToken('u1', ch));
    expect(reply.error).toBeUndefined();
    expect((await publish(gw, { channel: ch, data: { n: 1 } })).status).toBe(200);
    expect(await c.next((f) => f.type === 'message')).toMatchObject({ channel: ch, data: { n: 1 } });
  });

  it('refuses a token for another user, for another channel or without a channel with forbidden', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u2');
    expect(errorOf(await subscribe(c, ch, await subToken('u3', ch)))).toEqual({ code: 'forbidden', message: 'the subscription token is for another user' });
    expect(errorOf(await subscribe(c, ch, await subToken('u2', `${ch}x`)))).toEqual({ code: 'forbidden', message: 'the subscription token is for another channel' });
    expect(errorOf(await subscribe(c, ch, await token({ sub: 'u2' })))?.code).toBe('forbidden');
    // A connection token with channel patterns is not a subscription token either.
    expect(errorOf(await subscribe(c, ch, await token({ sub: 'u2', channels: ['room:*'] })))?.code).toBe('forbidden');
  });

  it('refuses a token past exp with unauthorized', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u4');
    const expired = hmacJwt({ sub: 'u4', channel: ch, exp: nowSec() - 60 });
    expect(errorOf(await subscribe(c, ch, expired))).toEqual({ code: 'unauthorized', message: 'subscription token expired' });
  });

  it('refuses a token signed with another secret, an unsigned one and HS256 signed with the RSA public key (algorithm confusion), and takes an RS256 one', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u5');
    const claims = { sub: 'u5', channel: ch, exp: nowSec() + 600 };
    expect(errorOf(await subscribe(c, ch, hmacJwt(claims, { key: OTHER })))).toEqual({
      code: 'forbidden',
      message: 'invalid subscription token: invalid token signature',
    });
    expect(errorOf(await subscribe(c, ch, unsignedJwt(claims)))?.code).toBe('forbidden');
    expect(errorOf(await subscribe(c, ch, hmacJwt(claims, { key: Buffer.from(publicPem(rsa)) })))?.code).toBe('forbidden');
    expect((await subscribe(c, ch, await signAsym('RS256', rsa, claims))).error).toBeUndefined();
  });

  it('selects the HMAC secret by kid: the named secret allows, another secret under that kid or an unknown kid is forbidden', async () => {
    const c = await open('u6');
    const [a, b, d] = [`room:${uid()}`, `room:${uid()}`, `room:${uid()}`];
    expect((await subscribe(c, a, await subToken('u6', a, {}, { secret: K2, kid: 'k2' }))).error).toBeUndefined();
    expect(errorOf(await subscribe(c, b, await subToken('u6', b, {}, { secret: TEST_SECRET, kid: 'k2' })))?.code).toBe('forbidden');
    expect(errorOf(await subscribe(c, d, await subToken('u6', d, {}, { secret: K2, kid: 'nope' })))).toEqual({
      code: 'forbidden',
      message: 'invalid subscription token: unknown token key id',
    });
  });

  it("shows the token's info in that channel's presence, and the connection's info in its other channels", async () => {
    const [withToken, byClaims] = [`room:${uid()}`, `room:${uid()}`];
    const c = await open('u7', { channels: [byClaims], info: { name: 'Conn' } });
    expect((await subscribe(c, withToken, await subToken('u7', withToken, { info: { role: 'guest' } }))).error).toBeUndefined();
    expect((await subscribe(c, byClaims)).error).toBeUndefined();
    const p1 = await c.request({ type: 'presence', id: id(), channel: withToken });
    expect(p1.members).toEqual([{ user: 'u7', info: { role: 'guest' }, conns: 1 }]);
    const p2 = await c.request({ type: 'presence', id: id(), channel: byClaims });
    expect(p2.members).toEqual([{ user: 'u7', info: { name: 'Conn' }, conns: 1 }]);
  });

  it('answers presence for a channel a token allowed, and forbidden for one it did not', async () => {
    const [ch, other] = [`room:${uid()}`, `room:${uid()}`];
    const c = await open('u15');
    expect((await subscribe(c, ch, await subToken('u15', ch))).error).toBeUndefined();
    expect((await c.request({ type: 'presence_stats', id: id(), channel: ch }))).toMatchObject({ users: 1, connections: 1 });
    expect(errorOf(await c.request({ type: 'presence', id: id(), channel: other }))?.code).toBe('forbidden');
  });

  it("keeps the connection's info when the token has none", async () => {
    const ch = `room:${uid()}`;
    const c = await open('u8', { info: { name: 'Bea' } });
    expect((await subscribe(c, ch, await subToken('u8', ch))).error).toBeUndefined();
    expect((await c.request({ type: 'presence', id: id(), channel: ch })).members).toEqual([{ user: 'u8', info: { name: 'Bea' }, conns: 1 }]);
  });

  it("uses the token's info when it recovers with since on a history channel", async () => {
    const ch = `feed:${uid()}`;
    const c = await open('u9', { info: { name: 'Conn' } });
    expect((await publish(gw, { channel: ch, data: 'm1' })).status).toBe(200);
    const reply = await subscribe(c, ch, await subToken('u9', ch, { info: { seat: 9 } }), { since: { offset: 0, epoch: 'unknown-epoch' } });
    expect(reply).toMatchObject({ recovered: false, offset: 1 });
    expect((await c.request({ type: 'presence', id: id(), channel: ch })).members).toEqual([{ user: 'u9', info: { seat: 9 }, conns: 1 }]);
  });

  it('refuses a token whose info is not a JSON object of at most 1024 bytes', async () => {
    const [a, b] = [`room:${uid()}`, `room:${uid()}`];
    const c = await open('u10');
    expect(errorOf(await subscribe(c, a, await subToken('u10', a, { info: { x: 'y'.repeat(1017) } })))?.code).toBe('forbidden');
    expect(errorOf(await subscribe(c, b, await subToken('u10', b, { info: 'guest' })))?.code).toBe('forbidden');
    expect((await subscribe(c, b, await subToken('u10', b, { info: { x: 'y'.repeat(1016) } }))).error).toBeUndefined();
  });

  it('answers bad_request for a token that is not a non-empty string of at most 8192 characters', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u11');
    for (const bad of ['', 42, null, { jwt: 'x' }, 'x'.repeat(8193)]) {
      expect(errorOf(await subscribe(c, ch, bad))).toEqual({ code: 'bad_request', message: 'token must be a non-empty string of at most 8192 characters' });
    }
    // 8192 characters pass the frame check and are then verified (here: not a JWT).
    expect(errorOf(await subscribe(c, ch, 'x'.repeat(8192)))?.code).toBe('forbidden');
  });

  it('does not look at a token when the claims allow the channel', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u12', { channels: ['room:*'] });
    expect((await subscribe(c, ch, 'not-a-token')).error).toBeUndefined();
  });

  it('counts subscriptions made with tokens against maxSubscriptions', async () => {
    const c = await open('u13');
    const chs = [1, 2, 3, 4].map(() => `room:${uid()}`);
    for (const ch of chs.slice(0, 3)) expect((await subscribe(c, ch, await subToken('u13', ch))).error).toBeUndefined();
    expect(errorOf(await subscribe(c, chs[3]!, await subToken('u13', chs[3]!)))?.code).toBe('limit_exceeded');
    // Subscribing again to a channel it holds changes nothing and needs no token.
    expect((await subscribe(c, chs[0]!)).error).toBeUndefined();
  });

  it('counts refused subscription tokens as rejected frames, by code', async () => {
    const ch = `room:${uid()}`;
    const c = await open('u14');
    const [forbidden, unauthorized] = await Promise.all([
      metric(gw.admin, 'pubgate_client_frames_rejected_total', { code: 'forbidden' }),
      metric(gw.admin, 'pubgate_client_frames_rejected_total', { code: 'unauthorized' }),
    ]);
    await subscribe(c, ch, await subToken('someone-else', ch));
    await subscribe(c, ch, hmacJwt({ sub: 'u14', channel: ch, exp: nowSec() - 60 }));
    expect(await metric(gw.admin, 'pubgate_client_frames_rejected_total', { code: 'forbidden' })).toBe(forbidden + 1);
    expect(await metric(gw.admin, 'pubgate_client_frames_rejected_total', { code: 'unauthorized' })).toBe(unauthorized + 1);
  });
});

describe('subscription tokens on two nodes with Redis', () => {
  let redis: RedisServer;
  let a: GatewayProcess;
  let b: GatewayProcess;
  const clients: Client[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    const env = (node: string): Record<string, string> => ({ PUBGATE_REDIS_URL: redis.url, PUBGATE_NODE_ID: node, PUBGATE_NAMESPACES: NAMESPACES });
    [a, b] = await Promise.all([startGateway(env('tok-a')), startGateway(env('tok-b'))]);
    await pollUntil(async () => (await fetch(`${a.admin}/readyz`)).status === 200 && (await fetch(`${b.admin}/readyz`)).status === 200, 'both nodes ready');
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it("shows a token's info in presence on the other node, and delivers a publish from it", async () => {
    const ch = `room:${uid()}`;
    const c = await connect(a.url, { token: await token({ sub: 'r1', channels: [], info: { name: 'Conn' } }) });
    clients.push(c);
    expect((await subscribe(c, ch, await subToken('r1', ch, { info: { badge: 'vip' } }))).error).toBeUndefined();
    expect(await httpView(b, ch)).toEqual({ members: [{ user: 'r1', info: { badge: 'vip' }, conns: 1 }], users: 1, connections: 1 });
    expect((await publish(b, { channel: ch, data: 'from-b' })).status).toBe(200);
    expect(await c.next((f) => f.type === 'message')).toMatchObject({ channel: ch, data: 'from-b' });
  });
});
