import { describe, expect, it } from 'vitest';
import { compilePatterns, createPermissionsCache } from '../../src/auth/permissions.js';

/** The matcher for `patterns`, asked on behalf of `sub`. */
function allowed(patterns: readonly string[], sub: string): (channel: string) => boolean {
  const m = compilePatterns(patterns);
  return (channel) => m(channel, sub);
}

describe('compilePatterns', () => {
  it('matches nothing for an empty list', () => {
    const m = allowed([], '42');
    expect(m('news')).toBe(false);
    expect(m('')).toBe(false);
  });

  it('matches exact names only exactly', () => {
    const m = allowed(['news', 'sport'], '42');
    expect(m('news')).toBe(true);
    expect(m('sport')).toBe(true);
    expect(m('news:uk')).toBe(false);
    expect(m('new')).toBe(false);
  });

  it('matches a prefix ending in *', () => {
    const m = allowed(['chat:*'], '42');
    expect(m('chat:1')).toBe(true);
    expect(m('chat:')).toBe(true);
    expect(m('chat')).toBe(false);
    expect(m('chatter')).toBe(false);
  });

  it('matches every channel with * alone', () => {
    const m = allowed(['news', '*'], '42');
    expect(m('anything')).toBe(true);
    expect(m('a')).toBe(true);
  });

  it('combines exact names and several prefixes', () => {
    const m = allowed(['news', 'chat:*', 'room:*', 'room:a:*'], '42');
    expect(m('news')).toBe(true);
    expect(m('chat:x')).toBe(true);
    expect(m('room:a:b')).toBe(true);
    expect(m('room:z')).toBe(true);
    expect(m('other')).toBe(false);
  });

  it('replaces {sub} in exact names and prefixes', () => {
    const m = allowed(['user:{sub}', 'inbox:{sub}:*'], '42');
    expect(m('user:42')).toBe(true);
    expect(m('user:43')).toBe(false);
    expect(m('user:{sub}')).toBe(false);
    expect(m('inbox:42:a')).toBe(true);
    expect(m('inbox:43:a')).toBe(false);
  });

  it('replaces every occurrence of {sub}', () => {
    const m = allowed(['dm:{sub}:{sub}'], 'u1');
    expect(m('dm:u1:u1')).toBe(true);
    expect(m('dm:u1:{sub}')).toBe(false);
  });

  it('keeps an exact pattern exact when sub contains *', () => {
    const m = allowed(['user:{sub}'], '*');
    expect(m('user:*')).toBe(true);
    expect(m('user:42')).toBe(false);
    expect(m('anything')).toBe(false);

    const m2 = allowed(['{sub}'], '*');
    expect(m2('news')).toBe(false);
    expect(m2('*')).toBe(true);

    const m3 = allowed(['user:{sub}'], 'a*');
    expect(m3('user:a*')).toBe(true);
    expect(m3('user:ab')).toBe(false);
  });

  it('does not widen a prefix pattern when sub contains *', () => {
    const m = allowed(['user:{sub}:*'], '*');
    expect(m('user:*:x')).toBe(true);
    expect(m('user:42:x')).toBe(false);
  });

  it('inserts sub literally even when it contains replacement tokens', () => {
    const m = allowed(['user:{sub}'], '$&$1$$');
    expect(m('user:$&$1$$')).toBe(true);
    expect(m('user:{sub}')).toBe(false);
  });

  it('drops {sub} patterns when sub is empty instead of widening them', () => {
    const m = allowed(['user:{sub}*', 'user:{sub}', 'public'], '');
    expect(m('user:42')).toBe(false);
    expect(m('user:')).toBe(false);
    expect(m('public')).toBe(true);
  });

  it('treats a * that is not last as an ordinary character', () => {
    const m = allowed(['a*b'], '42');
    expect(m('a*b')).toBe(true);
    expect(m('axb')).toBe(false);
    expect(m('a')).toBe(false);
  });

  it('ignores empty patterns', () => {
    const m = allowed(['', 'news'], '42');
    expect(m('')).toBe(false);
    expect(m('news')).toBe(true);
  });
});

/** The per-connection compilation that shared matchers replaced (sub substituted up front), kept as the reference. */
function reference(patterns: readonly string[], sub: string): (channel: string) => boolean {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const pattern of patterns) {
    if (pattern === '') continue;
    const isPrefix = pattern.endsWith('*');
    const body = isPrefix ? pattern.slice(0, -1) : pattern;
    if (body.includes('{sub}') && sub === '') continue;
    const resolved = body.split('{sub}').join(sub);
    if (!isPrefix) exact.add(resolved);
    else if (resolved === '') return () => true;
    else prefixes.push(resolved);
  }
  return (channel) => exact.has(channel) || prefixes.some((p) => channel.startsWith(p));
}

