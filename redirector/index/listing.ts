// Which repos exist, from directory listings: the app dir's file names (no file is read), and a
// crane data dir, whose file names say nothing, so each file's head is read in the background to
// learn the name it serves, once: a restart takes it from the name cache while the file's stat is
// unchanged (crane-cache.ts).
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { TMP_PREFIX, repoNameFromKey } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { isValidName } from '../../shared/oci.js';
import { BadFileError, probeEntrySync, readRegularFileSync } from './app-entry.js';
import { addEntry, cacheCursor, copyEntry, craneCacheFile, emptyCache, isSettled, isUnchanged, readCraneCache, writeCraneCache } from './crane-cache.js';
import { scanHead } from './head-scan.js';

/** The repo name an app file serves, from its name alone; undefined for anything else in the dir. */
export function appFileName(base: string): string | undefined {
  if (!base.endsWith('.json') || base.startsWith(TMP_PREFIX)) return undefined;
  const name = repoNameFromKey(base.slice(0, -5));
  return isValidName(name) ? name : undefined;
}

/** The published names, from one readdir (the file of a name is layout.app(name)). */
export async function listAppDir(appDir: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const base of await fs.readdir(appDir).catch(() => [] as string[])) {
    const name = appFileName(base);
    if (name) out.add(name);
  }
  return out;
}

export interface CraneEntry {
  file: string;
  protected: boolean;
}

/** How long a scan (crane heads, a rescan's probes) holds the event loop at a time. */
const SLICE_MS = 4;

