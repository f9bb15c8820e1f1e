import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseCidr, parseIp } from '../../src/net/cidr.js';
import type { Log } from '../../src/observability/logger.js';
import { createAdmission, createRejectionLog, readUpgradeHead, type HandshakeRejectReason } from '../../src/transport/admission.js';
import { bucketOf, createClientIpResolver } from '../../src/transport/client-ip.js';
import type { HttpRequest } from '../../src/transport/uws.js';

/** A uWS request stand-in: forEach over header lines, names lower-cased as uWS gives them. */
function req(lines: readonly (readonly [string, string])[]): HttpRequest {
  return { forEach: (cb: (k: string, v: string) => void) => lines.forEach(([k, v]) => cb(k.toLowerCase(), v)) } as unknown as HttpRequest;
}

const BASE: readonly (readonly [string, string])[] = [
  ['Host', 'ws.example.com'],
  ['Upgrade', 'websocket'],
  ['Connection', 'Upgrade'],
  ['Sec-WebSocket-Version', '13'],
  ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
];

describe('readUpgradeHead', () => {
  it('reads an ordinary upgrade without a violation', () => {
    const h = readUpgradeHead(req([...BASE, ['Origin', 'https://a.example'], ['Content-Length', '0']]));
    expect(h.violation).toBeUndefined();
    expect([h.key, h.version, h.origin, h.upgrade, h.connection]).toEqual(['dGhlIHNhbXBsZSBub25jZQ==', '13', 'https://a.example', 'websocket', 'Upgrade']);
  });

  it.each([
    ['Host', 'ws.example.com'],
    ['Host', 'other.example'],
    ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
    ['Sec-WebSocket-Key', 'AAAAAAAAAAAAAAAAAAAAAA=='],
    ['Sec-WebSocket-Version', '13'],
    ['Sec-WebSocket-Version', '8'],
  ])('refuses a repeated %s (second value %s)', (name, value) => {
    expect(readUpgradeHead(req([...BASE, [name, value]])).violation).toEqual({ reason: 'duplicate_header', message: `duplicate ${name} header` });
  });

  it.each(['Origin', 'Authorization', 'Content-Length'])('refuses a repeated %s, even with the same value', (name) => {
    const v = name === 'Content-Length' ? '0' : 'x';
    expect(readUpgradeHead(req([...BASE, [name, v], [name, v]])).violation).toEqual({ reason: 'duplicate_header', message: `duplicate ${name} header` });
  });

  it('refuses an upgrade whose Connection also lists close (own line or same line); close without upgrade is left to the 426', () => {
    expect(BASE.some(([k, v]) => k.toLowerCase() === 'connection' && /upgrade/i.test(v))).toBe(true);
    for (const lines of [[['Connection', 'close']], [['Connection', 'keep-alive, close']], [['Connection', ' CLOSE ']]] as [string, string][][]) {
      expect(readUpgradeHead(req([...BASE, ...lines])).violation).toEqual({ reason: 'connection_close', message: 'an upgrade request cannot carry Connection: close' });
    }
    for (const v of ['keep-alive', 'closed', 'close-ish', 'Upgrade']) expect(readUpgradeHead(req([...BASE, ['Connection', v]])).violation).toBeUndefined();
    const noUpgrade = BASE.filter(([k]) => k.toLowerCase() !== 'connection');
    expect(readUpgradeHead(req([...noUpgrade, ['Connection', 'close']])).violation).toBeUndefined();
  });

  it('refuses any Transfer-Encoding and a Content-Length other than 0', () => {
    for (const te of ['chunked', 'identity', '']) {
      expect(readUpgradeHead(req([...BASE, ['Transfer-Encoding', te]])).violation?.reason).toBe('transfer_encoding');
    }
    for (const cl of ['5', '00', ' 0', '-1']) expect(readUpgradeHead(req([...BASE, ['Content-Length', cl]])).violation?.reason).toBe('body');
  });

  it('joins the lines of list-valued headers in order', () => {
    const h = readUpgradeHead(req([
      ...BASE,
      ['Connection', 'keep-alive'],
      ['Sec-WebSocket-Protocol', 'a'],
      ['Sec-WebSocket-Protocol', 'pubgate.v1, bearer.x'],
      ['Sec-WebSocket-Extensions', 'permessage-deflate'],
      ['Sec-WebSocket-Extensions', 'x-other'],
      ['X-Forwarded-For', '10.0.0.1, 10.0.0.2'],
      ['X-Forwarded-For', '10.0.0.3'],
    ]));
    expect(h.violation).toBeUndefined();
    expect([h.connection, h.protocols, h.extensions, h.forwardedFor]).toEqual([
      'Upgrade,keep-alive', 'a, pubgate.v1, bearer.x', 'permessage-deflate, x-other', '10.0.0.1, 10.0.0.2,10.0.0.3',
    ]);
  });
});

