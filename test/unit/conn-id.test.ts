/**
 * Connection ids: `parse` gives back the number of this node's `name`s only
 * (exclude finds a connection by it), never another node's or a near miss.
 */
import { describe, expect, it } from 'vitest';
import { createConnIds } from '../../src/transport/conn-id.js';

describe('connection ids', () => {
  it('parses the names of this node back to their numbers', () => {
    const ids = createConnIds();
    for (const n of [0, 1, 35, 36, 123_456, Number.MAX_SAFE_INTEGER]) expect(ids.parse(ids.name(n))).toBe(n);
  });

  it("refuses another node's names, a bare prefix, leading zeros, upper case and other characters", () => {
    const ids = createConnIds();
    const other = createConnIds();
    const prefix = ids.name(0).slice(0, -1);
    expect(ids.parse(other.name(5) === ids.name(5) ? 'zzzzzz5' : other.name(5))).toBeUndefined();
    for (const bad of [prefix, `${prefix}05`, `${prefix}A`, `${prefix}-1`, `${prefix}1 `, '', 'x', `${prefix}${'z'.repeat(12)}`]) {
      expect(ids.parse(bad), bad).toBeUndefined();
    }
  });
});
