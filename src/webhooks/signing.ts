/**
 * Webhook signing per the Standard Webhooks specification (contract 1.1,
 * "Webhooks"), checked against its reference receiver, the `standardwebhooks`
 * npm package (test/unit/webhook-signing.test.ts).
 *
 * The secret (PUBGATE_WEBHOOK_SECRET) is either the specification's form,
 * `whsec_` + standard base64 of the key bytes (what the reference library
 * takes by default: it strips `whsec_` and base64-decodes, padding required),
 * or raw text whose UTF-8 bytes are the key (a receiver using the reference
 * library then passes those bytes with `{ format: 'raw' }`, see
 * docs/webhooks.md). Either way the key is at least 24 bytes (the spec's
 * floor; its own secrets are 24 to 64 bytes).
 *
 * Errors never quote the secret, not even a part of it: they end up in the
 * start-up problem list, printed to the console and the logs.
 */
import { createHmac } from 'node:crypto';

/** The Standard Webhooks secret prefix. */
export const WEBHOOK_SECRET_PREFIX = 'whsec_';
/** Shortest key accepted (bytes). */
export const WEBHOOK_MIN_KEY_BYTES = 24;

/** Canonical standard base64 with padding: exactly what the reference library decodes without surprises. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The signing key of a secret: the decoded bytes of a `whsec_` secret, the
 * UTF-8 bytes of any other. Throws (a message without the secret) when the
 * base64 after `whsec_` is not valid or the key is shorter than 24 bytes.
 */
export function parseWebhookSecret(raw: string): Buffer {
  let key: Buffer;
  if (raw.startsWith(WEBHOOK_SECRET_PREFIX)) {
    const b64 = raw.slice(WEBHOOK_SECRET_PREFIX.length);
    if (b64 === '' || !BASE64.test(b64)) {
      throw new Error('a secret starting with "whsec_" must continue with standard base64 (A-Z a-z 0-9 + /, "=" padding), as in the Standard Webhooks specification');
    }
    key = Buffer.from(b64, 'base64');
    if (key.length < WEBHOOK_MIN_KEY_BYTES) {
      throw new Error(`the key (the base64 after "whsec_", decoded) is ${key.length} bytes; at least ${WEBHOOK_MIN_KEY_BYTES} are needed`);
    }
  } else {
    key = Buffer.from(raw, 'utf8');
    if (key.length < WEBHOOK_MIN_KEY_BYTES) {
      throw new Error(`the secret is ${key.length} bytes (UTF-8); at least ${WEBHOOK_MIN_KEY_BYTES} are needed (or a "whsec_" base64 secret)`);
    }
  }
  return key;
}

/**
 * The `webhook-signature` header value: `v1,` + base64 of
 * HMAC-SHA256(key, `<id>.<timestampSec>.<body>`).
 */
export function signWebhook(key: Buffer, id: string, timestampSec: number, body: string): string {
  const mac = createHmac('sha256', key).update(`${id}.${timestampSec}.`).update(body).digest('base64');
  return `v1,${mac}`;
}
