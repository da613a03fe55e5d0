// The tests `npm run mutate` (StrykerJS) runs against each mutant: those that load the mutated
// modules in the test process itself (unit tests beside the code, and the in-process server tests).
// Tests that drive the built CLI in a child process run dist/, which Stryker does not mutate, so
// they could only slow a mutation run down, never kill a mutant.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // DERRICK_MUTATE_TESTS: one module's own tests (set by stryker.config.mjs for DERRICK_MUTATE_MODULE).
    include: process.env.DERRICK_MUTATE_TESTS?.split(',') ?? [
      'shared/**/*.test.ts',
      'redirector/**/*.test.ts',
      'test/serve-api.test.ts',
      'test/serve-behaviour.test.ts',
    ],
    // hostile.test.ts times pulls against a bound (<= 100 ms): under instrumentation on a loaded
    // machine it fails the initial run, and it covers the index, none of the mutated modules.
    exclude: ['dist/**', 'node_modules/**', '.stryker-tmp*/**', 'redirector/index/hostile.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
