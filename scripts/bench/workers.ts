// Workers benchmark: blob GET -> redirect req/s of `derrick serve --workers 1` and `--workers 2`
// on the same published tree, in the same run (interleaved rounds, medians), and their ratio. On
// the 2-core machine the load generator (wrk, one thread) runs beside the servers.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateImage } from '../gen-image.js';
import { derrickArgv, freePort, loadTest, median, startNode, stop } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');

export interface WorkersBench {
  tool: string;
  oneWorkerRps: number;
  twoWorkersRps: number;
  /** twoWorkersRps / oneWorkerRps; the goal is >= 1.3. */
  ratio: number;
  errors: number;
  seconds: number;
  rounds: number;
}

export async function benchWorkers(seconds = 3, rounds = 3): Promise<WorkersBench> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-workers-'));
  const children = [];
  try {
    const images = path.join(dir, 'images');
    const img = await generateImage({ layoutDir: images, tag: 'latest', layers: [4096] });
    const config = path.join(dir, 'derrick.yaml');
    await fs.writeFile(config, `root: ./var\nkeep: 1\ngrace: 1m\nrepos:\n  - name: bench/app\n    from: oci:${images}\n`);
    const pub = spawnSync(process.execPath, derrickArgv(CLI, 'publish', '-c', config), { encoding: 'utf8' });
    if (pub.status !== 0) throw new Error(pub.stderr);

    const urls: string[] = [];
    for (const workers of [1, 2]) {
      const port = await freePort();
      children.push(await startNode(derrickArgv(CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`, '--workers', String(workers)), /listening/));
      urls.push(`http://127.0.0.1:${port}/v2/bench/app/blobs/${img.blobs.at(-1)}`);
    }
    const [one, two] = urls as [string, string];
    // Warm up (JIT in every worker) before measuring.
    await loadTest(one, 1);
    await loadTest(two, 1);
    const oneRuns = [];
    const twoRuns = [];
    for (let i = 0; i < rounds; i++) {
      oneRuns.push(await loadTest(one, seconds));
      twoRuns.push(await loadTest(two, seconds));
    }
    const oneWorkerRps = median(oneRuns.map((r) => r.rps));
    const twoWorkersRps = median(twoRuns.map((r) => r.rps));
    return {
      tool: oneRuns[0]!.tool,
      oneWorkerRps,
      twoWorkersRps,
      ratio: twoWorkersRps / oneWorkerRps,
      errors: [...oneRuns, ...twoRuns].reduce((a, r) => a + r.errors, 0),
      seconds,
      rounds,
    };
  } finally {
    for (const c of children) await stop(c);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export function formatWorkers(w: WorkersBench): string {
  const f = (n: number) => n.toFixed(0);
  return [
    `workers (blob GET -> 307, ${w.tool}, 32 connections, median of ${w.rounds} interleaved ${w.seconds} s runs, ${os.availableParallelism()} CPUs)`,
    `  serve --workers 1 (baseline): ${f(w.oneWorkerRps)} req/s`,
    `  serve --workers 2:            ${f(w.twoWorkersRps)} req/s  ratio ${w.ratio.toFixed(2)}x (goal >= 1.3x)  ${w.ratio >= 1.3 ? 'OK' : 'MISSED'}`,
    `  errors: ${w.errors}`,
  ].join('\n');
}

/** The workers row of `npm run bench` (scripts/bench/table.ts). */
export async function run(ctx: import('./table.js').BenchContext): Promise<import('./table.js').Row[]> {
  const { row } = await import('./table.js');
  ctx.log('workers: serve --workers 1 vs 2, interleaved wrk runs');
  const w = await benchWorkers(ctx.quick ? 2 : 3, ctx.quick ? 2 : 3);
  return [
    row({
      group: 'workers', what: 'blob GET -> 307, serve --workers 2', figure: w.twoWorkersRps, unit: 'req/s',
      baseline: { what: '--workers 1', figure: w.oneWorkerRps }, goal: { op: '>=', value: 1.3 }, raw: w,
      note: w.errors ? `${w.errors} errors` : undefined,
    }),
  ];
}