describe('shared matchers', () => {
  it('give the same answers as compiling per connection with sub substituted', () => {
    const atoms = ['', '*', 'a', 'a*', 'ab', 'ab*', 'a:{sub}', 'a:{sub}*', '{sub}', '{sub}*', '{sub}:{sub}', 'b{sub}a*', 'a*b'];
    const subs = ['', 'a', 'ab', '*', 'a*', 'x:y', '{sub}'];
    const channels = ['', 'a', 'ab', 'abc', 'a:', 'a:a', 'a:ab', 'a:a:x', 'a:*', 'a:x:y', 'x:y', 'x:y:x:y', 'ba', 'baa', 'bab', 'bx:ya', 'a*b', '*', 'a:{sub}', 'b'];
    let checked = 0;
    for (let i = 0; i < atoms.length; i++) {
      for (let j = i; j < atoms.length; j++) {
        for (let k = j; k < atoms.length; k += 3) {
          const patterns = [atoms[i] as string, atoms[j] as string, atoms[k] as string];
          const m = compilePatterns(patterns);
          for (const sub of subs) {
            const ref = reference(patterns, sub);
            for (const ch of channels) {
              expect([patterns, sub, ch, m(ch, sub)]).toEqual([patterns, sub, ch, ref(ch)]);
              checked++;
            }
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(10_000);
  });

  it('answer for the sub they are asked with, so one matcher serves every user', () => {
    const m = compilePatterns(['user:{sub}', 'inbox:{sub}:*', 'news']);
    expect(m('user:alice', 'alice')).toBe(true);
    expect(m('user:alice', 'bob')).toBe(false);
    expect(m('user:bob', 'bob')).toBe(true);
    expect(m('inbox:bob:1', 'bob')).toBe(true);
    expect(m('inbox:bob:1', 'alice')).toBe(false);
    expect(m('news', 'anyone')).toBe(true);
  });
});

describe('createPermissionsCache', () => {
  it('hands out one Permissions object per pair of pattern lists', () => {
    const cache = createPermissionsCache();
    const a = cache.get(['chat:*', 'user:{sub}'], ['chat:*']);
    expect(cache.get(['chat:*', 'user:{sub}'], ['chat:*'])).toBe(a);
    expect(cache.get(['chat:*', 'user:{sub}'], [])).not.toBe(a);
    expect(cache.get(['chat:*'], ['chat:*', 'user:{sub}'])).not.toBe(a);
    expect(cache.size).toBe(3);
    expect(a.subscribe('chat:1', 'u')).toBe(true);
    expect(a.subscribe('user:u', 'u')).toBe(true);
    expect(a.subscribe('user:v', 'u')).toBe(false);
    expect(a.publish('chat:1', 'u')).toBe(true);
    expect(a.publish('user:u', 'u')).toBe(false);
  });

  it('keeps pattern lists apart even when their texts join alike', () => {
    const cache = createPermissionsCache();
    const two = cache.get(['a', 'b'], []);
    const one = cache.get(['a","b'], []);
    const moved = cache.get(['a'], ['b']);
    expect(new Set([one, two, moved]).size).toBe(3);
    expect(two.subscribe('a', 'u')).toBe(true);
    expect(one.subscribe('a', 'u')).toBe(false);
    expect(moved.subscribe('b', 'u')).toBe(false);
    expect(moved.publish('b', 'u')).toBe(true);
  });

  it('holds at most maxEntries, evicting the least recently used', () => {
    const cache = createPermissionsCache(3);
    const p0 = cache.get(['c0'], []);
    cache.get(['c1'], []);
    cache.get(['c2'], []);
    expect(cache.get(['c0'], [])).toBe(p0); // c0 is now the most recently used
    const p1 = cache.get(['c3'], []); // evicts c1
    expect(cache.get(['c0'], [])).toBe(p0);
    expect(cache.get(['c3'], [])).toBe(p1);
    for (let i = 4; i < 100; i++) {
      const p = cache.get([`c${i}`], []);
      expect(p.subscribe(`c${i}`, 'u')).toBe(true);
      expect(cache.size).toBeLessThanOrEqual(3);
    }
    expect(cache.size).toBe(3);
    expect(cache.get(['c0'], [])).not.toBe(p0); // evicted long ago, compiled again
  });

  it('compiles long pattern lists without keeping them', () => {
    const cache = createPermissionsCache(10, 50);
    const long = Array.from({ length: 10 }, (_, i) => `channel-${i}`);
    const p = cache.get(long, []);
    expect(p.subscribe('channel-9', 'u')).toBe(true);
    expect(p.subscribe('channel-10', 'u')).toBe(false);
    expect(cache.size).toBe(0);
  });
});
