/**
 * vitest setupFiles: every answer a test receives from a pubgate node through
 * `fetch` is checked against docs/openapi.yaml (test/helpers/openapi.ts), and
 * a test that received one that does not conform fails after it ran.
 */
import { afterAll, afterEach } from 'vitest';
import { checkedAnswers, formatViolations, installFetchValidation, takeViolations } from './openapi.js';

installFetchValidation();

afterEach(async () => {
  const found = await takeViolations();
  if (found.length > 0) {
    throw new Error(`answers that do not match docs/openapi.yaml (fix the document, or the code if the contract says so):\n${formatViolations(found)}`);
  }
});

afterAll(() => {
  if (process.env.PUBGATE_OPENAPI_STATS !== '1' || checkedAnswers().size === 0) return;
  const lines = [...checkedAnswers()].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `  ${k} x${n}`);
  console.log(`answers checked against docs/openapi.yaml:\n${lines.join('\n')}`);
});
