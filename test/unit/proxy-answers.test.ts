/**
 * What the node sends to the proxies and how it reads their answers: every
 * field of a backend's answer is checked; anything the contract does not
 * describe is `bad_response` (or `bad_status`), with a reason that never
 * quotes the answer.
 */
import { describe, expect, it } from 'vitest';
import {
  encodeConnectRequest,
  encodeSubscribeRequest,
  isChannelPattern,
  readConnectAnswer,
  readSubscribeAnswer,
} from '../../src/proxy/answers.js';

const ok = (body: unknown): { status: number; text: string } => ({ status: 200, text: typeof body === 'string' ? body : JSON.stringify(body) });
const GRANT = { user: '42', expiresIn: 3600 };

describe('the requests', () => {
  it('sends {cookie, ip, origin} to the connect proxy', () => {
    expect(JSON.parse(encodeConnectRequest({ cookie: 'sid=a; t=b', ip: '10.0.0.1', origin: '' }))).toEqual({ cookie: 'sid=a; t=b', ip: '10.0.0.1', origin: '' });
  });

  it('sends {user, conn, channel, info} to the subscribe proxy, info only when the connection has one', () => {
    expect(JSON.parse(encodeSubscribeRequest({ user: 'u"1', conn: 'c1', channel: 'room:5', info: '{"name":"Ann"}' }))).toEqual({
      user: 'u"1', conn: 'c1', channel: 'room:5', info: { name: 'Ann' },
    });
    expect(JSON.parse(encodeSubscribeRequest({ user: 'u', conn: 'c', channel: 'r', info: undefined }))).toEqual({ user: 'u', conn: 'c', channel: 'r' });
  });
});

describe('readConnectAnswer', () => {
  it('accepts the full answer, with info serialized and duplicate subs dropped', () => {
    const o = readConnectAnswer(ok({
      ...GRANT, channels: ['chat:*', 'user:{sub}', '*'], publish: ['chat:1'], subs: ['news', 'feed:1', 'news'], info: { name: 'Ann' }, extra: 'ignored',
    }));
    expect(o).toEqual({
      result: 'allow',
      value: { user: '42', expiresIn: 3600, channels: ['chat:*', 'user:{sub}', '*'], publish: ['chat:1'], subs: ['news', 'feed:1'], info: '{"name":"Ann"}' },
    });
  });

  it('takes missing channels, publish, subs and info as none', () => {
    expect(readConnectAnswer(ok(GRANT))).toEqual({ result: 'allow', value: { user: '42', expiresIn: 3600, channels: [], publish: [], subs: undefined, info: undefined } });
  });

  it('reads 401 and 403 as a refusal, whatever their body', () => {
    expect(readConnectAnswer({ status: 401, text: 'nope' })).toEqual({ result: 'deny' });
    expect(readConnectAnswer({ status: 403, text: undefined })).toEqual({ result: 'deny' });
  });

  it('reads any other status as bad_status', () => {
    for (const status of [201, 204, 302, 400, 404, 500, 503]) expect(readConnectAnswer({ status, text: JSON.stringify(GRANT) })).toEqual({ result: 'bad_status', why: `status ${status}` });
  });

  const bad: Array<[string, { status: number; text: string | undefined }, RegExp]> = [
    ['a body over the limit', { status: 200, text: undefined }, /over 65536 bytes/],
    ['a body that is not JSON', ok('{"user":'), /not JSON/],
    ['an empty body', ok(''), /not JSON/],
    ['a JSON array', ok([GRANT]), /not a JSON object/],
    ['JSON null', ok('null'), /not a JSON object/],
    ['no user', ok({ expiresIn: 60 }), /user must be a non-empty string/],
    ['an empty user', ok({ ...GRANT, user: '' }), /user must be/],
    ['a numeric user', ok({ ...GRANT, user: 42 }), /user must be/],
    ['no expiresIn', ok({ user: '42' }), /expiresIn must be/],
    ['expiresIn 0', ok({ ...GRANT, expiresIn: 0 }), /expiresIn must be/],
    ['a negative expiresIn', ok({ ...GRANT, expiresIn: -5 }), /expiresIn must be/],
    ['a fractional expiresIn', ok({ ...GRANT, expiresIn: 1.5 }), /expiresIn must be/],
    ['expiresIn as a string', ok({ ...GRANT, expiresIn: '3600' }), /expiresIn must be/],
    ['expiresIn over ten years', ok({ ...GRANT, expiresIn: 10 * 365 * 24 * 3600 + 1 }), /expiresIn must be/],
    ['channels not an array', ok({ ...GRANT, channels: 'chat:*' }), /channels must be an array of channel patterns/],
    ['a channel pattern with a space', ok({ ...GRANT, channels: ['chat *'] }), /channels must be/],
    ['a star inside a channel pattern', ok({ ...GRANT, channels: ['a*b'] }), /channels must be/],
    ['an empty channel pattern', ok({ ...GRANT, channels: [''] }), /channels must be/],
    ['a number in publish', ok({ ...GRANT, publish: [1] }), /publish must be an array of channel patterns/],
    ['subs with a pattern', ok({ ...GRANT, subs: ['chat:*'] }), /subs must be an array of channel names/],
    ['subs not an array', ok({ ...GRANT, subs: { news: {} } }), /subs must be/],
    ['info as a string', ok({ ...GRANT, info: 'Ann' }), /info must be a JSON object of at most 1024 bytes/],
    ['info as an array', ok({ ...GRANT, info: [1] }), /info must be/],
    ['info over 1024 bytes', ok({ ...GRANT, info: { x: 'a'.repeat(1017) } }), /info must be/],
  ];
  for (const [what, answer, why] of bad) {
    it(`reads ${what} as bad_response, naming what is wrong without quoting it`, () => {
      const o = readConnectAnswer(answer);
      expect(o.result).toBe('bad_response');
      const text = o.result === 'bad_response' ? o.why ?? '' : '';
      expect(text).toMatch(why);
      expect(text).not.toContain('chat *');
    });
  }

  it('accepts info of exactly 1024 bytes', () => {
    const info = { x: 'a'.repeat(1016) };
    expect(readConnectAnswer(ok({ ...GRANT, info }))).toMatchObject({ result: 'allow', value: { info: JSON.stringify(info) } });
  });
});

