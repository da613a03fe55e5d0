// The node flags derrick runs with: cli.ts's shebang passes them (`env -S`), `serve --workers`
// gives them to every worker, and the bench starts derrick with them, as the installed bin runs.
//
// --v8-pool-size=1: one V8 helper thread instead of four. derrick's heap is small (tens of MB),
// so GC and compilation gain little from more helpers, and on a 2-core machine four of them
// compete with the request path: a parallel scavenge or marking step that waits for a helper
// thread the kernel has not scheduled stalls every request behind it. Measured on the catalog
// bench (10,000 x 50, first request to a cold repo, 15 alternating runs): p99 median 5.8 ms with
// the default pool, 4.4 ms with one thread (issue 10). (Turning parallel GC off by flag instead
// crashes node 20's V8 in a mark-compact, and setting any of these at run time is unsupported.)
export const NODE_FLAGS: readonly string[] = ['--v8-pool-size=1'];

/** `execArgv` with every flag of NODE_FLAGS that is missing added (an operator's own value wins). */
export function withNodeFlags(execArgv: readonly string[]): string[] {
  const named = (f: string) => f.split('=')[0]!;
  const have = new Set(execArgv.map(named));
  return [...execArgv, ...NODE_FLAGS.filter((f) => !have.has(named(f)))];
}
