/**
 * Pusher HTTP API request signing against the `pusher` server library (written
 * by others): what its createSignedQueryString makes verifies here, for GET and
 * POST, with and without extra parameters; and Pusher's own worked example
 * (HTTP API reference) gives its published signature. Every tampering, a
 * stale or future timestamp, a wrong body_md5, a wrong key or version is
 * refused with its reason.
 */
import Pusher from 'pusher';
import { describe, expect, it } from 'vitest';
import { bodyMd5, parseQuery, PUSHER_TIMESTAMP_WINDOW_SEC, signString, stringToSign, verifySignedRequest } from '../../src/pusher/signing.js';

const APP = { id: '42', key: 'app-key-1', secret: 'app-secret-that-is-long' };
const pusher = new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1' });
const now = (): number => Math.floor(Date.now() / 1000);

/** A request signed by the library's own code path (the one its get/post use). */
function signed(method: 'GET' | 'POST', path: string, body?: string, params?: Record<string, string>): { method: string; path: string; query: string; body: string } {
  const query = pusher.createSignedQueryString({ method, path, ...(body === undefined ? {} : { body }), ...(params ? { params } : {}) });
  return { method, path, query, body: body ?? '' };
}

/** The query with one parameter's raw value replaced. */
function withParam(query: string, key: string, value: string): string {
  return query.split('&').map((p) => (p.startsWith(`${key}=`) ? `${key}=${value}` : p)).join('&');
}

describe('verifySignedRequest against the pusher library', () => {
  it('accepts a POST with a body signed by the library', () => {
    const body = JSON.stringify({ name: 'ev', channels: ['a', 'b'], data: '{"x":1}' });
    const r = verifySignedRequest(signed('POST', `/apps/${APP.id}/events`, body), APP, now());
    expect(r.ok).toBe(true);
  });

  it('accepts a GET with extra parameters, signed raw (commas, dashes) as the library sends them', () => {
    const r = verifySignedRequest(
      signed('GET', `/apps/${APP.id}/channels`, undefined, { filter_by_prefix: 'presence-', info: 'user_count,subscription_count' }),
      APP,
      now(),
    );
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(r.params.get('info')).toBe('user_count,subscription_count');
      expect(r.params.get('filter_by_prefix')).toBe('presence-');
    }
  });

  it('accepts the same parameters URL-encoded, as other libraries send them', () => {
    const req = signed('GET', `/apps/${APP.id}/channels`, undefined, { info: 'user_count,subscription_count' });
    const r = verifySignedRequest({ ...req, query: withParam(req.query, 'info', 'user_count%2Csubscription_count') }, APP, now());
    expect(r.ok).toBe(true);
  });

  it('gives the signature of Pusher\'s worked example (HTTP API reference)', () => {
    const body = '{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}';
    expect(bodyMd5(body)).toBe('ec365a775a4cd0599faeb73354201b6f');
    const params = parseQuery(`auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=${bodyMd5(body)}`)!;
    expect(signString('7ad3773142a6692b25b8', stringToSign('POST', '/apps/3/events', params))).toBe(
      'da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c',
    );
    const query = `auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=${bodyMd5(body)}` +
      '&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c';
    expect(verifySignedRequest({ method: 'POST', path: '/apps/3/events', query, body }, { key: '278d425bdf160c739803', secret: '7ad3773142a6692b25b8' }, 1353088179).ok).toBe(true);
  });
});

