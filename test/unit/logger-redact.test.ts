import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';

/** A logger writing into an array of parsed JSON lines. */
function capture(): { lines: Array<Record<string, unknown>>; log: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger({ level: 'debug', nodeId: 'n1', destination }) };
}

describe('logger redaction', () => {
  it('never writes Redis or Sentinel passwords, at the top level or one level down', () => {
    const { lines, log } = capture();
    const secrets = ['pw-top', 'pw-nested', 'spw-top', 'spw-nested', 'rpw', 'rpw-nested', 'rspw', 'rspw-nested'];
    log.warn(
      {
        password: 'pw-top',
        redis: { password: 'pw-nested', sentinelPassword: 'spw-nested' },
        sentinelPassword: 'spw-top',
        redisPassword: 'rpw',
        config: { redisPassword: 'rpw-nested', redisSentinelPassword: 'rspw-nested' },
        redisSentinelPassword: 'rspw',
        host: '127.0.0.1',
      },
      'redis options',
    );
    expect(lines).toHaveLength(1);
    const text = JSON.stringify(lines[0]);
    for (const s of secrets) expect(text.includes(s), s).toBe(false);
    expect(lines[0]).toMatchObject({ password: '[redacted]', sentinelPassword: '[redacted]', redis: { password: '[redacted]' }, host: '127.0.0.1' });
  });

  it('never writes the admin token, at the top level or one level down', () => {
    const { lines, log } = capture();
    log.info({ adminToken: 'adm-top-secret-0123456789abc', config: { adminToken: 'adm-nested-0123456789abcdef' } }, 'config');
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain('adm-top');
    expect(text).not.toContain('adm-nested');
    expect(lines[0]).toMatchObject({ adminToken: '[redacted]', config: { adminToken: '[redacted]' } });
  });
});