describe('client buckets', () => {
  const bucket = (text: string): string => bucketOf(parseIp(text)!);

  it('puts every spelling of addresses in one IPv6 /64 in one bucket, and neighbouring /64s in others', () => {
    const same = ['2001:db8:1:2::1', '2001:DB8:1:2::FFFF', '2001:0db8:0001:0002:0000:0000:0000:0001', '[2001:db8:1:2::7]', '2001:db8:1:2:ffff:ffff:ffff:ffff', '2001:db8:1:2::1%eth0'];
    expect(new Set(same.map(bucket))).toEqual(new Set(['2001:db8:1:2::/64']));
    expect(bucket('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
    expect(bucket('2001:db8:1:1:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:1::/64');
    expect(bucket('::1')).toBe('::/64');
  });

  it('keeps IPv4 by the full address, and an IPv4-mapped IPv6 address as that IPv4 address', () => {
    expect(bucket('192.0.2.10')).toBe('192.0.2.10');
    expect(bucket('::ffff:192.0.2.10')).toBe('192.0.2.10');
    expect(bucket('::FFFF:c000:20a')).toBe('192.0.2.10');
    expect(bucket('192.0.2.11')).toBe('192.0.2.11');
  });

  it('resolves the forwarded client (from a trusted proxy) to its address and bucket', () => {
    const resolve = createClientIpResolver([parseCidr('127.0.0.1/32')!]);
    expect(resolve('127.0.0.1', '2001:DB8:0:0::5')).toEqual({ ip: '2001:db8::5', bucket: '2001:db8::/64' });
    expect(resolve('::ffff:127.0.0.1', '10.1.1.1')).toEqual({ ip: '10.1.1.1', bucket: '10.1.1.1' });
    expect(resolve('198.51.100.1', '10.1.1.1')).toEqual({ ip: '198.51.100.1', bucket: '198.51.100.1' });
    expect(resolve('0000:0000:0000:0000:0000:0000:0000:0001', '')).toEqual({ ip: '::1', bucket: '::/64' });
  });
});

describe('createAdmission', () => {
  const admit = createAdmission({ ipHandshakeRate: 1, clientIp: createClientIpResolver([]) });

  it('charges the client bucket for every attempt and refuses over the burst with 429 and Retry-After', () => {
    const peer = '2001:db8:9:9::1';
    // Burst 2: two attempts pass admission (one of them malformed), the third is over.
    expect(admit(req(BASE), peer, 0).refusal).toBeUndefined();
    expect(admit(req([...BASE, ['Transfer-Encoding', 'chunked']]), '2001:db8:9:9::2', 0).refusal).toMatchObject({ status: 400, reason: 'transfer_encoding', close: true });
    const over = admit(req(BASE), '2001:db8:9:9:ffff::', 0).refusal;
    expect(over).toMatchObject({ code: 'rate_limited', status: 429, reason: 'ip_rate', close: false, headers: { 'Retry-After': '1' } });
    // Framing is answered first, even over the rate.
    expect(admit(req([...BASE, ['Content-Length', '3']]), peer, 0).refusal?.reason).toBe('body');
    // Another /64 is not affected.
    expect(admit(req(BASE), '2001:db8:9:a::1', 0).refusal).toBeUndefined();
  });
});

describe('createRejectionLog', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function fakeLog(debug: boolean): { log: Log; lines: { level: string; obj: Record<string, unknown>; msg: string }[] } {
    const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
    const at = (level: string) => (obj: object, msg: string): void => {
      lines.push({ level, obj: obj as Record<string, unknown>, msg });
    };
    const log: Log = {
      fatal: at('fatal'), error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'),
      child: () => log,
      isLevelEnabled: (l) => debug || l !== 'debug',
    };
    return { log, lines };
  }
  const client = (n: number): { ip: string; bucket: string } => ({ ip: `10.0.${n >> 8}.${n & 255}`, bucket: `10.0.${n >> 8}.${n & 255}` });
  const reject = (reason: HandshakeRejectReason, n: number): { code: 'rate_limited' | 'unauthorized'; reason: HandshakeRejectReason; client: { ip: string; bucket: string }; origin: string } =>
    ({ code: reason === 'ip_rate' ? 'rate_limited' : 'unauthorized', reason, client: client(n), origin: '' });

  it('logs the first of each reason at once, then one summary per interval with the counts and the top clients', () => {
    vi.useFakeTimers();
    const { log, lines } = fakeLog(false);
    const rl = createRejectionLog(log, 10_000);
    for (let i = 0; i < 5000; i++) rl.rejected(reject(i % 10 === 0 ? 'bad_signature' : 'ip_rate', i % 10 === 0 ? i : 7));
    expect(lines.map((l) => [l.level, l.msg, l.obj.reason])).toEqual([
      ['warn', 'handshake rejected', 'bad_signature'],
      ['warn', 'handshake rejected', 'ip_rate'],
    ]);
    vi.advanceTimersByTime(10_000);
    expect(lines).toHaveLength(3);
    const s = lines[2]!;
    expect([s.level, s.msg]).toEqual(['warn', 'handshake rejections']);
    expect(s.obj).toMatchObject({ total: 5000, suppressed: 4998, reasons: { bad_signature: 500, ip_rate: 4500 }, intervalSec: 10 });
    const top = s.obj.top as { client: string; count: number }[];
    expect(top).toHaveLength(5);
    expect(top[0]).toEqual({ client: '10.0.0.7', count: 4500 });
    // 500 bad_signature clients plus 10.0.0.7: under the 1000 tracked, so nobody is lumped together.
    expect(s.obj.otherClients).toBeUndefined();

    // A new interval starts fresh: the first of a reason is logged at once again; a quiet interval logs nothing.
    rl.rejected(reject('ip_rate', 1));
    expect(lines).toHaveLength(4);
    vi.advanceTimersByTime(60_000);
    expect(lines).toHaveLength(4);
  });

  it('bounds the clients it counts one by one, and logs the rest at debug only when debug is on', () => {
    vi.useFakeTimers();
    const { log, lines } = fakeLog(true);
    const rl = createRejectionLog(log, 10_000);
    for (let i = 0; i < 3000; i++) rl.rejected(reject('ip_rate', i));
    expect(lines.filter((l) => l.level === 'warn')).toHaveLength(1);
    expect(lines.filter((l) => l.level === 'debug')).toHaveLength(2999);
    rl.flush();
    const s = lines.at(-1)!;
    expect(s.msg).toBe('handshake rejections');
    expect(s.obj).toMatchObject({ total: 3000, otherClients: 2000 });
    expect(s.obj.top).toHaveLength(5);
  });
});