describe('verifySignedRequest refusals', () => {
  const body = JSON.stringify({ name: 'ev', channel: 'a', data: 'x' });

  it('refuses a signature made with another secret', () => {
    const other = new Pusher({ appId: APP.id, key: APP.key, secret: 'another-secret', host: '127.0.0.1' });
    const query = other.createSignedQueryString({ method: 'POST', path: `/apps/${APP.id}/events`, body });
    expect(verifySignedRequest({ method: 'POST', path: `/apps/${APP.id}/events`, query, body }, APP, now())).toMatchObject({ ok: false, reason: 'bad_signature' });
  });

  it('refuses a request whose path, method or a signed parameter was changed', () => {
    const req = signed('GET', `/apps/${APP.id}/channels`, undefined, { filter_by_prefix: 'presence-' });
    expect(verifySignedRequest({ ...req, path: `/apps/${APP.id}/channels/x` }, APP, now())).toMatchObject({ ok: false, reason: 'bad_signature' });
    expect(verifySignedRequest({ ...req, method: 'DELETE' }, APP, now())).toMatchObject({ ok: false, reason: 'bad_signature' });
    expect(verifySignedRequest({ ...req, query: withParam(req.query, 'filter_by_prefix', 'private-') }, APP, now())).toMatchObject({ ok: false, reason: 'bad_signature' });
    expect(verifySignedRequest({ ...req, query: `${req.query}&extra=1` }, APP, now())).toMatchObject({ ok: false, reason: 'bad_signature' });
  });

  it('refuses a body that does not match body_md5, and a body without body_md5', () => {
    const req = signed('POST', `/apps/${APP.id}/events`, body);
    expect(verifySignedRequest({ ...req, body: body.replace('"x"', '"y"') }, APP, now())).toMatchObject({ ok: false, reason: 'body_md5' });
    const bare = signed('POST', `/apps/${APP.id}/events`);
    expect(verifySignedRequest({ ...bare, body }, APP, now())).toMatchObject({ ok: false, reason: 'body_md5' });
  });

  it(`refuses a timestamp more than ${PUSHER_TIMESTAMP_WINDOW_SEC} s old or ahead, and accepts one at the edge`, () => {
    const req = signed('POST', `/apps/${APP.id}/events`, body);
    const ts = Number(new URLSearchParams(req.query).get('auth_timestamp'));
    expect(verifySignedRequest(req, APP, ts + PUSHER_TIMESTAMP_WINDOW_SEC).ok).toBe(true);
    expect(verifySignedRequest(req, APP, ts - PUSHER_TIMESTAMP_WINDOW_SEC).ok).toBe(true);
    const late = verifySignedRequest(req, APP, ts + PUSHER_TIMESTAMP_WINDOW_SEC + 1);
    expect(late).toMatchObject({ ok: false, reason: 'expired' });
    expect(verifySignedRequest(req, APP, ts - PUSHER_TIMESTAMP_WINDOW_SEC - 1)).toMatchObject({ ok: false, reason: 'expired' });
    if (!late.ok) expect(late.message).toMatch(/^Timestamp expired/);
  });

  it('refuses another app key, another auth_version, and missing auth parameters', () => {
    const req = signed('POST', `/apps/${APP.id}/events`, body);
    expect(verifySignedRequest(req, { key: 'other-key', secret: APP.secret }, now())).toMatchObject({ ok: false, reason: 'unknown_key' });
    expect(verifySignedRequest({ ...req, query: withParam(req.query, 'auth_version', '2.0') }, APP, now())).toMatchObject({ ok: false, reason: 'auth_version' });
    const noSig = req.query.split('&').filter((p) => !p.startsWith('auth_signature=')).join('&');
    const r = verifySignedRequest({ ...req, query: noSig }, APP, now());
    expect(r).toMatchObject({ ok: false, reason: 'auth_params' });
    if (!r.ok) expect(r.message).toContain('auth_signature');
  });

  it('refuses a parameter given twice and a query over the length bound', () => {
    const req = signed('GET', `/apps/${APP.id}/channels`, undefined, { info: 'user_count' });
    expect(verifySignedRequest({ ...req, query: `${req.query}&info=x` }, APP, now())).toMatchObject({ ok: false, reason: 'auth_params' });
    expect(verifySignedRequest({ ...req, query: `${req.query}&pad=${'x'.repeat(5000)}` }, APP, now())).toMatchObject({ ok: false, reason: 'auth_params' });
  });

  it('never quotes the secret or the expected signature in a message', () => {
    const req = signed('POST', `/apps/${APP.id}/events`, body);
    const forged = withParam(req.query, 'auth_signature', '0'.repeat(64));
    const r = verifySignedRequest({ ...req, query: forged }, APP, now());
    expect(r.ok).toBe(false);
    const expected = new URLSearchParams(req.query).get('auth_signature') as string;
    if (!r.ok) {
      expect(r.message).not.toContain(APP.secret);
      expect(r.message).not.toContain(expected);
    }
  });
});
