// The start-up rows in the bench's table: startup.ts measures, this maps its result onto rows
// (kept apart so startup.ts stays the start-up work's own file).
import { benchStartup } from './startup.js';
import { row, type BenchContext, type Row } from './table.js';

export async function run(ctx: BenchContext): Promise<Row[]> {
  const runs = ctx.quick ? 5 : 10;
  ctx.log(`startup: ${runs} interleaved runs`);
  const s = await benchStartup(runs);
  const node = { what: "node -e ''", figure: s.node.medianMs };
  return [
    row({ group: 'startup', what: 'derrick --help, spawn -> exit (median)', figure: s.help.medianMs, unit: 'ms', baseline: node, goal: { op: '<=', value: 300 }, judge: 'figure', raw: s }),
    row({ group: 'startup', what: 'derrick serve, demo tree, spawn -> 1st answer', figure: s.serve.medianMs, unit: 'ms', baseline: node, goal: { op: '<=', value: 400 }, judge: 'figure' }),
  ];
}
