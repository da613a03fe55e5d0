// Publisher at catalog scale: 1,000 repos from one OCI layout (3 small tags), as real CLI runs
// (what cron does): the first publish, a publish where nothing changed, and --no-fetch. Each is
// printed next to the same run for one repo from the same layout (the fixed cost of a run).
//
//   node dist/scripts/bench/publish-many.js [--repos 1000] [--rounds 3] [--cli PATH]
//
// --cli measures another build of derrick (e.g. the base commit's dist/cli.js) with this script.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { generateImage } from '../gen-image.js';
import { row, type BenchContext, type Row } from './table.js';
import { derrickArgv, median } from './util.js';

const DEFAULT_CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../cli.js');

export interface PublishManyRow {
  what: 'first' | 'no-op' | 'no-fetch';
  /** Wall time of the run for `repos` repos (median over rounds, one round for the first publish). */
  manyMs: number;
  /** The same run for one repo. */
  oneMs: number;
  /** CPU time (user + system) of the many-repo run whose wall time is the median. */
  manyCpuMs: number;
}

export interface PublishManyBench {
  repos: number;
  rounds: number;
  rows: PublishManyRow[];
}

/**
 * CPU time (user + system, ms) of this process's waited-for children, from /proc/self/stat
 * (cutime, cstime); NaN where there is no /proc. On a shared machine wall time follows the
 * neighbours' load, CPU time much less.
 */
