import { describe, expect, it } from 'vitest';
import { compilePatterns } from '../../src/auth/permissions.js';

describe('compilePatterns', () => {
  it('matches nothing for an empty list', () => {
    const m = compilePatterns([], '42');
    expect(m('news')).toBe(false);
    expect(m('')).toBe(false);
  });

  it('matches exact names only exactly', () => {
    const m = compilePatterns(['news', 'sport'], '42');
    expect(m('news')).toBe(true);
    expect(m('sport')).toBe(true);
    expect(m('news:uk')).toBe(false);
    expect(m('new')).toBe(false);
  });

  it('matches a prefix ending in *', () => {
    const m = compilePatterns(['chat:*'], '42');
    expect(m('chat:1')).toBe(true);
    expect(m('chat:')).toBe(true);
    expect(m('chat')).toBe(false);
    expect(m('chatter')).toBe(false);
  });

  it('matches every channel with * alone', () => {
    const m = compilePatterns(['news', '*'], '42');
    expect(m('anything')).toBe(true);
    expect(m('a')).toBe(true);
  });

  it('combines exact names and several prefixes', () => {
    const m = compilePatterns(['news', 'chat:*', 'room:*', 'room:a:*'], '42');
    expect(m('news')).toBe(true);
    expect(m('chat:x')).toBe(true);
    expect(m('room:a:b')).toBe(true);
    expect(m('room:z')).toBe(true);
    expect(m('other')).toBe(false);
  });

  it('replaces {sub} in exact names and prefixes', () => {
    const m = compilePatterns(['user:{sub}', 'inbox:{sub}:*'], '42');
    expect(m('user:42')).toBe(true);
    expect(m('user:43')).toBe(false);
    expect(m('user:{sub}')).toBe(false);
    expect(m('inbox:42:a')).toBe(true);
    expect(m('inbox:43:a')).toBe(false);
  });

  it('replaces every occurrence of {sub}', () => {
    const m = compilePatterns(['dm:{sub}:{sub}'], 'u1');
    expect(m('dm:u1:u1')).toBe(true);
    expect(m('dm:u1:{sub}')).toBe(false);
  });

  it('keeps an exact pattern exact when sub contains *', () => {
    const m = compilePatterns(['user:{sub}'], '*');
    expect(m('user:*')).toBe(true);
    expect(m('user:42')).toBe(false);
    expect(m('anything')).toBe(false);

    const m2 = compilePatterns(['{sub}'], '*');
    expect(m2('news')).toBe(false);
    expect(m2('*')).toBe(true);

    const m3 = compilePatterns(['user:{sub}'], 'a*');
    expect(m3('user:a*')).toBe(true);
    expect(m3('user:ab')).toBe(false);
  });

  it('does not widen a prefix pattern when sub contains *', () => {
    const m = compilePatterns(['user:{sub}:*'], '*');
    expect(m('user:*:x')).toBe(true);
    expect(m('user:42:x')).toBe(false);
  });

  it('inserts sub literally even when it contains replacement tokens', () => {
    const m = compilePatterns(['user:{sub}'], '$&$1$$');
    expect(m('user:$&$1$$')).toBe(true);
    expect(m('user:{sub}')).toBe(false);
  });

  it('drops {sub} patterns when sub is empty instead of widening them', () => {
    const m = compilePatterns(['user:{sub}*', 'user:{sub}', 'public'], '');
    expect(m('user:42')).toBe(false);
    expect(m('user:')).toBe(false);
    expect(m('public')).toBe(true);
  });

  it('treats a * that is not last as an ordinary character', () => {
    const m = compilePatterns(['a*b'], '42');
    expect(m('a*b')).toBe(true);
    expect(m('axb')).toBe(false);
    expect(m('a')).toBe(false);
  });

  it('ignores empty patterns', () => {
    const m = compilePatterns(['', 'news'], '42');
    expect(m('')).toBe(false);
    expect(m('news')).toBe(true);
  });
});
