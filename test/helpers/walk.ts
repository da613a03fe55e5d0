// Recursive listings of a directory tree for tests (no vitest here: scripts may use it too).
import type { Dirent } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

export interface TreeEntry {
  /** `dir` joined with the entry's path below it. */
  path: string;
  entry: Dirent;
}

const missing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * Every entry under `dir`, depth first, directories before their contents. Links are listed, not
 * followed. A missing `dir` has none unless `mustExist`; a sub-directory removed while it is
 * being walked (a temp dir renamed away) is skipped.
 */
export async function listTree(dir: string, mustExist = false): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const walk = async (d: string, top: boolean) => {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(d, { withFileTypes: true });
    } catch (err) {
      if (missing(err) && !(top && mustExist)) return;
      throw err;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      out.push({ path: p, entry: e });
      if (e.isDirectory()) await walk(p, false);
    }
  };
  await walk(dir, true);
  return out;
}

/** Every non-directory under `dir` (which must exist), relative to it with '/', sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  return (await listTree(dir, true))
    .filter((x) => !x.entry.isDirectory())
    .map((x) => path.relative(dir, x.path).split(path.sep).join('/'))
    .sort();
}
