// Which masters a repo keeps, and the debris a killed run leaves behind.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Layout } from '../layout.js';
import { MASTER_NAME_RE, TMP_PREFIX, masterNameDate, repoKey } from '../layout.js';
import { currentPublish, type CurrentPublish } from './current.js';
import { fsyncDir, isPidAlive, readdirOrEmpty, readdirOrEmptySync, tmpName, tmpNamePid } from './fsutil.js';

export interface RetentionPlan {
  keep: string[];
  /** Masters to delete, with why. */
  remove: Array<{ master: string; why: string }>;
}

/**
 * Keeps the served masters, plus `keep` earlier ones. An older master goes only once it has
 * been out of service for longer than `graceMs`, so a redirect handed out just before a swap
 * still resolves (invariant 5). A master is out of service from the time its successor was
 * built, which is its successor's name; that errs early only by the successor's build time.
 */
export async function planRetention(
  l: Layout, name: string, keep: number, graceMs: number, now: Date,
  /** The master dir's listing and the symlinks, when the caller has just read them. */
  known?: { names: string[]; cur: CurrentPublish },
): Promise<RetentionPlan> {
  const masters = (known?.names ?? (await readdirOrEmpty(l.masterDir(name)))).filter((n) => MASTER_NAME_RE.test(n)).sort();
  const cur = known?.cur ?? (await currentPublish(l, name));
  const served = new Set([cur.web, cur.app].filter((m): m is string => !!m));
  const plan: RetentionPlan = { keep: [], remove: [] };
  if (!cur.web) {
    // Nothing was ever swapped in: every master is an orphan of a killed first run.
    for (const m of masters) plan.remove.push({ master: m, why: 'never served' });
    return plan;
  }
  const oldestServed = [...served].sort()[0]!;
  const earlier = masters.filter((m) => m < oldestServed);
  const kept = new Set(earlier.slice(Math.max(0, earlier.length - keep)));
  masters.forEach((m, i) => {
    if (served.has(m) || kept.has(m)) return void plan.keep.push(m);
    if (m > cur.web!) return void plan.remove.push({ master: m, why: 'never served' });
    const successor = masters[i + 1]!;
    const outFor = now.getTime() - masterNameDate(successor).getTime();
    if (outFor > graceMs) plan.remove.push({ master: m, why: `out of service ${Math.round(outFor / 1000)}s` });
    else plan.keep.push(m);
  });
  return plan;
}

/**
 * The listings of the directories every repo shares (web/, app/, store/repos/). A run over many
 * repos reads them once instead of once per repo: with 1,000 repos that was 3,000 reads of
 * 1,000-entry directories. Debris that appears after the listing is the next run's to remove.
 */
export interface SharedListings {
  web: string[];
  app: string[];
  repoStates: string[];
}

export async function readSharedListings(l: Layout): Promise<SharedListings> {
  const [web, app, repoStates] = await Promise.all([readdirOrEmpty(l.webDir), readdirOrEmpty(l.appDir), readdirOrEmpty(l.repoStateDir)]);
  // Only temp names can be debris; keep just those.
  return { web: web.filter((n) => n.startsWith(TMP_PREFIX)), app: app.filter((n) => n.startsWith(TMP_PREFIX)), repoStates: repoStates.filter((n) => !n.endsWith('.json')) };
}

/**
 * Temp masters, temp symlinks and temp repo states of this repo whose writer is gone. Call with
 * the repo lock held; `shared` is a listing made earlier in this run (read now when absent).
 */
export async function findDebris(l: Layout, name: string, shared?: SharedListings, masterNames?: string[]): Promise<string[]> {
  const key = repoKey(name);
  const out: string[] = [];
  const lists = shared ?? (await readSharedListings(l));
  for (const n of masterNames ?? readdirOrEmptySync(l.masterDir(name))) {
    if (n.startsWith(TMP_PREFIX)) out.push(path.join(l.masterDir(name), n));
  }
  for (const [dir, names, prefix] of [[l.webDir, lists.web, `${TMP_PREFIX}${key}.`], [l.appDir, lists.app, `${TMP_PREFIX}${key}.json.`]] as const) {
    for (const n of names) {
      const pid = tmpNamePid(n);
      if (n.startsWith(prefix) && (pid === undefined || !isPidAlive(pid))) out.push(path.join(dir, n));
    }
  }
  // write-file-atomic's temp for the repo state (<key>.json.<number>) names no pid; under the
  // repo lock nobody else writes this repo's state, so any such file is a killed writer's.
  const stateTmp = `${key}.json.`;
  for (const n of lists.repoStates) {
    if (n.startsWith(stateTmp) && /^\d+$/.test(n.slice(stateTmp.length))) out.push(path.join(l.repoStateDir, n));
  }
  return out;
}

export async function removeAll(paths: string[]): Promise<void> {
  for (const p of paths) await fs.rm(p, { recursive: true, force: true });
}

/**
 * Deletes masters so that none is ever seen half-deleted under its real name: each is first
 * renamed to a temp name (debris for the next run if this one dies), then removed. `derrick
 * verify` relies on it: a master under a real name is complete, or it is damage.
 */
export async function removeMasters(dirs: string[]): Promise<void> {
  const parents = new Set<string>();
  for (const dir of dirs) {
    const doomed = tmpName(path.dirname(dir), `rm.${path.basename(dir)}`);
    try {
      await fs.rename(dir, doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    parents.add(path.dirname(dir));
    await fs.rm(doomed, { recursive: true, force: true });
  }
  for (const p of parents) await fsyncDir(p);
}
