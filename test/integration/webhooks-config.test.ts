/**
 * Webhook settings at start (contract 1.1, "Webhooks" and "New settings"):
 * PUBGATE_WEBHOOK_URL without PUBGATE_WEBHOOK_SECRET (and the reverse), a key
 * shorter than 24 bytes (raw text or whsec_ base64) and a whsec_ secret that
 * is not base64 stop the process with exit code 1 and a message naming the
 * variable that never contains the secret. A raw-text secret of 24 bytes or
 * more is accepted and signs with its bytes (verified with standardwebhooks).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { BASE_ENV, runGateway, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { untilReadyz } from '../helpers/multinode.js';
import { PresenceClient, presenceEnv, uid } from '../helpers/presence.js';
import { WEBHOOK_TEST_SECRET, WebhookReceiver, webhookEnv } from '../helpers/webhook-receiver.js';

const URL_SETTING = 'http://127.0.0.1:9/hooks';

/** Runs a gateway with `env` on top of BASE_ENV; expects exit 1 and a stderr line about `variable`, without `secret` anywhere in its output. */
async function expectRefused(env: Record<string, string>, variable: string, secret?: string): Promise<string> {
  const r = await runGateway({ ...BASE_ENV, PUBGATE_PORT: '0', PUBGATE_ADMIN_PORT: '0', ...env });
  const out = `${r.stderr}\n${r.stdout}`;
  expect(r.code, out).toBe(1);
  const lines = r.stderr.split('\n').filter((l) => l.includes(variable));
  expect(lines.length, r.stderr).toBeGreaterThan(0);
  // Refused for what it says, not as an unknown variable.
  expect(r.stderr).not.toMatch(/unknown variable/);
  if (secret !== undefined) {
    expect(out.includes(secret)).toBe(false);
    // Nor the key part of a whsec_ secret.
    if (secret.startsWith('whsec_')) expect(out.includes(secret.slice('whsec_'.length))).toBe(false);
  }
  return r.stderr;
}

describe('webhook settings', () => {
  const started: GatewayProcess[] = [];
  const receivers: WebhookReceiver[] = [];
  const clients: PresenceClient[] = [];
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.terminate()));
    await Promise.allSettled(started.map((g) => g.stop()));
    await Promise.allSettled(receivers.map((r) => r.stop()));
  });

  it('a URL without a secret exits 1 naming PUBGATE_WEBHOOK_SECRET', async () => {
    await expectRefused({ PUBGATE_WEBHOOK_URL: URL_SETTING }, 'PUBGATE_WEBHOOK_SECRET');
  });

  it('a secret without a URL exits 1 naming PUBGATE_WEBHOOK_URL, without the secret in the output', async () => {
    await expectRefused({ PUBGATE_WEBHOOK_SECRET: WEBHOOK_TEST_SECRET }, 'PUBGATE_WEBHOOK_URL', WEBHOOK_TEST_SECRET);
  });

  it('a raw-text secret of 23 bytes exits 1 naming PUBGATE_WEBHOOK_SECRET, without the secret in the output', async () => {
    const secret = 'short-raw-secret-23-byt';
    expect(Buffer.byteLength(secret)).toBe(23);
    await expectRefused({ PUBGATE_WEBHOOK_URL: URL_SETTING, PUBGATE_WEBHOOK_SECRET: secret }, 'PUBGATE_WEBHOOK_SECRET', secret);
  });

  it('a whsec_ secret whose key is 16 bytes exits 1 (the decoded key counts, not the text), without the secret in the output', async () => {
    const secret = `whsec_${Buffer.from('sixteen-byte-key').toString('base64')}`;
    expect(secret.length).toBeGreaterThan(24);
    await expectRefused({ PUBGATE_WEBHOOK_URL: URL_SETTING, PUBGATE_WEBHOOK_SECRET: secret }, 'PUBGATE_WEBHOOK_SECRET', secret);
  });

  it('a whsec_ secret that is not base64 exits 1, without the secret in the output', async () => {
    const secret = 'whsec_this*is*not*base64*at*all!!!!!!!!!!!!';
    await expectRefused({ PUBGATE_WEBHOOK_URL: URL_SETTING, PUBGATE_WEBHOOK_SECRET: secret }, 'PUBGATE_WEBHOOK_SECRET', secret);
  });

  it('PUBGATE_WEBHOOK_MAX_QUEUE and PUBGATE_WEBHOOK_RETRY_SECONDS that are not numbers exit 1 naming them', async () => {
    const base = { PUBGATE_WEBHOOK_URL: URL_SETTING, PUBGATE_WEBHOOK_SECRET: WEBHOOK_TEST_SECRET };
    await expectRefused({ ...base, PUBGATE_WEBHOOK_MAX_QUEUE: 'lots' }, 'PUBGATE_WEBHOOK_MAX_QUEUE', WEBHOOK_TEST_SECRET);
    await expectRefused({ ...base, PUBGATE_WEBHOOK_RETRY_SECONDS: 'forever' }, 'PUBGATE_WEBHOOK_RETRY_SECONDS', WEBHOOK_TEST_SECRET);
  });

  it(
    'a raw-text secret of 24 bytes or more is accepted: the node starts, logs no secret, and its requests verify with those bytes as the key',
    async () => {
      const secret = 'raw-text-webhook-secret-of-32-b!';
      const r = await WebhookReceiver.start({ secret });
      receivers.push(r);
      const gw = await startGateway({ ...presenceEnv(), ...webhookEnv(r, {}, secret) });
      started.push(gw);
      await untilReadyz(gw, 200);
      const t = uid();
      const c = await PresenceClient.open(gw.url, { user: `${t}-c` });
      clients.push(c);
      await c.subscribe(`plain:${t}`);
      await r.untilEvent('channel_occupied', `plain:${t}`);
      r.assertNoProblems();
      const logs = JSON.stringify(gw.lines) + gw.stderr.join('\n');
      expect(logs.includes(secret)).toBe(false);
    },
    60_000,
  );
});
