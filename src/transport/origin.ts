/**
 * Origin allow-list: exact origins, one-label wildcards (`https://*.example.com`
 * matches `https://a.example.com` only, not `https://example.com` or
 * `https://a.b.example.com`), or `*`. Matching is exact on scheme, host and port.
 */
export type OriginCheck = (origin: string | undefined) => boolean;

export function compileOrigins(allowed: readonly string[], requireOrigin: boolean): OriginCheck {
  const any = allowed.includes('*');
  const exact = new Set<string>();
  const wild: { prefix: string; suffix: string }[] = [];
  for (const o of allowed) {
    if (o === '*') continue;
    const star = o.indexOf('://*.');
    if (star >= 0) wild.push({ prefix: o.slice(0, star + 3), suffix: o.slice(star + 4) });
    else exact.add(o.toLowerCase());
  }
  return (origin) => {
    if (origin === undefined || origin === '') return !requireOrigin;
    if (any) return true;
    if (origin === 'null') return false;
    const o = origin.toLowerCase();
    if (exact.has(o)) return true;
    for (const w of wild) {
      if (!o.startsWith(w.prefix) || !o.endsWith(w.suffix)) continue;
      const label = o.slice(w.prefix.length, o.length - w.suffix.length);
      if (/^[a-z0-9-]+$/.test(label)) return true;
    }
    return false;
  };
}
