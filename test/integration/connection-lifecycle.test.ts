import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MAX_RATE_STRIKES } from '../../src/transport/connection.js';
import { connect, token, type Client, type Frame } from '../helpers/client.js';
import { TEST_API_KEY, metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { openSocket, probe, record, within } from '../helpers/recorder.js';

/** Heartbeats every half second; everything else on defaults. */
let gw: GatewayProcess;
/** A frame rate so low that no token refills while a test runs: the burst (200) is all a connection gets. */
let slow: GatewayProcess;
/** One token every two seconds: slow enough to count on, fast enough to wait for. */
let refill: GatewayProcess;

const PING_INTERVAL = 0.5;
/** The contract's burst of the per-connection frame bucket. */
const FRAME_BURST = 200;

beforeAll(async () => {
  // One after the other: startGateway picks free ports by closing a probe socket, so parallel starts could pick the same one.
  gw = await startGateway({ PUBGATE_PING_INTERVAL: String(PING_INTERVAL) });
  slow = await startGateway({ PUBGATE_CLIENT_FRAME_RATE: '0.001' });
  refill = await startGateway({ PUBGATE_CLIENT_FRAME_RATE: '0.5' });
});
afterAll(async () => {
  await Promise.all([gw?.stop(), slow?.stop(), refill?.stop()]);
});

const nowSec = (): number => Date.now() / 1000;

async function closeCode(c: { closed: Promise<{ code: number; reason: string }> }, what: string): Promise<number> {
  const info = await within(c.closed, 15_000, what);
  expect(Buffer.byteLength(info.reason)).toBeLessThan(123);
  return info.code;
}

function disconnects(g: GatewayProcess, code: number): Promise<number> {
  return metric(g.admin, 'pubgate_disconnects_total', { code: String(code) });
}

describe('heartbeat', () => {
  it('sends WebSocket pings every ping interval and announces the interval in welcome', async () => {
    const s = await openSocket(gw.url, await token({ sub: 'hb1', channels: [] }));
    expect(s.welcome).toMatchObject({ type: 'welcome', ping: PING_INTERVAL });
    await s.rec.waitForPings(3);
    expect(s.rec.pings).toBeGreaterThanOrEqual(3);
    s.ws.close(1000);
    await s.closed;
  });

  it('closes with 4002 a client that answers no pings and sends nothing, and keeps one that answers', async () => {
    const before = await disconnects(gw, 4002);
    const silent = await openSocket(gw.url, await token({ sub: 'hb-silent', channels: [] }), { autoPong: false });
    const answering = await openSocket(gw.url, await token({ sub: 'hb-answering', channels: [] }));

    expect(await closeCode(silent, 'ping timeout close')).toBe(4002);
    // It was pinged (and did not answer) before being closed; it got no frame but welcome.
    expect(silent.rec.pings).toBeGreaterThanOrEqual(1);
    expect(silent.rec.frames.map((f) => f.type)).toEqual(['welcome']);
    expect(await disconnects(gw, 4002)).toBe(before + 1);

    // The answering client outlives the silent one by four more intervals (two timeout windows) ...
    await answering.rec.waitForPings(answering.rec.pings + 4);
    expect(answering.ws.readyState).toBe(WebSocket.OPEN);
    // ... and still answers frames.
    const m = answering.rec.mark();
    answering.send({ type: 'ping', id: 1 });
    expect(await answering.rec.waitFor((f) => f.type === 'reply', m)).toEqual({ type: 'reply', id: 1 });
    answering.ws.close(1000);
    expect(await closeCode(answering, 'client close')).toBe(1000);
  });

  it('keeps open a client that cannot answer pings but sends {"type":"ping"} frames (a browser)', async () => {
    const browser = await openSocket(gw.url, await token({ sub: 'hb-browser', channels: [] }), { autoPong: false });
    browser.ws.on('ping', () => browser.send({ type: 'ping' }));
    await browser.rec.waitForPings(6); // three times the two-interval silence window
    expect(browser.ws.readyState).toBe(WebSocket.OPEN);
    const m = browser.rec.mark();
    browser.send({ type: 'ping', id: 1 });
    expect(await browser.rec.waitFor((f) => f.type === 'reply', m)).toEqual({ type: 'reply', id: 1 });
    // The id-less pings got no replies: welcome and the one reply are all it received.
    expect(browser.rec.frames.map((f) => f.type)).toEqual(['welcome', 'reply']);
    browser.ws.close(1000);
    await browser.closed;
  });
});

describe('token expiry', () => {
  it('closes with 4001 when the token expires, not before', async () => {
    const before = await disconnects(gw, 4001);
    const exp = Math.ceil(nowSec()) + 2;
    const c = await connect(gw.url, { token: await token({ sub: 'exp1', channels: ['*'] }, { exp }) });
    expect(c.welcome.expiresIn).toBeGreaterThanOrEqual(1);
    expect(c.welcome.expiresIn).toBeLessThanOrEqual(3);
    expect(await probe(c, 1)).toBe('open');
    expect(await closeCode(c, 'expiry close')).toBe(4001);
    expect(nowSec()).toBeGreaterThanOrEqual(exp);
    expect(await disconnects(gw, 4001)).toBe(before + 1);
  });

  it('keeps a refreshed connection open past its first exp and closes it at the new one; a refused refresh extends nothing', async () => {
    const exp = Math.ceil(nowSec()) + 3;
    const [a, b, c] = await Promise.all(
      ['ref-a', 'ref-b', 'ref-c'].map(async (sub) => connect(gw.url, { token: await token({ sub, channels: ['*'] }, { exp }) })),
    ) as [Client, Client, Client];
    const newExp = exp + 3;
    expect(await a.request({ type: 'refresh', id: 1, token: await token({ sub: 'ref-a', channels: ['*'] }, { exp: newExp }) }))
      .toEqual({ type: 'reply', id: 1 });
    const refused = await c.request({ type: 'refresh', id: 1, token: await token({ sub: 'someone-else', channels: ['*'] }, { exp: exp + 60 }) });
    expect(refused.error).toMatchObject({ code: 'forbidden' });

    // b (never refreshed) and c (refresh refused) close at the original exp ...
    expect(await closeCode(b, 'b expiry')).toBe(4001);
    expect(await closeCode(c, 'c expiry')).toBe(4001);
    expect(nowSec()).toBeGreaterThanOrEqual(exp);
    // ... which has now passed for a too: it is still open and still works.
    expect(await probe(a, 2)).toBe('open');
    expect(await a.request({ type: 'subscribe', id: 3, channel: 'after:refresh' })).toEqual({ type: 'reply', id: 3 });
    // The refresh moved the expiry, it did not remove it.
    expect(await closeCode(a, 'a expiry at the refreshed exp')).toBe(4001);
    expect(nowSec()).toBeGreaterThanOrEqual(newExp);
  });

  it('answers a refresh with another sub with forbidden and an invalid token with unauthorized, and stays open', async () => {
    const c = await connect(gw.url, { token: await token({ sub: 'ref-d', channels: ['*'] }) });
    const cases: [string, string][] = [
      ['forbidden', await token({ sub: 'ref-e', channels: ['*'] })],
      ['unauthorized', 'not-a-jwt'],
      ['unauthorized', await token({ sub: 'ref-d', channels: ['*'] }, { secret: 'some-other-secret-0123456789abcdef' })],
      ['unauthorized', await token({ sub: 'ref-d', channels: ['*'] }, { exp: Math.floor(nowSec()) - 3600 })],
      ['unauthorized', await token({ channels: ['*'] })],
    ];
    let id = 1;
    for (const [code, jwt] of cases) {
      const r = await c.request({ type: 'refresh', id: id++, token: jwt });
      expect(r.error, `${code}: ${jwt.slice(0, 40)}`).toMatchObject({ code });
    }
    expect(await probe(c, id++)).toBe('open');
    expect(await c.request({ type: 'subscribe', id, channel: 'still:works' })).toEqual({ type: 'reply', id });
    await c.close();
  });
});

describe('POST /v1/disconnect', () => {
  it('closes every connection of the user with 4501 and leaves other users connected', async () => {
    const before = await disconnects(gw, 4501);
    const alice1 = await connect(gw.url, { token: await token({ sub: 'alice', channels: [] }) });
    const alice2 = await connect(gw.url, { token: await token({ sub: 'alice', channels: [] }) });
    const bob = await connect(gw.url, { token: await token({ sub: 'bob', channels: [] }) });
    const res = await fetch(`${gw.http}/v1/disconnect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'alice' }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    expect(await closeCode(alice1, 'alice1')).toBe(4501);
    expect(await closeCode(alice2, 'alice2')).toBe(4501);
    expect(await probe(bob, 1)).toBe('open');
    expect(await disconnects(gw, 4501)).toBe(before + 2);
    await bob.close();
  });
});

describe('metrics', () => {
  it('pubgate_connections goes up on open and down on close', async () => {
    const m0 = await metric(gw.admin, 'pubgate_connections');
    const c1 = await connect(gw.url, { token: await token({ sub: 'm1', channels: [] }) });
    const c2 = await connect(gw.url, { token: await token({ sub: 'm2', channels: [] }) });
    expect(await metric(gw.admin, 'pubgate_connections')).toBe(m0 + 2);
    await c1.close();
    expect(await metric(gw.admin, 'pubgate_connections')).toBe(m0 + 1);
    c2.send('not json'); // a server-side close counts the same
    expect(await closeCode(c2, '4500')).toBe(4500);
    expect(await metric(gw.admin, 'pubgate_connections')).toBe(m0);
  });

  it('pubgate_subscriptions follows subscribes, unsubscribes and closes', async () => {
    const s0 = await metric(gw.admin, 'pubgate_subscriptions');
    const c1 = await connect(gw.url, { token: await token({ sub: 'm3', channels: ['ms:*'] }) });
    const c2 = await connect(gw.url, { token: await token({ sub: 'm4', channels: ['ms:*'] }) });
    await c1.request({ type: 'subscribe', id: 1, channel: 'ms:a' });
    await c1.request({ type: 'subscribe', id: 2, channel: 'ms:b' });
    await c2.request({ type: 'subscribe', id: 1, channel: 'ms:a' });
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(s0 + 3);
    await c1.request({ type: 'subscribe', id: 3, channel: 'ms:b' }); // again: no change
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(s0 + 3);
    await c1.request({ type: 'unsubscribe', id: 4, channel: 'ms:a' });
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(s0 + 2);
    await c1.close();
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(s0 + 1);
    await c2.close();
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(s0);
  });

  it('counts published messages once and delivered messages once per subscriber', async () => {
    const p0 = await metric(gw.admin, 'pubgate_messages_published_total');
    const d0 = await metric(gw.admin, 'pubgate_messages_delivered_total');
    const subs = await Promise.all(['m5', 'm6'].map(async (sub) => connect(gw.url, { token: await token({ sub, channels: ['md:*'] }) })));
    for (const s of subs) expect(await s.request({ type: 'subscribe', id: 1, channel: 'md:1' })).toEqual({ type: 'reply', id: 1 });
    const isMsg = (n: number) => (f: Frame): boolean => f.type === 'message' && (f.data as { n?: number }).n === n;

    expect((await publish(gw, { channel: 'md:1', data: { n: 1 } })).status).toBe(200);
    for (const s of subs) await s.next(isMsg(1));
    expect(await metric(gw.admin, 'pubgate_messages_published_total')).toBe(p0 + 1);
    expect(await metric(gw.admin, 'pubgate_messages_delivered_total')).toBe(d0 + 2);

    // Over the socket too.
    const pubber = await connect(gw.url, { token: await token({ sub: 'm7', channels: [], publish: ['md:*'] }) });
    expect(await pubber.request({ type: 'publish', id: 1, channel: 'md:1', data: { n: 2 } })).toEqual({ type: 'reply', id: 1 });
    for (const s of subs) await s.next(isMsg(2));
    expect(await metric(gw.admin, 'pubgate_messages_published_total')).toBe(p0 + 2);
    expect(await metric(gw.admin, 'pubgate_messages_delivered_total')).toBe(d0 + 4);

    // A publish nobody listens to is published, and delivered to no one.
    expect((await publish(gw, { channel: 'md:nobody', data: { n: 3 } })).status).toBe(200);
    expect(await metric(gw.admin, 'pubgate_messages_published_total')).toBe(p0 + 3);
    expect(await metric(gw.admin, 'pubgate_messages_delivered_total')).toBe(d0 + 4);
    await Promise.all([...subs, pubber].map((c) => c.close()));
  });

  it('counts disconnects by close code', async () => {
    const open = async (): Promise<Client> => connect(gw.url, { token: await token({ sub: 'm8', channels: [] }) });
    const cases: [number, (c: Client) => void][] = [
      [4500, (c) => c.send('{"type":')],
      [1003, (c) => c.ws.send(Buffer.from('{}'), { binary: true })],
      [1009, (c) => c.send(JSON.stringify({ type: 'ping', id: 1, pad: 'x'.repeat(16_384) }))],
      [1000, (c) => c.ws.close(1000)],
    ];
    for (const [code, trigger] of cases) {
      const before = await disconnects(gw, code);
      const c = await open();
      trigger(c);
      expect(await closeCode(c, `close ${code}`)).toBe(code);
      expect(await disconnects(gw, code), `pubgate_disconnects_total{code="${code}"}`).toBe(before + 1);
    }
  });
});

describe('client frame rate (burst 200, refill 0.001/s)', () => {
  const pings = (c: Client, from: number, to: number): void => {
    for (let id = from; id <= to; id++) c.send({ type: 'ping', id });
  };

  it('answers the whole burst and refuses the next frame with rate_limited, keeping the connection', async () => {
    const c = await connect(slow.url, { token: await token({ sub: 'rl1', channels: [] }) });
    const rec = record(c.ws);
    pings(c, 1, FRAME_BURST + 1);
    await rec.waitFor((f) => f.type === 'reply' && f.id === FRAME_BURST + 1);
    const replies = rec.frames.filter((f) => f.type === 'reply');
    expect(replies.slice(0, FRAME_BURST)).toEqual(Array.from({ length: FRAME_BURST }, (_, i) => ({ type: 'reply', id: i + 1 })));
    expect(replies.slice(FRAME_BURST)).toEqual([
      { type: 'reply', id: FRAME_BURST + 1, error: { code: 'rate_limited', message: expect.any(String) } },
    ]);
    // One refusal does not close: a second client is not affected either.
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    const other = await connect(slow.url, { token: await token({ sub: 'rl1', channels: [] }) });
    expect(await probe(other, 1)).toBe('open');
    await Promise.all([c.close(), other.close()]);
  });

  it(`closes with 1008 a client that keeps going for ${MAX_RATE_STRIKES} refused frames in a row`, async () => {
    const before = await disconnects(slow, 1008);
    const c = await connect(slow.url, { token: await token({ sub: 'rl2', channels: [] }) });
    const rec = record(c.ws);
    const last = FRAME_BURST + MAX_RATE_STRIKES - 1;
    pings(c, 1, last);
    await rec.waitFor((f) => f.type === 'reply' && f.id === last);
    // Every frame up to here was answered: the burst plainly, the rest with rate_limited.
    const replies = rec.frames.filter((f) => f.type === 'reply');
    expect(replies).toHaveLength(last);
    expect(replies.filter((f) => f.error === undefined).map((f) => f.id)).toEqual(Array.from({ length: FRAME_BURST }, (_, i) => i + 1));
    expect(replies.slice(FRAME_BURST).every((f) => (f.error as { code?: string } | undefined)?.code === 'rate_limited')).toBe(true);
    // One more refused frame is one too many.
    pings(c, last + 1, last + 1);
    expect(await closeCode(c, '1008')).toBe(1008);
    expect(rec.frames.filter((f) => f.type === 'reply')).toHaveLength(last);
    expect(await disconnects(slow, 1008)).toBe(before + 1);
  });

  it('counts frames without id against the burst and the strikes too', async () => {
    const c = await connect(slow.url, { token: await token({ sub: 'rl3', channels: [] }) });
    const rec = record(c.ws);
    const idless = (n: number): void => {
      for (let i = 0; i < n; i++) c.send({ type: 'ping' });
    };
    idless(FRAME_BURST);
    // The id-less frames used up the burst: the next frame is refused (strike 1) ...
    expect((await c.request({ type: 'ping', id: 1 })).error).toMatchObject({ code: 'rate_limited' });
    idless(MAX_RATE_STRIKES - 3);
    // ... refused id-less frames get no reply but count: this is strike MAX_RATE_STRIKES - 1, still answered ...
    expect((await c.request({ type: 'ping', id: 2 })).error).toMatchObject({ code: 'rate_limited' });
    // ... and one more id-less frame closes.
    idless(1);
    expect(await closeCode(c, '1008')).toBe(1008);
    expect(rec.frames.map((f) => f.id)).toEqual([1, 2]);
  });
});

describe('client frame rate (burst 200, refill 0.5/s)', () => {
  it('counts strikes only while refusals are consecutive: an accepted frame starts the count again', async () => {
    const c = await connect(refill.url, { token: await token({ sub: 'rl4', channels: [] }) });
    const rec = record(c.ws);
    const strikesBefore = 10;
    for (let id = 1; id <= FRAME_BURST + strikesBefore; id++) c.send({ type: 'ping', id });
    await rec.waitFor((f) => f.type === 'reply' && f.id === FRAME_BURST + strikesBefore);
    expect(rec.frames.filter((f) => f.error !== undefined)).toHaveLength(strikesBefore);

    // What is tested here is the refill: wait for the bucket to hold a token again (0.5/s).
    await new Promise((r) => setTimeout(r, 2_200));
    let id = FRAME_BURST + strikesBefore;
    let accepted = 0;
    let r: Frame;
    // Take every token that refilled (one, or more if this process was slow) until the first refusal: strike 1 again.
    for (;;) {
      r = await c.request({ type: 'ping', id: ++id });
      if (r.error !== undefined) break;
      accepted++;
    }
    expect(accepted).toBeGreaterThanOrEqual(1);
    expect(r.error).toMatchObject({ code: 'rate_limited' });
    // Without the reset this run would be strikes 11..; with it, MAX_RATE_STRIKES - 1 refusals in a row are still answered ...
    const from = id + 1;
    const last = id + MAX_RATE_STRIKES - 2;
    for (let i = from; i <= last; i++) c.send({ type: 'ping', id: i });
    await rec.waitFor((f) => f.type === 'reply' && f.id === last);
    const run = rec.frames.filter((f) => f.type === 'reply' && (f.id as number) >= from);
    expect(run).toHaveLength(MAX_RATE_STRIKES - 2);
    expect(run.every((f) => (f.error as { code?: string } | undefined)?.code === 'rate_limited')).toBe(true);
    // ... and the next one closes.
    c.send({ type: 'ping', id: last + 1 });
    expect(await closeCode(c, '1008')).toBe(1008);
  });
});
