/**
 * Before any test: the system tools the run cannot do without are checked
 * (test/helpers/tools.ts), so a machine without them fails at once with one
 * message saying what to install, instead of a timeout per file. Then
 * `node dist/main.js`, which integration tests run, is built once, fresh
 * (with the admin console's files copied beside it).
 */
import { execFileSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { prerequisiteProblem } from './helpers/tools.js';

/** Throws, with the whole story in the message and no stack, when a required tool is missing. */
export function checkPrerequisites(project: TestProject): void {
  const problem = prerequisiteProblem(project.vitest.state.getPaths(), project.config.root);
  if (problem === undefined) return;
  const err = new Error(problem);
  err.stack = `${err.name}: ${problem}`; // no frames: where it was thrown says nothing useful
  throw err;
}

export default function setup(project: TestProject): void {
  checkPrerequisites(project);
  const root = fileURLToPath(new URL('..', import.meta.url));
  execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  // The admin console's static files, as `npm run build:console` copies them.
  cpSync(`${root}src/admin/console`, `${root}dist/admin/console`, { recursive: true });
}
