// The pull soak: 20 concurrent pull loops (resolve the tag, GET the manifest, follow every blob
// redirect, verify every digest and size) while a publisher moves tags and runs the real
// `derrick publish` over and over and `derrick gc` runs now and then; against embedded blobs,
// nginx blobs (the printed `derrick nginx-conf` under real nginx), and a pull-through route whose
// docker-registry upstream is killed and restarted. The duration is split over the scenarios.
//
//   npm run soak -- --duration 60s [--loops 20] [--modes embedded,nginx,pull-through] [--workers N]
//
// Prints `pulls N, failed 0, digest mismatches 0, publishes M, gc runs G`; exits 1 on any failure.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration } from '../shared/units.js';
import { runScenario, type ScenarioResult, type SoakMode } from './soak/scenario.js';

export type { SoakMode, ScenarioResult };

export interface SoakOptions {
  durationMs: number;
  loops?: number;
  modes?: SoakMode[];
  /** How often `derrick gc` runs (default: a fifth of each scenario, at least 1 s). */
  gcEveryMs?: number;
  /** serve --workers per scenario (default 1: one process). */
  workers?: Partial<Record<SoakMode, number>>;
  log?: (line: string) => void;
}

export interface SoakResult {
  pulls: number;
  failed: number;
  digestMismatches: number;
  publishes: number;
  gcRuns: number;
  stale: number;
  upstreamRestarts: number;
  scenarios: ScenarioResult[];
  errors: string[];
}

export const ALL_MODES: SoakMode[] = ['embedded', 'nginx', 'pull-through'];

export function summaryLine(r: Pick<SoakResult, 'pulls' | 'failed' | 'digestMismatches' | 'publishes' | 'gcRuns'>): string {
  return `pulls ${r.pulls}, failed ${r.failed}, digest mismatches ${r.digestMismatches}, publishes ${r.publishes}, gc runs ${r.gcRuns}`;
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const modes = opts.modes ?? ALL_MODES;
  const per = Math.floor(opts.durationMs / modes.length);
  const gcEvery = opts.gcEveryMs ?? Math.max(1000, Math.floor(per / 5));
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-soak-'));
  const scenarios: ScenarioResult[] = [];
  try {
    for (const mode of modes) {
      const r = await runScenario(mode, path.join(work, mode), per, opts.loops ?? 20, gcEvery, opts.workers?.[mode] ?? 1);
      scenarios.push(r);
      opts.log?.(`${mode}${r.workers > 1 ? ` (${r.workers} workers)` : ''}: ${summaryLine(r)}, stale answers ${r.stale}${mode === 'pull-through' ? `, upstream restarts ${r.upstreamRestarts}` : ''}`);
    }
  } finally {
    await fs.rm(work, { recursive: true, force: true, maxRetries: 3 });
  }
  const sum = (k: 'pulls' | 'failed' | 'digestMismatches' | 'publishes' | 'gcRuns' | 'stale' | 'upstreamRestarts') => scenarios.reduce((n, s) => n + s[k], 0);
  return {
    pulls: sum('pulls'),
    failed: sum('failed'),
    digestMismatches: sum('digestMismatches'),
    publishes: sum('publishes'),
    gcRuns: sum('gcRuns'),
    stale: sum('stale'),
    upstreamRestarts: sum('upstreamRestarts'),
    scenarios,
    errors: scenarios.flatMap((s) => s.errors.map((e) => `${s.mode}: ${e}`)),
  };
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '60s' },
      loops: { type: 'string', default: '20' },
      modes: { type: 'string', default: ALL_MODES.join(',') },
      workers: { type: 'string', default: '1' },
    },
  });
  const durationMs = parseDuration(values.duration);
  const loops = Number(values.loops);
  const modes = values.modes.split(',') as SoakMode[];
  if (durationMs === null || durationMs <= 0) return usage(`--duration "${values.duration}" is not a duration (e.g. 60s)`);
  if (!Number.isInteger(loops) || loops < 1) return usage(`--loops "${values.loops}" is not a positive integer`);
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1) return usage(`--workers "${values.workers}" is not a positive integer`);
  const unknown = modes.filter((m) => !ALL_MODES.includes(m));
  if (unknown.length) return usage(`--modes: unknown ${unknown.join(', ')} (known: ${ALL_MODES.join(', ')})`);
  const r = await runSoak({ durationMs, loops, modes, workers: Object.fromEntries(modes.map((m) => [m, workers])), log: (l) => console.log(l) });
  for (const e of r.errors) console.error(`error: ${e}`);
  console.log(summaryLine(r));
  return r.failed === 0 && r.digestMismatches === 0 ? 0 : 1;
}

function usage(msg: string): number {
  console.error(`soak: ${msg}`);
  return 2;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
