/**
 * The admin console's static files (`src/admin/console/`: index.html,
 * console.js, console.css), read once at start. The build copies them to
 * `dist/admin/console/` (package.json `build:console`, test/global-setup.ts); a node
 * run from `dist/` without the copy (`npm run dev`'s tsc --watch) finds them
 * in `src/admin/console/` beside it, and one run from `src/` (tsx) beside
 * this module.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CONSOLE_FILES: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
  'console.css': 'text/css; charset=utf-8',
};

export interface ConsoleFile {
  readonly body: Buffer;
  readonly type: string;
}

export type ConsoleFiles = ReadonlyMap<string, ConsoleFile>;

/** Where the files are looked for, first found wins. */
export function consoleDirs(): string[] {
  return [
    fileURLToPath(new URL('./console/', import.meta.url)),
    fileURLToPath(new URL('../../src/admin/console/', import.meta.url)),
  ];
}

/** The console files from the first directory that has index.html; an empty map when none has. */
export function loadConsoleFiles(dirs: readonly string[] = consoleDirs()): ConsoleFiles {
  for (const dir of dirs) {
    const out = new Map<string, ConsoleFile>();
    for (const [name, type] of Object.entries(CONSOLE_FILES)) {
      try {
        out.set(name, { body: readFileSync(dir + name), type });
      } catch {
        // missing: answered 404
      }
    }
    if (out.has('index.html')) return out;
  }
  return new Map();
}
