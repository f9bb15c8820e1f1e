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
 */

export type ChannelMatcher = (channel: string) => boolean;

const SUB_PLACEHOLDER = '{sub}';

const matchNothing: ChannelMatcher = () => false;
const matchAll: ChannelMatcher = () => true;

export function compilePatterns(patterns: readonly string[], sub: string): ChannelMatcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const pattern of patterns) {
    if (pattern === '') continue;
    const isPrefix = pattern.endsWith('*');
    const body = isPrefix ? pattern.slice(0, -1) : pattern;
    if (body.includes(SUB_PLACEHOLDER) && sub === '') continue;
    // split/join, not String.replace: a sub containing `$&` or `$1` must stay literal.
    const resolved = body.split(SUB_PLACEHOLDER).join(sub);
    if (!isPrefix) {
      exact.add(resolved);
    } else if (resolved === '') {
      return matchAll;
    } else {
      prefixes.push(resolved);
    }
  }
  const compact = minimalPrefixes(prefixes);
  if (compact.length === 0) return exact.size === 0 ? matchNothing : (channel) => exact.has(channel);
  if (exact.size === 0 && compact.length === 1) {
    const only = compact[0] as string;
    return (channel) => channel.startsWith(only);
  }
  return (channel) => {
    if (exact.has(channel)) return true;
    for (const p of compact) if (channel.startsWith(p)) return true;
    return false;
  };
}

/** Drops duplicates and prefixes covered by a shorter one (`a:*` covers `a:b:*`). */
function minimalPrefixes(prefixes: readonly string[]): string[] {
  const sorted = [...new Set(prefixes)].sort((a, b) => a.length - b.length);
  const out: string[] = [];
  for (const p of sorted) if (!out.some((q) => p.startsWith(q))) out.push(p);
  return out;
}
