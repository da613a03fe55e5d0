// Mutation testing (issue 12): `npm run mutate`, or one module at a time with
//   npm run mutate -- --mutate 'redirector/access.ts'
// Scores per module are in the README; surviving mutants judged equivalent are in docs/mutation.md.
//
// DERRICK_MUTATE_MODULE=<name> runs one module against the tests beside it only (the way the
// README's scores were measured): with every in-process server test, most mutants are "static"
// (reached from a beforeAll), each one reruns them all, and a module takes hours on 2 cores.
// More tests can only kill more mutants, so a module's own tests give a lower bound.
//   DERRICK_MUTATE_MODULE=publish npm run mutate
const MODULES = {
  access: { mutate: ['redirector/access.ts'], tests: ['redirector/access.test.ts', 'redirector/files.test.ts', 'redirector/v2-handler.test.ts'] },
  v2: { mutate: ['redirector/v2.ts'], tests: ['redirector/v2.test.ts', 'redirector/v2-handler.test.ts'] },
  'pull-through': { mutate: ['redirector/pull-through/**/*.ts'], tests: ['redirector/pull-through/**/*.test.ts'] },
  cache: { mutate: ['shared/cache/**/*.ts'], tests: ['shared/cache/**/*.test.ts'] },
  publish: { mutate: ['shared/publish/**/*.ts'], tests: ['shared/publish/**/*.test.ts'] },
};
const only = process.env.DERRICK_MUTATE_MODULE;
if (only !== undefined && !MODULES[only]) {
  throw new Error(`DERRICK_MUTATE_MODULE=${only}: not one of ${Object.keys(MODULES).join(', ')}`);
}
// Read by vitest.mutate.config.ts in Stryker's test processes, which inherit this environment.
if (only) process.env.DERRICK_MUTATE_TESTS = MODULES[only].tests.join(',');

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutate.config.ts' },
  mutate: [
    ...(only
      ? MODULES[only].mutate
      : ['shared/publish/**/*.ts', 'shared/cache/**/*.ts', 'redirector/v2.ts', 'redirector/pull-through/**/*.ts', 'redirector/access.ts']),
    '!**/*.test.ts',
  ],
  // Per-test coverage: each mutant runs only the tests that reach it.
  coverageAnalysis: 'perTest',
  // Two cores shared with other work: one test process at a time plus the checker.
  concurrency: 2,
  timeoutMS: 30_000,
  // Results are reused across runs for unchanged code and tests; the file is local, not committed.
  incremental: true,
  incrementalFile: `reports/stryker-incremental${only ? `-${only}` : ''}.json`,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  ignorePatterns: ['reports', 'bench/.cache', 'var', '.demo', '.stryker-tmp*'],
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
