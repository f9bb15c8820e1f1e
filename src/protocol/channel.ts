/** Channel names, as the contract defines them. */
export const CHANNEL_RE = /^[A-Za-z0-9_:.@/=-]{1,200}$/;

export function isValidChannel(v: unknown): v is string {
  return typeof v === 'string' && CHANNEL_RE.test(v);
}

/** Whether a channel matches any of the patterns (exact, or prefix ending in `*`). */
export function matchesAny(patterns: readonly string[], channel: string): boolean {
  for (const p of patterns) {
    if (p.endsWith('*') ? channel.startsWith(p.slice(0, -1)) : p === channel) return true;
  }
  return false;
}
