/**
 * Namespaces (contract 1.1, "Namespaces"): validation of PUBGATE_NAMESPACES
 * (every problem at once, each naming its entry) and resolution of a channel's
 * options (first match wins, historyChannels as trailing namespaces).
 */
import { describe, expect, it } from 'vitest';
import {
  NOT_YET_AVAILABLE,
  NO_OPTIONS,
  NamespaceProblems,
  compileNamespaces,
  parseNamespaces,
  type LegacyHistory,
  type Namespace,
} from '../../src/channels/namespaces.js';

/** The problems parseNamespaces reports for `raw`, or [] when it accepts it. */
function problemsOf(raw: unknown): string[] {
  try {
    parseNamespaces(raw);
  } catch (e) {
    if (e instanceof NamespaceProblems) return [...e.problems];
    throw e;
  }
  return [];
}

const NO_LEGACY: LegacyHistory = { historyChannels: [], historySize: 100, historyTtl: 300 };

/** Resolver for namespaces given as raw JSON values (validated first). */
function compile(raw: unknown[], legacy: LegacyHistory = NO_LEGACY): ReturnType<typeof compileNamespaces> {
  return compileNamespaces(parseNamespaces(raw), legacy);
}

describe('parseNamespaces: valid forms', () => {
  it('reads the JSON text of the environment variable', () => {
    const text = JSON.stringify([
      { pattern: 'chat:*', history: { size: 200, ttl: 3600 }, presence: true, joinLeave: true },
      { pattern: 'room:*', presence: true, clientPublish: true },
      { pattern: 'ticker' },
    ]);
    expect(parseNamespaces(text)).toEqual([
      { pattern: 'chat:*', history: { size: 200, ttl: 3600 }, presence: true, joinLeave: true },
      { pattern: 'room:*', presence: true, clientPublish: true },
      { pattern: 'ticker' },
    ]);
  });

  it('reads an array as a config file gives it, in order', () => {
    const ns = parseNamespaces([{ pattern: 'b:*', clientPublish: true }, { pattern: 'a', history: {} }]);
    expect(ns.map((n) => n.pattern)).toEqual(['b:*', 'a']);
    expect(ns[0]).toEqual({ pattern: 'b:*', clientPublish: true });
    expect(ns[1]).toEqual({ pattern: 'a', history: {} });
  });

  it('takes an empty or blank text, and an empty array, as no namespaces', () => {
    expect(parseNamespaces('')).toEqual([]);
    expect(parseNamespaces('  \n ')).toEqual([]);
    expect(parseNamespaces('[]')).toEqual([]);
    expect(parseNamespaces([])).toEqual([]);
  });

  it('keeps only the options that are on: false flags and history false are the same as absent', () => {
    const [n] = parseNamespaces([
      { pattern: 'x', history: false, rewind: false, presence: false, joinLeave: false, subscribeProxy: false, clientPublish: false },
    ]);
    expect(n).toEqual({ pattern: 'x' });
  });

  it('keeps history size and ttl as given, each optional', () => {
    const ns = parseNamespaces([
      { pattern: 'a', history: { size: 5, ttl: 60 } },
      { pattern: 'b', history: { size: 5 } },
      { pattern: 'c', history: { ttl: 60 } },
      { pattern: 'd', history: {} },
    ]);
    expect(ns.map((n) => n.history)).toEqual([{ size: 5, ttl: 60 }, { size: 5 }, { ttl: 60 }, {}]);
  });

  it('accepts history size and ttl at their bounds', () => {
    expect(problemsOf([{ pattern: 'a', history: { size: 1, ttl: 1 } }])).toEqual([]);
    expect(problemsOf([{ pattern: 'a', history: { size: 1_000_000, ttl: 2_592_000 } }])).toEqual([]);
  });

  it('accepts every channel-pattern form: a name, a prefix ending in *, * alone, 200 characters before the *', () => {
    const patterns = ['news', 'chat:*', '*', 'A-z_0:9.@/=-', 'x'.repeat(200), 'x'.repeat(200) + '*'];
    expect(parseNamespaces(patterns.map((pattern) => ({ pattern }))).map((n) => n.pattern)).toEqual(patterns);
  });

  it('accepts the same channel under an exact pattern and under a prefix', () => {
    expect(problemsOf([{ pattern: 'chat:*' }, { pattern: 'chat:1' }, { pattern: 'chat:' }])).toEqual([]);
  });

  it('returns frozen namespaces', () => {
    const [n] = parseNamespaces([{ pattern: 'a', history: { size: 1 }, presence: true }]);
    expect(Object.isFrozen(n)).toBe(true);
    expect(Object.isFrozen(n!.history)).toBe(true);
  });
});

