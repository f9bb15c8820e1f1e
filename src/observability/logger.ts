/**
 * Structured JSON logs (pino). The only importer of pino. Secrets never reach a
 * log line: tokens, Authorization headers, API keys, Redis and Sentinel
 * passwords, cookies, the proxy key, the admin token and query strings are redacted here, and callers log paths, never URLs with their query.
 */
import pino from 'pino';
import type { LogLevel } from '../config.js';

/** The logging surface the rest of the code uses (pino's Logger satisfies it). */
export interface Log {
  fatal(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
  child(bindings: Record<string, unknown>): Log;
  isLevelEnabled(level: string): boolean;
}

const REDACT = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["sec-websocket-protocol"]',
  'apiKey',
  '*.apiKey',
  'secret',
  '*.secret',
  'query',
  '*.query',
  'password',
  '*.password',
  'sentinelPassword',
  '*.sentinelPassword',
  'redisPassword',
  '*.redisPassword',
  'redisSentinelPassword',
  '*.redisSentinelPassword',
  'cookie',
  '*.cookie',
  'proxyKey',
  '*.proxyKey',
  'adminToken',
  '*.adminToken',
];

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly nodeId: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read them. */
  readonly destination?: pino.DestinationStream;
}

export function createLogger(opts: LoggerOptions): Log {
  return pino(
    {
      level: opts.level,
      base: { node: opts.nodeId },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ fd: 1, sync: false }),
  ) as unknown as Log;
}

/** A logger that discards everything (unit tests). */
export function silentLogger(): Log {
  return pino({ level: 'silent' }) as unknown as Log;
}

/** Strips the query string from a URL path before it is logged. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q) + '?[redacted]';
}
