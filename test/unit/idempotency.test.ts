import { describe, expect, it } from 'vitest';
import { createIdempotencyMemo, idempotencyRedisKey, isValidIdempotencyKey } from '../../src/broker/idempotency.js';

describe('idempotency keys', () => {
  it('accepts 1 to 128 printable ASCII characters and nothing else', () => {
    for (const ok of ['a', 'x'.repeat(128), ' ~', 'order:42/retry {1}', '!"#$%&\'()*+,-./']) expect(isValidIdempotencyKey(ok), ok).toBe(true);
    for (const bad of ['', 'x'.repeat(129), 'é', 'a\tb', 'a\nb', '\x7f', '\x1f', '日本']) expect(isValidIdempotencyKey(bad), JSON.stringify(bad)).toBe(false);
    for (const bad of [undefined, null, 5, ['a'], { k: 'a' }]) expect(isValidIdempotencyKey(bad)).toBe(false);
  });

  it('names a Redis key per channel and key that no other channel and key share, tagged with the Redis channel', () => {
    const a = idempotencyRedisKey('pubgate:', 'pubgate:ch:news:a', 'b');
    const b = idempotencyRedisKey('pubgate:', 'pubgate:ch:news', 'a:b');
    expect(a).not.toBe(b);
    expect(a).toBe('pubgate:i:{pubgate:ch:news:a}b');
    // A key with braces does not move the hash tag: Redis takes the first {...}.
    expect(idempotencyRedisKey('pubgate:', 'pubgate:ch:x', '{y}')).toBe('pubgate:i:{pubgate:ch:x}{y}');
  });
});

describe('createIdempotencyMemo', () => {
  it('remembers an answer per channel and key until its ttl ends', () => {
    let now = 1000;
    const m = createIdempotencyMemo(10, () => now);
    m.set('a', 'k', '1 e', 2);
    expect(m.get('a', 'k')).toBe('1 e');
    expect(m.get('b', 'k')).toBeUndefined();
    now += 1999;
    expect(m.get('a', 'k')).toBe('1 e');
    now += 1;
    expect(m.get('a', 'k')).toBeUndefined();
    expect(m.size).toBe(0);
  });

  it('keeps at most maxKeys, forgetting the oldest first', () => {
    const m = createIdempotencyMemo(3, () => 0);
    for (const k of ['1', '2', '3', '4']) m.set('c', k, k, 60);
    expect(m.size).toBe(3);
    expect(m.get('c', '1')).toBeUndefined();
    expect(['2', '3', '4'].map((k) => m.get('c', k))).toEqual(['2', '3', '4']);
  });
});
