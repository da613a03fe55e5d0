// A crane data dir's names, remembered across restarts: for each regular file, the stat that
// identifies its content and what its head said (the repo it serves, protected or not). A restart
// lstats every file and reads the head only of a file whose stat changed: for 10,000 files, about
// 150 ms of CPU in a fresh process (40 of it the lstat calls) instead of 300-350 ms of reading and
// scanning every head.
//
// The cache is a hint, never an authority. An entry is used only for a file at the same path
// whose (dev, ino, size, mtime, ctime) are exactly the ones recorded, and the full parse of a file
// on its repo's first load still checks the name it serves (loader.ts). An unreadable, foreign or
// malformed cache is ignored, and the scan writes a new one. ctime is part of the key because no
// writer can set it: a copy that keeps the size and restores the mtime (cp -p, rsync -t writing
// in place) still changes it. Timestamps are as coarse as the kernel's tick, so a file rewritten
// in the same tick as our read would keep its key: an entry is recorded only when the file's times
// are SETTLE_MS older than the read (git's "racy clean" rule), else the next start reads it again.
//
// The file lives under <root>/store/crane-names/ (layout.craneNamesDir), never served, one per
// crane dir (named by a hash of its real path), so two configs sharing a root don't overwrite
// each other's. Serve workers scan at once and may all write it: each writes a whole file under a
// temp name and renames it into place, so a reader sees one complete version or another. No
// fsync: a cache lost or torn by a crash is unreadable JSON, ignored, and costs one slow start.
import crypto from 'node:crypto';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { TMP_PREFIX } from '../../shared/layout.js';
import { isValidName } from '../../shared/oci.js';
import { isPidAlive, tmpName, tmpNamePid } from '../../shared/publish/fsutil.js';

/**
 * Every cached file, sorted by path (relative to the crane dir's real path; the order the scan
 * lists them in): the stat its head was read under (dev, ino, size, mtimeMs, ctimeMs, five numbers
 * per file in `stats`) and what the head said. Stored by column: JSON.parse makes four arrays and
 * one array of plain doubles, not 10,000 small arrays of boxed numbers to collect.
 */
export interface CraneCache {
  rels: string[];
  names: string[];
  protected: boolean[];
  stats: number[];
}

const FORMAT = 'derrick crane-names 2';
const STAT_FIELDS = 5;

/** A file's times must be this much older than the read for its entry to be kept (see the top). */
export const SETTLE_MS = 2000;

export const emptyCache = (): CraneCache => ({ rels: [], names: [], protected: [], stats: [] });

/** The cache file of the crane dir at `realDir`, in `cacheDir` (layout.craneNamesDir). */
export function craneCacheFile(cacheDir: string, realDir: string): string {
  return path.join(cacheDir, `${crypto.createHash('sha256').update(realDir).digest('hex').slice(0, 16)}.json`);
}

export function addEntry(c: CraneCache, rel: string, st: Stats, name: string, isProtected: boolean): void {
  c.rels.push(rel);
  c.names.push(name);
  c.protected.push(isProtected);
  c.stats.push(st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs);
}

/** Entry `i` of `from`, added to `to` as it is. */
export function copyEntry(to: CraneCache, from: CraneCache, i: number): void {
  to.rels.push(from.rels[i]!);
  to.names.push(from.names[i]!);
  to.protected.push(from.protected[i]!);
  for (let f = i * STAT_FIELDS; f < (i + 1) * STAT_FIELDS; f++) to.stats.push(from.stats[f]!);
}

/** Whether the file is still the one entry `i` was read from (same inode, size and times). */
export function isUnchanged(c: CraneCache, i: number, st: Stats): boolean {
  const s = c.stats;
  const f = i * STAT_FIELDS;
  return s[f + 1] === st.ino && s[f + 3] === st.mtimeMs && s[f + 4] === st.ctimeMs && s[f + 2] === st.size && s[f] === st.dev;
}

