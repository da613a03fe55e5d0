// A crane data dir's names, remembered across restarts: for each regular file, the stat that
// identifies its content and what its head said (the repo it serves, protected or not). A restart
// lstats every file and reads the head only of a file whose stat changed: for 10,000 files, about
// 50 ms of lstat instead of about 300 ms of reading and scanning heads.
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
 * One file: its path relative to the crane dir's real path, the stat it was read under
 * (dev, ino, size, mtimeMs, ctimeMs), and what its head said (the repo it serves, protected or
 * not). Kept as the tuple it is stored as: a restart of 10,000 files builds no other object.
 */
export type CachedHead = [rel: string, dev: number, ino: number, size: number, mtimeMs: number, ctimeMs: number, name: string, isProtected: boolean];

/** Every cached file, sorted by path (the order the scan lists them in). */
export type CraneCache = CachedHead[];

const FORMAT = 'derrick crane-names 1';

/** A file's times must be this much older than the read for its entry to be kept (see the top). */
export const SETTLE_MS = 2000;

/** The cache file of the crane dir at `realDir`, in `cacheDir` (layout.craneNamesDir). */
export function craneCacheFile(cacheDir: string, realDir: string): string {
  return path.join(cacheDir, `${crypto.createHash('sha256').update(realDir).digest('hex').slice(0, 16)}.json`);
}

export function cachedHead(rel: string, st: Stats, name: string, isProtected: boolean): CachedHead {
  return [rel, st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs, name, isProtected];
}

/** Whether the file is still the one the entry was read from (same inode, size and times). */
export function isUnchanged(e: CachedHead, st: Stats): boolean {
  return e[2] === st.ino && e[4] === st.mtimeMs && e[5] === st.ctimeMs && e[3] === st.size && e[1] === st.dev;
}

/** Whether a head read at `readAt` may be recorded: no later write can share the file's times. */
export function isSettled(st: Stats, readAt: number): boolean {
  return readAt - Math.max(st.mtimeMs, st.ctimeMs) > SETTLE_MS;
}

/**
 * Looks entries up by path for a scan that goes through its sorted listing backwards (listing.ts):
 * one pass down the sorted cache, no map of 10,000 paths.
 */
export function cacheCursor(cache: CraneCache): (rel: string) => CachedHead | undefined {
  let i = cache.length - 1;
  return (rel) => {
    while (i >= 0 && cache[i]![0] > rel) i--;
    return i >= 0 && cache[i]![0] === rel ? cache[i] : undefined;
  };
}

const isNum = (n: unknown) => typeof n === 'number' && Number.isFinite(n);
const isEntry = (e: unknown): e is CachedHead =>
  Array.isArray(e) && e.length === 8 && typeof e[0] === 'string' && isNum(e[1]) && isNum(e[2]) && isNum(e[3]) &&
  isNum(e[4]) && isNum(e[5]) && typeof e[6] === 'string' && typeof e[7] === 'boolean' && isValidName(e[6]);

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
    return [];
  }
  try {
    const doc = JSON.parse(text) as { format?: unknown; dir?: unknown; files?: unknown };
    if (doc?.format !== FORMAT) throw new Error('not a derrick crane-names file of this version');
    if (doc.dir !== realDir) throw new Error(`made for ${JSON.stringify(doc.dir)}`);
    if (!Array.isArray(doc.files)) throw new Error('files: not a list');
    const files = doc.files as unknown[];
    for (let i = 0; i < files.length; i++) {
      const e = files[i];
      if (!isEntry(e)) throw new Error(`files: a malformed entry ${JSON.stringify(e)?.slice(0, 200)}`);
      if (i > 0 && !((files[i - 1] as CachedHead)[0] < e[0])) throw new Error(`files: not sorted by path at ${JSON.stringify(e[0])}`);
    }
    return files as CraneCache;
  } catch (err) {
    onIgnored?.((err as Error).message);
    return [];
  }
}

/** Replaces the cache file atomically (temp + rename); temps left by dead processes are removed. */
export async function writeCraneCache(file: string, realDir: string, cache: CraneCache): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const files = [...cache].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const tmp = tmpName(dir, 'crane-names');
  try {
    await fs.writeFile(tmp, JSON.stringify({ format: FORMAT, dir: realDir, files }) + '\n');
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
