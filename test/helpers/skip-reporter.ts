/**
 * A vitest reporter that says, at the end of the run, which tests did not run
 * and why: a missing optional tool (with the command that installs it), a
 * `ctx.skip(note)`, `it.skip`/`describe.skip`, or `it.todo`. With CI set (CI
 * runs `bash .ci/run` with CI=true) any such test fails the run: CI must run
 * everything. Expected failures (`it.fails`) ran and passed: they are not skips.
 *
 * Listed in vitest.config.ts before 'default', so its lines come before
 * vitest's own summary, which stays the last lines of the output.
 */
import path from 'node:path';
import type { Reporter, TestCase, TestModule, TestRunEndReason, TestSpecification, Vitest } from 'vitest/node';
import { CI_SCRIPT, backportsNote, installCommand, tool, toolInMessage, type Tool } from './tools.js';

/** CI as CI services set it (CI=true or 1); CI=false or 0 is not CI. */
function isCI(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = (env.CI ?? '').trim().toLowerCase();
  return v !== '' && v !== 'false' && v !== '0';
}

interface Skip {
  readonly test: string; // file > suite > test
  readonly file: string;
  readonly reason: string;
  readonly tools: readonly string[];
}

/** At most this many test names per reason; the rest are counted. */
const NAMES_PER_REASON = 8;

function why(t: TestCase, result: { note: string | undefined }): { reason: string; tools: string[] } {
  const tools = t.meta().missingTools ?? [];
  if (tools.length > 0) return { reason: `${tools.join(', ')} not found`, tools };
  if (result.note) return { reason: result.note, tools: [] };
  if (t.options.mode === 'todo') return { reason: 'todo (not written yet)', tools: [] };
  // Older style: a missingTool() message in the test's or a suite's name.
  const named = toolInMessage(t.fullName);
  if (named) return tool(named) ? { reason: `${named} not found`, tools: [named] } : { reason: `${named} not found (see the test's name)`, tools: [] };
  return { reason: 'skipped in the code (it.skip / describe.skip / skipIf)', tools: [] };
}

export default class SkipReporter implements Reporter {
  #vitest: Vitest | undefined;
  #filtered = false;

  onInit(vitest: Vitest): void {
    this.#vitest = vitest;
  }

  onTestRunStart(specifications: ReadonlyArray<TestSpecification>): void {
    const v = this.#vitest;
    // A run narrowed by -t, a line number or tags marks every other test skipped: those are not reported.
    this.#filtered =
      v?.getGlobalTestNamePattern() !== undefined ||
      (v?.config.tagsFilter?.length ?? 0) > 0 ||
      specifications.some((s) => !!s.testNamePattern || !!s.testLines?.length || !!s.testIds?.length || !!s.testNames?.length || !!s.testTagsFilter?.length);
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>, _errors: unknown, reason: TestRunEndReason): void {
    if (reason === 'interrupted') return;
    const root = this.#vitest?.config.root ?? process.cwd();
    const skips: Skip[] = [];
    let unselected = 0;
    for (const m of testModules) {
      const file = path.relative(root, m.moduleId);
      for (const t of m.children.allTests()) {
        const r = t.result();
        if (r.state !== 'skipped') continue;
        const w = why(t, r);
        if (this.#filtered && w.tools.length === 0 && !r.note && t.options.mode === 'skip') {
          unselected++;
          continue;
        }
        skips.push({ test: `${file} > ${t.fullName}`, file, ...w });
      }
    }
    const lines = report(skips);
    if (unselected > 0) lines.push(`  (${unselected} test${unselected === 1 ? '' : 's'} not selected by the run's filter: not counted)`);
    const ci = isCI();
    if (ci && skips.length > 0) {
      lines.push(`  CI: ${skips.length} test${skips.length === 1 ? '' : 's'} did not run, and CI must run every test: this run fails.`);
      process.exitCode = 1;
    }
    if (lines.length === 0) return;
    const text = ['', ...lines, ''].join('\n');
    if (this.#vitest) this.#vitest.logger.log(text);
    else console.log(text);
  }
}

/** The lines of the skip summary (empty when nothing was skipped). */
function report(skips: readonly Skip[]): string[] {
  if (skips.length === 0) return [];
  const lines = [` Did not run: ${skips.length} test${skips.length === 1 ? '' : 's'}`];
  const byReason = new Map<string, Skip[]>();
  for (const s of skips) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s]);
  for (const [reason, list] of byReason) {
    lines.push(`  ${reason}: ${list.length} test${list.length === 1 ? '' : 's'}`);
    for (const s of list.slice(0, NAMES_PER_REASON)) lines.push(`    ${s.test}`);
    if (list.length > NAMES_PER_REASON) {
      const files = [...new Set(list.slice(NAMES_PER_REASON).map((s) => s.file))];
      lines.push(`    ... and ${list.length - NAMES_PER_REASON} more in ${files.join(', ')}`);
    }
  }
  const missing = [...new Set(skips.flatMap((s) => s.tools))];
  if (missing.length > 0) {
    const tools = missing.map((n) => tool(n)).filter((t): t is Tool => t !== undefined);
    const note = backportsNote(tools);
    lines.push(`  Install the missing tool${missing.length === 1 ? '' : 's'} (Debian/Ubuntu, as root):`);
    lines.push(`    ${installCommand(tools)}${note ? ` ${note}` : ''}`);
    lines.push(`  or run ${CI_SCRIPT}, which installs every tool the tests use.`);
  }
  return lines;
}