describe('readSubscribeAnswer', () => {
  it('allows on 200 {"allow":true}, with the optional info serialized', () => {
    expect(readSubscribeAnswer(ok({ allow: true }))).toEqual({ result: 'allow', value: { info: undefined } });
    expect(readSubscribeAnswer(ok({ allow: true, info: { seat: 3 } }))).toEqual({ result: 'allow', value: { info: '{"seat":3}' } });
  });

  it('refuses on 200 {"allow":false} and on 403, ignoring the rest', () => {
    expect(readSubscribeAnswer(ok({ allow: false, info: 'not checked' }))).toEqual({ result: 'deny' });
    expect(readSubscribeAnswer({ status: 403, text: undefined })).toEqual({ result: 'deny' });
  });

  it('reads 401 and every other status as bad_status (only 403 refuses)', () => {
    for (const status of [401, 404, 500, 302]) expect(readSubscribeAnswer({ status, text: '{"allow":true}' }).result).toBe('bad_status');
  });

  it('reads a missing or non-boolean allow, bad JSON, a big body and a bad info as bad_response', () => {
    for (const a of [ok({}), ok({ allow: 'true' }), ok({ allow: 1 }), ok('yes'), ok('[true]'), { status: 200, text: undefined }, ok({ allow: true, info: 'x' })]) {
      expect(readSubscribeAnswer(a).result).toBe('bad_response');
    }
  });
});

describe('isChannelPattern', () => {
  it('takes channel names, prefixes ending in * and {sub} templates', () => {
    for (const p of ['news', 'chat:*', '*', 'user:{sub}', 'inbox:{sub}:*', 'a'.repeat(200)]) expect(isChannelPattern(p), p).toBe(true);
    for (const p of ['', 'a b', '**', 'a*b', 'a'.repeat(202), 'x{sub']) expect(isChannelPattern(p), p).toBe(false);
  });
});
