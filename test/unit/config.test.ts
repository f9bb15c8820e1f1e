import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SETTINGS, envName, loadConfig, type Config } from '../../src/config.js';
import { configProblems } from '../helpers/config-problems.js';

const EXAMPLE = new URL('../../config/example.env', import.meta.url);

const problems = configProblems;

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
      namespaces: [], presenceTtl: 30, presenceMaxMembers: 1000,
      subscribeProxyUrl: undefined, connectProxyUrl: undefined, proxyKey: undefined, proxyTimeoutMs: 3000, proxyConcurrency: 256,
      idempotencyTtl: 300,
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

  it('reads the Redis Sentinel settings, from the environment or the file', () => {
    const c = loadConfig({
      PUBGATE_REDIS_SENTINELS: 's1:26379, s2:26380,10.0.0.3:26381',
      PUBGATE_REDIS_SENTINEL_NAME: 'mymaster',
      PUBGATE_REDIS_SENTINEL_PASSWORD: 'sentinel-pw',
      PUBGATE_REDIS_PASSWORD: 'data-pw',
      PUBGATE_HISTORY_CHANNELS: 'h:*',
    });
    expect(c).toMatchObject({
      redisSentinels: ['s1:26379', 's2:26380', '10.0.0.3:26381'],
      redisSentinelName: 'mymaster',
      redisSentinelPassword: 'sentinel-pw',
      redisPassword: 'data-pw',
      redisUrl: undefined,
      redisCluster: [],
    });
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ redisSentinels: ['a:1', 'b:2'], redisSentinelName: 'm' }));
    expect(loadConfig({ PUBGATE_CONFIG: file })).toMatchObject({ redisSentinels: ['a:1', 'b:2'], redisSentinelName: 'm', redisPassword: undefined });
    // The data password also goes with a URL that carries none.
    expect(loadConfig({ PUBGATE_REDIS_URL: 'redis://r:6379', PUBGATE_REDIS_PASSWORD: 'pw' }).redisPassword).toBe('pw');
    expect(loadConfig({}).redisSentinels).toEqual([]);
  });

  it('refuses contradictory Redis settings with one line each, never quoting a password', () => {
    const S = { PUBGATE_REDIS_SENTINELS: 's1:26379', PUBGATE_REDIS_SENTINEL_NAME: 'm' };
    const secret = 'very-secret-password-123';
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ ...S, PUBGATE_REDIS_CLUSTER: 'c:7000' }, /^PUBGATE_REDIS_SENTINELS: set either PUBGATE_REDIS_SENTINELS or PUBGATE_REDIS_CLUSTER, not both$/],
      [{ ...S, PUBGATE_REDIS_URL: `redis://:${secret}@r:6379` }, /^PUBGATE_REDIS_SENTINELS: set either PUBGATE_REDIS_SENTINELS or PUBGATE_REDIS_URL, not both/],
      [{ PUBGATE_REDIS_SENTINELS: 's1:26379' }, /^PUBGATE_REDIS_SENTINEL_NAME: PUBGATE_REDIS_SENTINELS needs the master group name/],
      [{ PUBGATE_REDIS_SENTINEL_NAME: 'm' }, /^PUBGATE_REDIS_SENTINEL_NAME: set only together with PUBGATE_REDIS_SENTINELS$/],
      [{ PUBGATE_REDIS_URL: 'redis://r:6379', PUBGATE_REDIS_SENTINEL_PASSWORD: secret }, /^PUBGATE_REDIS_SENTINEL_PASSWORD: set only together with PUBGATE_REDIS_SENTINELS$/],
      [{ PUBGATE_REDIS_CLUSTER: 'c:7000', PUBGATE_REDIS_PASSWORD: secret }, /^PUBGATE_REDIS_PASSWORD: not supported with PUBGATE_REDIS_CLUSTER$/],
      [{ PUBGATE_REDIS_URL: `redis://:${secret}@r:6379`, PUBGATE_REDIS_PASSWORD: secret }, /^PUBGATE_REDIS_PASSWORD: PUBGATE_REDIS_URL carries a password already/],
      [{ PUBGATE_REDIS_PASSWORD: secret }, /^PUBGATE_REDIS_PASSWORD: set only together with PUBGATE_REDIS_URL or PUBGATE_REDIS_SENTINELS$/],
      [{ ...S, PUBGATE_REDIS_SENTINELS: 's1' }, /^PUBGATE_REDIS_SENTINELS: seed "s1" is not host:port$/],
      [{ ...S, PUBGATE_REDIS_SENTINEL_NAME: 'my master' }, /^PUBGATE_REDIS_SENTINEL_NAME: must be 1-256 printable characters/],
    ];
    for (const [env, re] of cases) {
      const p = problems(env);
      expect(p, JSON.stringify(env)).toHaveLength(1);
      expect(p[0], JSON.stringify(env)).toMatch(re);
      expect(p[0]).not.toContain(secret);
    }
    // Everything at once: every problem reported together.
    expect(problems({ ...S, PUBGATE_REDIS_CLUSTER: 'c:7000', PUBGATE_REDIS_PASSWORD: secret, PUBGATE_REDIS_URL: 'redis://r:1' }).length).toBeGreaterThanOrEqual(3);
  });

  it('refuses the development secret, API key and admin token when NODE_ENV=production', () => {
    const dev = JSON.parse(readFileSync(new URL('../../config/development.json', import.meta.url), 'utf8')) as Record<string, string>;
    const env = { PUBGATE_JWT_SECRETS: dev.jwtSecrets!, PUBGATE_API_KEYS: dev.apiKeys!, PUBGATE_ADMIN_TOKEN: dev.adminToken! };
    expect(problems(env)).toEqual([]);
    const p = problems({ ...env, NODE_ENV: 'production' });
    expect(p).toHaveLength(3);
    expect(p[0]).toMatch(/^PUBGATE_JWT_SECRETS: the development secret/);
    expect(p[1]).toMatch(/^PUBGATE_API_KEYS: the development API key/);
    expect(p[2]).toBe('PUBGATE_ADMIN_TOKEN: the development admin token from config/development.json is refused when NODE_ENV=production');
  });
});

