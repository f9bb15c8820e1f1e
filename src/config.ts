/**
 * Configuration: defaults, an optional JSON file (named by PUBGATE_CONFIG),
 * environment overrides. Every problem is collected and reported at once.
 *
 * Each setting has one environment variable `PUBGATE_<NAME>` and one JSON key,
 * the camelCase of `<NAME>` (`PUBGATE_JWT_CLOCK_TOLERANCE` ↔ `jwtClockTolerance`).
 * config/example.env lists every variable; a test keeps the two in sync.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { NamespaceProblems, parseNamespaces, type Namespace } from './channels/namespaces.js';
import { parseCidr, type Cidr } from './net/cidr.js';
import { parsePusherApps, PusherAppsError, type PusherApp } from './pusher/apps.js';
import { parseWebhookSecret } from './webhooks/signing.js';

export const JWT_ALGORITHMS = [
  'HS256', 'HS384', 'HS512',
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
  'EdDSA',
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface HmacSecret {
  /** `kid` this secret is selected by, or undefined for a secret without one. */
  readonly kid: string | undefined;
  readonly secret: string;
}

export interface Config {
  readonly port: number;
  readonly adminPort: number;
  readonly host: string;
  readonly tlsCert: string | undefined;
  readonly tlsKey: string | undefined;
  readonly compression: 'off' | 'shared';
  /** With compression: frames shorter than this (characters) are sent uncompressed. */
  readonly compressionThreshold: number;
  readonly nodeId: string;
  readonly redisUrl: string | undefined;
  readonly redisCluster: readonly string[];
  /** Redis Sentinel `host:port` list; with redisSentinelName, selects the Sentinel-managed master. */
  readonly redisSentinels: readonly string[];
  readonly redisSentinelName: string | undefined;
  /** Password of the Sentinels themselves (their requirepass). */
  readonly redisSentinelPassword: string | undefined;
  /** Password of the Redis data nodes (Sentinel mode, or a PUBGATE_REDIS_URL without one). */
  readonly redisPassword: string | undefined;
  readonly jwtAlgorithms: readonly JwtAlgorithm[];
  readonly jwtSecrets: readonly HmacSecret[];
  readonly jwtPublicKeys: string | undefined;
  readonly jwtJwksUrl: string | undefined;
  readonly jwtIssuer: string | undefined;
  readonly jwtAudience: string | undefined;
  readonly jwtClockTolerance: number;
  readonly apiKeys: readonly string[];
  readonly allowedOrigins: readonly string[];
  readonly requireOrigin: boolean;
  readonly allowAnonymous: boolean;
  readonly anonymousChannels: readonly string[];
  readonly maxConnections: number;
  readonly maxSubscriptions: number;
  readonly ipHandshakeRate: number;
  readonly clientFrameRate: number;
  readonly apiRate: number;
  readonly trustedProxies: readonly Cidr[];
  readonly maxPayloadLength: number;
  readonly maxPublishBytes: number;
  /** Publish API: the whole request body must arrive within this many ms of the request head, or 408. */
  readonly httpBodyTimeoutMs: number;
  readonly maxBackpressure: number;
  readonly slowConsumerPolicy: 'close' | 'drop';
  readonly pingInterval: number;
  readonly historyChannels: readonly string[];
  readonly historySize: number;
  readonly historyTtl: number;
  readonly drainSeconds: number;
  readonly logLevel: LogLevel;
  /** Options per channel pattern (contract 1.1); historyChannels act as namespaces after these. */
  readonly namespaces: readonly Namespace[];
  /** Seconds until the presence entries of a dead node's connections are gone. */
  readonly presenceTtl: number;
  /** PUBGATE_IDEMPOTENCY_TTL: seconds a publish's idempotency key is remembered. */
  readonly idempotencyTtl: number;
  /** Members listed in one presence answer, at most. */
  readonly presenceMaxMembers: number;
  /** Subscribe proxy endpoint (http/https), asked for channels whose namespace has subscribeProxy. */
  readonly subscribeProxyUrl: string | undefined;
  /** Connect proxy endpoint (http/https): token-less upgrades are accepted or refused by it. */
  readonly connectProxyUrl: string | undefined;
  /** Bearer key the node sends to both proxies (`Authorization: Bearer <key>`). */
  readonly proxyKey: string | undefined;
  /** Per proxy call, from the request to the whole answer read. */
  readonly proxyTimeoutMs: number;
  /** Proxy calls in flight at most on this node (both proxies together); beyond it `unavailable` at once. */
  readonly proxyConcurrency: number;
  /** Webhook receiver (http/https); with webhookSecret, enables webhooks (contract 1.1, "Webhooks"). */
  readonly webhookUrl: string | undefined;
  /**
   * The signing secret as given (`whsec_` base64 or raw text), checked at load
   * (key of at least 24 bytes); webhooks/signing.ts parseWebhookSecret makes the key.
   */
  readonly webhookSecret: string | undefined;
  /** Seconds a failing delivery is retried (from its first failed attempt) before its events are given up. */
  readonly webhookRetrySeconds: number;
  /** Events queued at most, cluster-wide; past it the oldest are dropped and counted. */
  readonly webhookMaxQueue: number;
  /**
   * PUBGATE_PUSHER_APPS: the Pusher apps (contract 1.1, "Pusher Channels compatibility"); the first is
   * the default app. Refused at start while issue 18 is in progress (see checkCombinations).
   */
  readonly pusherApps: readonly PusherApp[];
  /**
   * PUBGATE_PUSHER_WEBHOOK_URL: the receiver of Pusher-format webhooks (pusher/webhooks.ts), signed with
   * each app's secret; needs PUBGATE_PUSHER_APPS. Works with or without PUBGATE_WEBHOOK_URL.
   */
  readonly pusherWebhookUrl: string | undefined;
  /** Serve `GET /sse` (Server-Sent Events, contract 1.1); off: the route answers 404 not_found. */
  readonly sse: boolean;
  /** PUBGATE_ADMIN_CONSOLE: the admin console and `/admin/api/*` on the admin port (docs/admin.md). */
  readonly adminConsole: boolean;
  /**
   * PUBGATE_ADMIN_TOKEN: the bearer token of `/admin/api/*` (at least
   * ADMIN_TOKEN_MIN_LENGTH characters). Unset: the console is off (refused at
   * start with NODE_ENV=production while adminConsole is on). Never logged.
   */
  readonly adminToken: string | undefined;
}

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/**
 * Values shipped in config/development.json. A node started with
 * NODE_ENV=production refuses them, so the quick-start secrets never guard a
 * real deployment.
 */
