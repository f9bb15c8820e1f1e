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
}

export function createConnIds(): ConnIds {
  const prefix = randomBytes(3).toString('hex');
  let seq = 0;
  return {
    next: () => seq++,
    name: (id) => `${prefix}${id.toString(36)}`,
  };
}
