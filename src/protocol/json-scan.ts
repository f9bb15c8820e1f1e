/**
 * Locates the raw text of values inside a JSON document that JSON.parse has
 * already accepted, so `data` can be forwarded byte-for-byte as the publisher
 * wrote it (no re-serialization: 1.0 stays 1.0, \u00e9 stays \u00e9, 1e400
 * stays 1e400). Only valid JSON is ever passed in, so the scanner skips values
 * without validating them.
 */
export interface Span {
  readonly start: number;
  readonly end: number; // exclusive
}

function skipWs(s: string, i: number): number {
  for (;;) {
    const c = s.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
    else return i;
  }
}

function skipString(s: string, i: number): number {
  // s[i] === '"'
  i++;
  for (;;) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === 0x22) return i + 1;
    else if (Number.isNaN(c)) return i;
    else i++;
  }
}

/** Index just past the value starting at i (after white space). */
function skipValue(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if (c === 0x22) return skipString(s, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    for (;;) {
      const d = s.charCodeAt(i);
      if (Number.isNaN(d)) return i;
      if (d === 0x22) {
        i = skipString(s, i);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
  }
  // number, true, false, null
  while (i < s.length) {
    const d = s.charCodeAt(i);
    if (d === 0x2c || d === 0x7d || d === 0x5d || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09) break;
    i++;
  }
  return i;
}

/**
 * Spans of the members of the object at `span`, by unescaped key; the last
 * occurrence wins for duplicate keys, as in JSON.parse.
 */
export function objectMembers(s: string, span: Span = { start: 0, end: s.length }): Map<string, Span> {
  const out = new Map<string, Span>();
  let i = skipWs(s, span.start);
  if (s.charCodeAt(i) !== 0x7b) return out;
  i = skipWs(s, i + 1);
  while (i < span.end && s.charCodeAt(i) === 0x22) {
    const keyEnd = skipString(s, i);
    const rawKey = s.slice(i + 1, keyEnd - 1);
    // Compare keys as JSON.parse sees them: "d\u0061ta" is `data`.
    const key = rawKey.includes('\\') ? (JSON.parse(`"${rawKey}"`) as string) : rawKey;
    i = skipWs(s, keyEnd);
    i = skipWs(s, i + 1); // ':'
    const vEnd = skipValue(s, i);
    out.set(key, { start: i, end: vEnd });
    i = skipWs(s, vEnd);
    if (s.charCodeAt(i) === 0x2c) i = skipWs(s, i + 1);
  }
  return out;
}

/** Spans of the elements of the array at `span`. */
export function arrayElements(s: string, span: Span): Span[] {
  const out: Span[] = [];
  let i = skipWs(s, span.start);
  if (s.charCodeAt(i) !== 0x5b) return out;
  i = skipWs(s, i + 1);
  while (i < span.end && s.charCodeAt(i) !== 0x5d) {
    const vEnd = skipValue(s, i);
    out.push({ start: i, end: vEnd });
    i = skipWs(s, vEnd);
    if (s.charCodeAt(i) === 0x2c) i = skipWs(s, i + 1);
    else break;
  }
  return out;
}
