/**
 * Connection ids: a session keeps only its number (a small integer costs
 * nothing beyond its field); the text sent in `welcome` and logged as `conn`
 * is a random per-node prefix and the number in base 36, built when needed.
 */
import { randomBytes } from 'node:crypto';

export interface ConnIds {
  /** The next connection number. */
  next(): number;
  /** The `conn` text of connection number `id`. */
  name(id: number): string;
  /** The number of a `conn` text of this node; undefined for another node's (or no) connection. */
  parse(name: string): number | undefined;
}

export function createConnIds(): ConnIds {
  const prefix = randomBytes(3).toString('hex');
  let seq = 0;
  return {
    next: () => seq++,
    name: (id) => `${prefix}${id.toString(36)}`,
    parse(name) {
      if (!name.startsWith(prefix) || name.length === prefix.length || name.length > prefix.length + 11) return undefined;
      const rest = name.slice(prefix.length);
      if (!/^[0-9a-z]+$/.test(rest)) return undefined;
      const id = parseInt(rest, 36);
      // Only the canonical spelling (no leading zeros) names a connection.
      return id.toString(36) === rest ? id : undefined;
    },
  };
}
