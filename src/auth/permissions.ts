/**
 * Channel permissions from token claims (`channels`, `publish`) and from
 * `anonymousChannels`.
 *
 * A pattern is an exact channel name, or a prefix ending in `*` (`chat:*`);
 * `*` alone matches every channel. A `*` anywhere else is an ordinary character
 * (channel names cannot contain it, so such a pattern matches nothing).
 *
 * `{sub}` inside a pattern is replaced by the token's `sub`, literally:
 * whether a pattern is exact or a prefix is decided on the pattern as written,
 * before substitution, so a `sub` of `*` or `a*` cannot turn `user:{sub}` into a
 * wildcard. With an empty `sub` (anonymous connections) a pattern containing
 * `{sub}` is dropped: `user:{sub}*` must not become `user:*`.
 *
 * A compiled matcher does not depend on `sub`: it takes it at every check
 * (`{sub}` is matched in place, nothing is built per check). So one matcher
 * serves every connection whose token carries the same pattern list, whoever
 * its user, and a PermissionsCache hands out one Permissions object per pair of
 * lists instead of new matchers per connection (each with its Set and closures
 * cost ~0.3 KB).
 */

/** Whether a connection whose token `sub` is `sub` may use `channel`. */
export type ChannelMatcher = (channel: string, sub: string) => boolean;

const SUB_PLACEHOLDER = '{sub}';

const matchNothing: ChannelMatcher = () => false;
const matchAll: ChannelMatcher = () => true;

/** A pattern containing `{sub}`, split around it: `inbox:{sub}:*` → parts `inbox:`, `:`, a prefix. */
interface Template {
  readonly parts: readonly string[];
  readonly prefix: boolean;
}

export function compilePatterns(patterns: readonly string[]): ChannelMatcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  const templates: Template[] = [];
  for (const pattern of patterns) {
    if (pattern === '') continue;
    const prefix = pattern.endsWith('*');
    const body = prefix ? pattern.slice(0, -1) : pattern;
    if (body.includes(SUB_PLACEHOLDER)) templates.push({ parts: body.split(SUB_PLACEHOLDER), prefix });
    else if (!prefix) exact.add(body);
    else if (body === '') return matchAll;
    else prefixes.push(body);
  }
  const compact = minimalPrefixes(prefixes);
  if (templates.length > 0) return withTemplates(exact, compact, templates);
  if (compact.length === 0) return exact.size === 0 ? matchNothing : exactOnly(exact);
  if (exact.size === 0 && compact.length === 1) return prefixOnly(compact[0] as string);
  return exactOrPrefix(exact, compact);
}

// One small function per shape, so each closure keeps only what it uses.
function exactOnly(exact: ReadonlySet<string>): ChannelMatcher {
  return (channel) => exact.has(channel);
}

function prefixOnly(only: string): ChannelMatcher {
  return (channel) => channel.startsWith(only);
}

function exactOrPrefix(exact: ReadonlySet<string>, prefixes: readonly string[]): ChannelMatcher {
  return (channel) => {
    if (exact.has(channel)) return true;
    for (const p of prefixes) if (channel.startsWith(p)) return true;
    return false;
  };
}

function withTemplates(exact: ReadonlySet<string>, prefixes: readonly string[], templates: readonly Template[]): ChannelMatcher {
  const rest = exactOrPrefix(exact, prefixes);
  return (channel, sub) => {
    if (rest(channel, sub)) return true;
    // An empty sub drops every {sub} pattern (see above).
    if (sub === '') return false;
    for (const t of templates) if (matchesTemplate(channel, t, sub)) return true;
    return false;
  };
}

/** Whether `channel` is the template with `sub` in place of each `{sub}` (or starts with it, for a prefix). */
function matchesTemplate(channel: string, t: Template, sub: string): boolean {
  let at = 0;
  for (let i = 0; i < t.parts.length; i++) {
    if (i > 0) {
      if (!channel.startsWith(sub, at)) return false;
      at += sub.length;
    }
    const part = t.parts[i] as string;
    if (!channel.startsWith(part, at)) return false;
    at += part.length;
  }
  return t.prefix || at === channel.length;
}

/** Drops duplicates and prefixes covered by a shorter one (`a:*` covers `a:b:*`). */
function minimalPrefixes(prefixes: readonly string[]): string[] {
  const sorted = [...new Set(prefixes)].sort((a, b) => a.length - b.length);
  return sorted.filter((p, i) => !sorted.some((q, j) => j < i && p.startsWith(q)));
}

/** What a connection may do; see hub/session.ts. */
export interface Permissions {
  readonly subscribe: ChannelMatcher;
  readonly publish: ChannelMatcher;
}

export interface PermissionsCache {
  /** The compiled permissions for a token's `channels` and `publish` lists: the same object for the same lists, while cached. */
  get(subscribe: readonly string[], publish: readonly string[]): Permissions;
  readonly size: number;
}

/**
 * Compiled permissions by pattern lists, at most `maxEntries` of them, least
 * recently used evicted first. Lists longer than `maxKeyChars` (as JSON) are
 * compiled each time and not kept, so the keys hold at most
 * maxEntries × maxKeyChars characters.
 */
export function createPermissionsCache(maxEntries = 1024, maxKeyChars = 2048): PermissionsCache {
  const cache = new Map<string, Permissions>();
  const compile = (subscribe: readonly string[], publish: readonly string[]): Permissions => ({
    subscribe: compilePatterns(subscribe),
    publish: compilePatterns(publish),
  });
  return {
    get(subscribe, publish) {
      const key = JSON.stringify([subscribe, publish]);
      if (key.length > maxKeyChars) return compile(subscribe, publish);
      let p = cache.get(key);
      if (p) {
        // Map keeps insertion order: re-inserting marks it most recently used.
        cache.delete(key);
      } else {
        p = compile(subscribe, publish);
        if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
      }
      cache.set(key, p);
      return p;
    },
    get size() {
      return cache.size;
    },
  };
}
