// The tests `npm run mutate` (StrykerJS) runs against each mutant: those that load the mutated
// modules in the test process itself (unit tests beside the code, and the in-process server tests).
// Tests that drive the built CLI in a child process run dist/, which Stryker does not mutate, so
// they could only slow a mutation run down, never kill a mutant.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: [
      'shared/**/*.test.ts',
      'redirector/**/*.test.ts',
      'test/serve-api.test.ts',
      'test/serve-behaviour.test.ts',
    ],
    exclude: ['dist/**', 'node_modules/**', '.stryker-tmp/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
