// Small durable-filesystem helpers: every publish step that must survive a crash goes through here.
import fs from 'node:fs/promises';
import fsSync, { constants as C } from 'node:fs';
import crypto from 'node:crypto';
import path from 'node:path';
import { TMP_PREFIX } from '../layout.js';

// Temp names end in 12 hex digits: a random half drawn once per process (a stale temp of an
// earlier process with our pid can't collide) and a counter (unique within this process). A
// random draw per name cost more than the rest of taking a lock, once per repo in a large run.
const tmpSalt = crypto.randomBytes(3).toString('hex');
let tmpSeq = 0;

/** A temp name in `dir` that encodes our pid, so a later run can tell live temps from debris. */
export function tmpName(dir: string, label = ''): string {
  const unique = tmpSalt + ((tmpSeq = (tmpSeq + 1) & 0xffffff)).toString(16).padStart(6, '0');
  return path.join(dir, `${TMP_PREFIX}${label}${label ? '.' : ''}${process.pid}.${unique}`);
}

/** The pid a tmpName() was made by, if it has one. */
export function tmpNamePid(name: string): number | undefined {
  // The pid follows the label's '.', or TMP_PREFIX's '-' when there is no label (store temps).
  const m = /[.-](\d+)\.[0-9a-f]{12}$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

export function isPidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** fsync a directory so that the entries created, renamed or removed in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Node's write and fsync errors carry no path ("ENOSPC: no space left on device, write"); adds
 * the file's, as open's errors have it, so a full disk names where it is full.
 */
export function withPath(err: unknown, file: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e instanceof Error && typeof e.code === 'string' && !e.path) {
    e.path = file;
    e.message = `${e.message} '${file}'`;
  }
  return err;
}

/**
 * Creates `file` (it must not exist), writes `data` and fsyncs it before returning. On failure
 * (a full disk) the partly written file is removed: it was ours, and nobody else cleans it up.
 */
export async function writeNewFileSynced(file: string, data: string | Uint8Array, mode = 0o444): Promise<void> {
  const fh = await fs.open(file, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await fs.rm(file, { force: true });
    throw withPath(err, file);
  }
  await fh.close();
}

/**
 * Hardlinks `src` to `dst`; copies only when they sit on different filesystems. Synchronous on
 * purpose: a master links thousands of files into one new directory, where the kernel
 * serialises on the directory anyway, and per-call promise and threadpool overhead dominated.
 */
export function linkOrCopySync(src: string, dst: string): 'linked' | 'copied' {
  try {
    fsSync.linkSync(src, dst);
    return 'linked';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    fsSync.copyFileSync(src, dst, C.COPYFILE_EXCL);
    const fd = fsSync.openSync(dst, 'r+');
    try {
      fsSync.fsyncSync(fd);
    } finally {
      fsSync.closeSync(fd);
    }
    return 'copied';
  }
}


export async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

export async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** readdirOrEmpty without a promise, for the small per-repo directories a run lists for every repo. */
export function readdirOrEmptySync(dir: string): string[] {
  try {
    return fsSync.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; rejects with the first error. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]!, i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
  return out;
}