export const DEVELOPMENT_SECRETS: readonly string[] = [
  'pubgate-development-secret-not-for-production-0123456789abcdefgh',
  'pubgate-development-secret-not-for-production', // the shorter one of earlier releases
  'pubgate-development-api-key',
  'pubgate-development-admin-token-not-for-production',
];

/** Shortest PUBGATE_ADMIN_TOKEN accepted. */
export const ADMIN_TOKEN_MIN_LENGTH = 24;

/** RFC 7518 §3.2: an HMAC key at least as long as the hash output. */
export const HMAC_MIN_SECRET_BYTES: Readonly<Record<'HS256' | 'HS384' | 'HS512', number>> = { HS256: 32, HS384: 48, HS512: 64 };

/**
 * One line per configured HMAC secret shorter than RFC 7518 §3.2 asks for the
 * allowed HMAC algorithms. A secret is not bound to one algorithm (any secret
 * verifies any allowed HS* token, selected by kid only), so each must be as
 * long as the hash of the strongest allowed one: 32 bytes (UTF-8) with HS256
 * alone, 64 once HS512 is allowed. Secrets are named by position and kid,
 * never by value. Refused with NODE_ENV=production, a warning otherwise.
 */
export function shortHmacSecrets(c: Pick<Config, 'jwtAlgorithms' | 'jwtSecrets'>): string[] {
  let alg: keyof typeof HMAC_MIN_SECRET_BYTES | undefined;
  for (const a of c.jwtAlgorithms) {
    if (a in HMAC_MIN_SECRET_BYTES && (alg === undefined || HMAC_MIN_SECRET_BYTES[a as typeof alg] > HMAC_MIN_SECRET_BYTES[alg])) {
      alg = a as typeof alg;
    }
  }
  if (alg === undefined) return []; // no HMAC algorithm allowed: the secrets are never used
  const min = HMAC_MIN_SECRET_BYTES[alg];
  return c.jwtSecrets.flatMap((sec, i) => {
    if (Buffer.byteLength(sec.secret, 'utf8') >= min) return [];
    const which = `secret ${i + 1} of ${c.jwtSecrets.length}${sec.kid !== undefined ? ` (kid ${JSON.stringify(sec.kid)})` : ' (no kid)'}`;
    return [`${which} is shorter than ${min} bytes, the minimum for ${alg} (RFC 7518 §3.2)`];
  });
}

