// The content-addressed store: <root>/store/blobs/sha256/<hex>, for manifests and blobs alike.
// Nothing is put in place before its digest and size match (invariant 4), and an object in place
// is never replaced.
import fs from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import crypto from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Layout } from '../layout.js';
import { TMP_PREFIX } from '../layout.js';
import { isSha256Digest, sha256Digest } from '../oci.js';
import { fsyncDir, isPidAlive, readdirOrEmpty, tmpName, tmpNamePid, withPath, writeNewFileSynced } from './fsutil.js';

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
    readonly expectedSize: number,
    readonly actualSize: number,
  ) {
    super(
      actualSize !== expectedSize
        ? `blob ${expected}: got ${actualSize} bytes, expected ${expectedSize}`
        : `blob ${expected}: content hashes to ${actual}`,
    );
    this.name = 'DigestMismatchError';
  }
}

export interface Store {
  layout: Layout;
  has(digest: string): Promise<boolean>;
  /** Streams `body` to a temp file, verifies digest and size, then links it into place. */
  putStream(digest: string, size: number, body: Readable, onBytes?: (n: number) => void): Promise<void>;
  putBytes(digest: string, bytes: Uint8Array): Promise<void>;
  read(digest: string): Promise<Buffer>;
  /** Re-hashes a stored object; false when it is missing or corrupt. */
  verify(digest: string, size?: number): Promise<boolean>;
  remove(digest: string): Promise<void>;
  /** Makes the links of this run durable: one directory fsync instead of one per object. */
  sync(): Promise<void>;
  /** Removes temp files left by dead processes. */
  cleanDebris(): Promise<string[]>;
}

function assertDigest(digest: string) {
  if (!isSha256Digest(digest)) throw new Error(`unsupported digest ${digest}: only sha256 is stored`);
}

export async function openStore(l: Layout): Promise<Store> {
  await fs.mkdir(l.storeBlobsDir, { recursive: true });
  await fs.mkdir(l.repoStateDir, { recursive: true });
  let dirty = false;
  /** The directory fsync in flight (or last done): it covers every rename made before it began. */
  let syncing: Promise<void> = Promise.resolve();

  const has = async (digest: string) => {
    assertDigest(digest);
    try {
      await fs.access(l.storeBlob(digest));
      return true;
    } catch {
      return false;
    }
  };

  /**
   * Moves a verified temp file to its name, unless the object is already there. link(2), not
   * rename(2): a rename would replace an object that another writer (a repo syncing at the same
   * time, another process) put there first and that a master may already hardlink, leaving that
   * master on an inode the store no longer holds. The first writer wins; the bytes are the same.
   */
  const place = async (tmp: string, digest: string) => {
    try {
      await fs.link(tmp, l.storeBlob(digest));
      dirty = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        await fs.rm(tmp, { force: true });
        throw err;
      }
    }
    await fs.rm(tmp, { force: true });
  };

  const putStream = async (digest: string, size: number, body: Readable, onBytes?: (n: number) => void) => {
    assertDigest(digest);
    const tmp = tmpName(l.storeBlobsDir);
    const fh = await fs.open(tmp, 'wx', 0o444);
    const hash = crypto.createHash('sha256');
    let written = 0;
    try {
      for await (const chunk of body) {
        const buf = chunk as Buffer;
        written += buf.length;
        // Stop early on an oversized body instead of filling the disk with it.
        if (written > size) throw new DigestMismatchError(digest, 'unknown', size, written);
        hash.update(buf);
        await fh.write(buf);
        onBytes?.(buf.length);
      }
      const actual = 'sha256:' + hash.digest('hex');
      if (written !== size || actual !== digest) throw new DigestMismatchError(digest, actual, size, written);
      await fh.sync();
    } catch (err) {
      body.destroy();
      await fh.close().catch(() => {});
      await fs.rm(tmp, { force: true });
      throw withPath(err, tmp);
    }
    await fh.close();
    await place(tmp, digest);
  };

  const putBytes = async (digest: string, bytes: Uint8Array) => {
    assertDigest(digest);
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new DigestMismatchError(digest, actual, bytes.length, bytes.length);
    if (await has(digest)) return;
    const tmp = tmpName(l.storeBlobsDir);
    await writeNewFileSynced(tmp, bytes);
    await place(tmp, digest);
  };

  const verify = async (digest: string, size?: number) => {
    assertDigest(digest);
    const hash = crypto.createHash('sha256');
    let n = 0;
    try {
      for await (const chunk of createReadStream(l.storeBlob(digest))) {
        n += (chunk as Buffer).length;
        hash.update(chunk as Buffer);
      }
    } catch {
      return false;
    }
    return 'sha256:' + hash.digest('hex') === digest && (size === undefined || n === size);
  };

  const cleanDebris = async () => {
    const removed: string[] = [];
    for (const name of await readdirOrEmpty(l.storeBlobsDir)) {
      if (!name.startsWith(TMP_PREFIX)) continue;
      const pid = tmpNamePid(name);
      if (pid !== undefined && isPidAlive(pid)) continue;
      await fs.rm(`${l.storeBlobsDir}/${name}`, { force: true });
      removed.push(name);
    }
    return removed;
  };

  return {
    layout: l,
    has,
    putStream,
    putBytes,
    read: (digest) => (assertDigest(digest), fs.readFile(l.storeBlob(digest))),
    verify,
    remove: async (digest) => {
      await fs.rm(l.storeBlob(digest), { force: true });
      dirty = true;
    },
    sync: async () => {
      // Repos sync concurrently into one store: a caller whose renames an fsync already in flight
      // covers must still wait for that fsync to finish, not return while it runs.
      if (!dirty) return syncing;
      dirty = false;
      syncing = fsyncDir(l.storeBlobsDir).catch((err: unknown) => {
        dirty = true; // the next caller tries again
        throw err;
      });
      return syncing;
    },
    cleanDebris,
  };
}
