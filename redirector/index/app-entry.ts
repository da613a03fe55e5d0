// Looking at an app-dir (or crane data) entry without trusting it: what it resolves to, whether
// it may be read, and an identity to remember it by. Nothing here opens a file before stat says
// it is a regular one, the open itself is non-blocking, and the opened fd is checked again with
// fstat, so a FIFO can never hold a thread (issue 9). A rejected entry's identity is remembered
// so it is not read again.
//
// The metadata calls (lstat, realpath, open, fstat, close) are synchronous: each costs a few
// microseconds from the dentry and inode caches, where a trip through libuv's pool costs 50-300 us
// and queues behind every other file operation in the process. A cold load used to make nine
// such trips (lstat, realpath, stat, open, read, close for the redirect file; open, read, close
// for the manifest); now it makes none while the page cache holds the files.
//
// The reads of small files are synchronous too (issue 10). A redirect file or a manifest is a few
// KiB that the page cache holds (design invariant 7), so a read costs 15-25 us of CPU; through
// the pool it cost twice that, and each trip needs a pool thread and then the main thread to be
// scheduled: on a loaded 2-core machine that put 2.4-5 ms at the p99 of one read, against
// 0.05 ms for the same read in-thread (measured over 3,000 redirect files). A read that waited on
// the disk sends reads through the pool for a while (read-mode.ts), and larger files, which may
// take several disk reads, always go through it.
import fs, { constants } from 'node:fs';
import path from 'node:path';
import { createReadMode } from './read-mode.js';

/** A file that must not be served: named in the log with why. */
export class BadFileError extends Error {
  constructor(
    message: string,
    /** The entry's identity, when known, so the rejection can be remembered. */
    readonly identity?: string,
  ) {
    super(message);
    this.name = 'BadFileError';
  }
}

