// Which repos exist, from directory listings: the app dir's file names (no file is read), and a
// crane data dir, whose file names say nothing, so each file's head is read once in the
// background to learn the name it serves.
import fs from 'node:fs/promises';
import path from 'node:path';
import { TMP_PREFIX, repoNameFromKey } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { isValidName } from '../../shared/oci.js';
import { BadFileError, probeEntrySync, readRegularFileSync } from './app-entry.js';
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
      const file = path.join(d, e.name);
      if (e.isDirectory()) await walk(file);
      else if (e.name.endsWith('.json')) out.push({ file, regular: e.isFile() });
    }
  };
  await walk(dir);
  return out;
}

/** name -> crane file, learned from each file's head (a full JSON parse only when the head is unsure). */
export async function scanCraneDir(
  dir: string, maxSize: number, log: Logger, onRead: () => void, onFound: (name: string, e: CraneEntry) => void,
): Promise<Map<string, CraneEntry>> {
  const out = new Map<string, CraneEntry>();
  const real = await fs.realpath(dir).catch(() => undefined);
  if (!real) {
    log.error({ dir }, 'serve.crane-data: directory not readable');
    return out;
  }
  const files = (await jsonFilesUnder(real)).sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  const found: Array<[string, CraneEntry] | undefined> = new Array(files.length);
  /** A regular file is read straight away; anything else is probed (a symlink must stay inside). */
  const read = (file: string, regular: boolean) => {
    if (regular) {
      try {
        return readRegularFileSync(file, undefined, undefined, maxSize);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // gone since the listing
        throw err;
      }
    }
    const entry = probeEntrySync(file, real, maxSize, path.dirname(file));
    return entry && readRegularFileSync(entry.real, entry.size, entry.identity);
  };
  const learn = ({ file, regular }: { file: string; regular: boolean }, i: number) => {
    try {
      const buf = read(file, regular);
      if (!buf) return;
      onRead();
      let head = scanHead(buf, HEAD_KEYS);
      if (!head) head = new Map(Object.entries(JSON.parse(buf.toString('utf8')) as object)) as Map<string, never>;
      const version = head.get('version');
      const name = head.get('repo-registry-id');
      if (version === 1) return void log.warn({ file }, 'crane v1 redirect file: v1 API only, not served on /v2 (as crane)');
      if (version !== 2 && version !== 3 && version !== 4) throw new BadFileError(`version ${JSON.stringify(version)} is not supported (1-4)`);
      if (typeof name !== 'string' || !isValidName(name)) throw new BadFileError('repo-registry-id: is not a valid repository name');
      // Fail closed: anything but an explicit false counts as protected.
      found[i] = [name, { file, protected: head.has('protected') ? head.get('protected') !== false : false }];
      onFound(name, found[i]![1]);
    } catch (err) {
      log.error({ file, err: (err as Error).message }, 'crane redirect file rejected');
    }
  };
  // Crane files are small and read whole, synchronously, in slices of SLICE_MS between which
  // requests are answered: 10,000 files took 2.2 s as one pool trip each, ~0.3 s this way.
  for (let i = 0; i < files.length; ) {
    const until = performance.now() + SLICE_MS;
    do learn(files[i]!, i);
    while (++i < files.length && performance.now() < until);
    if (i < files.length) await new Promise((resolve) => setImmediate(resolve));
  }
  // In sorted file order, the last file naming a repo wins (as when they were loaded one by one).
  for (const f of found) if (f) out.set(f[0], f[1]);
  return out;
}
