// The catalog-scale rows (issue 10) in the bench's table: catalog.ts measures, this maps its
// result onto rows (kept apart so catalog.ts stays the catalog work's own file).
import { benchCatalog } from './catalog.js';
import { row, type BenchContext, type Row } from './table.js';

export async function run(ctx: BenchContext): Promise<Row[]> {
  const repos = ctx.quick ? 1000 : 10_000;
  ctx.log(`catalog: ${repos} repos x 50 tags (the tree is written once into bench/.cache)`);
  const b = await benchCatalog({ repos });
  const g = 'catalog';
  const at = `${b.repos} x ${b.tags}`;
  return [
    row({ group: g, what: `start -> first answer, ${at}`, figure: b.startMs, unit: 'ms', goal: { op: '<=', value: 500 }, raw: b }),
    row({ group: g, what: 'RSS at first answer', figure: b.startRssMb, unit: 'MB', goal: { op: '<=', value: 90 } }),
    row({ group: g, what: `RSS after ${b.gets} GETs of random repos`, figure: b.afterGetsRssMb, unit: 'MB', goal: { op: '<=', value: 120 } }),
    row({ group: g, what: `first request to a cold repo, p99 (${b.coldCount} in ${b.passes} processes)`, figure: b.coldP99Ms, unit: 'ms', baseline: { what: 'warm p50', figure: b.warmP50Ms }, goal: { op: '<=', value: 5 }, judge: 'figure' }),
    // What the machine and the client alone put at a p99 (no server work): read the row above against it.
    row({ group: g, what: `the same GETs against bare node:http, p99 (${b.passes} x ${b.gets})`, figure: b.floorP99Ms, unit: 'ms' }),
    // CPU varies less with what else the machine runs than the p99 does: compare builds by it.
    row({ group: g, what: `serve's CPU per GET of ${b.gets} (random repos, median of ${b.passes})`, figure: b.getsCpuUs, unit: 'us' }),
    row({ group: g, what: `reload swap -> served, p99 (${b.reloads})`, figure: b.reloadP99Ms, unit: 'ms', goal: { op: '<=', value: 50 } }),
    // The goal rows are a restart, as in production once serve has started there once: the first
    // start wrote the name cache. The first start ever is printed beside them, without a goal.
    row({ group: g, what: `crane-data restart, ${b.repos} v4 files (median of ${b.craneRestartsMs.length})`, figure: b.craneStartMs, unit: 'ms', goal: { op: '<=', value: 500 } }),
    row({ group: g, what: 'crane-data RSS at restart', figure: b.craneRssMb, unit: 'MB', goal: { op: '<=', value: 90 } }),
    row({ group: g, what: 'crane-data first start (no name cache)', figure: b.craneFirstStartMs, unit: 'ms', note: `RSS ${b.craneFirstRssMb.toFixed(1)} MB` }),
  ];
}
