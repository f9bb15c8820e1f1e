import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, SETTINGS, envName, loadConfig, type Config } from '../../src/config.js';

const EXAMPLE = new URL('../../config/example.env', import.meta.url);

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
}

describe('config/example.env', () => {
  const lines = readFileSync(EXAMPLE, 'utf8').split('\n');
  const listed = new Map<string, string | undefined>();
  for (const l of lines) {
    const m = /^(#\s*)?(PUBGATE_[A-Z0-9_]+)=(.*)$/.exec(l);
    if (m) listed.set(m[2]!, m[1] ? undefined : m[3]);
  }

  it('lists every variable the loader knows, and no other', () => {
    const known = [...SETTINGS.map((s) => envName(s.key)), 'PUBGATE_CONFIG'].sort();
    expect([...listed.keys()].sort()).toEqual(known);
  });

  it('shows the loader defaults: loading its uncommented lines gives the default config', () => {
    const env: Record<string, string> = {};
    for (const [k, v] of listed) if (v !== undefined) env[k] = v;
    const fromExample = loadConfig(env);
    const defaults = loadConfig({});
    expect(fromExample).toEqual(defaults);
  });

  it('leaves commented exactly the settings whose default is unset or empty', () => {
    const defaults = loadConfig({});
    for (const s of SETTINGS) {
      const name = envName(s.key);
      const d = defaults[s.key as keyof Config];
      const unset = d === undefined || (Array.isArray(d) && d.length === 0) || s.key === 'nodeId';
      expect(listed.get(name) === undefined, name).toBe(unset);
    }
  });
});

describe('loadConfig', () => {
  it('runs on the defaults of the contract with no variables set', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      port: 8080, adminPort: 9091, host: '0.0.0.0', compression: 'off', jwtAlgorithms: ['HS256'], jwtClockTolerance: 5,
      maxConnections: 100000, maxSubscriptions: 100, ipHandshakeRate: 0, clientFrameRate: 50, apiRate: 0,
      maxPayloadLength: 16384, maxPublishBytes: 65536, maxBackpressure: 1048576, slowConsumerPolicy: 'close',
      pingInterval: 25, historySize: 100, historyTtl: 300, drainSeconds: 10, logLevel: 'info',
      requireOrigin: false, allowAnonymous: false, redisUrl: undefined, apiKeys: [],
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reports every problem at once, one line each naming the variable', () => {
    const p = problems({ PUBGATE_PORT: 'eighty', PUBGATE_SLOW_CONSUMER_POLICY: 'panic', PUBGATE_NOPE: '1', PUBGATE_JWT_ALGORITHMS: 'none' });
    expect(p).toHaveLength(4);
    expect(p.some((l) => l.startsWith('PUBGATE_PORT:'))).toBe(true);
    expect(p.some((l) => l.startsWith('PUBGATE_SLOW_CONSUMER_POLICY:'))).toBe(true);
    expect(p.some((l) => l.startsWith('PUBGATE_NOPE: unknown variable'))).toBe(true);
    expect(p.some((l) => l.startsWith('PUBGATE_JWT_ALGORITHMS:'))).toBe(true);
  });

  it('reads a JSON file named by PUBGATE_CONFIG, overridden by the environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ port: 1234, maxSubscriptions: 7, apiKeys: ['a', 'b'], allowAnonymous: true }));
    const c = loadConfig({ PUBGATE_CONFIG: file, PUBGATE_PORT: '4321' });
    expect(c.port).toBe(4321);
    expect(c.maxSubscriptions).toBe(7);
    expect(c.apiKeys).toEqual(['a', 'b']);
    expect(c.allowAnonymous).toBe(true);
  });

  it('rejects unknown keys and bad values in the file, naming both', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ prot: 1, maxSubscriptions: 'many' }));
    const p = problems({ PUBGATE_CONFIG: file });
    expect(p).toHaveLength(2);
    expect(p[0]).toMatch(/^prot: unknown key/);
    expect(p[1]).toMatch(/^PUBGATE_MAX_SUBSCRIPTIONS \(maxSubscriptions in .*\): must be a whole number/);
  });

  it('reports an unreadable or non-object config file', () => {
    expect(problems({ PUBGATE_CONFIG: '/nonexistent/pubgate.json' })[0]).toMatch(/^PUBGATE_CONFIG: cannot read/);
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    writeFileSync(join(dir, 'a.json'), '[1]');
    expect(problems({ PUBGATE_CONFIG: join(dir, 'a.json') })[0]).toMatch(/must hold a JSON object/);
  });

  it('parses secrets with kids, origins, seeds and CIDRs', () => {
    const c = loadConfig({
      PUBGATE_JWT_SECRETS: 'k1:aaa, bbb ,k2:c:c',
      PUBGATE_ALLOWED_ORIGINS: 'https://App.example.com,https://*.example.com',
      PUBGATE_TRUSTED_PROXIES: '10.0.0.0/8,::1',
    });
    expect(c.jwtSecrets).toEqual([{ kid: 'k1', secret: 'aaa' }, { kid: undefined, secret: 'bbb' }, { kid: 'k2', secret: 'c:c' }]);
    expect(c.allowedOrigins).toEqual(['https://app.example.com', 'https://*.example.com']);
    expect(c.trustedProxies.map((x) => x.text)).toEqual(['10.0.0.0/8', '::1']);
    expect(loadConfig({ PUBGATE_REDIS_CLUSTER: 'a:7000,b:7001' }).redisCluster).toEqual(['a:7000', 'b:7001']);
  });

  it('accepts history channels with a Redis Cluster', () => {
    const c = loadConfig({ PUBGATE_REDIS_CLUSTER: 'a:7000', PUBGATE_HISTORY_CHANNELS: 'h:*' });
    expect(c.redisCluster).toEqual(['a:7000']);
    expect(c.historyChannels).toEqual(['h:*']);
  });

  it('rejects malformed lists and combinations', () => {
    expect(problems({ PUBGATE_JWT_SECRETS: 'k1:a,k1:b' })[0]).toMatch(/^PUBGATE_JWT_SECRETS: kid "k1" is given twice/);
    expect(problems({ PUBGATE_ALLOWED_ORIGINS: 'app.example.com' })[0]).toMatch(/^PUBGATE_ALLOWED_ORIGINS:/);
    expect(problems({ PUBGATE_TRUSTED_PROXIES: '10.0.0.0/33' })[0]).toMatch(/^PUBGATE_TRUSTED_PROXIES:/);
    expect(problems({ PUBGATE_REDIS_URL: 'http://x' })[0]).toMatch(/^PUBGATE_REDIS_URL:/);
    expect(problems({ PUBGATE_TLS_CERT: '/a.pem' })[0]).toMatch(/^PUBGATE_TLS_CERT: .* set together/);
    expect(problems({ PUBGATE_JWT_ALGORITHMS: 'RS256' })[0]).toMatch(/^PUBGATE_JWT_PUBLIC_KEYS:/);
    expect(problems({ PUBGATE_PORT: '9091' })[0]).toMatch(/^PUBGATE_ADMIN_PORT: must differ/);
    expect(problems({ PUBGATE_REDIS_URL: 'redis://a:1', PUBGATE_REDIS_CLUSTER: 'b:2' })[0]).toMatch(/^PUBGATE_REDIS_CLUSTER:/);
  });

  it('refuses the development secret and API key when NODE_ENV=production', () => {
    const dev = JSON.parse(readFileSync(new URL('../../config/development.json', import.meta.url), 'utf8')) as Record<string, string>;
    const env = { PUBGATE_JWT_SECRETS: dev.jwtSecrets!, PUBGATE_API_KEYS: dev.apiKeys! };
    expect(problems(env)).toEqual([]);
    const p = problems({ ...env, NODE_ENV: 'production' });
    expect(p).toHaveLength(2);
    expect(p[0]).toMatch(/^PUBGATE_JWT_SECRETS: the development secret/);
    expect(p[1]).toMatch(/^PUBGATE_API_KEYS: the development API key/);
  });
});