function childrenCpuMs(): number {
  try {
    const fields = readFileSync('/proc/self/stat', 'utf8').replace(/^.*\) /s, '').split(' ');
    // After "pid (comm) ", field 3 (state) is index 0: cutime and cstime are fields 16 and 17.
    return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

let lastCpuMs = 0;

/** One real `derrick publish` run; checks it exited 0 and printed one `expect` line per repo. */
function publish(cli: string, config: string, args: string[], repos: number, expect: RegExp): number {
  const cpu0 = childrenCpuMs();
  const t0 = performance.now();
  const r = spawnSync(process.execPath, derrickArgv(cli, 'publish', '-c', config, ...args), { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const ms = performance.now() - t0;
  lastCpuMs = childrenCpuMs() - cpu0;
  if (r.status !== 0) throw new Error(`publish ${args.join(' ')} exited ${r.status}: ${r.stderr.slice(0, 2000)}`);
  const lines = r.stdout.split('\n').filter((l) => expect.test(l)).length;
  if (lines !== repos) throw new Error(`publish ${args.join(' ')}: ${lines} of ${repos} lines match ${expect}: ${r.stdout.slice(0, 500)}`);
  return ms;
}

async function writeConfig(file: string, layoutDir: string, names: string[]): Promise<void> {
  const repos = names.map((n) => `  - name: ${n}\n    from: oci:${layoutDir}\n`).join('');
  await fs.writeFile(file, `root: ./var\nkeep: 1\ngrace: 0s\nrepos:\n${repos}`);
}

export async function benchPublishMany(opts: { repos?: number; rounds?: number; cli?: string } = {}): Promise<PublishManyBench> {
  const repos = opts.repos ?? 1000;
  const rounds = opts.rounds ?? 3;
  const cli = opts.cli ?? DEFAULT_CLI;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-many-'));
  try {
    const layoutDir = path.join(dir, 'layout');
    for (const tag of ['v1', 'v2', 'latest']) await generateImage({ layoutDir, tag, layers: [1024, 2048] });
    const many = path.join(dir, 'many');
    const one = path.join(dir, 'one');
    await fs.mkdir(many);
    await fs.mkdir(one);
    const names = Array.from({ length: repos }, (_, i) => `bench/r${String(i).padStart(4, '0')}`);
    await writeConfig(path.join(many, 'derrick.yaml'), layoutDir, names);
    await writeConfig(path.join(one, 'derrick.yaml'), layoutDir, names.slice(0, 1));
    const run = (which: string, n: number, args: string[], expect: RegExp) => publish(cli, path.join(which, 'derrick.yaml'), args, n, expect);

    const rows: PublishManyRow[] = [];
    const published = /: published /;
    const unchanged = /: unchanged /;
    const oneFirst = run(one, 1, [], published);
    rows.push({ what: 'first', oneMs: oneFirst, manyMs: run(many, repos, [], published), manyCpuMs: lastCpuMs });
    type Runs = { one: number[]; many: Array<[number, number]> };
    const noop: Runs = { one: [], many: [] };
    const noFetch: Runs = { one: [], many: [] };
    for (let i = 0; i < rounds; i++) {
      noop.one.push(run(one, 1, [], unchanged));
      noop.many.push([run(many, repos, [], unchanged), lastCpuMs]);
      noFetch.one.push(run(one, 1, ['--no-fetch'], unchanged));
      noFetch.many.push([run(many, repos, ['--no-fetch'], unchanged), lastCpuMs]);
    }
    const row = (what: PublishManyRow['what'], r: Runs): PublishManyRow => {
      const manyMs = median(r.many.map(([ms]) => ms));
      return { what, oneMs: median(r.one), manyMs, manyCpuMs: r.many.find(([ms]) => ms === manyMs)![1] };
    };
    rows.push(row('no-op', noop), row('no-fetch', noFetch));
    return { repos, rounds, rows };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The no-op publish of 1,000 repos must take at most this long (issue 10). */
export const NOOP_GOAL_MS = 3000;

export function formatPublishMany(b: PublishManyBench): string {
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const load = os.loadavg().map((x) => x.toFixed(1)).join(' ');
  const out = [`publish at scale (real CLI runs, ${b.repos} repos from one OCI layout with 3 tags; median of ${b.rounds} except the first; load average ${load} on ${os.cpus().length} cores)`];
  for (const r of b.rows) {
    const label = { first: 'first publish', 'no-op': 'no-op publish', 'no-fetch': 'no-op --no-fetch' }[r.what];
    const perRepo = (r.manyMs - r.oneMs) / Math.max(1, b.repos - 1);
    let line = `  ${label.padEnd(17)} ${b.repos} repos ${s(r.manyMs).padStart(8)} (cpu ${s(r.manyCpuMs)})   1 repo (baseline) ${s(r.oneMs).padStart(7)}   ${perRepo.toFixed(2)} ms per extra repo`;
    if (r.what === 'no-op' && b.repos === 1000) line += `  (goal <= ${s(NOOP_GOAL_MS)})  ${r.manyMs <= NOOP_GOAL_MS ? 'OK' : 'MISSED'}`;
    out.push(line);
  }
  return out.join('\n');
}

export async function run(ctx: BenchContext): Promise<Row[]> {
  const rounds = ctx.quick ? 1 : 3;
  ctx.log(`publish-many: 1,000 repos from one layout, ${rounds} rounds`);
  const b = await benchPublishMany({ rounds });
  const label = { first: 'first publish', 'no-op': 'no-op publish', 'no-fetch': 'no-op --no-fetch' } as const;
  return b.rows.map((r) =>
    row({
      group: 'publish-many',
      what: `${label[r.what]}, ${b.repos} repos (cpu ${(r.manyCpuMs / 1000).toFixed(2)} s)`,
      figure: r.manyMs,
      unit: 'ms',
      baseline: { what: 'same run for 1 repo', figure: r.oneMs },
      // The goal is on the wall time, not the ratio.
      ...(r.what === 'no-op' && b.repos === 1000 ? { goal: { op: '<=', value: NOOP_GOAL_MS }, judge: 'figure' as const } : {}),
      raw: { ...r, repos: b.repos, rounds: b.rounds },
    }),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { repos: { type: 'string' }, rounds: { type: 'string' }, cli: { type: 'string' } } });
  const b = await benchPublishMany({
    repos: values.repos ? Number(values.repos) : undefined,
    rounds: values.rounds ? Number(values.rounds) : undefined,
    cli: values.cli ? path.resolve(values.cli) : undefined,
  });
  console.log(formatPublishMany(b));
}
