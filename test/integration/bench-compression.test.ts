/**
 * The benchmark runner's compression scenario end to end, in a smoke-sized
 * run: pubgate with PUBGATE_COMPRESSION=off and =shared, clients offering
 * permessage-deflate. Checks what must hold whatever the machine's speed
 * (the figures themselves are for docs/benchmarks.md, not for assertions).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/gateway.js';

interface Run {
  readonly run: number;
  readonly target: string;
  readonly r: {
    readonly ok: boolean;
    readonly error?: string;
    readonly deliveries: number;
    readonly lost: number;
    readonly extensions: string;
    readonly compressed: number;
    readonly inflated: number;
    readonly inflateErrors: number;
    readonly wireBytesPerDelivery: number;
    readonly frameBytesPerMsg: number;
  };
}

describe('loadtest/bench/run.mjs compression', () => {
  it('runs pubgate with compression off and shared, and the shared run delivers every message compressed, intact and smaller', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pubgate-bench-'));
    try {
      const json = path.join(dir, 'out.json');
      const args = ['loadtest/bench/run.mjs', 'compression', '--runs', '1', '--size', '1024', '--subscribers', '20', '--duration', '0.5', '--warmup', '0.2',
        '--inflate-every', '4', '--no-pin', '--quiet-wait', '0', '--timeout', '60', '--json', json];
      const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code, out).toBe(0);

      const { results } = JSON.parse(readFileSync(json, 'utf8')) as { results: { name: string; runs: Run[] }[] };
      expect(results.map((x) => x.name)).toEqual(['compression']);
      const runs = results[0]!.runs;
      expect(runs.map((x) => x.target)).toEqual(['off', 'shared']);
      for (const x of runs) {
        expect(x.r.ok, x.r.error).toBe(true);
        expect(x.r.deliveries).toBeGreaterThan(0);
        expect(x.r.lost).toBe(0);
      }
      const [off, shared] = runs.map((x) => x.r);
      expect(off!.extensions).toBe('');
      expect(off!.compressed).toBe(0);
      expect(shared!.extensions).toMatch(/^permessage-deflate\b.*server_no_context_takeover/);
      expect(shared!.compressed).toBe(shared!.deliveries);
      expect(shared!.inflated).toBeGreaterThan(0);
      expect(shared!.inflateErrors).toBe(0);
      // Uncompressed, a delivery costs its frame plus a 4-byte header; this JSON deflates to well under that.
      expect(off!.wireBytesPerDelivery).toBeCloseTo(off!.frameBytesPerMsg + 4, 0);
      expect(shared!.wireBytesPerDelivery).toBeLessThan(off!.wireBytesPerDelivery * 0.7);
      expect(out).toMatch(/compression costs the server -?[\d.]+ µs more per delivery/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
