/**
 * HMAC secrets shorter than RFC 7518 §3.2 asks, on real gateway processes:
 * with NODE_ENV=production the node refuses to start (exit 1, one line naming
 * the secret by position and kid and the minimum); otherwise it starts, logs
 * one warning line at start, and the secret still verifies tokens. Neither the
 * refusal nor the warning contains the secret.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../helpers/client.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { hmacJwt, validClaims } from '../helpers/keys.js';

const SHORT = 'only-twenty-bytes-ok'; // 20 bytes
const FINE = 'a-secret-long-enough-for-HS256-0123456789';
const SECRETS = `${FINE},k-short:${SHORT}`;

describe('short HMAC secrets with NODE_ENV=production', () => {
  it('refuses to start: exit 1, the secret named by position and kid with the minimum, not its value', async () => {
    // startGateway, not runGateway: should the node start after all, it is stopped and the test fails at once.
    const outcome = await startGateway({ NODE_ENV: 'production', PUBGATE_ADMIN_CONSOLE: 'false', PUBGATE_JWT_SECRETS: SECRETS }).then(
      async (gw) => {
        await gw.stop();
        return 'started';
      },
      (e: Error) => e.message,
    );
    expect(outcome).toBe(
      'gateway exited with 1 before listening: pubgate: invalid configuration: PUBGATE_JWT_SECRETS: secret 2 of 2 (kid "k-short") ' +
        'is shorter than 32 bytes, the minimum for HS256 (RFC 7518 §3.2); refused when NODE_ENV=production',
    );
    expect(outcome).not.toContain(SHORT);
    expect(outcome).not.toContain(FINE);
  });
});

describe('short HMAC secrets outside production', () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ PUBGATE_JWT_SECRETS: SECRETS });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('logs one warning at start naming the secret, before listening, without the secret', async () => {
    const listening = gw.lines.findIndex((l) => l.msg === 'listening');
    const warnings = gw.lines.filter((l) => /HMAC secrets shorter than RFC 7518/.test(l.msg));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      level: 'warn',
      secrets: ['secret 2 of 2 (kid "k-short") is shorter than 32 bytes, the minimum for HS256 (RFC 7518 §3.2)'],
    });
    expect(gw.lines.indexOf(warnings[0]!)).toBeLessThan(listening);
    const everything = JSON.stringify(gw.lines) + gw.stderr.join('\n');
    expect(everything).not.toContain(SHORT);
    expect(everything).not.toContain(FINE);
  });

  it('still verifies tokens signed with the short secret', async () => {
    const c = await connect(gw.url, { token: hmacJwt(validClaims('short-secret-user'), { kid: 'k-short', key: SHORT }) });
    expect(c.welcome).toMatchObject({ type: 'welcome', user: 'short-secret-user' });
    await c.close();
  });
});