describe('loadConfig: the admin console (issue 19)', () => {
  const TOKEN = 'admin-token-0123456789abcdefXYZ';

  it('has the console on without a token by default, and reads both from the environment or the file', () => {
    const d = loadConfig({});
    expect(d.adminConsole).toBe(true);
    expect(d.adminToken).toBeUndefined();
    const c = loadConfig({ PUBGATE_ADMIN_CONSOLE: 'false', PUBGATE_ADMIN_TOKEN: TOKEN });
    expect(c.adminConsole).toBe(false);
    expect(c.adminToken).toBe(TOKEN);
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ adminConsole: false, adminToken: TOKEN }));
    expect(loadConfig({ PUBGATE_CONFIG: file })).toMatchObject({ adminConsole: false, adminToken: TOKEN });
    expect(loadConfig({ PUBGATE_CONFIG: file, PUBGATE_ADMIN_CONSOLE: 'true' }).adminConsole).toBe(true);
    // An empty value is unset.
    expect(loadConfig({ PUBGATE_ADMIN_TOKEN: '' }).adminToken).toBeUndefined();
  });

  it('refuses a token shorter than 24 characters, one line, without quoting it', () => {
    const short = 'short-admin-token-23chrs';
    expect(short.slice(1)).toHaveLength(23);
    const p = problems({ PUBGATE_ADMIN_TOKEN: short.slice(1) });
    expect(p).toEqual(['PUBGATE_ADMIN_TOKEN: must be at least 24 characters (got 23)']);
    expect(p[0]).not.toContain(short.slice(1));
    expect(problems({ PUBGATE_ADMIN_TOKEN: short })).toEqual([]);
    for (const bad of [`${short} x`, `${short}é`, `${short}\t`]) {
      expect(problems({ PUBGATE_ADMIN_TOKEN: bad })).toEqual(['PUBGATE_ADMIN_TOKEN: must be printable ASCII without spaces (it is sent as a bearer token)']);
    }
    expect(problems({ PUBGATE_ADMIN_CONSOLE: 'maybe' })[0]).toMatch(/^PUBGATE_ADMIN_CONSOLE: must be true or false/);
  });

  it('refuses the console without a token when NODE_ENV=production, unless it is off', () => {
    expect(problems({ NODE_ENV: 'production' })).toEqual([
      'PUBGATE_ADMIN_TOKEN: the admin console without a token is refused when NODE_ENV=production; set it or PUBGATE_ADMIN_CONSOLE=false',
    ]);
    expect(problems({ NODE_ENV: 'production', PUBGATE_ADMIN_CONSOLE: 'false' })).toEqual([]);
    expect(problems({ NODE_ENV: 'production', PUBGATE_ADMIN_TOKEN: TOKEN })).toEqual([]);
    // Outside production: accepted (the node warns at start and answers /admin/* 404).
    expect(problems({})).toEqual([]);
    expect(problems({ NODE_ENV: 'development' })).toEqual([]);
  });
});

