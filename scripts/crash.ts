// The crash loop at scale: SIGKILL `derrick publish`, `derrick gc` and a pull-through commit
// (`derrick serve` filling from a real docker-registry) at random instants and at their critical
// moments; after each kill check the tree's invariants and run `derrick verify`.
//
//   npm run crash -- --kills 200 [--targets publisher,gc,pull-through] [--verify-every 1]
//
// Prints one line per target and `kills N, broken states B`; exits 1 on any broken state.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { gcTarget } from './crash/gc.js';
import { runLoop, type TargetResult } from './crash/loop.js';
import { publisherTarget } from './crash/publisher.js';
import { pullThroughTarget } from './crash/pull-through.js';
import type { CrashTarget, TargetName } from './crash/target.js';

export type { TargetResult, TargetName };
export const ALL_TARGETS: TargetName[] = ['publisher', 'gc', 'pull-through'];
/** How the kills are shared: the publisher has the most moments worth hitting. */
const SHARE: Record<TargetName, number> = { publisher: 0.5, gc: 0.25, 'pull-through': 0.25 };

export interface CrashOptions {
  kills: number;
  targets?: TargetName[];
  /** Kills per target; overrides the share of `kills`. */
  perTarget?: Partial<Record<TargetName, number>>;
  verifyCliEvery?: number;
  hashEvery?: number;
  /** Smaller images for a short run (npm test). */
  small?: boolean;
  log?: (line: string) => void;
}

export interface CrashResult {
  kills: number;
  broken: number;
  targets: TargetResult[];
}

export function summaryLine(r: Pick<CrashResult, 'kills' | 'broken'>): string {
  return `kills ${r.kills}, broken states ${r.broken}`;
}

/** Splits `kills` over the targets by their share; the rounding remainder goes to the first. */
export function splitKills(kills: number, targets: TargetName[]): Record<string, number> {
  const total = targets.reduce((s, t) => s + SHARE[t], 0);
  const out: Record<string, number> = {};
  for (const t of targets) out[t] = Math.floor((kills * SHARE[t]) / total);
  out[targets[0]!]! += kills - Object.values(out).reduce((a, b) => a + b, 0);
  return out;
}

async function makeTarget(name: TargetName, dir: string, kills: number, small: boolean): Promise<CrashTarget> {
  const MiB = 1024 * 1024;
  if (name === 'publisher') return publisherTarget(dir, small ? { kills, baseLayers: [3 * MiB, 2 * MiB], roundLayers: [MiB, 256 * 1024] } : { kills });
  if (name === 'gc') return gcTarget(dir, { kills });
  return pullThroughTarget(dir, { kills, layers: small ? [512 * 1024, 128 * 1024] : undefined });
}

export async function runCrash(o: CrashOptions): Promise<CrashResult> {
  const targets = o.targets ?? ALL_TARGETS;
  const split = { ...splitKills(o.kills, targets), ...o.perTarget };
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-crash-'));
  const results: TargetResult[] = [];
  try {
    for (const name of targets) {
      const t = await makeTarget(name, path.join(work, name), split[name]!, o.small ?? false);
      try {
        results.push(await runLoop(t, { kills: split[name]!, verifyCliEvery: o.verifyCliEvery, hashEvery: o.hashEvery, log: o.log }));
      } finally {
        await t.stop();
      }
    }
  } finally {
    await fs.rm(work, { recursive: true, force: true, maxRetries: 3 });
  }
  return { kills: results.reduce((s, r) => s + r.kills, 0), broken: results.reduce((s, r) => s + r.broken, 0), targets: results };
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { kills: { type: 'string', default: '200' }, targets: { type: 'string', default: ALL_TARGETS.join(',') }, 'verify-every': { type: 'string', default: '1' } },
  });
  const kills = Number(values.kills);
  const every = Number(values['verify-every']);
  const targets = values.targets.split(',') as TargetName[];
  if (!Number.isInteger(kills) || kills < targets.length) return usage(`--kills "${values.kills}" must be an integer of at least ${targets.length}`);
  if (!Number.isInteger(every) || every < 1) return usage(`--verify-every "${values['verify-every']}" is not a positive integer`);
  const unknown = targets.filter((t) => !ALL_TARGETS.includes(t));
  if (unknown.length) return usage(`--targets: unknown ${unknown.join(', ')} (known: ${ALL_TARGETS.join(', ')})`);
  const r = await runCrash({ kills, targets, verifyCliEvery: every, log: (l) => console.log(l) });
  for (const t of r.targets) for (const p of t.problems) console.error(`broken: ${p}`);
  console.log(summaryLine(r));
  return r.broken === 0 && r.kills >= kills ? 0 : 1;
}

function usage(msg: string): number {
  console.error(`crash: ${msg}`);
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
