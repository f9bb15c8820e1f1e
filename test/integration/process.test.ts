import { describe, expect, it } from 'vitest';
import { connect, token } from '../helpers/client.js';
import { TEST_API_KEY, TEST_SECRET, publish, runGateway, startGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';

describe('node dist/main.js', () => {
  it('runs configured by environment variables only, with no config file', async () => {
    const gw = await startGateway(
      { PUBGATE_HOST: '127.0.0.1', PUBGATE_JWT_SECRETS: TEST_SECRET, PUBGATE_API_KEYS: TEST_API_KEY, PUBGATE_NODE_ID: 'env-node' },
      { bare: true },
    );
    try {
      const c = await connect(gw.url, { token: await token({ sub: 'env', channels: ['e'] }) });
      expect(c.welcome.node).toBe('env-node');
      expect(await c.request({ type: 'subscribe', id: 1, channel: 'e' })).toEqual({ type: 'reply', id: 1 });
      expect((await publish(gw, { channel: 'e', data: 'x' })).status).toBe(200);
      expect((await c.next((f) => f.type === 'message')).data).toBe('x');
      expect((await fetch(`${gw.admin}/healthz`)).status).toBe(200);
      expect((await fetch(`${gw.admin}/readyz`)).status).toBe(200);
      await c.close();
    } finally {
      expect(await gw.stop()).toBe(0);
    }
  });

  it('exits 1 on invalid configuration, one stderr line per problem naming the variable', async () => {
    const r = await runGateway({ PUBGATE_PORT: '99999', PUBGATE_MAX_CONNECTIONS: 'lots', PUBGATE_TYPO: 'x' });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines.some((l) => l.includes('PUBGATE_PORT'))).toBe(true);
    expect(lines.some((l) => l.includes('PUBGATE_MAX_CONNECTIONS'))).toBe(true);
    expect(lines.some((l) => l.includes('PUBGATE_TYPO'))).toBe(true);
  });

  it('exits 1 on a webhook secret too short, and on a webhook URL without a secret, never printing the secret', async () => {
    const secret = 'webhook-secret-23-bytes';
    const short = await runGateway({ PUBGATE_WEBHOOK_URL: 'http://127.0.0.1:9/hooks', PUBGATE_WEBHOOK_SECRET: secret });
    expect(short.code).toBe(1);
    expect(short.stderr.trim().split('\n')).toEqual([
      'pubgate: invalid configuration: PUBGATE_WEBHOOK_SECRET: the secret is 23 bytes (UTF-8); at least 24 are needed (or a "whsec_" base64 secret)',
    ]);
    expect(short.stderr + short.stdout).not.toContain(secret);
    const alone = await runGateway({ PUBGATE_WEBHOOK_URL: 'http://127.0.0.1:9/hooks' });
    expect(alone.code).toBe(1);
    expect(alone.stderr.trim()).toBe('pubgate: invalid configuration: PUBGATE_WEBHOOK_SECRET: PUBGATE_WEBHOOK_URL is set; webhooks need the signing secret too');
  });

  it('exits 1 on invalid namespaces, one stderr line per problem naming the entry', async () => {
    const r = await runGateway({
      PUBGATE_NAMESPACES: JSON.stringify([
        { pattern: 'chat:*', presence: true, joinLeave: true },
        { pattern: 'room:*', joinLeave: true },
        { pattern: 'user:{sub}' },
        { pattern: 'feed:*', rewind: true, history: { size: 0 } },
        { pattern: 'news:*', rewind: true },
      ]),
      PUBGATE_PRESENCE_TTL: '0',
    });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([
      'pubgate: invalid configuration: PUBGATE_NAMESPACES: entry 2 ("room:*"): "joinLeave" needs "presence": true',
      'pubgate: invalid configuration: PUBGATE_NAMESPACES: entry 3 ("user:{sub}"): "pattern" cannot contain {sub} (namespaces are the same for every user)',
      'pubgate: invalid configuration: PUBGATE_NAMESPACES: entry 4 ("feed:*"): "history.size" must be a whole number between 1 and 1000000',
      'pubgate: invalid configuration: PUBGATE_NAMESPACES: entry 5 ("news:*"): "rewind" needs "history"',
      'pubgate: invalid configuration: PUBGATE_PRESENCE_TTL: must be between 1 and 86400, got 0',
    ]);
    expect(r.stdout).toBe('');
  });

  it('exits 1 on a proxy URL that is not http(s), and on a namespace with subscribeProxy without PUBGATE_SUBSCRIBE_PROXY_URL (naming both)', async () => {
    const r = await runGateway({
      PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'chat:*', presence: true }, { pattern: 'room:*', subscribeProxy: true }]),
      PUBGATE_CONNECT_PROXY_URL: 'ftp://backend/connect',
    });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      'pubgate: invalid configuration: PUBGATE_CONNECT_PROXY_URL: must be a http: or https: URL',
    ]);
    // The combination is checked once every setting parses.
    const r2 = await runGateway({ PUBGATE_NAMESPACES: JSON.stringify([{ pattern: 'chat:*', presence: true }, { pattern: 'room:*', subscribeProxy: true }]) });
    expect(r2.code).toBe(1);
    expect(r2.stderr.trim().split('\n')).toEqual([
      'pubgate: invalid configuration: PUBGATE_NAMESPACES: entry 2 ("room:*") sets "subscribeProxy" but PUBGATE_SUBSCRIBE_PROXY_URL is unset',
    ]);
  });

  it('exits 1 with a clear message when its port is taken', async () => {
    const gw = await startGateway();
    try {
      const r = await runGateway({ PUBGATE_LOG_LEVEL: "silent", PUBGATE_HOST: '127.0.0.1', PUBGATE_PORT: String(gw.port), PUBGATE_ADMIN_PORT: String(await freePort()) });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/cannot listen on 127\.0\.0\.1:\d+ \(public port\)/);
    } finally {
      await gw.stop();
    }
  });

  it('refuses the development secrets with NODE_ENV=production', async () => {
    const r = await runGateway({ NODE_ENV: 'production', PUBGATE_CONFIG: 'config/development.json' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PUBGATE_JWT_SECRETS: the development secret/);
    expect(r.stderr).toMatch(/PUBGATE_API_KEYS: the development API key/);
  });
});