/** Runs `fn` over `items`, `width` at a time, so a scan never takes every libuv thread. */
export async function eachLimited<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let sliceEnd = performance.now() + SLICE_MS;
  const worker = async () => {
    while (next < items.length) {
      await fn(items[next++]!);
      // Probes are synchronous, so fn may never wait: requests get the loop every SLICE_MS.
      if (performance.now() > sliceEnd) {
        await new Promise((resolve) => setImmediate(resolve));
        sliceEnd = performance.now() + SLICE_MS;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

const HEAD_KEYS = ['repo-registry-id', 'protected', 'version'] as const;

/**
 * Every *.json under `dir`, by path. Dirents carry their type, so nothing is stat'ed here: node
 * 20's recursive readdir stat'ed and re-joined every entry, 0.5 s of CPU for 10,000 files.
 */
async function jsonFilesUnder(dir: string): Promise<Array<{ file: string; regular: boolean }>> {
  const out: Array<{ file: string; regular: boolean }> = [];
  const walk = async (d: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const file = `${d}/${e.name}`; // d is a real path: no join needed (path.join was 10% of a cached start)
      if (e.isDirectory()) await walk(file);
      else if (e.name.endsWith('.json')) out.push({ file, regular: e.isFile() });
    }
  };
  await walk(dir);
  return out;
}

/** The repo a crane file's head names, and whether it is protected; undefined for a v1 file (skipped). */
function headOf(buf: Buffer, file: string, log: Logger): { name: string; protected: boolean } | undefined {
  let head = scanHead(buf, HEAD_KEYS);
  if (!head) head = new Map(Object.entries(JSON.parse(buf.toString('utf8')) as object)) as Map<string, never>;
  const version = head.get('version');
  const name = head.get('repo-registry-id');
  if (version === 1) return void log.warn({ file }, 'crane v1 redirect file: v1 API only, not served on /v2 (as crane)');
  if (version !== 2 && version !== 3 && version !== 4) throw new BadFileError(`version ${JSON.stringify(version)} is not supported (1-4)`);
  if (typeof name !== 'string' || !isValidName(name)) throw new BadFileError('repo-registry-id: is not a valid repository name');
  // Fail closed: anything but an explicit false counts as protected.
  return { name, protected: head.has('protected') ? head.get('protected') !== false : false };
}

export interface CraneScan {
  names: Map<string, CraneEntry>;
  /** Writes the name cache; present when it differs from the one read at the start. */
  save?: () => Promise<void>;
}

/**
 * name -> crane file, learned from each file's head (a full JSON parse only when the head is
 * unsure), or from the name cache in `cacheDir` for a file whose stat is unchanged (crane-cache.ts).
 * `onFound` hears each name once, with its final file, as soon as that is known.
 */
export async function scanCraneDir(
  dir: string, maxSize: number, log: Logger, onRead: () => void, onFound: (name: string, e: CraneEntry) => void, cacheDir?: string,
): Promise<CraneScan> {
  const out = new Map<string, CraneEntry>();
  const real = await fs.realpath(dir).catch(() => undefined);
  if (!real) {
    log.error({ dir }, 'serve.crane-data: directory not readable');
    return { names: out };
  }
  const cacheFile = cacheDir && craneCacheFile(cacheDir, real);
  const [listed, cache] = await Promise.all([
    jsonFilesUnder(real),
    cacheFile ? readCraneCache(cacheFile, real, (why) => log.warn({ file: cacheFile, why }, 'serve.crane-data: ignoring the name cache')) : emptyCache(),
  ]);
  const files = listed.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  const cached = cacheCursor(cache);
  /** Every head is read into this and dropped before the next read (headOf keeps no view of it). */
  const scratch = Buffer.allocUnsafe(64 * 1024);
  const next = emptyCache();
  let learned = 0;
  /** A file was read since the clock was last looked at (see the loop below). */
  let read = false;
  const counted = () => {
    onRead();
    read = true;
  };
  /** Anything but a regular file is probed first: a symlink must stay inside the dir. */
  const probedHead = (file: string) => {
    const entry = probeEntrySync(file, real, maxSize, path.dirname(file));
    if (!entry) return undefined;
    const buf = readRegularFileSync(entry.real, entry.size, entry.identity).buf;
    counted();
    return headOf(buf, file, log);
  };
  /** A regular file is read straight away: the open refuses a symlink swapped in, and the stat recorded is the fd's. */
  const readHead = (file: string, rel: string) => {
    const readAt = Date.now();
    const { buf, st } = readRegularFileSync(file, undefined, undefined, maxSize, scratch);
    counted();
    const head = headOf(buf, file, log);
    if (head && isSettled(st, readAt)) {
      addEntry(next, rel, st, head.name, head.protected);
      learned++;
    }
    return head;
  };
  /** A file's head: from the name cache while its stat is unchanged, else read. */
  const headOfEntry = (file: string, regular: boolean) => {
    if (!regular) return probedHead(file);
    const rel = file.slice(real.length + 1);
    const hit = cached(rel);
    if (hit >= 0) {
      const st = fsSync.lstatSync(file, { throwIfNoEntry: false });
      if (!st) return undefined; // gone since the listing
      if (!st.isFile()) return probedHead(file);
      if (isUnchanged(cache, hit, st)) {
        copyEntry(next, cache, hit);
        return { name: cache.names[hit]!, protected: cache.protected[hit]! };
      }
    }
    return readHead(file, rel);
  };
  const learn = ({ file, regular }: { file: string; regular: boolean }) => {
    try {
      const head = headOfEntry(file, regular);
      // Files go in reverse sorted order, so the first to name a repo is the last file naming it: it wins.
      if (!head || out.has(head.name)) return;
      const e = { file, protected: head.protected };
      out.set(head.name, e);
      onFound(head.name, e);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // gone since the listing
      log.error({ file, err: (err as Error).message }, 'crane redirect file rejected');
    }
  };
  // Synchronous, in slices of SLICE_MS between which requests are answered: 10,000 files took
  // 2.2 s as one pool trip each, ~0.3 s of CPU this way, ~0.15 s when the name cache spares every
  // read (the lstat calls are 40 ms of that). The clock is read after every file read (one may
  // be megabytes), else every 16 files: 10,000 reads of it were 10% of a start from the cache.
  const sliceOver = (i: number, until: number) => {
    if (!read && (i & 15) !== 0) return false;
    read = false;
    return performance.now() >= until;
  };
  for (let i = files.length - 1; i >= 0; ) {
    const until = performance.now() + SLICE_MS;
    do learn(files[i]!);
    while (--i >= 0 && !sliceOver(i, until));
    if (i >= 0) await new Promise((resolve) => setImmediate(resolve));
  }
  const changed = learned > 0 || next.rels.length !== cache.rels.length;
  return { names: out, save: cacheFile && changed ? () => writeCraneCache(cacheFile, real, next) : undefined };
}
