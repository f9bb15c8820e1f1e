import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token, type Client, type Frame } from '../helpers/client.js';
import { metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { probe, record, within, type Recording } from '../helpers/recorder.js';
import { waitUntil } from '../helpers/handshake.js';
import { uwsPayloadLimit } from '../../src/transport/server.js';

let gw: GatewayProcess;

const MAX_PAYLOAD = 1024;

beforeAll(async () => {
  gw = await startGateway({ PUBGATE_MAX_SUBSCRIPTIONS: '3', PUBGATE_MAX_PAYLOAD_LENGTH: String(MAX_PAYLOAD) });
});
afterAll(async () => {
  await gw?.stop();
});

describe('frames', () => {
  it('sends welcome first with node, conn, user, expiresIn and ping', async () => {
    const c = await connect(gw.url, { token: await token({ sub: 'u1', channels: ['news'] }, { ttlSec: 600 }) });
    expect(c.welcome).toMatchObject({ type: 'welcome', user: 'u1', ping: 25 });
    expect(typeof c.welcome.node).toBe('string');
    expect(typeof c.welcome.conn).toBe('string');
    expect(c.welcome.expiresIn).toBeGreaterThan(590);
    expect(c.welcome.expiresIn).toBeLessThanOrEqual(600);
    expect(c.ws.protocol).toBe('pubgate.v1');
    await c.close();
  });

  it('subscribes, receives a publish byte-for-byte, and unsubscribes', async () => {
    const c = await connect(gw.url, { token: await token({ sub: 'u2', channels: ['news', 'chat:*'] }) });
    expect(await c.request({ type: 'subscribe', id: 1, channel: 'chat:7' })).toEqual({ type: 'reply', id: 1 });
    const data = '{"text":"h\\u00e9llo ☃","n":[1.0,-0,1e400,null],"deep":{"a":{"b":[true,false]}},"big":12345678901234567890}';
    const received = new Promise<string>((resolve) => c.ws.once('message', (m) => resolve(m.toString())));
    const res = await publish(gw, `{"channel":"chat:7","data":${data}}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ channel: 'chat:7' });
    const raw = await received;
    expect(raw).toBe(`{"type":"message","channel":"chat:7","data":${data}}`);
    expect(await c.request({ type: 'unsubscribe', id: 2, channel: 'chat:7' })).toEqual({ type: 'reply', id: 2 });
    await c.close();
  });
});

// ---------------------------------------------------------------------------

interface Conn {
  readonly c: Client;
  readonly rec: Recording;
}

async function open(claims: Record<string, unknown>): Promise<Conn> {
  const c = await connect(gw.url, { token: await token(claims) });
  return { c, rec: record(c.ws) };
}

let sentinelId = 100_000;

/**
 * Sends `frame`, waits for its reply, then proves no second reply with the same
 * id came: a ping sentinel sent afterwards is answered, and by then the whole
 * sequence of received frames holds exactly one reply with that id.
 */
async function onlyReply(k: Conn, frame: Record<string, unknown> & { id: number }): Promise<Frame> {
  const m = k.rec.mark();
  const reply = await k.c.request(frame);
  const sid = ++sentinelId;
  await k.c.request({ type: 'ping', id: sid });
  const replies = k.rec.since(m).filter((f) => f.type === 'reply');
  expect(replies.filter((f) => f.id === frame.id)).toHaveLength(1);
  expect(replies.map((f) => f.id)).toEqual([frame.id, sid]);
  return reply;
}

/** Publishes `data` on `channel` through the HTTP API and checks it was accepted. */
async function httpPublish(channel: string, data: unknown): Promise<void> {
  const res = await publish(gw, { channel, data });
  expect(res.status).toBe(200);
}

/** Waits for the message on `channel` whose data equals `data`. */
function message(k: Conn, channel: string, data: unknown, from = 0): Promise<Frame> {
  return k.rec.waitFor((f) => f.type === 'message' && f.channel === channel && JSON.stringify(f.data) === JSON.stringify(data), from);
}

function messages(k: Conn, from = 0): Frame[] {
  return k.rec.since(from).filter((f) => f.type === 'message');
}

const forbidden = { code: 'forbidden' };
const badRequest = { code: 'bad_request' };
const limitExceeded = { code: 'limit_exceeded' };

describe('replies', () => {
  it('answers subscribe, unsubscribe, publish, ping with id and refresh with exactly one reply carrying the id', async () => {
    const k = await open({ sub: 'r1', channels: ['r:*'], publish: ['r:*'] });
    expect(await onlyReply(k, { type: 'subscribe', id: 1, channel: 'r:1' })).toEqual({ type: 'reply', id: 1 });
    expect(await onlyReply(k, { type: 'publish', id: 2, channel: 'r:1', data: { n: 1 } })).toEqual({ type: 'reply', id: 2 });
    expect(await onlyReply(k, { type: 'unsubscribe', id: 3, channel: 'r:1' })).toEqual({ type: 'reply', id: 3 });
    expect(await onlyReply(k, { type: 'ping', id: 4 })).toEqual({ type: 'reply', id: 4 });
    const fresh = await token({ sub: 'r1', channels: ['r:*'], publish: ['r:*'] }, { ttlSec: 7200 });
    expect(await onlyReply(k, { type: 'refresh', id: 5, token: fresh })).toEqual({ type: 'reply', id: 5 });
    // The subscriber itself got its own publish once (it was subscribed at the time).
    expect(messages(k).map((f) => f.data)).toEqual([{ n: 1 }]);
    await k.c.close();
  });

  it('answers refused frames with exactly one error reply each', async () => {
    const k = await open({ sub: 'r2', channels: ['r:2'] });
    expect((await onlyReply(k, { type: 'subscribe', id: 1, channel: 'secret' })).error).toMatchObject(forbidden);
    expect((await onlyReply(k, { type: 'publish', id: 2, channel: 'r:2', data: 1 })).error).toMatchObject(forbidden);
    expect((await onlyReply(k, { type: 'refresh', id: 3, token: 'not-a-jwt' })).error).toMatchObject({ code: 'unauthorized' });
    expect((await onlyReply(k, { type: 'subscribe', id: 4, channel: 'bad name' })).error).toMatchObject(badRequest);
    expect((await onlyReply(k, { type: 'nope', id: 5 })).error).toMatchObject(badRequest);
    await k.c.close();
  });

  it('replies once per frame, also when a client reuses an id', async () => {
    // Ids are the client's business: the same id used twice gets two replies, one per frame.
    const k = await open({ sub: 'r3', channels: ['r:3'] });
    const m = k.rec.mark();
    k.c.send({ type: 'subscribe', id: 9, channel: 'r:3' });
    k.c.send({ type: 'ping', id: 9 });
    await k.c.request({ type: 'ping', id: 10 });
    const replies = k.rec.since(m).filter((f) => f.type === 'reply');
    expect(replies.filter((f) => f.id === 9)).toHaveLength(2);
    expect(replies.filter((f) => f.id === 10)).toHaveLength(1);
    await k.c.close();
  });

  it('sends no reply to a ping without id', async () => {
    const k = await open({ sub: 'r4', channels: [] });
    const m = k.rec.mark();
    k.c.send({ type: 'ping' });
    k.c.send({ type: 'ping' });
    await k.c.request({ type: 'ping', id: 7 });
    // The first frame after the id-less pings is the reply to the ping with id.
    expect(k.rec.since(m)).toEqual([{ type: 'reply', id: 7 }]);
    await k.c.close();
  });

  it('treats a second subscribe to the same channel as a success that changes nothing', async () => {
    const k = await open({ sub: 'r5', channels: ['dup:*'] });
    const subs0 = await metric(gw.admin, 'pubgate_subscriptions');
    expect(await onlyReply(k, { type: 'subscribe', id: 1, channel: 'dup:1' })).toEqual({ type: 'reply', id: 1 });
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(subs0 + 1);
    expect(await onlyReply(k, { type: 'subscribe', id: 2, channel: 'dup:1' })).toEqual({ type: 'reply', id: 2 });
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(subs0 + 1);

    await httpPublish('dup:1', { n: 1 });
    await httpPublish('dup:1', { n: 2 });
    await message(k, 'dup:1', { n: 2 });
    // Delivered once each, in order: no duplicate of the first before the sentinel.
    expect(messages(k).map((f) => f.data)).toEqual([{ n: 1 }, { n: 2 }]);

    // One unsubscribe undoes both subscribes: the second one added nothing to undo.
    expect(await onlyReply(k, { type: 'unsubscribe', id: 3, channel: 'dup:1' })).toEqual({ type: 'reply', id: 3 });
    expect(await metric(gw.admin, 'pubgate_subscriptions')).toBe(subs0);
    expect(await k.c.request({ type: 'subscribe', id: 4, channel: 'dup:2' })).toEqual({ type: 'reply', id: 4 });
    const m = k.rec.mark();
    await httpPublish('dup:1', { n: 3 });
    await httpPublish('dup:2', { sentinel: true });
    await message(k, 'dup:2', { sentinel: true }, m);
    expect(messages(k, m).map((f) => f.channel)).toEqual(['dup:2']);
    await k.c.close();
  });

  it('answers an unsubscribe of a channel never subscribed with a plain reply', async () => {
    const k = await open({ sub: 'r6', channels: ['never:*'] });
    expect(await onlyReply(k, { type: 'unsubscribe', id: 1, channel: 'never:1' })).toEqual({ type: 'reply', id: 1 });
    // ... twice, and after a real subscribe/unsubscribe cycle too.
    expect(await k.c.request({ type: 'subscribe', id: 2, channel: 'never:2' })).toEqual({ type: 'reply', id: 2 });
    expect(await onlyReply(k, { type: 'unsubscribe', id: 3, channel: 'never:2' })).toEqual({ type: 'reply', id: 3 });
    expect(await onlyReply(k, { type: 'unsubscribe', id: 4, channel: 'never:2' })).toEqual({ type: 'reply', id: 4 });
    await k.c.close();
  });
});

describe('channel names', () => {
  const invalid: [string, string][] = [
    ['empty', ''],
    ['201 characters', 'a'.repeat(201)],
    ['a space', 'chat 1'],
    ['a *', 'chat:*'],
    ['a lone *', '*'],
    ['a non-ASCII letter', 'caf\u00e9'],
    ['CJK characters', '\u65e5\u672c'],
    ['an emoji', 'room:\u{1F600}'],
    ['a trailing newline', 'news\n'],
    ['a quote', 'a"b'],
    ['braces', 'user:{sub}'],
  ];

  it.each(invalid)('rejects a name with %s as bad_request on subscribe, unsubscribe and publish', async (_what, channel) => {
    const k = await open({ sub: 'n1', channels: ['*'], publish: ['*'] });
    expect((await onlyReply(k, { type: 'subscribe', id: 1, channel })).error).toMatchObject(badRequest);
    expect((await onlyReply(k, { type: 'unsubscribe', id: 2, channel })).error).toMatchObject(badRequest);
    expect((await onlyReply(k, { type: 'publish', id: 3, channel, data: 1 })).error).toMatchObject(badRequest);
    expect(await probe(k.c, 4)).toBe('open');
    await k.c.close();
  });

  it('accepts a 200-character name made of the whole alphabet, and a 1-character name', async () => {
    const alphabet = 'ABCXYZabcxyz0189_:.@/=-';
    const long = alphabet.repeat(10).slice(0, 200);
    expect(long).toHaveLength(200);
    const k = await open({ sub: 'n2', channels: ['*'] });
    expect(await k.c.request({ type: 'subscribe', id: 1, channel: long })).toEqual({ type: 'reply', id: 1 });
    expect(await k.c.request({ type: 'subscribe', id: 2, channel: 'x' })).toEqual({ type: 'reply', id: 2 });
    await httpPublish(long, { long: true });
    await httpPublish('x', { short: true });
    expect((await message(k, long, { long: true })).channel).toBe(long);
    expect((await message(k, 'x', { short: true })).channel).toBe('x');
    await k.c.close();
  });
});

describe('permissions', () => {
  it('allows exact names, * prefixes and user:{sub}, and nothing else', async () => {
    const alice = await open({ sub: 'alice', channels: ['news', 'chat:*', 'user:{sub}'] });
    const bob = await open({ sub: 'bob', channels: ['user:{sub}'] });
    const refused: string[] = ['new', 'news:1', 'newsx', 'chat', 'chatx', 'user:bob', 'user:alice2', 'user:', 'other'];
    let id = 1;
    for (const channel of refused) {
      const r = await alice.c.request({ type: 'subscribe', id: id++, channel });
      expect(r.error, channel).toMatchObject(forbidden);
    }
    for (const channel of ['news', 'chat:1', 'user:alice']) {
      const r = await alice.c.request({ type: 'subscribe', id, channel });
      expect(r, channel).toEqual({ type: 'reply', id: id++ });
    }
    expect((await bob.c.request({ type: 'subscribe', id: 1, channel: 'user:alice' })).error).toMatchObject(forbidden);
    expect(await bob.c.request({ type: 'subscribe', id: 2, channel: 'user:bob' })).toEqual({ type: 'reply', id: 2 });

    // A refused subscribe delivers nothing: alice never sees bob's channel.
    await httpPublish('user:bob', { to: 'bob' });
    await httpPublish('user:alice', { to: 'alice' });
    await message(alice, 'user:alice', { to: 'alice' });
    await message(bob, 'user:bob', { to: 'bob' });
    expect(messages(alice).map((f) => f.channel)).toEqual(['user:alice']);
    expect(messages(bob).map((f) => f.channel)).toEqual(['user:bob']);
    await alice.c.close();
    await bob.c.close();
  });

  it('does not let a sub containing * widen an exact or prefix pattern', async () => {
    for (const sub of ['*', 'x*']) {
      const k = await open({ sub, channels: ['user:{sub}', 'room:{sub}:*', 'ok'] });
      let id = 1;
      for (const channel of ['user:bob', 'user:x', 'user:xy', 'user:', 'room:x:1', 'room:xy:1', 'room:', 'room:bob:1']) {
        expect((await k.c.request({ type: 'subscribe', id: id++, channel })).error, `${sub} → ${channel}`).toMatchObject(forbidden);
      }
      expect(await k.c.request({ type: 'subscribe', id: id, channel: 'ok' })).toEqual({ type: 'reply', id });
      await k.c.close();
    }
  });

  it('refuses to publish over the socket without a publish claim, and delivers nothing', async () => {
    const sub = await open({ sub: 'p-sub', channels: ['pub:*'] });
    expect(await sub.c.request({ type: 'subscribe', id: 1, channel: 'pub:1' })).toEqual({ type: 'reply', id: 1 });
    // Subscribe rights do not imply publish rights.
    const pubber = await open({ sub: 'p-none', channels: ['pub:*'] });
    expect((await onlyReply(pubber, { type: 'publish', id: 1, channel: 'pub:1', data: { from: 'socket' } })).error).toMatchObject(forbidden);
    await httpPublish('pub:1', { sentinel: true });
    await message(sub, 'pub:1', { sentinel: true });
    expect(messages(sub).map((f) => f.data)).toEqual([{ sentinel: true }]);
    await sub.c.close();
    await pubber.c.close();
  });

  it('delivers an allowed socket publish to another subscriber byte-for-byte, and refuses channels outside the claim', async () => {
    const sub = await open({ sub: 'q-sub', channels: ['pub:*', 'out:*'] });
    expect(await sub.c.request({ type: 'subscribe', id: 1, channel: 'pub:2' })).toEqual({ type: 'reply', id: 1 });
    expect(await sub.c.request({ type: 'subscribe', id: 2, channel: 'out:q-pub' })).toEqual({ type: 'reply', id: 2 });
    const pubber = await open({ sub: 'q-pub', channels: [], publish: ['pub:*', 'out:{sub}'] });
    const data = '{ "text" : "h\\u00e9llo ☃", "n":[1.0, -0,1e400,null],"q":"a\\"b\\\\" ,"big":12345678901234567890 }';
    const values = [data, '"just a string"', '0', 'null', 'false', '[1, [2], {}]', '-1.50e+3'];
    let id = 1;
    for (const v of values) {
      const m = sub.rec.mark();
      pubber.c.send(`{"type":"publish","id":${id},"channel":"pub:2","data":${v}}`);
      expect(await pubber.c.next((f) => f.type === 'reply' && f.id === id)).toEqual({ type: 'reply', id });
      id++;
      await sub.rec.waitFor((f) => f.type === 'message', m);
      expect(sub.rec.raw[m]).toBe(`{"type":"message","channel":"pub:2","data":${v}}`);
    }
    // `data` before the other members, with white space around it.
    {
      const m = sub.rec.mark();
      pubber.c.send(`{ "data" :\t[ 1 ,2 ]\n, "type":"publish","channel":"pub:2","id":${id}}`);
      expect(await pubber.c.next((f) => f.type === 'reply' && f.id === id)).toEqual({ type: 'reply', id });
      id++;
      await sub.rec.waitFor((f) => f.type === 'message', m);
      expect(sub.rec.raw[m]).toBe('{"type":"message","channel":"pub:2","data":[ 1 ,2 ]}');
    }
    // publish: out:{sub} lets q-pub publish to out:q-pub only.
    expect(await pubber.c.request({ type: 'publish', id, channel: 'out:q-pub', data: { own: true } })).toEqual({ type: 'reply', id: id++ });
    expect((await pubber.c.request({ type: 'publish', id: id++, channel: 'out:other', data: 1 })).error).toMatchObject(forbidden);
    expect((await pubber.c.request({ type: 'publish', id: id++, channel: 'news', data: 1 })).error).toMatchObject(forbidden);
    await message(sub, 'out:q-pub', { own: true });
    await pubber.c.close();
    await sub.c.close();
  });

  it('with the embedded broker, sends a socket publish to its own subscribed publisher before the publish reply', async () => {
    // The reply waits for the broker's acceptance, which on the embedded broker
    // is the hand-over to uWS: the message is queued for the socket first.
    const k = await open({ sub: 'q-self', channels: ['self:*'], publish: ['self:*'] });
    expect(await k.c.request({ type: 'subscribe', id: 1, channel: 'self:1' })).toEqual({ type: 'reply', id: 1 });
    const m = k.rec.mark();
    for (let id = 2; id < 42; id++) k.c.send({ type: 'publish', id, channel: 'self:1', data: id });
    await k.rec.waitFor((f) => f.type === 'reply' && f.id === 41, m);
    const seen = k.rec.since(m).map((f) => (f.type === 'message' ? `m${String(f.data)}` : `r${String(f.id)}`));
    const ids = Array.from({ length: 40 }, (_, i) => i + 2);
    expect(seen.filter((x) => x.startsWith('m'))).toEqual(ids.map((i) => `m${i}`));
    expect(seen.filter((x) => x.startsWith('r'))).toEqual(ids.map((i) => `r${i}`));
    for (const i of ids) expect(seen.indexOf(`m${i}`)).toBeLessThan(seen.indexOf(`r${i}`));
    await k.c.close();
  });

  it('takes the data member as JSON defines it, even when its key is written with escapes', async () => {
    const sub = await open({ sub: 'e-sub', channels: ['esc'] });
    expect(await sub.c.request({ type: 'subscribe', id: 1, channel: 'esc' })).toEqual({ type: 'reply', id: 1 });
    const pubber = await open({ sub: 'e-pub', channels: [], publish: ['esc'] });
    // "d\u0061ta" is the key "data"; with two "data" members the last one is the value (as JSON.parse has it).
    const frames: [string, string][] = [
      ['{"type":"publish","id":1,"channel":"esc","d\\u0061ta":{"escaped":1}}', '{"escaped":1}'],
      ['{"type":"publish","id":2,"channel":"esc","data":{"first":1},"d\\u0061ta":{"last":2}}', '{"last":2}'],
      ['{"type":"publish","id":3,"channel":"esc","d\\u0061ta":{"first":1},"data":{"last":3}}', '{"last":3}'],
    ];
    for (const [text, data] of frames) {
      const id = (JSON.parse(text) as { id: number }).id;
      const m = sub.rec.mark();
      pubber.c.send(text);
      expect(await pubber.c.next((f) => f.type === 'reply' && f.id === id)).toEqual({ type: 'reply', id });
      await sub.rec.waitFor((f) => f.type === 'message', m);
      expect(sub.rec.raw[m]).toBe(`{"type":"message","channel":"esc","data":${data}}`);
    }
    await pubber.c.close();
    await sub.c.close();
  });
});

describe('maxSubscriptions (3)', () => {
  it('refuses a 4th distinct channel with limit_exceeded, still accepts existing ones, and frees a slot on unsubscribe', async () => {
    const k = await open({ sub: 'l1', channels: ['lim:*'] });
    for (const [id, channel] of [[1, 'lim:1'], [2, 'lim:2'], [3, 'lim:3']] as const) {
      expect(await k.c.request({ type: 'subscribe', id, channel })).toEqual({ type: 'reply', id });
    }
    expect((await onlyReply(k, { type: 'subscribe', id: 4, channel: 'lim:4' })).error).toMatchObject(limitExceeded);
    expect(await onlyReply(k, { type: 'subscribe', id: 5, channel: 'lim:1' })).toEqual({ type: 'reply', id: 5 });
    expect(await k.c.request({ type: 'unsubscribe', id: 6, channel: 'lim:2' })).toEqual({ type: 'reply', id: 6 });
    expect(await k.c.request({ type: 'subscribe', id: 7, channel: 'lim:4' })).toEqual({ type: 'reply', id: 7 });
    expect((await k.c.request({ type: 'subscribe', id: 8, channel: 'lim:5' })).error).toMatchObject(limitExceeded);

    // The limit is per connection.
    const other = await open({ sub: 'l1', channels: ['lim:*'] });
    expect(await other.c.request({ type: 'subscribe', id: 1, channel: 'lim:5' })).toEqual({ type: 'reply', id: 1 });

    // The refused subscribe delivers nothing; the live ones do.
    await httpPublish('lim:5', { n: 5 });
    await httpPublish('lim:2', { n: 2 });
    await httpPublish('lim:4', { n: 4 });
    await message(k, 'lim:4', { n: 4 });
    await message(other, 'lim:5', { n: 5 });
    expect(messages(k).map((f) => f.channel)).toEqual(['lim:4']);
    await k.c.close();
    await other.c.close();
  });
});

// ---------------------------------------------------------------------------

/** A ping frame of exactly `bytes` UTF-8 bytes, mostly two-byte characters (so it has fewer characters than bytes). */
function pingOfBytes(bytes: number, id: number): string {
  const head = `{"type":"ping","id":${id},"pad":"`;
  const tail = '"}';
  const room = bytes - Buffer.byteLength(head + tail);
  const twos = Math.floor(room / 2);
  const text = head + '\u00e9'.repeat(twos) + 'x'.repeat(room - 2 * twos) + tail;
  expect(Buffer.byteLength(text)).toBe(bytes);
  expect(text.length).toBeLessThan(MAX_PAYLOAD);
  return text;
}

async function closedWith(k: Conn, code: number): Promise<void> {
  const info = await within(k.c.closed, 10_000, `close ${code}`);
  expect(info.code).toBe(code);
  expect(Buffer.byteLength(info.reason)).toBeLessThan(123);
}

describe('close codes', () => {
  it(`accepts a frame of exactly maxPayloadLength (${MAX_PAYLOAD}) bytes`, async () => {
    const k = await open({ sub: 'c1', channels: [] });
    k.c.send(pingOfBytes(MAX_PAYLOAD, 1));
    expect(await k.c.next((f) => f.type === 'reply')).toEqual({ type: 'reply', id: 1 });
    expect(await probe(k.c, 2)).toBe('open');
    await k.c.close();
  });

  it('closes with 1009 on a frame one byte over maxPayloadLength, without replying', async () => {
    const k = await open({ sub: 'c2', channels: [] });
    k.c.send(pingOfBytes(MAX_PAYLOAD + 1, 1));
    await closedWith(k, 1009);
    expect(k.rec.frames).toEqual([]);
  });

  it('closes with 1009 on a fragmented message whose fragments add up to more than maxPayloadLength', async () => {
    const k = await open({ sub: 'c3', channels: [] });
    const text = pingOfBytes(MAX_PAYLOAD + 1, 1);
    const buf = Buffer.from(text);
    k.c.ws.send(buf.subarray(0, 600), { binary: false, fin: false });
    k.c.ws.send(buf.subarray(600), { binary: false, fin: true });
    await closedWith(k, 1009);
    expect(k.rec.frames).toEqual([]);
  });

  it('cuts the connection (1006, no close frame) on a frame over uWS\'s own limit, and keeps serving others', async () => {
    // Frames between maxPayloadLength and uwsPayloadLimit get 1009 (above); a
    // frame beyond uwsPayloadLimit (here 1024 + 64 KiB) is dropped by uWS before
    // any handler runs, bounding what one connection can make the node buffer.
    const before = await metric(gw.admin, 'pubgate_disconnects_total', { code: '1006' });
    const k = await open({ sub: 'c-huge', channels: [] });
    k.c.ws.send(JSON.stringify({ type: 'ping', id: 1, pad: 'x'.repeat(uwsPayloadLimit(1024) + 10) }));
    const info = await within(k.c.closed, 10_000, 'connection cut');
    expect(info.code).toBe(1006);
    expect(k.rec.frames).toEqual([]);
    const other = await open({ sub: 'c-after', channels: [] });
    expect(await other.c.request({ type: 'ping', id: 2 })).toEqual({ type: 'reply', id: 2 });
    await other.c.close();
    await waitUntil(async () => (await metric(gw.admin, 'pubgate_disconnects_total', { code: '1006' })) === before + 1, '1006 counted');
  });

  it('closes with 1003 on a binary frame, even one carrying a valid frame', async () => {
    const k = await open({ sub: 'c4', channels: [] });
    k.c.ws.send(Buffer.from(JSON.stringify({ type: 'ping', id: 1 })), { binary: true });
    await closedWith(k, 1003);
    expect(k.rec.frames).toEqual([]);
  });

  it.each([
    ['a lone brace', '{'],
    ['a bare word', 'hello'],
    ['a trailing comma', '{"type":"ping","id":1,}'],
    ['single quotes', "{'type':'ping','id':1}"],
    ['an empty frame', ''],
    ['two objects', '{"type":"ping","id":1}{"type":"ping","id":2}'],
  ])('closes with 4500 on a frame that is not valid JSON: %s', async (_what, text) => {
    const k = await open({ sub: 'c5', channels: [] });
    k.c.send(text);
    await closedWith(k, 4500);
    expect(k.rec.frames).toEqual([]);
  });

  it.each([
    ['an array', '[{"type":"ping","id":1}]'],
    ['a number', '42'],
    ['a string', '"ping"'],
    ['null', 'null'],
    ['true', 'true'],
  ])('closes with 4500 on valid JSON that is not an object: %s', async (_what, text) => {
    const k = await open({ sub: 'c6', channels: [] });
    k.c.send(text);
    await closedWith(k, 4500);
    expect(k.rec.frames).toEqual([]);
  });

  it.each([
    ['an unknown type', { type: 'dance' }],
    ['a missing type', { channel: 'news' }],
    ['a non-string type', { type: 1 }],
    ['a subscribe without id', { type: 'subscribe', channel: 'news' }],
    ['an unsubscribe without id', { type: 'unsubscribe', channel: 'news' }],
    ['a publish without id', { type: 'publish', channel: 'news', data: 1 }],
    ['a refresh without id', { type: 'refresh', token: 'x' }],
  ])('closes with 4500 on a frame without id that has %s', async (_what, frame) => {
    const k = await open({ sub: 'c7', channels: ['news'] });
    k.c.send(frame);
    await closedWith(k, 4500);
    expect(k.rec.frames).toEqual([]);
  });

  it.each([
    ['an unknown type', { type: 'dance' }],
    ['a missing type', {}],
    ['a type of the wrong case', { type: 'Ping' }],
    ['a server frame type', { type: 'reply' }],
  ])('answers a frame with id and %s with bad_request, and keeps the connection open', async (_what, frame) => {
    const k = await open({ sub: 'c8', channels: [] });
    expect((await onlyReply(k, { ...frame, id: 1 })).error).toMatchObject(badRequest);
    expect(await probe(k.c, 2)).toBe('open');
    await k.c.close();
  });

  it.each([
    ['subscribe without channel', { type: 'subscribe' }],
    ['subscribe with a numeric channel', { type: 'subscribe', channel: 7 }],
    ['subscribe with a null channel', { type: 'subscribe', channel: null }],
    ['subscribe with since that is not an object', { type: 'subscribe', channel: 'news', since: 5 }],
    ['subscribe with a negative since offset', { type: 'subscribe', channel: 'news', since: { offset: -1, epoch: 'e' } }],
    ['subscribe with a fractional since offset', { type: 'subscribe', channel: 'news', since: { offset: 1.5, epoch: 'e' } }],
    ['subscribe with since without epoch', { type: 'subscribe', channel: 'news', since: { offset: 1 } }],
    ['unsubscribe without channel', { type: 'unsubscribe' }],
    ['unsubscribe with an array channel', { type: 'unsubscribe', channel: ['news'] }],
    ['publish without channel', { type: 'publish', data: 1 }],
    ['publish without data', { type: 'publish', channel: 'news' }],
    ['refresh without token', { type: 'refresh' }],
    ['refresh with an empty token', { type: 'refresh', token: '' }],
    ['refresh with a numeric token', { type: 'refresh', token: 5 }],
  ])('answers %s (with id) with bad_request and keeps the connection open', async (_what, frame) => {
    const k = await open({ sub: 'c9', channels: ['*'], publish: ['*'] });
    expect((await onlyReply(k, { ...frame, id: 1 })).error).toMatchObject(badRequest);
    expect(await probe(k.c, 2)).toBe('open');
    await k.c.close();
  });

  it.each([
    ['0', 0],
    ['-1', -1],
    ['1.5', 1.5],
    ['"1"', '1'],
    ['true', true],
    ['{}', {}],
  ])('closes with 4500 on an id that is not a positive integer: %s', async (_what, id) => {
    for (const frame of [{ type: 'ping', id }, { type: 'subscribe', id, channel: 'news' }, { type: 'dance', id }]) {
      const k = await open({ sub: 'c10', channels: ['news'] });
      k.c.send(frame);
      await closedWith(k, 4500);
      expect(k.rec.frames, JSON.stringify(frame)).toEqual([]);
    }
  });
});