export interface Entry {
  /** The resolved path + (dev, ino, size, mtime) of what it resolves to. */
  identity: string;
  /** The resolved path of the file. */
  real: string;
  size: number;
  /** The entry's own mtime: for an app symlink, when it was swapped in. */
  swappedAt: number;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/** Files up to 64 KiB are read without leaving the thread, unless a read just waited on the disk. */
const readMode = createReadMode({ maxSize: 64 * 1024, slowMs: 1, poolMs: 1000 });

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR';

/**
 * Resolves an entry with stat calls only. undefined: the entry is gone. Throws BadFileError when
 * it is not a regular file (or a symlink to one), resolves outside `within`, or is over `maxSize`.
 */
export async function probeEntry(file: string, within: string, maxSize: number, canonicalDir?: string): Promise<Entry | undefined> {
  return probeEntrySync(file, within, maxSize, canonicalDir);
}

/** probeEntry without a promise (see the top of this file for why it is synchronous). */
export function probeEntrySync(file: string, within: string, maxSize: number, canonicalDir?: string): Entry | undefined {
  let lst;
  try {
    lst = fs.lstatSync(file);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
  if (!lst.isSymbolicLink() && !lst.isFile()) {
    throw new BadFileError('not a regular file or a symlink to one', `|${lst.dev}:${lst.ino}:${lst.mode}`);
  }
  let real: string;
  if (lst.isFile() && canonicalDir !== undefined) {
    // Listed from a directory already resolved: nothing to follow.
    real = path.join(canonicalDir, path.basename(file));
  } else {
    try {
      // Through every link, the entry's own or a parent directory's (a web/<key> path).
      real = fs.realpathSync.native(file);
    } catch (err) {
      if (isMissing(err)) throw new BadFileError('is a dangling symlink', `dangling|${lst.ino}:${lst.mtimeMs}`);
      throw err;
    }
  }
  if (!real.startsWith(within + path.sep)) throw new BadFileError(`resolves to ${real}, outside ${within}`, `${real}|outside`);
  const st = lst.isSymbolicLink() ? fs.statSync(real) : lst;
  // The resolved path names the master (immutable); the stat catches a file rewritten in place.
  const identity = `${real}|${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  if (!st.isFile()) throw new BadFileError('does not resolve to a regular file', identity);
  if (st.size > maxSize) throw new BadFileError(`is ${st.size} bytes, over serve.max-redirect-file (${maxSize})`, identity);
  return { identity, real, size: st.size, swappedAt: lst.mtimeMs };
}

/** Reads a probed file (non-blocking; a swap in between is refused by size). */
export async function readEntry(e: Entry): Promise<Buffer> {
  return readRegularFile(e.real, e.size, e.identity);
}

/**
 * A small file read whole without leaving the thread (the crane scan's heads; see listing.ts),
 * with the fstat of the fd it was read from (what the crane name cache records). With `scratch`,
 * the bytes returned are a view of it: valid until the next read into it.
 * `size` undefined: whatever fstat of the opened fd says, up to `maxSize` (a directory listing
 * said it is a regular file, so there is no lstat first: the open refuses a symlink swapped in).
 */
export function readRegularFileSync(
  file: string, size: number | undefined, identity?: string, maxSize = Infinity, scratch?: Buffer,
): { buf: Buffer; st: fs.Stats } {
  const fd = fs.openSync(file, OPEN_FLAGS);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new BadFileError('is no longer a regular file', identity);
    if (size === undefined && st.size > maxSize) throw new BadFileError(`is ${st.size} bytes, over serve.max-redirect-file (${maxSize})`);
    const want = size ?? st.size;
    // Only a head is looked at, and the buffer is dropped at once: into the caller's `scratch`
    // when it is large enough (10,000 crane files allocated 80 MB otherwise), else node's pool.
    const buf = scratch && scratch.length > want ? scratch : Buffer.allocUnsafe(want + 1);
    const n = fs.readSync(fd, buf, 0, want + 1, 0);
    if (st.size !== want || n !== want) throw new BadFileError(`changed size since it was looked at (${want} -> ${n} bytes)`, identity);
    return { buf: buf.subarray(0, want), st };
  } finally {
    fs.closeSync(fd);
  }
}

/** One read into `buf` at `off`, through libuv's pool (see readMode). */
const readAt = (fd: number, buf: Buffer, off: number, len: number) =>
  new Promise<number>((resolve, reject) => fs.read(fd, buf, off, len, off, (err, n) => (err ? reject(err) : resolve(n))));

/**
 * Reads exactly `size` bytes of a file that stat said is regular. The open is non-blocking and
 * refuses a symlink, and fstat on the opened fd proves it is still a regular file of that size,
 * so a FIFO or device swapped in after the stat is refused without a read. Asking for one byte
 * more than expected proves the size in the same read.
 */
export async function readRegularFile(file: string, size: number, identity?: string): Promise<Buffer> {
  const fd = fs.openSync(file, OPEN_FLAGS);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new BadFileError('is no longer a regular file', identity);
    if (st.size !== size) throw new BadFileError(`changed size since it was looked at (${size} -> ${st.size} bytes)`, identity);
    // Its own memory, not a slice of node's shared 8 KiB pool: a cached manifest of a few hundred
    // bytes must not keep a whole pool slab alive.
    const buf = Buffer.allocUnsafeSlow(size + 1);
    let off = 0;
    const inThread = readMode.inThread(size + 1);
    const t0 = inThread ? performance.now() : 0;
    for (;;) {
      const want = size + 1 - off;
      const bytesRead = inThread ? fs.readSync(fd, buf, off, want, off) : await readAt(fd, buf, off, want);
      off += bytesRead;
      if (off > size) throw new BadFileError(`grew while being read (over ${size} bytes)`, identity);
      // A short read of a regular file is its end.
      if (bytesRead < want) break;
    }
    if (inThread) readMode.took(performance.now() - t0);
    if (off !== size) throw new BadFileError(`shrank while being read (${size} -> ${off} bytes)`, identity);
    return buf.subarray(0, size);
  } finally {
    fs.closeSync(fd);
  }
}