describe('loadConfig: namespaces and presence (1.1)', () => {
  const configFile = (content: unknown): string => {
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify(content));
    return file;
  };

  it('reads PUBGATE_NAMESPACES as JSON text', () => {
    const c = loadConfig({
      PUBGATE_NAMESPACES: '[{"pattern":"chat:*","history":{"size":200,"ttl":3600},"presence":true,"joinLeave":true},{"pattern":"room:*","clientPublish":true}]',
    });
    expect(c.namespaces).toEqual([
      { pattern: 'chat:*', history: { size: 200, ttl: 3600 }, presence: true, joinLeave: true },
      { pattern: 'room:*', clientPublish: true },
    ]);
  });

  it('takes an empty PUBGATE_NAMESPACES as no namespaces', () => {
    expect(loadConfig({ PUBGATE_NAMESPACES: '' }).namespaces).toEqual([]);
  });

  it('reads namespaces from the file as an array, overridden by the environment', () => {
    const file = configFile({ namespaces: [{ pattern: 'feed:*', history: { size: 50 } }, { pattern: 'lobby', presence: true }] });
    expect(loadConfig({ PUBGATE_CONFIG: file }).namespaces).toEqual([
      { pattern: 'feed:*', history: { size: 50 } },
      { pattern: 'lobby', presence: true },
    ]);
    expect(loadConfig({ PUBGATE_CONFIG: file, PUBGATE_NAMESPACES: '[{"pattern":"x"}]' }).namespaces).toEqual([{ pattern: 'x' }]);
    expect(loadConfig({ PUBGATE_CONFIG: file, PUBGATE_NAMESPACES: '' }).namespaces).toEqual([]);
  });

  it('keeps historyChannels beside namespaces', () => {
    const c = loadConfig({ PUBGATE_NAMESPACES: '[{"pattern":"chat:*","presence":true}]', PUBGATE_HISTORY_CHANNELS: 'h:*' });
    expect(c.namespaces).toEqual([{ pattern: 'chat:*', presence: true }]);
    expect(c.historyChannels).toEqual(['h:*']);
  });

  it('reports each namespace problem on its own line, prefixed with the variable and naming the entry', () => {
    const p = problems({
      PUBGATE_NAMESPACES: JSON.stringify([
        { pattern: 'chat:*', joinLeave: true },
        { pattern: 'feed:*', history: true },
        { pattern: 'room:*', subscribeProxy: true, colour: 'red' },
      ]),
      PUBGATE_PORT: 'eighty',
    });
    const ns = p.filter((l) => l.startsWith('PUBGATE_NAMESPACES: '));
    expect(ns).toEqual([
      'PUBGATE_NAMESPACES: entry 1 ("chat:*"): "joinLeave" needs "presence": true',
      'PUBGATE_NAMESPACES: entry 2 ("feed:*"): "history" must be an object {"size": messages, "ttl": seconds} (each optional)',
      'PUBGATE_NAMESPACES: entry 3 ("room:*"): unknown key "colour" (known: pattern, history, rewind, presence, joinLeave, subscribeProxy, clientPublish)',
    ]);
    // The other settings' problems come in the same report.
    expect(p).toHaveLength(4);
    expect(p.some((l) => l.startsWith('PUBGATE_PORT:'))).toBe(true);
  });

  it('reports PUBGATE_NAMESPACES that is not JSON, or not an array, in one line', () => {
    const bad = problems({ PUBGATE_NAMESPACES: '[{pattern: "chat:*"}]' });
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatch(/^PUBGATE_NAMESPACES: is not valid JSON: /);
    expect(problems({ PUBGATE_NAMESPACES: '{"pattern":"chat:*"}' })).toEqual([
      'PUBGATE_NAMESPACES: must be a JSON array of namespaces ({"pattern": ..., options})',
    ]);
  });

  it('reports namespace problems in the file naming the variable, the key and the file', () => {
    const file = configFile({ namespaces: [{ pattern: 'a b' }, { pattern: 'ok' }, { pattern: 'ok' }] });
    const p = problems({ PUBGATE_CONFIG: file });
    expect(p).toEqual([
      `PUBGATE_NAMESPACES (namespaces in ${file}): entry 1 ("a b"): "pattern" "a b" is not a channel pattern (a channel name, or a prefix ending in *)`,
      `PUBGATE_NAMESPACES (namespaces in ${file}): entry 3 ("ok"): "pattern" repeats entry 2, which always matches first`,
    ]);
    expect(problems({ PUBGATE_CONFIG: configFile({ namespaces: { pattern: 'a' } }) })[0]).toMatch(/^PUBGATE_NAMESPACES \(namespaces in .*\): must be a JSON array/);
  });

  it('reads PUBGATE_PRESENCE_TTL between 1 and 86400 seconds', () => {
    expect(loadConfig({ PUBGATE_PRESENCE_TTL: '1' }).presenceTtl).toBe(1);
    expect(loadConfig({ PUBGATE_PRESENCE_TTL: '86400' }).presenceTtl).toBe(86400);
    expect(loadConfig({ PUBGATE_CONFIG: configFile({ presenceTtl: 10 }) }).presenceTtl).toBe(10);
    expect(problems({ PUBGATE_PRESENCE_TTL: '0' })).toEqual(['PUBGATE_PRESENCE_TTL: must be between 1 and 86400, got 0']);
    expect(problems({ PUBGATE_PRESENCE_TTL: '86401' })).toEqual(['PUBGATE_PRESENCE_TTL: must be between 1 and 86400, got 86401']);
    expect(problems({ PUBGATE_PRESENCE_TTL: '1.5' })[0]).toMatch(/^PUBGATE_PRESENCE_TTL: must be a whole number/);
    expect(problems({ PUBGATE_PRESENCE_TTL: 'soon' })[0]).toMatch(/^PUBGATE_PRESENCE_TTL: must be a whole number/);
  });

  it('reads PUBGATE_IDEMPOTENCY_TTL between 1 and 86400 seconds', () => {
    expect(loadConfig({ PUBGATE_IDEMPOTENCY_TTL: '1' }).idempotencyTtl).toBe(1);
    expect(loadConfig({ PUBGATE_IDEMPOTENCY_TTL: '86400' }).idempotencyTtl).toBe(86400);
    expect(loadConfig({ PUBGATE_CONFIG: configFile({ idempotencyTtl: 60 }) }).idempotencyTtl).toBe(60);
    expect(problems({ PUBGATE_IDEMPOTENCY_TTL: '0' })).toEqual(['PUBGATE_IDEMPOTENCY_TTL: must be between 1 and 86400, got 0']);
    expect(problems({ PUBGATE_IDEMPOTENCY_TTL: '86401' })).toEqual(['PUBGATE_IDEMPOTENCY_TTL: must be between 1 and 86400, got 86401']);
    expect(problems({ PUBGATE_IDEMPOTENCY_TTL: 'soon' })[0]).toMatch(/^PUBGATE_IDEMPOTENCY_TTL: must be a whole number/);
  });

  it('reads PUBGATE_PRESENCE_MAX_MEMBERS between 1 and 100000', () => {
    expect(loadConfig({ PUBGATE_PRESENCE_MAX_MEMBERS: '1' }).presenceMaxMembers).toBe(1);
    expect(loadConfig({ PUBGATE_PRESENCE_MAX_MEMBERS: '100000' }).presenceMaxMembers).toBe(100000);
    expect(loadConfig({ PUBGATE_CONFIG: configFile({ presenceMaxMembers: 5 }) }).presenceMaxMembers).toBe(5);
    expect(problems({ PUBGATE_PRESENCE_MAX_MEMBERS: '0' })).toEqual(['PUBGATE_PRESENCE_MAX_MEMBERS: must be between 1 and 100000, got 0']);
    expect(problems({ PUBGATE_PRESENCE_MAX_MEMBERS: '100001' })).toEqual(['PUBGATE_PRESENCE_MAX_MEMBERS: must be between 1 and 100000, got 100001']);
    expect(problems({ PUBGATE_PRESENCE_MAX_MEMBERS: 'all' })[0]).toMatch(/^PUBGATE_PRESENCE_MAX_MEMBERS: must be a whole number/);
  });
});

