// Which repos exist, from directory listings: the app dir's file names (no file is read), and a
// crane data dir, whose file names say nothing, so each file's head is read once in the
// background to learn the name it serves.
import fs from 'node:fs/promises';
import path from 'node:path';
import { TMP_PREFIX, repoNameFromKey } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { isValidName } from '../../shared/oci.js';
import { BadFileError, probeEntry, readEntry } from './app-entry.js';
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

/** Runs `fn` over `items`, `width` at a time, so a scan never takes every libuv thread. */
export async function eachLimited<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

const HEAD_KEYS = ['repo-registry-id', 'protected', 'version'] as const;

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
  const files = (await fs.readdir(real, { recursive: true }).catch(() => [] as string[]))
    .filter((n) => n.endsWith('.json'))
    .sort()
    .map((n) => path.join(real, n));
  const found: Array<[string, CraneEntry] | undefined> = new Array(files.length);
  await eachLimited(files.map((f, i) => [f, i] as const), 8, async ([file, i]) => {
    try {
      const entry = await probeEntry(file, real, maxSize, path.dirname(file));
      if (!entry) return;
      onRead();
      const buf = await readEntry(entry);
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
  });
  // In sorted file order, the last file naming a repo wins (as when they were loaded one by one).
  for (const f of found) if (f) out.set(f[0], f[1]);
  return out;
}
