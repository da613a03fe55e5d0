// Manifest bytes on demand: read from the master (the page cache does the heavy lifting), kept
// in a small byte-bounded LRU for the hot ones.
//
// Verification: the publisher verified every byte into the store, and a master never changes
// after its swap (invariant 1). The redirector still hashes a manifest each time it reads it
// from disk, i.e. once per entry into this cache, never on a hit. Hashing a few KiB costs
// microseconds next to the read, and it turns a damaged master (a bad disk, a restore, a manual
// edit) into a logged error instead of bytes that fail every client's digest check.
import path from 'node:path';
import { manifestRelPath } from '../../shared/layout.js';
import { sha256Digest } from '../../shared/oci.js';
import { readRegularFile } from './app-entry.js';
import { createLru } from './lru.js';
import type { RepoVersion } from './types.js';

export interface ManifestBytes {
  cached(version: RepoVersion, digest: string): Buffer | undefined;
  read(version: RepoVersion, digest: string): Promise<Buffer>;
}

export function createManifestBytes(budget: number, countRead: () => void): ManifestBytes {
  const lru = createLru<string, Buffer>(budget);
  const flights = new Map<string, Promise<Buffer>>();
  const fileOf = (v: RepoVersion, digest: string) => {
    const m = v.manifests.get(digest);
    if (!m || !v.dir) throw new Error(`manifest ${digest} is not in this version`);
    return { file: path.join(v.dir, manifestRelPath(m.mediaType, digest)), size: m.size };
  };
  return {
    cached: (v, digest) => (v.dir ? lru.get(`${v.dir}\0${digest}`) : undefined),
    read: (v, digest) => {
      const key = `${v.dir}\0${digest}`;
      const hit = lru.get(key);
      if (hit) return Promise.resolve(hit);
      let p = flights.get(key);
      if (p) return p;
      p = (async () => {
        const { file, size } = fileOf(v, digest);
        countRead();
        const bytes = await readRegularFile(file, size);
        if (sha256Digest(bytes) !== digest) throw new Error(`manifest ${file} does not hash to ${digest}: the master is damaged`);
        lru.set(key, bytes, bytes.length);
        return bytes;
      })().finally(() => flights.delete(key));
      flights.set(key, p);
      return p;
    },
  };
}
