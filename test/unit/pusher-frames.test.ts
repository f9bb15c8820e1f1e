import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { channelAuthText, userAuthText, verifyAuth } from '../../src/protocol/pusher/auth.js';
import { nativeToPusher, parsePusherFrame, presenceData, pusherCloseCode } from '../../src/protocol/pusher/frames.js';
import { encodeMessage } from '../../src/protocol/frames.js';
import { encodeJoin, encodeLeave } from '../../src/presence/store.js';

describe('nativeToPusher (contract mapping, once per message)', () => {
  it('names the event by data.event and sends the JSON text of data.data, else of data', () => {
    expect(JSON.parse(nativeToPusher(encodeMessage('news', '{"event":"price","data":{"v":1.0}}'), 'news')!)).toEqual({ event: 'price', channel: 'news', data: '{"v":1.0}' });
    expect(JSON.parse(nativeToPusher(encodeMessage('news', '{"a":1}', 7, 'ep'), 'news')!)).toEqual({ event: 'message', channel: 'news', data: '{"a":1}' });
    expect(JSON.parse(nativeToPusher(encodeMessage('news', '"text"'), 'news')!)).toEqual({ event: 'message', channel: 'news', data: '"text"' });
    expect(JSON.parse(nativeToPusher(encodeMessage('news', '{"event":5,"data":1}'), 'news')!).event).toBe('message');
  });

  it('never takes a reserved pusher: or pusher_internal: name from a publish', () => {
    const f = JSON.parse(nativeToPusher(encodeMessage('x', '{"event":"pusher_internal:member_added","data":1}'), 'x')!) as { event: string };
    expect(f.event).toBe('message');
  });

  it('passes user_id on client events only', () => {
    expect(JSON.parse(nativeToPusher(encodeMessage('#1#presence-a', '{"event":"client-x","data":1,"user_id":"u"}'), 'presence-a')!)).toEqual({ event: 'client-x', channel: 'presence-a', data: '1', user_id: 'u' });
    expect(JSON.parse(nativeToPusher(encodeMessage('c', '{"event":"e","data":1,"user_id":"u"}'), 'c')!)).not.toHaveProperty('user_id');
  });

  it('turns join and leave into member_added and member_removed', () => {
    expect(JSON.parse(nativeToPusher(encodeJoin('presence-a', 'u1', '{"n":1}'), 'presence-a')!)).toEqual({ event: 'pusher_internal:member_added', channel: 'presence-a', data: '{"user_id":"u1","user_info":{"n":1}}' });
    expect(JSON.parse(nativeToPusher(encodeLeave('presence-a', 'u1'), 'presence-a')!)).toEqual({ event: 'pusher_internal:member_removed', channel: 'presence-a', data: '{"user_id":"u1"}' });
  });
});

describe('Pusher frames and signatures', () => {
  it('builds the presence data pusher-js reads', () => {
    expect(JSON.parse(presenceData([{ user: 'a', info: '{"n":1}' }, { user: 'b', info: undefined }]))).toEqual({ presence: { ids: ['a', 'b'], hash: { a: { n: 1 }, b: null }, count: 2 } });
  });

  it('parses client frames, with data as an object or JSON text; anything else is not a frame', () => {
    expect(parsePusherFrame('{"event":"pusher:subscribe","data":{"channel":"a"}}')).toEqual({ event: 'pusher:subscribe', channel: undefined, data: { channel: 'a' } });
    expect(parsePusherFrame('{"event":"client-x","channel":"private-a","data":"{\\"k\\":1}"}')?.data).toEqual({ k: 1 });
    for (const bad of ['nope', '[]', '{"data":1}', 'null']) expect(parsePusherFrame(bad)).toBeUndefined();
  });

  it('maps native close codes to Pusher codes with the same advice', () => {
    expect([1001, 1011, 4002, 4008, 1008, 4500, 4501, 1009].map(pusherCloseCode)).toEqual([4200, 4200, 4201, 4100, 4100, 4009, 4009, 1009]);
  });

  it('verifies key:HMAC-SHA256 signatures of channel and user auth, refusing another secret or key', () => {
    const mac = (t: string, k = 'sec'): string => createHmac('sha256', k).update(t).digest('hex');
    const t = channelAuthText('1.2', 'presence-a', '{"user_id":"u"}');
    expect(t).toBe('1.2:presence-a:{"user_id":"u"}');
    expect(verifyAuth('key', 'sec', t, `key:${mac(t)}`)).toBe(true);
    expect(verifyAuth('key', 'sec', t, `key:${mac(t, 'other')}`)).toBe(false);
    expect(verifyAuth('key', 'sec', t, `other:${mac(t)}`)).toBe(false);
    expect(verifyAuth('key', 'sec', t, undefined)).toBe(false);
    expect(userAuthText('1.2', '{"id":"u"}')).toBe('1.2::user::{"id":"u"}');
  });
});

describe('socket ids', () => {
  it('turn into the conn text exclude takes, on any node', async () => {
    const { createConnIds } = await import('../../src/transport/conn-id.js');
    const { connOfSocketId, createSocketIds } = await import('../../src/pusher/socket-id.js');
    const ids = createConnIds();
    const n = ids.next() + 12345;
    const sid = createSocketIds(ids).of(n);
    expect(sid).toMatch(/^\d+\.\d+$/);
    expect(connOfSocketId(sid)).toBe(ids.name(n));
    expect(ids.parse(connOfSocketId(sid)!)).toBe(n);
    for (const bad of ['1', 'a.1', '1.2.3', '99999999.1']) expect(connOfSocketId(bad)).toBeUndefined();
  });
});
