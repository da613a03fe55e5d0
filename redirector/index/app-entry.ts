// Looking at an app-dir (or crane data) entry without trusting it: what it resolves to, whether
// it may be read, and an identity to remember it by. Nothing here opens a file before stat says
// it is a regular one, and the open itself is non-blocking, so a FIFO can never hold a libuv
// thread (issue 9). A rejected entry's identity is remembered so it is not read again.
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

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

const isMissing = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR';

/**
 * Resolves an entry with stat calls only. undefined: the entry is gone. Throws BadFileError when
 * it is not a regular file (or a symlink to one), resolves outside `within`, or is over `maxSize`.
 */
export async function probeEntry(file: string, within: string, maxSize: number, canonicalDir?: string): Promise<Entry | undefined> {
  let lst;
  try {
    lst = await fs.lstat(file);
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
      real = await fs.realpath(file);
    } catch (err) {
      if (isMissing(err)) throw new BadFileError('is a dangling symlink', `dangling|${lst.ino}:${lst.mtimeMs}`);
      throw err;
    }
  }
  if (!real.startsWith(within + path.sep)) throw new BadFileError(`resolves to ${real}, outside ${within}`, `${real}|outside`);
  const st = lst.isSymbolicLink() ? await fs.stat(real) : lst;
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
 * Reads exactly `size` bytes of a file that stat said is regular. Three trips to libuv's pool
 * (open, read, close): O_NONBLOCK means a FIFO or device swapped in after the stat answers at
 * once (EAGAIN or data), never blocks, and asking for one byte more than expected proves the
 * size in the same read.
 */
export async function readRegularFile(file: string, size: number, identity?: string): Promise<Buffer> {
  const fh = await fs.open(file, OPEN_FLAGS);
  try {
    const buf = Buffer.allocUnsafe(size + 1);
    let off = 0;
    for (;;) {
      const want = size + 1 - off;
      const { bytesRead } = await fh.read(buf, off, want, off);
      off += bytesRead;
      if (off > size) throw new BadFileError(`grew while being read (over ${size} bytes)`, identity);
      // A short read of a regular file is its end.
      if (bytesRead < want) break;
    }
    if (off !== size) throw new BadFileError(`shrank while being read (${size} -> ${off} bytes)`, identity);
    return buf.subarray(0, size);
  } finally {
    await fh.close();
  }
}
