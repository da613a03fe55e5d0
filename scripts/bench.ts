// `npm run bench [-- [--quick] [--out FILE] ROW...]`: one table, every figure next to a baseline
// measured in the same run, written with the machine's facts to bench/results.json (a run of some
// rows only writes bench/results-partial.json unless --out says otherwise).
//
// A row module is scripts/bench/<name>.ts exporting `run(ctx): Promise<Row[]>` (scripts/bench/
// table.ts); add its name to MODULES below. A module that is not in the tree (a row another branch
// adds) is listed as SKIPPED, so the table names it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gitCommit, machineFacts } from './bench/machine.js';
import { stopAll } from './bench/servers.js';
import { formatTable, missingTool, skipped, type BenchContext, type BenchModule, type Row } from './bench/table.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '../..');

/** Row modules in table order, with the tools each needs (a missing one skips its rows). */
const MODULES: Array<{ name: string; file: string; tools: string[] }> = [
  { name: 'serve', file: 'serve', tools: [] },
  { name: 'workers', file: 'workers', tools: ['wrk'] },
  { name: 'publish', file: 'publish', tools: [] },
  { name: 'publish-many', file: 'publish-many', tools: [] },
  { name: 'cold-publish', file: 'cold-publish', tools: ['skopeo', '/usr/bin/docker-registry'] },
  { name: 'pull-through', file: 'pull-through', tools: ['skopeo', '/usr/bin/docker-registry'] },
  { name: 'long-link', file: 'long-link', tools: ['skopeo', '/usr/bin/docker-registry'] },
  { name: 'single-flight', file: 'single-flight', tools: ['skopeo', '/usr/bin/docker-registry'] },
  { name: 'catalog', file: 'catalog-row', tools: [] },
  { name: 'startup', file: 'startup-row', tools: [] },
  { name: 'push', file: 'push', tools: ['rsync'] },
];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { quick: { type: 'boolean', default: false }, out: { type: 'string' }, list: { type: 'boolean', default: false } },
});
if (values.list) {
  for (const m of MODULES) console.log(m.name);
  process.exit(0);
}
const unknown = positionals.filter((p) => !MODULES.some((m) => m.name === p));
if (unknown.length) {
  console.error(`bench: unknown row ${unknown.join(', ')}; rows are: ${MODULES.map((m) => m.name).join(' ')}`);
  process.exit(2);
}
const selected = positionals.length ? MODULES.filter((m) => positionals.includes(m.name)) : MODULES;
const out = path.resolve(values.out ?? path.join(REPO_ROOT, 'bench', positionals.length ? 'results-partial.json' : 'results.json'));

// Ctrl-C or a kill: stop every server the rows started (by pid) before leaving.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => void stopAll().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143)));
}

const ctx: BenchContext = { quick: values.quick!, log: (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`) };
const started = new Date();
const machine = machineFacts();
const rows: Row[] = [];
const timings: Record<string, number> = {};

for (const m of selected) {
  const missing = missingTool(m.tools);
  if (missing) {
    rows.push(skipped(m.name, 'all rows', `${missing} is not installed`));
    continue;
  }
  let mod: BenchModule | undefined;
  try {
    mod = (await import(`./bench/${m.file}.js`)) as BenchModule;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
  }
  if (!mod?.run) {
    rows.push(skipped(m.name, 'all rows', `scripts/bench/${m.file}.ts is not in this tree`));
    continue;
  }
  const t0 = performance.now();
  ctx.log(`${m.name}: start`);
  try {
    rows.push(...(await mod.run(ctx)));
  } catch (err) {
    rows.push({ group: m.name, what: 'run', figure: NaN, unit: '', status: 'FAILED', note: (err as Error).message.split('\n')[0] });
    console.error(err);
  } finally {
    await stopAll();
  }
  timings[m.name] = Math.round(performance.now() - t0);
  ctx.log(`${m.name}: ${(timings[m.name]! / 1000).toFixed(0)} s`);
}

machine.loadAtEnd = (await import('node:os')).loadavg();
const durationS = (Date.now() - started.getTime()) / 1000;
const command = `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`;
console.log(`derrick bench, ${started.toISOString()}, ${machine.cpus} x ${machine.cpuModel}, ${(machine.ramBytes / 2 ** 30).toFixed(1)} GiB, node ${machine.node}, load ${machine.loadAtStart.map((x) => x.toFixed(1)).join(' ')} -> ${machine.loadAtEnd.map((x) => x.toFixed(1)).join(' ')}, ${durationS.toFixed(0)} s`);
console.log(formatTable(rows));
await fs.mkdir(path.dirname(out), { recursive: true });
await fs.writeFile(out, JSON.stringify({ date: started.toISOString(), command, git: gitCommit(), machine, durationS, moduleMs: timings, rows }, null, 1) + '\n');
console.log(`results: ${path.relative(process.cwd(), out)}`);
process.exit(rows.some((r) => r.status === 'FAILED') ? 1 : 0);