describe('parseNamespaces: invalid forms', () => {
  it('refuses text that is not JSON, with the parser message', () => {
    const p = problemsOf('[{"pattern": "chat:*",}]');
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^is not valid JSON: /);
  });

  it('refuses a value that is not an array', () => {
    for (const raw of ['{"pattern":"a"}', '"chat:*"', '42', 'null', 'true', { pattern: 'a' }, 42, true]) {
      const p = problemsOf(raw);
      expect(p, JSON.stringify(raw)).toEqual(['must be a JSON array of namespaces ({"pattern": ..., options})']);
    }
  });

  // Each entry alone in the list gives exactly this one problem.
  const oneProblem: Array<[string, unknown, RegExp]> = [
    ['a number', 42, /^entry 1: must be an object with a "pattern"$/],
    ['null', null, /^entry 1: must be an object with a "pattern"$/],
    ['an array', [{ pattern: 'a' }], /^entry 1: must be an object with a "pattern"$/],
    ['a bare pattern string', 'chat:*', /^entry 1: must be an object with a "pattern"$/],
    ['an unknown key', { pattern: 'a', colour: 'red' }, /^entry 1 \("a"\): unknown key "colour" \(known: pattern, history, rewind, presence, joinLeave, subscribeProxy, clientPublish\)$/],
    ['a key in the wrong case', { pattern: 'a', joinleave: true }, /^entry 1 \("a"\): unknown key "joinleave"/],
    ['no pattern', { presence: true }, /^entry 1: "pattern" is required/],
    ['an empty pattern', { pattern: '' }, /^entry 1 \(""\): "pattern" is required/],
    ['a pattern that is not a string', { pattern: 5 }, /^entry 1: "pattern" is required/],
    ['a pattern with a space', { pattern: 'a b' }, /^entry 1 \("a b"\): "pattern" "a b" is not a channel pattern/],
    ['a * inside a pattern', { pattern: 'chat:*:x' }, /^entry 1 \("chat:\*:x"\): "pattern" "chat:\*:x" is not a channel pattern/],
    ['two stars', { pattern: '**' }, /is not a channel pattern/],
    ['a 201-character name', { pattern: 'x'.repeat(201) }, /is not a channel pattern/],
    ['{sub}', { pattern: 'user:{sub}' }, /^entry 1 \("user:\{sub\}"\): "pattern" cannot contain \{sub\}/],
    ['{sub} in a prefix', { pattern: 'inbox:{sub}:*' }, /cannot contain \{sub\}/],
    ['joinLeave without presence', { pattern: 'c', joinLeave: true }, /^entry 1 \("c"\): "joinLeave" needs "presence": true$/],
    ['joinLeave with presence false', { pattern: 'c', joinLeave: true, presence: false }, /^entry 1 \("c"\): "joinLeave" needs "presence": true$/],
    ['rewind without history', { pattern: 'c', rewind: true }, /^entry 1 \("c"\): "rewind" needs "history"$/],
    ['rewind with history false', { pattern: 'c', rewind: true, history: false }, /^entry 1 \("c"\): "rewind" needs "history"$/],
    ['history true', { pattern: 'c', history: true }, /^entry 1 \("c"\): "history" must be an object \{"size": messages, "ttl": seconds\} \(each optional\)$/],
    ['history null', { pattern: 'c', history: null }, /"history" must be an object/],
    ['history as a number', { pattern: 'c', history: 100 }, /"history" must be an object/],
    ['history as a string', { pattern: 'c', history: 'yes' }, /"history" must be an object/],
    ['history as an array', { pattern: 'c', history: [100, 60] }, /"history" must be an object/],
    ['history with an unknown key', { pattern: 'c', history: { max: 5 } }, /^entry 1 \("c"\): "history" has an unknown key "max" \(known: size, ttl\)$/],
    ['history size 0', { pattern: 'c', history: { size: 0 } }, /^entry 1 \("c"\): "history.size" must be a whole number between 1 and 1000000$/],
    ['history size over the maximum', { pattern: 'c', history: { size: 1_000_001 } }, /"history.size" must be/],
    ['a fractional history size', { pattern: 'c', history: { size: 1.5 } }, /"history.size" must be/],
    ['history size as a string', { pattern: 'c', history: { size: '10' } }, /"history.size" must be/],
    ['history ttl 0', { pattern: 'c', history: { ttl: 0 } }, /^entry 1 \("c"\): "history.ttl" must be a whole number of seconds between 1 and 2592000$/],
    ['history ttl over 30 days', { pattern: 'c', history: { ttl: 2_592_001 } }, /"history.ttl" must be/],
    ['a negative history ttl', { pattern: 'c', history: { ttl: -1 } }, /"history.ttl" must be/],
    ['presence as a string', { pattern: 'c', presence: 'true' }, /^entry 1 \("c"\): "presence" must be true or false$/],
    ['clientPublish as a number', { pattern: 'c', clientPublish: 1 }, /^entry 1 \("c"\): "clientPublish" must be true or false$/],
    ['joinLeave as a string', { pattern: 'c', presence: true, joinLeave: 'yes' }, /^entry 1 \("c"\): "joinLeave" must be true or false$/],
    ['rewind as null', { pattern: 'c', history: {}, rewind: null }, /^entry 1 \("c"\): "rewind" must be true or false$/],
    ['subscribeProxy as 0', { pattern: 'c', subscribeProxy: 0 }, /^entry 1 \("c"\): "subscribeProxy" must be true or false$/],
  ];
  for (const [what, entry, re] of oneProblem) {
    it(`refuses an entry with ${what}`, () => {
      const p = problemsOf([entry]);
      expect(p).toHaveLength(1);
      expect(p[0]).toMatch(re);
    });
  }

  it('accepts every option, rewind included: nothing is left unbuilt', () => {
    expect(Object.keys(NOT_YET_AVAILABLE)).toEqual([]);
    expect(problemsOf([{ pattern: 'a', presence: true, joinLeave: true, clientPublish: true, subscribeProxy: true, history: { size: 1 }, rewind: true }])).toEqual([]);
  });

  it('keeps subscribeProxy (the subscribe proxy URL is checked with the other settings, in config.ts)', () => {
    expect(parseNamespaces([{ pattern: 'room:*', subscribeProxy: true }])).toEqual([{ pattern: 'room:*', subscribeProxy: true }]);
  });

  it('refuses a repeated pattern, naming the entry it repeats', () => {
    expect(problemsOf([{ pattern: 'a' }, { pattern: 'chat:*' }, { pattern: 'a', presence: true }])).toEqual([
      'entry 3 ("a"): "pattern" repeats entry 1, which always matches first',
    ]);
    expect(problemsOf([{ pattern: 'chat:*' }, { pattern: 'chat:*' }, { pattern: 'chat:*' }])).toEqual([
      'entry 2 ("chat:*"): "pattern" repeats entry 1, which always matches first',
      'entry 3 ("chat:*"): "pattern" repeats entry 1, which always matches first',
    ]);
  });

  it('names an entry by at most the first 60 characters of its pattern', () => {
    const long = 'x'.repeat(201);
    const [p] = problemsOf([{ pattern: long }]);
    expect(p!.startsWith(`entry 1 (${JSON.stringify('x'.repeat(60))}): `)).toBe(true);
  });

  it('reports every problem of every entry at once, in entry order, each naming its entry', () => {
    const p = problemsOf([
      { pattern: 'ok:*', presence: true },
      { pattern: 'chat:*', joinLeave: true, colour: 'red', history: { size: 0 } },
      7,
      { pattern: 'user:{sub}' },
      { pattern: 'ok:*' },
      { pattern: 'room:*', subscribeProxy: true, clientPublish: 'yes' },
      { pattern: 'fine' },
    ]);
    expect(p).toEqual([
      'entry 2 ("chat:*"): unknown key "colour" (known: pattern, history, rewind, presence, joinLeave, subscribeProxy, clientPublish)',
      'entry 2 ("chat:*"): "history.size" must be a whole number between 1 and 1000000',
      'entry 2 ("chat:*"): "joinLeave" needs "presence": true',
      'entry 3: must be an object with a "pattern"',
      'entry 4 ("user:{sub}"): "pattern" cannot contain {sub} (namespaces are the same for every user)',
      'entry 5 ("ok:*"): "pattern" repeats entry 1, which always matches first',
      'entry 6 ("room:*"): "clientPublish" must be true or false',
    ]);
  });

  it('throws one NamespaceProblems error whose message joins the problems', () => {
    let err: unknown;
    try {
      parseNamespaces('[1, {"pattern": ""}]');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NamespaceProblems);
    expect((err as NamespaceProblems).problems).toHaveLength(2);
    expect((err as Error).message).toBe((err as NamespaceProblems).problems.join('; '));
  });

  it("accepts the contract's example", () => {
    const example = [
      { pattern: 'chat:*', history: { size: 200, ttl: 3600 }, presence: true, joinLeave: true },
      { pattern: 'feed:*', history: { size: 50, ttl: 600 }, rewind: true },
      { pattern: 'room:*', presence: true, subscribeProxy: true, clientPublish: true },
    ];
    expect(problemsOf(JSON.stringify(example))).toEqual([]);
  });
});

