import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, HTTP_STATUS } from '../../src/errors.js';
import { CLOSE, CLOSE_REASON } from '../../src/protocol/close-codes.js';
import { HANDSHAKE_REJECT_REASONS } from '../../src/transport/admission.js';
import { PUSHER_API_REJECTS, PUSHER_REJECT_STATUS } from '../../src/pusher/http-api.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

/** First-column backticked values of the table under a heading. */
function tableKeys(heading: string): Map<string, string[]> {
  const start = doc.indexOf(`## ${heading}`);
  expect(start, `heading ${heading}`).toBeGreaterThanOrEqual(0);
  const end = doc.indexOf('\n## ', start + 1);
  const rows = new Map<string, string[]>();
  for (const line of doc.slice(start, end < 0 ? undefined : end).split('\n')) {
    const m = /^\| `([^`]+)` \|(.*)$/.exec(line);
    if (m) rows.set(m[1]!, m[2]!.split('|').map((c) => c.trim()));
  }
  return rows;
}

describe('docs/errors.md', () => {
  it('lists every error code in src/errors.ts, and no other', () => {
    expect([...tableKeys('Error codes').keys()].sort()).toEqual([...ERROR_CODES].sort());
  });

  it('gives each error code the HTTP status the code uses', () => {
    for (const [code, cells] of tableKeys('Error codes')) {
      const status = HTTP_STATUS[code as keyof typeof HTTP_STATUS];
      if (code === 'limit_exceeded') expect(cells[0]).toMatch(/reply only/);
      else expect(cells[0]!.startsWith(String(status)), code).toBe(true);
    }
  });

  it('lists every close code in src/protocol/close-codes.ts with its reason, and no other', () => {
    const rows = tableKeys('Close codes');
    expect([...rows.keys()].map(Number).sort()).toEqual(Object.values(CLOSE).map(Number).sort());
    for (const [code, cells] of rows) expect(cells[0], code).toBe(CLOSE_REASON[Number(code) as keyof typeof CLOSE_REASON]);
  });

  it('lists every handshake rejection reason in src/transport/admission.ts, and no other, each with an error code', () => {
    const rows = tableKeys('Handshake rejection reasons');
    expect([...rows.keys()].sort()).toEqual([...new Set(HANDSHAKE_REJECT_REASONS)].sort());
    for (const [reason, cells] of rows) {
      if (reason === 'aborted') continue; // no answer is sent
      expect(ERROR_CODES, reason).toContain(/^`([a-z_]+)`$/.exec(cells[1] ?? '')?.[1]);
    }
  });

  it('lists every Pusher HTTP API reject reason in src/pusher/http-api.ts with its status, and no other', () => {
    const rows = tableKeys('Pusher HTTP API rejection reasons');
    expect([...rows.keys()].sort()).toEqual([...PUSHER_API_REJECTS].sort());
    for (const [reason, cells] of rows) expect(cells[0], reason).toMatch(new RegExp(`^${PUSHER_REJECT_STATUS[reason as keyof typeof PUSHER_REJECT_STATUS]}\\b`));
  });

  it('keeps every close reason under 123 bytes', () => {
    for (const r of Object.values(CLOSE_REASON)) expect(Buffer.byteLength(r)).toBeLessThan(123);
  });
});