type Raw = string | number | boolean | readonly unknown[] | undefined;
type Parser<T> = (raw: Exclude<Raw, undefined>) => T;

class Invalid extends Error {}

function listOf(raw: Exclude<Raw, undefined>): string[] {
  if (Array.isArray(raw)) {
    return raw.map((v) => {
      if (typeof v !== 'string') throw new Invalid('list entries must be strings');
      return v.trim();
    }).filter((v) => v !== '');
  }
  if (typeof raw !== 'string') throw new Invalid('must be a comma-separated string or an array of strings');
  return raw.split(',').map((v) => v.trim()).filter((v) => v !== '');
}

function str(raw: Exclude<Raw, undefined>): string {
  if (typeof raw !== 'string') throw new Invalid('must be a string');
  return raw;
}

function int(min: number, max: number): Parser<number> {
  return (raw) => {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isInteger(n)) throw new Invalid(`must be a whole number, got ${JSON.stringify(raw)}`);
    if (n < min || n > max) throw new Invalid(`must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

function num(min: number, max: number): Parser<number> {
  return (raw) => {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
    if (!Number.isFinite(n)) throw new Invalid(`must be a number, got ${JSON.stringify(raw)}`);
    if (n < min || n > max) throw new Invalid(`must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

function bool(raw: Exclude<Raw, undefined>): boolean {
  if (typeof raw === 'boolean') return raw;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new Invalid(`must be true or false, got ${JSON.stringify(raw)}`);
}

function oneOf<T extends string>(values: readonly T[]): Parser<T> {
  return (raw) => {
    if (typeof raw === 'string' && (values as readonly string[]).includes(raw)) return raw as T;
    throw new Invalid(`must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
  };
}

function optional<T>(p: Parser<T>): Parser<T | undefined> {
  return (raw) => (raw === '' ? undefined : p(raw));
}

function port(raw: Exclude<Raw, undefined>): number {
  return int(0, 65535)(raw);
}

function url(protocols: readonly string[]): Parser<string | undefined> {
  return (raw) => {
    const s = str(raw).trim();
    if (s === '') return undefined;
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      throw new Invalid('must be a URL');
    }
    if (!protocols.includes(u.protocol)) throw new Invalid(`must be a ${protocols.join(' or ')} URL`);
    return s;
  };
}

/** A proxy endpoint: http or https, without credentials in it (the key goes in PUBGATE_PROXY_KEY). */
function proxyUrl(raw: Exclude<Raw, undefined>): string | undefined {
  const v = url(['http:', 'https:'])(raw);
  if (v === undefined) return undefined;
  const u = new URL(v);
  // fetch refuses such URLs, and they would put a secret where logs and dashboards show URLs.
  if (u.username !== '' || u.password !== '') throw new Invalid('must not carry a user or password (the node sends PUBGATE_PROXY_KEY as a bearer key)');
  return v;
}

/** The webhook receiver: http or https, without credentials (requests are signed; a URL may be logged). */
function webhookUrl(raw: Exclude<Raw, undefined>): string | undefined {
  const v = url(['http:', 'https:'])(raw);
  if (v === undefined) return undefined;
  const u = new URL(v);
  if (u.username !== '' || u.password !== '') throw new Invalid('must not carry a user or password (requests are signed with PUBGATE_WEBHOOK_SECRET)');
  return v;
}

/** The Pusher webhook receiver: http or https, without credentials (requests are signed with the apps' secrets). */
function pusherWebhookUrl(raw: Exclude<Raw, undefined>): string | undefined {
  const v = url(['http:', 'https:'])(raw);
  if (v === undefined) return undefined;
  const u = new URL(v);
  if (u.username !== '' || u.password !== '') throw new Invalid('must not carry a user or password (requests are signed with the apps\' secrets)');
  return v;
}

/** The webhook secret, kept as given once its key is known to be usable. The message never quotes it (signing.ts). */
function webhookSecret(raw: Exclude<Raw, undefined>): string | undefined {
  const v = str(raw);
  if (v === '') return undefined;
  try {
    parseWebhookSecret(v);
  } catch (e) {
    throw new Invalid((e as Error).message);
  }
  return v;
}

function algorithms(raw: Exclude<Raw, undefined>): JwtAlgorithm[] {
  const list = listOf(raw);
  if (list.length === 0) throw new Invalid('must name at least one algorithm');
  for (const a of list) {
    if (!(JWT_ALGORITHMS as readonly string[]).includes(a)) {
      throw new Invalid(`unknown algorithm ${JSON.stringify(a)}; allowed: ${JWT_ALGORITHMS.join(', ')}`);
    }
  }
  return list as JwtAlgorithm[];
}

function secrets(raw: Exclude<Raw, undefined>): HmacSecret[] {
  const out: HmacSecret[] = [];
  const kids = new Set<string>();
  for (const entry of listOf(raw)) {
    const colon = entry.indexOf(':');
    const kid = colon > 0 ? entry.slice(0, colon) : undefined;
    const secret = colon > 0 ? entry.slice(colon + 1) : entry;
    if (secret === '') throw new Invalid(`secret for kid ${JSON.stringify(kid)} is empty`);
    if (kid !== undefined) {
      if (kids.has(kid)) throw new Invalid(`kid ${JSON.stringify(kid)} is given twice`);
      kids.add(kid);
    }
    out.push({ kid, secret });
  }
  return out;
}

function seeds(raw: Exclude<Raw, undefined>): string[] {
  const list = listOf(raw);
  for (const s of list) {
    if (!/^[^:\s]+:\d{1,5}$/.test(s)) throw new Invalid(`seed ${JSON.stringify(s)} is not host:port`);
  }
  return list;
}

function cidrs(raw: Exclude<Raw, undefined>): Cidr[] {
  return listOf(raw).map((s) => {
    const c = parseCidr(s);
    if (!c) throw new Invalid(`${JSON.stringify(s)} is not an IP address or CIDR`);
    return c;
  });
}

function origins(raw: Exclude<Raw, undefined>): string[] {
  return listOf(raw).map((o) => {
    if (o === '*') return o;
    const m = /^(https?):\/\/(\*\.)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$/.exec(o);
    if (!m) throw new Invalid(`${JSON.stringify(o)} is not an origin (scheme://host[:port], optionally https://*.domain)`);
    return o.toLowerCase();
  });
}

function channelPatterns(raw: Exclude<Raw, undefined>): string[] {
  const list = listOf(raw);
  for (const p of list) {
    if (!/^[A-Za-z0-9_:.@/=-]{0,200}\*?$/.test(p) || p === '') {
      throw new Invalid(`${JSON.stringify(p)} is not a channel pattern (a channel name, or a prefix ending in *)`);
    }
  }
  return list;
}

interface Setting {
  readonly key: keyof Config;
  readonly parse: Parser<unknown>;
  readonly def: unknown;
}

function s<K extends keyof Config>(key: K, parse: Parser<Config[K]>, def: Config[K]): Setting {
  return { key, parse, def };
}

/** Every setting, in the order of the contract's Configuration table. */
export const SETTINGS: readonly Setting[] = [
  s('port', port, 8080),
  s('adminPort', port, 9091),
  s('host', str, '0.0.0.0'),
  s('tlsCert', optional(str), undefined),
  s('tlsKey', optional(str), undefined),
  s('compression', oneOf(['off', 'shared'] as const), 'off'),
  s('compressionThreshold', int(0, 64 * 1024 * 1024), 256),
  s('nodeId', (raw) => {
    const v = str(raw);
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(v)) throw new Invalid('must be 1-64 characters of A-Z a-z 0-9 _ . -');
    return v;
  }, `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64)),
  s('redisUrl', url(['redis:', 'rediss:']), undefined),
  s('redisCluster', seeds, []),
  s('redisSentinels', seeds, []),
  s('redisSentinelName', optional((raw) => {
    const v = str(raw);
    if (!/^[!-~]{1,256}$/.test(v)) throw new Invalid('must be 1-256 printable characters without spaces');
    return v;
  }), undefined),
  s('redisSentinelPassword', optional(str), undefined),
  s('redisPassword', optional(str), undefined),
  s('jwtAlgorithms', algorithms, ['HS256']),
  s('jwtSecrets', secrets, []),
  s('jwtPublicKeys', optional(str), undefined),
  s('jwtJwksUrl', url(['http:', 'https:']), undefined),
  s('jwtIssuer', optional(str), undefined),
  s('jwtAudience', optional(str), undefined),
  s('jwtClockTolerance', int(0, 3600), 5),
  s('apiKeys', listOf, []),
  s('allowedOrigins', origins, []),
  s('requireOrigin', bool, false),
  s('allowAnonymous', bool, false),
  s('anonymousChannels', channelPatterns, []),
  s('maxConnections', int(1, 10_000_000), 100_000),
  s('maxSubscriptions', int(1, 100_000), 100),
  s('ipHandshakeRate', num(0, 1_000_000), 0),
  s('clientFrameRate', num(0, 1_000_000), 50),
  s('apiRate', num(0, 10_000_000), 0),
  s('trustedProxies', cidrs, []),
  s('maxPayloadLength', int(256, 16 * 1024 * 1024), 16_384),
  s('maxPublishBytes', int(256, 64 * 1024 * 1024), 65_536),
  s('httpBodyTimeoutMs', int(100, 600_000), 5000),
  s('maxBackpressure', int(1024, 1024 * 1024 * 1024), 1_048_576),
  s('slowConsumerPolicy', oneOf(['close', 'drop'] as const), 'close'),
  s('pingInterval', num(0.1, 3600), 25),
  s('historyChannels', channelPatterns, []),
  s('historySize', int(1, 1_000_000), 100),
  s('historyTtl', int(1, 30 * 24 * 3600), 300),
  s('drainSeconds', num(0, 3600), 10),
  s('logLevel', oneOf(LOG_LEVELS), 'info'),
  // Version 1.1 ("New settings (1.1)").
  s('namespaces', (raw) => {
    try {
      return parseNamespaces(raw);
    } catch (e) {
      if (e instanceof NamespaceProblems) throw new Invalid(e.problems.join('\n'));
      throw e;
    }
  }, []),
  s('presenceTtl', int(1, 86_400), 30),
  s('presenceMaxMembers', int(1, 100_000), 1000),
  s('subscribeProxyUrl', proxyUrl, undefined),
  s('connectProxyUrl', proxyUrl, undefined),
  s('proxyKey', optional(str), undefined),
  s('proxyTimeoutMs', int(1, 60_000), 3000),
  s('proxyConcurrency', int(1, 100_000), 256),
  s('idempotencyTtl', int(1, 86_400), 300),
  s('webhookUrl', webhookUrl, undefined),
  s('webhookSecret', webhookSecret, undefined),
  s('webhookRetrySeconds', int(1, 30 * 24 * 3600), 3600),
  s('webhookMaxQueue', int(1, 100_000_000), 100_000),
  s('pusherApps', (raw) => {
    try {
      return parsePusherApps(listOf(raw));
    } catch (e) {
      if (e instanceof PusherAppsError) throw new Invalid(e.problems.join('\n'));
      throw e;
    }
  }, []),
  s('pusherWebhookUrl', pusherWebhookUrl, undefined),
  s('sse', bool, true),
  // The admin console (issue 19, docs/admin.md).
  s('adminConsole', bool, true),
  s('adminToken', optional((raw) => {
    const v = str(raw);
    // The message never quotes the token.
    if (v.length < ADMIN_TOKEN_MIN_LENGTH) throw new Invalid(`must be at least ${ADMIN_TOKEN_MIN_LENGTH} characters (got ${v.length})`);
    // It travels as `Authorization: Bearer <token>`: one word of printable ASCII.
    if (!/^[\x21-\x7e]+$/.test(v)) throw new Invalid('must be printable ASCII without spaces (it is sent as a bearer token)');
    return v;
  }), undefined),
];

/** `jwtClockTolerance` → `PUBGATE_JWT_CLOCK_TOLERANCE`. */
export function envName(key: string): string {
  return 'PUBGATE_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

/**
 * Test-only switch, deliberately undocumented: the Pusher compatibility mode
 * (issue 18) is built in steps and stays unreachable for users until all of it
 * is done; tests set this to 1 to run the finished parts.
 */

/** Variables that are not settings but are understood. */
const META_VARIABLES = new Set(['PUBGATE_CONFIG']);

/**
 * Builds the configuration from the environment and, when PUBGATE_CONFIG names
 * one, a JSON file. Throws ConfigError listing every problem.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const problems: string[] = [];
  let file: Record<string, unknown> = {};
  const fileName = env.PUBGATE_CONFIG;
  if (fileName !== undefined && fileName !== '') {
    try {
      const parsed: unknown = JSON.parse(readFileSync(fileName, 'utf8'));
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        problems.push(`PUBGATE_CONFIG: ${fileName} must hold a JSON object`);
      } else {
        file = parsed as Record<string, unknown>;
      }
    } catch (e) {
      problems.push(`PUBGATE_CONFIG: cannot read ${fileName}: ${(e as Error).message}`);
    }
  }

  const known = new Map(SETTINGS.map((st) => [envName(st.key), st]));
  for (const name of Object.keys(env)) {
    if (name.startsWith('PUBGATE_') && !known.has(name) && !META_VARIABLES.has(name)) {
      problems.push(`${name}: unknown variable (see config/example.env for the list)`);
    }
  }
  const keys = new Set(SETTINGS.map((st) => st.key as string));
  for (const k of Object.keys(file)) {
    if (!keys.has(k)) problems.push(`${k}: unknown key in ${fileName}`);
  }

  const out: Record<string, unknown> = {};
  for (const st of SETTINGS) {
    const name = envName(st.key);
    const fromEnv = env[name];
    const raw: Raw = fromEnv !== undefined ? fromEnv : (file[st.key] as Raw);
    const where = fromEnv !== undefined ? name : `${name} (${st.key} in ${fileName})`;
    if (raw === undefined || raw === null) {
      out[st.key] = st.def;
      continue;
    }
    try {
      const v = st.parse(raw);
      out[st.key] = v === undefined ? st.def : v;
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      // One line per problem (a namespace list can have several).
      for (const line of e.message.split('\n')) problems.push(`${where}: ${line}`);
    }
  }

  if (problems.length === 0) checkCombinations(out as unknown as Config, env.NODE_ENV, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(out) as unknown as Config;
}

/** Sentinel and password settings against the other broker settings. Messages never quote a password. */
function checkRedisCombinations(c: Config, problems: string[]): void {
  const sentinel = c.redisSentinels.length > 0;
  if (sentinel && c.redisCluster.length > 0) {
    problems.push('PUBGATE_REDIS_SENTINELS: set either PUBGATE_REDIS_SENTINELS or PUBGATE_REDIS_CLUSTER, not both');
  }
  if (sentinel && c.redisUrl !== undefined) {
    problems.push('PUBGATE_REDIS_SENTINELS: set either PUBGATE_REDIS_SENTINELS or PUBGATE_REDIS_URL, not both (the Sentinels name the master; its password goes in PUBGATE_REDIS_PASSWORD)');
  }
  if (sentinel && c.redisSentinelName === undefined) {
    problems.push('PUBGATE_REDIS_SENTINEL_NAME: PUBGATE_REDIS_SENTINELS needs the master group name the Sentinels monitor');
  }
  if (!sentinel && c.redisSentinelName !== undefined) {
    problems.push('PUBGATE_REDIS_SENTINEL_NAME: set only together with PUBGATE_REDIS_SENTINELS');
  }
  if (!sentinel && c.redisSentinelPassword !== undefined) {
    problems.push('PUBGATE_REDIS_SENTINEL_PASSWORD: set only together with PUBGATE_REDIS_SENTINELS');
  }
  if (c.redisPassword !== undefined) {
    if (c.redisCluster.length > 0) {
      problems.push('PUBGATE_REDIS_PASSWORD: not supported with PUBGATE_REDIS_CLUSTER');
    } else if (c.redisUrl !== undefined) {
      let inUrl = false;
      try {
        inUrl = new URL(c.redisUrl).password !== '';
      } catch {
        // validated when parsed
      }
      if (inUrl) problems.push('PUBGATE_REDIS_PASSWORD: PUBGATE_REDIS_URL carries a password already; set it in one place');
    } else if (!sentinel) {
      problems.push('PUBGATE_REDIS_PASSWORD: set only together with PUBGATE_REDIS_URL or PUBGATE_REDIS_SENTINELS');
    }
  }
}

function checkCombinations(c: Config, nodeEnv: string | undefined, problems: string[]): void {
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
    problems.push('PUBGATE_TLS_CERT: PUBGATE_TLS_CERT and PUBGATE_TLS_KEY must be set together');
  }
  for (const [name, file] of [['PUBGATE_TLS_CERT', c.tlsCert], ['PUBGATE_TLS_KEY', c.tlsKey]] as const) {
    if (file === undefined) continue;
    try {
      accessSync(file, constants.R_OK);
    } catch (e) {
      problems.push(`${name}: cannot read ${file}: ${(e as Error).message}`);
    }
  }
  if (c.redisUrl !== undefined && c.redisCluster.length > 0) {
    problems.push('PUBGATE_REDIS_CLUSTER: set either PUBGATE_REDIS_URL or PUBGATE_REDIS_CLUSTER, not both');
  }
  checkRedisCombinations(c, problems);
  const asym = c.jwtAlgorithms.some((a) => !a.startsWith('HS'));
  if (asym && c.jwtPublicKeys === undefined && c.jwtJwksUrl === undefined) {
    problems.push('PUBGATE_JWT_PUBLIC_KEYS: public-key algorithms need PUBGATE_JWT_PUBLIC_KEYS or PUBGATE_JWT_JWKS_URL');
  }
  if (c.subscribeProxyUrl === undefined) {
    c.namespaces.forEach((ns, i) => {
      if (ns.subscribeProxy === true) {
        problems.push(`PUBGATE_NAMESPACES: entry ${i + 1} (${JSON.stringify(ns.pattern)}) sets "subscribeProxy" but PUBGATE_SUBSCRIBE_PROXY_URL is unset`);
      }
    });
  }
  // Contract: one without the other stops the process at start (never a half-configured, silently idle webhook).
  if (c.webhookUrl !== undefined && c.webhookSecret === undefined) {
    problems.push('PUBGATE_WEBHOOK_SECRET: PUBGATE_WEBHOOK_URL is set; webhooks need the signing secret too');
  }
  if (c.webhookUrl === undefined && c.webhookSecret !== undefined) {
    problems.push('PUBGATE_WEBHOOK_URL: PUBGATE_WEBHOOK_SECRET is set; webhooks need the receiver URL too');
  }
  if (c.pusherWebhookUrl !== undefined && c.pusherApps.length === 0) {
    problems.push('PUBGATE_PUSHER_WEBHOOK_URL: Pusher-format webhooks need PUBGATE_PUSHER_APPS (they are signed with the apps\' secrets)');
  }
  if (c.port !== 0 && c.port === c.adminPort) {
    problems.push('PUBGATE_ADMIN_PORT: must differ from PUBGATE_PORT');
  }
  if (nodeEnv === 'production') {
    for (const line of shortHmacSecrets(c)) problems.push(`PUBGATE_JWT_SECRETS: ${line}; refused when NODE_ENV=production`);
    for (const sec of c.jwtSecrets) {
      if (DEVELOPMENT_SECRETS.includes(sec.secret)) {
        problems.push('PUBGATE_JWT_SECRETS: the development secret from config/development.json is refused when NODE_ENV=production');
      }
    }
    for (const k of c.apiKeys) {
      if (DEVELOPMENT_SECRETS.includes(k)) {
        problems.push('PUBGATE_API_KEYS: the development API key from config/development.json is refused when NODE_ENV=production');
      }
    }
    if (c.adminConsole && c.adminToken === undefined) {
      problems.push('PUBGATE_ADMIN_TOKEN: the admin console without a token is refused when NODE_ENV=production; set it or PUBGATE_ADMIN_CONSOLE=false');
    }
    if (c.adminToken !== undefined && DEVELOPMENT_SECRETS.includes(c.adminToken)) {
      problems.push('PUBGATE_ADMIN_TOKEN: the development admin token from config/development.json is refused when NODE_ENV=production');
    }
  }
}