describe('compileNamespaces', () => {
  const full = (over: Partial<typeof NO_OPTIONS>): typeof NO_OPTIONS => ({ ...NO_OPTIONS, ...over });

  it('gives every channel all options off when nothing is configured', () => {
    const r = compileNamespaces([], NO_LEGACY);
    expect(r.resolve('news')).toBe(NO_OPTIONS);
    expect(r.resolve('chat:1')).toBe(NO_OPTIONS);
    expect(r.anyHistory).toBe(false);
    expect(r.anyPresence).toBe(false);
    expect(NO_OPTIONS).toEqual({
      namespace: '', history: undefined, rewind: false, presence: false, joinLeave: false, subscribeProxy: false, clientPublish: false,
    });
    expect(Object.isFrozen(NO_OPTIONS)).toBe(true);
  });

  it('gives a channel no namespace matches all options off', () => {
    const r = compile([{ pattern: 'chat:*', presence: true }, { pattern: 'news', clientPublish: true }]);
    expect(r.resolve('feed:1')).toBe(NO_OPTIONS);
    expect(r.resolve('chat')).toBe(NO_OPTIONS);
    expect(r.resolve('chatter')).toBe(NO_OPTIONS);
    expect(r.resolve('news2')).toBe(NO_OPTIONS);
    expect(r.resolve('new')).toBe(NO_OPTIONS);
  });

  it('resolves every option of the matching namespace', () => {
    const r = compile([{ pattern: 'chat:*', history: { size: 200, ttl: 3600 }, presence: true, joinLeave: true, clientPublish: true }]);
    expect(r.resolve('chat:1')).toEqual({
      namespace: 'chat:*', history: { size: 200, ttl: 3600 }, rewind: false, presence: true, joinLeave: true, subscribeProxy: false, clientPublish: true,
    });
  });

  it('matches an exact pattern only exactly, and a prefix on every channel that starts with it', () => {
    const r = compile([{ pattern: 'news', clientPublish: true }, { pattern: 'chat:*', presence: true }]);
    expect(r.resolve('news')).toEqual(full({ namespace: 'news', clientPublish: true }));
    expect(r.resolve('chat:')).toEqual(full({ namespace: 'chat:*', presence: true }));
    expect(r.resolve('chat:1:2')).toEqual(full({ namespace: 'chat:*', presence: true }));
  });

  it('shares one frozen options object among the channels of a namespace', () => {
    const r = compile([{ pattern: 'chat:*', history: { size: 3 } }]);
    expect(r.resolve('chat:1')).toBe(r.resolve('chat:2'));
    expect(Object.isFrozen(r.resolve('chat:1'))).toBe(true);
    expect(Object.isFrozen(r.resolve('chat:1').history)).toBe(true);
  });

  it('gives a prefix listed before an exact pattern the channels of both', () => {
    const r = compile([{ pattern: 'chat:*', presence: true }, { pattern: 'chat:vip', clientPublish: true }]);
    expect(r.resolve('chat:vip').namespace).toBe('chat:*');
    expect(r.resolve('chat:vip').clientPublish).toBe(false);
  });

  it('gives an exact pattern listed before a prefix its own channel', () => {
    const r = compile([{ pattern: 'chat:vip', clientPublish: true }, { pattern: 'chat:*', presence: true }]);
    expect(r.resolve('chat:vip')).toEqual(full({ namespace: 'chat:vip', clientPublish: true }));
    expect(r.resolve('chat:1')).toEqual(full({ namespace: 'chat:*', presence: true }));
  });

  it('takes the first of overlapping prefixes in list order', () => {
    const general = compile([{ pattern: 'chat:*', presence: true }, { pattern: 'chat:vip:*', clientPublish: true }]);
    expect(general.resolve('chat:vip:1').namespace).toBe('chat:*');
    const specific = compile([{ pattern: 'chat:vip:*', clientPublish: true }, { pattern: 'chat:*', presence: true }]);
    expect(specific.resolve('chat:vip:1').namespace).toBe('chat:vip:*');
    expect(specific.resolve('chat:1').namespace).toBe('chat:*');
  });

  it('gives an exact pattern its channel when only a later prefix also matches it', () => {
    const r = compile([{ pattern: 'a:*', presence: true }, { pattern: 'b', clientPublish: true }, { pattern: '*', history: {} }]);
    expect(r.resolve('b').namespace).toBe('b');
    expect(r.resolve('a:1').namespace).toBe('a:*');
    expect(r.resolve('c').namespace).toBe('*');
  });

  it('makes * alone a catch-all that leaves nothing to the namespaces after it', () => {
    const r = compile([{ pattern: 'chat:*', presence: true }, { pattern: '*', clientPublish: true }, { pattern: 'news', history: {} }]);
    expect(r.resolve('chat:1').namespace).toBe('chat:*');
    expect(r.resolve('news')).toEqual(full({ namespace: '*', clientPublish: true }));
    expect(r.resolve('anything/else')).toEqual(full({ namespace: '*', clientPublish: true }));
  });

  it('fills history size and ttl left out from historySize and historyTtl', () => {
    const legacy: LegacyHistory = { historyChannels: [], historySize: 42, historyTtl: 99 };
    const r = compile([
      { pattern: 'a', history: {} },
      { pattern: 'b', history: { size: 5 } },
      { pattern: 'c', history: { ttl: 7 } },
      { pattern: 'd', history: { size: 5, ttl: 7 } },
      { pattern: 'e', presence: true },
    ], legacy);
    expect(['a', 'b', 'c', 'd', 'e'].map((ch) => r.resolve(ch).history)).toEqual([
      { size: 42, ttl: 99 }, { size: 5, ttl: 99 }, { size: 42, ttl: 7 }, { size: 5, ttl: 7 }, undefined,
    ]);
  });

  it('puts historyChannels after the configured namespaces, with historySize and historyTtl', () => {
    const legacy: LegacyHistory = { historyChannels: ['news:*', 'h:*', 'ticker'], historySize: 10, historyTtl: 20 };
    const r = compile([{ pattern: 'news:*', presence: true }, { pattern: 'ticker', clientPublish: true }], legacy);
    // A configured namespace comes first, even without history.
    expect(r.resolve('news:1')).toEqual(full({ namespace: 'news:*', presence: true }));
    expect(r.resolve('ticker')).toEqual(full({ namespace: 'ticker', clientPublish: true }));
    // Channels only historyChannels match keep history, and nothing else.
    expect(r.resolve('h:1')).toEqual(full({ namespace: 'h:*', history: { size: 10, ttl: 20 } }));
    expect(r.resolve('other')).toBe(NO_OPTIONS);
  });

  it('lets a catch-all namespace take every channel from historyChannels', () => {
    const legacy: LegacyHistory = { historyChannels: ['h:*'], historySize: 10, historyTtl: 20 };
    const r = compile([{ pattern: '*', clientPublish: true }], legacy);
    expect(r.resolve('h:1')).toEqual(full({ namespace: '*', clientPublish: true }));
  });

  it('works from historyChannels alone, as before namespaces', () => {
    const legacy: LegacyHistory = { historyChannels: ['h:*', 'exact'], historySize: 100, historyTtl: 300 };
    const r = compileNamespaces([], legacy);
    expect(r.resolve('h:x')).toEqual(full({ namespace: 'h:*', history: { size: 100, ttl: 300 } }));
    expect(r.resolve('exact')).toEqual(full({ namespace: 'exact', history: { size: 100, ttl: 300 } }));
    expect(r.resolve('exactly')).toBe(NO_OPTIONS);
    expect(r.anyHistory).toBe(true);
    expect(r.anyPresence).toBe(false);
  });

  it('says whether any namespace keeps history or has presence', () => {
    const flags = (ns: unknown[], historyChannels: string[] = []): [boolean, boolean] => {
      const r = compile(ns, { ...NO_LEGACY, historyChannels });
      return [r.anyHistory, r.anyPresence];
    };
    expect(flags([{ pattern: 'a', clientPublish: true }])).toEqual([false, false]);
    expect(flags([{ pattern: 'a', history: {} }])).toEqual([true, false]);
    expect(flags([{ pattern: 'a', presence: true }])).toEqual([false, true]);
    expect(flags([{ pattern: 'a', presence: true, joinLeave: true, history: { size: 1 } }])).toEqual([true, true]);
    expect(flags([{ pattern: 'a', presence: true }], ['h:*'])).toEqual([true, true]);
  });

  it('resolves namespaces compiled from a parsed environment value', () => {
    const ns: Namespace[] = parseNamespaces('[{"pattern":"room:*","presence":true,"clientPublish":true}]');
    const r = compileNamespaces(ns, NO_LEGACY);
    expect(r.resolve('room:1')).toEqual(full({ namespace: 'room:*', presence: true, clientPublish: true }));
  });
});
