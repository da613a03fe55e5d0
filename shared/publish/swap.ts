// The only way a publish becomes visible: a symlink made at a temp name and renamed over the old one.
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import path from 'node:path';
import { fsyncDir, tmpName } from './fsutil.js';

/**
 * Points `link` at `target` atomically: readers see the old target or the new one, never
 * neither. `target` is written as given, so callers pass a relative path to keep the tree movable.
 */
export async function swapSymlink(link: string, target: string): Promise<void> {
  const dir = path.dirname(link);
  await fs.mkdir(dir, { recursive: true });
  const tmp = tmpName(dir, path.basename(link));
  await fs.symlink(target, tmp);
  try {
    await fs.rename(tmp, link);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/** The target of a symlink, or undefined when there is none. */
export async function readLink(link: string): Promise<string | undefined> {
  return readLinkSync(link);
}

/** readLink without a promise: a run over 1,000 repos reads 2,000 links, where a round trip costs more than the call. */
export function readLinkSync(link: string): string | undefined {
  try {
    return fsSync.readlinkSync(link);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EINVAL') return undefined;
    throw err;
  }
}