describe('loadConfig: the proxies (1.1)', () => {
  const configFile = (content: unknown): string => {
    const dir = mkdtempSync(join(tmpdir(), 'pubgate-config-'));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify(content));
    return file;
  };

  it('reads the proxy URLs, key, timeout and concurrency, from the environment or the file', () => {
    const c = loadConfig({
      PUBGATE_SUBSCRIBE_PROXY_URL: 'http://127.0.0.1:3000/pubgate/subscribe',
      PUBGATE_CONNECT_PROXY_URL: 'https://backend.example.com/pubgate/connect',
      PUBGATE_PROXY_KEY: 'k-123',
      PUBGATE_PROXY_TIMEOUT_MS: '250',
      PUBGATE_PROXY_CONCURRENCY: '8',
    });
    expect(c).toMatchObject({
      subscribeProxyUrl: 'http://127.0.0.1:3000/pubgate/subscribe',
      connectProxyUrl: 'https://backend.example.com/pubgate/connect',
      proxyKey: 'k-123',
      proxyTimeoutMs: 250,
      proxyConcurrency: 8,
    });
    const f = loadConfig({ PUBGATE_CONFIG: configFile({ connectProxyUrl: 'http://a/b', proxyTimeoutMs: 60000, proxyConcurrency: 1 }) });
    expect(f).toMatchObject({ connectProxyUrl: 'http://a/b', proxyTimeoutMs: 60000, proxyConcurrency: 1 });
  });

  it('refuses proxy URLs that are not http(s), or carry credentials, and out-of-range numbers, naming each variable', () => {
    expect(problems({
      PUBGATE_SUBSCRIBE_PROXY_URL: 'redis://127.0.0.1',
      PUBGATE_CONNECT_PROXY_URL: 'http://user:pw@127.0.0.1/connect',
      PUBGATE_PROXY_TIMEOUT_MS: '0',
      PUBGATE_PROXY_CONCURRENCY: '100001',
    })).toEqual([
      'PUBGATE_SUBSCRIBE_PROXY_URL: must be a http: or https: URL',
      'PUBGATE_CONNECT_PROXY_URL: must not carry a user or password (the node sends PUBGATE_PROXY_KEY as a bearer key)',
      'PUBGATE_PROXY_TIMEOUT_MS: must be between 1 and 60000, got 0',
      'PUBGATE_PROXY_CONCURRENCY: must be between 1 and 100000, got 100001',
    ]);
    expect(problems({ PUBGATE_CONNECT_PROXY_URL: 'not a url' })).toEqual(['PUBGATE_CONNECT_PROXY_URL: must be a URL']);
    // The key is never quoted.
    expect(problems({ PUBGATE_CONNECT_PROXY_URL: 'http://u:secret-pw@h/' }).join('\n')).not.toContain('secret-pw');
  });

  it('refuses a namespace with subscribeProxy when PUBGATE_SUBSCRIBE_PROXY_URL is unset, naming both', () => {
    const ns = JSON.stringify([{ pattern: 'chat:*', presence: true }, { pattern: 'room:*', subscribeProxy: true }]);
    expect(problems({ PUBGATE_NAMESPACES: ns })).toEqual([
      'PUBGATE_NAMESPACES: entry 2 ("room:*") sets "subscribeProxy" but PUBGATE_SUBSCRIBE_PROXY_URL is unset',
    ]);
    expect(loadConfig({ PUBGATE_NAMESPACES: ns, PUBGATE_SUBSCRIBE_PROXY_URL: 'http://127.0.0.1:1/s' }).namespaces[1]).toEqual({ pattern: 'room:*', subscribeProxy: true });
  });
});

