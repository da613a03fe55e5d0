// `derrick verify`: check each repo's served publish under its lock, print every damaged item on
// its own line, and with --repair republish the damaged repos through the ordinary publish path
// (--force-fetch: re-verify the store, fetch again what it lost, build a new master).
import cliProgress from 'cli-progress';
import path from 'node:path';
import type { Config } from '../shared/config.js';
import { EXIT, UsageError } from '../shared/cli-util.js';
import { TMP_PREFIX, layout as makeLayout, repoNameFromKey, type Layout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { readdirOrEmpty } from '../shared/publish/fsutil.js';
import { LockBusyError, acquireLock } from '../shared/publish/lock.js';
import { removeMasters } from '../shared/publish/retention.js';
import { runPublish } from './run-publish.js';
import { verifyRepo, type Damage, type RepoVerdict, type VerifyOptions } from './verify.js';

export interface VerifyRunOptions {
  config: Config;
  repos?: string[];
  deep?: boolean;
  repair?: boolean;
  waitMs?: number;
  log: Logger;
  /** A progress bar on stderr (a TTY); otherwise only the lines and the summary. */
  progress?: boolean;
  print: (line: string) => void;
}

/** Every repo derrick knows of: the config's, and whatever the published tree names (cache repos too). */
export async function knownRepos(config: Config, l: Layout): Promise<string[]> {
  const names = new Set(config.repos.map((r) => r.name));
  for (const k of await readdirOrEmpty(l.masterRoot)) if (!k.startsWith(TMP_PREFIX)) names.add(repoNameFromKey(k));
  for (const k of await readdirOrEmpty(l.webDir)) if (!k.startsWith(TMP_PREFIX)) names.add(repoNameFromKey(k));
  for (const f of await readdirOrEmpty(l.appDir)) if (!f.startsWith(TMP_PREFIX) && f.endsWith('.json')) names.add(repoNameFromKey(f.slice(0, -5)));
  return [...names].sort();
}

export function damageLine(d: Damage): string {
  return `${d.repo}: ${d.path}: ${d.problem}`;
}

type Checked = { verdict: RepoVerdict } | { busy: string };

async function checkLocked(l: Layout, repo: string, opts: VerifyOptions, waitMs: number): Promise<Checked> {
  let lock;
  try {
    lock = await acquireLock(l.repoLock(repo), `repo ${repo}`, waitMs);
  } catch (err) {
    if (err instanceof LockBusyError) return { busy: err.message };
    throw err;
  }
  try {
    return { verdict: await verifyRepo(l, repo, opts) };
  } finally {
    await lock.release();
  }
}

/**
 * After a republish the damaged repo is served from a sound master, but masters are immutable:
 * an older one that is still damaged (it holds the same corrupt inode, or lost a file) can't be
 * mended, so it goes. A redirect into it would have handed out bad bytes anyway.
 */
async function dropDamagedMasters(l: Layout, v: RepoVerdict, print: (line: string) => void): Promise<void> {
  const served = new Set([v.web, v.app]);
  const doomed = [...new Set(v.damage.map((d) => d.master).filter((m): m is string => !!m && !served.has(m)))];
  await removeMasters(doomed.map((m) => l.master(v.repo, m)));
  for (const m of doomed) print(`${v.repo}: removed damaged earlier master ${path.relative(l.root, l.master(v.repo, m))}`);
}

async function repair(opts: VerifyRunOptions, l: Layout, damaged: RepoVerdict[], vopts: VerifyOptions): Promise<Map<string, Checked>> {
  const { config, print } = opts;
  const after = new Map<string, Checked>();
  const inConfig = damaged.filter((v) => config.repos.some((r) => r.name === v.repo)).map((v) => v.repo);
  for (const v of damaged.filter((x) => !inConfig.includes(x.repo))) {
    print(`error: ${v.repo}: cannot repair: not in ${config.file} repos: (a pull-through cache repo is published again by derrick serve when it is pulled)`);
  }
  if (inConfig.length === 0) return after;
  await runPublish({
    config, repos: inConfig, policy: 'force-fetch', republish: true, waitMs: opts.waitMs, log: opts.log, progress: opts.progress,
    print: (line) => print(line),
  });
  for (const repo of inConfig) {
    const first = await checkLocked(l, repo, vopts, opts.waitMs ?? 0);
    if ('busy' in first || first.verdict.damage.every((d) => !d.master || d.master === first.verdict.web || d.master === first.verdict.app)) {
      after.set(repo, first);
      continue;
    }
    let lock;
    try {
      lock = await acquireLock(l.repoLock(repo), `repo ${repo}`, opts.waitMs ?? 0);
    } catch (err) {
      if (err instanceof LockBusyError) {
        after.set(repo, { busy: err.message });
        continue;
      }
      throw err;
    }
    try {
      await dropDamagedMasters(l, first.verdict, print);
      after.set(repo, { verdict: await verifyRepo(l, repo, vopts) });
    } finally {
      await lock.release();
    }
  }
  return after;
}

function progressBar(enabled: boolean, total: number) {
  if (!enabled) return { tick: (_repo: string) => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { format: 'verify |{bar}| {value}/{total} repos {repo}', stream: process.stderr, hideCursor: true, clearOnComplete: true, fps: 10 },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { repo: '' });
  return { tick: (repo: string) => bar.increment(1, { repo }), stop: () => bar.stop() };
}

/** Runs the command; returns the exit code (0 intact, 1 damage left, 75 busy). */
export async function runVerify(opts: VerifyRunOptions): Promise<number> {
  const { config, print } = opts;
  const l = makeLayout(config.root);
  const known = await knownRepos(config, l);
  const unknown = (opts.repos ?? []).filter((r) => !known.includes(r));
  if (unknown.length) throw new UsageError(`no repo named ${unknown.join(', ')} in ${config.file} repos: or under ${l.publishedDir}`);
  const selected = opts.repos?.length ? [...new Set(opts.repos)].sort() : known;
  const vopts: VerifyOptions = { deep: !!opts.deep, hashes: new Map() };

  const results = new Map<string, Checked>();
  const bar = progressBar(!!opts.progress, selected.length);
  try {
    for (const repo of selected) {
      results.set(repo, await checkLocked(l, repo, vopts, opts.waitMs ?? 0));
      bar.tick(repo);
    }
  } finally {
    bar.stop();
  }
  const verdicts = [...results.values()].flatMap((c) => ('verdict' in c ? [c.verdict] : []));
  for (const c of results.values()) if ('busy' in c) print(`error: ${c.busy}`);
  for (const v of verdicts) for (const d of v.damage) print(damageLine(d));
  const damaged = verdicts.filter((v) => v.damage.length);
  const found = damaged.reduce((n, v) => n + v.damage.length, 0);
  const masters = verdicts.reduce((n, v) => n + (v.published ? v.masters.length : 0), 0);
  const files = verdicts.reduce((n, v) => n + v.files, 0);
  const busy = [...results.values()].filter((c) => 'busy' in c).length;
  const checked = `${verdicts.filter((v) => v.published).length} published repos, ${masters} masters, ${files} files ${opts.deep ? 'hashed' : 'checked'}`;
  print(`verify: ${checked}: ${found ? `${found} damaged items in ${damaged.length} repos` : 'intact'}${busy ? `; ${busy} busy` : ''}`);
  if (!opts.repair || damaged.length === 0) return found ? EXIT.failed : busy ? EXIT.busy : EXIT.ok;

  const after = await repair(opts, l, damaged, vopts);
  let left = 0;
  let repaired = 0;
  let busyAfter = busy;
  for (const v of damaged) {
    const a = after.get(v.repo);
    if (!a) left += v.damage.length;
    else if ('busy' in a) {
      busyAfter++;
      left += v.damage.length;
      print(`error: ${a.busy}`);
    } else if (a.verdict.damage.length) {
      left += a.verdict.damage.length;
      for (const d of a.verdict.damage) print(`still damaged: ${damageLine(d)}`);
    } else {
      repaired++;
      print(`${v.repo}: repaired ${v.damage.length} damaged items; served from ${a.verdict.web}`);
    }
  }
  print(`verify --repair: ${repaired} of ${damaged.length} damaged repos repaired${left ? `; ${left} damaged items left` : ''}`);
  return left ? EXIT.failed : busyAfter ? EXIT.busy : EXIT.ok;
}
