/**
 * Builds @pubgate/client (packages/client) with its own tsconfigs into a
 * directory of the caller's choosing, so tests never race over
 * packages/client/dist and always test the current source.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './gateway.js';

export const CLIENT_DIR = path.join(ROOT, 'packages/client');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');

/** Runs tsc with these arguments; resolves with its exit code and output. */
export function tsc(args: readonly string[], cwd = ROOT): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TSC, ...args], { cwd, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

/** Compiles the library (tsconfig.json) and the pubgate-check CLI (tsconfig.bin.json) into `outDir` (a fresh temp dir by default). */
export async function buildClient(outDir = mkdtempSync(path.join(os.tmpdir(), 'pubgate-client-'))): Promise<string> {
  for (const config of ['tsconfig.json', 'tsconfig.bin.json']) {
    const r = await tsc(['-p', path.join(CLIENT_DIR, config), '--outDir', outDir]);
    if (r.code !== 0) throw new Error(`tsc -p packages/client/${config} failed:\n${r.output}`);
  }
  // As in the package (whose package.json says "type": "module"): the .js files are ES modules.
  writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
  return outDir;
}