describe('loadConfig: webhooks (1.1)', () => {
  const SECRET = `whsec_${Buffer.from('0123456789abcdef0123456789abcdef').toString('base64')}`;

  it('reads the webhook URL, secret, retry window and queue bound, with the contract defaults', () => {
    expect(loadConfig({})).toMatchObject({ webhookUrl: undefined, webhookSecret: undefined, webhookRetrySeconds: 3600, webhookMaxQueue: 100_000 });
    const c = loadConfig({
      PUBGATE_WEBHOOK_URL: 'https://hooks.example.com/pubgate',
      PUBGATE_WEBHOOK_SECRET: SECRET,
      PUBGATE_WEBHOOK_RETRY_SECONDS: '60',
      PUBGATE_WEBHOOK_MAX_QUEUE: '10',
    });
    expect(c).toMatchObject({ webhookUrl: 'https://hooks.example.com/pubgate', webhookSecret: SECRET, webhookRetrySeconds: 60, webhookMaxQueue: 10 });
    expect(loadConfig({ PUBGATE_WEBHOOK_URL: 'http://127.0.0.1:9/h', PUBGATE_WEBHOOK_SECRET: 'a raw secret of 24 bytes' }).webhookSecret).toBe('a raw secret of 24 bytes');
  });

  it('refuses a URL without a secret and a secret without a URL, one line naming the missing variable', () => {
    expect(problems({ PUBGATE_WEBHOOK_URL: 'http://127.0.0.1:9/h' })).toEqual([
      'PUBGATE_WEBHOOK_SECRET: PUBGATE_WEBHOOK_URL is set; webhooks need the signing secret too',
    ]);
    const p = problems({ PUBGATE_WEBHOOK_SECRET: SECRET });
    expect(p).toEqual(['PUBGATE_WEBHOOK_URL: PUBGATE_WEBHOOK_SECRET is set; webhooks need the receiver URL too']);
    expect(p.join('\n')).not.toContain(SECRET.slice(6));
  });

  it('refuses PUBGATE_PUSHER_WEBHOOK_URL without PUBGATE_PUSHER_APPS or with credentials, and takes it alone with apps', () => {
    expect(problems({ PUBGATE_PUSHER_WEBHOOK_URL: 'http://127.0.0.1:9/p' })).toEqual([
      "PUBGATE_PUSHER_WEBHOOK_URL: Pusher-format webhooks need PUBGATE_PUSHER_APPS (they are signed with the apps' secrets)",
    ]);
    const apps = { PUBGATE_PUSHER_APPS: '1:k:s' };
    expect(problems({ ...apps, PUBGATE_PUSHER_WEBHOOK_URL: 'http://u:pw@127.0.0.1:9/p' })[0]).toMatch(/^PUBGATE_PUSHER_WEBHOOK_URL: must not carry a user or password/);
    expect(loadConfig({ ...apps, PUBGATE_PUSHER_WEBHOOK_URL: 'http://127.0.0.1:9/p' })).toMatchObject({ pusherWebhookUrl: 'http://127.0.0.1:9/p', webhookUrl: undefined });
  });

  it('refuses a short or malformed secret without quoting it', () => {
    const url = 'http://127.0.0.1:9/h';
    for (const secret of ['short-but-secret', 'whsec_c2hvcnQtYnV0LXNlY3JldA==', 'whsec_not base64 at all, secret!!']) {
      const p = problems({ PUBGATE_WEBHOOK_URL: url, PUBGATE_WEBHOOK_SECRET: secret });
      expect(p).toHaveLength(1);
      expect(p[0]).toMatch(/^PUBGATE_WEBHOOK_SECRET: /);
      expect(p[0]).not.toContain(secret.replace(/^whsec_/, '').slice(0, 10));
    }
  });

  it('refuses a URL that is not http(s) or carries credentials, and out-of-range numbers', () => {
    expect(problems({
      PUBGATE_WEBHOOK_URL: 'ftp://127.0.0.1/h',
      PUBGATE_WEBHOOK_SECRET: SECRET,
      PUBGATE_WEBHOOK_RETRY_SECONDS: '0',
      PUBGATE_WEBHOOK_MAX_QUEUE: 'many',
    })).toEqual([
      'PUBGATE_WEBHOOK_URL: must be a http: or https: URL',
      'PUBGATE_WEBHOOK_RETRY_SECONDS: must be between 1 and 2592000, got 0',
      'PUBGATE_WEBHOOK_MAX_QUEUE: must be a whole number, got "many"',
    ]);
    expect(problems({ PUBGATE_WEBHOOK_URL: 'http://u:pw-secret@127.0.0.1/h', PUBGATE_WEBHOOK_SECRET: SECRET })).toEqual([
      'PUBGATE_WEBHOOK_URL: must not carry a user or password (requests are signed with PUBGATE_WEBHOOK_SECRET)',
    ]);
  });
});