/** Whether a head read at `readAt` may be recorded: no later write can share the file's times. */
export function isSettled(st: Stats, readAt: number): boolean {
  return readAt - Math.max(st.mtimeMs, st.ctimeMs) > SETTLE_MS;
}

/**
 * Looks entries up by path for a scan that goes through its sorted listing backwards (listing.ts):
 * one pass down the sorted cache, no map of 10,000 paths. -1: not cached.
 */
export function cacheCursor(c: CraneCache): (rel: string) => number {
  let i = c.rels.length - 1;
  return (rel) => {
    while (i >= 0 && c.rels[i]! > rel) i--;
    return i >= 0 && c.rels[i] === rel ? i : -1;
  };
}

/** `v` as a list of `n` entries of type `type`, or an error naming the first that is not. */
function listOf<T>(v: unknown, n: number, what: string, type: 'string' | 'boolean' | 'number'): T[] {
  if (!Array.isArray(v) || v.length !== n) throw new Error(`${what}: not a list of ${n}`);
  // A plain loop: this runs once per start over 50,000 values, before the code is optimised.
  for (let i = 0; i < n; i++) {
    const e: unknown = v[i];
    if (typeof e !== type || (type === 'number' && !Number.isFinite(e))) throw new Error(`${what}: a malformed entry ${JSON.stringify(e)?.slice(0, 200)}`);
  }
  return v as T[];
}

/**
 * The cache of the crane dir at `realDir`, or an empty one when the file is missing, unreadable,
 * of another format or another dir, or malformed anywhere (a file that is wrong in one place is
 * not trusted in the others). `onIgnored` says why a present file was not used.
 */
export async function readCraneCache(file: string, realDir: string, onIgnored?: (why: string) => void): Promise<CraneCache> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') onIgnored?.((err as Error).message);
    return emptyCache();
  }
  try {
    const doc = JSON.parse(text) as Record<string, unknown> | null;
    if (doc?.format !== FORMAT) throw new Error('not a derrick crane-names file of this version');
    if (doc.dir !== realDir) throw new Error(`made for ${JSON.stringify(doc.dir)}`);
    const n = Array.isArray(doc.rels) ? doc.rels.length : -1;
    const rels = listOf<string>(doc.rels, n, 'rels', 'string');
    for (let i = 1; i < n; i++) if (!(rels[i - 1]! < rels[i]!)) throw new Error(`rels: not sorted at ${JSON.stringify(rels[i])}`);
    const names = listOf<string>(doc.names, n, 'names', 'string');
    for (const name of names) if (!isValidName(name)) throw new Error(`names: ${JSON.stringify(name)} is not a repository name`);
    return {
      rels,
      names,
      protected: listOf<boolean>(doc.protected, n, 'protected', 'boolean'),
      stats: listOf<number>(doc.stats, n * STAT_FIELDS, 'stats', 'number'),
    };
  } catch (err) {
    onIgnored?.((err as Error).message);
    return emptyCache();
  }
}

/** Replaces the cache file atomically (temp + rename); temps left by dead processes are removed. */
export async function writeCraneCache(file: string, realDir: string, cache: CraneCache): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const order = cache.rels.map((_, i) => i).sort((a, b) => (cache.rels[a]! < cache.rels[b]! ? -1 : cache.rels[a]! > cache.rels[b]! ? 1 : 0));
  const sorted = emptyCache();
  for (const i of order) copyEntry(sorted, cache, i);
  const tmp = tmpName(dir, 'crane-names');
  try {
    await fs.writeFile(tmp, JSON.stringify({ format: FORMAT, dir: realDir, ...sorted }) + '\n');
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  for (const n of await fs.readdir(dir).catch(() => [] as string[])) {
    const pid = n.startsWith(TMP_PREFIX) ? tmpNamePid(n) : undefined;
    if (pid !== undefined && !isPidAlive(pid)) await fs.rm(path.join(dir, n), { force: true });
  }
}
