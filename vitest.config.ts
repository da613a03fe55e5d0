import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['shared/**/*.test.ts', 'publisher/**/*.test.ts', 'redirector/**/*.test.ts', 'scripts/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // e2e tests start real servers and CLIs; two cores, so keep the parallelism modest.
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
