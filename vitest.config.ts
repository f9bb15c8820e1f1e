import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Every answer from a pubgate node is checked against docs/openapi.yaml.
    setupFiles: ['test/helpers/openapi-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real processes; two cores, so keep parallelism modest.
    maxWorkers: 2,
    // The skip reporter first: its list of tests that did not run (and, with CI
    // set, the failure it causes) comes before vitest's summary, which stays last.
    reporters: ['./test/helpers/skip-reporter.ts', 'default'],
  },
});
