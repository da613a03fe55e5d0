// Mutation testing (issue 12): `npm run mutate`, or one module at a time with
//   npm run mutate -- --mutate 'redirector/access.ts'
// Scores per module are in the README; surviving mutants judged equivalent are in docs/mutation.md.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutate.config.ts' },
  mutate: [
    'shared/publish/**/*.ts',
    'shared/cache/**/*.ts',
    'redirector/v2.ts',
    'redirector/pull-through/**/*.ts',
    'redirector/access.ts',
    '!**/*.test.ts',
  ],
  // Per-test coverage: each mutant runs only the tests that reach it.
  coverageAnalysis: 'perTest',
  // Two cores shared with other work: one test process at a time plus the checker.
  concurrency: 2,
  timeoutMS: 30_000,
  // Results are reused across runs for unchanged code and tests; the file is local, not committed.
  incremental: true,
  incrementalFile: 'reports/stryker-incremental.json',
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  ignorePatterns: ['reports', 'bench/.cache', 'var', '.demo', '.stryker-tmp*'],
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
