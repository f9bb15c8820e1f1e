/**
 * Webhook signing against the Standard Webhooks reference receiver (the
 * `standardwebhooks` npm package, written by others): a signature made here
 * verifies there, for `whsec_` and raw secrets; a tampered body, id or
 * timestamp does not; bad secrets are refused without being quoted.
 */
import { randomBytes } from 'node:crypto';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { parseWebhookSecret, signWebhook } from '../../src/webhooks/signing.js';

const BODY = '{"events":[{"id":"abc.0","name":"member_added","channel":"chat:1","user":"42","time_ms":1764000000000}]}';

function headers(key: Buffer, id: string, ts: number, body: string): Record<string, string> {
  return { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signWebhook(key, id, ts, body) };
}

const now = (): number => Math.floor(Date.now() / 1000);

describe('parseWebhookSecret', () => {
  it('decodes a whsec_ secret to its base64 bytes', () => {
    const bytes = randomBytes(32);
    expect(parseWebhookSecret(`whsec_${bytes.toString('base64')}`).equals(bytes)).toBe(true);
  });

  it('takes any other secret as its UTF-8 bytes', () => {
    expect(parseWebhookSecret('ein-geheimnis-über-24-bytes').equals(Buffer.from('ein-geheimnis-über-24-bytes', 'utf8'))).toBe(true);
  });

  it('refuses a key shorter than 24 bytes, in either form, without quoting the secret', () => {
    const raw = 'short-secret-23-bytes!!';
    expect(Buffer.byteLength(raw)).toBe(23);
    const b64 = `whsec_${Buffer.from('twenty-three-bytes-key!').toString('base64')}`;
    for (const secret of [raw, b64]) {
      let message = '';
      try {
        parseWebhookSecret(secret);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/23 bytes.*at least 24/);
      expect(message).not.toContain(secret);
      expect(message).not.toContain(secret.slice(6, 14));
    }
    expect(parseWebhookSecret('x'.repeat(24)).length).toBe(24);
  });

  it('refuses a whsec_ secret whose rest is not standard padded base64, without quoting it', () => {
    const good = randomBytes(30).toString('base64');
    for (const rest of ['', `${good}!`, good.replace(/=+$/, '') + 'A', randomBytes(30).toString('base64url').replace(/[A-Za-z0-9]/g, '-'), `${good.slice(0, 8)} ${good.slice(8)}`]) {
      const secret = `whsec_${rest}`;
      let message = '';
      try {
        parseWebhookSecret(secret);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message, rest).toMatch(/standard base64/);
      if (rest !== '') expect(message).not.toContain(rest.slice(0, 8));
    }
  });
});

describe('signWebhook', () => {
  it('is verified by the standardwebhooks package with a whsec_ secret', () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const ts = now();
    const out: unknown = new Webhook(secret).verify(BODY, headers(parseWebhookSecret(secret), 'msg_1', ts, BODY));
    expect(out).toEqual(JSON.parse(BODY));
  });

  it('is verified by the standardwebhooks package with a raw secret given as its UTF-8 bytes', () => {
    const secret = 'a raw secret, not base64: ü ✓ 0123456789';
    const ts = now();
    const hook = new Webhook(new TextEncoder().encode(secret), { format: 'raw' });
    expect(hook.verify(BODY, headers(parseWebhookSecret(secret), 'msg_2', ts, BODY))).toEqual(JSON.parse(BODY));
  });

  it('is refused by the standardwebhooks package for another body, id, timestamp or key', () => {
    const secret = `whsec_${randomBytes(24).toString('base64')}`;
    const key = parseWebhookSecret(secret);
    const hook = new Webhook(secret);
    const ts = now();
    const h = headers(key, 'msg_3', ts, BODY);
    expect(() => hook.verify(BODY.replace('42', '43'), h)).toThrow(WebhookVerificationError);
    expect(() => hook.verify(BODY, { ...h, 'webhook-id': 'msg_4' })).toThrow(WebhookVerificationError);
    expect(() => hook.verify(BODY, { ...h, 'webhook-timestamp': String(ts - 1) })).toThrow(WebhookVerificationError);
    expect(() => hook.verify(BODY, headers(randomBytes(24), 'msg_3', ts, BODY))).toThrow(WebhookVerificationError);
    expect(hook.verify(BODY, h)).toEqual(JSON.parse(BODY));
  });

  it('signs the documented string: v1, then base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"', () => {
    // The reference library's own signer, and a fixed vector (openssl dgst -sha256 -hmac over the same string).
    const key = Buffer.from('k'.repeat(24));
    const hook = new Webhook(key, { format: 'raw' });
    expect(signWebhook(key, 'msg_x', 1700000000, '{}')).toBe(hook.sign('msg_x', new Date(1700000000 * 1000), '{}'));
    expect(signWebhook(key, 'msg_x', 1700000000, '{}')).toBe('v1,2Z2CzYBLfBgpz2Q/l70KsnIpDXUfGDUS7zgVzu9jywo=');
  });
});
